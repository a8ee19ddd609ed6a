"""Training frame vs evaluation frame of the FA graph models (``train_frame``), classification wiring, CLI."""

import argparse
import csv
import json

import pytest
import torch
from torch_geometric.data import Batch, Data

from conftest import disjoint_union
from equiframe.experiments.graphs import (
    GraphClassificationConfig,
    GraphClassificationExperiment,
    add_cli,
)
from equiframe.frames.graph import laplacian_frame, permute_graph
from equiframe.models.graphs import build_graph_model, canonical_keys


def random_graph(n, p, gen, feat=2, dtype=torch.float64):
    A = torch.triu(torch.rand(n, n, generator=gen) < p, 1)
    A = A | A.T
    x = torch.nn.functional.one_hot(torch.randint(0, feat, (n,), generator=gen), feat).to(dtype)
    return Data(x=x, edge_index=A.nonzero().T.contiguous(), num_nodes=n)


def circulant(n, skips, feat=2, dtype=torch.float64):
    i = torch.arange(n)
    e = torch.cat([torch.stack([i, (i + s) % n]) for s in skips], 1)
    x = torch.zeros(n, feat, dtype=dtype)
    x[:, 0] = 1.0
    return Data(x=x, edge_index=torch.unique(torch.cat([e, e.flip(0)], 1), dim=1), num_nodes=n)


def relabel_all(graphs, gen):
    out = []
    for g in graphs:
        perm = torch.randperm(g.num_nodes, generator=gen)
        ei, x = permute_graph(g.edge_index, perm, g.x)
        out.append(Data(x=x, edge_index=ei, num_nodes=g.num_nodes))
    return out


def run(model, graphs, **kw):
    b = Batch.from_data_list(graphs)
    return model(b.x, b.edge_index, b.batch, **kw)


def test_canonical_order_is_an_element_of_the_spectral_frame(gen):
    # sorting the nodes by their canonical keys never breaks the spectral frame's block order (features as
    # tie-breakers): the canonical order is one of the orders the spectral frame samples from
    graphs = [random_graph(n, p, gen) for n, p in ((9, 0.3), (12, 0.5), (10, 0.2), (14, 0.4))]
    graphs += [circulant(12, [1, 3]), circulant(10, [1])]
    b = Batch.from_data_list(graphs)
    keys = canonical_keys(b.edge_index, batch=b.batch, x=b.x).keys
    frame = laplacian_frame(b.edge_index, num_nodes=b.num_nodes, batch=b.batch, x=b.x)
    block = frame.node_block(local=True)
    for i in range(len(graphs)):
        s = slice(int(b.ptr[i]), int(b.ptr[i + 1]))
        order = torch.argsort(keys[s])
        assert bool((block[s][order].diff() >= 0).all())


@pytest.mark.parametrize("name", ["fa-mlp", "fa-gin-id"])
def test_train_on_spectral_evaluate_canonical(name, gen):
    # vertex-transitive graphs: spectral frames of n! elements, so training samples vary; eval is canonical
    graphs = [circulant(10, [1, 3]), circulant(10, [1, 2]), random_graph(8, 0.5, gen)]
    torch.manual_seed(0)
    model = build_graph_model(name, in_dim=2, n_max=10, frame="canonical", train_frame="spectral", mode="stochastic",
                              n_samples=2, generator=torch.Generator().manual_seed(0)).double()
    assert model.train_frame_kind == "spectral" and model.frame_kind == "canonical"
    # training mode: n_samples sampled orders of the spectral frame per graph (canonical keys are ignored)
    model.train()
    assert model.active_frame == "spectral"
    out1, (frame, elements) = run(model, graphs, return_frame=True)
    spectral = laplacian_frame(Batch.from_data_list(graphs).edge_index, num_nodes=28,
                               batch=Batch.from_data_list(graphs).batch, x=Batch.from_data_list(graphs).x)
    torch.testing.assert_close(frame.log_size(), spectral.log_size())
    assert elements.num_copies == 2 * len(graphs) and not bool(elements.exact[:2].any())
    out2 = run(model, graphs, key=torch.zeros(28, dtype=torch.long))  # given keys play no role in training
    assert float((out1[:2] - out2[:2]).detach().abs().max()) > 1e-6  # fresh samples: augmentation
    # evaluation mode: the canonical frame, one exact copy per graph, exactly invariant
    model.eval()
    assert model.active_frame == "canonical"
    with torch.no_grad():
        ev, (frame, elements) = run(model, graphs, return_frame=True)
        assert elements.num_copies == len(graphs) and bool(elements.exact.all())
        for _ in range(3):
            torch.testing.assert_close(run(model, relabel_all(graphs, gen)), ev, atol=1e-12, rtol=1e-12)
        # precomputed canonical keys give the same result as keys computed on the fly
        b = Batch.from_data_list(graphs)
        keys = canonical_keys(b.edge_index, batch=b.batch, x=b.x).keys
        torch.testing.assert_close(run(model, graphs, key=keys), ev, atol=0, rtol=0)


