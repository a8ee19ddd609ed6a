"""FrameAveraging: exact invariance/equivariance for any backbone, dense and ragged, all modes."""

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import TOL, degenerate_clouds
from equiframe import FoldedBatch, FrameAveraging, LaplacianFrames, PCAFrames, SymmetricGroup, TensorReps
from equiframe.testing import assert_equivariant, equivariance_error


class PointMLP(nn.Module):
    """A deliberately non-equivariant PointNet-style backbone with typed per-point and global outputs."""

    def __init__(self, d: int, extra: int = 0, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.d = d
        self.f = nn.Sequential(nn.Linear(d + extra, 32), nn.Tanh(), nn.Linear(32, 32))
        self.point = nn.Linear(64 + d + extra, d + d + d * d)  # a vector, a pseudo-vector, an order-2 tensor
        self.glob = nn.Linear(32, 4 + d)

    def forward(self, pos, vel=None, mask=None, batch=None, edge_index=None):
        h = pos if vel is None else torch.cat([pos, vel], -1)
        z = self.f(h)
        if batch is None:
            if mask is not None:
                z = z.masked_fill(~mask[..., None], -1e9)
            g = z.max(-2).values
            gl = g[..., None, :].expand(*h.shape[:-1], 32)
        else:
            from torch_geometric.utils import scatter

            g = scatter(z, batch, 0, reduce="max")
            gl = g[batch]
        pt = self.point(torch.cat([gl, z, h], -1))
        d = self.d
        out = self.glob(g)
        return {
            "inv": out[..., :4],
            "gvec": out[..., 4:],
            "vec": pt[..., :d],
            "pvec": pt[..., d : 2 * d],
            "mat": pt[..., 2 * d :],
            "pos": pos + pt[..., :d],
        }


OUT = {"inv": "scalar", "gvec": "1x1n", "vec": "1x1n", "pvec": "1x1p", "mat": "1x2n", "pos": "pos"}


def make_fa(d, group, mode, dtype, extra=False, **kw):
    bb = PointMLP(d, d if extra else 0).to(dtype)
    inputs = {"pos": "pos", "vel": "1x1n"} if extra else {"pos": "pos"}
    return FrameAveraging(bb, group=f"{group}({d})", inputs=inputs, output=OUT, mode=mode, **kw).to(dtype)


@pytest.mark.parametrize("d", [2, 3, 4, 5])
@pytest.mark.parametrize("group", ["O", "SO", "E", "SE"])
@pytest.mark.parametrize("mode", ["all", "canonical"])
def test_dense_equivariance(d, group, mode, dtype, gen, device):
    fa = make_fa(d, group, mode, dtype, extra=True).to(device)
    pos = (torch.randn(3, 9, d, generator=gen, dtype=torch.float64) * torch.linspace(1, 2, d, dtype=torch.float64)).to(dtype)
    vel = torch.randn(3, 9, d, generator=gen, dtype=torch.float64).to(dtype)
    # the types are read from the module (reps_in / reps_out), the group from its frames
    report = assert_equivariant(fa, {"pos": pos.to(device), "vel": vel.to(device)}, generator=gen, n_trials=2)
    assert set(report.errors) == set(OUT)
    assert str(report.output_types["pvec"]) == "1x1p" and len(report.sides["vec"]) == 2


@pytest.mark.parametrize("d", [2, 3, 4, 5])
@pytest.mark.parametrize("group", ["O", "SO", "E", "SE"])
@pytest.mark.parametrize("mode", ["all", "canonical", "stochastic"])
def test_ragged_equivariance_per_graph_transforms(d, group, mode, dtype, gen):
    fa = make_fa(d, group, mode, dtype, generator=torch.Generator().manual_seed(0))
    fa.eval()  # stochastic mode averages the full frame at evaluation
    sizes = [5, 9, 7]
    batch = torch.arange(3).repeat_interleave(torch.tensor(sizes))
    pos = torch.randn(sum(sizes), d, generator=gen, dtype=torch.float64).to(dtype)
    assert_equivariant(fa, {"pos": pos}, group=f"{group}({d})", batch=batch, generator=gen, n_trials=2)


@pytest.mark.parametrize("d", [2, 3, 4])
@pytest.mark.parametrize("name", ["cube", "simplex", "square", "collinear", "single", "identical", "duplicates"])
def test_exact_on_degenerate_inputs(name, d, dtype, gen):
    if name == "square" and d == 2:
        pytest.skip("same as cube")
    X = degenerate_clouds(d, dtype)[name]
    for group in ("O", "E", "SO"):
        fa = make_fa(d, group, "all", dtype)
        report = assert_equivariant(fa, {"pos": X}, group=f"{group}({d})", generator=gen, n_trials=2)
        assert report.max_error <= TOL[dtype]


@pytest.mark.parametrize("name", ["cube", "single", "duplicates", "collinear", "square"])
def test_gradients_finite_on_degenerate_inputs(name):
    X = degenerate_clouds(3, torch.float64)[name].clone().requires_grad_(True)
    fa = make_fa(3, "E", "all", torch.float64)
    out = fa(pos=X)
    loss = out["inv"].sum() + out["vec"].pow(2).sum() + out["pos"].sum()
    (grad,) = torch.autograd.grad(loss, X)
    assert torch.isfinite(grad).all()


def test_gradient_matches_finite_differences_on_generic_input():
    torch.manual_seed(0)
    X = torch.randn(7, 3, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    fa = make_fa(3, "E", "all", torch.float64)
    f = lambda x: fa(pos=x)["inv"]  # noqa: E731
    assert torch.autograd.gradcheck(f, (X.requires_grad_(True),), eps=1e-6, atol=1e-5)


def test_far_from_origin_float32_keeps_input_precision(gen):
    """A cloud at distance 1e4 in float32 loses no more than the input's own rounding."""
    X = torch.randn(4, 64, 3, generator=gen, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    X32 = (X + 1e4).float()  # the input's own rounding happens here
    fa32 = make_fa(3, "E", "all", torch.float32)
    fa64 = make_fa(3, "E", "all", torch.float64)
    fa64.load_state_dict({k: v.double() for k, v in fa32.state_dict().items()})
    with torch.no_grad():
        a, b = fa32(pos=X32), fa64(pos=X32.double())
    for k in ("inv", "vec", "mat"):
        err = float((a[k].double() - b[k]).abs().max() / b[k].abs().max())
        assert err < 1e-4, (k, err)


def test_stochastic_mode_is_reproducible_and_full_at_eval(gen):
    X = torch.randn(4, 10, 3, generator=gen, dtype=torch.float64)
    fa = make_fa(3, "E", "stochastic", torch.float64, n_samples=2, generator=torch.Generator().manual_seed(1))
    y1 = fa(pos=X)["inv"]
    fa.generator = torch.Generator().manual_seed(1)
    y2 = fa(pos=X)["inv"]
    torch.testing.assert_close(y1, y2)
    _, frame = fa(pos=X, return_frame=True)
    assert frame.sizes.tolist() == [2] * 4
    fa.eval()
    _, frame = fa(pos=X, return_frame=True)
    assert frame.sizes.tolist() == [8] * 4
    full = make_fa(3, "E", "all", torch.float64)
    torch.testing.assert_close(fa(pos=X)["inv"], full(pos=X)["inv"])


def test_canonical_equals_all_on_invariant_output_for_symmetric_input():
    X = degenerate_clouds(3)["cube"]
    a = make_fa(3, "E", "all", torch.float64)(pos=X)
    c = make_fa(3, "E", "canonical", torch.float64)(pos=X)
    torch.testing.assert_close(a["inv"], c["inv"])


def test_pyg_batch_and_edge_index_replication(gen):
    class GNN(nn.Module):
        def forward(self, data):
            from torch_geometric.utils import scatter

            src, dst = data.edge_index
            rel = data.pos[src] - data.pos[dst]
            msg = torch.tanh(rel @ torch.tensor([[1.0, 0.5, -0.3], [0.2, -1.0, 0.7], [0.4, 0.1, 1.2]], dtype=rel.dtype))
            node = scatter(msg, dst, 0, dim_size=data.pos.shape[0]) + data.x * data.vel
            return node

    graphs = []
    for n in (4, 6, 5):
        ei = torch.combinations(torch.arange(n)).T
        graphs.append(Data(pos=torch.randn(n, 3, generator=gen, dtype=torch.float64), vel=torch.randn(n, 3, generator=gen, dtype=torch.float64),
                           x=torch.randn(n, 1, generator=gen, dtype=torch.float64), edge_index=torch.cat([ei, ei.flip(0)], 1)))
    data = Batch.from_data_list(graphs)
    fa = FrameAveraging(GNN(), group="E(3)", inputs={"pos": "pos", "vel": "1x1n", "x": "1x0n"}, output="1x1n")
    y = fa(data)
    assert y.shape == (15, 3)

    def kw(pos, vel, x, batch):
        d = Data(pos=pos, vel=vel, x=x, edge_index=data.edge_index, batch=batch)
        d.batch = batch
        return fa(d)

    kw.inputs, kw.output = fa.inputs, fa.output
    assert_equivariant(kw, {"pos": data.pos, "vel": data.vel, "x": data.x}, batch=data.batch, generator=gen)


def test_tuple_output_and_unbatched_cloud(gen):
    class BB(nn.Module):
        def forward(self, pos):
            return pos.sum(-2), pos.pow(2).sum((-1, -2))

    fa = FrameAveraging(BB(), group="O(3)", inputs={"pos": "pos"}, output=("1x1n", "scalar"))
    pos = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    v, s = fa(pos=pos)
    assert v.shape == (3,) and s.shape == ()
    assert_equivariant(fa, {"pos": pos}, group="O(3)", generator=gen)


def test_group_with_literal_d_reads_the_dimension(gen):
    fa = FrameAveraging(PointMLP(4).double(), group="E(d)", inputs={"pos": "pos"}, output=OUT)
    pos = torch.randn(2, 6, 4, generator=gen, dtype=torch.float64)
    assert fa(pos=pos)["mat"].shape == (2, 6, 16)
    assert_equivariant(fa, {"pos": pos}, group="E(4)", generator=gen)


@pytest.mark.parametrize(
    "ctor, match",
    [
        (dict(inputs={"x": "1x1n"}), "frame_from"),
        (dict(inputs={"pos": "pos"}, output="1x9q"), "output"),
        (dict(inputs={"pos": "pos", "v": "2y"}), "inputs"),
        (dict(inputs={"pos": "pos"}, group="U(3)"), "group"),
        (dict(inputs={"pos": "pos"}, mode="most"), "mode"),
        (dict(inputs={"pos": "pos"}, mode="all", n_samples=3), "n_samples"),
    ],
)
def test_constructor_errors(ctor, match):
    with pytest.raises(ValueError, match=match):
        FrameAveraging(lambda **k: k["pos"], **{"group": "E(3)", **ctor})


def test_call_errors(gen):
    fa = make_fa(3, "E", "all", torch.float64, extra=True)
    pos = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    with pytest.raises(ValueError, match="vel: leading dimension"):
        fa(pos=pos, vel=torch.randn(3, 5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="vel: has 4 points"):
        fa(pos=pos, vel=torch.randn(2, 4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="vel: last dimension"):
        fa(pos=pos, vel=torch.randn(2, 5, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="vel: contains NaN"):
        fa(pos=pos, vel=torch.full((2, 5, 3), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="pos: missing"):
        fa(vel=pos)
    with pytest.raises(ValueError, match="dimension"):
        fa(pos=torch.randn(2, 5, 2, dtype=torch.float64), vel=torch.randn(2, 5, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="keyword"):
        fa(pos)
    with pytest.raises(ValueError, match="batch"):
        fa(pos=pos[0], vel=pos[0], batch=torch.zeros(3, dtype=torch.long))
    bad_out = FrameAveraging(lambda pos: pos[..., :2], group="E(3)", inputs={"pos": "pos"}, output="pos")
    with pytest.raises(ValueError, match="output: last dimension"):
        bad_out(pos=pos)
    with pytest.raises(ValueError, match="edge_index"):
        make_fa(3, "E", "all", torch.float64)(pos=pos[0], batch=torch.zeros(5, dtype=torch.long), edge_index=torch.tensor([[0], [7]]))


def test_negative_control_unwrapped_backbone_fails(gen):
    bb = PointMLP(3).double()
    pos = torch.randn(2, 8, 3, generator=gen, dtype=torch.float64)
    report = equivariance_error(bb, {"pos": pos}, types={"pos": "pos"}, output=OUT, group="E(3)", generator=gen)
    assert all(v > 1e-3 for k, v in report.errors.items())


# ------------------------------------------------------------------------------------------ frames as objects
def test_frames_object_equals_the_shortcut(gen):
    pos = torch.randn(4, 10, 3, generator=gen, dtype=torch.float64)
    for mode in ("all", "canonical"):
        a = make_fa(3, "SE", mode, torch.float64)
        b = FrameAveraging(a.backbone, frames=PCAFrames("SE(3)", mode=mode), inputs={"pos": "pos"}, output=OUT)
        assert isinstance(a.frames, PCAFrames) and a.frames.mode == mode and str(a.group) == "SE(3)"
        for k, v in a(pos=pos).items():
            torch.testing.assert_close(v, b(pos=pos)[k])
    s = FrameAveraging(lambda x, edge_index, batch: x, group="Sn", inputs={"x": "scalar"}, output="scalar")
    assert isinstance(s.frames, LaplacianFrames) and isinstance(s.group, SymmetricGroup)


def test_types_are_parsed_once_and_exposed():
    fa = make_fa(3, "E", "all", torch.float64, extra=True)
    assert fa.reps_in == {"pos": TensorReps("pos", dim=3), "vel": TensorReps("1x1n", dim=3)}
    assert fa.reps_out["inv"].is_invariant and fa.reps_out["mat"] == TensorReps("1x2n", dim=3)
    generic = FrameAveraging(PointMLP(4).double(), group="E(d)", inputs={"pos": "pos"}, output=OUT)
    assert generic.reps_in["pos"].dim is None  # dimension-generic until the data says
    assert generic.types_for(4)[1]["mat"].size == 16


def test_folded_batch_is_public_and_the_old_name_remains():
    from equiframe.averaging import _Fold

    assert _Fold is FoldedBatch
    frame = PCAFrames("E(3)")(torch.randn(7, 3, dtype=torch.float64), batch=torch.tensor([0, 0, 0, 1, 1, 1, 1]))
    fold = FoldedBatch.euclidean(frame, dense=False, batch=torch.tensor([0, 0, 0, 1, 1, 1, 1]), edge_index=None)
    assert fold.M == 16 and fold.node_src.shape == (56,) and int(fold.new_batch.max()) == 15
    torch.testing.assert_close(fold.average_nodes(torch.ones(56, 1, dtype=torch.float64)), torch.ones(7, 1, dtype=torch.float64))


def test_point_cloud_data_without_edge_index(gen):
    from torch_geometric.data import Data

    class Net(nn.Module):
        def forward(self, data):
            return data.pos * 2.0

    fa = FrameAveraging(Net(), group="E(3)", inputs={"pos": "pos"}, output="1x1n")
    data = Data(pos=torch.randn(6, 3, generator=gen, dtype=torch.float64))
    y = fa(data)
    assert y.shape == (6, 3)
    torch.testing.assert_close(y, 2 * (data.pos - data.pos.mean(0)))  # the equivariant part of 2 x


@pytest.mark.parametrize("d", [2, 3])
def test_ragged_equals_dense(d, dtype, gen):
    """The ragged path (padded or equal sizes) gives the dense result, for vectors and positions."""
    fa = make_fa(d, "E", "all", dtype)
    pos = torch.randn(3, 12, d, generator=gen, dtype=torch.float64).to(dtype)
    dense = fa(pos=pos)
    ragged = fa(pos=pos.reshape(-1, d), batch=torch.arange(3).repeat_interleave(12))
    for k in ("vec", "pos", "mat"):
        torch.testing.assert_close(ragged[k], dense[k].reshape(36, -1), rtol=TOL[dtype], atol=TOL[dtype])


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "ctor, err, match",
    [
        (dict(max_size=0), ValueError, "max_size"),
        (dict(max_size=-3), ValueError, "max_size"),
        (dict(max_size=2.5), TypeError, "max_size"),
        (dict(max_size=True), TypeError, "max_size"),
        (dict(mode="stochastic", n_samples=0), ValueError, "n_samples"),
        (dict(mode="stochastic", n_samples=True), TypeError, "n_samples"),
        (dict(eval_mode="stochastic"), ValueError, "eval_mode"),
        (dict(generator=3), TypeError, "generator"),
        (dict(tol=1e-3), TypeError, "tol"),
        (dict(group=3), TypeError, "group"),
        (dict(group="E(0)"), ValueError, "group|dim"),
        (dict(inputs=["pos"]), TypeError, "inputs"),
        (dict(inputs={"pos": "pos", "batch": "1x0n"}), ValueError, "inputs"),
        (dict(inputs={"pos": "pos", "v": 3}), TypeError, "inputs"),
        (dict(output={}), ValueError, "output"),
        (dict(output=5), TypeError, "output"),
        (dict(frame_from=3), ValueError, "frame_from"),
        (dict(frames="E(3)"), TypeError, "frames"),
        (dict(frames=PCAFrames("E(3)"), mode="all"), ValueError, "mode"),
        (dict(frames=PCAFrames("E(3)"), group="E(3)"), ValueError, "group"),
        (dict(components="shuffled"), ValueError, "components"),
        (dict(group="S_n", inputs={"x": "1x1n"}), ValueError, "S_n"),
    ],
)
def test_constructor_bad_arguments_name_the_argument(ctor, err, match):
    kw = {"inputs": {"pos": "pos"}, "output": "1x1n", **ctor}
    with pytest.raises(err, match=match):
        FrameAveraging(lambda **k: k["pos"], **kw)


def test_backbone_must_be_callable():
    with pytest.raises(TypeError, match="backbone"):
        FrameAveraging(3, inputs={"pos": "pos"})


@settings(max_examples=25, deadline=None)
@given(st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), st.booleans(), st.text(max_size=3), st.none()))
def test_max_size_property(value):
    """Every non-positive-integer max_size is refused with an error naming it (None is the default)."""
    if value is None:
        FrameAveraging(lambda pos: pos, inputs={"pos": "pos"}, max_size=value)
        return
    with pytest.raises((TypeError, ValueError), match="max_size"):
        FrameAveraging(lambda pos: pos, inputs={"pos": "pos"}, max_size=value)


def test_call_bad_input_classes(gen, device):
    fa = make_fa(3, "E", "all", torch.float64).to(device)
    pos = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64).to(device)
    cases = [
        (dict(pos=torch.full((2, 5, 3), float("inf"), dtype=torch.float64, device=device)), ValueError, "pos: contains NaN or inf"),
        (dict(pos=pos.clone().index_fill_(1, torch.tensor([2], device=device), float("nan"))), ValueError, "pos: contains NaN"),
        (dict(pos=torch.zeros(2, 0, 3, dtype=torch.float64, device=device)), ValueError, "pos: empty"),
        (dict(pos=torch.zeros(0, 5, 3, dtype=torch.float64, device=device)), ValueError, "pos: empty"),
        (dict(pos=pos.long()), TypeError, "pos: expected a float32 or float64"),
        (dict(pos=pos.half()), TypeError, "pos: expected a float32 or float64"),
        (dict(pos=[[0.0, 1.0, 2.0]]), TypeError, "pos: expected a tensor"),
        (dict(pos=pos[0, 0]), ValueError, "pos"),
        (dict(pos=pos[..., :2]), ValueError, "pos: data has dimension 2"),
        (dict(pos=pos.reshape(10, 3), batch=torch.zeros(9, dtype=torch.long, device=device)), ValueError, "batch: has 9"),
        (dict(pos=pos.reshape(10, 3), batch=torch.tensor([1, 0] * 5, device=device)), ValueError, "batch: must be sorted"),
        (dict(pos=pos.reshape(10, 3), batch=torch.zeros(10, device=device)), ValueError, "batch: expected a 1-D integer"),
        (dict(pos=pos.reshape(10, 3), batch=torch.tensor([0] * 5 + [2] * 5, device=device)), ValueError, "batch: example"),
        (dict(pos=pos, mask=torch.ones(2, 5, device=device)), ValueError, "mask"),
        (dict(pos=pos, mask=torch.zeros(2, 5, dtype=torch.bool, device=device)), ValueError, "mask: example"),
        (dict(pos=pos.reshape(10, 3), batch=torch.zeros(10, dtype=torch.long, device=device), mask=torch.ones(10, dtype=torch.bool, device=device)), ValueError, "mask"),
        (dict(pos=pos.reshape(10, 3), batch=torch.zeros(10, dtype=torch.long, device="meta")), ValueError, "batch: is on"),
        (dict(pos=pos, mask=torch.ones(2, 5, dtype=torch.bool, device="meta")), ValueError, "mask: is on"),
        (dict(pos=pos.reshape(10, 3), batch=torch.zeros(10, dtype=torch.long, device=device), edge_index=torch.tensor([[0.0], [1.0]], device=device)), TypeError, "edge_index"),
    ]
    for kw, err, match in cases:
        with pytest.raises(err, match=match):
            fa(**kw)


@pytest.mark.parametrize("scale", [1e19, 1e-30, 2.0**-126, 1e-41])
def test_float32_clouds_at_the_limits_of_the_format(scale, gen, device):
    """Huge, tiny and subnormal float32 clouds get the frames of the unit-scale cloud (no error about an
    internal matrix) and exactly invariant outputs."""
    X = torch.randn(3, 9, 3, generator=gen, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    small = (X * scale).float().to(device)
    assert bool((small != 0).all()) and bool(torch.isfinite(small).all())
    for mode in ("all", "canonical"):
        frames = PCAFrames("O(3)", mode=mode)
        ref, got = frames(X.float().to(device)), frames(small)
        assert got.sizes.tolist() == ref.sizes.tolist()
        if scale > 2.0**-126:  # normal numbers keep 24 bits: the same axes (subnormals keep fewer)
            torch.testing.assert_close(got.R, ref.R, rtol=1e-4, atol=1e-4)
    fa = FrameAveraging(lambda pos: (pos / pos.abs().amax()).pow(2).sum(-1).amax(-1, keepdim=True), group="O(3)",
                        inputs={"pos": "pos"}, output="scalar")
    assert torch.isfinite(fa(pos=small)).all()
    if scale > 2.0**-126:
        report = equivariance_error(fa, {"pos": small}, group="O(3)", generator=gen, n_trials=2)
        assert report.max_error < 1e-4


def test_permutation_frames_validate_the_graph():
    fa = FrameAveraging(lambda x, edge_index, batch: x, group="S_n", inputs={"x": "scalar"}, output="scalar")
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="edge_index"):
        fa(x=x)
    with pytest.raises(ValueError, match="edge_index"):
        fa(x=x, edge_index=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="batch: must be sorted"):
        fa(x=x, edge_index=torch.tensor([[0, 1], [1, 0]]), batch=torch.tensor([1, 0, 0, 0]))
    with pytest.raises(ValueError, match="x: contains NaN"):
        fa(x=torch.full((4, 2), float("nan")), edge_index=torch.tensor([[0, 1], [1, 0]]))
