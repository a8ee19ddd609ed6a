"""Readers for real point-cloud / mesh formats used by normal-estimation benchmarks.

Nothing is downloaded: every function takes a path to the user's own copy.

* **ModelNet40 with normals** (``modelnet40_normal_resampled``, used by PointNet++ and Tensor
  Frames): one text file per shape with rows ``x,y,z,nx,ny,nz`` (:func:`read_modelnet_normals`),
  class folders and the split lists ``modelnet40_train.txt`` / ``modelnet40_test.txt`` /
  ``modelnet40_shape_names.txt`` (:func:`modelnet40_split`, :class:`ModelNet40Normals`).
* **PCPNet**: ``name.xyz`` (rows ``x y z``), ``name.normals`` (rows ``nx ny nz``), optional
  ``name.pidx`` (indices of the evaluation points) and split lists such as ``testset_all.txt``
  (:func:`load_pcpnet_shape`, :class:`PCPNetShapes`).
* **Meshes**: OBJ, OFF, STL (ASCII and binary) and PLY (ASCII, plus binary PLY) parsed with numpy
  (:func:`read_obj`, :func:`read_off`, :func:`read_stl`, :func:`read_ply`, :func:`read_mesh`), then
  sampled like the procedural set (:func:`sample_mesh_file`, :class:`MeshNormalsDataset`).
* **Point clouds** for the normal estimator (:func:`read_point_cloud`, :func:`write_point_cloud`):
  PLY vertices (ASCII or binary, optional ``nx ny nz``), text rows ``x y z`` or ``x y z nx ny nz``
  (``.xyz`` as PCPNet, ``.txt``, ``.pts``), and meshes sampled area-uniformly.

Malformed input raises ``ValueError`` with ``path:line:`` in the message (wrong column counts,
unparsable or non-finite numbers, bad indices, truncated files); a missing file raises
``FileNotFoundError``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from equiframe.datasets._text_io import (
    MeshCenter,
    PathLike,
    PointCenter,
    _check_dir,
    _check_file,
    _float_rows,
    _int,
    _lines,
)
from equiframe.datasets.mesh_readers import (
    _parse_ply_header,
    _read_ply_ascii,
    _read_ply_binary,
    read_mesh,
    read_obj,
    read_off,
    read_ply,
    read_stl,
)
from equiframe.datasets.shapes import Mesh, normalize_mesh, sample_surface

__all__ = [
    "MeshNormalsDataset",
    "ModelNet40Normals",
    "PCPNetShape",
    "PCPNetShapes",
    "load_pcpnet_shape",
    "modelnet40_shape_names",
    "modelnet40_split",
    "normalize_points",
    "read_mesh",
    "read_modelnet_normals",
    "read_normals",
    "read_obj",
    "read_off",
    "read_pidx",
    "read_ply",
    "read_point_cloud",
    "read_stl",
    "write_point_cloud",
    "PointCloud",
    "POINT_CLOUD_SUFFIXES",
    "read_shape_list",
    "read_xyz",
    "sample_mesh_file",
]

# --------------------------------------------------------------------------------------------
# Point-cloud formats
# --------------------------------------------------------------------------------------------


def read_modelnet_normals(
    path: PathLike,
    n_points: int | None = None,
    *,
    sampling: Literal["first", "random"] = "first",
    rng: np.random.Generator | None = None,
    dtype: np.dtype | type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a ModelNet40 ``normal_resampled`` text file with rows ``x,y,z,nx,ny,nz``.

    Separators may be commas and/or whitespace; blank lines and ``#`` comments are skipped.

    Args:
        path: The ``.txt`` file.
        n_points: Keep ``n_points`` rows (``None``: all).
        sampling: ``"first"``: the first ``n_points`` rows (the files are already
            farthest-point-ordered resamplings); ``"random"``: a uniformly random subset without
            replacement drawn with ``rng``.
        rng: Needed for ``sampling="random"``.
        dtype: Floating dtype of the outputs.

    Returns:
        ``(pos, normal)``.

    Shapes:
        pos, normal: ``[N, 3]``.
    """
    p = _check_file(path)
    data = _float_rows(p, 6, "x,y,z,nx,ny,nz", comma=True)
    data = _subset(p, data, n_points, sampling, rng)
    return data[:, :3].astype(dtype), data[:, 3:].astype(dtype)


