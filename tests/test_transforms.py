"""equiframe.transforms: typed PyG transforms (group elements, node relabelling, noise, subsampling, centring)."""

import pytest
import torch
import torch_geometric.transforms as T
from torch import nn
from torch_geometric.data import Data

from conftest import TOL
from equiframe import FrameAveraging
from equiframe.averaging import node_ranks
from equiframe.groups import EuclideanGroup, GroupElement
from equiframe.transforms import (AddDegree, ApplyGroupElement, Center, GaussianNoise, RandomGroupElement,
                                  RandomNodePermutation, SubsamplePoints)

ATTRS = {"pos": "pos", "normal": "1x1n", "vel": "1x1n"}


def cloud(n, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Data(pos=torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype) * torch.linspace(1.0, 0.4, d).to(dtype),
                normal=torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1).to(dtype),
                vel=torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype),
                charge=torch.randn(n, 1, generator=g, dtype=torch.float64).to(dtype))


class PointBackbone(nn.Module):
    """Per-point MLP on positions, normals, velocities and their mean: not equivariant by itself."""

    def __init__(self, d):
        super().__init__()
        torch.manual_seed(0)
        self.mlp = nn.Sequential(nn.Linear(6 * d, 32), nn.Tanh(), nn.Linear(32, d))

    def forward(self, pos, normal, vel):
        z = torch.cat([pos, normal, vel], -1)
        return self.mlp(torch.cat([z, z.mean(-2, keepdim=True).expand_as(z)], -1))


def fa_model(d, dtype):
    """An exact E(d)-equivariant model of the library: frame averaging (all PCA frame elements)."""
    return FrameAveraging(PointBackbone(d).to(dtype), group=f"E({d})", inputs=ATTRS, output="1x1n")


def _equivariance_gap(model, d, dtype, seed):
    data = cloud(12, d, dtype, seed=seed)
    t = RandomGroupElement(f"E({d})", attrs=ATTRS, generator=seed)
    g = RandomGroupElement(f"E({d})", attrs=ATTRS, generator=seed).sample()  # the element t draws
    moved = t(data)
    lhs = model(pos=moved.pos, normal=moved.normal, vel=moved.vel)            # transform, then the model
    rhs = ApplyGroupElement(g, {"y": "1x1n"})({"y": model(pos=data.pos, normal=data.normal, vel=data.vel)})["y"]
    return (lhs - rhs).abs().max() / rhs.abs().max(), g


@pytest.mark.parametrize("d", [2, 3, 4])
def test_transform_then_model_equals_model_then_transform(d, dtype):
    model = fa_model(d, dtype)
    dets = []
    for seed in range(8):  # seeds 0-7 draw rotations and reflections for d = 2, 3, 4
        with torch.no_grad():
            gap, g = _equivariance_gap(model, d, dtype, seed)
        assert gap < TOL[dtype], (d, seed, float(gap))
        dets.append(float(torch.linalg.det(g.Q)))
    assert min(dets) < 0 < max(dets)  # reflections and rotations both drawn (E(d) is Haar on O(d))


def test_a_non_equivariant_model_fails_the_same_check():
    backbone = PointBackbone(3).double()
    with torch.no_grad():
        gap, _ = _equivariance_gap(lambda **kw: backbone(**kw), 3, torch.float64, 0)
    assert gap > 1e-2


@pytest.mark.parametrize("d", [2, 3, 5])
def test_random_group_element_moves_every_attribute_consistently(d, dtype):
    data = cloud(7, d, dtype)
    seed = 3
    out = RandomGroupElement(f"E({d})", attrs=ATTRS, generator=seed)(data)
    g = RandomGroupElement(f"E({d})", attrs=ATTRS, generator=seed).sample()
    Q, s = g.Q.to(dtype), g.s.to(dtype)
    tol = TOL[dtype]
    torch.testing.assert_close(out.pos, data.pos @ Q.T + s, atol=tol, rtol=tol)
    torch.testing.assert_close(out.normal, data.normal @ Q.T, atol=tol, rtol=tol)
    torch.testing.assert_close(out.vel, data.vel @ Q.T, atol=tol, rtol=tol)
    assert torch.equal(out.charge, data.charge)  # undeclared attributes are left alone
    assert out.pos.dtype == dtype and data.pos is not out.pos  # the input is not changed
    assert torch.equal(data.pos, cloud(7, d, dtype).pos)


@pytest.mark.parametrize("group,proper,translated", [("O(3)", False, False), ("SO(4)", True, False),
                                                     ("E(2)", False, True), ("SE(3)", True, True)])
