"""TFConv: wrap an unmodified PyG message passing layer so that it runs on tensor-frame features."""

from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
from torch import Tensor, nn

from ...reps import TensorReps
from .capabilities import _PROVIDED, LayerCaps, Prober, UnsupportedLayerError, inspect_layer, reference_output
from .checks import _check_device, _check_module_device, _check_tensor, _pair
from .geometry import EdgeGeometry, geometry_dim
from .graph import PairTensor, TFGraph, _as_graph, _features_on_graph
from .hooks import _MessageSpec, _NotHookable, known_message_layers, message_spec
from .local import _resolve_reps
from .strategies import AUTO_ORDER, STRATEGIES, Call, Strategy

__all__ = ["Mode", "TFConv"]

Mode = Literal["auto", "plain", "global", "hook", "expand", "nodes", "gcn", "message"]
_MODES = ("auto", "plain", "global", "hook", "expand", "nodes", "gcn", "message")


class TFConv(nn.Module):
    r"""Make an unmodified PyTorch Geometric message passing layer tensor-frame equivariant.

    The wrapped layer sees only invariant inputs: node features in the local frames (``[N, reps_in.size]``),
    neighbour features moved into the receiver's frame per edge, :math:`\rho(R_i R_j^\top) f_j`, and
    edge geometry in the receiver's frame. Its output is read as features of type ``reps_out`` in the
    local frame of the receiver, so the composition with :class:`ToLocal` / :class:`ToGlobal` is
    O(d)-equivariant (E(d) with positions), whatever the layer computes:

    .. math::

        f_i' = \mathrm{layer}\big(f_i,\ \{\rho(R_i R_j^\top) f_j,\ R_i (x_j - x_i),\
               \rho_e(R_i) e_{ij}\}_{j \in N(i)}\big).

    .. code-block:: python

        conv = TFConv(GATv2Conv(reps.size, reps.size, edge_dim=d + 1), reps_in=reps)
        out = conv(x_local, edge_index, frames=frames, pos=pos)   # [N, reps.size], local frames
        g = TFGraph(edge_index, frames, pos)                     # or: share graph data between layers
        out = conv(x_local, g)

    **How the neighbour features are moved** (``mode``; :mod:`equiframe.nn.tensor_frames.strategies`).
    ``"plain"``, ``"global"``, ``"hook"``, ``"expand"``, ``"nodes"`` and ``"gcn"`` compute the *same*
    function and differ only in cost and in the layers they accept:

    * ``"plain"``: no transport (all-``0n`` ``reps_in`` or ``transport=False``, no positions read);
    * ``"global"``: messages linear in ``x_j`` with a sum/mean aggregation are aggregated in the global
      frame, :math:`\sum_j w_{ij}\rho(R_i R_j^\top) f_j = \rho(R_i)\sum_j w_{ij}\rho(R_j^\top) f_j`
      (:math:`O(N)` frame work; a bias-free ``lin`` applied before ``propagate`` is moved behind it);
    * ``"hook"``: per-call PyG hooks replace ``x_j`` by :math:`\rho(R_i R_j^\top) f_j` and ``pos_j``/``pos_i``
      by :math:`R_i (x_j - x_i)` / ``0`` (layers that hand the raw input to ``propagate``);
    * ``"expand"``: a bipartite graph whose sources are per-edge transported copies of the senders (layers
      that accept ``(x_src, x_dst)``; every per-node transform then acts on transported features);
    * ``"nodes"``: the same copies as extra nodes of one homogeneous graph (layers without bipartite
      input whose output does not depend on the senders' degrees);
    * ``"gcn"``: ``"nodes"`` with copy self-loops weighted by the sender's degree, which reproduces a
      symmetric (GCN) degree normalisation exactly;
    * ``"message"`` (opt-in): a different, cheaper layer in the style of LLoCa: the layer's own per-node
      projections (``message_args``; built in for GATConv, GATv2Conv, TransformerConv,
      PointTransformerConv and subclasses that keep their message functions) are computed in each node's
      own frame and the projected sender tensors are transported, :math:`\rho(R_i R_j^\top) W f_j`.
    * ``"auto"`` (default): the cheapest of ``plain, global, hook, expand, nodes, gcn`` that applies.

    **Which strategies apply** is decided at construction from what the layer can do -- its ``forward``
    signature (``x``/``edge_index``/``pos``/``edge_attr``/``edge_weight``, whether ``x`` may be a pair) and a
    probe: each candidate runs on a small random graph (on a float64 copy of the layer) and must reproduce
    the **per-receiver reference** (the layer run once per receiver with every node moved into that
    receiver's frame; :mod:`~equiframe.nn.tensor_frames.capabilities`). A subclass or a renamed copy of a
    PyG layer is therefore treated exactly like the original. A layer for which no strategy reproduces the
    reference (multi-hop layers such as ChebConv, APPNP, TAGConv; feature-graph layers that build their own
    edges; layers that need inputs TFConv cannot type) is refused with a ``TypeError`` that says why and
    which mode would work (usually: all-scalar ``reps_in`` with ``mode="plain"``). A forced ``mode`` is
    checked the same way (``ValueError`` naming the modes that work). :attr:`strategy` and
    :meth:`resolved_mode` tell the choice.

    The hooks live only for the duration of one call (removed in a ``finally``), so nothing is left on the
    layer, but two threads must not run the *same* wrapped layer instance concurrently.

    **Edge geometry** (``edge_geometry``): for layers whose ``forward`` takes ``edge_attr`` and whose
    ``edge_dim`` attribute is not ``None`` (or who have none), ``"auto"`` passes
    ``edge_attr = [rho_e(R_i) e_ij, R_i (x_j - x_i), safe_length(x_j - x_i)]`` (user edge features of type
    ``reps_edge`` first, then ``d + 1`` geometry channels): create the layer with
    ``edge_dim = reps_edge.size + d + 1`` (see :func:`geometry_dim`; checked at construction). Layers
    reading ``pos`` receive positions in the receiver's frame instead: the receiver at ``0``, the sender at
    :math:`R_i (x_j - x_i)`. The layer never sees global coordinates.

    Args:
        layer: an instance of a PyG ``MessagePassing`` layer (not modified; its input channels must be
            ``reps_in.size`` and its output channels ``reps_out.size``).
        reps_in: type of the input features (in local frames).
        reps_out: type of the output features; ``None`` = ``reps_in``.
        dim: space dimension for string reps (default 3 or the reps' dim).
        reps_edge: type of optional user edge features ``edge_attr`` (global, moved by
            :math:`\rho_e(R_i)`); default: scalars of whatever size is passed.
        edge_geometry: which geometry channels to append to ``edge_attr`` (``"auto"``: ``"rel_dist"`` for
            layers that take edge features as described above, else ``"none"``).
        mode: see above.
        message_args: for ``mode="message"``: the names of the ``propagate`` arguments whose sender parts
            are per-node projections to transport (default: built in for the known layers).
        transport: ``False`` disables the feature transport (ablation / negative control: the result is
            then *not* equivariant for non-scalar reps and non-equivariant frames). Geometry stays local.
        length_eps: smoothing of the edge length, see :func:`safe_length`.

    Attributes:
        reps_in, reps_out: the input and output types (:class:`~equiframe.TensorReps`).
        strategy: the :class:`~equiframe.nn.tensor_frames.strategies.Strategy` in use.
        caps: the layer's :class:`~equiframe.nn.tensor_frames.capabilities.LayerCaps`.

    Shapes:
        x: ``[N, reps_in.size]`` or bipartite ``([N_src, S], [N_dst, S])``;
        edge_index: ``[2, E]`` (or a :class:`TFGraph`, then no ``frames``/``pos``);
        frames: ``[N, d, d]`` or ``([N_src, d, d], [N_dst, d, d])``; pos: ``[N, d]`` or a pair;
        edge_attr: ``[E, reps_edge.size]`` -> ``[N_dst, reps_out.size]`` in the receivers' local frames.
    """

    def __init__(
        self,
        layer: nn.Module,
        reps_in: "str | TensorReps",
        reps_out: "str | TensorReps | None" = None,
        *,
        dim: int | None = None,
        reps_edge: "str | TensorReps | None" = None,
        edge_geometry: EdgeGeometry = "auto",
        mode: Mode = "auto",
        message_args: "Sequence[str] | None" = None,
        transport: bool = True,
        length_eps: float = 1e-6,
    ):
        super().__init__()
        self.caps: LayerCaps = inspect_layer(layer)
        self.layer = layer
        self.reps_in = _resolve_reps(reps_in, dim, "reps_in")
        d = self.reps_in.dim
        self.reps_out = self.reps_in if reps_out is None else _resolve_reps(reps_out, d, "reps_out")
        self.reps_edge = None if reps_edge is None else _resolve_reps(reps_edge, d, "reps_edge")
        if mode not in _MODES:
            raise ValueError(f"mode: expected one of {', '.join(repr(m) for m in _MODES)}, got {mode!r}")
        if edge_geometry not in ("auto", "rel_dist", "rel", "dist", "none"):
            raise ValueError(
                f"edge_geometry: expected 'auto', 'rel_dist', 'rel', 'dist' or 'none', got {edge_geometry!r}"
            )
        if not (isinstance(length_eps, (int, float)) and length_eps > 0):
            raise ValueError(f"length_eps: expected a positive float, got {length_eps!r}")
        self.mode = mode
        self.transport = bool(transport)
        self.length_eps = float(length_eps)
        if edge_geometry == "auto":
            wants = self.caps.takes_edge_attr and (not self.caps.has_edge_dim or self.caps.edge_dim is not None)
            edge_geometry = "rel_dist" if wants else "none"
        if edge_geometry != "none" and not self.caps.takes_edge_attr:
            raise ValueError(f"edge_geometry: {type(layer).__name__}.forward takes no `edge_attr`")
        self.edge_geometry: EdgeGeometry = edge_geometry
        self._check_sizes()
        self._message_spec = self._resolve_message_spec(mode, message_args)
        self.strategy, self._fallback = self._select(mode)

    # -- construction ------------------------------------------------------------------------------------
    def _check_sizes(self) -> None:
        """``reps_in.size`` against the layer's declared input width, edge widths against ``edge_dim``."""
        name, caps = type(self.layer).__name__, self.caps
        if caps.in_channels and any(c != self.reps_in.size for c in caps.in_channels):
            raise ValueError(
                f"reps_in: {str(self.reps_in)!r} has size {self.reps_in.size}, but {name} was built with "
                f"in_channels={caps.in_channels[0] if len(caps.in_channels) == 1 else caps.in_channels}"
            )
        geom = geometry_dim(self.reps_in.dim, self.edge_geometry) if self.edge_geometry != "none" else 0
        if caps.edge_dim is None or self.edge_geometry == "none":
            return
        if self.reps_edge is not None and caps.edge_dim != self.reps_edge.size + geom:
            raise ValueError(
                f"reps_edge: {name} was built with edge_dim={caps.edge_dim}, but TFConv passes "
                f"reps_edge.size + {geom} geometry channels = {self.reps_edge.size + geom}"
            )
        if caps.edge_dim < geom:
            raise ValueError(
                f"layer: {name} was built with edge_dim={caps.edge_dim}, but edge_geometry="
                f"{self.edge_geometry!r} passes {geom} geometry channels in d={self.reps_in.dim}; build it with "
                f"edge_dim={geom} (+ the width of your own edge features)"
            )

    def _user_edge_width(self) -> int:
        """Width of the user edge features the layer expects (for the probe)."""
        if self.reps_edge is not None:
            return self.reps_edge.size
        if self.caps.edge_dim is not None and self.edge_geometry != "none":
            return self.caps.edge_dim - geometry_dim(self.reps_in.dim, self.edge_geometry)
        return 0

    def _resolve_message_spec(self, mode: str, message_args: "Sequence[str] | None") -> _MessageSpec | None:
        if message_args is not None:
            if mode != "message":
                raise ValueError("message_args: only used with mode='message'")
            if isinstance(message_args, str) or not all(isinstance(a, str) and a for a in message_args):
                raise TypeError(f"message_args: expected a sequence of argument names, got {message_args!r}")
            if not message_args:
                raise ValueError("message_args: must name at least one propagate argument")
            return _MessageSpec(tuple(message_args))  # generic: per-edge transport
        if mode != "message":
            return None
        spec = message_spec(self.layer)
        if spec is None:
            raise ValueError(
                f"mode: 'message' needs a layer with known per-node projections ({known_message_layers()} or "
                f"subclasses keeping their message functions) or message_args=(...) naming them; got "
                f"{type(self.layer).__name__}"
            )
        return spec

    def _select(self, mode: str) -> tuple[Strategy, Strategy | None]:
        """The strategy for ``mode`` (checked on the probe) and a hook-free fallback for ``torch.compile``."""
        name = type(self.layer).__name__
        modes = AUTO_ORDER if mode == "auto" else (mode,)
        candidates = [(m, s) for m in modes for s in STRATEGIES[m]]
        plain = STRATEGIES["plain"][0]
        if candidates[0][1] is plain and plain.unavailable(self, self.layer) is None:
            return plain, None  # nothing to move: exact by construction, no probe needed
        if mode == "plain":
            raise ValueError(f"mode: 'plain' is invalid: {plain.unavailable(self, self.layer)}")
        prober = Prober(self, self.layer, self._user_edge_width())
        ok, reasons = prober.run(candidates[1:] if mode == "auto" else candidates)
        if not ok:
            detail = "; ".join(f"{m}: {r}" for m, r in reasons.items())
            if mode != "auto":
                alt, _ = prober.run([(m, s) for m in AUTO_ORDER[1:] for s in STRATEGIES[m]], first=False)
                works = [m for m, _ in alt]
                raise ValueError(
                    f"mode: {mode!r} is invalid for {name} ({detail}); "
                    + (f"modes that work: {works}" if works else "no mode works with these reps")
                )
            others = [p for p in self.caps.forward_params if p not in _PROVIDED]
            if others:
                reasons["note"] = (f"its forward also takes {', '.join(map(repr, others))}, which the "
                                   "construction probe cannot provide")
                detail = "; ".join(f"{m}: {r}" for m, r in reasons.items())
            raise UnsupportedLayerError(
                f"layer: {name} is not supported with reps_in={str(self.reps_in)!r} ({detail}); "
                + self._what_would_work(), reasons)
        strategy = ok[0][1]
        fallback = None
        if strategy.hooked:
            alt, _ = prober.run([(m, s) for m in ("expand", "nodes", "gcn") for s in STRATEGIES[m]])
            fallback = alt[0][1] if alt else None
        return strategy, fallback

    def _what_would_work(self) -> str:
        if self.caps.reads_pos:
            return "no mode works for it with non-scalar features"
        return ("it works with all-scalar reps_in ('0n' blocks only, mode='plain') or transport=False, "
                "where nothing has to be moved between frames")

    def resolved_mode(self) -> str:
        """The mode in use (what ``"auto"`` picked)."""
        return self.strategy.name

    @property
    def edge_dim(self) -> int:
        """Edge channels passed to the layer, excluding user edge features: ``geometry_dim(d, ...)``."""
        return geometry_dim(self.reps_in.dim, self.edge_geometry)

    def extra_repr(self) -> str:
        return (
            f"reps_in={str(self.reps_in)!r}, reps_out={str(self.reps_out)!r}, dim={self.reps_in.dim}, "
            f"mode={self.mode!r} -> {self.resolved_mode()!r}, edge_geometry={self.edge_geometry!r}"
            + ("" if self.transport else ", transport=False")
        )

    # -- forward -----------------------------------------------------------------------------------------
    def _edge_features(self, graph: TFGraph, edge_attr: Tensor | None, f_dst: Tensor,
                       dtype: torch.dtype) -> Tensor | None:
        """``[rho_e(R_i) e_ij, local geometry]`` for the layer's ``edge_attr`` (``None`` if neither)."""
        src = graph.src
        extra = None
        if edge_attr is not None:
            name = type(self.layer).__name__
            if not self.caps.takes_edge_attr:
                raise ValueError(f"edge_attr: {name}.forward takes no `edge_attr`")
            edge_attr = _check_tensor(edge_attr, "edge_attr")
            if edge_attr.dim() == 1:
                edge_attr = edge_attr.unsqueeze(-1)
            if edge_attr.dim() != 2 or edge_attr.shape[0] != src.shape[0]:
                raise ValueError(f"edge_attr: expected shape [{src.shape[0]}, C], got {tuple(edge_attr.shape)}")
            edge_attr = edge_attr.to(dtype)
            if self.reps_edge is not None:
                if edge_attr.shape[1] != self.reps_edge.size:
                    raise ValueError(
                        f"edge_attr: last dimension {edge_attr.shape[1]} does not match reps_edge "
                        f"{str(self.reps_edge)!r} of size {self.reps_edge.size}"
                    )
                if not self.reps_edge.is_scalar:
                    if self.reps_edge.has_pos:
                        raise ValueError("reps_edge: 'pos' blocks are not meaningful for edge features")
                    edge_attr = self.reps_edge.to_local(edge_attr, f_dst.index_select(0, graph.dst))
            extra = edge_attr
        if self.edge_geometry != "none":
            geom = graph.geometry(self.edge_geometry, self.length_eps, dtype)
            extra = geom if extra is None else torch.cat([extra, geom], dim=-1)
        if extra is not None and self.caps.edge_dim is not None and extra.shape[1] != self.caps.edge_dim:
            user = extra.shape[1] - (geom.shape[1] if self.edge_geometry != "none" else 0)
            raise ValueError(
                f"edge_attr: {type(self.layer).__name__} expects edge_dim={self.caps.edge_dim} channels, but "
                f"{user} edge feature channels + {extra.shape[1] - user} geometry channels were given"
            )
        return extra

    def forward(
        self,
        x: "Tensor | PairTensor",
        edge_index: "Tensor | TFGraph",
        frames: "Tensor | PairTensor | None" = None,
        pos: "Tensor | PairTensor | None" = None,
        edge_attr: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        graph = _as_graph(edge_index, frames, pos, self.reps_in.dim)
        reps = self.reps_in
        x_src, x_dst, (f_src, f_dst), (p_src, p_dst) = _features_on_graph(graph, reps, *_pair(x, "x"))
        _check_device("x", x_src, ("edge_attr", edge_attr))
        _check_module_device(self, x_src)
        needs_pos = self.edge_geometry != "none" or self.caps.reads_pos or reps.has_pos
        if p_src is None and needs_pos:
            why = "reps_in has 'pos' blocks" if reps.has_pos else (
                f"{type(self.layer).__name__} reads positions" if self.caps.reads_pos else "edge geometry is on"
            )
            raise ValueError(f"pos: node positions are required ({why})")
        if "size" in kwargs:
            raise ValueError("size: not supported; the node counts are taken from x (pass a pair for bipartite)")
        extra = self._edge_features(graph, edge_attr, f_dst, x_src.dtype)
        if extra is not None:
            kwargs["edge_attr"] = extra
        call = Call(x_src, x_dst, graph.homogeneous, f_src, f_dst, p_src, p_dst, graph, kwargs)
        strategy = self.strategy
        if strategy.hooked and torch.compiler.is_compiling():
            if self._fallback is None or self.mode != "auto":
                raise RuntimeError(
                    f"mode: {strategy.name!r} does not work under torch.compile (PyG skips hooks); use "
                    + ("'expand'/'nodes'/'gcn'" if self._fallback is None else repr(self._fallback.name))
                )
            strategy = self._fallback
        try:
            return self._check_out(strategy.run(self, self.layer, call))
        except _NotHookable as err:
            raise ValueError(
                f"mode: {strategy.name!r} is invalid for {type(self.layer).__name__} on this input: {err}"
            ) from None

    def reference(
        self,
        x: Tensor,
        edge_index: Tensor,
        frames: Tensor,
        pos: Tensor | None = None,
        edge_attr: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        r"""The per-receiver reference of this layer (slow: one call of the layer per node; for tests).

        Row :math:`i` is the layer's output at :math:`i` when every node's features are moved into
        :math:`i`'s frame, :math:`x^{(i)}_k = \rho(R_i R_k^\top) f_k` (positions :math:`R_i (x_k - x_i)`):
        the tensor-frame layer by definition. Every mode but ``"message"`` computes it.

        Shapes:
            x: ``[N, reps_in.size]``, edge_index: ``[2, E]``, frames: ``[N, d, d]``, pos: ``[N, d]``
            -> ``[N, reps_out.size]``
        """
        graph = _as_graph(edge_index, frames, pos, self.reps_in.dim)
        x_src, _, (f_src, _), (p_src, _) = _features_on_graph(graph, self.reps_in, x, x, True)
        extra = self._edge_features(graph, edge_attr, f_src, x_src.dtype)
        if extra is not None:
            kwargs["edge_attr"] = extra
        call = Call(x_src, x_src, True, f_src, f_src, p_src, p_src, graph, kwargs)
        return self._check_out(reference_output(self, self.layer, call))

    def _check_out(self, out: Any) -> Any:
        y = out[0] if isinstance(out, tuple) else out
        if isinstance(y, Tensor) and (y.dim() != 2 or y.shape[-1] != self.reps_out.size):
            raise ValueError(
                f"reps_out: the layer returned shape {tuple(y.shape)}, which does not match reps_out "
                f"{str(self.reps_out)!r} of size {self.reps_out.size}"
            )
        return out
