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

import argparse
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, get_args

import numpy as np
import torch
from torch import Tensor, nn

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

__all__ = [
    "EQUIVARIANT",
    "SETTINGS",
    "FreshPoints",
    "NormalsExperiment",
    "NormalsExperimentConfig",
    "Setting",
    "add_cli",
    "collect_runs",
    "evaluate_model",
    "plot_error_histograms",
    "plot_predictions",
    "results_table",
    "setting_rotations",
]

Setting = Literal["i/i", "i/so3", "so3/so3"]
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
        hidden_reps, tf_frames, tf_local_layers, tf_ratios, tf_k: TF-PointNet++ options.
        dgcnn_layers: EdgeConv layers.
        baseline_k: neighbourhood of the k-NN PCA baseline.
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
    hidden_reps: str = "32x0n+8x1n"
    tf_frames: FrameKind = "pca"
    tf_local_layers: int = 2
    tf_ratios: tuple[float, ...] = (0.25, 0.25)
    tf_k: int = 16
    tf_pool_edges: bool | None = None
    tf_edge_transport: bool | None = None
    dgcnn_layers: int = 3
    baseline_k: int = 16
    dtype: Dtype = "float32"
    data_root: str | None = None
    diagnostic_samples: int = 2000

    def __post_init__(self) -> None:
        if self.model not in NORMALS_MODELS:
            raise ValueError(f"model: expected one of {NORMALS_MODELS}, got {self.model!r}")
        setting_rotations(self.setting)
        for name in ("n_train", "n_valid", "n_test", "n_points", "hidden", "k", "feature_k", "local_k",
                     "tf_local_layers", "tf_k", "dgcnn_layers", "baseline_k"):
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
        kmax = max(self.k, self.tf_k, self.baseline_k, self.feature_k, self.local_k)
        if kmax >= self.n_points:
            raise ValueError(f"n_points: {self.n_points} points cannot have k = {kmax} neighbours")

    def shapes_config(self) -> ShapesConfig:
        """The :class:`ShapesConfig` of the meshes (train + valid shapes, test shapes)."""
        return ShapesConfig(n_train=self.n_train + self.n_valid, n_test=self.n_test, n_points=self.n_points,
                            seed=self.data_seed, noise=float(self.noise))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tf_ratios"] = list(self.tf_ratios)
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
        if "tf_ratios" in d:
            d["tf_ratios"] = tuple(d["tf_ratios"])
        return cls(**d)


