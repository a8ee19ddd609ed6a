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
* ``"canonical"`` — the spectral frame refined by a canonical labelling (:func:`canonical_keys`:
  individualisation-refinement search, the textbook method behind nauty): the node keys are the
  positions of a canonical ordering, so every frame has one element per graph and the average is an
  exactly invariant single forward pass. Graphs whose search exceeds ``max_states`` keep the spectral
  frame (reported in :attr:`CanonicalLabels.ok`).

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

from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from ..averaging import FrameAveraging, node_ranks

__all__ = [
    "AdjacencyMLP",
    "CanonicalLabels",
    "ComponentOrder",
    "FAGraphModel",
    "FrameKind",
    "GINWithIDs",
    "GRAPH_MODEL_NAMES",
    "GraphModelName",
    "MessagePassingBaseline",
    "build_graph_model",
    "canonical_keys",
    "wl_classes",
]

GraphModelName = Literal["fa-mlp", "fa-gin-id", "gin", "gcn"]
GRAPH_MODEL_NAMES: tuple[str, ...] = get_args(GraphModelName)
FrameKind = Literal["spectral", "canonical"]
FAMode = Literal["all", "canonical", "stochastic"]
ComponentOrder = Literal["sorted", "shuffled"]


# ================================================================================================ helpers
def _check_graph_inputs(x: Tensor, edge_index: Tensor, batch: Tensor | None) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"x: expected node features of shape [N, F], got {tuple(getattr(x, 'shape', ()))}")
    if x.shape[0] == 0:
        raise ValueError("x: empty graph batch (0 nodes)")
    if not x.is_floating_point():
        raise TypeError(f"x: expected floating point node features, got {x.dtype}")
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index: expected shape [2, E], got {tuple(getattr(edge_index, 'shape', ()))}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= x.shape[0]):
        raise ValueError(f"edge_index: node ids must lie in [0, {x.shape[0]})")
    if batch is None:
        return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    if not isinstance(batch, Tensor) or batch.shape != (x.shape[0],):
        raise ValueError(f"batch: expected shape [{x.shape[0]}], got {tuple(getattr(batch, 'shape', ()))}")
    if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("batch: expected a sorted batch vector (nodes grouped by graph, as in PyG batches)")
    return batch


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


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
        self.mlp = _mlp([n_max * n_max + n_max * in_dim] + [hidden] * layers + [out_dim])

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None, **_: Any) -> Tensor:
        batch = _check_graph_inputs(x, edge_index, batch)
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
        self.convs = nn.ModuleList(GINConv(_mlp([dims[i], hidden, hidden]), eps=float(eps), train_eps=True)
                                   for i in range(layers))
        self.readout = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None, **_: Any) -> Tensor:
        from torch_geometric.nn import global_add_pool  # noqa: PLC0415

        batch = _check_graph_inputs(x, edge_index, batch)
        if x.shape[1] != self.in_dim:
            raise ValueError(f"x: expected {self.in_dim} features per node, got {x.shape[1]}")
        ranks = node_ranks(batch)
        if int(ranks.max()) >= self.n_max:
            raise ValueError(f"x: a graph has {int(ranks.max()) + 1} nodes > n_max={self.n_max}")
        h = torch.cat([x, torch.nn.functional.one_hot(ranks, self.n_max).to(x.dtype)], dim=1)
        for i, conv in enumerate(self.convs):
            h = conv(h, edge_index)
            if i < len(self.convs) - 1:
                h = torch.relu(h)
        C = int(batch[-1]) + 1
        return self.readout(global_add_pool(h, batch, size=C))


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
            self.convs = nn.ModuleList(GINConv(_mlp([dims[i], hidden, hidden]), eps=float(eps), train_eps=True)
                                       for i in range(layers))
        else:
            self.convs = nn.ModuleList(GCNConv(dims[i], hidden) for i in range(layers))
        self.readout = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None, **_: Any) -> Tensor:
        from torch_geometric.nn import global_add_pool  # noqa: PLC0415

        batch = _check_graph_inputs(x, edge_index, batch)
        if x.shape[1] != self.in_dim:
            raise ValueError(f"x: expected {self.in_dim} features per node, got {x.shape[1]}")
        h = x
        for i, conv in enumerate(self.convs):
            h = conv(h, edge_index)
            if i < len(self.convs) - 1:
                h = torch.relu(h)
        C = int(batch[-1]) + 1
        return self.readout(global_add_pool(h, batch, size=C))


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
                 train_components: ComponentOrder = "sorted"):
        super().__init__()
        if frame not in get_args(FrameKind):
            raise ValueError(f"frame: expected one of {get_args(FrameKind)}, got {frame!r}")
        if train_frame is not None and train_frame not in get_args(FrameKind):
            raise ValueError(f"train_frame: expected None or one of {get_args(FrameKind)}, got {train_frame!r}")
        _pos_int("max_size", max_size)
        _pos_int("n_samples", n_samples)
        _pos_int("max_states", max_states)
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
                *, return_frame: bool = False):
        batch = _check_graph_inputs(x, edge_index, batch)
        kw: dict[str, Tensor] = {"x": x, "edge_index": edge_index, "batch": batch}
        if self._keyed and self.active_frame == "spectral":
            kw["key"] = x  # spectral frame: node features as the tie-breaking keys (as with frame_from="x")
        elif self._keyed:
            if key is None:
                key = canonical_keys(edge_index, batch=batch, x=x, max_states=self.max_states).keys
            if not isinstance(key, Tensor) or key.shape != (x.shape[0],) or key.is_floating_point():
                raise ValueError(f"key: expected an integer tensor of shape [{x.shape[0]}], got "
                                 f"{getattr(key, 'dtype', type(key).__name__)} {tuple(getattr(key, 'shape', ()))}")
            kw["key"] = key.to(x.device)
        return self.fa(**kw, return_frame=return_frame)


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
) -> nn.Module:
    """One of the models of the graph benchmarks (parameters from the global torch RNG).

    Args:
        name: ``"fa-mlp"``, ``"fa-gin-id"``, ``"gin"`` or ``"gcn"``.
        in_dim: node feature size.
        n_max: largest graph (FA-MLP input size, FA-GIN+ID identifier size; unused by GIN/GCN).
        hidden: width; layers: hidden layers (FA-MLP: ``layers - 1``, at least 1) / message passing layers.
        out_dim: embedding size (number of classes for classification).
        frame, train_frame, mode, max_size, n_samples, generator, max_states, train_components: see
            :class:`FAGraphModel` (FA models only; ignored by GIN / GCN).
        gin_eps: initial ``epsilon`` of the GIN layers of FA-GIN+ID and GIN (see :class:`GINWithIDs`).
    """
    fa = dict(frame=frame, train_frame=train_frame, mode=mode, max_size=max_size, n_samples=n_samples,
              generator=generator, max_states=max_states, train_components=train_components)
    if name == "fa-mlp":
        return FAGraphModel(AdjacencyMLP(in_dim, n_max, hidden, max(1, layers - 1), out_dim), **fa)
    if name == "fa-gin-id":
        return FAGraphModel(GINWithIDs(in_dim, n_max, hidden, layers, out_dim, eps=gin_eps), **fa)
    if name in ("gin", "gcn"):
        return MessagePassingBaseline(name, in_dim, hidden, layers, out_dim, eps=gin_eps)
    raise ValueError(f"name: expected one of {GRAPH_MODEL_NAMES}, got {name!r}")


