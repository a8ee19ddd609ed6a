r"""Graph models of the expressive-power benchmarks (Frame Averaging paper, SPEC 4.2).

Every model maps a (PyG-style) batch of graphs to one embedding per graph::

    model(x, edge_index, batch, key=None) -> [B, out_dim]

* :class:`FAGraphModel` around :class:`AdjacencyMLP` — **FA-MLP** (Puny et al., 2022): an MLP on the
  zero-padded adjacency matrix and node features *read in frame order*,

  .. math::
      \phi(G) = \mathrm{MLP}\big([\mathrm{vec}(A_\sigma), \mathrm{vec}(X_\sigma)]\big),\qquad
      \langle\phi\rangle(G) = \sum_{\sigma \in F(G)} w_\sigma\, \phi(G),

  with ``A_sigma = P_sigma A P_sigma^T`` padded to ``n_max x n_max`` and ``X_sigma`` the features in the
  same order (``[n_max, F]``, zero rows for absent nodes).
* :class:`FAGraphModel` around :class:`GINWithIDs` — **FA-GIN+ID**: GIN layers (Xu et al., 2019) on
  node features concatenated with the one-hot node identifier given by the frame order
  (:func:`equiframe.averaging.node_ranks`), sum pooling, a linear read-out:

  .. math::
      h_i^{(0)} = [x_i, e_{\mathrm{rank}_\sigma(i)}],\quad
      h_i^{(l+1)} = \mathrm{MLP}_l\big((1+\epsilon_l) h_i^{(l)} + \textstyle\sum_{j \in N(i)} h_j^{(l)}\big),\quad
      \phi(G) = W \textstyle\sum_i h_i^{(L)} + b.

* :class:`MessagePassingBaseline` — plain **GIN** and **GCN** (PyG layers), same pooling and read-out, no
  frames (permutation invariant by construction, 1-WL bounded).

The FA models run **through** :class:`equiframe.FrameAveraging` with ``group="S_n"`` (Laplacian
permutation frames; exact average for frames up to ``max_size`` elements, ``n_samples`` uniform samples
above; see the class docstring there). Two frame choices (``frame=``):

* ``"spectral"`` — the paper's frame: nodes sorted by their Laplacian eigenspace keys, node features
  ``x`` as extra (least significant) keys; all orders permuting tied nodes. Exactly invariant when the
  frame is enumerated; a sampled frame makes the output a random variable (different outputs for the
  same graph or a relabelled copy).
* ``"canonical"`` — the spectral frame refined by a canonical labelling
  (:func:`equiframe.frames.canonical.canonical_keys`: individualisation-refinement with automorphism
  pruning, as in nauty; or nauty itself through ``pynauty``): the node keys are the positions of a
  canonical ordering, so every frame has one element per graph and the average is an exactly invariant
  single forward pass. Graphs whose search exceeds ``max_states`` keep the spectral frame, with a
  :class:`~equiframe.frames.canonical.CanonicalBudgetWarning` and ``GraphFrameInfo.canonical = False``.

``train_frame=`` (default: the same as ``frame``) picks the frame used while the module is in training
mode. ``frame="canonical", train_frame="spectral"`` trains on sampled elements of the spectral frame
(``n_samples`` uniform orders per graph and step: augmentation over the frame) and evaluates with the
canonical frame. The canonical order is itself an element of the spectral frame (its keys refine the
spectral blocks and the feature order), so training and evaluation draw from the same frame, and the
evaluated model is still exactly invariant (one pass). Training on the canonical order alone sees one
fixed order per graph and overfits within a few epochs (EXP-classify, see ``benchmarks/results/graphs.md``).

Shapes (all models):
    x ``[N, F]``, edge_index ``[2, E]`` (both directions), batch ``[N]`` (sorted, ``B`` graphs),
    key ``[N]`` int64 (canonical frames only; computed when omitted) -> ``[B, out_dim]``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from ..averaging import FrameAveraging, node_ranks
from ..frames.canonical import CanonicalBudgetWarning, CanonicalLabels, _check_edge_index, canonical_keys, wl_classes
from ..nn.mlp import mlp

__all__ = [
    "AdjacencyMLP",
    "CanonicalBackend",
    "CanonicalLabels",
    "ComponentOrder",
    "FAGraphModel",
    "FrameKind",
    "GINWithIDs",
    "GRAPH_MODEL_NAMES",
    "GraphFrameInfo",
    "GraphModelName",
    "MessagePassingBaseline",
    "build_graph_model",
    "canonical_keys",
    "wl_classes",
]

GraphModelName = Literal["fa-mlp", "fa-gin-id", "gin", "gcn"]
GRAPH_MODEL_NAMES: tuple[str, ...] = get_args(GraphModelName)
FrameKind = Literal["spectral", "canonical"]
CanonicalBackend = Literal["python", "nauty"]
FAMode = Literal["all", "canonical", "stochastic"]
ComponentOrder = Literal["sorted", "shuffled"]


# ================================================================================================ helpers
def _check_graph_inputs(x: Tensor, edge_index: Tensor, batch: Tensor | None, module: nn.Module | None = None
                        ) -> Tensor:
    """Validate a PyG-style batch (finite float ``x [N, F]``, integer ``edge_index [2, E]`` in range, sorted
    integer ``batch [N]``, all on one device, that of ``module``'s parameters); returns ``batch`` (zeros when
    ``None``). Errors name the argument."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    for name, t in (("edge_index", edge_index), ("batch", batch)):
        if isinstance(t, Tensor) and t.device != x.device:
            raise ValueError(f"{name}: is on {t.device}, but x is on {x.device}")
    p = next(module.parameters(), None) if module is not None else None
    if p is not None and p.device != x.device:
        raise ValueError(f"x: is on {x.device}, but the model's parameters are on {p.device} (model.to(device))")
    if x.dim() != 2:
        raise ValueError(f"x: expected node features of shape [N, F], got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("x: empty graph batch (0 nodes)")
    if not x.is_floating_point():
        raise TypeError(f"x: expected floating point node features, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x: contains NaN or inf")
    _check_edge_index(edge_index)
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= x.shape[0]):
        raise ValueError(f"edge_index: node ids must lie in [0, {x.shape[0]}) (one per row of x)")
    if batch is None:
        return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    if not isinstance(batch, Tensor):
        raise TypeError(f"batch: expected a torch.Tensor, got {type(batch).__name__}")
    if batch.dtype.is_floating_point or batch.dtype.is_complex or batch.dtype == torch.bool:
        raise TypeError(f"batch: expected an integer tensor, got {batch.dtype}")
    if batch.shape != (x.shape[0],):
        raise ValueError(f"batch: expected shape [{x.shape[0]}] (one entry per row of x), got {tuple(batch.shape)}")
    if int(batch.min()) < 0:
        raise ValueError("batch: graph indices must be >= 0")
    if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("batch: expected a sorted batch vector (nodes grouped by graph, as in PyG batches)")
    return batch.long()


