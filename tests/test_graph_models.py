"""FA-MLP, FA-GIN+ID (through FrameAveraging over S_n), GIN/GCN baselines and canonical frame keys."""

import pytest
import torch
from torch_geometric.data import Batch, Data

from equiframe.datasets.graphs import connected_graphs
from equiframe.frames.graph import permute_graph
from equiframe.models.graphs import (
    AdjacencyMLP,
    FAGraphModel,
    GINWithIDs,
    MessagePassingBaseline,
    build_graph_model,
    canonical_keys,
)


def random_graph(n, p, gen, feat=2, dtype=torch.float64):
    A = torch.triu(torch.rand(n, n, generator=gen) < p, 1)
    A = A | A.T
    x = torch.nn.functional.one_hot(torch.randint(0, feat, (n,), generator=gen), feat).to(dtype)
    return Data(x=x, edge_index=A.nonzero().T.contiguous(), num_nodes=n)


def circulant(n, skips):
    i = torch.arange(n)
    e = torch.cat([torch.stack([i, (i + s) % n]) for s in skips], 1)
    return Data(x=torch.ones(n, 1, dtype=torch.float64), edge_index=torch.unique(torch.cat([e, e.flip(0)], 1), dim=1),
                num_nodes=n)


def relabel_all(graphs, gen):
    out = []
    for g in graphs:
        perm = torch.randperm(g.num_nodes, generator=gen)
        ei, x = permute_graph(g.edge_index, perm, g.x)
        out.append(Data(x=x, edge_index=ei, num_nodes=g.num_nodes))
    return out


def run(model, graphs, device="cpu", **kw):
    b = Batch.from_data_list(graphs)
    return model(b.x.to(device), b.edge_index.to(device), b.batch.to(device), **kw)


@pytest.mark.parametrize("name", ["fa-mlp", "fa-gin-id"])
def test_fa_models_exactly_invariant_with_exact_frames(name, gen, device):
    graphs = [random_graph(n, 0.4, gen) for n in (5, 6, 7, 4, 7)]
    graphs.append(circulant(6, [1]))  # vertex transitive: frame of 6! = 720 elements, enumerated
    torch.manual_seed(0)
    model = build_graph_model(name, in_dim=2, n_max=7, frame="spectral", max_size=5040).double().to(device)
    graphs[-1].x = torch.zeros(6, 2, dtype=torch.float64)
    out, (frame, elements) = run(model, graphs, device, return_frame=True)
    assert bool(elements.exact.all())
    out2 = run(model, relabel_all(graphs, gen), device)
    torch.testing.assert_close(out2, out, atol=1e-12, rtol=1e-12)
    assert out.shape == (6, 10) and out.dtype == torch.float64 and out.device.type == device.type


@pytest.mark.parametrize("name", ["fa-mlp", "fa-gin-id"])
def test_canonical_frames_single_copy_and_invariant_on_huge_frames(name, gen):
    # circulant graphs: vertex transitive, spectral frames of n! elements; canonical frames: 1 element
    graphs = [circulant(13, [1, 3]), circulant(13, [1, 5]), circulant(12, [1, 2]), random_graph(9, 0.5, gen, 1)]
    graphs[-1].x = graphs[-1].x.to(torch.float64)
    for g in graphs:
        g.x = torch.ones(g.num_nodes, 1, dtype=torch.float64)
    torch.manual_seed(1)
    model = build_graph_model(name, in_dim=1, n_max=13, frame="canonical").double()
    out, (frame, elements) = run(model, graphs, return_frame=True)
    assert elements.num_copies == len(graphs) and bool(elements.exact.all())
    for _ in range(3):
        torch.testing.assert_close(run(model, relabel_all(graphs, gen)), out, atol=1e-12, rtol=1e-12)
    # the two non-isomorphic circulants on 13 nodes (1-WL equivalent) are separated
    assert float((out[0] - out[1]).detach().abs().sum()) > 1e-3


