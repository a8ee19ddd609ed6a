r"""CAD-kernel parts for normal estimation: B-rep solids from OpenCASCADE (via ``build123d``),
points sampled on the exact surfaces with their exact normals (an offline, ABC-like data set).

Pipeline (issue 18):

1. **Parts.** Random parametric solids built with the OpenCASCADE kernel through ``build123d``:
   extrusions of random sketches (polygons, stars, slots, rounded rectangles, L-profiles),
   revolves of random profiles, plates with hole patterns (grid / polar), pockets and ribs,
   shelled (thin-walled) boxes and cylinders, sweeps of sections along splines and arcs, lofts
   between different sections, and L-brackets; then random modifiers: through holes and
   counterbores, pockets, bosses, ribs, fillets and chamfers of random edges with random radii.
   Part ``i`` depends only on ``(seed, i)``: ``SeedSequence([seed, i, attempt])`` (a failed
   kernel operation retries with the next ``attempt``), so the data are identical for any number
   of worker processes and an interrupted build resumes where it stopped.
2. **Exact samples.** ``n_points`` points per part, area-uniform on the B-rep faces, each with the
   exact unit normal of the surface of the face it lies on (outward; reversed faces flipped) and
   that face's index. A fine triangulation of every face (``BRepMesh``) only *locates* the points:
   a triangle is drawn with probability proportional to its area, a uniform point in it gives
   surface parameters ``(u, v)`` by the affine map of the triangle's parameter nodes, and the
   position and normal are evaluated on the surface itself,

   .. math:: x = S(u, v), \qquad n = \pm \frac{S_u \times S_v}{\lVert S_u \times S_v \rVert}.

   The density of such a point on the surface is proportional to
   :math:`A_\triangle / (A^{uv}_\triangle J(u, v))` with :math:`J = \lVert S_u \times S_v\rVert`;
   a rejection step with acceptance :math:`w / \max w`, :math:`w = J A^{uv}_\triangle / A_\triangle`,
   makes it exactly uniform in area (for planes ``w = 1``). Near sharp edges a point's label is the
   normal of the face it lies on (there is no averaging across edges).
3. **Normalisation.** Each part's points are centred at their bounding-box centre and scaled so the
   farthest point has norm 1 (as :mod:`equiframe.datasets.shapes`).
4. **Storage.** Shards of ``shard_size`` consecutive parts (``.npz``: ``pos``, ``normal`` float32
   ``[P, n_points, 3]``, ``face_id`` int32, ``face_type`` int8 ``[P, n_points]``, ``family`` int8,
   ``n_faces`` int32, ``seconds`` float32 ``[P]``) in ``<root>/cad/<key>/``, with ``manifest.json``
   listing every shard with its SHA-256 (:func:`~equiframe.datasets._cache.arrays_checksum`), checked
   on load. The key hashes everything that determines the parts except their count, so growing
   ``n_parts`` reuses the shards already built.
5. **Splits** by part index: ``i % 10 == 9`` test, ``i % 10 == 8`` validation, else training
   (80/10/10; independent of ``n_parts``).
6. **Variants** are derived at load time (:class:`CADNormalsDataset`): a density is a random subset
   of the stored i.i.d. area-uniform points (``512 ... n_points``), a noise level adds isotropic
   Gaussian noise of standard deviation ``noise * bbox_diagonal`` to the positions (PCPNet's
   0, 0.25 %, 0.5 %, 1.2 %).

``build123d`` is an optional dependency (``pip install equiframe[cad]``) needed only to *generate*
parts; loading a built data set needs numpy only.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor

from equiframe.datasets._cache import (
    CacheCorruptedError,
    arrays_checksum,
    cache_key,
    load_arrays_npz,
    resolve_cache_dir,
    save_arrays_npz,
    write_json_atomic,
)
from equiframe.datasets.cad_geometry import (
    FAMILIES,
    SURFACE_TYPES,
    Family,  # noqa: F401  (re-exported)
    _require_build123d,
    make_part,
    sample_shape,
)
from equiframe.groups import random_orthogonal
from .._checks import check_instance, check_int, check_real

__all__ = [
    "CAD_FORMAT_VERSION",
    "FAMILIES",
    "SURFACE_TYPES",
    "CADConfig",
    "CADNormalsDataset",
    "CADSplit",
    "build_cad",
    "cad_dir",
    "cad_split",
    "generate_part",
    "load_cad",
    "make_part",
    "part_rng",
    "sample_shape",
]

CADSplit = Literal["train", "valid", "test"]
#: Bump when the generator or sampler changes the data (part of the cache key).
CAD_FORMAT_VERSION = 1
_NAME = "cad"
_MANIFEST = "manifest.json"


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CADConfig:
    """What determines the CAD data set.

    Attributes:
        n_parts: Parts to build (indices ``0 .. n_parts - 1``; not part of the cache key).
        n_points: Exact surface samples stored per part.
        seed: Base seed; part ``i`` uses ``SeedSequence([seed, i, attempt])``.
        deflection: Linear deflection of the locating triangulation, relative to the part's bounding-box
            diagonal (the samples stay exact; finer meshes only make the rejection step cheaper).
        shard_size: Parts per shard file (not part of the cache key, but fixed per cache directory).
    """

    n_parts: int = 2000
    n_points: int = 10000
    seed: int = 0
    deflection: float = 0.002
    shard_size: int = 16

    def __post_init__(self) -> None:
        for name in ("n_parts", "n_points", "shard_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: expected an int >= 0, got {self.seed!r}")
        if not (isinstance(self.deflection, (int, float)) and 0 < self.deflection < 0.1):
            raise ValueError(f"deflection: expected a number in (0, 0.1), got {self.deflection!r}")

    def params(self) -> dict[str, Any]:
        """The parameters hashed into the cache key (everything except the part count)."""
        return {"n_points": self.n_points, "seed": self.seed, "deflection": float(self.deflection),
                "shard_size": self.shard_size}


def cad_dir(config: CADConfig, root: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory of ``config``: ``<root>/cad/<key>``."""
    check_instance("config", config, CADConfig)
    return resolve_cache_dir(root) / _NAME / cache_key(_NAME, config.params(), CAD_FORMAT_VERSION)