def _pos_int(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name}: expected a positive integer, got {v!r}")


# ================================================================================================ backbones
class AdjacencyMLP(nn.Module):
    """The FA-MLP backbone: an MLP on the zero-padded adjacency and node features, in node order.

    .. math::  \\phi(G) = \\mathrm{MLP}([\\mathrm{vec}(A), \\mathrm{vec}(X)]),\\quad A \\in \\{0,1\\}^{n_{max} \\times n_{max}}

    Not permutation invariant by itself (reads nodes in the order given); wrapped by
    :class:`FAGraphModel` it sees every graph in frame order.

    Args:
        in_dim: node feature size ``F``.
        n_max: largest number of nodes of a graph (inputs are padded to it).
        hidden: hidden width.
        layers: number of hidden layers (``>= 1``).
        out_dim: embedding size.

    Shapes:
        x ``[N, F]``, edge_index ``[2, E]``, batch ``[N]`` (sorted, ``C`` graphs) -> ``[C, out_dim]``
    """

    def __init__(self, in_dim: int, n_max: int, hidden: int = 64, layers: int = 2, out_dim: int = 10):
        super().__init__()
        for name, v in (("in_dim", in_dim), ("n_max", n_max), ("hidden", hidden), ("layers", layers), ("out_dim", out_dim)):
            _pos_int(name, v)
        self.in_dim, self.n_max = in_dim, n_max
        self.mlp = mlp([n_max * n_max + n_max * in_dim] + [hidden] * layers + [out_dim])

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None, **_: Any) -> Tensor:
        batch = _check_graph_inputs(x, edge_index, batch, self)
        if x.shape[1] != self.in_dim:
            raise ValueError(f"x: expected {self.in_dim} features per node, got {x.shape[1]}")
        C, n = int(batch[-1]) + 1, self.n_max
        ranks = node_ranks(batch)  # position of every node in its graph (frame order under FA)
        if int(ranks.max()) >= n:
            raise ValueError(f"x: a graph has {int(ranks.max()) + 1} nodes > n_max={n}")
        src, dst = edge_index[0].long(), edge_index[1].long()
        A = x.new_zeros(C * n * n)  # A[c, rank(u), rank(v)] += 1 for every edge (u, v) of copy c
        A.index_add_(0, batch[src] * (n * n) + ranks[src] * n + ranks[dst], x.new_ones(src.shape[0]))
        X = x.new_zeros(C, n, x.shape[1])
        X[batch, ranks] = x
        return self.mlp(torch.cat([A.reshape(C, n * n), X.reshape(C, -1)], dim=1))