def _subset(
    path: Path, data: np.ndarray, n_points: int | None, sampling: str, rng: np.random.Generator | None
) -> np.ndarray:
    if sampling not in ("first", "random"):
        raise ValueError(f"sampling must be 'first' or 'random', got {sampling!r}")
    if n_points is None:
        return data
    if not isinstance(n_points, (int, np.integer)) or isinstance(n_points, bool) or n_points < 1:
        raise ValueError(f"n_points must be a positive int or None, got {n_points!r}")
    if n_points > data.shape[0]:
        raise ValueError(f"{path}: n_points={n_points} but the file has only {data.shape[0]} rows")
    if sampling == "first":
        return data[:n_points]
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator when sampling='random'")
    return data[np.sort(rng.choice(data.shape[0], size=n_points, replace=False))]


def read_shape_list(path: PathLike) -> list[str]:
    """Names listed one per line (blank lines and ``#`` comments skipped, whitespace stripped).

    Used for ``modelnet40_train.txt``, ``modelnet40_shape_names.txt`` and PCPNet's
    ``testset_all.txt`` etc. A line with more than one token is an error.
    """
    p = _check_file(path)
    names = []
    for lineno, line in _lines(p):
        if len(line.split()) != 1:
            raise ValueError(f"{p}:{lineno}: expected one name per line, got {line[:80]!r}")
        names.append(line)
    if not names:
        raise ValueError(f"path: {p} lists no names (an empty list file)")
    return names


def modelnet40_shape_names(root: PathLike, variant: Literal["modelnet40", "modelnet10"] = "modelnet40") -> list[str]:
    """Class names from ``<root>/<variant>_shape_names.txt`` (label = position in the list)."""
    if variant not in ("modelnet40", "modelnet10"):
        raise ValueError(f"variant: expected 'modelnet40' or 'modelnet10', got {variant!r}")
    r = _check_dir(root)
    return read_shape_list(r / f"{variant}_shape_names.txt")


def modelnet40_split(
    root: PathLike,
    split: Literal["train", "test"],
    variant: Literal["modelnet40", "modelnet10"] = "modelnet40",
) -> list[tuple[str, int, Path]]:
    """The shapes of a split of the ``modelnet40_normal_resampled`` layout.

    ``<root>/<variant>_<split>.txt`` lists shape names like ``night_stand_0001``; the class is the
    name without its trailing ``_NNNN`` and the file is ``<root>/<class>/<name>.txt``.

    Returns:
        ``[(name, label, path), ...]`` in list order, ``label`` indexing
        :func:`modelnet40_shape_names`. Files are not opened (missing ones fail on read).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if variant not in ("modelnet40", "modelnet10"):
        raise ValueError(f"variant must be 'modelnet40' or 'modelnet10', got {variant!r}")
    r = _check_dir(root)
    classes = modelnet40_shape_names(r, variant)
    label_of = {c: i for i, c in enumerate(classes)}
    list_path = r / f"{variant}_{split}.txt"
    out = []
    for lineno, name in enumerate(read_shape_list(list_path), start=1):
        cls, sep, num = name.rpartition("_")
        if not sep or not num.isdigit() or cls not in label_of:
            raise ValueError(f"{list_path}: entry {lineno} ({name!r}) is not '<class>_<number>' with a known class")
        out.append((name, label_of[cls], r / cls / f"{name}.txt"))
    return out


def normalize_points(pos: np.ndarray, center: PointCenter = "mean") -> np.ndarray:
    """Centre a point cloud and scale it into the unit ball.

    ``x' = (x - c) / max_i ||x_i - c||`` with ``c`` the mean (``"mean"``, as in the PointNet++
    ModelNet pipeline) or the bounding-box centre (``"bbox"``); ``"none"`` returns the input.

    Shapes:
        pos: ``[N, d]``; output: ``[N, d]`` (same dtype).
    """
    if center == "none":
        return pos
    if center not in ("mean", "bbox"):
        raise ValueError(f"center must be 'none', 'mean' or 'bbox', got {center!r}")
    pos = np.asarray(pos)
    if pos.ndim != 2 or pos.shape[0] == 0:
        raise ValueError(f"pos must have shape [N, d] with N > 0, got {tuple(pos.shape)}")
    x = pos.astype(np.float64)
    c = x.mean(axis=0) if center == "mean" else 0.5 * (x.min(axis=0) + x.max(axis=0))
    s = np.linalg.norm(x - c, axis=1).max()
    if not s > 0:
        raise ValueError("normalize_points: all points coincide")
    return ((x - c) / s).astype(pos.dtype)


def _item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index]))


class _EpochMixin:
    epoch: int

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random subsets / samples are drawn."""
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = epoch


