"""Every message passing layer of torch_geometric.nn.conv, wrapped with TFConv in its default mode, is either
exactly O(d)-equivariant end to end (and equal to the per-receiver reference) or refused at construction
with a TypeError/ValueError that says why. The classes are enumerated, not hand-picked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GINConv, MessagePassing, SimpleConv

from equiframe.groups import random_orthogonal
from equiframe.nn import TFConv, ToGlobal, ToLocal
from equiframe.nn.tensor_frames.survey import (
    SURVEY_REPS,
    build_layer,
    conv_layer_classes,
    layer_table,
    static_refusal,
    survey,
)
from equiframe.reps import TensorReps

CLASSES = conv_layer_classes()
OTHER_D = (2, 4, 5)


def _cases():
    out = []
    for k, cls in enumerate(CLASSES):
        for d in (3, OTHER_D[k % len(OTHER_D)]):
            out.append(pytest.param(cls, d, id=f"{cls.__name__}-d{d}"))
    return out


def test_every_conv_class_is_enumerated():
    names = {c.__name__ for c in CLASSES}
    assert {"GCNConv", "GATConv", "ChebConv", "PointNetConv", "MessagePassing"} <= names
    assert len(CLASSES) >= 50
    ds = {d for c in _cases() for d in [c.values[1]]}
    assert ds == {2, 3, 4, 5}


def _graph(n: int, d: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """k-NN (k=3) plus a few random edges and one self-loop: irregular degrees."""
    pos = torch.randn(n, d, generator=gen, dtype=torch.float64)
    dist = torch.cdist(pos, pos)
    dist.fill_diagonal_(float("inf"))
    nb = dist.topk(3, largest=False).indices
    ei = torch.stack([nb.reshape(-1), torch.arange(n).repeat_interleave(3)])
    extra = torch.randint(0, n, (2, 5), generator=gen)
    extra = extra[:, extra[0] != extra[1]]
    return pos, torch.cat([ei, extra, torch.tensor([[0], [0]])], 1)


def _transform(d: int, gen: torch.Generator, reflect: bool) -> tuple[Tensor, Tensor]:
    Q = random_orthogonal((), d, generator=gen)
    if (torch.linalg.det(Q) < 0) != reflect:
        Q = Q.clone()
        Q[0] = -Q[0]
    return Q, torch.randn(d, generator=gen, dtype=torch.float64)


def _end_to_end(conv: nn.Module, reps: TensorReps, F, ei, frames, pos):
    to_local, to_global = ToLocal(reps), ToGlobal(conv.reps_out)
    out = conv(to_local(F, frames, pos), ei, frames, pos)
    return to_global(out[0] if isinstance(out, tuple) else out, frames, pos)


def equivariance_error(conv, reps, d, gen, *, co_rotate_frames=True, n=12, device="cpu"):
    """Largest relative error of f(g.x) vs g.f(x) over a rotation and a reflection (plus translations); the
    inputs are drawn on the CPU (the same numbers on every device) and moved to ``device``."""
    pos, ei = (t.to(device) for t in _graph(n, d, gen))
    F = torch.randn(n, reps.size, generator=gen, dtype=torch.float64).to(device)
    frames = random_orthogonal(n, d, generator=gen).to(device)
    out = _end_to_end(conv, reps, F, ei, frames, pos)
    worst = 0.0
    for reflect in (False, True):
        Q, s = (t.to(device) for t in _transform(d, gen, reflect))
        frames2 = frames @ Q.T if co_rotate_frames else frames
        out2 = _end_to_end(conv, reps, reps.transform(F, Q), ei, frames2, pos @ Q.T + s)
        want = conv.reps_out.transform(out, Q)
        worst = max(worst, float((out2 - want).abs().max() / out.abs().max().clamp(min=1e-12)))
    return worst


@pytest.mark.parametrize(("cls", "d"), _cases())
def test_layer_is_exact_or_refused_at_construction(cls, d, device):
    reps = TensorReps(SURVEY_REPS, dim=d)
    torch.manual_seed(0)  # parameter initialisation of the PyG layer
    try:
        layer = build_layer(cls, reps.size, reps.size, d)
    except ImportError as err:
        why = static_refusal(cls)
        if why is None:
            pytest.skip(f"{cls.__name__} cannot be built here: {err}")
        with pytest.raises(TypeError, match="not supported"):
            TFConv(_bare(cls), reps)
        return
    try:
        conv = TFConv(layer, reps)
    except (TypeError, ValueError) as err:  # refused: it must say why and what would work
        msg = str(err)
        assert cls.__name__ in msg, msg
        assert "mode" in msg, msg
        return
    conv = conv.to(device)
    gen = torch.Generator().manual_seed(d)
    err = equivariance_error(conv, reps, d, gen, device=device)
    assert err <= 1e-9, (cls.__name__, conv.resolved_mode(), err)
    # the same function as the per-receiver reference (not only some equivariant function); in eval mode,
    # where no batch statistics couple the nodes (the reference runs the layer once per receiver)
    conv.eval()
    pos, ei = (t.to(device) for t in _graph(12, d, gen))
    x = torch.randn(12, reps.size, generator=gen, dtype=torch.float64).to(device)
    frames = random_orthogonal(12, d, generator=gen).to(device)
    out = conv(x, ei, frames, pos)
    out = out[0] if isinstance(out, tuple) else out
    ref = conv.reference(x, ei, frames, pos)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9 * float(ref.abs().max()))


def _bare(cls):
    bare = cls.__new__(cls)
    MessagePassing.__init__(bare)
    return bare


def test_docs_table_is_current():
    """docs/layers.md is generated by benchmarks/layer_table.py from the survey."""
    path = Path(__file__).resolve().parents[1] / "docs" / "layers.md"
    torch.manual_seed(0)
    assert path.read_text() == layer_table(survey(3)), "run `python benchmarks/layer_table.py`"


# ------------------------------------------------------------------------------------- capability dispatch
class RenamedGat(GATConv):
    """A subclass with a new name: dispatch must not depend on the class name."""


class MeanOfNeighbours(MessagePassing):
    """A fresh layer: mean of the neighbours' raw features (linear message, linear aggregation)."""

    def __init__(self):
        super().__init__(aggr="mean")

    def forward(self, x, edge_index):
        return self.propagate(edge_index, x=x)


