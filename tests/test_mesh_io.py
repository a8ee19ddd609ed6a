"""Tests for the real-format readers (ModelNet40 normals, PCPNet, OBJ / OFF / PLY)."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from equiframe.datasets.mesh_io import (
    MeshNormalsDataset,
    ModelNet40Normals,
    PCPNetShapes,
    load_pcpnet_shape,
    modelnet40_shape_names,
    modelnet40_split,
    normalize_points,
    read_mesh,
    read_modelnet_normals,
    read_normals,
    read_obj,
    read_off,
    read_pidx,
    read_ply,
    read_shape_list,
    read_xyz,
    sample_mesh_file,
)
from equiframe.datasets.shapes import Mesh, face_normals_and_areas


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def tri_area_total(mesh: Mesh) -> float:
    return float(face_normals_and_areas(*mesh)[1].sum())


# ------------------------------------------------------------------------------------------
# ModelNet40
# ------------------------------------------------------------------------------------------

MODELNET_TXT = """\
0.1,0.2,0.3,0.0,0.0,1.0
# a comment line

0.4, 0.5, 0.6, 1.0, 0.0, 0.0
0.7 0.8 0.9 0 1 0
1e-1,-2E-1,3.0,0,0,-1
"""


def test_read_modelnet_normals(tmp_path):
    p = write(tmp_path / "a.txt", MODELNET_TXT)
    pos, nrm = read_modelnet_normals(p)
    assert pos.shape == (4, 3) and nrm.shape == (4, 3) and pos.dtype == np.float32
    np.testing.assert_allclose(pos[1], [0.4, 0.5, 0.6])
    np.testing.assert_allclose(pos[3], [0.1, -0.2, 3.0])
    np.testing.assert_allclose(nrm[2], [0, 1, 0])
    first, _ = read_modelnet_normals(p, 2)
    np.testing.assert_array_equal(first, pos[:2])
    r1, _ = read_modelnet_normals(p, 3, sampling="random", rng=np.random.default_rng(0))
    r2, _ = read_modelnet_normals(p, 3, sampling="random", rng=np.random.default_rng(0))
    np.testing.assert_array_equal(r1, r2)
    assert all(any(np.array_equal(row, q) for q in pos) for row in r1)
    with pytest.raises(ValueError, match="only 4 rows"):
        read_modelnet_normals(p, 5)
    with pytest.raises(TypeError, match="rng"):
        read_modelnet_normals(p, 2, sampling="random")


@pytest.mark.parametrize(
    "text, match",
    [
        ("1,2,3,0,0,1\n1,2,3,0,0\n", r"a\.txt:2: expected 6 columns"),
        ("1,2,3,0,0,1\n\n1,2,x,0,0,1\n", r"a\.txt:3: cannot parse 'x'"),
        ("1,2,3,0,0,1\n1,2,3,0,nan,1\n", r"a\.txt:2: non-finite"),
        ("1,2,3,0,0,1\n1,2,inf,0,0,1\n", r"a\.txt:2: non-finite"),
        ("\n# only comments\n", "no data rows"),
    ],
)
def test_read_modelnet_normals_errors(tmp_path, text, match):
    p = write(tmp_path / "a.txt", text)
    with pytest.raises(ValueError, match=match):
        read_modelnet_normals(p)


def test_missing_files(tmp_path):
    for fn in (read_modelnet_normals, read_xyz, read_normals, read_pidx, read_obj, read_off, read_ply, read_mesh, read_shape_list):
        with pytest.raises(FileNotFoundError, match="no such file"):
            fn(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        modelnet40_split(tmp_path / "nothing", "train")


@pytest.fixture
def modelnet_root(tmp_path):
    root = tmp_path / "modelnet40_normal_resampled"
    write(root / "modelnet40_shape_names.txt", "airplane\nnight_stand\n")
    write(root / "modelnet40_train.txt", "airplane_0001\nnight_stand_0002\n")
    write(root / "modelnet40_test.txt", "night_stand_0100\n")
    g = np.random.default_rng(0)
    for cls, name in (("airplane", "airplane_0001"), ("night_stand", "night_stand_0002"), ("night_stand", "night_stand_0100")):
        rows = np.concatenate([g.normal(size=(20, 3)) + 5.0, np.tile([0.0, 0.0, 1.0], (20, 1))], 1)
        write(root / cls / f"{name}.txt", "\n".join(",".join(f"{x:.6f}" for x in r) for r in rows) + "\n")
    return root


def test_modelnet40_layout(modelnet_root):
    assert modelnet40_shape_names(modelnet_root) == ["airplane", "night_stand"]
    train = modelnet40_split(modelnet_root, "train")
    assert [(n, lbl) for n, lbl, _ in train] == [("airplane_0001", 0), ("night_stand_0002", 1)]
    assert train[1][2] == modelnet_root / "night_stand" / "night_stand_0002.txt"
    ds = ModelNet40Normals(modelnet_root, "train", n_points=8, center="mean")
    assert len(ds) == 2
    item = ds[1]
    assert item["pos"].shape == (8, 3) and item["normal"].shape == (8, 3) and int(item["label"]) == 1
    assert item["pos"].norm(dim=-1).max().item() == pytest.approx(1.0, abs=1e-6)
    rnd = ModelNet40Normals(modelnet_root, "train", n_points=8, sampling="random", seed=3)
    a = rnd[0]["pos"]
    assert torch.equal(rnd[0]["pos"], a)
    rnd.set_epoch(1)
    assert not torch.equal(rnd[0]["pos"], a)
    test = ModelNet40Normals(modelnet_root, "test", n_points=8, sampling="random")
    b = test[0]["pos"]
    test.set_epoch(2)
    assert torch.equal(test[0]["pos"], b)  # test split: fixed subsets


def test_modelnet40_bad_list(modelnet_root):
    write(modelnet_root / "modelnet40_test.txt", "chair_0001\n")
    with pytest.raises(ValueError, match="known class"):
        modelnet40_split(modelnet_root, "test")
    with pytest.raises(ValueError, match="split"):
        modelnet40_split(modelnet_root, "val")  # type: ignore[arg-type]
    write(modelnet_root / "modelnet40_test.txt", "airplane_0001 extra\n")
    with pytest.raises(ValueError, match=":1: expected one name"):
        modelnet40_split(modelnet_root, "test")


def test_normalize_points():
    pos = np.array([[0.0, 0, 0], [2, 0, 0], [0, 4, 0]], dtype=np.float32)
    out = normalize_points(pos, "bbox")
    assert out.dtype == np.float32
    np.testing.assert_allclose(0.5 * (out.min(0) + out.max(0)), 0, atol=1e-7)
    assert np.linalg.norm(out, axis=1).max() == pytest.approx(1.0)
    np.testing.assert_allclose(normalize_points(pos, "mean").mean(0), 0, atol=1e-7)
    assert normalize_points(pos, "none") is pos
    with pytest.raises(ValueError, match="coincide"):
        normalize_points(np.ones((3, 3)), "mean")


# ------------------------------------------------------------------------------------------
# PCPNet
# ------------------------------------------------------------------------------------------


def test_pcpnet(tmp_path):
    write(tmp_path / "cube.xyz", "0 0 0\n1 0 0\n\n0 1 0\n0\t0  1\n")
    write(tmp_path / "cube.normals", "0 0 1\n0 0 1\n0 0 1\n1 0 0\n")
    write(tmp_path / "cube.pidx", "0\n3\n")
    write(tmp_path / "plane.xyz", "0 0 0\n1 0 0\n0 1 0\n")
    write(tmp_path / "plane.normals", "0 0 1\n0 0 1\n0 0 1\n")
    write(tmp_path / "testset_all.txt", "cube\n\nplane\n")
    s = load_pcpnet_shape(tmp_path, "cube")
    assert s.pos.shape == (4, 3) and s.normal.shape == (4, 3) and s.pos.dtype == np.float32
    np.testing.assert_array_equal(s.pos[3], [0, 0, 1])
    np.testing.assert_array_equal(s.pidx, [0, 3])
    assert load_pcpnet_shape(tmp_path, "plane").pidx is None
    ds = PCPNetShapes(tmp_path, "testset_all.txt")
    assert len(ds) == 2 and ds[0]["name"] == "cube"
    assert ds[1]["pidx"].tolist() == [0, 1, 2] and ds[1]["pos"].shape == (3, 3)
    assert read_xyz(tmp_path / "cube.xyz").dtype == np.float64


def test_pcpnet_errors(tmp_path):
    write(tmp_path / "a.xyz", "0 0 0\n1 0 0\n")
    write(tmp_path / "a.normals", "0 0 1\n")
    with pytest.raises(ValueError, match="1 normals for 2 points"):
        load_pcpnet_shape(tmp_path, "a")
    write(tmp_path / "a.normals", "0 0 1\n0 0 1\n")
    write(tmp_path / "a.pidx", "0\n2\n")
    with pytest.raises(ValueError, match=r"a\.pidx:2: point index 2 out of range"):
        load_pcpnet_shape(tmp_path, "a")
    write(tmp_path / "a.pidx", "0 1\n")
    with pytest.raises(ValueError, match=r":1: expected 1 column"):
        read_pidx(tmp_path / "a.pidx")
    write(tmp_path / "a.pidx", "1.5\n")
    with pytest.raises(ValueError, match="integer"):
        read_pidx(tmp_path / "a.pidx")
    write(tmp_path / "b.xyz", "0 0 0\n")
    with pytest.raises(FileNotFoundError):
        load_pcpnet_shape(tmp_path, "b")
    assert load_pcpnet_shape(tmp_path, "b", require_normals=False).normal is None
    write(tmp_path / "c.xyz", "0 0 0\n1 0\n")
    with pytest.raises(ValueError, match=r"c\.xyz:2: expected 3 columns"):
        read_xyz(tmp_path / "c.xyz")


# ------------------------------------------------------------------------------------------
# OBJ
# ------------------------------------------------------------------------------------------

OBJ_TEXT = """\
# unit square + a triangle, with the usual noise
mtllib foo.mtl
o thing
v 0 0 0
v 1 0 0 1.0
v 1 1 0 0.5 0.5 0.5
v 0 1 0

