"""S_n (permutation) frames for graphs: equivariance on EXP / graph8c, frame structure, sampling, hybrid."""

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from equiframe.datasets.graphs import connected_graphs, load_exp
from equiframe.frames.graph import (
    PermutationFrame,
    canonical_ranks,
    connected_components,
    fold_edge_index,
    frame_elements,
    laplacian_frame,
    permute_graph,
    shuffle_components,
)

EXP_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "exp_graphsat.npz"
needs_exp = pytest.mark.skipif(not EXP_PATH.is_file(), reason=f"EXP data not found at {EXP_PATH} (shared/data)")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # batched eigh on tiny matrices is much slower with >1 intra-op thread on a busy 2-core machine
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------


def undirected(pairs, n=None):
    e = torch.tensor(pairs, dtype=torch.long).t()
    return torch.cat([e, e.flip(0)], 1)


def path_graph(n):
    return undirected([(i, i + 1) for i in range(n - 1)])


def cycle_graph(n):
    return undirected([(i, (i + 1) % n) for i in range(n)])


def concat(graphs):
    """[(edge_index, n, x?)] -> one batch (edge_index, batch, N, x or None)."""
    eis, batches, xs, off = [], [], [], 0
    for b, g in enumerate(graphs):
        ei, n = g[0], g[1]
        eis.append(ei + off)
        batches.append(torch.full((n,), b, dtype=torch.long))
        if len(g) > 2:
            xs.append(g[2])
        off += n
    x = torch.cat(xs) if xs else None
    return torch.cat(eis, 1), torch.cat(batches), off, x


def within_graph_perm(batch, gen):
    """A random relabelling ``i -> perm[i]`` that keeps every node inside its graph's index range."""
    N = batch.numel()
    key = batch.double() * 2 + torch.rand(N, generator=gen, dtype=torch.float64)
    perm = torch.empty(N, dtype=torch.long)
    perm[torch.argsort(key)] = torch.arange(N)
    assert torch.equal(batch[torch.argsort(perm)], batch)
    return perm


def failures(ei, batch, N, perms, x=None, edge_weight=None, **kw):
    """Graphs whose frame is not relabelling equivariant for at least one of ``perms``."""
    B = int(batch.max()) + 1
    f = laplacian_frame(ei, N, batch, x, edge_weight=edge_weight, **kw)
    nb = f.node_block(local=True)
    assert nb.device == ei.device
    bad = torch.zeros(B, dtype=torch.long, device=ei.device)
    for p in perms:
        ei2, x2 = permute_graph(ei, p, x)
        b2 = torch.empty_like(batch)
        b2[p] = batch
        f2 = laplacian_frame(ei2, N, b2, x2, edge_weight=edge_weight, **kw)
        bad.index_add_(0, batch, (f2.node_block(local=True)[p] != nb).long())
    return int((bad > 0).sum()), f


def dense_adj(ei, n):
    A = torch.zeros(n, n, dtype=torch.long)
    A[ei[0], ei[1]] = 1
    return A


@pytest.fixture(scope="module")
def exp_batch():
    if not EXP_PATH.is_file():
        pytest.skip(f"EXP data not found at {EXP_PATH} (shared/data)")
    data = load_exp(EXP_PATH)
    return concat([(d.edge_index, d.num_nodes, d.node_type) for d in data])


@pytest.fixture(scope="module")
def small_connected():
    """All connected graphs on 3..7 nodes (1 + ... + 853 = 994 graphs) as one batch."""
    gs = [(d.edge_index, d.num_nodes) for n in range(3, 8) for d in connected_graphs(n, cache=False)]
    return concat(gs)


@pytest.fixture(scope="module")
def random_graphs8():
    """1500 random connected graphs on 8 nodes (a graph8c-like subset for the default run)."""
    g = torch.Generator().manual_seed(5)
    out = []
    while len(out) < 1500:
        p = 0.15 + 0.7 * torch.rand(1, generator=g).item()
        m = torch.triu(torch.rand(8, 8, generator=g) < p, 1)
        A = (m | m.t()).long()
        # connected?
        seen = torch.zeros(8, dtype=torch.bool)
        seen[0] = True
        for _ in range(8):
            seen = seen | (A[seen].sum(0) > 0)
        if seen.all():
            out.append((torch.nonzero(A).t().contiguous(), 8))
    return concat(out)


