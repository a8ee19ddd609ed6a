"""A small on-disk cache for generated data sets: a dict of numpy arrays plus a JSON manifest.

Every entry lives in ``<root>/<name>/<key>.npz`` with its manifest ``<root>/<name>/<key>.json``.
The key is a hash of everything that determines the data::

    key = sha256(canonical_json({"name": name, "format_version": v, "params": params}))[:20]

so any changed generation parameter (or a bump of the generator's format version) gives a different
file and stale data is never reused. The manifest records the parameters, the format version, the
names/dtypes/shapes of the arrays and a sha256 checksum of their contents (see
:func:`arrays_checksum`); on load the checksum is recomputed, so a truncated or modified file is
detected (then rebuilt with a warning, or reported with :class:`CacheCorruptedError`).

Writes are atomic: each file is written to a temporary file in the same directory and moved into place
with :func:`os.replace`; the manifest is written last, so a reader never sees a manifest whose arrays
are incomplete. Concurrent writers of the same entry write identical contents, the last one wins.

The cache directory is ``root`` if given, else ``$EQUIFRAME_CACHE`` if set, else
``~/.cache/equiframe``.

Example:
    >>> def build():
    ...     return {"x": np.arange(10.0)}
    >>> arrays = load_or_build("toy", {"n": 10, "seed": 0}, build, format_version=1)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import uuid
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "CacheCorruptedError",
    "CacheEntry",
    "OnCorrupt",
    "arrays_checksum",
    "cache_entry",
    "cache_key",
    "canonical_json",
    "load_arrays_npz",
    "load_or_build",
    "lookup",
    "resolve_cache_dir",
    "save_arrays_npz",
    "store",
    "write_json_atomic",
]

OnCorrupt = Literal["rebuild", "raise"]
PathLike = str | os.PathLike

#: Version of the manifest layout written by this module (not of any data set).
MANIFEST_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class CacheCorruptedError(RuntimeError):
    """A cache entry exists but its manifest or arrays do not check out (bad checksum, unreadable)."""


def resolve_cache_dir(root: PathLike | None = None) -> Path:
    """The cache root: ``root`` if given, else ``$EQUIFRAME_CACHE`` if set (non-empty), else
    ``~/.cache/equiframe``. The directory is not created here."""
    if root is not None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root: expected a str or path-like, got {type(root).__name__}")
        return Path(root).expanduser()
    env = os.environ.get("EQUIFRAME_CACHE", "")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/equiframe").expanduser()


def canonical_json(obj: Any) -> str:
    """Deterministic JSON text of ``obj`` (sorted keys, no whitespace, finite floats only).

    Raises:
        TypeError: ``obj`` holds something that is not JSON-serialisable (after converting numpy
            scalars and tuples), or a non-finite float.
    """
    try:
        return json.dumps(_to_jsonable(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValueError as err:  # NaN / inf
        raise TypeError(f"params: only finite floats can be hashed ({err})") from None


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"params: keys must be str, got {type(k).__name__} ({k!r})")
            out[k] = _to_jsonable(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"params: value {obj!r} of type {type(obj).__name__} is not JSON-serialisable")


def cache_key(name: str, params: Mapping[str, Any], format_version: int) -> str:
    """The cache key: the first 20 hex digits of ``sha256(canonical_json({name, format_version,
    params}))``. Equal inputs give equal keys on every machine and run."""
    _check_name(name)
    _check_version(format_version)
    if not isinstance(params, Mapping):
        raise TypeError(f"params: expected a mapping, got {type(params).__name__}")
    text = canonical_json({"name": name, "format_version": format_version, "params": params})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def arrays_checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 of a dict of arrays, independent of insertion order and memory layout.

    For each name in sorted order the hash is fed ``name``, the dtype string (e.g. ``<f8``), the shape
    and the raw bytes of the C-contiguous array.

    Raises:
        TypeError: a value is not a numpy array or has dtype ``object``.
    """
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = arrays[name]
        _check_array(name, a)
        h.update(name.encode("utf-8") + b"\0")
        h.update(a.dtype.str.encode("ascii") + b"\0")
        h.update(repr(tuple(a.shape)).encode("ascii") + b"\0")
        h.update(np.ascontiguousarray(a).tobytes())  # (memoryview.cast fails on zero-size arrays)
    return h.hexdigest()


def _check_array(name: str, a: Any) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"arrays: keys must be non-empty str, got {name!r}")
    if not isinstance(a, np.ndarray):
        raise TypeError(f"arrays[{name!r}]: expected a numpy.ndarray, got {type(a).__name__}")
    if a.dtype.hasobject:
        raise TypeError(f"arrays[{name!r}]: object arrays cannot be cached")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"name: expected letters, digits, '_', '.', '-' (not starting with a symbol), got {name!r}")


def _check_version(format_version: int) -> None:
    if isinstance(format_version, bool) or not isinstance(format_version, int) or format_version < 0:
        raise TypeError(f"format_version: expected a non-negative int, got {format_version!r}")


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique temp name in the same directory (same file system: os.replace is atomic); mode 0o666 so
    # the umask applies as for any ordinary file (tempfile.mkstemp would force 0o600)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_arrays_npz(path: PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Atomically write ``arrays`` to an uncompressed ``.npz`` file (temp file + ``os.replace``)."""
    if not arrays:
        raise ValueError("arrays: expected at least one array")
    for name, a in arrays.items():
        _check_array(name, a)
    _atomic_write(Path(path), lambda f: np.savez(f, **dict(arrays)), "wb")


