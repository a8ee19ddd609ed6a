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

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..groups import EuclideanGroup
from .base import Frame

__all__ = ["pca_frame", "Tolerances", "covariance"]

Mode = Literal["all", "canonical", "stochastic"]


@dataclass(frozen=True)
class Tolerances:
    """Relative tolerances of the degenerate-input logic (defaults depend on the dtype).

    Attributes:
        eig: eigenvalues closer than ``eig * lambda_max`` are treated as one eigenspace.
        sign: ``|skewness|`` below this leaves an axis's sign undecided (canonical mode).
        point: candidate points whose (residual) norms agree within ``point`` (relative) are tied.
        floor: residual norms below ``floor * scale`` count as zero (a direction no point reaches).
    """

    eig: float
    sign: float
    point: float
    floor: float

    @staticmethod
    def for_dtype(dtype: torch.dtype) -> "Tolerances":
        if dtype == torch.float64:
            return Tolerances(eig=1e-6, sign=1e-6, point=1e-8, floor=1e-8)
        return Tolerances(eig=5e-3, sign=1e-2, point=1e-4, floor=1e-4)


# ----------------------------------------------------------------------------- input handling
def _check_pos(pos: Tensor, mask: Tensor | None, batch: Tensor | None, name: str = "pos"):
    if not isinstance(pos, Tensor):
        raise TypeError(f"{name}: expected a tensor, got {type(pos).__name__}")
    if not pos.is_floating_point():
        raise TypeError(f"{name}: expected a floating point tensor, got dtype {pos.dtype}")
    if batch is not None:
        if mask is not None:
            raise ValueError("mask: give either a padding mask (dense [B, N, d] input) or a batch vector, not both")
        if pos.dim() != 2:
            raise ValueError(f"{name}: with a batch vector expected [N, d] points, got shape {tuple(pos.shape)}")
        if not isinstance(batch, Tensor) or batch.dim() != 1 or batch.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"batch: expected a 1-D integer tensor, got {getattr(batch, 'shape', batch)!r}")
        if batch.shape[0] != pos.shape[0]:
            raise ValueError(f"batch: has {batch.shape[0]} entries but {name} has {pos.shape[0]} points")
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
            if mask.dtype != torch.bool or mask.shape != pos.shape[:-1]:
                raise ValueError(f"mask: expected a bool tensor of shape {tuple(pos.shape[:-1])}, got {mask.dtype} {tuple(mask.shape)}")
            empty = ~mask.reshape(-1, mask.shape[-1]).any(-1)
            if bool(empty.any()):
                raise ValueError(f"mask: example(s) {empty.nonzero().flatten().tolist()} have no valid points")
    if pos.shape[-1] < 1:
        raise ValueError(f"{name}: last dimension must be the space dimension d >= 1, got {pos.shape[-1]}")
    if not bool(torch.isfinite(pos).all()):
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


# ----------------------------------------------------------------------------- robust (degenerate) path
def _dedupe(dirs: Tensor, tol: float) -> Tensor:
    """Drop (near-)identical unit directions (an invariant operation)."""
    if dirs.shape[0] <= 1:
        return dirs
    with torch.no_grad():
        dots = dirs @ dirs.T
        dup = torch.triu(dots >= 1 - tol, diagonal=1).any(0)
    return dirs[~dup]


def _complete(axes: list[Tensor], V: Tensor, k: int) -> list[Tensor]:
    """All signed permutations of an orthonormal basis of span(V) minus span(axes) (k vectors)."""
    with torch.no_grad():
        W = V.clone()
        for a in axes:
            W = W - a.detach()[:, None] * (a.detach() @ W)[None, :]
        U, S, _ = torch.linalg.svd(W, full_matrices=False)
        basis = U[:, :k].T  # [k, d]
    out = []
    for perm in itertools.permutations(range(k)):
        for signs in itertools.product((1.0, -1.0), repeat=k):
            out.append(torch.stack([signs[i] * basis[perm[i]] for i in range(k)]))
    return out


class _Budget(Exception):
    pass