# ---------------------------------------------------------------------------------------------------
# structure on known graphs
# ---------------------------------------------------------------------------------------------------


def test_path_graph_blocks():
    f = laplacian_frame(path_graph(5))
    assert f.size() == [4]  # blocks {0,4}, {1,3}, {2}
    assert math.isclose(float(f.log_size()[0]), math.log(4))
    nb = f.node_block()
    assert nb[0] == nb[4] and nb[1] == nb[3]
    assert len({int(nb[0]), int(nb[1]), int(nb[2])}) == 3
    assert sorted(f.block_sizes().tolist()) == [1, 2, 2]
    assert f.ptr.tolist() == [0, 5] and f.num_graphs == 1


def test_vertex_transitive_and_edgeless_graphs_are_one_block():
    for ei, n in [(cycle_graph(6), 6), (undirected([(i, j) for i in range(5) for j in range(i + 1, 5)]), 5)]:
        f = laplacian_frame(ei, n)
        assert f.block_sizes().tolist() == [n]
        assert f.size() == [math.factorial(n)]
    f = laplacian_frame(torch.zeros(2, 0, dtype=torch.long), 4)  # no edges: L = 0
    assert f.size() == [24]
    f = laplacian_frame(torch.zeros(2, 0, dtype=torch.long), 1)
    assert f.size() == [1] and f.order.tolist() == [0]


def test_features_break_ties():
    """Features are the last key columns: they split tied blocks but do not propagate to neighbours."""
    x = torch.zeros(5, dtype=torch.long)
    x[0] = 1
    f = laplacian_frame(path_graph(5), x=x)
    assert f.size() == [2]  # {0} and {4} separated, {1, 3} still tied
    nb = f.node_block()
    assert nb[1] == nb[3] and nb[0] != nb[4]
    # float, bool and one-hot [N, 2] features give the same partition (block order may differ)
    same = nb[:, None] == nb[None, :]
    for xx in (x.double(), torch.nn.functional.one_hot(x, 2).float(), x.bool()):
        nb2 = laplacian_frame(path_graph(5), x=xx).node_block()
        assert torch.equal(nb2[:, None] == nb2[None, :], same)
    # cycle: only the marked node leaves the block of 6
    assert laplacian_frame(cycle_graph(6), x=torch.tensor([1, 0, 0, 0, 0, 0])).size() == [120]


def test_blocks_are_unions_of_automorphism_orbits():
    """For every automorphism s of G: F(G) = F(sG) = s F(G), so s maps every block to itself."""
    perms = torch.tensor(list(itertools.permutations(range(6))))  # [720, 6]
    for d in connected_graphs(6, cache=False):
        A = dense_adj(d.edge_index, 6)
        auts = perms[(A[perms[:, :, None], perms[:, None, :]] == A).flatten(1).all(1)]
        nb = laplacian_frame(d.edge_index, 6).node_block()
        assert (nb[auts] == nb).all()


def test_batch_equals_single_graphs_and_empty_graphs():
    gs = [(path_graph(5), 5), (cycle_graph(4), 4), (torch.zeros(2, 0, dtype=torch.long), 1), (path_graph(3), 3)]
    ei, batch, N, _ = concat(gs)
    f = laplacian_frame(ei, N, batch, num_graphs=6)  # two trailing empty graphs
    assert f.num_graphs == 6 and f.ptr.tolist() == [0, 5, 9, 10, 13, 13, 13]
    sizes = []
    off = 0
    for b, (e, n) in enumerate(gs):
        fb = laplacian_frame(e, n)
        assert torch.equal(f.order[f.ptr[b] : f.ptr[b + 1]], fb.order + off)
        assert torch.equal(f.node_block(local=True)[off : off + n], fb.node_block())
        sizes += fb.size()
        off += n
    assert f.size() == sizes + [1, 1]
    assert torch.allclose(f.log_size(), torch.tensor([math.log(s) for s in sizes + [1, 1]], dtype=torch.float64))


