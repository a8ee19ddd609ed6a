"""Normal-estimation metrics and the k-NN PCA baseline (torch): the sign-invariant loss, the
angular error in degrees, the metrics of the tables (:func:`normal_metrics`, :data:`METRICS`) and
:func:`knn_pca_normals`. The one module of these metrics: the experiment, the benchmarks and the estimator
import them from here (``equiframe.experiments.normals`` re-exports them).

Split out of :mod:`equiframe.datasets.shapes`, which re-exports the public names.
"""

from __future__ import annotations

import math
from typing import Literal, Mapping, Sequence

import torch
from torch import Tensor


# --------------------------------------------------------------------------------------------
# Baseline and metrics (torch)
# --------------------------------------------------------------------------------------------


def _check_points(pos: Tensor, name: str) -> None:
    if not isinstance(pos, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(pos).__name__}")
    if not pos.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {pos.dtype}")
    if not torch.isfinite(pos).all():
        raise ValueError(f"{name} contains NaN or inf")


def knn_pca_normals(pos: Tensor, k: int = 16, *, chunk_size: int = 2048) -> Tensor:
    """Learning-free normal estimate: smallest principal axis of the k nearest neighbours.

    For every point ``x_i`` let ``N_i`` be its ``k`` nearest neighbours (itself included),
    ``m_i = mean_{j in N_i} x_j`` and ``C_i = 1/k sum_{j in N_i} (x_j - m_i)(x_j - m_i)^T``. The
    normal is the unit eigenvector of ``C_i`` with the smallest eigenvalue, i.e. the normal of the
    total least-squares hyperplane through the neighbourhood; its sign is arbitrary. Works in any
    dimension ``d`` (``d <= k <= N``). Computed by :func:`equiframe.models.normals.knn_geometry`
    (the library's one k-NN and local PCA; ``chunk_size`` query rows per distance block, a k-d tree
    for large clouds).

    Args:
        pos: A single cloud or a batch of clouds.
        k: Neighbourhood size.
        chunk_size: Query rows per distance block.

    Returns:
        Unit normals, same dtype and device as ``pos``.

    Shapes:
        pos: ``[N, d]`` or ``[B, N, d]``; output: same shape.
    """
    from equiframe.models.normals import knn_geometry  # noqa: PLC0415 (models import this module)

    _check_points(pos, "pos")
    if pos.dim() not in (2, 3):
        raise ValueError(f"pos must have shape [N, d] or [B, N, d], got {tuple(pos.shape)}")
    n, d = pos.shape[-2], pos.shape[-1]
    if not isinstance(k, int) or isinstance(k, bool) or k < d or k > n:
        raise ValueError(f"k must be an int with d={d} <= k <= N={n}, got {k!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return knn_geometry(pos, k, chunk_size=chunk_size)[1]


def _unit(v: Tensor, eps: float) -> Tensor:
    # v / max(||v||, eps) written with rsqrt of the clamped squared norm: finite gradients at v = 0.
    return v * torch.rsqrt(v.square().sum(dim=-1, keepdim=True).clamp_min(eps * eps))


def _check_pair(pred: Tensor, target: Tensor) -> None:
    _check_points(pred, "pred")
    _check_points(target, "target")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if pred.dim() < 1 or pred.shape[-1] < 1:
        raise ValueError(f"pred must have shape [..., d] with d >= 1, got {tuple(pred.shape)}")


def normal_loss(
    pred: Tensor, target: Tensor, reduction: Literal["mean", "none"] = "mean", eps: float = 1e-12
) -> Tensor:
    """Unoriented normal loss ``1 - (n_hat . n)^2`` with both vectors normalised.

    ``n_hat = pred / max(||pred||, eps)`` (a zero prediction gives loss 1, never NaN), ``n`` the
    same for ``target``. The loss is 0 for parallel or anti-parallel vectors and equals
    ``sin^2`` of the angle between the lines.

    Args:
        pred: Predicted normals (any scale, any sign).
        target: Reference normals.
        reduction: ``"mean"`` over all points or ``"none"``.
        eps: Norm floor.

    Shapes:
        pred, target: ``[..., d]``; output: ``[]`` (mean) or ``[...]`` (none).
    """
    _check_pair(pred, target)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    cos = (_unit(pred, eps) * _unit(target, eps)).sum(dim=-1)
    loss = 1.0 - cos.square()
    return loss.mean() if reduction == "mean" else loss


def angular_error_deg(
    pred: Tensor, target: Tensor, reduction: Literal["mean", "none"] = "none", eps: float = 1e-12
) -> Tensor:
    """Unoriented angle between the lines spanned by ``pred`` and ``target``, in degrees [0, 90].

    With unit ``n_hat``, ``n`` (normalised as in :func:`normal_loss`):
    ``theta = atan2(||n_hat - (n_hat . n) n||, |n_hat . n|)``, which is accurate also near 0.
    A zero vector gives 90 degrees.

    Shapes:
        pred, target: ``[..., d]``; output: ``[...]`` (none) or ``[]`` (mean).
    """
    _check_pair(pred, target)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    a, b = _unit(pred, eps), _unit(target, eps)
    cos = (a * b).sum(dim=-1, keepdim=True)
    sin = (a - cos * b).norm(dim=-1)
    zero = (pred.norm(dim=-1) < eps) | (target.norm(dim=-1) < eps)
    angle = torch.rad2deg(torch.atan2(sin, cos.squeeze(-1).abs()))
    angle = torch.where(zero, torch.full_like(angle, 90.0), angle)
    return angle.mean() if reduction == "mean" else angle


#: the metrics of normal estimation (all unoriented), in the order of the tables
METRICS: tuple[str, ...] = ("one_minus_cos2", "rms_angle_deg", "angle_deg", "pgp5", "pgp10")


def _metric_sums(pred: Tensor, target: Tensor) -> dict[str, tuple[float, float]]:
    """(sum, count) of every per-point quantity: ``1 - cos^2``, the angle, its square and the indicators of
    an angle under 5 and 10 degrees (the training loop and
    :func:`equiframe.experiments.normals.evaluate_model` add them over batches)."""
    loss = normal_loss(pred, target, reduction="none")
    ang = angular_error_deg(pred, target)
    n = float(ang.numel())
    return {"one_minus_cos2": (float(loss.sum()), n), "angle_deg": (float(ang.sum()), n),
            "angle_sq_deg2": (float(ang.square().sum()), n), "pgp5": (float((ang < 5).sum()), n),
            "pgp10": (float((ang < 10).sum()), n)}


def _finish_metrics(sums: Mapping[str, Sequence[float]]) -> dict[str, float]:
    out = {k: a / b for k, (a, b) in sums.items() if k != "angle_sq_deg2"}
    a, b = sums["angle_sq_deg2"]
    out["rms_angle_deg"] = math.sqrt(a / b)
    return out


def normal_metrics(pred: Tensor, target: Tensor) -> dict[str, float]:
    r"""The normal-estimation metrics of one prediction (unoriented; the one metrics function of the
    experiment, the benchmarks and the estimator).

    With :math:`\theta_i` the angle between the lines of ``pred_i`` and ``target_i``
    (:func:`angular_error_deg`, in ``[0, 90]`` degrees):

    * ``one_minus_cos2``: mean of :math:`1 - \cos^2\theta_i` (the loss; FA's metric);
    * ``angle_deg``: mean angle; ``rms_angle_deg``: :math:`\sqrt{\operatorname{mean} \theta_i^2}` (PCPNet's);
    * ``pgp5`` / ``pgp10``: share of points with :math:`\theta_i < 5^\circ` / :math:`10^\circ`.

    Shapes:
        pred, target: ``[..., d]``.
    """
    return _finish_metrics(_metric_sums(pred, target))
