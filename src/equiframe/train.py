r"""One training / evaluation loop shared by every experiment.

An :class:`Experiment` provides the data sets, a model factory, the loss and the metrics; the loop
(:func:`fit` for one seed, :func:`train` for several) does the rest:

* Adam with weight decay (:class:`OptimConfig`; PyTorch's fused kernel where it has one), mini-batches in a
  deterministic order (a permutation seeded with ``seed + epoch``, :func:`epoch_batches`), model selection on
  the validation metric (lower is better) every ``eval_every`` epochs, optional early stopping (``patience``
  evaluations without improvement), and a final evaluation of the **best** checkpoint on the test split;
* its own random stream (seeded with the run's seed; the caller's global RNG state is left as it was) and
  optionally ``torch.compile`` (:attr:`TrainConfig.compile`, with an eager fallback);
* checkpoints (model, optimiser, best model, history, random states) written atomically (a temporary file
  moved into place with :func:`os.replace`) every ``checkpoint_every`` epochs and at the end;
  ``resume=True`` continues a killed run from its last checkpoint and reaches bitwise the same result as an
  uninterrupted run (same device, same number of threads);
* a results directory per run, ``<out>/<experiment>/<run name>/seed<k>/``, with ``checkpoint.pt``,
  ``metrics.json`` (test metrics at the best validation epoch, best epoch, epochs run, wall time,
  configs, package version, device), ``curves.csv`` and ``curves.png`` (learning curves);
* distributed data parallel training on PyTorch's own engine: started by ``torchrun``, the loop
  initialises the process group from its environment variables (:func:`init_distributed`: ``gloo`` on
  CPU, ``nccl`` on CUDA), splits every global batch of ``batch_size`` items over the ranks (uneven parts
  when it does not divide: each rank's loss is weighted by its share of the global batch, so a step equals
  the single-process step up to rounding; a global batch smaller than the number of ranks is an error),
  all-reduces the metrics, and only rank 0 writes files and shows progress bars.

Example:
    An experiment is a small class; the loop does the rest (the n-body, graph and normal experiments of
    :mod:`equiframe.experiments` are written the same way, e.g.
    ``train(NBodyExperiment(NBodyExperimentConfig(model="egnn")), TrainConfig(epochs=1000, seeds=(0, 1, 2)))``).

    >>> import torch
    >>> from torch import nn
    >>> from equiframe.train import Experiment, OptimConfig, TrainConfig, evaluate, load_checkpoint, train
    >>> class LineFit(Experiment):                       # least squares on 64 points, as an experiment
    ...     name, metric = "linefit", "mse"
    ...     def __init__(self, noise=0.01):
    ...         g = torch.Generator().manual_seed(0)
    ...         X = torch.randn(96, 4, generator=g)
    ...         y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + noise * torch.randn(96, generator=g)
    ...         self.noise = noise
    ...         self.splits = {"train": (0, 64), "valid": (64, 80), "test": (80, 96)}
    ...         self.X, self.y = X, y
    ...     def to_dict(self):
    ...         return {"noise": self.noise}
    ...     @classmethod
    ...     def from_dict(cls, d):
    ...         return cls(**d)
    ...     def dataset(self, split):
    ...         a, b = self.splits[split]
    ...         return torch.utils.data.TensorDataset(self.X[a:b], self.y[a:b])
    ...     def build_model(self):
    ...         return nn.Linear(4, 1)
    ...     def loss(self, model, batch):
    ...         X, y = batch
    ...         return (model(X)[:, 0] - y).square().mean()
    ...     def metrics(self, model, batch):             # name -> (sum, count) over the batch
    ...         X, y = batch
    ...         err = (model(X)[:, 0] - y).square()
    ...         return {"mse": (float(err.sum()), err.numel())}
    >>> config = TrainConfig(epochs=60, batch_size=16, optim=OptimConfig(lr=0.05), seeds=(0, 1), out="runs",
    ...                      quiet=True, device="cpu")
    >>> results = train(LineFit(), config)                # one run per seed: runs/linefit/linefit/seed<k>/
    >>> [r.metrics["test"]["mse"] < 1e-2 for r in results]
    [True, True]
    >>> model = LineFit().build_model()                  # the best weights, read back from the run directory
    >>> _ = model.load_state_dict(load_checkpoint(results[0].run_dir)["best"]["state"])
    >>> evaluate(LineFit(), model, "test", batch_size=16)["mse"] == results[0].metrics["test"]["mse"]
    True
"""

