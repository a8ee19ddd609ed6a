"""FA-Local-PointNet's plane vote (:class:`PlaneVote`, :func:`candidate_planes`, ``LocalPointNet(vote=...)``):
the candidate planes contain the exact face plane where k-NN PCA mixes two faces, exact O(d)/E(d) equivariance in
2-D and 3-D, float64 and float32, reflections, degenerate neighbourhoods (repeated and collinear points: finite
values and gradients), ``forward`` against ``forward_neighbourhoods``, argument checks and a negative control."""

from __future__ import annotations

import pytest
import torch

from equiframe.models.normals import (LocalPointNet, PlaneVote, build_normals_model, candidate_planes, dense_knn,
                                     ransac_normals)
from equiframe.datasets.normal_metrics import knn_pca_normals
from equiframe.models.normals_local import PlaneFitHead
from equiframe.testing import equivariance_error

from conftest import anisotropic_cloud, assert_reflection_and_float32_lines, line_outer


def _roof(n: int = 400, seed: int = 0, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Points on two planes meeting at a 100° edge along the y axis (a roof), and their exact face normals."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g, dtype=dtype)
    y = torch.rand(n, generator=g, dtype=dtype) * 2 - 1
    side = torch.rand(n, generator=g, dtype=dtype) < 0.5
    a = torch.deg2rad(torch.tensor(40.0, dtype=dtype))
    u = torch.stack([torch.cos(a), torch.zeros((), dtype=dtype), torch.sin(a)])  # left slope direction (x, z)
    v = torch.stack([-torch.cos(a), torch.zeros((), dtype=dtype), torch.sin(a)])
    dirs = torch.where(side[:, None], u, v)
    pos = -t[:, None] * dirs + y[:, None] * torch.tensor([0.0, 1.0, 0.0], dtype=dtype)
    ey = torch.tensor([0.0, 1.0, 0.0], dtype=dtype)
    nrm = torch.nn.functional.normalize(torch.linalg.cross(dirs, ey.expand_as(dirs), dim=-1), dim=-1)
    return pos, nrm


def _model(dtype=torch.float64, dim: int = 3, k: int = 12, vote: int = 6, hidden: int = 16) -> LocalPointNet:
    torch.manual_seed(0)
    m = LocalPointNet(dim=dim, k=k, hidden=hidden, vote=vote).to(dtype)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def test_candidates_contain_the_exact_face_plane_near_edges():
    # a hard vote (most exact inliers) over the candidate planes recovers the face normal of points near the
    # edge, where the k-NN PCA plane mixes both faces: the candidate set is what the learned vote chooses from
    pos, nrm = _roof()
    k = 16
    idx = dense_knn(pos[None], pos[None], k)[0]
    y = pos[idx] - pos[:, None]
    normals, sine, span = candidate_planes(y, 8)
    assert normals.shape == (400, 28, 3) and sine.shape == (400, 28) and span.shape == (400, 28, 2)
    inliers = ((torch.einsum("npd,nkd->npk", normals, y).abs() < 1e-9) & (sine[..., None] > 1e-6)).sum(-1)
    best = normals[torch.arange(400), inliers.argmax(1)]
    err_vote = 1 - (best * nrm).sum(-1).square()
    z = y - y.mean(1, keepdim=True)
    pca = torch.linalg.eigh(z.transpose(1, 2) @ z)[1][..., 0]
    err_pca = 1 - (pca * nrm).sum(-1).square()
    near = err_pca > 1e-3  # neighbourhoods that straddle the edge
    assert int(near.sum()) > 40
    assert float(err_vote[near].max()) < 1e-12 < float(err_pca[near].min())
    # unit normals orthogonal to both spanning offsets; the sine is that of the pair's angle
    j, l = (torch.triu_indices(8, 8, 1) + 1).unbind(0)
    torch.testing.assert_close(normals.norm(dim=-1), torch.ones(400, 28, dtype=pos.dtype))
    assert float((normals * y[:, j]).sum(-1).abs().max()) < 1e-12 and float((normals * y[:, l]).sum(-1).abs().max()) < 1e-12
    cos = torch.nn.functional.cosine_similarity(y[:, j], y[:, l], dim=-1)
    torch.testing.assert_close(sine, (1 - cos.square()).clamp_min(0).sqrt())


def test_untrained_vote_model_starts_at_the_classical_vote():
    # initialised as the soft RANSAC vote (score = gamma x inlier count, refit gate near 0): before any training
    # the model keeps the face normal of points whose k-NN PCA plane mixes the two faces of the roof
    pos, nrm = _roof(400)
    torch.manual_seed(0)
    m = LocalPointNet(k=16, hidden=16, vote=8).double()
    with torch.no_grad():
        out = m(pos)
    err = 1 - (out * nrm).sum(-1).square() / out.square().sum(-1)
    err_pca = 1 - (knn_pca_normals(pos, 16) * nrm).sum(-1).square()
    assert float(err.mean()) < 0.3 * float(err_pca.mean())
    assert float((err < 1e-6).float().mean()) > 0.95 > float((err_pca < 1e-6).float().mean())
    # without the vote (the same head, started from the PCA plane) it is the PCA normal at initialisation
    plain = LocalPointNet(k=16, hidden=16).double()
    with torch.no_grad():
        out = plain(pos)
    assert float((1 - (out * nrm).sum(-1).square() / out.square().sum(-1)).mean()) > 0.5 * float(err_pca.mean())


def test_candidate_planes_2d_and_degenerate():
    y = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]], dtype=torch.float64)
    normals, sine, span = candidate_planes(y, 3)
    torch.testing.assert_close(line_outer(normals[0, :2]), line_outer(torch.tensor([[0.0, 1.0], [1.0, 0.0]],
                                                                                   dtype=torch.float64)))
    assert sine.tolist() == [[1.0, 1.0, 0.0]] and normals[0, 2].abs().max() == 0  # a repeated point: degenerate
    y3 = torch.zeros(1, 4, 3, dtype=torch.float64)
    y3[0, 1:, 0] = torch.tensor([1.0, 2.0, -1.0])  # collinear neighbours: every pair degenerate
    normals, sine, _ = candidate_planes(y3, 3)
    assert float(sine.abs().max()) == 0.0 and bool(torch.isfinite(normals).all())
    with pytest.raises(ValueError, match="d = 2 or 3"):
        candidate_planes(torch.zeros(1, 5, 4), 3)
    with pytest.raises(ValueError, match="pairs_from"):
        candidate_planes(torch.zeros(1, 5, 3), 5)
    with pytest.raises(ValueError, match="pairs_from"):
        candidate_planes(torch.zeros(1, 5, 3), 1)


