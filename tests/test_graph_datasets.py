"""Graph data sets: graph6, canonical forms, connected-graph generation (graph8c), CSL, EXP, SR25, pairs."""

import itertools
import os
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

from equiframe.datasets import graphs as gd
from equiframe.datasets.graphs import (
    CONNECTED_COUNTS,
    CSL_SKIPS,
    all_pairs,
    canonical_code,
    connected_graphs,
    consecutive_pairs,
    csl_dataset,
    graph8c,
    iter_all_pairs,
    load_exp,
    load_graph6,
    load_sr25,
    parse_graph6,
    to_graph6,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EXP_PATH = DATA / "exp_graphsat.npz"
SR25_PATH = DATA / "sr251256.g6"
needs_exp = pytest.mark.skipif(not EXP_PATH.is_file(), reason=f"EXP data not found at {EXP_PATH} (shared/data)")
needs_sr25 = pytest.mark.skipif(not SR25_PATH.is_file(), reason=f"SR25 data not found at {SR25_PATH} (shared/data)")
needs_nauty = pytest.mark.skipif(gd._find_geng() is None, reason="nauty (nauty-geng / geng) is not on PATH")


def dense(d):
    A = torch.zeros(d.num_nodes, d.num_nodes, dtype=torch.long)
    A[d.edge_index[0], d.edge_index[1]] = 1
    return A


def check_simple_undirected(d):
    A = dense(d)
    assert torch.equal(A, A.t()), "edges in both directions"
    assert int(A.diagonal().sum()) == 0, "no self-loops"
    assert A.sum() == d.edge_index.shape[1], "no duplicate edges"
    assert d.edge_index.dtype == torch.long


def is_connected(d):
    G = nx.Graph()
    G.add_nodes_from(range(d.num_nodes))
    G.add_edges_from(d.edge_index.t().tolist())
    return nx.is_connected(G)


# ---------------------------------------------------------------------------------------------------
# graph6
# ---------------------------------------------------------------------------------------------------


def test_graph6_known_strings():
    assert to_graph6([(i, j) for i in range(4) for j in range(i + 1, 4)], 4) == "C~"  # K4
    assert parse_graph6("C~") == (4, [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)])
    assert parse_graph6(">>graph6<<A_") == (2, [(0, 1)])
    assert to_graph6([], 0) == "?" and parse_graph6("?") == (0, [])
    assert to_graph6([(0, 1)], 2, header=True) == ">>graph6<<A_"


@pytest.mark.parametrize("n", [1, 2, 5, 8, 62, 63, 100, 300])
def test_graph6_round_trip_and_networkx(n):
    g = np.random.default_rng(n)
    pairs = [(i, j) for j in range(n) for i in range(j) if g.random() < 0.3]
    s = to_graph6(pairs, n)
    m, edges = parse_graph6(s)
    assert m == n and sorted(edges) == sorted(pairs)
    # independent encoder
    G = nx.Graph()
    G.add_nodes_from(range(n))
    G.add_edges_from(pairs)
    assert nx.to_graph6_bytes(G, header=False).strip().decode() == s
    # edge_index input (both directions) gives the same string
    ei = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).t()
    assert to_graph6(torch.cat([ei, ei.flip(0)], 1), n) == s


def test_graph6_size_field():
    for n, length in [(0, 1), (62, 1), (63, 4), (258047, 4), (258048, 8), (2**36 - 1, 8)]:
        b = gd._g6_size_bytes(n)
        assert len(b) == length and gd._g6_size(b) == (n, length)


def test_graph6_errors():
    for bad, match in [("", "empty"), (":Fa@x^", "sparse6"), ("&C~", "digraph6"), ("C~~", "data bytes"), ("C\x01", "invalid")]:
        with pytest.raises(ValueError, match=match):
            parse_graph6(bad)
    with pytest.raises(ValueError, match="self-loop"):
        to_graph6([(1, 1)], 3)
    with pytest.raises(ValueError, match="range"):
        to_graph6([(0, 3)], 3)


def test_load_graph6_file(tmp_path):
    p = tmp_path / "g.g6"
    p.write_text(">>graph6<<C~\n\nA_\n")
    gs = load_graph6(p)
    assert [g.num_nodes for g in gs] == [4, 2]
    assert gs[0].edge_index.shape == (2, 12) and gs[0].x.shape == (4, 1)
    for g in gs:
        check_simple_undirected(g)
    p.write_text("C~\nC~~\n")
    with pytest.raises(ValueError, match=":2:"):
        load_graph6(p)
    with pytest.raises(FileNotFoundError):
        load_graph6(tmp_path / "missing.g6")


# ---------------------------------------------------------------------------------------------------
# canonical form and generation
# ---------------------------------------------------------------------------------------------------


