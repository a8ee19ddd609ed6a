"""FA-Local-PointNet's multi-scale context branch (exact O(3)/E(3) equivariance, float64 and float32, agreement of
``forward`` and ``forward_neighbourhoods``, argument checks, a negative control) and the query-neighbourhood
training samples of :mod:`equiframe.experiments.normals_augment` (noise augmentation, mixed densities)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from equiframe.datasets.shapes import normal_loss
from equiframe.experiments.normals import NormalsExperiment, NormalsExperimentConfig
from equiframe.experiments.normals_augment import NeighbourhoodSamples, add_random_noise, query_neighbourhoods
from equiframe.models.normals import LocalPointNet, build_normals_model, dense_knn
from equiframe.testing import equivariance_error
from equiframe.train import TrainConfig, fit

from conftest import anisotropic_cloud, assert_reflection_and_float32_lines, line_outer



def _ctx_model(dtype=torch.float64, head="wlsq") -> LocalPointNet:
    torch.manual_seed(0)
    m = LocalPointNet(k=8, hidden=16, head=head, context_k=20).to(dtype)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("head", ["wlsq", "residual", "free"])
@pytest.mark.parametrize("group", ["O(3)", "E(3)"])
def test_context_branch_equivariant_float64(head, group):
    m = _ctx_model(head=head)
    rep = equivariance_error(lambda pos: line_outer(m(pos)), {"pos": anisotropic_cloud(N=48)}, types={"pos": "pos"}, output="1x2n",
                             group=group, generator=torch.Generator().manual_seed(1), n_trials=3)
    assert rep.max_error <= 1e-9, rep
    # the signed vector too (frames with moment signs: reflections included)
    rep = equivariance_error(m, {"pos": anisotropic_cloud(N=48)}, types={"pos": "pos"}, output="1x1n", group=group,
                             generator=torch.Generator().manual_seed(2), n_trials=2)
    assert rep.max_error <= 1e-9, rep


def test_context_branch_reflection_and_float32():
    assert_reflection_and_float32_lines(_ctx_model(), _ctx_model(torch.float32), anisotropic_cloud(N=48))


def test_context_branch_negative_control_and_scale():
    # the branch does look at the orientation of its points: context offsets in a different frame than the
    # neighbourhood's change the prediction (so the equivariance tests above are not vacuous)
    m = _ctx_model(head="free")
    x = anisotropic_cloud(N=48)[0]
    idx = dense_knn(x[None], x[None], m.n_neighbours)[0]
    nbr = x[idx]
    Q = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64))[0]
    from equiframe.frames.local import local_pca_frames

    M, K = nbr.shape[:2]
    pos = torch.cat([x, nbr[:, :m.k].reshape(-1, 3)])
    ei = torch.stack([M + torch.arange(M * m.k), torch.arange(M).repeat_interleave(m.k)])
    R = local_pca_frames(pos, ei, center="centroid")[:M]
    rel, ctx = nbr[:, :m.k] - x[:, None], nbr - x[:, None]
    with torch.no_grad():
        good, bad = m._predict(R, rel, ctx), m._predict(R, rel, ctx @ Q.T)
    assert float((line_outer(good) - line_outer(bad)).abs().max()) > 1e-2
    torch.testing.assert_close(line_outer(m(3.7 * x + 1.0)), line_outer(m(x)), rtol=1e-9, atol=1e-9)


def test_context_forward_matches_neighbourhoods_and_keys():
    m = _ctx_model()
    x = anisotropic_cloud(N=48)[1]
    idx = dense_knn(x[None], x[None], m.n_neighbours)[0]
    torch.testing.assert_close(m.forward_neighbourhoods(x, x[idx]), m(x), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="neighbours"):
        m.forward_neighbourhoods(x, x[idx[:, :8]])  # k neighbours where context_k are needed
    # without context the state dict is unchanged (shipped weights keep loading)
    plain = LocalPointNet(k=8, hidden=16)
    assert not any(key.startswith("context") for key in plain.state_dict()) and plain.n_neighbours == 8
    assert any(key.startswith("context") for key in m.state_dict())
    assert build_normals_model("fa-local-pointnet", local_k=8, hidden=8, local_context_k=12).context_k == 12


def test_context_bad_arguments():
    for bad in (8, 4, 0, 2.5, True):
        with pytest.raises(ValueError, match="context_k"):
            LocalPointNet(k=8, context_k=bad)
    m = LocalPointNet(k=8, hidden=8, context_k=16).double()
    with pytest.raises(ValueError, match="k = 16"):
        m(torch.randn(12, 3, dtype=torch.float64))  # more than k but not more than context_k points


# ------------------------------------------------------------------------------------------ training samples
class _Clouds(torch.utils.data.Dataset):
    """Stand-in for FreshPoints: random clouds (points on a plane z = 0, normal e_z), fresh per epoch."""

    def __init__(self, n: int = 5, points: int = 200):
        self.n, self.points, self.epoch = n, points, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(1000 * self.epoch + i)
        pos = torch.rand(self.points, 3, generator=g)
        pos[:, 2] = 0
        return {"pos": pos, "normal": torch.tensor([0.0, 0.0, 1.0]).expand(self.points, 3).clone()}


def test_query_neighbourhoods_and_noise():
    x = anisotropic_cloud(1, 60)[0]
    center, nbr = query_neighbourhoods(x, 10, 7)
    assert center.shape == (10, 3) and nbr.shape == (10, 7, 3)
    torch.testing.assert_close(nbr[:, 0], center)  # the query itself first
    idx = dense_knn(x[None], x[None], 7)[0][:10]
    torch.testing.assert_close(nbr, x[idx])
    rng = np.random.default_rng(0)
    noisy, sigma = add_random_noise(x, 0.02, rng)
    diag = float((x.amax(0) - x.amin(0)).norm())
    assert 0 <= sigma <= 0.02 and noisy.shape == x.shape
    assert float((noisy - x).std()) == pytest.approx(sigma * diag, rel=0.25)
    assert add_random_noise(x, 0.0, rng)[0] is x
    with pytest.raises(ValueError, match="noise_max"):
        add_random_noise(x, -1.0, rng)
    with pytest.raises(ValueError, match="n_queries"):
        query_neighbourhoods(x, 61, 7)


def test_neighbourhood_samples_deterministic_noisy_mixed_densities():
    ds = NeighbourhoodSamples(_Clouds(), 16, 8, noise_max=0.05, densities=(50, 100, 200), seed=3)
    ds.set_epoch(2)
    a, b = ds[1], ds[1]
    assert a["center"].shape == (16, 3) and a["nbr"].shape == (16, 8, 3) and a["normal"].shape == (16, 3)
    torch.testing.assert_close(a["nbr"], b["nbr"])  # same epoch and item: the same draw (resumable)
    ds.set_epoch(3)
    assert not torch.equal(ds[1]["nbr"], a["nbr"])
    # the noise moves the points off the plane z = 0 and leaves the exact normals
    zs = torch.stack([ds[i]["nbr"][..., 2].abs().max() for i in range(5)])
    assert float(zs.max()) > 0 and torch.equal(a["normal"], torch.tensor([0.0, 0.0, 1.0]).expand(16, 3))
    clean = NeighbourhoodSamples(_Clouds(), 16, 8, seed=3)
    assert float(clean[0]["nbr"][..., 2].abs().max()) == 0
    # the density changes the neighbourhoods' size: mean neighbour distance falls with more points
    spread = {n: NeighbourhoodSamples(_Clouds(40), 32, 8, densities=(n,))[0]["nbr"] for n in (50, 200)}
    r = {n: float((v - v[:, :1]).norm(dim=-1).mean()) for n, v in spread.items()}
    assert r[200] < r[50]
    with pytest.raises(ValueError, match="densities"):
        NeighbourhoodSamples(_Clouds(), 16, 8, densities=(8,))
    with pytest.raises(ValueError, match="densities"):
        NeighbourhoodSamples(_Clouds(), 16, 8, densities=(400,))[0]
    with pytest.raises(ValueError, match="n_queries"):
        NeighbourhoodSamples(_Clouds(), 0, 8)


def test_neighbourhood_samples_clean_share():
    # a share of the clouds stays exactly on the plane; 0 draws no extra coin (the samples of earlier versions)
    def flat(ds):
        return [float(ds[i]["nbr"][..., 2].abs().max()) == 0 for i in range(40)]

    half = flat(NeighbourhoodSamples(_Clouds(40), 8, 8, noise_max=0.05, seed=3, clean_share=0.5))
    assert 8 <= sum(half) <= 32
    assert sum(flat(NeighbourhoodSamples(_Clouds(40), 8, 8, noise_max=0.05, seed=3, clean_share=1.0))) == 40
    a = NeighbourhoodSamples(_Clouds(40), 8, 8, noise_max=0.05, seed=3)
    b = NeighbourhoodSamples(_Clouds(40), 8, 8, noise_max=0.05, seed=3, clean_share=0.0)
    assert sum(flat(a)) == 0 and all(torch.equal(a[i]["nbr"], b[i]["nbr"]) for i in range(5))
    for bad in (-0.1, 1.5, True, "half"):
        with pytest.raises(ValueError, match="clean_share"):
            NeighbourhoodSamples(_Clouds(), 16, 8, noise_max=0.05, clean_share=bad)


def _cfg(root, **kw):
    base = dict(model="fa-local-pointnet", setting="i/i", n_train=4, n_valid=2, n_test=2, n_points=64, hidden=8,
                k=8, tf_k=8, local_k=8, feature_k=8, baseline_k=8, data_root=root, diagnostic_samples=2)
    base.update(kw)
    return NormalsExperimentConfig(**base)


def test_config_options_validated(tmp_path):
    root = str(tmp_path)
    c = _cfg(root, train_queries=16, train_noise_max=0.012, local_context_k=12)
    assert NormalsExperimentConfig.from_dict(c.to_dict()) == c
    assert NormalsExperiment(c).run_name == "fa-local-pointnet-k8-ctx12-q16-noise0.012_i-i"
    c = _cfg(root, train_queries=16, train_noise_max=0.012, train_clean_share=0.5, local_vote=5)
    assert NormalsExperimentConfig.from_dict(c.to_dict()) == c
    assert NormalsExperiment(c).run_name == "fa-local-pointnet-k8-vote5-q16-noise0.012-clean0.5_i-i"
    assert NormalsExperiment(c).build_model().vote_k == 5
    bad = [dict(train_queries=0), dict(train_queries=16, model="pointnet"), dict(local_context_k=8),
           dict(local_context_k=12, model="tf-pointnet"), dict(train_noise_max=0.01),
           dict(train_queries=16, train_noise_max=-0.1), dict(train_queries=16, train_noise_max=float("inf")),
           dict(train_queries=16, train_densities=(128,)),  # procedural source
           dict(train_queries=16, source="cad", train_densities=(8,)), dict(local_context_k=64),
           dict(train_queries=16, train_clean_share=0.5),  # no noise to leave out
           dict(train_queries=16, train_noise_max=0.01, train_clean_share=1.5),
           dict(local_vote=8), dict(local_vote=1), dict(local_vote=4, head="residual"),
           dict(local_vote=4, model="tf-pointnet")]
    for kw in bad:
        with pytest.raises(ValueError, match="train_|local_context_k|local_vote|n_points"):
            _cfg(root, **kw)


def test_tiny_run_with_query_neighbourhoods(tmp_path):
    root = str(tmp_path / "cache")
    exp = NormalsExperiment(_cfg(root, train_queries=16, train_noise_max=0.012, local_context_k=12))
    ds = exp.dataset("train")
    assert isinstance(ds, NeighbourhoodSamples) and ds.n_neighbours == 12
    batch = exp.collate([ds[i] for i in range(2)])
    assert batch["center"].shape == (32, 3) and batch["nbr"].shape == (32, 12, 3)
    model = exp.build_model()
    loss = exp.loss(model, batch)
    assert torch.isclose(loss, normal_loss(model.forward_neighbourhoods(batch["center"], batch["nbr"]),
                                           batch["normal"]))
    res = fit(exp, TrainConfig(epochs=2, batch_size=2, out=str(tmp_path / "runs"), quiet=True), 0)
    m = res.metrics
    assert 0 <= m["test"]["one_minus_cos2"] <= 1
    assert m["diagnostics"]["equivariance_error_f64_generic"] <= 1e-9
    assert ds.epoch == 1
