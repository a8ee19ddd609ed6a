r"""Fast per-edge transport of typed features between node frames.

The transport of a sender feature into the receiver's frame factorises through the global frame,

.. math::  \rho(R_i R_j^\top) f_j = \rho(R_i)\, g_j, \qquad g_j = \rho(R_j^\top) f_j \quad (O(N)),

so per edge only :math:`\rho(R_i)` remains, and it depends on the **receiver** alone. When the edges are
grouped by receiver (k-NN graphs: ``dst = [0]*k + [1]*k + ...``; any graph after padding), the per-edge
work becomes one batched matmul per tensor order with one reasonably sized matrix per receiver,

.. math::  Y_i = G_i\, (R_i^{\otimes p})^\top, \qquad G_i = [g_{j_1}; \dots; g_{j_k}] \in \mathbb{R}^{k m \times d^p},

instead of :math:`E` tiny :math:`d \times d` products with transposed copies for :math:`p \ge 2`
(several times faster on CPU). Scalars (``0n``) are gathered untouched; pseudo blocks fold
:math:`\det R_i` into the matrix, positions subtract :math:`R_i x_i` per receiver.

Layouts (:class:`ReceiverLayout`, built by :func:`receiver_layout` from ``(src, dst)`` in ``O(E)``):

* ``"blocked"``: the edges are a concatenation of segments, each with exactly ``k`` consecutive edges per
  receiver ``0..N_dst-1`` in order (k-NN graphs, and k-NN graphs with ``N`` self-loops appended, as PyG
  layers with ``add_self_loops`` produce) -- no padding, no extra gather;
* ``"padded"``: any other graph whose padded size ``N_dst * max_degree`` is at most ``max_pad`` times
  ``E``: gather into a padded ``[N_dst, max_degree]`` layout, multiply, pick the real rows;
* ``"edge"``: fallback, one small matmul per edge with :math:`R_i` gathered per edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..reps import TensorReps

__all__ = ["ReceiverLayout", "receiver_layout", "transport_edges", "rotate_by_receiver", "kron_power"]


@dataclass(frozen=True)
class ReceiverLayout:
    """How the edges of a graph are grouped by receiver for per-receiver batched matmuls.

    Attributes:
        kind: ``"blocked"``, ``"padded"`` or ``"edge"`` (see the module docstring).
        n_dst: number of receivers.
        n_edges: number of edges ``E``.
        segments: ``((start, stop, k), ...)`` for ``"blocked"``: edges ``start:stop`` hold ``k`` edges for
            each receiver in order.
        pad_k: padded degree for ``"padded"``.
        pad_src: ``[n_dst * pad_k]`` source index of every padded slot (0 for empty slots).
        slot: ``[E]`` padded slot of every edge.
        dst: ``[E]`` receiver of every edge (needed by ``"edge"``).
    """

    kind: Literal["blocked", "padded", "edge"]
    n_dst: int
    n_edges: int
    segments: tuple[tuple[int, int, int], ...] = ()
    pad_k: int = 0
    pad_src: Tensor | None = None
    slot: Tensor | None = None
    dst: Tensor | None = None


def _is_blocked(dst: Tensor, n_dst: int) -> int:
    """``k`` if ``dst == arange(n_dst).repeat_interleave(k)``, else 0."""
    e = dst.numel()
    if n_dst == 0 or e == 0 or e % n_dst:
        return 0
    k = e // n_dst
    ar = torch.arange(n_dst, device=dst.device, dtype=dst.dtype)
    return k if bool((dst.view(n_dst, k) == ar.unsqueeze(1)).all()) else 0


def receiver_layout(src: Tensor, dst: Tensor, n_dst: int, *, max_pad: float = 2.0) -> ReceiverLayout:
    """Choose the fastest layout for per-receiver matmuls (see the module docstring).

    Shapes:
        src, dst: ``[E]``
    """
    e = int(dst.numel())
    k = _is_blocked(dst, n_dst)
    if k:
        return ReceiverLayout("blocked", n_dst, e, segments=((0, e, k),))
    if e > n_dst > 0:  # k-NN graph + appended self-loops (remove_self_loops / add_self_loops in PyG layers)
        k = _is_blocked(dst[: e - n_dst], n_dst)
        if k and _is_blocked(dst[e - n_dst :], n_dst) == 1:
            return ReceiverLayout("blocked", n_dst, e, segments=((0, e - n_dst, k), (e - n_dst, e, 1)))
    if e == 0 or n_dst == 0:
        return ReceiverLayout("edge", n_dst, e, dst=dst)
    deg = torch.bincount(dst, minlength=n_dst)
    kmax = int(deg.max())
    if n_dst * kmax > max_pad * e:
        return ReceiverLayout("edge", n_dst, e, dst=dst)
    ptr = torch.zeros(n_dst + 1, dtype=torch.long, device=dst.device)
    ptr[1:] = torch.cumsum(deg, 0)
    if e > 1 and bool((dst[1:] >= dst[:-1]).all()):
        rank = torch.arange(e, device=dst.device) - ptr.index_select(0, dst)
    else:
        perm = torch.argsort(dst, stable=True)
        rank = torch.empty(e, dtype=torch.long, device=dst.device)
        rank[perm] = torch.arange(e, device=dst.device) - ptr.index_select(0, dst.index_select(0, perm))
    slot = dst * kmax + rank
    pad_src = torch.zeros(n_dst * kmax, dtype=torch.long, device=dst.device)
    pad_src[slot] = src
    return ReceiverLayout("padded", n_dst, e, pad_k=kmax, pad_src=pad_src, slot=slot, dst=dst)


def kron_power(R: Tensor, p: int) -> Tensor:
    r"""Kronecker power :math:`R^{\otimes p}` per matrix, row-major (``(R^{\otimes p} \mathrm{vec}\,T) =
    \mathrm{vec}(R^{\otimes p} T)`` for the library's flattened order-``p`` tensors).

    Shapes:
        R: ``[N, d, d]`` -> ``[N, d^p, d^p]``
    """
    n, d = R.shape[0], R.shape[-1]
    if p == 0:
        return torch.ones(n, 1, 1, dtype=R.dtype, device=R.device)
    K = R
    for _ in range(p - 1):
        q = K.shape[-1]
        K = (K[:, :, None, :, None] * R[:, None, :, None, :]).reshape(n, q * d, q * d)
    return K


def _apply(
    table: Tensor,
    src: Tensor,
    M: Tensor,
    layout: ReceiverLayout,
    offset: Tensor | None = None,
) -> Tensor:
    """``y_e = table[src_e].view(mul, q) @ M[dst_e]^T - offset[dst_e]`` for every edge (flattened).

    Shapes:
        table: ``[N_src, mul * q]``, M: ``[N_dst, q, q]``, offset: ``[N_dst, q]`` -> ``[E, mul * q]``
    """
    c = table.shape[1]
    q = M.shape[-1]
    Mt = M.transpose(1, 2)
    n = layout.n_dst
    if layout.kind == "blocked":
        outs = []
        for start, stop, k in layout.segments:
            G = table.index_select(0, src[start:stop]).view(n, k * (c // q), q)
            Y = torch.bmm(G, Mt)
            if offset is not None:
                Y = Y - offset.unsqueeze(1)
            outs.append(Y.view(stop - start, c))
        return outs[0] if len(outs) == 1 else torch.cat(outs, 0)
    if layout.kind == "padded":
        G = table.index_select(0, layout.pad_src).view(n, layout.pad_k * (c // q), q)
        Y = torch.bmm(G, Mt)
        if offset is not None:
            Y = Y - offset.unsqueeze(1)
        return Y.view(n * layout.pad_k, c).index_select(0, layout.slot)
    dst = layout.dst
    G = table.index_select(0, src).view(-1, c // q, q)
    Y = torch.bmm(G, Mt.index_select(0, dst))
    if offset is not None:
        Y = Y - offset.index_select(0, dst).unsqueeze(1)
    return Y.view(-1, c)


def rotate_by_receiver(v: Tensor, frames_dst: Tensor, layout: ReceiverLayout) -> Tensor:
    r"""Per-edge vectors into the receiver's frame, :math:`R_i v_e` (no gather of ``v``).

    Shapes:
        v: ``[E, d]``, frames_dst: ``[N_dst, d, d]`` -> ``[E, d]``
    """
    d = v.shape[-1]
    if layout.kind == "blocked":
        outs = []
        for start, stop, k in layout.segments:
            outs.append(torch.bmm(v[start:stop].view(layout.n_dst, k, d), frames_dst.transpose(1, 2)).view(-1, d))
        return outs[0] if len(outs) == 1 else torch.cat(outs, 0)
    dst = layout.dst if layout.dst is not None else None
    return torch.bmm(frames_dst.index_select(0, dst), v.unsqueeze(-1)).squeeze(-1)


def _pieces(reps: TensorReps) -> list[tuple[slice, int, str, int]]:
    """Merge adjacent blocks of the same (order, parity): ``(slice, order, parity, mul)``."""
    out: list[tuple[slice, int, str, int]] = []
    for b, sl in reps.slices():
        if out and out[-1][1] == b.order and out[-1][2] == b.parity and out[-1][0].stop == sl.start:
            prev = out[-1]
            out[-1] = (slice(prev[0].start, sl.stop), b.order, b.parity, prev[3] + b.mul)
        else:
            out.append((sl, b.order, b.parity, b.mul))
    return out


def transport_edges(
    reps: TensorReps,
    x_src: Tensor,
    frames_src: Tensor,
    frames_dst: Tensor,
    src: Tensor,
    dst: Tensor,
    *,
    pos_src: Tensor | None = None,
    pos_dst: Tensor | None = None,
    layout: ReceiverLayout | None = None,
    out: Tensor | None = None,
) -> Tensor:
    r"""Gather and transport sender features: row ``e`` is :math:`\rho(R_i R_j^\top) f_j` (``j = src[e]``,
    ``i = dst[e]``), positions :math:`R_i (p - x_i)` for a local position :math:`R_j (p - x_j)`.

    Args:
        reps: type of ``x_src``.
        x_src: sender node features (local frames).
        frames_src, frames_dst: frames of the sender / receiver node sets.
        src, dst: edge endpoints.
        pos_src, pos_dst: node positions (only for reps with ``pos`` blocks).
        layout: a :func:`receiver_layout` for ``(src, dst)`` (built if ``None``).
        out: optional ``[E, reps.size]`` tensor (may be a view) to write into.

    Shapes:
        x_src: ``[N_src, reps.size]`` -> ``[E, reps.size]``
    """
    n_dst = frames_dst.shape[0]
    if layout is None:
        layout = receiver_layout(src, dst, n_dst)
    e = src.numel()
    if reps.is_scalar:
        y = x_src.index_select(0, src)
        return y if out is None else out.copy_(y)
    if out is None:
        out = x_src.new_empty(e, reps.size)
    if reps.has_pos and (pos_src is None or pos_dst is None):
        raise ValueError("pos: features with 'pos' blocks need node positions to be moved between frames")
    # global-frame features g_j = rho(R_j^T) f_j (+ x_j for positions), once per node
    g = reps.to_global(x_src, frames_src, pos_src if reps.has_pos else None)
    need_det = any(p == "p" for _, _, p, _ in _pieces(reps))
    det_dst = torch.linalg.det(frames_dst) if need_det else None
    kron: dict[int, Tensor] = {}
    offset = None
    for sl, order, parity, _mul in _pieces(reps):
        if order == 0 and parity == "n":
            out[:, sl] = x_src[:, sl].index_select(0, src)
            continue
        if order not in kron:
            kron[order] = kron_power(frames_dst, order)
        M = kron[order]
        if parity == "p":
            M = M * det_dst.view(-1, 1, 1)
        off = None
        if parity == "pos":
            if offset is None:  # R_i x_i per receiver
                offset = torch.bmm(frames_dst, pos_dst.unsqueeze(-1)).squeeze(-1)
            off = offset
        out[:, sl] = _apply(g[:, sl], src, M, layout, off)
    return out
