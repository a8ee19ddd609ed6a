r"""Transport strategies of :class:`~equiframe.nn.tensor_frames.TFConv`: how neighbour features reach the
receiver's frame inside an unmodified PyG layer.

Every strategy but ``"message"`` computes the same function, the layer applied to transported neighbour
features :math:`\phi(f_i, \rho(R_i R_j^\top) f_j, R_i (x_j - x_i), \dots)`; they differ in cost and in the
layers they accept. Which one applies to a layer is decided by :mod:`.capabilities` (its signature and a
probe run against the per-receiver reference), never by the layer's class name.

* :class:`Plain`: nothing to move (all-scalar inputs or ``transport=False``, no positions read).
* :class:`GlobalFrame`: the message is linear in ``x_j`` with a linear aggregation: aggregate
  :math:`\rho(R_j^\top) f_j` in the global frame and rotate the sum back by :math:`\rho(R_i)` (:math:`O(N)`).
* :class:`Hook`: replace ``x_j`` / ``pos_j`` in the layer's ``message`` (per-call PyG hooks).
* :class:`Expand`: a bipartite graph whose sources are per-edge transported copies of the senders.
* :class:`Nodes`: the same copies as extra nodes of one homogeneous graph (layers without bipartite input).
* :class:`Gcn`: :class:`Nodes` plus copy self-loops weighted by the sender's GCN degree, so that a
  symmetric degree normalisation sees the original degrees.
* :class:`Message`: a different, cheaper layer (LLoCa style): the layer's own per-node projections are
  transported (opt-in only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from ..tf_transport import transport_edges
from .checks import _check_tensor
from .geometry import local_edge_geometry
from .hooks import LINEAR_AGGR, _HookSession, _MessageSession, _NotHookable, is_linear

if TYPE_CHECKING:
    from .graph import TFGraph

__all__ = ["Call", "Expand", "Gcn", "GlobalFrame", "Hook", "Message", "Nodes", "Plain", "Strategy", "STRATEGIES"]


@dataclass
class Call:
    """One forward call's inputs, already checked and cast (frames/positions in the features' dtype).

    ``kwargs`` holds the extra keyword arguments for the layer (``edge_attr`` with local geometry, ...).
    """

    x_src: Tensor
    x_dst: Tensor
    homogeneous: bool
    f_src: Tensor
    f_dst: Tensor
    p_src: Tensor | None
    p_dst: Tensor | None
    graph: "TFGraph"
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def x_arg(self) -> "Tensor | tuple[Tensor, Tensor]":
        return self.x_src if self.homogeneous else (self.x_src, self.x_dst)


class Strategy:
    """A way to run a wrapped layer on transported features.

    Attributes:
        name: the ``mode`` string that forces this strategy.
        same_function: computes the paper's function (checked against the per-receiver reference).
        hooked: relies on PyG hooks (skipped under ``torch.compile``).
    """

    name: ClassVar[str]
    same_function: ClassVar[bool] = True
    hooked: ClassVar[bool] = False

    def unavailable(self, conv: Any, layer: nn.Module) -> str | None:
        """Why this strategy cannot apply, from the layer's signature and options alone (``None``: it may)."""
        return None

    def run(self, conv: Any, layer: nn.Module, call: Call) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Plain(Strategy):
    """No transport: the layer runs on the original graph (only the edge geometry is local)."""

    name = "plain"

    def unavailable(self, conv, layer):
        if conv.caps.reads_pos:
            return f"{type(layer).__name__} reads positions (they must be moved into the receiver's frame)"
        if conv.transport and not conv.reps_in.is_scalar:
            return "reps_in has non-scalar blocks that must be transported"
        return None

    def run(self, conv, layer, call):
        return layer(x=call.x_arg, edge_index=call.graph.edge_index, **call.kwargs)


