"""Separation protocol (pair counting, false positives), EXP / SR25 data, classification wiring, CLI."""

import argparse
import json

import pytest
import torch
from torch_geometric.data import Data

from conftest import SHARED_DATA, disjoint_union
from equiframe.experiments.graphs import (
    GraphClassificationConfig,
    GraphClassificationExperiment,
    add_cli,
    classify,
    csl_folds,
    separate,
    undistinguished_pairs,
    with_degree,
)


def graph(n, edges):
    e = torch.tensor(edges, dtype=torch.long).T
    return Data(x=torch.ones(n, 1), edge_index=torch.cat([e, e.flip(0)], 1), num_nodes=n)


def known_set():
    """K_{3,3}, the prism, C_6, two triangles, the path P_6.

    1-WL (hence GIN/GCN) cannot tell K_{3,3} from the prism (both 3-regular) nor C_6 from 2 C_3
    (both 2-regular): exactly the pairs (0, 1) and (2, 3) are undistinguishable for them.
    """
    k33 = graph(6, [(i, j) for i in range(3) for j in range(3, 6)])
    prism = graph(6, [(0, 1), (1, 2), (2, 0), (3, 4), (4, 5), (5, 3), (0, 3), (1, 4), (2, 5)])
    c6 = graph(6, [(i, (i + 1) % 6) for i in range(6)])
    two_c3 = graph(6, [(0, 1), (1, 2), (2, 0), (3, 4), (4, 5), (5, 3)])
    p6 = graph(6, [(i, i + 1) for i in range(5)])
    return [k33, prism, c6, two_c3, p6]


# ------------------------------------------------------------------------------------------ counting logic
def test_undistinguished_pairs_known_answer():
    # 3 seeds, 6 graphs in 1-D: groups {0, 1, 2} always close, {3, 4} close in seeds 0, 1 only, 5 alone
    e = torch.tensor([[0.0, 0.0002, 0.0009, 5.0, 5.0, 9.0],
                      [1.0, 1.0, 1.0, 3.0, 3.0005, 7.0],
                      [2.0, 2.0001, 2.0, 4.0, 8.0, 6.0]])[:, :, None]
    for block in (1, 2, 4, 512):  # block boundaries do not matter
        u = undistinguished_pairs(e, 1e-3, block=block)
        assert sorted(map(tuple, u.tolist())) == [(0, 1), (0, 2), (1, 2)]
    u = undistinguished_pairs(e[:2], 1e-3)
    assert sorted(map(tuple, u.tolist())) == [(0, 1), (0, 2), (1, 2), (3, 4)]
    pairs = torch.tensor([[0, 1], [3, 4], [4, 5]])
    assert undistinguished_pairs(e, 1e-3, pairs).tolist() == [[0, 1]]
    # calibrated: a pair within its graphs' own noise level stays undistinguished
    noise = torch.zeros(3, 6)
    noise[2, 4] = 10.0
    assert undistinguished_pairs(e, 1e-3, pairs, self_distance=noise).tolist() == [[0, 1], [3, 4]]
    # L1 over the embedding dimensions, not per coordinate
    e2 = torch.tensor([[[0.0, 0.0], [0.0006, 0.0006]]])
    assert undistinguished_pairs(e2, 1e-3).shape == (0, 2)


def test_undistinguished_pairs_errors():
    with pytest.raises(ValueError, match="embeddings"):
        undistinguished_pairs(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="NaN"):
        undistinguished_pairs(torch.full((1, 3, 2), float("nan")))
    with pytest.raises(ValueError, match="threshold"):
        undistinguished_pairs(torch.zeros(1, 3, 2), -1.0)
    with pytest.raises(ValueError, match="pairs"):
        undistinguished_pairs(torch.zeros(1, 3, 2), 1e-3, torch.tensor([[0, 3]]))


def test_wl_classes_known_answer():
    from torch_geometric.data import Batch

    from equiframe.models.graphs import wl_classes

    b = Batch.from_data_list(known_set())
    c = wl_classes(b.edge_index, b.batch, b.x).tolist()
    assert c[0] == c[1] and c[2] == c[3] and len({c[0], c[2], c[4]}) == 3


# ------------------------------------------------------------------------------------------ protocol
@pytest.mark.parametrize("model", ["gin", "gcn"])
def test_message_passing_misses_exactly_the_1wl_pairs(model):
    r = separate("custom", model, 3, graphs=known_set(), pairs=None)
    assert r["pairs"] == 10
    if model == "gin":  # 1-WL: same degree sequences of regular graphs
        assert sorted(map(tuple, r["undistinguished_pairs"])) == [(0, 1), (2, 3)]
    else:  # GCN with constant features: D^-1/2 (A + I) D^-1/2 1 = 1 on every regular graph, whatever the degree
        assert sorted(map(tuple, r["undistinguished_pairs"])) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert r["fp_rate_mean"] == 0.0 and r["fp_rate_any_seed"] == 0.0


@pytest.mark.parametrize("model,frame", [("fa-mlp", "spectral"), ("fa-gin-id", "spectral"), ("fa-mlp", "canonical"),
                                         ("fa-gin-id", "canonical")])
