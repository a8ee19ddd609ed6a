"""Normal-estimation models: shapes, gradients, dtypes, O(3)/E(3) equivariance of the normal line
``n n^T`` (and of the signed vector for the local-frame models), the plain models as negative controls,
the typed local-geometry features, the line / plane-fit heads, farthest point sampling and the
TF-PointNet++ structure (PyG PointNetConv layers wrapped by TFConv)."""

from __future__ import annotations

import pytest
import torch

from equiframe.datasets.shapes import knn_pca_normals
from equiframe.models.normals import (
    DGCNN,
    NORMALS_MODELS,
    FANormals,
    LocalPointNet,
    PlaneFitHead,
    PlainNormals,
    PointNetSeg,
    TFPointNet,
    build_normals_model,
    farthest_point_sampling,
    knn_geometry,
    line_to_normal,
    local_features,
    weighted_plane_normal,
)
from equiframe.testing import equivariance_error

from conftest import anisotropic_cloud, line_outer

EQUIVARIANT = ["fa-pointnet", "fa-dgcnn", "fa-local-pointnet", "tf-pointnet"]
LOCAL = ["fa-local-pointnet", "tf-pointnet"]
SMALL = dict(hidden=16, k=8, tf_k=8, local_k=8, feature_k=8, dgcnn_layers=2)




def _model(name: str, dtype=torch.float64, perturb: bool = True, **kw):
    torch.manual_seed(0)
    m = build_normals_model(name, **{**SMALL, **kw}).to(dtype)
    if perturb:  # move residual / plane-fit heads away from their baseline start
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return m


def _line_error(m, pos, group="O(3)", seed=1, n_trials=2):
    return equivariance_error(lambda pos: line_outer(m(pos)), {"pos": pos}, types={"pos": "pos"}, output="1x2n",
                              group=group, generator=torch.Generator().manual_seed(seed), n_trials=n_trials).max_error


