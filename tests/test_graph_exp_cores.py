"""The EXP core analysis of ``benchmarks/exp_cores.py`` (a study of the data set, not library code)."""

import sys
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data

from conftest import SHARED_DATA, disjoint_union
from test_graph_separation import known_set

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from exp_cores import exp_cores  # noqa: E402

needs_data = pytest.mark.skipif(not (SHARED_DATA / "exp_graphsat.npz").is_file(), reason="EXP data not available")


def _typed(g, types):
    return Data(x=torch.nn.functional.one_hot(torch.tensor(types), 2).float(), edge_index=g.edge_index,
                num_nodes=g.num_nodes)


def test_exp_cores_finds_the_unshared_component_exactly():
    k33, prism, c6, _, p6 = known_set()
    t = [0, 1, 0, 1, 0, 1]
    shared = _typed(p6, [0, 0, 1, 1, 0, 0])
    # pair 0: K33 + P6 vs prism + P6 (core first); pair 1: P6 + C6 vs relabelled P6 + prism (core last);
    # pair 2: K33 with node types that differ only by the type pattern vs K33 (types are part of the core)
    gen = torch.Generator().manual_seed(0)
    from equiframe.experiments.graphs import relabelled_copies

    g = [disjoint_union(_typed(k33, t), shared), disjoint_union(_typed(prism, t), shared),
         disjoint_union(shared, _typed(c6, t)), relabelled_copies([disjoint_union(shared, _typed(prism, t))], gen)[0],
         disjoint_union(_typed(k33, [0, 0, 0, 1, 1, 1]), shared), disjoint_union(_typed(k33, t), shared)]
    r = exp_cores(g)
    assert [int(m.sum()) for m in r.core] == [6] * 6
    assert r.core[0][:6].all() and r.core[2][6:].all()
    # same typed cores, one class: K33 (alternating types) in graphs 0 and 5, the prism in 1 and 3
    assert r.core_class[0] == r.core_class[5] and r.core_class[1] == r.core_class[3] and r.num_classes == 4
    m = r.core[3]  # the relabelled graph: its core is the prism (9 edges), wherever its nodes went
    assert int(m.sum()) == 6 and int((m[g[3].edge_index[0]] & m[g[3].edge_index[1]]).sum()) == 2 * 9
    # relabelling a graph relabels its core mask
    copy = relabelled_copies(g[:2], torch.Generator().manual_seed(1))
    r2 = exp_cores(copy)
    assert r2.core_class.tolist() == r.core_class[:2].tolist()
    assert [int(m.sum()) for m in r2.core] == [6, 6]
    with pytest.raises(ValueError, match="even"):
        exp_cores(g[:3])
    with pytest.raises(ValueError, match="differ in 0 components"):
        exp_cores([g[0], g[0]])


@needs_data
def test_exp_cores_of_the_published_file():
    from equiframe.datasets.graphs import load_exp

    graphs = load_exp(SHARED_DATA / "exp_graphsat.npz")
    r = exp_cores(graphs)
    assert r.num_classes == 6  # SAT and UNSAT cores of 16, 24 and 32 nodes
    label = {}
    for g, m, c in zip(graphs, r.core, r.core_class.tolist()):
        assert label.setdefault(c, (int(g.y), int(m.sum()))) == (int(g.y), int(m.sum()))
    assert sorted(label.values()) == [(0, 16), (0, 24), (0, 32), (1, 16), (1, 24), (1, 32)]