def test_gin_id_eps_zero_full_average_blind_spot():
    # K_{3,3} vs the prism: exact FA over all 720 orders; GIN+ID with eps = 0 gives identical embeddings
    def g(edges):
        e = torch.tensor(edges).T
        return Data(x=torch.ones(6, 1, dtype=torch.float64), edge_index=torch.cat([e, e.flip(0)], 1), num_nodes=6)

    k33 = g([(i, j) for i in range(3) for j in range(3, 6)])
    prism = g([(0, 1), (1, 2), (2, 0), (3, 4), (4, 5), (5, 3), (0, 3), (1, 4), (2, 5)])
    for eps, same in ((0.0, True), (0.5, False)):
        torch.manual_seed(0)
        fa = FAGraphModel(GINWithIDs(1, 6, 32, 2, 4, eps=eps).double(), max_size=720)
        out = run(fa, [k33, prism]).detach()
        assert (float((out[0] - out[1]).abs().sum()) < 1e-12) == same


def test_float32_follows_input_dtype(gen):
    graphs = [random_graph(n, 0.5, gen, dtype=torch.float32) for n in (5, 6)]
    torch.manual_seed(0)
    for name in ("fa-mlp", "fa-gin-id", "gin", "gcn"):
        model = build_graph_model(name, in_dim=2, n_max=6, max_size=720)
        out = run(model, graphs)
        assert out.dtype == torch.float32 and out.shape == (2, 10)
        torch.testing.assert_close(run(model, relabel_all(graphs, gen)), out, atol=1e-5, rtol=1e-5)


