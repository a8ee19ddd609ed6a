"""Bad graph input -> a ValueError / TypeError that names the argument, for every public graph entry point."""

import pytest
import torch

from equiframe.frames.canonical import canonical_keys, wl_classes
from equiframe.frames.graph import connected_components, laplacian_frame, permute_graph
from equiframe.models.graphs import build_graph_model

EI = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])

#: case -> (overrides of (edge_index, batch, x), exception, argument named in the message)
CASES = {
    "edge_index float": (dict(edge_index=EI.float()), TypeError, "edge_index"),
    "edge_index bool": (dict(edge_index=EI.bool()), TypeError, "edge_index"),
    "edge_index list": (dict(edge_index=EI.tolist()), TypeError, "edge_index"),
    "edge_index [3, E]": (dict(edge_index=torch.zeros(3, 4, dtype=torch.long)), ValueError, "edge_index"),
    "edge_index 1-D": (dict(edge_index=torch.zeros(4, dtype=torch.long)), ValueError, "edge_index"),
    "edge_index out of range": (dict(edge_index=torch.tensor([[0, 5], [5, 0]])), ValueError, "edge_index"),
    "edge_index negative": (dict(edge_index=torch.tensor([[0, -1], [-1, 0]])), ValueError, "edge_index"),
    "batch too short": (dict(batch=torch.zeros(2, dtype=torch.long)), ValueError, "batch"),
    "batch float": (dict(batch=torch.zeros(3)), TypeError, "batch"),
    "batch negative": (dict(batch=torch.tensor([-1, 0, 0])), ValueError, "batch"),
    "x NaN": (dict(x=torch.tensor([[1.0], [float("nan")], [1.0]])), ValueError, "x"),
    "x inf": (dict(x=torch.tensor([[1.0], [float("inf")], [1.0]])), ValueError, "x"),
    "empty graph": (dict(x=torch.ones(0, 1), edge_index=torch.zeros(2, 0, dtype=torch.long),
                         batch=torch.zeros(0, dtype=torch.long)), ValueError, "x|num_nodes|batch"),
}


def _models():
    torch.manual_seed(0)
    kw = dict(in_dim=1, n_max=5, hidden=4, layers=2, out_dim=2)
    return {
        "fa-mlp": build_graph_model("fa-mlp", **kw).eval(),
        "fa-gin-id canonical": build_graph_model("fa-gin-id", frame="canonical", **kw).eval(),
        "gin": build_graph_model("gin", **kw).eval(),
        "gcn": build_graph_model("gcn", **kw).eval(),
    }


MODELS = _models()
FUNCTIONS = {
    "laplacian_frame": lambda a: laplacian_frame(a["edge_index"], batch=a["batch"], x=a["x"]),
    "canonical_keys": lambda a: canonical_keys(a["edge_index"], batch=a["batch"], x=a["x"]),
    "wl_classes": lambda a: wl_classes(a["edge_index"], a["batch"], a["x"]),
    **{name: (lambda m: lambda a: m(a["x"], a["edge_index"], a["batch"]))(m) for name, m in MODELS.items()},
}


@pytest.mark.parametrize("fn", sorted(FUNCTIONS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_graph_input_names_the_argument(fn, case):
    over, exc, arg = CASES[case]
    if fn == "wl_classes" and case == "batch too short":
        pytest.skip("wl_classes takes its node count from batch; the edge_index check names edge_index")
    a = dict(edge_index=EI, batch=torch.zeros(3, dtype=torch.long), x=torch.ones(3, 1))
    a.update(over)
    with pytest.raises(exc, match=rf"^({arg}):"):
        FUNCTIONS[fn](a)


def test_models_refuse_unsorted_batches_and_integer_features():
    for m in MODELS.values():
        with pytest.raises(ValueError, match="^batch:.*sorted"):
            m(torch.ones(3, 1), EI, torch.tensor([1, 0, 1]))
        with pytest.raises(TypeError, match="^x:"):
            m(torch.ones(3, 1, dtype=torch.long), EI)


def test_frame_helpers_check_their_arguments():
    with pytest.raises(ValueError, match="^edge_index:"):
        connected_components(torch.tensor([[0, 3], [3, 0]]), 3)
    with pytest.raises(ValueError, match="^edge_index:"):
        connected_components(torch.zeros(3, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="^num_nodes:"):
        connected_components(EI, -1)
    with pytest.raises(ValueError, match="^perm:"):
        permute_graph(EI, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="^edge_index:"):
        permute_graph(torch.tensor([[0, 4], [4, 0]]), torch.tensor([2, 0, 1]))
    with pytest.raises(ValueError, match="^x:"):
        permute_graph(EI, torch.tensor([2, 0, 1]), torch.ones(2))
    # the right answer where the input is fine
    ei, xp = permute_graph(EI, torch.tensor([2, 0, 1]), torch.tensor([1.0, 2.0, 3.0]))
    assert xp.tolist() == [2.0, 3.0, 1.0] and ei.tolist() == [[2, 0, 0, 1], [0, 2, 1, 0]]