def test_the_four_groups_draw_what_they_are(group, proper, translated):
    t = RandomGroupElement(group, attrs={"pos": "pos"}, generator=0)
    g = [t.sample() for _ in range(20)]
    dets = torch.stack([torch.linalg.det(e.Q) for e in g])
    eye = torch.eye(g[0].dim, dtype=torch.float64)
    assert all(torch.allclose(e.Q @ e.Q.T, eye, atol=1e-12) for e in g)
    assert bool((dets > 0).all()) if proper else bool((dets < 0).any() and (dets > 0).any())
    assert any(bool(e.s.abs().max() > 0) for e in g) == translated


def test_pseudo_vectors_and_matrices_follow_their_type():
    Q = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))  # a reflection
    data = Data(pos=torch.ones(2, 3, dtype=torch.float64), axial=torch.ones(2, 3, dtype=torch.float64),
                stress=torch.arange(18, dtype=torch.float64).reshape(2, 9))
    out = ApplyGroupElement(Q, {"axial": "1x1p", "stress": "1x2n"})(data)
    torch.testing.assert_close(out.axial, -(data.axial @ Q.T))  # det(Q) = -1
    S = data.stress.reshape(2, 3, 3)
    torch.testing.assert_close(out.stress, (Q @ S @ Q.T).reshape(2, 9))
    assert torch.equal(out.pos, data.pos)


def test_same_seed_same_draws_and_compose():
    data = cloud(50, 3, torch.float32)

    def pipeline(seed):
        return T.Compose([RandomGroupElement("SO(3)", attrs=ATTRS, generator=seed),
                          GaussianNoise(0.01, generator=seed), SubsamplePoints(20, generator=seed), Center()])

    a, b, c = pipeline(1)(data), pipeline(1)(data), pipeline(2)(data)
    for k in ("pos", "normal", "vel", "charge"):
        assert torch.equal(a[k], b[k])
    assert not torch.equal(a.pos, c.pos)
    t = pipeline(1)
    assert not torch.equal(t(data).pos, t(data).pos)  # one generator: the next call draws anew
    gen = torch.Generator().manual_seed(5)  # an explicit generator is used as given
    x1 = RandomGroupElement("O(3)", attrs={"pos": "pos"}, generator=gen)(data).pos
    x2 = RandomGroupElement("O(3)", attrs={"pos": "pos"}, generator=torch.Generator().manual_seed(5))(data).pos
    assert torch.equal(x1, x2)


