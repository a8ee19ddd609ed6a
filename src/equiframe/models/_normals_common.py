"""Type aliases and argument checks shared by the normal-estimation models
(:mod:`equiframe.models.normals`, :mod:`equiframe.models.normals_geometry`,
:mod:`equiframe.models.tf_pointnet`).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor, nn

from ..nn.mlp import mlp
from ..reps import TensorReps
from typing import get_args

NormalsModelName = Literal["pointnet", "dgcnn", "fa-pointnet", "fa-dgcnn", "fa-local-pointnet", "tf-pointnet",
                           "knn-pca"]
NORMALS_MODELS: tuple[str, ...] = get_args(NormalsModelName)
FAMode = Literal["all", "canonical", "stochastic"]
FrameKind = Literal["pca", "learned"]
LocalFeatures = Literal["none", "cov", "pca"]
GlobalOutput = Literal["vector", "line", "line-residual"]
Head = Literal["wlsq", "residual", "free"]
NormalSign = Literal["moments", "centroid"]

#: input / output types of the equivariant models (for the equivariance tests)
NORMALS_TYPES = {"pos": "pos"}
#: type of the per-point local-geometry features (``None``: no features)
FEATURE_REPS: dict[str, str | None] = {"none": None, "cov": "1x2n", "pca": "2x2n"}


# ------------------------------------------------------------------------------------------ helpers
def _check_pos(pos: Tensor, dim: int | None = None) -> None:
    if not isinstance(pos, Tensor):
        raise TypeError(f"pos: expected a tensor [B, N, d] or [N, d], got {type(pos).__name__}")
    if pos.dim() not in (2, 3):
        raise ValueError(f"pos: expected shape [B, N, d] or [N, d], got {tuple(pos.shape)}")
    if not pos.is_floating_point():
        raise TypeError(f"pos: expected a floating point tensor, got {pos.dtype}")
    if pos.shape[-2] == 0:
        raise ValueError("pos: empty point cloud (N = 0)")
    if dim is not None and pos.shape[-1] != dim:
        raise ValueError(f"pos: expected {dim} coordinates per point, got shape {tuple(pos.shape)}")
    if not bool(torch.isfinite(pos).all()):
        raise ValueError("pos: contains NaN or inf")


def _check_dtype(pos: Tensor, module: nn.Module) -> None:
    p = next(module.parameters(), None)
    if p is not None and p.dtype != pos.dtype:
        raise TypeError(f"pos: dtype {pos.dtype} does not match the model's parameters ({p.dtype}); "
                        f"call .to({pos.dtype}) on the model")


def _positive(name: str, v: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    return v


def _choice(name: str, v: str, options: tuple[str, ...]) -> str:
    if v not in options:
        raise ValueError(f"{name}: expected one of {options}, got {v!r}")
    return v


def tf_head_kind(head: "Head | None", frames: "FrameKind") -> str:
    """The normal head :class:`TFPointNet` uses: ``head``, or by default ``"wlsq"`` with PCA frames and
    ``"free"`` with learned frames."""
    if frames not in ("pca", "learned"):
        raise ValueError(f"frames: expected 'pca' or 'learned', got {frames!r}")
    if head is not None and head not in get_args(Head):
        raise ValueError(f"head: expected one of {get_args(Head)} or None, got {head!r}")
    return ("wlsq" if frames == "pca" else "free") if head is None else head


def _mlp(sizes: list[int], *, last_act: bool = True) -> nn.Sequential:
    """The normals models' MLP: :func:`equiframe.nn.mlp.mlp` with ReLU (after the last layer too by default)."""
    return mlp(sizes, nn.ReLU, last_activation=last_act)


def _zero_last(mlp: nn.Sequential) -> nn.Sequential:
    """Zero the last linear layer (a residual head starts at its skip value)."""
    last = [m for m in mlp if isinstance(m, nn.Linear)][-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return mlp


def _as_batch(pos: Tensor) -> Tensor:
    return pos if pos.dim() == 3 else pos[None]


def _checked_cloud(pos: Tensor, module: nn.Module, k: int) -> Tensor:
    """``pos`` checked for a k-NN model ``module`` (its ``dim``, its dtype, more than ``k`` points per
    cloud) and returned as a batch.

    Shapes:
        pos ``[B, N, d]`` or ``[N, d]`` -> ``[B, N, d]``
    """
    _check_pos(pos, module.dim)
    _check_dtype(pos, module)
    x = _as_batch(pos)
    if x.shape[1] <= k:
        raise ValueError(f"pos: every cloud needs more than k = {k} points")
    return x


def _feature_channels(features: str, dim: int) -> int:
    reps = FEATURE_REPS[features]
    return 0 if reps is None else TensorReps(reps, dim=dim).size


def _check_feat(feat: Tensor | None, pos: Tensor, channels: int) -> Tensor | None:
    if channels == 0:
        if feat is not None:
            raise ValueError("feat: this model was built with features='none' and takes no features")
        return None
    if feat is None:
        raise ValueError(f"feat: this model expects {channels} feature channels per point (see knn_geometry)")
    if not isinstance(feat, Tensor) or feat.shape[:-1] != pos.shape[:-1] or feat.shape[-1] != channels:
        shape = tuple(feat.shape) if isinstance(feat, Tensor) else type(feat).__name__
        raise ValueError(f"feat: expected shape {tuple(pos.shape[:-1]) + (channels,)}, got {shape}")
    return feat.to(pos.dtype)
