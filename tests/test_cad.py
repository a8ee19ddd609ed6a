"""CAD-kernel data set (equiframe.datasets.cad): exact normals, area-uniformity, seeds, manifest/resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from equiframe.datasets._cache import CacheCorruptedError
from equiframe.datasets.cad import (
    CADConfig,
    CADNormalsDataset,
    build_cad,
    cad_dir,
    cad_split,
    generate_part,
    load_cad,
    part_rng,
    sample_shape,
)

bd = pytest.importorskip("build123d", reason="build123d (OpenCASCADE) is not installed: pip install 'equiframe[cad]'")


def test_plane_faces_exact():
    pos, nrm, fid, ftype = sample_shape(bd.Box(2.0, 1.0, 0.5), 2000, np.random.default_rng(0))
    assert (ftype == 0).all()
    # every point lies on one of the six faces and carries that face's outward axis normal
    half = np.array([1.0, 0.5, 0.25])
    axis = np.abs(nrm).argmax(axis=1)
    np.testing.assert_allclose(np.abs(nrm).max(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(pos[np.arange(len(pos)), axis], np.sign(nrm[np.arange(len(pos)), axis]) * half[axis], atol=1e-9)
    # area weights: face share = face area / total area
    areas = np.array([1.0 * 0.5, 2.0 * 0.5, 2.0 * 1.0])  # faces normal to x, y, z (two each)
    share = np.bincount(axis, minlength=3) / len(axis)
    expected = areas / areas.sum()
    assert np.all(np.abs(share - expected) < 4 * np.sqrt(expected * (1 - expected) / len(axis)))


def test_cylinder_and_sphere_exact():
    rng = np.random.default_rng(1)
    pos, nrm, _, ftype = sample_shape(bd.Cylinder(0.5, 2.0), 4000, rng)
    lat = ftype == 1
    r = np.linalg.norm(pos[lat, :2], axis=1)
    np.testing.assert_allclose(r, 0.5, atol=1e-9)
    np.testing.assert_allclose(nrm[lat], np.c_[pos[lat, :2] / r[:, None], np.zeros(lat.sum())], atol=1e-9)
    caps = ~lat
    np.testing.assert_allclose(nrm[caps], np.c_[np.zeros((caps.sum(), 2)), np.sign(pos[caps, 2])], atol=1e-12)
    frac = (2 * math.pi * 0.5 * 2.0) / (2 * math.pi * 0.5 * 2.0 + 2 * math.pi * 0.25)
    assert abs(lat.mean() - frac) < 4 * math.sqrt(frac * (1 - frac) / len(lat))

    pos, nrm, _, ftype = sample_shape(bd.Sphere(1.3), 4000, rng)
    assert (ftype == 3).all()
    np.testing.assert_allclose(np.linalg.norm(pos, axis=1), 1.3, atol=1e-9)
    np.testing.assert_allclose(nrm, pos / 1.3, atol=1e-9)  # outward
    # Archimedes: z is uniform on [-r, r] for an area-uniform sample of the sphere
    counts = np.histogram(pos[:, 2], bins=8, range=(-1.3, 1.3))[0]
    chi2 = ((counts - 500) ** 2 / 500).sum()
    assert chi2 < 30  # 7 degrees of freedom: P(chi2 > 30) ~ 1e-4


def test_torus_area_uniform_despite_jacobian():
    """The parametrisation of a torus is not area-preserving: the rejection step must correct it."""
    pos, nrm, _, ftype = sample_shape(bd.Torus(1.0, 0.5), 6000, np.random.default_rng(2))
    assert (ftype == 4).all()
    rho = np.linalg.norm(pos[:, :2], axis=1)
    frac = (math.pi * 1.0 + 2 * 0.5) / (2 * math.pi * 1.0)  # area share of the outer half (rho > R)
    outer = (rho > 1.0).mean()
    assert abs(outer - frac) < 4 * math.sqrt(frac * (1 - frac) / len(rho))
    # exact normals: from the tube centre circle to the point
    centre = np.c_[pos[:, :2] / rho[:, None], np.zeros(len(pos))]
    np.testing.assert_allclose(nrm, (pos - centre) / 0.5, atol=1e-9)


def test_reversed_faces_point_outward():
    part = bd.Box(2, 2, 2) - bd.Cylinder(0.5, 3)  # the hole's face is reversed
    pos, nrm, _, ftype = sample_shape(part, 3000, np.random.default_rng(3))
    hole = ftype == 1
    assert hole.any()
    radial = np.c_[pos[hole, :2], np.zeros(hole.sum())] / 0.5
    np.testing.assert_allclose(nrm[hole], -radial, atol=1e-9)  # outward of the solid = into the hole


def test_seeds_and_parts():
    cfg = CADConfig(n_parts=4, n_points=300, seed=5, shard_size=2)
    a, b = generate_part(cfg, 1), generate_part(cfg, 1)
    np.testing.assert_array_equal(a["pos"], b["pos"])
    c = generate_part(cfg, 2)
    assert not np.array_equal(a["pos"], c["pos"])
    assert a["pos"].shape == (300, 3) and a["normal"].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a["normal"], axis=1), 1.0, atol=1e-5)
    assert np.linalg.norm(a["pos"], axis=1).max() == pytest.approx(1.0, abs=1e-6)  # normalised
    assert not np.array_equal(part_rng(0, 1).random(3), part_rng(0, 2).random(3))
    assert [cad_split(i) for i in range(10)] == ["train"] * 8 + ["valid", "test"]


def test_build_manifest_and_resume(tmp_path):
    cfg = CADConfig(n_parts=2, n_points=200, seed=0, shard_size=2)
    d = build_cad(cfg, tmp_path / "one", progress=False, workers=0)
    m = json.loads((d / "manifest.json").read_text())
    assert set(m["shards"]) == {"0"} and len(m["shards"]["0"]["sha256"]) == 64
    first = (d / "shard_00000.npz").stat().st_mtime_ns
    cfg4 = CADConfig(n_parts=4, n_points=200, seed=0, shard_size=2)
    assert cad_dir(cfg4, tmp_path / "one") == d  # the part count is not in the key
    build_cad(cfg4, tmp_path / "one", progress=False, workers=0)
    assert (d / "shard_00000.npz").stat().st_mtime_ns == first  # resumed, not rebuilt
    one = load_cad(cfg4, tmp_path / "one")
    np.testing.assert_array_equal(one["index"], np.arange(4))
    # a missing shard is rebuilt identically; a corrupted one is detected
    (d / "shard_00001.npz").unlink()
    build_cad(cfg4, tmp_path / "one", progress=False, workers=0)
    np.testing.assert_array_equal(load_cad(cfg4, tmp_path / "one")["pos"], one["pos"])
    data = bytearray((d / "shard_00001.npz").read_bytes())
    data[-200] ^= 0xFF
    (d / "shard_00001.npz").write_bytes(bytes(data))
    with pytest.raises((CacheCorruptedError, ValueError)):
        load_cad(cfg4, tmp_path / "one")
    with pytest.raises(FileNotFoundError, match="not built"):
        load_cad(CADConfig(n_parts=8, n_points=200, seed=0, shard_size=2), tmp_path / "one")


@pytest.mark.slow
def test_worker_processes_give_the_same_parts(tmp_path):
    """Worker processes (with the per-attempt time limit) build exactly the in-process parts."""
    cfg = CADConfig(n_parts=4, n_points=200, seed=0, shard_size=2)
    one = load_cad(cfg, build_cad(cfg, tmp_path / "one", workers=0, progress=False).parent.parent)
    two = load_cad(cfg, build_cad(cfg, tmp_path / "two", workers=2, progress=False).parent.parent)
    for k in ("pos", "normal", "face_id", "family"):
        np.testing.assert_array_equal(one[k], two[k])


def test_dataset_variants(tmp_path):
    cfg = CADConfig(n_parts=10, n_points=400, seed=0, shard_size=10)
    build_cad(cfg, tmp_path, progress=False, workers=0)
    ds = CADNormalsDataset("test", cfg, tmp_path, n_points=128)
    assert len(ds) == 1 and int(ds[0]["index"]) == 9
    it = ds[0]
    assert it["pos"].shape == (128, 3) and it["normal"].shape == (128, 3)
    torch.testing.assert_close(ds[0]["pos"], it["pos"])  # fixed points
    noisy = CADNormalsDataset("test", cfg, tmp_path, n_points=128, noise=0.012)[0]
    torch.testing.assert_close(noisy["normal"], it["normal"])  # same subset, exact normals
    diag = float((it["pos"].amax(0) - it["pos"].amin(0)).norm())
    d = (noisy["pos"] - it["pos"]).double()
    assert 0.5 * 0.012 * diag < float(d.std()) < 1.5 * 0.012 * diag
    rot = CADNormalsDataset("test", cfg, tmp_path, n_points=128, rotation="so3")[0]
    def dist(x):
        x = x.double()
        return (x[:, None] - x[None]).norm(dim=-1)

    torch.testing.assert_close(dist(rot["pos"]), dist(it["pos"]), atol=1e-5, rtol=0)  # a rigid motion
    train = CADNormalsDataset("train", cfg, tmp_path, n_points=64)
    assert len(train) == 8
    a = train[0]["pos"]
    train.set_epoch(1)
    assert not torch.equal(a, train[0]["pos"])  # fresh points per epoch
    with pytest.raises(ValueError, match="n_points"):
        CADNormalsDataset("test", cfg, tmp_path, n_points=401)
    with pytest.raises(ValueError, match="split"):
        CADNormalsDataset("tests", cfg, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noise"):
        CADNormalsDataset("test", cfg, tmp_path, noise=float("nan"))


def test_experiment_on_cad_parts(tmp_path):
    from equiframe.experiments.normals import NormalsExperiment, NormalsExperimentConfig, evaluate_model

    build_cad(CADConfig(n_parts=20, n_points=100, seed=0), tmp_path, progress=False, workers=0)
    cfg = NormalsExperimentConfig(model="fa-local-pointnet", source="cad", cad_parts=20, cad_points=100, n_train=4,
                                  n_valid=2, n_test=2, n_points=64, hidden=8, data_root=str(tmp_path),
                                  setting="so3/so3")
    exp = NormalsExperiment(cfg)
    assert [len(exp.dataset(s)) for s in ("train", "valid", "test")] == [4, 2, 2]
    assert exp.run_name.endswith("-cad_so3-so3")
    batch = exp.collate([exp.dataset("train")[i] for i in range(2)])
    loss = exp.loss(exp.build_model(), batch)
    assert 0 <= float(loss.detach()) <= 1
    res = evaluate_model(exp.build_model(), exp.dataset("test"), return_shapes=True)
    assert set(res) >= {"one_minus_cos2", "rms_angle_deg", "pgp5", "pgp10"} and len(res["per_shape"]) == 2
    with pytest.raises(ValueError, match="n_train"):
        NormalsExperiment(NormalsExperimentConfig(source="cad", cad_parts=20, cad_points=100, n_train=40, n_points=64,
                                                  data_root=str(tmp_path))).dataset("train")