@pytest.mark.parametrize("name", NORMALS_MODELS)
def test_shapes_batched_and_single(name):
    m = _model(name, torch.float32)
    pos = anisotropic_cloud(2, 48, torch.float32)
    out = m(pos)
    assert out.shape == pos.shape and torch.isfinite(out).all()
    single = m(pos[1])
    assert single.shape == pos[1].shape
    torch.testing.assert_close(line_outer(single), line_outer(out[1]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", [n for n in NORMALS_MODELS if n != "knn-pca"])
def test_gradients(name):
    m = _model(name, torch.float32, perturb=False)
    pos = anisotropic_cloud(2, 48, torch.float32)
    target = torch.nn.functional.normalize(torch.randn(2, 48, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    from equiframe.datasets.shapes import normal_loss

    normal_loss(m(pos), target).backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("name", EQUIVARIANT)
@pytest.mark.parametrize("group", ["O(3)", "E(3)"])
def test_equivariant_float64(name, group):
    assert _line_error(_model(name), anisotropic_cloud(), group) <= 1e-9


@pytest.mark.parametrize("name", LOCAL)
def test_local_models_signed_vector_equivariant(name):
    m = _model(name)
    rep = equivariance_error(m, {"pos": anisotropic_cloud()}, types={"pos": "pos"}, output="1x1n", group="E(3)",
                             generator=torch.Generator().manual_seed(7), n_trials=2)
    assert rep.max_error <= 1e-9, rep


@pytest.mark.parametrize("name", EQUIVARIANT)
def test_equivariant_float32(name):
    # per-point line error under a random rotation + translation: float32 rounding is amplified only at
    # the few points whose local spectrum / sign moments are near-degenerate (f64 above is exact)
    m = _model(name, torch.float32)
    pos = anisotropic_cloud(dtype=torch.float32)
    Q = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(2)))[0]
    with torch.no_grad():
        err = (line_outer(m(pos @ Q.T + 0.5)).unflatten(-1, (3, 3)) - Q @ line_outer(m(pos)).unflatten(-1, (3, 3)) @ Q.T)
    err = err.flatten(-2).abs().amax(-1).flatten()
    assert float(err.median()) <= 1e-4 and float(err.quantile(0.9)) <= 1e-3, err.sort().values[-5:]


def test_knn_pca_baseline_equivariant_up_to_sign():
    assert _line_error(_model("knn-pca"), anisotropic_cloud(), "E(3)", seed=3) <= 1e-9


@pytest.mark.parametrize("name,kw", [("pointnet", {}), ("dgcnn", {}),
                                     ("pointnet", {"features": "none", "output": "vector"})])
def test_plain_models_not_equivariant(name, kw):
    assert _line_error(_model(name, **kw), anisotropic_cloud(), seed=4) > 1e-2


@pytest.mark.parametrize("features", ["none", "cov", "pca"])
@pytest.mark.parametrize("output", ["vector", "line", "line-residual"])
def test_fa_options_equivariant(features, output):
    m = _model("fa-pointnet", features=features, output=output, fa_mode="canonical")
    assert _line_error(m, anisotropic_cloud(), "E(3)", seed=5, n_trials=1) <= 1e-9
    plain = _model("pointnet", features=features, output=output)
    assert _line_error(plain, anisotropic_cloud(), "E(3)", seed=5, n_trials=1) > 1e-2


def test_fa_wraps_backbone_and_modes():
    fa = FANormals(PointNetSeg(3, 8), mode="canonical").double()
    assert isinstance(fa.backbone, PointNetSeg)
    assert fa(anisotropic_cloud()).shape == (2, 40, 3)
    with pytest.raises(ValueError, match="mode"):
        FANormals(PointNetSeg(3, 8), mode="bogus")
    m = build_normals_model("fa-dgcnn", **SMALL)
    assert isinstance(m, FANormals) and isinstance(m.backbone, DGCNN)
    assert isinstance(build_normals_model("pointnet", **SMALL), PlainNormals)
    assert isinstance(build_normals_model("pointnet", features="none", output="vector", **SMALL), PointNetSeg)


def test_line_residual_starts_at_pca_normal():
    # zero backbone output: u u^T + 0 -> the PCA normal itself
    m = _model("fa-pointnet", perturb=False, output="line-residual", fa_mode="canonical")
    last = [mod for mod in m.backbone.head if isinstance(mod, torch.nn.Linear)][-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    pos = anisotropic_cloud()
    torch.testing.assert_close(line_outer(m(pos)), line_outer(knn_pca_normals(pos, 8)))


def test_local_residual_head_starts_at_baseline():
    # the local frame's last axis is exactly the baseline's k-NN PCA normal
    pos = anisotropic_cloud(N=48)
    for m in (LocalPointNet(k=8, hidden=8, head="residual").double(),
              TFPointNet(hidden=8, k=8, head="residual", local_layers=1, ratios=(0.5,)).double()):
        torch.testing.assert_close(line_outer(m(pos)), line_outer(knn_pca_normals(pos, 8)))


def test_knn_geometry_and_features():
    pos = anisotropic_cloud(N=50)
    C, u, lam = knn_geometry(pos, 10)
    assert C.shape == (2, 50, 3, 3) and u.shape == (2, 50, 3) and lam.shape == (2, 50, 3)
    torch.testing.assert_close(C.diagonal(dim1=-2, dim2=-1).sum(-1), torch.ones(2, 50, dtype=pos.dtype))
    torch.testing.assert_close(line_outer(u), line_outer(knn_pca_normals(pos, 10)))
    assert (lam[..., 1:] >= lam[..., :-1]).all()
    assert local_features(pos, "none") is None
    assert local_features(pos, "cov", 10).shape == (2, 50, 9)
    f = local_features(pos, "pca", 10)
    assert f.shape == (2, 50, 18)
    torch.testing.assert_close(f[..., :9], line_outer(u))
    with pytest.raises(ValueError, match="features"):
        local_features(pos, "bogus")
    with pytest.raises(ValueError, match="k"):
        knn_geometry(pos, 2)


def test_line_to_normal_and_plane_fit():
    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(5, 3, generator=g, dtype=torch.float64), dim=-1)
    P = u[:, :, None] * u[:, None, :]
    torch.testing.assert_close(line_to_normal(P, u), u)
    start = torch.nn.functional.normalize(u + 0.3 * torch.randn(5, 3, generator=g, dtype=torch.float64), dim=-1)
    torch.testing.assert_close(line_outer(line_to_normal(P, start, steps=2)), line_outer(u))
    # two planes z = 0 (weight 1) and x = 0 (weight ~0): the fit recovers e_z from a tilted start
    a = torch.rand(1, 12, 2, generator=g, dtype=torch.float64)
    y = torch.cat([torch.cat([a, torch.zeros(1, 12, 1, dtype=torch.float64)], -1),
                   torch.cat([torch.zeros(1, 12, 1, dtype=torch.float64), a], -1)], dim=1)
    w = torch.cat([torch.ones(1, 12), torch.full((1, 12), 1e-6)], dim=1).double()
    start = torch.nn.functional.normalize(torch.tensor([[0.5, 0.2, 1.0]], dtype=torch.float64), dim=-1)
    n = weighted_plane_normal(y, w, start, steps=6)
    assert abs(float(n[0, 2])) > 1 - 1e-6
    # uniform weights and the exact smallest eigenvector as start: unchanged
    _, U = torch.linalg.eigh(torch.einsum("mka,mkb->mab", y - y.mean(1, keepdim=True), y - y.mean(1, keepdim=True)))
    torch.testing.assert_close(weighted_plane_normal(y, torch.ones(1, 24, dtype=torch.float64), U[..., 0]), U[..., 0])
    head = PlaneFitHead(4, 3, 8, iterations=2).double()
    out = head(torch.randn(1, 24, 4, dtype=torch.float64), torch.randn(1, 3, dtype=torch.float64), y, U[..., 0])
    assert out.shape == (1, 3) and torch.isfinite(out).all()


def test_farthest_point_sampling_invariant():
    pos = anisotropic_cloud(2, 60)
    idx = farthest_point_sampling(pos, 15)
    assert idx.shape == (2, 15) and all(len(set(r.tolist())) == 15 for r in idx)
    Q = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64))[0]
    assert torch.equal(farthest_point_sampling(pos @ Q.T + 0.3, 15), idx)
    with pytest.raises(ValueError, match="m"):
        farthest_point_sampling(pos, 61)


