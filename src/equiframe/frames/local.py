"""Local (per-node) frames for Tensor Frames message passing.

Every constructor returns ``frames [N, d, d]``: one orthogonal matrix ``R_i`` per node whose ROWS are
the frame axes (library convention: local coordinates ``x_local = R_i (x - t)``). An *equivariant*
frame satisfies, for every ``g = (Q, s)`` in E(d) (rotations AND reflections) acting on all positions
of a graph by ``x -> Q x + s``,

.. math::  R_i(Q X + s) = R_i(X)\\, Q^T ,

so that ``R_i x`` is invariant and ``rho(R_i R_j^T)`` moves features between neighbouring frames
(the consumer is :mod:`equiframe.nn.tensor_frames`). Constructors:

* :func:`identity_frames` / :func:`random_local_frames` / :func:`random_global_frames`: the
  ablations. Identity frames reduce a Tensor Frames network to its plain (non-equivariant) backbone;
  one Haar-random frame per graph is random data augmentation; i.i.d. Haar-random frames per node
  are not functions of the input (so not equivariant frames), but a network that only uses them to
  transport features with ``rho(R_i R_j^T)`` and expresses geometric inputs in them is still
  exactly invariant for invariant outputs: it tests that transport is consistent.
* :func:`local_pca_frames` / :class:`LocalPCAFrames`: principal axes of the neighbourhood
  (non-learned, O(d)-equivariant away from degenerate neighbourhoods).
* :class:`LearnedFrames`: a small equivariant network predicting ``d`` vectors per node, followed by
  Gram-Schmidt with an O(d)-equivariant completion of the last axis (reflections included),
  twice differentiable everywhere (forces).

Degenerate inputs never give NaN: every constructor returns an orthogonal matrix for every node;
where the construction cannot be equivariant (symmetric or rank-deficient neighbourhoods) a
deterministic fallback is used and the node is flagged in the ``degenerate`` mask
(``return_mask=True``).

All constructors are batched over ragged PyG batches (a ``batch`` vector): the work is vectorised
over nodes and edges; only loops over the ``d`` axes remain.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from ..geometry import _neighbourhood_moments, scatter_sum
from ..groups import random_orthogonal
from .neighbourhood import (
    _check_batch,
    _check_count,
    _check_dim,
    _check_float_dtype,
    _check_pos,
    _default_tol,
    _resolve_graph,
    knn_graph_with_ties,
    neighbourhood_ties,
    tie_tolerance,
)
from .._checks import check_int, check_real, check_tensor

__all__ = [
    "identity_frames",
    "random_local_frames",
    "random_global_frames",
    "local_pca_frames",
    "LocalPCAFrames",
    "LearnedFrames",
    "gram_schmidt_frames",
    "neighbourhood_ties",
    "polynomial_envelope",
    "tie_tolerance",
]

Center = Literal["node", "centroid"]
Handedness = Literal["free", "right"]
RBF = Literal["gaussian", "bessel"]


# ----------------------------------------------------------------------------------------------
# ablation frames
# ----------------------------------------------------------------------------------------------


def identity_frames(
    num_nodes: int, dim: int, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> Tensor:
    """Identity frame ``R_i = I`` for every node: the plain backbone (no equivariance).

    Shapes:
        -> ``[num_nodes, dim, dim]``
    """
    num_nodes = _check_count(num_nodes, "num_nodes")
    dim = _check_dim(dim)
    dtype = _check_float_dtype(dtype)
    return torch.eye(dim, dtype=dtype, device=device).repeat(num_nodes, 1, 1)


def random_local_frames(
    num_nodes: int,
    dim: int,
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """I.i.d. Haar-random ``R_i`` in O(d) per node (half of them reflections).

    Not a function of the input, hence not an equivariant frame; features transported with
    ``rho(R_i R_j^T)`` still give exactly invariant outputs (an ablation of the frame choice).

    Shapes:
        -> ``[num_nodes, dim, dim]``
    """
    num_nodes = _check_count(num_nodes, "num_nodes")
    dim = _check_dim(dim)
    dtype = _check_float_dtype(dtype)
    Q = random_orthogonal(num_nodes, dim, generator=generator, dtype=dtype)
    return Q.to(device) if device is not None else Q


def random_global_frames(
    batch: Tensor,
    dim: int,
    generator: torch.Generator | None = None,
    *,
    num_graphs: int | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """One Haar-random frame in O(d) per graph, shared by all its nodes: ``R_i = Q_{batch[i]}``.

    Equivalent to random rotation/reflection data augmentation of each sample.

    Args:
        batch: graph index of each node (any order).
        dim: dimension ``d``.
        generator: random source.
        num_graphs: number of graphs (default ``max(batch) + 1``).
        dtype: output dtype (default: torch's default dtype). The device is ``batch``'s.

    Shapes:
        batch ``[N]`` -> ``[N, dim, dim]``
    """
    dim = _check_dim(dim)
    dtype = _check_float_dtype(dtype)
    if not isinstance(batch, Tensor):
        raise TypeError(f"batch: expected a tensor [N], got {type(batch).__name__}")
    if batch.dim() != 1:
        raise ValueError(f"batch: expected shape [N], got {tuple(batch.shape)}")
    batch = _check_batch(batch, batch.shape[0], batch.device)
    needed = int(batch.max()) + 1 if batch.numel() else 0
    B = needed if num_graphs is None else _check_count(num_graphs, "num_graphs")
    if B < needed:
        raise ValueError(f"num_graphs: {B} is smaller than max(batch) + 1 = {needed}")
    Q = random_orthogonal(B, dim, generator=generator, dtype=dtype).to(batch.device)
    return Q[batch]


# ----------------------------------------------------------------------------------------------
# local PCA frames
# ----------------------------------------------------------------------------------------------


def _eigh(C: Tensor) -> tuple[Tensor, Tensor]:
    """Ascending eigenvalues and column eigenvectors; the library's fast solver when present."""
    try:
        from ..linalg import symeig  # noqa: PLC0415
    except ImportError:
        return torch.linalg.eigh(C)
    return symeig(C)


def _check_pca_options(center: str, handedness: str) -> None:
    if center not in ("node", "centroid"):
        raise ValueError(f"center: expected 'node' or 'centroid', got {center!r}")
    if handedness not in ("free", "right"):
        raise ValueError(f"handedness: expected 'free' or 'right', got {handedness!r}")


def local_pca_frames(
    pos: Tensor,
    edge_index: Tensor | None = None,
    *,
    k: int | None = None,
    r: float | None = None,
    batch: Tensor | None = None,
    edge_weight: Tensor | None = None,
    center: Center = "node",
    handedness: Handedness = "free",
    detach: bool = True,
    gap_tol: float | None = None,
    sign_tol: float | None = None,
    max_num_neighbors: int | None = 64,
    return_mask: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Principal axes of each node's neighbourhood, signs fixed by invariant moments.

    For node ``i`` with incoming edges ``j -> i`` (``edge_index[0] = j``, ``edge_index[1] = i``)
    and offsets ``y_ij = x_j - c_i``:

    .. math::
        C_i = \\sum_j w_{ij}\\, y_{ij} y_{ij}^T, \\qquad C_i u_{i,k} = \\lambda_{i,k} u_{i,k},
        \\quad \\lambda_{i,1} \\ge \\dots \\ge \\lambda_{i,d},

    with ``c_i = x_i`` (``center="node"``, default: the node is the origin of its frame and a
    single neighbour already gives a rank-1 covariance) or the weighted neighbour centroid
    ``c_i = sum_j w_ij x_j / sum_j w_ij`` (``center="centroid"``: the classical covariance; add self
    loops to count the node itself). Axis ``k`` is ``sigma_{i,k} u_{i,k}`` with

    .. math::
        \\sigma_{i,k} = \\operatorname{sign} \\sum_j w_{ij} (u_{i,k} \\cdot y_{ij})^3
        \\;\\text{else}\\; \\operatorname{sign} \\sum_j w_{ij}\\, u_{i,k} \\cdot y_{ij}
        \\;\\text{else}\\; +1,

    a moment being used only when it is not negligible compared with the neighbourhood's size,
    ``|sum_j w (u . y)^q| > sign_tol sum_j w |y|^q`` (the first moment vanishes identically for
    ``center="centroid"``). Every axis, the last one
    included, gets its sign from the data, so frames cover O(d): ``det R_i = +-1`` and
    ``R_i(Q X + s) = R_i(X) Q^T`` also for reflections ``Q``. ``handedness="right"`` instead flips
    the last axis so that ``det R_i = +1`` (SO(d) frames: rotation- but not reflection-equivariant).

    Degenerate neighbourhoods. The eigenbasis of a covariance with (nearly) repeated eigenvalues is
    arbitrary, and a vanishing moment leaves a sign undetermined; equivariance is guaranteed only
    for nodes whose spectrum is separated, ``lambda_k - lambda_{k+1} > gap_tol * lambda_1`` for all
    ``k``, whose ``d`` signs were decided by a moment, and -- when the graph is built here from ``k`` or
    ``r`` -- whose neighbourhood is not decided by a distance tie (:func:`neighbourhood_ties`: the
    ``k``-th and ``(k+1)``-th nearest distances tie, as on regular lattices and crystals, or a point
    lies on the radius). Other nodes are flagged ``degenerate``
    and get a deterministic orthogonal matrix: isolated nodes / all-identical neighbourhoods
    (``C_i = 0``) get ``I``; rank-deficient ones (a single neighbour, collinear or coplanar points,
    duplicates) get the solver's eigenbasis (orthonormal) with the moment signs where defined,
    ``+1`` elsewhere. Never NaN.

    Eigen-solver: :func:`equiframe.linalg.symeig` (closed form for ``d = 2, 3``) when importable,
    else :func:`torch.linalg.eigh`; both return orthonormal eigenvectors, also at ties.

    The neighbourhood moments are those of :func:`equiframe.geometry.knn_covariance` (the dense k-NN local
    PCA of point-cloud batches, the normal-estimation models' features and baselines): both sum them by
    scatter over the neighbourhood's edges in one function (``geometry._neighbourhood_moments``).

    Gradients. ``detach=True`` (default) returns frames that do not require grad: PCA frames are
    only piecewise smooth (eigenvector derivatives contain ``1 / (lambda_k - lambda_l)``, signs jump)
    and an invariant model stays invariant with constant frames, so most uses (classification,
    invariant regression) do not need them. Forces of an energy model computed with detached frames
    are equivariant but not the exact gradient (use :class:`LearnedFrames`, which is twice
    differentiable, or ``detach=False``, whose gradients blow up near degenerate spectra).

    Args:
        pos: node positions.
        edge_index: neighbourhood graph (``[source j, target i]``); or give ``k`` / ``r``.
        k: build a kNN graph with :func:`equiframe.geometry.knn_graph` (if ``edge_index`` is None).
        r: build a radius graph with :func:`equiframe.geometry.radius_graph` (if ``edge_index`` is None).
        batch: PyG batch vector (graph building; edges across graphs are rejected).
        edge_weight: invariant non-negative weights ``w_ij`` (default 1).
        center: ``"node"`` or ``"centroid"`` (see above).
        handedness: ``"free"`` (O(d), default) or ``"right"`` (``det = +1``, SO(d) only).
        detach: do not differentiate through the frames (see above).
        gap_tol: relative eigenvalue gap below which a node is degenerate (default
            ``10 sqrt(eps(dtype))``: 3.5e-3 in float32, 1.5e-7 in float64; eigenvector errors are
            about ``eps / gap``).
        sign_tol: relative size below which a moment cannot decide a sign (default
            ``sqrt(eps(dtype))``, a few times the moments' rounding error at the smallest allowed gap).
        max_num_neighbors: cap of the radius graph.
        return_mask: also return the ``degenerate`` mask.

    Returns:
        ``frames`` or ``(frames, degenerate)``.

    Shapes:
        pos ``[N, d]``, edge_index ``[2, E]``, edge_weight ``[E]`` -> frames ``[N, d, d]``,
        degenerate ``[N]`` (bool)
    """
    _check_pos(pos)
    _check_pca_options(center, handedness)
    N, d = pos.shape
    edge_index, ties = _graph_and_ties(pos, edge_index, k, r, batch, max_num_neighbors)
    src, dst = edge_index[0], edge_index[1]
    gap_tol, sign_tol = _pca_tolerances(pos.dtype, gap_tol, sign_tol)
    x = pos.detach() if detach else pos
    w = _edge_weights(x, edge_weight, src.shape[0], detach)
    weighted = edge_weight is not None
    y, C, M1, a1, a3 = _neighbourhood_moments(x, src, dst, w, weighted, center)

    evals, U = _eigh(C)
    evals, U = evals.flip(-1), U.flip(-1)  # descending; columns u_k
    sign, decided = _moment_signs(y, U, dst, M1, w, weighted, a1, a3, sign_tol)
    R = (U * sign[:, None, :]).transpose(-1, -2)  # rows = axes

    # degenerate: repeated eigenvalues or an undecided sign; C = 0 -> identity
    lam1 = evals[:, 0]
    gaps = evals[:, :-1] - evals[:, 1:]
    degenerate = ~decided | (lam1 <= 0)
    if d > 1:
        degenerate |= (gaps <= gap_tol * lam1.clamp_min(0)[:, None]).any(1)
    if ties is not None:  # a k-NN / radius neighbourhood decided by a tie is not a function of the geometry
        degenerate |= ties
    zero = (lam1 <= 0).detach()
    if bool(zero.any()):
        eye = torch.eye(d, dtype=R.dtype, device=R.device).expand_as(R)
        R = torch.where(zero[:, None, None], eye, R)
    if handedness == "right":
        det = torch.linalg.det(R.detach())
        flip = torch.ones_like(R[:, :, 0])
        flip[:, -1] = torch.where(det < 0, -1.0, 1.0)
        R = R * flip[:, :, None]
    R = R.detach() if detach else R
    return (R, degenerate) if return_mask else R


def _graph_and_ties(pos: Tensor, edge_index: Tensor | None, k: int | None, r: float | None, batch: Tensor | None,
                    max_num_neighbors: int | None) -> tuple[Tensor, Tensor | None]:
    """The neighbourhood graph (given, or built from ``k`` / ``r``) and, for a built one, the nodes whose
    neighbourhood is decided by a distance tie."""
    if edge_index is None and k is not None and r is None:  # one search gives the graph and its ties
        return knn_graph_with_ties(pos, k, _check_batch(batch, pos.shape[0], pos.device))
    built = edge_index is None
    edge_index = _resolve_graph(pos, edge_index, batch, k, r, max_num_neighbors)
    ties = neighbourhood_ties(pos, r=r, batch=batch, max_num_neighbors=max_num_neighbors) if built else None
    return edge_index, ties


def _pca_tolerances(dtype: torch.dtype, gap_tol: float | None, sign_tol: float | None) -> tuple[float, float]:
    gap_tol = _default_tol(dtype) if gap_tol is None else float(gap_tol)
    sign_tol = math.sqrt(torch.finfo(dtype).eps) if sign_tol is None else float(sign_tol)
    for name, value in (("gap_tol", gap_tol), ("sign_tol", sign_tol)):
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{name}: expected a finite value >= 0, got {value}")
    return gap_tol, sign_tol


def _edge_weights(x: Tensor, edge_weight: Tensor | None, E: int, detach: bool) -> Tensor:
    """The weights ``w_ij`` (default 1), checked: one per edge, finite, ``>= 0``."""
    if edge_weight is None:
        return x.new_ones(E)
    if not isinstance(edge_weight, Tensor) or edge_weight.shape != (E,):
        raise ValueError(f"edge_weight: expected shape [{E}] (one weight per edge)")
    if edge_weight.numel() and not bool((torch.isfinite(edge_weight) & (edge_weight >= 0)).all()):
        raise ValueError("edge_weight: must be finite and >= 0")
    w = edge_weight.to(x.dtype)
    return w.detach() if detach else w


def _moment_signs(y: Tensor, U: Tensor, dst: Tensor, M1: Tensor, w: Tensor, weighted: bool, a1: Tensor, a3: Tensor,
                  sign_tol: float) -> tuple[Tensor, Tensor]:
    """The sign of each axis ``u_k`` from the third moment ``sum_j w (u_k . y_ij)^3``, else the first
    ``u_k . sum_j w y_ij``, else ``+1``; and whether every axis of a node was decided by a moment."""
    s1 = torch.einsum("nd,ndk->nk", M1, U)
    p = torch.einsum("ed,edk->ek", y, U[dst])  # u_k . y_ij   [E, d]
    p3 = p * p * p
    if weighted:
        p3 = p3 * w[:, None]
    s3 = scatter_sum(p3, dst, U.shape[0])
    use3 = s3.abs() > sign_tol * a3[:, None]
    use1 = ~use3 & (s1.abs() > sign_tol * a1[:, None])
    one = torch.ones_like(s1)
    sign = torch.where(use3, torch.sign(s3), torch.where(use1, torch.sign(s1), one)).detach()
    return sign, (use3 | use1).all(1)


class LocalPCAFrames(nn.Module):
    """Module form of :func:`local_pca_frames` (no parameters).

    Args:
        k, r, center, handedness, detach, gap_tol, sign_tol, max_num_neighbors: see
            :func:`local_pca_frames`.
        return_mask: forward returns ``(frames, degenerate)``.

    Shapes:
        pos ``[N, d]``, edge_index ``[2, E]``, batch ``[N]`` -> frames ``[N, d, d]``
    """

    def __init__(
        self,
        *,
        k: int | None = None,
        r: float | None = None,
        center: Center = "node",
        handedness: Handedness = "free",
        detach: bool = True,
        gap_tol: float | None = None,
        sign_tol: float | None = None,
        max_num_neighbors: int | None = 64,
        return_mask: bool = False,
    ):
        if k is not None:
            check_int("k", k, 1)
        if r is not None:
            check_real("r", r, 0.0, strict=True)
        super().__init__()
        _check_pca_options(center, handedness)
        if k is not None and r is not None:
            raise ValueError("k, r: give at most one of them")
        self.k, self.r = k, r
        self.center, self.handedness, self.detach = center, handedness, detach
        self.gap_tol, self.sign_tol = gap_tol, sign_tol
        self.max_num_neighbors, self.return_mask = max_num_neighbors, return_mask

    def forward(
        self,
        pos: Tensor,
        edge_index: Tensor | None = None,
        batch: Tensor | None = None,
        edge_weight: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        return local_pca_frames(
            pos,
            edge_index,
            k=self.k if edge_index is None else None,
            r=self.r if edge_index is None else None,
            batch=batch,
            edge_weight=edge_weight,
            center=self.center,
            handedness=self.handedness,
            detach=self.detach,
            gap_tol=self.gap_tol,
            sign_tol=self.sign_tol,
            max_num_neighbors=self.max_num_neighbors,
            return_mask=self.return_mask,
        )

    def extra_repr(self) -> str:
        graph = f"k={self.k}" if self.k is not None else (f"r={self.r}" if self.r is not None else "edge_index")
        return f"{graph}, center={self.center!r}, handedness={self.handedness!r}, detach={self.detach}"


# ----------------------------------------------------------------------------------------------
# Gram-Schmidt with an O(d)-equivariant completion
# ----------------------------------------------------------------------------------------------


def _fallback_axis(A: Tensor | None, N: int, d: int, dtype, device) -> Tensor:
    """Unit vector orthogonal to the rows of ``A [N, m, d]``: the standard basis vector with the
    largest residual (first one on ties), projected and normalised. Residual norm^2 is at least
    ``(d - m) / d``, so this is always well defined (and smooth in ``A`` for a fixed choice)."""
    eye = torch.eye(d, dtype=dtype, device=device)
    if A is None or A.shape[1] == 0:
        return eye[0].expand(N, d).clone()
    res2 = 1.0 - A.square().sum(1)  # [N, d]: 1 - |A e_m|^2
    m = torch.argmax(res2.detach(), dim=1)
    e = eye[m]  # [N, d]
    for _ in range(2):
        e = e - torch.einsum("nk,nkd->nd", torch.einsum("nkd,nd->nk", A, e), A)
    return e / e.norm(dim=1, keepdim=True)


def gram_schmidt_frames(
    vectors: Tensor,
    *,
    handedness: Handedness = "free",
    eps: float = 1e-6,
    tol: float | None = None,
    return_mask: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Orthonormal frames from ``d`` vectors per node, O(d)-equivariant: ``R(v Q^T) = R(v) Q^T``.

    Axes ``a_1..a_{d-1}`` are Gram-Schmidt of ``v_1..v_{d-1}`` (projections done twice for exact
    orthogonality); the last axis is the O(d)-equivariant completion: the residual of ``v_d``
    against ``a_1..a_{d-1}`` (equivalently ``a_d = sign(v_d . n) n`` with ``n`` the unit normal /
    generalised cross product of ``a_1..a_{d-1}``), so ``det R = +-1`` follows the input's
    handedness and reflections are handled. (Completing with the cross product ``n`` itself gives
    SO(d) frames, ``det R = +1``, that are NOT reflection-equivariant; that is
    ``handedness="right"``.)

    Numerical safety. Axis ``k`` is accepted when its residual satisfies
    ``|w_k| > max(eps, tol |v_k|)``; otherwise (zero vectors, collinear inputs, ``v_d`` in the span
    of the first axes) a deterministic fallback axis is used: the standard basis vector with the
    largest residual, projected and normalised; for the last axis its sign is chosen so that
    ``det R = +1``. Fallback axes are not equivariant, and the node is flagged ``degenerate``.
    The selection uses ``torch.where`` on safe operands, so values, first and second derivatives
    are finite everywhere (the derivative jumps where a node switches to the fallback). Accepted
    axes are normalised exactly (``w / |w|`` with ``|w| > eps``), so every ``R`` is orthogonal to
    working precision.

    Args:
        vectors: ``v[i, k]`` is the ``k``-th vector of node ``i``.
        handedness: ``"free"`` (O(d)) or ``"right"`` (flip the last axis to ``det = +1``; SO(d)).
        eps: absolute norm below which a residual counts as zero.
        tol: relative threshold (default ``10 sqrt(eps(dtype))``).
        return_mask: also return the ``degenerate`` mask.

    Shapes:
        vectors ``[N, d, d]`` -> frames ``[N, d, d]`` (rows = axes), degenerate ``[N]``
    """
    if not isinstance(vectors, Tensor) or vectors.dim() != 3 or vectors.shape[1] != vectors.shape[2]:
        raise ValueError(f"vectors: expected shape [N, d, d], got {tuple(getattr(vectors, 'shape', ()))}")
    if not vectors.is_floating_point():
        raise TypeError(f"vectors: expected a floating point tensor, got {vectors.dtype}")
    if vectors.numel() and not bool(torch.isfinite(vectors.detach()).all()):
        raise ValueError("vectors: contains NaN or inf")
    if handedness not in ("free", "right"):
        raise ValueError(f"handedness: expected 'free' or 'right', got {handedness!r}")
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps: expected a finite value > 0, got {eps}")
    N, d, _ = vectors.shape
    tol = _default_tol(vectors.dtype) if tol is None else float(tol)
    dtype, device = vectors.dtype, vectors.device
    axes: list[Tensor] = []
    degenerate = torch.zeros(N, dtype=torch.bool, device=device)
    for k in range(d):
        v = vectors[:, k]
        A = torch.stack(axes, 1) if axes else None
        w = v
        if A is not None:
            for _ in range(2):
                w = w - torch.einsum("nk,nkd->nd", torch.einsum("nkd,nd->nk", A, w), A)
        wn2 = w.square().sum(1)
        vn2 = v.square().sum(1)
        ok = (wn2 > eps * eps) & (wn2 > (tol * tol) * vn2)
        ok = ok.detach()
        all_ok = bool(ok.all())
        safe = w if all_ok else torch.where(ok[:, None], w, _fallback_axis(A, N, d, dtype, device))
        a = safe / safe.norm(dim=1, keepdim=True)
        if k == d - 1 and not all_ok:
            # fallback last axis: sign such that det R = +1
            R_tmp = torch.stack(axes + [a], 1)
            det = torch.linalg.det(R_tmp.detach())
            a = torch.where(ok[:, None] | (det[:, None] > 0), a, -a)
        axes.append(a)
        degenerate |= ~ok
    R = torch.stack(axes, 1)
    if handedness == "right":
        det = torch.linalg.det(R.detach())
        R = torch.cat([R[:, :-1], torch.where(det[:, None] < 0, -R[:, -1], R[:, -1]).unsqueeze(1)], 1)
    return (R, degenerate) if return_mask else R


# ----------------------------------------------------------------------------------------------
# learned frames
# ----------------------------------------------------------------------------------------------


def polynomial_envelope(x: Tensor, exponent: int = 5) -> Tensor:
    """Smooth cutoff ``u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^{p+1} - p(p+1)/2 x^{p+2}`` for
    ``x < 1``, 0 beyond: ``u(0) = 1``, ``u(1) = u'(1) = u''(1) = 0`` (twice continuously
    differentiable at the cutoff).

    Shapes:
        x ``[*]`` -> ``[*]``
    """
    check_tensor("x", x, floating=True)
    check_int("exponent", exponent, 1)
    p = exponent
    poly = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    return torch.where(x < 1, poly, torch.zeros_like(poly))


class LearnedFrames(nn.Module):
    """Learned O(d)-equivariant local frames (Tensor Frames' learned frames, any ``d``, reflections).

    For every edge ``j -> i`` with ``Delta_ij = x_j - x_i`` and the smoothed distance
    ``r_ij = sqrt(|Delta_ij|^2 + eps^2)``:

    .. math::
        v_{i,k} = \\sum_j \\phi_k\\big(\\mathrm{rbf}(r_{ij}), h_i, h_j\\big)\\, u(r_{ij}/r_c)\\,
                  \\frac{x_j - x_i}{r_{ij}}, \\qquad k = 1..d,

    with ``phi`` an MLP of invariants (radial basis of ``r_ij``; optional node scalars ``h``), ``u``
    the :func:`polynomial_envelope` with cutoff radius ``r_c``; then
    ``R_i = gram_schmidt_frames(v_i)``: Gram-Schmidt of the first ``d - 1`` vectors, and the last
    axis the residual of ``v_d`` (O(d)-equivariant completion, ``det R_i = +-1``). Since ``v_i``
    transforms as ``v_i -> Q v_i`` under ``x -> Q x + s`` (any ``Q`` in O(d)),
    ``R_i(Q X + s) = R_i(X) Q^T``.

    The smoothed distance makes the map infinitely differentiable in the positions, also at
    duplicate points (``Delta = 0`` contributes 0); with the envelope, neighbours entering the
    cutoff do so twice-differentiably. Degenerate nodes (no neighbour in the cutoff, collinear
    neighbourhoods, a predicted ``v_d`` in the span of the first axes) fall back to deterministic
    non-equivariant axes (see :func:`gram_schmidt_frames`); frames, first and second derivatives
    stay finite; ``return_mask=True`` reports them.

    Args:
        dim: dimension ``d``.
        cutoff: cutoff radius ``r_c`` (also the radius of the graph built when no ``edge_index``
            is given and ``k`` is None).
        in_features: number of invariant node scalars ``h`` (0 = none).
        num_rbf: number of radial basis functions.
        hidden_channels: width of the MLP ``phi``.
        num_layers: number of hidden layers of ``phi`` (>= 1).
        rbf: ``"bessel"`` (default, ``sqrt(2 / r_c) sin(n pi r / r_c) / r``, ``n = 1..num_rbf``)
            or ``"gaussian"`` (``exp(-gamma (r - mu_n)^2)``, ``mu_n`` evenly spaced in
            ``[0, r_c]``, ``gamma = 1 / (2 delta^2)``, ``delta`` the spacing). At random
            initialisation the Bessel basis gives better conditioned vectors ``v_i`` (fewer
            near-degenerate Gram-Schmidt steps).
        envelope_exponent: ``p`` of the envelope.
        k: build a kNN graph instead of a radius graph when ``edge_index`` is not given.
        max_num_neighbors: cap of the radius graph.
        handedness: ``"free"`` (O(d), default) or ``"right"`` (SO(d) only; see
            :func:`gram_schmidt_frames`).
        eps: distance regulariser in position units (default ``1e-3 * cutoff``). Derivatives of
            the directions ``Delta / r`` are bounded by ``1 / eps`` (second ones by ``~1 / eps^2``),
            also at duplicate points; the bias on non-coincident pairs is ``~eps^2 / (2 r^2)``.
        min_norm: absolute norm below which a Gram-Schmidt residual of the (dimensionless)
            vectors ``v`` counts as zero.
        tol: relative threshold of the Gram-Schmidt degeneracy test.
        return_mask: forward returns ``(frames, degenerate)``.

    Shapes:
        pos ``[N, d]``, edge_index ``[2, E]``, h ``[N, in_features]``, batch ``[N]``
        -> frames ``[N, d, d]`` (rows = axes), degenerate ``[N]``
    """

    def __init__(
        self,
        dim: int,
        cutoff: float,
        *,
        in_features: int = 0,
        num_rbf: int = 16,
        hidden_channels: int = 64,
        num_layers: int = 2,
        rbf: RBF = "bessel",
        envelope_exponent: int = 5,
        k: int | None = None,
        max_num_neighbors: int | None = 64,
        handedness: Handedness = "free",
        eps: float | None = None,
        min_norm: float = 1e-6,
        tol: float | None = None,
        return_mask: bool = False,
    ):
        super().__init__()
        self.dim = _check_dim(dim)
        cutoff = float(cutoff)
        if not (cutoff > 0 and math.isfinite(cutoff)):
            raise ValueError(f"cutoff: expected a finite radius > 0, got {cutoff}")
        self.in_features = _check_count(in_features, "in_features")
        self.num_rbf = _check_count(num_rbf, "num_rbf")
        if self.num_rbf < 1:
            raise ValueError("num_rbf: expected >= 1")
        hidden_channels = _check_count(hidden_channels, "hidden_channels")
        num_layers = _check_count(num_layers, "num_layers")
        if hidden_channels < 1 or num_layers < 1:
            raise ValueError("hidden_channels, num_layers: expected >= 1")
        if rbf not in ("gaussian", "bessel"):
            raise ValueError(f"rbf: expected 'gaussian' or 'bessel', got {rbf!r}")
        if handedness not in ("free", "right"):
            raise ValueError(f"handedness: expected 'free' or 'right', got {handedness!r}")
        envelope_exponent = _check_count(envelope_exponent, "envelope_exponent")
        if envelope_exponent < 1:
            raise ValueError("envelope_exponent: expected >= 1")
        eps = 1e-3 * cutoff if eps is None else float(eps)
        if not (eps > 0 and math.isfinite(eps)):
            raise ValueError(f"eps: expected a finite value > 0, got {eps}")
        min_norm = float(min_norm)
        if not (min_norm > 0 and math.isfinite(min_norm)):
            raise ValueError(f"min_norm: expected a finite value > 0, got {min_norm}")
        self.min_norm = min_norm
        self.cutoff = cutoff
        self.rbf = rbf
        self.envelope_exponent = envelope_exponent
        self.k = k
        self.max_num_neighbors = max_num_neighbors
        self.handedness = handedness
        self.eps = float(eps)
        self.tol = tol
        self.return_mask = return_mask
        if rbf == "gaussian":
            centers = torch.linspace(0.0, cutoff, self.num_rbf)
            spacing = cutoff / max(self.num_rbf - 1, 1)
            self.register_buffer("rbf_centers", centers)
            self.rbf_gamma = 1.0 / (2.0 * spacing**2)
        else:
            self.register_buffer("rbf_freqs", torch.arange(1, self.num_rbf + 1) * math.pi / cutoff)
        layers: list[nn.Module] = []
        width = self.num_rbf + 2 * self.in_features
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_channels), nn.SiLU()]
            width = hidden_channels
        # no output bias: a constant in every phi_k would add the same vector sum_j u(r) x_ij / r
        # to all v_k and make the predicted vectors nearly parallel at initialisation
        layers.append(nn.Linear(width, self.dim, bias=False))
        self.phi = nn.Sequential(*layers)

    def radial_basis(self, r: Tensor) -> Tensor:
        """Radial basis ``[E, num_rbf]`` of distances ``r [E]`` (``r >= eps > 0``)."""
        if self.rbf == "gaussian":
            return torch.exp(-self.rbf_gamma * (r[:, None] - self.rbf_centers.to(r.dtype)) ** 2)
        return math.sqrt(2.0 / self.cutoff) * torch.sin(self.rbf_freqs.to(r.dtype) * r[:, None]) / r[:, None]

    def predict_vectors(self, pos: Tensor, edge_index: Tensor, h: Tensor | None = None) -> Tensor:
        """The ``d`` equivariant vectors ``v[i, k]`` before orthonormalisation.

        Shapes:
            pos ``[N, d]``, edge_index ``[2, E]``, h ``[N, F]`` -> ``[N, d, d]``
        """
        N, d = pos.shape
        src, dst = edge_index[0], edge_index[1]
        delta = pos[src] - pos[dst]
        r = torch.sqrt(delta.square().sum(1) + self.eps**2)
        feats = [self.radial_basis(r)]
        if self.in_features:
            feats += [h[dst], h[src]]
        phi = self.phi(torch.cat(feats, 1) if len(feats) > 1 else feats[0])  # [E, d]
        env = polynomial_envelope(r / self.cutoff, self.envelope_exponent)
        msg = (phi * env[:, None])[:, :, None] * (delta / r[:, None])[:, None, :]  # [E, d, d]
        return scatter_sum(msg, dst, N)

    def forward(
        self,
        pos: Tensor,
        edge_index: Tensor | None = None,
        h: Tensor | None = None,
        batch: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        _check_pos(pos, self.dim)
        param = next(self.phi.parameters())
        if pos.dtype != param.dtype:
            raise TypeError(
                f"pos: dtype {pos.dtype} does not match the module's parameters ({param.dtype}); "
                f"call .to({pos.dtype}) on the module"
            )
        if self.in_features:
            if not isinstance(h, Tensor) or h.shape != (pos.shape[0], self.in_features):
                raise ValueError(
                    f"h: expected invariant node scalars of shape [{pos.shape[0]}, {self.in_features}], "
                    f"got {None if h is None else tuple(h.shape)}"
                )
            if not bool(torch.isfinite(h).all()):
                raise ValueError("h: contains NaN or inf")
            h = h.to(pos.dtype)
        elif h is not None:
            raise ValueError("h: this module was built with in_features=0; pass h=None or set in_features")
        ties = None
        if edge_index is None and self.k is not None:  # one search gives the graph and its ties
            edge_index, ties = knn_graph_with_ties(pos, self.k, _check_batch(batch, pos.shape[0], pos.device))
        elif edge_index is None:
            edge_index = _resolve_graph(pos, None, batch, None, self.cutoff, self.max_num_neighbors)
            if self.max_num_neighbors is not None:
                # a capped radius neighbourhood decided by a distance tie is not a function of the geometry;
                # points on the cutoff sphere do not matter (the envelope vanishes there)
                ties = neighbourhood_ties(pos, r=self.cutoff, batch=batch, max_num_neighbors=self.max_num_neighbors,
                                          boundary=False)
        else:
            edge_index = _resolve_graph(pos, edge_index, batch, None, None, None)
        v = self.predict_vectors(pos, edge_index, h)
        R, degenerate = gram_schmidt_frames(
            v, handedness=self.handedness, eps=self.min_norm, tol=self.tol, return_mask=True
        )
        if ties is not None:
            degenerate = degenerate | ties
        return (R, degenerate) if self.return_mask else R

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, cutoff={self.cutoff}, in_features={self.in_features}, num_rbf={self.num_rbf}, "
            f"rbf={self.rbf!r}, handedness={self.handedness!r}"
        )
