"""Distributed data parallel plumbing of the training loop: rank/world description, process-group
start-up from ``torchrun``'s environment, device choice, metric all-reduce and the per-rank split of
each epoch's global batches.

Split out of :mod:`equiframe.train`, which re-exports the public names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from ._checks import check_instance

# ================================================================================================ distributed
@dataclass(frozen=True)
class DistInfo:
    """Rank, world size and local rank of this process (``1`` process when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def get_dist() -> DistInfo:
    """The current process group's layout (single process when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistInfo()


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise the default process group from ``torchrun``'s environment variables.

    ``WORLD_SIZE`` > 1 (set by ``torchrun``) starts a group with ``init_method="env://"`` (``RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``), backend ``nccl`` when the run uses CUDA and ``gloo`` otherwise.
    Without those variables (or ``WORLD_SIZE=1``) nothing is initialised. Idempotent.
    """
    if device != "auto":
        resolve_device(device, DistInfo())  # a bad name fails here, not later in the run
    if dist.is_available() and dist.is_initialized():
        return get_dist()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this PyTorch build")
    cuda = _wants_cuda(device)
    backend = "nccl" if cuda else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://")
    return get_dist()


def _wants_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def resolve_device(device: str, info: DistInfo | None = None) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; under DDP with CUDA each rank gets ``cuda:LOCAL_RANK``."""
    check_instance("device", device, (str, torch.device))
    device = str(device)
    info = info or get_dist()
    if _wants_cuda(device):
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} requested but CUDA is not available")
        if info.enabled and device in ("auto", "cuda"):
            return torch.device("cuda", info.local_rank)
        return torch.device("cuda" if device == "auto" else device)
    if device == "auto":
        return torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device: {err}") from None


def _all_reduce(values: dict[str, list[float]], info: DistInfo, device: torch.device) -> dict[str, list[float]]:
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: t[i].tolist() for i, k in enumerate(keys)}


def _barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()

# ------------------------------------------------------------------------------------------ batches per rank
def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, info: DistInfo | None = None
                  ) -> list[tuple[list[int], float]]:
    """This rank's share of every global mini-batch of an epoch, and its weight in the global loss.

    The epoch's order is ``torch.randperm(n)`` drawn from a generator seeded with ``seed + epoch`` (the order
    of :class:`~torch.utils.data.DistributedSampler` in one process); it is cut into global batches of
    ``batch_size`` items (the last one may be smaller), and every global batch of ``b`` items is split over
    the ``W`` ranks into contiguous parts of ``ceil(b / W)`` or ``floor(b / W)`` items. Rank ``r`` weighs
    the mean loss of its ``b_r`` items by ``W b_r / b``: DDP averages the gradients over the ranks, so the
    step is that of the mean loss over the global batch, as in one process -- whatever ``W``, ``batch_size``
    and ``n`` (no padding with repeated items, no dropped items).

    Raises:
        ValueError: when a global batch has fewer items than there are ranks (a rank would have nothing to
            train on in that step).

    Returns:
        ``[(indices, weight), ...]``, one entry per global batch, identical in number on every rank.
    """
    info = info or get_dist()
    W = info.world_size
    _check_rank_batches(n, batch_size, W)
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    order = torch.randperm(n, generator=g).tolist()
    out = []
    for start in range(0, n, batch_size):
        glob = order[start : start + batch_size]
        q, r = divmod(len(glob), W)
        lo = info.rank * q + min(info.rank, r)
        mine = glob[lo : lo + q + (info.rank < r)]
        out.append((mine, W * len(mine) / len(glob)))
    return out


def _check_rank_batches(n: int, batch_size: int, world: int) -> None:
    if world <= 1:
        return
    if batch_size < world:
        raise ValueError(f"batch_size: the global batch of {batch_size} items cannot be split over {world} "
                         "processes (every process needs at least one item per step); use a batch size >= the "
                         "number of processes")
    tail = n % batch_size
    if 0 < tail < world:
        raise ValueError(f"batch_size: the last global batch of every epoch has {tail} item(s) ({n} training items, "
                         f"batch size {batch_size}), fewer than the {world} processes; choose a batch size or a "
                         f"training set size with n % batch_size = 0 or >= {world}")
