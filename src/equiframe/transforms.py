r"""Data transforms as PyTorch Geometric :class:`~torch_geometric.transforms.BaseTransform`\ s.

Each transform is a small callable that copies its input (a :class:`~torch_geometric.data.Data`, or a
dict of tensors where noted) before it changes it, and chains with :class:`torch_geometric.transforms.Compose`.
The geometric ones act on the attributes named in ``attrs``, each with a declared type (a
:class:`~equiframe.reps.TensorReps` string: ``"pos"`` rotates and translates, ``"1x1n"`` is a vector,
``"1x1p"`` a pseudo-vector, ``"1x2n"`` a matrix, ...), so one group element moves every geometric
attribute of an example consistently:

- :class:`ApplyGroupElement`: a fixed element ``g = (Q, s)`` of O(d)/E(d): ``x -> rho(Q) x``, positions
  ``x -> Q x + s``.
- :class:`RandomGroupElement`: a Haar-random element of ``"O(d)"``, ``"SO(d)"``, ``"E(d)"`` or ``"SE(d)"``
  (any ``d``, reflections included for O/E), drawn from an explicit generator.
- :class:`RandomNodePermutation`: an S_n relabelling of a graph: node attributes and ``edge_index`` permuted
  consistently.
- :class:`GaussianNoise`: isotropic Gaussian noise on positions, relative to the bounding-box diagonal.
- :class:`SubsamplePoints`: a uniformly random subset of the points (nodes) of a cloud.
- :class:`Center`: subtract the centroid of one position attribute from the listed ones.
- :class:`AddDegree`: append the node degree to the node features.

Randomness comes from ``generator``: a ``torch.Generator``, an ``int`` seed (the transform then owns a
generator seeded with it, so a fixed seed gives a fixed sequence of draws), or ``None`` (torch's global
generator). Random draws are made in float64 and cast to each attribute's dtype, so float32 and float64
data see the same element.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from ._checks import check_int, check_real
from .groups import EuclideanGroup, GroupElement, SymmetricGroup, parse_group
from .reps import TensorReps, as_reps

__all__ = ["AddDegree", "ApplyGroupElement", "Center", "GaussianNoise", "RandomGroupElement",
           "RandomNodePermutation", "SubsamplePoints"]

Attrs = Mapping[str, "str | TensorReps"]
"""Attribute name -> its type (``"pos"``, ``"1x1n"``, ``"2x1n+1x0n"``, ...)."""


# ------------------------------------------------------------------------------------------ argument checks
def _generator(generator: torch.Generator | int | None) -> torch.Generator | None:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise TypeError(f"generator: expected a torch.Generator, an int seed or None, got {type(generator).__name__}")
    seed = check_int("generator", generator, 0)
    return torch.Generator().manual_seed(int(seed))


def _gen_device(gen: torch.Generator | None) -> torch.device:
    return gen.device if gen is not None else torch.device("cpu")


def _check_attrs(attrs: Any, dim: int) -> dict[str, TensorReps]:
    """``attrs`` parsed once: a non-empty mapping of attribute names to types bound to ``dim``."""
    if not isinstance(attrs, Mapping):
        raise TypeError(f"attrs: expected a mapping of attribute names to types, e.g. {{'pos': 'pos'}}, "
                        f"got {type(attrs).__name__}")
    if not attrs:
        raise ValueError("attrs: expected at least one attribute")
    out = {}
    for key, spec in attrs.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"attrs: attribute names must be non-empty strings, got {key!r}")
        try:
            out[key] = as_reps(spec, dim, name=f"attrs[{key!r}]")
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"attrs[{key!r}]: {exc}") from None
    return out


def _check_names(name: str, value: Any, *, allow_empty: bool = False) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else value
    if (not isinstance(names, Sequence) or not (names or allow_empty)
            or not all(isinstance(k, str) and k for k in names)):
        raise TypeError(f"{name}: expected an attribute name or a non-empty sequence of names, got {value!r}")
    return tuple(names)


def _get(data: Any, key: str, name: str, size: int | None = None) -> Tensor:
    """``data[key]``, checked: present, a floating tensor ``[..., size]``; errors name ``name`` and ``key``."""
    if not isinstance(data, (Data, Mapping)):
        raise TypeError(f"data: expected a torch_geometric Data or a dict of tensors, got {type(data).__name__}")
    if key not in data or data[key] is None:
        have = sorted(data.keys()) if isinstance(data, Mapping) else sorted(data.keys())
        raise ValueError(f"{name}: the data has no attribute {key!r} (it has {have})")
    x = data[key]
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 1:
        raise ValueError(f"{name}: attribute {key!r} must be a floating-point tensor with at least one dimension, "
                         f"got {type(x).__name__ if not isinstance(x, Tensor) else (x.dtype, tuple(x.shape))}")
    if size is not None and x.shape[-1] != size:
        raise ValueError(f"{name}: attribute {key!r} has {x.shape[-1]} channels in its last dimension, its type "
                         f"needs {size}")
    return x


def _check_graph(data: Any, name: str) -> Data:
    if not isinstance(data, Data):
        raise TypeError(f"data: {name} expects a torch_geometric Data, got {type(data).__name__}")
    if getattr(data, "batch", None) is not None:
        raise ValueError(f"data: {name} acts on one example; apply it before batching (the data has a batch vector)")
    return data


# ------------------------------------------------------------------------------------------ the group O(d) / E(d)
class ApplyGroupElement(BaseTransform):
    r"""Apply one fixed group element ``g = (Q, s)`` to every listed attribute according to its type.

    .. math:: x \mapsto \rho(Q)\,x \ (\text{tensors}),\qquad p \mapsto Q p + s \ (\text{type } \texttt{pos})

    (row vectors: ``p @ Q.T + s``). A pseudo-tensor also gets the factor ``det Q``. The element is cast to
    each attribute's dtype and device. Works on a ``Data`` or a dict of tensors (e.g. the n-body batches).

    Args:
        element: a :class:`~equiframe.groups.GroupElement` (one element: ``Q [d, d]``, ``s [d]``) or an
            orthogonal matrix ``Q [d, d]`` (no translation).
        attrs: attribute name -> type, e.g. ``{"pos": "pos", "normal": "1x1n"}``.

    Shapes:
        each attribute ``[*, size]`` (``size`` the size of its type) -> the same shape.

    Example:
        >>> import torch
        >>> from torch_geometric.data import Data
        >>> from equiframe.transforms import ApplyGroupElement
        >>> Q = torch.tensor([[0.0, -1.0], [1.0, 0.0]])                 # a quarter turn in the plane
        >>> t = ApplyGroupElement(Q, attrs={"pos": "pos", "vel": "1x1n"})
        >>> out = t(Data(pos=torch.tensor([[1.0, 0.0]]), vel=torch.tensor([[0.0, 2.0]])))
        >>> out.pos.tolist(), out.vel.tolist()
        ([[0.0, 1.0]], [[-2.0, 0.0]])
    """

    def __init__(self, element: GroupElement | Tensor, attrs: Attrs):
        if isinstance(element, Tensor):
            if element.dim() != 2 or element.shape[0] != element.shape[1] or not element.is_floating_point():
                raise ValueError(f"element: expected a floating matrix [d, d], got {tuple(element.shape)}")
            element = GroupElement(element, torch.zeros(element.shape[-1], dtype=element.dtype, device=element.device))
        if not isinstance(element, GroupElement):
            raise TypeError(f"element: expected a GroupElement or a matrix Q [d, d], got {type(element).__name__}")
        if element.Q.dim() != 2:
            raise ValueError(f"element: expected one element (Q [d, d]), got Q of shape {tuple(element.Q.shape)}")
        self.element = element
        self.attrs = _check_attrs(attrs, element.dim)

    def forward(self, data: Any) -> Any:
        return _act(data, self.element, self.attrs, type(self).__name__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.element.dim}, attrs={_attrs_repr(self.attrs)})"


def _act(data: Any, g: GroupElement, attrs: dict[str, TensorReps], name: str) -> Any:
    xs = {key: _get(data, key, f"attrs ({name})", reps.size) for key, reps in attrs.items()}
    for key, reps in attrs.items():
        x = xs[key]
        data[key] = g.to(device=x.device).act(x, reps)
    return data


def _attrs_repr(attrs: dict[str, TensorReps]) -> str:
    return "{" + ", ".join(f"{k!r}: {str(r)!r}" for k, r in attrs.items()) + "}"


class RandomGroupElement(BaseTransform):
    r"""Apply a random element of a Euclidean group to every listed attribute, consistently.

    ``Q`` is Haar-distributed on O(d) (``"O(d)"``, ``"E(d)"``: half of the draws are reflections) or SO(d)
    (``"SO(d)"``, ``"SE(d)"``), by :func:`~equiframe.groups.random_orthogonal`; E/SE add a translation
    ``s ~ N(0, translation_scale^2 I)``. Each call draws a new element from ``generator`` and applies it
    as :class:`ApplyGroupElement` does (one element for the whole ``Data``).

    Args:
        group: ``"O(d)"``, ``"SO(d)"``, ``"E(d)"``, ``"SE(d)"`` with a number for ``d``, or an
            :class:`~equiframe.groups.EuclideanGroup`.
        attrs: attribute name -> type, e.g. ``{"pos": "pos", "normal": "1x1n", "vel": "1x1n"}``.
        generator: a ``torch.Generator``, an ``int`` seed, or ``None`` (torch's global generator).
        translation_scale: standard deviation of the translation (E/SE only).

    Shapes:
        each attribute ``[*, size]`` -> the same shape.

    Example:
        >>> import torch
        >>> import torch_geometric.transforms as T
        >>> from torch_geometric.data import Data
        >>> from equiframe.transforms import Center, RandomGroupElement
        >>> t = T.Compose([RandomGroupElement("E(3)", attrs={"pos": "pos", "normal": "1x1n"}, generator=0),
        ...                Center("pos")])
        >>> data = Data(pos=torch.randn(100, 3), normal=torch.nn.functional.normalize(torch.randn(100, 3), dim=1))
        >>> out = t(data)
        >>> bool(torch.allclose(out.normal.norm(dim=1), torch.ones(100)))    # normals stay unit vectors
        True
        >>> bool(torch.allclose(torch.pdist(out.pos), torch.pdist(data.pos), atol=1e-5))   # distances kept
        True
    """

    def __init__(self, group: str | EuclideanGroup, attrs: Attrs, *,
                 generator: torch.Generator | int | None = None, translation_scale: float = 1.0):
        g = parse_group(group)
        if isinstance(g, SymmetricGroup):
            raise ValueError("group: S_n relabels nodes; use RandomNodePermutation for it")
        self.group = g
        self.attrs = _check_attrs(attrs, g.dim)
        self.generator = _generator(generator)
        self.translation_scale = float(check_real("translation_scale", translation_scale, 0.0, strict=False))

    def sample(self) -> GroupElement:
        """Draw the next element (float64) from the transform's generator."""
        return self.group.sample(generator=self.generator, translation_scale=self.translation_scale)

    def forward(self, data: Any) -> Any:
        for key, reps in self.attrs.items():  # check before drawing, so a bad call does not advance the stream
            _get(data, key, f"attrs ({type(self).__name__})", reps.size)
        return _act(data, self.sample(), self.attrs, type(self).__name__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.group)!r}, attrs={_attrs_repr(self.attrs)})"


