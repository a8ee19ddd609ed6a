"""Discovery of shipped weights: one ``<experiment>__<model>.pt`` file and its ``.json`` sidecar per model.

The sidecar is the whole record (no central manifest, so weights added on different branches never
conflict)::

    {"name": "nbody/tf-gnn", "file": "nbody__tf-gnn.pt", "sha256": "...",
     "builder": "equiframe.models.nbody:build_nbody_model", "kwargs": {...},
     "metrics": {"split": "test", "mse": ...},            # the committed test metrics of the run
     "experiment": {"name": "nbody", "config": {...}},     # optional: how to re-evaluate it
     "eval_batch_size": 500,                               # optional: the batch size of that evaluation
     "check": {"split": "test", "limit": 40, "metrics": {...}},   # optional: a quick subset check
     "trained": {"run": "results/nbody/...", "seed": 1, "epochs": 2000, "best_epoch": 1910, "command": "..."}}
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from .._checks import check_not_dir

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_SEP = "__"
_REQUIRED = ("name", "file", "sha256", "builder", "kwargs", "metrics", "trained")


def file_stem(name: str) -> str:
    """The file stem of a model name: ``"nbody/tf-gnn"`` -> ``"nbody__tf-gnn"``."""
    if not isinstance(name, str) or name.count("/") != 1 or not all(name.split("/")):
        raise ValueError(f"name: expected '<experiment>/<model>', got {name!r}")
    if _SEP in name or any(c in name for c in "\\:") or name.strip() != name:
        raise ValueError(f"name: {name!r} may not contain '__', '\\\\', ':' or surrounding spaces")
    return name.replace("/", _SEP)


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    check_not_dir("path", path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class WeightsInfo:
    """One shipped model: its sidecar, parsed.

    Attributes:
        name: ``"<experiment>/<model>"``, the key of :func:`equiframe.pretrained.load`.
        path: the weights file (``<experiment>__<model>.pt``).
        sha256: its expected SHA-256 (hex).
        builder: ``"module:attribute"`` of the class or factory that builds the model.
        kwargs: keyword arguments of the builder (JSON values).
        metrics: the committed test metrics of the run the weights come from.
        trained: where they come from: ``{"run", "seed", "epochs", "best_epoch", "command"}``.
        experiment: ``{"name", "config"}`` of the experiment that evaluates them (may be empty).
        eval_batch_size: the batch size of the committed evaluation (``None``: the experiment's default).
        check: an optional quick check ``{"split", "limit", "metrics"}`` on the first ``limit`` items.
    """

    name: str
    path: Path
    sha256: str
    builder: str
    kwargs: Mapping[str, Any]
    metrics: Mapping[str, Any]
    trained: Mapping[str, Any]
    experiment: Mapping[str, Any] = field(default_factory=dict)
    eval_batch_size: int | None = None
    check: Mapping[str, Any] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        """Size of the weights file in bytes."""
        return self.path.stat().st_size


def read_sidecar(path: str | os.PathLike) -> WeightsInfo:
    """Parse and validate one sidecar ``<experiment>__<model>.json``."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"sidecar: cannot read {path}: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"sidecar: {path} does not hold a JSON object")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"sidecar: {path} lacks {missing}")
    name = raw["name"]
    if file_stem(name) != path.stem:
        raise ValueError(f"sidecar: {path.name} names the model {name!r}; expected the file {file_stem(name)}.json")
    if raw["file"] != f"{path.stem}.pt":
        raise ValueError(f"sidecar: {path.name}: 'file' must be {path.stem}.pt, got {raw['file']!r}")
    if not isinstance(raw["kwargs"], dict) or not isinstance(raw["builder"], str) or ":" not in raw["builder"]:
        raise ValueError(f"sidecar: {path.name}: 'builder' must be 'module:attribute' and 'kwargs' an object")
    return WeightsInfo(
        name=name, path=path.with_name(raw["file"]), sha256=str(raw["sha256"]).lower(), builder=raw["builder"],
        kwargs=raw["kwargs"], metrics=raw["metrics"], trained=raw["trained"],
        experiment=raw.get("experiment") or {}, eval_batch_size=raw.get("eval_batch_size"),
        check=raw.get("check") or {},
    )


def discover(directory: str | os.PathLike | None = None) -> dict[str, WeightsInfo]:
    """Every sidecar in ``directory`` (default: the package's ``weights/``), by model name."""
    d = Path(directory) if directory is not None else WEIGHTS_DIR
    if not d.is_dir():
        raise FileNotFoundError(f"directory: {d} is not a directory")
    found: dict[str, WeightsInfo] = {}
    for p in sorted(d.glob(f"*{_SEP}*.json")):
        info = read_sidecar(p)
        found[info.name] = info
    return found