class FreshPoints(torch.utils.data.Dataset):
    """Shapes ``indices`` of a resampled :class:`NormalsDataset` with the points of the current epoch.

    :meth:`set_epoch` (called by :meth:`NormalsExperiment.set_epoch` before every epoch of the
    training loop) selects the draw: item ``i`` of epoch ``e`` is the same on a resumed run.
    """

    def __init__(self, dataset: NormalsDataset, indices: Sequence[int]):
        self.dataset = dataset
        self.indices = list(indices)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

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
    def test_dataset(self, rotation: Literal["none", "so3"]) -> NormalsDataset:
        """The fixed test split with the given rotation (for the cross-setting evaluations)."""
        key = f"test:{rotation}"
        if key not in self._datasets:
            c = self.config
            self._datasets[key] = NormalsDataset("test", c.shapes_config(), c.data_root, rotation=rotation)
        return self._datasets[key]  # type: ignore[return-value]

    def dataset(self, split: str) -> torch.utils.data.Dataset:
        if split not in ("train", "valid", "test"):
            raise ValueError(f"split: expected 'train', 'valid' or 'test', got {split!r}")
        if split not in self._datasets:
            c = self.config
            rot_train, rot_test = setting_rotations(c.setting)
            sc = c.shapes_config()
            if split == "train":
                ds = FreshPoints(NormalsDataset("train", sc, c.data_root, rotation=rot_train), range(c.n_train))
            elif split == "valid":
                fixed = NormalsDataset("train", sc, c.data_root, rotation=rot_train, fixed_points=True)
                ds = torch.utils.data.Subset(fixed, range(c.n_train, c.n_train + c.n_valid))
            else:
                ds = self.test_dataset(rot_test)  # type: ignore[arg-type]
            self._datasets[split] = ds
        return self._datasets[split]

    def set_epoch(self, epoch: int) -> None:
        """Select the training points of ``epoch`` (fresh area-uniform samples every epoch)."""
        ds = self.dataset("train")
        if isinstance(ds, FreshPoints):
            ds.set_epoch(epoch)

    def collate(self, items: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        dt = self.torch_dtype
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
                                    hidden_reps=c.hidden_reps,
                                    tf_frames=c.tf_frames, tf_local_layers=c.tf_local_layers, tf_ratios=c.tf_ratios,
                                    tf_k=c.tf_k, tf_pool_edges=c.tf_pool_edges,
                                    tf_edge_transport=c.tf_edge_transport, dgcnn_layers=c.dgcnn_layers, baseline_k=c.baseline_k)
        return model.to(self.torch_dtype)

    def loss(self, model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
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


def _metric_sums(pred: Tensor, target: Tensor) -> dict[str, tuple[float, float]]:
    loss = normal_loss(pred, target, reduction="none")
    ang = angular_error_deg(pred, target)
    return {"one_minus_cos2": (float(loss.sum()), float(loss.numel())), "angle_deg": (float(ang.sum()), float(ang.numel()))}


@torch.no_grad()
def evaluate_model(model: nn.Module, dataset: torch.utils.data.Dataset, *, n: int | None = None,
                   batch_size: int = 32, dtype: torch.dtype = torch.float32, device: "torch.device | str" = "cpu",
                   return_errors: bool = False) -> dict[str, Any]:
    """Mean ``1 - cos^2`` and angle (degrees) of ``model`` on the first ``n`` items of ``dataset``.

    Returns ``{"one_minus_cos2", "angle_deg", "n_shapes"}`` (plus ``"errors"``: the per-point angles,
    a numpy array, when ``return_errors``).
    """
    n = len(dataset) if n is None else min(n, len(dataset))
    if n == 0:
        raise ValueError("dataset: empty")
    was = model.training
    model.eval()
    sums = {"one_minus_cos2": [0.0, 0.0], "angle_deg": [0.0, 0.0]}
    errs = []
    for s in range(0, n, batch_size):
        items = [dataset[i] for i in range(s, min(n, s + batch_size))]
        pos = torch.stack([it["pos"] for it in items]).to(device=device, dtype=dtype)
        nrm = torch.stack([it["normal"] for it in items]).to(device=device, dtype=dtype)
        pred = model(pos)
        for k, (a, b) in _metric_sums(pred, nrm).items():
            sums[k][0] += a
            sums[k][1] += b
        if return_errors:
            errs.append(angular_error_deg(pred, nrm).flatten().cpu().numpy())
    model.train(was)
    out: dict[str, Any] = {k: a / b for k, (a, b) in sums.items()}
    out["n_shapes"] = n
    if return_errors:
        out["errors"] = np.concatenate(errs)
    return out


# ---------------------------------------------------------------------------------------------- plots
@torch.no_grad()
def plot_predictions(model: nn.Module, dataset: torch.utils.data.Dataset, path: "str | Path",
                     indices: Sequence[int] = (0, 1, 2), *, dtype: torch.dtype = torch.float32,
                     title: str = "") -> Path:
    """3-D scatter of a few test shapes, points coloured by the angular error of the predicted normal
    (0-90 degrees), with a quiver of the predicted normals on a subset of points. Writes a PNG."""
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


# ---------------------------------------------------------------------------------------------- CLI
def add_cli(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Register ``normals build | train | table`` on an argparse sub-parser collection.

    ``normals build`` generates (caches) the meshes; ``normals train --model M --setting S`` trains
    with :func:`equiframe.train.train` and writes prediction / histogram plots into the run directory;
    ``normals table`` prints the Markdown table of all runs under ``--out``.
    """
    p = subparsers.add_parser("normals", help="point-cloud normal estimation (procedural CAD-like shapes)")
    sub = p.add_subparsers(dest="normals_command", required=True, metavar="COMMAND")

    def data_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--n-train", type=int, default=8000)
        q.add_argument("--n-valid", type=int, default=500)
        q.add_argument("--n-test", type=int, default=2000)
        q.add_argument("--n-points", type=int, default=512)
        q.add_argument("--noise", type=float, default=0.0)
        q.add_argument("--data-seed", type=int, default=0)
        q.add_argument("--root", default=None, help="shapes cache root")

    b = sub.add_parser("build", help="generate (and cache) the shapes")
    data_args(b)
    b.add_argument("--workers", type=int, default=None)
    b.set_defaults(func=_cmd_build)

    t = sub.add_parser("train", help="train a model in one setting")
    data_args(t)
    t.add_argument("--model", choices=NORMALS_MODELS, default="fa-pointnet")
    t.add_argument("--setting", choices=SETTINGS, default="i/i")
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seeds", type=int, nargs="+", default=[0])
    t.add_argument("--hidden", type=int, default=64)
    t.add_argument("--k", type=int, default=20)
    t.add_argument("--fa-mode", choices=get_args(FAMode), default="all")
    t.add_argument("--features", choices=get_args(LocalFeatures), default="pca",
                   help="typed local-geometry input of the global models (pointnet, dgcnn, fa-*)")
    t.add_argument("--output", choices=get_args(GlobalOutput), default="line",
                   help="output head of the global models")
    t.add_argument("--head", choices=get_args(Head), default=None, help="normal head of the local-frame models")
    t.add_argument("--local-k", type=int, default=16)
    t.add_argument("--hidden-reps", default="32x0n+8x1n")
    t.add_argument("--tf-frames", choices=get_args(FrameKind), default="pca")
    t.add_argument("--tf-local-layers", type=int, default=2)
    t.add_argument("--tf-ratios", type=float, nargs="*", default=[0.25, 0.25])
    t.add_argument("--tf-no-pool-edges", action="store_true",
                   help="TF-PointNet++ (plane-fit head): do not give the head the neighbour-pooled edge features")
    t.add_argument("--tf-transport-edges", action="store_true",
                   help="TF-PointNet++ (plane-fit head): edge features include the transported sender features")
    t.add_argument("--dgcnn-layers", type=int, default=3)
    t.add_argument("--dtype", choices=tuple(_DTYPES), default="float32")
    t.add_argument("--out", default="runs")
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--resume", action="store_true")
    t.add_argument("--overwrite", action="store_true")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_cmd_train)

    tb = sub.add_parser("table", help="Markdown table of the normals runs under --out")
    tb.add_argument("--out", default="runs")
    tb.set_defaults(func=_cmd_table)
    return p


def _cmd_build(args: argparse.Namespace) -> int:
    cfg = ShapesConfig(n_train=args.n_train + args.n_valid, n_test=args.n_test, n_points=args.n_points,
                       seed=args.data_seed, noise=args.noise)
    print(build_shapes(cfg, args.root, workers=args.workers))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from ..train import OptimConfig, TrainConfig, train  # noqa: PLC0415

    cfg = NormalsExperimentConfig(
        model=args.model, setting=args.setting, n_train=args.n_train, n_valid=args.n_valid, n_test=args.n_test,
        n_points=args.n_points, noise=args.noise, data_seed=args.data_seed, hidden=args.hidden, k=args.k,
        fa_mode=args.fa_mode, features=args.features, output=args.output, head=args.head, local_k=args.local_k,
        hidden_reps=args.hidden_reps, tf_frames=args.tf_frames, tf_local_layers=args.tf_local_layers,
        tf_ratios=tuple(args.tf_ratios), tf_pool_edges=False if args.tf_no_pool_edges else None,
        tf_edge_transport=True if args.tf_transport_edges else None, dgcnn_layers=args.dgcnn_layers, dtype=args.dtype, data_root=args.root,
        diagnostic_samples=args.n_test)
    exp = NormalsExperiment(cfg)
    if args.model == "knn-pca":  # no parameters: evaluate only
        res = {rot: evaluate_model(exp.build_model(), exp.test_dataset(rot)) for rot in ("none", "so3")}
        print(json.dumps(res, indent=2))
        return 0
    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optim=OptimConfig(lr=args.lr),
                     seeds=tuple(args.seeds), out=args.out, resume=args.resume, overwrite=args.overwrite,
                     quiet=args.quiet, threads=args.threads, checkpoint_every=max(1, min(10, args.epochs)))
    for r in train(exp, tc):
        from ..train import load_checkpoint  # noqa: PLC0415

        model = exp.build_model()
        model.load_state_dict(load_checkpoint(r.run_dir / "checkpoint.pt")["best"]["state"])
        ds = exp.dataset("test")
        plot_predictions(model, ds, r.run_dir / "predictions.png", dtype=exp.torch_dtype, title=exp.run_name)
        ev = evaluate_model(model, ds, dtype=exp.torch_dtype, return_errors=True)
        plot_error_histograms({exp.run_name: ev["errors"]}, r.run_dir / "errors_hist.png")
        print(f"{r.run_dir}: test 1-cos^2 {r.metrics['test']['one_minus_cos2']:.4f}, "
              f"angle {r.metrics['test']['angle_deg']:.2f} deg")
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    print(results_table(collect_runs(args.out)))
    return 0