def _convolve_and_pool(convs: nn.ModuleList, readout: nn.Module, h: Tensor, edge_index: Tensor,
                       batch: Tensor) -> Tensor:
    """``h`` through the convolutions (ReLU between them, none after the last), summed per graph (sorted
    ``batch``), then the read-out: ``[N, F]`` -> ``[B, out]``."""
    from torch_geometric.nn import global_add_pool  # noqa: PLC0415

    for i, conv in enumerate(convs):
        h = conv(h, edge_index)
        if i < len(convs) - 1:
            h = torch.relu(h)
    return readout(global_add_pool(h, batch, size=int(batch[-1]) + 1))


class GINWithIDs(nn.Module):
    """The FA-GIN+ID backbone: GIN on ``[x_i, one_hot(rank_i)]`` with the node's position in its graph.

    ``rank_i = i - ptr[batch_i]`` (:func:`~equiframe.averaging.node_ranks`) is the node identifier; in
    frame order it is the canonical id of the paper. Sum pooling, linear read-out (see module docstring).

    Args:
        in_dim: node feature size ``F``.
        n_max: size of the one-hot identifier (largest graph).
        hidden: width of the GIN MLPs.
        layers: number of GIN layers.
        out_dim: embedding size.
        eps: initial value of GIN's (trainable) ``epsilon`` (PyG's default 0). With ``eps = 0`` every
            update sums the closed neighbourhood ``N[v]`` without marking ``v``; the exact average over
            all of ``S_6`` then cannot tell ``K_{3,3}`` from the prism (found by the separation tests),
            ``eps != 0`` can.

    Shapes:
        x ``[N, F]``, edge_index ``[2, E]``, batch ``[N]`` (sorted, ``C`` graphs) -> ``[C, out_dim]``
    """

    def __init__(self, in_dim: int, n_max: int, hidden: int = 64, layers: int = 3, out_dim: int = 10,
                 eps: float = 0.0):
        super().__init__()
        from torch_geometric.nn import GINConv  # noqa: PLC0415

        for name, v in (("in_dim", in_dim), ("n_max", n_max), ("hidden", hidden), ("layers", layers), ("out_dim", out_dim)):
            _pos_int(name, v)
        self.in_dim, self.n_max = in_dim, n_max
        dims = [in_dim + n_max] + [hidden] * layers
        self.convs = nn.ModuleList(GINConv(mlp([dims[i], hidden, hidden]), eps=float(eps), train_eps=True)
                                   for i in range(layers))
        self.readout = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None, **_: Any) -> Tensor:
        batch = _check_graph_inputs(x, edge_index, batch, self)
        if x.shape[1] != self.in_dim:
            raise ValueError(f"x: expected {self.in_dim} features per node, got {x.shape[1]}")
        ranks = node_ranks(batch)
        if int(ranks.max()) >= self.n_max:
            raise ValueError(f"x: a graph has {int(ranks.max()) + 1} nodes > n_max={self.n_max}")
        h = torch.cat([x, torch.nn.functional.one_hot(ranks, self.n_max).to(x.dtype)], dim=1)
        return _convolve_and_pool(self.convs, self.readout, h, edge_index, batch)