# ------------------------------------------------------------------------------------------ the group S_n
class RandomNodePermutation(BaseTransform):
    r"""Relabel the nodes of a graph by a uniformly random permutation (an element of S_n).

    Node ``i`` becomes node ``perm[i]`` (as :func:`~equiframe.frames.graph.permute_graph`): every node
    attribute moves with its node, ``x'[perm[i]] = x[i]``, and every edge ``(i, j)`` becomes
    ``(perm[i], perm[j])`` (edges keep their order, so edge attributes are unchanged). ``perm`` is
    ``torch.randperm(N, generator=generator)``.

    Args:
        node_attrs: the node attributes to permute (``()``: only ``edge_index``); ``None``: every
            attribute that PyG counts as a node attribute (``Data.is_node_attr``: first dimension ``N``).
        generator: a ``torch.Generator``, an ``int`` seed, or ``None`` (torch's global generator).

    Shapes:
        edge_index ``[2, E]``, node attributes ``[N, *]`` -> the same shapes.

    Example:
        >>> import torch
        >>> from torch_geometric.data import Data
        >>> from equiframe.transforms import RandomNodePermutation
        >>> path = Data(x=torch.tensor([[0.0], [1.0], [2.0]]), edge_index=torch.tensor([[0, 1], [1, 2]]))
        >>> out = RandomNodePermutation(generator=0)(path)
        >>> sorted(out.x[:, 0].tolist())                                   # the same nodes, relabelled
        [0.0, 1.0, 2.0]
        >>> value = out.x[:, 0].tolist()                                    # each node's original value
        >>> sorted((value[i], value[j]) for i, j in out.edge_index.t().tolist())   # the same edges
        [(0.0, 1.0), (1.0, 2.0)]
    """

    def __init__(self, node_attrs: Sequence[str] | str | None = None, *,
                 generator: torch.Generator | int | None = None):
        self.node_attrs = None if node_attrs is None else _check_names("node_attrs", node_attrs, allow_empty=True)
        self.generator = _generator(generator)

    def forward(self, data: Any) -> Any:
        data = _check_graph(data, type(self).__name__)
        n = data.num_nodes
        if n is None:
            raise ValueError("data: the number of nodes is unknown (give x, pos or num_nodes)")
        keys = self.node_attrs if self.node_attrs is not None else [
            k for k in data.keys() if k != "edge_index" and isinstance(data[k], Tensor) and data.is_node_attr(k)]
        for k in keys:
            if k not in data or not isinstance(data[k], Tensor) or data[k].dim() < 1 or data[k].shape[0] != n:
                raise ValueError(f"node_attrs: {k!r} is not a tensor with one row per node ({n} nodes)")
        perm = torch.randperm(n, generator=self.generator)
        return permute_nodes(data, perm, keys)


