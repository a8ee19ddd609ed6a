r"""Global PCA frames for O(d), SO(d), E(d), SE(d) (Puny et al., ICLR 2022), exact on degenerate inputs.

For a point cloud ``X`` (rows ``x_i``) the frame is built from

* the translation ``t`` = centroid (E(d), SE(d)) or ``0`` (O(d), SO(d));
* the covariance ``C = (1/n) sum_i (x_i - t)(x_i - t)^T`` and its eigenvectors ``u_1..u_d``
  sorted by decreasing eigenvalue;
* ``R = diag(s) U^T`` (rows ``s_k u_k``) for sign vectors ``s``: all ``2^d`` of them (O/E), the
  ``det R = +1`` half (SO/SE), or, in ``"canonical"`` mode, only the signs that invariant statistics
  cannot decide (the sign of the skewness ``sum_i (u_k . (x_i - t))^3`` fixes axis ``k`` when it is
  clearly non-zero; Lin et al., ICML 2024, minimal frames).

This is equivariant, ``F(gX) = g F(X)``, only when the eigenvalues are distinct. **Degenerate
spectra** (relative eigen-gap below ``eig_tol``, e.g. the corners of a cube, a square, a regular
tetrahedron, collinear points, a single point) are detected and reported in
:attr:`Frame.degenerate`, and handled exactly: inside each (near-)repeated eigenspace ``E`` the
axes are built by Gram–Schmidt on *invariantly selected points* — the first axis from the projected
points of maximal norm, the next from the points whose residual (orthogonal to the axes so far) is
maximal, and so on, with *every* tied candidate included. The resulting set of frames is
equivariant as a set, so averaging over it is exactly invariant/equivariant, and its size is the
order of the input's symmetry group (up to a factor 2), e.g. 96 for a cube's corners. Directions
that no point reaches (the normal of a planar cloud, everything for a single point) are completed
by an arbitrary orthonormal basis together with all its signed permutations, which keeps scalar,
vector and order-2 outputs exact (the backbone cannot see those directions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..groups import EuclideanGroup
from ._degenerate import _robust_example, _unique_tuple_axes
from .base import EvalMode, Frame, Frames, Mode, all_finite, check_choice, check_generator, check_positive_int
from .._checks import check_tensor

__all__ = ["pca_frame", "PCAFrames", "Tolerances", "covariance"]


@dataclass(frozen=True)
class Tolerances:
    """Relative tolerances of the degenerate-input logic (defaults depend on the dtype).

    Attributes:
        eig: eigenvalues closer than ``eig * lambda_max`` are treated as one eigenspace.
        sign: ``|skewness|`` below this leaves an axis's sign undecided (canonical mode), on top of the
            threshold derived from the rounding error of the computation (default 0: that threshold only).
        point: candidate points whose (residual) norms agree within ``point`` (relative) are tied.
        floor: residual norms below ``floor * scale`` count as zero (a direction no point reaches).
    """

    eig: float
    sign: float
    point: float
    floor: float

    def __post_init__(self):
        for name in ("eig", "sign", "point", "floor"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 <= v < 1) or math.isnan(v):
                raise ValueError(f"tol.{name}: expected a relative tolerance in [0, 1), got {v!r}")

    @staticmethod
    def for_dtype(dtype: torch.dtype) -> "Tolerances":
        if dtype == torch.float64:
            return Tolerances(eig=1e-6, sign=0.0, point=1e-8, floor=1e-8)
        return Tolerances(eig=5e-3, sign=0.0, point=1e-4, floor=1e-4)


# ----------------------------------------------------------------------------- input handling
def _check_pos(pos: Tensor, mask: Tensor | None, batch: Tensor | None, name: str = "pos"):
    if not isinstance(pos, Tensor):
        raise TypeError(f"{name}: expected a tensor, got {type(pos).__name__}")
    if pos.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name}: expected a float32 or float64 tensor, got dtype {pos.dtype}")
    if batch is not None:
        if mask is not None:
            raise ValueError("mask: give either a padding mask (dense [B, N, d] input) or a batch vector, not both")
        if pos.dim() != 2:
            raise ValueError(f"{name}: with a batch vector expected [N, d] points, got shape {tuple(pos.shape)}")
        if not isinstance(batch, Tensor) or batch.dim() != 1 or batch.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"batch: expected a 1-D integer tensor, got {getattr(batch, 'shape', batch)!r}")
        if batch.shape[0] != pos.shape[0]:
            raise ValueError(f"batch: has {batch.shape[0]} entries but {name} has {pos.shape[0]} points")
        if batch.device != pos.device:
            raise ValueError(f"batch: is on {batch.device}, but {name} is on {pos.device}")
        if pos.shape[0] == 0:
            raise ValueError(f"{name}: empty point cloud (0 points)")
        if bool((batch[1:] < batch[:-1]).any()) or int(batch[0]) < 0:
            raise ValueError("batch: must be sorted and non-negative (as PyG batches are)")
    else:
        if pos.dim() not in (2, 3):
            raise ValueError(f"{name}: expected [N, d] or [B, N, d] points, got shape {tuple(pos.shape)}")
        if pos.shape[-2] == 0 or (pos.dim() == 3 and pos.shape[0] == 0):
            raise ValueError(f"{name}: empty point cloud, shape {tuple(pos.shape)}")
        if mask is not None:
            if not isinstance(mask, Tensor):
                raise TypeError(f"mask: expected a bool tensor, got {type(mask).__name__}")
            if mask.device != pos.device:
                raise ValueError(f"mask: is on {mask.device}, but {name} is on {pos.device}")
            if mask.dtype != torch.bool or mask.shape != pos.shape[:-1]:
                raise ValueError(f"mask: expected a bool tensor of shape {tuple(pos.shape[:-1])}, got {mask.dtype} {tuple(mask.shape)}")
            empty = ~mask.reshape(-1, mask.shape[-1]).any(-1)
            if bool(empty.any()):
                raise ValueError(f"mask: example(s) {empty.nonzero().flatten().tolist()} have no valid points")
    if pos.shape[-1] < 1:
        raise ValueError(f"{name}: last dimension must be the space dimension d >= 1, got {pos.shape[-1]}")
    if not all_finite(pos):
        raise ValueError(f"{name}: contains NaN or inf")


def covariance(
    pos: Tensor, *, mask: Tensor | None = None, batch: Tensor | None = None, center: bool = True
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-example centroid and covariance.

    The centroid is accumulated in float64 (a cloud at distance 10^4 in float32 keeps its own
    precision); centred coordinates are returned in the input dtype.

    Returns:
        ``(t [B, d] float64, C [B, d, d], xc, counts [B])`` where ``xc`` are the centred points
        (``[B, N, d]`` dense, zero at padding; ``[N, d]`` ragged).
    """
    check_tensor("pos", pos, ndim=(2, 3), floating=True, finite=True, nonempty=True)
    if batch is not None:
        check_tensor("batch", batch, ndim=1, integer=True)
        if pos.dim() != 2 or batch.shape[0] != pos.shape[0]:
            raise ValueError(f"batch: expected shape [{pos.shape[0]}] for ragged pos [N, d], got {tuple(batch.shape)}")
    d = pos.shape[-1]
    p64 = pos.double()
    if batch is not None:
        B = int(batch[-1]) + 1
        counts = torch.bincount(batch, minlength=B)
        if bool((counts == 0).any()):
            raise ValueError(f"batch: example(s) {(counts == 0).nonzero().flatten().tolist()} have no points")
        if center:
            t = torch.zeros(B, d, dtype=torch.float64, device=pos.device).index_add_(0, batch, p64)
            t = t / counts[:, None]
            xc = (p64 - t[batch]).to(pos.dtype)
        else:
            t = torch.zeros(B, d, dtype=torch.float64, device=pos.device)
            xc = pos
        outer = xc[:, :, None] * xc[:, None, :]
        C = torch.zeros(B, d, d, dtype=pos.dtype, device=pos.device).index_add_(0, batch, outer)
        C = C / counts[:, None, None].to(pos.dtype)
        return t, C, xc, counts
    w = mask.to(torch.float64)[..., None] if mask is not None else None
    counts = mask.sum(-1) if mask is not None else torch.full(pos.shape[:-2], pos.shape[-2], device=pos.device)
    if center:
        s = (p64 * w).sum(-2) if w is not None else p64.sum(-2)
        t = s / counts[..., None]
        xc = p64 - t[..., None, :]
        if w is not None:
            xc = xc * w
        xc = xc.to(pos.dtype)
    else:
        t = torch.zeros(*pos.shape[:-2], d, dtype=torch.float64, device=pos.device)
        xc = pos * mask[..., None].to(pos.dtype) if mask is not None else pos
    C = xc.transpose(-1, -2) @ xc / counts[..., None, None].to(pos.dtype)
    return t, C, xc, counts


