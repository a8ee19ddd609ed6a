"""Build, load, evaluate and write shipped weights (see :mod:`equiframe.pretrained`)."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ._registry import WEIGHTS_DIR, WeightsInfo, discover, file_stem, sha256_of

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class _Prefix(torch.utils.data.Dataset):
    """The first ``n`` items of a data set; other attributes (e.g. the n-body data's ``get_batch``, whose
    indices stay below ``n`` here) are those of the data set."""

    def __init__(self, dataset: Any, n: int):
        self.dataset, self.n = dataset, min(int(n), len(dataset))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return self.dataset[i % self.n]

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "n"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


class ChecksumError(ValueError):
    """A weights file whose SHA-256 differs from the one its sidecar records."""


def available(directory: str | os.PathLike | None = None) -> list[str]:
    """Names of the shipped models (``"<experiment>/<model>"``), sorted.

    Args:
        directory: where to look (default: the package's ``equiframe/pretrained/weights/``).
    """
    return sorted(discover(directory))


def info(name: str, directory: str | os.PathLike | None = None) -> WeightsInfo:
    """The record of one shipped model: builder, kwargs, committed metrics, provenance.

    Raises:
        ValueError: ``name`` is not shipped (the message lists the available names).
    """
    found = discover(directory)
    if not isinstance(name, str) or name not in found:
        raise ValueError(f"name: no pretrained model {name!r}; available: {sorted(found)}")
    return found[name]


def _resolve_builder(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    # only equiframe's own classes and factories: a sidecar never makes us import arbitrary code
    if module_name != "equiframe" and not module_name.startswith("equiframe."):
        raise ValueError(f"builder: {spec!r} is not an equiframe class or factory")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"builder: cannot resolve {spec!r}: {err}") from None
    if not callable(obj):
        raise ValueError(f"builder: {spec!r} is not callable")
    return obj


def build(name: str, directory: str | os.PathLike | None = None) -> nn.Module:
    """The model of ``name`` with freshly initialised parameters (its recorded builder and kwargs)."""
    rec = info(name, directory)
    return _resolve_builder(rec.builder)(**dict(rec.kwargs))


def load(
    name: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    directory: str | os.PathLike | None = None,
) -> nn.Module:
    """Load a shipped model: checksum verified, built from its recorded builder, in ``eval()`` mode.

    The weights file is a float32 state dict read with ``torch.load(..., weights_only=True)``; its SHA-256
    is compared with the sidecar's before it is read.

    Args:
        name: ``"<experiment>/<model>"``, e.g. ``"nbody/tf-gnn"`` (see :func:`available`).
        device: where to put the model.
        dtype: floating dtype of the parameters (``torch.float32`` or ``torch.float64``).
        directory: where to look (default: the package's ``weights/``).

    Returns:
        the model, in evaluation mode.

    Raises:
        ValueError: unknown ``name`` (the message lists the available ones), or a bad ``dtype``.
        ChecksumError: the weights file does not match its recorded SHA-256.
        FileNotFoundError: the weights file named by the sidecar is missing.

    Example:
        >>> import equiframe.pretrained
        >>> model = equiframe.pretrained.load("nbody/tf-gnn")
        >>> model.training
        False
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype!r}")
    rec = info(name, directory)
    if not rec.path.is_file():
        raise FileNotFoundError(f"name: the weights file of {name!r} is missing: {rec.path}")
    got = sha256_of(rec.path)
    if got != rec.sha256:
        raise ChecksumError(f"name: the weights of {name!r} ({rec.path}) have SHA-256 {got}, "
                            f"expected {rec.sha256}: the file is corrupted or was replaced")
    state = torch.load(rec.path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"name: {rec.path} does not hold a state dict of tensors")
    model = _resolve_builder(rec.builder)(**dict(rec.kwargs))
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval()


def _experiment(rec: WeightsInfo, overrides: Mapping[str, Any] | None):
    from ..experiments import experiment_from_dict  # noqa: PLC0415  (experiments import the models)

    if not rec.experiment:
        raise ValueError(f"name: {rec.name!r} records no experiment to evaluate it with")
    cfg = dict(rec.experiment["config"])
    unknown = set(overrides or {}) - set(cfg)
    if unknown:
        raise ValueError(f"experiment_overrides: unknown options {sorted(unknown)} of experiment "
                         f"{rec.experiment['name']!r}")
    cfg.update(overrides or {})
    return experiment_from_dict(rec.experiment["name"], cfg)


def evaluate(
    name: str,
    split: str = "test",
    *,
    limit: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    experiment_overrides: Mapping[str, Any] | None = None,
    directory: str | os.PathLike | None = None,
) -> dict[str, float]:
    """Re-evaluate a shipped model on its experiment's data with the shared evaluation loop
    (:func:`equiframe.train.evaluate`), e.g. to compare with the committed ``info(name).metrics``.

    Args:
        name: a shipped model (see :func:`available`).
        split: ``"train"``, ``"valid"`` or ``"test"``.
        limit: evaluate only the first ``limit`` items of the split (quick checks).
        batch_size: evaluation batch size (default: the one of the committed evaluation).
        device: where to evaluate.
        experiment_overrides: experiment options to change, e.g. ``{"data_dir": "..."}`` for the graph
            data sets or ``{"data_root": "..."}`` for a data cache.
        directory: where to look for the weights.

    Returns:
        the experiment's metrics, e.g. ``{"mse": ...}``.
    """
    from ..train import DistInfo, evaluate as _evaluate  # noqa: PLC0415

    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"limit: expected a positive int or None, got {limit!r}")
    rec = info(name, directory)
    experiment = _experiment(rec, experiment_overrides)
    dev = torch.device(device)
    model = load(name, device=dev, dtype=getattr(experiment, "torch_dtype", torch.float32), directory=directory)
    data: Any = split
    if limit is not None:
        data = _Prefix(experiment.dataset(split), limit)
    bs = batch_size or rec.eval_batch_size or 100
    return _evaluate(experiment, model, data, batch_size=bs, device=dev, info=DistInfo())


