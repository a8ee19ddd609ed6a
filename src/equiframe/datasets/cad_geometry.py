"""CAD part geometry: random parametric B-rep solids built with OpenCASCADE through ``build123d``
(:func:`make_part`) and exact area-uniform samples with exact normals on their faces
(:func:`sample_shape`).

Split out of :mod:`equiframe.datasets.cad`, which re-exports the public names.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import numpy as np
from .._checks import check_instance, check_int, check_real

Family = Literal["extrude", "revolve", "plate", "shell", "sweep", "loft", "bracket"]
#: Part families (the ``family`` code stored per part is the index here).
FAMILIES: tuple[str, ...] = get_args(Family)
#: Surface types (the ``face_type`` code stored per point is the index here).
SURFACE_TYPES: tuple[str, ...] = ("plane", "cylinder", "cone", "sphere", "torus", "bspline", "other")


def _require_build123d() -> Any:
    try:
        import build123d  # noqa: PLC0415
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "generating CAD parts needs build123d (OpenCASCADE): pip install 'equiframe[cad]'"
        ) from err
    return build123d



# --------------------------------------------------------------------------------------------
# Random parts
# --------------------------------------------------------------------------------------------


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _sketch(bd: Any, rng: np.random.Generator, size: float) -> Any:
    """A random closed planar profile (a Face/Sketch on the XY plane) of extent about ``size``."""
    kind = rng.integers(0, 7)
    a, b = size * _u(rng, 0.5, 1.0), size * _u(rng, 0.3, 1.0)
    if kind == 0:
        return bd.Rectangle(a, b)
    if kind == 1:
        return bd.RectangleRounded(a, b, min(a, b) * _u(rng, 0.05, 0.45))
    if kind == 2:
        return bd.RegularPolygon(a / 2, int(rng.integers(3, 9)))
    if kind == 3:  # star-shaped polygon: sorted angles, random radii
        m = int(rng.integers(5, 11))
        ang = np.sort(rng.uniform(0, 2 * np.pi, m))
        ang = ang + np.linspace(0, 2 * np.pi, m, endpoint=False) * 0.5  # spread
        ang = np.sort(np.mod(ang, 2 * np.pi))
        rad = size / 2 * rng.uniform(0.45, 1.0, m)
        pts = [(float(r * math.cos(t)), float(r * math.sin(t))) for r, t in zip(rad, ang)]
        return bd.Polygon(*pts)
    if kind == 4:
        return bd.SlotOverall(a, min(b, a * 0.9))
    if kind == 5:
        return bd.Circle(a / 2)
    t = min(a, b) * _u(rng, 0.2, 0.5)  # L profile
    return bd.Polygon((0, 0), (a, 0), (a, t), (t, t), (t, b), (0, b))


def _extent(part: Any) -> np.ndarray:
    bb = part.bounding_box()
    return np.array([bb.size.X, bb.size.Y, bb.size.Z])


def _base(bd: Any, rng: np.random.Generator, family: str) -> Any:
    s = _u(rng, 0.8, 1.6)
    if family == "extrude":
        return bd.extrude(_sketch(bd, rng, s), s * _u(rng, 0.1, 1.5))
    if family == "revolve":
        m = int(rng.integers(2, 6))
        z = np.sort(rng.uniform(0, s * _u(rng, 0.5, 2.0), m + 1))
        z = z - z[0]
        if z[-1] < 0.1 * s:
            z = z + np.linspace(0, 0.3 * s, m + 1)
        r = rng.uniform(0.15, 0.6, m + 1) * s
        pts = [(0.0, float(z[0]))] + [(float(ri), float(zi)) for ri, zi in zip(r, z)] + [(0.0, float(z[-1]))]
        if rng.random() < 0.4:  # hollow: profile away from the axis (a ring)
            inner = float(r.min()) * _u(rng, 0.2, 0.8)
            pts = [(inner, float(z[0]))] + pts[1:-1] + [(inner, float(z[-1]))]
        arc = 360.0 if rng.random() < 0.75 else _u(rng, 90, 300)
        return bd.revolve(bd.Plane.XZ * bd.Polygon(*pts, align=None), bd.Axis.Z, arc)
    if family == "plate":
        a, b, t = s, s * _u(rng, 0.4, 1.0), s * _u(rng, 0.03, 0.2)
        part = bd.Box(a, b, t)
        if rng.random() < 0.6:  # hole pattern
            r = min(a, b) * _u(rng, 0.03, 0.1)
            if rng.random() < 0.5:
                nx, ny = int(rng.integers(1, 5)), int(rng.integers(1, 4))
                locs = bd.GridLocations(a / (nx + 1), b / (ny + 1), nx, ny).locations
            else:
                locs = bd.PolarLocations(min(a, b) * 0.3, int(rng.integers(3, 9))).locations
            for loc in locs:
                part = part - loc * bd.Cylinder(r, 4 * t)
        if rng.random() < 0.5:  # ribs (thin walls on top)
            for _ in range(int(rng.integers(1, 4))):
                w = t * _u(rng, 0.3, 1.0)
                h = t * _u(rng, 1.0, 5.0)
                y = _u(rng, -b / 3, b / 3)
                part = part + bd.Pos(0, y, t / 2 + h / 2) * bd.Box(a * _u(rng, 0.5, 1.0), w, h)
        return part
    if family == "shell":
        if rng.random() < 0.5:
            solid = bd.Box(s, s * _u(rng, 0.4, 1.0), s * _u(rng, 0.3, 1.0))
        else:
            solid = bd.Cylinder(s / 2, s * _u(rng, 0.3, 1.2))
        if rng.random() < 0.5:
            try:
                solid = bd.fillet(solid.edges(), s * _u(rng, 0.02, 0.08))
            except Exception:  # noqa: BLE001 - kernel failure: keep the sharp solid
                pass
        top = solid.faces().sort_by(bd.Axis.Z)[-1]
        return bd.offset(solid, amount=-s * _u(rng, 0.02, 0.1), openings=top)
    if family == "sweep":
        r = s * _u(rng, 0.05, 0.2)
        if rng.random() < 0.5:
            pts = [(0, 0, 0)] + [tuple(float(v) for v in rng.uniform(-s, s, 3) * [1, 1, 0.5] + [0, 0, (j + 1) * s / 2])
                                 for j in range(int(rng.integers(2, 4)))]
            path = bd.Spline(*pts)
        else:
            path = bd.ThreePointArc((0, 0, 0), (s / 2, 0, s / 2 * _u(rng, 0.3, 1.0)), (s, 0, 0))
        plane = bd.Plane(origin=path @ 0, z_dir=path % 0)
        section = bd.Circle(r) if rng.random() < 0.5 else bd.Rectangle(2 * r, 2 * r * _u(rng, 0.4, 1.0))
        return bd.sweep(plane * section, path=path)
    if family == "loft":
        m = int(rng.integers(2, 4))
        secs = []
        for j in range(m):
            secs.append(bd.Plane.XY.offset(j * s * _u(rng, 0.3, 0.8)) * _sketch_convex(bd, rng, s))
        return bd.loft(secs)
    if family == "bracket":
        a, b, t = s, s * _u(rng, 0.5, 1.0), s * _u(rng, 0.08, 0.25)
        prof = bd.Polygon((0, 0), (a, 0), (a, t), (t, t), (t, b), (0, b), align=None)
        part = bd.extrude(bd.Plane.XZ * prof, -s * _u(rng, 0.3, 1.0))
        if rng.random() < 0.7:
            inner = part.edges().filter_by(bd.Axis.Y).sort_by_distance((t, 0, t))[0]
            try:
                part = bd.fillet(inner, t * _u(rng, 0.2, 1.0))
            except Exception:  # noqa: BLE001
                pass
        return part
    raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")


def _sketch_convex(bd: Any, rng: np.random.Generator, size: float) -> Any:
    kind = rng.integers(0, 3)
    a = size * _u(rng, 0.3, 1.0)
    if kind == 0:
        return bd.Rectangle(a, size * _u(rng, 0.3, 1.0))
    if kind == 1:
        return bd.Circle(a / 2)
    return bd.RegularPolygon(a / 2, int(rng.integers(3, 9)))


def _modify(bd: Any, rng: np.random.Generator, part: Any) -> Any:
    """Random holes, pockets, bosses, fillets and chamfers; a modifier the kernel rejects is skipped."""
    ext = _extent(part)
    size = float(ext.max())
    for _ in range(int(rng.integers(1, 6))):
        op = rng.integers(0, 5)
        try:
            bb = part.bounding_box()
            c = np.array([bb.center().X, bb.center().Y, bb.center().Z])
            if op == 0:  # hole (through, possibly counterbored), along a random axis
                axis = int(rng.integers(0, 3))
                r = size * _u(rng, 0.02, 0.12)
                off = c + (rng.uniform(-0.35, 0.35, 3) * ext) * (np.arange(3) != axis)
                rot = [(0, 0, 0), (0, 90, 0), (90, 0, 0)][axis][::-1] if axis else (0, 0, 0)
                tool = bd.Cylinder(r, 3 * size)
                if rng.random() < 0.3:
                    tool = tool + bd.Pos(0, 0, 1.5 * size) * bd.Cylinder(r * 1.8, 2 * size * _u(rng, 0.55, 0.6) * 2)
                new = part - bd.Pos(*off) * bd.Rot(*rot) * tool
            elif op == 1:  # pocket from the top
                w, h = ext[0] * _u(rng, 0.15, 0.5), ext[1] * _u(rng, 0.15, 0.5)
                d = ext[2] * _u(rng, 0.1, 0.5)
                off = c + np.array([_u(rng, -0.25, 0.25) * ext[0], _u(rng, -0.25, 0.25) * ext[1], ext[2] / 2 - d / 2])
                tool = bd.Box(w, h, d * 1.001) if rng.random() < 0.6 else bd.Cylinder(min(w, h) / 2, d * 1.001)
                new = part - bd.Pos(*off) * tool
            elif op == 2:  # boss / rib
                r = size * _u(rng, 0.05, 0.2)
                hgt = size * _u(rng, 0.1, 0.4)
                off = c + np.array([_u(rng, -0.3, 0.3) * ext[0], _u(rng, -0.3, 0.3) * ext[1], ext[2] / 2 + hgt / 2 - 1e-3])
                tool = bd.Cylinder(r, hgt) if rng.random() < 0.5 else bd.Box(r * 4, r * _u(rng, 0.2, 0.6), hgt)
                new = part + bd.Pos(*off) * tool
            else:  # fillet (op 3) or chamfer (op 4) of a random subset of edges
                edges = list(part.edges())
                m = min(len(edges), int(rng.integers(1, 9)))
                pick = [edges[j] for j in rng.choice(len(edges), m, replace=False)]
                rad = size * float(np.exp(rng.uniform(math.log(0.005), math.log(0.1))))
                new = bd.fillet(pick, rad) if op == 3 else bd.chamfer(pick, rad)
            if _valid(new):
                part = new
        except Exception:  # noqa: BLE001 - OpenCASCADE raises many kinds; the modifier is skipped
            continue
    return part


def _valid(part: Any) -> bool:
    try:
        valid = part.is_valid  # a property in build123d >= 0.10, a method before
        valid = valid() if callable(valid) else valid
        return len(part.solids()) == 1 and bool(valid) and part.volume > 1e-9
    except Exception:  # noqa: BLE001
        return False


def make_part(rng: np.random.Generator, family: str | None = None) -> tuple[Any, int]:
    """A random solid (a ``build123d`` shape) and its family code (index into :data:`FAMILIES`).

    Raises:
        RuntimeError: the kernel failed or produced an invalid solid (callers retry with a new stream).
    """
    check_instance("rng", rng, np.random.Generator, "a numpy.random.Generator")
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")
    bd = _require_build123d()  # after the argument checks: a bad argument is named with or without the kernel
    fam = FAMILIES[int(rng.integers(0, len(FAMILIES)))] if family is None else family
    part = _base(bd, rng, fam)
    if not _valid(part):
        raise RuntimeError(f"invalid {fam} base solid")
    part = _modify(bd, rng, part)
    return part, FAMILIES.index(fam)


# --------------------------------------------------------------------------------------------
# Exact area-uniform samples on the B-rep faces
# --------------------------------------------------------------------------------------------


def _surface_code(kind: Any) -> int:
    from OCP.GeomAbs import GeomAbs_SurfaceType as T  # noqa: PLC0415

    table = {T.GeomAbs_Plane: 0, T.GeomAbs_Cylinder: 1, T.GeomAbs_Cone: 2, T.GeomAbs_Sphere: 3,
             T.GeomAbs_Torus: 4, T.GeomAbs_BSplineSurface: 5, T.GeomAbs_BezierSurface: 5}
    return table.get(kind, 6)


def _faces_triangulated(shape: Any, deflection: float) -> list[tuple[Any, np.ndarray, np.ndarray, np.ndarray]]:
    """Per face: (TopoDS_Face, 3-D nodes [V, 3], parameter nodes [V, 2], triangles [T, 3])."""
    from OCP.BRep import BRep_Tool  # noqa: PLC0415
    from OCP.BRepMesh import BRepMesh_IncrementalMesh  # noqa: PLC0415
    from OCP.TopAbs import TopAbs_FACE  # noqa: PLC0415
    from OCP.TopExp import TopExp_Explorer  # noqa: PLC0415
    from OCP.TopLoc import TopLoc_Location  # noqa: PLC0415
    from OCP.TopoDS import TopoDS  # noqa: PLC0415

    BRepMesh_IncrementalMesh(shape, deflection, False, 0.25, True)
    unique: list[Any] = []
    explorer = TopExp_Explorer(shape, TopAbs_FACE)
    while explorer.More():
        face = TopoDS.Face(explorer.Current())
        if not any(face.IsSame(g) for g in unique):
            unique.append(face)
        explorer.Next()
    out = []
    for face in unique:
        loc = TopLoc_Location()
        tri = BRep_Tool.Triangulation_s(face, loc)
        if tri is None or tri.NbTriangles() == 0 or not tri.HasUVNodes():
            out.append((face, np.zeros((0, 3)), np.zeros((0, 2)), np.zeros((0, 3), dtype=np.int64)))
            continue
        trsf = loc.Transformation()
        nodes = np.array([tri.Node(j).Transformed(trsf).Coord() for j in range(1, tri.NbNodes() + 1)])
        uv = np.array([tri.UVNode(j).Coord() for j in range(1, tri.NbNodes() + 1)])
        tris = np.array([tri.Triangle(j).Get() for j in range(1, tri.NbTriangles() + 1)], dtype=np.int64) - 1
        out.append((face, nodes, uv, tris))
    return out


def sample_shape(shape: Any, n_points: int, rng: np.random.Generator, *,
                 deflection: float = 0.002) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r"""``n_points`` area-uniform points on the faces of a B-rep solid with their exact normals.

    See the module docstring: triangles of a fine triangulation drawn by area, uniform points in
    them mapped to surface parameters, position and normal evaluated on the surface
    (:math:`x = S(u, v)`, :math:`n = \pm S_u \times S_v / \lVert S_u \times S_v \rVert`, the sign
    from the face orientation: outward for a valid solid), and a rejection step that corrects the
    density to exactly uniform in area.

    Args:
        shape: A ``build123d`` shape or an OCP ``TopoDS_Shape``.
        n_points: Number of samples.
        rng: Random stream.
        deflection: Linear deflection of the locating mesh relative to the bounding-box diagonal.

    Returns:
        ``(pos, normal, face_id, face_type)``: float64 ``[n, 3]``, float64 ``[n, 3]`` (unit),
        int64 ``[n]`` (index of the face in ``TopExp_Explorer`` order), int64 ``[n]``
        (:data:`SURFACE_TYPES` code). Coordinates are those of the shape (not normalised).
    """
    check_int("n_points", n_points, 1)
    check_real("deflection", deflection, 0.0, strict=True)
    check_instance("rng", rng, np.random.Generator, "a numpy.random.Generator")
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 1:
        raise ValueError(f"n_points: expected a positive int, got {n_points!r}")
    wrapped = getattr(shape, "wrapped", shape)
    diag = _bbox_diagonal(wrapped)
    faces = _faces_triangulated(wrapped, deflection * diag)
    tri_face_a, tri_idx_a, area_a = _triangle_table(faces)
    prob = area_a / area_a.sum()
    evaluator = _FaceEvaluator(faces, diag)
    pos_l, nrm_l, fid_l, w_l, u_l = [], [], [], [], []
    have = 0
    keep = np.zeros(0, dtype=bool)
    for _round in range(64):
        m = int((n_points - have) * 1.1) + 16
        t = rng.choice(len(prob), size=m, p=prob)
        r1, r2 = rng.random(m), rng.random(m)
        flip = r1 + r2 > 1
        r1, r2 = np.where(flip, 1 - r1, r1), np.where(flip, 1 - r2, r2)
        for f in np.unique(tri_face_a[t]):
            sel = np.nonzero(tri_face_a[t] == f)[0]
            xyz, nrm, w = evaluator(int(f), tri_idx_a[t[sel]], r1[sel, None], r2[sel, None], area_a[t[sel]])
            pos_l.append(xyz)
            nrm_l.append(nrm)
            fid_l.append(np.full(len(w), f))
            w_l.append(w)
            u_l.append(rng.random(len(w)))  # one uniform per candidate, drawn once
        w_all, u_all = np.concatenate(w_l), np.concatenate(u_l)
        # rejection against the largest weight seen: accept candidate j iff u_j * max(w) <= w_j
        keep = u_all * w_all.max() <= w_all
        have = int(keep.sum())
        if have >= n_points:
            break
    else:  # pragma: no cover - needs a pathological parametrisation
        raise RuntimeError("sample_shape: rejection sampling did not converge")
    pos, nrm, fid = np.concatenate(pos_l)[keep], np.concatenate(nrm_l)[keep], np.concatenate(fid_l)[keep]
    # a random subset of the accepted points (candidates are grouped by face)
    pick = rng.permutation(len(pos))[:n_points]
    ftype = np.array([evaluator.adaptors[int(f)][2] for f in fid[pick]], dtype=np.int64)
    return pos[pick], nrm[pick], fid[pick].astype(np.int64), ftype


def _bbox_diagonal(wrapped: Any) -> float:
    """The bounding-box diagonal of an OCP shape (``> 0``, else a ``ValueError``)."""
    from OCP.Bnd import Bnd_Box  # noqa: PLC0415
    from OCP.BRepBndLib import BRepBndLib  # noqa: PLC0415

    box = Bnd_Box()
    BRepBndLib.Add_s(wrapped, box)
    lo, hi = np.array(box.CornerMin().Coord()), np.array(box.CornerMax().Coord())
    diag = float(np.linalg.norm(hi - lo))
    if not diag > 0:
        raise ValueError("shape: empty or degenerate bounding box")
    return diag


def _triangle_table(faces: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every triangle of the locating mesh: its face, its index in the face and its 3-D area (faces
    without triangles left out)."""
    tri_face, tri_idx, areas = [], [], []
    for f, (_, nodes, _, tris) in enumerate(faces):
        if len(tris) == 0:
            continue
        a = 0.5 * np.linalg.norm(np.cross(nodes[tris[:, 1]] - nodes[tris[:, 0]], nodes[tris[:, 2]] - nodes[tris[:, 0]]), axis=1)
        tri_face.append(np.full(len(tris), f))
        tri_idx.append(np.arange(len(tris)))
        areas.append(a)
    if not areas:
        raise ValueError("shape: no triangulated faces")
    return np.concatenate(tri_face), np.concatenate(tri_idx), np.concatenate(areas)