def _symeig(C: Tensor) -> tuple[Tensor, Tensor]:
    """Ascending eigenvalues and column eigenvectors (the fast closed form where available)."""
    try:
        from ..linalg import symeig  # noqa: PLC0415  (optional fast path for d = 2, 3)
    except ImportError:  # pragma: no cover - only while linalg is absent
        return torch.linalg.eigh(C)
    return symeig(C)


def _clusters(evals_desc: Tensor, tol: float) -> tuple[Tensor, Tensor]:
    """Group eigenvalues (descending, per example) into tolerance clusters.

    Returns ``cluster_id [B, d]`` (consecutive ids per example) and ``degenerate [B]``.
    """
    lam_max = evals_desc[:, :1].abs().clamp_min(torch.finfo(evals_desc.dtype).tiny)
    gaps = (evals_desc[:, :-1] - evals_desc[:, 1:]) <= tol * lam_max
    zero = evals_desc[:, :1] <= torch.finfo(evals_desc.dtype).tiny * 1e3  # all points identical
    gaps = gaps | zero
    cluster_id = torch.cat([torch.zeros_like(gaps[:, :1], dtype=torch.long), (~gaps).long().cumsum(-1)], dim=-1)
    return cluster_id, gaps.any(-1)


# ----------------------------------------------------------------------------- main entry


