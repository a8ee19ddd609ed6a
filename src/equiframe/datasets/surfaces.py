"""Triangle meshes as numpy arrays: the :class:`Mesh` type, validation, face normals and areas,
closedness, normalisation and area-uniform surface sampling with exact normals.

Split out of :mod:`equiframe.datasets.shapes`, which re-exports the public names.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np

CenterMode = Literal["bbox", "area"]


class Mesh(NamedTuple):
    """A triangle mesh.

    Attributes:
        vertices: Vertex positions.
        faces: Vertex indices of the triangles (counter-clockwise seen from outside for the
            generated shapes).

    Shapes:
        vertices: ``[V, 3]`` float32 or float64.
        faces: ``[F, 3]`` integer.
    """

    vertices: np.ndarray
    faces: np.ndarray


# --------------------------------------------------------------------------------------------
# Mesh utilities (numpy)
# --------------------------------------------------------------------------------------------


def _validate_mesh(vertices: np.ndarray, faces: np.ndarray, name: str = "mesh") -> tuple[np.ndarray, np.ndarray]:
    vertices = np.asarray(vertices)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"{name}: vertices must have shape [V, 3], got {tuple(vertices.shape)}")
    if not np.issubdtype(vertices.dtype, np.floating):
        vertices = vertices.astype(np.float64)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"{name}: faces must have shape [F, 3], got {tuple(faces.shape)}")
    if not np.issubdtype(faces.dtype, np.integer):
        raise TypeError(f"{name}: faces must be an integer array, got dtype {faces.dtype}")
    if vertices.shape[0] == 0 or faces.shape[0] == 0:
        raise ValueError(f"{name}: empty mesh ({vertices.shape[0]} vertices, {faces.shape[0]} faces)")
    if not np.isfinite(vertices).all():
        raise ValueError(f"{name}: vertices contain NaN or inf")
    if faces.min() < 0 or faces.max() >= vertices.shape[0]:
        raise ValueError(
            f"{name}: face indices must lie in [0, {vertices.shape[0] - 1}], "
            f"got range [{faces.min()}, {faces.max()}]"
        )
    return vertices, faces


def face_normals_and_areas(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit face normals and face areas of a triangle mesh (computed in float64).

    ``n_f = (b - a) x (c - a) / ||(b - a) x (c - a)||`` and ``A_f = ||(b - a) x (c - a)|| / 2`` for
    a face ``f = (a, b, c)``. Zero-area faces get a zero normal and zero area.

    Args:
        vertices: Vertex positions.
        faces: Triangles.

    Returns:
        ``(normals, areas)``; normals point outwards for counter-clockwise (outward) faces.

    Shapes:
        vertices: ``[V, 3]``; faces: ``[F, 3]``; normals: ``[F, 3]`` float64; areas: ``[F]`` float64.
    """
    vertices, faces = _validate_mesh(vertices, faces)
    tri = vertices.astype(np.float64, copy=False)[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(cross, axis=1)
    normals = np.divide(cross, norm[:, None], out=np.zeros_like(cross), where=norm[:, None] > 0)
    return normals, 0.5 * norm


def is_closed_manifold(faces: np.ndarray) -> bool:
    """Whether a triangle mesh is closed, edge-manifold and consistently oriented.

    Every directed edge ``(a, b)`` of the faces must occur exactly once and its reverse ``(b, a)``
    exactly once as well (each edge is shared by exactly two faces with opposite orientation).
    Faces with repeated vertices make the mesh invalid.

    Shapes:
        faces: ``[F, 3]`` integer.
    """
    arr = np.asarray(faces)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"faces: expected integer vertex indices, got {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"faces: expected shape [F, 3], got {arr.shape}")
    faces = np.asarray(faces, dtype=np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.shape[0] == 0:
        return False
    if np.any(faces[:, 0] == faces[:, 1]) or np.any(faces[:, 1] == faces[:, 2]) or np.any(faces[:, 0] == faces[:, 2]):
        return False
    n = int(faces.max()) + 1
    src = faces.reshape(-1)
    dst = faces[:, [1, 2, 0]].reshape(-1)
    directed = src * n + dst
    uniq = np.unique(directed)
    if uniq.size != directed.size:
        return False
    reverse = dst * n + src
    return bool(np.isin(reverse, uniq, assume_unique=False).all())


def normalize_mesh(
    vertices: np.ndarray, faces: np.ndarray | None = None, center: CenterMode = "bbox"
) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre a mesh and scale it into the unit ball.

    ``x' = (x - c) / s`` with ``s = max_i ||x_i - c||`` and ``c`` the bounding-box centre
    ``(min_i x_i + max_i x_i) / 2`` (``center="bbox"``, the default, independent of the
    tessellation) or the area-weighted surface centroid ``sum_f A_f g_f / sum_f A_f`` with
    ``g_f`` the face centroids (``center="area"``, needs ``faces``). The farthest point of a
    triangle mesh from ``c`` is a vertex, so the whole surface lies in the unit ball.

    Args:
        vertices: Vertex positions.
        faces: Triangles (only needed for ``center="area"``).
        center: Centring rule.

    Returns:
        ``(normalised_vertices, c, s)``; the vertices keep their dtype.

    Shapes:
        vertices: ``[V, 3]``; faces: ``[F, 3]``; c: ``[3]``.
    """
    vertices = np.asarray(vertices)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or vertices.shape[0] == 0:
        raise ValueError(f"vertices must have shape [V, 3] with V > 0, got {tuple(vertices.shape)}")
    if not np.isfinite(vertices).all():
        raise ValueError("vertices contain NaN or inf")
    dtype = vertices.dtype if np.issubdtype(vertices.dtype, np.floating) else np.float64
    v64 = vertices.astype(np.float64)
    if center == "bbox":
        c = 0.5 * (v64.min(axis=0) + v64.max(axis=0))
    elif center == "area":
        if faces is None:
            raise ValueError("normalize_mesh: center='area' needs faces")
        _, areas = face_normals_and_areas(v64, faces)
        if areas.sum() <= 0:
            raise ValueError("normalize_mesh: mesh has zero total area")
        g = v64[np.asarray(faces)].mean(axis=1)
        c = (areas[:, None] * g).sum(axis=0) / areas.sum()
    else:
        raise ValueError(f"center must be 'bbox' or 'area', got {center!r}")
    s = float(np.linalg.norm(v64 - c, axis=1).max())
    if s <= 0:
        raise ValueError("normalize_mesh: all vertices coincide")
    return ((v64 - c) / s).astype(dtype), c, s


def sample_surface(
    vertices: np.ndarray,
    faces: np.ndarray,
    n_points: int,
    rng: np.random.Generator,
    *,
    noise: float = 0.0,
    dtype: np.dtype | type = np.float32,
    return_face_index: bool = False,
) -> tuple[np.ndarray, ...]:
    """Area-uniform surface samples with the normals of the sampled faces.

    Faces are drawn i.i.d. with probability ``A_f / sum_g A_g`` (inverse CDF on the cumulative
    areas); inside face ``(a, b, c)`` the point is ``p = a + r1 (b - a) + r2 (c - a)`` with
    ``r1, r2 ~ U(0, 1)`` folded by ``(r1, r2) -> (1 - r1, 1 - r2)`` when ``r1 + r2 > 1``, which is
    uniform on the triangle. The target is the unit face normal ``n_f``. With ``noise > 0`` the
    positions (only) become ``p + sigma * eps`` with ``eps ~ N(0, I)`` and
    ``sigma = noise * ||max_i x_i - min_i x_i||`` (fraction of the bounding-box diagonal).
    Fully vectorised; zero-area faces are never drawn.

    Args:
        vertices: Vertex positions.
        faces: Triangles.
        n_points: Number of samples (>= 1).
        rng: Source of randomness.
        noise: Noise level as a fraction of the bounding-box diagonal (>= 0).
        dtype: Floating dtype of the outputs.
        return_face_index: Also return the index of the sampled face of every point.

    Returns:
        ``(pos, normal)`` or ``(pos, normal, face_index)``.

    Shapes:
        vertices: ``[V, 3]``; faces: ``[F, 3]``; pos, normal: ``[n_points, 3]``;
        face_index: ``[n_points]`` int64.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if not isinstance(n_points, (int, np.integer)) or isinstance(n_points, bool) or n_points < 1:
        raise ValueError(f"n_points must be a positive int, got {n_points!r}")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite float >= 0, got {noise!r}")
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise TypeError(f"dtype must be a floating dtype, got {dtype!r}")
    vertices, faces = _validate_mesh(vertices, faces)
    v64 = vertices.astype(np.float64, copy=False)
    normals, areas = face_normals_and_areas(v64, faces)
    cdf = np.cumsum(areas)
    total = cdf[-1]
    if not total > 0:
        raise ValueError("sample_surface: mesh has zero total area")
    u = rng.random(n_points) * total
    face_index = np.minimum(np.searchsorted(cdf, u, side="right"), faces.shape[0] - 1)
    r = rng.random((2, n_points))
    fold = r.sum(axis=0) > 1.0
    r[:, fold] = 1.0 - r[:, fold]
    tri = v64[faces[face_index]]  # [n, 3, 3]
    pos = tri[:, 0] + r[0, :, None] * (tri[:, 1] - tri[:, 0]) + r[1, :, None] * (tri[:, 2] - tri[:, 0])
    if noise > 0:
        diag = float(np.linalg.norm(v64.max(axis=0) - v64.min(axis=0)))
        pos = pos + rng.standard_normal(pos.shape) * (noise * diag)
    out: tuple[np.ndarray, ...] = (pos.astype(dtype), normals[face_index].astype(dtype))
    if return_face_index:
        out = out + (face_index.astype(np.int64),)
    return out
