r"""Point-cloud normal estimation (unoriented normals; SPEC 4.3, issue 6).

Data: the procedural CAD-like shapes of :mod:`equiframe.datasets.shapes` (:class:`NormalsDataset`):
``n_points`` (512) area-uniform surface points per shape and their face normals; the training split
draws fresh points every epoch, validation and test points are fixed. The validation split is the
last ``n_valid`` shapes of the generated training meshes (never trained on).

Loss and metric: the unoriented normal loss and the angle between the lines,

.. math::  L = \frac{1}{N} \sum_i 1 - (\hat n_i \cdot n_i)^2, \qquad
           \theta_i = \angle(\pm \hat n_i, n_i) \in [0^\circ, 90^\circ].

Settings (train/test rotations, **really applied** to the data: the released FA configs never rotate
because of a config-string bug): ``"i/i"`` (canonical poses for both), ``"i/so3"`` (train canonical,
test with a Haar-random rotation per shape), ``"so3/so3"`` (both rotated; fresh training rotations
every epoch). A run of setting ``i/i`` also reports the ``i/so3`` test numbers (same trained model)
in its diagnostics, so the three columns need two trainings.

Protocol: Adam 1e-3, batch 32. The default size (8000 / 2000 shapes) is the paper's; CPU
benchmarks use a reduced :class:`NormalsExperimentConfig` (stated in their reports).

Fresh points: the loop calls :meth:`NormalsExperiment.set_epoch` before every epoch, which selects
the points of that epoch (:meth:`NormalsDataset.set_epoch`): a resumed run draws exactly the points
an uninterrupted run would.

Model options (see :mod:`equiframe.models.normals`): ``features`` (typed local-geometry input of the
global models; default ``"pca"``), ``head`` (the local-frame models' normal head; default
``"wlsq"``, a learned reweighted plane fit started at the k-NN PCA normal).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence, get_args

import numpy as np
import torch
from torch import Tensor, nn

from .._checks import check_instance, check_int
from ..datasets.normal_metrics import METRICS, _finish_metrics, _metric_sums, normal_metrics  # noqa: F401 (re-exported)
from ..datasets.shapes import NormalsDataset, ShapesConfig, angular_error_deg, build_shapes, normal_loss
from ..models.normals import (
    NORMALS_MODELS,
    FAMode,
    FrameKind,
    GlobalOutput,
    Head,
    LocalFeatures,
    NormalsModelName,
    build_normals_model,
    tf_head_kind,
)
from ..testing import equivariance_error
from ..train import Experiment
from .normals_augment import _EpochView

if TYPE_CHECKING:
    from ..datasets.cad import CADConfig

__all__ = [
    "EQUIVARIANT",
    "SETTINGS",
    "FreshPoints",
    "NormalsExperiment",
    "NormalsExperimentConfig",
    "Setting",
    "add_cli",
    "add_data_cli",
    "collect_runs",
    "METRICS",
    "evaluate_model",
    "normal_metrics",
    "plot_error_histograms",
    "plot_predictions",
    "results_table",
    "setting_rotations",
]

Setting = Literal["i/i", "i/so3", "so3/so3"]
Source = Literal["procedural", "cad"]
SETTINGS: tuple[str, ...] = get_args(Setting)
Dtype = Literal["float32", "float64"]
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_ROT = {"i": "none", "so3": "so3"}
#: the learned models that are exactly equivariant (same numbers in every setting)
EQUIVARIANT = ("fa-pointnet", "fa-dgcnn", "fa-local-pointnet", "tf-pointnet", "knn-pca")


def setting_rotations(setting: Setting) -> tuple[str, str]:
    """``(train rotation, test rotation)`` of a setting as :class:`NormalsDataset` options."""
    if setting not in SETTINGS:
        raise ValueError(f"setting: expected one of {SETTINGS}, got {setting!r}")
    a, b = setting.split("/")
    return _ROT[a], _ROT[b]


@dataclass(frozen=True)
class NormalsExperimentConfig:
    """The normal-estimation experiment: model, setting, data budget.

    Attributes:
        model: one of :data:`~equiframe.models.normals.NORMALS_MODELS`.
        setting: ``"i/i"``, ``"i/so3"`` or ``"so3/so3"`` (train/test rotations).
        n_train, n_valid, n_test: shapes per split (train and valid come from the generated training
            meshes: ``n_train + n_valid`` of them).
        n_points: points per shape.
        noise: position noise (fraction of the bounding-box diagonal).
        data_seed: seed of the shape generation and point sampling.
        hidden: MLP width of the models.
        k: neighbourhood of the (FA-)DGCNN graphs.
        fa_mode: frame mode of the FA models.
        features: typed local-geometry input of the global models (PointNet, DGCNN, FA-*):
            ``"none"``, ``"cov"`` or ``"pca"`` (default; see :mod:`equiframe.models.normals`).
        feature_k: neighbourhood of those features.
        output: output head of the global models: ``"vector"``, ``"line"`` (default: an order-2 tensor
            whose dominant eigenvector is the normal) or ``"line-residual"``.
        head: normal head of the local-frame models (``None``: the model's default, ``"wlsq"`` with
            PCA frames).
        local_k: neighbourhood of FA-Local-PointNet.
        local_context_k: FA-Local-PointNet's multi-scale context neighbourhood (``None``: none).
        local_vote: FA-Local-PointNet's plane vote over the pairs of this many nearest neighbours (``None``:
            none; see :class:`~equiframe.models.normals.LocalPointNet`'s ``vote``).
        train_queries: train a local model (FA-Local-PointNet) on this many random query points per
            training cloud, their neighbourhoods taken in the whole cloud (``None``: every point; see
            :mod:`equiframe.experiments.normals_augment`). Evaluation always uses whole clouds.
        train_noise_max: with ``train_queries``, every training cloud gets Gaussian noise of a random
            level ``U(0, train_noise_max)`` (fraction of its bounding-box diagonal) on top of ``noise``.
        train_clean_share: with ``train_noise_max``, the share of training clouds left without that noise.
        train_densities: with ``train_queries`` and ``source="cad"``, every training cloud has a random
            point count from these (default: ``n_points``).
        hidden_reps, tf_frames, tf_local_layers, tf_ratios, tf_k: TF-PointNet++ options.
        dgcnn_layers: EdgeConv layers.
        baseline_k: neighbourhood of the k-NN PCA baseline.
        source: ``"procedural"`` (:mod:`equiframe.datasets.shapes`) or ``"cad"`` (the CAD-kernel parts of
            :mod:`equiframe.datasets.cad`: the first ``n_train`` / ``n_valid`` / ``n_test`` parts of its
            train / valid / test splits among parts ``0 .. cad_parts - 1``).
        cad_parts, cad_points: the built CAD data set (``CADConfig(n_parts, n_points, seed=data_seed)``).
        cad_max_points: stored samples per part held in memory (the clouds are random subsets of them).
        dtype: data and model dtype.
        data_root: shapes cache root (default ``$EQUIFRAME_CACHE`` / ``~/.cache/equiframe``).
        diagnostic_samples: test shapes used by the rotation / equivariance diagnostics (0: none).
    """

    model: NormalsModelName = "fa-pointnet"
    setting: Setting = "i/i"
    n_train: int = 8000
    n_valid: int = 500
    n_test: int = 2000
    n_points: int = 512
    noise: float = 0.0
    data_seed: int = 0
    hidden: int = 64
    k: int = 20
    fa_mode: FAMode = "all"
    features: LocalFeatures = "pca"
    feature_k: int = 16
    output: GlobalOutput = "line"
    head: Head | None = None
    local_k: int = 16
    local_context_k: int | None = None
    local_vote: int | None = None
    train_queries: int | None = None
    train_noise_max: float = 0.0
    train_densities: tuple[int, ...] = ()
    train_clean_share: float = 0.0
    hidden_reps: str = "32x0n+8x1n"
    tf_frames: FrameKind = "pca"
    tf_local_layers: int = 2
    tf_ratios: tuple[float, ...] = (0.25, 0.25)
    tf_k: int = 16
    tf_pool_edges: bool | None = None
    tf_edge_transport: bool | None = None
    dgcnn_layers: int = 3
    baseline_k: int = 16
    source: Source = "procedural"
    cad_parts: int = 2000
    cad_points: int = 10000
    cad_max_points: int = 2048
    dtype: Dtype = "float32"
    data_root: str | None = None
    diagnostic_samples: int = 2000

    def __post_init__(self) -> None:
        if self.model not in NORMALS_MODELS:
            raise ValueError(f"model: expected one of {NORMALS_MODELS}, got {self.model!r}")
        setting_rotations(self.setting)
        if self.source not in get_args(Source):
            raise ValueError(f"source: expected one of {get_args(Source)}, got {self.source!r}")
        for name in ("n_train", "n_valid", "n_test", "n_points", "hidden", "k", "feature_k", "local_k",
                     "tf_local_layers", "tf_k", "dgcnn_layers", "baseline_k", "cad_parts", "cad_points",
                     "cad_max_points"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        for name in ("data_seed", "diagnostic_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}: expected an integer >= 0, got {v!r}")
        if self.fa_mode not in get_args(FAMode):
            raise ValueError(f"fa_mode: expected one of {get_args(FAMode)}, got {self.fa_mode!r}")
        if self.features not in get_args(LocalFeatures):
            raise ValueError(f"features: expected one of {get_args(LocalFeatures)}, got {self.features!r}")
        if self.output not in get_args(GlobalOutput):
            raise ValueError(f"output: expected one of {get_args(GlobalOutput)}, got {self.output!r}")
        if self.head is not None and self.head not in get_args(Head):
            raise ValueError(f"head: expected None or one of {get_args(Head)}, got {self.head!r}")
        ratios = tuple(self.tf_ratios)
        if any(isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r < 1 for r in ratios):
            raise ValueError(f"tf_ratios: expected fractions in (0, 1), got {self.tf_ratios!r}")
        object.__setattr__(self, "tf_ratios", tuple(float(r) for r in ratios))
        if self.tf_frames not in get_args(FrameKind):
            raise ValueError(f"tf_frames: expected one of {get_args(FrameKind)}, got {self.tf_frames!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {self.dtype!r}")
        for name in ("tf_pool_edges", "tf_edge_transport"):
            if not isinstance(getattr(self, name), (bool, type(None))):
                raise ValueError(f"{name}: expected a bool or None, got {getattr(self, name)!r}")
        # resolve the TF-PointNet++ head options to concrete values (None: the head's default), so that
        # a config names its architecture exactly (checkpoints, resume checks, run names)
        wlsq = tf_head_kind(self.head, self.tf_frames) == "wlsq"
        if self.tf_pool_edges is None:
            object.__setattr__(self, "tf_pool_edges", wlsq)
        if self.tf_edge_transport is None:
            object.__setattr__(self, "tf_edge_transport", not wlsq)
        if not (isinstance(self.noise, (int, float)) and math.isfinite(self.noise) and self.noise >= 0):
            raise ValueError(f"noise: expected a finite number >= 0, got {self.noise!r}")
        kmax = max(self.k, self.tf_k, self.baseline_k, self.feature_k, self.local_k, self.local_context_k or 0)
        if kmax >= self.n_points:
            raise ValueError(f"n_points: {self.n_points} points cannot have k = {kmax} neighbours")
        self._check_local_training()

    def _check_local_training(self) -> None:
        """Validate the options of the local models' training samples (``local_context_k``, ``train_*``)."""
        local = self.model == "fa-local-pointnet"
        if self.local_context_k is not None:
            v = self.local_context_k
            if isinstance(v, bool) or not isinstance(v, int) or v <= self.local_k or not local:
                raise ValueError(f"local_context_k: expected None or an integer > local_k = {self.local_k} "
                                 f"(fa-local-pointnet only), got {v!r} for model {self.model!r}")
        if self.local_vote is not None:
            v = self.local_vote
            if (isinstance(v, bool) or not isinstance(v, int) or not 2 <= v < self.local_k or not local
                    or self.head not in (None, "wlsq")):
                raise ValueError(f"local_vote: expected None or an integer in [2, local_k = {self.local_k}) "
                                 f"(fa-local-pointnet with the wlsq head only), got {v!r} for model {self.model!r}")
        if self.train_queries is not None:
            v = self.train_queries
            if isinstance(v, bool) or not isinstance(v, int) or v < 1 or not local:
                raise ValueError(f"train_queries: expected None or a positive integer (fa-local-pointnet only), got "
                                 f"{v!r} for model {self.model!r}")
        nm = self.train_noise_max
        if isinstance(nm, bool) or not (isinstance(nm, (int, float)) and math.isfinite(nm) and nm >= 0):
            raise ValueError(f"train_noise_max: expected a finite number >= 0, got {nm!r}")
        object.__setattr__(self, "train_noise_max", float(nm))
        dens = tuple(self.train_densities)
        object.__setattr__(self, "train_densities", dens)
        if (nm > 0 or dens) and self.train_queries is None:
            raise ValueError("train_noise_max, train_densities: need train_queries (query-neighbourhood training)")
        cs = self.train_clean_share
        if isinstance(cs, bool) or not isinstance(cs, (int, float)) or not 0 <= cs <= 1 or (cs > 0 and nm == 0):
            raise ValueError(f"train_clean_share: expected a number in [0, 1] (> 0 only with train_noise_max), got {cs!r}")
        object.__setattr__(self, "train_clean_share", float(cs))
        if dens and self.source != "cad":
            raise ValueError("train_densities: needs source='cad' (the procedural shapes store n_points points)")
        nb = self.local_context_k or self.local_k
        for n in dens:
            if isinstance(n, bool) or not isinstance(n, int) or n <= nb or n < (self.train_queries or 1):
                raise ValueError(f"train_densities: expected point counts > {nb} (neighbours) and >= train_queries, "
                                 f"got {self.train_densities!r}")

    @property
    def train_points(self) -> int:
        """Points per training cloud as loaded (the largest training density)."""
        return max(self.train_densities) if self.train_densities else self.n_points

    def shapes_config(self) -> ShapesConfig:
        """The :class:`ShapesConfig` of the meshes (train + valid shapes, test shapes)."""
        return ShapesConfig(n_train=self.n_train + self.n_valid, n_test=self.n_test, n_points=self.n_points,
                            seed=self.data_seed, noise=float(self.noise))

    def cad_config(self) -> "CADConfig":
        """The :class:`~equiframe.datasets.cad.CADConfig` of the CAD-kernel parts."""
        from ..datasets.cad import CADConfig  # noqa: PLC0415

        return CADConfig(n_parts=self.cad_parts, n_points=self.cad_points, seed=self.data_seed)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tf_ratios"] = list(self.tf_ratios)
        d["train_densities"] = list(self.train_densities)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NormalsExperimentConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"config: unknown normals options {sorted(unknown)}")
        d = dict(d)
        if d.get("model") == "tf-pointnet":
            # configs written before these options existed describe the earlier head (transported edge
            # features, no pooling)
            d.setdefault("tf_pool_edges", False)
            d.setdefault("tf_edge_transport", True)
        for key in ("tf_ratios", "train_densities"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


class FreshPoints(_EpochView):
    """Shapes ``indices`` of a resampled :class:`NormalsDataset` (or
    :class:`~equiframe.datasets.cad.CADNormalsDataset`) with the points of the current epoch.

    :meth:`set_epoch` (called by :meth:`NormalsExperiment.set_epoch` before every epoch of the
    training loop) selects the draw: item ``i`` of epoch ``e`` is the same on a resumed run.
    """

    def __init__(self, dataset: Any, indices: Sequence[int]):
        n = len(dataset)
        bad = [i for i in indices if not 0 <= int(i) < n]
        if bad:
            raise ValueError(f"indices: {bad[:5]} out of range for a data set of {n} items")
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return self.dataset[self.indices[i]]


class NormalsExperiment(Experiment):
    """Normal estimation for :mod:`equiframe.train`.

    Batches are dicts ``pos``, ``normal`` ``[B, N, 3]``, ``kind`` ``[B]``.
    """

    name = "normals"
    metric = "one_minus_cos2"
    published: dict[str, float] = {}
    references: dict[str, float] = {}

    def __init__(self, config: NormalsExperimentConfig | None = None, **kwargs: Any):
        if config is None:
            config = NormalsExperimentConfig(**kwargs)
        elif kwargs:
            raise TypeError("NormalsExperiment: give a config or keyword options, not both")
        if not isinstance(config, NormalsExperimentConfig):
            raise TypeError(f"config: expected a NormalsExperimentConfig, got {type(config).__name__}")
        self.config = config
        self._datasets: dict[str, torch.utils.data.Dataset] = {}

    @property
    def run_name(self) -> str:
        c = self.config
        global_model = c.model in ("pointnet", "dgcnn", "fa-pointnet", "fa-dgcnn")
        extra = f"-{c.fa_mode}" if c.model in ("fa-pointnet", "fa-dgcnn") and c.fa_mode != "all" else ""
        extra += f"-feat{c.features}" if global_model and c.features != "pca" else ""
        extra += f"-{c.output}" if global_model and c.output != "line" else ""
        extra += f"-{c.tf_frames}" if c.model == "tf-pointnet" and c.tf_frames != "pca" else ""
        if c.model == "tf-pointnet" and tf_head_kind(c.head, c.tf_frames) == "wlsq":
            extra += "" if c.tf_pool_edges else "-nopool"
            extra += "-transportedges" if c.tf_edge_transport else ""
        extra += f"-{c.head}" if c.head is not None and c.model in ("fa-local-pointnet", "tf-pointnet") else ""
        extra += f"-k{c.local_k}" if c.model == "fa-local-pointnet" and c.local_k != 16 else ""
        extra += f"-ctx{c.local_context_k}" if c.local_context_k is not None else ""
        extra += f"-vote{c.local_vote}" if c.local_vote is not None else ""
        extra += f"-q{c.train_queries}" if c.train_queries is not None else ""
        extra += f"-noise{c.train_noise_max:g}" if c.train_noise_max > 0 else ""
        extra += f"-clean{c.train_clean_share:g}" if c.train_clean_share > 0 else ""
        extra += "-dens" + ",".join(map(str, c.train_densities)) if c.train_densities else ""
        extra += "-cad" if c.source == "cad" else ""
        return f"{c.model}{extra}_{c.setting.replace('/', '-')}"

    def to_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NormalsExperiment":
        return cls(NormalsExperimentConfig.from_dict(d))

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {"model": c.model, "setting": c.setting, "n_train": c.n_train, "n_valid": c.n_valid,
                "n_test": c.n_test, "n_points": c.n_points}

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.config.dtype]

    # ------------------------------------------------------------------ data
    def _cad(self, split: str, rotation: str, fixed: bool | None = None) -> torch.utils.data.Dataset:
        from ..datasets.cad import CADNormalsDataset  # noqa: PLC0415

        c = self.config
        n = {"train": c.n_train, "valid": c.n_valid, "test": c.n_test}[split]
        n_points = c.train_points if split == "train" else c.n_points
        ds = CADNormalsDataset(split, c.cad_config(), c.data_root, n_points=n_points,  # type: ignore[arg-type]
                               noise=float(c.noise), rotation=rotation, fixed_points=fixed, sample_seed=c.data_seed,
                               max_points=max(c.cad_max_points, n_points))
        if len(ds) < n:
            raise ValueError(f"n_{split}: the CAD data set has only {len(ds)} {split} parts among its first "
                             f"{c.cad_parts}, asked for {n}")
        return FreshPoints(ds, range(n)) if split == "train" else torch.utils.data.Subset(ds, range(n))

    def test_dataset(self, rotation: Literal["none", "so3"]) -> torch.utils.data.Dataset:
        """The fixed test split with the given rotation (for the cross-setting evaluations)."""
        key = f"test:{rotation}"
        if key not in self._datasets:
            c = self.config
            if c.source == "cad":
                self._datasets[key] = self._cad("test", rotation)
            else:
                self._datasets[key] = NormalsDataset("test", c.shapes_config(), c.data_root, rotation=rotation)
        return self._datasets[key]

    def dataset(self, split: str) -> torch.utils.data.Dataset:
        if split not in ("train", "valid", "test"):
            raise ValueError(f"split: expected 'train', 'valid' or 'test', got {split!r}")
        if split not in self._datasets:
            c = self.config
            rot_train, rot_test = setting_rotations(c.setting)
            sc = c.shapes_config()
            if c.source == "cad" and split != "test":
                ds = self._cad(split, rot_train)
            elif split == "train":
                ds = FreshPoints(NormalsDataset("train", sc, c.data_root, rotation=rot_train), range(c.n_train))
            elif split == "valid":
                fixed = NormalsDataset("train", sc, c.data_root, rotation=rot_train, fixed_points=True)
                ds = torch.utils.data.Subset(fixed, range(c.n_train, c.n_train + c.n_valid))
            else:
                ds = self.test_dataset(rot_test)  # type: ignore[arg-type]
            if split == "train" and c.train_queries is not None:
                from .normals_augment import NeighbourhoodSamples  # noqa: PLC0415

                ds = NeighbourhoodSamples(ds, c.train_queries, c.local_context_k or c.local_k,
                                          noise_max=c.train_noise_max, densities=c.train_densities, seed=c.data_seed,
                                          clean_share=c.train_clean_share)
            self._datasets[split] = ds
        return self._datasets[split]

    def set_epoch(self, epoch: int) -> None:
        """Select the training points of ``epoch`` (fresh area-uniform samples every epoch)."""
        ds = self.dataset("train")
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)

    def collate(self, items: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        dt = self.torch_dtype
        if "nbr" in items[0]:  # query neighbourhoods (NeighbourhoodSamples): one flat batch of points
            return {k: torch.cat([it[k] for it in items]).to(dt) for k in ("center", "nbr", "normal")}
        return {"pos": torch.stack([it["pos"] for it in items]).to(dt),
                "normal": torch.stack([it["normal"] for it in items]).to(dt),
                "kind": torch.stack([it["kind"] for it in items])}

    def make_batch(self, dataset: torch.utils.data.Dataset, index: Tensor) -> dict[str, Tensor]:
        return self.collate([dataset[int(i)] for i in index])

    # ------------------------------------------------------------------ model, loss, metrics
    def build_model(self) -> nn.Module:
        c = self.config
        model = build_normals_model(c.model, hidden=c.hidden, k=c.k, fa_mode=c.fa_mode, features=c.features,
                                    feature_k=c.feature_k, output=c.output, head=c.head, local_k=c.local_k,
                                    local_context_k=c.local_context_k, local_vote=c.local_vote,
                                    hidden_reps=c.hidden_reps,
                                    tf_frames=c.tf_frames, tf_local_layers=c.tf_local_layers, tf_ratios=c.tf_ratios,
                                    tf_k=c.tf_k, tf_pool_edges=c.tf_pool_edges,
                                    tf_edge_transport=c.tf_edge_transport, dgcnn_layers=c.dgcnn_layers, baseline_k=c.baseline_k)
        return model.to(self.torch_dtype)

    def loss(self, model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
        if "nbr" in batch:
            return normal_loss(model.forward_neighbourhoods(batch["center"], batch["nbr"]), batch["normal"])
        return normal_loss(model(batch["pos"]), batch["normal"])

    def metrics(self, model: nn.Module, batch: Mapping[str, Tensor]) -> dict[str, tuple[float, float]]:
        pred = model(batch["pos"])
        return _metric_sums(pred, batch["normal"])

    def diagnostics(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        """Test metrics of the best model under both test rotations (an ``i/i`` run thereby also gives
        ``i/so3``) and the float64 O(3) equivariance error of the line ``n n^T`` (sign-free) on two test
        shapes (``equivariance_error_f64``; local PCA frames of planar CAD patches can be degenerate, so
        local-frame models need not be at rounding level there) and on a generic random cloud
        (``equivariance_error_f64_generic``)."""
        c = self.config
        if c.diagnostic_samples == 0:
            return {}
        was = model.training
        model.eval()
        out: dict[str, Any] = {"test_by_rotation": {}}
        n = min(c.diagnostic_samples, c.n_test)
        for rot in ("none", "so3"):
            out["test_by_rotation"][rot] = evaluate_model(model, self.test_dataset(rot), n=n, dtype=self.torch_dtype,
                                                          device=device)
        with torch.no_grad():
            m64 = self.build_model().to(device=device, dtype=torch.float64)
            m64.load_state_dict(model.state_dict())
            m64.eval()
            gen = torch.Generator().manual_seed(0)
            shapes = torch.stack([self.test_dataset("none")[i]["pos"] for i in range(min(2, c.n_test))]).double()
            # a generic cloud (anisotropic Gaussian): every global and local PCA spectrum is separated
            generic = torch.randn(2, c.n_points, 3, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 0.7, 0.4],
                                                                                                  dtype=torch.float64)
            for key, pos in (("equivariance_error_f64", shapes), ("equivariance_error_f64_generic", generic)):
                rep = equivariance_error(lambda pos: _outer(m64(pos)), {"pos": pos.to(device)}, types={"pos": "pos"},
                                         output="1x2n", group="O(3)", generator=gen, n_trials=2)
                out[key] = rep.max_error
        model.train(was)
        return out


def _outer(n: Tensor) -> Tensor:
    """Sign-free representation of a line: ``u u^T`` with ``u = n / |n|``, flattened ``[..., d*d]``."""
    u = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return (u[..., :, None] * u[..., None, :]).flatten(-2)




@torch.no_grad()
def evaluate_model(model: nn.Module, dataset: torch.utils.data.Dataset, *, n: int | None = None,
                   batch_size: int = 32, dtype: torch.dtype = torch.float32, device: "torch.device | str" = "cpu",
                   return_errors: bool = False, return_shapes: bool = False) -> dict[str, Any]:
    """The metrics (:func:`normal_metrics`, over all points) of ``model`` on the first ``n`` items of ``dataset``.

    Returns ``{"one_minus_cos2", "angle_deg", "rms_angle_deg", "pgp5", "pgp10", "n_shapes"}`` (plus ``"errors"``: the per-point angles,
    a numpy array, when ``return_errors``; ``"per_shape"``: the mean ``1 - cos^2`` of every item, when
    ``return_shapes``).
    """
    check_int("batch_size", batch_size, 1)
    if n is not None:
        check_int("n", n, 1)
    n = len(dataset) if n is None else min(n, len(dataset))
    if n == 0:
        raise ValueError("dataset: empty")
    was = model.training
    model.eval()
    sums: dict[str, list[float]] = {}
    errs = []
    per_shape: list[float] = []
    for s in range(0, n, batch_size):
        items = [dataset[i] for i in range(s, min(n, s + batch_size))]
        pos = torch.stack([it["pos"] for it in items]).to(device=device, dtype=dtype)
        nrm = torch.stack([it["normal"] for it in items]).to(device=device, dtype=dtype)
        pred = model(pos)
        if return_shapes:
            per_shape.extend(normal_loss(pred, nrm, reduction="none").mean(dim=-1).tolist())
        for k, (a, b) in _metric_sums(pred, nrm).items():
            acc = sums.setdefault(k, [0.0, 0.0])
            acc[0] += a
            acc[1] += b
        if return_errors:
            errs.append(angular_error_deg(pred, nrm).flatten().cpu().numpy())
    model.train(was)
    out: dict[str, Any] = _finish_metrics(sums)
    out["n_shapes"] = n
    if return_errors:
        out["errors"] = np.concatenate(errs)
    if return_shapes:
        out["per_shape"] = np.array(per_shape)
    return out


# ---------------------------------------------------------------------------------------------- plots
@torch.no_grad()
def plot_predictions(model: nn.Module, dataset: torch.utils.data.Dataset, path: "str | Path",
                     indices: Sequence[int] = (0, 1, 2), *, dtype: torch.dtype = torch.float32,
                     title: str = "") -> Path:
    """3-D scatter of a few test shapes, points coloured by the angular error of the predicted normal
    (0-90 degrees), with a quiver of the predicted normals on a subset of points. Writes a PNG."""
    bad = [i for i in indices if not 0 <= int(i) < len(dataset)]
    if bad:
        raise ValueError(f"indices: {bad} out of range for a data set of {len(dataset)} items")
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    was = model.training
    model.eval()
    fig = plt.figure(figsize=(4.2 * len(indices), 4.4))
    sc = None
    for c, i in enumerate(indices):
        it = dataset[int(i)]
        pos = it["pos"].to(dtype)
        pred = model(pos[None])[0]
        err = angular_error_deg(pred, it["normal"].to(dtype)).numpy()
        u = (pred / pred.norm(dim=-1, keepdim=True).clamp_min(1e-12)).numpy()
        p = pos.numpy()
        ax = fig.add_subplot(1, len(indices), c + 1, projection="3d")
        sc = ax.scatter(p[:, 0], p[:, 1], p[:, 2], c=err, cmap="viridis", vmin=0, vmax=90, s=4)
        sel = np.arange(0, p.shape[0], 4)
        ax.quiver(p[sel, 0], p[sel, 1], p[sel, 2], u[sel, 0], u[sel, 1], u[sel, 2], length=0.08, color="k",
                  linewidth=0.4)
        ax.set_title(f"shape {int(i)}: mean {err.mean():.1f} deg", fontsize=9)
        ax.set_axis_off()
    if sc is not None:
        fig.colorbar(sc, ax=fig.axes, shrink=0.6, label="angle error (deg)")
    if title:
        fig.suptitle(title)
    model.train(was)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_error_histograms(errors: Mapping[str, np.ndarray], path: "str | Path", title: str = "") -> Path:
    """Histograms (density, 0-90 degrees) of per-point angular errors, one curve per model."""
    if not errors:
        raise ValueError("errors: nothing to plot (an empty mapping)")
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 3.8))
    bins = np.linspace(0, 90, 46)
    for name, e in errors.items():
        ax.hist(np.asarray(e), bins=bins, histtype="step", density=True, label=f"{name} (mean {np.mean(e):.1f})")
    ax.set_xlabel("angle error (deg)")
    ax.set_ylabel("density")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- table
