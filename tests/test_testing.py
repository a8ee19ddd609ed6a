"""The shipped equivariance checker: it passes equivariant functions and catches broken ones."""

import pytest
import torch

from equiframe.testing import assert_equivariant, equivariance_error


def centred(pos):
    return pos - pos.mean(-2, keepdim=True)


@pytest.mark.parametrize("d", [2, 3, 4, 5])
def test_known_equivariant_functions_pass(d, dtype, gen):
    pos = torch.randn(3, 7, d, generator=gen, dtype=torch.float64).to(dtype)
    assert_equivariant(centred, {"pos": pos}, types={"pos": "pos"}, output="1x1n", group=f"E({d})", generator=gen)
    assert_equivariant(lambda pos: pos * 2.0, {"pos": pos}, types={"pos": "1x1n"}, output="1x1n", group=f"O({d})", batched=True, generator=gen)
    gram = lambda pos: (pos.transpose(-1, -2) @ pos).flatten(-2)  # noqa: E731  an order-2 tensor
    assert_equivariant(gram, {"pos": pos}, types={"pos": "1x1n"}, output="1x2n", group=f"O({d})", batched=True, generator=gen)


def test_non_equivariant_model_fails(gen):
    W = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    with pytest.raises(AssertionError, match="not E\\(3\\)-equivariant"):
        assert_equivariant(lambda pos: pos @ W, {"pos": torch.randn(2, 5, 3, dtype=torch.float64)}, types={"pos": "pos"}, output="pos", generator=gen)


def test_wrong_output_type_fails(gen):
    """A vector declared as a pseudo-vector fails under reflections (and only there)."""
    pos = torch.randn(2, 5, 3, dtype=torch.float64)
    with pytest.raises(AssertionError):
        assert_equivariant(centred, {"pos": pos}, types={"pos": "pos"}, output="1x1p", group="E(3)", n_trials=6, generator=gen)
    assert_equivariant(centred, {"pos": pos}, types={"pos": "pos"}, output="1x1p", group="SE(3)", generator=gen)


def test_translation_variant_model_fails(gen):
    pos = torch.randn(2, 5, 3, dtype=torch.float64)
    assert_equivariant(lambda pos: pos, {"pos": pos}, types={"pos": "pos"}, output="1x1n", group="O(3)", generator=gen)
    with pytest.raises(AssertionError):
        assert_equivariant(lambda pos: pos, {"pos": pos}, types={"pos": "pos"}, output="1x1n", group="E(3)", generator=gen)


def test_sides_and_ragged_independent_elements(gen):
    batch = torch.tensor([0, 0, 0, 1, 1])
    pos = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    report = equivariance_error(lambda pos, batch: pos, {"pos": pos}, types={"pos": "pos"}, output="pos", batch=batch,
                                return_sides=True, generator=gen)
    lhs, rhs = report.sides["output"][0]
    torch.testing.assert_close(lhs, rhs)
    g = report.elements[0]
    assert g.Q.shape == (2, 3, 3) and not torch.allclose(g.Q[0], g.Q[1])


def test_missing_output_type_is_an_error():
    with pytest.raises(ValueError, match="output"):
        equivariance_error(lambda pos: pos, {"pos": torch.randn(4, 3)}, types={"pos": "pos"})