def _tuple_axes(P: Tensor, V: Tensor, tol: "Tolerances", scale: float, budget: int, generator) -> tuple[list[Tensor], bool]:
    """Invariantly selected orthonormal axes spanning span(V), from the projected points ``P [n, d]``.

    Returns a list of ``[m, d]`` row blocks (every tied choice) and whether the list is complete
    (False: too many elements, ``budget`` random walks were taken instead).
    """
    m = V.shape[1]
    floor = tol.floor * scale
    results: list[Tensor] = []

    def candidates(res: Tensor) -> Tensor | None:
        norms = torch.linalg.vector_norm(res, dim=-1)
        nd = norms.detach()
        mx = float(nd.max())
        if mx <= floor:
            return None
        idx = (nd >= mx * (1 - tol.point)).nonzero().flatten()
        return _dedupe(res[idx] / norms[idx, None], tol.point)

    def rec(res: Tensor, axes: list[Tensor]):
        if len(axes) == m:
            results.append(torch.stack(axes))
            if len(results) > budget:
                raise _Budget
            return
        dirs = candidates(res)
        if dirs is None:
            for block in _complete(axes, V, m - len(axes)):
                results.append(torch.cat([torch.stack(axes), block]) if axes else block)
                if len(results) > budget:
                    raise _Budget
            return
        for a in dirs:
            rec(res - (res @ a)[:, None] * a[None, :], axes + [a])

    try:
        rec(P, [])
        return results, True
    except _Budget:
        pass
    # Too many symmetric choices: random walks (equivariant in distribution, not exact).
    results = []
    for _ in range(budget):
        res, axes = P, []
        while len(axes) < m:
            dirs = candidates(res)
            if dirs is None:
                comp = _complete(axes, V, m - len(axes))
                j = int(torch.randint(len(comp), (1,), generator=generator))
                axes = axes + list(comp[j].unbind(0))
                break
            a = dirs[int(torch.randint(dirs.shape[0], (1,), generator=generator))]
            axes.append(a)
            res = res - (res @ a)[:, None] * a[None, :]
        results.append(torch.stack(axes))
    return results, False


def _robust_example(
    xc: Tensor,
    evals: Tensor,
    U: Tensor,
    cluster_id: Tensor,
    skew: Tensor,
    *,
    canonical: bool,
    proper: bool,
    tol: Tolerances,
    max_size: int,
    generator,
) -> tuple[Tensor, bool]:
    """All frame elements ``[m, d, d]`` of one degenerate example, and whether the set is exact."""
    scale = float(torch.linalg.vector_norm(xc.detach(), dim=-1).max()) if xc.shape[0] else 0.0
    choices: list[list[Tensor]] = []
    exact = True
    for c in range(int(cluster_id.max()) + 1):
        cols = (cluster_id == c).nonzero().flatten()
        if cols.numel() == 1:
            k = int(cols[0])
            u = U[:, k]
            decided = canonical and float(evals[k]) > (tol.floor * scale) ** 2 and abs(float(skew[k])) > tol.sign
            if decided:
                choices.append([(u * torch.sign(skew[k]))[None]])
            else:
                choices.append([u[None], -u[None]])
        else:
            V = U[:, cols].detach()
            P = xc @ (V @ V.T)
            blocks, ok = _tuple_axes(P, V, tol, scale, max_size, generator)
            exact &= ok
            choices.append(blocks)
    total = math.prod(len(c) for c in choices)
    if total <= max_size:
        Rs = [torch.cat(combo, 0) for combo in itertools.product(*choices)]
    else:
        exact = False
        Rs = []
        for _ in range(max_size):
            combo = [c[int(torch.randint(len(c), (1,), generator=generator))] for c in choices]
            Rs.append(torch.cat(combo, 0))
    R = torch.stack(Rs)
    if proper:
        det = torch.linalg.det(R.detach())
        if bool((det > 0).any()):
            R = R[det > 0]
        else:
            R = torch.cat([R[:, :-1], -R[:, -1:]], dim=1)
    return R, exact


# ----------------------------------------------------------------------------- main entry