def save(
    model: nn.Module,
    name: str,
    *,
    builder: str,
    kwargs: Mapping[str, Any],
    metrics: Mapping[str, Any],
    trained: Mapping[str, Any],
    experiment: Mapping[str, Any] | None = None,
    eval_batch_size: int | None = None,
    check: Mapping[str, Any] | None = None,
    directory: str | os.PathLike | None = None,
) -> WeightsInfo:
    """Write ``model``'s weights as a float32 state dict plus its JSON sidecar (with the SHA-256).

    The model must be rebuilt exactly by ``builder(**kwargs)`` (checked: the state dict must load
    strictly into a fresh build). Buffers that are not floating point keep their dtype.

    Returns:
        the written record (as :func:`info` reads it back).
    """
    from ..train import atomic_save, atomic_write_text  # noqa: PLC0415

    stem = file_stem(name)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    kwargs = json.loads(json.dumps(dict(kwargs)))  # JSON values only (fails loudly otherwise)
    fresh = _resolve_builder(builder)(**kwargs)
    state = {k: (v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().to("cpu")).clone()
             for k, v in model.state_dict().items()}
    fresh.load_state_dict(state, strict=True)
    d = Path(directory) if directory is not None else WEIGHTS_DIR
    pt = d / f"{stem}.pt"
    atomic_save(state, pt)
    record: dict[str, Any] = {
        "name": name, "file": pt.name, "sha256": sha256_of(pt), "builder": builder, "kwargs": kwargs,
        "metrics": dict(metrics), "trained": dict(trained),
    }
    if experiment:
        record["experiment"] = dict(experiment)
    if eval_batch_size is not None:
        record["eval_batch_size"] = int(eval_batch_size)
    if check:
        record["check"] = dict(check)
    atomic_write_text(d / f"{stem}.json", json.dumps(record, indent=1, sort_keys=False) + "\n")
    return info(name, d)