def pca_frame(
    pos: Tensor,
    *,
    group: "str | EuclideanGroup" = "E(3)",
    mask: Tensor | None = None,
    batch: Tensor | None = None,
    mode: Mode = "all",
    n_samples: int = 1,
    generator: torch.Generator | None = None,
    tol: Tolerances | None = None,
    max_size: int = 1024,
    name: str = "pos",
) -> Frame:
    """PCA frames of a batch of point clouds, exact on degenerate spectra.

    Args:
        pos: points, dense ``[B, N, d]`` (or ``[N, d]``, one example) or ragged ``[N, d]`` with ``batch``.
        group: ``"O(d)"``, ``"SO(d)"``, ``"E(d)"`` or ``"SE(d)"`` (or an :class:`EuclideanGroup`).
        mask: ``[B, N]`` bool, True for real points (dense input with padding).
        batch: ``[N]`` sorted example index of each point (PyG convention).
        mode: ``"all"`` (the full frame, ``2^d`` / ``2^(d-1)`` elements on generic inputs),
            ``"canonical"`` (signs fixed by skewness where decidable: 1 element on generic inputs),
            ``"stochastic"`` (``n_samples`` elements drawn uniformly from the full frame with ``generator``).
        n_samples: elements per example in stochastic mode (drawn with replacement).
        generator: random generator for stochastic mode and for oversized symmetric frames.
        tol: tolerances (default :meth:`Tolerances.for_dtype`).
        max_size: largest frame enumerated exactly for a symmetric input; beyond it ``max_size``
            elements are sampled and :attr:`Frame.exact` is False for that example.
        name: the name of ``pos`` in error messages (the caller's argument).

    Returns:
        A :class:`Frame` with ``M`` elements in total.

    Shapes:
        pos: ``[B, N, d]`` | ``[N, d]``; mask: ``[B, N]``; batch: ``[N]`` -> Frame.R ``[M, d, d]``.
    """
    pos, mask, batch, G, tol = _prepared(pos, group, mask, batch, mode, n_samples, generator, tol, max_size, name)
    d, dtype, device = pos.shape[-1], pos.dtype, pos.device
    t, xs, X, padded, counts, C = _second_moments(pos, mask, batch, G.translations)
    B = C.shape[0]
    evals, U, cluster_id, degenerate = _spectrum(C, tol)

    canonical = mode == "canonical"
    lam = evals.clamp_min(0)
    scale2 = lam[:, :1] * d  # ~ squared extent; lam_k below floor^2 * scale2 means "no support"
    supported = lam > (tol.floor**2) * scale2.clamp_min(torch.finfo(dtype).tiny)
    if canonical:  # the sign of each axis from the skewness, where it exceeds its rounding error
        with torch.no_grad():
            signs = _skew_signs(padded, X, xs, batch, counts, U.detach(), lam, tol.sign) * supported
    else:
        signs = torch.zeros_like(lam)

    exact_flags = torch.ones(B, dtype=torch.bool, device=device)
    # ---- degenerate examples whose point-tuple axes are unique (the common case): batched with the generic ones
    base, fixed, slow = _with_unique_tuple_axes(
        U.transpose(-1, -2), signs, degenerate, pos, xs, X, padded, evals, U, cluster_id,
        canonical=canonical, tol=tol, max_size=max_size)
    # ---- generic examples: sign vectors, fully batched, elements sorted by example
    batched = ~slow
    bidx = batched.nonzero().flatten() if bool(slow.any()) else None
    R_parts, ex_parts, sizes = [], [], torch.zeros(B, dtype=torch.long, device=device)
    if bidx is None or bidx.numel():
        R_g, ex = _sign_elements(base if bidx is None else base[bidx], fixed if bidx is None else fixed[bidx],
                                 proper=G.proper, mode=mode, n_samples=n_samples, generator=generator)
        ex = ex if bidx is None else bidx[ex]
        R_parts.append(R_g)
        ex_parts.append(ex)
        sizes.index_add_(0, ex, torch.ones_like(ex))
    # ---- the other degenerate examples: invariantly selected points, one at a time (exact for symmetric inputs)
    for b in slow.nonzero().flatten().tolist():
        R_b, ok = _robust_example(
            _example_points(b, batch, counts, xs, X, mask), evals[b], U[b], cluster_id[b], signs[b],
            canonical=canonical, proper=G.proper, tol=tol, max_size=max_size, generator=generator,
        )
        if mode == "stochastic":
            j = torch.randint(R_b.shape[0], (n_samples,), generator=generator).to(device)
            R_b = R_b[j]
            ok = False
        exact_flags[b] = ok
        R_parts.append(R_b.to(dtype))
        ex_parts.append(torch.full((R_b.shape[0],), b, dtype=torch.long, device=device))
        sizes[b] = R_b.shape[0]
    if mode == "stochastic":
        exact_flags[:] = False
    R, index = _by_example(R_parts, ex_parts, sizes, d, dtype, device)
    weight = (1.0 / sizes.to(dtype))[index]
    return Frame(R=R, t=t[index], index=index, weight=weight, num_examples=B, degenerate=degenerate, exact=exact_flags,
                 example_t=t)


def _prepared(pos: Tensor, group: "str | EuclideanGroup", mask: Tensor | None, batch: Tensor | None, mode: str,
              n_samples: int, generator: torch.Generator | None, tol: Tolerances | None, max_size: int,
              name: str) -> tuple[Tensor, Tensor | None, Tensor | None, EuclideanGroup, Tolerances]:
    """:func:`pca_frame`'s arguments checked, the group parsed, one example given a batch dimension and
    equal-sized ragged examples viewed as a dense batch (same frames)."""
    _check_pos(pos, mask, batch, name)
    check_choice(mode, "mode", ("all", "canonical", "stochastic"))
    if mode == "stochastic":
        check_positive_int(n_samples, "n_samples")
    check_positive_int(max_size, "max_size")
    check_generator(generator)
    if tol is not None and not isinstance(tol, Tolerances):
        raise TypeError(f"tol: expected a Tolerances or None, got {type(tol).__name__}")
    d = pos.shape[-1]
    G = _parse_euclidean(group)
    G = EuclideanGroup.parse(G, dim=d) if isinstance(G, str) else G
    if G.dim != d:
        raise ValueError(f"group: {G} acts on dimension {G.dim}, but {name} has dimension {d}")
    if batch is None and pos.dim() == 2:
        pos = pos[None]
        mask = mask[None] if mask is not None else None
    if batch is not None:
        sizes = torch.bincount(batch)
        if bool((sizes == sizes[0]).all()) and int(batch[-1]) + 1 == sizes.shape[0]:
            # equal-sized examples: the dense computation, on a view (same frames)
            pos, batch = pos.view(sizes.shape[0], int(sizes[0]), d), None
    return pos, mask, batch, G, tol or Tolerances.for_dtype(pos.dtype)


