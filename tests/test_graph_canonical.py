"""Canonical labelling (frames/canonical.py) on highly symmetric graph families, as classes.

Every family is generated here (several members each) and every graph is checked under random relabellings:
the search finishes within the default budget, equal certificates for relabelled copies, the canonical
ordered graph is the same, and the FA models with canonical frames give the same outputs. Non-isomorphic
members of a family (same SRG parameters, so 1-WL and even 3-WL equivalent) get different certificates.
"""

import sys
import warnings
from pathlib import Path

import pytest
import torch

from equiframe.frames.canonical import (
    CanonicalBudgetError,
    CanonicalBudgetWarning,
    canonical_code,
    canonical_keys,
    individualisation_refinement,
    nauty_available,
)
from equiframe.models.graphs import build_graph_model

needs_nauty = pytest.mark.skipif(not nauty_available(), reason="pynauty is not installed")


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from graph_families import (FAMILIES, chang_graphs, clebsch, paley, rook, shrikhande, sr25,  # noqa: E402
                            srg_parameters, triangular)


def _relabel(graph, gen):
    ei, n = graph
    perm = torch.randperm(n, generator=gen)
    return perm[ei], perm


def _ordered_adjacency(ei, n, keys):
    A = torch.zeros(n, n, dtype=torch.bool)
    A[keys[ei[0]], keys[ei[1]]] = True
    return A


# ---------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_members_are_what_they_claim(family):
    graphs, params = FAMILIES[family]
    for g, p in zip(graphs, params):
        if p is not None:
            assert srg_parameters(g) == p


@pytest.mark.parametrize("family", sorted(FAMILIES) + ["sr25"])
def test_canonical_labelling_is_exact_on_symmetric_families(family):
    graphs = sr25() if family == "sr25" else FAMILIES[family][0]
    if not graphs:
        pytest.skip("SR25 data not available")
    gen = torch.Generator().manual_seed(len(family))
    certs = []
    for ei, n in graphs:
        with warnings.catch_warnings():
            warnings.simplefilter("error", CanonicalBudgetWarning)  # the default budget must suffice
            lab = canonical_keys(ei, num_nodes=n)
        assert bool(lab.ok.all()) and sorted(lab.keys.tolist()) == list(range(n))
        A = _ordered_adjacency(ei, n, lab.keys)
        for _ in range(2):
            ei2, perm = _relabel((ei, n), gen)
            lab2 = canonical_keys(ei2, num_nodes=n)
            assert torch.equal(lab2.certificate, lab.certificate)
            assert torch.equal(_ordered_adjacency(ei2, n, lab2.keys), A)
        certs.append((n, tuple(lab.certificate[0].tolist())))
    # members of a family are pairwise non-isomorphic: distinct certificates
    assert len(set(certs)) == len(certs)


def test_chang_graphs_are_not_the_triangular_graph():
    t8 = canonical_keys(*triangular(8)).certificate
    for g in chang_graphs():
        assert not torch.equal(canonical_keys(*g).certificate, t8)


@pytest.mark.parametrize("graph", [triangular(7), chang_graphs()[2], paley(13), rook(4), clebsch(), shrikhande()],
                         ids=["T7", "chang3", "paley13", "rook4", "clebsch", "shrikhande"])
def test_pruning_never_changes_the_result(graph):
    """The first best leaf is never pruned: same certificate and node order as the unpruned search."""
    from equiframe.frames.canonical import _HashRefiner, _matrix_certificate, _twin_classes

    ei, n = graph
    nb = [[] for _ in range(n)]
    for u, v in ei.T.tolist():
        nb[u].append(v)
    args = (n, [0] * n, _HashRefiner(n, ei[0].numpy(), ei[1].numpy()), _matrix_certificate(n, nb))
    full = individualisation_refinement(*args, twins=None, prune=False)
    fast = individualisation_refinement(*args, twins=_twin_classes(n, nb))
    assert (fast.certificate, fast.positions) == (full.certificate, full.positions)
    assert fast.nodes < full.nodes
    A = _ordered_adjacency(ei, n, torch.arange(n))
    for g in fast.generators:  # every automorphism found is one
        gt = torch.tensor(g)
        assert torch.equal(_ordered_adjacency(ei, n, gt), A)


def test_canonical_code_on_symmetric_graphs():
    for ei, n in [paley(13), clebsch(), shrikhande(), rook(4)]:
        pairs = [tuple(p) for p in ei.T.tolist() if p[0] < p[1]]
        c = canonical_code(n, pairs)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(n)).tolist()
        assert canonical_code(n, [(perm[i], perm[j]) for i, j in pairs]) == c
    # Clebsch and Shrikhande have 16 nodes but different degrees; Shrikhande vs rook(4): same SRG parameters
    assert canonical_code(16, [tuple(p) for p in shrikhande()[0].T.tolist()]) != \
        canonical_code(16, [tuple(p) for p in rook(4)[0].T.tolist()])