class _FaceEvaluator:
    r"""Candidate points of :func:`sample_shape` on one face: barycentric points of its triangles mapped to
    surface parameters, evaluated on the surface (position, outward unit normal) with their density
    correction weight ``w = J A_uv / A_3d`` (1 for planes); degenerate candidates are dropped. Surface
    adaptors are built once per face."""

    def __init__(self, faces: list, diag: float):
        from OCP.gp import gp_Pnt, gp_Vec  # noqa: PLC0415

        self.faces, self.diag = faces, diag
        self.adaptors: dict[int, tuple[Any, float, int]] = {}
        self.P, self.DU, self.DV = gp_Pnt(), gp_Vec(), gp_Vec()

    def _adaptor(self, f: int, face: Any) -> tuple[Any, float, int]:
        from OCP.BRepAdaptor import BRepAdaptor_Surface  # noqa: PLC0415
        from OCP.TopAbs import TopAbs_REVERSED  # noqa: PLC0415

        if f not in self.adaptors:
            ad = BRepAdaptor_Surface(face)
            self.adaptors[f] = (ad, -1.0 if face.Orientation() == TopAbs_REVERSED else 1.0, _surface_code(ad.GetType()))
        return self.adaptors[f]

    def __call__(self, f: int, tri: np.ndarray, b1: np.ndarray, b2: np.ndarray,
                 a3: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        face, nodes, uv, tris = self.faces[f]
        tt = tris[tri]
        uvp = uv[tt[:, 0]] + b1 * (uv[tt[:, 1]] - uv[tt[:, 0]]) + b2 * (uv[tt[:, 2]] - uv[tt[:, 0]])
        e1, e2 = uv[tt[:, 1]] - uv[tt[:, 0]], uv[tt[:, 2]] - uv[tt[:, 0]]
        auv = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
        ad, sign, _ = self._adaptor(f, face)
        P, DU, DV = self.P, self.DU, self.DV
        xyz = np.empty((len(tt), 3))
        nn = np.empty((len(tt), 3))
        for j, (u, v) in enumerate(uvp):
            ad.D1(float(u), float(v), P, DU, DV)
            xyz[j] = P.Coord()
            nn[j] = DU.Crossed(DV).Coord()
        jac = np.linalg.norm(nn, axis=1)
        good = (jac > 1e-14 * self.diag * self.diag) & (auv > 0) & (a3 > 0)
        w = jac[good] * auv[good] / a3[good]
        return xyz[good], sign * nn[good] / jac[good, None], w