@pytest.mark.parametrize("group", ["O(3)", "E(3)"])
def test_vote_model_equivariant(group):
    # float64: exact (float32: the bulk test below; k-NN ties and near-threshold votes may flip a few points)
    m = _model()
    pos = anisotropic_cloud(N=48)
    rep = equivariance_error(lambda pos: line_outer(m(pos)), {"pos": pos}, types={"pos": "pos"}, output="1x2n", group=group,
                             generator=torch.Generator().manual_seed(1), n_trials=3)
    assert rep.max_error <= 1e-9, rep
    # the signed vector too: the vote works in the sign-fixed local frame
    rep = equivariance_error(m, {"pos": pos}, types={"pos": "pos"}, output="1x1n", group=group,
                             generator=torch.Generator().manual_seed(2), n_trials=2)
    assert rep.max_error <= 1e-9, rep


def test_vote_model_float32_bulk_and_reflection():
    m64, m32 = _model(), _model(torch.float32)
    assert_reflection_and_float32_lines(m64, m32, anisotropic_cloud(N=48))


def test_vote_model_2d_equivariant():
    m = _model(dim=2, k=8, vote=4)
    g = torch.Generator().manual_seed(5)
    pos = torch.randn(2, 30, 2, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.5], dtype=torch.float64)
    rep = equivariance_error(m, {"pos": pos}, types={"pos": "pos"}, output="1x1n", group="E(2)",
                             generator=torch.Generator().manual_seed(6), n_trials=3)
    assert rep.max_error <= 1e-9, rep


def test_vote_model_on_the_roof_and_degenerate_inputs():
    # on exact planar data the model is finite and its gradients too, also with repeated and collinear points
    pos, _ = _roof(120)
    pos = torch.cat([pos, pos[:5], torch.zeros(6, 3, dtype=pos.dtype) + torch.linspace(0, 0.01, 6,
                                                                                      dtype=pos.dtype)[:, None]])
    m = _model()
    out = m(pos)
    assert out.shape == pos.shape and bool(torch.isfinite(out).all())
    out.square().sum().backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in m.parameters() if p.grad is not None)
    assert m.vote.a.weight.grad.abs().sum() > 0  # the vote's scores are trained through the start plane


def test_vote_forward_matches_neighbourhoods_and_state_dict():
    m = _model()
    x = anisotropic_cloud(N=48)[1]
    idx = dense_knn(x[None], x[None], m.n_neighbours)[0]
    torch.testing.assert_close(m.forward_neighbourhoods(x, x[idx]), m(x), rtol=1e-10, atol=1e-10)
    plain = LocalPointNet(k=12, hidden=16)
    assert not any(key.startswith("vote") for key in plain.state_dict()) and plain.head.c.in_features == 2
    assert any(key.startswith("vote.") for key in m.state_dict()) and m.head.sharp
    assert build_normals_model("fa-local-pointnet", local_k=12, hidden=8, local_vote=5).vote_k == 5