def test_float32_and_float64_see_the_same_element():
    a = RandomGroupElement("E(3)", attrs=ATTRS, generator=0)(cloud(9, 3, torch.float32))
    b = RandomGroupElement("E(3)", attrs=ATTRS, generator=0)(cloud(9, 3, torch.float64))
    torch.testing.assert_close(a.pos.double(), b.pos, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------ S_n
class DegreeSum(nn.Module):
    """sum over neighbours of x (permutation equivariant: scatter-add over edges)."""

    def forward(self, x, edge_index):
        return torch.zeros_like(x).index_add_(0, edge_index[1], x[edge_index[0]])


class RankWeighted(nn.Module):
    """Per graph: sum_i (rank_i + 1) x_i, reading the node order (not invariant by itself)."""

    def forward(self, x, edge_index, batch):
        w = (node_ranks(batch) + 1).to(x.dtype)[:, None]
        return torch.zeros(int(batch.max()) + 1, x.shape[1], dtype=x.dtype).index_add_(0, batch, w * x)


def _graph(n, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    A = torch.triu(torch.rand(n, n, generator=g) < 0.4, 1)
    ei = (A | A.T).nonzero().T
    return Data(x=torch.randn(n, 3, generator=g, dtype=dtype), pos=torch.randn(n, 2, generator=g, dtype=dtype),
                edge_index=ei, edge_attr=torch.randn(ei.shape[1], 2, generator=g, dtype=dtype), y=torch.tensor([1]))


@pytest.mark.parametrize("n", [5, 9])
def test_node_permutation_then_model_equals_model_then_permutation(n, dtype):
    data = _graph(n, n, dtype)
    out = RandomNodePermutation(generator=n)(data)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(n))  # the draw the transform makes
    assert not torch.equal(perm, torch.arange(n))
    x_perm = torch.empty_like(data.x)
    x_perm[perm] = data.x
    assert torch.equal(out.x, x_perm) and torch.equal(out.edge_index, perm[data.edge_index])
    assert torch.equal(out.edge_attr, data.edge_attr) and torch.equal(out.y, data.y)
    model = DegreeSum()
    y, y_out = model(data.x, data.edge_index), model(out.x, out.edge_index)
    torch.testing.assert_close(y_out[perm], y, atol=TOL[dtype], rtol=TOL[dtype])
    # an invariant model of the library: S_n frame averaging of a position-reading backbone
    fa = FrameAveraging(RankWeighted(), group="S_n", inputs={"x": "scalar"}, output="scalar")
    b0, b1 = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    torch.testing.assert_close(fa(x=out.x, edge_index=out.edge_index, batch=b1),
                               fa(x=data.x, edge_index=data.edge_index, batch=b0), atol=TOL[dtype], rtol=TOL[dtype])
    bare = RankWeighted()  # negative control: the backbone alone sees the relabelling
    assert not torch.allclose(bare(out.x, out.edge_index, b1), bare(data.x, data.edge_index, b0))


def test_node_permutation_is_the_one_the_experiments_draw():
    from equiframe.experiments.graphs import relabelled_copies as permuted_copies

    graphs = [_graph(n, n) for n in (5, 6, 7)]
    a = permuted_copies(graphs, torch.Generator().manual_seed(0))
    t = RandomNodePermutation(generator=torch.Generator().manual_seed(0))
    b = [t(g) for g in graphs]
    for u, v in zip(a, b):
        assert torch.equal(u.x, v.x) and torch.equal(u.edge_index, v.edge_index)


def test_add_degree_matches_the_experiments_input():
    from equiframe.experiments.graphs import with_degree

    g = _graph(6, 1)
    assert torch.equal(with_degree([g])[0].x, AddDegree()(g).x)
    assert AddDegree()(g).x[:, -1].sum() == g.edge_index.shape[1]


# ------------------------------------------------------------------------------------------ point clouds
def test_noise_is_relative_to_the_bounding_box_diagonal():
    pos = torch.rand(20000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64)
    data = Data(pos=pos, normal=torch.ones_like(pos))
    out = GaussianNoise(0.02, generator=0)(data)
    diag = float((pos.max(0).values - pos.min(0).values).norm())
    assert abs(float((out.pos - pos).std()) / (0.02 * diag) - 1) < 0.02
    assert torch.equal(out.normal, data.normal)  # normals stay exact
    assert torch.equal(GaussianNoise(0.0, generator=0)(data).pos, pos)
    absolute = GaussianNoise(0.1, relative_to="absolute", generator=0)(data).pos - pos
    assert abs(float(absolute.std()) - 0.1) < 0.01
    # the RMS radius is E(d) invariant: noise scales with the cloud, not its orientation
    Q = EuclideanGroup(3).sample(generator=torch.Generator().manual_seed(1)).Q
    t = GaussianNoise(0.1, relative_to="rms_radius")
    assert torch.allclose(t.scale(pos @ Q.T), t.scale(pos))


def test_subsample_keeps_rows_together_and_edges_consistent():
    data = _graph(9, 2)
    data.rowid = torch.arange(9)
    out = SubsamplePoints(5, generator=0)(data)
    keep = out.rowid
    assert keep.numel() == 5 and bool((keep[1:] > keep[:-1]).all())
    assert torch.equal(out.x, data.x[keep]) and torch.equal(out.pos, data.pos[keep])
    old = {tuple(e) for e in data.edge_index.t().tolist()}
    assert all((int(keep[i]), int(keep[j])) in old for i, j in out.edge_index.t().tolist())
    assert SubsamplePoints(20, generator=0)(data).num_nodes == 9  # small clouds unchanged


def test_center_removes_the_reference_centroid_from_each_listed_attribute(dtype):
    data = Data(pos=torch.tensor([[1.0, 1.0], [3.0, 5.0]], dtype=dtype), target=torch.tensor([[2.0, 3.0]], dtype=dtype))
    out = Center("pos", attrs=("pos", "target"))(data)
    assert out.pos.tolist() == [[-1.0, -2.0], [1.0, 2.0]] and out.target.tolist() == [[0.0, 0.0]]


def test_dict_batches_rotate_like_the_nbody_diagnostic():
    from equiframe.experiments.nbody import rotate_batch, rotation_about_z

    g = torch.Generator().manual_seed(0)
    batch = {k: torch.randn(10, 3, generator=g) for k in ("pos", "vel", "target")}
    batch["charge"] = torch.randn(10, 1, generator=g)
    Q = rotation_about_z(37.0)
    want = rotate_batch(batch, Q)
    got = ApplyGroupElement(Q, {"pos": "1x1n", "vel": "1x1n", "target": "1x1n"})(batch)
    for k in want:  # bit-identical to the rows product x Q^T (rotate_batch itself goes through the transform)
        assert torch.equal(got[k], want[k])
        assert k == "charge" or torch.equal(got[k], batch[k] @ Q.to(batch[k].dtype).T)


# ------------------------------------------------------------------------------------------ bad inputs
def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="group"):
        RandomGroupElement("U(3)", attrs={"pos": "pos"})
    with pytest.raises(ValueError, match="RandomNodePermutation"):
        RandomGroupElement("S_n", attrs={"x": "scalar"})
    with pytest.raises(TypeError, match="attrs"):
        RandomGroupElement("E(3)", attrs=["pos"])
    with pytest.raises(ValueError, match="attrs"):
        RandomGroupElement("E(3)", attrs={})
    with pytest.raises(ValueError, match=r"attrs\['normal'\]"):
        RandomGroupElement("E(3)", attrs={"normal": "1x9q"})
    with pytest.raises(TypeError, match="generator"):
        RandomGroupElement("E(3)", attrs={"pos": "pos"}, generator="seed")
    with pytest.raises(ValueError, match="generator"):
        RandomGroupElement("E(3)", attrs={"pos": "pos"}, generator=-1)
    with pytest.raises(ValueError, match="translation_scale"):
        RandomGroupElement("E(3)", attrs={"pos": "pos"}, translation_scale=-1.0)
    with pytest.raises(ValueError, match="std"):
        GaussianNoise(-0.1)
    with pytest.raises(TypeError, match="std"):
        GaussianNoise("0.1")
    with pytest.raises(ValueError, match="relative_to"):
        GaussianNoise(0.1, relative_to="diag")
    with pytest.raises(ValueError, match="n_points"):
        SubsamplePoints(0)
    with pytest.raises(TypeError, match="n_points"):
        SubsamplePoints(2.5)
    with pytest.raises(TypeError, match="node_attrs"):
        RandomNodePermutation(node_attrs=[1])
    with pytest.raises(ValueError, match="element"):
        ApplyGroupElement(torch.ones(2, 3), {"pos": "pos"})
    with pytest.raises(TypeError, match="element"):
        ApplyGroupElement("Q", {"pos": "pos"})