def test_train_frame_default_and_errors():
    torch.manual_seed(0)
    m = build_graph_model("fa-mlp", in_dim=1, n_max=6, frame="canonical")
    assert m.train_frame_kind == "canonical" and m.active_frame == "canonical"
    m = build_graph_model("fa-mlp", in_dim=1, n_max=6, frame="spectral", train_frame="canonical")
    assert "key" in m.fa.inputs and m.active_frame == "canonical"
    m.eval()
    assert m.active_frame == "spectral"
    with pytest.raises(ValueError, match="train_frame"):
        build_graph_model("fa-mlp", in_dim=1, n_max=6, frame="canonical", train_frame="exact")
    with pytest.raises(ValueError, match="train_frame"):
        GraphClassificationConfig(model="fa-mlp", frame="canonical", train_frame="sampled")


def test_classification_config_train_frame():
    c = GraphClassificationConfig(dataset="csl", model="fa-mlp", frame="canonical", train_frame="spectral")
    exp = GraphClassificationExperiment(c)
    assert exp.run_name == "csl-fa-mlp-canonical-trainspectral-fold0"
    assert GraphClassificationExperiment(dataset="csl", model="fa-mlp", frame="canonical",
                                         train_frame="canonical").run_name == "csl-fa-mlp-canonical-fold0"
    assert GraphClassificationConfig.from_dict(c.to_dict()) == c
    # model selection: the instance's metric follows config.select (the class keeps "error" for reports)
    assert exp.metric == "error" and GraphClassificationExperiment.metric == "error"
    sel = GraphClassificationExperiment(dataset="csl", model="fa-mlp", frame="canonical", train_frame="spectral",
                                        select="loss")
    assert sel.metric == "loss" and sel.run_name == "csl-fa-mlp-canonical-trainspectral-selloss-fold0"
    assert GraphClassificationExperiment.metric == "error"
    with pytest.raises(ValueError, match="select"):
        GraphClassificationConfig(select="accuracy")


