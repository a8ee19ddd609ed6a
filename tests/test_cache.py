"""Tests of the generic on-disk array cache (equiframe.datasets._cache)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from equiframe.datasets import _cache
from equiframe.datasets._cache import CacheCorruptedError


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((4, 3)), "idx": np.arange(5, dtype=np.int32), "flag": np.array([True, False])}


class Counter:
    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.calls = 0
        self.arrays = arrays

    def __call__(self) -> dict[str, np.ndarray]:
        self.calls += 1
        return self.arrays


# ---------------------------------------------------------------- keys and checksums


def test_cache_key_deterministic_and_order_independent():
    k1 = _cache.cache_key("toy", {"a": 1, "b": 0.001, "c": [1, 2]}, 1)
    k2 = _cache.cache_key("toy", {"c": (1, 2), "b": 0.001, "a": 1}, 1)
    assert k1 == k2 and len(k1) == 20 and all(ch in "0123456789abcdef" for ch in k1)
    assert _cache.cache_key("toy", {"a": np.int64(1), "b": np.float64(0.001), "c": [1, 2]}, 1) == k1


@pytest.mark.parametrize(
    "name,params,version",
    [("toy", {"a": 2, "b": 0.001, "c": [1, 2]}, 1),
     ("toy", {"a": 1, "b": 0.0010000001, "c": [1, 2]}, 1),
     ("toy", {"a": 1, "b": 0.001, "c": [1, 2], "d": None}, 1),
     ("toy", {"a": 1, "b": 0.001, "c": [1, 2]}, 2),
     ("toy2", {"a": 1, "b": 0.001, "c": [1, 2]}, 1)],
)
def test_cache_key_changes_with_anything(name, params, version):
    assert _cache.cache_key(name, params, version) != _cache.cache_key("toy", {"a": 1, "b": 0.001, "c": [1, 2]}, 1)


def test_cache_key_rejects_bad_input():
    with pytest.raises(TypeError, match="params"):
        _cache.cache_key("toy", {"a": object()}, 1)
    with pytest.raises(TypeError, match="params"):
        _cache.cache_key("toy", {"a": float("nan")}, 1)
    with pytest.raises(TypeError, match="params"):
        _cache.cache_key("toy", {1: 2}, 1)
    with pytest.raises(TypeError, match="params"):
        _cache.cache_key("toy", [("a", 1)], 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        _cache.cache_key("../evil", {}, 1)
    with pytest.raises(TypeError, match="format_version"):
        _cache.cache_key("toy", {}, -1)


def test_checksum_properties():
    a = _arrays()
    c = _cache.arrays_checksum(a)
    assert c == _cache.arrays_checksum(dict(reversed(list(a.items()))))
    fortran = dict(a, x=np.asfortranarray(a["x"]))
    assert c == _cache.arrays_checksum(fortran)
    changed = dict(a, x=a["x"].copy())
    changed["x"][0, 0] += 1e-12
    assert _cache.arrays_checksum(changed) != c
    assert _cache.arrays_checksum(dict(a, x=a["x"].astype(np.float32))) != c
    assert _cache.arrays_checksum(dict(a, x=a["x"].reshape(3, 4))) != c
    assert _cache.arrays_checksum({"y" if k == "x" else k: v for k, v in a.items()}) != c
    with pytest.raises(TypeError, match="object"):
        _cache.arrays_checksum({"o": np.array([None, 1], dtype=object)})
    with pytest.raises(TypeError, match="numpy"):
        _cache.arrays_checksum({"l": [1, 2]})  # type: ignore[dict-item]


# ---------------------------------------------------------------- files


def test_npz_roundtrip_and_atomic(tmp_path: Path):
    a = _arrays()
    path = tmp_path / "sub" / "a.npz"
    _cache.save_arrays_npz(path, a)
    b = _cache.load_arrays_npz(path)
    assert set(b) == set(a)
    for k in a:
        assert b[k].dtype == a[k].dtype and np.array_equal(b[k], a[k])
    assert [p.name for p in path.parent.iterdir()] == ["a.npz"]  # no temp files left


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch):
    path = tmp_path / "a.npz"
    _cache.save_arrays_npz(path, {"x": np.zeros(3)})
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(_cache.np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        _cache.save_arrays_npz(path, {"x": np.ones(3)})
    assert path.read_bytes() == before  # old file untouched
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]


def test_load_npz_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        _cache.load_arrays_npz(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(CacheCorruptedError, match="bad.npz"):
        _cache.load_arrays_npz(bad)
    with pytest.raises(ValueError, match="arrays"):
        _cache.save_arrays_npz(tmp_path / "empty.npz", {})


def test_resolve_cache_dir(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("EQUIFRAME_CACHE", str(tmp_path / "env"))
    assert _cache.resolve_cache_dir() == tmp_path / "env"
    assert _cache.resolve_cache_dir(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("EQUIFRAME_CACHE")
    assert _cache.resolve_cache_dir() == Path("~/.cache/equiframe").expanduser()
    monkeypatch.setenv("EQUIFRAME_CACHE", "")
    assert _cache.resolve_cache_dir() == Path("~/.cache/equiframe").expanduser()
    with pytest.raises(TypeError, match="root"):
        _cache.resolve_cache_dir(3)  # type: ignore[arg-type]


# ---------------------------------------------------------------- load_or_build


def test_hit_miss_and_manifest(tmp_path: Path):
    build = Counter(_arrays())
    params = {"n": 4, "seed": 0}
    a = _cache.load_or_build("toy", params, build, format_version=1, root=tmp_path)
    b = _cache.load_or_build("toy", params, build, format_version=1, root=tmp_path)
    assert build.calls == 1
    for k in a:
        assert np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype
    entry = _cache.cache_entry("toy", params, 1, tmp_path)
    assert entry.npz_path.parent == tmp_path / "toy"
    manifest = json.loads(entry.manifest_path.read_text())
    assert manifest["params"] == params and manifest["format_version"] == 1 and manifest["key"] == entry.key
    assert manifest["sha256"] == _cache.arrays_checksum(build.arrays)
    assert manifest["arrays"]["x"] == {"dtype": "<f8", "shape": [4, 3]}
    # any changed parameter or version is a miss with its own file
    _cache.load_or_build("toy", {"n": 4, "seed": 1}, build, format_version=1, root=tmp_path)
    _cache.load_or_build("toy", params, build, format_version=2, root=tmp_path)
    assert build.calls == 3
    assert len(list((tmp_path / "toy").glob("*.npz"))) == 3
    assert not list((tmp_path / "toy").glob("*.tmp"))


def test_env_var_root(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("EQUIFRAME_CACHE", str(tmp_path))
    build = Counter({"x": np.arange(3.0)})
    _cache.load_or_build("toy", {"a": 1}, build, format_version=1)
    assert (tmp_path / "toy").is_dir()
    _cache.load_or_build("toy", {"a": 1}, build, format_version=1, root=tmp_path)
    assert build.calls == 1


def _corrupt_npz(path: Path) -> None:
    """Flip bytes inside the (uncompressed) array data, keeping the zip readable."""
    data = bytearray(path.read_bytes())
    needle = np.arange(100.0).tobytes()[8 * 50 : 8 * 58]
    pos = bytes(data).find(needle)
    assert pos >= 0
    data[pos : pos + 8] = np.float64(-1.0).tobytes()
    path.write_bytes(bytes(data))


def test_corrupted_arrays_detected(tmp_path: Path):
    arrays = {"x": np.arange(100.0)}
    build = Counter(arrays)
    _cache.load_or_build("toy", {"a": 1}, build, format_version=1, root=tmp_path)
    entry = _cache.cache_entry("toy", {"a": 1}, 1, tmp_path)
    _corrupt_npz(entry.npz_path)  # caught by the zip CRC
    with pytest.raises(CacheCorruptedError, match="CRC"):
        _cache.lookup("toy", {"a": 1}, 1, tmp_path)
    # a valid archive with other values (same names, dtypes, shapes): caught by the sha256
    _cache.save_arrays_npz(entry.npz_path, {"x": np.arange(100.0)[::-1].copy()})
    with pytest.raises(CacheCorruptedError, match="checksum"):
        _cache.lookup("toy", {"a": 1}, 1, tmp_path)
    with pytest.raises(CacheCorruptedError, match="on_corrupt"):
        _cache.load_or_build("toy", {"a": 1}, build, format_version=1, root=tmp_path, on_corrupt="raise")
    assert build.calls == 1
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        out = _cache.load_or_build("toy", {"a": 1}, build, format_version=1, root=tmp_path)
    assert build.calls == 2 and np.array_equal(out["x"], arrays["x"])
    assert np.array_equal(_cache.lookup("toy", {"a": 1}, 1, tmp_path)["x"], arrays["x"])  # repaired


def test_truncated_and_tampered_entries(tmp_path: Path):
    build = Counter({"x": np.arange(100.0)})
    _cache.load_or_build("toy", {"a": 1}, build, format_version=1, root=tmp_path)
    entry = _cache.cache_entry("toy", {"a": 1}, 1, tmp_path)
    good = entry.npz_path.read_bytes()
    entry.npz_path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CacheCorruptedError):
        _cache.lookup("toy", {"a": 1}, 1, tmp_path)
    entry.npz_path.write_bytes(good)
    manifest = json.loads(entry.manifest_path.read_text())
    entry.manifest_path.write_text(json.dumps(dict(manifest, params={"a": 2})))
    with pytest.raises(CacheCorruptedError, match="does not match"):
        _cache.lookup("toy", {"a": 1}, 1, tmp_path)
    entry.manifest_path.write_text("{not json")
    with pytest.raises(CacheCorruptedError, match="manifest"):
        _cache.lookup("toy", {"a": 1}, 1, tmp_path)
    entry.manifest_path.write_text(json.dumps(dict(manifest, arrays={"y": manifest["arrays"]["x"]})))
    with pytest.raises(CacheCorruptedError, match="manifest"):
        _cache.lookup("toy", {"a": 1}, 1, tmp_path)


def test_missing_manifest_or_arrays_is_a_miss(tmp_path: Path):
    build = Counter({"x": np.arange(3.0)})
    _cache.load_or_build("toy", {"a": 1}, build, format_version=1, root=tmp_path)
    entry = _cache.cache_entry("toy", {"a": 1}, 1, tmp_path)
    entry.manifest_path.unlink()  # e.g. a crash between writing the arrays and the manifest
    assert _cache.lookup("toy", {"a": 1}, 1, tmp_path) is None
    _cache.load_or_build("toy", {"a": 1}, build, format_version=1, root=tmp_path)
    assert build.calls == 2 and entry.exists()
    entry.remove()
    assert not entry.npz_path.exists() and not entry.manifest_path.exists()
    entry.remove()  # idempotent


def test_load_or_build_bad_arguments(tmp_path: Path):
    with pytest.raises(ValueError, match="on_corrupt"):
        _cache.load_or_build("toy", {}, Counter({"x": np.zeros(1)}), format_version=1, root=tmp_path,
                             on_corrupt="ignore")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="build"):
        _cache.load_or_build("toy", {}, lambda: [np.zeros(1)], format_version=1, root=tmp_path)  # type: ignore
    with pytest.raises(TypeError, match="object"):
        _cache.load_or_build("toy", {}, lambda: {"o": np.array([None], dtype=object)}, format_version=1,
                             root=tmp_path)


def test_checksum_of_zero_size_arrays():
    import numpy as np

    from equiframe.datasets._cache import arrays_checksum

    a = arrays_checksum({"x": np.zeros((0, 3)), "y": np.arange(4)})
    assert a == arrays_checksum({"y": np.arange(4), "x": np.zeros((0, 3))})
    assert a != arrays_checksum({"x": np.zeros((0, 4)), "y": np.arange(4)})