def test_canonical_code_is_a_complete_invariant():
    g = np.random.default_rng(0)
    codes = set()
    for d in connected_graphs(6, cache=False):
        edges = d.edge_index.t().tolist()
        c = canonical_code(6, edges)
        assert c not in codes  # distinct classes, distinct codes
        codes.add(c)
        for _ in range(3):
            p = g.permutation(6)
            assert canonical_code(6, [(int(p[i]), int(p[j])) for i, j in edges]) == c
    # symmetric graphs (twin pruning): K_n, K_{a,b}, cocktail party
    for n in (7, 9):
        kn = [(i, j) for i in range(n) for j in range(i + 1, n)]
        assert canonical_code(n, kn) == 2 ** (n * (n - 1) // 2) - 1
    cp = [(i, j) for i in range(8) for j in range(i + 1, 8) if j != i + 4]
    p = g.permutation(8)
    assert canonical_code(8, cp) == canonical_code(8, [(int(p[i]), int(p[j])) for i, j in cp])
    # isomorphic by networkx <=> equal codes, on random pairs
    for _ in range(30):
        G1 = nx.gnp_random_graph(7, 0.5, seed=int(g.integers(1 << 30)))
        G2 = nx.gnp_random_graph(7, 0.5, seed=int(g.integers(1 << 30)))
        same = canonical_code(7, list(G1.edges)) == canonical_code(7, list(G2.edges))
        assert same == nx.is_isomorphic(G1, G2)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7])
def test_python_generator_counts(n):
    gs = connected_graphs(n, method="python", cache=False)
    assert len(gs) == CONNECTED_COUNTS[n]  # 1, 1, 2, 6, 21, 112, 853
    assert all(g.num_nodes == n for g in gs)
    if n <= 6:
        for g in gs:
            check_simple_undirected(g)
            assert is_connected(g)


@needs_nauty
@pytest.mark.parametrize("n", [5, 7])
def test_nauty_and_python_agree(n):
    a = connected_graphs(n, method="nauty", cache=False)
    b = connected_graphs(n, method="python", cache=False)
    assert len(a) == len(b) == CONNECTED_COUNTS[n]
    assert all(torch.equal(x.edge_index, y.edge_index) for x, y in zip(a, b))


@needs_nauty
def test_graph8c_with_nauty(tmp_path):
    gs = graph8c(method="nauty", cache_path=tmp_path)
    assert len(gs) == 11117
    assert len(list((tmp_path / "connected_graphs").glob("*.npz"))) == 1


@pytest.mark.slow
def test_graph8c_pure_python(tmp_path):
    gs = graph8c(method="python", cache_path=tmp_path)
    assert len(gs) == 11117
    assert len({to_graph6(g.edge_index, 8) for g in gs}) == 11117
    for g in gs[::50]:
        check_simple_undirected(g)
        assert is_connected(g)
    again = graph8c(method="python", cache_path=tmp_path)  # from the cache
    assert all(torch.equal(x.edge_index, y.edge_index) for x, y in zip(gs, again))