def _check_seed(seed: int) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return seed


class ModelNet40Normals(_EpochMixin, torch.utils.data.Dataset):
    """ModelNet40 (or ModelNet10) point clouds with normals from ``modelnet40_normal_resampled``.

    Item ``i``: ``n_points`` rows of the shape's file (the first ones, or a random subset drawn
    from ``SeedSequence([seed, epoch, i])`` where ``epoch`` is set by :meth:`set_epoch` unless
    ``fixed_points``), positions optionally normalised with :func:`normalize_points`.

    Args:
        root: The ``modelnet40_normal_resampled`` directory.
        split: ``"train"`` or ``"test"``.
        n_points: Points per item (``None``: all 10 000).
        sampling: ``"first"`` or ``"random"``.
        seed: Seed of the random subsets.
        fixed_points: Ignore the epoch (default: ``True`` for test, ``False`` for train).
        center: Position normalisation (``"none"`` keeps the file's coordinates).
        variant: ``"modelnet40"`` or ``"modelnet10"`` list files.

    Shapes:
        pos, normal: ``[n_points, 3]`` float32; label, index: ``[]`` int64.
    """

    def __init__(
        self,
        root: PathLike,
        split: Literal["train", "test"],
        n_points: int | None = 1024,
        *,
        sampling: Literal["first", "random"] = "first",
        seed: int = 0,
        fixed_points: bool | None = None,
        center: PointCenter = "none",
        variant: Literal["modelnet40", "modelnet10"] = "modelnet40",
    ) -> None:
        if sampling not in ("first", "random"):
            raise ValueError(f"sampling must be 'first' or 'random', got {sampling!r}")
        if center not in ("none", "mean", "bbox"):
            raise ValueError(f"center must be 'none', 'mean' or 'bbox', got {center!r}")
        self.root = Path(root)
        self.items = modelnet40_split(root, split, variant)
        self.classes = modelnet40_shape_names(root, variant)
        self.n_points = n_points
        self.sampling = sampling
        self.seed = _check_seed(seed)
        self.fixed_points = (split == "test") if fixed_points is None else bool(fixed_points)
        self.center: PointCenter = center
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} shapes")
        index = index % len(self)
        _, label, path = self.items[index]
        rng = _item_rng(self.seed, 0 if self.fixed_points else self.epoch, index)
        pos, normal = read_modelnet_normals(path, self.n_points, sampling=self.sampling, rng=rng, dtype=np.float64)
        pos = normalize_points(pos, self.center)
        return {
            "pos": torch.from_numpy(pos.astype(np.float32)),
            "normal": torch.from_numpy(normal.astype(np.float32)),
            "label": torch.tensor(label, dtype=torch.long),
            "index": torch.tensor(index, dtype=torch.long),
        }


def read_xyz(path: PathLike, dtype: np.dtype | type = np.float64) -> np.ndarray:
    """PCPNet ``.xyz``: whitespace-separated rows ``x y z``.

    Shapes:
        output: ``[N, 3]``.
    """
    return _float_rows(_check_file(path), 3, "x y z").astype(dtype)


def read_normals(path: PathLike, dtype: np.dtype | type = np.float64) -> np.ndarray:
    """PCPNet ``.normals``: whitespace-separated rows ``nx ny nz``.

    Shapes:
        output: ``[N, 3]``.
    """
    return _float_rows(_check_file(path), 3, "nx ny nz").astype(dtype)


def read_pidx(path: PathLike, n_points: int | None = None) -> np.ndarray:
    """PCPNet ``.pidx``: one 0-based point index per line.

    Args:
        path: The file.
        n_points: If given, every index must lie in ``[0, n_points)``.

    Shapes:
        output: ``[M]`` int64.
    """
    p = _check_file(path)
    out = []
    for lineno, line in _lines(p):
        toks = line.split()
        if len(toks) != 1:
            raise ValueError(f"{p}:{lineno}: expected 1 column (point index), got {len(toks)}")
        i = _int(toks[0], p, lineno, "point index")
        if i < 0 or (n_points is not None and i >= n_points):
            bound = f"[0, {n_points})" if n_points is not None else ">= 0"
            raise ValueError(f"{p}:{lineno}: point index {i} out of range {bound}")
        out.append(i)
    return np.asarray(out, dtype=np.int64)


