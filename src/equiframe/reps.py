"""Tensor representations of O(d): the small language that says how features transform.

A :class:`TensorReps` is an immutable, hashable description of a feature vector made of blocks of
Cartesian tensors, written like the Tensor Frames paper's code::

    TensorReps("16x0n+8x1n+2x1p+4x2n", dim=3)   # 16 scalars, 8 vectors, 2 pseudo-vectors, 4 matrices

A block ``m x k p`` holds ``m`` tensors of order ``k`` and parity ``p`` (``n`` normal, ``p`` pseudo).
An order-``k`` tensor is stored flattened, ``d**k`` channels in row-major order, and transforms as

.. math::  \\rho(R)\\,T = \\det(R)^{[p = \\text{pseudo}]}\\; R^{\\otimes k}\\, T,
           \\qquad (R^{\\otimes k}T)_{i_1\\dots i_k} = \\sum_{j} R_{i_1 j_1}\\cdots R_{i_k j_k} T_{j_1\\dots j_k}.

The special type ``pos`` is a *position*: it rotates like a vector **and translates**; plain vectors
never translate. The special type ``scalar`` (also spelled ``invariant``) is invariant features of any
size and shape (replicated by frame averaging, never transformed): ``TensorReps("scalar")``, with
:attr:`TensorReps.is_invariant` True and no fixed :attr:`~TensorReps.size`.

The dimension ``d`` is never guessed: ``TensorReps("1x1n")`` without ``dim`` is *unbound* (generic in
``d``); it is bound by ``TensorReps(r, dim=d)`` / :func:`as_reps`, or by the matrices it is applied to
(``transform(x, Q)`` reads ``d`` from ``Q``). Its :attr:`~TensorReps.size` needs a bound ``d``
(all-scalar reps excepted). ``transform(x, Q, s)`` applies the group element ``x -> Q x + s``;
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
from . import _native
from ._checks import check_int, check_tensor

__all__ = ["Block", "TensorReps", "as_reps", "INVARIANT_SPELLINGS"]

INVARIANT_SPELLINGS = ("scalar", "invariant")
"""Accepted spellings of the invariant type (features of any size that never transform)."""

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

    __slots__ = ("_blocks", "_dim", "_any", "__dict__")

    def __init__(self, spec: "str | TensorReps | tuple[Block, ...] | list[Block]" = "", dim: int | None = None):
        any_size = False
        if isinstance(spec, TensorReps):
            blocks, any_size = spec.blocks, spec._any
            dim = spec.dim if dim is None else dim
        elif isinstance(spec, str):
            if spec.strip() in INVARIANT_SPELLINGS:
                blocks, any_size = (), True
            else:
                blocks = _parse(spec)
        elif isinstance(spec, (tuple, list)) and all(isinstance(b, Block) for b in spec):
            blocks = tuple(spec)
        else:
            raise TypeError(f"reps: expected a reps string, TensorReps or list of Block, got {type(spec).__name__}")
        if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
            raise ValueError(f"dim: expected a positive integer, got {dim!r}")
        for b in blocks:
            if not isinstance(b, Block) or not isinstance(b.mul, int) or not isinstance(b.order, int):
                raise TypeError(f"reps: invalid block {b!r}")
            if b.order < 0 or b.mul < 0 or b.parity not in ("n", "p", "pos") or (b.parity == "pos" and b.order != 1):
                raise ValueError(f"reps: invalid block {b!r}")
        object.__setattr__(self, "_blocks", tuple(blocks))
        object.__setattr__(self, "_dim", dim)
        object.__setattr__(self, "_any", any_size)

    @classmethod
    def invariant(cls, dim: int | None = None) -> "TensorReps":
        """Invariant features of any size and shape (the ``"scalar"`` type)."""
        return cls("scalar", dim=dim)

    # ------------------------------------------------------------------ value semantics
    def __setattr__(self, name, value):  # immutability
        if name in ("_blocks", "_dim", "_any"):
            raise AttributeError("TensorReps is immutable")
        object.__setattr__(self, name, value)

    @property
    def blocks(self) -> tuple[Block, ...]:
        """The blocks, in storage order."""
        return self._blocks

    @property
    def dim(self) -> int | None:
        """The dimension ``d`` of the space the tensors live in (None: not bound yet)."""
        return self._dim

    @property
    def is_invariant(self) -> bool:
        """True for the ``"scalar"`` type: invariant features of any size and shape."""
        return self._any

    def with_dim(self, dim: int) -> "TensorReps":
        """The same reps bound to dimension ``dim`` (an error if bound to another one)."""
        if self._dim is not None and self._dim != dim and not self._dim_free:
            raise ValueError(f"dim: reps {str(self)!r} has dim {self._dim}, expected dim {dim}")
        return self if self._dim == dim else TensorReps(self, dim=dim)

    @property
    def _dim_free(self) -> bool:
        """Whether the dimension does not matter (only scalars, or the invariant type)."""
        return self._any or all(b.order == 0 for b in self._blocks)

    def _need_dim(self) -> int:
        if self._dim is None:
            raise ValueError(
                f"dim: reps {str(self)!r} is not bound to a dimension; give TensorReps(..., dim=d) "
                "(the dimension is never guessed)"
            )
        return self._dim

    def __str__(self) -> str:
        if self._any:
            return "scalar"
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
        if self._any != other._any or self._blocks != other._blocks:
            return False
        return self._dim == other._dim or self._dim_free

    def __hash__(self) -> int:
        return hash((self._blocks, self._any, None if self._dim_free else self._dim))

    def __iter__(self) -> Iterator[Block]:
        return iter(self._blocks)

    def __len__(self) -> int:
        return len(self._blocks)

    def __add__(self, other: "TensorReps | str") -> "TensorReps":
        other = TensorReps(other, dim=self._dim) if isinstance(other, str) else other
        if not isinstance(other, TensorReps):
            return NotImplemented
        if self._any or other._any:
            raise ValueError("reps: the invariant type 'scalar' has no fixed size and cannot be concatenated")
        if other.dim is not None and self._dim is not None and other.dim != self._dim:
            raise ValueError(f"reps: cannot concatenate reps of dim {self._dim} and {other.dim}")
        return TensorReps(self._blocks + other._blocks, dim=self._dim if self._dim is not None else other.dim)

    def __mul__(self, n: int) -> "TensorReps":
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n: expected a non-negative integer multiplicity, got {n!r}")
        if self._any:
            return self
        return TensorReps(tuple(Block(b.mul * n, b.order, b.parity) for b in self._blocks), dim=self._dim)

    # ------------------------------------------------------------------ derived properties
    @cached_property
    def size(self) -> int:
        """Number of channels of a flattened feature vector (an error for the invariant type, which
        has no fixed size, and for unbound reps with tensor blocks)."""
        if self._any:
            raise ValueError("reps: the invariant type 'scalar' has no fixed size")
        if all(b.order == 0 for b in self._blocks):
            return sum(b.mul for b in self._blocks)
        d = self._need_dim()
        return sum(b.size(d) for b in self._blocks)

    @cached_property
    def num_tensors(self) -> int:
        """Number of tensors (sum of the multiplicities)."""
        return sum(b.mul for b in self._blocks)

    @cached_property
    def is_scalar(self) -> bool:
        """True if every block is a normal scalar (``0n``), or for the invariant type: the features are invariant."""
        return self._any or all(b.order == 0 and b.parity == "n" for b in self._blocks)

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
        if self._any:
            raise ValueError("reps: the invariant type 'scalar' has no fixed channel layout")
        d = 1 if self._dim_free and self._dim is None else self._need_dim()
        out, start = [], 0
        for b in self._blocks:
            stop = start + b.size(d)
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

    @cached_property
    def _native_entries(self) -> Tensor | None:
        """Blocks as ``[n, 4]`` int32 rows ``(offset, order, count, pseudo)`` for :mod:`equiframe._native`
        (``None`` when some order is above its :data:`~equiframe._native.MAX_ORDER`)."""
        if not self._blocks or self.max_order > _native.MAX_ORDER:
            return None
        rows = [[sl.start, b.order, b.mul, int(b.parity == "p")] for b, sl in self.slices()]
        return torch.tensor(rows, dtype=torch.int32)

    def _native_ok(self, x: Tensor, R: Tensor) -> bool:
        """Whether :func:`equiframe._native.rotate_rows` can rotate features ``x`` of this type by ``R``
        (device, dtype, ``d``, orders, no gradient wanted for ``R``)."""
        return self._native_entries is not None and _native.supports(x, R, self.max_order)

    # ------------------------------------------------------------------ actions
    def _bound(self, R: Tensor, name: str = "R") -> "TensorReps":
        """These reps bound to the dimension of the matrices ``R`` when they are unbound."""
        if not isinstance(R, Tensor):
            raise TypeError(f"{name}: expected a tensor of [..., d, d] matrices, got {type(R).__name__}")
        if R.dim() < 2 or R.shape[-1] != R.shape[-2]:
            raise ValueError(f"{name}: expected [..., d, d] matrices, got shape {tuple(R.shape)}")
        return self if self._dim is not None else TensorReps(self, dim=R.shape[-1])

    def _check(self, x: Tensor, R: Tensor, name: str = "x") -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(x).__name__}")
        if self._any:
            return
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

    def _rotate(self, x: Tensor, R: Tensor, det: Tensor | None, chunk_size: int | None = None) -> Tensor:
        """Apply rho(R) (no translation) to x [..., size] with R [..., d, d] broadcast."""
        d = self._dim
        groups, ordered = self._plan
        batch = torch.broadcast_shapes(x.shape[:-1], R.shape[:-2])
        need_det = any(g[3] is not None for g in groups)
        if need_det and det is None:
            det = torch.linalg.det(R)
        if x.dim() == 2 and R.dim() == 3 and x.shape[0] == R.shape[0] and R.shape[0] > 1:
            # one rotation per row ([B, C] with R [B, d, d], the tensor-frame hot path): the compiled kernel
            # when it applies (gradients for x only), else component-major PyTorch
            if self._native_ok(x, R) and not (torch.is_grad_enabled() and det is not None and det.requires_grad):
                return _native.rotate_rows(x, R, self._native_entries, det.reshape(-1) if need_det else None)
            return _rotate_rows(x, R, groups, ordered, det.reshape(-1).expand(x.shape[0]) if need_det else None, chunk_size)
        pieces = []
        lead = tail_rows = Rt = None
        kron: dict[int, Tensor] = {}
        for order, index, n_tensors, pseudo, _pos, all_pseudo in groups:
            xs = x[..., index] if isinstance(index, slice) else x.index_select(-1, index.to(x.device))
            if order == 0:
                y = xs.expand(*batch, xs.shape[-1]) if xs.shape[:-1] != batch else xs
            else:
                # Broadcast R (one row per matrix is handled by _rotate_rows above): batch dims where R is
                # broadcast (size 1) are folded into the rows, so that the whole order-k block is one batched
                # matmul [*lead, rows, d^k] @ [*lead, d^k, d^k] with the Kronecker power R^{(x)k} (built once per
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
        if self._dim is None:
            return TensorReps(self, dim=t.shape[-1])._translate(y, t, sign)
        if t.shape[-1] != self._dim:
            raise ValueError(f"t: expected [..., {self._dim}] translations, got shape {tuple(t.shape)}")
        t = t.to(y.dtype)
        reps_t = torch.zeros(*t.shape[:-1], self.size, dtype=y.dtype, device=y.device)
        for b, sl in self.slices():
            if b.parity == "pos":
                reps_t[..., sl] = t.repeat(*([1] * (t.dim() - 1)), b.mul)
        return y + sign * reps_t

    def transform(
        self, x: Tensor, Q: Tensor, s: Tensor | None = None, *, det: Tensor | None = None, chunk_size: int | None = None
    ) -> Tensor:
        """Apply the group element ``g = (Q, s)``: tensors ``rho(Q) x``, positions ``Q x + s``.

        Args:
            x: features ``[..., size]``.
            Q: orthogonal matrices ``[..., d, d]``, broadcast against ``x``'s batch dims.
            s: translations ``[..., d]`` (only positions use it); ``None`` = no translation.
            det: optional precomputed ``det(Q)`` ``[...]`` (saves a determinant).
            chunk_size: rows per chunk of the one-rotation-per-row path without autograd (``x [B, C]``,
                ``Q [B, d, d]``, CPU); default: about 64k entries (cache-sized). Results do not depend on it.

        Shapes:
            x: ``[*, size]``, Q: ``[*, d, d]``, s: ``[*, d]`` -> ``[*, size]`` (broadcast batch dims).
        """
        if self._any:
            self._check(x, Q)
            return x
        if self._dim is None:
            return self._bound(Q, "Q").transform(x, Q, s, det=det, chunk_size=chunk_size)
        self._check(x, Q)
        y = x if self.is_scalar else self._rotate(x, Q, det, _check_chunk(chunk_size))
        if s is not None:
            y = self._translate(y, s, +1.0)
        return y

    def to_local(
        self, x: Tensor, R: Tensor, t: Tensor | None = None, *, det: Tensor | None = None, chunk_size: int | None = None
    ) -> Tensor:
        """Express global features in the frame ``(R, t)``: ``rho(R) x``; positions ``R (x - t)``."""
        if self._any:
            self._check(x, R)
            return x
        if self._dim is None:
            return self._bound(R).to_local(x, R, t, det=det, chunk_size=chunk_size)
        self._check(x, R)
        if t is not None:
            x = self._translate(x, t, -1.0)
        return x if self.is_scalar else self._rotate(x, R, det, _check_chunk(chunk_size))

    def to_global(
        self, y: Tensor, R: Tensor, t: Tensor | None = None, *, det: Tensor | None = None, chunk_size: int | None = None
    ) -> Tensor:
        """Map local features back: ``rho(R^T) y``; positions ``R^T y + t``."""
        if self._any:
            self._check(y, R, "y")
            return y
        if self._dim is None:
            return self._bound(R).to_global(y, R, t, det=det, chunk_size=chunk_size)
        self._check(y, R, "y")
        out = y if self.is_scalar else self._rotate(y, R.transpose(-1, -2), det, _check_chunk(chunk_size))
        if t is not None:
            out = self._translate(out, t, +1.0)
        return out

    def matrix(self, R: Tensor) -> Tensor:
        """The representation matrix ``rho(R)`` ``[..., size, size]`` (block diagonal; positions
        contribute their rotation part only, since translation is affine)."""
        if self._dim is None:
            return self._bound(R).matrix(R)
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


_CM_CHUNK = 1 << 16  # entries of x per chunk of rows in _rotate_rows (256 KB of float32: buffers stay in L2)


def _check_chunk(chunk_size) -> int | None:
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size: expected a positive integer (rows per chunk), got {chunk_size!r}")
    return chunk_size


def _rotate_rows(
    x: Tensor, R: Tensor, groups: tuple, ordered: bool, det: Tensor | None, chunk_size: int | None = None
) -> Tensor:
    r"""``rho(R_b) x_b`` for every row ``b``: one rotation per row, all tensor orders (the tensor-frame hot path).

    Works in the component-major layout (row index ``b`` innermost, so that every step is a long
    vectorised multiply-add): the rows are transposed to ``x^T`` ``[C, B]``, each order-``k`` group
    ``[m, d, ..., d, B]`` has its tensor axes contracted with ``R`` in turn,

    .. math::  Y_{.., a, ..} = \sum_c R_{ac}\, X_{.., c, ..}

    (``k d`` multiply-adds per entry instead of ``d^k`` with the Kronecker power, and no tiny per-row
    matmuls), scalars are copied, pseudo tensors scaled by :math:`\det R_b`, and the result is transposed
    back. Without autograd the rows are processed in cache-sized chunks through a few buffers allocated once
    per call (fresh multi-megabyte temporaries per operation cost more in page faults than the arithmetic),
    and the whole per-chunk program (buffer views, operations) is built once and replayed per chunk (the
    per-operation dispatch would otherwise cost as much as the arithmetic). The last chunk is aligned to
    the end and may overlap the previous one (those rows are recomputed, identically). With autograd the
    work is done out of place in one piece.

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
    grad = torch.is_grad_enabled() and (
        x.requires_grad or R.requires_grad or (det is not None and det.requires_grad)
    )
    if grad:
        yt = _rotate_cm(x.t().contiguous(), R.permute(1, 2, 0).contiguous(), det, groups, ordered, R.shape[-1])
        return yt.t().contiguous()
    if chunk_size is not None:
        cs = min(n_rows, chunk_size)
    else:
        cs = n_rows if x.device.type != "cpu" else min(n_rows, max(64, _CM_CHUNK // max(1, c)))
    out = torch.empty(n_rows, c, dtype=dtype, device=x.device)
    if n_rows == 0:
        return out
    program, x_in, r_in, det_in, y_out = _cm_program(groups, R.shape[-1], c, cs, x, det is not None)
    starts = list(range(0, n_rows - cs, cs)) + [n_rows - cs]
    for s in starts:
        x_in.copy_(x[s : s + cs].t())
        r_in.copy_(R[s : s + cs].permute(1, 2, 0))
        if det_in is not None:
            det_in.copy_(det[s : s + cs])
        for fn, args in program:
            fn(*args)
        out[s : s + cs].copy_(y_out.t())
    return out


def _cm_program(
    groups: tuple, d: int, c: int, cs: int, like: Tensor, pseudo: bool
) -> tuple[list, Tensor, Tensor, Tensor | None, Tensor]:
    """Buffers and the list of ``(function, args)`` that rotate one chunk of ``cs`` component-major rows.

    Returns ``(program, x_in [C, cs], r_in [d, d, cs], det_in [cs] | None, y_out [C, cs])``: fill the three
    inputs, run ``fn(*args)`` for every entry, read ``y_out``.
    """
    new = like.new_empty
    x_in, y_out, r_in = new(c, cs), new(c, cs), new(d, d, cs)
    det_in = new(cs) if pseudo else None
    max_q = max((g[2] * d ** g[0] for g in groups if g[0] > 1), default=0)
    n_tmp = min(2, max((g[0] for g in groups), default=0) - 1)
    tmp = [new(max_q * cs) for _ in range(n_tmp)]
    program: list = []
    for order, index, n_tensors, pseudo_mask, _pos, all_pseudo in groups:
        q = d**order
        rows = n_tensors * q
        if isinstance(index, slice):
            src, dest = x_in[index], y_out[index]
        else:  # scattered blocks: gathered into / scattered from contiguous buffers
            idx = index.to(like.device)
            src, dest = new(rows, cs), new(rows, cs)
            program.append((_index_select_out, (x_in, idx, src)))
        if order == 0:
            program.append((Tensor.copy_, (dest, src)))
        else:
            full = [n_tensors] + [d] * order + [cs]
            cur = src.view(full)
            for t, (ax, shape) in enumerate(_contraction_axes(order, d, cs)):
                y = (dest if t == order - 1 else tmp[t % 2][: rows * cs]).view(full)
                for j in range(d):
                    xc, r = cur.narrow(ax, j, 1), r_in[:, j].reshape(shape)
                    if j == 0:
                        program.append((_mul_out, (xc, r, y)))
                    else:
                        program.append((Tensor.addcmul_, (y, xc, r)))
                cur = y
        if pseudo_mask is not None:
            yv = dest.view(n_tensors, q, cs)
            if all_pseudo:
                program.append((Tensor.mul_, (yv, det_in.view(1, 1, cs))))
            else:
                factor = new(n_tensors, 1, cs)
                mask = pseudo_mask.to(like.device).view(n_tensors, 1, 1)
                program.append((_where_out, (mask, det_in.view(1, 1, cs), like.new_ones(()), factor)))
                program.append((Tensor.mul_, (yv, factor)))
        if not isinstance(index, slice):
            program.append((Tensor.index_copy_, (y_out, 0, idx, dest)))
    return program, x_in, r_in, det_in, y_out


def _contraction_axes(order: int, d: int, cols: int) -> list[tuple[int, list[int]]]:
    """For each index of an order-``order`` tensor block viewed ``[n, d, ..., d, cols]``: its view axis and the
    shape ``[1, .., d, .., 1, cols]`` (``d`` at that axis) that broadcasts one column of ``R`` along it."""
    out = []
    for ax in range(1, order + 1):
        shape = [1] * (order + 2)
        shape[ax], shape[-1] = d, cols
        out.append((ax, shape))
    return out


def _mul_out(a: Tensor, b: Tensor, out: Tensor) -> Tensor:
    return torch.mul(a, b, out=out)


def _index_select_out(a: Tensor, idx: Tensor, out: Tensor) -> Tensor:
    return torch.index_select(a, 0, idx, out=out)


def _where_out(cond: Tensor, a: Tensor, b: Tensor, out: Tensor) -> Tensor:
    return torch.where(cond, a, b, out=out)


def _rotate_cm(xt: Tensor, rcm: Tensor, det: Tensor | None, groups: tuple, ordered: bool, d: int) -> Tensor:
    """Out-of-place (autograd) version of one :func:`_rotate_rows` chunk: component-major rows ``xt``
    ``[C, B]`` with ``rcm[a, c] = R[:, a, c]`` ``[d, d, B]`` -> ``[C, B]``."""
    b = xt.shape[1]
    pieces = []
    for order, index, n_tensors, pseudo, _pos, all_pseudo in groups:
        y = xt[index] if isinstance(index, slice) else xt.index_select(0, index.to(xt.device))
        if order > 0:
            full = [n_tensors] + [d] * order + [b]
            cur = y.reshape(full)
            for ax, shape in _contraction_axes(order, d, b):
                acc = None
                for j in range(d):
                    term = cur.narrow(ax, j, 1) * rcm[:, j].reshape(shape)
                    acc = term if acc is None else acc + term
                cur = acc
            y = cur.reshape(n_tensors * d**order, b)
        if pseudo is not None:
            f = det.view(1, b)
            if not all_pseudo:
                f = torch.where(pseudo.to(xt.device).view(-1, 1), f, f.new_ones(()))
            y = (y.view(n_tensors, d**order, b) * f.view(-1, 1, b)).view(-1, b)
        pieces.append((index, y))
    if len(pieces) == 1 and ordered:
        return pieces[0][1]
    if ordered:
        return torch.cat([p for _, p in pieces], 0)
    idx = torch.cat([torch.arange(i.start, i.stop) if isinstance(i, slice) else i for i, _ in pieces])
    perm = torch.empty_like(idx)
    perm[idx] = torch.arange(idx.numel())
    return torch.cat([p for _, p in pieces], 0).index_select(0, perm.to(xt.device))


def kron_power(R: Tensor, k: int) -> Tensor:
    r"""Kronecker power :math:`R^{\otimes k}` of every matrix, row-major, so that for a flattened order-``k``
    tensor ``T`` (``d**k`` channels), ``R^{(x)k} @ T`` is :math:`R^{\otimes k} T` (``k = 0``: ones ``[..., 1, 1]``).

    Shapes:
        R: ``[..., d, d]`` -> ``[..., d**k, d**k]``
    """
    check_tensor("R", R, ndim=tuple(range(2, 16)))
    if R.shape[-1] != R.shape[-2]:
        raise ValueError(f"R: expected square matrices [..., d, d], got shape {tuple(R.shape)}")
    check_int("k", k, 0)
    d = R.shape[-1]
    if k == 0:
        return R.new_ones(*R.shape[:-2], 1, 1)
    if k == 1:
        return R
    batch = R.shape[:-2]
    # component-major [q, q, B] (the batch innermost: each step is one long broadcast multiply), then one
    # transpose back to [B, q, q]: K_{(a a'), (c c')} = K_{a c} R_{a' c'}
    rcm = R.reshape(-1, d, d).permute(1, 2, 0).contiguous()
    n = rcm.shape[-1]
    K = rcm
    for _ in range(k - 1):
        q = K.shape[0]
        K = (K[:, None, :, None] * rcm[None, :, None, :]).reshape(q * d, q * d, n)
    q = K.shape[0]
    return K.view(q * q, n).t().contiguous().view(*batch, q, q)


def as_reps(spec: "str | TensorReps", dim: int | None = None, name: str = "reps") -> TensorReps:
    """Coerce ``spec`` to a :class:`TensorReps` (bound to ``dim`` when given) with errors naming ``name``.

    The one entry point for every type in the library: reps strings (``"8x0n+2x1n"``), ``"pos"``,
    the invariant type (``"scalar"``, ``"invariant"``) and ``TensorReps``.
    """
    if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
        raise ValueError(f"dim: expected a positive integer, got {dim!r}")
    if isinstance(spec, TensorReps):
        if dim is None:
            return spec
        try:
            return spec.with_dim(dim)
        except ValueError:
            raise ValueError(f"{name}: reps {spec!r} has dim {spec.dim}, expected dim {dim}") from None
    if not isinstance(spec, str):
        raise TypeError(f"{name}: expected a reps string like '8x0n+2x1n', 'pos' or 'scalar', or a TensorReps; got {type(spec).__name__}")
    try:
        return TensorReps(spec, dim=dim)
    except (ValueError, TypeError) as err:
        raise type(err)(f"{name}: {str(err).removeprefix('reps: ')}") from None