from __future__ import annotations

import abc
import contextlib
import json
import math
import os
import random  # noqa: F401  (seed_everything)
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from ._machine import cpu_name
from .checkpoints import (
    CHECKPOINT,
    CURVES,  # noqa: F401  (re-exported)
    FORMAT_VERSION,
    METRICS,
    _cpu_state,
    _json_default,
    _plot_curves,
    _rng_states,
    _set_rng_states,
    _version,
    _write_curves,
    atomic_save,
    atomic_write_text,
    load_checkpoint,
)
from .distributed import (
    DistInfo,
    _all_reduce,
    _barrier,
    _check_rank_batches,
    epoch_batches,
    get_dist,
    init_distributed,
    resolve_device,
)
from .train_config import _RESUMABLE, OptimConfig, TrainConfig
from ._checks import check_instance, check_int

__all__ = [
    "CHECKPOINT",
    "METRICS",
    "DistInfo",
    "Experiment",
    "OptimConfig",
    "RunResult",
    "TrainConfig",
    "atomic_save",
    "atomic_write_text",
    "epoch_batches",
    "evaluate",
    "evaluate_run",
    "fit",
    "get_dist",
    "init_distributed",
    "load_checkpoint",
    "resolve_device",
    "run_dir_for",
    "seed_everything",
    "train",
]




# ================================================================================================ experiment
class Experiment(abc.ABC):
    """What the loop needs from an experiment (the loop itself knows nothing about the task).

    Subclasses set :attr:`name` (the results sub-directory, also the registry key) and implement the
    abstract methods. Batches are whatever :meth:`make_batch` returns; the loop only moves them to the
    device (:meth:`to_device`) and hands them back to :meth:`loss` / :meth:`metrics`.
    """

    #: results sub-directory and registry key, e.g. ``"nbody"``.
    name: ClassVar[str] = ""
    #: the validation metric used for model selection (lower is better).
    metric: ClassVar[str] = "loss"
    #: published values of :attr:`metric` for some run names (shown beside ours in reports).
    published: ClassVar[dict[str, float]] = {}
    #: all published reference values of the task (name -> value), listed in reports.
    references: ClassVar[dict[str, float]] = {}

    @property
    def run_name(self) -> str:
        """Default run directory name (e.g. the model's name)."""
        return "default"

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable config from which :meth:`from_dict` rebuilds the experiment."""

    @classmethod
    @abc.abstractmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Experiment":
        """Rebuild from :meth:`to_dict`."""

    @abc.abstractmethod
    def dataset(self, split: str) -> torch.utils.data.Dataset:
        """The data set of ``split`` (``"train"``, ``"valid"``, ``"test"``); may be cached."""

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model (the loop seeds the global RNG before calling this)."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> Tensor:
        """The training loss of a batch (a scalar, mean over the batch)."""

    @abc.abstractmethod
    def metrics(self, model: nn.Module, batch: Any) -> dict[str, tuple[float, float]]:
        """Evaluation metrics of a batch as ``name -> (sum, count)`` (the loop sums over batches and
        ranks and reports ``sum / count``). Must contain :attr:`metric`."""

    def set_epoch(self, epoch: int) -> None:
        """Called on every rank before training epoch ``epoch`` (0-based), also after a resume: data sets
        that draw fresh samples per epoch key their randomness on it (default: nothing)."""

    def collate(self, items: Sequence[Any]) -> Any:
        """Collate items of :meth:`dataset` (used with DataLoader workers)."""
        return torch.utils.data.default_collate(list(items))

    def make_batch(self, dataset: torch.utils.data.Dataset, index: Tensor) -> Any:
        """A batch of the items ``index`` (default: ``dataset.get_batch`` if it exists, else collate)."""
        if hasattr(dataset, "get_batch"):
            return dataset.get_batch(index)
        return self.collate([dataset[int(i)] for i in index])

    def to_device(self, batch: Any, device: torch.device) -> Any:
        """Move a batch to ``device`` (tensors in dicts / lists / tuples)."""
        return _to_device(batch, device)

    def diagnostics(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        """Extra JSON-serialisable results computed once with the best model (rank 0)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Short facts shown in reports (e.g. the training set size)."""
        return {}


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch




# ================================================================================================ utilities
def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's legacy global generator and torch (CPU and CUDA)."""
    check_int("seed", seed, 0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)