class MessagePassingBaseline(nn.Module):
    """Plain GIN or GCN (PyG layers) with sum pooling and a linear read-out: no frames, no identifiers.

    .. math::  \\phi(G) = W \\textstyle\\sum_i h_i^{(L)} + b,\\quad h^{(l+1)} = \\sigma(\\mathrm{Conv}_l(h^{(l)}, A))

    Args:
        kind: ``"gin"`` (GINConv with a 2-layer MLP) or ``"gcn"`` (GCNConv, symmetric normalisation, self-loops).
        in_dim, hidden, layers, out_dim: as in :class:`GINWithIDs`.
        eps: initial GIN ``epsilon`` (``"gin"`` only).

    Shapes:
        x ``[N, F]``, edge_index ``[2, E]``, batch ``[N]`` (``B`` graphs) -> ``[B, out_dim]``
    """

    def __init__(self, kind: Literal["gin", "gcn"], in_dim: int, hidden: int = 64, layers: int = 3, out_dim: int = 10,
                 eps: float = 0.0):
        super().__init__()
        from torch_geometric.nn import GCNConv, GINConv  # noqa: PLC0415

        if kind not in ("gin", "gcn"):
            raise ValueError(f"kind: expected 'gin' or 'gcn', got {kind!r}")
        for name, v in (("in_dim", in_dim), ("hidden", hidden), ("layers", layers), ("out_dim", out_dim)):
            _pos_int(name, v)
        self.kind, self.in_dim = kind, in_dim
        dims = [in_dim] + [hidden] * layers
        if kind == "gin":
            self.convs = nn.ModuleList(GINConv(mlp([dims[i], hidden, hidden]), eps=float(eps), train_eps=True)
                                       for i in range(layers))
        else:
            self.convs = nn.ModuleList(GCNConv(dims[i], hidden) for i in range(layers))
        self.readout = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None, **_: Any) -> Tensor:
        batch = _check_graph_inputs(x, edge_index, batch, self)
        if x.shape[1] != self.in_dim:
            raise ValueError(f"x: expected {self.in_dim} features per node, got {x.shape[1]}")
        return _convolve_and_pool(self.convs, self.readout, x, edge_index, batch)


