"""The ready-to-use normal estimator: weights files, chunking, orientation, CLI and file formats."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from equiframe.cli import main
from equiframe.datasets.mesh_io import read_point_cloud, read_stl, write_point_cloud
from equiframe.experiments.normals import normal_metrics
from equiframe.models.normals import LocalPointNet, dense_knn, jet_normals, knn_geometry
from equiframe.pretrained import WEIGHTS_DIR
from equiframe.pretrained.normals import (
    NormalEstimator,
    available_normal_models,
    load_normal_model,
    normal_estimator,
    orient_normals,
    save_normal_model,
)


def _sphere(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, 3))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture()
def weights(tmp_path):
    torch.manual_seed(0)
    model = LocalPointNet(3, 8, 8)
    save_normal_model(model, "tiny", {"dim": 3, "k": 8, "hidden": 8}, metrics={}, trained={"command": "test"},
                      weights_dir=tmp_path)
    return tmp_path, model


def test_weights_roundtrip_and_checksum(weights):
    d, model = weights
    assert available_normal_models(d) == ["tiny"]
    meta = json.loads((d / "normals__tiny.json").read_text())
    assert meta["name"] == "normals/tiny" and meta["builder"] == "equiframe.models.normals:LocalPointNet"
    loaded, _ = load_normal_model("tiny", weights_dir=d)
    x = torch.randn(50, 3)
    torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(ValueError, match="no shipped normal model"):
        load_normal_model("nope", weights_dir=d)
    data = bytearray((d / "normals__tiny.pt").read_bytes())
    data[-10] ^= 0xFF
    (d / "normals__tiny.pt").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        load_normal_model("tiny", weights_dir=d)


def test_chunked_equals_whole_cloud(weights):
    d, model = weights
    est = normal_estimator("tiny", weights_dir=d, chunk_size=37)
    x = np.random.default_rng(1).normal(size=(300, 3)) * [3.0, 1.0, 0.2] + 100.0  # far from the origin
    got = est(x)
    ref = model(torch.from_numpy(x - x.mean(0)).float()).detach().numpy()
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    assert np.abs(np.abs((got * ref).sum(1)) - 1).max() < 1e-4  # same lines
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_estimator_bad_input(weights):
    d, _ = weights
    est = normal_estimator("tiny", weights_dir=d)
    with pytest.raises(ValueError, match="NaN"):
        est(np.full((20, 3), np.nan))
    with pytest.raises(ValueError, match="shape"):
        est(np.zeros((20, 2)))
    with pytest.raises(ValueError, match="more than k"):
        est(np.random.rand(5, 3))
    with pytest.raises(TypeError):
        est([[0.0, 0.0, 0.0]])
    with pytest.raises(TypeError, match="LocalPointNet"):
        NormalEstimator(torch.nn.Linear(3, 3))


def test_orientation_on_a_sphere():
    x = _sphere(2000)
    rng = np.random.default_rng(2)
    flipped = x * rng.choice([-1.0, 1.0], size=(len(x), 1))
    out = orient_normals(x, flipped, k=10)
    assert ((out * x).sum(1) > 0).all()  # all outward


def test_kdtree_knn_matches_dense():
    x = torch.randn(1, 500, 3, dtype=torch.float64)
    dense = dense_knn(x, x, 8)
    tree = dense_knn(x, x, 8, kdtree_min_points=10)
    torch.testing.assert_close(tree, dense)
    torch.testing.assert_close(dense_knn(x, x, 8, exclude_self=True, kdtree_min_points=10), dense_knn(x, x, 9)[..., 1:])
    torch.testing.assert_close(dense_knn(x, x, 8, exclude_self=True), dense_knn(x, x, 9)[..., 1:])


def test_baselines_on_a_sphere():
    x = torch.from_numpy(_sphere(3000))
    pca = normal_metrics(knn_geometry(x, 16)[1], x)
    jet = normal_metrics(jet_normals(x, 16), x)
    assert jet["one_minus_cos2"] < 1e-5 < pca["one_minus_cos2"] < 1e-2  # jets see the curvature
    assert jet["pgp5"] == 1.0 and set(pca) == {"one_minus_cos2", "angle_deg", "rms_angle_deg", "pgp5", "pgp10"}
    q = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
    torch.testing.assert_close(jet_normals(x @ q.T, 16).abs(), (jet_normals(x, 16) @ q.T).abs())  # equivariant
    with pytest.raises(ValueError, match="k"):
        jet_normals(x, 4)


def test_metrics_values():
    t = torch.tensor([[0.0, 0.0, 1.0]] * 4, dtype=torch.float64)
    ang = torch.deg2rad(torch.tensor([0.0, 4.0, 8.0, 90.0], dtype=torch.float64))
    p = torch.stack([torch.sin(ang), torch.zeros(4, dtype=torch.float64), -torch.cos(ang)], 1)  # signs ignored
    m = normal_metrics(p, t)
    assert m["pgp5"] == 0.5 and m["pgp10"] == 0.75
    assert m["angle_deg"] == pytest.approx(25.5)
    assert m["rms_angle_deg"] == pytest.approx(np.sqrt((16 + 64 + 8100) / 4))
    assert m["one_minus_cos2"] == pytest.approx(float(torch.sin(ang).square().mean()))


def test_point_cloud_files(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 3))
    n = np.random.default_rng(1).normal(size=(40, 3))
    for name, binary in (("b.ply", True), ("a.ply", False), ("c.xyz", True), ("d.txt", True)):
        write_point_cloud(tmp_path / name, x, n, binary=binary)
        pc = read_point_cloud(tmp_path / name)
        np.testing.assert_allclose(pc.pos, x, atol=1e-6)
        np.testing.assert_allclose(pc.normal, n, atol=1e-6)
    np.savetxt(tmp_path / "p.xyz", x)  # PCPNet: x y z only
    assert read_point_cloud(tmp_path / "p.xyz").normal is None
    # meshes are sampled: a binary and an ASCII STL of one triangle, an OFF square
    tri = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
    rec = np.zeros(1, np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]))
    rec["v"][0] = tri
    (tmp_path / "t.stl").write_bytes(b"\0" * 80 + np.uint32(1).tobytes() + rec.tobytes())
    (tmp_path / "u.stl").write_text("solid t\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 0\n"
                                    "vertex 0 1 0\nendloop\nendfacet\nendsolid t\n")
    for f in ("t.stl", "u.stl"):
        np.testing.assert_allclose(read_stl(tmp_path / f).vertices, tri)
        pc = read_point_cloud(tmp_path / f, n_samples=50)
        assert pc.pos.shape == (50, 3) and np.allclose(pc.pos[:, 2], 0) and np.allclose(np.abs(pc.normal[:, 2]), 1)
    (tmp_path / "s.off").write_text("OFF\n4 1 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n")
    assert read_point_cloud(tmp_path / "s.off", n_samples=20).pos.shape == (20, 3)


@pytest.mark.parametrize("name,content,match", [
    ("e.xyz", "", "empty"),
    ("n.xyz", "0 0 0\n1 nan 0\n", "non-finite"),
    ("w.xyz", "0 0 0 1\n", "3 columns"),
    ("m.xyz", "0 0 0\n1 1\n", "columns"),
    ("z.las", "x", "unknown point-cloud format"),
    ("v.ply", "ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\nproperty float z\nend_header\n",
     "no vertices"),
    ("q.stl", "not an stl", "not an STL"),
])
def test_point_cloud_bad_files(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=match):
        read_point_cloud(tmp_path / name)


def test_write_bad_input(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        write_point_cloud(tmp_path / "x.ply", np.zeros((3, 2)))
    with pytest.raises(ValueError, match="can write"):
        write_point_cloud(tmp_path / "x.obj", np.zeros((3, 3)))


@pytest.mark.skipif(not (WEIGHTS_DIR / "normals__fa-local-pointnet-cad.json").exists(), reason="no shipped weights")
def test_cli_estimate_with_shipped_weights(tmp_path, capsys):
    x = _sphere(500)
    write_point_cloud(tmp_path / "scan.ply", x, x, binary=False)
    assert main(["normals", "estimate", str(tmp_path / "scan.ply"), "-o", str(tmp_path / "out.ply"), "--orient",
                 "--quiet"]) == 0
    out = read_point_cloud(tmp_path / "out.ply")
    np.testing.assert_allclose(out.pos, x, atol=1e-6)
    assert ((out.normal * x).sum(1) > 0.9).mean() > 0.95  # oriented outward, close to the sphere's normals
    assert "1-cos^2" in capsys.readouterr().out
    assert main(["normals", "estimate", str(tmp_path / "missing.ply"), "-o", str(tmp_path / "o.ply")]) == 2
    (tmp_path / "bad.xyz").write_text("1 2\n")
    assert main(["normals", "estimate", str(tmp_path / "bad.xyz"), "-o", str(tmp_path / "o.ply")]) == 2