def test_tf_pointnet_is_tfconv_wrapped_pointnetconv_hierarchy():
    from torch_geometric.nn import PointNetConv

    from equiframe.nn.tensor_frames import TFConv

    m = TFPointNet(hidden=8, k=8, local_layers=2, ratios=(0.25, 0.5))
    convs = list(m.local_convs) + list(m.down) + list(m.up)
    assert len(convs) == 6
    assert all(isinstance(c, TFConv) and isinstance(c.layer, PointNetConv) for c in convs)
    flat = TFPointNet(hidden=8, k=8, local_layers=1, ratios=()).double()
    assert _line_error(flat, anisotropic_cloud(), seed=6, n_trials=1) <= 1e-9


def test_tf_pointnet_pooled_edge_features():
    # pool_edges: the plane-fit head also reads max_j h_ij; still exactly E(3)-equivariant (generic and
    # reflected inputs), and the option is refused for heads that have no edge features
    torch.manual_seed(0)
    m = TFPointNet(hidden=8, k=8, local_layers=1, ratios=(0.5,), pool_edges=True, edge_transport=True).double()
    plain = TFPointNet(hidden=8, k=8, local_layers=1, ratios=(0.5,), pool_edges=False, edge_transport=True).double()
    assert m.head.b.in_features == plain.head.b.in_features + 8
    assert _line_error(plain, anisotropic_cloud(), seed=9, n_trials=1) <= 1e-9
    default = TFPointNet(hidden=8, k=8)
    assert default.pool_edges and not default.edge_transport  # the plane-fit head's defaults
    assert _line_error(m, anisotropic_cloud(), seed=7, n_trials=2) <= 1e-9
    with pytest.raises(ValueError, match="pool_edges"):
        TFPointNet(hidden=8, k=8, head="residual", pool_edges=True)
    # edge_transport=False: the head's edge MLP reads the local geometry only (FA-Local-PointNet's edge features)
    geo = TFPointNet(hidden=8, k=8, local_layers=1, ratios=(0.5,), pool_edges=True, edge_transport=False).double()
    assert geo.edge_mlp[0].in_features == 3 + 1
    assert _line_error(geo, anisotropic_cloud(), seed=8, n_trials=2) <= 1e-9
    with pytest.raises(ValueError, match="edge_transport"):
        TFPointNet(hidden=8, k=8, head="free", edge_transport=False)