def run_dir_for(experiment: Experiment, config: TrainConfig, seed: int) -> Path:
    """``<out>/<experiment.name>/<config.name or experiment.run_name>/seed<seed>``."""
    check_int("seed", seed, 0)
    return Path(config.out) / experiment.name / (config.name or experiment.run_name) / f"seed{seed}"



def _is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


# ================================================================================================ batches
def _chunks(indices: Sequence[int], size: int) -> list[list[int]]:
    indices = list(indices)
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def _iter_batches(experiment: Experiment, ds, chunks: list[list[int]], num_workers: int) -> Iterator[Any]:
    if num_workers > 0:
        loader = torch.utils.data.DataLoader(ds, batch_sampler=chunks, collate_fn=experiment.collate,
                                             num_workers=num_workers)
        yield from loader
        return
    for c in chunks:
        yield experiment.make_batch(ds, torch.tensor(c, dtype=torch.long))


@torch.no_grad()
def evaluate(
    experiment: Experiment,
    model: nn.Module,
    split: str | torch.utils.data.Dataset,
    *,
    batch_size: int = 100,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    info: DistInfo | None = None,
) -> dict[str, float]:
    """Mean metrics of ``model`` on a split (or data set): ``sum / count`` over all batches.

    Under DDP every rank evaluates the items ``rank, rank + world, ...`` and the sums are all-reduced,
    so the result is exact (no padding duplicates) and identical on every rank.
    """
    info = info or get_dist()
    device = torch.device(device)
    ds = experiment.dataset(split) if isinstance(split, str) else split
    was_training = model.training
    model.eval()
    idx = list(range(info.rank, len(ds), info.world_size))
    sums: dict[str, list[float]] = {}
    for batch in _iter_batches(experiment, ds, _chunks(idx, batch_size), num_workers):
        for k, (s, c) in experiment.metrics(model, experiment.to_device(batch, device)).items():
            acc = sums.setdefault(k, [0.0, 0.0])
            acc[0] += float(s)
            acc[1] += float(c)
    model.train(was_training)
    sums = _all_reduce(sums, info, device)
    out = {k: (s / c if c > 0 else float("nan")) for k, (s, c) in sums.items()}
    if experiment.metric not in out:
        raise ValueError(f"metrics: the experiment's metrics lack its selection metric {experiment.metric!r}")
    return out


# ================================================================================================ the loop
@dataclass
class RunResult:
    """One finished run: its directory and its ``metrics.json`` contents."""

    run_dir: Path
    metrics: dict[str, Any]


