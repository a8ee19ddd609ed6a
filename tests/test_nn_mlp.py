"""equiframe.nn.mlp: the one MLP helper (layer order, activations, state-dict keys, argument checks)."""

import pytest
import torch
from torch import nn

from equiframe.nn import mlp


@pytest.mark.parametrize("activation", [nn.ReLU, nn.SiLU])
@pytest.mark.parametrize("last", [False, True])
def test_layers_and_keys_are_those_of_the_sequential_written_out(activation, last):
    torch.manual_seed(0)
    got = mlp([5, 7, 3], activation, last_activation=last)
    torch.manual_seed(0)
    want = nn.Sequential(nn.Linear(5, 7), activation(), nn.Linear(7, 3), *([activation()] if last else []))
    assert [type(m) for m in got] == [type(m) for m in want]
    assert list(got.state_dict()) == list(want.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert all(torch.equal(got.state_dict()[k], want.state_dict()[k]) for k in want.state_dict())
    x = torch.randn(4, 5)
    assert torch.equal(got(x), want(x))


def test_a_single_layer_and_bad_arguments():
    assert [type(m) for m in mlp([3, 2])] == [nn.Linear]
    with pytest.raises(ValueError, match="sizes"):
        mlp([3])
    with pytest.raises(ValueError, match="sizes"):
        mlp([3, 0])
    with pytest.raises(TypeError, match="activation"):
        mlp([3, 2], "relu")
