"""Typed, validated configurations of the training loop (:class:`OptimConfig`, :class:`TrainConfig`).

Split out of :mod:`equiframe.train`, which re-exports them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

# ================================================================================================ configs
def _pos_int(name: str, v: Any, minimum: int = 1) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {v!r}")


def _pos_float(name: str, v: Any, *, allow_zero: bool) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name}: expected a finite number {'>=' if allow_zero else '>'} 0, got {v!r}")


#: learning-rate schedules of :class:`OptimConfig`
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class OptimConfig:
    r"""Adam with (L2) weight decay and an optional learning-rate schedule over the epochs.

    With ``schedule="cosine"`` the learning rate of epoch ``e`` (0-based) of a run of ``E`` epochs is

    .. math:: \eta_e = \eta\,\Big(r + (1 - r)\,\tfrac12\,\big(1 + \cos\tfrac{\pi\,(e - S)_+}{E - S}\big)\Big),
        \qquad r = \text{min\_lr\_ratio},\quad S = \text{anneal\_from},

    set at the start of every epoch: constant ``lr`` for the first ``S`` epochs, then a cosine decay to
    ``r * lr`` at epoch ``E`` (``S = 0``: decay over the whole run). It is a function of the epoch alone (nothing
    to store in a checkpoint), and ``E`` is the run's ``epochs``: resuming with a larger ``epochs`` stretches the
    rest of the schedule. A run trained at a constant rate can be resumed with ``schedule="cosine"`` and
    ``anneal_from`` at or after its checkpoint's epoch (every epoch already trained had the same rate).

    Attributes:
        lr: learning rate.
        weight_decay: weight decay of :class:`torch.optim.Adam` (1e-12 in the n-body protocol).
        betas: Adam's betas.
        grad_clip: clip the global gradient norm to this value (``None``: no clipping).
        fused: PyTorch's fused Adam kernel (``None``: where PyTorch has one, CPU and CUDA; ``False``: the
            per-tensor ``foreach`` implementation used before; the two agree up to rounding).
        schedule: ``"constant"`` (``lr`` throughout) or ``"cosine"`` (the formula above).
        min_lr_ratio: ``r``, the last epochs' learning rate as a fraction of ``lr`` (cosine only).
        anneal_from: ``S``, the epoch the cosine decay starts from (cosine only; constant ``lr`` before it).
    """

    lr: float = 1e-3
    weight_decay: float = 1e-12
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = None
    fused: bool | None = None
    schedule: str = "constant"
    min_lr_ratio: float = 0.0
    anneal_from: int = 0

    def __post_init__(self) -> None:
        _pos_float("lr", self.lr, allow_zero=False)
        _pos_float("weight_decay", self.weight_decay, allow_zero=True)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: expected two numbers in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.grad_clip is not None:
            _pos_float("grad_clip", self.grad_clip, allow_zero=False)
        if self.fused is not None and not isinstance(self.fused, bool):
            raise TypeError(f"fused: expected True, False or None, got {self.fused!r}")
        if self.schedule not in LR_SCHEDULES:
            raise ValueError(f"schedule: expected one of {LR_SCHEDULES}, got {self.schedule!r}")
        _pos_float("min_lr_ratio", self.min_lr_ratio, allow_zero=True)
        if self.min_lr_ratio > 1:
            raise ValueError(f"min_lr_ratio: expected a number in [0, 1], got {self.min_lr_ratio!r}")
        _pos_int("anneal_from", self.anneal_from, minimum=0)
        if self.anneal_from and self.schedule != "cosine":
            raise ValueError(f"anneal_from: only the cosine schedule has an annealing phase, got schedule="
                             f"{self.schedule!r} with anneal_from={self.anneal_from}")

    def learning_rate(self, epoch: int, epochs: int) -> float:
        """The learning rate of epoch ``epoch`` (0-based) of a run of ``epochs`` epochs (see the class)."""
        if self.schedule == "constant":
            return self.lr
        start = self.anneal_from
        if epoch < start:
            return self.lr
        t = min(epoch - start, max(epochs - start, 0)) / max(epochs - start, 1)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


@dataclass(frozen=True)
class TrainConfig:
    """Options of the training loop (the experiment-specific ones live in the experiment's config).

    Attributes:
        epochs: number of epochs (the total: a resumed run continues up to it).
        batch_size: global mini-batch size (split over the ranks under DDP).
        optim: the optimiser.
        seeds: one run per seed, sequentially.
        eval_every: evaluate on the validation split every this many epochs (and at the last epoch).
        patience: stop after this many evaluations without improvement (``None``: never).
        checkpoint_every: write a checkpoint every this many epochs (and at the end).
        eval_batch_size: batch size of evaluations (default: ``batch_size``).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        num_workers: DataLoader worker processes (0: batches are built in the main process).
        out: results root; a run writes ``<out>/<experiment>/<name>/seed<k>/``.
        name: the run name (default: the experiment's ``run_name``, e.g. the model).
        resume: continue from an existing checkpoint (else an existing run is an error unless
            ``overwrite``). Without a checkpoint the run starts (with a log line) unless
            ``require_checkpoint``.
        require_checkpoint: with ``resume``, a run without a checkpoint is an error (``FileNotFoundError``)
            instead of a fresh start (the CLI's ``--resume``; ``--resume-or-start`` continues or starts).
        overwrite: delete an existing run directory and start again.
        quiet: no progress bars and no log lines.
        diagnostics: run the experiment's extra diagnostics at the end (equivariance, rotations).
        threads: ``torch.set_num_threads`` while the run trains, restored afterwards (``None``: leave as is).
        compile: train through ``torch.compile(model)`` (inductor; evaluation stays eager) when a compiler
            backend works here, else eagerly with a warning. Equal to eager training up to rounding.
    """

    epochs: int = 100
    batch_size: int = 100
    optim: OptimConfig = field(default_factory=OptimConfig)
    seeds: tuple[int, ...] = (0,)
    eval_every: int = 1
    patience: int | None = None
    checkpoint_every: int = 10
    eval_batch_size: int | None = None
    device: str = "auto"
    num_workers: int = 0
    out: str = "runs"
    name: str | None = None
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False
    diagnostics: bool = True
    threads: int | None = None
    require_checkpoint: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        _pos_int("epochs", self.epochs)
        _pos_int("batch_size", self.batch_size)
        if not isinstance(self.optim, OptimConfig):
            raise TypeError(f"optim: expected an OptimConfig, got {type(self.optim).__name__}")
        if self.optim.anneal_from >= self.epochs:
            raise ValueError(f"optim.anneal_from: the cosine decay must start before the last epoch, got "
                             f"anneal_from={self.optim.anneal_from} with epochs={self.epochs}")
        seeds = tuple(self.seeds)
        if not seeds:
            raise ValueError("seeds: expected at least one seed")
        for s in seeds:
            _pos_int("seeds", s, 0)
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds: expected distinct seeds, got {seeds}")
        object.__setattr__(self, "seeds", seeds)
        _pos_int("eval_every", self.eval_every)
        if self.patience is not None:
            _pos_int("patience", self.patience)
        _pos_int("checkpoint_every", self.checkpoint_every)
        if self.eval_batch_size is not None:
            _pos_int("eval_batch_size", self.eval_batch_size)
        _pos_int("num_workers", self.num_workers, 0)
        if self.threads is not None:
            _pos_int("threads", self.threads)
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device: expected a device string like 'cpu', 'cuda' or 'auto', got {self.device!r}")
        if self.name is not None and (not self.name or "/" in self.name or self.name.startswith(".")):
            raise ValueError(f"name: expected a plain directory name, got {self.name!r}")
        if self.resume and self.overwrite:
            raise ValueError("resume, overwrite: choose one")
        for name in ("resume", "overwrite", "require_checkpoint", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected True or False, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        d["optim"]["betas"] = list(self.optim.betas)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        d = dict(d)
        optim = dict(d.pop("optim", {}))
        if "betas" in optim:
            optim["betas"] = tuple(optim["betas"])
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"config: unknown training options {sorted(unknown)}")
        if "seeds" in d:
            d["seeds"] = tuple(d["seeds"])
        return cls(optim=OptimConfig(**optim), **d)


# Options that may change when a run is resumed (everything else must match the checkpoint).
_RESUMABLE = {"epochs", "patience", "checkpoint_every", "device", "num_workers", "out", "resume", "overwrite",
              "quiet", "diagnostics", "threads", "seeds", "eval_batch_size", "name", "require_checkpoint", "compile"}
