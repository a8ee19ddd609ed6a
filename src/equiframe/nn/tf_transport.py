r"""Fast per-edge transport of typed features between node frames.

The transport of a sender feature into the receiver's frame factorises through the global frame,

.. math::  \rho(R_i R_j^\top) f_j = \rho(R_i)\, g_j, \qquad g_j = \rho(R_j^\top) f_j \quad (O(N)),

so per edge only :math:`\rho(R_i)` remains, and it depends on the **receiver** alone. When the edges are
grouped by receiver (k-NN graphs: ``dst = [0]*k + [1]*k + ...``; any graph after padding), the per-edge
work becomes one batched matmul per tensor type with one reasonably sized product per receiver,

.. math::  Y_i^\top = R_i^{\otimes p}\, G_i^\top, \qquad G_i = [g_{j_1}; \dots; g_{j_k}] \in
           \mathbb{R}^{k m \times d^p},

computed as ``bmm(R_i^{(x)p}, G_i^T)``: the long side (``k m``) is the GEMM's contiguous output dimension,
which is several times faster on CPU than ``G_i @ (R_i^{(x)p})^T`` (whose contiguous output rows have only
``d^p`` entries) and than :math:`E` tiny products. Without autograd the receivers are processed in chunks
that stay in cache and the result is written straight into the output. Scalars (``0n``) are gathered
untouched; pseudo blocks fold :math:`\det R_i` into the matrix, positions subtract :math:`R_i x_i` per
receiver.

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

from .. import _native
from ..reps import TensorReps, kron_power
from .._checks import check_int, check_real

__all__ = [
    "ReceiverLayout",
    "kron_power",
    "receiver_layout",
    "receiver_matrices",
    "rotate_by_receiver",
    "rotate_edges",
    "transport_edges",
]

#: default ``chunk_size``: output elements per chunk of receivers (about 1 MB of float32: stays in cache)
DEFAULT_CHUNK = 1 << 18


def _chunk(chunk_size: int | None) -> int:
    if chunk_size is None:
        return DEFAULT_CHUNK
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive integer, got {chunk_size!r}")
    return chunk_size


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
        dst: ``[E]`` receiver of every edge (needed by ``"edge"`` and by the native kernel; set by
            :func:`receiver_layout` for every kind).
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
    if not isinstance(src, Tensor) or not isinstance(dst, Tensor) or src.dim() != 1 or src.shape != dst.shape:
        raise ValueError(f"src, dst: expected two [E] index tensors, got {tuple(getattr(src, 'shape', ()))} and "
                         f"{tuple(getattr(dst, 'shape', ()))}")
    check_int("n_dst", n_dst, 0)
    if dst.numel() and int(dst.max()) >= n_dst:
        raise ValueError(f"dst: receiver indices must lie in [0, n_dst={n_dst}), got max {int(dst.max())}")
    check_real("max_pad", max_pad, 1.0, strict=False)
    e = int(dst.numel())
    k = _is_blocked(dst, n_dst)
    if k:
        return ReceiverLayout("blocked", n_dst, e, segments=((0, e, k),), dst=dst)
    if e > n_dst > 0:  # k-NN graph + appended self-loops (remove_self_loops / add_self_loops in PyG layers)
        k = _is_blocked(dst[: e - n_dst], n_dst)
        if k and _is_blocked(dst[e - n_dst :], n_dst) == 1:
            return ReceiverLayout("blocked", n_dst, e, segments=((0, e - n_dst, k), (e - n_dst, e, 1)), dst=dst)
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


# ---------------------------------------------------------------------------------------------------------
# per-receiver kernels
# ---------------------------------------------------------------------------------------------------------
def _block_product(G: Tensor, M: Tensor, offset: Tensor | None) -> Tensor:
    r"""``Y^T = M G^T - offset`` per receiver, returned as ``[n, q, rows]``.

    Shapes:
        G: ``[n, rows, q]``, M: ``[n, q, q]``, offset: ``[n, q]`` -> ``[n, q, rows]``
    """
    Y = torch.bmm(M, G.transpose(1, 2))
    if offset is not None:
        Y = Y - offset.unsqueeze(-1)
    return Y


def _blocked_group(
    table: Tensor, src: Tensor | None, M: Tensor, k: int, offset: Tensor | None, dest: Tensor | None,
    chunk: int = DEFAULT_CHUNK,
) -> Tensor | None:
    """One tensor type on one blocked segment: ``dest[e] = M[dst_e] table[src_e]`` per tensor, or
    ``M[dst_e] table[e]`` when ``src`` is ``None`` (``table`` holds one row per edge of the segment).

    ``dest`` (``[n * k, m * q]``, may be a strided view, no autograd) is filled chunk by chunk of receivers;
    with ``dest=None`` the result is returned (differentiable, one piece).
    """
    n, q = M.shape[0], M.shape[-1]
    m = table.shape[1] // q
    if dest is None:
        G = table.index_select(0, src) if src is not None else table
        Y = _block_product(G.reshape(n, k * m, q), M, offset)
        return Y.view(n, q, k, m).permute(0, 2, 3, 1).reshape(n * k, m * q)
    d4 = dest.unflatten(0, (n, k)).unflatten(2, (m, q))
    cs = max(1, chunk // max(1, k * m * q))
    for s in range(0, n, cs):
        e = min(n, s + cs)
        G = table.index_select(0, src[s * k : e * k]) if src is not None else table[s * k : e * k]
        Y = torch.bmm(M[s:e], G.reshape(e - s, k * m, q).transpose(1, 2))
        if offset is not None:
            Y.sub_(offset[s:e].unsqueeze(-1))
        d4[s:e].copy_(Y.view(e - s, q, k, m).permute(0, 2, 3, 1))
    return None


def _apply(
    table: Tensor,
    src: Tensor | None,
    M: Tensor,
    layout: ReceiverLayout,
    offset: Tensor | None = None,
    dest: Tensor | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> Tensor | None:
    """``y_e = table[src_e].view(m, q) @ M[dst_e]^T - offset[dst_e]`` for every edge (flattened); with
    ``src=None``, ``table`` has one row per edge (``table[e]``, no gather).

    Writes into ``dest`` (no autograd) or returns the result.

    Shapes:
        table: ``[N_src or E, m * q]``, M: ``[N_dst, q, q]``, offset: ``[N_dst, q]`` -> ``[E, m * q]``
    """
    c = table.shape[1]
    q = M.shape[-1]
    if layout.kind == "blocked":
        def seg(start, stop):
            return (table, src[start:stop]) if src is not None else (table[start:stop], None)

        if dest is not None:
            for start, stop, k in layout.segments:
                _blocked_group(*seg(start, stop), M, k, offset, dest[start:stop], chunk)
            return None
        outs = [_blocked_group(*seg(start, stop), M, k, offset, None) for start, stop, k in layout.segments]
        return outs[0] if len(outs) == 1 else torch.cat(outs, 0)
    if layout.kind == "padded" and src is not None:
        n = layout.n_dst
        G = table.index_select(0, layout.pad_src).view(n, layout.pad_k * (c // q), q)
        Y = _block_product(G, M, offset).view(n, q, layout.pad_k, c // q).permute(0, 2, 3, 1)
        Y = Y.reshape(n * layout.pad_k, c).index_select(0, layout.slot)
    else:
        dst = layout.dst
        G = (table.index_select(0, src) if src is not None else table).reshape(-1, c // q, q)
        Y = _block_product(G, M.index_select(0, dst), None if offset is None else offset.index_select(0, dst))
        Y = Y.transpose(1, 2).reshape(-1, c)
    if dest is None:
        return Y
    dest.copy_(Y)
    return None


def rotate_by_receiver(v: Tensor, frames_dst: Tensor, layout: ReceiverLayout) -> Tensor:
    r"""Per-edge vectors into the receiver's frame, :math:`R_i v_e` (no gather of ``v``).

    Shapes:
        v: ``[E, d]``, frames_dst: ``[N_dst, d, d]`` -> ``[E, d]``
    """
    if v.dim() != 2 or frames_dst.dim() != 3 or v.shape[-1] != frames_dst.shape[-1]:
        raise ValueError(f"v, frames_dst: expected [E, d] vectors and [N, d, d] frames, got {tuple(v.shape)} and "
                         f"{tuple(frames_dst.shape)}")
    d = v.shape[-1]
    if layout.kind == "blocked":
        # component-major: (R_i v)_a = sum_c R_i[a, c] v_c as d^2 long multiply-adds over [n, k]
        Rc = frames_dst.permute(1, 2, 0).unsqueeze(-1)  # [a, c, n, 1]
        outs = []
        for start, stop, k in layout.segments:
            vT = v[start:stop].t().reshape(d, layout.n_dst, k)
            rows = []
            for a in range(d):
                acc = vT[0] * Rc[a, 0]
                for c in range(1, d):
                    acc = acc.addcmul_(vT[c], Rc[a, c])
                rows.append(acc)
            outs.append(torch.stack(rows, 0).view(d, stop - start).t())
        return outs[0] if len(outs) == 1 else torch.cat(outs, 0)
    return torch.bmm(frames_dst.index_select(0, layout.dst), v.unsqueeze(-1)).squeeze(-1)


# ---------------------------------------------------------------------------------------------------------
# transport
# ---------------------------------------------------------------------------------------------------------
def _groups(reps: TensorReps) -> list[tuple[object, int, str, int]]:
    """Channels of each tensor type ``(order, parity)``: ``(slice | index, order, parity, n_tensors)``.

    Blocks of one type are merged (a slice when they are adjacent); groups come in storage order of
    their first block.
    """
    spans: dict[tuple[int, str], list[tuple[int, int, int]]] = {}
    for b, sl in reps.slices():
        spans.setdefault((b.order, b.parity), []).append((sl.start, sl.stop, b.mul))
    out = []
    for (order, parity), sp in spans.items():
        adjacent = all(sp[i][1] == sp[i + 1][0] for i in range(len(sp) - 1))
        if adjacent:
            cols: object = slice(sp[0][0], sp[-1][1])
        else:
            cols = torch.cat([torch.arange(a, z) for a, z, _ in sp])
        out.append((cols, order, parity, sum(m for _, _, m in sp)))
    return out


def _check_receiver_frames(frames_dst: Tensor, reps: TensorReps) -> None:
    """``frames_dst`` are ``[N, d, d]`` frames of the dimension ``d`` of ``reps``."""
    if frames_dst.dim() != 3 or frames_dst.shape[-2:] != (reps.dim, reps.dim):
        raise ValueError(f"frames_dst: expected [N, {reps.dim}, {reps.dim}] (reps of dim {reps.dim}), got "
                         f"{tuple(frames_dst.shape)}")


def receiver_matrices(
    reps: TensorReps, frames_dst: Tensor, pos_dst: Tensor | None = None, cache: dict | None = None
) -> dict[tuple[int, str], tuple[Tensor, Tensor | None]]:
    r"""Per-receiver matrices of every tensor type of ``reps``: :math:`R_i^{\otimes p}` (times
    :math:`\det R_i` for pseudo types) and, for positions, the offset :math:`R_i x_i`.

    ``cache`` (any dict, e.g. a :class:`~equiframe.nn.tensor_frames.TFGraph`'s) is filled and reused.

    Shapes:
        frames_dst: ``[N_dst, d, d]`` -> ``{(order, parity): ([N_dst, d^p, d^p], [N_dst, d] | None)}``
    """
    _check_receiver_frames(frames_dst, reps)
    cache = {} if cache is None else cache
    out = {}
    for _cols, order, parity, _m in _groups(reps):
        if order == 0 and parity == "n":
            continue
        key = ("M", order, parity, frames_dst.dtype)
        if key not in cache:
            kkey = ("K", order, frames_dst.dtype)
            if kkey not in cache:
                cache[kkey] = kron_power(frames_dst, order).contiguous()
            M = cache[kkey]
            if parity == "p":
                M = M * _receiver_det(frames_dst, cache).view(-1, 1, 1)
            off = None
            if parity == "pos":
                okey = ("offset", frames_dst.dtype)
                if okey not in cache:
                    if pos_dst is None:
                        raise ValueError("pos: features with 'pos' blocks need node positions to be moved between frames")
                    cache[okey] = torch.bmm(frames_dst, pos_dst.to(frames_dst.dtype).unsqueeze(-1)).squeeze(-1)
                off = cache[okey]
            cache[key] = (M, off)
        out[(order, parity)] = cache[key]
    return out


def _needs_det(reps: TensorReps) -> bool:
    """Whether some block of ``reps`` is pseudo (scaled by ``det R``)."""
    return any(b.parity == "p" for b in reps.blocks)


def _receiver_det(frames_dst: Tensor, cache: dict | None) -> Tensor:
    """``det R_i`` per receiver (kept in ``cache`` for the other tensor types and layers)."""
    key = ("det", frames_dst.dtype)
    if cache is not None and key in cache:
        return cache[key]
    det = torch.linalg.det(frames_dst)
    if cache is not None:
        cache[key] = det
    return det


def rotate_edges(
    reps: TensorReps,
    y: Tensor,
    frames_dst: Tensor,
    layout: ReceiverLayout,
    *,
    inverse: bool = False,
    cache: dict | None = None,
    in_place: bool = False,
    chunk_size: int | None = None,
) -> Tensor:
    r"""Per-edge typed features moved by their receiver's frame: :math:`\rho(R_i)\,y_e`, or
    :math:`\rho(R_i^\top)\,y_e` with ``inverse=True`` (receiver frame -> global frame), ``i = dst[e]``.

    No gather: the rows are grouped by receiver as in :func:`transport_edges`. ``pos`` blocks are not
    allowed (a per-edge feature has no node origin). ``in_place=True`` overwrites ``y`` (only without
    autograd; otherwise ignored), which saves allocating another ``[E, C]`` tensor. ``chunk_size``: output
    elements per chunk of receivers on the no-grad path (default :data:`DEFAULT_CHUNK`).

    Shapes:
        y: ``[E, reps.size]``, frames_dst: ``[N_dst, d, d]`` -> ``[E, reps.size]``
    """
    if y.dim() != 2 or y.shape[-1] != reps.size:
        raise ValueError(f"y: expected [E, {reps.size}] (the size of {str(reps)!r}), got {tuple(y.shape)}")
    _check_receiver_frames(frames_dst, reps)
    if reps.has_pos:
        raise ValueError("reps: 'pos' blocks cannot be rotated per edge (no node origin)")
    if reps.is_scalar:
        return y
    chunk = _chunk(chunk_size)
    if layout.dst is not None and _native.native_applies(reps, y, frames_dst):
        det = _receiver_det(frames_dst, cache) if _needs_det(reps) else None
        return _native.rotate(reps, y, frames_dst, det, transpose=inverse, ridx=layout.dst)
    mats = receiver_matrices(reps, frames_dst, None, cache)
    groups = _groups(reps)
    grad = torch.is_grad_enabled() and (y.requires_grad or frames_dst.requires_grad)
    out = None
    if not grad:
        out = y if (in_place and y.is_contiguous()) else torch.empty_like(y, memory_format=torch.contiguous_format)
    pieces = []
    for cols, order, parity, _m in groups:
        part = y[:, cols] if isinstance(cols, slice) else y.index_select(1, cols.to(y.device))
        M = None
        if not (order == 0 and parity == "n"):
            M = mats[(order, parity)][0]
            M = M.transpose(1, 2) if inverse else M
        if out is not None and isinstance(cols, slice):
            if M is None:
                if out is not y:
                    out[:, cols] = part
            else:
                _apply(part, None, M, layout, None, dest=out[:, cols], chunk=chunk)
            continue
        p = part if M is None else _apply(part, None, M, layout, None)
        if out is not None:
            out[:, cols.to(y.device)] = p
        else:
            pieces.append((cols, p))
    if out is not None:
        return out
    return _assemble(pieces, y.shape[0], reps.size, y)


def _assemble(pieces: list, e: int, size: int, like: Tensor) -> Tensor:
    """Columns of the groups -> one ``[E, size]`` tensor, out of place (autograd friendly)."""
    if all(isinstance(c, slice) for c, _ in pieces) and [c.start for c, _ in pieces] == sorted(
        c.start for c, _ in pieces
    ):
        return pieces[0][1] if len(pieces) == 1 else torch.cat([p for _, p in pieces], 1)
    res = like.new_zeros(e, size)
    for cols, p in pieces:
        idx = torch.arange(cols.start, cols.stop) if isinstance(cols, slice) else cols
        res = res.index_copy(1, idx.to(like.device), p)
    return res


def _transport_blocked_autograd(
    g: Tensor, src: Tensor, groups: list, mats: dict, layout: ReceiverLayout, chunk: int = DEFAULT_CHUNK
) -> Tensor:
    """Differentiable transport on a blocked layout, chunk by chunk of receivers (cache-sized pieces,
    assembled by one ``cat``: no large temporaries per tensor type, and ``cat``'s backward only slices)."""
    c = g.shape[1]
    tables = [(cols, order, parity, m, g[:, cols].contiguous()) for cols, order, parity, m in groups]
    pieces = []
    for start, stop, k in layout.segments:
        n = layout.n_dst
        cs = max(1, chunk // max(1, k * c))
        for s in range(0, n, cs):
            e = min(n, s + cs)
            idx = src[start + s * k : start + e * k]
            cols_out = []
            for _cols, order, parity, m, table in tables:
                G = table.index_select(0, idx)
                if not (order == 0 and parity == "n"):
                    M, off = mats[(order, parity)]
                    q = M.shape[-1]
                    Y = _block_product(G.view(e - s, k * m, q), M[s:e], None if off is None else off[s:e])
                    G = Y.view(e - s, q, k, m).permute(0, 2, 3, 1).reshape((e - s) * k, m * q)
                cols_out.append(G)
            pieces.append(cols_out[0] if len(cols_out) == 1 else torch.cat(cols_out, 1))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, 0)


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
    cache: dict | None = None,
    chunk_size: int | None = None,
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
        cache: optional dict for the receiver matrices (see :func:`receiver_matrices`), shared by layers.
        chunk_size: output elements per chunk of receivers on blocked layouts (default
            :data:`DEFAULT_CHUNK`; the result does not depend on it).

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
    if reps.has_pos and (pos_src is None or pos_dst is None):
        raise ValueError("pos: features with 'pos' blocks need node positions to be moved between frames")
    # global-frame features g_j = rho(R_j^T) f_j (+ x_j for positions), once per node
    chunk = _chunk(chunk_size)
    if _native.native_applies(reps, x_src, frames_dst):
        # one fused pass: gather g[src] and rotate by R_dst, no [E, C] temporaries
        g = reps.to_global(x_src, frames_src)
        det = _receiver_det(frames_dst, cache) if _needs_det(reps) else None
        return _native.rotate(reps, g, frames_dst, det, xidx=src, ridx=dst, out=out)
    mats = receiver_matrices(reps, frames_dst, pos_dst, cache)
    g = reps.to_global(x_src, frames_src, pos_src if reps.has_pos else None)
    groups = _groups(reps)
    grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x_src, frames_src, frames_dst, pos_src, pos_dst)
    )
    if grad and layout.kind == "blocked" and all(isinstance(c, slice) for c, *_ in groups):
        res = _transport_blocked_autograd(g, src, groups, mats, layout, chunk)
        return res if out is None else out.copy_(res)
    if grad:  # out of place (in-place slice writes would each copy the whole gradient in backward)
        pieces = []
        for cols, order, parity, _m in groups:
            table = g[:, cols] if isinstance(cols, slice) else g.index_select(1, cols.to(g.device))
            if order == 0 and parity == "n":
                pieces.append((cols, table.index_select(0, src)))
                continue
            M, off = mats[(order, parity)]
            pieces.append((cols, _apply(table.contiguous(), src, M, layout, off)))
        res = _assemble(pieces, e, reps.size, g)
        return res if out is None else out.copy_(res)
    if out is None:
        out = g.new_empty(e, reps.size)
    for cols, order, parity, _m in groups:
        table = g[:, cols] if isinstance(cols, slice) else g.index_select(1, cols.to(g.device))
        if not isinstance(cols, slice):  # scattered blocks: compute contiguously, then place
            if order == 0 and parity == "n":
                y = table.index_select(0, src)
            else:
                M, off = mats[(order, parity)]
                y = _apply(table.contiguous(), src, M, layout, off)
            out[:, cols.to(g.device)] = y
            continue
        dest = out[:, cols]
        if order == 0 and parity == "n":
            dest.copy_(table.index_select(0, src))
            continue
        M, off = mats[(order, parity)]
        _apply(table.contiguous(), src, M, layout, off, dest=dest, chunk=chunk)
    return out
