"""Procedural "CAD-like" shapes for point-cloud normal estimation.

The real benchmarks (ABC CAD meshes as used by Frame Averaging, ModelNet40 with normals as used
by Tensor Frames) cannot be shipped with the library, so this module builds an honest procedural
substitute with the same pipeline:

1. **Meshes.** Random solids from constructive solid geometry (union / difference / intersection
   of boxes, cylinders, cones, spheres, tori and wedges, half-space cuts and drilled holes) computed
   with the robust boolean kernel of ``manifold3d``, plus analytic sanity shapes (spheres,
   ellipsoids, superquadrics, tori). Shape ``i`` of a split depends only on ``(seed, split, i)``.
   Meshes, not points, are stored on disk, so training can draw fresh points every epoch.
2. **Normalisation.** Every mesh is centred at its axis-aligned bounding-box centre and scaled so
   that its farthest vertex has norm 1 (the whole surface then lies in the unit ball):
   ``x' = (x - c) / max_i ||x_i - c||`` with ``c = (min_i x_i + max_i x_i) / 2``. The bounding-box
   centre is used rather than the vertex mean because it does not depend on the tessellation.
3. **Sampling.** ``n_points`` points area-uniformly on the surface (faces drawn with probability
   proportional to their area, uniform barycentric coordinates); the regression target is the
   unit normal of the sampled face. Optional isotropic Gaussian noise on the positions only, with
   standard deviation ``noise * bbox_diagonal``.

The module also holds the learning-free k-NN PCA baseline (:func:`knn_pca_normals`) and the
unoriented normal metrics (:func:`normal_loss`, :func:`angular_error_deg`).

``manifold3d`` is only needed to *generate* shapes (optional dependency group ``shapes``); it is
imported lazily.
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor

from equiframe.datasets._cache import cache_entry, load_arrays_npz, load_or_build, lookup
from equiframe.datasets._cache import cache_key as _cache_key
from equiframe.datasets.csg import _manifold3d, _to_mesh, make_csg_shape  # noqa: F401  (re-exported)
from equiframe.groups import random_orthogonal
from equiframe.datasets.normal_metrics import angular_error_deg, knn_pca_normals, normal_loss
from equiframe.datasets.surfaces import (
    CenterMode,  # noqa: F401  (re-exported)
    Mesh,
    face_normals_and_areas,
    is_closed_manifold,
    normalize_mesh,
    sample_surface,
)
from .._checks import check_instance, check_int

__all__ = [
    "GENERATOR_VERSION",
    "KIND_CODES",
    "AnalyticKind",
    "Mesh",
    "NormalsDataset",
    "ShapeKind",
    "ShapesConfig",
    "SplitName",
    "angular_error_deg",
    "build_shapes",
    "face_normals_and_areas",
    "generate_shape",
    "generate_shapes",
    "is_closed_manifold",
    "knn_pca_normals",
    "make_analytic_shape",
    "make_csg_shape",
    "normal_loss",
    "normalize_mesh",
    "sample_surface",
    "shapes_cache_path",
]

ShapeKind = Literal["csg", "analytic", "sphere", "ellipsoid", "superquadric", "torus"]
"""Shape families. ``"analytic"`` draws uniformly from sphere / ellipsoid / superquadric / torus."""
AnalyticKind = Literal["sphere", "ellipsoid", "superquadric", "torus"]
SplitName = Literal["train", "test"]

#: Integer code stored per shape (``kind`` field of dataset items).
KIND_CODES: dict[str, int] = {"csg": 0, "sphere": 1, "ellipsoid": 2, "superquadric": 3, "torus": 4}
_ANALYTIC_KINDS: tuple[AnalyticKind, ...] = ("sphere", "ellipsoid", "superquadric", "torus")
_SPLIT_CODES: dict[str, int] = {"train": 0, "test": 1}
# Tags separating the random streams used for meshes and for point sampling.
_MESH_STREAM = 0
_SAMPLE_STREAM = 1
#: Bump when the generator changes in a way that changes the meshes (part of the cache key).
GENERATOR_VERSION = 1
_CACHE_NAME = "shapes"



# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapesConfig:
    """Configuration of the procedural normal-estimation data set.

    Only the *mesh* fields (``n_train``, ``n_test``, ``seed``, ``kinds``, ``weights``,
    ``resolution``, ``max_ops``, ``min_faces``, ``version``) enter the on-disk cache key;
    ``n_points`` and ``noise`` only affect sampling, so changing them reuses the cached meshes.

    Attributes:
        n_train: Number of training shapes.
        n_test: Number of test shapes.
        n_points: Points sampled per shape and item.
        seed: Master seed (non-negative). Shape ``i`` of a split is a function of
            ``(seed, split, i)`` only.
        noise: Standard deviation of the Gaussian position noise as a fraction of the
            bounding-box diagonal of the normalised mesh (the FA / PCPNet levels are
            ``0, 0.0025, 0.01``). Normals are never perturbed.
        kinds: Shape families to mix.
        weights: Mixing probabilities of ``kinds`` (normalised internally).
        resolution: Circular segments of round primitives (cylinders, cones, spheres, tori).
        max_ops: Maximal number of CSG operations applied to the base solid (at least 1).
        min_faces: Meshes with fewer faces are rejected and regenerated.
        version: Generator version (defaults to the current :data:`GENERATOR_VERSION`).
    """

    n_train: int = 8000
    n_test: int = 2000
    n_points: int = 512
    seed: int = 0
    noise: float = 0.0
    kinds: tuple[ShapeKind, ...] = ("csg", "analytic")
    weights: tuple[float, ...] = (0.8, 0.2)
    resolution: int = 48
    max_ops: int = 4
    min_faces: int = 12
    version: int = field(default=GENERATOR_VERSION)

    def __post_init__(self) -> None:
        for name in ("n_train", "n_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"ShapesConfig.{name} must be a non-negative int, got {value!r}")
        for name in ("n_points", "max_ops", "min_faces", "resolution"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ShapesConfig.{name} must be a positive int, got {value!r}")
        if self.resolution < 8:
            raise ValueError(f"ShapesConfig.resolution must be >= 8, got {self.resolution}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"ShapesConfig.seed must be a non-negative int, got {self.seed!r}")
        if not (isinstance(self.noise, (int, float)) and math.isfinite(self.noise) and self.noise >= 0):
            raise ValueError(f"ShapesConfig.noise must be a finite float >= 0, got {self.noise!r}")
        kinds = tuple(self.kinds)
        if len(kinds) == 0:
            raise ValueError("ShapesConfig.kinds must not be empty")
        for kind in kinds:
            if kind not in get_args(ShapeKind):
                raise ValueError(
                    f"ShapesConfig.kinds: unknown kind {kind!r}; expected one of {get_args(ShapeKind)}"
                )
        weights = tuple(float(w) for w in self.weights)
        if len(weights) != len(kinds):
            raise ValueError(
                f"ShapesConfig.weights must have one entry per kind ({len(kinds)}), got {len(weights)}"
            )
        if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"ShapesConfig.weights must be finite, >= 0 and not all 0, got {weights}")
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "noise", float(self.noise))

    @classmethod
    def tiny(cls, **overrides: Any) -> ShapesConfig:
        """A 64 / 16 shape configuration that builds in a few seconds (tests, demos)."""
        params: dict[str, Any] = {"n_train": 64, "n_test": 16}
        params.update(overrides)
        return cls(**params)

    def n_shapes(self, split: SplitName) -> int:
        """Number of shapes in ``split``."""
        _check_split(split)
        return self.n_train if split == "train" else self.n_test

    def mesh_params(self) -> dict[str, Any]:
        """The parameters that determine the meshes (the cache key is derived from these)."""
        params = asdict(self)
        del params["n_points"], params["noise"]
        params["kinds"] = list(self.kinds)
        params["weights"] = list(self.weights)
        return params

    def cache_key(self) -> str:
        """Key of the on-disk cache entry (see :func:`equiframe.datasets._cache.cache_key`)."""
        return _cache_key(_CACHE_NAME, self.mesh_params(), self.version)


def _check_split(split: str) -> None:
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {tuple(_SPLIT_CODES)}, got {split!r}")


def make_analytic_shape(rng: np.random.Generator, kind: AnalyticKind, resolution: int = 48) -> Mesh:
    """A random analytic shape as a closed triangle mesh.

    * ``sphere``: geodesic unit sphere.
    * ``ellipsoid``: the sphere with vertices scaled by semi-axes ``a, b, c ~ U(0.3, 1)``.
    * ``superquadric``: every vertex direction ``u`` of the sphere is moved radially onto the
      surface ``F(x) = ( |x/a|^(2/e2) + |y/b|^(2/e2) )^(e2/e1) + |z/c|^(2/e1) = 1``, i.e.
      ``x = u F(u)^(-e1/2)``, with ``e1, e2 ~ U(0.3, 1.8)`` and semi-axes ``~ U(0.4, 1)``
      (superquadrics are star-shaped, so the result is a valid closed mesh).
    * ``torus``: major radius 1, minor radius ``~ U(0.2, 0.6)``.

    The geodesic sphere uses ``2 * resolution`` segments. The mesh is not normalised.

    Shapes:
        vertices: ``[V, 3]``; faces: ``[F, 3]``.
    """
    m3d = _manifold3d()
    if kind == "torus":
        minor = float(rng.uniform(0.2, 0.6))
        ring = m3d.CrossSection.circle(minor, resolution).translate((1.0, 0.0))
        return _to_mesh(m3d.Manifold.revolve(ring, 2 * resolution))
    if kind not in ("sphere", "ellipsoid", "superquadric"):
        raise ValueError(f"kind must be one of {_ANALYTIC_KINDS}, got {kind!r}")
    vertices, faces = _to_mesh(m3d.Manifold.sphere(1.0, 2 * resolution))
    u = vertices / np.linalg.norm(vertices, axis=1, keepdims=True)
    if kind == "sphere":
        return Mesh(u, faces)
    if kind == "ellipsoid":
        return Mesh(u * rng.uniform(0.3, 1.0, size=3), faces)
    e1, e2 = rng.uniform(0.3, 1.8, size=2)
    axes = rng.uniform(0.4, 1.0, size=3)
    q = np.abs(u / axes)
    with np.errstate(divide="ignore"):
        f = (q[:, 0] ** (2 / e2) + q[:, 1] ** (2 / e2)) ** (e2 / e1) + q[:, 2] ** (2 / e1)
    return Mesh(u * f[:, None] ** (-e1 / 2), faces)


def _mesh_ok(mesh: Mesh, min_faces: int) -> bool:
    v, f = mesh
    if v.shape[0] < 4 or f.shape[0] < min_faces or not np.isfinite(v).all():
        return False
    if not is_closed_manifold(f):
        return False
    _, areas = face_normals_and_areas(v, f)
    return bool(areas.sum() > 0)


def generate_shape(config: ShapesConfig, split: SplitName, index: int, max_attempts: int = 64) -> tuple[Mesh, int]:
    """Shape ``index`` of ``split``: a deterministic function of ``(config, split, index)``.

    The random stream is ``SeedSequence([seed, 0, split_code, index])``; the family is drawn from
    ``config.kinds`` with ``config.weights``. Degenerate results (empty, non-manifold, non-finite,
    fewer than ``config.min_faces`` faces, zero area, after normalisation and conversion to
    float32) are rejected and the generator retries with the continuing stream, so the outcome
    does not depend on the worker that runs it.

    Returns:
        ``(mesh, kind_code)`` with a normalised (:func:`normalize_mesh`, bbox centre) float32 mesh
        and the :data:`KIND_CODES` code of its family.

    Shapes:
        vertices: ``[V, 3]`` float32; faces: ``[F, 3]`` int32.
    """
    _check_split(split)
    if not 0 <= index < config.n_shapes(split):
        raise IndexError(f"index {index} out of range for split {split!r} with {config.n_shapes(split)} shapes")
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, _MESH_STREAM, _SPLIT_CODES[split], index]))
    p = np.asarray(config.weights, dtype=np.float64)
    p = p / p.sum()
    for _ in range(max_attempts):
        kind = config.kinds[int(rng.choice(len(config.kinds), p=p))]
        if kind == "analytic":
            kind = _ANALYTIC_KINDS[int(rng.integers(len(_ANALYTIC_KINDS)))]
        if kind == "csg":
            mesh = make_csg_shape(rng, config.resolution, config.max_ops)
        else:
            mesh = make_analytic_shape(rng, kind, config.resolution)
        if mesh.faces.shape[0] == 0:
            continue
        v, _, _ = normalize_mesh(mesh.vertices)
        mesh = Mesh(v.astype(np.float32), mesh.faces.astype(np.int32))
        if _mesh_ok(mesh, config.min_faces):
            return mesh, KIND_CODES[kind]
    raise RuntimeError(  # pragma: no cover - would indicate a generator bug
        f"could not generate a valid shape for split={split!r}, index={index} in {max_attempts} attempts"
    )


# --------------------------------------------------------------------------------------------
# Generation + on-disk cache (equiframe.datasets._cache)
# --------------------------------------------------------------------------------------------

_ARRAY_NAMES = ("vertices", "faces", "vertex_offsets", "face_offsets", "kinds")


def shapes_cache_path(config: ShapesConfig, root: str | os.PathLike[str] | None = None) -> Path:
    """The ``.npz`` file of the cache entry of ``config`` (its manifest is the sibling ``.json``).

    ``root`` defaults to ``$EQUIFRAME_CACHE`` or ``~/.cache/equiframe``; the entry lives in
    ``<root>/shapes/<key>.npz`` with ``key`` derived from :meth:`ShapesConfig.mesh_params`.
    """
    check_instance("config", config, ShapesConfig)
    return cache_entry(_CACHE_NAME, config.mesh_params(), config.version, root).npz_path


_Packed = list[tuple[np.ndarray, np.ndarray, int]]


def _generate_range(config: ShapesConfig, split: SplitName, start: int, stop: int) -> tuple[str, int, _Packed]:
    """Worker task: shapes ``start..stop-1`` of ``split`` (top-level so that it pickles under spawn)."""
    out = []
    for i in range(start, stop):
        (v, f), code = generate_shape(config, split, i)
        out.append((v, f, code))
    return split, start, out


def _pack(meshes: _Packed) -> dict[str, np.ndarray]:
    nv = np.array([m[0].shape[0] for m in meshes], dtype=np.int64)
    nf = np.array([m[1].shape[0] for m in meshes], dtype=np.int64)
    return {
        "vertices": np.concatenate([m[0] for m in meshes] or [np.zeros((0, 3))]).astype(np.float32),
        "faces": np.concatenate([m[1] for m in meshes] or [np.zeros((0, 3))]).astype(np.int32),
        "vertex_offsets": np.concatenate([[0], np.cumsum(nv)]).astype(np.int64),
        "face_offsets": np.concatenate([[0], np.cumsum(nf)]).astype(np.int64),
        "kinds": np.array([m[2] for m in meshes], dtype=np.int8),
    }


def _resolve_workers(workers: int | None, n_total: int) -> int:
    if workers is None:
        if n_total <= 256:
            return 0
        return max(1, min(os.cpu_count() or 1, 8))
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ValueError(f"workers must be None or an int >= 0, got {workers!r}")
    return workers


def generate_shapes(
    config: ShapesConfig,
    workers: int | None = None,
    progress: bool = True,
    chunk_size: int = 16,
) -> dict[str, np.ndarray]:
    """Generate all meshes of ``config`` (no caching) as packed arrays.

    Shapes are generated in chunks of ``chunk_size`` by a ``spawn`` process pool (safe with torch
    and OpenMP) or in this process; shape ``i`` depends only on ``(seed, split, i)``
    (:func:`generate_shape`), so the result is identical for any ``workers``.

    Args:
        config: Data-set configuration.
        workers: Processes; ``0`` or ``1`` = serial in this process, ``None`` = serial for at most
            256 shapes, else ``min(cpu_count, 8)``.
        progress: Show a tqdm progress bar.
        chunk_size: Shapes per worker task.

    Returns:
        For each split ``s`` in ``("train", "test")``: ``s_vertices`` float32, ``s_faces`` int32
        (indices local to the shape), ``s_vertex_offsets`` / ``s_face_offsets`` int64 (shape ``i``
        owns rows ``off[i]:off[i + 1]``) and ``s_kinds`` int8 (:data:`KIND_CODES`).

    Shapes:
        s_vertices: ``[sum V, 3]``; s_faces: ``[sum F, 3]``; offsets: ``[n + 1]``; s_kinds: ``[n]``.
    """
    if workers is not None:
        check_int("workers", workers, 0)
    if not isinstance(config, ShapesConfig):
        raise TypeError(f"config must be a ShapesConfig, got {type(config).__name__}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    n_total = config.n_train + config.n_test
    n_workers = _resolve_workers(workers, n_total)
    tasks = [
        (split, s, min(s + chunk_size, config.n_shapes(split)))
        for split in ("train", "test")
        for s in range(0, config.n_shapes(split), chunk_size)
    ]
    results: dict[str, dict[int, _Packed]] = {"train": {}, "test": {}}
    from tqdm.auto import tqdm

    with tqdm(total=n_total, desc="shapes", disable=not progress, unit="shape") as bar:
        if n_workers <= 1:
            for task in tasks:
                split, start, out = _generate_range(config, *task)
                results[split][start] = out
                bar.update(len(out))
        else:
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
                futures = [pool.submit(_generate_range, config, *task) for task in tasks]
                for fut in concurrent.futures.as_completed(futures):
                    split, start, out = fut.result()
                    results[split][start] = out
                    bar.update(len(out))
    arrays: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        meshes = [m for start in sorted(results[split]) for m in results[split][start]]
        arrays.update({f"{split}_{k}": v for k, v in _pack(meshes).items()})
    return arrays


_EMPTY = {
    "vertices": np.zeros((0, 3), np.float32),
    "faces": np.zeros((0, 3), np.int32),
    "kinds": np.zeros((0,), np.int8),
}


def _nonempty(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # Zero-size arrays (an empty split) are not stored: the shared cache's checksum cannot hash them.
    return {k: v for k, v in arrays.items() if v.size > 0}


def _split_arrays(arrays: dict[str, np.ndarray], split: str) -> dict[str, np.ndarray]:
    return {k: arrays[f"{split}_{k}"] if f"{split}_{k}" in arrays else _EMPTY[k] for k in _ARRAY_NAMES}


def build_shapes(
    config: ShapesConfig | None = None,
    root: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
    *,
    force: bool = False,
    chunk_size: int = 16,
) -> Path:
    """Generate (or reuse) the cached meshes of ``config`` and return the cache file.

    Uses :func:`equiframe.datasets._cache.load_or_build` (name ``"shapes"``, params
    :meth:`ShapesConfig.mesh_params`, format version ``config.version``): atomic writes, a JSON
    manifest with the parameters and a sha256 checksum that is verified on load (a corrupted
    entry is rebuilt with a warning). The arrays are those of :func:`generate_shapes`; the whole
    entry is loaded into memory by :class:`NormalsDataset` (about 28 kB per shape with the default
    mix, i.e. roughly 280 MB for 8000 + 2000 shapes; the analytic shapes are finely tessellated so
    that their face normals stay close to the smooth normals).

    Args:
        config: Data-set configuration (default :class:`ShapesConfig`).
        root: Cache root (default ``$EQUIFRAME_CACHE`` or ``~/.cache/equiframe``).
        workers: See :func:`generate_shapes`.
        progress: Show a tqdm progress bar while generating.
        force: Delete an existing entry and rebuild.
        chunk_size: Shapes per worker task.

    Returns:
        The ``.npz`` file of the entry (see :func:`shapes_cache_path`).
    """
    config = ShapesConfig() if config is None else config
    if not isinstance(config, ShapesConfig):
        raise TypeError(f"config must be a ShapesConfig, got {type(config).__name__}")
    _resolve_workers(workers, 0)  # validate early
    entry = cache_entry(_CACHE_NAME, config.mesh_params(), config.version, root)
    if force:
        entry.remove()
    load_or_build(
        _CACHE_NAME,
        config.mesh_params(),
        lambda: _nonempty(generate_shapes(config, workers=workers, progress=progress, chunk_size=chunk_size)),
        format_version=config.version,
        root=root,
    )
    return entry.npz_path


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


class NormalsDataset(torch.utils.data.Dataset):
    """Point clouds with per-point normals sampled from the cached procedural meshes.

    Item ``i`` draws ``config.n_points`` area-uniform surface points of mesh ``i``
    (:func:`sample_surface`, noise ``config.noise``) from the random stream
    ``SeedSequence([sample_seed, 1, split_code, e, i])`` where ``e`` is the current epoch
    (:meth:`set_epoch`) for resampled splits and ``0`` for fixed ones. By default the train split
    is resampled each epoch and the test split is fixed. With ``rotation="so3"`` the cloud and its
    normals are additionally rotated by a Haar-random rotation from the same stream
    (``x -> Q x``, ``n -> Q n``).

    ``set_epoch`` must be called before the DataLoader iterator is created; with
    ``persistent_workers=True`` the workers keep the epoch they were started with.

    Args:
        split: ``"train"`` or ``"test"``.
        config: Data-set configuration.
        root: Cache root (see :func:`build_shapes`).
        fixed_points: Same points every epoch (default: ``True`` for test, ``False`` for train).
        sample_seed: Seed of the point sampling (default ``config.seed``).
        rotation: ``"none"`` (canonical pose) or ``"so3"`` (random rotation per item).
        output: ``"dict"`` (keys ``pos``, ``normal``, ``index``, ``kind``) or ``"data"``
            (``torch_geometric.data.Data`` with the same fields).
        build: Build the cache if missing (else raise ``FileNotFoundError``). The entry is loaded
            into memory with its checksum verified.
        workers: Passed to :func:`build_shapes`.
        progress: Passed to :func:`build_shapes`.

    Shapes:
        pos: ``[n_points, 3]`` float32; normal: ``[n_points, 3]`` float32 (unit, outward for the
        procedural meshes, but the metrics are unoriented); index, kind: ``[]`` int64.
    """

    def __init__(
        self,
        split: SplitName,
        config: ShapesConfig | None = None,
        root: str | os.PathLike[str] | None = None,
        *,
        fixed_points: bool | None = None,
        sample_seed: int | None = None,
        rotation: Literal["none", "so3"] = "none",
        output: Literal["dict", "data"] = "dict",
        build: bool = True,
        workers: int | None = None,
        progress: bool = False,
    ) -> None:
        _check_split(split)
        config = ShapesConfig() if config is None else config
        if not isinstance(config, ShapesConfig):
            raise TypeError(f"config must be a ShapesConfig, got {type(config).__name__}")
        if rotation not in ("none", "so3"):
            raise ValueError(f"rotation must be 'none' or 'so3', got {rotation!r}")
        if output not in ("dict", "data"):
            raise ValueError(f"output must be 'dict' or 'data', got {output!r}")
        sample_seed = config.seed if sample_seed is None else sample_seed
        if not isinstance(sample_seed, int) or isinstance(sample_seed, bool) or sample_seed < 0:
            raise ValueError(f"sample_seed must be a non-negative int, got {sample_seed!r}")
        self.split: SplitName = split
        self.config = config
        self.fixed_points = (split == "test") if fixed_points is None else bool(fixed_points)
        self.sample_seed = sample_seed
        self.rotation = rotation
        self.output = output
        self.epoch = 0
        self.path = shapes_cache_path(config, root)
        if build:
            build_shapes(config, root, workers=workers, progress=progress)
        arrays = lookup(_CACHE_NAME, config.mesh_params(), config.version, root)  # checksum-verified
        if arrays is None:
            raise FileNotFoundError(f"no shapes cache at {self.path}; call build_shapes(config) first")
        self._arrays: dict[str, np.ndarray] | None = _split_arrays(arrays, split)

    # The arrays are not pickled (spawn-started DataLoader workers re-read the cache file, unverified).
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = None
        return state

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The packed arrays of this split (``vertices``, ``faces``, ``vertex_offsets``,
        ``face_offsets``, ``kinds``; see :func:`generate_shapes`)."""
        if self._arrays is None:
            arrays = load_arrays_npz(self.path)
            self._arrays = _split_arrays(arrays, self.split)
        return self._arrays

    def __len__(self) -> int:
        return self.config.n_shapes(self.split)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose points are drawn (no effect when ``fixed_points``)."""
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = epoch

    def _index(self, index: int) -> int:
        n = len(self)
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        index = int(index)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index out of range for {n} shapes")
        return index

    def mesh(self, index: int) -> Mesh:
        """The normalised mesh of shape ``index`` (float32 vertices, int32 faces)."""
        i = self._index(index)
        a = self.arrays
        vo, fo = a["vertex_offsets"], a["face_offsets"]
        return Mesh(np.array(a["vertices"][vo[i] : vo[i + 1]]), np.array(a["faces"][fo[i] : fo[i + 1]]))

    def kind(self, index: int) -> int:
        """The :data:`KIND_CODES` code of shape ``index``."""
        return int(self.arrays["kinds"][self._index(index)])

    def __getitem__(self, index: int) -> dict[str, Tensor] | Any:
        i = self._index(index)
        epoch = 0 if self.fixed_points else self.epoch
        rng = np.random.default_rng(
            np.random.SeedSequence([self.sample_seed, _SAMPLE_STREAM, _SPLIT_CODES[self.split], epoch, i])
        )
        vertices, faces = self.mesh(i)
        pos, normal = sample_surface(
            vertices, faces, self.config.n_points, rng, noise=self.config.noise, dtype=np.float64
        )
        if self.rotation == "so3":
            q = random_orthogonal((), 3, proper=True, generator=rng)
            pos, normal = pos @ q.T, normal @ q.T
        item = {
            "pos": torch.from_numpy(pos.astype(np.float32)),
            "normal": torch.from_numpy(normal.astype(np.float32)),
            "index": torch.tensor(i, dtype=torch.long),
            "kind": torch.tensor(self.kind(i), dtype=torch.long),
        }
        if self.output == "data":
            from torch_geometric.data import Data

            return Data(**item)
        return item