def test_vote_negative_control():
    # the vote reads its candidates in the local frame's coordinates (the squared normal coordinates are
    # features): by itself it is not rotation-equivariant, the model is so through the frame. A vote in a
    # rotated frame, or with only the PCA candidate moved, gives a different plane: the equivariance tests
    # above are not vacuous
    m = _model()
    x = anisotropic_cloud(N=48)[0]
    idx = dense_knn(x[None], x[None], m.k)[0]
    y = x[idx] - x[:, None]
    g = torch.randn(48, m.vote.b.in_features, dtype=x.dtype, generator=torch.Generator().manual_seed(7))
    e = torch.tensor([0.0, 0.0, 1.0], dtype=x.dtype).expand(48, 3)
    Q = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64))[0]
    with torch.no_grad():
        a, b = m.vote(y, g, e), m.vote(y @ Q.T, g, e)
    assert float((line_outer(a @ Q.T) - line_outer(b)).abs().max()) > 1e-3
    with torch.no_grad():
        c = m.vote(y, g, e @ Q.T)  # only the PCA candidate moved: a different vote
    assert float((line_outer(a) - line_outer(c)).abs().max()) > 1e-3


def test_vote_bad_arguments():
    for bad in (12, 13, 1, 0, True, 2.5):
        with pytest.raises(ValueError, match="vote"):
            LocalPointNet(k=12, vote=bad)
    with pytest.raises(ValueError, match="vote"):
        LocalPointNet(k=12, vote=4, head="residual")
    with pytest.raises(ValueError, match="d = 2 or 3"):
        LocalPointNet(dim=4, k=12, vote=4)
    with pytest.raises(ValueError, match="d = 2 or 3"):
        PlaneVote(4, 8, dim=4)
    v = PlaneVote(4, 8)
    with pytest.raises(ValueError, match="y, g, pca"):
        v(torch.zeros(3, 8, 3), torch.zeros(2, 8), torch.zeros(3, 3))
    h = PlaneFitHead(4, 4, sharp=True)
    assert h.c.in_features == 2 + 6


# ------------------------------------------------------------------------------------------ the classical baseline
def test_ransac_normals_exact_on_the_roof_where_pca_is_not():
    pos, nrm = _roof(400)
    err = 1 - (ransac_normals(pos, k=16, pairs_from=8, tau=0.002) * nrm).sum(-1).square()
    err_pca = 1 - (knn_pca_normals(pos, 16) * nrm).sum(-1).square()
    assert float(err.max()) < 1e-12 and float(err_pca.max()) > 1e-2
    # batched, float32, 2-D (a polyline with a corner), and chunks give the same answer
    out = ransac_normals(torch.stack([pos, pos.flip(0)]).float(), k=16, pairs_from=8, tau=0.002, chunk_size=100)
    assert out.shape == (2, 400, 3) and float((1 - (out[0].double() * nrm).sum(-1).square()).max()) < 1e-5
    t = torch.linspace(-1, 1, 41, dtype=torch.float64)
    poly = torch.stack([t, t.abs()], dim=-1)
    n2 = ransac_normals(poly, k=6, pairs_from=3)
    truth = torch.nn.functional.normalize(torch.stack([torch.sign(t), -torch.ones_like(t)], -1), dim=-1)
    assert float((1 - (n2 * truth).sum(-1).square())[t != 0].max()) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_ransac_normals_equivariant(dtype):
    pos, _ = _roof(200, dtype=dtype)
    pos = pos + 1e-3 * torch.randn(pos.shape, generator=torch.Generator().manual_seed(0), dtype=dtype)  # generic
    rep = equivariance_error(lambda pos: line_outer(ransac_normals(pos, 16, 8, 0.05)), {"pos": pos},
                             types={"pos": "pos"}, output="1x2n", group="E(3)",
                             generator=torch.Generator().manual_seed(1), n_trials=2)
    assert rep.max_error <= (1e-9 if dtype == torch.float64 else 1e-3), rep
    # negative control: a method that is not equivariant (normals along a fixed axis) fails the same check
    rep = equivariance_error(lambda pos: line_outer(torch.zeros_like(pos) + torch.tensor([0.0, 0.0, 1.0], dtype=dtype)),
                             {"pos": pos}, types={"pos": "pos"}, output="1x2n", group="E(3)",
                             generator=torch.Generator().manual_seed(1), n_trials=2)
    assert rep.max_error > 1e-2


def test_ransac_normals_degenerate_and_bad_inputs():
    line = torch.zeros(20, 3, dtype=torch.float64)
    line[:, 0] = torch.arange(20)
    line[::2, 1] += 1e-30  # numerically collinear: every pair degenerate, the PCA fallback is finite
    out = ransac_normals(line, k=8, pairs_from=4)
    assert bool(torch.isfinite(out).all()) and float((out[:, 0]).abs().max()) < 1e-9
    with pytest.raises(ValueError, match="NaN"):
        ransac_normals(torch.full((20, 3), float("nan")))
    with pytest.raises(ValueError, match="k = 32"):
        ransac_normals(torch.randn(20, 3))
    with pytest.raises(ValueError, match="tau"):
        ransac_normals(torch.randn(40, 3), tau=0.0)
    with pytest.raises(ValueError, match="pairs_from"):
        ransac_normals(torch.randn(40, 3), k=8, pairs_from=8)
    with pytest.raises(ValueError, match="chunk_size"):
        ransac_normals(torch.randn(40, 3), chunk_size=0)