def test_classify_and_cli_train_spectral_eval_canonical(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["graphs", "classify", "--dataset", "csl", "--model", "fa-gin-id", "--frame", "canonical",
                              "--train-frame", "spectral", "--epochs", "2", "--folds", "0", "--hidden", "8",
                              "--layers", "1", "--batch-size", "45", "--out", str(tmp_path), "--quiet", "--json",
                              "--select", "loss"])
    assert args.train_frame == "spectral"
    assert args.func(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["frame"] == "canonical" and res["train_frame"] == "spectral" and res["select"] == "loss"
    run_dir = tmp_path / "graphs" / "csl-fa-gin-id-canonical-trainspectral-selloss-fold0" / "seed0"
    assert len(res["runs"]) == 1 and (run_dir / "metrics.json").is_file()
    rows = list(csv.DictReader((run_dir / "curves.csv").open()))
    best = min(rows, key=lambda r: float(r["val_loss"]))  # selection on the validation loss
    assert res["runs"][0]["best_epoch"] == int(best["epoch"])
    # the trained model in evaluation mode (canonical frame) on relabelled copies of the test graphs
    inv = res["runs"][0]["invariance"]
    assert inv["relabel_graphs"] == 30 and inv["relabel_prediction_agreement"] == 1.0
    assert inv["relabel_max_abs_logit_diff"] <= 1e-5
    for bad in (["--train-frame", "exact"], ["--select", "accuracy"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["graphs", "classify", "--dataset", "csl", "--model", "fa-mlp", *bad])


@pytest.mark.parametrize("name", ["fa-mlp", "fa-gin-id"])
def test_train_components_shuffled(name, gen):
    from equiframe.frames.graph import connected_components

    # two disconnected graphs (a 5-cycle beside a 3-node path; a random graph beside a 4-cycle) and a connected one
    graphs = [disjoint_union(circulant(5, [1]), random_graph(3, 1.0, gen)), disjoint_union(random_graph(6, 0.6, gen),
              circulant(4, [1])), circulant(7, [1, 2])]
    b = Batch.from_data_list(graphs)
    comp = connected_components(b.edge_index, b.num_nodes)
    first = {}
    for order in ("sorted", "shuffled"):
        torch.manual_seed(0)
        first[order] = build_graph_model(name, in_dim=2, n_max=10, frame="canonical", train_frame="spectral",
                                         mode="stochastic", generator=torch.Generator().manual_seed(1),
                                         train_components=order).double()
    assert first["shuffled"].fa.components == "shuffled"
    # training: the component of the first node of graph 0's copy varies only with shuffled components
    seen = {}
    for order, model in first.items():
        model.train()
        starts = set()
        for _ in range(40):
            _, (frame, elements) = run(model, graphs, return_frame=True)
            starts.add(int(comp[elements.order[elements.ptr[0]]]))
            o = elements.order[elements.ptr[2] : elements.ptr[3]]  # the connected graph: an element of F
            nb = frame.node_block(local=True)[o]
            assert bool((nb.diff() >= 0).all())
        seen[order] = starts
    assert len(seen["sorted"]) == 1 and len(seen["shuffled"]) == 2
    # evaluation: identical to the sorted model (same weights), exactly invariant
    with torch.no_grad():
        ev = {k: run(m.eval(), graphs) for k, m in first.items()}
        torch.testing.assert_close(ev["shuffled"], ev["sorted"], atol=0, rtol=0)
        torch.testing.assert_close(run(first["shuffled"], relabel_all(graphs, gen)), ev["shuffled"], atol=1e-12,
                                   rtol=1e-12)


def test_train_components_options_and_errors():
    from equiframe import FrameAveraging

    c = GraphClassificationConfig(dataset="exp", model="fa-mlp", frame="canonical", train_frame="spectral",
                                  select="loss", train_components="shuffled")
    assert GraphClassificationExperiment(c).run_name == "exp-fa-mlp-canonical-trainspectral-shufcomp-selloss-fold0"
    assert GraphClassificationConfig.from_dict(c.to_dict()) == c
    assert GraphClassificationConfig.from_dict({"dataset": "csl"}).train_components == "sorted"  # older configs
    with pytest.raises(ValueError, match="train_components"):
        GraphClassificationConfig(model="fa-mlp", train_components="random")
    with pytest.raises(ValueError, match="train_components"):
        GraphClassificationConfig(model="gin", train_components="shuffled")
    with pytest.raises(ValueError, match="components"):
        FrameAveraging(torch.nn.Identity(), group="S_n", inputs={"x": "scalar"}, components="random")
    with pytest.raises(ValueError, match="components"):
        FrameAveraging(torch.nn.Identity(), group="E(3)", inputs={"pos": "pos"}, components="shuffled")
    with pytest.raises(ValueError, match="stochastic"):  # exact averaging never samples: no silent no-op
        build_graph_model("fa-mlp", in_dim=2, n_max=6, mode="all", train_components="shuffled")
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["graphs", "classify", "--dataset", "exp", "--model", "fa-mlp",
                              "--train-components", "shuffled"])
    assert args.train_components == "shuffled"
