"""FrameAveraging over S_n (graph Laplacian frames): invariant graph outputs, equivariant node outputs."""

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_dense_adj

from equiframe import FrameAveraging
from equiframe.averaging import node_ranks
from equiframe.frames.graph import permute_graph


class OrderedAdjacencyMLP(nn.Module):
    """An MLP on the adjacency matrix read in node order: not permutation invariant by itself."""

    def __init__(self, n_max: int = 8, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.n_max = n_max
        self.mlp = nn.Sequential(nn.Linear(n_max * n_max + n_max, 32), nn.Tanh(), nn.Linear(32, 3))
        self.node = nn.Linear(1 + n_max, 2)

    def forward(self, x, edge_index, batch):
        A = to_dense_adj(edge_index, batch, max_num_nodes=self.n_max)  # [C, n, n] in node (frame) order
        feats = torch.zeros(A.shape[0], self.n_max, dtype=x.dtype)
        ranks = node_ranks(batch)
        feats[batch, ranks] = x[:, 0]
        graph_out = self.mlp(torch.cat([A.flatten(1).to(x.dtype), feats], -1))
        one_hot = torch.nn.functional.one_hot(ranks, self.n_max).to(x.dtype)
        node_out = self.node(torch.cat([x, one_hot], -1))  # depends on the node's position: not equivariant alone
        return graph_out, node_out


def random_graph(n, p, gen):
    A = torch.rand(n, n, generator=gen) < p
    A = torch.triu(A, 1)
    A = A | A.T
    return A.nonzero().T


def relabel(data, gen):
    perm = torch.randperm(data.num_nodes, generator=gen)
    ei, x = permute_graph(data.edge_index, perm, data.x)
    return Data(x=x, edge_index=ei, num_nodes=data.num_nodes), perm


@pytest.mark.parametrize("mode", ["all", "canonical"])
def test_invariance_and_equivariance_under_relabelling(mode, gen):
    graphs = [Data(x=torch.randn(n, 1, generator=gen, dtype=torch.float64), edge_index=random_graph(n, 0.4, gen), num_nodes=n)
              for n in (5, 6, 8, 7)]
    model = OrderedAdjacencyMLP().double()
    fa = FrameAveraging(model, group="S_n", inputs={"x": "scalar"}, output=("scalar", "scalar"), mode=mode,
                        max_size=100_000, generator=torch.Generator().manual_seed(0))
    batch = Batch.from_data_list(graphs)
    g_out, n_out = fa(x=batch.x, edge_index=batch.edge_index, batch=batch.batch)
    relabelled, perms = zip(*(relabel(g, gen) for g in graphs))
    b2 = Batch.from_data_list(list(relabelled))
    g2, n2 = fa(x=b2.x, edge_index=b2.edge_index, batch=b2.batch)
    if mode == "all":  # exact averages over the full frames
        torch.testing.assert_close(g2, g_out, atol=1e-12, rtol=1e-12)
        offsets = batch.ptr[:-1]
        for b, perm in enumerate(perms):
            torch.testing.assert_close(n2[offsets[b] + perm], n_out[offsets[b] : offsets[b] + len(perm)], atol=1e-12, rtol=1e-12)
    # the plain backbone is not invariant (negative control)
    with torch.no_grad():
        plain, _ = model(b2.x, b2.edge_index, b2.batch)
        assert float((plain - model(batch.x, batch.edge_index, batch.batch)[0]).abs().max()) > 1e-3


def test_frame_keys_from_node_features_and_sizes(gen):
    # a 6-cycle: all nodes tied by the spectrum; marking one node splits the frame
    ring = torch.tensor([[i, (i + 1) % 6] for i in range(6)]).T
    ring = torch.cat([ring, ring.flip(0)], 1)
    x = torch.zeros(6, 1, dtype=torch.float64)
    fa = FrameAveraging(OrderedAdjacencyMLP().double(), group="S_n", inputs={"x": "scalar"}, output=("scalar", "scalar"))
    _, (frame, elements) = fa(x=x, edge_index=ring, return_frame=True)
    assert frame.size() == [720] and elements.num_copies == 720
    x[2] = 1.0
    fk = FrameAveraging(OrderedAdjacencyMLP().double(), group="S_n", inputs={"x": "scalar"}, output=("scalar", "scalar"), frame_from="x")
    _, (frame, _) = fk(x=x, edge_index=ring, return_frame=True)
    assert frame.size() == [120]


def test_large_frames_are_sampled_and_reported(gen):
    ring = torch.tensor([[i, (i + 1) % 8] for i in range(8)]).T
    ring = torch.cat([ring, ring.flip(0)], 1)
    fa = FrameAveraging(OrderedAdjacencyMLP().double(), group="S_n", inputs={"x": "scalar"}, output=("scalar", "scalar"),
                        max_size=100, n_samples=3, generator=torch.Generator().manual_seed(1))
    _, (frame, elements) = fa(x=torch.zeros(8, 1, dtype=torch.float64), edge_index=ring, return_frame=True)
    assert elements.exact.tolist() == [False] and elements.num_copies == 3


def test_sn_errors():
    with pytest.raises(ValueError, match="scalar"):
        FrameAveraging(lambda **k: 0, group="S_n", inputs={"pos": "pos"}, output="scalar")
    fa = FrameAveraging(lambda x, edge_index, batch: x.sum(), group="S_n", inputs={"x": "scalar"}, output="scalar")
    with pytest.raises(ValueError, match="edge_index"):
        fa(x=torch.zeros(3, 1))
    with pytest.raises(ValueError, match="edge_index"):
        fa(x=torch.zeros(3, 1), edge_index=torch.tensor([[0], [5]]), batch=torch.zeros(3, dtype=torch.long))
