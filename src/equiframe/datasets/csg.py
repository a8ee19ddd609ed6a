"""Random CAD-like solids from boolean operations on primitives (``manifold3d``): the meshes of the procedural
normals data set (:mod:`equiframe.datasets.shapes`), and the NumPy Haar rotation its generator draws from.

The draws are part of the committed data (``tests/test_data_regression.py`` pins their SHA-256): changing the
order of random calls here changes the data set.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from equiframe.datasets.surfaces import Mesh
from equiframe.groups import random_orthogonal
from .._checks import check_instance, check_int

__all__ = ["make_csg_shape"]


# --------------------------------------------------------------------------------------------
# Shape generators
# --------------------------------------------------------------------------------------------


def _manifold3d() -> Any:
    try:
        import manifold3d
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "generating procedural shapes needs the optional dependency 'manifold3d' "
            "(pip install 'equiframe[shapes]')"
        ) from exc
    return manifold3d


def _to_mesh(solid: Any) -> Mesh:
    m = solid.to_mesh64()
    vertices = np.asarray(m.vert_properties, dtype=np.float64)[:, :3]
    faces = np.asarray(m.tri_verts, dtype=np.int64)
    return Mesh(np.ascontiguousarray(vertices), faces)


def _transform(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    t = np.zeros((3, 4))
    t[:, :3] = rotation
    t[:, 3] = translation
    return t


def _axis_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly random signed permutation matrix with determinant +1 (24 cube symmetries)."""
    perm = rng.permutation(3)
    signs = rng.choice(np.array([-1.0, 1.0]), size=3)
    r = np.zeros((3, 3))
    r[np.arange(3), perm] = signs
    if np.linalg.det(r) < 0:
        r[0] = -r[0]
    return r