def test_fa_models_separate_everything_with_zero_false_positives(model, frame):
    r = separate("custom", model, 3, graphs=known_set(), pairs=None, frame=frame, max_size=720, dtype="float64")
    if (model, frame) == ("fa-gin-id", "spectral"):
        # the exact average over all 720 orders of GIN+ID with eps = 0 (GINConv's initial value: every update
        # sums the closed neighbourhood N[v]) is the same for K_{3,3} and the prism (checked by brute-force
        # enumeration, any depth 1-5); with eps != 0 they are separated (test_graph_models)
        assert r["undistinguished_pairs"] == [[0, 1]]
    else:
        assert r["undistinguished"] == 0
    assert r["fp_rate_any_seed"] == 0.0 and r["fp_max_distance"] < 1e-9  # exact frames: exactly invariant
    assert r["averaging"]["sampled_graphs"] == 0


def test_sampled_frames_show_false_positives():
    # frames of 720 elements (vertex-transitive graphs) sampled with 1 element: the check must catch it
    r = separate("custom", "fa-mlp", 3, graphs=known_set(), pairs=None, max_size=10, n_samples=1)
    assert r["averaging"]["sampled_graphs"] >= 4
    assert r["fp_rate_any_seed"] > 0.0
    assert r["undistinguished_calibrated"] >= r["undistinguished"]


def test_separate_errors():
    with pytest.raises(ValueError, match="model"):
        separate("exp", "mlp", 1)
    with pytest.raises(ValueError, match="dataset"):
        separate("zinc", "gin", 1)
    with pytest.raises(ValueError, match="seeds"):
        separate("custom", "gin", 0, graphs=known_set())
    with pytest.raises(FileNotFoundError, match="data_dir"):
        separate("exp", "gin", 1, data_dir="/nonexistent")


needs_data = pytest.mark.skipif(not (SHARED_DATA / "exp_graphsat.npz").is_file(),
                                reason=f"EXP / SR25 data not found in {SHARED_DATA}")


@needs_data
def test_exp_pairs_gin_vs_canonical_fa_mlp():
    from equiframe.datasets.graphs import load_exp

    graphs = load_exp(SHARED_DATA / "exp_graphsat.npz")
    assert len(graphs) == 1200 and graphs[0].x.shape[1] == 2
    sub = graphs[:16]  # 8 EXP pairs (2k, 2k+1): 1-WL equivalent, non-isomorphic
    pairs = torch.arange(16).reshape(8, 2)
    gin = separate("exp", "gin", 2, graphs=sub, pairs=pairs)
    assert gin["undistinguished"] == 8 and gin["fp_rate_any_seed"] == 0.0
    fa = separate("exp", "fa-mlp", 2, graphs=sub, pairs=pairs, frame="canonical")
    assert fa["undistinguished"] == 0 and fa["fp_rate_any_seed"] == 0.0
    assert fa["canonical"]["failed_graphs"] == 0


@needs_data
def test_sr25_cli_json(capsys):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["graphs", "separate", "--dataset", "sr25", "--model", "gin", "--seeds", "2",
                              "--data-dir", str(SHARED_DATA), "--json", "--quiet"])
    assert args.func(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["pairs"] == 105 and res["undistinguished"] == 105 and res["fp_rate_mean"] == 0.0


# ------------------------------------------------------------------------------------------ classification
def test_csl_folds_are_stratified():
    labels = [k for k in range(10) for _ in range(15)]
    folds = csl_folds(labels, 5, seed=0)
    assert sorted(i for f in folds for i in f) == list(range(150))
    for f in folds:
        assert [sum(labels[i] == c for i in f) for c in range(10)] == [3] * 10
    assert csl_folds(labels, 5, seed=0) == folds


def test_classification_experiment_splits_and_config():
    exp = GraphClassificationExperiment(dataset="csl", model="gin", fold=2)
    sp = exp.split_indices()
    assert (len(sp["train"]), len(sp["valid"]), len(sp["test"])) == (90, 30, 30)
    assert not set(sp["train"]) & set(sp["test"]) and not set(sp["valid"]) & set(sp["test"])
    assert GraphClassificationExperiment.from_dict(exp.to_dict()).config == exp.config
    with pytest.raises(ValueError, match="fold"):
        GraphClassificationConfig(dataset="exp", fold=1)
    with pytest.raises(ValueError, match="model"):
        GraphClassificationConfig(model="mlp")
    # the published test error of the run's data set and model (what `equiframe report` shows beside it)
    assert exp.describe()["published"] == 0.9
    assert GraphClassificationExperiment(dataset="csl", model="gcn").describe()["published"] is None


def test_classify_runs_through_the_shared_loop(tmp_path):
    res = classify("csl", "fa-gin-id", 2, folds=[0], out=tmp_path, hidden=16, layers=2, batch_size=30)
    assert len(res["runs"]) == 1 and 0.0 <= res["test_accuracy_mean"] <= 1.0
    assert (tmp_path / "graphs" / "csl-fa-gin-id-spectral-fold0" / "seed0" / "metrics.json").is_file()


def test_degree_node_features():
    graphs = known_set()
    g2 = with_degree(graphs)
    assert g2[0].x.shape == (6, 2) and g2[0].x[:, 1].tolist() == [3.0] * 6  # K_{3,3}
    assert g2[4].x[:, 1].tolist() == [1.0, 2.0, 2.0, 2.0, 2.0, 1.0]  # P_6
    assert graphs[0].x.shape == (6, 1)  # the input is not modified
    res = separate("graph8c", "gcn", 2, graphs=graphs, pairs=None, node_features="degree")
    assert res["model_config"]["node_features"] == "degree" and res["fp_rate_any_seed"] == 0.0
    assert res["undistinguished"] == 2  # degree is 1-WL information: the two regular pairs stay together
    with pytest.raises(ValueError, match="node_features"):
        separate("graph8c", "gcn", 1, graphs=graphs, node_features="deg")
