"""Tests of the tensor-frame wrapper TFConv, ToLocal/ToGlobal and the transport engine."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_geometric.nn import (
    EdgeConv,
    GATConv,
    GATv2Conv,
    GCNConv,
    GINConv,
    GINEConv,
    GraphConv,
    PointNetConv,
    PointTransformerConv,
    SAGEConv,
    TransformerConv,
)

from equiframe.groups import random_orthogonal
from equiframe.nn.tensor_frames import (
    TFConv,
    TFGraph,
    ToGlobal,
    ToLocal,
    edge_frames,
    local_edge_geometry,
    safe_length,
    transport,
)
from equiframe.nn.tf_transport import kron_power, receiver_layout, transport_edges
from equiframe.reps import TensorReps

REPS_IN = "3x0n+2x1n+1x1p+1x2n"
REPS_OUT = "2x0n+1x1n+1x1p+1x2n"  # scalar, vector, pseudo-vector and order-2 outputs


# ------------------------------------------------------------------------------------------------ helpers
def knn_batch(sizes, d, k, gen, dtype):
    """Points of several graphs and a per-graph k-NN graph (sorted by receiver, k per receiver)."""
    pos = torch.randn(sum(sizes), d, generator=gen, dtype=torch.float64).to(dtype)
    batch = torch.cat([torch.full((n,), b) for b, n in enumerate(sizes)])
    dist = torch.cdist(pos.double(), pos.double())
    dist[batch[:, None] != batch[None, :]] = float("inf")
    dist.fill_diagonal_(float("inf"))
    nb = dist.topk(k, largest=False).indices  # [N, k]
    ei = torch.stack([nb.reshape(-1), torch.arange(pos.shape[0]).repeat_interleave(k)])
    return pos, batch, ei


def random_batch_graph(sizes, e_per, gen):
    """Random edges within each graph (unsorted, variable degree, with self-loops and duplicates)."""
    out, off = [], 0
    for n in sizes:
        out.append(torch.randint(0, n, (2, e_per), generator=gen) + off)
        off += n
    return torch.cat(out, 1)


def transforms(n_graphs, d, gen, dtype):
    """Per-graph group elements: alternating proper rotations and reflections, plus translations."""
    Q = random_orthogonal(n_graphs, d, generator=gen)
    det = torch.linalg.det(Q)
    want = torch.tensor([1.0 if b % 2 == 0 else -1.0 for b in range(n_graphs)], dtype=torch.float64)
    Q[:, 0] = Q[:, 0] * (det * want).unsqueeze(-1)  # force the sign pattern
    s = torch.randn(n_graphs, d, generator=gen, dtype=torch.float64)
    return Q.to(dtype), s.to(dtype)


def mlp(i, o, h=16):
    return nn.Sequential(nn.Linear(i, h), nn.Tanh(), nn.Linear(h, o))


def make_layer(name, c_in, c_out, d):
    e = d + 1
    return {
        "GCNConv": lambda: GCNConv(c_in, c_out),
        "GINConv": lambda: GINConv(mlp(c_in, c_out)),
        "GINEConv": lambda: GINEConv(mlp(c_in, c_out), edge_dim=e),
        "SAGEConv": lambda: SAGEConv(c_in, c_out),
        "SAGEConv_project": lambda: SAGEConv(c_in, c_out, project=True),
        "GraphConv": lambda: GraphConv(c_in, c_out),
        "GATConv": lambda: GATConv(c_in, c_out, heads=2, concat=False, edge_dim=e),
        "GATv2Conv": lambda: GATv2Conv(c_in, c_out, heads=2, concat=False, edge_dim=e),
        "TransformerConv": lambda: TransformerConv(c_in, c_out, heads=2, concat=False, edge_dim=e),
        "EdgeConv": lambda: EdgeConv(mlp(2 * c_in, c_out)),
        "PointNetConv": lambda: PointNetConv(mlp(c_in + d, c_out)),
        "PointTransformerConv": lambda: PointTransformerConv(c_in, c_out, pos_nn=nn.Linear(d, c_out)),
    }[name]()


LAYERS = [
    "GCNConv", "GINConv", "GINEConv", "SAGEConv", "SAGEConv_project", "GraphConv", "GATConv", "GATv2Conv",
    "TransformerConv", "EdgeConv", "PointNetConv", "PointTransformerConv",
]


class Net(nn.Module):
    """frames -> ToLocal -> two wrapped layers -> ToGlobal."""

    def __init__(self, name, reps_in, reps_out, d, hidden="4x0n+2x1n+1x2n", transport=True):
        super().__init__()
        r_in, r_h, r_out = (TensorReps(r, dim=d) for r in (reps_in, hidden, reps_out))
        self.to_local = ToLocal(r_in)
        self.conv1 = TFConv(make_layer(name, r_in.size, r_h.size, d), r_in, r_h, transport=transport)
        self.conv2 = TFConv(make_layer(name, r_h.size, r_out.size, d), r_h, r_out, transport=transport)
        self.to_global = ToGlobal(r_out)

    def forward(self, F, ei, frames, pos):
        f = self.to_local(F, frames, pos)
        f = torch.tanh(self.conv1(f, ei, frames, pos))  # any pointwise function of local features is fine
        f = self.conv2(f, ei, frames, pos)
        return self.to_global(f, frames, pos)


def equivariance_error(net, reps_in, reps_out, d, dtype, gen, graph="knn", device="cpu"):
    """Relative error of net(g.x) vs g.net(x) (inputs drawn on the CPU, then moved to ``device``)."""
    return _equivariance_error(net.to(device), reps_in, reps_out, d, dtype, gen, graph,
                               lambda t: t.to(device) if isinstance(t, torch.Tensor) else t)


def _equivariance_error(net, reps_in, reps_out, d, dtype, gen, graph, dev):
    sizes = [7, 9, 8]
    pos, batch, ei = knn_batch(sizes, d, 3, gen, dtype)
    if graph == "random":
        ei = random_batch_graph(sizes, 20, gen)
    r_in, r_out = TensorReps(reps_in, dim=d), TensorReps(reps_out, dim=d)
    n = pos.shape[0]
    F = torch.randn(n, r_in.size, generator=gen, dtype=torch.float64).to(dtype)
    frames = random_orthogonal(n, d, generator=gen, dtype=dtype)
    Q, s = transforms(len(sizes), d, gen, dtype)
    Qn, sn = Q[batch], s[batch]
    pos, ei, F, frames, Qn, sn = (dev(t) for t in (pos, ei, F, frames, Qn, sn))
    out = net(F, ei, frames, pos)
    F2 = r_in.transform(F, Qn, sn)
    pos2 = (Qn @ pos.unsqueeze(-1)).squeeze(-1) + sn
    frames2 = frames @ Qn.transpose(1, 2)  # equivariant frames: R_i -> R_i Q^T
    out2 = net(F2, ei, frames2, pos2)
    want = r_out.transform(out, Qn, sn)
    scale = out.abs().max().clamp(min=1e-12)
    return ((out2 - want).abs().max() / scale).item()


# ------------------------------------------------------------------------------------------------ tests
FAST_D = {"GATConv", "PointNetConv", "EdgeConv", "GINConv"}  # d = 2 and 4 in the default run for these


def _d_params():
    out = []
    for name in LAYERS:
        for d in (2, 3, 4):
            marks = () if d == 3 or name in FAST_D else (pytest.mark.slow,)
            out.append(pytest.param(name, d, marks=marks, id=f"{name}-d{d}"))
    return out


@pytest.mark.parametrize(("name", "d"), _d_params())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_wrapped_layer_equivariance(name, d, dtype, device):
    gen = torch.Generator().manual_seed(100 * LAYERS.index(name) + d)
    torch.manual_seed(0)
    net = Net(name, REPS_IN, REPS_OUT, d).to(dtype)
    err = equivariance_error(net, REPS_IN, REPS_OUT, d, dtype, gen, device=device)
    assert err <= (1e-9 if dtype == torch.float64 else 1e-4), err


@pytest.mark.parametrize("name", ["GINConv", "GATConv", "PointNetConv", "GCNConv", "EdgeConv"])
def test_wrapped_layer_equivariance_random_graph_and_pos_features(name):
    """Unsorted variable-degree graphs with self-loops/duplicates (padded layout) and position-typed input."""
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(1)
    reps_in = "2x0n+1x1n+1x1p+1x2n+1xpos"
    net = Net(name, reps_in, REPS_OUT, 3).double()
    assert equivariance_error(net, reps_in, REPS_OUT, 3, torch.float64, gen, graph="random") <= 1e-9


@pytest.mark.parametrize("name", ["GINConv", "PointNetConv", "GATConv"])
def test_without_transport_still_invariant_for_equivariant_frames(name):
    """Documented fact: f_j = rho(R_j) F_j is itself invariant, so even untransported messages give an
    equivariant network when the frames are equivariant. Transport is about *consistency* (next test)."""
    gen = torch.Generator().manual_seed(11)
    torch.manual_seed(0)
    net = Net(name, REPS_IN, REPS_OUT, 3, transport=False).double()
    assert equivariance_error(net, REPS_IN, REPS_OUT, 3, torch.float64, gen) <= 1e-9


@pytest.mark.parametrize("name", ["GINConv", "GCNConv", "SAGEConv", "GraphConv"])
@pytest.mark.parametrize("transport_on", [True, False])
def test_negative_control_frame_independence_needs_transport(name, transport_on):
    """A layer that is already O(d)-equivariant in global coordinates (linear aggregation, identity channel
    mixing) must give the same global result for ANY choice of node frames -- only with transport.

    Without transport the messages mix tensors expressed in different frames (sum_j rho(R_j) F_j): the
    result depends on the arbitrary frames and so is not equivariant for non-equivariant frame choices."""
    gen = torch.Generator().manual_seed(16)
    d, reps = 3, TensorReps(REPS_IN, dim=3)
    pos, _, ei = knn_batch([12], d, 4, gen, torch.float64)
    n = pos.shape[0]
    F = torch.randn(n, reps.size, generator=gen, dtype=torch.float64)
    c = reps.size
    eye = torch.eye(c, dtype=torch.float64)
    if name == "GINConv":
        layer = GINConv(nn.Identity(), eps=0.5)
    elif name == "GCNConv":
        layer = GCNConv(c, c, bias=False).double()
        layer.lin.weight.data.copy_(eye)
    elif name == "SAGEConv":
        layer = SAGEConv(c, c, bias=False).double()
        layer.lin_l.weight.data.copy_(eye)
        layer.lin_r.weight.data.copy_(2 * eye)
    else:
        layer = GraphConv(c, c, bias=False).double()
        layer.lin_rel.weight.data.copy_(eye)
        layer.lin_root.weight.data.copy_(-eye)
    conv = TFConv(layer, reps, transport=transport_on)
    outs = []
    for _ in range(2):  # two unrelated frame choices
        R = random_orthogonal(n, d, generator=gen)
        outs.append(reps.to_global(conv(reps.to_local(F, R), ei, R, pos), R))
    err = (outs[0] - outs[1]).abs().max().item()
    if transport_on:
        assert err <= 1e-12
    else:
        assert err > 1e-3


def test_negative_control_wrong_reps_declaration():
    """Vectors declared as scalars are not transported and not rotated: equivariance breaks."""
    gen = torch.Generator().manual_seed(12)
    torch.manual_seed(0)
    true_reps = "2x0n+2x1n"
    net = Net("GINConv", "8x0n", "2x0n+1x1n", 3).double()  # declares the 8 channels as scalars

    class Wrong(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, F, ei, frames, pos):
            return self.net(F, ei, frames, pos)

    err = equivariance_error(Wrong(), true_reps, "2x0n+1x1n", 3, torch.float64, gen)
    assert err > 1e-3


def _plain_call(layer, conv, x, ei, pos, edge_attr_geom):
    if isinstance(layer, (PointNetConv, PointTransformerConv)):
        return layer(x, pos, ei)
    if conv.edge_geometry != "none":
        return layer(x, ei, edge_attr=edge_attr_geom)
    return layer(x, ei)


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("mode", ["auto", "expand"])
def test_identity_frames_equal_plain_backbone(name, mode):
    """With identity frames, the wrapped layer is exactly the plain layer on the raw features."""
    if name == "GCNConv" and mode == "expand":
        pytest.skip("GCNConv takes no bipartite input; covered by the gcn adapter")
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(0)
    d, reps = 3, TensorReps(REPS_IN, dim=3)
    pos, _, ei = knn_batch([8, 9], d, 3, gen, torch.float64)
    ei = torch.cat([ei, torch.tensor([[2, 5, 5], [2, 5, 5]])], 1)  # self-loops, one duplicated
    x = torch.randn(pos.shape[0], reps.size, generator=gen, dtype=torch.float64)
    layer = make_layer(name, reps.size, reps.size, d).double()
    conv = TFConv(layer, reps, mode=mode)
    eye = torch.eye(d, dtype=torch.float64).expand(pos.shape[0], d, d)
    geom = local_edge_geometry(pos, pos, None, ei[0], ei[1])
    out = conv(x, ei, eye, pos)
    ref = _plain_call(layer, conv, x, ei, pos, geom)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kw", [{}, {"improved": True}, {"add_self_loops": False}, {"normalize": False}])
@pytest.mark.parametrize("mode", ["auto", "gcn"])
def test_gcn_adapter_reproduces_normalisation(kw, mode):
    gen = torch.Generator().manual_seed(4)
    torch.manual_seed(0)
    reps = TensorReps("2x0n+1x1n", dim=3)
    n = 12
    ei = torch.cat([random_batch_graph([n], 40, gen), torch.tensor([[1, 1], [1, 1]])], 1)
    x = torch.randn(n, reps.size, generator=gen, dtype=torch.float64)
    w = torch.rand(ei.shape[1], generator=gen, dtype=torch.float64)
    layer = GCNConv(reps.size, reps.size, **kw).double()
    conv = TFConv(layer, reps, mode=mode)
    assert conv.resolved_mode() == ("global" if mode == "auto" else "gcn")
    eye = torch.eye(3, dtype=torch.float64).expand(n, 3, 3)
    torch.testing.assert_close(conv(x, ei, eye, edge_weight=w), layer(x, ei, w), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["GATConv", "GINEConv", "PointNetConv", "EdgeConv", "GCNConv"])
def test_all_scalar_reps_is_invariant_message_passing(name):
    """Scalars need no transport: the layer runs on the raw graph ('plain'), only geometry is local."""
    gen = torch.Generator().manual_seed(6)
    torch.manual_seed(0)
    d, reps = 3, TensorReps("6x0n", dim=3)
    pos, _, ei = knn_batch([10], d, 3, gen, torch.float64)
    x = torch.randn(pos.shape[0], reps.size, generator=gen, dtype=torch.float64)
    frames = random_orthogonal(pos.shape[0], d, generator=gen)
    layer = make_layer(name, reps.size, reps.size, d).double()
    conv = TFConv(layer, reps)
    expected_mode = "hook" if name == "PointNetConv" else "plain"
    assert conv.resolved_mode() == expected_mode
    out = conv(x, ei, frames, pos)
    if name == "PointNetConv":  # positions in the receiver frame: emulate with the per-edge reference
        rel = local_edge_geometry(pos, pos, frames, ei[0], ei[1], "rel")
        msg = layer.local_nn(torch.cat([x[ei[0]], rel], 1))
        # PointNetConv adds self-loops (message at zero offset) and max-aggregates; every node has k edges
        self_msg = layer.local_nn(torch.cat([x, torch.zeros_like(pos)], 1))
        ref = torch.maximum(msg.view(pos.shape[0], 3, -1).amax(1), self_msg)
    else:
        geom = local_edge_geometry(pos, pos, frames, ei[0], ei[1])
        ref = _plain_call(layer, conv, x, ei, pos, geom)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["GATConv", "EdgeConv", "PointNetConv", "TransformerConv", "GCNConv"])
def test_global_frame_equals_rotated_input(name):
    """All nodes share one frame R: the wrapped layer equals the plain layer on the input rotated by R."""
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(0)
    d, reps = 3, TensorReps(REPS_IN, dim=3)
    pos, _, ei = knn_batch([11], d, 4, gen, torch.float64)
    n = pos.shape[0]
    F = torch.randn(n, reps.size, generator=gen, dtype=torch.float64)
    R = random_orthogonal((), d, generator=gen)
    frames = R.expand(n, d, d)
    layer = make_layer(name, reps.size, reps.size, d).double()
    conv = TFConv(layer, reps)
    out = conv(reps.transform(F, R), ei, frames, pos)
    pos_r = pos @ R.T
    geom = local_edge_geometry(pos_r, pos_r, None, ei[0], ei[1])
    ref = _plain_call(layer, conv, reps.transform(F, R), ei, pos_r, geom)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["GINConv", "SAGEConv", "EdgeConv", "PointNetConv", "GINEConv", "GraphConv"])
def test_hook_and_expand_agree(name):
    """Per-edge hooks and the edge-expanded bipartite graph compute the same function."""
    gen = torch.Generator().manual_seed(8)
    torch.manual_seed(0)
    d, reps = 3, TensorReps(REPS_IN + "+1xpos", dim=3)
    pos, _, ei = knn_batch([9, 6], d, 3, gen, torch.float64)
    n = pos.shape[0]
    x = torch.randn(n, reps.size, generator=gen, dtype=torch.float64)
    frames = random_orthogonal(n, d, generator=gen)
    layer = make_layer(name, reps.size, reps.size, d).double()
    a = TFConv(layer, reps, mode="hook")(x, ei, frames, pos)
    b = TFConv(layer, reps, mode="expand")(x, ei, frames, pos)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["GINConv", "SAGEConv", "GraphConv", "GCNConv"])
def test_global_mode_equals_per_edge_transport(name):
    """Linear messages + sum/mean aggregation: aggregating rho(R_j^T) f_j in the global frame and rotating
    the sum by rho(R_i) equals transporting every message (LLoCa-style O(N) transport)."""
    gen = torch.Generator().manual_seed(17)
    torch.manual_seed(0)
    d, reps = 3, TensorReps(REPS_IN, dim=3)
    pos, _, ei = knn_batch([9, 7], d, 3, gen, torch.float64)
    ei = torch.cat([ei, random_batch_graph([16], 10, gen)], 1)  # irregular degrees too
    n = pos.shape[0]
    x = torch.randn(n, reps.size, generator=gen, dtype=torch.float64)
    frames = random_orthogonal(n, d, generator=gen)
    layer = make_layer(name, reps.size, reps.size, d).double()
    fast = TFConv(layer, reps)
    assert fast.resolved_mode() == "global"
    slow = TFConv(layer, reps, mode="gcn" if name == "GCNConv" else "hook")
    torch.testing.assert_close(fast(x, ei, frames, pos), slow(x, ei, frames, pos), rtol=0, atol=1e-12)
    if name == "SAGEConv":  # a non-linear aggregation cannot go through the global frame
        lay_max = SAGEConv(reps.size, reps.size, aggr="max").double()
        assert TFConv(lay_max, reps).resolved_mode() == "hook"
        with pytest.raises(ValueError, match="global"):
            TFConv(lay_max, reps, mode="global")


def test_hook_verification_and_fallback():
    gen = torch.Generator().manual_seed(9)
    d, reps = 3, TensorReps(REPS_IN, dim=3)
    pos, _, ei = knn_batch([10], d, 3, gen, torch.float64)
    n = pos.shape[0]
    x = torch.randn(n, reps.size, generator=gen, dtype=torch.float64)
    frames = random_orthogonal(n, d, generator=gen)
    # SAGEConv(project=True) transforms x before propagate: auto falls back to expand, explicit hook refuses
    layer = SAGEConv(reps.size, reps.size, project=True).double()
    auto = TFConv(layer, reps)(x, ei, frames, pos)
    torch.testing.assert_close(auto, TFConv(layer, reps, mode="expand")(x, ei, frames, pos), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="hook"):
        TFConv(layer, reps, mode="hook")(x, ei, frames, pos)
    gat = GATConv(reps.size, reps.size, edge_dim=d + 1).double()
    with pytest.raises(ValueError, match="hook"):
        TFConv(gat, reps, mode="hook")(x, ei, frames, pos)
    # no hook survives a call, successful or not
    gcn = GCNConv(reps.size, reps.size).double()
    TFConv(gcn, reps)(x, ei, frames, pos)
    for lay in (layer, gat, gcn):
        assert not lay._propagate_forward_pre_hooks and not lay._message_forward_pre_hooks
        assert not lay._edge_update_forward_pre_hooks and not lay._aggregate_forward_hooks
    assert not gcn.lin._forward_hooks


def test_bipartite_graph_with_own_frames():
    gen = torch.Generator().manual_seed(10)
    torch.manual_seed(0)
    d, reps, reps_out = 3, TensorReps(REPS_IN, dim=3), TensorReps(REPS_OUT, dim=3)
    ns, nt = 9, 5
    ps = torch.randn(ns, d, generator=gen, dtype=torch.float64)
    pt = torch.randn(nt, d, generator=gen, dtype=torch.float64)
    ei = torch.stack([torch.randint(0, ns, (20,), generator=gen), torch.randint(0, nt, (20,), generator=gen)])
    Fs = torch.randn(ns, reps.size, generator=gen, dtype=torch.float64)
    Ft = torch.randn(nt, reps.size, generator=gen, dtype=torch.float64)
    Rs = random_orthogonal(ns, d, generator=gen)
    Rt = random_orthogonal(nt, d, generator=gen)
    Q, s = transforms(1, d, gen, torch.float64)
    Q, s = Q[0], s[0]
    for name in ["GATConv", "SAGEConv", "EdgeConv", "PointNetConv", "TransformerConv", "GINEConv"]:
        layer = make_layer(name, reps.size, reps_out.size, d).double()
        if hasattr(layer, "add_self_loops"):
            layer.add_self_loops = False
        conv = TFConv(layer, reps, reps_out)

        def run(Fs, Ft, Rs, Rt, ps, pt):
            out = conv((reps.to_local(Fs, Rs), reps.to_local(Ft, Rt)), ei, (Rs, Rt), (ps, pt))
            return reps_out.to_global(out, Rt)

        out = run(Fs, Ft, Rs, Rt, ps, pt)
        out2 = run(reps.transform(Fs, Q), reps.transform(Ft, Q), Rs @ Q.T, Rt @ Q.T, ps @ Q.T + s, pt @ Q.T + s)
        torch.testing.assert_close(out2, reps_out.transform(out, Q), rtol=0, atol=1e-10, msg=name)
        # identity frames == the plain bipartite layer
        eye_s = torch.eye(d, dtype=torch.float64).expand(ns, d, d)
        eye_t = torch.eye(d, dtype=torch.float64).expand(nt, d, d)
        got = conv((Fs, Ft), ei, (eye_s, eye_t), (ps, pt))
        geom = local_edge_geometry(ps, pt, None, ei[0], ei[1])
        if name == "PointNetConv":
            ref = layer((Fs, Ft), (ps, pt), ei)
        elif conv.edge_geometry != "none":
            ref = layer((Fs, Ft), ei, edge_attr=geom)
        else:
            ref = layer((Fs, Ft), ei)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-12, msg=name)


@pytest.mark.parametrize("name", ["GATConv", "PointNetConv", "GINEConv", "PointTransformerConv"])
def test_degenerate_geometry_finite_derivatives(name):
    gen = torch.Generator().manual_seed(13)
    torch.manual_seed(0)
    d, reps = 3, TensorReps(REPS_IN, dim=3)
    n = 6
    pos = torch.randn(n, d, generator=gen, dtype=torch.float64)
    pos[1] = pos[0]  # duplicate points
    pos[2] = pos[0]
    ei = torch.tensor([[1, 2, 0, 0, 3, 4, 5, 3], [0, 0, 1, 0, 4, 5, 3, 3]])  # zero-length edges and self-loops
    x = torch.randn(n, reps.size, generator=gen, dtype=torch.float64)
    frames = random_orthogonal(n, d, generator=gen)
    layer = make_layer(name, reps.size, reps.size, d).double()
    conv = TFConv(layer, reps)
    pos = pos.requires_grad_(True)
    out = conv(x, ei, frames, pos)
    assert torch.isfinite(out).all()
    (g,) = torch.autograd.grad(out.square().sum(), pos, create_graph=True)
    assert torch.isfinite(g).all()
    (h,) = torch.autograd.grad(g.sum(), pos)
    assert torch.isfinite(h).all()


def test_float32_then_float64_same_module():
    """No dtype caches: a module used in float32 and then in float64 stays exact."""
    gen = torch.Generator().manual_seed(14)
    torch.manual_seed(0)
    net = Net("GATConv", REPS_IN, REPS_OUT, 3)
    assert equivariance_error(net, REPS_IN, REPS_OUT, 3, torch.float32, gen) <= 1e-4
    net = net.double()
    assert equivariance_error(net, REPS_IN, REPS_OUT, 3, torch.float64, gen) <= 1e-9


def test_frames_derived_from_geometry():
    """Gram-Schmidt frames built from the points are equivariant by construction; the pipeline is too."""
    gen = torch.Generator().manual_seed(15)
    torch.manual_seed(0)
    d = 3
    reps, reps_out = TensorReps(REPS_IN, dim=d), TensorReps(REPS_OUT, dim=d)
    pos, _, ei = knn_batch([12], d, 4, gen, torch.float64)
    n = pos.shape[0]

    def gs_frames(p):
        c = p.mean(0)
        vs = torch.stack([p - c, p.roll(1, 0) - c, p.roll(2, 0) - c], 1)  # [n, 3, d] equivariant vectors
        rows = []
        for k in range(d):
            v = vs[:, k]
            for r in rows:
                v = v - (v * r).sum(-1, keepdim=True) * r
            rows.append(v / v.norm(dim=-1, keepdim=True))
        return torch.stack(rows, 1)

    layer = GATConv(reps.size, reps_out.size, edge_dim=d + 1).double()
    conv = TFConv(layer, reps, reps_out)
    F = torch.randn(n, reps.size, generator=gen, dtype=torch.float64)

    def run(F, p):
        R = gs_frames(p)
        return reps_out.to_global(conv(reps.to_local(F, R), ei, R, p), R)

    Q, s = transforms(1, d, gen, torch.float64)
    out = run(F, pos)
    torch.testing.assert_close(run(reps.transform(F, Q[0]), pos @ Q[0].T + s[0]), reps_out.transform(out, Q[0]),
                               rtol=0, atol=1e-10)


# ------------------------------------------------------------------------------------------------ pieces
@pytest.mark.parametrize("d", [2, 3, 4])
def test_to_local_to_global(d, device):
    gen = torch.Generator().manual_seed(20)
    reps = TensorReps("2x0n+1x0p+1x1n+1x1p+1x2n+1x2p+1xpos", dim=d)
    n = 7
    F = torch.randn(n, reps.size, generator=gen, dtype=torch.float64).to(device)
    pos = torch.randn(n, d, generator=gen, dtype=torch.float64).to(device)
    frames = random_orthogonal(n, d, generator=gen).to(device)
    to_l, to_g = ToLocal(reps), ToGlobal(reps)
    f = to_l(F, frames, pos)
    torch.testing.assert_close(to_g(f, frames, pos), F, rtol=0, atol=1e-12)
    Q, s = (t.to(device) for t in transforms(1, d, gen, torch.float64))
    f2 = to_l(reps.transform(F, Q[0], s[0]), frames @ Q[0].T, pos @ Q[0].T + s[0])
    torch.testing.assert_close(f2, f, rtol=0, atol=1e-12)  # local features are invariant
    own = to_l(torch.cat([F[:, :-d], pos], 1), frames, pos)  # a node's own position is its origin
    torch.testing.assert_close(own[:, -d:], torch.zeros(n, d, dtype=torch.float64, device=device), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="pos"):
        to_l(F, frames)
    with pytest.raises(ValueError, match="frames: is on meta"):  # inputs on two devices: named
        to_l(F, frames.to("meta"), pos)
    with pytest.raises(ValueError, match="pos: is on meta"):
        to_g(f, frames, pos.to("meta"))


LAYOUT_CASES = ["blocked", "blocked+loops", "padded", "edge", "bipartite"]


@pytest.mark.parametrize("case", LAYOUT_CASES)
@pytest.mark.parametrize("d", [2, 3, 4])
def test_transport_engine_matches_reference(case, d):
    gen = torch.Generator().manual_seed(21)
    reps = TensorReps("2x0n+1x0p+2x1n+1x1p+1x2n+1x2p+1x3n+1xpos", dim=d)
    ns = nt = 10
    if case == "blocked":
        src = torch.randint(0, ns, (nt * 3,), generator=gen)
        dst = torch.arange(nt).repeat_interleave(3)
    elif case == "blocked+loops":
        src = torch.cat([torch.randint(0, ns, (nt * 2,), generator=gen), torch.arange(nt)])
        dst = torch.cat([torch.arange(nt).repeat_interleave(2), torch.arange(nt)])
    elif case == "padded":
        src = torch.randint(0, ns, (25,), generator=gen)
        dst = torch.arange(nt).repeat(3)[torch.randperm(3 * nt, generator=gen)][:25]  # unsorted, degree 1..3
    elif case == "edge":
        src = torch.randint(0, ns, (12,), generator=gen)
        dst = torch.cat([torch.zeros(10, dtype=torch.long), torch.tensor([3, 4])])  # one hub: padding too big
    else:
        ns, nt = 8, 5
        src = torch.randint(0, ns, (15,), generator=gen)
        dst = torch.arange(nt).repeat_interleave(3)
    layout = receiver_layout(src, dst, nt)
    expected_kind = {"blocked+loops": "blocked", "bipartite": "blocked"}.get(case, case)
    assert layout.kind == expected_kind
    x = torch.randn(ns, reps.size, generator=gen, dtype=torch.float64)
    Rs = random_orthogonal(ns, d, generator=gen)
    Rt = Rs if ns == nt else random_orthogonal(nt, d, generator=gen)
    ps = torch.randn(ns, d, generator=gen, dtype=torch.float64)
    pt = ps if ns == nt else torch.randn(nt, d, generator=gen, dtype=torch.float64)
    ref = transport(reps, x[src], Rs, Rt, src, dst, pos_src=ps, pos_dst=pt)
    got = transport_edges(reps, x, Rs, Rt, src, dst, pos_src=ps, pos_dst=pt, layout=layout)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    # reference semantics: rho(R_i R_j^T) f_j, positions R_i (p - x_i)
    Rij = edge_frames(Rs, Rt, src, dst)
    torch.testing.assert_close(Rij, Rt[dst] @ Rs[src].transpose(1, 2))


def test_kron_power_matches_reps():
    gen = torch.Generator().manual_seed(22)
    R = random_orthogonal(4, 3, generator=gen)
    T = torch.randn(4, 27, generator=gen, dtype=torch.float64)
    reps = TensorReps("1x3n", dim=3)
    torch.testing.assert_close((kron_power(R, 3) @ T.unsqueeze(-1)).squeeze(-1), reps.transform(T, R))


def test_safe_length_smooth_at_zero():
    v = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    ell = safe_length(v)
    assert float(ell.detach().abs().max()) == 0.0
    (g,) = torch.autograd.grad(ell.sum(), v, create_graph=True)
    (h,) = torch.autograd.grad(g.square().sum() + g.sum(), v)
    assert torch.isfinite(g).all() and torch.isfinite(h).all()
    w = torch.tensor([[3.0, 4.0, 0.0]], dtype=torch.float64)
    assert abs(float(safe_length(w)) - 5.0) < 1e-6


def test_input_validation(device):
    reps = TensorReps(REPS_IN, dim=3)
    n = 5
    x = torch.randn(n, reps.size, device=device)
    frames = random_orthogonal(n, 3, dtype=torch.float32).to(device)
    pos = torch.randn(n, 3, device=device)
    ei = torch.tensor([[0, 1, 2], [1, 2, 3]], device=device)
    conv = TFConv(GATConv(reps.size, reps.size, edge_dim=4), reps).to(device)
    # inputs on another device than the rest (meta stands for it on a CPU-only machine): the argument is named
    for args, name in [((x.to("meta"), ei, frames, pos), "x"), ((x, ei.to("meta"), frames, pos), "edge_index"),
                       ((x, ei, frames, pos.to("meta")), "pos")]:
        with pytest.raises(ValueError, match=f"{name}: is on meta"):
            conv(*args)
    with pytest.raises(ValueError, match="the module's parameters are on meta"):
        TFConv(GATConv(reps.size, reps.size, edge_dim=4), reps).to("meta")(x, ei, frames, pos)
    with pytest.raises(ValueError, match="frames"):
        conv(x, ei, frames[:, :2], pos)
    bad = frames.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="frames"):
        conv(x, ei, bad, pos)
    with pytest.raises(ValueError, match="pos"):
        conv(x, ei, frames)
    with pytest.raises(ValueError, match="x"):
        conv(x[:, :-1], ei, frames, pos)
    x_nan = x.clone()
    x_nan[1, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        conv(x_nan, ei, frames, pos)
    with pytest.raises(ValueError, match="edge_index"):
        conv(x, torch.tensor([[0, 7], [1, 2]], device=device), frames, pos)
    with pytest.raises(ValueError, match="reps_out"):
        TFConv(GATConv(reps.size, 3, edge_dim=4), reps).to(device)(x, ei, frames, pos)
    with pytest.raises(ValueError, match="mode"):
        TFConv(GATConv(reps.size, reps.size, edge_dim=4), reps, mode="plain")
    with pytest.raises(ValueError, match="mode"):
        TFConv(GATConv(reps.size, reps.size, edge_dim=4), reps, mode="fast")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="layer"):
        TFConv(nn.Linear(3, 3), reps)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dim"):
        TFConv(GINConv(mlp(reps.size, reps.size)), TensorReps(REPS_IN, dim=2), dim=3)


def test_user_edge_features_are_moved_to_receiver_frame():
    gen = torch.Generator().manual_seed(23)
    torch.manual_seed(0)
    d = 3
    reps, reps_e = TensorReps(REPS_IN, dim=d), TensorReps("1x0n+1x1n", dim=d)
    pos, _, ei = knn_batch([10], d, 3, gen, torch.float64)
    n = pos.shape[0]
    F = torch.randn(n, reps.size, generator=gen, dtype=torch.float64)
    e = torch.randn(ei.shape[1], reps_e.size, generator=gen, dtype=torch.float64)
    frames = random_orthogonal(n, d, generator=gen)
    conv = TFConv(GATConv(reps.size, reps.size, edge_dim=reps_e.size + d + 1).double(), reps, reps_edge=reps_e)
    Q, s = transforms(1, d, gen, torch.float64)
    Q, s = Q[0], s[0]

    def run(F, e, R, p):
        return reps.to_global(conv(reps.to_local(F, R), ei, R, p, edge_attr=e), R)

    out = run(F, e, frames, pos)
    out2 = run(reps.transform(F, Q), reps_e.transform(e, Q), frames @ Q.T, pos @ Q.T + s)
    torch.testing.assert_close(out2, reps.transform(out, Q), rtol=0, atol=1e-10)


def test_multi_hop_layers_are_refused():
    from torch_geometric.nn import SGConv, TAGConv

    for layer in (SGConv(8, 8, K=2), TAGConv(8, 8, K=2)):
        with pytest.raises(TypeError, match="not supported"):
            TFConv(layer, "2x0n+2x1n")


# ------------------------------------------------------------------------------------------------ message mode
MESSAGE_LAYERS = ["GATConv", "GATv2Conv", "TransformerConv", "PointTransformerConv"]


class MessageNet(nn.Module):
    """frames -> ToLocal -> two wrapped layers in message mode -> ToGlobal."""

    def __init__(self, name, reps_in, reps_out, d, hidden="4x0n+2x1n+1x2n", transport=True):
        super().__init__()
        r_in, r_h, r_out = (TensorReps(r, dim=d) for r in (reps_in, hidden, reps_out))
        self.to_local = ToLocal(r_in)
        self.conv1 = TFConv(make_layer(name, r_in.size, r_h.size, d), r_in, r_h, mode="message", transport=transport)
        self.conv2 = TFConv(make_layer(name, r_h.size, r_out.size, d), r_h, r_out, mode="message",
                            transport=transport)
        self.to_global = ToGlobal(r_out)

    def forward(self, F, ei, frames, pos):
        f = self.to_local(F, frames, pos)
        f = torch.tanh(self.conv1(f, ei, frames, pos))
        f = self.conv2(f, ei, frames, pos)
        return self.to_global(f, frames, pos)


def _message_params():
    out = []
    for name in MESSAGE_LAYERS:
        for d in (2, 3, 4):
            for dtype in (torch.float64, torch.float32):
                marks = () if d == 3 or dtype == torch.float64 else (pytest.mark.slow,)
                out.append(pytest.param(name, d, dtype, marks=marks, id=f"{name}-d{d}-{str(dtype)[6:]}"))
    return out


@pytest.mark.parametrize(("name", "d", "dtype"), _message_params())
def test_message_mode_equivariance(name, d, dtype, device):
    """Scalar, vector, pseudo-vector and order-2 outputs; per-graph rotations/reflections + translations."""
    gen = torch.Generator().manual_seed(200 + 10 * MESSAGE_LAYERS.index(name) + d)
    torch.manual_seed(0)
    net = MessageNet(name, REPS_IN, REPS_OUT, d).to(dtype)
    assert net.conv1.resolved_mode() == "message"
    err = equivariance_error(net, REPS_IN, REPS_OUT, d, dtype, gen, device=device)
    assert err <= (1e-9 if dtype == torch.float64 else 1e-4), err
    if d == 3 and dtype == torch.float64:  # unsorted variable-degree graph (padded layout)
        assert equivariance_error(net, REPS_IN, REPS_OUT, d, dtype, gen, graph="random", device=device) <= 1e-9


def test_message_mode_negative_control_frames_must_co_rotate():
    """Frames that do not rotate with the input (here: fixed random frames) break equivariance."""
    gen = torch.Generator().manual_seed(31)
    torch.manual_seed(0)
    d, r_in, r_out = 3, TensorReps(REPS_IN, dim=3), TensorReps(REPS_OUT, dim=3)
    net = MessageNet("TransformerConv", REPS_IN, REPS_OUT, d).double()
    pos, _, ei = knn_batch([10], d, 4, gen, torch.float64)
    n = pos.shape[0]
    F = torch.randn(n, r_in.size, generator=gen, dtype=torch.float64)
    frames = random_orthogonal(n, d, generator=gen)
    Q, s = transforms(1, d, gen, torch.float64)
    out = net(F, ei, frames, pos)
    out2 = net(r_in.transform(F, Q[0]), ei, frames, pos @ Q[0].T + s[0])  # frames NOT rotated
    assert (out2 - r_out.transform(out, Q[0])).abs().max() > 1e-3


def _uniform_attention_layer(name, c_in, c_out, d):
    """A message-mode layer whose attention is uniform (attention parameters zeroed) and the projection
    ``h = proj(f)`` it transports, plus the per-node term it adds and whether it adds self-loops."""
    layer = make_layer(name, c_in, c_out, d).double()
    layer.heads = getattr(layer, "heads", 1)
    with torch.no_grad():
        if name == "GATConv":
            for p in (layer.att_src, layer.att_dst, layer.att_edge):
                p.zero_()
            layer.bias.normal_()
            return layer, (lambda f: layer.lin(f).view(f.shape[0], layer.heads, -1)), (lambda f: layer.bias), True
        if name == "GATv2Conv":
            layer.att.zero_()
            layer.bias.normal_()
            return layer, (lambda f: layer.lin_l(f).view(f.shape[0], layer.heads, -1)), (lambda f: layer.bias), True
        if name == "TransformerConv":
            layer.lin_query.weight.zero_()
            layer.lin_query.bias.zero_()
            layer.lin_edge.weight.zero_()
            return layer, (lambda f: layer.lin_value(f).view(f.shape[0], layer.heads, -1)), layer.lin_skip, False
        layer.lin_src.weight.zero_()
        layer.lin_dst.weight.zero_()
        layer.pos_nn.weight.zero_()
        layer.pos_nn.bias.zero_()
        return layer, (lambda f: layer.lin(f).unsqueeze(1)), (lambda f: 0.0), True


@pytest.mark.parametrize("name", MESSAGE_LAYERS)
def test_message_mode_is_projection_then_transport(name):
    r"""With uniform attention, message mode is :math:`\mathrm{mean}_j \rho(R_i R_j^\top) W f_j` (+ the layer's
    per-node terms): the projection runs in the sender's frame, then moves -- unlike expand mode
    (:math:`W \rho(R_i R_j^\top) f_j`). Without transport the result differs (negative control)."""
    gen = torch.Generator().manual_seed(40 + MESSAGE_LAYERS.index(name))
    torch.manual_seed(0)
    d, r_in, r_out = 3, TensorReps(REPS_IN, dim=3), TensorReps(REPS_OUT, dim=3)
    pos, _, ei = knn_batch([9, 8], d, 4, gen, torch.float64)
    n = pos.shape[0]
    x = torch.randn(n, r_in.size, generator=gen, dtype=torch.float64)
    frames = random_orthogonal(n, d, generator=gen)
    layer, proj, node_term, self_loops = _uniform_attention_layer(name, r_in.size, r_out.size, d)
    src, dst = ei
    if self_loops:
        src, dst = torch.cat([src, torch.arange(n)]), torch.cat([dst, torch.arange(n)])
    with torch.no_grad():
        h = proj(x)  # [n, heads, C], per node, in the node's own frame
        heads = h.shape[1]
        r_h = TensorReps(r_out.blocks * heads, dim=d)
        msg = transport(r_h, h.reshape(n, -1)[src], frames, frames, src, dst)
        deg = torch.bincount(dst, minlength=n).double().unsqueeze(-1)
        agg = torch.zeros(n, r_h.size, dtype=torch.float64).index_add_(0, dst, msg) / deg
        ref = agg.view(n, heads, -1).mean(1) + node_term(x)
        out = TFConv(layer, r_in, r_out, mode="message")(x, ei, frames, pos)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
        off = TFConv(layer, r_in, r_out, mode="message", transport=False)(x, ei, frames, pos)
        assert (off - ref).abs().max() > 1e-3
        expand = TFConv(layer, r_in, r_out, mode="expand")(x, ei, frames, pos)
        assert (expand - ref).abs().max() > 1e-3  # a different layer


@pytest.mark.parametrize(("name", "args"), [("GATConv", ("x",)), ("TransformerConv", ("key", "value"))])
@pytest.mark.parametrize(("heads", "concat"), [(2, False), (1, True), (2, True)])
def test_message_global_frame_equals_per_edge_transport(name, args, heads, concat):
    """GATConv / TransformerConv in message mode go through the global frame (O(N); TransformerConv's edge
    projection rotated by folding the receiver rotation into its weights): equal to transporting the named
    projections per edge (``message_args`` selects that generic path)."""
    from torch_geometric.nn import GATConv as Gat, TransformerConv as Trf

    gen = torch.Generator().manual_seed(50 + heads + 2 * concat)
    torch.manual_seed(0)
    d, r_in = 3, TensorReps(REPS_IN, dim=3)
    r_out = TensorReps("1x0n+1x1n+1x0n+1x1n" if concat and heads == 2 else REPS_OUT, dim=3)
    c = r_out.size // heads if concat else r_out.size
    pos, _, ei = knn_batch([9, 7], d, 6, gen, torch.float64)  # k=6 > edge channels: weight folding path
    n = pos.shape[0]
    x = torch.randn(n, r_in.size, generator=gen, dtype=torch.float64)
    frames = random_orthogonal(n, d, generator=gen)
    layer = (Gat if name == "GATConv" else Trf)(r_in.size, c, heads=heads, concat=concat, edge_dim=d + 1).double()
    if name == "TransformerConv":
        layer.lin_edge = nn.Linear(d + 1, heads * c).double()  # with a bias
    fast = TFConv(layer, r_in, r_out, mode="message")
    slow = TFConv(layer, r_in, r_out, mode="message", message_args=args)
    for graph in (ei, torch.cat([ei, random_batch_graph([n], 15, gen)], 1)):
        for grad in (False, True):  # in-place chunked (inference) and autograd paths
            with torch.set_grad_enabled(grad):
                torch.testing.assert_close(fast(x, graph, frames, pos), slow(x, graph, frames, pos), rtol=0,
                                           atol=1e-12)


@pytest.mark.parametrize("name", MESSAGE_LAYERS)
def test_message_mode_identity_frames_equal_plain_layer(name):
    gen = torch.Generator().manual_seed(60)
    torch.manual_seed(0)
    d, reps = 3, TensorReps(REPS_IN, dim=3)
    pos, _, ei = knn_batch([8, 9], d, 3, gen, torch.float64)
    x = torch.randn(pos.shape[0], reps.size, generator=gen, dtype=torch.float64)
    layer = make_layer(name, reps.size, reps.size, d).double()
    conv = TFConv(layer, reps, mode="message")
    eye = torch.eye(d, dtype=torch.float64).expand(pos.shape[0], d, d)
    ref = _plain_call(layer, conv, x, ei, pos, local_edge_geometry(pos, pos, None, ei[0], ei[1]))
    torch.testing.assert_close(conv(x, ei, eye, pos), ref, rtol=0, atol=1e-12)


def test_message_mode_options_and_validation():
    reps = TensorReps(REPS_IN, dim=3)
    gat = GATConv(reps.size, reps.size, edge_dim=4)
    assert TFConv(gat, reps).resolved_mode() == "expand"  # auto keeps the paper's (expand) semantics
    assert TFConv(gat, reps, mode="message").resolved_mode() == "message"
    with pytest.raises(ValueError, match="message"):
        TFConv(GINConv(mlp(reps.size, reps.size)), reps, mode="message")
    with pytest.raises(ValueError, match="message_args"):
        TFConv(gat, reps, mode="hook", message_args=("x",))
    with pytest.raises(TypeError, match="message_args"):
        TFConv(gat, reps, mode="message", message_args="x")

    class MyGat(GATConv):
        def message(self, x_j, alpha):
            return super().message(x_j, alpha)

    with pytest.raises(ValueError, match="message"):  # unknown message: the table does not apply
        TFConv(MyGat(reps.size, reps.size, edge_dim=4), reps, mode="message")
    assert TFConv(MyGat(reps.size, reps.size, edge_dim=4), reps, mode="message", message_args=("x",))
    # concatenated heads must hold whole tensors
    r_out = TensorReps("1x0n+1x1n", dim=3)  # 4 channels = 2 heads of 2: the vector straddles them
    with pytest.raises(ValueError, match="straddles"):  # found by the construction probe
        TFConv(GATConv(reps.size, 2, heads=2, edge_dim=4), reps, r_out, mode="message")


@pytest.mark.parametrize("name", ["GATConv", "TransformerConv", "PointTransformerConv", "GATv2Conv"])
def test_message_mode_degenerate_geometry_finite_derivatives(name):
    gen = torch.Generator().manual_seed(13)
    torch.manual_seed(0)
    d, reps = 3, TensorReps(REPS_IN, dim=3)
    n = 6
    pos = torch.randn(n, d, generator=gen, dtype=torch.float64)
    pos[1] = pos[0]
    ei = torch.tensor([[1, 2, 0, 0, 3, 4, 5, 3], [0, 0, 1, 0, 4, 5, 3, 3]])
    x = torch.randn(n, reps.size, generator=gen, dtype=torch.float64, requires_grad=True)
    frames = random_orthogonal(n, d, generator=gen)
    conv = TFConv(make_layer(name, reps.size, reps.size, d).double(), reps, mode="message")
    pos = pos.requires_grad_(True)
    out = conv(x, ei, frames, pos)
    (gp, gx) = torch.autograd.grad(out.square().sum(), (pos, x), create_graph=True)
    (h,) = torch.autograd.grad(gp.sum() + gx.sum(), pos)
    assert torch.isfinite(out).all() and torch.isfinite(gp).all() and torch.isfinite(gx).all()
    assert torch.isfinite(h).all()


# ------------------------------------------------------------------------------------------------ TFGraph
def test_tfgraph_shared_between_layers_equals_per_call():
    gen = torch.Generator().manual_seed(70)
    torch.manual_seed(0)
    d, reps = 3, TensorReps(REPS_IN + "+1xpos", dim=3)
    pos, _, ei = knn_batch([10, 9], d, 4, gen, torch.float64)
    n = pos.shape[0]
    x = torch.randn(n, reps.size, generator=gen, dtype=torch.float64)
    frames = random_orthogonal(n, d, generator=gen)
    convs = [TFConv(make_layer(nm, reps.size, reps.size, d).double(), reps) for nm in
             ("GATConv", "PointNetConv", "EdgeConv", "GINEConv")]
    convs.append(TFConv(make_layer("GATConv", reps.size, reps.size, d).double(), reps, mode="message"))
    from equiframe.nn.tf_conv import TensorFrameConv

    native = TensorFrameConv(reps, reps, hidden_channels=8).double()
    g = TFGraph(ei, frames, pos)
    for conv in convs:
        torch.testing.assert_close(conv(x, g), conv(x, ei, frames, pos), rtol=0, atol=1e-12)
    torch.testing.assert_close(native(x, g), native(x, ei, frames, pos), rtol=0, atol=1e-12)
    assert g.cache  # geometry / matrices were cached and reused
    # a float32 call on the same graph uses float32 copies of the frames
    y = convs[2].float()(x.float(), g)
    assert y.dtype == torch.float32
    with pytest.raises(ValueError, match="frames"):
        convs[0](x, g, frames)
    with pytest.raises(ValueError, match="x"):
        convs[0](x[:-1], g)
    with pytest.raises(ValueError, match="pos"):
        TFConv(make_layer("GATConv", reps.size, reps.size, d).double(), reps)(x, TFGraph(ei, frames))
    assert "TFGraph(homogeneous" in repr(g)


def test_tfgraph_bipartite():
    gen = torch.Generator().manual_seed(71)
    torch.manual_seed(0)
    d, reps = 3, TensorReps(REPS_IN, dim=3)
    ns, nt = 9, 5
    ps, pt = torch.randn(ns, d, generator=gen, dtype=torch.float64), torch.randn(nt, d, generator=gen, dtype=torch.float64)
    ei = torch.stack([torch.randint(0, ns, (20,), generator=gen), torch.randint(0, nt, (20,), generator=gen)])
    xs, xt = (torch.randn(m, reps.size, generator=gen, dtype=torch.float64) for m in (ns, nt))
    Rs, Rt = random_orthogonal(ns, d, generator=gen), random_orthogonal(nt, d, generator=gen)
    layer = make_layer("EdgeConv", reps.size, reps.size, d).double()
    conv = TFConv(layer, reps)
    g = TFGraph(ei, (Rs, Rt), (ps, pt))
    torch.testing.assert_close(conv((xs, xt), g), conv((xs, xt), ei, (Rs, Rt), (ps, pt)), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="pair"):
        conv(xs, g)
    with pytest.raises(ValueError, match="edge_index"):
        TFGraph(torch.tensor([[0], [7]]), (Rs, Rt))


@pytest.mark.parametrize("case", LAYOUT_CASES)
def test_transport_no_grad_chunks_equal_autograd_path(case):
    """The chunked in-place path (no autograd) and the out-of-place path agree; tiny chunks force many."""
    from equiframe.nn.tf_transport import rotate_edges

    gen = torch.Generator().manual_seed(22)
    d = 3
    reps = TensorReps("2x0n+1x0p+2x1n+1x1p+1x2n+1x2p+1xpos+1x1n", dim=d)
    n = 10
    if case in ("blocked", "bipartite"):
        src, dst = torch.randint(0, n, (n * 3,), generator=gen), torch.arange(n).repeat_interleave(3)
    elif case == "blocked+loops":
        src = torch.cat([torch.randint(0, n, (n * 2,), generator=gen), torch.arange(n)])
        dst = torch.cat([torch.arange(n).repeat_interleave(2), torch.arange(n)])
    else:
        src, dst = torch.randint(0, n, (25,), generator=gen), torch.randint(0, n, (25,), generator=gen)
    x = torch.randn(n, reps.size, generator=gen, dtype=torch.float64, requires_grad=True)
    R = random_orthogonal(n, d, generator=gen)
    p = torch.randn(n, d, generator=gen, dtype=torch.float64)
    lay = receiver_layout(src, dst, n)
    with_grad = transport_edges(reps, x, R, R, src, dst, pos_src=p, pos_dst=p, layout=lay, chunk_size=64)
    with torch.no_grad():
        chunked = transport_edges(reps, x, R, R, src, dst, pos_src=p, pos_dst=p, layout=lay, chunk_size=64)
    with pytest.raises(ValueError, match="chunk_size"):
        transport_edges(reps, x, R, R, src, dst, pos_src=p, pos_dst=p, layout=lay, chunk_size=0)
    torch.testing.assert_close(chunked, with_grad, rtol=0, atol=1e-12)
    w = torch.randn(with_grad.shape, generator=gen, dtype=torch.float64)
    (g_fast,) = torch.autograd.grad((with_grad * w).sum(), x)
    ref = transport(reps, x[src], R, R, src, dst, pos_src=p, pos_dst=p)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), x)
    torch.testing.assert_close(g_fast, g_ref, rtol=0, atol=1e-12)
    # per-edge rotation by the receiver frame (no pos blocks), against the per-edge reference
    r_e = TensorReps("2x0n+1x0p+2x1n+1x1p+1x2n+1x2p", dim=d)
    y = torch.randn(src.shape[0], r_e.size, generator=gen, dtype=torch.float64)
    ref = r_e.transform(y, R[dst].transpose(1, 2))
    torch.testing.assert_close(rotate_edges(r_e, y, R, lay, inverse=True), ref, rtol=0, atol=1e-12)
    with torch.no_grad():
        y2 = y.clone()
        out = rotate_edges(r_e, y2, R, lay, inverse=True, in_place=True, chunk_size=64)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(rotate_edges(r_e, ref, R, lay), y, rtol=0, atol=1e-12)