# ================================================================================================ FA wrapper
class FAGraphModel(nn.Module):
    """A backbone made permutation invariant by :class:`~equiframe.FrameAveraging` over ``S_n``.

    .. math::  \\langle\\phi\\rangle(G) = \\sum_{\\sigma \\in F(G)} w_\\sigma\\, \\phi(\\sigma \\cdot G)

    Args:
        backbone: a module called as ``backbone(x=, edge_index=, batch=, key=?)`` on the folded batch (every
            copy's nodes in frame order) returning ``[C, out]``.
        frame: ``"spectral"`` (Laplacian keys, node features as tie-breakers) or ``"canonical"``
            (spectral keys refined by a canonical labelling, :func:`canonical_keys`): the frame of
            evaluation mode (and of training mode unless ``train_frame`` says otherwise).
        train_frame: the frame used in training mode (``self.training``); ``None`` = ``frame``. With
            ``frame="canonical", train_frame="spectral"`` training samples orders from the spectral frame
            (augmentation over the frame; given keys are then ignored) and evaluation uses the canonical
            order, which is an element of the same spectral frame: the evaluated model stays exactly
            invariant. ``frame="spectral", train_frame="canonical"`` (train on the canonical element only)
            is allowed for completeness.
        mode: FrameAveraging mode: ``"all"`` (exact up to ``max_size`` elements, ``n_samples`` samples above),
            ``"stochastic"`` (``n_samples`` samples per graph in training, ``"all"`` in eval) or ``"canonical"``.
        max_size: largest frame averaged exactly.
        n_samples: samples per graph for larger frames (and per graph in stochastic training).
        generator: ``torch.Generator`` of the frame samples.
        max_states: search budget of :func:`canonical_keys` when keys are computed on the fly.
        canonical_backend: ``"python"`` (default) or ``"nauty"`` (needs ``pynauty``): the labelling backend of
            :func:`canonical_keys`. The two give different canonical orders, i.e. different functions, so it is
            a fixed hyper-parameter of a model and never switches with what is installed.
        train_components: ``"shuffled"`` (needs ``mode="stochastic"``): when sampling in training, every graph's
            connected components come in a random order (the component frame of
            :func:`~equiframe.frames.graph.shuffle_components`): a position-reading backbone such as the
            FA-MLP then learns each component at every offset instead of the offsets the component sizes of
            the training graphs dictate. Evaluation is unchanged (exactly invariant). ``"sorted"``
            (default): the frame as is.

    Shapes:
        x ``[N, F]``, edge_index ``[2, E]``, batch ``[N]`` (sorted), key ``[N]`` int64 -> ``[B, out]``
    """

    def __init__(self, backbone: nn.Module, *, frame: FrameKind = "spectral", train_frame: FrameKind | None = None,
                 mode: FAMode = "all", max_size: int = 1024, n_samples: int = 1,
                 generator: torch.Generator | None = None, max_states: int = 20_000,
                 train_components: ComponentOrder = "sorted", canonical_backend: CanonicalBackend = "python"):
        super().__init__()
        if frame not in get_args(FrameKind):
            raise ValueError(f"frame: expected one of {get_args(FrameKind)}, got {frame!r}")
        if train_frame is not None and train_frame not in get_args(FrameKind):
            raise ValueError(f"train_frame: expected None or one of {get_args(FrameKind)}, got {train_frame!r}")
        _pos_int("max_size", max_size)
        _pos_int("n_samples", n_samples)
        _pos_int("max_states", max_states)
        if canonical_backend not in get_args(CanonicalBackend):
            raise ValueError(f"canonical_backend: expected one of {get_args(CanonicalBackend)}, got {canonical_backend!r}")
        self.canonical_backend: CanonicalBackend = canonical_backend
        self.frame_kind = frame
        self.train_frame_kind: FrameKind = frame if train_frame is None else train_frame
        self.max_states = max_states
        # the frame keys come from one declared input: "x" (spectral only) or "key", which carries the
        # canonical positions (canonical frame) or the node features (spectral frame) in the active mode
        self._keyed = "canonical" in (self.frame_kind, self.train_frame_kind)
        inputs = {"x": "scalar"}
        if self._keyed:
            inputs["key"] = "scalar"
        self.fa = FrameAveraging(backbone, group="S_n", inputs=inputs, output="scalar", mode=mode,
                                 n_samples=n_samples, frame_from="key" if self._keyed else "x",
                                 generator=generator, max_size=max_size, eval_mode="all",
                                 components=train_components)

    @property
    def active_frame(self) -> FrameKind:
        """The frame of the current mode: ``train_frame`` in training mode, ``frame`` in evaluation mode."""
        return self.train_frame_kind if self.training else self.frame_kind

    @property
    def backbone(self) -> nn.Module:
        return self.fa.backbone

    @property
    def generator(self) -> torch.Generator | None:
        return self.fa.generator

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None, key: Tensor | None = None,
                *, return_frame: bool = False, return_info: bool = False):
        """Frame-averaged embeddings ``[B, out]``.

        With ``return_frame`` also returns ``(frame, elements)`` of :class:`~equiframe.FrameAveraging`; with
        ``return_info`` a :class:`GraphFrameInfo` (per graph: exactly averaged or sampled, canonical or not).
        If the canonical frame is active and some graph has no canonical labelling (search over
        ``max_states``), a :class:`~equiframe.frames.canonical.CanonicalBudgetWarning` says so and whether
        the spectral frame that replaces it was enumerated (still exact) or sampled (not exactly invariant).
        """
        batch = _check_graph_inputs(x, edge_index, batch, self)
        kw: dict[str, Tensor] = {"x": x, "edge_index": edge_index, "batch": batch}
        canonical_ok: Tensor | None = None
        if self._keyed and self.active_frame == "spectral":
            kw["key"] = x  # spectral frame: node features as the tie-breaking keys (as with frame_from="x")
        elif self._keyed:
            if key is None:
                lab = canonical_keys(edge_index, batch=batch, x=x, max_states=self.max_states,
                                     backend=self.canonical_backend, on_budget="ignore")
                key, canonical_ok = lab.keys, lab.ok
            if not isinstance(key, Tensor) or key.shape != (x.shape[0],) or key.is_floating_point():
                raise ValueError(f"key: expected an integer tensor of shape [{x.shape[0]}], got "
                                 f"{getattr(key, 'dtype', type(key).__name__)} {tuple(getattr(key, 'shape', ()))}")
            key = key.to(x.device)
            if canonical_ok is None:
                canonical_ok = _keys_are_orders(key, batch)
            kw["key"] = key
        y, (frame, elements) = self.fa(**kw, return_frame=True)
        if canonical_ok is not None and not bool(canonical_ok.all()):
            bad = ~canonical_ok.to(elements.exact.device)
            sampled = int((bad & ~elements.exact).sum())
            warnings.warn(
                f"FAGraphModel: {int(bad.sum())} of {bad.numel()} graph(s) have no canonical labelling (search over "
                f"max_states={self.max_states}); they use the spectral frame: {int(bad.sum()) - sampled} enumerated "
                f"exactly (still exactly invariant), {sampled} sampled (outputs NOT exactly invariant). Raise "
                f"max_states or use canonical_backend='nauty'.", CanonicalBudgetWarning, stacklevel=2)
        out: list[Any] = [y]
        if return_frame:
            out.append((frame, elements))
        if return_info:
            out.append(GraphFrameInfo(exact=elements.exact, canonical=canonical_ok,
                                      log10_size=frame.log_size() / math.log(10)))
        return out[0] if len(out) == 1 else tuple(out)