def cad_split(index: int) -> CADSplit:
    """The split of part ``index``: ``i % 10 == 9`` test, ``== 8`` validation, else train."""
    check_int("index", index, 0)
    r = int(index) % 10
    return "test" if r == 9 else "valid" if r == 8 else "train"


def part_rng(seed: int, index: int, attempt: int = 0) -> np.random.Generator:
    """The random stream of part ``index`` (attempt ``attempt``): ``SeedSequence([seed, index, attempt])``."""
    check_int("seed", seed, 0)
    check_int("index", index, 0)
    check_int("attempt", attempt, 0)
    return np.random.default_rng(np.random.SeedSequence([seed, index, attempt]))



# --------------------------------------------------------------------------------------------
# Building the data set (sharded, checksummed, resumable)
# --------------------------------------------------------------------------------------------


def _normalise(pos: np.ndarray) -> np.ndarray:
    c = (pos.min(axis=0) + pos.max(axis=0)) / 2
    x = pos - c
    return x / np.linalg.norm(x, axis=1).max()


def _attempt(config: CADConfig, index: int, attempt: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    rng = part_rng(config.seed, index, attempt)
    part, family = make_part(rng)
    pos, nrm, fid, ftype = sample_shape(part, config.n_points, rng, deflection=config.deflection)
    if not (np.isfinite(pos).all() and np.isfinite(nrm).all()):
        raise RuntimeError("non-finite samples")
    return {"pos": _normalise(pos).astype(np.float32), "normal": nrm.astype(np.float32),
            "face_id": fid.astype(np.int32), "face_type": ftype.astype(np.int8),
            "family": np.int8(family), "n_faces": np.int32(fid.max() + 1), "attempts": np.int32(attempt + 1),
            "seconds": np.float32(time.perf_counter() - t0)}


def generate_part(config: CADConfig, index: int, max_attempts: int = 16) -> dict[str, Any]:
    """Build and sample part ``index`` of ``config`` in this process (no time limit), retrying failed kernel
    operations with the next ``attempt`` of :func:`part_rng`. Returns the per-part arrays of a shard row
    (``attempts``: the attempt that succeeded, plus one)."""
    check_instance("config", config, CADConfig)
    check_int("index", index, 0)
    check_int("max_attempts", max_attempts, 1)
    last: Exception | None = None
    for attempt in range(max_attempts):
        try:
            return _attempt(config, index, attempt)
        except Exception as err:  # noqa: BLE001 - kernel failures: retry with the next stream
            last = err
    raise RuntimeError(f"part {index}: no valid part in {max_attempts} attempts ({last!r})")


def _serve(conn: Any, config: CADConfig) -> None:  # pragma: no cover - runs in the child process
    _require_build123d()  # import the kernel before reporting ready: start-up is not part of any time limit
    conn.send(("ready", None))
    while True:
        msg = conn.recv()
        if msg is None:
            return
        try:
            conn.send(("ok", _attempt(config, *msg)))
        except Exception as err:  # noqa: BLE001
            conn.send(("error", repr(err)))


class _PartRunner:
    """One child process that builds parts; an attempt that exceeds ``timeout`` seconds (some kernel
    operations, e.g. booleans on swept B-spline surfaces, can run for minutes) kills the child and counts
    as failed, and the next attempt of the part runs in a fresh child."""

    def __init__(self, config: CADConfig, timeout: float) -> None:
        self.config, self.timeout, self.proc, self.conn = config, timeout, None, None

    def _start(self) -> None:
        import multiprocessing  # noqa: PLC0415

        # forkserver: children forked from a clean server process (forking this process, which may run
        # torch or OpenCASCADE threads, can deadlock the child)
        ctx = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, self.config), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(600) or self.conn.recv()[0] != "ready":
            self._kill()
            raise RuntimeError("CAD worker process did not start within 600 s")

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
        self.proc = self.conn = None

    def part(self, index: int, max_attempts: int = 16) -> tuple[dict[str, Any], int]:
        """The part and the number of timed-out attempts."""
        timeouts, last = 0, ""
        for attempt in range(max_attempts):
            if self.proc is None:
                self._start()
            self.conn.send((index, attempt))
            if not self.conn.poll(self.timeout):
                self._kill()
                timeouts += 1
                last = f"attempt {attempt} timed out after {self.timeout} s"
                continue
            try:
                status, value = self.conn.recv()
            except EOFError:  # the child died (e.g. a crash in the kernel)
                self._kill()
                last = f"attempt {attempt}: worker died"
                continue
            if status == "ok":
                return value, timeouts
            last = value
        raise RuntimeError(f"part {index}: no valid part in {max_attempts} attempts ({last})")

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.conn.send(None)
                self.proc.join(5)
            finally:
                self._kill()