# ================================================================================================ canonical keys
@dataclass(frozen=True)
class CanonicalLabels:
    """Result of :func:`canonical_keys` for a batch of ``B`` graphs (``N`` nodes).

    Attributes:
        keys: canonical position of every node in its graph (a permutation of ``0..n-1`` per graph);
            ``0`` for all nodes of graphs whose search failed.
        ok: per graph, whether the search finished within the budget.
        states: per graph, search-tree nodes visited.
        leaves: per graph, leaves (discrete partitions) compared.
        certificate: per graph, the canonical adjacency bit string (62 bits per int64 word, most
            significant first; equal rows <=> isomorphic graphs of equal size, with equal initial
            colours); zeros for failed graphs. The width ``W`` follows the largest graph of the call, so
            rows of different calls compare equal only after dropping trailing zero words.

    Shapes:
        keys ``[N]`` int64, ok ``[B]`` bool, states / leaves ``[B]`` int64, certificate ``[B, W]`` int64
    """

    keys: Tensor
    ok: Tensor
    states: Tensor
    leaves: Tensor
    certificate: Tensor


_M1 = -4658895280553007687  # 0xBF58476D1CE4E5B9 as int64
_M2 = -7723592293110705685  # 0x94D049BB133111EB as int64
_GOLD = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64
_BITS = 62  # certificate bits per int64 word (non-negative words)