def results_table(rows: Mapping[str, Mapping[str, Mapping[str, float] | None]]) -> str:
    """Markdown table: rows = models, columns = settings, cells ``1-cos^2 / angle``.

    Args:
        rows: model -> setting -> ``{"one_minus_cos2": ..., "angle_deg": ...}`` (``None``: not run).
    """
    check_instance("rows", rows, Mapping, "a mapping {model: {setting: metrics}}")
    head = "| model | " + " | ".join(f"{s.replace('so3', 'SO(3)')}: 1-cos² / angle" for s in SETTINGS) + " |"
    lines = [head, "|" + "---|" * (len(SETTINGS) + 1)]
    for model, cols in rows.items():
        cells = []
        for s in SETTINGS:
            v = cols.get(s)
            cells.append("not run" if not v else f"{v['one_minus_cos2']:.4f} / {v['angle_deg']:.2f}°")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def collect_runs(root: "str | Path") -> dict[str, dict[str, dict[str, float]]]:
    """Table rows from ``<root>/normals/<run>/seed*/metrics.json`` (mean over seeds; the i/so3 column of an
    ``i/i`` run comes from its diagnostics unless an ``i/so3`` run exists)."""
    rows: dict[str, dict[str, list[dict[str, float]]]] = {}
    for f in sorted(Path(root).glob("normals/*/seed*/metrics.json")):
        m = json.loads(f.read_text())
        cfg = m["experiment_config"]
        name = m["run"].rsplit("_", 1)[0]
        r = rows.setdefault(name, {})
        r.setdefault(cfg["setting"], []).append(m["test"])
        tb = (m.get("diagnostics") or {}).get("test_by_rotation")
        if cfg["setting"] == "i/i" and tb:
            r.setdefault("i/so3 (from i/i)", []).append(tb["so3"])
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, r in rows.items():
        cols = {}
        for s, vals in r.items():
            cols[s] = {k: float(np.mean([v[k] for v in vals])) for k in ("one_minus_cos2", "angle_deg")}
        if "i/so3" not in cols and "i/so3 (from i/i)" in cols:
            cols["i/so3"] = cols["i/so3 (from i/i)"]
        out[name] = cols
    return out


# the command line (re-exported): equiframe.experiments.normals_cli
from .normals_cli import (  # noqa: E402
    ESTIMATE_DESCRIPTION,
    add_build_arguments,
    add_cli,
    add_data_arguments,
    add_data_cli,
    add_estimate_arguments,
    add_shape_arguments,
    add_table_arguments,
    add_train_arguments,
)