def _sign_patterns(d: int, dtype, device) -> Tensor:
    """All ``2^d`` sign vectors ``[2^d, d]`` (the first is all +1)."""
    bits = torch.arange(2**d, device=device)[:, None] >> torch.arange(d, device=device)[None, :] & 1
    return (1 - 2 * bits).to(dtype)


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

    Returns:
        A :class:`Frame` with ``M`` elements in total.

    Shapes:
        pos: ``[B, N, d]`` | ``[N, d]``; mask: ``[B, N]``; batch: ``[N]`` -> Frame.R ``[M, d, d]``.
    """
    _check_pos(pos, mask, batch)
    if mode not in ("all", "canonical", "stochastic"):
        raise ValueError(f"mode: expected 'all', 'canonical' or 'stochastic', got {mode!r}")
    if mode == "stochastic" and (not isinstance(n_samples, int) or n_samples < 1):
        raise ValueError(f"n_samples: expected a positive integer for stochastic mode, got {n_samples!r}")
    d = pos.shape[-1]
    G = EuclideanGroup.parse(group, dim=d) if isinstance(group, str) and "(d)" in group else EuclideanGroup.parse(group)
    if G.dim != d:
        raise ValueError(f"group: {G} acts on dimension {G.dim}, but pos has dimension {d}")
    if batch is None and pos.dim() == 2:
        pos = pos[None]
        mask = mask[None] if mask is not None else None
    tol = tol or Tolerances.for_dtype(pos.dtype)
    dtype, device = pos.dtype, pos.device

    t, C, xc, counts = covariance(pos, mask=mask, batch=batch, center=G.translations)
    B = C.shape[0]
    with torch.no_grad():
        evals, U = _symeig(C.detach())
        evals, U = evals.flip(-1), U.flip(-1)  # descending
        cluster_id, degenerate = _clusters(evals, tol.eig)
    generic = ~degenerate
    if torch.is_grad_enabled() and C.requires_grad and bool(generic.any()):
        # gradients through the eigenvectors only where the gaps are large (finite by construction)
        gidx = generic.nonzero().flatten()
        ev_g, U_g = _symeig(C[gidx])
        U = U.index_put((gidx,), U_g.flip(-1))

    # skewness along each axis: only canonical mode uses it (to fix signs)
    canonical = mode == "canonical"
    lam = evals.clamp_min(0)
    if canonical:
        if batch is not None:
            proj = (xc[:, None, :].detach() @ U[batch].detach())[:, 0, :]  # [N, d]
            m3 = torch.zeros(B, d, dtype=dtype, device=device).index_add_(0, batch, proj**3)
        else:
            m3 = ((xc.detach() @ U.detach()) ** 3).sum(-2)  # padding rows are zero
        m3 = m3 / counts[:, None].to(dtype)
        skew = m3 / lam.clamp_min(torch.finfo(dtype).tiny).pow(1.5)
    else:
        skew = torch.zeros_like(lam)
    scale2 = lam[:, :1] * d  # ~ squared extent; lam_k below floor^2 * scale2 means "no support"
    supported = lam > (tol.floor**2) * scale2.clamp_min(torch.finfo(dtype).tiny)

    Rs, ids, exact_flags = [], [], torch.ones(B, dtype=torch.bool, device=device)
    # ---- generic examples: sign patterns, fully batched
    if bool(generic.any()):
        gidx = generic.nonzero().flatten()
        base = U[gidx].transpose(-1, -2)  # rows = axes
        patterns = _sign_patterns(d, dtype, device)  # [K, d]
        fixed = torch.zeros(gidx.numel(), d, dtype=dtype, device=device)
        if canonical:
            decided = supported[gidx] & (skew[gidx].abs() > tol.sign)
            fixed = torch.where(decided, torch.sign(skew[gidx]), fixed)
        valid = ((fixed[:, None, :] == 0) | (patterns[None] == fixed[:, None, :])).all(-1)  # [G, K]
        if G.proper:
            det_base = torch.linalg.det(base.detach()).sign()
            if canonical:
                # all signs decided but det = -1: flip the last axis (an SO(d)-equivariant choice)
                none_free = (fixed != 0).all(-1) & (fixed.prod(-1) * det_base < 0)
                fixed[none_free, -1] = -fixed[none_free, -1]
                valid = ((fixed[:, None, :] == 0) | (patterns[None] == fixed[:, None, :])).all(-1)
            valid = valid & (patterns.prod(-1)[None, :] * det_base[:, None] > 0)
        if mode == "stochastic":
            pick = torch.multinomial(valid.to(torch.float64).cpu(), n_samples, replacement=True, generator=generator)
            pick = pick.to(device)
            g_ex = torch.arange(gidx.numel(), device=device).repeat_interleave(n_samples)
            p_ex = pick.flatten()
        else:
            g_ex, p_ex = valid.nonzero(as_tuple=True)
        Rs.append(patterns[p_ex][:, :, None] * base[g_ex])
        ids.append(gidx[g_ex])
    # ---- degenerate examples: invariantly selected points (exact for symmetric inputs)
    if bool(degenerate.any()):
        if batch is not None:
            ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        for b in degenerate.nonzero().flatten().tolist():
            if batch is not None:
                xb = xc[int(ptr[b]) : int(ptr[b + 1])]
            else:
                xb = xc[b][mask[b]] if mask is not None else xc[b]
            R_b, ok = _robust_example(
                xb, evals[b], U[b], cluster_id[b], skew[b],
                canonical=canonical, proper=G.proper, tol=tol, max_size=max_size, generator=generator,
            )
            if mode == "stochastic":
                j = torch.randint(R_b.shape[0], (n_samples,), generator=generator).to(device)
                R_b = R_b[j]
                ok = False
            exact_flags[b] = ok
            Rs.append(R_b.to(dtype))
            ids.append(torch.full((R_b.shape[0],), b, dtype=torch.long, device=device))
    if mode == "stochastic":
        exact_flags[:] = False
    R = torch.cat(Rs)
    index = torch.cat(ids)
    order = torch.argsort(index, stable=True)
    R, index = R[order], index[order]
    sizes = torch.bincount(index, minlength=B)
    weight = (1.0 / sizes.to(dtype))[index]
    return Frame(R=R, t=t[index], index=index, weight=weight, num_examples=B, degenerate=degenerate, exact=exact_flags)
