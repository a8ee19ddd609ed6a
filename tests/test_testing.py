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


# ------------------------------------------------------------------------------------------ types read from modules
def test_types_are_read_from_the_module(gen, device):
    from equiframe import FrameAveraging

    fa = FrameAveraging(lambda pos, vel: pos + vel.norm(dim=-1, keepdim=True) * pos, group="E(3)",
                        inputs={"pos": "pos", "vel": "1x1n"}, output="pos").to(device)
    pos, vel = (torch.randn(2, 6, 3, generator=gen, dtype=torch.float64).to(device) for _ in range(2))
    report = assert_equivariant(fa, {"pos": pos, "vel": vel}, generator=gen)
    lhs, rhs = report.sides["output"][0]  # both sides recorded, as e3nn-jax does
    torch.testing.assert_close(lhs, rhs)
    assert str(report.types["vel"]) == "1x1n" and str(report.output_types["output"]) == "pos"


def test_tensor_frames_modules_are_checked_without_types(gen):
    from torch_geometric.nn import GCNConv

    from equiframe import TensorReps, random_orthogonal
    from equiframe.nn.tensor_frames import TFConv, ToGlobal, ToLocal

    torch.manual_seed(0)
    reps = TensorReps("2x0n+1x1n+1x2n", dim=3)
    n = 12
    pos = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    frames = random_orthogonal(n, 3, generator=gen, dtype=torch.float64)
    ei = torch.stack([torch.arange(n).repeat_interleave(3), (torch.arange(n).repeat_interleave(3) + torch.arange(1, 4).repeat(n)) % n])
    F = torch.randn(n, reps.size, generator=gen, dtype=torch.float64)
    assert_equivariant(ToLocal(reps), {"x": F, "frames": frames}, generator=gen)
    assert_equivariant(ToGlobal(reps), {"x": F, "frames": frames}, generator=gen)
    conv = TFConv(GCNConv(reps.size, reps.size), reps).double()
    assert_equivariant(conv, {"x": F, "edge_index": ei, "frames": frames, "pos": pos}, generator=gen)


def test_negative_control_for_local_frames(gen):
    """A layer that reads the raw frame axes is not invariant: the checker must say so."""
    from equiframe import TensorReps, random_orthogonal

    class Leaky(torch.nn.Module):
        reps_in = reps_out = TensorReps("1x1n", dim=3)

        def forward(self, x, frames):
            return x + frames[:, 0, :]

    frames = random_orthogonal(5, 3, generator=gen, dtype=torch.float64)
    with pytest.raises(AssertionError, match="equivariant"):
        assert_equivariant(Leaky(), {"x": torch.randn(5, 3, dtype=torch.float64), "frames": frames}, generator=gen)


def test_permutations_sn(gen):
    from equiframe import FrameAveraging
    from equiframe.averaging import node_ranks

    def position_reader(x, edge_index, batch):  # reads node ids: not permutation invariant by itself
        from torch_geometric.utils import scatter

        w = torch.sin(node_ranks(batch).to(x.dtype) + 1.0)[:, None]
        deg = torch.bincount(edge_index[1], minlength=x.shape[0]).to(x.dtype)[:, None]
        return scatter(w * x * (1 + deg), batch, 0, reduce="sum")

    fa = FrameAveraging(position_reader, group="S_n", inputs={"x": "scalar"}, output="scalar")
    ei = torch.tensor([[0, 1, 1, 2, 3, 4, 4, 5], [1, 0, 2, 1, 4, 3, 5, 4]])
    batch = torch.tensor([0, 0, 0, 1, 1, 1])
    x = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    report = assert_equivariant(fa, {"x": x, "edge_index": ei}, batch=batch, generator=gen)
    assert report.elements[0].shape == (6,)
    with pytest.raises(AssertionError, match="S_n"):
        assert_equivariant(position_reader, {"x": x, "edge_index": ei}, types={"x": "scalar"}, output="scalar",
                           group="S_n", batch=batch, generator=gen, n_trials=4)


def test_bad_arguments(gen):
    with pytest.raises(TypeError, match="fn"):
        equivariance_error(3, {"pos": torch.randn(2, 3)}, types={"pos": "pos"}, output="pos")
    with pytest.raises(TypeError, match="inputs"):
        equivariance_error(lambda pos: pos, [torch.randn(2, 3)], types={"pos": "pos"}, output="pos")
    with pytest.raises(ValueError, match="n_trials"):
        equivariance_error(lambda pos: pos, {"pos": torch.randn(2, 3)}, types={"pos": "pos"}, output="pos", n_trials=0)
    with pytest.raises(ValueError, match="group"):
        equivariance_error(lambda pos: pos, {"pos": torch.randn(2, 3)}, types={"pos": "pos"}, output="pos", group="U(3)")