class ProjectThenMax(MessagePassing):
    """A fresh layer that projects x before propagating, max aggregation, no bipartite annotation."""

    def __init__(self, c):
        super().__init__(aggr="max")
        self.lin = nn.Linear(c, c)

    def forward(self, x, edge_index):
        h = self.lin(x)
        return self.propagate(edge_index, h=h) + x

    def message(self, h_j):
        return torch.tanh(h_j)


class TwoHops(MessagePassing):
    """A fresh multi-hop layer: propagates twice."""

    def __init__(self):
        super().__init__(aggr="add")

    def forward(self, x, edge_index):
        return self.propagate(edge_index, x=self.propagate(edge_index, x=x))


def test_dispatch_by_capability_not_by_name():
    reps = TensorReps(SURVEY_REPS, dim=3)
    c = reps.size
    assert TFConv(RenamedGat(c, c, edge_dim=4), reps).resolved_mode() == TFConv(
        GATConv(c, c, edge_dim=4), reps).resolved_mode() == "expand"
    assert TFConv(MeanOfNeighbours(), reps).resolved_mode() == "global"
    assert TFConv(ProjectThenMax(c).double(), reps).resolved_mode() == "nodes"
    with pytest.raises(TypeError, match="TwoHops is not supported.*plain"):
        TFConv(TwoHops(), reps)
    assert TFConv(TwoHops(), "5x0n").resolved_mode() == "plain"  # scalars: nothing to move
    gen = torch.Generator().manual_seed(1)
    for layer in (MeanOfNeighbours(), ProjectThenMax(c).double()):
        assert equivariance_error(TFConv(layer, reps), reps, 3, gen) <= 1e-9