def permute_nodes(data: Data, perm: Tensor, node_attrs: Sequence[str]) -> Data:
    """``data`` with node ``i`` relabelled ``perm[i]`` (``node_attrs`` moved, ``edge_index`` relabelled).

    The deterministic part of :class:`RandomNodePermutation`; ``data`` is changed in place (the transform
    hands it a copy).

    Shapes:
        perm ``[N]``; node attributes ``[N, *]``, edge_index ``[2, E]`` -> the same shapes.
    """
    from .frames.graph import permute_graph  # noqa: PLC0415  (frames import this module's neighbours lazily)

    ei = data.edge_index if getattr(data, "edge_index", None) is not None else torch.empty(2, 0, dtype=torch.long)
    new_ei, _ = permute_graph(ei.to(perm.device), perm)
    for k in node_attrs:
        x = data[k]
        xp = torch.empty_like(x)
        xp[perm.to(x.device)] = x
        data[k] = xp
    if getattr(data, "edge_index", None) is not None:
        data.edge_index = new_ei.to(data.edge_index.device)
    return data


# ------------------------------------------------------------------------------------------ point clouds
class GaussianNoise(BaseTransform):
    r"""Isotropic Gaussian noise on position attributes: ``p_i -> p_i + sigma * eps_i``, ``eps_i ~ N(0, I)``.

    ``sigma = std * scale`` with ``scale`` the bounding-box diagonal ``||max_i p_i - min_i p_i||`` of the
    clean positions (``relative_to="bbox_diagonal"``, the convention of PCPNet and of equiframe's shape
    data sets; note that an axis-aligned bounding box is not rotation invariant), the RMS distance to the
    centroid (``"rms_radius"``, invariant under E(d)), or 1 (``"absolute"``). Normals and other attributes
    are left exact.

    Args:
        std: the noise level (``>= 0``).
        attrs: the position attributes (each ``[N, d]``); the scale is that of the first one.
        relative_to: ``"bbox_diagonal"``, ``"rms_radius"`` or ``"absolute"``.
        generator: a ``torch.Generator``, an ``int`` seed, or ``None`` (torch's global generator).

    Shapes:
        each attribute ``[N, d]`` -> ``[N, d]``.

    Example:
        >>> import torch
        >>> from torch_geometric.data import Data
        >>> from equiframe.transforms import GaussianNoise
        >>> data = Data(pos=torch.rand(2000, 3) * torch.tensor([3.0, 4.0, 0.0]))   # bbox diagonal about 5
        >>> noisy = GaussianNoise(0.01, generator=0)(data)
        >>> round(float((noisy.pos - data.pos).std()) / 0.05, 1)
        1.0
    """

    def __init__(self, std: float, attrs: Sequence[str] | str = ("pos",), *,
                 relative_to: Literal["bbox_diagonal", "rms_radius", "absolute"] = "bbox_diagonal",
                 generator: torch.Generator | int | None = None):
        self.std = float(check_real("std", std, 0.0, strict=False))
        self.attrs = _check_names("attrs", attrs)
        if relative_to not in ("bbox_diagonal", "rms_radius", "absolute"):
            raise ValueError(f"relative_to: expected 'bbox_diagonal', 'rms_radius' or 'absolute', got {relative_to!r}")
        self.relative_to = relative_to
        self.generator = _generator(generator)

    def scale(self, pos: Tensor) -> Tensor:
        """The length the noise level is relative to, for positions ``pos [N, d]`` (a 0-d tensor)."""
        if self.relative_to == "absolute":
            return torch.ones((), dtype=pos.dtype, device=pos.device)
        if self.relative_to == "bbox_diagonal":
            return torch.linalg.vector_norm(pos.amax(0) - pos.amin(0))
        return (pos - pos.mean(0)).square().sum(-1).mean().sqrt()

    def forward(self, data: Any) -> Any:
        xs = [_points(data, k, "attrs") for k in self.attrs]
        sigma = self.std * self.scale(xs[0])
        for k, x in zip(self.attrs, xs):
            eps = torch.randn(x.shape, generator=self.generator, dtype=torch.float64, device=_gen_device(self.generator))
            data[k] = x + sigma * eps.to(dtype=x.dtype, device=x.device)
        return data


