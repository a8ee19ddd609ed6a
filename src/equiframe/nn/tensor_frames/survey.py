"""Which PyG message passing layers TFConv supports: every ``MessagePassing`` class exported by
:mod:`torch_geometric.nn.conv`, built with generic arguments, wrapped with ``TFConv`` in its default mode.

:func:`conv_layer_classes` enumerates the classes (nothing hand-picked), :func:`build_layer` builds one from
its constructor signature (a small table covers constructor arguments that cannot be guessed, e.g. the
MLPs of point-cloud layers), :func:`survey` wraps each and records the strategy chosen or why it was
refused, and :func:`layer_table` renders the result as the Markdown table of ``docs/layers.md``
(``python benchmarks/layer_table.py`` writes it).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ...reps import TensorReps
from .capabilities import inspect_layer
from .conv import TFConv
from .geometry import geometry_dim
from ..._checks import check_int

__all__ = ["SurveyRow", "build_layer", "conv_layer_classes", "layer_table", "static_refusal", "survey"]

#: reps of the survey: scalars, vectors, a pseudo-vector and an order-2 tensor
SURVEY_REPS = "4x0n+2x1n+1x1p+1x2n"


def conv_layer_classes() -> list[type]:
    """Every ``MessagePassing`` subclass exported by :mod:`torch_geometric.nn.conv` (and the base class)."""
    import torch_geometric.nn.conv as conv
    from torch_geometric.nn.conv import MessagePassing

    names = [n for n in conv.__all__ if isinstance(getattr(conv, n, None), type)]
    return [getattr(conv, n) for n in names if issubclass(getattr(conv, n), MessagePassing)]


def _lin(i: int, o: int) -> nn.Module:
    return nn.Sequential(nn.Linear(i, 8), nn.Tanh(), nn.Linear(8, o))


def _special(c_in: int, c_out: int, d: int) -> dict[str, Callable[[], dict[str, Any]]]:
    """Constructor arguments that cannot be derived from a signature (MLPs with input widths fixed by the
    layer's message; the degree histogram of PNAConv; the metadata of heterogeneous layers)."""
    e = geometry_dim(d)
    return {
        "GINConv": lambda: {"nn": _lin(c_in, c_out)},
        "GINEConv": lambda: {"nn": _lin(c_in, c_out), "edge_dim": e},
        "EdgeConv": lambda: {"nn": _lin(2 * c_in, c_out)},
        "DynamicEdgeConv": lambda: {"nn": _lin(2 * c_in, c_out), "k": 3},
        "NNConv": lambda: {"nn": nn.Linear(e, c_in * c_out)},
        "PointNetConv": lambda: {"local_nn": _lin(c_in + d, c_out)},
        "PPFConv": lambda: {"local_nn": _lin(c_in + 4, c_out)},
        "PointTransformerConv": lambda: {"pos_nn": nn.Linear(d, c_out), "attn_nn": nn.Linear(c_out, c_out)},
        "PointGNNConv": lambda: {"mlp_h": nn.Linear(c_in, d), "mlp_f": _lin(c_in + d, c_in),
                                 "mlp_g": nn.Linear(c_in, c_in)},
        "PNAConv": lambda: {"aggregators": ["mean", "max"], "scalers": ["identity", "amplification"],
                            "deg": torch.tensor([0, 2, 3, 1]), "edge_dim": e, "towers": 1},
        "HGTConv": lambda: {"metadata": (["a"], [("a", "to", "a")])},
        "HANConv": lambda: {"metadata": (["a"], [("a", "to", "a")])},
        "HEATConv": lambda: {"num_node_types": 2, "num_edge_types": 2, "edge_type_emb_dim": 2, "edge_dim": e,
                             "edge_attr_emb_dim": 2},
        "GeneralConv": lambda: {"in_edge_channels": e},
        "GMMConv": lambda: {"dim": e, "kernel_size": 2},
        "SplineConv": lambda: {"dim": e, "kernel_size": 2},
        "CGConv": lambda: {"dim": e},
        "FusedGATConv": lambda: {"in_channels": c_in, "out_channels": c_out, "add_self_loops": False},
        "EGConv": lambda: {"num_heads": 2},
    }


# generic values by parameter name (first match wins); channel counts come from the reps
_GENERIC: dict[str, Callable[[int, int, int], Any]] = {
    "heads": lambda i, o, d: 2,
    "concat": lambda i, o, d: False,
    "edge_dim": lambda i, o, d: geometry_dim(d),
    "K": lambda i, o, d: 2,
    "num_layers": lambda i, o, d: 2,
    "alpha": lambda i, o, d: 0.1,
    "num_relations": lambda i, o, d: 2,
    "first_aggr": lambda i, o, d: True,
    "space_dimensions": lambda i, o, d: 2,
    "propagate_dimensions": lambda i, o, d: 2,
    "k": lambda i, o, d: 3,
    "filter_size": lambda i, o, d: 2,
    "hidden_channels": lambda i, o, d: 8,
    "kernel_size": lambda i, o, d: 2,
    "dim": lambda i, o, d: geometry_dim(d),
}


def build_layer(cls: type, c_in: int, c_out: int, d: int) -> nn.Module:
    """An instance of ``cls`` with ``c_in`` input and ``c_out`` output channels for ``d``-dimensional
    geometry, with arguments found from its constructor signature (float64).

    Layers with a single ``channels`` argument get ``c_in`` (and must then have ``c_in == c_out``).
    """
    from torch_geometric.nn.conv import MessagePassing  # noqa: PLC0415

    if not (isinstance(cls, type) and issubclass(cls, MessagePassing)):
        raise TypeError(f"cls: expected a torch_geometric MessagePassing class, got {cls!r}")
    check_int("c_in", c_in, 1)
    check_int("c_out", c_out, 1)
    check_int("d", d, 1)
    params = inspect.signature(cls.__init__).parameters
    special = _special(c_in, c_out, d).get(cls.__name__, dict)()
    kwargs: dict[str, Any] = {}
    for name, p in params.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name in special:
            kwargs[name] = special[name]
        elif name == "in_channels":
            kwargs[name] = c_in
        elif name in ("out_channels", "channels"):
            kwargs[name] = c_out if name == "out_channels" else c_in
        elif name in _GENERIC and (p.default is inspect.Parameter.empty or name in ("heads", "concat", "edge_dim")):
            kwargs[name] = _GENERIC[name](c_in, c_out, d)
    for name, value in special.items():
        kwargs.setdefault(name, value)
    if "concat" not in params and "heads" in kwargs and "concat" not in kwargs:
        kwargs.pop("heads")  # heads without concat=False would multiply the output width
    return cls(**kwargs).double()


def static_refusal(cls: type) -> str | None:
    """Why ``TFConv`` refuses every instance of ``cls`` from its signature alone (``None``: it may not);
    for layers that cannot be instantiated here (an optional dependency is missing)."""
    if not isinstance(cls, type):
        raise TypeError(f"cls: expected a layer class, got {type(cls).__name__}")
    from torch_geometric.nn.conv import MessagePassing

    bare = cls.__new__(cls)
    try:
        MessagePassing.__init__(bare)
    except Exception:  # noqa: BLE001
        return None
    try:
        inspect_layer(bare)
    except (TypeError, ValueError) as err:
        return str(err)
    return None


@dataclass
class SurveyRow:
    """One layer of the survey: the strategy ``TFConv`` chose, or why it refused the layer."""

    layer: str
    supported: bool
    mode: str | None
    reason: str | None
    reasons: dict[str, str] | None = None


def survey(d: int = 3, reps: str = SURVEY_REPS, classes: list[type] | None = None) -> list[SurveyRow]:
    """Wrap every layer of :func:`conv_layer_classes` with ``TFConv(layer, reps)`` (default mode)."""
    check_int("d", d, 1)
    r = TensorReps(reps, dim=d)
    rows = []
    for cls in conv_layer_classes() if classes is None else classes:
        try:
            layer = build_layer(cls, r.size, r.size, d)
        except ImportError as err:  # an optional dependency is missing: its signature may still refuse it
            why = static_refusal(cls)
            rows.append(SurveyRow(cls.__name__, False, None,
                                  why or f"cannot be built here ({str(err).splitlines()[0][:120]})"))
            continue
        try:
            conv = TFConv(layer, r)
        except (TypeError, ValueError) as err:
            rows.append(SurveyRow(cls.__name__, False, None, str(err), getattr(err, "reasons", None)))
            continue
        rows.append(SurveyRow(cls.__name__, True, conv.resolved_mode(), None))
    return rows


_TAGS = (
    ("differs from the per-receiver reference", "differs from the reference (multi-hop, or reads the senders' "
     "degrees)"),
    ("not the raw input features", "transforms x before propagating"),
    ("(multi-hop)", "propagates again (multi-hop)"),
    ("declares no bipartite", "no bipartite input"),
    ("takes no `edge_weight`", "no `edge_weight`"),
    ("is not linear", "non-linear aggregation"),
)


def _tag(reason: str) -> str:
    for key, tag in _TAGS:
        if key in reason:
            return tag
    text = reason.replace("fails on a probe graph ", "fails ").strip()
    return text if len(text) <= 90 else text[:87].rstrip() + "...)"


def _short(row: SurveyRow) -> str:
    """The why of a refusal in one table cell."""
    if row.reasons:
        text = "; ".join(f"{m}: {_tag(r)}" for m, r in row.reasons.items())
    else:
        text = (row.reason or "").split(" is not supported: ", 1)[-1]
        text = text.split(" (it builds", 1)[0].split(", which TFConv", 1)[0].replace("; no mode works", "")
    return text.replace("|", "\\|").replace("\n", " ")


def layer_table(rows: list[SurveyRow], d: int = 3, reps: str = SURVEY_REPS) -> str:
    """Markdown page of the survey (``docs/layers.md``)."""
    if not all(isinstance(r, SurveyRow) for r in rows):
        raise TypeError("rows: expected a list of SurveyRow (from survey())")
    import torch_geometric

    n_ok = sum(r.supported for r in rows)
    lines = [
        "# Supported PyG layers",
        "",
        "<!-- generated by `python benchmarks/layer_table.py`; tests/test_tf_all_layers.py checks it is current -->",
        "",
        f"Every `MessagePassing` class exported by `torch_geometric.nn.conv` (PyG {torch_geometric.__version__}),",
        f"built with generic arguments and wrapped as `TFConv(layer, \"{reps}\")` (d = {d}, default",
        "`mode=\"auto\"`). A supported layer is exactly O(d)-equivariant end to end (checked for d = 2..5 by",
        "`tests/test_tf_all_layers.py`); a refused one raises a `TypeError`/`ValueError` at construction.",
        "Support is decided per instance by a probe at construction: e.g. `SGConv(K=1)` (the default) is",
        "supported, `SGConv(K=2)` propagates twice and is refused. With all-scalar features (`0n` blocks",
        "only) nothing has to be moved between frames: every layer whose `forward` needs nothing beyond `x`,",
        "`edge_index`, `edge_attr` and `pos` then runs unchanged (`mode=\"plain\"`; `hook` for layers that",
        "read positions).",
        "",
        f"**{n_ok} supported, {len(rows) - n_ok} refused** of {len(rows)}.",
        "",
        "Strategies: `global` aggregates linear messages in the global frame; `hook` moves `x_j`/`pos_j`",
        "inside the layer's `message`; `expand` runs the layer on a bipartite graph of transported",
        "per-edge copies; `nodes` puts those copies into one graph as extra nodes; `gcn` adds",
        "degree-weighted self-loops to them for symmetric normalisation.",
        "",
        "| layer | supported | strategy | why refused |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| `{r.layer}` | {'yes' if r.supported else 'no'} | {r.mode or '-'} | "
                     f"{'' if r.reason is None else _short(r)} |")
    return "\n".join(lines) + "\n"
