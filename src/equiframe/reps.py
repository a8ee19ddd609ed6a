"""Tensor representations of O(d): the small language that says how features transform.

A :class:`TensorReps` is an immutable, hashable description of a feature vector made of blocks of
Cartesian tensors, written like the Tensor Frames paper's code::

    TensorReps("16x0n+8x1n+2x1p+4x2n", dim=3)   # 16 scalars, 8 vectors, 2 pseudo-vectors, 4 matrices

A block ``m x k p`` holds ``m`` tensors of order ``k`` and parity ``p`` (``n`` normal, ``p`` pseudo).
An order-``k`` tensor is stored flattened, ``d**k`` channels in row-major order, and transforms as

.. math::  \\rho(R)\\,T = \\det(R)^{[p = \\text{pseudo}]}\\; R^{\\otimes k}\\, T,
           \\qquad (R^{\\otimes k}T)_{i_1\\dots i_k} = \\sum_{j} R_{i_1 j_1}\\cdots R_{i_k j_k} T_{j_1\\dots j_k}.

The special type ``pos`` is a *position*: it rotates like a vector **and translates**; plain vectors
never translate. ``transform(x, Q, s)`` applies the group element ``x -> Q x + s``;
``to_local(x, R, t)`` / ``to_global(y, R, t)`` move features into / out of a frame ``(R, t)`` whose rows
are the frame axes (``x_local = R (x - t)``, ``y = R^T y_local + t``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Iterator

import torch
from torch import Tensor

__all__ = ["Block", "TensorReps"]

_TOKEN = re.compile(r"^(?:(\d+)\s*x\s*)?(?:(\d+)\s*([np])|(pos))$")


@dataclass(frozen=True)
class Block:
    """One block of a :class:`TensorReps`: ``mul`` tensors of ``order`` and ``parity``.

    ``parity`` is ``"n"`` (normal), ``"p"`` (pseudo) or ``"pos"`` (a position: order 1, translates).
    """

    mul: int
    order: int
    parity: str

    def __str__(self) -> str:
        if self.parity == "pos":
            return "pos" if self.mul == 1 else f"{self.mul}xpos"
        return f"{self.mul}x{self.order}{self.parity}"

    def size(self, dim: int) -> int:
        """Number of channels: ``mul * dim**order``."""
        return self.mul * dim**self.order


def _parse(spec: str) -> tuple[Block, ...]:
    if not isinstance(spec, str):
        raise TypeError(f"reps: expected a string like '8x0n+4x1n', got {type(spec).__name__}")
    text = spec.strip()
    if text == "":
        return ()
    blocks = []
    for raw in text.split("+"):
        token = raw.strip()
        match = _TOKEN.match(token)
        if match is None:
            raise ValueError(
                f"reps: cannot parse block {token!r} in {spec!r}; expected e.g. '8x0n', '2x1p', '3x2n' or 'pos'"
            )
        mul = int(match.group(1)) if match.group(1) is not None else 1
        if match.group(4) is not None:
            blocks.append(Block(mul, 1, "pos"))
        else:
            blocks.append(Block(mul, int(match.group(2)), match.group(3)))
    return tuple(b for b in blocks if b.mul > 0)


class TensorReps:
    """An immutable description of how a flat feature vector transforms under O(d) (and translations).

    Args:
        spec: a string such as ``"16x0n+8x1n+2x1p+4x2n"`` or ``"pos"``, another ``TensorReps``
            (copied, optionally with a new ``dim``), or an iterable of :class:`Block`.
        dim: the dimension ``d`` of the space (``d >= 1``). Defaults to 3, or to ``spec.dim``.

    Example:
        >>> r = TensorReps("2x0n+1x1n+1x1p+1x2n", dim=3)
        >>> r.size
        17
        >>> TensorReps(str(r), dim=3) == r
        True
    """

    __slots__ = ("_blocks", "_dim", "__dict__")

    def __init__(self, spec: "str | TensorReps | tuple[Block, ...] | list[Block]" = "", dim: int | None = None):
        if isinstance(spec, TensorReps):
            blocks = spec.blocks
            dim = spec.dim if dim is None else dim
        elif isinstance(spec, str):
            blocks = _parse(spec)
        elif isinstance(spec, (tuple, list)) and all(isinstance(b, Block) for b in spec):
            blocks = tuple(spec)
        else:
            raise TypeError(f"reps: expected a reps string, TensorReps or list of Block, got {type(spec).__name__}")
        dim = 3 if dim is None else dim
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"dim: expected a positive integer, got {dim!r}")
        for b in blocks:
            if b.order < 0 or b.mul < 0 or b.parity not in ("n", "p", "pos"):
                raise ValueError(f"reps: invalid block {b!r}")
        object.__setattr__(self, "_blocks", tuple(blocks))
        object.__setattr__(self, "_dim", dim)

    # ------------------------------------------------------------------ value semantics
    def __setattr__(self, name, value):  # immutability
        if name in ("_blocks", "_dim"):
            raise AttributeError("TensorReps is immutable")
        object.__setattr__(self, name, value)

    @property
    def blocks(self) -> tuple[Block, ...]:
        """The blocks, in storage order."""
        return self._blocks

    @property
    def dim(self) -> int:
        """The dimension ``d`` of the space the tensors live in."""
        return self._dim

    def __str__(self) -> str:
        return "+".join(str(b) for b in self._blocks)

    def __repr__(self) -> str:
        return f"TensorReps({str(self)!r}, dim={self._dim})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = TensorReps(other, dim=self._dim)
            except (ValueError, TypeError):
                return False
        if not isinstance(other, TensorReps):
            return NotImplemented
        return self._blocks == other._blocks and self._dim == other._dim

    def __hash__(self) -> int:
        return hash((self._blocks, self._dim))

    def __iter__(self) -> Iterator[Block]:
        return iter(self._blocks)

    def __len__(self) -> int:
        return len(self._blocks)

    def __add__(self, other: "TensorReps | str") -> "TensorReps":
        other = TensorReps(other, dim=self._dim) if isinstance(other, str) else other
        if other.dim != self._dim:
            raise ValueError(f"reps: cannot concatenate reps of dim {self._dim} and {other.dim}")
        return TensorReps(self._blocks + other._blocks, dim=self._dim)

    def __mul__(self, n: int) -> "TensorReps":
        return TensorReps(tuple(Block(b.mul * n, b.order, b.parity) for b in self._blocks), dim=self._dim)

    # ------------------------------------------------------------------ derived properties
    @cached_property
    def size(self) -> int:
        """Number of channels of a flattened feature vector."""
        return sum(b.size(self._dim) for b in self._blocks)

    @cached_property
    def num_tensors(self) -> int:
        """Number of tensors (sum of the multiplicities)."""
        return sum(b.mul for b in self._blocks)

    @cached_property
    def is_scalar(self) -> bool:
        """True if every block is a normal scalar (``0n``): the features are invariant."""
        return all(b.order == 0 and b.parity == "n" for b in self._blocks)

    @cached_property
    def has_pos(self) -> bool:
        """True if some block is a position (translates)."""
        return any(b.parity == "pos" for b in self._blocks)

    @cached_property
    def max_order(self) -> int:
        return max((b.order for b in self._blocks), default=0)

    def simplify(self) -> "TensorReps":
        """Merge adjacent blocks of the same type: ``1x1n+2x1n -> 3x1n`` (same storage layout)."""
        out: list[Block] = []
        for b in self._blocks:
            if out and (out[-1].order, out[-1].parity) == (b.order, b.parity):
                out[-1] = Block(out[-1].mul + b.mul, b.order, b.parity)
            else:
                out.append(b)
        return TensorReps(tuple(out), dim=self._dim)

    def slices(self) -> list[tuple[Block, slice]]:
        """Each block with the channel slice it occupies."""
        out, start = [], 0
        for b in self._blocks:
            stop = start + b.size(self._dim)
            out.append((b, slice(start, stop)))
            start = stop
        return out

    @cached_property
    def _plan(self) -> tuple:
        """Per order: the channel indices (as a slice when contiguous), and per-channel flags.

        Returns a tuple of ``(order, index, n_tensors, pseudo_mask | None, pos_mask | None)``,
        plus whether the concatenation of the per-order pieces in order is the identity layout.
        """
        by_order: dict[int, list[tuple[int, int, Block]]] = {}
        for b, sl in self.slices():
            by_order.setdefault(b.order, []).append((sl.start, sl.stop, b))
        groups = []
        starts = []
        for order in sorted(by_order):
            spans = by_order[order]
            idx = torch.cat([torch.arange(a, z) for a, z, _ in spans])
            contiguous = all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
            index = slice(spans[0][0], spans[-1][1]) if contiguous else idx
            n_tensors = sum(b.mul for _, _, b in spans)
            per_tensor_pseudo = torch.cat([torch.full((b.mul,), b.parity == "p") for _, _, b in spans])
            per_tensor_pos = torch.cat([torch.full((b.mul,), b.parity == "pos") for _, _, b in spans])
            groups.append(
                (
                    order,
                    index,
                    n_tensors,
                    per_tensor_pseudo if bool(per_tensor_pseudo.any()) else None,
                    per_tensor_pos if bool(per_tensor_pos.any()) else None,
                    bool(per_tensor_pseudo.all()),
                )
            )
            starts.append(spans[0][0])
        # identity layout if every group is contiguous and the groups appear in storage order
        ordered = all(isinstance(g[1], slice) for g in groups) and starts == sorted(starts)
        ordered = ordered and all(
            groups[i][1].stop == groups[i + 1][1].start for i in range(len(groups) - 1)
        ) if ordered else False
        return tuple(groups), ordered

    # ------------------------------------------------------------------ actions
    def _check(self, x: Tensor, R: Tensor, name: str = "x") -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(x).__name__}")
        if x.shape[-1:] != (self.size,) and not (self.size == 0 and x.shape[-1:] == (0,)):
            raise ValueError(
                f"{name}: last dimension {tuple(x.shape)[-1:] or '()'} does not match reps {str(self)!r} "
                f"of size {self.size} (dim={self._dim})"
            )
        if R.shape[-2:] != (self._dim, self._dim):
            raise ValueError(f"R: expected [..., {self._dim}, {self._dim}] matrices, got shape {tuple(R.shape)}")

    @staticmethod
    def _split_batch(batch: torch.Size, rbatch: torch.Size) -> tuple[tuple[int, ...], int]:
        """Split the broadcast batch shape into leading dims and trailing dims where R is broadcast.

        Returns ``(lead, prod(tail))``: R has size 1 on every trailing dim (those dims become rows).
        """
        rb = (1,) * (len(batch) - len(rbatch)) + tuple(rbatch)
        k = len(batch)
        while k > 0 and rb[k - 1] == 1:
            k -= 1
        tail = 1
        for n in batch[k:]:
            tail *= n
        return tuple(batch[:k]), tail

    def _rotate(self, x: Tensor, R: Tensor, det: Tensor | None) -> Tensor:
        """Apply rho(R) (no translation) to x [..., size] with R [..., d, d] broadcast."""
        d = self._dim
        groups, ordered = self._plan
        batch = torch.broadcast_shapes(x.shape[:-1], R.shape[:-2])
        need_det = any(g[3] is not None for g in groups)
        if need_det and det is None:
            det = torch.linalg.det(R)
        if x.dim() == 2 and R.dim() == 3 and x.shape[0] == R.shape[0] and R.shape[0] > 1:
            # one rotation per row ([B, C] with R [B, d, d], the tensor-frame hot path): component-major
            return _rotate_rows(x, R, groups, ordered, det.reshape(-1).expand(x.shape[0]) if need_det else None)
        pieces = []
        lead = tail_rows = Rt = None
        kron: dict[int, Tensor] = {}
        for order, index, n_tensors, pseudo, _pos, all_pseudo in groups:
            xs = x[..., index] if isinstance(index, slice) else x.index_select(-1, index.to(x.device))
            if order == 0:
                y = xs.expand(*batch, xs.shape[-1]) if xs.shape[:-1] != batch else xs
            else:
                # Batch dims where R is broadcast (size 1) are folded into the rows, so that the whole order-k block is one batched matmul
                # [*lead, rows, d^k] @ [*lead, d^k, d^k] with the Kronecker power R^{(x)k} (built once per
                # call and order), or, for large d^k, k matmuls with R that contract the last tensor axis
                # and cycle it to the front.
                if xs.shape[:-1] != batch:
                    xs = xs.expand(*batch, xs.shape[-1])
                if lead is None:
                    lead, tail_rows = self._split_batch(batch, R.shape[:-2])
                    rb = (1,) * (len(batch) - (R.dim() - 2)) + tuple(R.shape[:-2])
                    Rt = R.reshape(*rb[: len(lead)], d, d).transpose(-1, -2)
                q = d**order
                if order == 1 or q <= _KRON_MAX:
                    if order not in kron:
                        kron[order] = Rt if order == 1 else kron_power(Rt, order)  # (R^T)^{(x)k} = (R^{(x)k})^T
                    y = torch.matmul(xs.reshape(*lead, tail_rows * n_tensors, q), kron[order])
                else:
                    rows = tail_rows * n_tensors * d ** (order - 1)
                    y = xs.reshape(*lead, rows, d)
                    for _ in range(order):
                        y = torch.matmul(y, Rt)
                        y = y.reshape(*lead, tail_rows * n_tensors, d ** (order - 1), d).transpose(-1, -2)
                        y = y.reshape(*lead, rows, d)
                y = y.reshape(*batch, n_tensors * q)
            if pseudo is not None:
                if all_pseudo:
                    y = y * det[..., None]
                else:
                    mask = pseudo.to(x.device).repeat_interleave(d**order)
                    y = torch.where(mask, y * det[..., None], y)
            pieces.append((index, y))
        if len(pieces) == 1 and ordered:
            return pieces[0][1]
        if ordered:
            return torch.cat([p for _, p in pieces], dim=-1)
        out = x.new_empty(*batch, self.size)
        for index, y in pieces:
            if isinstance(index, slice):
                out[..., index] = y
            else:
                out[..., index.to(x.device)] = y
        return out

    def _translate(self, y: Tensor, t: Tensor, sign: float) -> Tensor:
        """Add sign * t to every position block of y [..., size] (t [..., d] broadcast)."""
        if not self.has_pos:
            return y
        if t.shape[-1] != self._dim:
            raise ValueError(f"t: expected [..., {self._dim}] translations, got shape {tuple(t.shape)}")
        t = t.to(y.dtype)
        reps_t = torch.zeros(*t.shape[:-1], self.size, dtype=y.dtype, device=y.device)
        for b, sl in self.slices():
            if b.parity == "pos":
                reps_t[..., sl] = t.repeat(*([1] * (t.dim() - 1)), b.mul)
        return y + sign * reps_t

    def transform(self, x: Tensor, Q: Tensor, s: Tensor | None = None, *, det: Tensor | None = None) -> Tensor:
        """Apply the group element ``g = (Q, s)``: tensors ``rho(Q) x``, positions ``Q x + s``.

        Args:
            x: features ``[..., size]``.
            Q: orthogonal matrices ``[..., d, d]``, broadcast against ``x``'s batch dims.
            s: translations ``[..., d]`` (only positions use it); ``None`` = no translation.
            det: optional precomputed ``det(Q)`` ``[...]`` (saves a determinant).

        Shapes:
            x: ``[*, size]``, Q: ``[*, d, d]``, s: ``[*, d]`` -> ``[*, size]`` (broadcast batch dims).
        """
        self._check(x, Q)
        y = x if self.is_scalar else self._rotate(x, Q, det)
        if s is not None:
            y = self._translate(y, s, +1.0)
        return y

    def to_local(self, x: Tensor, R: Tensor, t: Tensor | None = None, *, det: Tensor | None = None) -> Tensor:
        """Express global features in the frame ``(R, t)``: ``rho(R) x``; positions ``R (x - t)``."""
        self._check(x, R)
        if t is not None:
            x = self._translate(x, t, -1.0)
        return x if self.is_scalar else self._rotate(x, R, det)

    def to_global(self, y: Tensor, R: Tensor, t: Tensor | None = None, *, det: Tensor | None = None) -> Tensor:
        """Map local features back: ``rho(R^T) y``; positions ``R^T y + t``."""
        self._check(y, R, "y")
        out = y if self.is_scalar else self._rotate(y, R.transpose(-1, -2), det)
        if t is not None:
            out = self._translate(out, t, +1.0)
        return out

    def matrix(self, R: Tensor) -> Tensor:
        """The representation matrix ``rho(R)`` ``[..., size, size]`` (block diagonal; positions
        contribute their rotation part only, since translation is affine)."""
        if R.shape[-2:] != (self._dim, self._dim):
            raise ValueError(f"R: expected [..., {self._dim}, {self._dim}] matrices, got shape {tuple(R.shape)}")
        eye = torch.eye(self.size, dtype=R.dtype, device=R.device)
        # columns of rho(R) are rho(R) e_j
        return self._rotate(eye, R[..., None, :, :], None).transpose(-1, -2) if not self.is_scalar else (
            eye.expand(*R.shape[:-2], self.size, self.size)
        )

    def scalar_reps(self) -> "TensorReps":
        """Reps of the same size made of scalars only (what an invariant network sees)."""
        return TensorReps(f"{self.size}x0n", dim=self._dim) if self.size else TensorReps("", dim=self._dim)


_KRON_MAX = 27  # use one matmul with the Kronecker power R^{(x)k} when d^k <= this


_CM_CHUNK = 1 << 17  # entries of x per chunk of rows in _rotate_rows (512 KB of float32: stays in L2)


def _rotate_rows(x: Tensor, R: Tensor, groups: tuple, ordered: bool, det: Tensor | None) -> Tensor:
    r"""``rho(R_b) x_b`` for every row ``b``: one rotation per row, all tensor orders (the tensor-frame hot path).

    Works in the component-major layout (row index ``b`` innermost): the rows are transposed once to
    ``x^T`` ``[C, B]``, each order-``k`` group ``[m, d, ..., d, B]`` has its tensor axes contracted with
    ``R`` in turn, :math:`Y_{.., a, ..} = \sum_c R_{ac} X_{.., c, ..}` (``k d`` long multiply-adds per
    entry, no tiny per-row matmuls), scalars are copied, pseudo tensors scaled by :math:`\det R_b`, and the
    result is transposed back. Without autograd the rows are processed in cache-sized chunks through a few
    buffers allocated once per call and reused: fresh multi-megabyte temporaries per operation would cost
    more in page faults than the arithmetic itself. With autograd the work is done out of place in one piece.

    Args:
        x: ``[B, C]`` features (``C`` = the reps size).
        R: ``[B, d, d]`` one matrix per row (any strides, e.g. a transposed view).
        groups, ordered: :attr:`TensorReps._plan`.
        det: ``[B]`` determinants (only read when some tensor is pseudo).

    Shapes:
        x: ``[B, C]``, R: ``[B, d, d]``, det: ``[B]`` -> ``[B, C]``
    """
    dtype = torch.promote_types(x.dtype, R.dtype)
    x, R = x.to(dtype), R.to(dtype)
    if det is not None:
        det = det.to(dtype)
    n_rows, c = x.shape
    d = R.shape[-1]
    rcm = R.permute(1, 2, 0).contiguous()  # [a, c, B]: R[b, a, c] with b innermost
    grad = torch.is_grad_enabled() and (
        x.requires_grad or R.requires_grad or (det is not None and det.requires_grad)
    )
    if grad or n_rows == 0:
        yt = _rotate_cm(x.t().contiguous(), rcm, det, groups, ordered, d)
        return yt.t().contiguous()
    cs = n_rows if x.device.type != "cpu" else max(64, min(n_rows, _CM_CHUNK // max(1, c)))
    out = torch.empty(n_rows, c, dtype=dtype, device=x.device)
    max_q = max((g[2] * d ** g[0] for g in groups if g[0] > 1), default=0)
    n_tmp = min(2, max((g[0] for g in groups), default=0) - 1)
    xbuf, ybuf = x.new_empty(c * cs), x.new_empty(c * cs)
    tmp = [x.new_empty(max_q * cs) for _ in range(n_tmp)]
    for s in range(0, n_rows, cs):
        b = min(cs, n_rows - s)
        xt = xbuf[: c * b].view(c, b)
        xt.copy_(x[s : s + b].t())
        yt = ybuf[: c * b].view(c, b)
        _rotate_cm(xt, rcm[..., s : s + b], None if det is None else det[s : s + b], groups, ordered, d,
                   out=yt, tmp=tmp)
        out[s : s + b].copy_(yt.t())
    return out


def _rotate_cm(
    xt: Tensor,
    rcm: Tensor,
    det: Tensor | None,
    groups: tuple,
    ordered: bool,
    d: int,
    out: Tensor | None = None,
    tmp: list[Tensor] | None = None,
) -> Tensor:
    """:func:`_rotate_rows` on component-major rows ``xt`` ``[C, B]`` with ``rcm`` ``[d, d, B]``.

    With ``out`` (``[C, B]``, contiguous) the result is written there, using the flat buffers ``tmp`` for
    the intermediate contractions of orders ``>= 2`` (no autograd); otherwise it is returned (autograd).
    """
    b = xt.shape[1]
    pieces = []
    for order, index, n_tensors, pseudo, _pos, all_pseudo in groups:
        xs = xt[index] if isinstance(index, slice) else xt.index_select(0, index.to(xt.device))
        dest = None
        if out is not None:  # scattered blocks: computed contiguously, then placed
            dest = out[index] if isinstance(index, slice) else torch.empty_like(xs)
        if order == 0:
            y = xs if dest is None else dest.copy_(xs)
        else:
            y = _contract_cm(xs, rcm, order, n_tensors, d, dest, tmp if out is not None else None)
        if pseudo is not None:
            if all_pseudo:
                f = det.view(1, b)
            else:
                f = torch.where(pseudo.to(xt.device).view(-1, 1), det.view(1, b), det.new_ones(()))
            yv = y.view(n_tensors, d**order, b)
            f = f.view(-1, 1, b)
            y = yv.mul_(f).view(-1, b) if out is not None else (yv * f).view(-1, b)
        if out is not None and not isinstance(index, slice):
            out[index.to(xt.device)] = y
        elif out is None:
            pieces.append((index, y))
    if out is not None:
        return out
    if len(pieces) == 1 and ordered:
        return pieces[0][1]
    if ordered:
        return torch.cat([p for _, p in pieces], 0)
    idx = torch.cat([torch.arange(i.start, i.stop) if isinstance(i, slice) else i for i, _ in pieces])
    perm = torch.empty_like(idx)
    perm[idx] = torch.arange(idx.numel())
    return torch.cat([p for _, p in pieces], 0).index_select(0, perm.to(xt.device))


def _contract_cm(
    xs: Tensor, rcm: Tensor, order: int, n_tensors: int, d: int, dest: Tensor | None, tmp: list[Tensor] | None
) -> Tensor:
    r"""Component-major :math:`R^{\otimes k}`: contract every tensor axis of ``xs`` with ``R`` in turn.

    ``xs``: ``[m d^k, B]`` (viewed as ``[m, d, ..., d, B]``); ``rcm``: ``[d, d, B]`` with
    ``rcm[a, c] = R[:, a, c]``. Axis ``t``: :math:`Y_{.., a, ..} = \sum_c R_{ac} X_{.., c, ..}` as ``d``
    broadcast multiply-adds. With ``tmp`` (no autograd) the intermediates live in the flat buffers ``tmp``
    and the last step writes into ``dest``; otherwise every step allocates (autograd friendly).

    Shapes:
        xs: ``[m d^k, B]``, rcm: ``[d, d, B]`` -> ``[m d^k, B]``
    """
    b = xs.shape[1]
    full = [n_tensors] + [d] * order + [b]
    cur = xs.reshape(full)
    numel = xs.shape[0] * b
    for t in range(order):
        ax = 1 + t
        shape = [1] * (order + 2)
        shape[ax], shape[-1] = d, b
        if tmp is None:
            y = None
            for c in range(d):
                xc, r = cur.narrow(ax, c, 1), rcm[:, c].reshape(shape)
                y = xc * r if y is None else y.addcmul_(xc, r)
        else:
            y = (dest if t == order - 1 else tmp[t % 2][:numel]).view(full)
            for c in range(d):
                xc, r = cur.narrow(ax, c, 1), rcm[:, c].reshape(shape)
                if c == 0:
                    torch.mul(xc, r, out=y)
                else:
                    y.addcmul_(xc, r)
        cur = y
    return cur.reshape(n_tensors * d**order, b)


def kron_power(R: Tensor, k: int) -> Tensor:
    r"""Kronecker power :math:`R^{\otimes k}` of every matrix, row-major, so that for a flattened order-``k``
    tensor ``T`` (``d**k`` channels), ``R^{(x)k} @ T`` is :math:`R^{\otimes k} T` (``k = 0``: ones ``[..., 1, 1]``).

    Shapes:
        R: ``[..., d, d]`` -> ``[..., d**k, d**k]``
    """
    d = R.shape[-1]
    if k == 0:
        return R.new_ones(*R.shape[:-2], 1, 1)
    K = R
    for _ in range(k - 1):
        q = K.shape[-1]
        K = (K[..., :, None, :, None] * R[..., None, :, None, :]).reshape(*R.shape[:-2], q * d, q * d)
    return K


def as_reps(spec: "str | TensorReps", dim: int, name: str = "reps") -> TensorReps:
    """Coerce ``spec`` to a :class:`TensorReps` of dimension ``dim`` with an error naming ``name``."""
    if isinstance(spec, TensorReps):
        if spec.dim != dim:
            raise ValueError(f"{name}: reps {spec!r} has dim {spec.dim}, expected dim {dim}")
        return spec
    try:
        return TensorReps(spec, dim=dim)
    except (ValueError, TypeError) as err:
        raise type(err)(f"{name}: {err}") from None

