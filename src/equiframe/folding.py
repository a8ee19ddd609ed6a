"""Folding frame copies into the batch dimension: :class:`FoldedBatch` and the fused rotations of
typed features into / out of the frames (the machinery under :class:`~equiframe.FrameAveraging`).

A frame element ``(R, t)`` gives the local copy ``R (x - t)`` of the input; outputs come back as
``R^T y (+ t)`` and are averaged with the frame weights. Vector-only types (vectors, positions,
pseudo-vectors) take fused paths: one batched matmul per example for all ``k`` elements of a
uniform frame, one gather and one matmul for frames of any sizes, and ragged batches padded into a
dense ``[B, Nmax]`` layout (a view when all examples have the same size).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .frames.base import Frame
from .geometry import scatter_sum
from .reps import TensorReps
from ._checks import check_int, check_tensor

__all__ = ["FoldedBatch"]


def _weighted_sum(values: Tensor, index: Tensor, weight: Tensor, num_examples: int, k: int | None = None) -> Tensor:
    """``out[b] = sum_{m: index[m] = b} weight[m] * values[m]`` (a reshape-sum when copies are uniform: ``k``)."""
    v = values * weight.to(values.dtype).reshape(-1, *([1] * (values.dim() - 1)))
    M = values.shape[0]
    if k is None and num_examples and M % num_examples == 0:
        kk = M // num_examples
        if bool((index == torch.arange(num_examples, device=index.device).repeat_interleave(kk)).all()):
            k = kk
    if k is not None:
        return v.reshape(num_examples, k, *values.shape[1:]).sum(1)
    return scatter_sum(v, index, num_examples)


class FoldedBatch:
    """The index bookkeeping of one frame-averaged forward pass: the original batch -> the folded one.

    Frame averaging runs the backbone once on ``M = sum_b |F_b|`` copies. Copy ``m`` of the folded
    batch belongs to example ``index[m]`` and has averaging weight ``weight[m]``.

    Ragged (PyG) batches: folded node ``u`` is original node ``node_src[u]`` and belongs to copy
    ``new_batch[u]`` (``new_ptr`` its boundaries); folded edge ``e`` copies original edge ``edge_src[e]``
    in copy ``edge_copy[e]`` and ``edge_index`` are the folded edges. Euclidean frames keep the node order
    of each example (``frame`` holds the rotations); permutation frames put the nodes of each copy in
    frame order.

    Build one with :meth:`euclidean` (from a :class:`~equiframe.frames.Frame`) or :meth:`permutation`
    (from :class:`~equiframe.frames.graph.FrameElements`); :meth:`average` sums per-copy values back
    with the weights. Layer-wise frame averaging (a frame per layer, as in FA-GNN) uses it directly.

    Attributes:
        index: ``[M]`` example of every copy.  weight: ``[M]`` averaging weights.
        M: number of copies.  B: number of examples.  dense: dense ``[B, N, d]`` input.
        frame: the Euclidean :class:`~equiframe.frames.Frame` (None for permutations).
        k: the common frame size of a dense Euclidean fold (None if sizes differ).
        N: original number of nodes (ragged).  node_src, new_batch, new_ptr: see above.
        edge_index, edge_src, edge_copy, num_edges: the folded edges (ragged, when edges were given).

    Shapes:
        index, weight: ``[M]``; node_src, new_batch: ``[N_rep]``; new_ptr: ``[M + 1]``;
        edge_index: ``[2, E_rep]``; edge_src, edge_copy: ``[E_rep]``.
    """

    frame: "Frame | None" = None
    k: "int | None" = None
    _node_src: "Tensor | None" = None
    _src = None

    @property
    def node_src(self) -> Tensor:
        """``[N_rep]`` original node of every folded node (built on first use)."""
        if self._node_src is None and self._src is not None:
            ptr, index = self._src
            offset_in_copy = torch.arange(self.N_rep, device=ptr.device) - self.new_ptr[self.new_batch]
            self._node_src = ptr[index][self.new_batch] + offset_in_copy
        return self._node_src

    @node_src.setter
    def node_src(self, value: Tensor) -> None:
        self._node_src = value

    def __init__(self, index: Tensor, weight: Tensor, num_examples: int):
        check_tensor("index", index, ndim=1, integer=True)
        check_tensor("weight", weight, ndim=1, floating=True)
        if weight.shape != index.shape:
            raise ValueError(f"weight: expected shape {tuple(index.shape)} (one weight per copy), got {tuple(weight.shape)}")
        check_int("num_examples", num_examples, 0)
        self.index = index
        self.weight = weight
        self.M = index.shape[0]
        self.B = num_examples
        self.dense = False
        self.example_t = None
        self.edge_index = None
        self.points = None

    @classmethod
    def euclidean(cls, frame: Frame, *, dense: bool, batch: Tensor | None, edge_index: Tensor | None) -> "FoldedBatch":
        """The fold of a Euclidean frame: dense (copies ``[M, N, ...]``) or ragged (``batch`` over the nodes)."""
        if not isinstance(frame, Frame):
            raise TypeError(f"frame: expected a Frame, got {type(frame).__name__}")
        fold = cls(frame.index, frame.weight, frame.num_examples)
        fold.frame = frame
        fold.dense = dense
        if dense:
            fold.example_t = frame.example_translation()
            fold.k = frame.uniform_size
            return fold
        if not isinstance(batch, Tensor) or batch.dim() != 1:
            raise ValueError(f"batch: expected a 1-D integer tensor for a ragged fold, got {getattr(batch, 'shape', batch)!r}")
        device = frame.R.device
        counts = torch.bincount(batch, minlength=fold.B)
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        fold.N = batch.shape[0]
        k = frame.uniform_size
        fold.k = k
        if k is not None:
            # every example has k elements, stored example by example: copy m = b * k + j of example b
            # repeats the nodes of b; the folded node -> original node map is built only when asked for
            rep_counts = counts.repeat_interleave(k)
        else:
            rep_counts = counts[frame.index]  # [M]
        N_rep = int(rep_counts.sum())
        fold.N_rep = N_rep
        fold.new_batch = torch.arange(fold.M, device=device).repeat_interleave(rep_counts, output_size=N_rep)
        fold.new_ptr = torch.cat([rep_counts.new_zeros(1), rep_counts.cumsum(0)])
        fold._src = (ptr, frame.index)
        if edge_index is not None:
            _check_edges(edge_index, batch, fold.N)
            e_graph = batch[edge_index[0]]
            perm = torch.argsort(e_graph, stable=True)
            e_counts = torch.bincount(e_graph, minlength=fold.B)
            e_ptr = torch.cat([e_counts.new_zeros(1), e_counts.cumsum(0)])
            rep_e = e_counts[frame.index]
            e_copy = torch.arange(fold.M, device=device).repeat_interleave(rep_e)
            e_new_ptr = torch.cat([rep_e.new_zeros(1), rep_e.cumsum(0)])
            e_off = torch.arange(e_copy.shape[0], device=device) - e_new_ptr[e_copy]
            fold.edge_src = perm[e_ptr[frame.index][e_copy] + e_off]  # original edge of each copy
            shift = fold.new_ptr[e_copy] - ptr[frame.index][e_copy]
            fold.edge_index = edge_index[:, fold.edge_src] + shift[None, :]
            fold.edge_copy = e_copy
            fold.num_edges = edge_index.shape[1]
        return fold

    @classmethod
    def permutation(cls, elements, *, batch: Tensor, edge_index: Tensor | None, num_examples: int) -> "FoldedBatch":
        """The fold of permutation frame elements (:class:`~equiframe.frames.graph.FrameElements`)."""
        from .frames.graph import fold_edge_index  # noqa: PLC0415

        fold = cls(elements.graph, elements.weight, num_examples)
        fold.N = batch.shape[0]
        fold.node_src = elements.order
        fold.N_rep = elements.order.shape[0]
        fold.new_batch = elements.copy_index()
        fold.new_ptr = elements.ptr
        if edge_index is not None:
            _check_edges(edge_index, batch, fold.N)
            fold.edge_index, fold.edge_src, fold.edge_copy = fold_edge_index(elements, edge_index, fold.N, return_source=True)
            fold.num_edges = edge_index.shape[1]
        return fold

    def average(self, values: Tensor) -> Tensor:
        """Weighted average of per-copy ``values [M, *]`` into ``[B, *]``."""
        return _weighted_sum(values, self.index, self.weight, self.B, self.k)

    def average_nodes(self, values: Tensor) -> Tensor:
        """Weighted average of per-folded-node ``values [N_rep, *]`` into the original nodes ``[N, *]`` (ragged)."""
        w = self.weight.to(values.dtype)[self.new_batch].reshape(-1, *([1] * (values.dim() - 1)))
        return scatter_sum(values * w, self.node_src, self.N)


def _check_edges(edge_index: Tensor, batch: Tensor, N: int) -> None:
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index: expected shape [2, E], got {tuple(getattr(edge_index, 'shape', ()))}")
    if edge_index.is_floating_point() or edge_index.dtype == torch.bool:
        raise TypeError(f"edge_index: expected an integer tensor, got dtype {edge_index.dtype}")
    if edge_index.device != batch.device:
        raise ValueError(f"edge_index: is on {edge_index.device}, but the points are on {batch.device}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= N):
        raise ValueError(f"edge_index: node ids must lie in [0, {N}), got range [{int(edge_index.min())}, {int(edge_index.max())}]")
    if bool((batch[edge_index[1]] != batch[edge_index[0]]).any()):
        raise ValueError("edge_index: an edge connects nodes of different examples of the batch vector")


def _vector_only(typ: TensorReps) -> bool:
    """Reps made of order-1 blocks of one parity (vectors and positions, or pseudo-vectors)."""
    if typ.is_invariant or not len(typ.blocks) or any(b.order != 1 for b in typ.blocks):
        return False
    return len({b.parity == "p" for b in typ.blocks}) == 1


def _stacked(frame: Frame, k: int, pseudo: bool, dtype) -> Tensor:
    """``[B, k, d, d]`` frame matrices (times ``det`` for pseudo-vectors)."""
    d = frame.dim
    R = frame.R.to(dtype).reshape(-1, k, d, d)
    if pseudo:
        R = R * torch.linalg.det(R.detach()).sign()[..., None, None]
    return R


_LOOP_ROWS = 256  # vector rows per example from which the copies are written one element at a time


def _fold_vectors(x: Tensor, typ: TensorReps, frame: Frame, k: int) -> Tensor:
    """Local copies of (centred) vector features for all ``k`` frame elements with one matmul per
    example: ``[B, N*n, d] @ [B, d, k*d]`` (the inner width is ``k*d``, not ``d``)."""
    d = frame.dim
    pseudo = typ.blocks[0].parity == "p"
    B = x.shape[0]
    per_point = x.dim() == 3
    N = x.shape[1] if per_point else 1
    n = typ.size // d
    R = _stacked(frame, k, pseudo, x.dtype)  # local = x @ R_m^T
    if N * n >= _LOOP_ROWS:  # large clouds: each copy written once, contiguous, in its final place
        xr, Rt = x.reshape(B, N * n, d), R.transpose(-1, -2)
        z = x.new_empty(B, k, N * n, d)
        for j in range(k):
            if B == 1:
                torch.mm(xr[0], Rt[0, j], out=z[0, j])
            else:
                z[:, j] = torch.bmm(xr, Rt[:, j])
        return z.view(B * k, N, n * d) if per_point else z.view(B * k, n * d)
    Rcat = R.transpose(-1, -2).permute(0, 2, 1, 3).reshape(B, d, k * d)
    z = torch.bmm(x.reshape(B, N * n, d), Rcat).view(B, N, n, k, d).permute(0, 3, 1, 2, 4)
    return z.reshape(B * k, N, n * d) if per_point else z.reshape(B * k, n * d)


def _unfold_vectors(y: Tensor, typ: TensorReps, frame: Frame, k: int, t: Tensor | None) -> Tensor:
    """Weighted average of ``R_m^T y_m`` (+ t for positions) over the ``k`` copies of every example,
    fused into one matmul ``[B, N*n, k*d] @ [B, k*d, d]``."""
    d = frame.dim
    pseudo = typ.blocks[0].parity == "p"
    M = y.shape[0]
    B = M // k
    per_point = y.dim() == 3
    N = y.shape[1] if per_point else 1
    n = typ.size // d
    W = _stacked(frame, k, pseudo, y.dtype) * frame.weight.to(y.dtype).view(B, k, 1, 1)  # global_row = y_row @ R_m
    if N * n >= _LOOP_ROWS:  # large clouds: one pass over the copies, accumulated in place
        yv = y.reshape(B, k, N * n, d)
        out = torch.bmm(yv[:, 0], W[:, 0])
        for j in range(1, k):
            out.baddbmm_(yv[:, j], W[:, j])
        out = out.view(B, N, n * d)
    else:
        yy = y.reshape(B, k, N, n, d).permute(0, 2, 3, 1, 4).reshape(B, N * n, k * d)
        out = torch.bmm(yy, W.reshape(B, k * d, d)).view(B, N, n * d)
    if typ.has_pos:
        out = _translate_back(out, typ, t[:, None, :])
    return out if per_point else out[:, 0]


def _padded_layout(fold: FoldedBatch) -> "tuple[Tensor, Tensor, int] | None":
    """For a ragged fold with a common frame size: ``(dense_index [N], valid [B, Nmax], Nmax)`` to pad the
    nodes into ``[B, Nmax]`` (None when padding would more than double the work). Cached on the fold."""
    cached = getattr(fold, "_padded", False)
    if cached is not False:
        return cached
    counts = fold.new_ptr.diff()[:: fold.k] if fold.k else None
    layout = None
    if counts is not None and counts.numel() == fold.B and fold.B:
        n_max = int(counts.max())
        if fold.B * n_max == fold.N:  # equal sizes: a view, no padding
            layout = (None, None, n_max)
        elif fold.B * n_max <= 2 * fold.N:
            ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
            batch = torch.arange(fold.B, device=counts.device).repeat_interleave(counts, output_size=fold.N)
            dense_index = batch * n_max + (torch.arange(fold.N, device=counts.device) - ptr[batch])
            valid = torch.arange(n_max, device=counts.device)[None, :] < counts[:, None]
            layout = (dense_index, valid, n_max)
    fold._padded = layout
    return layout


def _fold_vectors_ragged(x: Tensor, typ: TensorReps, frame: Frame, fold: FoldedBatch, name: str) -> Tensor:
    """Ragged version of :func:`_fold_vectors`: the nodes are padded into ``[B, Nmax]`` (one matmul per
    example), rotated, and the valid rows read back in folded order (example, copy, node)."""
    layout = _padded_layout(fold)
    te = frame.example_translation() if typ.has_pos else None
    if layout is None or (typ.has_pos and te is None):
        return _to_local(x[fold.node_src], typ, frame.R[fold.new_batch], frame.t[fold.new_batch], name)
    dense_index, valid, n_max = layout
    B, k, C = fold.B, fold.k, x.shape[-1]
    if dense_index is None:  # equal sizes
        xd = x.view(B, n_max, C)
        if typ.has_pos:
            xd = _translate_precise(xd, typ, te[:, None])
        return _fold_vectors(xd, typ, frame, k).reshape(-1, C)
    if typ.has_pos:
        x = _translate_precise(x, typ, te.index_select(0, dense_index // n_max))
    xd = x.new_zeros(B * n_max, C).index_copy_(0, dense_index, x).view(B, n_max, C)
    z = _fold_vectors(xd, typ, frame, k).view(B, k, n_max, C)
    return z[valid[:, None, :].expand(B, k, n_max)]


def _unfold_vectors_ragged(y: Tensor, typ: TensorReps, frame: Frame, fold: FoldedBatch) -> Tensor:
    """Ragged version of :func:`_unfold_vectors`: the weighted average of ``R_m^T y_m`` (+ t) per node."""
    layout = _padded_layout(fold)
    te = frame.example_translation() if typ.has_pos else None
    if layout is None or (typ.has_pos and te is None):
        rep = fold.new_batch
        return fold.average_nodes(typ.to_global(y, frame.R[rep], frame.t[rep] if typ.has_pos else None))
    dense_index, valid, n_max = layout
    B, k, C = fold.B, fold.k, y.shape[-1]
    if dense_index is None:
        return _unfold_vectors(y.view(B * k, n_max, C), typ, frame, k, te).reshape(-1, C)
    if n_max * B == fold.N:
        yd = y.view(B * k, n_max, C)
    else:
        yd = y.new_zeros(B, k, n_max, C)
        yd[valid[:, None, :].expand(B, k, n_max)] = y
        yd = yd.view(B * k, n_max, C)
    out = _unfold_vectors(yd, typ, frame, k, te)  # [B, n_max, C]
    return out.reshape(B * n_max, C).index_select(0, dense_index) if n_max * B != fold.N else out.reshape(-1, C)


def _to_local(x: Tensor, typ: TensorReps, R: Tensor, t: Tensor, name: str) -> Tensor:
    if x.shape[-1] != typ.size:
        raise ValueError(f"{name}: last dimension {x.shape[-1]} does not match the declared type {str(typ)!r} (size {typ.size})")
    if typ.has_pos:
        x = _translate_precise(x, typ, t)
    return typ.to_local(x, R.to(x.dtype))


def _fold_vectors_any(x: Tensor, typ: TensorReps, frame: Frame, fold: FoldedBatch) -> Tensor:
    """Local copies of (centred) vector features for frames of any sizes: one gather, one batched matmul
    ``[M, N*n, d] @ R_m^T``."""
    d, M = frame.dim, fold.M
    per_point = x.dim() == 3
    xg = x if M == fold.B else x.index_select(0, fold.index)
    R = frame.R.to(x.dtype)
    if typ.blocks[0].parity == "p":
        R = R * torch.linalg.det(R.detach()).sign()[:, None, None]
    z = torch.bmm(xg.reshape(M, -1, d), R.transpose(-1, -2))
    return z.reshape(xg.shape)


def _unfold_vectors_any(y: Tensor, typ: TensorReps, frame: Frame, fold: FoldedBatch) -> Tensor:
    """Weighted average of ``R_m^T y_m`` (+ t for positions) for frames of any sizes: one batched matmul with
    the weights folded into ``R``, then a sum per example."""
    d, M, B = frame.dim, fold.M, fold.B
    W = frame.R.to(y.dtype) * frame.weight.to(y.dtype)[:, None, None]
    if typ.blocks[0].parity == "p":
        W = W * torch.linalg.det(frame.R.detach()).sign().to(y.dtype)[:, None, None]
    if M == B and typ.has_pos and typ.size == d and y.dtype != torch.float64:
        # one pass: t + y W (t's float32 rounding is below the output's own rounding)
        t = fold.example_t.to(y.dtype)
        tt = t[:, None].expand(B, y.reshape(M, -1, d).shape[1], d) if y.dim() == 3 else t[:, None]
        return torch.baddbmm(tt, y.reshape(M, -1, d), W).reshape(y.shape)
    z = torch.bmm(y.reshape(M, -1, d), W).reshape(y.shape)
    if M == B:
        out = z
    else:  # the first element of every example, plus the others (few in canonical mode)
        first = torch.ones(M, dtype=torch.bool, device=z.device)
        first[1:] = fold.index[1:] != fold.index[:-1]
        out = z[first]
        rest = (~first).nonzero().flatten()
        if rest.numel():
            out.index_add_(0, fold.index[rest], z[rest])
    if typ.has_pos:
        t = fold.example_t
        out = _translate_back(out, typ, t[:, None] if out.dim() == 3 else t)
    return out


def _split(t: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``t`` (float64) as ``hi + lo`` in ``dtype`` (``lo`` = the rounding error of ``hi``)."""
    hi = t.to(dtype)
    return hi, (t - hi.double()).to(dtype)


def _translate_back(y: Tensor, typ: TensorReps, t: Tensor) -> Tensor:
    """Add ``t`` (float64) to the position blocks of ``y`` in ``y``'s dtype (one pass: the rounding of ``t`` to
    that dtype is below the rounding of the output itself)."""
    if typ.size == t.shape[-1]:
        return y.add_(t.to(y.dtype)) if not y.requires_grad else y + t.to(y.dtype)
    return typ._translate(y, t.to(y.dtype), +1.0)


def _translate_precise(x: Tensor, typ: TensorReps, t: Tensor) -> Tensor:
    """Subtract ``t`` (float64) from the position blocks as ``(x - hi) - lo`` (``t = hi + lo`` in ``x``'s dtype),
    so that clouds far from the origin keep the precision of their own input: ``x - hi`` is exact for points
    close to ``t`` (Sterbenz), and ``lo`` is the rounding error of ``hi``."""
    if x.dtype == torch.float64:
        return typ._translate(x, t.double(), -1.0)
    hi, lo = _split(t, x.dtype)
    if typ.size == t.shape[-1]:  # a single position block
        return (x - hi).sub_(lo)
    return typ._translate(typ._translate(x, hi, -1.0), lo, -1.0)