class PCPNetShape(NamedTuple):
    """One PCPNet shape.

    Shapes:
        pos: ``[N, 3]``; normal: ``[N, 3]`` or ``None``; pidx: ``[M]`` int64 or ``None``.
    """

    name: str
    pos: np.ndarray
    normal: np.ndarray | None
    pidx: np.ndarray | None


def load_pcpnet_shape(
    root: PathLike, name: str, *, require_normals: bool = True, dtype: np.dtype | type = np.float32
) -> PCPNetShape:
    """Load ``<root>/<name>.xyz`` with ``.normals`` and, if present, ``.pidx``.

    Raises:
        FileNotFoundError: the ``.xyz`` file (or the ``.normals`` file when ``require_normals``)
            is missing.
        ValueError: malformed files, or normals / indices that do not match the points.
    """
    r = _check_dir(root)
    pos = read_xyz(r / f"{name}.xyz", dtype)
    normals_path = r / f"{name}.normals"
    normal = None
    if normals_path.exists() or require_normals:
        normal = read_normals(normals_path, dtype)
        if normal.shape[0] != pos.shape[0]:
            raise ValueError(f"{normals_path}: {normal.shape[0]} normals for {pos.shape[0]} points in {name}.xyz")
    pidx_path = r / f"{name}.pidx"
    pidx = read_pidx(pidx_path, pos.shape[0]) if pidx_path.exists() else None
    return PCPNetShape(name, pos, normal, pidx)


class PCPNetShapes(torch.utils.data.Dataset):
    """The PCPNet shapes named in a list file (e.g. ``testset_all.txt``), loaded lazily.

    Item: ``{"pos", "normal", "pidx"}`` as tensors (``pidx`` = all indices when there is no
    ``.pidx`` file) and ``"name"``.

    Shapes:
        pos, normal: ``[N, 3]`` float32; pidx: ``[M]`` int64.
    """

    def __init__(self, root: PathLike, list_file: str = "testset_all.txt") -> None:
        self.root = _check_dir(root)
        self.names = read_shape_list(self.root / list_file)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        shape = load_pcpnet_shape(self.root, self.names[index])
        pidx = shape.pidx if shape.pidx is not None else np.arange(shape.pos.shape[0], dtype=np.int64)
        normal = shape.normal if shape.normal is not None else np.zeros_like(shape.pos)  # never: required
        return {
            "name": shape.name,
            "pos": torch.from_numpy(shape.pos),
            "normal": torch.from_numpy(normal),
            "pidx": torch.from_numpy(pidx),
        }



