r"""Edge frames, transport (per-edge reference) and local edge geometry of the tensor-frame layers."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ... import _native
from ...reps import TensorReps
from ..tf_transport import ReceiverLayout, _needs_det, rotate_by_receiver
from ..._checks import check_int

__all__ = ["EdgeGeometry", "edge_frames", "geometry_dim", "local_edge_geometry", "safe_length", "transport"]

EdgeGeometry = Literal["auto", "rel_dist", "rel", "dist", "none"]


def edge_frames(frames_src: Tensor, frames_dst: Tensor, src: Tensor, dst: Tensor) -> Tensor:
    r"""Relative frames of the edges :math:`R_{ij} = R_i R_j^\top` (``i = dst``, ``j = src``).

    :math:`R_{ij}` maps coordinates in the sender's frame to the receiver's frame.

    Shapes:
        frames_src: ``[N_src, d, d]``, frames_dst: ``[N_dst, d, d]``, src/dst: ``[E]`` -> ``[E, d, d]``
    """
    if frames_src.dim() != 3 or frames_dst.dim() != 3 or frames_src.shape[1:] != frames_dst.shape[1:] \
            or frames_src.shape[-1] != frames_src.shape[-2]:
        raise ValueError(f"frames_src, frames_dst: expected [N, d, d] frames of one d, got {tuple(frames_src.shape)} "
                         f"and {tuple(frames_dst.shape)}")
    if src.shape != dst.shape or src.dim() != 1:
        raise ValueError(f"src, dst: expected two [E] index tensors, got {tuple(src.shape)} and {tuple(dst.shape)}")
    return torch.bmm(frames_dst.index_select(0, dst), frames_src.index_select(0, src).transpose(1, 2))


def safe_length(v: Tensor, eps: float = 1e-6) -> Tensor:
    r"""Smooth edge length :math:`\sqrt{|v|^2 + \epsilon^2} - \epsilon` (keeps the last dimension).

    Equal to :math:`|v|` up to :math:`\epsilon`, exactly 0 at :math:`v = 0`, and with finite first and
    second derivatives everywhere (:math:`|v|` itself has a NaN gradient at 0).

    Shapes:
        v: ``[*, d]`` -> ``[*, 1]``
    """
    if not isinstance(v, Tensor) or not v.is_floating_point():
        raise TypeError(f"v: expected a floating point tensor, got {getattr(v, 'dtype', type(v).__name__)}")
    if not eps > 0:
        raise ValueError(f"eps: expected > 0 (the smoothing that keeps the derivatives finite at 0), got {eps}")
    return torch.sqrt(v.square().sum(-1, keepdim=True) + eps * eps) - eps


def geometry_dim(dim: int, kind: EdgeGeometry = "rel_dist") -> int:
    """Number of edge-geometry channels :class:`TFConv` appends: ``d + 1``, ``d``, ``1`` or ``0``."""
    check_int("dim", dim, 1)
    table = {"rel_dist": dim + 1, "rel": dim, "dist": 1, "none": 0}
    if kind not in table:
        raise ValueError(f"kind: expected one of {sorted(table)}, got {kind!r}")
    return table[kind]


def local_edge_geometry(
    pos_src: Tensor,
    pos_dst: Tensor,
    frames_dst: Tensor | None,
    src: Tensor,
    dst: Tensor,
    kind: Literal["rel_dist", "rel", "dist"] = "rel_dist",
    eps: float = 1e-6,
    layout: ReceiverLayout | None = None,
) -> Tensor:
    r"""Edge geometry in the receiver's frame: ``[R_i (x_j - x_i), safe_length(x_j - x_i)]``.

    ``frames_dst=None`` means identity frames (plain, non-equivariant geometry). ``layout`` (a
    :func:`~equiframe.nn.tf_transport.receiver_layout` of the edges) enables per-receiver batched matmuls.

    Shapes:
        pos_src: ``[N_src, d]``, pos_dst: ``[N_dst, d]``, frames_dst: ``[N_dst, d, d]``, src/dst: ``[E]``
        -> ``[E, d + 1]`` (``rel_dist``), ``[E, d]`` (``rel``) or ``[E, 1]`` (``dist``)
    """
    if src.shape != dst.shape or src.dim() != 1:
        raise ValueError(f"src, dst: expected two [E] index tensors, got {tuple(src.shape)} and {tuple(dst.shape)}")
    fast = _native.edge_geometry(pos_src, pos_dst, frames_dst, src, dst, kind, eps)  # one pass, no autograd
    if fast is not None:
        return fast
    diff = pos_src.index_select(0, src) - pos_dst.index_select(0, dst)
    parts = []
    if kind in ("rel_dist", "rel"):
        if frames_dst is None:
            parts.append(diff)
        elif layout is not None:
            parts.append(rotate_by_receiver(diff, frames_dst, layout))
        else:
            parts.append(torch.bmm(frames_dst.index_select(0, dst), diff.unsqueeze(-1)).squeeze(-1))
    if kind in ("rel_dist", "dist"):
        parts.append(safe_length(diff, eps))
    if not parts:
        raise ValueError(f"kind: expected 'rel_dist', 'rel' or 'dist', got {kind!r}")
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def _det(frames: Tensor) -> Tensor:
    return torch.linalg.det(frames)


def transport(
    reps: TensorReps,
    x_j: Tensor,
    frames_src: Tensor,
    frames_dst: Tensor,
    src: Tensor,
    dst: Tensor,
    *,
    pos_src: Tensor | None = None,
    pos_dst: Tensor | None = None,
    det_src: Tensor | None = None,
    det_dst: Tensor | None = None,
    R_ij: Tensor | None = None,
) -> Tensor:
    r"""Move per-edge sender features into the receiver's frame: :math:`\rho(R_i R_j^\top) f_j`.

    Reference implementation with the per-edge relative frames :math:`R_{ij}` (one small matmul per edge
    and tensor order). The layers use the faster, equivalent
    :func:`~equiframe.nn.tf_transport.transport_edges`, which gathers from the nodes itself and groups
    the work per receiver.

    Position blocks (``pos``) are affine: a local position :math:`p_j = R_j (p - x_j)` becomes
    :math:`R_{ij} p_j + R_i (x_j - x_i) = R_i (p - x_i)`, which needs ``pos_src``/``pos_dst``.
    Scalars (``0n``) are never touched; each tensor order is one batched matmul over the edges.

    Args:
        reps: the type of ``x_j``.
        x_j: sender features, one row per edge (already gathered: ``x[src]``).
        frames_src, frames_dst: node frames of the sender / receiver node sets.
        src, dst: sender / receiver index of every edge.
        pos_src, pos_dst: node positions (only needed if ``reps`` has ``pos`` blocks).
        det_src, det_dst: optional precomputed ``det`` of the frames (pseudo-tensors).
        R_ij: optional precomputed :func:`edge_frames`.

    Shapes:
        x_j: ``[E, reps.size]`` -> ``[E, reps.size]``
    """
    if x_j.dim() != 2 or x_j.shape[-1] != reps.size:
        raise ValueError(f"x_j: expected [E, {reps.size}] (one row per edge, the size of {str(reps)!r}), got "
                         f"{tuple(x_j.shape)}")
    if src.shape != (x_j.shape[0],) or dst.shape != (x_j.shape[0],):
        raise ValueError(f"src, dst: expected [{x_j.shape[0]}] (one index per row of x_j), got {tuple(src.shape)} "
                         f"and {tuple(dst.shape)}")
    if reps.is_scalar:
        return x_j
    if R_ij is None:
        R_ij = edge_frames(frames_src, frames_dst, src, dst)
    det = None
    if _needs_det(reps):
        ds = _det(frames_src) if det_src is None else det_src
        dd = _det(frames_dst) if det_dst is None else det_dst
        det = dd.index_select(0, dst) * ds.index_select(0, src)
    shift = None
    if reps.has_pos:
        if pos_src is None or pos_dst is None:
            raise ValueError("pos: features with 'pos' blocks need node positions to be moved between frames")
        shift = local_edge_geometry(pos_src, pos_dst, frames_dst, src, dst, "rel")
    return reps.transform(x_j, R_ij, shift, det=det)