def _second_moments(pos: Tensor, mask: Tensor | None, batch: Tensor | None, translations: bool) -> tuple:
    """Centroids ``t``, the centred points in the layouts later steps read (``xs`` per point, ``X``
    component-major ``[d, N, B]`` for small clouds, ``padded`` dense), counts and the second moments ``C``.

    The centred coordinates are scaled by a power of two per example (exact): clouds near the limits of
    the format (1e19, 1e-30, subnormal) give the same frames as unit-scale ones; eigenvectors, signs and
    the point-tuple axes do not depend on the scale.
    """
    fast = batch is None and mask is None and _small(pos) and not (torch.is_grad_enabled() and pos.requires_grad)
    if fast:  # tiny clouds: component-major [d, N, B] throughout (long vector operations)
        t, X, counts = _centred_soa(pos, translations)
        return t, None, X, None, counts, _moments2(None, counts, X)
    t, xs, counts = _centred(pos, mask, batch, translations)
    scale = _pow2_scale(xs, batch, counts)
    if scale is not None:
        xs = xs * scale[0] * scale[1]
    padded = _padded(xs, batch, counts) if batch is not None else (xs, None)
    X = padded[0].detach().permute(2, 1, 0).contiguous() if padded is not None and _small(padded[0]) else None
    C = _moments2(padded[0], counts, X) if padded is not None else _moments2_ragged(xs, batch, counts)
    return t, xs, X, padded, counts, C


def _spectrum(C: Tensor, tol: Tolerances) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Descending eigenvalues, eigenvectors (columns), eigenvalue clusters and the degenerate flags of
    ``C [B, d, d]``; eigenvectors carry gradients only where the gaps are large (finite by construction)."""
    with torch.no_grad():
        evals, U = _symeig(C.detach())
        evals, U = evals.flip(-1), U.flip(-1)  # descending
        cluster_id, degenerate = _clusters(evals, tol.eig)
    generic = ~degenerate
    if torch.is_grad_enabled() and C.requires_grad and bool(generic.any()):
        gidx = generic.nonzero().flatten()
        ev_g, U_g = _symeig(C[gidx])
        U = U.index_put((gidx,), U_g.flip(-1))
    return evals, U, cluster_id, degenerate


def _with_unique_tuple_axes(base: Tensor, fixed: Tensor, degenerate: Tensor, pos: Tensor, xs: Tensor | None,
                            X: Tensor | None, padded: tuple | None, evals: Tensor, U: Tensor, cluster_id: Tensor, *,
                            canonical: bool, tol: Tolerances, max_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Axes (rows) ``base`` and decided signs ``fixed`` with the degenerate examples whose point-tuple axes
    are unique filled in, and ``slow``: the degenerate examples left for :func:`_robust_example`."""
    slow = degenerate
    if not bool(degenerate.any()) or (torch.is_grad_enabled() and (xs if xs is not None else pos).requires_grad):
        return base, fixed, slow
    didx = degenerate.nonzero().flatten()
    if X is not None:
        xd = X[:, :, didx].permute(2, 1, 0)
    elif padded is not None:
        xd = padded[0][didx]
    else:
        return base, fixed, slow
    with torch.no_grad():
        rows, fx, ok = _unique_tuple_axes(xd.detach(), evals[didx], U[didx], cluster_id[didx], fixed[didx],
                                          canonical=canonical, tol=tol, max_size=max_size)
    if bool(ok.any()):
        fast_idx = didx[ok]
        base = base.clone()
        base[fast_idx] = rows[ok].to(base.dtype)
        fixed = fixed.clone()
        fixed[fast_idx] = fx[ok]
        slow = degenerate.clone()
        slow[fast_idx] = False
    return base, fixed, slow


def _example_points(b: int, batch: Tensor | None, counts: Tensor, xs: Tensor | None, X: Tensor | None,
                    mask: Tensor | None) -> Tensor:
    """The centred points ``[n_b, d]`` of example ``b`` from whichever layout holds them."""
    if batch is not None:
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return xs[int(ptr[b]) : int(ptr[b + 1])]
    if xs is None:
        return X[:, :, b].T
    return xs[b][mask[b]] if mask is not None else xs[b]


def _by_example(R_parts: list[Tensor], ex_parts: list[Tensor], sizes: Tensor, d: int, dtype: torch.dtype,
                device: torch.device) -> tuple[Tensor, Tensor]:
    """The frame elements of all parts placed at their examples' slots (elements sorted by example)."""
    if len(R_parts) == 1:
        return R_parts[0], ex_parts[0]
    ptr = sizes.cumsum(0) - sizes
    M = int(sizes.sum())
    R = torch.empty(M, d, d, dtype=dtype, device=device)
    index = torch.repeat_interleave(torch.arange(sizes.shape[0], device=device), sizes, output_size=M)
    for R_p, ex_p in zip(R_parts, ex_parts):
        first = torch.ones_like(ex_p, dtype=torch.bool)
        first[1:] = ex_p[1:] != ex_p[:-1]
        start = torch.arange(ex_p.shape[0], device=device)
        j = start - torch.cummax(torch.where(first, start, torch.zeros_like(start)), 0).values
        R = R.index_put((ptr[ex_p] + j,), R_p)
    return R, index


