"""Mesh file readers: OBJ, OFF, STL (ASCII and binary) and PLY (ASCII and binary), parsed with numpy.

Split out of :mod:`equiframe.datasets.mesh_io`, which re-exports the public names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from equiframe.datasets._text_io import PathLike, _check_file, _check_finite_rows, _fan, _floats, _int, _lines, _mesh
from equiframe.datasets.shapes import Mesh

def read_obj(path: PathLike) -> Mesh:
    """Wavefront OBJ: ``v x y z [w] [r g b]`` and ``f a b c ...`` lines.

    Face entries may be ``i``, ``i/t``, ``i//n`` or ``i/t/n`` (only ``i`` is used); indices are
    1-based, negative ones count back from the last vertex defined so far. Polygons are
    fan-triangulated ``(p0, p_i, p_{i+1})``. All other statements (``vt``, ``vn``, ``g``, ``o``,
    ``s``, ``usemtl``, ``mtllib``, ``l``, ...) are ignored; ``#`` starts a comment and a trailing
    backslash continues a line.

    Returns:
        :class:`Mesh` with float64 vertices and int64 faces.

    Shapes:
        vertices: ``[V, 3]``; faces: ``[F, 3]``.
    """
    p = _check_file(path)
    vertices: list[list[float]] = []
    faces: list[tuple[int, int, int]] = []
    face_lines: list[int] = []
    pending = ""
    pending_line = 0
    for lineno, line in _lines(p):
        if line.endswith("\\"):
            if not pending:
                pending_line = lineno
            pending += line[:-1] + " "
            continue
        if pending:
            line, lineno, pending = pending + line, pending_line, ""
        toks = line.split()
        tag = toks[0]
        if tag == "v":
            if len(toks) < 4:
                raise ValueError(f"{p}:{lineno}: vertex needs 3 coordinates, got {len(toks) - 1}")
            vertices.append(_floats(toks[1:4], p, lineno, "vertex"))
        elif tag == "f":
            if len(toks) < 4:
                raise ValueError(f"{p}:{lineno}: face needs at least 3 vertices, got {len(toks) - 1}")
            poly = []
            for tok in toks[1:]:
                i = _int(tok.split("/", 1)[0], p, lineno, "face vertex index")
                if i == 0:
                    raise ValueError(f"{p}:{lineno}: OBJ indices are 1-based, got 0")
                if i < 0:
                    i = len(vertices) + i
                    if i < 0:
                        raise ValueError(f"{p}:{lineno}: negative index {tok!r} refers before the first vertex")
                else:
                    i -= 1
                poly.append(i)
            tris = _fan(poly)
            faces.extend(tris)
            face_lines.extend([lineno] * len(tris))
    mesh = _mesh(p, vertices, faces)
    bad = (mesh.faces >= mesh.vertices.shape[0]).any(axis=1)
    if bad.any():
        lineno = face_lines[int(np.argmax(bad))]
        raise ValueError(f"{p}:{lineno}: face index out of range (the file has {mesh.vertices.shape[0]} vertices)")
    return mesh


_OFF_HEADER = re.compile(r"^(ST)?C?N?OFF(?P<rest>.*)$")


def _next_line(it: Iterator[tuple[int, str]], p: Path, lineno: int, done: int, total: int,
               what: str) -> tuple[int, str]:
    """The next numbered line of ``it``; a truncated file raises with how many ``what`` were read."""
    try:
        return next(it)
    except StopIteration:
        raise ValueError(f"{p}:{lineno}: unexpected end of file: {done} of {total} {what} read") from None


def read_off(path: PathLike) -> Mesh:
    """Object File Format (``OFF``, also ``COFF`` / ``NOFF`` / ``STOFF`` variants).

    Layout: header ``OFF``, counts ``n_vertices n_faces [n_edges]``, ``n_vertices`` lines with at
    least ``x y z`` (extra columns such as colours or normals are ignored), ``n_faces`` lines
    ``k i_1 ... i_k [colour]`` with 0-based indices; polygons are fan-triangulated. Tolerated:
    ``#`` comments and blank lines anywhere, counts on the header line, including the common
    glued form ``OFF490 914 0`` (ModelNet), and a missing header. Lines after the faces are
    ignored.

    Returns:
        :class:`Mesh` with float64 vertices and int64 faces.

    Shapes:
        vertices: ``[V, 3]``; faces: ``[F, 3]``.
    """
    p = _check_file(path)
    it = _lines(p)
    try:
        lineno, line = next(it)
    except StopIteration:
        raise ValueError(f"{p}: empty OFF file") from None
    m = _OFF_HEADER.match(line)
    if m is not None:
        rest = m.group("rest").strip()
        if not rest:
            try:
                lineno, rest = next(it)
            except StopIteration:
                raise ValueError(f"{p}:{lineno}: missing the counts line after the OFF header") from None
    elif line[:1].isalpha():
        raise ValueError(f"{p}:{lineno}: unsupported OFF header {line.split()[0]!r} (expected OFF, COFF, NOFF, ...)")
    else:
        rest = line  # headerless file: the first line holds the counts
    counts = rest.split()
    if len(counts) < 2:
        raise ValueError(f"{p}:{lineno}: expected 'n_vertices n_faces [n_edges]', got {rest!r}")
    n_v = _int(counts[0], p, lineno, "vertex count")
    n_f = _int(counts[1], p, lineno, "face count")
    if n_v < 0 or n_f < 0:
        raise ValueError(f"{p}:{lineno}: negative counts {n_v}, {n_f}")
    tokens: list[str] = []
    v_lines: list[int] = []
    for _ in range(n_v):
        lineno, line = _next_line(it, p, lineno, len(v_lines), n_v, "vertices")
        toks = line.split()
        if len(toks) < 3:
            raise ValueError(f"{p}:{lineno}: vertex needs 3 coordinates, got {len(toks)}")
        tokens.extend(toks[:3])
        v_lines.append(lineno)
    try:
        vertices = np.array(tokens, dtype=np.float64).reshape(-1, 3)
    except ValueError:
        for r, ln in enumerate(v_lines):
            _floats(tokens[3 * r : 3 * r + 3], p, ln, "vertex")
        raise  # pragma: no cover
    _check_finite_rows(p, vertices, v_lines)
    faces: list[tuple[int, int, int]] = []
    n_read = 0
    for _ in range(n_f):
        lineno, line = _next_line(it, p, lineno, n_read, n_f, "faces")
        toks = line.split()
        k = _int(toks[0], p, lineno, "face size")
        if k < 3 or len(toks) < k + 1:
            raise ValueError(f"{p}:{lineno}: face needs 'k i_1 ... i_k' with k >= 3, got {line[:80]!r}")
        poly = [_int(t, p, lineno, "face vertex index") for t in toks[1 : k + 1]]
        if min(poly) < 0 or max(poly) >= n_v:
            raise ValueError(f"{p}:{lineno}: face index out of range [0, {n_v})")
        faces.extend(_fan(poly))
        n_read += 1
    return _mesh(p, vertices, faces)


_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


class _PlyProperty(NamedTuple):
    name: str
    dtype: str  # value type
    count_dtype: str | None  # list length type, None for scalars


class _PlyElement(NamedTuple):
    name: str
    count: int
    properties: list[_PlyProperty]


def _parse_ply_header(p: Path, data: bytes) -> tuple[str, list[_PlyElement], int, int]:
    """Returns (format, elements, byte offset of the body, number of header lines)."""
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"{p}:1: not a PLY file (needs 'ply' ... 'end_header')")
    nl = data.find(b"\n", end)
    body_start = len(data) if nl < 0 else nl + 1
    header = data[:end].decode("ascii", errors="replace").splitlines()
    fmt = ""
    elements: list[_PlyElement] = []
    for lineno, raw in enumerate(header, start=1):
        toks = raw.split()
        if not toks or toks[0] in ("ply", "comment", "obj_info"):
            continue
        if toks[0] == "format":
            if len(toks) < 2 or toks[1] not in ("ascii", "binary_little_endian", "binary_big_endian"):
                raise ValueError(f"{p}:{lineno}: unknown PLY format {raw.strip()!r}")
            fmt = toks[1]
        elif toks[0] == "element":
            if len(toks) != 3:
                raise ValueError(f"{p}:{lineno}: expected 'element <name> <count>', got {raw.strip()!r}")
            elements.append(_PlyElement(toks[1], _int(toks[2], p, lineno, "element count"), []))
        elif toks[0] == "property":
            if not elements:
                raise ValueError(f"{p}:{lineno}: property before any element")
            if len(toks) == 5 and toks[1] == "list":
                if toks[2] not in _PLY_TYPES or toks[3] not in _PLY_TYPES:
                    raise ValueError(f"{p}:{lineno}: unknown PLY type in {raw.strip()!r}")
                prop = _PlyProperty(toks[4], _PLY_TYPES[toks[3]], _PLY_TYPES[toks[2]])
            elif len(toks) == 3 and toks[1] in _PLY_TYPES:
                prop = _PlyProperty(toks[2], _PLY_TYPES[toks[1]], None)
            else:
                raise ValueError(f"{p}:{lineno}: malformed property line {raw.strip()!r}")
            elements[-1].properties.append(prop)
        else:
            raise ValueError(f"{p}:{lineno}: unexpected PLY header line {raw.strip()!r}")
    if not fmt:
        raise ValueError(f"{p}: PLY header has no 'format' line")
    return fmt, elements, body_start, len(header) + 1


def _ply_extract(p: Path, elements: dict[str, Any]) -> Mesh:
    if "vertex" not in elements:
        raise ValueError(f"{p}: PLY file has no 'vertex' element")
    vert = elements["vertex"]
    for c in ("x", "y", "z"):
        if c not in vert:
            raise ValueError(f"{p}: PLY vertex element has no property {c!r}")
    vertices = np.stack([np.asarray(vert[c], dtype=np.float64) for c in ("x", "y", "z")], axis=1)
    if not np.isfinite(vertices).all():
        raise ValueError(f"{p}: PLY vertex {int(np.argmax(~np.isfinite(vertices).all(axis=1)))} is non-finite")
    face = elements.get("face", {})
    polys = face.get("vertex_indices", face.get("vertex_index"))
    if polys is None:
        raise ValueError(f"{p}: PLY file has no face element with a 'vertex_indices' list")
    tris: list[tuple[int, int, int]] = []
    if isinstance(polys, np.ndarray):  # fixed-size polygons [F, k]
        if polys.shape[1] < 3:
            raise ValueError(f"{p}: PLY faces need at least 3 vertices")
        k = polys.shape[1]
        f = np.stack([np.stack([polys[:, 0], polys[:, i], polys[:, i + 1]], axis=1) for i in range(1, k - 1)], axis=1)
        faces = f.reshape(-1, 3)
        if not np.issubdtype(faces.dtype, np.integer):
            raise ValueError(f"{p}: PLY face indices must be integers, got {faces.dtype}")
        faces = faces.astype(np.int64)
    else:
        for j, poly in enumerate(polys):
            if len(poly) < 3:
                raise ValueError(f"{p}: PLY face {j} has {len(poly)} vertices (needs >= 3)")
            tris.extend(_fan([int(i) for i in poly]))
        faces = np.asarray(tris, dtype=np.int64).reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= vertices.shape[0]):
        raise ValueError(f"{p}: PLY face index out of range [0, {vertices.shape[0]})")
    return _mesh(p, vertices, faces)


def read_ply(path: PathLike) -> Mesh:
    """Stanford PLY mesh: ``vertex`` element with ``x y z`` and ``face`` element with a
    ``vertex_indices`` (or ``vertex_index``) list; polygons are fan-triangulated.

    ASCII files are parsed line by line (errors carry the line number); ``binary_little_endian``
    and ``binary_big_endian`` bodies are decoded with numpy (other elements and properties are
    skipped). Extra properties (normals, colours, ...) are ignored.

    Returns:
        :class:`Mesh` with float64 vertices and int64 faces.

    Shapes:
        vertices: ``[V, 3]``; faces: ``[F, 3]``.
    """
    p = _check_file(path)
    data = p.read_bytes()
    fmt, elements, body_start, header_lines = _parse_ply_header(p, data)
    if fmt == "ascii":
        return _ply_extract(p, _read_ply_ascii(p, data[body_start:], elements, header_lines))
    endian = "<" if fmt.endswith("little_endian") else ">"
    return _ply_extract(p, _read_ply_binary(p, data[body_start:], elements, endian))


def _read_ply_ascii(p: Path, body: bytes, elements: list[_PlyElement], header_lines: int) -> dict[str, Any]:
    lines = body.decode("ascii", errors="replace").splitlines()
    pos = 0
    out: dict[str, Any] = {}

    def next_line() -> tuple[int, list[str]]:
        nonlocal pos
        while pos < len(lines):
            pos += 1
            toks = lines[pos - 1].split()
            if toks:
                return header_lines + pos, toks
        raise ValueError(f"{p}:{header_lines + pos}: unexpected end of file in element {el.name!r}")

    for el in elements:
        scalars = all(pr.count_dtype is None for pr in el.properties)
        values: dict[str, list[Any]] = {pr.name: [] for pr in el.properties}
        for _ in range(el.count):
            lineno, toks = next_line()
            if scalars and len(toks) != len(el.properties):
                raise ValueError(
                    f"{p}:{lineno}: element {el.name!r} expects {len(el.properties)} values, got {len(toks)}"
                )
            j = 0
            for pr in el.properties:
                if pr.count_dtype is None:
                    if j >= len(toks):
                        raise ValueError(f"{p}:{lineno}: too few values for element {el.name!r}")
                    values[pr.name].append(_ply_value(toks[j], pr.dtype, p, lineno))
                    j += 1
                else:
                    if j >= len(toks):
                        raise ValueError(f"{p}:{lineno}: missing list length for {pr.name!r}")
                    k = _int(toks[j], p, lineno, f"list length of {pr.name!r}")
                    if k < 0 or j + 1 + k > len(toks):
                        raise ValueError(
                            f"{p}:{lineno}: list {pr.name!r} declares {k} values, {len(toks) - j - 1} present"
                        )
                    values[pr.name].append([_ply_value(t, pr.dtype, p, lineno) for t in toks[j + 1 : j + 1 + k]])
                    j += 1 + k
            if j != len(toks):
                raise ValueError(f"{p}:{lineno}: {len(toks) - j} extra values for element {el.name!r}")
            if el.name == "vertex" and scalars:
                row = [values[c][-1] for c in ("x", "y", "z") if c in values]
                if not all(math.isfinite(v) for v in row):
                    raise ValueError(f"{p}:{lineno}: non-finite vertex coordinate")
        out[el.name] = values
    return out


def _ply_value(tok: str, dtype: str, p: Path, lineno: int) -> float | int:
    if dtype.startswith("f"):
        try:
            return float(tok)
        except ValueError:
            raise ValueError(f"{p}:{lineno}: cannot parse {tok!r} as a number") from None
    return _int(tok, p, lineno, "integer property")


def _read_ply_binary(p: Path, body: bytes, elements: list[_PlyElement], endian: str) -> dict[str, Any]:
    offset = 0
    out: dict[str, Any] = {}
    for el in elements:
        if all(pr.count_dtype is None for pr in el.properties):
            dt = np.dtype([(pr.name, endian + pr.dtype) for pr in el.properties])
            need = dt.itemsize * el.count
            if offset + need > len(body):
                raise ValueError(f"{p}: binary PLY truncated in element {el.name!r}")
            arr = np.frombuffer(body, dtype=dt, count=el.count, offset=offset)
            out[el.name] = {name: arr[name] for name in dt.names or ()}
            offset += need
            continue
        # Elements with lists: fast path when every list has the length of the first one.
        first = _ply_fixed_dtype(p, body, offset, el, endian)
        if first is not None:
            dt, names = first
            arr = np.frombuffer(body, dtype=dt, count=el.count, offset=offset)
            counts_ok = all((arr[f"{n}__count"] == arr[n].shape[1]).all() for n in names)
            if counts_ok:
                out[el.name] = {pr.name: arr[pr.name] for pr in el.properties}
                offset += dt.itemsize * el.count
                continue
        values: dict[str, list[Any]] = {pr.name: [] for pr in el.properties}
        for _ in range(el.count):
            for pr in el.properties:
                if pr.count_dtype is None:
                    dt1 = np.dtype(endian + pr.dtype)
                    if offset + dt1.itemsize > len(body):
                        raise ValueError(f"{p}: binary PLY truncated in element {el.name!r}")
                    values[pr.name].append(np.frombuffer(body, dt1, 1, offset)[0])
                    offset += dt1.itemsize
                else:
                    cdt = np.dtype(endian + pr.count_dtype)
                    if offset + cdt.itemsize > len(body):
                        raise ValueError(f"{p}: binary PLY truncated in element {el.name!r}")
                    k = int(np.frombuffer(body, cdt, 1, offset)[0])
                    offset += cdt.itemsize
                    vdt = np.dtype(endian + pr.dtype)
                    if offset + k * vdt.itemsize > len(body):
                        raise ValueError(f"{p}: binary PLY truncated in element {el.name!r}")
                    values[pr.name].append(np.frombuffer(body, vdt, k, offset))
                    offset += k * vdt.itemsize
        out[el.name] = values
    return out


def _ply_fixed_dtype(
    p: Path, body: bytes, offset: int, el: _PlyElement, endian: str
) -> tuple[np.dtype, list[str]] | None:
    """Structured dtype of ``el`` assuming every list has the length found in the first record."""
    fields: list[tuple[str, Any]] = []
    names = []
    off = offset
    for pr in el.properties:
        if pr.count_dtype is None:
            fields.append((pr.name, endian + pr.dtype))
            off += np.dtype(pr.dtype).itemsize
        else:
            cdt = np.dtype(endian + pr.count_dtype)
            if off + cdt.itemsize > len(body) or el.count == 0:
                return None
            k = int(np.frombuffer(body, cdt, 1, off)[0])
            fields.append((f"{pr.name}__count", cdt))
            fields.append((pr.name, endian + pr.dtype, (k,)))
            names.append(pr.name)
            off += cdt.itemsize + k * np.dtype(pr.dtype).itemsize
    dt = np.dtype(fields)
    if offset + dt.itemsize * el.count > len(body):
        return None
    return dt, names


def read_stl(path: PathLike) -> Mesh:
    """STL triangle soup, binary (80-byte header, ``uint32`` count, 50 bytes per triangle) or ASCII
    (``solid`` ... ``facet normal`` / ``vertex x y z`` ... ``endsolid``). Vertices are not merged (three per
    triangle); the stored facet normals are ignored.

    Shapes:
        vertices: ``[3 F, 3]`` float64; faces: ``[F, 3]`` int64.
    """
    p = _check_file(path)
    data = p.read_bytes()
    if len(data) >= 84:
        n = int(np.frombuffer(data, "<u4", 1, 80)[0])
        if len(data) == 84 + 50 * n:
            rec = np.frombuffer(data, np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]), n, 84)
            vertices = rec["v"].reshape(-1, 3).astype(np.float64)
            if not np.isfinite(vertices).all():
                raise ValueError(f"{p}: non-finite vertex coordinate in triangle "
                                 f"{int(np.argmax(~np.isfinite(vertices).all(axis=1))) // 3}")
            return _mesh(p, vertices, np.arange(3 * n, dtype=np.int64).reshape(-1, 3))
    if not data.lstrip().lower().startswith(b"solid"):
        raise ValueError(f"{p}: not an STL file (binary size does not match its triangle count and no 'solid' line)")
    verts: list[list[float]] = []
    for lineno, line in _lines(p, comment=None):
        toks = line.split()
        if toks[0].lower() == "vertex":
            if len(toks) != 4:
                raise ValueError(f"{p}:{lineno}: expected 'vertex x y z', got {line[:80]!r}")
            row = _floats(toks[1:], p, lineno, "vertex")
            if not all(math.isfinite(v) for v in row):
                raise ValueError(f"{p}:{lineno}: non-finite vertex coordinate")
            verts.append(row)
    if len(verts) % 3:
        raise ValueError(f"{p}: {len(verts)} vertices is not a whole number of triangles")
    vertices = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
    return _mesh(p, vertices, np.arange(len(verts), dtype=np.int64).reshape(-1, 3))


def read_mesh(path: PathLike) -> Mesh:
    """Read an ``.obj``, ``.off``, ``.stl`` or ``.ply`` mesh (chosen by the case-insensitive suffix)."""
    p = _check_file(path)
    suffix = p.suffix.lower()
    readers = {".obj": read_obj, ".off": read_off, ".ply": read_ply, ".stl": read_stl}
    if suffix not in readers:
        raise ValueError(f"{p}: unsupported mesh format {suffix!r}; expected one of {sorted(readers)}")
    return readers[suffix](p)