def load_arrays_npz(path: PathLike) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file into memory (``allow_pickle=False``).

    Raises:
        FileNotFoundError: no such file.
        CacheCorruptedError: the file is not a readable ``.npz`` archive.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        raise CacheCorruptedError(f"cannot read cached arrays {path}: {err}") from err


def write_json_atomic(path: PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented, key-sorted JSON."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    _atomic_write(Path(path), lambda f: f.write(text), "w")


@dataclass(frozen=True)
class CacheEntry:
    """Where one cache entry lives.

    Attributes:
        name: the data-set name (sub-directory of the cache root).
        key: the hash key (see :func:`cache_key`).
        directory: ``<root>/<name>``.
    """

    name: str
    key: str
    directory: Path

    @property
    def npz_path(self) -> Path:
        return self.directory / f"{self.key}.npz"

    @property
    def manifest_path(self) -> Path:
        return self.directory / f"{self.key}.json"

    def exists(self) -> bool:
        """Both the arrays and the manifest are present (contents unchecked)."""
        return self.npz_path.is_file() and self.manifest_path.is_file()

    def remove(self) -> None:
        """Delete the entry's files (manifest first); missing files are ignored."""
        for p in (self.manifest_path, self.npz_path):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


def cache_entry(
    name: str, params: Mapping[str, Any], format_version: int, root: PathLike | None = None
) -> CacheEntry:
    """The :class:`CacheEntry` for these parameters (nothing is read or written)."""
    key = cache_key(name, params, format_version)
    return CacheEntry(name=name, key=key, directory=resolve_cache_dir(root) / name)


def lookup(
    name: str, params: Mapping[str, Any], format_version: int, root: PathLike | None = None
) -> dict[str, np.ndarray] | None:
    """Load a verified cache entry, or ``None`` if there is none.

    Returns:
        The arrays, after checking that the manifest matches ``name``/``params``/``format_version``
        and that the stored arrays have the manifest's names, dtypes, shapes and sha256 checksum.
        ``None`` when the arrays file or the manifest is missing.

    Raises:
        CacheCorruptedError: the entry exists but does not check out.
    """
    entry = cache_entry(name, params, format_version, root)
    if not entry.exists():
        return None
    try:
        manifest = json.loads(entry.manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CacheCorruptedError(f"unreadable manifest {entry.manifest_path}: {err}") from err
    expected = {"name": name, "key": entry.key, "format_version": format_version,
                "params": json.loads(canonical_json(params))}
    if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in expected.items()):
        raise CacheCorruptedError(
            f"manifest {entry.manifest_path} does not match the requested name/params/format version"
        )
    arrays = load_arrays_npz(entry.npz_path)
    described = {k: {"dtype": a.dtype.str, "shape": list(a.shape)} for k, a in arrays.items()}
    if manifest.get("arrays") != described:
        raise CacheCorruptedError(
            f"arrays in {entry.npz_path} do not match the manifest (names, dtypes or shapes differ)"
        )
    checksum = arrays_checksum(arrays)
    if manifest.get("sha256") != checksum:
        raise CacheCorruptedError(
            f"checksum mismatch for {entry.npz_path}: manifest {manifest.get('sha256')}, file {checksum}"
        )
    return arrays


def store(
    name: str,
    params: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    format_version: int,
    root: PathLike | None = None,
) -> CacheEntry:
    """Write ``arrays`` and their manifest atomically (arrays first, manifest last)."""
    entry = cache_entry(name, params, format_version, root)
    arrays = dict(arrays)
    checksum = arrays_checksum(arrays)  # also validates the arrays
    save_arrays_npz(entry.npz_path, arrays)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "name": name,
        "key": entry.key,
        "format_version": format_version,
        "params": json.loads(canonical_json(params)),
        "arrays": {k: {"dtype": a.dtype.str, "shape": list(a.shape)} for k, a in arrays.items()},
        "sha256": checksum,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "numpy_version": np.__version__,
    }
    write_json_atomic(entry.manifest_path, manifest)
    return entry


def load_or_build(
    name: str,
    params: Mapping[str, Any],
    build: Callable[[], Mapping[str, np.ndarray]],
    *,
    format_version: int,
    root: PathLike | None = None,
    on_corrupt: OnCorrupt = "rebuild",
) -> dict[str, np.ndarray]:
    """Return the cached arrays for ``params``, building and storing them on a miss.

    Args:
        name: data-set name, used as sub-directory (``[A-Za-z0-9_.-]``).
        params: every parameter that determines the data (JSON-serialisable; tuples become lists).
        build: called without arguments on a miss; returns a dict of numpy arrays.
        format_version: version of the generator's output format; bump it when the generator changes.
        root: cache root (see :func:`resolve_cache_dir`).
        on_corrupt: ``"rebuild"``: warn (``RuntimeWarning``) and rebuild a corrupted entry;
            ``"raise"``: raise :class:`CacheCorruptedError`.

    Returns:
        A dict of numpy arrays (freshly built or loaded and checksum-verified).
    """
    if on_corrupt not in ("rebuild", "raise"):
        raise ValueError(f"on_corrupt: expected 'rebuild' or 'raise', got {on_corrupt!r}")
    try:
        cached = lookup(name, params, format_version, root)
    except CacheCorruptedError as err:
        if on_corrupt == "raise":
            raise CacheCorruptedError(f"{err} (delete the file or pass on_corrupt='rebuild')") from err
        warnings.warn(f"{err}; rebuilding the cache entry", RuntimeWarning, stacklevel=2)
        cached = None
    if cached is not None:
        return cached
    arrays = build()
    if not isinstance(arrays, Mapping):
        raise TypeError(f"build: expected it to return a mapping of arrays, got {type(arrays).__name__}")
    arrays = dict(arrays)
    store(name, params, arrays, format_version, root)
    return arrays
