"""Low-level parsing helpers of the file readers (:mod:`equiframe.datasets.mesh_io`,
:mod:`equiframe.datasets.mesh_readers`): path checks, numbered text lines, float/int tokens with
``path:line:`` errors, polygon fans.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from equiframe.datasets.shapes import Mesh

PathLike = str | os.PathLike
PointCenter = Literal["none", "mean", "bbox"]
MeshCenter = Literal["none", "bbox", "area"]


# --------------------------------------------------------------------------------------------
# Low-level text helpers
# --------------------------------------------------------------------------------------------


def _check_file(path: PathLike) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or path-like, got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if not p.is_file():
        raise ValueError(f"{p}: not a regular file")
    return p


def _check_dir(path: PathLike) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"root must be a str or path-like, got {type(path).__name__}")
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no such directory")
    return p


def _lines(path: Path, comment: str | None = "#") -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped content) of the non-blank lines, comments removed."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if comment is not None:
            cut = raw.find(comment)
            if cut >= 0:
                raw = raw[:cut]
        line = raw.strip()
        if line:
            yield lineno, line


def _float_rows(path: Path, n_cols: int, what: str, comma: bool = False) -> np.ndarray:
    """Parse non-blank, non-comment lines of exactly ``n_cols`` numbers into ``[N, n_cols]`` float64."""
    tokens: list[str] = []
    linenos: list[int] = []
    for lineno, line in _lines(path):
        row = (line.replace(",", " ") if comma else line).split()
        if len(row) != n_cols:
            raise ValueError(f"{path}:{lineno}: expected {n_cols} columns ({what}), got {len(row)}: {line[:80]!r}")
        tokens.extend(row)
        linenos.append(lineno)
    if not linenos:
        raise ValueError(f"{path}: no data rows ({what})")
    try:
        data = np.array(tokens, dtype=np.float64).reshape(-1, n_cols)
    except ValueError:
        for r, lineno in enumerate(linenos):
            for tok in tokens[r * n_cols : (r + 1) * n_cols]:
                try:
                    float(tok)
                except ValueError:
                    raise ValueError(f"{path}:{lineno}: cannot parse {tok!r} as a number") from None
        raise  # pragma: no cover
    _check_finite_rows(path, data, linenos)
    return data


def _check_finite_rows(path: Path, data: np.ndarray, linenos: Sequence[int]) -> None:
    bad = ~np.isfinite(data).reshape(data.shape[0], -1).all(axis=1)
    if bad.any():
        r = int(np.argmax(bad))
        raise ValueError(f"{path}:{linenos[r]}: non-finite value (NaN or inf)")


def _int(tok: str, path: Path, lineno: int, what: str) -> int:
    try:
        return int(tok)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: cannot parse {tok!r} as an integer ({what})") from None


def _floats(toks: Sequence[str], path: Path, lineno: int, what: str) -> list[float]:
    try:
        vals = [float(t) for t in toks]
    except ValueError:
        bad = next(t for t in toks if not _is_float(t))
        raise ValueError(f"{path}:{lineno}: cannot parse {bad!r} as a number ({what})") from None
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{path}:{lineno}: non-finite value (NaN or inf) in {what}")
    return vals


def _is_float(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


def _fan(poly: Sequence[int]) -> list[tuple[int, int, int]]:
    """Fan triangulation ``(p0, p_i, p_{i+1})`` of a polygon."""
    return [(poly[0], poly[i], poly[i + 1]) for i in range(1, len(poly) - 1)]


def _mesh(path: Path, vertices: Any, faces: Any) -> Mesh:
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if v.shape[0] == 0:
        raise ValueError(f"{path}: mesh has no vertices")
    if f.shape[0] == 0:
        raise ValueError(f"{path}: mesh has no faces")
    return Mesh(v, f)