def _primitive(rng: np.random.Generator, size: np.ndarray, segments: int, allowed: tuple[str, ...]) -> Any:
    """A random primitive centred at the origin whose extent is roughly ``size`` (3 values)."""
    m3d = _manifold3d()
    M, CS = m3d.Manifold, m3d.CrossSection
    kind = allowed[int(rng.integers(len(allowed)))]
    sx, sy, sz = (float(v) for v in size)
    if kind == "box":
        return M.cube((sx, sy, sz), center=True)
    if kind == "cylinder":
        r = 0.5 * min(sx, sy)
        return M.cylinder(sz, r, r, segments, center=True)
    if kind == "cone":
        r = 0.5 * min(sx, sy)
        return M.cylinder(sz, r, r * float(rng.uniform(0.0, 0.7)), segments, center=True)
    if kind == "sphere":
        return M.sphere(0.5 * float(np.mean(size)), segments)
    if kind == "torus":
        big = 0.5 * min(sx, sy)
        small = big * float(rng.uniform(0.2, 0.5))
        ring = CS.circle(small, max(8, segments // 2)).translate((big - small, 0.0))
        return M.revolve(ring, segments)
    if kind == "wedge":
        tri = CS([np.array([[0.0, 0.0], [sx, 0.0], [0.0, sy]])])
        return M.extrude(tri, sz).translate((-sx / 3, -sy / 3, -sz / 2))
    raise ValueError(f"unknown primitive {kind!r}")  # pragma: no cover


_BASE_PRIMITIVES = ("box", "box", "box", "cylinder", "cylinder", "wedge", "cone")
_FEATURE_PRIMITIVES = ("box", "cylinder", "cone", "sphere", "torus", "wedge")


def make_csg_shape(rng: np.random.Generator, resolution: int = 48, max_ops: int = 4) -> Mesh:
    """A random CAD-like solid from boolean operations on primitives.

    An axis-aligned base solid (box, cylinder, cone or wedge prism with random dimensions in
    ``[0.4, 1]``) is modified by ``1..max_ops`` random operations, each one of: union with a
    feature primitive (box / cylinder / cone / sphere / torus / wedge, random size 15-60 % of the
    current bounding box, random position inside it, axis-aligned or Haar-random orientation),
    difference with such a primitive (pocket), intersection with a large primitive (rounding),
    a through hole (difference with a long thin cylinder along a coordinate axis) or a half-space
    cut (chamfer / wedge cut through the plane ``n . x = o`` removing 5-35 % of the extent along
    ``n``). An operation whose result is empty, keeps less than 10 % of the base volume or
    changes the volume by less than 0.1 % of it (no effect) is skipped and another one is drawn
    (at most ``4 * n_ops`` draws). Only the largest connected component is returned. The mesh is
    *not* normalised.

    Args:
        rng: Source of randomness (the shape is a deterministic function of its state).
        resolution: Circular segments of round primitives.
        max_ops: Maximal number of operations (>= 1).

    Returns:
        A closed, oriented, edge-manifold :class:`Mesh` (float64 vertices, int64 faces).

    Shapes:
        vertices: ``[V, 3]``; faces: ``[F, 3]``.
    """
    check_instance("rng", rng, np.random.Generator, "a numpy.random.Generator")
    check_int("resolution", resolution, 8)
    check_int("max_ops", max_ops, 0)
    if max_ops < 1:
        raise ValueError(f"max_ops must be >= 1, got {max_ops}")
    m3d = _manifold3d()
    segs = int(resolution)
    dims = rng.uniform(0.4, 1.0, size=3)
    solid = _primitive(rng, dims, segs, _BASE_PRIMITIVES)
    base_volume = solid.volume()
    n_ops = int(rng.integers(1, max_ops + 1))
    ops = ("union", "difference", "intersection", "hole", "cut")
    probs = np.array([0.3, 0.25, 0.1, 0.2, 0.15])
    applied = 0
    for _ in range(4 * n_ops):
        if applied == n_ops:
            break
        op = ops[int(rng.choice(len(ops), p=probs))]
        new = _csg_operation(rng, op, solid, segs, m3d)
        if new.is_empty():
            continue
        volume = new.volume()
        if volume < 0.1 * base_volume or abs(volume - solid.volume()) < 1e-3 * base_volume:
            continue
        solid = new
        applied += 1
    parts = solid.decompose()
    if len(parts) > 1:
        solid = max(parts, key=lambda p: p.volume())
    return _to_mesh(solid)


def _csg_operation(rng: np.random.Generator, op: str, solid: Any, segs: int, m3d: Any) -> Any:
    """One random operation of :func:`make_csg_shape` on ``solid`` (drawn from ``rng`` in a fixed order)."""
    bb = np.asarray(solid.bounding_box(), dtype=np.float64)
    lo, hi = bb[:3], bb[3:]
    ext = np.maximum(hi - lo, 1e-3)
    if op == "hole":
        return _csg_hole(rng, solid, lo, ext, segs, m3d)
    if op == "cut":
        return _csg_cut(rng, solid, lo, ext)
    rot = _axis_rotation(rng) if rng.random() < 0.6 else random_orthogonal((), 3, proper=True, generator=rng)
    if op == "intersection":  # rounding: intersection with a large primitive
        size = ext * rng.uniform(0.9, 1.4, size=3)
        centre = 0.5 * (lo + hi) + ext * rng.uniform(-0.15, 0.15, size=3)
        tool = _primitive(rng, size, segs, ("sphere", "cylinder", "box"))
        return solid ^ tool.transform(_transform(rot, centre))
    size = ext * rng.uniform(0.15, 0.6, size=3)  # union / difference with a feature primitive
    centre = lo + ext * rng.uniform(0.0, 1.0, size=3)
    tool = _primitive(rng, size, segs, _FEATURE_PRIMITIVES).transform(_transform(rot, centre))
    return solid + tool if op == "union" else solid - tool


def _csg_hole(rng: np.random.Generator, solid: Any, lo: np.ndarray, ext: np.ndarray, segs: int, m3d: Any) -> Any:
    """A through hole: difference with a long thin cylinder along a random coordinate axis."""
    axis = int(rng.integers(3))
    others = [a for a in range(3) if a != axis]
    radius = float(rng.uniform(0.05, 0.2)) * float(ext[others].min())
    centre = lo + ext * rng.uniform(0.15, 0.85, size=3)
    rot = np.eye(3)[[(axis + 1) % 3, (axis + 2) % 3, axis]].T  # maps z to the axis
    tool = m3d.Manifold.cylinder(3.0 * float(ext.max()), radius, radius, segs, center=True)
    return solid - tool.transform(_transform(rot, centre))


def _csg_cut(rng: np.random.Generator, solid: Any, lo: np.ndarray, ext: np.ndarray) -> Any:
    """A half-space cut ``n . x <= o`` removing 5-35 % of the extent along ``n`` (chamfer / wedge cut)."""
    if rng.random() < 0.5:  # chamfer-like: normal in a coordinate plane or along an axis
        n = np.zeros(3)
        m = int(rng.integers(1, 3))
        signs = rng.choice([-1.0, 1.0], size=m)
        n[rng.choice(3, size=m, replace=False)] = signs * rng.uniform(0.5, 1.0, size=m)
    else:
        n = rng.standard_normal(3)
    n = n / np.linalg.norm(n)
    corners = lo + ext * np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=float)
    proj = corners @ n
    offset = proj.max() - float(rng.uniform(0.05, 0.35)) * (proj.max() - proj.min())
    return solid.trim_by_plane(tuple(-n), float(-offset))  # keep n . x <= offset
