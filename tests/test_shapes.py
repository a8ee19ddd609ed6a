"""Tests for the procedural normal-estimation data set, the k-NN PCA baseline and the metrics."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("manifold3d")
trimesh = pytest.importorskip("trimesh")

from equiframe.datasets.shapes import (  # noqa: E402
    KIND_CODES,
    Mesh,
    NormalsDataset,
    ShapesConfig,
    angular_error_deg,
    build_shapes,
    face_normals_and_areas,
    generate_shape,
    generate_shapes,
    is_closed_manifold,
    knn_pca_normals,
    make_analytic_shape,
    make_csg_shape,
    normal_loss,
    normalize_mesh,
    sample_surface,
    shapes_cache_path,
)

TETRA = Mesh(
    np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]),
    np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]),
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_train": -1},
        {"n_points": 0},
        {"seed": -3},
        {"noise": float("nan")},
        {"noise": -0.1},
        {"kinds": ()},
        {"kinds": ("csg", "teapot"), "weights": (1.0, 1.0)},
        {"weights": (1.0,)},
        {"weights": (0.0, 0.0)},
        {"resolution": 4},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        ShapesConfig(**kwargs)


def test_config_cache_key_ignores_sampling_fields():
    a = ShapesConfig.tiny()
    assert a.cache_key() == ShapesConfig.tiny(n_points=64, noise=0.01).cache_key()
    assert a.cache_key() != ShapesConfig.tiny(seed=1).cache_key()
    assert a.cache_key() != ShapesConfig.tiny(n_test=17).cache_key()
    json.dumps(a.mesh_params())  # serialisable


# ------------------------------------------------------------------------------------------
# mesh utilities and sampling
# ------------------------------------------------------------------------------------------


def test_face_normals_and_areas():
    n, a = face_normals_and_areas(TETRA.vertices, TETRA.faces)
    np.testing.assert_allclose(a[:3], 0.5)
    np.testing.assert_allclose(a[3], math.sqrt(3) / 2)
    np.testing.assert_allclose(n[3], np.ones(3) / math.sqrt(3))
    np.testing.assert_allclose(n[0], [0, 0, -1])  # outward


def test_is_closed_manifold():
    assert is_closed_manifold(TETRA.faces)
    assert not is_closed_manifold(TETRA.faces[:3])  # open
    flipped = TETRA.faces.copy()
    flipped[0] = flipped[0, ::-1]
    assert not is_closed_manifold(flipped)  # inconsistent orientation
    assert not is_closed_manifold(np.array([[0, 0, 1]]))


def test_normalize_mesh_bbox_and_area():
    v = TETRA.vertices * 3.0 + np.array([5.0, -2, 1])
    out, c, s = normalize_mesh(v)
    np.testing.assert_allclose(0.5 * (out.min(0) + out.max(0)), 0, atol=1e-12)
    assert np.linalg.norm(out, axis=1).max() == pytest.approx(1.0)
    np.testing.assert_allclose(out * s + c, v)
    out_a, c_a, _ = normalize_mesh(v, TETRA.faces, center="area")
    assert not np.allclose(c_a, c)
    assert np.linalg.norm(out_a, axis=1).max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="center"):
        normalize_mesh(v, center="median")  # type: ignore[arg-type]
    assert normalize_mesh(v.astype(np.float32))[0].dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sample_surface_on_faces_and_unit_normals(dtype):
    v = TETRA.vertices.astype(dtype)
    pos, nrm, fi = sample_surface(v, TETRA.faces, 2000, rng(1), dtype=dtype, return_face_index=True)
    assert pos.shape == (2000, 3) and nrm.shape == (2000, 3) and pos.dtype == dtype
    np.testing.assert_allclose(np.linalg.norm(nrm, axis=1), 1, atol=1e-6)
    fn, _ = face_normals_and_areas(TETRA.vertices, TETRA.faces)
    np.testing.assert_allclose(nrm, fn[fi], atol=1e-6)
    a = TETRA.vertices[TETRA.faces[fi, 0]]
    # the point lies in the plane of its face (normal perpendicular to the face) ...
    np.testing.assert_allclose(np.einsum("ij,ij->i", pos - a, nrm), 0, atol=1e-5)
    # ... and inside the triangle: all barycentric coordinates >= 0
    tri = TETRA.vertices[TETRA.faces[fi]]
    for k in range(3):
        e = tri[:, (k + 2) % 3] - tri[:, (k + 1) % 3]
        side = np.einsum("ij,ij->i", np.cross(e, pos - tri[:, (k + 1) % 3]), nrm)
        assert (side >= -1e-6).all()


def test_sample_surface_area_uniform():
    # one triangle of area 2 and one of area 0.125 (ratio 16:1), far apart
    v = np.array([[0.0, 0, 0], [2, 0, 0], [0, 2, 0], [10, 0, 0], [10.5, 0, 0], [10, 0.5, 0]])
    f = np.array([[0, 1, 2], [3, 4, 5]])
    n = 40000
    _, _, fi = sample_surface(v, f, n, rng(2), return_face_index=True)
    p_small = 0.125 / 2.125
    count = int((fi == 1).sum())
    sd = math.sqrt(n * p_small * (1 - p_small))
    assert abs(count - n * p_small) < 5 * sd
    # uniform within a triangle: the sample mean is the centroid
    pos, _, fi = sample_surface(v[:3], f[:1], n, rng(3), return_face_index=True)
    np.testing.assert_allclose(pos.mean(0), [2 / 3, 2 / 3, 0], atol=0.02)


def test_sample_surface_zero_area_faces_never_drawn():
    v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 2, 2]])
    f = np.array([[0, 1, 2], [0, 1, 1], [3, 3, 3]])  # two degenerate faces
    _, nrm, fi = sample_surface(v, f, 1000, rng(0), return_face_index=True)
    assert (fi == 0).all() and np.isfinite(nrm).all()


def test_sample_surface_deterministic_and_noise():
    v, f = TETRA
    a = sample_surface(v, f, 256, rng(7))
    b = sample_surface(v, f, 256, rng(7))
    c = sample_surface(v, f, 256, rng(8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    # noise only on positions; its normal component has std noise * bbox_diagonal
    noise = 0.01
    pos, nrm, fi = sample_surface(v, f, 20000, rng(9), noise=noise, dtype=np.float64, return_face_index=True)
    _, nrm_clean = sample_surface(v, f, 20000, rng(9), dtype=np.float64)
    np.testing.assert_array_equal(nrm, nrm_clean)
    dist = np.einsum("ij,ij->i", pos - v[f[fi, 0]], nrm)
    assert np.std(dist) == pytest.approx(noise * math.sqrt(3), rel=0.05)


@pytest.mark.parametrize(
    "args, err",
    [
        ((np.zeros((3, 2)), np.array([[0, 1, 2]]), 5), ValueError),
        ((TETRA.vertices, TETRA.faces + 1, 5), ValueError),
        ((TETRA.vertices * np.nan, TETRA.faces, 5), ValueError),
        ((TETRA.vertices, TETRA.faces.astype(float), 5), TypeError),
        ((TETRA.vertices, TETRA.faces, 0), ValueError),
        ((np.zeros((3, 3)), np.array([[0, 1, 2]]), 5), ValueError),  # zero area
    ],
)
def test_sample_surface_bad_input(args, err):
    with pytest.raises(err):
        sample_surface(*args, rng(0))


def test_sample_surface_needs_generator():
    with pytest.raises(TypeError, match="rng"):
        sample_surface(TETRA.vertices, TETRA.faces, 4, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noise"):
        sample_surface(TETRA.vertices, TETRA.faces, 4, rng(0), noise=-1.0)


# ------------------------------------------------------------------------------------------
# generators
# ------------------------------------------------------------------------------------------


def _check_solid(mesh: Mesh) -> None:
    assert is_closed_manifold(mesh.faces)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    assert tm.is_watertight and tm.is_winding_consistent
    assert tm.volume > 0  # outward orientation


def test_csg_shapes_are_valid_solids():
    for seed in range(12):
        mesh = make_csg_shape(rng(seed), resolution=16, max_ops=4)
        _check_solid(mesh)
        assert mesh.faces.shape[0] >= 12


@pytest.mark.parametrize("kind", ["sphere", "ellipsoid", "superquadric", "torus"])
def test_analytic_shapes_are_valid_solids(kind):
    mesh = make_analytic_shape(rng(3), kind, resolution=16)
    _check_solid(mesh)
    assert np.isfinite(mesh.vertices).all()
    if kind == "sphere":
        np.testing.assert_allclose(np.linalg.norm(mesh.vertices, axis=1), 1.0, atol=1e-9)
    if kind == "torus":
        assert trimesh.Trimesh(mesh.vertices, mesh.faces).euler_number == 0
    with pytest.raises(ValueError):
        make_analytic_shape(rng(0), "cube", 16)  # type: ignore[arg-type]


def test_generate_shape_deterministic_and_normalised():
    cfg = ShapesConfig.tiny(resolution=16)
    (v1, f1), k1 = generate_shape(cfg, "train", 5)
    (v2, f2), k2 = generate_shape(cfg, "train", 5)
    assert np.array_equal(v1, v2) and np.array_equal(f1, f2) and k1 == k2
    assert v1.dtype == np.float32 and f1.dtype == np.int32
    assert np.linalg.norm(v1, axis=1).max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(0.5 * (v1.min(0) + v1.max(0)), 0, atol=1e-6)
    (v3, _), _ = generate_shape(cfg, "test", 5)
    assert not (v3.shape == v1.shape and np.array_equal(v3, v1))
    with pytest.raises(IndexError):
        generate_shape(cfg, "test", 16)
    with pytest.raises(ValueError, match="split"):
        generate_shape(cfg, "val", 0)  # type: ignore[arg-type]


def test_generate_shape_kinds():
    cfg = ShapesConfig(n_train=6, n_test=0, kinds=("sphere",), weights=(1.0,), resolution=16)
    for i in range(3):
        (v, _), k = generate_shape(cfg, "train", i)
        assert k == KIND_CODES["sphere"]
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)


# ------------------------------------------------------------------------------------------
# build + dataset
# ------------------------------------------------------------------------------------------


def _digest(v: np.ndarray, f: np.ndarray) -> str:
    return hashlib.sha256(v.tobytes() + f.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    cfg = ShapesConfig.tiny()
    path = build_shapes(cfg, root, workers=0, progress=False)
    return cfg, root, path


def test_build_tiny(tiny):
    cfg, root, path = tiny
    assert path == shapes_cache_path(cfg, root) and path.is_file()
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["params"]["n_train"] == 64 and len(manifest["sha256"]) == 64
    # cached: a second call returns the same entry without regenerating
    mtime = path.stat().st_mtime_ns
    assert build_shapes(cfg, root, workers=0, progress=False) == path
    assert path.stat().st_mtime_ns == mtime
    data = np.load(path)
    assert data["train_vertex_offsets"].shape == (65,) and data["test_kinds"].shape == (16,)


def test_tiny_meshes_valid_and_splits_disjoint(tiny):
    cfg, root, _ = tiny
    train = NormalsDataset("train", cfg, root, build=False)
    test = NormalsDataset("test", cfg, root, build=False)
    digests = {"train": set(), "test": set()}
    for name, ds in (("train", train), ("test", test)):
        for i in range(len(ds)):
            v, f = ds.mesh(i)
            assert f.shape[0] >= cfg.min_faces
            _check_solid(Mesh(v.astype(np.float64), f))
            if ds.kind(i) != KIND_CODES["sphere"]:  # unit spheres have no parameters: all identical
                digests[name].add(_digest(v, f))
    n_train = sum(train.kind(i) != KIND_CODES["sphere"] for i in range(64))
    n_test = sum(test.kind(i) != KIND_CODES["sphere"] for i in range(16))
    assert len(digests["train"]) == n_train > 40 and len(digests["test"]) == n_test > 8
    assert not digests["train"] & digests["test"]
    kinds = {train.kind(i) for i in range(len(train))}
    assert KIND_CODES["csg"] in kinds and len(kinds) > 1


def test_build_deterministic_across_roots(tiny, tmp_path):
    cfg, _, path = tiny
    a = np.load(path)
    other = generate_shapes(cfg, workers=0, progress=False)
    for k in a.files:
        np.testing.assert_array_equal(a[k], other[k])


def test_parallel_equals_serial():
    cfg = ShapesConfig(n_train=6, n_test=3, resolution=16)
    serial = generate_shapes(cfg, workers=0, progress=False)
    parallel = generate_shapes(cfg, workers=2, progress=False, chunk_size=2)
    assert serial.keys() == parallel.keys()
    for k in serial:
        np.testing.assert_array_equal(serial[k], parallel[k])


def test_dataset_items(tiny):
    cfg, root, _ = tiny
    train = NormalsDataset("train", cfg, root, build=False)
    item = train[3]
    assert item["pos"].shape == (512, 3) and item["pos"].dtype == torch.float32
    assert item["normal"].shape == (512, 3) and item["normal"].dtype == torch.float32
    assert int(item["index"]) == 3 and int(item["kind"]) in KIND_CODES.values()
    torch.testing.assert_close(item["normal"].norm(dim=-1), torch.ones(512))
    assert item["pos"].norm(dim=-1).max() <= 1 + 1e-5
    # train: same epoch -> same points, new epoch -> new points
    assert torch.equal(train[3]["pos"], item["pos"])
    train.set_epoch(1)
    assert not torch.equal(train[3]["pos"], item["pos"])
    assert torch.equal(train[-61]["pos"], train[3]["pos"])
    # test: fixed points whatever the epoch
    test = NormalsDataset("test", cfg, root, build=False)
    x = test[0]["pos"]
    test.set_epoch(4)
    assert torch.equal(test[0]["pos"], x)
    with pytest.raises(IndexError):
        test[16]
    with pytest.raises(ValueError, match="epoch"):
        test.set_epoch(-1)


def test_dataset_options(tiny):
    cfg, root, _ = tiny
    base = NormalsDataset("test", cfg, root, build=False)[2]
    rot = NormalsDataset("test", cfg, root, build=False, rotation="so3")[2]
    # a rotation preserves pairwise distances and position . normal
    def dist(x):
        return (x[:, None] - x[None]).norm(dim=-1)

    torch.testing.assert_close(dist(rot["pos"]), dist(base["pos"]), atol=1e-5, rtol=0)
    torch.testing.assert_close((rot["pos"] * rot["normal"]).sum(-1), (base["pos"] * base["normal"]).sum(-1), atol=1e-5, rtol=0)
    noisy_cfg = ShapesConfig.tiny(noise=0.01, n_points=64)
    noisy = NormalsDataset("test", noisy_cfg, root, build=False)[2]
    assert noisy["pos"].shape == (64, 3)
    data = NormalsDataset("test", cfg, root, build=False, output="data")[2]
    assert data.pos.shape == (512, 3) and data.normal.shape == (512, 3)
    other_seed = NormalsDataset("test", cfg, root, build=False, sample_seed=5)[2]
    assert not torch.equal(other_seed["pos"], base["pos"])
    loader = torch.utils.data.DataLoader(NormalsDataset("train", cfg, root, build=False), batch_size=8)
    batch = next(iter(loader))
    assert batch["pos"].shape == (8, 512, 3) and batch["index"].tolist() == list(range(8))
    with pytest.raises(ValueError, match="rotation"):
        NormalsDataset("test", cfg, root, build=False, rotation="o3")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        NormalsDataset("test", ShapesConfig.tiny(seed=99), root, build=False)


def test_empty_split(tmp_path):
    cfg = ShapesConfig(n_train=0, n_test=2, resolution=16)
    assert len(NormalsDataset("train", cfg, tmp_path)) == 0
    assert NormalsDataset("test", cfg, tmp_path)[1]["pos"].shape == (512, 3)


def test_dataset_pickles_without_arrays(tiny):
    import pickle

    cfg, root, _ = tiny
    ds = NormalsDataset("test", cfg, root, build=False)
    blob = pickle.dumps(ds)
    assert len(blob) < 10_000
    clone = pickle.loads(blob)
    assert torch.equal(clone[1]["pos"], ds[1]["pos"])


# ------------------------------------------------------------------------------------------
# baseline + metrics
# ------------------------------------------------------------------------------------------


def test_knn_pca_plane_exact():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g, dtype=torch.float64)
    n = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64) / 3
    basis = torch.linalg.qr(torch.cat([n[:, None], torch.eye(3, dtype=torch.float64)[:, :2]], 1)).Q[:, 1:]
    pos = xy @ basis.T + 0.3
    est = knn_pca_normals(pos, k=10)
    assert est.dtype == torch.float64
    assert normal_loss(est, n.expand_as(est)).item() < 1e-12


def test_knn_pca_sphere_loss_small():
    mesh = make_analytic_shape(rng(0), "sphere", resolution=48)
    pos, nrm = sample_surface(*mesh, 512, rng(1))
    est = knn_pca_normals(torch.from_numpy(pos), k=16)
    assert normal_loss(est, torch.from_numpy(nrm)).item() < 0.01


def test_knn_pca_batched_chunked_and_dims():
    g = torch.Generator().manual_seed(1)
    pos = torch.randn(3, 100, 3, generator=g)
    batched = knn_pca_normals(pos, k=8, chunk_size=17)
    for b in range(3):
        single = knn_pca_normals(pos[b], k=8)
        assert normal_loss(batched[b], single).item() < 1e-6
    # d = 2: points on a circle; normal = radial direction
    t = torch.linspace(0, 2 * math.pi, 400, dtype=torch.float64)[:-1]
    circle = torch.stack([t.cos(), t.sin()], -1)
    assert normal_loss(knn_pca_normals(circle, k=5), circle).item() < 1e-4


@pytest.mark.parametrize("k", [2, 101, 3.0])
def test_knn_pca_bad_k(k):
    with pytest.raises(ValueError, match="k"):
        knn_pca_normals(torch.randn(100, 3), k=k)  # type: ignore[arg-type]


def test_knn_pca_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        knn_pca_normals(torch.full((20, 3), float("nan")), k=4)
    with pytest.raises(ValueError, match="shape"):
        knn_pca_normals(torch.randn(20), k=4)
    with pytest.raises(TypeError):
        knn_pca_normals(np.zeros((20, 3)), k=4)  # type: ignore[arg-type]


def test_normal_loss_values_and_safety():
    t = torch.tensor([[0.0, 0, 1]] * 4)
    pred = torch.tensor([[0.0, 0, 5], [0, 0, -2], [3, 0, 0], [1, 0, 1]])
    np.testing.assert_allclose(normal_loss(pred, t, reduction="none").numpy(), [0, 0, 1, 0.5], atol=1e-6)
    z = torch.zeros(2, 3, requires_grad=True)
    loss = normal_loss(z, t[:2])
    loss.backward()
    assert loss.item() == 1.0 and torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match="shape"):
        normal_loss(torch.zeros(2, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="NaN"):
        normal_loss(torch.full((2, 3), float("inf")), t[:2])
    with pytest.raises(ValueError, match="reduction"):
        normal_loss(pred, t, reduction="sum")  # type: ignore[arg-type]
    assert normal_loss(pred.double(), t.double()).dtype == torch.float64


def test_angular_error_deg():
    t = torch.tensor([[1.0, 0, 0]] * 5)
    pred = torch.tensor([[1.0, 1, 0], [-1, 1, 0], [0, 0, 0], [-2, 0, 0], [0, 0, 3]])
    np.testing.assert_allclose(angular_error_deg(pred, t).numpy(), [45, 45, 90, 0, 90], atol=1e-5)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, 3, generator=g), torch.randn(1000, 3, generator=g)
    err = angular_error_deg(a, b)
    assert (err >= 0).all() and (err <= 90).all()
    # consistent with the loss: 1 - cos^2 = sin^2(theta)
    torch.testing.assert_close(torch.sin(torch.deg2rad(err)) ** 2, normal_loss(a, b, reduction="none"), atol=1e-5, rtol=0)
    small = torch.tensor([[1.0, 1e-6, 0]], dtype=torch.float64)
    assert angular_error_deg(small, t[:1].double()).item() == pytest.approx(math.degrees(1e-6), rel=1e-6)