def _centred(pos: Tensor, mask: Tensor | None, batch: Tensor | None, center: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(t [B, d] float64, xc, counts [B])``: centroids and centred points in the input dtype.

    The centroid is ``x_0 + mean(x - x_0)`` with ``x_0`` the first point of each example: ``x - x_0`` is
    exact for a cloud far from the origin (Sterbenz) and the mean is accumulated in float64, so the
    centred points keep the precision of the input without converting the cloud to float64.
    """
    d = pos.shape[-1]
    if batch is not None:
        B = int(batch[-1]) + 1
        counts = torch.bincount(batch, minlength=B)
        if bool((counts == 0).any()):
            raise ValueError(f"batch: example(s) {(counts == 0).nonzero().flatten().tolist()} have no points")
        if not center:
            return torch.zeros(B, d, dtype=torch.float64, device=pos.device), pos, counts
        ptr = counts.cumsum(0) - counts
        x0 = pos[ptr]
        shifted = pos - x0[batch]
        m = torch.zeros(B, d, dtype=torch.float64, device=pos.device).index_add_(0, batch, shifted.double())
        m = m / counts[:, None]
        return x0.double() + m, shifted - m.to(pos.dtype)[batch], counts
    counts = mask.sum(-1) if mask is not None else torch.full(pos.shape[:-2], pos.shape[-2], device=pos.device)
    if not center:
        t = torch.zeros(*pos.shape[:-2], d, dtype=torch.float64, device=pos.device)
        return t, (pos * mask[..., None].to(pos.dtype) if mask is not None else pos), counts
    first = mask.to(torch.int8).argmax(-1) if mask is not None else torch.zeros(pos.shape[:-2], dtype=torch.long, device=pos.device)
    x0 = torch.gather(pos, -2, first[..., None, None].expand(*pos.shape[:-2], 1, d))  # [B, 1, d]
    shifted = pos - x0
    if mask is not None:
        shifted = shifted * mask[..., None].to(pos.dtype)
    acc = torch.float64 if pos.shape[-2] > _SMALL or pos.device.type != "cpu" else pos.dtype
    m = shifted.sum(-2, dtype=acc).double() / counts[..., None]
    xc = shifted - m.to(pos.dtype)[..., None, :]
    if mask is not None:
        xc = xc * mask[..., None].to(pos.dtype)
    return x0[..., 0, :].double() + m, xc, counts


def _pow2_scale(xc: Tensor, batch: Tensor | None, counts: Tensor) -> "tuple[Tensor, Tensor] | None":
    """Per-example power of two ``2^-e`` that brings ``max |xc|`` into ``[0.5, 1)`` (1 for an all-zero example),
    as two factors shaped to multiply ``xc`` (multiplying by them is exact); None when every example is
    already in a safe range."""
    with torch.no_grad():
        a = xc.detach().abs()
        if batch is not None:
            mx = torch.zeros(counts.shape[0], dtype=xc.dtype, device=xc.device).scatter_reduce_(
                0, batch, a.amax(-1), "amax", include_self=True)
        else:
            mx = a.amax((-1, -2))
        _, e = torch.frexp(mx)
        e = torch.where(mx > 0, e, torch.zeros_like(e))
        safe = 30 if xc.dtype != torch.float64 else 200  # |x|^4 (fourth moments) stays finite and normal
        if bool(((e.abs() <= safe) | (mx == 0)).all()):
            return None
        f1, f2 = _pow2_factors(e, mx)
    if batch is not None:
        return f1[batch][:, None], f2[batch][:, None]
    return f1[..., None, None], f2[..., None, None]


def _padded(xs: Tensor, batch: Tensor, counts: Tensor) -> "tuple[Tensor, Tensor] | None":
    """Ragged points ``[N, d]`` as a zero-padded ``[B, Nmax, d]`` batch and each point's flat position in it,
    or None when padding would more than double the size."""
    B, N = counts.shape[0], xs.shape[0]
    n_max = int(counts.max())
    if B * n_max > 2 * N:
        return None
    if B == 1:
        return xs[None], None
    ptr = counts.cumsum(0) - counts
    flat = batch * n_max + (torch.arange(N, device=xs.device) - ptr[batch])
    out = xs.new_zeros(B * n_max, xs.shape[-1]).index_copy(0, flat, xs)
    return out.view(B, n_max, -1), flat


_SMALL = 16  # clouds of at most this many points (dense, CPU) use the component-major layout


def _small(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dim() == 3 and x.shape[-2] <= _SMALL


def _centred_soa(pos: Tensor, center: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(t [B, d] float64, X [d, N, B], counts [B])``: the centred points of tiny dense clouds, component-major,
    scaled per example by a power of two (exact) when an example is outside the safe range (see :func:`_pow2_scale`)."""
    B, N, d = pos.shape
    counts = torch.full((B,), N, device=pos.device)
    X = torch.empty(d, N, B, dtype=pos.dtype, device=pos.device)
    if center:
        x0 = pos[:, :1, :]  # x - x_0 is exact for a cloud far from the origin
        torch.sub(pos.permute(2, 1, 0), x0.permute(2, 1, 0), out=X)
        m = X.sum(1) / N  # [d, B]; N <= _SMALL terms: accumulated in the input dtype
        X -= m[:, None, :]
        t = x0[:, 0, :].double() + m.T.double()
    else:
        X.copy_(pos.permute(2, 1, 0))
        t = torch.zeros(B, d, dtype=torch.float64, device=pos.device)
    mx = X.abs().amax((0, 1))
    _, e = torch.frexp(mx)
    safe = 30 if pos.dtype != torch.float64 else 200
    if not bool(((e.abs() <= safe) | (mx == 0)).all()):
        for f in _pow2_factors(torch.where(mx > 0, e, torch.zeros_like(e)), mx):
            X *= f
    return t, X, counts


def _pow2_factors(e: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """``2^-e`` as two factors of the dtype of ``like`` (one factor could overflow: 2^149 for subnormal float32)."""
    half = torch.div(-e, 2, rounding_mode="floor")
    one = torch.ones_like(like)
    return torch.ldexp(one, half), torch.ldexp(one, -e - half)


def _moments2(xs: Tensor | None, counts: Tensor, X: Tensor | None) -> Tensor:
    """Second moments ``C = (1/n) sum_i x_i x_i^T`` ``[B, d, d]`` of dense (zero-padded) points, in their dtype.

    ``X``: the same points component-major ``[d, N, B]`` (tiny clouds: long vector operations instead of a
    batched matmul of tiny matrices), or None."""
    if X is not None and (xs is None or not xs.requires_grad):
        d = X.shape[0]
        C = X.new_empty(d, d, X.shape[-1])
        for i in range(d):
            for j in range(i, d):
                C[i, j] = (X[i] * X[j]).sum(0)
                C[j, i] = C[i, j]
        C = C.permute(2, 0, 1)
    else:
        C = xs.transpose(-1, -2) @ xs
    return C / counts.reshape(-1, 1, 1).to(C.dtype)


def _moments2_ragged(xs: Tensor, batch: Tensor, counts: Tensor) -> Tensor:
    outer = xs[:, :, None] * xs[:, None, :]
    d = xs.shape[-1]
    C = torch.zeros(counts.shape[0], d, d, dtype=xs.dtype, device=xs.device).index_add_(0, batch, outer)
    return C / counts[:, None, None].to(xs.dtype)


def _project_soa(X: Tensor, U: Tensor) -> Tensor:
    """``P[k] = sum_c U[:, c, k] X[c]``: coordinates along the eigenvectors, component-major ``[d, N, B]``."""
    d = X.shape[0]
    Uc = U.to(X.dtype).permute(1, 2, 0)  # [d (c), d (k), B]
    P = torch.empty_like(X)
    for k in range(d):
        torch.mul(X[0], Uc[0, k], out=P[k])
        for c in range(1, d):
            P[k].addcmul_(X[c], Uc[c, k])
    return P


def _skew_moments(padded, X: Tensor | None, xs: Tensor | None, batch: Tensor | None, counts: Tensor, U: Tensor,
                  mixed: bool):
    """``(p, m3 [B, d], m4 [B, d], M [B, d, d] | None)`` in float64 for ``p = x U`` (see :func:`_skew_signs`);
    the mixed moments ``M`` only when ``mixed``."""
    B, d = U.shape[0], U.shape[-1]
    n = counts.to(torch.float64)[:, None]
    M = None
    if X is not None:  # component-major: sums over the points (dim 1) of [d, N, B]
        P = _project_soa(X, U)
        P2 = P * P
        acc = torch.float64 if X.shape[1] > _SMALL else X.dtype
        m3 = (P2 * P).sum(1, dtype=acc).T.double()
        m4 = (P2 * P2).sum(1, dtype=acc).T.double()
        if mixed:
            M = torch.stack([(P2[k][None] * P).sum(1, dtype=acc) for k in range(d)]).permute(2, 0, 1).double()
    elif padded is not None:
        p = padded[0] @ U.to(padded[0].dtype)
        p2 = p * p
        m3 = (p2 * p).sum(-2, dtype=torch.float64)
        m4 = (p2 * p2).sum(-2, dtype=torch.float64)
        if mixed:
            M = p2.transpose(-1, -2).double() @ p.double()
    else:
        p = (xs[:, None, :] @ U[batch].to(xs.dtype))[:, 0, :]
        p2 = p * p

        def z(v):
            return torch.zeros(B, *v.shape[1:], dtype=torch.float64, device=p.device).index_add_(0, batch, v.double())

        m3, m4 = z(p2 * p), z(p2 * p2)
        if mixed:
            M = z(p2[:, :, None] * p[:, None, :])
    return m3 / n, m4 / n, (M / n[..., None] if M is not None else None)


def _skew_signs(padded, X, xs: Tensor | None, batch: Tensor | None, counts: Tensor, U: Tensor, lam: Tensor,
                floor: float) -> Tensor:
    r"""The sign of the skewness of every axis where it is decided, ``[B, d]`` in ``{-1, 0, +1}``.

    With ``p_ik = u_k . x_i`` (centred, scaled points), the third moment ``m3_k = (1/n) sum_i p_ik^3`` is
    accumulated in float64 (tiny clouds: in the input dtype, with its accumulation error in the bound) and
    compared with a bound on its rounding error, so that the decision is the same for ``X`` and any ``g X``
    (an equivariant choice) whenever it is made:

    .. math::  |\delta m3_k| \le 3 \sum_{j \ne k} \frac{\delta C}{|\lambda_k - \lambda_j|} (|M_{kj}| + \epsilon_M)
               + 3 \epsilon \sqrt{m4_k\, \mathrm{tr}\,C} + (4 + n_a) \epsilon \sqrt{\lambda_k m4_k},

    with ``epsilon`` the unit rounding of the dtype, ``delta C = 4 epsilon (tr C + lambda_1)`` (rounding of the
    input, of the products and of the eigen-solver), ``M_kj = (1/n) sum_i p_ik^2 p_ij`` the mixed moments
    (how an error in ``u_k`` towards ``u_j`` moves ``m3_k``; first bounded by ``sqrt(m4_k lambda_j)``, computed
    only for the examples that this bound leaves undecided), ``m4_k`` the fourth moment, ``n_a`` the number of
    terms accumulated in the input dtype (0 in float64). An axis is decided when ``|m3_k|`` exceeds twice that
    bound (and ``floor * lambda_k^1.5``, ``floor`` = :attr:`Tolerances.sign`).
    """
    dtype = X.dtype if X is not None else xs.dtype
    eps = torch.finfo(dtype).eps
    m3, m4, _ = _skew_moments(padded, X, xs, batch, counts, U, mixed=False)
    n_acc = X.shape[1] if X is not None and X.shape[1] <= _SMALL else 0
    # the bound is arithmetic on [B, d] and [B, d, d]: in the dtype of the eigenvalues (its own rounding is
    # far below the factor 2 of safety)
    work = lam.dtype
    m3, m4, lam_ = m3.to(work), m4.to(work), lam.to(work)
    tr = lam_.sum(-1, keepdim=True)
    dC = 4 * eps * (tr + lam_[:, :1])  # [B, 1]
    gaps = (lam_[:, :, None] - lam_[:, None, :]).abs_()
    gaps.diagonal(dim1=-2, dim2=-1).fill_(float("inf"))
    coef = dC[..., None] / gaps.clamp_min_(torch.finfo(work).tiny)  # [B, d, d], 0 on the diagonal
    S0 = coef.sum(-1)
    sq_m4 = m4.sqrt()
    spread = sq_m4 * tr.sqrt()
    eps_m = (coef.amax(-1) + (n_acc + 2) * eps) * spread  # error of the mixed moments themselves
    rest = 3 * eps * spread + (4 + n_acc) * eps * lam_.sqrt() * sq_m4 + 3 * eps_m * S0
    floor_k = floor * lam_.pow(1.5) if floor > 0 else None
    # Cauchy-Schwarz: |M_kj| <= sqrt(m4_k m2_j)
    loose = 3 * (1 + 1e-5) * sq_m4 * (coef * lam_.sqrt()[:, None, :]).sum(-1) + rest
    thr = 2 * loose if floor_k is None else torch.maximum(2 * loose, floor_k)
    decided = m3.abs() > thr
    todo = (~decided).any(-1).nonzero().flatten()
    if todo.numel():  # the mixed moments, for the examples the loose bound leaves undecided
        if X is not None:
            _, _, M = _skew_moments(None, X[:, :, todo], None, None, counts[todo], U[todo], mixed=True)
        elif padded is not None:
            _, _, M = _skew_moments((padded[0][todo], None), None, None, None, counts[todo], U[todo], mixed=True)
        else:
            M = _skew_moments(None, None, xs, batch, counts, U, mixed=True)[2][todo]
        exact = 3 * (coef[todo] * M.abs().to(work)).sum(-1) + rest[todo]
        thr_t = 2 * exact if floor_k is None else torch.maximum(2 * exact, floor_k[todo])
        decided[todo] = m3[todo].abs() > thr_t
    return torch.where(decided, m3.sign(), torch.zeros_like(m3)).to(lam.dtype)


def _sign_elements(
    base: Tensor, fixed: Tensor, *, proper: bool, mode: str, n_samples: int, generator
) -> tuple[Tensor, Tensor]:
    """Frame elements ``diag(s) base`` of generic examples for the admissible sign vectors ``s``.

    ``fixed [G, d]`` holds the decided signs (0 = free). Every example gets the ``2^f`` sign vectors over
    its ``f`` free axes (SO(d)/SE(d): the ``det = +1`` half, the last free sign completing the
    determinant; with no free axis and ``det = -1`` the last axis is flipped, an SO(d)-equivariant choice);
    stochastic mode draws ``n_samples`` of them uniformly. Returns ``(R [M, d, d], example [M])``, sorted
    by example.
    """
    G, d = fixed.shape
    device = base.device
    free = fixed == 0
    nfree = free.sum(-1)
    det_base = torch.linalg.det(base.detach()).sign() if proper else None
    enum_free = (nfree - 1).clamp_min(0) if proper else nfree  # free signs enumerated (SO: the last one completes det)
    count = torch.ones_like(nfree) << enum_free
    if mode == "stochastic":
        ex = torch.arange(G, device=device).repeat_interleave(n_samples)
        u = torch.rand(G * n_samples, generator=generator, dtype=torch.float64,
                       device=generator.device if generator is not None else torch.device("cpu")).to(device)
        j = (u * count[ex]).long().clamp_max(count[ex] - 1)
    elif bool((count == 1).all()):
        ex, j = None, None
    else:
        ex = torch.arange(G, device=device).repeat_interleave(count)
        j = torch.arange(ex.shape[0], device=device) - (count.cumsum(0) - count)[ex]
    s = fixed.clone() if ex is None else fixed[ex]
    # rows with free axes (few in canonical mode): signs from the bits of j, SO(d): completed determinant
    rows = (nfree > 0) if ex is None else (nfree[ex] > 0)
    if proper:
        rows = rows | (((fixed.prod(-1) if ex is None else s.prod(-1)) * (det_base if ex is None else det_base[ex])) < 0)
    r = rows.nonzero().flatten()
    if r.numel():
        er = r if ex is None else ex[r]
        jr = torch.zeros_like(r) if j is None else j[r]
        f = free[er]
        rank = f.long().cumsum(-1) - 1  # rank of each free axis among the free axes
        bit = (jr[:, None] >> rank.clamp_min(0)) & 1
        sr = torch.where(f, (1 - 2 * bit).to(fixed.dtype), fixed[er])
        if proper:
            last_free = f & (rank == (nfree[er] - 1)[:, None])
            # sign that makes det(diag(s) base) = +1, put on the last free axis, or on the last axis if none is free
            others = torch.where(last_free, torch.ones_like(sr), sr).prod(-1) * det_base[er]
            sr = torch.where(last_free, others[:, None].expand_as(sr), sr)
            wrong = ~(nfree[er] > 0) & (sr.prod(-1) * det_base[er] < 0)
            sr[wrong, -1] = -sr[wrong, -1]
        s[r] = sr
    if ex is None:
        return s[:, :, None] * base, torch.arange(G, device=device)
    return s[:, :, None] * base[ex], ex


def _parse_euclidean(group, name: str = "group") -> "EuclideanGroup | str":
    """An :class:`EuclideanGroup`, or the normalised spelling ``"E(d)"`` of a dimension-generic group."""
    if isinstance(group, EuclideanGroup):
        return group
    if not isinstance(group, str):
        raise TypeError(f"{name}: expected a group name like 'E(3)' or an EuclideanGroup, got {type(group).__name__}")
    text = group.replace(" ", "")
    if "(d)" in text:
        EuclideanGroup.parse(text, dim=2)  # validate the name
        return text
    return EuclideanGroup.parse(group)


class PCAFrames(Frames):
    """PCA frames of point clouds for O(d), SO(d), E(d), SE(d): a frame constructor object.

    Calling it is :func:`pca_frame` with these options; :class:`~equiframe.FrameAveraging` takes it
    as ``frames=``. See :func:`pca_frame` for the construction (centroid, covariance, eigenvectors,
    signs; exact on degenerate spectra).

    Args:
        group: ``"O(d)"``, ``"SO(d)"``, ``"E(d)"``, ``"SE(d)"`` for a concrete ``d`` (``"E(3)"``), an
            :class:`~equiframe.groups.EuclideanGroup`, or a literal ``d`` (``"E(d)"``: read from the data).
        mode, n_samples, eval_mode, generator, max_size: see :class:`~equiframe.frames.Frames`.
        tol: tolerances of the degenerate-input logic (default :meth:`Tolerances.for_dtype`).

    Example:
        >>> import torch
        >>> pos = torch.randn(2, 50, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([3.0, 2.0, 1.0])
        >>> frames = PCAFrames("E(3)", mode="canonical")
        >>> frame = frames(pos)                    # pos [B, N, 3] -> Frame with 1 element per generic cloud
        >>> frame.R.shape[0]                       # one element for each of the 2 clouds
        2

    Shapes:
        pos: ``[B, N, d]`` | ``[N, d]``; mask: ``[B, N]``; batch: ``[N]`` -> Frame.R ``[M, d, d]``.
    """

    def __init__(
        self,
        group: "str | EuclideanGroup" = "E(3)",
        mode: Mode = "all",
        *,
        n_samples: int = 1,
        eval_mode: EvalMode = "all",
        generator: torch.Generator | None = None,
        tol: "Tolerances | None" = None,
        max_size: int = 1024,
    ):
        super().__init__(mode, n_samples=n_samples, eval_mode=eval_mode, generator=generator, max_size=max_size)
        self.group = _parse_euclidean(group)
        if tol is not None and not isinstance(tol, Tolerances):
            raise TypeError(f"tol: expected a Tolerances or None, got {type(tol).__name__}")
        self.tol = tol

    def group_for(self, dim: int, name: str = "pos") -> EuclideanGroup:
        """The concrete group acting on ``dim``-dimensional data (an error naming ``name`` if it does not fit)."""
        if isinstance(self.group, EuclideanGroup):
            if self.group.dim != dim:
                raise ValueError(f"{name}: data has dimension {dim}, but group is {self.group}")
            return self.group
        if dim < 1:
            raise ValueError(f"{name}: expected points with a last dimension d >= 1, got {dim}")
        return EuclideanGroup.parse(self.group, dim=dim)

    def __call__(
        self, pos: Tensor, *, mask: Tensor | None = None, batch: Tensor | None = None, training: bool = False,
        name: str = "pos",
    ) -> Frame:
        """The frame of ``pos`` in the mode for ``training`` (see :meth:`current_mode`)."""
        if not isinstance(pos, Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(pos).__name__}")
        G = self.group_for(pos.shape[-1] if pos.dim() >= 1 else 0, name)
        return pca_frame(
            pos, group=G, mask=mask, batch=batch, mode=self.current_mode(training), n_samples=self.n_samples,
            generator=self.generator, tol=self.tol, max_size=self.max_size, name=name,
        )
