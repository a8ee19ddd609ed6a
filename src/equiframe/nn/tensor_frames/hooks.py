"""PyG hooks that move neighbour features between node frames inside an unmodified layer.

:class:`_HookSession` holds the per-call state of the hooked strategies ("global", "hook", "message"); it
lives only for one forward call and is never stored on a module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Optional

import torch
from torch import Tensor, nn

from ...reps import TensorReps
from ..tf_transport import ReceiverLayout, receiver_layout, rotate_edges, transport_edges
from .geometry import local_edge_geometry

if TYPE_CHECKING:
    from .graph import TFGraph

LINEAR_AGGR = ("add", "sum", "mean")


class _NotHookable(Exception):
    """Raised inside a hooked layer when the per-message transport would be wrong."""


@dataclass(frozen=True)
class _MessageSpec:
    """How :class:`TFConv` runs a layer in message mode.

    Attributes:
        args: propagate arguments whose sender parts are per-node projections read as ``<name>_j``.
        global_frame: the message is linear in ``args`` (or uses them only through inner products and
            linear combinations) with a linear aggregation: move them to the global frame per node
            (:math:`O(N)`) and rotate the aggregate back, instead of transporting them per edge.
        receiver_args: receiver-side projections read as ``<name>_i`` (moved to the global frame too).
        edge_lin: sub-module projecting ``edge_attr`` inside the message; its (receiver-frame) output is
            moved to the global frame per edge by its receiver's frame (no gather).
    """

    args: tuple[str, ...]
    global_frame: bool = False
    receiver_args: tuple[str, ...] = ()
    edge_lin: str | None = None


def _known_specs() -> list[tuple[type, _MessageSpec]]:
    """Message-mode specs of PyG layers whose per-node projections are known (checked with ``issubclass``;
    a subclass keeps the spec as long as it does not override the message-passing methods)."""
    from torch_geometric.nn.conv import GATConv, GATv2Conv, PointTransformerConv, TransformerConv

    return [
        # message alpha_ij * x_j, "add": O(N); the attention logits use per-node invariants a^T W f_j only
        (GATConv, _MessageSpec(("x",), global_frame=True)),
        # x_j enters the attention non-linearly (leaky_relu(x_i + x_j + e_ij)): per-edge transport, reused
        (GATv2Conv, _MessageSpec(("x",))),
        # <q_i, k_j + e_ij> and sum_j a_ij (v_j + e_ij): q, k, v to the global frame per node, e_ij per edge
        (TransformerConv, _MessageSpec(("key", "value"), global_frame=True, receiver_args=("query",),
                                       edge_lin="lin_edge")),
        # channel-wise attention weights times x_j: per-edge transport
        (PointTransformerConv, _MessageSpec(("x",))),
    ]


_OVERRIDABLE = ("forward", "message", "edge_update", "message_and_aggregate", "aggregate", "update")


def message_spec(layer: nn.Module) -> _MessageSpec | None:
    """The message-mode spec of a layer whose class derives from one with known per-node projections and
    does not override its message-passing methods; ``None`` otherwise."""
    for cls, spec in _known_specs():
        if isinstance(layer, cls):
            if any(getattr(type(layer), a, None) is not getattr(cls, a, None) for a in _OVERRIDABLE):
                return None
            return spec
    return None


def known_message_layers() -> list[str]:
    """Names of the layer classes with a built-in message-mode spec (for error messages)."""
    return [cls.__name__ for cls, _ in _known_specs()]


def is_linear(module: nn.Module) -> bool:
    """A plain affine map ``x W^T + b`` (``torch.nn.Linear`` or PyG's ``Linear``, forward not overridden)."""
    from torch_geometric.nn.dense.linear import Linear as PygLinear

    for cls in (nn.Linear, PygLinear):
        if isinstance(module, cls) and type(module).forward is cls.forward:
            return True
    return False


def _typed_reps(reps_out: TensorReps, t: Tensor, name: str) -> TensorReps:
    """Type of a per-node projection ``t`` ``[N, S]`` or ``[N, H, C]`` in message mode: ``reps_out`` when
    ``S = reps_out.size`` (heads concatenated, as in the layer's output), else ``S / reps_out.size``
    concatenated copies of ``reps_out`` (one per head, averaged by the layer)."""
    size = 1
    for n in t.shape[1:]:
        size *= int(n)
    r = reps_out
    if size == r.size:
        if t.dim() == 3 and t.shape[1] > 1:  # heads concatenated: no tensor may straddle two heads
            c = int(t.shape[-1])
            for b, sl in r.slices():
                q = r.dim**b.order
                for o in range(sl.start, sl.stop, q):
                    if o // c != (o + q - 1) // c:
                        raise ValueError(
                            f"reps_out: {str(r)!r} does not split into {t.shape[1]} heads of {c} channels "
                            f"(a tensor of block {b} straddles two heads)"
                        )
        return r
    if r.size and size % r.size == 0:
        return TensorReps(r.blocks * (size // r.size), dim=r.dim)
    raise ValueError(
        f"mode: 'message' types {name!r} ({size} channels per node) as reps_out per head, but {size} is not "
        f"a multiple of reps_out.size = {r.size}"
    )


def _sender_part(kwargs: dict, name: str) -> tuple[str, Any, Tensor | None]:
    """For an ``edge_update`` argument ``<base>_j``: ``base``, the value passed as ``base`` and its sender part
    (the first of a ``(source, target)`` pair), ``None`` when that is not a tensor."""
    base = name[:-2]
    value = kwargs.get(base, None)
    src_part = value[0] if isinstance(value, (tuple, list)) else value
    return base, value, src_part if isinstance(src_part, Tensor) else None


class _HookSession:
    """Per-call closure state of the hooked modes (lives only for one forward call; never on a module).

    ``kind``: ``"hook"`` (transport the raw ``x_j``), ``"global"`` (aggregate the raw input in the global
    frame) or ``"message"`` (transport the layer's per-node projections named in ``message_args``).
    """

    def __init__(
        self,
        owner: Any,
        x_src: Tensor,
        frames_src: Tensor,
        frames_dst: Tensor,
        pos_src: Tensor | None,
        pos_dst: Tensor | None,
        pos_token_src: Tensor | None,
        graph: TFGraph,
        kind: Literal["hook", "global", "message"] = "hook",
        spec: _MessageSpec | None = None,
        skip_lin: bool = False,
    ):
        self.owner = owner  # anything with reps_in, reps_out and transport (the TFConv)
        self.skip_lin = skip_lin
        self.kind = kind
        self.global_mode = kind == "global"
        self.spec = spec if spec is not None else _MessageSpec(())
        self.message_args = set(self.spec.args)
        self.edge_global = False  # message mode through the global frame: rotate the edge projection too
        self.current: tuple[Tensor, Tensor, Any, Tensor] | None = None  # edges being messaged (layout lazy)
        self._edge_in: Tensor | None = None  # edge projection input stashed by edge_lin_pre_hook
        self._g: Tensor | None = None  # global-frame sender features (global mode)
        self.n_global = 0  # propagates aggregated in the global frame, awaiting their aggregate hook
        self.n_propagate = 0  # propagate calls so far
        self.agg_reps: list[TensorReps] = []  # type of each of those aggregates
        self.x_src = x_src
        self.frames_src, self.frames_dst = frames_src, frames_dst
        self.pos_src, self.pos_dst = pos_src, pos_dst
        self.pos_token_src = pos_token_src
        self.graph = graph  # the input graph, its layout and cache (reused when the layer keeps the edges)
        self.pending: list[tuple[dict[str, tuple[str, Any]], Tensor, Tensor, Any, Tensor]] = []
        self.need_transport = owner.transport and not owner.reps_in.is_scalar
        self.typed_transport = owner.transport and not owner.reps_out.is_scalar
        self._typed_done: list[tuple[Tensor, Tensor, Tensor]] = []  # (projection, edge_index, transported)

    # -- helpers -----------------------------------------------------------------------------------------
    def _edges(self, module: nn.Module, edge_index: Tensor) -> tuple[Tensor, Tensor, Tensor, Any]:
        """``(edge_index, src, dst, layout)`` of the edges a propagate runs on; ``layout()`` is lazy."""
        i_row, j_row = (1, 0) if module.flow == "source_to_target" else (0, 1)
        if type(edge_index) is not Tensor:
            edge_index = edge_index.as_subclass(Tensor)
        src, dst = edge_index[j_row], edge_index[i_row]
        graph, n_dst = self.graph, self.frames_dst.shape[0]
        memo: list[ReceiverLayout] = []

        def layout() -> ReceiverLayout:  # built on first use only (global modes never need it)
            if not memo:
                same = edge_index is graph.edge_index and i_row == 1
                memo.append(graph.layout if same else receiver_layout(src, dst, n_dst))
            return memo[0]

        return edge_index, src, dst, layout

    def _cache_for(self, edge_index: Tensor) -> dict | None:
        """The graph's cache: the receiver matrices depend on the receivers' frames only, which every edge
        set of the layer (e.g. with added self-loops) shares."""
        return self.graph.cache

    def global_x(self) -> Tensor:
        """Sender features in the global frame, ``rho(R_j^T) f_j`` (computed once per call)."""
        if self._g is None:
            self._g = self.owner.reps_in.to_global(self.x_src, self.frames_src)
        return self._g

    def _classify(self, base: str, name: str, src_part: Tensor, in_message: bool) -> str | None:
        """What to do with a sender argument: ``"pos"``, ``"typed"``, ``"x"``, ``"global"`` or ``None``."""
        if self.pos_token_src is not None and src_part is self.pos_token_src:
            return "pos"
        if self.kind == "message" and base in self.message_args:
            return "typed" if self.typed_transport else None
        if src_part is self.x_src or (self._g is not None and src_part is self._g):
            if not self.need_transport:
                return None
            return "global" if (self.global_mode and in_message) else "x"
        if self.kind == "message" or not self.need_transport:
            return None  # invariant per-node quantities (attention logits, ...): any function of them is too
        if self.n_propagate > 1:
            raise _NotHookable(
                f"the layer propagates again (call {self.n_propagate}) over features it aggregated before "
                "(multi-hop): the next hop would need a transport inside the layer"
            )
        raise _NotHookable(
            f"the layer passes {base!r} (not the raw input features) to propagate and reads {name!r}: it "
            "transforms x per node before message passing"
        )

    # -- hooks -------------------------------------------------------------------------------------------
    def pre_propagate(self, module: nn.Module, inputs: tuple):
        self.n_propagate += 1
        edge_index, size, kwargs = inputs
        if not isinstance(edge_index, Tensor) or edge_index.is_sparse:
            raise _NotHookable("the layer propagates over a sparse adjacency (fused message_and_aggregate)")
        if getattr(module, "decomposed_layers", 1) != 1:
            raise _NotHookable("decomposed_layers > 1 splits the channels of x")
        message_args = set(module.inspector.get_param_names("message"))
        user_args = set(module._user_args)
        plan: dict[str, tuple[str, Any]] = {}
        for name in module._user_args:
            if not name.endswith("_j"):
                continue
            base = name[:-2]
            value = kwargs.get(base, None)
            src_part = value[0] if isinstance(value, (tuple, list)) else value
            if src_part is None or not isinstance(src_part, Tensor):
                continue
            kind = self._classify(base, name, src_part, True)
            if kind is None:
                continue
            if name not in message_args:
                raise _NotHookable(f"{name!r} is read outside `message` (aggregate/update)")
            if kind == "global" and (base + "_i" in message_args or base in user_args):
                raise _NotHookable(f"the message reads {base!r} beyond {name!r}: not a linear message")
            plan[base] = (kind, src_part)
        edge_index, src, dst, layout = self._edges(module, edge_index)
        aggr = getattr(module, "aggr", None)
        linear_aggr = isinstance(aggr, str) and aggr in LINEAR_AGGR
        if any(k == "global" for k, _ in plan.values()):
            if len(plan) != 1:
                raise _NotHookable("global mode needs a message that is linear in one sender argument")
            if not linear_aggr:
                raise _NotHookable(f"aggregation {aggr!r} is not linear (sum/mean)")
            (base,) = plan
            value = kwargs[base]
            tgt = value[1] if isinstance(value, (tuple, list)) else value
            kwargs[base] = (self.global_x(), tgt)  # PyG gathers g_j = rho(R_j^T) f_j: no per-edge work
            self._aggregate_globally(self.owner.reps_in, (src, dst, layout, edge_index))
            return edge_index, size, kwargs
        if self._message_global_ok(plan, kwargs, message_args, user_args, linear_aggr):
            self._projections_to_global(plan, kwargs)
            self._aggregate_globally(self._projection_reps, (src, dst, layout, edge_index))
            return edge_index, size, kwargs
        self.pending.append((plan, src, dst, layout, edge_index))
        # The sender rows are gathered by the transport itself: let PyG gather a zero-width view instead
        # (saves one pass over [E, C]); only if the argument is not also read without suffix.
        changed = False
        for base in plan:
            if base in user_args:
                continue
            value = kwargs[base]
            tgt = value[1] if isinstance(value, (tuple, list)) else value
            kwargs[base] = (plan[base][1][:, :0], tgt)
            changed = True
        return (edge_index, size, kwargs) if changed else None

    def _message_global_ok(self, plan, kwargs, message_args, user_args, linear_aggr) -> bool:
        """Whether a message-mode propagate can run through the global frame (:class:`_MessageSession`)."""
        return False

    def _aggregate_globally(self, reps: TensorReps, edges: tuple) -> None:
        """This propagate aggregates global-frame features of type ``reps``: its aggregate is rotated back
        by :meth:`post_aggregate`; its message needs no per-edge work."""
        src, dst, layout, edge_index = edges
        self.n_global += 1
        self.agg_reps.append(reps)
        self.pending.append(({}, src, dst, layout, edge_index))

    def lin_hook(self, module: nn.Module, inputs: tuple, output: Tensor):
        """GCNConv: skip its per-node ``lin`` on the input (applied after aggregation instead)."""
        if inputs and inputs[0] is self.x_src:
            return self.global_x()
        return None

    def post_aggregate(self, module: nn.Module, inputs: tuple, out: Tensor):
        """Global-frame aggregates ``sum_j w_ij g_j`` -> ``rho(R_i) (...)`` (+ GCNConv's skipped ``lin``)."""
        if self.n_global == 0:
            return None
        self.n_global -= 1
        reps = self.agg_reps.pop(0)
        shape = out.shape
        out = reps.to_local(out.reshape(shape[0], reps.size), self.frames_dst).view(shape)
        if self.global_mode and self.skip_lin:
            out = module.lin(out)
        return out

    def _per_edge(self, kind: str, payload: Any, name: str, src, dst, layout, edge_index) -> Tensor:
        owner = self.owner
        layout = layout()
        if kind == "x":
            return transport_edges(
                owner.reps_in, self.x_src, self.frames_src, self.frames_dst, src, dst,
                pos_src=self.pos_src, pos_dst=self.pos_dst, layout=layout, cache=self._cache_for(edge_index),
            )
        if kind == "typed":
            return self.typed_edges(payload, name, src, dst, layout, edge_index)
        # positions: receiver at the origin, sender at R_i (x_j - x_i)
        if edge_index is self.graph.edge_index:
            return self.graph.geometry("rel", dtype=self.frames_dst.dtype)
        return local_edge_geometry(self.pos_src, self.pos_dst, self.frames_dst, src, dst, "rel", layout=layout)

    def pre_message(self, module: nn.Module, inputs: tuple) -> Optional[dict]:
        if not self.pending:
            raise RuntimeError("TFConv: message called without a preceding propagate (unsupported layer)")
        plan, src, dst, layout, edge_index = self.pending.pop()
        self.current = (src, dst, layout, edge_index)
        if not plan:
            return None
        msg_kwargs = dict(inputs[0])
        for base, (kind, payload) in plan.items():
            msg_kwargs[base + "_j"] = self._per_edge(kind, payload, base, src, dst, layout, edge_index)
        return msg_kwargs

    def pre_edge_update(self, module: nn.Module, inputs: tuple):
        """``edge_updater``: sender tensors read as ``<name>_j`` in ``edge_update`` (GATv2Conv's attention
        logits read ``x_j``). Hook/global modes refuse them; message mode moves them into the receiver's
        frame by handing PyG per-edge sources with an identity edge index ``(arange(E), dst)``."""
        edge_index, size, kwargs = inputs
        reads = [n for n in module._edge_user_args if n.endswith("_j")]
        todo: dict[str, tuple[str, Any]] = {}
        for name in reads:
            base, value, src_part = _sender_part(kwargs, name)
            if src_part is None:
                continue
            kind = self._classify(base, name, src_part, False) if self.kind == "message" else None
            if self.kind != "message":
                if self.pos_token_src is not None and src_part is self.pos_token_src:
                    raise _NotHookable(f"edge_update reads {name!r} (positions) which cannot be hooked")
                if self.need_transport:
                    raise _NotHookable(f"edge_update reads the per-node tensor {name!r} of the senders")
                continue
            if kind is not None:
                if base in module._edge_user_args:
                    raise _NotHookable(f"edge_update reads {base!r} beyond {name!r}")
                todo[base] = (kind, src_part)
        if not todo:
            return None
        if not isinstance(edge_index, Tensor) or edge_index.is_sparse:
            raise _NotHookable("the layer updates edges over a sparse adjacency")
        edge_index, src, dst, layout = self._edges(module, edge_index)
        new_kwargs = dict(kwargs)
        for name in reads:
            base, value, src_part = _sender_part(kwargs, name)
            if src_part is None:
                continue
            tgt = value[1] if isinstance(value, (tuple, list)) else value
            if base in todo:
                kind, payload = todo[base]
                per_edge = self._per_edge(kind, payload, base, src, dst, layout, edge_index)
            else:
                per_edge = src_part.index_select(0, src)  # invariant: just gathered
            new_kwargs[base] = (per_edge, tgt)
        n_e = src.shape[0]
        ident = torch.stack([torch.arange(n_e, device=src.device), dst])
        new_size = None if size is None else (n_e, size[1])
        return ident, new_size, new_kwargs


class _MessageSession(_HookSession):
    """Message mode: transports the layer's own per-node projections (``spec.args``), per edge or, when the
    message allows it (``spec.global_frame``), through the global frame per node."""

    _projection_reps: TensorReps | None = None

    def typed_edges(self, t: Tensor, name: str, src: Tensor, dst: Tensor, layout: ReceiverLayout,
                    edge_index: Tensor) -> Tensor:
        """Per-edge ``rho(R_i R_j^T) t_j`` of a per-node projection ``t`` (computed once per edge set)."""
        for proj, ei, done in self._typed_done:
            if proj is t and ei is edge_index:
                return done
        reps = _typed_reps(self.owner.reps_out, t, name)
        n = t.shape[0]
        y = transport_edges(reps, t.reshape(n, reps.size), self.frames_src, self.frames_dst, src, dst,
                            layout=layout, cache=self._cache_for(edge_index))
        y = y.view(src.shape[0], *t.shape[1:])
        self._typed_done.append((t, edge_index, y))
        return y

    def _projections_to_global(self, plan: dict, kwargs: dict) -> None:
        """Move the named sender projections (and receiver projections) to the global frame, per node."""
        reps = None
        for base, (_kind, t) in plan.items():
            # sum_j a_ij rho(R_i R_j^T) t_j = rho(R_i) sum_j a_ij rho(R_j^T) t_j, and inner products
            # <u_i, rho(R_i R_j^T) t_j> = <rho(R_i^T) u_i, rho(R_j^T) t_j>: every projection per node
            reps = _typed_reps(self.owner.reps_out, t, base)
            glob = reps.to_global(t.reshape(t.shape[0], reps.size), self.frames_src).view(t.shape)
            value = kwargs[base]
            kwargs[base] = (glob, value[1] if isinstance(value, (tuple, list)) else value)
        for name in self.spec.receiver_args:
            value = kwargs[name]
            u = value[1] if isinstance(value, (tuple, list)) else value
            r_u = _typed_reps(self.owner.reps_out, u, name)
            glob = r_u.to_global(u.reshape(u.shape[0], r_u.size), self.frames_dst).view(u.shape)
            kwargs[name] = (value[0], glob) if isinstance(value, (tuple, list)) else glob
        self.edge_global = True
        self._projection_reps = reps

    def _message_global_ok(self, plan, kwargs, message_args, user_args, linear_aggr) -> bool:
        """Message mode through the global frame: all named projections present and read only as
        ``<name>_j`` (receiver projections only as ``<name>_i``), a linear aggregation."""
        spec = self.spec
        if self.kind != "message" or not spec.global_frame or not linear_aggr or not plan:
            return False
        if set(plan) != set(spec.args) or any(k != "typed" for k, _ in plan.values()):
            return False
        if any(b + "_i" in message_args or b in user_args for b in plan):
            return False
        for name in spec.receiver_args:
            value = kwargs.get(name, None)
            u = value[1] if isinstance(value, (tuple, list)) else value
            if not isinstance(u, Tensor) or name + "_j" in message_args or name in user_args:
                return False
        return True

    def edge_lin_pre_hook(self, module: nn.Module, inputs: tuple):
        r"""Message mode through the global frame, edge projection :math:`e_{ij} = W a_{ij} + b` (receiver
        frame), needed in the global frame as :math:`\rho(R_i^\top) e_{ij}`. For a linear map of few edge
        channels on a blocked graph the rotation is folded into the weights,
        :math:`(\rho(R_i^\top) W) a_{ij} + \rho(R_i^\top) b` (rotating ``F + 1`` weight rows per receiver
        instead of ``k`` edge rows); the module itself then runs on one dummy row only."""
        self._edge_in = None
        if not self.edge_global or self.current is None or not inputs:
            return None
        a, layout = inputs[0], self.current[2]()
        weight = getattr(module, "weight", None)
        if (
            layout.kind == "blocked" and len(layout.segments) == 1 and isinstance(a, Tensor) and a.dim() == 2
            and a.shape[0] == layout.n_edges and isinstance(weight, Tensor) and weight.dim() == 2
            and weight.shape[1] == a.shape[1] and (a.shape[1] + 1) * layout.n_dst <= a.shape[0]
            and is_linear(module)
        ):
            self._edge_in = a
            return (a[:1],)
        return None

    def edge_lin_hook(self, module: nn.Module, inputs: tuple, output: Tensor):
        """Forward hook of the edge projection (see :meth:`edge_lin_pre_hook`)."""
        if not self.edge_global or self.current is None:
            return None
        _src, _dst, get_layout, edge_index = self.current
        layout = get_layout()
        a, self._edge_in = self._edge_in, None
        if a is not None:  # rotated weights, one small product per receiver
            reps = _typed_reps(self.owner.reps_out, output, "edge projection")
            weight, bias = module.weight, module.bias
            n, k, nf = layout.n_dst, layout.segments[0][2], a.shape[1]
            rows = weight.t() if bias is None else torch.cat([weight.t(), bias.view(1, -1)], 0)  # [F (+1), C]
            nr = rows.shape[0]
            w_t = reps.to_global(  # rows rho(R_i^T) W[:, c] (and rho(R_i^T) b) of every receiver i
                rows.unsqueeze(0).expand(n, nr, reps.size).reshape(n * nr, reps.size),
                self.frames_dst.repeat_interleave(nr, 0),
            ).view(n, nr, reps.size)
            a3 = a.view(n, k, nf)
            y = torch.bmm(a3, w_t) if bias is None else torch.baddbmm(w_t[:, nf:], a3, w_t[:, :nf])
            return y.view(a.shape[0], *output.shape[1:])
        reps = _typed_reps(self.owner.reps_out, output, "edge projection")
        return rotate_edges(reps, output.reshape(output.shape[0], reps.size), self.frames_dst, layout,
                            inverse=True, cache=self._cache_for(edge_index), in_place=True).view(output.shape)