def test_unsorted_batch_vector(gen):
    gs = [(path_graph(5), 5), (cycle_graph(5), 5), (path_graph(4), 4)]
    ei, batch, N, _ = concat(gs)
    f = laplacian_frame(ei, N, batch)
    p = torch.randperm(N, generator=gen)  # interleaves the graphs
    ei2, _ = permute_graph(ei, p)
    b2 = torch.empty_like(batch)
    b2[p] = batch
    f2 = laplacian_frame(ei2, N, b2)
    assert torch.equal(f2.node_block(local=True)[p], f.node_block(local=True))
    assert torch.equal(b2[f2.order], batch[f.order])  # graph by graph
    assert f2.size() == f.size()


# ---------------------------------------------------------------------------------------------------
# relabelling equivariance: EXP, graph8c
# ---------------------------------------------------------------------------------------------------


@needs_exp
@pytest.mark.parametrize(
    "kw, use_x",
    [
        ({}, False),
        ({}, True),
        ({"edge_weight": "f32"}, False),
        ({"dtype": torch.float32}, False),
        ({"dtype": torch.float32}, True),
    ],
    ids=["f64", "f64-x", "f32-input", "f32-compute", "f32-compute-x"],
)
def test_exp_all_graphs_equivariant(exp_batch, kw, use_x):
    ei, batch, N, x = exp_batch
    kw = dict(kw)
    if kw.get("edge_weight") == "f32":
        kw["edge_weight"] = torch.ones(ei.shape[1], dtype=torch.float32)
    g = torch.Generator().manual_seed(11)
    perms = [within_graph_perm(batch, g) for _ in range(2)]
    nfail, f = failures(ei, batch, N, perms, x=x if use_x else None, **kw)
    assert nfail == 0
    assert f.num_graphs == 1200 and f.num_nodes == 53336


@needs_exp
def test_exp_exact_equality_variant_is_not_equivariant(exp_batch):
    """The motivation for tolerances: exact float comparisons (tol=0) break equivariance."""
    ei, batch, N, _ = exp_batch
    perms = [within_graph_perm(batch, torch.Generator().manual_seed(3))]
    nfail, _ = failures(ei, batch, N, perms, dtype=torch.float32, tol=0.0)
    assert nfail > 600


@needs_exp
@pytest.mark.parametrize("operator", ["normalized_laplacian", "adjacency"])
def test_exp_other_operators_equivariant(exp_batch, operator):
    ei, batch, N, _ = exp_batch
    keep = batch < 300
    ei = ei[:, keep[ei[0]]]
    batch = batch[keep]
    perms = [within_graph_perm(batch, torch.Generator().manual_seed(4))]
    assert failures(ei, batch, batch.numel(), perms, operator=operator)[0] == 0