class _Log:
    """tqdm bars on a TTY; plain log lines (throttled) otherwise; nothing when quiet / not rank 0."""

    def __init__(self, enabled: bool, total: int, initial: int, desc: str):
        self.enabled = enabled
        self.bar = None
        self.last = 0.0
        if enabled and _is_tty():
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="epoch", dynamic_ncols=True)
        self.desc = desc
        self.total = total

    def batches(self, it: Iterator[Any], total: int) -> Iterator[Any]:
        if self.bar is None:
            return it
        return tqdm(it, total=total, leave=False, desc="  batches", unit="batch", dynamic_ncols=True)

    def update(self, epoch: int, post: dict[str, str], force: bool = False) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(post, refresh=False)
            return
        now = time.monotonic()
        if force or now - self.last >= 30.0:
            self.last = now
            print(f"[{self.desc}] epoch {epoch}/{self.total} " + " ".join(f"{k} {v}" for k, v in post.items()),
                  flush=True)

    def write(self, msg: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


#: experiment options that only say where the (deterministic, cached) data live: a run resumes on another
#: machine with another cache directory
_DATA_LOCATIONS = frozenset({"data_root", "data_dir"})


#: learning-rate schedule options a resumed run may change, as long as every epoch already trained keeps its rate
_SCHEDULE_KEYS = frozenset({"optim.schedule", "optim.min_lr_ratio", "optim.anneal_from"})


def _same_rates(stored_train: Mapping[str, Any], config: TrainConfig, trained: int) -> bool:
    """Whether the stored and the new schedule give every one of the ``trained`` epochs the same learning rate."""
    try:
        old = TrainConfig.from_dict(stored_train)
    except (TypeError, ValueError):
        return False
    return all(old.optim.learning_rate(e, old.epochs) == config.optim.learning_rate(e, config.epochs)
               for e in range(trained))


def _check_resumable(ckpt: Mapping[str, Any], experiment: Experiment, config: TrainConfig, seed: int) -> None:
    stored = ckpt["experiment"]
    if stored.get("name") == experiment.name:
        # options added to the experiment after the checkpoint was written take their defaults
        try:
            stored = {"name": stored["name"], "config": type(experiment).from_dict(stored["config"]).to_dict()}
        except (TypeError, ValueError):
            pass
    current = experiment.to_dict()
    if isinstance(stored.get("config"), Mapping):  # where the data are cached is not part of a run's identity
        stored = {**stored, "config": {k: v for k, v in stored["config"].items() if k not in _DATA_LOCATIONS}}
        current = {k: v for k, v in current.items() if k not in _DATA_LOCATIONS}
    if stored != {"name": experiment.name, "config": current}:
        old, new = _flatten(stored["config"]), _flatten(current)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ValueError(f"resume: the checkpoint's experiment config differs in {diff or ['name']}; "
                         "use another --out/--name or --overwrite")
    stored_train = ckpt["train_config"]
    with contextlib.suppress(TypeError, ValueError):  # training options added since take their defaults
        stored_train = TrainConfig.from_dict(stored_train).to_dict()
    old, new = _flatten(stored_train), _flatten(config.to_dict())
    diff = sorted(k for k in set(old) | set(new) if k.split(".")[0] not in _RESUMABLE and old.get(k) != new.get(k))
    if diff and set(diff) <= _SCHEDULE_KEYS and _same_rates(stored_train, config, int(ckpt["epoch"])):
        diff = []  # a new schedule that agrees with the old one on every epoch already trained
    if diff:
        raise ValueError(f"resume: the checkpoint's training options differ in {diff}; use another --out/--name "
                         "or --overwrite")
    if ckpt["seed"] != seed:
        raise ValueError(f"resume: checkpoint seed {ckpt['seed']} != {seed}")




# ------------------------------------------------------------------------------------------ scoped process state
@contextlib.contextmanager
def _scoped_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` for the duration of a run, restored afterwards (the CLI sets the
    process-wide value; library callers' settings are left as they were)."""
    old = torch.get_num_threads()
    if threads is not None and threads != old:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


@contextlib.contextmanager
def _scoped_rng(seed: int, device: torch.device) -> Iterator[None]:
    """The run's own torch random stream: seeded with ``seed`` inside, the caller's global RNG state
    (CPU and the run's CUDA device) restored on exit."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _compiled(model: nn.Module, log: "_Log") -> nn.Module:
    """``torch.compile(model)`` when a working compiler backend is present (probed on a tiny function) and the
    model does not declare ``supports_compile = False``, else ``model`` with a warning: compilation is an
    optimisation, never a requirement."""
    inner = getattr(model, "module", model)  # under DDP: the user's model
    if not getattr(inner, "supports_compile", True):
        msg = f"compile: {type(inner).__name__} declares supports_compile = False; training eagerly"
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        log.write(msg)
        return model
    try:
        torch.compile(lambda x: x * 2.0 + 1.0)(torch.ones(3))
    except Exception as err:  # noqa: BLE001  (no C++ compiler, unsupported platform...)
        msg = f"compile: torch.compile is not available here ({type(err).__name__}: {str(err)[:200]}); training eagerly"
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        log.write(msg)
        return model
    return torch.compile(model)


# ------------------------------------------------------------------------------------------ one run
@dataclass
class _Run:
    """The mutable state of one seed's training (what a checkpoint holds, plus the live objects)."""

    experiment: Experiment
    config: TrainConfig
    seed: int
    info: DistInfo
    device: torch.device
    run_dir: Path
    model: nn.Module
    optim: torch.optim.Optimizer
    log: "_Log | None" = None
    train_model: nn.Module | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0
    bad_evals: int = 0
    elapsed: float = 0.0
    stopped_early: bool = False
    finished_before: bool = False

    @property
    def desc(self) -> str:
        return f"{self.experiment.name}/{self.config.name or self.experiment.run_name}/seed{self.seed}"

    def save(self, finished: bool) -> None:
        if self.info.is_main:
            atomic_save({
                "format": "equiframe-run", "format_version": FORMAT_VERSION, "version": _version(),
                "experiment": {"name": self.experiment.name, "config": self.experiment.to_dict()},
                "train_config": self.config.to_dict(), "seed": self.seed, "epoch": self.epoch, "finished": finished,
                "model": _cpu_state(self.model), "optimizer": self.optim.state_dict(), "best": self.best,
                "history": self.history, "bad_evals": self.bad_evals, "elapsed_s": self.elapsed,
                "stopped_early": self.stopped_early, "rng": _rng_states(self.model),
                "world_size": self.info.world_size,
            }, self.run_dir / CHECKPOINT)
            _write_curves(self.run_dir, self.history)
        _barrier(self.info)

    def restore(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optim.load_state_dict(state["optimizer"])
        self.history, self.best = list(state["history"]), dict(state["best"])
        self.epoch, self.bad_evals = int(state["epoch"]), int(state["bad_evals"])
        self.elapsed, self.stopped_early = float(state["elapsed_s"]), bool(state["stopped_early"])
        _set_rng_states(state["rng"], self.model)
        self.finished_before = self.stopped_early or self.epoch >= self.config.epochs


def _existing_state(experiment: Experiment, config: TrainConfig, seed: int, run_dir: Path,
                    info: DistInfo) -> dict[str, Any] | None:
    """The checkpoint to continue from (``resume``), after clearing (``overwrite``) or refusing an existing run."""
    ckpt_path = run_dir / CHECKPOINT
    if not ckpt_path.exists():
        if config.resume and config.require_checkpoint:
            raise FileNotFoundError(f"resume: {run_dir} has no checkpoint ({CHECKPOINT}), so there is nothing to "
                                    "continue; check --out/--name/--seeds, or start it without --resume "
                                    "(--resume-or-start continues or starts)")
        if run_dir.exists() and any(run_dir.iterdir()) and not (config.resume or config.overwrite):
            raise FileExistsError(f"{run_dir}: the directory is not empty; pass --overwrite to start again")
        return None
    if config.resume:
        state = load_checkpoint(ckpt_path)
        _check_resumable(state, experiment, config, seed)
        return state
    if config.overwrite:
        _barrier(info)
        if info.is_main:
            shutil.rmtree(run_dir)
        _barrier(info)
        return None
    raise FileExistsError(f"{run_dir}: a run exists; pass resume (--resume) to continue it or overwrite "
                          "(--overwrite) to start again")


def _make_optimizer(model: nn.Module, optim: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    fused = optim.fused
    if fused is None:  # auto: PyTorch's fused kernel where it has one (CPU and CUDA)
        fused = device.type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay,
                            fused=fused or None)


def _start_run(experiment: Experiment, config: TrainConfig, seed: int, info: DistInfo, device: torch.device,
               run_dir: Path) -> _Run:
    """Model, optimiser and state of a run (fresh or from its checkpoint); the global RNG is seeded (scoped by
    the caller) before the model is built, so the initialisation is reproducible."""
    state = _existing_state(experiment, config, seed, run_dir, info)
    model = experiment.build_model().to(device)
    _barrier(info)
    if info.is_main:  # only now: a bad model config leaves no empty run directory behind
        run_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(experiment, config, seed, info, device, run_dir, model, _make_optimizer(model, config.optim, device))
    run.best = {"value": math.inf, "epoch": 0, "metrics": {}, "state": _cpu_state(model)}
    if state is not None:
        run.restore(state)
    elif config.resume and not config.quiet and info.is_main:
        print(f"[{run.desc}] no checkpoint in {run_dir}: starting a new run", flush=True)
    return run


def _train_epoch(run: _Run, epoch: int, train_ds) -> float:
    """One epoch of optimiser steps on this rank's share of every global batch; returns the mean training
    loss over the global epoch (all ranks). The losses are summed on the device and read once per epoch (no
    host synchronisation per step); a non-finite loss stops the run at the end of its epoch, before any
    validation or checkpoint."""
    exp, cfg = run.experiment, run.config
    exp.set_epoch(epoch)
    if cfg.optim.schedule != "constant":
        lr = cfg.optim.learning_rate(epoch, cfg.epochs)
        for group in run.optim.param_groups:
            group["lr"] = lr
    run.train_model.train()
    plan = epoch_batches(len(train_ds), cfg.batch_size, run.seed, epoch, run.info)
    chunks = [idx for idx, _ in plan]
    loss_sum, count = torch.zeros((), dtype=torch.float64, device=run.device), 0.0
    batches = _iter_batches(exp, train_ds, chunks, cfg.num_workers)
    for (_, weight), batch in zip(plan, run.log.batches(batches, len(chunks))):
        batch = exp.to_device(batch, run.device)
        loss = exp.loss(run.train_model, batch)
        run.optim.zero_grad(set_to_none=True)
        (loss * weight if run.info.enabled else loss).backward()
        if cfg.optim.grad_clip is not None:
            nn.utils.clip_grad_norm_(run.model.parameters(), cfg.optim.grad_clip)
        run.optim.step()
        n = _batch_len(batch)
        loss_sum += loss.detach().double() * n
        count += n
    red = _all_reduce({"loss": [float(loss_sum), count]}, run.info, run.device)["loss"]
    if not math.isfinite(red[0]):  # after the reduction: every rank stops, none waits for the others
        raise FloatingPointError(f"loss: non-finite training loss ({red[0]}) in epoch {epoch + 1}")
    return red[0] / max(red[1], 1.0)


def _validate(run: _Run, epoch: int, row: dict[str, Any]) -> None:
    """Validation metrics into ``row``; the best model so far and the early-stopping count."""
    exp = run.experiment
    val = evaluate(exp, run.model, "valid", batch_size=run.config.eval_batch_size or run.config.batch_size,
                   device=run.device, num_workers=run.config.num_workers, info=run.info)
    row.update({f"val_{k}": v for k, v in val.items()})
    if val[exp.metric] < run.best["value"]:
        run.best = {"value": val[exp.metric], "epoch": epoch + 1, "metrics": val, "state": _cpu_state(run.model)}
        run.bad_evals = 0
    else:
        run.bad_evals += 1


def _train_epochs(run: _Run, callback: Callable[[int, dict[str, Any]], None] | None) -> None:
    """Epochs ``run.epoch + 1 ..`` up to ``epochs`` (or early stopping), with checkpoints; then the final one."""
    cfg, exp = run.config, run.experiment
    train_ds = exp.dataset("train")
    if len(train_ds) == 0:
        raise ValueError("dataset: the training split is empty")
    _check_rank_batches(len(train_ds), cfg.batch_size, run.info.world_size)
    for epoch in range(run.epoch, 0 if run.finished_before else cfg.epochs):
        t0 = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": _train_epoch(run, epoch, train_ds)}
        if cfg.optim.schedule != "constant":
            row["lr"] = cfg.optim.learning_rate(epoch, cfg.epochs)
        is_eval = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
        if is_eval:
            _validate(run, epoch, row)
        run.elapsed += time.perf_counter() - t0
        row["time_s"] = run.elapsed
        run.history.append(row)
        run.epoch = epoch + 1
        run.stopped_early = cfg.patience is not None and run.bad_evals >= cfg.patience
        post = {"loss": f"{row['train_loss']:.4g}", "best": f"{run.best['value']:.4g}@{run.best['epoch']}"}
        if is_eval:
            post["val"] = f"{row[f'val_{exp.metric}']:.4g}"
        run.log.update(epoch + 1, post, force=epoch + 1 == cfg.epochs)
        if run.epoch % cfg.checkpoint_every == 0 and run.epoch < cfg.epochs and not run.stopped_early:
            run.save(finished=False)
        if callback is not None:
            callback(run.epoch, row)
        if run.stopped_early:
            run.log.write(f"[{run.desc}] early stop at epoch {run.epoch}: {cfg.patience} evaluations without "
                          "improvement")
            break
    run.save(finished=True)


def _finish(run: _Run, n_params: int) -> RunResult:
    """Test metrics of the best model, diagnostics, ``metrics.json``, curves."""
    cfg, exp, info = run.config, run.experiment, run.info
    run.model.load_state_dict(run.best["state"])
    test = evaluate(exp, run.model, "test", batch_size=cfg.eval_batch_size or cfg.batch_size, device=run.device,
                    num_workers=cfg.num_workers, info=info)
    diag = exp.diagnostics(run.model, run.device) if (cfg.diagnostics and info.is_main) else {}
    metrics = {
        "experiment": exp.name, "run": cfg.name or exp.run_name, "seed": run.seed, "test": test,
        "best_epoch": run.best["epoch"], "best_val": run.best["metrics"], "epochs_run": run.epoch,
        "epochs_planned": cfg.epochs, "stopped_early": run.stopped_early, "wall_time_s": run.elapsed,
        "time_per_epoch_s": run.elapsed / max(len(run.history), 1), "n_params": n_params,
        "experiment_config": exp.to_dict(), "describe": exp.describe(), "train_config": cfg.to_dict(),
        "version": _version(), "torch": torch.__version__, "device": str(run.device), "machine": cpu_name(),
        "threads": torch.get_num_threads(), "world_size": info.world_size, "diagnostics": diag,
        "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    if info.is_main:
        atomic_write_text(run.run_dir / METRICS, json.dumps(metrics, indent=2, default=_json_default) + "\n")
        _write_curves(run.run_dir, run.history)
        _plot_curves(run.run_dir, run.history, exp.metric, run.desc)
        run.log.write(f"[{run.desc}] test {exp.metric} {test[exp.metric]:.5g} (best val epoch {run.best['epoch']}, "
                      f"{run.epoch} epochs, {run.elapsed:.0f} s) -> {run.run_dir}")
    _barrier(info)
    return RunResult(run.run_dir, metrics)


def fit(
    experiment: Experiment,
    config: TrainConfig,
    seed: int,
    *,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
) -> RunResult:
    """Train one seed: epochs, validation, checkpoints, best-model test evaluation, result files.

    The run draws from its own torch random stream (seeded with ``seed``; the caller's global RNG state
    is restored on return) and uses ``config.threads`` threads while it runs (restored on return).

    Args:
        experiment: data sets, model factory, loss and metrics.
        config: loop options.
        seed: the run's seed (model initialisation, data order, every random state).
        callback: called on every rank after each epoch as ``callback(epoch, row)`` with the epoch's
            learning-curve row (after the checkpoint of that epoch is written); an exception raised
            there aborts the run as a kill would (used by the resume tests).

    Returns:
        the run directory and its metrics (identical on every rank).
    """
    info = get_dist()
    device = resolve_device(config.device, info)
    run_dir = run_dir_for(experiment, config, seed)
    with _scoped_threads(config.threads), _scoped_rng(seed, device):
        run = _start_run(experiment, config, seed, info, device, run_dir)
        if run.finished_before and (run_dir / METRICS).exists():
            _barrier(info)
            return RunResult(run_dir, json.loads((run_dir / METRICS).read_text()))
        n_params = sum(p.numel() for p in run.model.parameters())
        run.log = _Log(info.is_main and not config.quiet, config.epochs, min(run.epoch, config.epochs), run.desc)
        try:
            run.train_model = run.model
            if info.enabled:
                run.train_model = nn.parallel.DistributedDataParallel(
                    run.model, device_ids=[device.index] if device.type == "cuda" else None)
            if config.compile and not run.finished_before:
                run.train_model = _compiled(run.train_model, run.log)
            _train_epochs(run, callback)
        finally:
            run.log.close()
        return _finish(run, n_params)


def train(experiment: Experiment, config: TrainConfig) -> list[RunResult]:
    """Run :func:`fit` for every seed of ``config`` (sequentially)."""
    check_instance("experiment", experiment, Experiment)
    check_instance("config", config, TrainConfig)
    return [fit(experiment, config, seed) for seed in config.seeds]


def _batch_len(batch: Any) -> int:
    if isinstance(batch, Mapping):
        if "num_graphs" in batch:
            return int(batch["num_graphs"])
        for v in batch.values():
            if isinstance(v, Tensor) and v.dim() > 0:
                return int(v.shape[0])
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        return int(batch[0].shape[0])
    if hasattr(batch, "num_graphs"):
        return int(batch.num_graphs)
    return 1



# ================================================================================================ evaluation
def evaluate_run(
    path: str | os.PathLike,
    *,
    split: str = "test",
    device: str = "auto",
    batch_size: int | None = None,
    which: str = "best",
    diagnostics: bool = False,
    experiment_overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Re-evaluate a run directory or checkpoint: rebuild its experiment (through the registry of
    :mod:`equiframe.experiments`), load the best (or ``which="last"``) weights and evaluate ``split``.

    Returns:
        ``{"split", "metrics", "epoch", "which", "run", "experiment", "diagnostics"?}``.
    """
    from .experiments import experiment_from_dict  # noqa: PLC0415  (the loop itself is task-agnostic)

    if which not in ("best", "last"):
        raise ValueError(f"which: expected 'best' or 'last', got {which!r}")
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split: expected 'train', 'valid' or 'test', got {split!r}")
    ckpt = load_checkpoint(path)
    cfg = dict(ckpt["experiment"]["config"])
    if experiment_overrides:
        cfg.update(experiment_overrides)
    experiment = experiment_from_dict(ckpt["experiment"]["name"], cfg)
    dev = resolve_device(device, DistInfo())
    model = experiment.build_model().to(dev)
    model.load_state_dict(ckpt["best"]["state"] if which == "best" else ckpt["model"])
    bs = batch_size or ckpt["train_config"].get("eval_batch_size") or ckpt["train_config"]["batch_size"]
    metrics = evaluate(experiment, model, split, batch_size=bs, device=dev, info=DistInfo())
    out: dict[str, Any] = {
        "split": split, "metrics": metrics, "which": which,
        "epoch": ckpt["best"]["epoch"] if which == "best" else ckpt["epoch"],
        "epochs_run": ckpt["epoch"], "finished": ckpt["finished"],
        "experiment": ckpt["experiment"]["name"], "run": ckpt["train_config"].get("name") or experiment.run_name,
        "seed": ckpt["seed"],
    }
    if diagnostics:
        out["diagnostics"] = experiment.diagnostics(model, dev)
    return out
