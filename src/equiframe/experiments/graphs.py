r"""Expressive power of graph models (Frame Averaging paper, SPEC 4.2): separation and classification.

**Separation** (:func:`separate`, in :mod:`equiframe.experiments.graphs_separation` and re-exported here with
the shared data helpers): untrained, randomly initialised models embed every graph of a data set; the result
is the number of pairs of non-isomorphic graphs that no seed distinguishes (L1 distance above ``tau``).

**Classification** (:func:`classify`): EXP-classify (train graphs 400-1199, validate 0-199, test
200-399) and CSL (10 classes x 15 graphs, 5-fold stratified CV: test fold ``k``, validation fold
``k+1 mod 5``, training the other three), trained with the shared loop :func:`equiframe.train.fit`
(Adam, lr 1e-3, cross-entropy, model selection by validation error, test accuracy of the best epoch).
:class:`GraphClassificationExperiment` is registered as experiment ``"graphs"``.

The command line (``add_cli`` and the argument functions) is in :mod:`equiframe.experiments.graphs_cli`.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Mapping, Sequence, get_args

import torch
from torch import Tensor, nn

from ..datasets.fetch import data_source
from ..frames.canonical import canonical_keys
from ..models.graphs import GRAPH_MODEL_NAMES, ComponentOrder, FrameKind, GraphModelName, build_graph_model
from ..train import Experiment, OptimConfig, TrainConfig, fit
from . import register_experiment
from .graphs_separation import (  # re-exported: the separation protocol and the shared data helpers
    _DTYPES,
    DEFAULT_SEEDS,
    PUBLISHED_SEPARATION,
    SEPARATION_DATASETS,
    Dtype,
    NodeFeatures,
    SeparationDataset,
    _chunks,
    _data_file,
    _machine,
    default_data_dir,
    embed_graphs,
    load_separation_graphs,
    relabelled_copies,
    separate,
    undistinguished_pairs,
    with_degree,
)

__all__ = [
    "CLASSIFY_DATASETS",
    "GraphClassificationConfig",
    "GraphClassificationExperiment",
    "PUBLISHED_SEPARATION",
    "SEPARATION_DATASETS",
    "add_cli",
    "classify",
    "csl_folds",
    "default_data_dir",
    "embed_graphs",
    "with_degree",
    "load_separation_graphs",
    "relabelled_copies",
    "separate",
    "undistinguished_pairs",
]

ClassifyDataset = Literal["exp", "csl"]
CLASSIFY_DATASETS: tuple[str, ...] = get_args(ClassifyDataset)
SelectMetric = Literal["error", "loss"]


# ================================================================================================ classification
def csl_folds(labels: Sequence[int], folds: int = 5, seed: int = 0) -> list[list[int]]:
    """Stratified folds: every class's items shuffled (``numpy`` generator ``seed``) and dealt round-robin.

    Returns:
        ``folds`` lists of item indices (sorted), each with ``count_c / folds`` items of class ``c``.
    """
    check_int("folds", folds, 2)
    if len(labels) < folds:
        raise ValueError(f"labels: {len(labels)} item(s) cannot fill {folds} folds")
    import numpy as np  # noqa: PLC0415

    if folds < 2:
        raise ValueError(f"folds: expected >= 2, got {folds}")
    rng = np.random.default_rng(seed)
    labels = list(int(v) for v in labels)
    out: list[list[int]] = [[] for _ in range(folds)]
    for c in sorted(set(labels)):
        idx = [i for i, v in enumerate(labels) if v == c]
        idx = [idx[k] for k in rng.permutation(len(idx))]
        for k, i in enumerate(idx):
            out[k % folds].append(i)
    return [sorted(f) for f in out]


@dataclass(frozen=True)
class GraphClassificationConfig:
    """EXP-classify or CSL with one of the graph models.

    Attributes:
        dataset: ``"exp"`` (fixed split) or ``"csl"`` (5-fold CV, see :func:`csl_folds`).
        model: ``"fa-mlp"``, ``"fa-gin-id"``, ``"gin"``, ``"gcn"``.
        frame: FA frames (``"spectral"`` or ``"canonical"``) of evaluation (and of training by default).
        train_frame: FA frames while training; ``None`` = ``frame``. ``frame="canonical",
            train_frame="spectral"`` trains on sampled spectral-frame orders (augmentation over the frame)
            and evaluates with the exact, single-element canonical frame (see
            :class:`~equiframe.models.graphs.FAGraphModel`).
        fold: CSL test fold ``0..4`` (EXP: 0).
        hidden, layers: model size.
        max_size: evaluation: frames up to this size are averaged exactly, larger ones sampled.
        n_samples: frame samples per graph in training (and in evaluation above ``max_size``).
        dtype: ``"float32"`` / ``"float64"``.
        data_dir: directory of ``exp_graphsat.npz`` (default ``$EQUIFRAME_DATA``).
        max_states: canonical-frame search budget.
        select: validation metric of model selection (lower is better; the test accuracy is reported at
            the selected epoch): ``"error"`` (the first epoch with the lowest validation error) or
            ``"loss"`` (the lowest validation cross-entropy, as in the FA paper's code). With sampled
            training frames the validation error fluctuates between epochs and often first reaches its
            minimum at an early, not yet converged epoch; the loss ranks the converged epochs.
        train_components: ``"shuffled"`` samples training orders with every graph's connected components in
            random order (FA models; see :class:`~equiframe.models.graphs.FAGraphModel`); ``"sorted"``: the
            frame's own order.
    """

    dataset: ClassifyDataset = "exp"
    model: GraphModelName = "fa-gin-id"
    frame: FrameKind = "spectral"
    train_frame: FrameKind | None = None
    fold: int = 0
    hidden: int = 64
    layers: int = 3
    max_size: int = 1024
    n_samples: int = 1
    dtype: Dtype = "float32"
    data_dir: str | None = None
    max_states: int = 20_000
    select: SelectMetric = "error"
    train_components: ComponentOrder = "sorted"

    def __post_init__(self) -> None:
        if self.dataset not in CLASSIFY_DATASETS:
            raise ValueError(f"dataset: expected one of {CLASSIFY_DATASETS}, got {self.dataset!r}")
        if self.model not in GRAPH_MODEL_NAMES:
            raise ValueError(f"model: expected one of {GRAPH_MODEL_NAMES}, got {self.model!r}")
        if self.frame not in get_args(FrameKind):
            raise ValueError(f"frame: expected one of {get_args(FrameKind)}, got {self.frame!r}")
        if self.train_frame is not None and self.train_frame not in get_args(FrameKind):
            raise ValueError(f"train_frame: expected None or one of {get_args(FrameKind)}, got {self.train_frame!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {self.dtype!r}")
        if self.select not in get_args(SelectMetric):
            raise ValueError(f"select: expected one of {get_args(SelectMetric)}, got {self.select!r}")
        if self.train_components not in get_args(ComponentOrder):
            raise ValueError(f"train_components: expected one of {get_args(ComponentOrder)}, got {self.train_components!r}")
        if self.train_components != "sorted" and not self.model.startswith("fa-"):
            raise ValueError(f"train_components: only FA models sample frame orders, not {self.model!r}")
        nfolds = 5 if self.dataset == "csl" else 1
        if isinstance(self.fold, bool) or not isinstance(self.fold, int) or not 0 <= self.fold < nfolds:
            raise ValueError(f"fold: expected an integer in [0, {nfolds}) for {self.dataset}, got {self.fold!r}")
        for name in ("hidden", "layers", "max_size", "n_samples", "max_states"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GraphClassificationConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"config: unknown graph classification options {sorted(unknown)}")
        return cls(**dict(d))


class _GraphList(torch.utils.data.Dataset):
    def __init__(self, graphs: list[Any]):
        self.graphs = graphs

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, i: int) -> Any:
        return self.graphs[i]


@register_experiment
class GraphClassificationExperiment(Experiment):
    """EXP-classify / CSL for :mod:`equiframe.train` (metric: classification error, lower is better).

    The model-selection metric of an instance is ``config.select`` (``metric`` of the instance; the class
    attribute ``"error"`` is the metric reports show).

    Batches are dicts: ``x`` ``[N, F]``, ``edge_index``, ``batch``, ``y`` ``[B]``, ``key`` (canonical
    frames: precomputed canonical node keys), ``num_graphs``.
    """

    name = "graphs"
    metric = "error"
    published = {"fa-mlp": 0.0, "fa-gin-id": 0.0, "gin": 0.5, "gcn": 0.5}  # EXP-classify test error, by model
    published_csl = {"fa-mlp": 0.0, "fa-gin-id": 0.0, "gin": 0.9}  # CSL test error, by model
    references = {"EXP GIN error": 0.5, "EXP FA-MLP error": 0.0, "EXP FA-GIN+ID error": 0.0, "CSL GIN error": 0.9,
                  "CSL FA error": 0.0}

    def __init__(self, config: GraphClassificationConfig | None = None, **kwargs: Any):
        if config is None:
            config = GraphClassificationConfig(**kwargs)
        elif kwargs:
            raise TypeError("GraphClassificationExperiment: give a config or keyword options, not both")
        if not isinstance(config, GraphClassificationConfig):
            raise TypeError(f"config: expected a GraphClassificationConfig, got {type(config).__name__}")
        self.config = config
        self.metric = config.select  # selection metric of the training loop (instance level)
        self._graphs: list[Any] | None = None
        self._splits: dict[str, _GraphList] = {}

    @property
    def run_name(self) -> str:
        c = self.config
        fr = ""
        if c.model.startswith("fa-"):
            fr = f"-{c.frame}"
            if c.train_frame not in (None, c.frame):
                fr += f"-train{c.train_frame}"
            if c.train_components == "shuffled":
                fr += "-shufcomp"
        sel = "-selloss" if c.select == "loss" else ""
        return f"{c.dataset}-{c.model}{fr}{sel}-fold{c.fold}"

    def to_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GraphClassificationExperiment":
        return cls(GraphClassificationConfig.from_dict(d))

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.config.dataset, **data_source(self.config.dataset, self.config.data_dir),
                "model": self.config.model, "frame": self.config.frame,
                "train_frame": self.config.train_frame or self.config.frame,
                "train_components": self.config.train_components,
                "fold": self.config.fold, **{f"n_{k}": len(self.dataset(k)) for k in ("train", "valid", "test")},
                "published": (self.published if self.config.dataset == "exp" else self.published_csl).get(self.config.model)}

    # ------------------------------------------------------------------ data
    def _all_graphs(self) -> list[Any]:
        if self._graphs is None:
            c = self.config
            graphs = list(load_separation_graphs(c.dataset, c.data_dir))
            if c.model.startswith("fa-") and "canonical" in (c.frame, c.train_frame):
                from torch_geometric.data import Batch  # noqa: PLC0415

                for i in range(0, len(graphs), 1024):
                    part = graphs[i : i + 1024]
                    b = Batch.from_data_list(part)
                    lab = canonical_keys(b.edge_index, batch=b.batch, x=b.x, max_states=c.max_states)
                    for j, g in enumerate(part):
                        g.canon_key = lab.keys[b.ptr[j] : b.ptr[j + 1]].clone()
            self._graphs = graphs
        return self._graphs

    def split_indices(self) -> dict[str, list[int]]:
        """Graph indices of the train / valid / test splits."""
        c = self.config
        if c.dataset == "exp":
            return {"train": list(range(400, 1200)), "valid": list(range(0, 200)), "test": list(range(200, 400))}
        folds = csl_folds([int(g.y) for g in self._all_graphs()], 5, seed=0)
        test, valid = folds[c.fold], folds[(c.fold + 1) % 5]
        train = sorted(i for k, f in enumerate(folds) if k not in (c.fold, (c.fold + 1) % 5) for i in f)
        return {"train": train, "valid": valid, "test": test}

    @property
    def n_max(self) -> int:
        return max(g.num_nodes for g in self._all_graphs())

    @property
    def num_classes(self) -> int:
        return 2 if self.config.dataset == "exp" else 10

    def dataset(self, split: str) -> _GraphList:
        if split not in ("train", "valid", "test"):
            raise ValueError(f"split: expected 'train', 'valid' or 'test', got {split!r}")
        if split not in self._splits:
            graphs = self._all_graphs()
            self._splits[split] = _GraphList([graphs[i] for i in self.split_indices()[split]])
        return self._splits[split]

    def make_batch(self, dataset: _GraphList, index: Tensor) -> dict[str, Any]:
        from torch_geometric.data import Batch  # noqa: PLC0415

        b = Batch.from_data_list([dataset[int(i)] for i in index])
        out = {"x": b.x.to(_DTYPES[self.config.dtype]), "edge_index": b.edge_index, "batch": b.batch,
               "y": b.y.reshape(-1), "num_graphs": b.num_graphs}
        if hasattr(b, "canon_key") and b.canon_key is not None:
            out["key"] = b.canon_key
        return out

    def collate(self, items: Sequence[Any]) -> dict[str, Any]:
        return self.make_batch(_GraphList(list(items)), torch.arange(len(items)))

    # ------------------------------------------------------------------ model, loss, metrics
    def build_model(self) -> nn.Module:
        c = self.config
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))  # from the loop's seeded RNG
        in_dim = self._all_graphs()[0].x.shape[1]
        model = build_graph_model(c.model, in_dim=in_dim, n_max=self.n_max, hidden=c.hidden, layers=c.layers,
                                  out_dim=self.num_classes, frame=c.frame, train_frame=c.train_frame, mode="stochastic", max_size=c.max_size,
                                  n_samples=c.n_samples, generator=gen, max_states=c.max_states,
                                  train_components=c.train_components)
        return model.to(_DTYPES[c.dtype])

    @staticmethod
    def logits(model: nn.Module, batch: Mapping[str, Any]) -> Tensor:
        return model(batch["x"], batch["edge_index"], batch["batch"], key=batch.get("key"))

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> Tensor:
        return nn.functional.cross_entropy(self.logits(model, batch), batch["y"])

    def metrics(self, model: nn.Module, batch: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
        logits = self.logits(model, batch)
        n = float(batch["y"].numel())
        correct = float((logits.argmax(-1) == batch["y"]).sum())
        ce = float(nn.functional.cross_entropy(logits, batch["y"], reduction="sum"))
        return {"error": (n - correct, n), "accuracy": (correct, n), "loss": (ce, n)}

    @torch.no_grad()
    def diagnostics(self, model: nn.Module, device: torch.device, *, relabel_seed: int = 12345,
                    batch_size: int = 32) -> dict[str, Any]:
        """Invariance of the trained model on the test split: every test graph against a randomly relabelled
        copy (:func:`relabelled_copies`, generator seeded ``relabel_seed``), in evaluation mode.

        .. math::  \\Delta = \\max_{G \\in \\mathrm{test}} \\lVert f(G) - f(PG) \\rVert_\\infty

        Exactly invariant models (GIN, GCN, canonical frames, exactly averaged frames) give ``Delta`` at
        float rounding level and identical predictions; sampled frames do not. Canonical keys of the copies
        are computed on the fly (their own search, independent of the originals').

        Returns:
            ``{"relabel_max_abs_logit_diff", "relabel_prediction_agreement", "relabel_test_accuracy",
            "relabel_graphs"}``.
        """
        was_training = model.training
        model.eval()
        graphs = list(self.dataset("test"))
        copies = relabelled_copies(graphs, torch.Generator().manual_seed(relabel_seed))
        diff, agree, correct = 0.0, 0, 0
        for i in range(0, len(graphs), batch_size):
            a = self.to_device(self.collate(graphs[i : i + batch_size]), device)
            b = self.to_device(self.collate(copies[i : i + batch_size]), device)
            la, lb = self.logits(model, a), self.logits(model, b)
            diff = max(diff, float((la - lb).abs().max()))
            agree += int((la.argmax(-1) == lb.argmax(-1)).sum())
            correct += int((lb.argmax(-1) == b["y"]).sum())
        model.train(was_training)
        n = len(graphs)
        return {"relabel_max_abs_logit_diff": diff, "relabel_prediction_agreement": agree / n,
                "relabel_test_accuracy": correct / n, "relabel_graphs": n}


def classify(
    dataset: ClassifyDataset,
    model: GraphModelName,
    epochs: int = 199,
    *,
    frame: FrameKind = "spectral",
    train_frame: FrameKind | None = None,
    select: SelectMetric = "error",
    train_components: ComponentOrder = "sorted",
    seeds: Sequence[int] = (0,),
    folds: Sequence[int] | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 32,
    hidden: int = 64,
    layers: int = 3,
    max_size: int = 1024,
    n_samples: int = 1,
    dtype: Dtype = "float32",
    data_dir: str | os.PathLike | None = None,
    out: str | os.PathLike = "runs",
    eval_every: int = 1,
    overwrite: bool = False,
    resume: bool = False,
    quiet: bool = True,
    threads: int | None = None,
    device: str = "cpu",
    require_checkpoint: bool = False,
) -> dict[str, Any]:
    """Train and test a graph classifier with the shared loop (:func:`equiframe.train.fit`).

    EXP: one split (train 400-1199, valid 0-199, test 200-399). CSL: folds ``0..4`` by default (test fold
    ``k``, validation fold ``k+1 mod 5``). Adam (lr ``lr``, weight decay ``weight_decay``, default 0),
    cross-entropy, model selection on the validation ``select`` metric (``"error"`` or ``"loss"``, see
    :class:`GraphClassificationConfig`); runs are written to
    ``out/graphs/<dataset>-<model>[-frame[-train<train_frame>][-shufcomp]][-selloss]-fold<k>/seed<s>/``.

    FA models train with ``n_samples`` sampled elements per graph of the ``train_frame`` (default: ``frame``)
    and evaluate with ``frame``: exact averages up to ``max_size`` elements, ``n_samples`` samples above
    (canonical frames: always exact, one element). ``frame="canonical", train_frame="spectral"`` =
    augmentation over the spectral frame in training, exactly invariant evaluation. ``train_components=
    "shuffled"`` samples the training orders from the component frame instead (connected components in random
    order; :func:`~equiframe.frames.graph.shuffle_components`). ``resume`` continues runs from their checkpoints;
    with ``require_checkpoint`` a run without one is a ``FileNotFoundError`` (the CLI's ``--resume``; its
    ``--resume-or-start`` starts such runs).

    Returns:
        ``{"test_accuracy_mean", "test_accuracy_std", "runs": [{fold, seed, test_accuracy, best_epoch,
        wall_time_s, invariance, ...}], ...}`` (accuracies in [0, 1]; ``invariance``: the best model on
        relabelled copies of the test graphs, see :meth:`GraphClassificationExperiment.diagnostics`).
    """
    if dataset not in CLASSIFY_DATASETS:
        raise ValueError(f"dataset: expected one of {CLASSIFY_DATASETS}, got {dataset!r}")
    if folds is None:
        folds = range(5) if dataset == "csl" else (0,)
    t0 = time.perf_counter()
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, optim=OptimConfig(lr=lr, weight_decay=weight_decay),
                      seeds=tuple(seeds), eval_every=eval_every, checkpoint_every=max(10, epochs), out=str(out),
                      overwrite=overwrite, resume=resume, require_checkpoint=require_checkpoint, quiet=quiet,
                      threads=threads, device=device, diagnostics=True)
    runs = []
    for fold in folds:
        exp = GraphClassificationExperiment(GraphClassificationConfig(
            dataset=dataset, model=model, frame=frame, train_frame=train_frame, select=select,
            train_components=train_components, fold=int(fold), hidden=hidden, layers=layers,
            max_size=max_size, n_samples=n_samples, dtype=dtype, data_dir=None if data_dir is None else str(data_dir)))
        for seed in cfg.seeds:
            r = fit(exp, cfg, seed)
            m = r.metrics
            runs.append({"fold": int(fold), "seed": seed, "test_accuracy": m["test"]["accuracy"],
                         "best_val_accuracy": m["best_val"].get("accuracy"), "best_epoch": m["best_epoch"],
                         "epochs_run": m["epochs_run"], "wall_time_s": m["wall_time_s"], "run_dir": str(r.run_dir),
                         "invariance": m.get("diagnostics") or None})
    accs = [r["test_accuracy"] for r in runs]
    return {
        "dataset": dataset, "model": model, "frame": frame if model.startswith("fa-") else None,
        "train_frame": (train_frame or frame) if model.startswith("fa-") else None, "select": select,
        "train_components": train_components if model.startswith("fa-") else None,
        "epochs": epochs,
        "lr": lr, "weight_decay": weight_decay, "batch_size": batch_size, "n_samples": n_samples, "max_size": max_size,
        "test_accuracy_mean": statistics.fmean(accs), "test_accuracy_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
        "runs": runs, "wall_time_s": time.perf_counter() - t0, "machine": _machine(),
    }


_CLI_NAMES = ("add_classify_arguments", "add_cli", "add_separate_arguments")


def __getattr__(name: str) -> Any:
    """The command-line helpers of :mod:`.graphs_cli`, re-exported lazily (that module imports this one, so an
    import at the top would be circular whichever of the two is imported first)."""
    if name in _CLI_NAMES:
        from . import graphs_cli  # noqa: PLC0415

        return getattr(graphs_cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


from .._checks import check_int  # noqa: E402
