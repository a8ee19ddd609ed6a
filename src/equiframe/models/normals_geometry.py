"""Neighbourhood geometry for the normal-estimation models: local PCA, jet fits, Open3D normals, local
features and farthest-point sampling (the dense k-NN, :func:`~equiframe.geometry.dense_knn`, is re-exported).

Split out of :mod:`equiframe.models.normals`, which re-exports the public names.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from ..geometry import KDTREE_MIN_POINTS, dense_knn  # noqa: F401  (the k-NN of dense batches, re-exported)
from ..geometry import gather_neighbours as _gather, knn_covariance
from ._normals_common import LocalFeatures, _as_batch, _check_pos, _choice, _positive
from .._checks import check_int, check_tensor


# ------------------------------------------------------------------------------------------ geometry
def knn_geometry(pos: Tensor, k: int = 16, *, chunk_size: int = 1024) -> tuple[Tensor, Tensor, Tensor]:
    r"""k-NN neighbourhood covariance, its PCA normal and eigenvalues (the baseline's neighbourhood).

    With ``N_i`` the ``k`` nearest points of ``x_i`` (itself included), ``m_i`` their mean,

    .. math::
        C_i = \frac1k \sum_{j \in N_i} (x_j - m_i)(x_j - m_i)^\top,\qquad
        \hat C_i = C_i / \operatorname{tr} C_i,\qquad \hat C_i u_{i,l} = \lambda_{i,l} u_{i,l}

    with ascending ``lambda`` (they sum to 1); the normal ``u_i = u_{i,1}`` (smallest eigenvalue)
    has an arbitrary sign. ``tr C_i = 0`` (all neighbours identical) gives ``\hat C_i = 0``.
    The result is detached. This is the one local PCA of the normal-estimation code (the k-NN PCA
    baseline :func:`~equiframe.datasets.shapes.knn_pca_normals`, the global models' features);
    ``chunk_size`` is passed to :func:`dense_knn`.

    Returns:
        ``(cov, normal, eigvals)``: ``\hat C`` ``[..., N, d, d]``, ``u`` ``[..., N, d]``,
        ``lambda`` ``[..., N, d]`` (ascending).

    Shapes:
        pos ``[B, N, d]`` or ``[N, d]``
    """
    _check_pos(pos)
    x = _as_batch(pos).detach()
    _, _, C, lam, U = _knn_eigh(x, k, chunk_size)
    normal = U[..., 0]
    if pos.dim() == 2:
        return C[0], normal[0], lam[0]
    return C, normal, lam


def _knn_eigh(x: Tensor, k: int, chunk_size: int = 1024) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """k-NN lists, neighbours, trace-normalised covariance, its ascending eigenvalues and eigenvectors
    (columns) for ``x [B, N, d]`` (the local PCA behind :func:`knn_geometry` and :func:`jet_normals`):
    :func:`equiframe.geometry.knn_covariance` with ``solver="eigh"``."""
    return knn_covariance(x, k, solver="eigh", chunk_size=chunk_size)


def jet_normals(pos: Tensor, k: int = 16, order: Literal[1, 2] = 2, *, chunk_size: int = 1024) -> Tensor:
    r"""Jet-fitting normals (osculating jets, Cazals & Pouget 2005): a polynomial height function fitted to
    the ``k`` nearest neighbours in their PCA frame.

    In the frame of the neighbourhood's principal axes (tangent coordinates ``t = (t_1..t_{d-1})``, height
    ``h`` along the smallest axis, origin at the point ``x_i``), fit by least squares

    .. math:: h \approx a_0 + \sum_a a_a t_a + [\text{order} = 2]\ \sum_{a \le b} a_{ab} t_a t_b

    and return the normal of the graph at the point, :math:`(-\nabla_t h(0), 1)` in that frame (sign
    arbitrary). ``order=1`` is a least-squares plane through the neighbours (not the total least
    squares of PCA). Needs ``k`` at least the number of coefficients (``1 + (d-1) + (d-1) d / 2``).

    Shapes:
        pos ``[B, N, d]`` or ``[N, d]`` -> same shape
    """
    _check_pos(pos)
    if order not in (1, 2):
        raise ValueError(f"order: expected 1 or 2, got {order!r}")
    x = _as_batch(pos).detach()
    B, N, d = x.shape
    m = d - 1
    n_coef = 1 + m + (m * (m + 1) // 2 if order == 2 else 0)
    if k < n_coef:
        raise ValueError(f"k: jet fitting of order {order} in {d}-D needs k >= {n_coef} neighbours, got {k}")
    _, nbr, _, _, U = _knn_eigh(x, k, chunk_size)
    rel = nbr - x[:, :, None]  # [B, N, k, d], origin at the point
    z = torch.einsum("bnkc,bnca->bnka", rel, U)  # coordinates along the axes (ascending eigenvalues)
    h, t = z[..., 0], z[..., 1:]
    scale = t.norm(dim=-1).amax(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)  # conditioning
    ts = t / scale[..., None]
    cols = [torch.ones_like(h), *ts.unbind(-1)]
    if order == 2:
        cols += [ts[..., a] * ts[..., b] for a in range(m) for b in range(a, m)]
    A = torch.stack(cols, dim=-1)  # [B, N, k, n_coef]
    AtA = A.transpose(-1, -2) @ A
    ridge = 1e-9 * AtA.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None] * torch.eye(n_coef, dtype=x.dtype)
    coef = torch.linalg.solve(AtA + ridge, (A.transpose(-1, -2) @ h[..., None]))[..., 0]
    grad = coef[..., 1:1 + m] / scale  # dh/dt at t = 0
    n_frame = torch.cat([torch.ones_like(grad[..., :1]), -grad], dim=-1)  # (h, t) components
    out = torch.einsum("bnca,bna->bnc", U, n_frame)
    out = out / out.norm(dim=-1, keepdim=True)
    return out if pos.dim() == 3 else out[0]


def open3d_normals(pos: Tensor, *, knn: int | None = 30, radius: float | None = None) -> Tensor:
    """Open3D's ``PointCloud.estimate_normals`` (its k-NN PCA; the baseline users know), unoriented.

    ``knn`` only: ``KDTreeSearchParamKNN(knn)``; ``radius`` only: ``KDTreeSearchParamRadius(radius)``;
    both: ``KDTreeSearchParamHybrid(radius, max_nn=knn)`` (Open3D's default search is hybrid with
    ``knn = 30``). Requires ``open3d`` (``pip install open3d-cpu`` or ``open3d``; extra ``baselines``).

    Shapes:
        pos ``[B, N, 3]`` or ``[N, 3]`` -> same shape (float64 computation, returned in ``pos.dtype``)
    """
    _check_pos(pos, 3)
    if knn is None and radius is None:
        raise ValueError("open3d_normals: give knn, radius or both")
    if knn is not None:
        _positive("knn", knn)
    if radius is not None and not (isinstance(radius, (int, float)) and radius > 0):
        raise ValueError(f"radius: expected a positive number, got {radius!r}")
    try:
        import open3d as o3d  # noqa: PLC0415
    except ImportError as err:
        raise ImportError("open3d_normals needs Open3D: pip install open3d-cpu (or open3d)") from err
    if knn is not None and radius is not None:
        param = o3d.geometry.KDTreeSearchParamHybrid(radius=float(radius), max_nn=int(knn))
    elif knn is not None:
        param = o3d.geometry.KDTreeSearchParamKNN(knn=int(knn))
    else:
        param = o3d.geometry.KDTreeSearchParamRadius(radius=float(radius))
    x = _as_batch(pos).detach().cpu().double().numpy()
    out = []
    for cloud in x:
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cloud))
        pc.estimate_normals(search_param=param, fast_normal_computation=False)
        out.append(torch.from_numpy(np.asarray(pc.normals).copy()))
    res = torch.stack(out).to(dtype=pos.dtype, device=pos.device)
    return res if pos.dim() == 3 else res[0]


def line_to_normal(P: Tensor, start: Tensor, steps: int = 3) -> Tensor:
    r"""Dominant eigenvector of the symmetric part of ``P`` (largest ``|lambda|``) by power iteration.

    ``S = (P + P^T) / 2``, ``v_0 = start``, ``v_{t+1} = S v_t / \|S v_t\|``. Equivariant (``P -> Q P Q^T``,
    ``start -> +-Q start`` gives ``v -> +-Q v``), bounded gradients (no eigen-decomposition) and, for
    ``P = u u^T`` with ``start = u``, exactly ``u``.

    Shapes:
        P ``[..., d, d]``, start ``[..., d]`` -> ``[..., d]``
    """
    check_tensor("P", P, floating=True)
    if P.dim() < 2 or P.shape[-1] != P.shape[-2] or start.shape != P.shape[:-1]:
        raise ValueError(f"P, start: expected [..., d, d] and [..., d], got {tuple(P.shape)} and {tuple(start.shape)}")
    check_int("steps", steps, 1)
    S = 0.5 * (P + P.transpose(-1, -2))
    v = start
    for _ in range(steps):
        v = (S @ v[..., None])[..., 0]
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    return v


def local_features(pos: Tensor, features: LocalFeatures, k: int = 16) -> Tensor | None:
    """The per-point feature tensor of the ``features`` option (see the module docstring).

    Shapes:
        pos ``[..., N, d]`` -> ``[..., N, C]`` with ``C = 0, d^2, 2 d^2`` for ``"none"``, ``"cov"``,
        ``"pca"`` (``None`` for ``"none"``)
    """
    _choice("features", features, get_args(LocalFeatures))
    if features == "none":
        return None
    C, u, _ = knn_geometry(pos, k)
    cov = C.flatten(-2)
    if features == "cov":
        return cov
    return torch.cat([(u[..., :, None] * u[..., None, :]).flatten(-2), cov], dim=-1)


def farthest_point_sampling(pos: Tensor, m: int) -> Tensor:
    r"""Farthest point sampling of ``m`` points per cloud, E(d)-invariant.

    The first point is the one farthest from the cloud's centroid; then repeatedly the point whose
    distance to the already chosen set is largest, ``i_{t+1} = \arg\max_i \min_{s \le t}
    \|x_i - x_{i_s}\|``. Only distances enter, so the selection is invariant to rotations,
    reflections and translations (up to exact distance ties).

    Shapes:
        pos ``[B, N, d]`` -> ``[B, m]`` (int64)
    """
    m = _positive("m", m)
    B, N, _ = pos.shape
    if m > N:
        raise ValueError(f"m: cannot sample {m} of {N} points")
    x = pos.detach()
    idx = x.new_zeros((B, m), dtype=torch.long)
    cur = (x - x.mean(dim=1, keepdim=True)).square().sum(-1).argmax(dim=1)  # [B]
    dist = torch.full((B, N), float("inf"), dtype=x.dtype, device=x.device)
    ar = torch.arange(B, device=x.device)
    for t in range(m):
        idx[:, t] = cur
        dist = torch.minimum(dist, (x - x[ar, cur][:, None]).square().sum(-1))
        cur = dist.argmax(dim=1)
    return idx


def _flat_edges(idx: Tensor, n_src: int) -> Tensor:
    """Dense neighbour lists ``idx [B, M, k]`` (sources within each cloud of ``n_src`` points) ->
    ``edge_index [2, B M k]`` over the flattened batch (source ``b n_src + j``, target ``b M + i``)."""
    B, M, k = idx.shape
    src = (idx + (torch.arange(B, device=idx.device) * n_src)[:, None, None]).reshape(-1)
    dst = torch.arange(B * M, device=idx.device).repeat_interleave(k)
    return torch.stack([src, dst])