def test_tf_pointnet_learned_frames_equivariant():
    torch.manual_seed(0)
    m = TFPointNet(hidden=8, k=8, frames="learned", learned_cutoff=2.0, local_layers=1, ratios=(0.5,)).double()
    assert m.head_kind == "free"
    rep = equivariance_error(lambda pos: m(pos), {"pos": anisotropic_cloud()}, types={"pos": "pos"}, output="1x1n",
                             group="E(3)", generator=torch.Generator().manual_seed(5))
    assert rep.max_error <= 1e-9, rep


def test_bad_inputs():
    m = LocalPointNet(k=8, hidden=8).double()
    with pytest.raises(ValueError, match="pos"):
        m(torch.zeros(2, 5, 4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        m(torch.full((10, 3), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="pos"):
        m(torch.randn(2, 10, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="dtype"):
        m(torch.randn(2, 16, 3))
    with pytest.raises(ValueError, match="k"):
        m(torch.randn(1, 5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="name"):
        build_normals_model("bogus")
    with pytest.raises(ValueError, match="features"):
        build_normals_model("pointnet", features="bogus")
    with pytest.raises(ValueError, match="output"):
        build_normals_model("fa-pointnet", output="bogus")
    with pytest.raises(ValueError, match="head"):
        LocalPointNet(head="bogus")
    with pytest.raises(ValueError, match="ratios"):
        TFPointNet(ratios=(1.5,))
    with pytest.raises(ValueError, match="k"):
        DGCNN(k=0)
    with pytest.raises(ValueError, match="feat"):
        PointNetSeg(3, 8, in_features=9)(torch.randn(2, 10, 3))


@pytest.mark.parametrize("name", LOCAL)
def test_local_models_scale_invariant(name):
    # offsets are measured in an invariant length unit (per point / per cloud): rescaling the cloud does
    # not change the normals
    m = _model(name)
    pos = anisotropic_cloud()
    torch.testing.assert_close(line_outer(m(3.7 * pos)), line_outer(m(pos)), rtol=1e-9, atol=1e-9)


def _box_surface(n: int = 96, seed: int = 0) -> torch.Tensor:
    """Random points on the six faces of a box: exactly flat patches (third moments vanish)."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, 3, generator=g, dtype=torch.float64) * 2 - 1
    axis = torch.arange(n) % 3
    p[torch.arange(n), axis] = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0).double()
    return (p * torch.tensor([1.0, 0.7, 0.5], dtype=torch.float64))[None]


def test_tf_centroid_normal_sign_exact_on_flat_patches():
    pos = _box_surface()
    errs = {}
    for sign in ("centroid", "moments"):
        torch.manual_seed(0)
        m = TFPointNet(hidden=8, k=8, local_layers=1, ratios=(0.5,), normal_sign=sign).double()
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.05 * torch.randn_like(p))
        errs[sign] = _line_error(m, pos, seed=8, n_trials=2)
    assert errs["centroid"] <= 1e-9, errs
    assert errs["moments"] > 1e-6, errs  # undecided signs on flat faces: not equivariant there