def _keys_are_orders(key: Tensor, batch: Tensor) -> Tensor:
    """Per graph, whether ``key`` is a permutation of ``0..n-1`` (failed canonical searches give zeros)."""
    B = int(batch[-1]) + 1
    n = torch.bincount(batch, minlength=B)
    inside = (key >= 0) & (key < n[batch])
    distinct = torch.unique(batch[inside] * (int(n.max()) + 1) + key[inside])
    return torch.bincount(distinct // (int(n.max()) + 1), minlength=B) == n


@dataclass(frozen=True)
class GraphFrameInfo:
    """What the frame of every graph was in one :class:`FAGraphModel` call (``return_info=True``).

    Attributes:
        exact: per graph, whether its frame was enumerated (the output is exactly invariant) rather than
            sampled.
        canonical: per graph, whether it has a canonical labelling (``None`` when the spectral frame is
            active); ``False`` = search over budget, the spectral frame replaced it.
        log10_size: per graph, ``log10 |F(G)|`` of the frame used.

    Shapes:
        exact ``[B]`` bool, canonical ``[B]`` bool, log10_size ``[B]`` float64
    """

    exact: Tensor
    canonical: Tensor | None
    log10_size: Tensor


def build_graph_model(
    name: GraphModelName,
    *,
    in_dim: int,
    n_max: int,
    hidden: int = 64,
    layers: int = 3,
    out_dim: int = 10,
    frame: FrameKind = "spectral",
    train_frame: FrameKind | None = None,
    mode: FAMode = "all",
    max_size: int = 1024,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
    max_states: int = 20_000,
    gin_eps: float = 0.0,
    train_components: ComponentOrder = "sorted",
    canonical_backend: CanonicalBackend = "python",
) -> nn.Module:
    """One of the models of the graph benchmarks (parameters from the global torch RNG).

    Args:
        name: ``"fa-mlp"``, ``"fa-gin-id"``, ``"gin"`` or ``"gcn"``.
        in_dim: node feature size.
        n_max: largest graph (FA-MLP input size, FA-GIN+ID identifier size; unused by GIN/GCN).
        hidden: width; layers: hidden layers (FA-MLP: ``layers - 1``, at least 1) / message passing layers.
        out_dim: embedding size (number of classes for classification).
        frame, train_frame, mode, max_size, n_samples, generator, max_states, train_components,
            canonical_backend: see
            :class:`FAGraphModel` (FA models only; ignored by GIN / GCN).
        gin_eps: initial ``epsilon`` of the GIN layers of FA-GIN+ID and GIN (see :class:`GINWithIDs`).
    """
    fa = dict(frame=frame, train_frame=train_frame, mode=mode, max_size=max_size, n_samples=n_samples,
              generator=generator, max_states=max_states, train_components=train_components,
              canonical_backend=canonical_backend)
    if name == "fa-mlp":
        return FAGraphModel(AdjacencyMLP(in_dim, n_max, hidden, max(1, layers - 1), out_dim), **fa)
    if name == "fa-gin-id":
        return FAGraphModel(GINWithIDs(in_dim, n_max, hidden, layers, out_dim, eps=gin_eps), **fa)
    if name in ("gin", "gcn"):
        return MessagePassingBaseline(name, in_dim, hidden, layers, out_dim, eps=gin_eps)
    raise ValueError(f"name: expected one of {GRAPH_MODEL_NAMES}, got {name!r}")