def _run_hooked(conv, layer, call: Call, kind: str, *, spec=None, skip_lin: bool = False) -> Any:
    """Run ``layer`` once with per-call PyG hooks that move ``x_j``/``pos_j`` (removed in a ``finally``)."""
    kwargs = dict(call.kwargs)
    pos_token_src = None
    if conv.caps.reads_pos:
        # the layer never sees global positions: every node sits at the origin of its own frame; the
        # sender's position is replaced per edge by R_i (x_j - x_i) in the message hook
        pos_token_src = torch.zeros_like(call.p_src)
        pos_token_dst = pos_token_src if call.homogeneous else torch.zeros_like(call.p_dst)
        kwargs["pos"] = pos_token_src if call.homogeneous else (pos_token_src, pos_token_dst)
    session_cls = _MessageSession if kind == "message" else _HookSession
    session = session_cls(conv, call.x_src, call.f_src, call.f_dst, call.p_src, call.p_dst, pos_token_src,
                           call.graph, kind=kind, spec=spec, skip_lin=skip_lin)
    handles = [
        layer.register_propagate_forward_pre_hook(session.pre_propagate),
        layer.register_message_forward_pre_hook(session.pre_message),
        layer.register_edge_update_forward_pre_hook(session.pre_edge_update),
    ]
    if kind in ("global", "message"):
        handles.append(layer.register_aggregate_forward_hook(session.post_aggregate))
    if skip_lin:
        handles.append(layer.lin.register_forward_hook(session.lin_hook))
    if kind == "message" and session.spec.edge_lin is not None:
        edge_lin = getattr(layer, session.spec.edge_lin, None)
        if isinstance(edge_lin, nn.Module):
            handles.append(edge_lin.register_forward_pre_hook(session.edge_lin_pre_hook))
            handles.append(edge_lin.register_forward_hook(session.edge_lin_hook))
    try:
        out = layer(x=call.x_arg, edge_index=call.graph.edge_index, **kwargs)
    finally:
        for h in handles:
            h.remove()
    if kind == "global" and (session.n_global or (skip_lin and session._g is None)):
        raise _NotHookable("the aggregation was not intercepted as expected")
    if session.n_global:
        raise _NotHookable(f"{type(layer).__name__} did not aggregate as expected")
    if session.pending:
        raise _NotHookable(f"{type(layer).__name__} ran propagate without calling `message` (fused path)")
    return out


class GlobalFrame(Strategy):
    r"""Linear messages, linear aggregation: :math:`\sum_j w_{ij}\rho(R_i R_j^\top) f_j =
    \rho(R_i)\sum_j w_{ij}\rho(R_j^\top) f_j`. With ``skip_lin`` a bias-free linear ``layer.lin`` applied
    to the input before ``propagate`` is moved behind the aggregation (exact by linearity)."""

    name = "global"
    hooked = True

    def __init__(self, skip_lin: bool = False):
        self.skip_lin = skip_lin

    def unavailable(self, conv, layer):
        aggr = getattr(layer, "aggr", None)
        if not (isinstance(aggr, str) and aggr in LINEAR_AGGR):
            return f"aggregation {aggr!r} is not linear (sum/mean)"
        if conv.reps_in.has_pos:
            return "reps_in has 'pos' blocks (affine, not linear)"
        if conv.caps.reads_pos:
            return f"{type(layer).__name__} reads positions"
        if self.skip_lin:
            lin = getattr(layer, "lin", None)
            if not (isinstance(lin, nn.Module) and is_linear(lin) and getattr(lin, "bias", None) is None):
                return "the layer has no bias-free linear `lin`"
        return None

    def run(self, conv, layer, call):
        return _run_hooked(conv, layer, call, "global", skip_lin=self.skip_lin)

    def __repr__(self) -> str:
        return f"GlobalFrame(skip_lin={self.skip_lin})"


class Hook(Strategy):
    r"""Per-edge hooks: ``x_j`` becomes :math:`\rho(R_i R_j^\top) f_j`, ``pos_j`` becomes :math:`R_i(x_j - x_i)`
    and ``pos_i`` zero; valid when the layer hands the raw input to ``propagate`` (verified per call)."""

    name = "hook"
    hooked = True

    def run(self, conv, layer, call):
        return _run_hooked(conv, layer, call, "hook")