def test_bad_data_is_refused_before_anything_is_drawn():
    t = RandomGroupElement("E(3)", attrs={"pos": "pos", "normal": "1x1n"}, generator=0)
    with pytest.raises(ValueError, match="'normal'"):
        t(Data(pos=torch.randn(4, 3)))  # an attribute the data does not have
    with pytest.raises(ValueError, match="'pos'.*channels"):
        t(Data(pos=torch.randn(4, 2), normal=torch.randn(4, 3)))  # wrong shape for its type
    with pytest.raises(ValueError, match="floating"):
        t(Data(pos=torch.ones(4, 3, dtype=torch.long), normal=torch.randn(4, 3)))
    with pytest.raises(TypeError, match="data"):
        t(torch.randn(4, 3))
    fresh = RandomGroupElement("E(3)", attrs={"pos": "pos", "normal": "1x1n"}, generator=0)
    data = Data(pos=torch.randn(4, 3), normal=torch.randn(4, 3))
    assert torch.equal(t(data).pos, fresh(data).pos)  # the failed calls did not advance the stream
    with pytest.raises(ValueError, match="node_attrs"):
        RandomNodePermutation(node_attrs="edge_attr")(_graph(5, 0))
    with pytest.raises(ValueError, match="before batching"):
        from torch_geometric.data import Batch
        RandomNodePermutation()(Batch.from_data_list([_graph(5, 0), _graph(6, 1)]))
    with pytest.raises(ValueError, match="points"):
        GaussianNoise(0.1)(Data(pos=torch.randn(2, 3, 3)))
    with pytest.raises(ValueError, match="AddDegree"):
        AddDegree()(Data(pos=torch.randn(3, 2), edge_index=torch.zeros(2, 0, dtype=torch.long)))
    assert isinstance(RandomGroupElement("SE(3)", attrs=ATTRS), T.BaseTransform)
    assert "SE(3)" in repr(RandomGroupElement("SE(3)", attrs=ATTRS))
    assert isinstance(ApplyGroupElement(GroupElement(torch.eye(2), torch.zeros(2)), {"pos": "pos"}), T.BaseTransform)


def test_center_and_add_degree_refuse_bad_arguments_and_data():
    with pytest.raises(TypeError, match="reference"):
        Center(reference=3)
    with pytest.raises(TypeError, match="attrs"):
        Center(attrs=[1])
    with pytest.raises(ValueError, match="'pos'"):
        Center()(Data(x=torch.randn(4, 3)))  # the reference attribute is missing
    with pytest.raises(ValueError, match="x"):
        AddDegree()(Data(edge_index=torch.tensor([[0, 1], [1, 0]])))
    with pytest.raises(ValueError, match="edge_index"):
        AddDegree()(Data(x=torch.randn(2, 3)))
