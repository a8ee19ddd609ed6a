"""Local-frame models of the normal-estimation experiment: a PointNet in each point's k-NN PCA
frame (:class:`LocalPointNet`) and the iteratively reweighted plane-fit head (:class:`PlaneFitHead`).

Split out of :mod:`equiframe.models.normals`, which re-exports the public names.
"""

from __future__ import annotations

import torch
from typing import get_args

from torch import Tensor, nn

from ..frames.local import local_pca_frames
from ._normals_common import NORMALS_TYPES, Head, _check_dtype, _checked_cloud, _choice, _mlp, _positive, _zero_last
from .normals_geometry import _flat_edges, _gather, dense_knn
from .._checks import check_int, check_tensor

# ------------------------------------------------------------------------------------------ local frames
def _pca_frames_dense(x: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Local PCA frames of the ``k``-NN neighbourhoods (node included, centroid-centred: the baseline's
    covariance), the neighbour lists and the normalised eigenvalues (descending, as the frame axes).

    Shapes:
        x ``[B, N, d]`` -> frames ``[B N, d, d]``, idx ``[B, N, k]``, eigvals ``[B N, d]``
    """
    B, N, d = x.shape
    idx = dense_knn(x, x, k)  # [B, N, k], node first
    ei = _flat_edges(idx, N)
    xf = x.reshape(B * N, d)
    R = local_pca_frames(xf, ei, center="centroid")  # [B N, d, d], rows = axes, descending eigenvalues
    nbr = _gather(x.detach(), idx).reshape(B * N, k, d)
    y = nbr - nbr.mean(dim=1, keepdim=True)
    lam = torch.einsum("mab,mkb->mka", R, y).square().mean(dim=1)  # variance along each axis
    lam = lam / lam.sum(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    return R, idx, lam


def weighted_plane_normal(y: Tensor, w: Tensor, start: Tensor, steps: int = 4, shift: float = 1e-4) -> Tensor:
    r"""Normal of the weighted least-squares plane through points ``y``, by inverse iteration.

    .. math::
        c = \frac{\sum_j w_j y_j}{\sum_j w_j},\quad
        C = \frac{\sum_j w_j (y_j - c)(y_j - c)^\top}{\sum_j w_j},\quad
        v_0 = \text{start},\quad v_{t+1} = \frac{(C + \epsilon\, \mathrm{tr}(C) I)^{-1} v_t}{\|\cdot\|}

    (``epsilon = shift``). ``v_t`` converges to the eigenvector of ``C`` with the smallest eigenvalue
    at the rate ``(lambda_1 + eps)/(lambda_2 + eps)`` per step (fast for surface patches), keeps the
    side of ``start`` (no sign flips) and, unlike an eigen-decomposition, has bounded gradients also
    at (near-)repeated eigenvalues. With uniform weights and ``start`` already the smallest
    eigenvector (the k-NN PCA normal) the result is ``start``. Equivariant: rotating ``y`` and ``start``
    rotates the result (invariant weights).

    Shapes:
        y ``[M, k, d]``, w ``[M, k]`` (non-negative, not all 0), start ``[M, d]`` -> ``[M, d]``
    """
    check_tensor("y", y, ndim=3, floating=True)
    if w.shape != y.shape[:2] or start.shape != (y.shape[0], y.shape[2]):
        raise ValueError(f"w, start: expected shapes {tuple(y.shape[:2])} and {(y.shape[0], y.shape[2])} for y "
                         f"{tuple(y.shape)}, got {tuple(w.shape)} and {tuple(start.shape)}")
    check_int("steps", steps, 1)
    d = y.shape[-1]
    wn = w / w.sum(dim=1, keepdim=True)
    c = (wn[..., None] * y).sum(dim=1, keepdim=True)
    z = y - c
    C = torch.einsum("mk,mka,mkb->mab", wn, z, z)
    tr = C.diagonal(dim1=-2, dim2=-1).sum(-1)
    eye = torch.eye(d, dtype=y.dtype, device=y.device)
    A = C + (shift * tr + torch.finfo(y.dtype).tiny)[:, None, None] * eye
    v = start
    for _ in range(steps):
        v = torch.linalg.solve(A, v)
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(y.dtype).tiny)
    return v


class PlaneFitHead(nn.Module):
    r"""Learned iteratively reweighted plane fit (a normal head for local-frame models).

    Starting from ``n^0 = `` ``start`` and the unweighted centroid ``c^0``, ``iterations`` times

    .. math::
        w^t_{ij} = 10^{-3} + \sigma\Big(W_2\, \mathrm{SiLU}\big(A h_{ij} + B g_i
            + C\,[\,|n^{t-1} \cdot (y_{ij} - c^{t-1})|,\ |n^{t-1} \cdot y_{ij}|\,] / \bar r_i + b\big)\Big),
        \qquad (n^t, c^t) = \mathrm{fit}(y_i, w^t_i)

    (:func:`weighted_plane_normal`; ``\bar r_i`` the mean neighbour distance, for scale invariance)
    with invariant per-edge features ``h_ij`` and per-point features ``g_i``. With
    ``neighbour_lines`` the residuals also contain ``(n^{t-1} \cdot m_{ij})^2``, the alignment with
    the neighbours' own normal directions ``m_ij`` (unit, in the same frame; sign-free). The residuals of the
    previous fit tell which neighbours lie on the point's own surface patch (iteratively reweighted
    least squares with learned weights). At initialisation ``W_2`` is small, so every weight is near
    1/2 and the head starts near the unweighted plane fit (the k-NN PCA normal when ``start`` is it;
    a zero ``W_2`` would start exactly there but measurably slowed the first epochs down). SiLU and the
    additive weight floor keep every unit and weight trainable: with ReLU and a clamped floor a
    TF-PointNet++ run once fell into a state with constant weights (exactly the PCA normal, zero
    gradient) after 8 epochs.

    Args:
        edge_dim: channels of ``h_ij``.
        point_dim: channels of ``g_i``.
        hidden: width of the weight MLP.
        iterations: reweighting steps.

    Shapes:
        h_edge ``[M, k, edge_dim]``, h_point ``[M, point_dim]``, y ``[M, k, d]`` (invariant local
        coordinates), start ``[M, d]``, lines ``[M, k, d]`` -> ``[M, d]``
    """

    def __init__(self, edge_dim: int, point_dim: int, hidden: int = 32, iterations: int = 2,
                 neighbour_lines: bool = False):
        check_int("edge_dim", edge_dim, 1)
        check_int("point_dim", point_dim, 1)
        check_int("hidden", hidden, 1)
        check_int("iterations", iterations, 1)
        super().__init__()
        self.iterations = iterations
        self.neighbour_lines = bool(neighbour_lines)
        self.a = nn.Linear(edge_dim, hidden)
        self.b = nn.Linear(point_dim, hidden, bias=False)
        self.c = nn.Linear(3 if neighbour_lines else 2, hidden, bias=False)
        self.out = nn.Linear(hidden, 1)  # default init: weights start near 1/2 (near the unweighted fit)

    def forward(self, h_edge: Tensor, h_point: Tensor, y: Tensor, start: Tensor, lines: Tensor | None = None) -> Tensor:
        if (lines is not None) != self.neighbour_lines:
            raise ValueError("lines: give the neighbours' unit normal directions exactly when neighbour_lines=True")
        base = self.a(h_edge) + self.b(h_point)[:, None]  # [M, k, H], shared by the iterations
        scale = y.norm(dim=-1).mean(dim=1, keepdim=True).clamp_min(torch.finfo(y.dtype).tiny)  # [M, 1]
        n, c = start, y.mean(dim=1, keepdim=True)
        for _ in range(self.iterations):
            r = [((y - c) * n[:, None]).sum(-1).abs() / scale, (y * n[:, None]).sum(-1).abs() / scale]
            if lines is not None:
                r.append((lines * n[:, None]).sum(-1).square())
            z = self.out(nn.functional.silu(base + self.c(torch.stack(r, dim=-1))))[..., 0]
            w = _weights(z)
            n = weighted_plane_normal(y, w, n)
            c = ((w / w.sum(dim=1, keepdim=True))[..., None] * y).sum(dim=1, keepdim=True)
        return n


def _weights(z: Tensor) -> Tensor:
    """Plane-fit weights ``sigmoid(z) + 10^{-3}`` in ``(0.001, 1.001)``: never all zero, and unlike a clamp
    the floor keeps the gradient of every weight alive."""
    return torch.sigmoid(z) + 1e-3


class LocalPointNet(nn.Module):
    r"""FA-Local-PointNet: a PointNet on each point's neighbourhood in its local PCA frame.

    .. math::
        R_i = \mathrm{LocalPCA}(\mathrm{kNN}(i)),\quad
        y_{ij} = R_i (x_j - x_i) / s_i,\quad
        h_{ij} = \mathrm{MLP}_1([y_{ij}, |y_{ij}|]),\quad g_i = \max_j h_{ij}

    (``s_i`` the largest neighbour distance: scale invariance), then the normal in the local frame

    * ``head="wlsq"`` (default): ``n_local`` = normal of a learned, iteratively reweighted
      least-squares plane through the ``y_ij`` (:class:`PlaneFitHead` with edge features ``h_ij`` and
      point features ``g_i``, started from the PCA normal ``e_d``): the network learns which
      neighbours lie on the point's own surface patch (uniform weights give the k-NN PCA baseline);
    * ``"residual"``: ``n_local = e_d + MLP_2(g_i)`` (zero-initialised: starts at the baseline);
    * ``"free"``: ``n_local = MLP_2(g_i)``,

    and ``\hat n_i = R_i^\top n_local``. Local frames are O(d)-equivariant,
    ``R_i(QX + s) = R_i(X) Q^T``, hence the prediction is E(d)-equivariant wherever the neighbourhood
    spectrum is separated (see :func:`~equiframe.frames.local.local_pca_frames`). The frame's last
    axis is the k-NN PCA normal (centroid-centred covariance of the ``k`` nearest points, node
    included: exactly the baseline's).

    Multi-scale context (``context_k``): a second PointNet on the ``context_k > k`` nearest points in
    the same frame and scale, ``g^{ctx}_i = \max_j \mathrm{MLP}_3([y_{ij}, |y_{ij}|])``, whose pooled
    features join ``g_i`` as the head's point features: the wider view tells on which side of a
    nearby edge, or on which part of a curved or thin region, the point lies. The frame is the same
    ``R_i``, so the prediction stays exactly E(d)-equivariant. ``None`` (default): no context branch
    (the state dict is the one of the models without it).

    Args:
        dim: space dimension.
        k: neighbourhood size (frame and PointNet).
        hidden: width of the MLPs.
        head: ``"wlsq"``, ``"residual"`` or ``"free"`` (see above).
        iterations: reweighting steps of the ``"wlsq"`` head.
        context_k: neighbours of the context branch (``> k``), or ``None``.

    Shapes:
        pos ``[B, N, d]`` or ``[N, d]`` -> same shape
    """

    def __init__(self, dim: int = 3, k: int = 16, hidden: int = 32, head: Head = "wlsq", iterations: int = 2,
                 context_k: int | None = None):
        super().__init__()
        self.dim, self.k = _positive("dim", dim), _positive("k", k)
        hidden = _positive("hidden", hidden)
        self.head_kind = _choice("head", head, get_args(Head))
        if context_k is not None and _positive("context_k", context_k) <= k:
            raise ValueError(f"context_k: expected more neighbours than k = {k}, got {context_k!r}")
        self.context_k = context_k
        self.inputs = dict(NORMALS_TYPES)
        self.output = "1x1n"
        self.local = _mlp([dim + 1, hidden, 2 * hidden])
        # registered only when used: models without context keep their state-dict keys
        self.context = _mlp([dim + 1, hidden, 2 * hidden]) if context_k is not None else None
        point_dim = 2 * hidden * (2 if context_k is not None else 1)
        if head == "wlsq":
            self.head = PlaneFitHead(2 * hidden, point_dim, hidden, iterations)
        else:
            self.head = _mlp([point_dim, hidden, dim], last_act=False)
            if head == "residual":
                _zero_last(self.head)

    @property
    def n_neighbours(self) -> int:
        """Neighbours per point (the point itself included) that :meth:`forward_neighbourhoods` takes:
        ``context_k`` with a context branch, else ``k``."""
        return self.k if self.context_k is None else self.context_k

    def forward(self, pos: Tensor) -> Tensor:
        x = _checked_cloud(pos, self, self.n_neighbours)
        B, N, d = x.shape
        R, idx, _ = _pca_frames_dense(x, self.k)
        rel = (_gather(x, idx) - x[:, :, None]).reshape(B * N, self.k, d)
        ctx = None
        if self.context_k is not None:
            cidx = dense_knn(x, x, self.context_k)
            ctx = (_gather(x, cidx) - x[:, :, None]).reshape(B * N, self.context_k, d)
        out = self._predict(R, rel, ctx).reshape(B, N, d)
        return out if pos.dim() == 3 else out[0]

    def forward_neighbourhoods(self, center: Tensor, nbr: Tensor) -> Tensor:
        """The normals of points ``center`` from their ``k``-NN neighbourhoods ``nbr`` (the point itself
        included, as :func:`dense_knn` returns it), independently per point: what :meth:`forward` computes
        for every point of a cloud. Used by the estimator to run clouds of any size in chunks.

        Shapes:
            center ``[M, d]``, nbr ``[M, k, d]`` -> ``[M, d]``
        """
        if center.dim() != 2 or nbr.dim() != 3 or nbr.shape[0] != center.shape[0] or nbr.shape[2] != center.shape[1]:
            raise ValueError(f"center, nbr: expected [M, d] and [M, k, d], got {tuple(center.shape)} and {tuple(nbr.shape)}")
        if nbr.shape[1] != self.n_neighbours or center.shape[1] != self.dim:
            raise ValueError(f"nbr: expected {self.n_neighbours} neighbours (n_neighbours) of {self.dim}-D points, "
                             f"got {tuple(nbr.shape)}")
        _check_dtype(center, self)
        ctx = None if self.context_k is None else nbr - center[:, None]
        nbr = nbr[:, :self.k]  # the frame's neighbourhood: the k nearest (nbr is sorted, nearest first)
        M, k, d = nbr.shape
        # the frames of local_pca_frames on a graph whose node i receives edges from its k neighbour copies
        pos = torch.cat([center, nbr.reshape(M * k, d)])
        ei = torch.stack([M + torch.arange(M * k, device=pos.device),
                          torch.arange(M, device=pos.device).repeat_interleave(k)])
        R = local_pca_frames(pos, ei, center="centroid")[:M]
        return self._predict(R, nbr - center[:, None], ctx)

    def _predict(self, R: Tensor, rel: Tensor, ctx: Tensor | None = None) -> Tensor:
        """Normals ``[M, d]`` from frames ``R [M, d, d]``, neighbour offsets ``rel [M, k, d]`` and, with a
        context branch, the context offsets ``ctx [M, context_k, d]``."""
        M, _, d = rel.shape
        scale = rel.norm(dim=-1).amax(dim=1).clamp_min(torch.finfo(rel.dtype).tiny)  # invariant scale per point
        y = torch.einsum("mab,mkb->mka", R, rel) / scale[:, None, None]  # [M, k, d]
        h = self.local(torch.cat([y, y.norm(dim=-1, keepdim=True)], dim=-1))  # [M, k, 2H]
        g = h.amax(dim=1)
        if self.context is not None:
            if ctx is None:
                raise ValueError("ctx: a model with a context branch needs the context offsets")
            yc = torch.einsum("mab,mkb->mka", R, ctx) / scale[:, None, None]  # same frame and scale
            g = torch.cat([g, self.context(torch.cat([yc, yc.norm(dim=-1, keepdim=True)], dim=-1)).amax(dim=1)], -1)
        e_d = torch.eye(d, dtype=rel.dtype, device=rel.device)[d - 1]
        if self.head_kind == "wlsq":
            n_local = self.head(h, g, y, e_d.expand(M, d))
        else:
            n_local = self.head(g)  # [M, d]
            if self.head_kind == "residual":
                n_local = n_local + e_d
        return torch.einsum("mab,ma->mb", R, n_local)  # R_i^T n_local