def _mix(c: Tensor) -> Tensor:
    """A fixed 64-bit mixing of colour ids (splitmix64-like; int64 arithmetic wraps)."""
    z = c * _GOLD + 0x632BE59BD9B4E019
    z = (z ^ (z >> 30)) * _M1
    z = (z ^ (z >> 27)) * _M2
    return z ^ (z >> 31)


def _rank_within(state: Tensor, col: Tensor, h: Tensor, S: int) -> tuple[Tensor, int]:
    """Ranks of the pairs ``(col, h)`` within each state (lexicographic order); and the number of classes."""
    o = torch.argsort(h, stable=True)
    o = o[torch.argsort(col[o], stable=True)]
    o = o[torch.argsort(state[o], stable=True)]
    st, c, hh = state[o], col[o], h[o]
    new = torch.ones_like(st, dtype=torch.bool)
    if st.numel() > 1:
        new[1:] = (st[1:] != st[:-1]) | (c[1:] != c[:-1]) | (hh[1:] != hh[:-1])
    cls = torch.cumsum(new.long(), 0) - 1
    first = torch.full((S,), cls.numel(), dtype=torch.long, device=cls.device)
    first.scatter_reduce_(0, st, cls, reduce="amin")
    out = torch.empty_like(cls)
    out[o] = cls - first[st]
    return out, int(cls[-1]) + 1 if cls.numel() else 0


def _refine(col: Tensor, state: Tensor, src: Tensor, dst: Tensor, S: int) -> Tensor:
    """Colour refinement (1-WL) of ordered partitions, all states at once, to a stable partition.

    New colour of ``v`` = rank of ``(col_v, sum_{u in N(v)} mix(col_u))`` inside its state; the order of
    the cells refines the previous order, so ranks stay canonical (functions of the isomorphism class).
    """
    zero = torch.zeros_like(col)
    col, classes = _rank_within(state, col, zero, S)
    while True:
        h = torch.zeros_like(col).index_add_(0, dst, _mix(col[src]))
        new, n_new = _rank_within(state, col, h, S)
        if n_new == classes:
            return col
        col, classes = new, n_new


