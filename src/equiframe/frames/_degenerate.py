"""The degenerate-spectrum path of the PCA frames: axes inside a (near-)repeated eigenspace built by
Gram-Schmidt on invariantly selected points (every tied choice kept), exact for symmetric inputs.

:func:`_unique_tuple_axes` handles a batch of examples whose choices are unique (the common case);
:func:`_robust_example` handles one example with all its tied choices (symmetric inputs), see
:mod:`equiframe.frames.pca`.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .pca import Tolerances


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
    signs: Tensor,
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
            decided = canonical and float(evals[k]) > (tol.floor * scale) ** 2 and float(signs[k]) != 0
            if decided:
                choices.append([(u * signs[k])[None]])
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


def _unique_tuple_axes(
    xd: Tensor, evals: Tensor, U: Tensor, cluster_id: Tensor, signs: Tensor, *, canonical: bool, tol: Tolerances,
    max_size: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """The point-tuple axes of :func:`_tuple_axes` for a batch of degenerate examples, where they are unique.

    Inside every eigenspace of dimension ``m >= 2`` the axes are built level by level from the point of
    maximal (residual) norm; an example is handled here when that point is unique at every level (no tie
    within ``tol.point``, norm above ``tol.floor * scale``), which is what ``_tuple_axes`` would return as its
    only element. Single eigenvalues keep ``+-u_k`` (decided by ``signs`` in canonical mode, as in
    :func:`_robust_example`).

    Returns ``(rows [D, d, d], fixed [D, d], ok [D])``: the frame axes (rows), the fixed signs (``+1`` for the
    tuple axes, the decided sign or 0 for single eigenvalues) and which examples are handled.

    Shapes:
        xd: ``[D, N, d]`` centred points (zero rows = padding).
    """
    D, N, d = xd.shape
    norms_all = torch.linalg.vector_norm(xd, dim=-1)  # [D, N]
    scale = norms_all.amax(-1)  # [D]
    floor = tol.floor * scale
    rows = U.transpose(-1, -2).clone()
    fixed = torch.zeros_like(signs)
    ok = torch.ones(D, dtype=torch.bool, device=xd.device)
    nfree = torch.zeros(D, dtype=torch.long, device=xd.device)
    # cluster sizes per column, and whether a column starts its cluster
    same = cluster_id[:, :, None] == cluster_id[:, None, :]
    size = same.sum(-1)  # [D, d]
    single = size == 1
    supported = evals > floor[:, None] ** 2
    dec = single & supported & (signs != 0) if canonical else torch.zeros_like(single)
    fixed = torch.where(dec, signs, fixed)
    nfree += (single & ~dec).sum(-1)
    first = torch.ones_like(single)
    first[:, 1:] = cluster_id[:, 1:] != cluster_id[:, :-1]
    for c0 in range(d):  # clusters starting at column c0, of size m
        for m in range(2, d - c0 + 1):
            sel = (first[:, c0] & (size[:, c0] == m)).nonzero().flatten()
            if not sel.numel():
                continue
            V = U[sel][:, :, c0 : c0 + m]  # [S, d, m]
            res = xd[sel] @ V  # [S, N, m] coordinates in the eigenspace
            fl = floor[sel]
            good = torch.ones(sel.shape[0], dtype=torch.bool, device=xd.device)
            for level in range(m):
                nr = torch.linalg.vector_norm(res, dim=-1)  # [S, N]
                mx, i = nr.max(-1)
                tied = (nr >= (mx * (1 - tol.point))[:, None]).sum(-1)
                good &= (tied == 1) & (mx > fl)
                a = res[torch.arange(sel.shape[0], device=xd.device), i] / mx.clamp_min(torch.finfo(mx.dtype).tiny)[:, None]
                rows[sel, c0 + level] = (V @ a[:, :, None])[:, :, 0]
                res = res - (res @ a[:, :, None]) * a[:, None, :]
            fixed[sel, c0 : c0 + m] = 1.0
            ok[sel] &= good
    ok &= (torch.ones_like(nfree) << nfree) <= max_size
    return rows, fixed, ok