def _points(data: Any, key: str, name: str) -> Tensor:
    x = _get(data, key, name)
    if x.dim() != 2 or x.shape[0] < 1:
        raise ValueError(f"{name}: attribute {key!r} must be points [N, d] with N >= 1, got {tuple(x.shape)}")
    return x


class SubsamplePoints(BaseTransform):
    r"""Keep ``n_points`` of the ``N`` nodes, drawn uniformly without replacement (kept in their order).

    Every node attribute is subsampled (``Data.subgraph``: edges between kept nodes are kept and
    relabelled, edge attributes follow). A cloud of at most ``n_points`` points is returned unchanged.

    Args:
        n_points: how many points to keep (``>= 1``).
        generator: a ``torch.Generator``, an ``int`` seed, or ``None`` (torch's global generator).

    Shapes:
        node attributes ``[N, *]`` -> ``[min(N, n_points), *]``.

    Example:
        >>> import torch
        >>> from torch_geometric.data import Data
        >>> from equiframe.transforms import SubsamplePoints
        >>> out = SubsamplePoints(4, generator=0)(Data(pos=torch.randn(10, 3), normal=torch.randn(10, 3)))
        >>> out.pos.shape, out.normal.shape
        (torch.Size([4, 3]), torch.Size([4, 3]))
    """

    def __init__(self, n_points: int, *, generator: torch.Generator | int | None = None):
        self.n_points = int(check_int("n_points", n_points, 1))
        self.generator = _generator(generator)

    def forward(self, data: Any) -> Any:
        data = _check_graph(data, type(self).__name__)
        n = data.num_nodes
        if n is None:
            raise ValueError("data: the number of nodes is unknown (give pos, x or num_nodes)")
        if n <= self.n_points:
            return data
        keep = torch.randperm(n, generator=self.generator)[: self.n_points].sort().values
        return data.subgraph(keep)