@pytest.mark.parametrize("dtype_", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_small_connected_graphs_equivariant(small_connected, random_graphs8, dtype_, device):
    for ei, batch, N, _ in (small_connected, random_graphs8):
        g = torch.Generator().manual_seed(21)
        perms = [within_graph_perm(batch, g).to(device) for _ in range(2)]
        assert failures(ei.to(device), batch.to(device), N, perms, dtype=dtype_)[0] == 0


def test_bad_input_on_device(device):
    """Argument checks on the device of the inputs; inputs on the CPU beside a device edge_index are moved
    to it (the same frame)."""
    ei = path_graph(4).to(device)
    for call, match in [
        (lambda: laplacian_frame(torch.tensor([[0], [5]], device=device), 3), "edge_index"),
        (lambda: laplacian_frame(ei, 4, x=torch.tensor([0.0, float("nan"), 1.0, 2.0], device=device)), "x"),
        (lambda: laplacian_frame(ei, 4, edge_weight=torch.full((6,), float("inf"), device=device)), "edge_weight"),
        (lambda: laplacian_frame(ei, 4, batch=torch.tensor([0, 0, 1, 1], device=device)), "different graphs"),
        (lambda: laplacian_frame(ei, 4, batch=torch.tensor([1, 0, 0, 0], device=device)), "batch"),
        (lambda: laplacian_frame(ei, 4, dtype=torch.float16), "dtype"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            call()
    ref = laplacian_frame(ei, 4, x=torch.tensor([0.0, 1.0, 1.0, 0.0], device=device))
    mixed = laplacian_frame(ei, 4, x=torch.tensor([0.0, 1.0, 1.0, 0.0]), batch=torch.zeros(4, dtype=torch.long))
    assert mixed.order.device == ei.device and torch.equal(mixed.node_block(), ref.node_block())


def test_frame_ordered_adjacencies_agree(small_connected):
    """Strong check: the set of adjacency matrices ordered by all frame elements is the same for G and P(G)."""
    ei, batch, N, _ = small_connected
    p = within_graph_perm(batch, torch.Generator().manual_seed(8))
    f = laplacian_frame(ei, N, batch)
    f2 = laplacian_frame(p[ei], N, batch)
    A = dense_adj(ei, N)
    A2 = dense_adj(p[ei], N)
    sizes = f.size()
    checked = 0
    for b in range(f.num_graphs):
        if sizes[b] > 24:
            continue
        S1 = {A[o][:, o].numpy().tobytes() for o in f.enumerate(b, limit=24)}
        S2 = {A2[o][:, o].numpy().tobytes() for o in f2.enumerate(b, limit=24)}
        assert S1 == S2
        checked += 1
    assert checked > 850  # 879 of the 994 graphs


@pytest.fixture(scope="module")
def graph8c_batch(tmp_path_factory):
    data = connected_graphs(8, cache_path=tmp_path_factory.mktemp("cache"))  # nauty or pure Python (~10 s)
    assert len(data) == 11117
    return concat([(d.edge_index, d.num_nodes) for d in data])


@pytest.mark.slow
@pytest.mark.parametrize("dtype_", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_graph8c_all_graphs_equivariant(dtype_, graph8c_batch):
    ei, batch, N, _ = graph8c_batch
    g = torch.Generator().manual_seed(31)
    perms = [within_graph_perm(batch, g) for _ in range(3)]
    nfail, f = failures(ei, batch, N, perms, dtype=dtype_)
    assert nfail == 0
    # float32 adjacency input (computed in float64 internally)
    assert failures(ei, batch, N, perms[:1], edge_weight=torch.ones(ei.shape[1]))[0] == 0
    sizes = np.array([float(s) for s in f.size()])
    assert (sizes <= 1).sum() > 3000  # 3070 with the defaults


# ---------------------------------------------------------------------------------------------------
# enumeration, sampling, hybrid, ranks
# ---------------------------------------------------------------------------------------------------


def _consistent(frame: PermutationFrame, orders: torch.Tensor) -> bool:
    """Every row is a frame element: same blocks at the same positions."""
    nb = frame.node_block()
    return bool((nb[orders] == frame.block).all())


def test_enumerate():
    ei, batch, N, _ = concat([(path_graph(4), 4), (path_graph(7), 7)])
    f = laplacian_frame(ei, N, batch)
    assert f.size() == [4, 8]
    E = f.enumerate(1, limit=8)
    assert E.shape == (8, 7)
    assert torch.equal(E[0], f.order[4:])
    assert len({tuple(r) for r in E.tolist()}) == 8
    assert all(sorted(r) == list(range(4, 11)) for r in E.tolist())
    full = f.order.expand(8, -1).clone()
    full[:, 4:] = E
    assert _consistent(f, full)
    with pytest.raises(ValueError, match="limit"):
        f.enumerate(1, limit=7)
    with pytest.raises(ValueError, match="graph"):
        f.enumerate(2)


def test_sample_uniform_and_consistent(gen):
    ei, batch, N, _ = concat([(path_graph(5), 5), (cycle_graph(4), 4)])
    f = laplacian_frame(ei, N, batch)
    S = f.sample(4000, generator=gen)
    assert S.shape == (4000, N) and S.dtype == torch.long
    assert _consistent(f, S)
    assert torch.equal(S.sort(1).values, torch.arange(N).expand(4000, -1))
    # uniform over the 4 elements of P5 and the 24 of C4
    for lo, hi, m in [(0, 5, 4), (5, 9, 24)]:
        _, counts = torch.unique(S[:, lo:hi], dim=0, return_counts=True)
        assert counts.numel() == m
        expected = 4000 / m
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < m + 6 * math.sqrt(2 * m)  # loose: mean m-1, sd sqrt(2(m-1))
    # reproducible with the same seed
    assert torch.equal(f.sample(3, torch.Generator().manual_seed(0)), f.sample(3, torch.Generator().manual_seed(0)))


def test_canonical_ranks(gen):
    ei, batch, N, _ = concat([(path_graph(5), 5), (cycle_graph(4), 4)])
    f = laplacian_frame(ei, N, batch)
    r = canonical_ranks(f)
    assert r[f.order].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3]
    S = f.sample(7, gen)
    R = canonical_ranks(f, S)
    assert R.shape == (7, N)
    pos = torch.arange(N) - f.ptr[f.position_graph()]
    assert torch.equal(R.gather(1, S), pos.expand(7, -1))


@pytest.mark.parametrize("limit", [1, 8, 1000])
def test_frame_elements_hybrid(limit, gen):
    gs = [(path_graph(5), 5), (cycle_graph(4), 4), (undirected([(0, 1), (1, 2), (1, 3), (3, 4), (4, 5), (0, 2)]), 6)]
    ei, batch, N, _ = concat(gs)
    f = laplacian_frame(ei, N, batch)
    sizes = f.size()
    k = 5
    el = frame_elements(f, limit=limit, k=k, generator=gen)
    assert el.exact.tolist() == [s <= limit for s in sizes]
    ncopies = torch.bincount(el.graph, minlength=3).tolist()
    assert ncopies == [s if s <= limit else k for s in sizes]
    assert torch.equal(el.graph, el.graph.sort().values)  # grouped by graph
    wsum = torch.zeros(3).index_add_(0, el.graph, el.weight)
    assert torch.allclose(wsum, torch.ones(3))
    assert el.weight.dtype == torch.float32
    # every copy is a frame element of its graph
    nb = f.node_block()
    for c in range(el.num_copies):
        o = el.order[el.ptr[c] : el.ptr[c + 1]]
        b = int(el.graph[c])
        assert torch.equal(nb[o], f.block[f.ptr[b] : f.ptr[b + 1]])
    # enumerated graphs: all distinct
    for b in range(3):
        if el.exact[b]:
            rows = {tuple(el.order[el.ptr[c] : el.ptr[c + 1]].tolist()) for c in torch.nonzero(el.graph == b).flatten().tolist()}
            assert len(rows) == sizes[b]
    # folding: copy c is its graph relabelled by its order
    fe = fold_edge_index(el, ei, N)
    cb = el.copy_index()
    assert torch.equal(cb[fe[0]], cb[fe[1]])
    T = el.order.numel()
    Af = dense_adj(fe, T)
    A = dense_adj(ei, N)
    for c in range(el.num_copies):
        lo, hi = int(el.ptr[c]), int(el.ptr[c + 1])
        o = el.order[lo:hi]
        assert torch.equal(Af[lo:hi, lo:hi], A[o][:, o])
    assert torch.equal(el.ranks(), torch.arange(T) - el.ptr[cb])


def test_frame_elements_many_graphs_fast(random_graphs8, gen):
    ei, batch, N, _ = random_graphs8
    f = laplacian_frame(ei, N, batch)
    el = frame_elements(f, limit=100, k=4, generator=gen)
    sizes = f.size()
    assert el.num_copies == sum(s if s <= 100 else 4 for s in sizes)
    wsum = torch.zeros(f.num_graphs, dtype=torch.float64).index_add_(0, el.graph, el.weight.double())
    assert torch.allclose(wsum, torch.ones_like(wsum))


# ---------------------------------------------------------------------------------------------------
# input validation and dtype/device handling
# ---------------------------------------------------------------------------------------------------


def test_float32_and_float64_agree(small_connected):
    ei, batch, N, _ = small_connected
    f64 = laplacian_frame(ei, N, batch)
    f32 = laplacian_frame(ei, N, batch, dtype=torch.float32)
    assert f32.size() == f64.size()
    w32 = laplacian_frame(ei, N, batch, edge_weight=torch.ones(ei.shape[1], dtype=torch.float32))
    assert torch.equal(w32.order, f64.order) and torch.equal(w32.block, f64.block)


def test_weighted_edges_change_the_frame():
    ei = cycle_graph(4)
    w = torch.ones(ei.shape[1], dtype=torch.float64)
    w[(ei[0] + ei[1] == 1) & ((ei[0] - ei[1]).abs() == 1)] = 2.0  # edge {0,1} heavier
    f = laplacian_frame(ei, 4, edge_weight=w)
    assert f.size() == [4]  # {0,1}, {2,3}


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: laplacian_frame(torch.zeros(3, 2, dtype=torch.long), 3), "edge_index"),
        (lambda: laplacian_frame(torch.zeros(2, 2), 3), "edge_index"),
        (lambda: laplacian_frame(torch.tensor([[0], [5]]), 3), "edge_index"),
        (lambda: laplacian_frame(torch.tensor([[0], [1]]), 2), "undirected"),
        (lambda: laplacian_frame(torch.zeros(2, 0, dtype=torch.long)), "num_nodes"),
        (lambda: laplacian_frame(torch.zeros(2, 0, dtype=torch.long), 0), "num_nodes"),
        (lambda: laplacian_frame(path_graph(3), 3, x=torch.tensor([0.0, float("nan"), 1.0])), "x"),
        (lambda: laplacian_frame(path_graph(3), 3, x=torch.zeros(4)), "x"),
        (lambda: laplacian_frame(path_graph(3), 3, edge_weight=torch.full((4,), float("inf"))), "edge_weight"),
        (lambda: laplacian_frame(path_graph(3), 3, edge_weight=torch.ones(3)), "edge_weight"),
        (lambda: laplacian_frame(path_graph(3), 3, operator="foo"), "operator"),
        (lambda: laplacian_frame(path_graph(3), 3, tol=-1.0), "tol"),
        (lambda: laplacian_frame(path_graph(3), 3, key_tol=float("nan")), "key_tol"),
        (lambda: laplacian_frame(path_graph(3), 3, batch=torch.tensor([0, 0, 1])), "different graphs"),
        (lambda: laplacian_frame(path_graph(3), 3, batch=torch.tensor([0, 0])), "batch"),
        (lambda: laplacian_frame(path_graph(3), 3, batch=torch.zeros(3)), "batch"),
        (lambda: laplacian_frame(path_graph(3), 3, dtype=torch.float16), "dtype"),
        (lambda: laplacian_frame(path_graph(3), 3, num_graphs=0), "num_graphs"),
        (
            lambda: laplacian_frame(path_graph(3), 3, operator="normalized_laplacian", edge_weight=-torch.ones(4)),
            "edge_weight",
        ),
        (lambda: frame_elements(laplacian_frame(path_graph(3)), limit=0, k=1), "limit"),
        (lambda: frame_elements(laplacian_frame(path_graph(3)), limit=1, k=0), "k"),
        (lambda: laplacian_frame(path_graph(3)).sample(0), "k"),
        (lambda: canonical_ranks(laplacian_frame(path_graph(3)), torch.zeros(2, 4, dtype=torch.long)), "orders"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# ---------------------------------------------------------------------------------------------------
# connected components and the component frame
# ---------------------------------------------------------------------------------------------------


def _same_partition(a, b):
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_connected_components_match_scipy(gen):
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as scipy_cc

    # a long path (many propagation rounds), a cycle, isolated nodes, a graph without edges
    ei, batch, N, _ = concat([(path_graph(200), 200), (cycle_graph(7), 7), (torch.zeros(2, 0, dtype=torch.long), 3),
                              (undirected([(0, 1), (2, 3), (3, 4)]), 6)])
    perm = within_graph_perm(batch, gen)
    ei, _ = permute_graph(ei, perm)
    lab = connected_components(ei, N)
    _, ref = scipy_cc(coo_matrix((np.ones(ei.shape[1]), (ei[0].numpy(), ei[1].numpy())), shape=(N, N)), directed=False)
    assert _same_partition(lab, torch.from_numpy(ref)) and int(lab.unique().numel()) == 1 + 1 + 3 + 3
    assert torch.equal(lab, lab[lab])  # every label is the smallest node of its component
    assert torch.equal(connected_components(torch.zeros(2, 0, dtype=torch.long), 4), torch.arange(4))


def _component_frame_draws(f, ei, gen, draws):
    out = []
    for _ in range(draws):
        fs = shuffle_components(f, ei, gen)
        out.append(frame_elements(fs, limit=1, k=1, generator=gen).order)
    return torch.stack(out)


def test_shuffle_components_samples_the_component_frame_uniformly(gen):
    # graph 0: P3 + C4 (sizes differ: F has 2 * 24 = 48 elements, F_c 2! * 48 = 96); graph 1: C5, connected
    # (unchanged); graph 2: P2 + P2 (equal sizes tie: F is one block of 4, 24 elements; F_c = 2! * 2 * 2 = 8)
    g0 = torch.cat([path_graph(3), cycle_graph(4) + 3], 1)
    g2 = torch.cat([path_graph(2), path_graph(2) + 2], 1)
    ei, batch, N, _ = concat([(g0, 7), (cycle_graph(5), 5), (g2, 4)])
    f = laplacian_frame(ei, N, batch)
    comp = connected_components(ei, N)
    S = _component_frame_draws(f, ei, gen, 3000)
    for lo, hi, m in [(0, 7, 96), (7, 12, 120), (12, 16, 8)]:
        part = S[:, lo:hi]
        _, counts = torch.unique(part, dim=0, return_counts=True)
        assert counts.numel() == m
        expected = S.shape[0] / m
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < m + 6 * math.sqrt(2 * m)
        # components are contiguous in every draw, and inside a component the blocks of F keep their order
        c = comp[part]
        assert bool(((c[:, 1:] != c[:, :-1]).sum(1) == len(set(comp[lo:hi].tolist())) - 1).all())
    nb = f.node_block(local=True)
    for row in S[:200]:
        for cid in comp.unique():
            blocks = nb[row[comp[row] == cid]]
            assert bool((blocks[1:] >= blocks[:-1]).all())
    # connected graphs: the frame itself
    fs = shuffle_components(f, ei, gen)
    assert torch.equal(fs.order[7:12], f.order[7:12])
    # graph 2's two components tie in F: interleaved orders are in F but never in F_c
    assert bool(((comp[f.sample(500, gen)[:, 12:16]].diff(dim=1) != 0).sum(1) > 1).any())


def test_shuffle_components_is_relabelling_equivariant(gen):
    g0 = torch.cat([path_graph(3), cycle_graph(4) + 3], 1)
    ei, batch, N, _ = concat([(g0, 7), (path_graph(3), 3)])
    perm = within_graph_perm(batch, gen)
    eip, _ = permute_graph(ei, perm)
    support = {tuple(r) for r in _component_frame_draws(laplacian_frame(ei, N, batch), ei, gen, 4000).tolist()}
    support_p = {tuple(r) for r in _component_frame_draws(laplacian_frame(eip, N, batch), eip, gen, 4000).tolist()}
    assert len(support) == 96 * 2  # F_c(P3 + C4) x F(P3)
    assert {tuple(perm[list(r)].tolist()) for r in support} == support_p  # F_c(PG) = P F_c(G)