@pytest.mark.parametrize("name", ["fa-mlp", "fa-gin-id"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fa_models_are_invariant_on_strongly_regular_graphs(name, dtype):
    """Identical outputs for relabelled copies, no warning: T(8), a Chang graph, T(9), Paley(41), L(6)."""
    torch.manual_seed(0)
    graphs = [triangular(8), chang_graphs()[0], triangular(9), paley(41), rook(6)]
    model = build_graph_model(name, in_dim=1, n_max=41, hidden=16, layers=2, out_dim=4, frame="canonical").to(dtype)
    model.eval()
    gen = torch.Generator().manual_seed(1)
    for ei, n in graphs:
        x = torch.ones(n, 1, dtype=dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("error", CanonicalBudgetWarning)
            y, info = model(x, ei, return_info=True)
            ei2, _ = _relabel((ei, n), gen)
            y2 = model(x, ei2)
        assert bool(info.exact.all()) and bool(info.canonical.all()) and float(info.log10_size.max()) == 0.0
        if name == "fa-mlp":
            assert torch.equal(y, y2)  # the same ordered graph: bit for bit
        else:  # the same ordered graph; message sums may add in another order
            torch.testing.assert_close(y, y2, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)


def test_over_budget_is_loud():
    ei, n = triangular(8)
    with pytest.warns(CanonicalBudgetWarning, match="max_states=5"):
        lab = canonical_keys(ei, num_nodes=n, max_states=5)
    assert not bool(lab.ok[0]) and int(lab.keys.abs().sum()) == 0
    with pytest.raises(CanonicalBudgetError, match="max_states"):
        canonical_keys(ei, num_nodes=n, max_states=5, on_budget="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not bool(canonical_keys(ei, num_nodes=n, max_states=5, on_budget="ignore").ok[0])
    # the model says which graphs lost their canonical frame and that the replacement is sampled
    model = build_graph_model("fa-mlp", in_dim=1, n_max=n, hidden=8, layers=2, out_dim=2, frame="canonical",
                              max_states=5, max_size=2)
    model.eval()
    with pytest.warns(CanonicalBudgetWarning, match="1 sampled"):
        _, info = model(torch.ones(n, 1), ei, return_info=True)
    assert info.canonical.tolist() == [False] and info.exact.tolist() == [False]
    # given keys that are not node orders are reported the same way
    with pytest.warns(CanonicalBudgetWarning):
        _, info = model(torch.ones(n, 1), ei, key=torch.zeros(n, dtype=torch.long), return_info=True)
    assert info.canonical.tolist() == [False]


def test_argument_errors():
    ei, n = paley(13)
    with pytest.raises(ValueError, match="backend"):
        canonical_keys(ei, num_nodes=n, backend="bliss")
    with pytest.raises(ValueError, match="on_budget"):
        canonical_keys(ei, num_nodes=n, on_budget="shout")
    with pytest.raises(ValueError, match="canonical_backend"):
        build_graph_model("fa-mlp", in_dim=1, n_max=n, frame="canonical", canonical_backend="auto")
    with pytest.raises(TypeError, match="batch"):
        canonical_keys(ei, num_nodes=n, batch=[0] * n)
    with pytest.raises(TypeError, match="batch"):
        canonical_keys(ei, num_nodes=n, batch=torch.zeros(n))
    with pytest.raises(TypeError, match="edge_index"):
        canonical_keys(ei.tolist(), num_nodes=n)
    with pytest.raises(ValueError, match="num_nodes"):
        canonical_keys(torch.zeros(2, 0, dtype=torch.long), num_nodes=0)
    if not nauty_available():
        with pytest.raises(ImportError, match="pynauty"):
            canonical_keys(ei, num_nodes=n, backend="nauty")


@needs_nauty
def test_nauty_backend_is_isomorphism_consistent():
    """Equal certificates iff isomorphic, for each backend; nauty's order refines the initial colour cells."""
    gen = torch.Generator().manual_seed(3)
    graphs = [triangular(8)] + chang_graphs() + [rook(4), shrikhande(), paley(29)] + sr25()[:5]
    for backend in ("python", "nauty"):
        certs = []
        for ei, n in graphs:
            lab = canonical_keys(ei, num_nodes=n, backend=backend)
            assert lab.backend == backend and bool(lab.ok.all())
            ei2, _ = _relabel((ei, n), gen)
            assert torch.equal(canonical_keys(ei2, num_nodes=n, backend=backend).certificate, lab.certificate)
            certs.append(tuple(lab.certificate[0].tolist()) + (n,))
        assert len(set(certs)) == len(graphs)
    # with node features and self-loops: the canonical order is an element of the spectral frame
    from equiframe.frames.graph import laplacian_frame

    ei, n = paley(13)
    ei = torch.cat([ei, torch.tensor([[0, 5], [0, 5]])], 1)
    x = (torch.arange(n) % 3).float()
    lab = canonical_keys(ei, num_nodes=n, x=x, backend="nauty")
    blk = laplacian_frame(ei, num_nodes=n).node_block()
    o = torch.argsort(lab.keys)
    assert bool((blk[o].diff() >= 0).all())  # blocks in frame order
    for b in blk.unique():
        xb = x[o][blk[o] == b]
        assert bool((xb.diff() >= 0).all())  # features sorted inside every block
    perm = torch.randperm(n, generator=gen)
    xp = torch.empty_like(x)
    xp[perm] = x
    assert torch.equal(canonical_keys(perm[ei], num_nodes=n, x=xp, backend="nauty").certificate, lab.certificate)
    # a model with the nauty backend is exactly invariant too
    torch.manual_seed(0)
    model = build_graph_model("fa-mlp", in_dim=1, n_max=36, hidden=8, layers=2, out_dim=2, frame="canonical",
                              canonical_backend="nauty").eval()
    ei, n = triangular(9)
    y = model(torch.ones(n, 1), ei)
    assert torch.equal(model(torch.ones(n, 1), _relabel((ei, n), gen)[0]), y)