class Center(BaseTransform):
    r"""Subtract the centroid ``m = mean_i p_i`` of the positions ``reference`` from the listed attributes.

    Centring is E(d)-equivariant (``Q p + s`` centres to ``Q (p - m)``) and removes translations.

    Args:
        reference: the position attribute whose centroid is used (``[N, d]``).
        attrs: the position attributes to move (default: ``reference`` only), e.g. ``("pos", "target")``.

    Shapes:
        each attribute ``[*, d]`` -> the same shape.

    Example:
        >>> import torch
        >>> from torch_geometric.data import Data
        >>> from equiframe.transforms import Center
        >>> Center()(Data(pos=torch.tensor([[1.0, 1.0], [3.0, 5.0]]))).pos.tolist()
        [[-1.0, -2.0], [1.0, 2.0]]
    """

    def __init__(self, reference: str = "pos", attrs: Sequence[str] | str | None = None):
        self.reference = _check_names("reference", reference)[0]
        self.attrs = (self.reference,) if attrs is None else _check_names("attrs", attrs)

    def forward(self, data: Any) -> Any:
        ref = _points(data, self.reference, "reference")
        m = ref.mean(0)
        xs = {k: _get(data, k, "attrs", ref.shape[-1]) for k in self.attrs}
        for k, x in xs.items():
            data[k] = x - m.to(x.dtype)
        return data