def sample_mesh_file(
    path: PathLike | Mesh,
    n_points: int,
    rng: np.random.Generator,
    *,
    center: MeshCenter = "bbox",
    noise: float = 0.0,
    dtype: np.dtype | type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a mesh (or take one) and sample it like the procedural set.

    The mesh is normalised with :func:`equiframe.datasets.shapes.normalize_mesh` (``center``:
    ``"bbox"`` as the procedural set, ``"area"``, or ``"none"`` to keep the coordinates), then
    :func:`equiframe.datasets.shapes.sample_surface` draws area-uniform points with the unit
    normals of their faces and optional position noise ``noise * bbox_diagonal``.

    Shapes:
        pos, normal: ``[n_points, 3]``.
    """
    mesh = path if isinstance(path, Mesh) else read_mesh(path)
    vertices, faces = mesh
    if center != "none":
        if center not in ("bbox", "area"):
            raise ValueError(f"center must be 'none', 'bbox' or 'area', got {center!r}")
        vertices, _, _ = normalize_mesh(vertices, faces, center=center)
    pos, normal = sample_surface(vertices, faces, n_points, rng, noise=noise, dtype=dtype)
    return pos, normal


class MeshNormalsDataset(_EpochMixin, torch.utils.data.Dataset):
    """Points + face normals sampled from a list of user mesh files (e.g. ABC ``.obj`` files).

    Item ``i`` samples mesh ``i`` with :func:`sample_mesh_file` using the stream
    ``SeedSequence([seed, epoch, i])`` (``epoch`` = 0 when ``fixed_points``, else set by
    :meth:`set_epoch`), giving the same item format as
    :class:`equiframe.datasets.shapes.NormalsDataset`.

    Args:
        paths: Mesh files (``.obj`` / ``.off`` / ``.ply``).
        n_points: Points per item.
        noise: Position noise as a fraction of the bounding-box diagonal.
        seed: Sampling seed.
        fixed_points: Same points every epoch.
        center: Mesh normalisation (see :func:`sample_mesh_file`).
        cache_meshes: Keep parsed meshes in memory (per process).

    Shapes:
        pos, normal: ``[n_points, 3]`` float32; index: ``[]`` int64.
    """

    def __init__(
        self,
        paths: Sequence[PathLike],
        n_points: int = 512,
        *,
        noise: float = 0.0,
        seed: int = 0,
        fixed_points: bool = False,
        center: MeshCenter = "bbox",
        cache_meshes: bool = True,
    ) -> None:
        if isinstance(paths, (str, os.PathLike)):
            raise TypeError("paths must be a sequence of paths, not a single path")
        self.paths = [Path(x) for x in paths]
        if not self.paths:
            raise ValueError("paths must not be empty")
        if not isinstance(n_points, int) or n_points < 1:
            raise ValueError(f"n_points must be a positive int, got {n_points!r}")
        if not (math.isfinite(noise) and noise >= 0):
            raise ValueError(f"noise must be a finite float >= 0, got {noise!r}")
        if center not in ("none", "bbox", "area"):
            raise ValueError(f"center must be 'none', 'bbox' or 'area', got {center!r}")
        self.n_points = n_points
        self.noise = float(noise)
        self.seed = _check_seed(seed)
        self.fixed_points = bool(fixed_points)
        self.center: MeshCenter = center
        self.cache_meshes = cache_meshes
        self.epoch = 0
        self._meshes: dict[int, Mesh] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} meshes")
        index = index % len(self)
        mesh = self._meshes.get(index)
        if mesh is None:
            mesh = read_mesh(self.paths[index])
            if self.center != "none":
                mesh = Mesh(normalize_mesh(mesh.vertices, mesh.faces, center=self.center)[0], mesh.faces)
            if self.cache_meshes:
                self._meshes[index] = mesh
        rng = _item_rng(self.seed, 0 if self.fixed_points else self.epoch, index)
        pos, normal = sample_surface(mesh.vertices, mesh.faces, self.n_points, rng, noise=self.noise)
        return {"pos": torch.from_numpy(pos), "normal": torch.from_numpy(normal), "index": torch.tensor(index)}


# --------------------------------------------------------------------------------------------
# Point clouds (the normal estimator's input and output)
# --------------------------------------------------------------------------------------------

#: suffixes :func:`read_point_cloud` reads (case-insensitive)
POINT_CLOUD_SUFFIXES: tuple[str, ...] = (".ply", ".xyz", ".txt", ".pts", ".off", ".obj", ".stl")
_TEXT_SUFFIXES = (".xyz", ".txt", ".pts")


class PointCloud(NamedTuple):
    """Points and, when the file has them, normals.

    Shapes:
        pos: ``[N, 3]`` float64; normal: ``[N, 3]`` float64 or ``None``.
    """

    pos: np.ndarray
    normal: np.ndarray | None


def read_point_cloud(path: PathLike, *, n_samples: int = 100_000, rng: np.random.Generator | None = None,
                     sample_ply_faces: bool = False) -> PointCloud:
    """Read a point cloud for normal estimation.

    * ``.ply``: the ``vertex`` element's ``x y z`` (and ``nx ny nz`` if present), ASCII or binary; with
      ``sample_ply_faces`` a PLY mesh is sampled like the meshes below instead.
    * ``.xyz`` (PCPNet), ``.txt``, ``.pts``: rows of 3 (``x y z``) or 6 (``x y z nx ny nz``) numbers,
      whitespace or comma separated, ``#`` comments.
    * ``.off``, ``.obj``, ``.stl`` meshes: ``n_samples`` area-uniform points with their face normals
      (:func:`~equiframe.datasets.shapes.sample_surface`, coordinates unchanged).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown suffix, empty file, wrong column count, unparsable or non-finite values.
    """
    p = _check_file(path)
    suffix = p.suffix.lower()
    if suffix not in POINT_CLOUD_SUFFIXES:
        raise ValueError(f"{p}: unknown point-cloud format {suffix!r}; expected one of {list(POINT_CLOUD_SUFFIXES)}")
    if p.stat().st_size == 0:
        raise ValueError(f"{p}: empty file")
    if suffix in _TEXT_SUFFIXES:
        first = next(_lines(p), None)
        if first is None:
            raise ValueError(f"{p}: no data rows (x y z)")
        n_cols = len(first[1].replace(",", " ").split())
        if n_cols not in (3, 6):
            raise ValueError(f"{p}:{first[0]}: expected 3 columns (x y z) or 6 (x y z nx ny nz), got {n_cols}")
        data = _float_rows(p, n_cols, "x y z" if n_cols == 3 else "x y z nx ny nz", comma=True)
        return PointCloud(data[:, :3], data[:, 3:] if n_cols == 6 else None)
    if suffix == ".ply" and not sample_ply_faces:
        data = p.read_bytes()
        fmt, elements, body_start, header_lines = _parse_ply_header(p, data)
        vertex = [el for el in elements if el.name == "vertex"]
        if not vertex:
            raise ValueError(f"{p}: PLY file has no 'vertex' element")
        if fmt == "ascii":
            els = _read_ply_ascii(p, data[body_start:], elements, header_lines)
        else:
            els = _read_ply_binary(p, data[body_start:], elements, "<" if fmt.endswith("little_endian") else ">")
        vert = els["vertex"]
        for c in ("x", "y", "z"):
            if c not in vert:
                raise ValueError(f"{p}: PLY vertex element has no property {c!r}")
        pos = np.stack([np.asarray(vert[c], dtype=np.float64) for c in ("x", "y", "z")], axis=1)
        if pos.shape[0] == 0:
            raise ValueError(f"{p}: PLY file has no vertices")
        if not np.isfinite(pos).all():
            raise ValueError(f"{p}: PLY vertex {int(np.argmax(~np.isfinite(pos).all(axis=1)))} is non-finite")
        normal = None
        if all(c in vert for c in ("nx", "ny", "nz")):
            normal = np.stack([np.asarray(vert[c], dtype=np.float64) for c in ("nx", "ny", "nz")], axis=1)
        return PointCloud(pos, normal)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples: expected a positive int, got {n_samples!r}")
    mesh = read_mesh(p)
    if len(mesh.faces) == 0:
        raise ValueError(f"{p}: the mesh has no faces to sample")
    rng = np.random.default_rng(0) if rng is None else rng
    pos, normal = sample_surface(mesh.vertices, mesh.faces, n_samples, rng, dtype=np.float64)
    return PointCloud(pos, normal)


def write_point_cloud(path: PathLike, pos: np.ndarray, normal: np.ndarray | None = None, *,
                      binary: bool = True) -> Path:
    """Write points (and normals) as PLY (``binary_little_endian`` float32, or ASCII) or, for ``.xyz`` /
    ``.txt`` / ``.pts``, as text rows ``x y z [nx ny nz]``.

    Shapes:
        pos: ``[N, 3]``; normal: ``[N, 3]`` or ``None``.
    """
    p = Path(path)
    pos = np.asarray(pos, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"pos: expected shape [N, 3], got {pos.shape}")
    if normal is not None:
        normal = np.asarray(normal, dtype=np.float64)
        if normal.shape != pos.shape:
            raise ValueError(f"normal: expected shape {pos.shape}, got {normal.shape}")
    suffix = p.suffix.lower()
    cols = pos if normal is None else np.concatenate([pos, normal], axis=1)
    if suffix in _TEXT_SUFFIXES:
        np.savetxt(p, cols, fmt="%.8g")
        return p
    if suffix != ".ply":
        raise ValueError(f"{p}: can write .ply, .xyz, .txt or .pts, got {suffix!r}")
    names = ["x", "y", "z"] + ([] if normal is None else ["nx", "ny", "nz"])
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0", "comment equiframe normals",
              f"element vertex {pos.shape[0]}"] + [f"property float {n}" for n in names] + ["end_header"]
    with open(p, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        if binary:
            f.write(cols.astype("<f4").tobytes())
        else:
            np.savetxt(f, cols.astype(np.float32), fmt="%.8g")
    return p
