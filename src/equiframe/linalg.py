"""Fast batched symmetric eigen-decomposition of small matrices (PCA frames of point clouds).

:func:`symeig` follows exactly the conventions of :func:`torch.linalg.eigh`: eigenvalues in
ascending order, unit eigenvectors in the COLUMNS of the returned matrix. Only the symmetric part
``(C + C^T) / 2`` of the input is used (the input is assumed symmetric; an asymmetric input is
silently symmetrised).

For ``d = 2`` and ``d = 3`` a closed-form, branch-free batched solver written with plain tensor
operations is used (no Python loop over matrices). float64 input is solved in float64. float32
input is solved in two passes: a float32 pass over all matrices, then the few matrices whose
smallest relative eigenvalue gap ``min_k (lambda_{k+1} - lambda_k) / max_k |lambda_k|`` is at most
``_REFINE_GAP = 0.03`` (where float32 rounding inside the solver would rotate the eigenvectors of
the nearly repeated pair by up to ``~2e-7 / gap``), or whose entries are outside the safe float32
range, are solved again in float64 from the original entries. So for float32 input it is *more*
accurate than :func:`torch.linalg.eigh` in float32: the eigenvectors match float64 ``eigh`` of the
same matrix to a few ``1e-6`` on generic input (``2e-7 / 0.03`` at worst) and to about
``1e-7 + 1e-16 / gap`` on nearly repeated eigenvalues (``eigh`` in float32: ``1e-7 / gap``, up to
O(1)); residuals and orthonormality are at float32 rounding. On CPU it is about 10x faster than
:func:`torch.linalg.eigh` for batches of 1e5 - 1e6 matrices (measured on a busy 2-core machine,
see ``benchmarks/results/eigh.md``). Other ``d`` use :func:`torch.linalg.eigh`.

Algorithm for ``d = 3`` (every step is vectorised over the batch):

1. ``A = (C + C^T) / 2``; for float64 input ``A`` is scaled by its largest entry (not needed in
   the float32 pass, which flags out-of-range matrices for the float64 pass, nor for float32
   input solved in float64);
2. shift by the mean eigenvalue and normalise: ``B = (A - m I) / p`` with ``m = tr(A) / 3`` and
   ``p^2 = ||A - m I||_F^2 / 6``. The eigenvalues ``beta`` of ``B`` satisfy ``sum beta = 0`` and
   ``sum beta^2 = 6``, so they lie in ``[-2, 2]``;
3. the eigenvalue farthest from the other two (the *isolated* one) is
   ``beta_0 = sign(r) 2 cos(arccos(|r|) / 3)``, ``r = det(B) / 2``; it is computed as the largest
   root of ``beta^3 - 3 beta - 2 |r| = 0`` by a cubic polynomial fit plus two Newton steps
   (one in float32; cheaper than ``arccos``/``cos``). Its distance to the other two eigenvalues is at least
   ``sqrt(3)``, so it is always well conditioned, whatever the other two do;
4. its eigenvector ``v_0`` is the column of ``adj(B - beta_0 I)`` with the largest diagonal entry
   (the columns of the adjugate are the cross products of the rows of ``B - beta_0 I``; the chosen
   one has norm ``>= sqrt(3)``, so there is no cancellation);
5. an orthonormal basis ``(u, w)`` of ``v_0^perp`` (branch-free construction of Duff et al.,
   "Building an orthonormal basis, revisited", JCGT 2017); the restriction of ``B`` to that plane
   ``[[a, b], [b, c]]`` (``a = u.Bu``, ``b = w.Bu``, ``c = -beta_0 - a``) is diagonalised exactly by
   one Jacobi rotation ``t = b / (d + sign(d) hypot(d, b))``, ``d = (a - c) / 2``, with eigenvalues
   ``a + t b``, ``c - t b`` and eigenvectors ``(u + t w, w - t u) / sqrt(1 + t^2)``. A Jacobi
   rotation is accurate for any gap including 0, which is what keeps the (nearly) repeated pair
   accurate where the plain trigonometric/cross-product formulas fail;
6. eigenvalues are mapped back as ``lambda = m + p beta`` (times the scale) and ordered by
   construction; eigenvectors ``(v_0, .., ..)`` are orthonormal by construction.

Gradients: :func:`symeig` is differentiable, also twice, through a custom autograd function whose
backward is the standard formula
``grad_C = sym(V (diag(g_lambda) + F o (V^T g_V)) V^T)``, ``F_ij = 1 / (lambda_j - lambda_i)``
(``sym(X) = (X + X^T) / 2``), except that ``F_ij = 0`` for (nearly) tied pairs
``|lambda_j - lambda_i| <= tie_tol * max_k |lambda_k|``. At a tie the individual eigenvectors are
not differentiable (not even unique); the returned gradient is the gradient of the well-defined
part (eigenvalues, and the eigenvector directions relative to the other, separated eigenvalues)
and is always finite.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = ["symeig", "eigen_gaps"]

Method = Literal["auto", "closed_form", "torch"]
_METHODS = ("auto", "closed_form", "torch")

# matrices per chunk of the closed-form solver on CPU: the temporaries stay in cache, the cost of
# launching ~140 small operations per chunk is amortised, and every operation (at most 3 * 10922
# elements) stays below torch's intra-op parallelisation grain size (32768)
_CPU_CHUNK = 10922

# coefficients c0..c3 of a cubic fit of 2 cos(arccos(x) / 3) on [0, 1] (max error 1.4e-4); two
# Newton steps on beta^3 - 3 beta - 2 x = 0 then give 4e-16. (One step, 1.6e-8, would do for the
# normwise accuracy of float32 output, but the rotation within a nearly repeated pair is as
# sensitive to beta_0 as to the matrix itself: full float64 accuracy keeps the eigenvectors of
# float32 input accurate to ~1e-16 / gap.)
_BETA_FIT = (1.73218508, 0.3304292, -0.08126068, 0.01874886)

# float32 main pass: a matrix whose smallest relative eigenvalue gap
# min_k (lambda_{k+1} - lambda_k) / max_k |lambda_k| is at most this is re-solved in float64. The
# float32 pass loses about 3.4 * 2^-24 / gap in its eigenvectors (measured on 10^6 covariances:
# max error * gap = 2.0e-7), so every returned eigenvector is within ~7e-6 of float64 eigh; for
# covariances of generic point clouds about 4 % of the matrices are re-solved.
_REFINE_GAP = 0.03


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------


def _check_matrix(C: Tensor) -> None:
    if not isinstance(C, Tensor):
        raise TypeError(f"C: expected a torch.Tensor, got {type(C).__name__}")
    if C.ndim < 2:
        raise ValueError(f"C: expected a tensor of shape [..., d, d] (ndim >= 2), got shape {tuple(C.shape)}")
    if C.shape[-1] != C.shape[-2]:
        raise ValueError(f"C: expected square matrices [..., d, d], got shape {tuple(C.shape)}")
    if C.shape[-1] == 0:
        raise ValueError(f"C: expected matrices of size d >= 1, got shape {tuple(C.shape)}")
    if not C.is_floating_point():
        raise ValueError(f"C: expected a real floating dtype (float32 or float64), got {C.dtype}")


def _not_finite_error() -> ValueError:
    return ValueError("C: contains NaN or inf")


def _compute_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """Main-pass dtype of the closed form: float64 for float64 input, float32 otherwise.

    float32 (and float16 / bfloat16) input runs the main pass in float32 and re-solves the few
    ill-conditioned matrices in float64 (see :func:`_closed_form`); MPS has no float64 at all.
    """
    return torch.float64 if dtype == torch.float64 and device.type != "mps" else torch.float32


def _can_refine(device: torch.device) -> bool:
    return device.type != "mps"


# ----------------------------------------------------------------------------------------------
# closed-form kernels on one chunk (structure-of-arrays: one row per matrix entry)
# ----------------------------------------------------------------------------------------------


# order of the SoA rows: the unique entries of C (diagonal, then upper triangle), then the lower
# triangle partners of the off-diagonal entries (used to symmetrise)
_ROWS = {3: (0, 4, 8, 1, 2, 5, 3, 6, 7), 2: (0, 3, 1, 2)}


def _to_soa(x: Tensor, X: Tensor) -> None:
    """Transposed copy ``X[r] = x[:, _ROWS[d][r]]`` (with dtype conversion) of a chunk ``x [n, d*d]``."""
    d = 3 if x.shape[1] == 9 else 2
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        xt, Xn = x.numpy().T, X.numpy()  # numpy's strided copies are much faster than torch's here
        if d == 3:
            Xn[0:3] = xt[0::4]
            Xn[3:5] = xt[1:3]
            Xn[5] = xt[5]
            Xn[6] = xt[3]
            Xn[7:9] = xt[6:8]
        else:
            Xn[0:2] = xt[0::3]
            Xn[2:4] = xt[1:3]
    else:
        X.copy_(x.t()[list(_ROWS[d])])


def _from_soa(L: Tensor, E: Tensor, evals: Tensor, evecs: Tensor) -> None:
    """Transposed copy of the result rows ``L [d, n]``, ``E [d*d, n]`` into ``evals [n, d]``, ``evecs [n, d*d]``."""
    if L.device.type == "cpu" and evals.dtype in (torch.float32, torch.float64):
        # (eigenvalues beyond the float32 range become inf, as in a torch cast, without a warning)
        with np.errstate(over="ignore"):
            evals.numpy()[...] = L.numpy().T
        evecs.numpy()[...] = E.numpy().T
    else:
        evals.copy_(L.t())
        evecs.copy_(E.t())


class _Workspace:
    """Preallocated buffers and precomputed views of the closed-form solver (one per call).

    Every temporary of the kernels lives here (operations write with ``out=`` or in place): on
    CPU, allocating and freeing many medium-size temporaries per chunk makes the C allocator return
    memory to the OS and page-fault it back, which costs more than the arithmetic. The views are
    created once because with ~130 small operations per chunk the Python-side cost of creating
    them is not negligible either.

    Shapes:
        X: ``[d*d, n]``, stg: ``[3, n]`` (d = 3) or ``[6, n]`` (d = 2), R: ``[12, n]``;
        d = 3: V: ``[6, 3, n]``
    """

    def __init__(self, X: Tensor, stg: Tensor, R: Tensor, V: Tensor | None, ok_tmp: Tensor) -> None:
        self.X, self.stg, self.R, self.V = X, stg, R, V
        self.ok_tmp = ok_tmp  # bool scratch row
        self.L, self.E = stg[:2], stg[2:]  # d = 2 (d = 3: see below)
        dt, dev = X.dtype, X.device
        self.r = R.unbind(0)
        self.one = torch.ones((), dtype=dt, device=dev)
        self.minus3 = torch.full((), -3.0, dtype=dt, device=dev)
        self.tiny = torch.full((), torch.finfo(dt).tiny, dtype=dt, device=dev)
        # polynomial fit of beta(x2) with x2 = 2 |r| = |det B| in [0, 2]: coefficients c_k / 2^k
        self.c = [torch.full((), c / 2.0**k, dtype=dt, device=dev) for k, c in enumerate(_BETA_FIT)]
        if V is None:
            return
        self.D, self.O, self.F = X[:3], X[3:6], X[6:]
        self.b = (*self.D.unbind(0), *self.O.unbind(0))
        self.f = self.F.unbind(0)
        self.col = V[:3].unbind(0)
        self.c_ = [list(c.unbind(0)) for c in self.col]
        self.v0, self.U, self.W = V[3], V[4], V[5]
        self.v = self.v0.unbind(0)
        self.u = self.U.unbind(0)
        self.w = self.W.unbind(0)
        # results: eigenvalues in stg, eigenvectors in X (free at the end; smaller working set)
        self.L, self.E = stg, X
        self.l = stg.unbind(0)
        self.e = X.view(3, 3, -1).unbind(1)  # e[k][i]: component i of eigenvector k

    @classmethod
    def allocate(cls, d: int, n: int, dtype: torch.dtype, device: torch.device) -> "_Workspace":
        return cls(
            torch.empty(d * d, n, dtype=dtype, device=device),
            torch.empty(3 if d == 3 else 6, n, dtype=dtype, device=device),
            torch.empty(12, n, dtype=dtype, device=device),
            torch.empty(6, 3, n, dtype=dtype, device=device) if d == 3 else None,
            torch.empty(n, dtype=torch.bool, device=device),
        )

    def sliced(self, n: int) -> "_Workspace":
        """The same buffers restricted to the first ``n`` matrices (last, partial chunk)."""
        V = self.V[..., :n] if self.V is not None else None
        return _Workspace(self.X[:, :n], self.stg[:, :n], self.R[:, :n], V, self.ok_tmp[:n])


def _eig3_chunk(ws: _Workspace, scale: bool, check: Tensor, ok: Tensor | None = None) -> None:
    """Eigen-decomposition of a chunk of symmetric 3x3 matrices (see the module docstring).

    About 130 elementwise operations, each on at most 3 rows of ``n`` (with ``n = _CPU_CHUNK``
    this stays below torch's intra-op parallelisation grain size).

    Args:
        ws: workspace; ``ws.X [9, n]`` holds the entries of the matrices in the order
            ``_ROWS[3]`` (compute dtype; overwritten). Output: ascending eigenvalues in
            ``ws.L = ws.stg [3, n]``, component ``i`` of eigenvector ``k`` in row ``3 i + k`` of
            ``ws.E = ws.X``.
        scale: divide by the largest entry first (needed when the compute dtype is the input dtype).
        check: 0-dim output, finite iff the chunk is finite (not written when ``ok`` is given).
        ok: optional ``[n]`` bool output for an unscaled float32 pass: ``False`` where
            ``||A - m I||_F^2`` is outside ``[1e-30, 1e37]`` (over- or underflow in float32, a
            multiple of the identity, NaN / inf input): the caller re-solves those in float64.

    Shapes:
        ws.X: ``[9, n]`` -> ws.L: ``[3, n]``, ws.E: ``[9, n]``
    """
    tiny = torch.finfo(ws.X.dtype).tiny
    one, minus3, tiny_t, c = ws.one, ws.minus3, ws.tiny, ws.c
    D, O, F = ws.D, ws.O, ws.F
    b00, b11, b22, b01, b02, b12 = ws.b
    f0, f1, f2 = ws.f
    s, m, ip, t1, det, beta, t2, f, r8, r9, r10, r11 = ws.r

    O.mul_(0.5).add_(F, alpha=0.5)  # symmetrise
    if scale:
        torch.amax(torch.abs(D, out=F), 0, out=s)
        torch.amax(torch.abs(O, out=F), 0, out=t1)
        torch.maximum(s, t1, out=s)
        torch.amax(s, 0, out=check)
        s.clamp_min_(tiny)
        D.div_(s)
        O.div_(s)
    torch.add(b00, b11, out=m).add_(b22).mul_(1.0 / 3.0)
    D.sub_(m)
    torch.mul(D, D, out=F).addcmul_(O, O, value=2.0)
    p6 = torch.add(f0, f1, out=ip).add_(f2)  # ||A - m I||_F^2 = 6 p^2
    if ok is not None:
        torch.ge(p6, 1e-30, out=ok).logical_and_(torch.le(p6, 1e37, out=ws.ok_tmp[: ok.shape[0]]))
    elif not scale:
        torch.amax(p6, 0, out=check)
    # 1 / p (no torch.sqrt: its CPU kernel may open a parallel region even for small tensors,
    # which stalls badly on an oversubscribed machine; rsqrt does not)
    p6.clamp_min_(tiny).rsqrt_().mul_(math.sqrt(6.0))
    D.mul_(ip)
    O.mul_(ip)

    # isolated eigenvalue: largest root of beta^3 - 3 beta - x2, x2 = 2|r| = |det B|, signed by r
    torch.mul(b11, b22, out=det).addcmul_(b12, b12, value=-1.0).mul_(b00)
    det.addcmul_(b01, torch.mul(b12, b02, out=t1).addcmul_(b01, b22, value=-1.0))
    det.addcmul_(b02, torch.mul(b01, b12, out=t1).addcmul_(b11, b02, value=-1.0))
    x2 = torch.abs(det, out=t1).clamp_max_(2.0)
    torch.addcmul(c[-2], x2, c[-1], out=beta)
    for ck in reversed(c[:-2]):
        torch.addcmul(ck, beta, x2, out=beta)
    # Newton: beta <- beta - f / f' = (2 beta^3 + x2) / (3 beta^2 - 3); one step is float32-exact
    for _ in range(2 if ws.X.dtype == torch.float64 else 1):
        b2 = torch.mul(beta, beta, out=t2)
        num = torch.addcmul(x2, b2, beta, value=2.0, out=f)
        torch.div(num, torch.addcmul(minus3, b2, one, value=3.0, out=t2), out=beta)
    beta0 = torch.copysign(beta, det, out=beta)
    top = torch.gt(beta0, 0.0, out=det)  # 1: beta0 is the largest eigenvalue

    # its eigenvector: the column of adj(B - beta0 I) with the largest diagonal entry
    m00, m11, m22 = f0, f1, f2
    torch.sub(D, beta0, out=F)
    (a00, a01, a02), (a10, a11, a12), (a20, a21, a22) = ws.c_
    torch.mul(m11, m22, out=a00).addcmul_(b12, b12, value=-1.0)
    torch.mul(m00, m22, out=a11).addcmul_(b02, b02, value=-1.0)
    torch.mul(m00, m11, out=a22).addcmul_(b01, b01, value=-1.0)
    torch.mul(b02, b12, out=a01).addcmul_(b01, m22, value=-1.0)
    torch.mul(b01, b12, out=a02).addcmul_(b02, m11, value=-1.0)
    torch.mul(b01, b02, out=a12).addcmul_(m00, b12, value=-1.0)
    a10.copy_(a01)
    a20.copy_(a02)
    a21.copy_(a12)
    col0, col1, col2 = ws.col
    w, dbest = t1, t2
    torch.ge(a00, a11, out=w)
    best = torch.lerp(col1, col0, w, out=F)  # lerp with weights exactly 0 / 1 is an exact select
    torch.lerp(a11, a00, w, out=dbest)
    torch.ge(dbest, a22, out=w)
    v0 = torch.lerp(col2, best, w, out=ws.v0)
    torch.mul(v0, v0, out=F)
    v0.mul_(torch.add(f0, f1, out=t1).add_(f2).rsqrt_())

    # orthonormal basis (u, w) of v0^perp (Duff et al. 2017), with ia = 1 / (sg + z):
    # u = (1 - sg x^2 ia, -sg x y ia, -sg x), w = (-x y ia, sg - y^2 ia, -y)
    vx, vy, vz = ws.v
    u0, u1, u2 = ws.u
    w0, w1, w2 = ws.w
    sg, ia, yia = t1, t2, f
    torch.copysign(one, vz, out=sg)
    torch.add(sg, vz, out=ia).reciprocal_()
    torch.mul(vy, ia, out=yia)
    torch.mul(vx, yia, out=w0).neg_()
    torch.mul(sg, vx, out=u2)
    torch.addcmul(one, u2, torch.mul(vx, ia, out=r8), value=-1.0, out=u0)
    u2.neg_()
    torch.mul(sg, w0, out=u1)
    torch.addcmul(sg, vy, yia, value=-1.0, out=w1)
    torch.neg(vy, out=w2)

    # 2x2 restriction [[a, b], [b, c]] with c = -beta0 - a, one exact Jacobi rotation
    Bu0, Bu1, Bu2 = f0, f1, f2
    torch.mul(b00, u0, out=Bu0).addcmul_(b01, u1).addcmul_(b02, u2)
    torch.mul(b01, u0, out=Bu1).addcmul_(b11, u1).addcmul_(b12, u2)
    torch.mul(b02, u0, out=Bu2).addcmul_(b12, u1).addcmul_(b22, u2)
    qa, qb, d, g, t, sn, hi = t1, t2, f, r8, r9, r10, r11
    torch.mul(u0, Bu0, out=qa).addcmul_(u1, Bu1).addcmul_(u2, Bu2)
    torch.mul(w0, Bu0, out=qb).addcmul_(w1, Bu1).addcmul_(w2, Bu2)
    torch.add(qa, beta0, alpha=0.5, out=d)
    h2 = torch.addcmul(tiny_t, d, d, out=t).addcmul_(qb, qb)  # > 0
    torch.rsqrt(h2, out=g).mul_(h2).add_(torch.abs(d, out=t))  # |d| + hypot(d, b) > 0
    torch.copysign(g, d, out=g)
    torch.div(qb, g, out=t)
    cs = torch.addcmul(one, t, t, out=d).rsqrt_()
    torch.mul(t, cs, out=sn)
    ap = torch.addcmul(qa, t, qb, out=qa)  # eigenvalue of  cs u + sn w
    cp = torch.add(ap, beta0, out=qb).neg_()  # eigenvalue of  -sn u + cs w
    sw = torch.lt(g, 0.0, out=g)  # 1: ap is the smaller one
    lo = torch.minimum(ap, cp, out=t)
    torch.maximum(ap, cp, out=hi)
    # eigenvector of lo in the (u, w) basis: (al, be) = (cs, sn) if sw else (-sn, cs); the one of
    # hi is its rotation by -90 degrees (be, -al) (the signs of eigenvectors are arbitrary)
    msn = torch.neg(sn, out=qa)
    al = torch.lerp(msn, cs, sw, out=qb)
    be = torch.lerp(cs, sn, sw, out=qa)
    U, W = ws.U, ws.W
    lo_v = torch.mul(U, al, out=col1).addcmul_(W, be)
    hi_v = torch.mul(U, be, out=col2).addcmul_(W, al, value=-1.0)

    # ascending order: (lo, hi, beta0) if beta0 is the largest else (beta0, lo, hi)
    l0, l1, l2 = ws.l
    e0, e1, e2 = ws.e
    torch.lerp(beta0, lo, top, out=l0)
    torch.lerp(lo, hi, top, out=l1)
    torch.lerp(hi, beta0, top, out=l2)
    torch.lerp(v0, lo_v, top, out=e0)
    torch.lerp(lo_v, hi_v, top, out=e1)
    torch.lerp(hi_v, v0, top, out=e2)
    ws.L.div_(ip).add_(m)
    if scale:
        ws.L.mul_(s)


def _eig2_chunk(ws: _Workspace, scale: bool, check: Tensor) -> None:
    """Eigen-decomposition of a chunk of symmetric 2x2 matrices by one exact Jacobi rotation.

    ``d = (a - c) / 2``, ``t = b / (d + sign(d) hypot(d, b))``: eigenvalues ``a + t b`` with
    eigenvector ``(1, t) / sqrt(1 + t^2)`` and ``c - t b`` with ``(-t, 1) / sqrt(1 + t^2)``.

    Args:
        ws: workspace; ``ws.X [4, n]`` holds ``(c00, c11, c01, c10)`` (compute dtype;
            overwritten). Output in ``ws.stg [6, n]``: eigenvalues in rows 0, 1, component ``i``
            of eigenvector ``k`` in row ``2 + 2 i + k``.
        scale: divide by the largest entry first.
        check: 0-dim output, finite iff the chunk is finite.

    Shapes:
        ws.X: ``[4, n]`` -> ws.stg: ``[6, n]``
    """
    X, stg = ws.X, ws.stg
    tiny = torch.finfo(X.dtype).tiny
    one = ws.one
    s, d, g, t, cs, sn = ws.r[:6]
    S = X[:3]
    S[2].mul_(0.5).add_(X[3], alpha=0.5)  # symmetrise
    if scale:
        torch.amax(torch.abs(S, out=ws.R[6:9]), 0, out=s)
        torch.amax(s, 0, out=check)
        s.clamp_min_(tiny)
        S.div_(s)
    else:
        torch.sum(S, (0, 1), out=check)
    qa, qc, qb = S.unbind(0)
    torch.sub(qa, qc, out=d).mul_(0.5)
    h2 = torch.mul(d, d, out=t).addcmul_(qb, qb).clamp_min_(tiny)
    torch.rsqrt(h2, out=g).mul_(h2).add_(torch.abs(d, out=t))  # |d| + hypot(d, b) > 0
    torch.copysign(g, d, out=g)
    torch.div(qb, g, out=t)
    torch.addcmul(one, t, t, out=cs).rsqrt_()
    torch.mul(t, cs, out=sn)
    ap = torch.addcmul(qa, t, qb, out=d)
    cp = torch.addcmul(qc, t, qb, value=-1.0, out=t)
    sw = torch.lt(g, 0.0, out=g)  # 1: ap is the smaller one
    torch.minimum(ap, cp, out=stg[0])
    torch.maximum(ap, cp, out=stg[1])
    msn = torch.neg(sn, out=ap)
    # vector of ap: (cs, sn); vector of cp: (-sn, cs)
    torch.lerp(msn, cs, sw, out=stg[2])  # lo, component 0
    torch.lerp(cs, msn, sw, out=stg[3])  # hi, component 0
    torch.lerp(cs, sn, sw, out=stg[4])  # lo, component 1
    torch.lerp(sn, cs, sw, out=stg[5])  # hi, component 1
    if scale:
        stg[:2].mul_(s)


def _flag_ill_conditioned(ws: _Workspace, d: int, out: Tensor, refine_gap: float = _REFINE_GAP) -> None:
    """``out[i] = True`` where the smallest relative eigenvalue gap is ``<= refine_gap``.

    Reads the eigenvalues of a solved chunk (ascending rows) and uses free rows of ``ws.R``.

    Shapes:
        ws.L / ws.stg: ``[>= d, n]`` -> out: ``[n]`` (bool)
    """
    gap, big, tmp = ws.r[6], ws.r[7], ws.r[8]
    rows = ws.stg[:d].unbind(0)
    torch.sub(rows[1], rows[0], out=gap)
    if d == 3:
        torch.minimum(gap, torch.sub(rows[2], rows[1], out=tmp), out=gap)
    torch.abs(rows[0], out=big)
    torch.maximum(big, torch.abs(rows[-1], out=tmp), out=big).mul_(refine_gap)
    torch.le(gap, big, out=out)


def _closed_form(
    C: Tensor, compute: torch.dtype | None = None, chunk_size: int | None = None, refine_gap: float | None = None
) -> tuple[Tensor, Tensor]:
    """Closed-form eigen-decomposition of ``C [N, d, d]``, ``d in {2, 3}``.

    On CPU the batch is processed in chunks of ``_CPU_CHUNK`` matrices, so that the ~140
    elementwise operations of the 3x3 kernel work on cache-resident rows, each below torch's
    intra-op parallelisation grain size (no thread synchronisation per operation, which is very
    costly on a busy machine), in inference mode (cheaper dispatch). On other devices the batch is
    processed in one piece.

    Precision: float64 input is solved in float64. Other input is solved in float32 (about twice
    as fast), then every matrix whose smallest relative eigenvalue gap is ``<= _REFINE_GAP`` (where
    float32 rounding would rotate the eigenvectors of the (nearly) repeated pair by up to
    ``~2e-7 / gap``) is solved again in float64 from the original entries, so every output matches
    float64 :func:`torch.linalg.eigh` of the same matrix to a few 1e-6 or better (exactly repeated
    eigenvalues included). A batch of at most one chunk is solved in float64 in one pass (cheaper
    than two passes when the per-chunk fixed cost dominates). On MPS (no float64) the float32 pass
    is final.

    Args:
        C: ``[N, d, d]`` matrices.
        compute: force the compute dtype (no re-solve pass); default: see above.
        chunk_size: matrices per chunk on CPU (default ``_CPU_CHUNK``).
        refine_gap: the re-solve threshold (default ``_REFINE_GAP``).
    """
    cpu_chunk = _CPU_CHUNK if chunk_size is None else chunk_size
    gap_rule = _REFINE_GAP if refine_gap is None else refine_gap
    N, d = C.shape[0], C.shape[-1]
    dev = C.device
    cdt = compute if compute is not None else _compute_dtype(C.dtype, dev)
    # one chunk: a single float64 pass is cheaper than a float32 pass plus a re-solve pass
    if compute is None and cdt != torch.float64 and _can_refine(dev) and N <= cpu_chunk:
        cdt = torch.float64
    refine = compute is None and cdt != torch.float64 and _can_refine(dev)
    # No range scaling where squares and cubes cannot overflow or underflow: float32 / float16 /
    # bfloat16 input in float64, and the d = 3 float32 pass with re-solve (which flags the matrices
    # whose entries are out of the safe float32 range, ``ok`` below, and re-solves them in float64).
    unscaled_pass = refine and d == 3
    scale = not unscaled_pass and (cdt != torch.float64 or C.dtype == torch.float64)
    flat = C.reshape(N, d * d)
    evals = torch.empty(N, d, dtype=C.dtype, device=dev)
    evecs = torch.empty(N, d * d, dtype=C.dtype, device=dev)
    chunk = min(cpu_chunk, N) if dev.type == "cpu" else N
    starts = range(0, N, chunk)
    with torch.inference_mode():
        checks = torch.empty(len(starts), dtype=cdt, device=dev)
        flags = torch.empty(N if refine else 0, dtype=torch.bool, device=dev)
        ok = torch.empty(chunk if unscaled_pass else 0, dtype=torch.bool, device=dev)
        full = _Workspace.allocate(d, chunk, cdt, dev)
        for j, start in enumerate(starts):
            stop = min(start + chunk, N)
            ws = full if stop - start == chunk else full.sliced(stop - start)
            _to_soa(flat[start:stop], ws.X)
            if d == 3:
                _eig3_chunk(ws, scale, checks[j], ok[: stop - start] if unscaled_pass else None)
            else:
                _eig2_chunk(ws, scale, checks[j])
            if refine:
                _flag_ill_conditioned(ws, d, flags[start:stop], gap_rule)
            if unscaled_pass:
                flags[start:stop].logical_or_(ok[: stop - start].logical_not_())
            _from_soa(ws.L, ws.E, evals[start:stop], evecs[start:stop])
        if not unscaled_pass and not bool(torch.isfinite(checks).all()):
            raise _not_finite_error()  # (unscaled pass: NaN / inf input is flagged and raises below)
    if refine:
        _resolve(flat, flags, evals, evecs)
    return evals, evecs.view(N, d, d)


def _resolve(flat: Tensor, flags: Tensor, evals: Tensor, evecs: Tensor) -> None:
    """Solve the flagged matrices again in float64 and overwrite their results in place.

    On CPU the bookkeeping goes through NumPy (``nonzero``/``index_select``/``index_copy_`` on 1e6
    rows cost tens of ms in torch here, NumPy's equivalents about 1 ms).

    Shapes:
        flat: ``[N, d*d]``, flags: ``[N]`` (bool), evals: ``[N, d]``, evecs: ``[N, d*d]``
    """
    d = evals.shape[-1]
    numpy_ok = flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64)
    if numpy_ok:
        idx_np = np.flatnonzero(flags.numpy())
        if idx_np.size == 0:
            return
        sub = torch.from_numpy(flat.numpy()[idx_np])
    else:
        idx = flags.nonzero().squeeze(1)
        if idx.numel() == 0:
            return
        sub = flat.index_select(0, idx)
    L64, V64 = _closed_form(sub.view(-1, d, d), compute=torch.float64)
    if numpy_ok:
        evals.numpy()[idx_np] = L64.numpy()
        evecs.numpy()[idx_np] = V64.reshape(-1, d * d).numpy()
    else:
        evals.index_copy_(0, idx, L64)
        evecs.index_copy_(0, idx, V64.reshape(-1, d * d))


def _torch_eigh(C: Tensor) -> tuple[Tensor, Tensor]:
    if not bool(torch.isfinite(C).all()):
        raise _not_finite_error()
    work = C if C.dtype in (torch.float32, torch.float64) else C.to(torch.float32)
    L, V = torch.linalg.eigh(0.5 * (work + work.mT))
    return L.to(C.dtype), V.to(C.dtype)


def _solve(C: Tensor, method: str, chunk_size: int | None = None, refine_gap: float | None = None) -> tuple[Tensor, Tensor]:
    """Dispatch on ``method``, flatten the batch, no autograd."""
    C = C.detach()
    d = C.shape[-1]
    batch = C.shape[:-2]
    flat = C.reshape(-1, d, d)
    if flat.shape[0] == 0:
        return C.new_empty(*batch, d), C.new_empty(*batch, d, d)
    if method == "torch" or d not in (2, 3):
        L, V = _torch_eigh(flat)
    else:
        L, V = _closed_form(flat, chunk_size=chunk_size, refine_gap=refine_gap)
    return L.reshape(*batch, d), V.reshape(*batch, d, d)


# ----------------------------------------------------------------------------------------------
# autograd
# ----------------------------------------------------------------------------------------------


def _eigh_backward(L: Tensor, V: Tensor, gL: Tensor, gV: Tensor, tie_tol: float) -> Tensor:
    """``sym(V (diag(gL) + F o (V^T gV)) V^T)`` with ``F`` zeroed on (nearly) tied pairs.

    Written with differentiable tensor operations (double backward works when ``L`` and ``V``
    carry their graph).

    Shapes:
        L, gL: ``[..., d]``; V, gV: ``[..., d, d]`` -> ``[..., d, d]``
    """
    diff = L.unsqueeze(-2) - L.unsqueeze(-1)  # [..., i, j] = lambda_j - lambda_i
    thresh = tie_tol * L.detach().abs().amax(-1, keepdim=True).unsqueeze(-1)
    sep = diff.detach().abs() > thresh
    F = torch.where(sep, torch.where(sep, diff, torch.ones_like(diff)).reciprocal(), torch.zeros_like(diff))
    inner = F * (V.mT @ gV) + torch.diag_embed(gL)
    gC = V @ inner @ V.mT
    return 0.5 * (gC + gC.mT)


class _SymEig(torch.autograd.Function):
    """Autograd wrapper: forward without graph, tie-safe analytic backward (twice differentiable)."""

    @staticmethod
    def forward(ctx, C: Tensor, method: str, tie_tol: float, chunk_size: int | None = None,  # type: ignore[override]
                refine_gap: float | None = None) -> tuple[Tensor, Tensor]:
        L, V = _solve(C, method, chunk_size, refine_gap)
        ctx.save_for_backward(L, V)
        ctx.tie_tol = tie_tol
        return L, V

    @staticmethod
    def backward(ctx, gL: Tensor, gV: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        L, V = ctx.saved_tensors
        return _eigh_backward(L, V, gL, gV, ctx.tie_tol), None, None, None, None


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------


def symeig(
    C: Tensor,
    *,
    method: Method = "auto",
    tie_tol: float | None = None,
    chunk_size: int | None = None,
    refine_gap: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Eigen-decomposition of batched symmetric matrices, conventions of :func:`torch.linalg.eigh`.

    ``C = V diag(lambda) V^T`` with ``lambda`` ascending and the unit eigenvectors in the columns
    of ``V`` (``C @ V[..., :, k] = lambda[..., k] V[..., :, k]``). Symmetry of ``C`` is assumed;
    only ``(C + C^T) / 2`` is used. For repeated eigenvalues any orthonormal basis of the
    eigenspace is returned; the signs of the eigenvectors are arbitrary (as for ``eigh``).

    The closed form (``d`` in {2, 3}) computes float64 input in float64 and other input in
    float32 with a float64 re-solve of the ill-conditioned matrices (module docstring; float32
    only on MPS), processes the batch in chunks of 10922 matrices on CPU and never produces NaN for finite
    input, nor inf unless an eigenvalue itself exceeds the range of the dtype (zero matrix,
    multiples of the identity, rank-deficient matrices, exactly repeated eigenvalues, subnormal
    to near-overflow entries are all fine). It is single-threaded on CPU (like batched
    ``torch.linalg.eigh``).

    Gradients (also second order) are finite everywhere: see the module docstring for the
    treatment of (nearly) tied eigenvalues.

    Args:
        C: real symmetric matrices, float32 or float64 (float16 / bfloat16 are computed in a
            wider dtype and cast back), finite, any batch shape (also empty), any device.
        method: ``"closed_form"``: the analytic batched solver (``d`` in {2, 3}; other ``d``
            fall back to ``torch.linalg.eigh``); ``"torch"``: :func:`torch.linalg.eigh`;
            ``"auto"``: closed form for ``d`` in {2, 3}, torch otherwise.
        tie_tol: relative threshold below which two eigenvalues count as tied in the backward pass
            (``|lambda_i - lambda_j| <= tie_tol * max_k |lambda_k|``: the coupling ``F_ij`` is set
            to 0 and the gradient stays finite). Default ``100 * eps`` of the dtype of ``C``.
        chunk_size: matrices per chunk of the closed form on CPU (default 10922: cache-resident rows).
            Results do not depend on it, except that a batch of at most one chunk of float32 matrices
            is solved in float64 in one pass.
        refine_gap: the float32 pass re-solves in float64 every matrix whose smallest relative eigenvalue
            gap is ``<= refine_gap`` (default 0.03; a negative value disables the re-solve, leaving the
            float32 pass's accuracy ``~2e-7 / gap``).

    Returns:
        ``(evals, evecs)``: eigenvalues ``[..., d]`` ascending and eigenvectors ``[..., d, d]``
        (columns), dtype and device of ``C``.

    Raises:
        TypeError: ``C`` is not a tensor.
        ValueError: ``C`` has ndim < 2, non-square or empty matrix dims, a non-floating dtype,
            NaN / inf entries; ``method`` or ``tie_tol`` is invalid.

    Shapes:
        C: ``[..., d, d]`` -> evals: ``[..., d]``, evecs: ``[..., d, d]``

    Example:
        >>> X = torch.randn(1000, 64, 3)                    # 1000 point clouds
        >>> Xc = X - X.mean(-2, keepdim=True)
        >>> evals, evecs = symeig(Xc.mT @ Xc / 64)         # PCA axes in the columns of evecs
    """
    _check_matrix(C)
    if method not in _METHODS:
        raise ValueError(f"method: expected one of {_METHODS}, got {method!r}")
    if tie_tol is None:
        tie_tol = 100.0 * torch.finfo(C.dtype).eps
    elif isinstance(tie_tol, bool) or not (isinstance(tie_tol, (int, float)) and tie_tol >= 0.0):
        raise ValueError(f"tie_tol: expected a float >= 0, got {tie_tol!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size: expected a positive integer, got {chunk_size!r}")
    if refine_gap is not None and (isinstance(refine_gap, bool) or not isinstance(refine_gap, (int, float))
                                   or not math.isfinite(refine_gap)):
        raise ValueError(f"refine_gap: expected a finite float, got {refine_gap!r}")
    return _SymEig.apply(C, method, float(tie_tol), chunk_size, None if refine_gap is None else float(refine_gap))


def eigen_gaps(evals: Tensor) -> Tensor:
    """Relative gaps between consecutive ascending eigenvalues.

    ``gap_i = (lambda_{i+1} - lambda_i) / max_k |lambda_k|`` (0 where all eigenvalues are 0). A
    small gap means the corresponding eigenvectors (PCA axes) are ill-conditioned: a relative
    perturbation ``eps`` of the matrix rotates them by about ``eps / gap``.

    Args:
        evals: ascending eigenvalues, e.g. the first output of :func:`symeig`.

    Shapes:
        evals: ``[..., d]`` -> ``[..., d - 1]``
    """
    if not isinstance(evals, Tensor):
        raise TypeError(f"evals: expected a torch.Tensor, got {type(evals).__name__}")
    if evals.ndim < 1 or evals.shape[-1] < 1 or not evals.is_floating_point():
        raise ValueError(
            f"evals: expected a floating tensor [..., d] with d >= 1, got {evals.dtype} of shape {tuple(evals.shape)}"
        )
    scale = evals.abs().amax(-1, keepdim=True)
    gaps = evals[..., 1:] - evals[..., :-1]
    positive = scale > 0
    return torch.where(positive, gaps / torch.where(positive, scale, torch.ones_like(scale)), torch.zeros_like(gaps))
