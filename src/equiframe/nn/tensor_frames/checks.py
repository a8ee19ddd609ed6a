"""Argument checks shared by the tensor-frame layers (clear ``ValueError``/``TypeError`` naming the argument)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["check_frames"]

def _check_tensor(x: Any, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    return x


def _check_device(ref_name: str, ref: Tensor, *named: tuple[str, Any]) -> None:
    """Every tensor of ``named`` (``(name, tensor)``; ``None`` skipped) is on ``ref``'s device; the first that is
    not is named (not a device error from inside a kernel)."""
    for name, t in named:
        if isinstance(t, Tensor) and t.device != ref.device:
            raise ValueError(f"{name}: is on {t.device}, but {ref_name} is on {ref.device}")


def _check_module_device(module: torch.nn.Module, x: Tensor, name: str = "x") -> None:
    """The input ``x`` is on the device of ``module``'s parameters (if it has any)."""
    p = next(module.parameters(), None)
    if p is not None and isinstance(x, Tensor) and p.device != x.device:
        raise ValueError(f"{name}: is on {x.device}, but the module's parameters are on {p.device} "
                         f"(move one of them: module.to({str(x.device)!r}))")


def _all_finite(x: Tensor) -> bool:
    """``True`` iff every entry is finite. One reduction (a NaN/inf makes the sum non-finite); the exact
    elementwise check runs only when the sum is not finite (NaN/inf present, or an overflowing sum)."""
    if x.numel() == 0:
        return True
    with torch.no_grad():
        if bool(torch.isfinite(x.sum())):
            return True
        return bool(torch.isfinite(x).all())


def check_frames(frames: Any, n: int | None, dim: int, name: str = "frames", *, finite: bool = True) -> Tensor:
    """Validate a frame tensor ``[n, dim, dim]`` (floating point, finite) and return it.

    Orthogonality is not checked (learned frames may be orthogonal only up to rounding); a non-orthogonal
    frame silently breaks equivariance, so build frames with :mod:`equiframe.frames`.

    Shapes:
        frames: ``[n, dim, dim]``
    """
    frames = _check_tensor(frames, name)
    if frames.dim() != 3 or frames.shape[-2:] != (dim, dim) or (n is not None and frames.shape[0] != n):
        want = f"[{n if n is not None else 'N'}, {dim}, {dim}]"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(frames.shape)}")
    if not frames.is_floating_point():
        raise TypeError(f"{name}: expected a floating point tensor, got {frames.dtype}")
    if finite and not _all_finite(frames):
        raise ValueError(f"{name}: contains NaN or inf")
    return frames


def _check_pos(pos: Any, n: int, dim: int, name: str = "pos") -> Tensor:
    pos = _check_tensor(pos, name)
    if pos.dim() != 2 or pos.shape != (n, dim):
        raise ValueError(f"{name}: expected shape [{n}, {dim}], got {tuple(pos.shape)}")
    if not pos.is_floating_point():
        raise TypeError(f"{name}: expected a floating point tensor, got {pos.dtype}")
    if not _all_finite(pos):
        raise ValueError(f"{name}: contains NaN or inf")
    return pos


def _check_features(x: Any, n: int | None, size: int, name: str = "x") -> Tensor:
    x = _check_tensor(x, name)
    if x.dim() != 2 or x.shape[1] != size or (n is not None and x.shape[0] != n):
        raise ValueError(
            f"{name}: expected shape [{n if n is not None else 'N'}, {size}] (the reps size), got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating point tensor, got {x.dtype}")
    if not _all_finite(x):
        raise ValueError(f"{name}: contains NaN or inf")
    return x


def _check_edge_index(edge_index: Any, n_src: int, n_dst: int, name: str = "edge_index") -> Tensor:
    if not isinstance(edge_index, Tensor) or edge_index.is_sparse:
        raise TypeError(
            f"{name}: expected a dense integer tensor [2, E] (SparseTensor / torch.sparse adjacency is not "
            f"supported), got {type(edge_index).__name__}"
        )
    if type(edge_index) is not Tensor:  # e.g. torch_geometric.EdgeIndex: use the plain index data
        edge_index = edge_index.as_subclass(Tensor)
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"{name}: expected shape [2, E], got {tuple(edge_index.shape)}")
    if edge_index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name}: expected int64 indices, got {edge_index.dtype}")
    if edge_index.dtype != torch.int64:
        edge_index = edge_index.long()
    if edge_index.shape[1]:
        if n_src == n_dst:  # one pass over both rows
            lo_t, hi_t = torch.aminmax(edge_index)
            lo, hi_src = int(lo_t), int(hi_t)
            hi_dst = hi_src
        else:
            lo_s, hi_s = torch.aminmax(edge_index[0])
            lo_d, hi_d = torch.aminmax(edge_index[1])
            lo, hi_src, hi_dst = min(int(lo_s), int(lo_d)), int(hi_s), int(hi_d)
        if lo < 0 or hi_src >= n_src or hi_dst >= n_dst:
            hi_src, hi_dst = int(edge_index[0].max()), int(edge_index[1].max())  # exact, for the message
            raise ValueError(
                f"{name}: indices out of range (sources must lie in [0, {n_src}), targets in [0, {n_dst}); "
                f"got min {lo}, max source {hi_src}, max target {hi_dst})"
            )
    return edge_index


def _pair(value: Any, name: str) -> tuple[Any, Any, bool]:
    """``(src, dst, homogeneous)`` from a tensor or a 2-tuple (bipartite)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name}: a bipartite pair must have 2 entries (source, target), got {len(value)}")
        return value[0], value[1], False
    return value, value, True