def test_forced_mode_is_checked_at_construction():
    reps = TensorReps(SURVEY_REPS, dim=3)
    c = reps.size
    with pytest.raises(ValueError, match=r"mode: 'hook' is invalid for ProjectThenMax.*modes that work: \['nodes'"):
        TFConv(ProjectThenMax(c), reps, mode="hook")
    with pytest.raises(ValueError, match="mode: 'expand'"):
        TFConv(TwoHops(), reps, mode="expand")


def test_sizes_are_checked_at_construction(device):
    reps = TensorReps(SURVEY_REPS, dim=3)
    c = reps.size
    with pytest.raises(ValueError, match=r"reps_in: .* in_channels=7"):
        TFConv(GATConv(7, c, edge_dim=4), reps)
    with pytest.raises(ValueError, match=r"edge_dim=2.*edge_dim=4"):
        TFConv(GATConv(c, c, edge_dim=2), reps)
    with pytest.raises(ValueError, match="reps_edge"):
        TFConv(GATConv(c, c, edge_dim=4), reps, reps_edge="1x1n")  # needs edge_dim 3 + 4
    conv = TFConv(GATConv(c, c, edge_dim=6), reps).to(device)  # 2 user edge channels + 4 geometry channels
    n = 6
    x, pos = torch.randn(n, c, device=device), torch.randn(n, 3, device=device)
    frames = random_orthogonal(n, 3, dtype=torch.float32).to(device)
    ei = torch.tensor([[0, 1, 2], [1, 2, 3]], device=device)
    with pytest.raises(ValueError, match=r"edge_attr: .* edge_dim=6"):
        conv(x, ei, frames, pos, edge_attr=torch.randn(3, 3, device=device))
    assert conv(x, ei, frames, pos, edge_attr=torch.randn(3, 2, device=device)).shape == (n, c)
    with pytest.raises(ValueError, match="frames"):  # the wrong argument is named, not `pos`
        conv(x, ei, frames[:, :2, :2], pos, edge_attr=torch.randn(3, 2, device=device))
    if device.type != "cpu":  # inputs on two devices: named, not a device error from inside PyG
        with pytest.raises(ValueError, match="device|is on"):
            conv(x.cpu(), ei, frames, pos, edge_attr=torch.randn(3, 2, device=device))


# -------------------------------------------------------------------------------------- negative controls
def test_negative_control_transport_disabled_non_equivariant_frames():
    """A layer equivariant in global coordinates (sum of neighbours) gives an equivariant network for ANY
    frames with transport -- even frames that do not co-rotate -- and a broken one without."""
    for d in (2, 3):
        reps = TensorReps(SURVEY_REPS, dim=d)
        gen = torch.Generator().manual_seed(d)
        on = TFConv(SimpleConv(aggr="add"), reps)
        off = TFConv(SimpleConv(aggr="add"), reps, transport=False)
        assert equivariance_error(on, reps, d, gen, co_rotate_frames=False) <= 1e-9
        assert equivariance_error(off, reps, d, gen, co_rotate_frames=False) > 1e-3


def test_negative_control_plain_layer_on_global_vectors():
    """An unwrapped layer fed global vectors is not equivariant: the check must fail."""
    reps = TensorReps(SURVEY_REPS, dim=3)
    torch.manual_seed(0)
    layer = GINConv(nn.Sequential(nn.Linear(reps.size, 8), nn.Tanh(), nn.Linear(8, reps.size))).double()

    gen = torch.Generator().manual_seed(3)
    pos, ei = _graph(12, 3, gen)
    F = torch.randn(12, reps.size, generator=gen, dtype=torch.float64)
    Q, s = _transform(3, gen, True)
    out = layer(F, ei)
    out2 = layer(reps.transform(F, Q), ei)
    assert float((out2 - reps.transform(out, Q)).abs().max()) > 1e-3