vt 0 0
vn 0 0 1
g group1
usemtl red
s off
f 1/1/1 2/1/1 3/1/1 4/1/1
v 0 0 1
f -4//1 -3//1 -1//1
l 1 2
f 2 3 \\
  5
"""


def test_read_obj(tmp_path):
    m = read_obj(write(tmp_path / "m.obj", OBJ_TEXT))
    assert m.vertices.dtype == np.float64 and m.faces.dtype == np.int64
    np.testing.assert_array_equal(m.vertices[4], [0, 0, 1])
    np.testing.assert_array_equal(m.faces, [[0, 1, 2], [0, 2, 3], [1, 2, 4], [1, 2, 4]])


@pytest.mark.parametrize(
    "text, match",
    [
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", r":4: OBJ indices are 1-based"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", r":4: face index out of range"),
        ("v 0 0 0\nv 1 0 0\nf -3 1 2\n", r":3: negative index"),
        ("v 0 0\n", r":1: vertex needs 3 coordinates"),
        ("v 0 0 a\n", r":1: cannot parse 'a'"),
        ("v 0 0 nan\n", r":1: non-finite"),
        ("v 0 0 0\nf 1 1\n", r":2: face needs at least 3"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 b 3\n", r":4: cannot parse 'b'"),
        ("v 0 0 0\n", "no faces"),
    ],
)
def test_read_obj_errors(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        read_obj(write(tmp_path / "bad.obj", text))


# ------------------------------------------------------------------------------------------
# OFF
# ------------------------------------------------------------------------------------------

QUAD_PYRAMID = np.array([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0.5, 0.5, 1]])


def _pyramid_body() -> str:
    v = "\n".join(" ".join(f"{x:g}" for x in r) for r in QUAD_PYRAMID)
    return v + "\n4 0 3 2 1\n3 0 1 4\n3 1 2 4 255 0 0\n3 2 3 4\n3 3 0 4\n"


@pytest.mark.parametrize(
    "header",
    ["OFF\n5 5 8\n", "OFF 5 5 8\n", "OFF5 5 8\n", "# comment\nOFF\n# another\n5 5 8\n", "COFF\n5 5 0\n", "5 5 8\n"],
)
def test_read_off_headers(tmp_path, header):
    m = read_off(write(tmp_path / "p.off", header + _pyramid_body()))
    np.testing.assert_array_equal(m.vertices, QUAD_PYRAMID)
    assert m.faces.shape == (6, 3)
    np.testing.assert_array_equal(m.faces[:2], [[0, 3, 2], [0, 2, 1]])
    assert tri_area_total(m) == pytest.approx(1 + 4 * 0.5 * math.sqrt(1.25))


def test_read_off_extra_columns_and_trailing(tmp_path):
    body = "OFF\n3 1 0\n0 0 0 255 0 0 255\n1 0 0 1 1 1 1\n0 1 0 0 0 0 0\n3 0 1 2\n\n# trailing\n"
    m = read_off(write(tmp_path / "c.off", body))
    np.testing.assert_array_equal(m.vertices, [[0, 0, 0], [1, 0, 0], [0, 1, 0]])


@pytest.mark.parametrize(
    "text, match",
    [
        ("OFF\n3 1 0\n0 0 0\n1 0 0\n", r":4: unexpected end of file: 2 of 3 vertices"),
        ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n", r":5: unexpected end of file: 0 of 1 faces"),
        ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 3\n", r":6: face index out of range"),
        ("OFF\n3 1 0\n0 0 0\n1 0 x\n0 1 0\n3 0 1 2\n", r":4: cannot parse 'x'"),
        ("OFF\n3 1 0\n0 0 0\n1 0 inf\n0 1 0\n3 0 1 2\n", r":4: non-finite"),
        ("OFF\n3 1 0\n0 0 0\n1 0\n0 1 0\n3 0 1 2\n", r":4: vertex needs 3 coordinates"),
        ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1\n", r":6: face needs"),
        ("OFF\n3\n", r":2: expected 'n_vertices n_faces"),
        ("PLY\n3 1 0\n", r":1: unsupported OFF header"),
        ("", "empty OFF file"),
    ],
)
def test_read_off_errors(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        read_off(write(tmp_path / "bad.off", text))


# ------------------------------------------------------------------------------------------
# PLY
# ------------------------------------------------------------------------------------------

PLY_ASCII = """\
ply
format ascii 1.0
comment made by hand
element vertex 5
property float x
property float y
property float z
property float nx
property float ny
property float nz
element face 2
property list uchar int vertex_index
element edge 1
property int vertex1
property int vertex2
end_header
0 0 0 0 0 1
1 0 0 0 0 1
1 1 0 0 0 1