def test_cache_write_read_and_corruption(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUIFRAME_CACHE", str(tmp_path / "env"))
    a = connected_graphs(6, method="python")
    files = list((tmp_path / "env" / "connected_graphs").glob("*.npz"))
    assert len(files) == 1
    with np.load(files[0]) as z:
        assert z["codes"].shape == (112,) and z["codes"].dtype == np.int64
    os.utime(files[0], ns=(10**9, 10**9))  # an old time stamp: a regenerated entry would be written anew
    b = connected_graphs(6, method="python")  # read back, no generation
    assert all(torch.equal(x.edge_index, y.edge_index) for x, y in zip(a, b))
    assert files[0].stat().st_mtime_ns == 10**9
    files[0].write_bytes(b"garbage")  # corrupt -> warning, regenerated
    with pytest.warns(RuntimeWarning):
        c = connected_graphs(6, method="python")
    assert len(c) == 112
    # explicit cache root
    connected_graphs(4, method="python", cache_path=tmp_path / "x")
    assert list((tmp_path / "x" / "connected_graphs").glob("*.npz"))


def test_connected_graphs_errors(monkeypatch):
    with pytest.raises(ValueError, match="n"):
        connected_graphs(0, cache=False)
    with pytest.raises(ValueError, match="method"):
        connected_graphs(4, method="magic", cache=False)
    monkeypatch.setenv("PATH", "")  # no nauty-geng / geng to be found
    with pytest.raises(FileNotFoundError, match="nauty"):
        connected_graphs(4, method="nauty", cache=False)
    with pytest.raises(ValueError, match="n <= 8"):
        connected_graphs(9, cache=False)


# ---------------------------------------------------------------------------------------------------
# CSL
# ---------------------------------------------------------------------------------------------------


def circulant_spectrum(n, s):
    k = np.arange(n)
    return np.sort(2 * np.cos(2 * np.pi * k / n) + 2 * np.cos(2 * np.pi * k * s / n))


def test_csl():
    data = csl_dataset()
    assert len(data) == 150
    labels = torch.cat([d.y for d in data])
    assert torch.equal(torch.bincount(labels), torch.full((10,), 15))
    spectra = {}
    for d in data:
        assert d.num_nodes == 41 and d.x.shape == (41, 1) and d.edge_index.shape == (2, 164)
        check_simple_undirected(d)
        assert (dense(d).sum(1) == 4).all()
        ev = np.linalg.eigvalsh(dense(d).double().numpy())
        k = int(d.y)
        assert np.allclose(ev, circulant_spectrum(41, CSL_SKIPS[k]), atol=1e-8)  # isomorphic to C41(1, s)
        spectra.setdefault(k, ev)
    # classes are non-isomorphic (distinct spectra)
    for a, b in itertools.combinations(range(10), 2):
        assert not np.allclose(spectra[a], spectra[b], atol=1e-6)
    # the copies of a class are relabelled differently; the data set is reproducible
    assert not torch.equal(data[0].edge_index, data[1].edge_index)
    again = csl_dataset(torch.Generator().manual_seed(0))
    assert all(torch.equal(x.edge_index, y.edge_index) for x, y in zip(data, again))
    other = csl_dataset(torch.Generator().manual_seed(1))
    assert not torch.equal(other[0].edge_index, data[0].edge_index)
    with pytest.raises(ValueError, match="skips"):
        csl_dataset(skips=(1,))


# ---------------------------------------------------------------------------------------------------
# EXP, SR25
# ---------------------------------------------------------------------------------------------------


@needs_exp
def test_exp():
    data = load_exp(EXP_PATH)
    assert len(data) == 1200
    assert sum(d.num_nodes for d in data) == 53336
    assert sum(d.edge_index.shape[1] for d in data) == 132260
    for d in data[::37]:
        check_simple_undirected(d)
    for d in data:
        assert d.x.shape == (d.num_nodes, 2) and torch.equal(d.x.sum(1), torch.ones(d.num_nodes))
        assert torch.equal(d.x.argmax(1), d.node_type)
    y = torch.cat([d.y for d in data])
    pairs = consecutive_pairs(len(data))
    assert pairs.shape == (600, 2) and pairs[0].tolist() == [0, 1] and pairs[-1].tolist() == [1198, 1199]
    assert torch.equal(y[pairs].sum(1), torch.ones(600, dtype=torch.long))  # one SAT, one UNSAT


def test_exp_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_exp(tmp_path / "none.npz")
    p = tmp_path / "bad.npz"
    np.savez(p, node_ptr=np.array([0, 2]), x=np.zeros(2, np.int8))
    with pytest.raises(ValueError, match="lacks"):
        load_exp(p)
    np.savez(
        p,
        node_ptr=np.array([0, 2]),
        x=np.zeros(2, np.int8),
        edge_ptr=np.array([0, 2]),
        edge_index=np.array([[0, 5], [5, 0]], np.int16),
        y=np.array([1], np.int8),
    )
    with pytest.raises(ValueError, match="node ids"):
        load_exp(p)


@needs_sr25
def test_sr25():
    data = load_sr25(SR25_PATH)
    assert len(data) == 15
    n, k, lam, mu = 25, 12, 5, 6
    eye = torch.eye(n, dtype=torch.long)
    J = torch.ones(n, n, dtype=torch.long)
    for d in data:
        check_simple_undirected(d)
        A = dense(d)
        assert (A.sum(1) == k).all()
        # SRG(n, k, lambda, mu): A^2 = k I + lambda A + mu (J - I - A)
        assert torch.equal(A @ A, k * eye + lam * A + mu * (J - eye - A))
    # graph6 round trip reproduces the file
    lines = [l for l in SR25_PATH.read_text().splitlines() if l.strip()]
    assert [to_graph6(d.edge_index, d.num_nodes) for d in data] == lines


# ---------------------------------------------------------------------------------------------------
# pairs
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, chunk", [(0, 3), (1, 3), (2, 1), (7, 1), (7, 4), (7, 100), (30, 50)])
def test_pairs(n, chunk):
    ap = all_pairs(n)
    assert ap.shape == (n * (n - 1) // 2, 2)
    assert (ap[:, 0] < ap[:, 1]).all()
    chunks = list(iter_all_pairs(n, chunk))
    assert all(c.shape[0] <= chunk for c in chunks)
    got = torch.cat(chunks) if chunks else torch.zeros(0, 2, dtype=torch.long)
    assert torch.equal(got, ap)
    assert consecutive_pairs(n).shape == (n // 2, 2)