def test_negative_control_backbones_alone_are_not_invariant(gen):
    graphs = [random_graph(7, 0.5, gen) for _ in range(4)]
    relabelled = relabel_all(graphs, gen)
    torch.manual_seed(0)
    for backbone in (AdjacencyMLP(2, 7).double(), GINWithIDs(2, 7).double()):
        a, b = run(backbone, graphs).detach(), run(backbone, relabelled).detach()
        assert float((a - b).abs().max()) > 1e-3
        fa = FAGraphModel(backbone, max_size=5040)  # the same backbone through frame averaging: invariant
        torch.testing.assert_close(run(fa, relabelled), run(fa, graphs), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("kind", ["gin", "gcn"])
def test_baselines_invariant_but_1wl_bounded(kind, gen):
    torch.manual_seed(0)
    model = MessagePassingBaseline(kind, 1, 32, 3, 8).double()
    c6, two_c3 = circulant(6, [1]), Data(x=torch.ones(6, 1, dtype=torch.float64), num_nodes=6,
                                         edge_index=torch.tensor([[0, 1, 1, 2, 2, 0, 3, 4, 4, 5, 5, 3],
                                                                  [1, 0, 2, 1, 0, 2, 4, 3, 5, 4, 3, 5]]))
    out = run(model, [c6, two_c3])
    torch.testing.assert_close(out[0], out[1], atol=1e-12, rtol=0)  # 2-regular graphs: 1-WL equivalent
    torch.testing.assert_close(run(model, relabel_all([c6, two_c3], gen)), out, atol=1e-12, rtol=1e-12)


def test_large_spectral_frames_are_sampled_and_reported(gen):
    g = circulant(9, [1])
    torch.manual_seed(0)
    model = build_graph_model("fa-mlp", in_dim=1, n_max=9, max_size=100, n_samples=4,
                              generator=torch.Generator().manual_seed(0)).double()
    out, (frame, elements) = run(model, [g], return_frame=True)
    assert frame.size() == [362880] and elements.exact.tolist() == [False] and elements.num_copies == 4


def test_model_errors(gen, device):
    with pytest.raises(ValueError, match="name"):
        build_graph_model("mlp", in_dim=1, n_max=4)
    with pytest.raises(ValueError, match="frame"):
        build_graph_model("fa-mlp", in_dim=1, n_max=4, frame="laplace")
    with pytest.raises(ValueError, match="n_max"):
        AdjacencyMLP(1, 0)
    big = random_graph(6, 0.5, gen, 1)
    with pytest.raises(ValueError, match="n_max"):
        run(AdjacencyMLP(1, 4).double().to(device), [big], device)
    with pytest.raises(ValueError, match="n_max"):
        run(GINWithIDs(1, 4).double().to(device), [big], device)
    with pytest.raises(ValueError, match="features"):
        run(AdjacencyMLP(3, 8).double().to(device), [big], device)
    x, ei = big.x.to(device), big.edge_index.to(device)
    with pytest.raises(ValueError, match="batch"):
        AdjacencyMLP(1, 8).double().to(device)(x, ei, torch.tensor([1, 1, 1, 0, 0, 0], device=device))
    fa = build_graph_model("fa-mlp", in_dim=1, n_max=8, frame="canonical").double().to(device)
    with pytest.raises(ValueError, match="key"):
        fa(x, ei, None, key=torch.zeros(3, dtype=torch.long, device=device))
    # one input on another device (meta stands for it on a CPU-only machine): named, not a kernel error
    for model in (AdjacencyMLP(1, 8).double().to(device), fa):
        with pytest.raises(ValueError, match="x is on meta|x: is on meta"):
            model(x.to("meta"), ei, None)
        with pytest.raises(ValueError, match="edge_index: is on meta"):
            model(x, ei.to("meta"), None)
        with pytest.raises(ValueError, match="batch: is on meta"):
            model(x, ei, torch.zeros(6, dtype=torch.long, device="meta"))
    with pytest.raises(ValueError, match="the model's parameters are on meta"):
        AdjacencyMLP(1, 8).double().to("meta")(x, ei, None)


# ------------------------------------------------------------------------------------------ canonical keys
def test_canonical_keys_are_a_complete_invariant_on_connected_6_node_graphs(gen):
    graphs = connected_graphs(6)  # 112 pairwise non-isomorphic graphs
    b = Batch.from_data_list(graphs)
    lab = canonical_keys(b.edge_index, batch=b.batch)
    assert bool(lab.ok.all())
    assert torch.unique(lab.certificate, dim=0).shape[0] == 112
    for i in range(len(graphs)):  # keys: a permutation of 0..n-1 per graph
        assert sorted(lab.keys[b.ptr[i] : b.ptr[i + 1]].tolist()) == list(range(6))
    b2 = Batch.from_data_list(relabel_all(graphs, gen))
    lab2 = canonical_keys(b2.edge_index, batch=b2.batch)
    assert torch.equal(lab2.certificate, lab.certificate)


def test_canonical_keys_use_features_and_budget(gen):
    ring = circulant(8, [1])
    x = torch.zeros(8, 1)
    x[3] = 1.0
    a = canonical_keys(ring.edge_index, num_nodes=8, x=x)
    perm = torch.randperm(8, generator=gen)
    ei, xp = permute_graph(ring.edge_index, perm, x)
    b = canonical_keys(ei, num_nodes=8, x=xp)
    assert torch.equal(a.certificate, b.certificate)
    assert int(a.keys[3]) == int(b.keys[perm[3]])  # the marked node keeps its canonical position
    # twins: K_8 (all nodes twins) needs one branch per level
    k8 = torch.ones(8, 8).triu(1).nonzero().T
    k8 = torch.cat([k8, k8.flip(0)], 1)
    lab = canonical_keys(k8, num_nodes=8)
    assert bool(lab.ok.all()) and int(lab.leaves[0]) == 1
    # budget exceeded: flagged, zero keys (the frame stays spectral)
    lab = canonical_keys(circulant(13, [1, 3]).edge_index, num_nodes=13, max_states=2)
    assert lab.ok.tolist() == [False] and int(lab.keys.abs().sum()) == 0


def test_canonical_keys_errors():
    with pytest.raises(ValueError, match="edge_index"):
        canonical_keys(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="edge_index"):
        canonical_keys(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="max_states"):
        canonical_keys(torch.zeros(2, 0, dtype=torch.long), num_nodes=2, max_states=0)
    with pytest.raises(ValueError, match="x"):
        canonical_keys(torch.tensor([[0, 1], [1, 0]]), num_nodes=2, x=torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="duplicate"):
        canonical_keys(torch.tensor([[0, 1, 0], [1, 0, 1]]), num_nodes=2)
    with pytest.raises(ValueError, match="undirected"):
        canonical_keys(torch.tensor([[0], [1]]), num_nodes=2, spectral=False)


def test_canonical_keys_self_loops(gen):
    # a 6-cycle with loops on two opposite nodes: loops are structure (colour + certificate), not twins
    ring = circulant(6, [1]).edge_index
    ei = torch.cat([ring, torch.tensor([[0, 3], [0, 3]])], 1)
    a = canonical_keys(ei, num_nodes=6)
    for _ in range(3):
        perm = torch.randperm(6, generator=gen)
        b = canonical_keys(perm[ei], num_nodes=6)
        assert torch.equal(a.certificate, b.certificate)
    other = torch.cat([ring, torch.tensor([[0, 1], [0, 1]])], 1)  # loops on adjacent nodes: not isomorphic
    assert not torch.equal(canonical_keys(other, num_nodes=6).certificate, a.certificate)