def _twin_classes(edge_index: Tensor, batch: Tensor, local: Tensor, counts: Tensor) -> Tensor:
    """Twin class of every node (exact): nodes with equal open neighbourhoods ``N(v)`` (false twins) or
    equal closed neighbourhoods ``N[v]`` (true twins) in the same graph share an id; a node is never in a
    non-trivial class of both kinds. Ids are global integers in ``[0, 2N)``.

    Shapes:
        edge_index ``[2, E]``, batch / local ``[N]``, counts ``[B]`` -> ``[N]`` int64
    """
    N = batch.numel()
    device = batch.device
    words = max(1, -(-int(counts.max()) // _BITS))
    rows = torch.zeros(N * words, dtype=torch.long, device=device)
    src, dst = edge_index
    loop = src == dst
    loops = torch.bincount(src[loop], minlength=N)[:, None]  # self-loops are part of the twin key
    s_, d_ = src[~loop], dst[~loop]  # simple graph: every neighbour sets one bit
    lu = local[d_]
    rows.index_add_(0, s_ * words + lu // _BITS, torch.ones_like(lu) << (lu % _BITS))
    rows = rows.reshape(N, words)
    own = torch.zeros(N, words, dtype=torch.long, device=device)
    lv = local
    own.view(-1).index_add_(0, torch.arange(N, device=device) * words + lv // _BITS, torch.ones_like(lv) << (lv % _BITS))
    open_id = torch.unique(torch.cat([batch[:, None], loops, rows], 1), dim=0, return_inverse=True)[1]
    closed_id = torch.unique(torch.cat([batch[:, None], loops, rows + own], 1), dim=0, return_inverse=True)[1]
    open_size = torch.bincount(open_id, minlength=N)[open_id]
    return torch.where(open_size > 1, open_id, closed_id + N)


def canonical_keys(
    edge_index: Tensor,
    num_nodes: int | None = None,
    batch: Tensor | None = None,
    x: Tensor | None = None,
    *,
    spectral: bool = True,
    max_states: int = 20_000,
) -> CanonicalLabels:
    """Canonical node orderings by individualisation-refinement, all graphs of a batch at once.

    Search tree (McKay's scheme, without automorphism pruning): the root is the ordered partition of the
    nodes by their initial colour (Laplacian eigenspace keys of :func:`~equiframe.frames.graph.laplacian_frame`
    if ``spectral``, then the node features ``x`` by exact value), refined by 1-WL; a non-discrete node
    branches on every vertex ``v`` of its first smallest non-singleton cell (``v`` is put in front of its
    cell, then refined); the leaves are discrete partitions ``pi``. The canonical order is a leaf with the
    lexicographically largest certificate ``vec(A_pi)`` (the adjacency read in leaf order). All choices are
    functions of the isomorphism class, so relabelling a graph relabels its tree, and the chosen leaves of
    ``G`` and ``P G`` give the same ordered graph; equal certificates <=> isomorphic graphs.

    Used as the least significant frame key of :class:`FAGraphModel` (``frame="canonical"``): every frame
    then has a single element and averaging is an exactly invariant single pass. Refinement uses a fixed
    64-bit hash of neighbour colours; a hash collision would only make the partition coarser (a larger
    tree), never break invariance.

    Args:
        edge_index: ``[2, E]``, both directions of every undirected edge; a simple graph (self-loops are
            allowed, duplicate edges raise ``ValueError``).
        num_nodes: total nodes (default: from ``batch`` / ``x`` / ``edge_index``).
        batch: ``[N]`` graph of every node (default: one graph).
        x: optional node features ``[N]`` or ``[N, F]`` (initial colours by exact value).
        spectral: start from the Laplacian frame's tied blocks (smaller trees on most graphs).
        max_states: per graph, the most search-tree nodes visited; a graph needing more is marked
            ``ok = False`` and gets all-zero keys (the frame then stays spectral).

    Returns:
        :class:`CanonicalLabels`.

    Shapes:
        edge_index ``[2, E]``, batch ``[N]``, x ``[N, F]`` -> keys ``[N]`` (see :class:`CanonicalLabels`)
    """
    from ..frames.graph import laplacian_frame  # noqa: PLC0415

    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index: expected shape [2, E], got {tuple(getattr(edge_index, 'shape', ()))}")
    if edge_index.is_floating_point():
        raise TypeError(f"edge_index: expected an integer tensor, got {edge_index.dtype}")
    _pos_int("max_states", max_states)
    device = edge_index.device
    if num_nodes is None:
        num_nodes = batch.numel() if batch is not None else (x.shape[0] if x is not None else
                                                              (int(edge_index.max()) + 1 if edge_index.numel() else 0))
    if num_nodes < 1:
        raise ValueError("num_nodes: empty input (0 nodes)")
    if batch is None:
        batch = torch.zeros(num_nodes, dtype=torch.long, device=device)
    if batch.shape != (num_nodes,):
        raise ValueError(f"batch: expected shape [{num_nodes}], got {tuple(batch.shape)}")
    edge_index = edge_index.to(torch.long)
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise ValueError(f"edge_index: node ids must lie in [0, {num_nodes})")
    batch = batch.to(device=device, dtype=torch.long)
    if edge_index.numel():
        fwd = edge_index[0] * num_nodes + edge_index[1]
        ufwd = torch.unique(fwd)
        if ufwd.numel() != fwd.numel():
            raise ValueError("edge_index: duplicate edges (a multigraph); canonical_keys needs a simple graph")
        if not torch.equal(ufwd, torch.unique(edge_index[1] * num_nodes + edge_index[0])):
            raise ValueError("edge_index: the graph is not undirected (every edge needs both directions)")
        if not torch.equal(batch[edge_index[0]], batch[edge_index[1]]):
            raise ValueError("edge_index: an edge joins nodes of different graphs (see batch)")
    B = int(batch.max()) + 1
    counts = torch.bincount(batch, minlength=B)
    ptr = torch.zeros(B + 1, dtype=torch.long, device=device)
    ptr[1:] = counts.cumsum(0)
    node_sorted = torch.argsort(batch, stable=True)
    local = torch.empty(num_nodes, dtype=torch.long, device=device)
    local[node_sorted] = torch.arange(num_nodes, device=device) - ptr[batch[node_sorted]]

    # ---- initial colours: (spectral block, features) ranked within the graph
    cols = [batch.to(torch.float64)]
    if spectral:
        frame = laplacian_frame(edge_index, num_nodes=num_nodes, batch=batch, num_graphs=B)
        cols.append(frame.node_block(local=True).to(torch.float64))
    if x is not None:
        xx = x[:, None] if x.dim() == 1 else x
        if xx.shape[0] != num_nodes:
            raise ValueError(f"x: expected {num_nodes} rows, got {xx.shape[0]}")
        if xx.is_floating_point() and not bool(torch.isfinite(xx).all()):
            raise ValueError("x: contains NaN or inf")
        cols.append(xx.to(torch.float64).reshape(num_nodes, -1))
    init_rows = torch.cat([c[:, None] if c.dim() == 1 else c for c in cols], dim=1)
    _, inv = torch.unique(init_rows, dim=0, return_inverse=True)  # sorted rows: (graph, block, x...)
    first = torch.full((B,), num_nodes, dtype=torch.long, device=device).scatter_reduce_(0, batch, inv, reduce="amin")
    init = inv - first[batch]

    # ---- per-graph edges in local indices, grouped by graph
    e_graph = batch[edge_index[0]]
    eo = torch.argsort(e_graph, stable=True)
    e_src, e_dst = local[edge_index[0, eo]], local[edge_index[1, eo]]
    e_count = torch.bincount(e_graph, minlength=B)
    e_ptr = torch.zeros(B + 1, dtype=torch.long, device=device)
    e_ptr[1:] = e_count.cumsum(0)
    n_max = int(counts.max())
    W = max(1, -(-(n_max * n_max) // _BITS))
    twin = _twin_classes(edge_index, batch, local, counts)[node_sorted]  # by graph-local position

    # ---- states (search-tree nodes of the current level), entries in local node order
    gs = torch.arange(B, device=device)  # graph of each state
    col = init[node_sorted]  # entries of state b: its graph's nodes in local order
    ok = torch.ones(B, dtype=torch.bool, device=device)
    visited = torch.zeros(B, dtype=torch.long, device=device)
    n_leaves = torch.zeros(B, dtype=torch.long, device=device)
    best_cert = torch.zeros(B, W, dtype=torch.long, device=device)
    best_keys = torch.zeros(num_nodes, dtype=torch.long, device=device)
    have_best = torch.zeros(B, dtype=torch.bool, device=device)

    def layout(gs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        n = counts[gs]
        sptr = torch.zeros(gs.numel() + 1, dtype=torch.long, device=device)
        sptr[1:] = n.cumsum(0)
        T = int(sptr[-1])
        state = torch.repeat_interleave(torch.arange(gs.numel(), device=device), n, output_size=T)
        ne = e_count[gs]
        Et = int(ne.sum())
        es = torch.repeat_interleave(torch.arange(gs.numel(), device=device), ne, output_size=Et)
        within = torch.arange(Et, device=device) - torch.repeat_interleave(ne.cumsum(0) - ne, ne, output_size=Et)
        eidx = e_ptr[gs[es]] + within
        return state, sptr, sptr[es] + e_src[eidx], sptr[es] + e_dst[eidx], n

    state, sptr, src, dst, n = layout(gs)
    col = _refine(col, state, src, dst, gs.numel())
    visited += 1
    while gs.numel():
        S = gs.numel()
        K = torch.zeros(S, dtype=torch.long, device=device).scatter_reduce_(0, state, col + 1, reduce="amax")
        leaf = K == n
        # ---- leaves: certificates, keep the lexicographic maximum per graph
        if bool(leaf.any()):
            lf = torch.nonzero(leaf).flatten()
            lg = gs[lf]
            n_leaves += torch.bincount(lg, minlength=B)
            ne = e_count[lg]
            Et = int(ne.sum())
            es = torch.repeat_interleave(torch.arange(lf.numel(), device=device), ne, output_size=Et)
            within = torch.arange(Et, device=device) - torch.repeat_interleave(ne.cumsum(0) - ne, ne, output_size=Et)
            eidx = e_ptr[lg[es]] + within
            base = sptr[lf[es]]
            bit = col[base + e_src[eidx]] * counts[lg[es]] + col[base + e_dst[eidx]]
            cert = torch.zeros(lf.numel() * W, dtype=torch.long, device=device)
            cert.index_add_(0, es * W + bit // _BITS, torch.ones_like(bit) << (_BITS - 1 - bit % _BITS))
            cert = cert.reshape(-1, W)
            cand = torch.cat([best_cert[have_best], cert])
            cand_g = torch.cat([torch.nonzero(have_best).flatten(), lg])
            alive = torch.ones(cand_g.numel(), dtype=torch.bool, device=device)
            for w in range(W):
                v = torch.where(alive, cand[:, w], torch.full_like(cand[:, w], -1))
                m = torch.full((B,), -1, dtype=torch.long, device=device).scatter_reduce_(0, cand_g, v, reduce="amax")
                alive &= cand[:, w] == m[cand_g]
            rows = torch.arange(cand_g.numel(), device=device)
            win = torch.full((B,), cand_g.numel(), dtype=torch.long, device=device)
            win.scatter_reduce_(0, cand_g[alive], rows[alive], reduce="amin")
            n_old = int(have_best.sum())
            new_win = torch.nonzero((win < cand_g.numel()) & (win >= n_old)).flatten()  # graphs won by a new leaf
            if new_win.numel():
                li = win[new_win] - n_old  # index into lf
                best_cert[new_win] = cert[li]
                # keys of the winning leaves: position (= colour) of every node
                s_idx = lf[li]
                nn_ = counts[new_win]
                Tn = int(nn_.sum())
                ks = torch.repeat_interleave(torch.arange(new_win.numel(), device=device), nn_, output_size=Tn)
                off = torch.arange(Tn, device=device) - torch.repeat_interleave(nn_.cumsum(0) - nn_, nn_, output_size=Tn)
                nodes = node_sorted[ptr[new_win[ks]] + off]
                best_keys[nodes] = col[sptr[s_idx[ks]] + off]
                have_best[new_win] = True
        inner = torch.nonzero(~leaf).flatten()
        if inner.numel() == 0:
            break
        # ---- branch on the first smallest non-singleton cell of every inner state
        NM = n_max + 1
        cell = state * NM + col
        size = torch.bincount(cell, minlength=S * NM)
        score = torch.where(size[cell] > 1, size[cell] * NM + col, torch.full_like(col, NM * NM + NM))
        tgt = torch.full((S,), NM * NM + NM, dtype=torch.long, device=device).scatter_reduce_(0, state, score, reduce="amin")
        pick = (score == tgt[state]) & ~leaf[state]
        child_entry = torch.nonzero(pick).flatten()  # one child per entry of a target cell ...
        # ... except twins: swapping two twins of one cell is an automorphism fixing the partition, so
        # their subtrees hold the same certificates; keep the first entry of every twin class
        tw = twin[ptr[gs[state[child_entry]]] + (child_entry - sptr[state[child_entry]])]
        _, first_of = torch.unique(state[child_entry] * (2 * num_nodes + 1) + tw, return_inverse=True)
        keep_first = torch.full((int(first_of.max()) + 1 if first_of.numel() else 0,), child_entry.numel(),
                                dtype=torch.long, device=device)
        keep_first.scatter_reduce_(0, first_of, torch.arange(child_entry.numel(), device=device), reduce="amin")
        child_entry = child_entry[keep_first.sort().values]
        parent = state[child_entry]
        cg = gs[parent]
        nchild = torch.bincount(cg, minlength=B)
        visited += nchild
        over = visited > max_states
        if bool(over.any()):
            ok &= ~over
            keep = ~over[cg]
            child_entry, parent, cg = child_entry[keep], parent[keep], cg[keep]
        if child_entry.numel() == 0:
            break
        # ---- children: copy the parent's colours, individualise the chosen vertex, refine
        cn = counts[cg]
        cptr = torch.zeros(cg.numel() + 1, dtype=torch.long, device=device)
        cptr[1:] = cn.cumsum(0)
        Tc = int(cptr[-1])
        cs = torch.repeat_interleave(torch.arange(cg.numel(), device=device), cn, output_size=Tc)
        off = torch.arange(Tc, device=device) - cptr[cs]
        new_col = 2 * col[sptr[parent[cs]] + off] + 1
        new_col[cptr[:-1] + (child_entry - sptr[parent])] -= 1
        gs = cg
        state, sptr, src, dst, n = layout(gs)
        col = _refine(new_col, state, src, dst, gs.numel())

    ok &= have_best
    fail_nodes = ~ok[batch]
    best_keys[fail_nodes] = 0
    best_cert[~ok] = 0
    return CanonicalLabels(keys=best_keys, ok=ok, states=visited, leaves=n_leaves, certificate=best_cert)


def wl_classes(edge_index: Tensor, batch: Tensor, x: Tensor | None = None) -> Tensor:
    """1-WL (colour refinement) equivalence classes of the graphs of a batch.

    Refines the disjoint union of all graphs (so colours are shared between graphs) to its stable
    partition, starting from the node features ``x`` (exact values; default: one colour). Two graphs get
    the same id iff their stable colour histograms agree, i.e. 1-WL does not distinguish them (the bound
    of GIN-like models). Uses the hashed refinement of :func:`canonical_keys` (a 64-bit hash collision
    could only merge classes).

    Shapes:
        edge_index ``[2, E]``, batch ``[N]``, x ``[N, F]`` -> ``[B]`` int64 class ids
    """
    if not isinstance(batch, Tensor) or batch.dim() != 1 or batch.numel() == 0:
        raise ValueError(f"batch: expected a non-empty [N] tensor, got {tuple(getattr(batch, 'shape', ()))}")
    N = batch.numel()
    device = batch.device
    batch = batch.long()
    if x is None:
        init = torch.zeros(N, dtype=torch.long, device=device)
    else:
        xx = (x[:, None] if x.dim() == 1 else x).to(torch.float64)
        init = torch.unique(xx, dim=0, return_inverse=True)[1]
    state = torch.zeros(N, dtype=torch.long, device=device)
    col = _refine(init, state, edge_index[0].long(), edge_index[1].long(), 1)
    B = int(batch.max()) + 1
    counts = torch.bincount(batch, minlength=B)
    # equal histograms <=> equal sorted colour lists (padded with -1)
    o = torch.argsort(col, stable=True)
    o = o[torch.argsort(batch[o], stable=True)]
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(N, device=device) - start[batch[o]]
    lists = torch.full((B, int(counts.max())), -1, dtype=torch.long, device=device)
    lists[batch[o], rank] = col[o]
    return torch.unique(torch.cat([counts[:, None], lists], 1), dim=0, return_inverse=True)[1]
