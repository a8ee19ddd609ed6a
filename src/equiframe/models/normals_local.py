"""Local-frame models of the normal-estimation experiment: a PointNet in each point's k-NN PCA
frame (:class:`LocalPointNet`) and the iteratively reweighted plane-fit head (:class:`PlaneFitHead`).

Split out of :mod:`equiframe.models.normals`, which re-exports the public names.
"""

from __future__ import annotations

import torch
from typing import get_args

from torch import Tensor, nn

from ..frames.local import local_pca_frames
from ._normals_common import (NORMALS_TYPES, Head, _check_dtype, _check_pos, _checked_cloud, _choice, _mlp, _positive,
                             _zero_last)
from .normals_geometry import _flat_edges, _gather, dense_knn, line_to_normal
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

    With ``sharp=True`` the residuals ``r`` above also enter as ``exp(-(r / tau)^2)`` for
    ``tau`` in :data:`SHARP_SCALES`: a plane that is already close to the point's own face (the start
    of :class:`PlaneVote`) leaves its neighbours on that face at residual ~0 and the others at a
    clear distance, and these features let one SiLU layer threshold at any of the scales. The logit
    then also gets a learned multiple ``gamma`` (initially 10) of ``exp(-(r_0 / 0.1)^2) - 1/2``, the
    soft inlier indicator of the plane through the point (``r_0 = |n \cdot y_{ij}| / \bar r_i``): the head
    starts as a refit on the start plane's inliers instead of as the unweighted fit, which would discard
    a good start plane.

    Args:
        edge_dim: channels of ``h_ij``.
        point_dim: channels of ``g_i``.
        hidden: width of the weight MLP.
        iterations: reweighting steps.
        neighbour_lines: see above.
        sharp: add the sharp residual features (state dict of its own shape).

    Shapes:
        h_edge ``[M, k, edge_dim]``, h_point ``[M, point_dim]``, y ``[M, k, d]`` (invariant local
        coordinates), start ``[M, d]``, lines ``[M, k, d]`` -> ``[M, d]``
    """

    def __init__(self, edge_dim: int, point_dim: int, hidden: int = 32, iterations: int = 2,
                 neighbour_lines: bool = False, sharp: bool = False):
        check_int("edge_dim", edge_dim, 1)
        check_int("point_dim", point_dim, 1)
        check_int("hidden", hidden, 1)
        check_int("iterations", iterations, 1)
        super().__init__()
        self.iterations = iterations
        self.neighbour_lines, self.sharp = bool(neighbour_lines), bool(sharp)
        self.a = nn.Linear(edge_dim, hidden)
        self.b = nn.Linear(point_dim, hidden, bias=False)
        self.c = nn.Linear((3 if neighbour_lines else 2) + (2 * len(SHARP_SCALES) if sharp else 0), hidden, bias=False)
        # registered only when used (the state dict of the heads without it is unchanged)
        self.gamma = nn.Parameter(torch.tensor(10.0)) if sharp else None
        self.out = nn.Linear(hidden, 1)  # default init: weights start near 1/2 (near the unweighted fit)

    def forward(self, h_edge: Tensor, h_point: Tensor, y: Tensor, start: Tensor, lines: Tensor | None = None) -> Tensor:
        if (lines is not None) != self.neighbour_lines:
            raise ValueError("lines: give the neighbours' unit normal directions exactly when neighbour_lines=True")
        base = self.a(h_edge) + self.b(h_point)[:, None]  # [M, k, H], shared by the iterations
        scale = y.norm(dim=-1).mean(dim=1, keepdim=True).clamp_min(torch.finfo(y.dtype).tiny)  # [M, 1]
        n, c = start, y.mean(dim=1, keepdim=True)
        for _ in range(self.iterations):
            r = [((y - c) * n[:, None]).sum(-1).abs() / scale, (y * n[:, None]).sum(-1).abs() / scale]
            if self.sharp:
                r += [torch.exp(-(ri / tau).square()) for ri in r[:2] for tau in SHARP_SCALES]
            if lines is not None:
                r.append((lines * n[:, None]).sum(-1).square())
            z = self.out(nn.functional.silu(base + self.c(torch.stack(r, dim=-1))))[..., 0]
            if self.gamma is not None:
                z = z + self.gamma * (torch.exp(-(r[1] / REFIT_SCALE).square()) - 0.5)
            w = _weights(z)
            n = weighted_plane_normal(y, w, n)
            c = ((w / w.sum(dim=1, keepdim=True))[..., None] * y).sum(dim=1, keepdim=True)
        return n


#: residual scales (fractions of the neighbourhood scale) of the sharp plane-membership features of
#: :class:`PlaneFitHead` and :class:`PlaneVote`
SHARP_SCALES: tuple[float, ...] = (0.005, 0.02, 0.08)
#: inlier scale (fraction of the mean neighbour distance) of the classical start of the vote (RANSAC's)
INLIER_SCALE = 0.01
#: inlier scale of the initial refit of :class:`PlaneFitHead` with ``sharp=True`` (wider: the vote's start is
#: a blend of candidate planes, not one of them)
REFIT_SCALE = 0.1


def candidate_planes(y: Tensor, pairs_from: int) -> tuple[Tensor, Tensor, Tensor]:
    r"""The hyperplanes through a point and ``d - 1`` of its ``pairs_from`` nearest neighbours.

    ``y [M, k, d]`` are neighbour offsets from the point, nearest first, with ``y[:, 0] = 0`` (the point
    itself, as :func:`dense_knn` lists it). For ``d = 3`` the candidates are the planes through the point
    and each pair ``1 <= j < l <= pairs_from`` of neighbours, unit normal ``y_j \times y_l / |\cdot|``;
    for ``d = 2`` the lines through the point and each neighbour ``j``, normal ``y_j`` turned by 90°.
    Equivariant as lines: ``y -> y Q^T`` maps every normal to ``+- Q n`` (the sign flips with
    ``det Q``), so only sign-free functions of them (``|n . y_m|``, ``n n^T``) should be used.

    Returns:
        normals ``[M, P, d]`` (unit, or zero for a degenerate candidate), ``sine [M, P]`` (the sine of
        the angle of the pair, 1 for ``d = 2``: 0 marks a degenerate candidate) and the neighbour
        distances ``[M, P, d - 1]`` of the points that span each candidate.
    """
    check_tensor("y", y, ndim=3, floating=True)
    M, k, d = y.shape
    if d not in (2, 3):
        raise ValueError(f"y: candidate planes are defined for d = 2 or 3, got d = {d}")
    check_int("pairs_from", pairs_from, d - 1)
    if pairs_from >= k:
        raise ValueError(f"pairs_from: expected fewer than k = {k} neighbours (the point itself is y[:, 0]), "
                         f"got {pairs_from}")
    tiny = torch.finfo(y.dtype).tiny
    if d == 3:
        j, l = (torch.triu_indices(pairs_from, pairs_from, 1, device=y.device) + 1).unbind(0)
        a, b = y[:, j], y[:, l]
        c = torch.linalg.cross(a, b, dim=-1)
        span = torch.stack([a.norm(dim=-1), b.norm(dim=-1)], dim=-1)
    else:
        a = y[:, 1:pairs_from + 1]
        c = torch.stack([-a[..., 1], a[..., 0]], dim=-1)
        span = a.norm(dim=-1, keepdim=True)
    cn = c.norm(dim=-1)
    sine = cn / span.prod(-1).clamp_min(tiny)
    normals = c / cn.clamp_min(tiny)[..., None]
    return normals, sine, span


def ransac_normals(pos: Tensor, k: int = 32, pairs_from: int = 12, tau: float = INLIER_SCALE, *,
                   chunk_size: int = 2048) -> Tensor:
    r"""Classical robust normals: an exhaustive RANSAC over the planes through each point and pairs of its
    neighbours (no learning; the hard-threshold counterpart of :class:`PlaneVote`).

    For every point, among the planes through it and two of its ``pairs_from`` nearest neighbours
    (:func:`candidate_planes`), take the one with the most soft inliers
    ``\sum_m \exp(-(|n \cdot (x_m - x_i)| / (\tau \bar r_i))^2)`` over its ``k`` nearest neighbours
    (``\bar r_i`` their mean distance), then refit the plane by weighted least squares with those weights
    (:func:`weighted_plane_normal`). Where every pair is degenerate (collinear or repeated neighbours) the
    k-NN PCA normal is returned. On clean samples of piecewise-smooth surfaces it keeps sharp edges (a
    neighbourhood that straddles an edge still has a plane through two neighbours of the point's own
    face); with noise above ``tau`` its choice degrades (choose ``tau`` per noise level, as ``k`` of PCA).
    O(d)-equivariant (up to ties), unoriented. ``d`` = 2 or 3.

    Shapes:
        pos ``[B, N, d]`` or ``[N, d]`` -> same shape
    """
    _check_pos(pos)
    x = pos.detach() if pos.dim() == 3 else pos.detach()[None]
    B, N, d = x.shape
    check_int("k", k, 3)
    if N < k:
        raise ValueError(f"pos: every cloud needs at least k = {k} points, got {N}")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0:
        raise ValueError(f"tau: expected a number > 0, got {tau!r}")
    check_int("chunk_size", chunk_size, 1)
    idx = dense_knn(x, x, k)
    out = torch.empty_like(x).reshape(B * N, d)
    tiny = torch.finfo(x.dtype).tiny
    for s in range(0, B * N, chunk_size):
        flat = torch.arange(s, min(s + chunk_size, B * N), device=x.device)
        b, n = flat // N, flat % N
        y = x[b[:, None], idx[b, n]] - x[b, n][:, None]  # [M, k, d], y[:, 0] = 0
        normals, sine, _ = candidate_planes(y, pairs_from)
        scale = y.norm(dim=-1).mean(dim=1).clamp_min(tiny)[:, None, None]
        w = torch.exp(-(torch.einsum("mpd,mkd->mpk", normals, y).abs() / (tau * scale)).square())
        score = w.sum(-1).masked_fill(sine <= 1e-6, -1.0)
        best = score.argmax(dim=1)
        rows = torch.arange(len(best), device=x.device)
        ok = score[rows, best] >= 0
        start, weights = normals[rows, best], w[rows, best]
        if not bool(ok.all()):  # every pair degenerate: the k-NN PCA plane, unweighted (only those rows)
            z = y[~ok] - y[~ok].mean(dim=1, keepdim=True)
            start[~ok] = torch.linalg.eigh(z.transpose(1, 2) @ z)[1][..., 0]
            weights[~ok] = 1.0
        weights = weights + 1e-12
        out[s:s + len(best)] = weighted_plane_normal(y, weights, start, steps=4)
    out = out.reshape(B, N, d)
    return out if pos.dim() == 3 else out[0]


class PlaneVote(nn.Module):
    r"""Learned vote among candidate planes: a start plane on the point's own face.

    The candidates are the planes through the point and pairs of its ``pairs_from`` nearest neighbours
    (:func:`candidate_planes`) plus the k-NN PCA plane. Each candidate ``p`` with unit normal ``n_p`` is
    described by invariant features — the soft inlier counts
    ``\mathrm{mean}_m \exp(-(|n_p \cdot y_m| / \tau)^2)`` over the nearest half and over all ``k``
    neighbours for ``tau`` in :data:`SHARP_SCALES`, the squared coordinates ``n_p^2`` in the local
    frame, the sine and the lengths of the spanning pair, a flag for the PCA candidate — and scored by an
    MLP that also sees the point's features ``g``: ``a = softmax_p(s_p)`` (degenerate candidates
    masked). The result is the dominant eigenvector of ``\sum_p a_p n_p n_p^T``, started from the best
    candidate (:func:`~equiframe.models.normals.line_to_normal`): differentiable in the scores, sign-free.
    The scores are ``s_p = MLP(f_p, g) + gamma\, c_p`` with ``c_p`` the soft inlier count
    ``\mathrm{mean}_m \exp(-(|n_p \cdot y_m| / (0.01\, \bar r))^2)`` (``\bar r`` the mean neighbour
    distance), ``gamma`` learned (initially 30) and the MLP's last layer zero-initialised: the vote starts
    as the classical RANSAC choice (:func:`ransac_normals`) and learns from there.

    On a clean sample of a piecewise-planar part most points have a plane through two close neighbours
    of the same face, which has many exact inliers: a hard vote with one threshold (RANSAC over pairs)
    already halves the k-NN PCA error on the CAD test parts at 512 points; the learned scores keep that
    when the points are noisy, where every fixed threshold fails.

    Works in the point's local frame (``y`` are frame coordinates, invariant), so the vote is invariant
    and the normal equivariant once rotated back.

    Args:
        pairs_from: nearest neighbours (the point excluded) whose pairs span the candidates.
        point_dim: channels of ``g``.
        hidden: width of the score MLP.
        dim: space dimension (2 or 3).

    Shapes:
        y ``[M, k, d]`` (``y[:, 0] = 0``, nearest first), g ``[M, point_dim]``, pca ``[M, d]`` (unit) -> ``[M, d]``
    """

    def __init__(self, pairs_from: int, point_dim: int, hidden: int = 32, dim: int = 3):
        super().__init__()
        if dim not in (2, 3):
            raise ValueError(f"dim: the plane vote is defined for d = 2 or 3, got {dim!r}")
        self.pairs_from, self.dim = check_int("pairs_from", pairs_from, dim - 1), dim
        check_int("hidden", hidden, 1)
        self.features = 2 * len(SHARP_SCALES) + dim + 2 + dim - 1
        self.a = nn.Linear(self.features, hidden)
        self.b = nn.Linear(check_int("point_dim", point_dim, 1), hidden, bias=False)
        self.score = _zero_last(_mlp([hidden, hidden, 1], last_act=False))
        self.gamma = nn.Parameter(torch.tensor(30.0))

    def forward(self, y: Tensor, g: Tensor, pca: Tensor) -> Tensor:
        M, k, d = y.shape
        if d != self.dim or g.shape[0] != M or pca.shape != (M, d):
            raise ValueError(f"y, g, pca: expected [M, k, {self.dim}], [M, C], [M, {self.dim}], got "
                             f"{tuple(y.shape)}, {tuple(g.shape)}, {tuple(pca.shape)}")
        normals, sine, span = candidate_planes(y, self.pairs_from)
        normals = torch.cat([pca[:, None], normals], dim=1)  # [M, P + 1, d], the PCA plane first
        sine = torch.cat([sine.new_ones(M, 1), sine], dim=1)
        span = torch.cat([span.new_zeros(M, 1, d - 1), span], dim=1)
        flag = torch.zeros_like(sine)
        flag[:, 0] = 1.0
        dist = y.norm(dim=-1)
        scale = dist.amax(dim=1).clamp_min(torch.finfo(y.dtype).tiny)[:, None, None]
        r = torch.einsum("mpd,mkd->mpk", normals, y).abs() / scale  # [M, P + 1, k]
        half = max(k // 2, 1)
        counts = [torch.exp(-(r[..., :n] / tau).square()).mean(-1) for tau in SHARP_SCALES for n in (half, k)]
        f = torch.cat([torch.stack(counts + [sine, flag], dim=-1), normals.square(), span / scale], dim=-1)
        mean_r = dist.mean(dim=1).clamp_min(torch.finfo(y.dtype).tiny)[:, None, None]
        inliers = torch.exp(-(r * (scale / (INLIER_SCALE * mean_r))).square()).mean(-1)  # RANSAC's soft count
        s = self.score(nn.functional.silu(self.a(f) + self.b(g)[:, None]))[..., 0] + self.gamma * inliers  # [M, P + 1]
        s = s.masked_fill(sine <= 1e-6, float("-inf"))  # degenerate pairs (collinear or repeated points)
        a = torch.softmax(s, dim=1)
        best = normals[torch.arange(M, device=y.device), s.argmax(dim=1)]
        P = torch.einsum("mp,mpa,mpb->mab", a, normals, normals)
        return line_to_normal(P, best)


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

    Plane vote (``vote``, ``head="wlsq"`` only, ``d`` = 2 or 3): the plane-fit head starts from the plane
    chosen by a :class:`PlaneVote` among the planes through the point and pairs of its ``vote`` nearest
    neighbours (and the PCA plane) instead of the PCA plane, and sees its residuals also as sharp
    membership features (``PlaneFitHead(sharp=True)``); the normal is
    ``(1 - beta_i)\, n^{vote}_i + beta_i\, n^{fit}_i`` (unit vectors on the same side, so their mix is a
    vector of norm close to 1 along the normal, like every output of the model not normalised), with a learned
    gate ``beta_i = sigmoid(w \cdot g_i + b)`` that starts near 0 (``b = -4``): the model starts as the
    vote, itself initially the classical RANSAC choice, and learns where the refit (e.g. on noisy points)
    does better. Near an edge the k-NN PCA plane mixes two faces and its residuals say little about which
    neighbours share the point's face; a plane through two close neighbours on that face has them as exact
    inliers.

    Args:
        dim: space dimension.
        k: neighbourhood size (frame and PointNet).
        hidden: width of the MLPs.
        head: ``"wlsq"``, ``"residual"`` or ``"free"`` (see above).
        iterations: reweighting steps of the ``"wlsq"`` head.
        context_k: neighbours of the context branch (``> k``), or ``None``.
        vote: nearest neighbours (``< k``) whose pairs span the candidate planes of the vote, or ``None``.

    Shapes:
        pos ``[B, N, d]`` or ``[N, d]`` -> same shape
    """

    def __init__(self, dim: int = 3, k: int = 16, hidden: int = 32, head: Head = "wlsq", iterations: int = 2,
                 context_k: int | None = None, vote: int | None = None):
        super().__init__()
        self.dim, self.k = _positive("dim", dim), _positive("k", k)
        hidden = _positive("hidden", hidden)
        self.head_kind = _choice("head", head, get_args(Head))
        if context_k is not None and _positive("context_k", context_k) <= k:
            raise ValueError(f"context_k: expected more neighbours than k = {k}, got {context_k!r}")
        self.context_k = context_k
        if vote is not None:
            if head != "wlsq":
                raise ValueError(f"vote: the plane vote starts the 'wlsq' head, got head={head!r}")
            if _positive("vote", vote) >= k or vote < dim - 1:
                raise ValueError(f"vote: expected {dim - 1} <= vote < k = {k} neighbours, got {vote!r}")
        self.vote_k = vote
        self.inputs = dict(NORMALS_TYPES)
        self.output = "1x1n"
        self.local = _mlp([dim + 1, hidden, 2 * hidden])
        # registered only when used: models without context keep their state-dict keys
        self.context = _mlp([dim + 1, hidden, 2 * hidden]) if context_k is not None else None
        point_dim = 2 * hidden * (2 if context_k is not None else 1)
        # registered only when used, as the context branch
        self.vote = PlaneVote(vote, point_dim, hidden, dim) if vote is not None else None
        self.gate = nn.Linear(point_dim, 1) if vote is not None else None
        if self.gate is not None:
            nn.init.zeros_(self.gate.weight)
            nn.init.constant_(self.gate.bias, -4.0)
        if head == "wlsq":
            self.head = PlaneFitHead(2 * hidden, point_dim, hidden, iterations, sharp=vote is not None)
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
            start = e_d.expand(M, d) if self.vote is None else self.vote(y, g, e_d.expand(M, d))
            n_local = self.head(h, g, y, start)
            if self.gate is not None:
                beta = torch.sigmoid(self.gate(g))
                n_local = (1 - beta) * start + beta * n_local  # same side: the fit keeps the side of its start
        else:
            n_local = self.head(g)  # [M, d]
            if self.head_kind == "residual":
                n_local = n_local + e_d
        return torch.einsum("mab,ma->mb", R, n_local)  # R_i^T n_local