# ------------------------------------------------------------------------------------------ graphs
class AddDegree(BaseTransform):
    r"""Append the node degree to the node features: ``x' = [x, deg]`` with ``deg_i`` the number of edges
    leaving node ``i`` (``edge_index[0] == i``; for an undirected graph stored in both directions, its
    degree). Equivariant under node relabelling.

    Shapes:
        x ``[N, F]``, edge_index ``[2, E]`` -> x ``[N, F + 1]``.

    Example:
        >>> import torch
        >>> from torch_geometric.data import Data
        >>> from equiframe.transforms import AddDegree
        >>> star = Data(x=torch.ones(3, 1), edge_index=torch.tensor([[0, 0, 1, 2], [1, 2, 0, 0]]))
        >>> AddDegree()(star).x.tolist()
        [[1.0, 2.0], [1.0, 1.0], [1.0, 1.0]]
    """

    def forward(self, data: Any) -> Any:
        data = _check_graph(data, type(self).__name__)
        x = getattr(data, "x", None)
        if not isinstance(x, Tensor) or x.dim() != 2:
            raise ValueError(f"data: AddDegree needs node features x [N, F], got {getattr(x, 'shape', x)!r}")
        if getattr(data, "edge_index", None) is None:
            raise ValueError("data: AddDegree needs an edge_index")
        deg = torch.bincount(data.edge_index[0], minlength=data.num_nodes).to(x.dtype)[:, None]
        data.x = torch.cat([x, deg], 1)
        return data