0 1 0 0 0 1
0.5 0.5 1 0 0 1
4 0 1 2 3
3 0 1 4
0 1
"""


def test_read_ply_ascii(tmp_path):
    m = read_ply(write(tmp_path / "m.ply", PLY_ASCII))
    np.testing.assert_array_equal(m.vertices, QUAD_PYRAMID)
    np.testing.assert_array_equal(m.faces, [[0, 1, 2], [0, 2, 3], [0, 1, 4]])


@pytest.mark.parametrize(
    "old, new, match",
    [
        ("1 0 0 0 0 1\n", "1 0 0 0 1\n", r":18: element 'vertex' expects 6 values, got 5"),
        ("1 0 0 0 0 1\n", "1 0 x 0 0 1\n", r":18: cannot parse 'x'"),
        ("1 0 0 0 0 1\n", "1 0 nan 0 0 1\n", r":18: non-finite"),
        ("3 0 1 4\n", "3 0 1\n", r":24: list 'vertex_index' declares 3 values, 2 present"),
        ("3 0 1 4\n", "3 0 1 7\n", "face index out of range"),
        ("3 0 1 4\n0 1\n", "3 0 1 4\n", "unexpected end of file in element 'edge'"),
        ("format ascii 1.0", "format foo 1.0", r":2: unknown PLY format"),
        ("property float z", "property float zz", "no property 'z'"),
    ],
)
def test_read_ply_errors(tmp_path, old, new, match):
    assert old in PLY_ASCII
    with pytest.raises(ValueError, match=match):
        read_ply(write(tmp_path / "bad.ply", PLY_ASCII.replace(old, new, 1)))


def _binary_ply(endian: str, faces: list[list[int]]) -> bytes:
    fmt = "binary_little_endian" if endian == "<" else "binary_big_endian"
    header = (
        f"ply\nformat {fmt} 1.0\nelement vertex {len(QUAD_PYRAMID)}\nproperty float x\nproperty float y\n"
        f"property float z\nproperty uchar red\nelement face {len(faces)}\n"
        "property list uchar int vertex_indices\nend_header\n"
    ).encode()
    body = b"".join(struct.pack(endian + "fffB", *v, 7) for v in QUAD_PYRAMID)
    body += b"".join(struct.pack(endian + "B" + "i" * len(f), len(f), *f) for f in faces)
    return header + body


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("faces", [[[0, 1, 4], [1, 2, 4]], [[0, 3, 2, 1], [0, 1, 4]]])
def test_read_ply_binary(tmp_path, endian, faces):
    p = tmp_path / "b.ply"
    p.write_bytes(_binary_ply(endian, faces))
    m = read_ply(p)
    np.testing.assert_allclose(m.vertices, QUAD_PYRAMID)
    expected = [t for f in faces for t in ([f[0], f[i], f[i + 1]] for i in range(1, len(f) - 1))]
    np.testing.assert_array_equal(m.faces, expected)
    p.write_bytes(_binary_ply(endian, faces)[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_ply(p)


def test_read_mesh_dispatch_and_trimesh_crosscheck(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    box.apply_translation([0.5, -1, 2])
    area, volume = box.area, box.volume
    paths = {}
    for ext in ("obj", "off", "ply"):
        paths[ext] = tmp_path / f"box.{ext.upper() if ext == 'off' else ext}"
        box.export(paths[ext])
    ascii_ply = tmp_path / "box_ascii.ply"
    ascii_ply.write_bytes(trimesh.exchange.ply.export_ply(box, encoding="ascii"))
    paths["ascii_ply"] = ascii_ply
    for p in paths.values():
        m = read_mesh(p)
        tm = trimesh.Trimesh(m.vertices, m.faces, process=True)
        assert tm.is_watertight
        assert tm.area == pytest.approx(area, rel=1e-6) and tm.volume == pytest.approx(volume, rel=1e-6)
    with pytest.raises(ValueError, match="unsupported mesh format"):
        read_mesh(write(tmp_path / "x.gltf", "{}"))


# ------------------------------------------------------------------------------------------
# Sampling from files
# ------------------------------------------------------------------------------------------


def test_sample_mesh_file_normals_and_area(tmp_path):
    # one large (area 2) and one small (area 0.125) triangle in different planes
    text = "v 0 0 0\nv 2 0 0\nv 0 2 0\nv 5 0 0\nv 5 0.5 0\nv 5 0 0.5\nf 1 2 3\nf 4 5 6\n"
    p = write(tmp_path / "two.obj", text)
    n = 20000
    pos, nrm = sample_mesh_file(p, n, np.random.default_rng(0), center="none", dtype=np.float64)
    np.testing.assert_allclose(np.linalg.norm(nrm, axis=1), 1, atol=1e-12)
    on_small = np.isclose(np.abs(nrm[:, 0]), 1)
    on_big = np.isclose(np.abs(nrm[:, 2]), 1)
    assert (on_small | on_big).all()
    np.testing.assert_allclose(pos[on_big, 2], 0, atol=1e-12)  # perpendicular to the face
    np.testing.assert_allclose(pos[on_small, 0], 5, atol=1e-12)
    p_small = 0.125 / 2.125
    assert abs(on_small.sum() - n * p_small) < 5 * math.sqrt(n * p_small * (1 - p_small))
    a, _ = sample_mesh_file(p, 100, np.random.default_rng(4))
    b, _ = sample_mesh_file(p, 100, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and np.linalg.norm(a, axis=1).max() <= 1 + 1e-6
    with pytest.raises(ValueError, match="center"):
        sample_mesh_file(p, 10, np.random.default_rng(0), center="mean")  # type: ignore[arg-type]


def test_mesh_normals_dataset(tmp_path):
    p = tmp_path / "p.off"
    write(p, "OFF\n5 5 8\n" + _pyramid_body())
    ds = MeshNormalsDataset([p, p], n_points=64, noise=0.01, seed=1)
    item = ds[0]
    assert item["pos"].shape == (64, 3) and item["normal"].dtype == torch.float32
    assert not torch.equal(ds[1]["pos"], item["pos"])  # per-index stream
    assert torch.equal(ds[0]["pos"], item["pos"])
    ds.set_epoch(3)
    assert not torch.equal(ds[0]["pos"], item["pos"])
    fixed = MeshNormalsDataset([p], n_points=64, fixed_points=True)
    x = fixed[0]["pos"]
    fixed.set_epoch(3)
    assert torch.equal(fixed[0]["pos"], x)
    with pytest.raises(TypeError):
        MeshNormalsDataset(p)  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        ds[2]
