"""The groups of equiframe: the Euclidean groups O(d), SO(d), E(d), SE(d), and the symmetric group S_n.

Groups are types: :class:`EuclideanGroup` and :class:`SymmetricGroup` (node permutations of graphs).
:func:`parse_group` turns the accepted spellings (``"E(3)"``, ``"SO(d)"`` with ``dim=``, ``"S_n"``,
``"Sn"``, ``"S(n)"``) into one of them.

A group element ``g = (Q, s)`` acts on points (row vectors) by ``x -> Q x + s``; on typed features
through :class:`~equiframe.reps.TensorReps` (tensors by ``rho(Q)``, positions affinely).
O(d) and SO(d) have no translations (``s = 0``). Every sampler takes an explicit
``torch.Generator``: there is no global random state. :func:`random_orthogonal` is the one Haar draw of
rotations and reflections (also from a NumPy generator, for the data generators).

Example:
    >>> import torch
    >>> from equiframe.groups import EuclideanGroup
    >>> G = EuclideanGroup.parse("E(3)")
    >>> g = G.sample(4, generator=torch.Generator().manual_seed(0))   # a batch of 4 elements
    >>> x = torch.randn(4, 10, 3)
    >>> y = g.act_batched(x, "pos")                                   # x [4, N, 3]: element b acts on cloud b
    >>> tuple(y.shape)
    (4, 10, 3)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .reps import TensorReps, as_reps

__all__ = ["EuclideanGroup", "GroupElement", "SymmetricGroup", "Group", "random_orthogonal", "parse_group"]

_GROUP = re.compile(r"^\s*(O|SO|E|SE)\s*\(\s*(\d+)\s*\)\s*$")
_SYMMETRIC = ("S_n", "Sn", "S(n)")


def random_orthogonal(
    n: int | tuple[int, ...],
    dim: int,
    *,
    proper: bool = False,
    generator: torch.Generator | np.random.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor | np.ndarray:
    """Haar-random orthogonal matrices: the library's one random-rotation draw.

    QR of a Gaussian matrix ``A = QR`` with the signs of ``diag(R)`` moved into ``Q`` gives the Haar
    measure on O(d) (half of the samples are reflections, ``det = -1``). With ``proper=True`` the first
    column of each reflection is negated, which maps Haar(O(d)) to Haar(SO(d)).

    The Gaussian matrices come from ``generator``: a ``torch.Generator`` (or none: torch's default) gives a
    tensor of ``dtype`` on ``device``; a ``numpy.random.Generator`` gives a float64 NumPy array computed with
    NumPy (the data generators' seeded NumPy streams: their cached data sets are reproduced bit for bit).

    Shapes:
        -> ``[*n, dim, dim]``
    """
    shape = _shape(n)
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ValueError(f"dim: expected a positive integer, got {dim!r}")
    if isinstance(generator, np.random.Generator):
        q, r = np.linalg.qr(generator.standard_normal((*shape, dim, dim)))
        signs = np.sign(np.diagonal(r, axis1=-2, axis2=-1))
        q = q * np.where(signs == 0, 1.0, signs)[..., None, :]
        if proper:
            q[..., :, 0] *= np.sign(np.linalg.det(q))[..., None]
        return q
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or a numpy.random.Generator, got "
                        f"{type(generator).__name__}")
    # sample on CPU in float64 with the generator (generators are device bound), then move
    gen_device = generator.device if generator is not None else torch.device("cpu")
    A = torch.randn(*shape, dim, dim, generator=generator, dtype=torch.float64, device=gen_device)
    Q, R = torch.linalg.qr(A)
    signs = torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    Q = Q * signs[..., None, :]
    if proper:
        flip = torch.ones_like(Q[..., 0, :])
        flip[..., 0] = torch.linalg.det(Q).sign()
        Q = Q * flip[..., None, :]
    return Q.to(dtype=dtype, device=device if device is not None else gen_device)


def _shape(n) -> tuple[int, ...]:
    """A batch shape from ``n`` (an int or a tuple of ints), with an error naming ``n``."""
    shape = (n,) if isinstance(n, int) and not isinstance(n, bool) else n
    if not isinstance(shape, tuple) or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in shape):
        raise ValueError(f"n: expected a non-negative int or a tuple of them (the batch shape), got {n!r}")
    return shape


@dataclass(frozen=True)
class EuclideanGroup:
    """One of O(d), SO(d), E(d), SE(d).

    Attributes:
        dim: the dimension ``d >= 2`` (``d = 1`` is allowed for completeness).
        proper: rotations only (``det = +1``): SO(d), SE(d).
        translations: the group contains translations: E(d), SE(d).
    """

    dim: int
    proper: bool = False
    translations: bool = False

    def __post_init__(self):
        if not isinstance(self.dim, int) or isinstance(self.dim, bool) or self.dim < 1:
            raise ValueError(f"dim: expected a positive integer, got {self.dim!r}")
        for name in ("proper", "translations"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected a bool, got {getattr(self, name)!r}")

    @staticmethod
    def parse(spec: "str | EuclideanGroup", dim: int | None = None) -> "EuclideanGroup":
        """Parse ``"O(3)"``, ``"SO(2)"``, ``"E(5)"``, ``"SE(3)"``. ``"O(d)"`` with ``dim=`` also works."""
        if isinstance(spec, SymmetricGroup) or (isinstance(spec, str) and spec.replace(" ", "") in _SYMMETRIC):
            raise ValueError(f"group: {spec} is not a Euclidean group; use parse_group() for any group")
        if isinstance(spec, EuclideanGroup):
            if dim is not None and dim != spec.dim:
                raise ValueError(f"group: {spec} has dim {spec.dim}, expected {dim}")
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"group: expected a string like 'E(3)', got {type(spec).__name__}")
        text = spec.replace("(d)", f"({dim})") if dim is not None else spec
        match = _GROUP.match(text)
        if match is None:
            raise ValueError(f"group: unknown group {spec!r}; expected 'O(d)', 'SO(d)', 'E(d)' or 'SE(d)', e.g. 'E(3)'")
        kind, d = match.group(1), int(match.group(2))
        if "(d)" in spec.replace(" ", "") and dim is None:
            raise ValueError(f"group: {spec!r} has a literal d; give the dimension (dim=...)")
        if dim is not None and d != dim:
            raise ValueError(f"group: {spec!r} has dimension {d}, but the data has dimension {dim}")
        if d < 1:
            raise ValueError(f"group: dimension must be >= 1, got {spec!r}")
        return EuclideanGroup(d, proper=kind in ("SO", "SE"), translations=kind in ("E", "SE"))

    @property
    def name(self) -> str:
        base = {(False, False): "O", (True, False): "SO", (False, True): "E", (True, True): "SE"}
        return f"{base[(self.proper, self.translations)]}({self.dim})"

    def __str__(self) -> str:
        return self.name

    def sample(
        self,
        n: int | tuple[int, ...] = (),
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        translation_scale: float = 1.0,
    ) -> "GroupElement":
        """Sample ``n`` elements: Haar rotations/reflections and (for E/SE) Gaussian translations."""
        Q = random_orthogonal(n, self.dim, proper=self.proper, generator=generator, dtype=dtype, device=device)
        if self.translations:
            gen_device = generator.device if generator is not None else torch.device("cpu")
            shape = _shape(n)
            s = translation_scale * torch.randn(*shape, self.dim, generator=generator, dtype=torch.float64, device=gen_device)
            s = s.to(dtype=dtype, device=Q.device)
        else:
            s = torch.zeros(*Q.shape[:-1], dtype=dtype, device=Q.device)
        return GroupElement(Q, s)

    def identity(self, dtype: torch.dtype = torch.float64, device=None) -> "GroupElement":
        return GroupElement(torch.eye(self.dim, dtype=dtype, device=device), torch.zeros(self.dim, dtype=dtype, device=device))

    def contains(self, g: "GroupElement", atol: float = 1e-6) -> Tensor:
        """Whether each element of the batch ``g`` lies in this group (orthogonality, det, translation)."""
        Q = g.Q
        eye = torch.eye(self.dim, dtype=Q.dtype, device=Q.device)
        ok = ((Q @ Q.transpose(-1, -2) - eye).abs().amax((-1, -2)) <= atol)
        if self.proper:
            ok = ok & (torch.linalg.det(Q) > 0)
        if not self.translations:
            ok = ok & (g.s.abs().amax(-1) <= atol)
        return ok


@dataclass(frozen=True)
class SymmetricGroup:
    """The symmetric group S_n acting on the nodes of graphs by relabelling (``n`` = the graph's size).

    A permutation ``p`` of a graph's nodes maps node features ``x -> x[p]`` and edges
    ``(i, j) -> (p^-1(i), p^-1(j))``; a batch of graphs gets one permutation per graph. Spelled
    ``"S_n"``, ``"Sn"`` or ``"S(n)"``.
    """

    @property
    def name(self) -> str:
        return "S_n"

    def __str__(self) -> str:
        return "S_n"

    def sample(self, batch: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """A uniformly random permutation of the nodes of every graph of a sorted ``batch`` vector.

        Returns ``perm [N]``: new node ``i`` is old node ``perm[i]``; nodes stay inside their graph, so
        the batch vector is unchanged.

        Shapes:
            batch: ``[N]`` -> ``[N]``
        """
        if not isinstance(batch, Tensor) or batch.dim() != 1 or batch.is_floating_point():
            raise ValueError(f"batch: expected a 1-D integer tensor, got {getattr(batch, 'shape', batch)!r}")
        if batch.numel() and bool((batch[1:] < batch[:-1]).any()):
            raise ValueError("batch: must be sorted (as PyG batches are)")
        gen_device = generator.device if generator is not None else torch.device("cpu")
        keys = torch.rand(batch.shape[0], generator=generator, dtype=torch.float64, device=gen_device).to(batch.device)
        # sort by (graph, random key): graphs stay in place, nodes are shuffled inside each graph
        return torch.argsort(batch.to(torch.float64) * 2.0 + keys, stable=True)


Group = EuclideanGroup | SymmetricGroup
"""Any group equiframe can average over."""


def parse_group(spec: "str | EuclideanGroup | SymmetricGroup", dim: int | None = None) -> "EuclideanGroup | SymmetricGroup":
    """The group type for ``spec``: ``"E(3)"``, ``"SO(d)"`` (with ``dim=``) -> :class:`EuclideanGroup`;
    ``"S_n"`` / ``"Sn"`` / ``"S(n)"`` -> :class:`SymmetricGroup`; group objects are returned as they are."""
    if isinstance(spec, SymmetricGroup):
        return spec
    if isinstance(spec, str) and spec.replace(" ", "") in _SYMMETRIC:
        return SymmetricGroup()
    if not isinstance(spec, (str, EuclideanGroup)):
        raise TypeError(
            f"group: expected a group name like 'E(3)' or 'S_n', or an EuclideanGroup/SymmetricGroup; got {type(spec).__name__}"
        )
    return EuclideanGroup.parse(spec, dim)


@dataclass(frozen=True)
class GroupElement:
    """A (batch of) Euclidean group element(s) ``g = (Q, s)``: ``x -> Q x + s``.

    ``g @ h`` composes (apply ``h`` first), ``~g`` inverts. Batch dims broadcast.

    Shapes:
        Q: ``[*, d, d]``, s: ``[*, d]``
    """

    Q: Tensor
    s: Tensor

    def __post_init__(self):
        if self.Q.shape[-2] != self.Q.shape[-1] or self.Q.dim() < 2:
            raise ValueError(f"Q: expected [..., d, d], got {tuple(self.Q.shape)}")
        if self.s.shape[-1] != self.Q.shape[-1]:
            raise ValueError(f"s: expected [..., {self.Q.shape[-1]}], got {tuple(self.s.shape)}")

    @property
    def dim(self) -> int:
        return self.Q.shape[-1]

    def __matmul__(self, other: "GroupElement") -> "GroupElement":
        # (Q1, s1) o (Q2, s2): x -> Q1 (Q2 x + s2) + s1
        return GroupElement(self.Q @ other.Q, (self.Q @ other.s[..., None])[..., 0] + self.s)

    def __invert__(self) -> "GroupElement":
        Qt = self.Q.transpose(-1, -2)
        return GroupElement(Qt, -(Qt @ self.s[..., None])[..., 0])

    def to(self, *args, **kwargs) -> "GroupElement":
        return GroupElement(self.Q.to(*args, **kwargs), self.s.to(*args, **kwargs))

    def __getitem__(self, idx) -> "GroupElement":
        return GroupElement(self.Q[idx], self.s[idx])

    def act(self, x: Tensor, reps: "str | TensorReps" = "pos") -> Tensor:
        """Act on features ``x [..., size]`` of type ``reps`` (default: points ``[..., d]``).

        ``Q``/``s`` broadcast against ``x``'s leading dims, so a batch of elements ``[B]`` acts on
        ``[B, ...]`` inputs only after unsqueezing; use :meth:`act_batched` for ``[B, N, size]`` data.
        """
        r = as_reps(reps, self.dim)
        Q, s = self.Q.to(x.dtype), self.s.to(x.dtype)  # the features' dtype (elements are float64 by default)
        return r.transform(x, Q, s if r.has_pos else None)

    def act_batched(self, x: Tensor, reps: "str | TensorReps" = "pos", index: Tensor | None = None) -> Tensor:
        """Act with element ``b`` on example ``b``.

        Dense: ``x [B, N, size]`` (or ``[B, size]``) with a batch of ``B`` elements.
        Ragged: ``x [N, size]`` with ``index [N]`` giving each row's element (a PyG ``batch`` vector).
        """
        r = as_reps(reps, self.dim)
        Q0, s0 = self.Q.to(x.dtype), self.s.to(x.dtype)  # the features' dtype (elements are float64 by default)
        if index is not None:
            Q, s = Q0[index], s0[index]
        else:
            extra = x.dim() - 1 - (self.Q.dim() - 2)
            Q = Q0.reshape(*self.Q.shape[:-2], *([1] * extra), self.dim, self.dim)
            s = s0.reshape(*self.s.shape[:-1], *([1] * extra), self.dim)
        return r.transform(x, Q, s if r.has_pos else None)
