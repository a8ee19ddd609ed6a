"""Normal-estimation models: shapes, gradients, dtype, O(3)/E(3) equivariance (up to sign) and the
plain models as negative controls."""

from __future__ import annotations

import pytest
import torch

from equiframe.models.normals import (
    DGCNN,
    NORMALS_MODELS,
    FANormals,
    LocalPointNet,
    PointNetSeg,
    TFPointNet,
    build_normals_model,
)
from equiframe.testing import equivariance_error

EQUIVARIANT = ["fa-pointnet", "fa-dgcnn", "fa-local-pointnet", "tf-pointnet"]
SMALL = dict(hidden=16, k=8, tf_k=8, dgcnn_layers=2)


def _cloud(B: int = 2, N: int = 40, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # anisotropic so that the global PCA spectrum is separated
    return torch.randn(B, N, 3, generator=g, dtype=dtype) * torch.tensor([1.0, 0.7, 0.4], dtype=dtype)


def _outer(n: torch.Tensor) -> torch.Tensor:
    u = n / n.norm(dim=-1, keepdim=True)
    return (u[..., :, None] * u[..., None, :]).flatten(-2)


def _model(name: str, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    return build_normals_model(name, **{**SMALL, **kw}).to(dtype)


@pytest.mark.parametrize("name", NORMALS_MODELS)
def test_shapes_batched_and_single(name):
    m = _model(name, torch.float32)
    pos = _cloud(2, 48, torch.float32)
    out = m(pos)
    assert out.shape == pos.shape and torch.isfinite(out).all()
    single = m(pos[1])
    assert single.shape == pos[1].shape
    torch.testing.assert_close(single, out[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in NORMALS_MODELS if n != "knn-pca"])
def test_gradients(name):
    m = _model(name, torch.float32)
    out = m(_cloud(2, 48, torch.float32))
    out.square().mean().backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("name", EQUIVARIANT)
@pytest.mark.parametrize("group", ["O(3)", "E(3)"])
def test_equivariant_float64(name, group):
    m = _model(name)
    pos = _cloud()
    gen = torch.Generator().manual_seed(1)
    # the normal as a vector (these models are sign-consistent) and as the line n n^T, in one pass
    rep = equivariance_error(lambda pos: (lambda n: (n, _outer(n)))(m(pos)), {"pos": pos}, types={"pos": "pos"},
                             output=("1x1n", "1x2n"), group=group, generator=gen, n_trials=2)
    assert rep.max_error <= 1e-9, rep


@pytest.mark.parametrize("name", EQUIVARIANT)
def test_equivariant_float32(name):
    m = _model(name, torch.float32)
    pos = _cloud(dtype=torch.float32)
    rep = equivariance_error(lambda pos: _outer(m(pos)), {"pos": pos}, types={"pos": "pos"}, output="1x2n",
                             group="O(3)", generator=torch.Generator().manual_seed(2))
    assert rep.max_error <= 1e-4, rep


def test_knn_pca_baseline_equivariant_up_to_sign():
    m = _model("knn-pca")
    pos = _cloud()
    rep = equivariance_error(lambda pos: _outer(m(pos)), {"pos": pos}, types={"pos": "pos"}, output="1x2n",
                             group="E(3)", generator=torch.Generator().manual_seed(3))
    assert rep.max_error <= 1e-9, rep


@pytest.mark.parametrize("name", ["pointnet", "dgcnn"])
def test_plain_models_not_equivariant(name):
    m = _model(name)
    pos = _cloud()
    rep = equivariance_error(lambda pos: _outer(m(pos)), {"pos": pos}, types={"pos": "pos"}, output="1x2n",
                             group="O(3)", generator=torch.Generator().manual_seed(4))
    assert rep.max_error > 1e-2, rep


def test_fa_wraps_backbone_and_modes():
    fa = FANormals(PointNetSeg(3, 8), mode="canonical").double()
    assert isinstance(fa.backbone, PointNetSeg)
    assert fa(_cloud()).shape == (2, 40, 3)
    with pytest.raises(ValueError, match="mode"):
        FANormals(PointNetSeg(3, 8), mode="bogus")


def test_tf_pointnet_learned_frames_equivariant():
    torch.manual_seed(0)
    m = TFPointNet(hidden=16, k=8, frames="learned", learned_cutoff=2.0).double()
    rep = equivariance_error(lambda pos: m(pos), {"pos": _cloud()}, types={"pos": "pos"}, output="1x1n",
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
    with pytest.raises(ValueError, match="hidden_reps"):
        TFPointNet(hidden_reps="8x0n")
    with pytest.raises(ValueError, match="k"):
        DGCNN(k=0)