class Message(Strategy):
    """LLoCa-style message mode: transport the layer's per-node projections (a different function)."""

    name = "message"
    hooked = True
    same_function = False

    def run(self, conv, layer, call):
        nothing_to_move = not conv.caps.reads_pos and (
            (conv.reps_out.is_scalar or not conv.transport) and (conv.reps_in.is_scalar or not conv.transport)
        )
        if nothing_to_move:  # scalar projections of scalar inputs are invariant as they are
            return layer(x=call.x_arg, edge_index=call.graph.edge_index, **call.kwargs)
        return _run_hooked(conv, layer, call, "message", spec=conv._message_spec)


def _copies(conv, call: Call, m: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """Transported sender copies ``[M + E, S]`` (the ``M`` nodes themselves first), the remapped sources
    ``[E]`` (a self-loop ``k -> k`` of the input keeps its own node) and the copies' local positions."""
    reps, graph = conv.reps_in, call.graph
    x_src, src, dst = call.x_src, graph.src, graph.dst
    n_e = src.shape[0]
    ar_m = torch.arange(m, device=src.device)
    if conv.transport and not reps.is_scalar:
        edge_part = transport_edges(reps, x_src, call.f_src, call.f_dst, src, dst, pos_src=call.p_src,
                                    pos_dst=call.p_dst, layout=graph.layout, cache=graph.cache)
        if call.homogeneous:
            self_part = x_src[:m]
        else:
            self_part = transport_edges(reps, x_src, call.f_src, call.f_dst[:m], ar_m, ar_m, pos_src=call.p_src,
                                        pos_dst=call.p_dst[:m])
        x_copies = torch.cat([self_part, edge_part], 0)
    else:
        x_copies = torch.cat([x_src[:m], x_src.index_select(0, src)], 0)
    is_self = (src == dst) & (src < m)
    new_src = torch.where(is_self, src, m + torch.arange(n_e, device=src.device))
    pos_copies = None
    if conv.caps.reads_pos:
        if call.homogeneous:
            own = call.p_src.new_zeros(m, reps.dim)
        else:
            own = local_edge_geometry(call.p_src, call.p_dst, call.f_dst, ar_m, ar_m, "rel")
        pos_copies = torch.cat([own, graph.geometry("rel", dtype=call.p_src.dtype)], 0)
    return x_copies, new_src, pos_copies


class Expand(Strategy):
    """Bipartite expansion: sources are transported per-edge copies, ``layer((x_copies, x_dst), (e, i_e))``."""

    name = "expand"

    def unavailable(self, conv, layer):
        if not conv.caps.bipartite:
            return f"{type(layer).__name__}.forward declares no bipartite (source, target) input for `x`"
        return None

    def run(self, conv, layer, call):
        n_dst = call.x_dst.shape[0]
        m = min(call.x_src.shape[0], n_dst)
        x_copies, new_src, pos_copies = _copies(conv, call, m)
        kwargs = dict(call.kwargs)
        if conv.caps.reads_pos:
            kwargs["pos"] = (pos_copies, pos_copies.new_zeros(n_dst, conv.reps_in.dim))
        ei = torch.stack([new_src, call.graph.dst])
        return layer(x=(x_copies, call.x_dst), edge_index=ei, **kwargs)


class Nodes(Strategy):
    """Homogeneous expansion: nodes ``[0, N)`` then one transported copy per edge (rows ``:N`` returned).

    Exact for layers whose output at a receiver does not depend on the senders' own neighbourhoods
    (degrees); :class:`Gcn` covers symmetric degree normalisation."""

    name = "nodes"

    def unavailable(self, conv, layer):
        return None

    def _graph(self, conv, call: Call):
        if not call.homogeneous:
            raise ValueError(f"x: {type(conv.layer).__name__} takes no bipartite input (mode {self.name!r})")
        n = call.x_src.shape[0]
        x_copies, new_src, pos_copies = _copies(conv, call, n)
        return n, x_copies, torch.stack([new_src, call.graph.dst]), pos_copies

    def run(self, conv, layer, call):
        n, x_copies, ei, pos_copies = self._graph(conv, call)
        kwargs = dict(call.kwargs)
        if conv.caps.reads_pos:
            kwargs["pos"] = pos_copies
        out = layer(x=x_copies, edge_index=ei, **kwargs)
        if isinstance(out, tuple):
            return (out[0][:n], *out[1:])
        return out[:n]


class Gcn(Nodes):
    r""":class:`Nodes` for symmetrically degree-normalised layers (GCN style, ``edge_weight``): copy ``e`` of
    sender ``j`` gets a self-loop weighted by :math:`\hat d_j`, so that the normalisation
    :math:`\hat d_i^{-1/2} w_{ij} \hat d_j^{-1/2}` on the expanded graph equals that of the original graph."""

    name = "gcn"

    def unavailable(self, conv, layer):
        if "edge_weight" not in conv.caps.forward_params:
            return f"{type(layer).__name__}.forward takes no `edge_weight`"
        if "edge_attr" in conv.caps.forward_params:
            return "the copies' self-loops would need edge features"
        return None

    def run(self, conv, layer, call):
        from torch_geometric.utils import add_remaining_self_loops, scatter

        n, x_copies, ei, pos_copies = self._graph(conv, call)
        graph, dtype, device = call.graph, call.x_src.dtype, call.x_src.device
        n_e = graph.num_edges
        kwargs = dict(call.kwargs)
        w = kwargs.pop("edge_weight", None)
        if w is not None:
            w = _check_tensor(w, "edge_weight").to(dtype)
            if w.shape != (n_e,):
                raise ValueError(f"edge_weight: expected shape [{n_e}], got {tuple(w.shape)}")
        if getattr(layer, "normalize", True):
            w0 = torch.ones(n_e, dtype=dtype, device=device) if w is None else w
            ei_l, w_l = graph.edge_index, w0
            loops = torch.empty(0, dtype=torch.long, device=device)
            if getattr(layer, "add_self_loops", True):
                # PyG's gcn_norm fills self-loops with 2 for `improved` only when weights are given; the
                # loops are added here explicitly (the layer then adds none), with the weight it would use
                fill = 2.0 if getattr(layer, "improved", False) and w is not None else 1.0
                ei_l, w_l = add_remaining_self_loops(graph.edge_index, w0, fill, n)
                has_loop = torch.zeros(n, dtype=torch.bool, device=device)
                has_loop[graph.src[graph.src == graph.dst]] = True
                loops = (~has_loop).nonzero().view(-1)
                w0 = torch.cat([w0, torch.full((loops.numel(),), fill, dtype=dtype, device=device)])
            deg = scatter(w_l, ei_l[1], dim=0, dim_size=n, reduce="sum")
            copy_ids = n + torch.arange(n_e, device=device)
            ei = torch.cat([ei, torch.stack([loops, loops]), torch.stack([copy_ids, copy_ids])], dim=1)
            w = torch.cat([w0, deg.index_select(0, graph.src)])
        if conv.caps.reads_pos:
            kwargs["pos"] = pos_copies
        out = layer(x=x_copies, edge_index=ei, edge_weight=w, **kwargs)
        if isinstance(out, tuple):
            return (out[0][:n], *out[1:])
        return out[:n]


#: candidates of ``mode="auto"`` in order of preference (cheapest first); the first that reproduces the
#: per-receiver reference on the construction probe is used.
STRATEGIES: dict[str, tuple[Strategy, ...]] = {
    "plain": (Plain(),),
    "global": (GlobalFrame(skip_lin=True), GlobalFrame(skip_lin=False)),
    "hook": (Hook(),),
    "expand": (Expand(),),
    "gcn": (Gcn(),),
    "nodes": (Nodes(),),
    "message": (Message(),),
}
AUTO_ORDER = ("plain", "global", "hook", "expand", "nodes", "gcn")