class _InProcess:
    """Builds parts in this process (no time limit)."""

    def __init__(self, config: CADConfig) -> None:
        self.config = config

    def part(self, index: int) -> tuple[dict[str, Any], int]:
        return generate_part(self.config, index), 0

    def close(self) -> None:
        pass


def _build_shard(runner: Any, config: CADConfig, shard: int) -> dict[str, np.ndarray]:
    start = shard * config.shard_size
    rows, timeouts = [], []
    for i in range(start, start + config.shard_size):
        row, t = runner.part(i)
        rows.append(row)
        timeouts.append(t)
    arrays = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    arrays["timeouts"] = np.array(timeouts, dtype=np.int32)
    return arrays


def _shard_name(shard: int) -> str:
    return f"shard_{shard:05d}.npz"


def _read_manifest(directory: Path) -> dict[str, Any]:
    import json  # noqa: PLC0415

    path = directory / _MANIFEST
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def build_cad(config: CADConfig, root: str | os.PathLike[str] | None = None, *, workers: int = 1,
              progress: bool = True, timeout: float = 30.0) -> Path:
    """Build (or complete) the CAD data set of ``config``; returns its directory.

    Parts are built in shards of ``config.shard_size``; every finished shard is written atomically and
    recorded with its SHA-256 in ``manifest.json`` at once, so an interrupted build resumes from the
    shards on disk (a shard whose file is missing or fails its checksum is rebuilt). The parts do not
    depend on ``workers`` (one process per shard when ``workers > 1``).

    Args:
        config: What to build (``n_parts`` is rounded up to whole shards).
        root: Cache root (default ``$EQUIFRAME_CACHE`` or ``~/.cache/equiframe``).
        workers: Worker processes (each builds whole shards; the parts do not depend on it); ``0`` builds in
            this process without the time limit (tests, debugging).
        progress: Show a progress bar (tqdm) over parts.
        timeout: Seconds one attempt at a part may take before it is abandoned (the next attempt, a new
            random stream, follows; the shard records ``timeouts`` per part). Only a part whose attempt
            times out depends on the machine's speed.
    """
    check_instance("config", config, CADConfig)
    check_real("timeout", timeout, 0.0, strict=True)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers: expected an int >= 0, got {workers!r}")
    _require_build123d()  # after the argument checks: a bad argument is named with or without the CAD kernel
    directory = cad_dir(config, root)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(directory) or {
        "name": _NAME, "format_version": CAD_FORMAT_VERSION, "params": config.params(), "shards": {}}
    n_shards = -(-config.n_parts // config.shard_size)
    todo = []
    for s in range(n_shards):
        entry = manifest["shards"].get(str(s))
        if entry is None or not (directory / entry["file"]).exists():
            todo.append(s)
    from tqdm.auto import tqdm  # noqa: PLC0415

    bar = tqdm(total=n_shards * config.shard_size, initial=(n_shards - len(todo)) * config.shard_size,
               desc="cad parts", unit="part", disable=not progress)

    def record(s: int, arrays: dict[str, np.ndarray]) -> None:
        save_arrays_npz(directory / _shard_name(s), arrays)
        manifest["shards"][str(s)] = {
            "file": _shard_name(s), "sha256": arrays_checksum(arrays),
            "parts": [s * config.shard_size, (s + 1) * config.shard_size],
            "seconds": float(arrays["seconds"].sum()),
        }
        manifest["n_parts"] = config.shard_size * sum(1 for k in manifest["shards"])
        write_json_atomic(directory / _MANIFEST, manifest)
        bar.update(config.shard_size)

    runners: list[Any] = [_InProcess(config)] if workers == 0 else [_PartRunner(config, timeout) for _ in range(workers)]
    import queue  # noqa: PLC0415
    import threading  # noqa: PLC0415

    pending: "queue.Queue[int]" = queue.Queue()
    for s in todo:
        pending.put(s)
    lock = threading.Lock()

    def work(runner: _PartRunner) -> None:
        while True:
            try:
                s = pending.get_nowait()
            except queue.Empty:
                return
            arrays = _build_shard(runner, config, s)
            with lock:
                record(s, arrays)

    try:
        if len(runners) == 1:
            work(runners[0])
        else:  # one thread per child process; the threads only wait on their pipes
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                for fut in [pool.submit(work, r) for r in runners]:
                    fut.result()
    finally:
        for r in runners:
            r.close()
        bar.close()
    return directory


def load_cad(config: CADConfig, root: str | os.PathLike[str] | None = None, *,
             split: CADSplit | None = None, max_points: int | None = None, n_parts: int | None = None,
             complete_only: bool = True) -> dict[str, np.ndarray]:
    """Load the built parts (checksums verified) of one split.

    Args:
        config: The data-set configuration (its ``n_parts`` is the default of ``n_parts``).
        root: Cache root.
        split: ``"train"``, ``"valid"``, ``"test"`` (:func:`cad_split`) or ``None`` for all parts.
        max_points: Keep only the first ``max_points`` samples of each part (they are an i.i.d. area-uniform
            sample already, so any prefix is one too); saves memory.
        n_parts: Use parts ``0 .. n_parts - 1`` (default ``config.n_parts``).
        complete_only: Require all shards of those parts (else use the shards built so far, e.g. while a
            build is still running).

    Returns:
        ``pos``, ``normal`` ``[P, n, 3]`` float32, ``face_id`` ``[P, n]`` int32, ``face_type`` ``[P, n]``
        int8, ``family``, ``n_faces``, ``seconds`` ``[P]`` and ``index`` ``[P]`` (part indices).

    Raises:
        FileNotFoundError: nothing built (or an incomplete build with ``complete_only``).
        CacheCorruptedError: a shard fails its checksum.
    """
    if split is not None and split not in get_args(CADSplit):
        raise ValueError(f"split: expected one of {get_args(CADSplit)} or None, got {split!r}")
    directory = cad_dir(config, root)
    manifest = _read_manifest(directory)
    if not manifest:
        raise FileNotFoundError(f"no CAD data set at {directory}; build it with `equiframe data normals --source cad`")
    n_parts = config.n_parts if n_parts is None else n_parts
    n_shards = -(-n_parts // config.shard_size)
    missing = [s for s in range(n_shards) if str(s) not in manifest["shards"]]
    if missing and complete_only:
        raise FileNotFoundError(f"CAD data set at {directory}: {len(missing)} of {n_shards} shards not built yet")
    parts: dict[str, list[np.ndarray]] = {}
    for s in range(n_shards):
        entry = manifest["shards"].get(str(s))
        if entry is None:
            continue
        arrays = load_arrays_npz(directory / entry["file"])
        if arrays_checksum(arrays) != entry["sha256"]:
            raise CacheCorruptedError(f"{directory / entry['file']}: SHA-256 mismatch (rebuild: delete the file and "
                                      "run the build again)")
        index = np.arange(entry["parts"][0], entry["parts"][1])
        keep = index < n_parts
        if split is not None:
            keep &= np.array([cad_split(i) == split for i in index])
        arrays["index"] = index
        for k, a in arrays.items():
            if k in ("attempts", "timeouts"):
                continue
            a = a[keep]
            if max_points is not None and a.ndim >= 2:
                a = a[:, :max_points]
            parts.setdefault(k, []).append(np.ascontiguousarray(a))
    if not parts:
        raise FileNotFoundError(f"CAD data set at {directory}: no shards built")
    return {k: np.concatenate(v) for k, v in parts.items()}


# --------------------------------------------------------------------------------------------
# Dataset with density and noise variants
# --------------------------------------------------------------------------------------------

_SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}


class CADNormalsDataset(torch.utils.data.Dataset):
    """Point clouds with exact normals from the CAD parts, at a chosen density and noise level.

    Item ``i`` is part ``i`` of the split: ``n_points`` of its stored samples chosen at random without
    replacement (an area-uniform sample of that density), positions plus Gaussian noise of standard
    deviation ``noise * d`` (``d`` the bounding-box diagonal of the clean points; normals stay exact),
    and with ``rotation="so3"`` a Haar-random rotation of points and normals. The randomness is
    ``SeedSequence([sample_seed, 2, split, e, i])`` with ``e`` the epoch (:meth:`set_epoch`) for
    resampled data and ``0`` for ``fixed_points``.

    Args:
        split: ``"train"``, ``"valid"`` or ``"test"``.
        config: The data set (must be built: :func:`build_cad`).
        root: Cache root.
        n_points: Points per cloud (``<=`` the stored samples).
        noise: Noise level (fraction of the bounding-box diagonal).
        rotation: ``"none"`` or ``"so3"``.
        fixed_points: Same points every epoch (default: ``True`` except for ``"train"``).
        sample_seed: Seed of the subsampling, noise and rotations.
        max_points: Stored samples kept in memory per part (default: all).
        n_parts: Parts used (default ``config.n_parts``); ``complete_only``: see :func:`load_cad`.

    Shapes:
        pos, normal: ``[n_points, 3]`` float32; index (part index), kind (family code): ``[]`` int64.
    """

    def __init__(self, split: CADSplit, config: CADConfig | None = None, root: str | os.PathLike[str] | None = None,
                 *, n_points: int = 512, noise: float = 0.0, rotation: Literal["none", "so3"] = "none",
                 fixed_points: bool | None = None, sample_seed: int = 0, max_points: int | None = None,
                 n_parts: int | None = None, complete_only: bool = True) -> None:
        if split not in get_args(CADSplit):
            raise ValueError(f"split: expected one of {get_args(CADSplit)}, got {split!r}")
        config = CADConfig() if config is None else config
        if not isinstance(config, CADConfig):
            raise TypeError(f"config: expected a CADConfig, got {type(config).__name__}")
        if rotation not in ("none", "so3"):
            raise ValueError(f"rotation: expected 'none' or 'so3', got {rotation!r}")
        if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
            raise ValueError(f"noise: expected a finite number >= 0, got {noise!r}")
        if isinstance(sample_seed, bool) or not isinstance(sample_seed, int) or sample_seed < 0:
            raise ValueError(f"sample_seed: expected an int >= 0, got {sample_seed!r}")
        self.arrays = load_cad(config, root, split=split, max_points=max_points, n_parts=n_parts,
                               complete_only=complete_only)
        stored = self.arrays["pos"].shape[1]
        if isinstance(n_points, bool) or not isinstance(n_points, int) or not 1 <= n_points <= stored:
            raise ValueError(f"n_points: expected an int in [1, {stored}] (samples stored per part), got {n_points!r}")
        self.split, self.config, self.n_points, self.noise = split, config, n_points, float(noise)
        self.rotation, self.sample_seed, self.epoch = rotation, sample_seed, 0
        self.fixed_points = split != "train" if fixed_points is None else bool(fixed_points)

    def __len__(self) -> int:
        return int(self.arrays["pos"].shape[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose points are drawn (no effect when ``fixed_points``)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch: expected an int >= 0, got {epoch!r}")
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index: expected an int, got {type(index).__name__}")
        i = int(index) + (n if index < 0 else 0)
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for {n} parts")
        e = 0 if self.fixed_points else self.epoch
        rng = np.random.default_rng(np.random.SeedSequence([self.sample_seed, 2, _SPLIT_CODES[self.split], e, i]))
        stored = self.arrays["pos"].shape[1]
        sel = rng.choice(stored, self.n_points, replace=False) if self.n_points < stored else np.arange(stored)
        pos = self.arrays["pos"][i, sel].astype(np.float64)
        nrm = self.arrays["normal"][i, sel].astype(np.float64)
        if self.noise > 0:
            diag = float(np.linalg.norm(pos.max(axis=0) - pos.min(axis=0)))
            pos = pos + rng.normal(0.0, self.noise * diag, pos.shape)
        if self.rotation == "so3":
            q = random_orthogonal((), 3, proper=True, generator=rng)
            pos, nrm = pos @ q.T, nrm @ q.T
        return {"pos": torch.from_numpy(pos.astype(np.float32)), "normal": torch.from_numpy(nrm.astype(np.float32)),
                "index": torch.tensor(int(self.arrays["index"][i]), dtype=torch.long),
                "kind": torch.tensor(int(self.arrays["family"][i]), dtype=torch.long)}
