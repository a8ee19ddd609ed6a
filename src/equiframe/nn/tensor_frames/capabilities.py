r"""What a wrapped PyG layer can do, found from its signature and a probe run -- never from its class name.

:func:`inspect_layer` reads the layer's ``forward`` signature (which inputs it takes, whether ``x`` may be a
``(source, target)`` pair, which arguments are required) and its declared sizes (``in_channels``,
``edge_dim``). :func:`probe` then runs candidate strategies on a small random graph (on a float64 copy of
the layer, in eval mode, without touching the layer itself) and compares each with the **per-receiver
reference**

.. math::  y_i = \mathrm{layer}\big(x^{(i)}, \mathrm{edge\_index}, \dots\big)_i, \qquad
           x^{(i)}_k = \rho(R_i R_k^\top) f_k, \quad \mathrm{pos}^{(i)}_k = R_i (x_k - x_i),

i.e. the layer run once per receiver with *every* node's features moved into that receiver's frame. This
is the tensor-frame layer :math:`\phi(f_i, \rho(R_i R_j^\top) f_j, R_i(x_j - x_i), \dots)` by definition, for
any single-hop layer; a strategy that reproduces it on the probe computes the right function. A layer for
which no strategy does (multi-hop propagation: the second hop would need a transport inside the layer;
messages that depend on the senders' own neighbourhoods) is refused at construction.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ...groups import random_orthogonal
from ..tf_transport import transport_edges
from .graph import TFGraph
from .hooks import _NotHookable
from .strategies import Call, Strategy
from ..._checks import check_instance

__all__ = ["LayerCaps", "Prober", "UnsupportedLayerError", "inspect_layer"]


class UnsupportedLayerError(TypeError):
    """``TFConv`` refuses a layer: no strategy reproduces the per-receiver reference on the probe.

    Attributes:
        reasons: per mode, why it does not work for this layer.
    """

    def __init__(self, message: str, reasons: dict[str, str]):
        super().__init__(message)
        self.reasons = dict(reasons)

#: forward arguments TFConv provides itself (everything else must have a default)
_PROVIDED = ("x", "edge_index", "edge_attr", "pos", "edge_weight", "size", "return_attention_weights", "batch")


@dataclass(frozen=True)
class LayerCaps:
    """Static capabilities of a wrapped layer (from its ``forward`` signature and attributes).

    Attributes:
        forward_params: names of the ``forward`` parameters.
        reads_pos: ``forward`` takes node positions ``pos``.
        takes_edge_attr: ``forward`` takes ``edge_attr``.
        bipartite: ``x`` is annotated as accepting a ``(source, target)`` pair (``None``: not annotated).
        edge_dim: the layer's declared edge feature width (``edge_dim`` attribute), if any.
        in_channels: the declared input width(s) (``in_channels``/``channels``), if known.
    """

    forward_params: tuple[str, ...]
    reads_pos: bool
    takes_edge_attr: bool
    bipartite: bool | None
    edge_dim: int | None
    has_edge_dim: bool
    in_channels: tuple[int, ...]


def _bipartite_annotation(param: inspect.Parameter | None) -> bool | None:
    if param is None or param.annotation is inspect.Parameter.empty:
        return None
    text = str(param.annotation)
    return "tuple" in text.lower() or "PairTensor" in text


def _declared_in_channels(layer: nn.Module) -> tuple[int, ...]:
    for name in ("in_channels", "channels"):
        value = getattr(layer, name, None)
        if isinstance(value, int) and value > 0:
            return (value,)
        if isinstance(value, (tuple, list)) and value and all(isinstance(v, int) and v > 0 for v in value):
            return tuple(value)
    return ()


def inspect_layer(layer: nn.Module) -> LayerCaps:
    """Read what ``layer`` takes and declares; raise ``TypeError`` for layers no strategy can run.

    Raises:
        TypeError: ``layer`` is not a ``MessagePassing``, has no ``forward``, takes no ``x``/``edge_index``
            (it builds its own graph or reads another structure), or requires inputs TFConv cannot type.
        ValueError: ``flow`` is not ``"source_to_target"``.
    """
    from torch_geometric.nn.conv import MessagePassing

    if not isinstance(layer, MessagePassing):
        raise TypeError(f"layer: expected a torch_geometric MessagePassing instance, got {type(layer).__name__}")
    name = type(layer).__name__
    if type(layer).forward is MessagePassing.forward:
        raise TypeError(f"layer: {name} is not supported: it defines no `forward`; no mode works")
    params = inspect.signature(layer.forward).parameters
    names = tuple(p for p, v in params.items() if v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD))
    if "x" not in names or "edge_index" not in names:
        missing = [p for p in ("x", "edge_index") if p not in names]
        raise TypeError(
            f"layer: {name} is not supported: its forward({', '.join(names)}) takes no {' / '.join(missing)} "
            "(it builds its own graph, or reads a different structure), so TFConv cannot move neighbour "
            "features into the receivers' frames; no mode works"
        )
    required = [p for p in names if p not in _PROVIDED and params[p].default is inspect.Parameter.empty]
    if required:
        raise TypeError(
            f"layer: {name} is not supported: its forward requires {', '.join(map(repr, required))}, which "
            "TFConv cannot type as node features in local frames; no mode works"
        )
    if getattr(layer, "flow", "source_to_target") != "source_to_target":
        raise ValueError("layer: only flow='source_to_target' is supported (edge_index[1] is the receiver)")
    edge_dim = getattr(layer, "edge_dim", None)
    return LayerCaps(
        forward_params=names,
        reads_pos="pos" in names,
        takes_edge_attr="edge_attr" in names,
        bipartite=_bipartite_annotation(params.get("x")),
        edge_dim=edge_dim if isinstance(edge_dim, int) and not isinstance(edge_dim, bool) else None,
        has_edge_dim=hasattr(layer, "edge_dim"),
        in_channels=_declared_in_channels(layer),
    )


# ------------------------------------------------------------------------------------------------- probe
_PROBE_NODES = 6
_PROBE_RTOL = 1e-7


def _probe_graph(d: int, generator: torch.Generator) -> Tensor:
    """Edges of a small irregular graph: every node receives from 2-4 distinct others (no self-loops)."""
    n = _PROBE_NODES
    src, dst = [], []
    for i in range(n):
        k = 2 + i % 3
        others = [j for j in torch.randperm(n, generator=generator).tolist() if j != i][:k]
        src += others
        dst += [i] * k
    return torch.tensor([src, dst])


@dataclass
class _Probe:
    layer: nn.Module
    call: Call
    x: Tensor
    reference: Tensor | None = None


def _probe_inputs(conv: Any, layer: nn.Module, edge_width: int) -> _Probe:
    """A float64 eval-mode copy of ``layer`` and random inputs on a small graph (fixed seed)."""
    gen = torch.Generator().manual_seed(0)
    reps, d = conv.reps_in, conv.reps_in.dim
    device = next((t.device for t in list(layer.parameters()) + list(layer.buffers())), torch.device("cpu"))
    dt = torch.float64
    ei = _probe_graph(d, gen).to(device)
    n = _PROBE_NODES
    frames = random_orthogonal(n, d, generator=gen, dtype=dt).to(device)
    pos = torch.randn(n, d, generator=gen, dtype=dt).to(device)
    x = torch.randn(n, reps.size, generator=gen, dtype=dt).to(device)
    graph = TFGraph(ei, frames, pos)
    kwargs: dict[str, Any] = {}
    user = torch.randn(ei.shape[1], edge_width, generator=gen, dtype=dt).to(device) if edge_width else None
    extra = conv._edge_features(graph, user, frames, dt)
    if extra is not None:
        kwargs["edge_attr"] = extra
    copy_ = copy.deepcopy(layer).to(dt).eval()
    call = Call(x, x, True, frames, frames, pos, pos, graph, kwargs)
    return _Probe(copy_, call, x)


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, tuple) else out


def reference_output(conv: Any, layer: nn.Module, call: Call) -> Tensor:
    """The layer run once per receiver with every node moved into that receiver's frame (row ``i``).

    Shapes:
        call.x_src: ``[N, reps_in.size]`` (homogeneous graph) -> ``[N, reps_out.size]``
    """
    reps, x = conv.reps_in, call.x_src
    n = x.shape[0]
    src = torch.arange(n, device=x.device)
    rows = []
    for i in range(n):
        dst = torch.full_like(src, i)
        if conv.transport and not reps.is_scalar:
            x_i = transport_edges(reps, x, call.f_src, call.f_dst, src, dst, pos_src=call.p_src,
                                  pos_dst=call.p_dst)
        else:
            x_i = x
        kwargs = dict(call.kwargs)
        if conv.caps.reads_pos:
            kwargs["pos"] = (call.p_src - call.p_src[i]) @ call.f_src[i].T
        rows.append(_first(layer(x=x_i, edge_index=call.graph.edge_index, **kwargs))[i])
    return torch.stack(rows)


def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    return (first if isinstance(err, _NotHookable) else f"{type(err).__name__}: {first}")[:160]


def _try(conv: Any, strategy: Strategy, p: _Probe) -> str | None:
    """``None`` if ``strategy`` runs on the probe (and matches the reference if it should); else why not."""
    why = strategy.unavailable(conv, p.layer)
    if why is not None:
        return why
    try:
        with torch.no_grad():
            out = _first(strategy.run(conv, p.layer, p.call))
            if not strategy.same_function:
                conv._check_out(out)
                return None
            if p.reference is None:
                p.reference = reference_output(conv, p.layer, p.call)
    except Exception as err:  # noqa: BLE001 -- any failure of the layer on the probe means: not this way
        return f"fails on a probe graph ({_describe(err)})"
    if not isinstance(out, Tensor) or out.shape != p.reference.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        return f"returns {got}, the per-receiver reference {tuple(p.reference.shape)}"
    if not bool(torch.isfinite(out).all()):
        return "returns NaN/inf on a probe graph"
    scale = float(p.reference.abs().max().clamp(min=1e-30))
    err = float((out - p.reference).abs().max())
    if err > _PROBE_RTOL * max(scale, 1.0):
        return (f"differs from the per-receiver reference (relative error {err / max(scale, 1.0):.1e}: the "
                "layer propagates more than once or reads the senders' own neighbourhoods)")
    return None


class Prober:
    """Runs candidate strategies of one :class:`~equiframe.nn.tensor_frames.TFConv` on one probe graph
    (inputs and per-receiver reference built once, on first use)."""

    def __init__(self, conv: Any, layer: nn.Module, edge_width: int):
        from torch_geometric.nn.conv import MessagePassing  # noqa: PLC0415

        check_instance("layer", layer, MessagePassing, "a torch_geometric MessagePassing layer")
        self.conv, self.layer, self.edge_width = conv, layer, edge_width
        self._probe: _Probe | None = None

    def run(self, candidates: list[tuple[str, Strategy]], *, first: bool = True
            ) -> tuple[list[tuple[str, Strategy]], dict[str, str]]:
        """The ``candidates`` that work (only the first if ``first``) and, per mode, why the others do not."""
        if self._probe is None:
            self._probe = _probe_inputs(self.conv, self.layer, self.edge_width)
        ok: list[tuple[str, Strategy]] = []
        reasons: dict[str, str] = {}
        for mode, strategy in candidates:
            if any(m == mode for m, _ in ok):
                continue
            why = _try(self.conv, strategy, self._probe)
            if why is None:
                ok.append((mode, strategy))
                reasons.pop(mode, None)
                if first:
                    break
            else:
                reasons[mode] = why  # the last variant's reason (the most general one)
        return ok, reasons
