"""Tests of :mod:`equiframe.linalg`: the batched closed-form symmetric eigen-solver."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from equiframe import linalg
from equiframe.linalg import eigen_gaps, symeig

DTYPES = [torch.float32, torch.float64]
# relative residual / orthonormality bounds (float32: float32 pass, ill-conditioned matrices re-solved in float64)
RES_TOL = {torch.float32: 2e-6, torch.float64: 5e-14}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rotations(n: int, d: int, g: torch.Generator) -> Tensor:
    Q, R = torch.linalg.qr(torch.randn(n, d, d, generator=g, dtype=torch.float64))
    return Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)



def _with_spectrum(evals: Tensor, g: torch.Generator) -> Tensor:
    """Symmetric matrices ``Q diag(evals) Q^T`` with Haar-random ``Q`` (float64)."""
    Q = _rotations(evals.shape[0], evals.shape[-1], g)
    return (Q * evals.unsqueeze(-2)) @ Q.mT


def _covariances(n: int, d: int, g: torch.Generator) -> Tensor:
    """Generic covariance matrices of random anisotropic point clouds (float64)."""
    X = torch.randn(n, 16, d, generator=g, dtype=torch.float64) @ torch.randn(n, d, d, generator=g, dtype=torch.float64)
    X = X - X.mean(-2, keepdim=True)
    return X.mT @ X / 16


def _check(C: Tensor, L: Tensor, V: Tensor, tol: float) -> None:
    """Finite, ascending, orthonormal columns, small relative residual ``||C v - lambda v|| / ||C||``."""
    d = C.shape[-1]
    assert L.shape == C.shape[:-1] and V.shape == C.shape
    assert L.dtype == C.dtype and V.dtype == C.dtype
    assert torch.isfinite(L).all() and torch.isfinite(V).all()
    assert (L[..., 1:] >= L[..., :-1]).all()
    C64, L64, V64 = C.double(), L.double(), V.double()
    eye = torch.eye(d, dtype=torch.float64)
    assert (V64.mT @ V64 - eye).abs().max() <= tol
    norm = torch.linalg.matrix_norm(C64, ord=2).clamp_min(torch.finfo(torch.float64).tiny)
    res = torch.linalg.vector_norm(C64 @ V64 - V64 * L64.unsqueeze(-2), dim=-2).amax(-1) / norm
    assert res.max() <= tol, f"max relative residual {res.max():.3e} > {tol:.1e}"
    ref = torch.linalg.eigvalsh(C64)
    assert ((L64 - ref).abs().amax(-1) / norm).max() <= tol


# ----------------------------------------------------------------------------------------------
# accuracy on generic matrices
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_eigh_on_generic_matrices(d: int, dtype: torch.dtype) -> None:
    g = _gen(1)
    C = torch.cat([_covariances(1500, d, g), _with_spectrum(torch.randn(1500, d, generator=g, dtype=torch.float64), g)])
    C = C.to(dtype)
    L, V = symeig(C, chunk_size=512)
    _check(C, L, V, RES_TOL[dtype])
    # eigenvectors up to sign against float64 eigh of the same (rounded) matrices, where the
    # eigenvectors are well conditioned
    L64, V64 = torch.linalg.eigh(C.double())
    sign = torch.sign((V.double() * V64).sum(-2, keepdim=True))
    err = (V.double() * sign - V64).abs().amax(-2)  # [n, d] per eigenvector
    gaps = eigen_gaps(L64)
    gap = torch.minimum(
        torch.cat([gaps, torch.full_like(gaps[..., :1], math.inf)], -1),
        torch.cat([torch.full_like(gaps[..., :1], math.inf), gaps], -1),
    )
    # float32 pass: eigenvector error <= ~2e-7 / gap; smaller gaps are re-solved in float64
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    assert (err * gap.clamp_max(1.0)).max() <= tol


@pytest.mark.parametrize("d", [2, 3])
def test_method_torch_and_auto_agree(d: int) -> None:
    C = _covariances(300, d, _gen(2))
    La, Va = symeig(C)
    Lt, Vt = symeig(C, method="torch")
    Lc, Vc = symeig(C, method="closed_form")
    torch.testing.assert_close(La, Lt, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(La, Lc)
    torch.testing.assert_close(Va @ Va.mT, torch.eye(d, dtype=C.dtype).expand_as(Va), rtol=0, atol=1e-14)
    torch.testing.assert_close((Va * Vt).sum(-2).abs(), torch.ones_like(La), rtol=0, atol=1e-10)


@pytest.mark.parametrize("d", [1, 4, 5])
def test_other_dimensions_use_torch(d: int) -> None:
    C = _with_spectrum(torch.randn(50, d, generator=_gen(3), dtype=torch.float64), _gen(4))
    L, V = symeig(C, method="closed_form")
    _check(C, L, V, 1e-13)


# ----------------------------------------------------------------------------------------------
# degenerate, nearly degenerate and badly scaled matrices
# ----------------------------------------------------------------------------------------------


def _degenerate(d: int) -> Tensor:
    g = _gen(5)
    Q = _rotations(1, d, g)[0]
    u = torch.randn(d, generator=g, dtype=torch.float64)
    v = torch.randn(d, generator=g, dtype=torch.float64)
    cases = [
        torch.zeros(d, d),
        torch.eye(d),
        -3.5 * torch.eye(d),
        torch.outer(u, u),  # rank 1
        torch.ones(d, d),  # rank 1, eigenvalues (0, .., d)
        torch.diag(torch.arange(d, dtype=torch.float64)),  # already diagonal
        torch.diag(torch.arange(d, 0, -1, dtype=torch.float64)),  # diagonal, descending
        torch.tensor([[0.0, 1.0], [1.0, 0.0]]) if d == 2 else torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 0]]),
    ]
    if d == 3:
        cases += [
            torch.outer(u, u) + torch.outer(v, v),  # rank 2
            torch.tensor([[2.0, 1, 1], [1, 2, 1], [1, 1, 2]]),  # eigenvalues (1, 1, 4)
            torch.tensor([[2.0, -1, -1], [-1, 2, -1], [-1, -1, 2]]),  # (0, 3, 3)
            Q @ torch.diag(torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64)) @ Q.T,  # repeated, rotated
            Q @ torch.diag(torch.tensor([-2.0, 1.0, 1.0], dtype=torch.float64)) @ Q.T,
            Q @ torch.diag(torch.tensor([0.0, 0.0, 5.0], dtype=torch.float64)) @ Q.T,
            torch.diag(torch.tensor([1e-20, 1.0, 1e20], dtype=torch.float64)),  # wide spectrum
        ]
    else:
        cases += [Q @ torch.diag(torch.tensor([3.0, 3.0], dtype=torch.float64)) @ Q.T]
    return torch.stack([c.to(torch.float64) for c in cases])


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_degenerate_matrices(d: int, dtype: torch.dtype) -> None:
    C = _degenerate(d).to(dtype)
    L, V = symeig(C)
    _check(C, L, V, RES_TOL[dtype])
    zero = symeig(torch.zeros(4, d, d, dtype=dtype))
    assert (zero[0] == 0).all()
    torch.testing.assert_close(zero[1].mT @ zero[1], torch.eye(d, dtype=dtype).expand(4, d, d))
    # multiples of the identity: exact eigenvalues
    for c in (1.0, -2.5, 1e-30, 1e30):
        L, V = symeig(c * torch.eye(d, dtype=dtype).expand(3, d, d))
        assert (L == torch.tensor(c, dtype=dtype)).all()
        _check(c * torch.eye(d, dtype=dtype).expand(3, d, d), L, V, RES_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [2, 3])
def test_nearly_repeated_eigenvalues(d: int, dtype: torch.dtype) -> None:
    g = _gen(6)
    rel_gaps = torch.tensor([1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-10, 1e-12, 0.0], dtype=torch.float64)
    spectra = []
    for delta in rel_gaps:
        if d == 2:
            spectra += [[1.0, 1.0 + delta], [-1.0, -1.0 + delta], [1e-3, 1e-3 * (1 + delta)]]
        else:
            spectra += [
                [1.0, 1.0 + delta, 2.0],  # tie at the bottom
                [1.0, 2.0, 2.0 + 2 * delta],  # tie at the top
                [-2.0, 1.0, 1.0 + delta],
                [1.0, 1.0 + delta, 1.0 + 2 * delta],  # three nearly equal
                [0.0, delta, 1.0],  # nearly rank 1
            ]
    evals = torch.tensor(spectra, dtype=torch.float64)
    C = _with_spectrum(evals.repeat(20, 1), g).to(dtype)
    L, V = symeig(C)
    _check(C, L, V, RES_TOL[dtype])


@pytest.mark.parametrize("d", [2, 3])
def test_float32_resolve_of_ill_conditioned_matrices(d: int) -> None:
    """float32 input: nearly repeated pairs are re-solved in float64 (negative control: without it they are not)."""
    g = _gen(16)
    delta = 10.0 ** -torch.linspace(2.5, 5, 40, dtype=torch.float64)
    one = torch.ones_like(delta)
    cols = [one, one + delta, 2 * one][:d] if d == 3 else [one, one + delta]
    C = _with_spectrum(torch.stack(cols, -1).repeat(10, 1), g).float()
    L64, V64 = torch.linalg.eigh(C.double())

    gap = eigen_gaps(L64).amin(-1)

    def err(V: Tensor) -> Tensor:
        sign = torch.sign((V.double() * V64).sum(-2, keepdim=True))
        return (V.double() * sign - V64).abs().amax((-1, -2))

    L, V = symeig(C, chunk_size=64)
    _check(C, L, V, RES_TOL[torch.float32])
    # float32 rounding of the output plus the reference's own ~1e-16 / gap
    assert (err(V) <= 2e-7 + 1e-14 / gap).all()
    _, V32 = symeig(C, chunk_size=64, refine_gap=-1.0)
    assert err(V32).max() > 1e-5  # float32 pass alone: error up to ~1e-7 / gap (misses the 1e-5 target)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [2, 3])
def test_extreme_scales(d: int, dtype: torch.dtype) -> None:
    g = _gen(7)
    spectra = torch.randn(100, d, generator=g, dtype=torch.float64)
    base = torch.cat([_covariances(100, d, g), _with_spectrum(spectra, g)])
    for scale in (1e-30, 1e-15, 1e-5, 1e5, 1e15, 1e30):
        C = (base * scale).to(dtype)
        L, V = symeig(C, chunk_size=64)
        _check(C, L, V, RES_TOL[dtype])
    # entries of very different magnitudes in one matrix
    big = _with_spectrum(torch.tensor([[1e-25, 1.0, 1e25][:d]] * 50, dtype=torch.float64), g)
    L, V = symeig(big.to(dtype), chunk_size=64)
    _check(big.to(dtype), L, V, RES_TOL[dtype])


def test_float64_extreme_range() -> None:
    g = _gen(8)
    base = _with_spectrum(torch.randn(50, 3, generator=g, dtype=torch.float64), g)
    for exponent in (-1000, 1000, -1040):  # 2^-1040 ~ 1e-313: subnormal entries
        scale = 2.0**exponent
        C = base * scale
        L, V = symeig(C)
        assert torch.isfinite(L).all() and torch.isfinite(V).all()
        # powers of two: C / scale is exact (up to the subnormal rounding of C)
        _check(C / scale, L / scale, V, 1e-13 if exponent > -1022 else 1e-3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype: torch.dtype) -> None:
    C = _covariances(64, 3, _gen(9)).to(dtype)
    L, V = symeig(C)
    assert L.dtype == dtype and V.dtype == dtype
    _check(C, L, V, 1e-2)


# ----------------------------------------------------------------------------------------------
# shapes, layouts, chunking
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 3])
def test_batch_shapes_and_empty(d: int) -> None:
    C = _covariances(24, d, _gen(10)).reshape(2, 3, 4, d, d)
    L, V = symeig(C)
    assert L.shape == (2, 3, 4, d) and V.shape == (2, 3, 4, d, d)
    Lf, Vf = symeig(C.reshape(-1, d, d))
    assert torch.equal(L.reshape(-1, d), Lf) and torch.equal(V.reshape(-1, d, d), Vf)
    L1, V1 = symeig(C[0, 0, 0])  # unbatched (vectorised and scalar loops may round differently)
    assert L1.shape == (d,) and V1.shape == (d, d)
    torch.testing.assert_close(L1, Lf[0], rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(V1, Vf[0], rtol=1e-12, atol=1e-12)
    for shape in [(0, d, d), (2, 0, d, d)]:
        for method in ("auto", "torch"):
            L, V = symeig(torch.empty(shape, dtype=torch.float32), method=method)
            assert L.shape == shape[:-1] and V.shape == shape and L.dtype == torch.float32


def test_non_contiguous_and_asymmetric_input() -> None:
    C = _covariances(40, 3, _gen(11))
    Ct = C.transpose(0, 0).mT.contiguous().mT  # column-major storage
    assert not Ct.is_contiguous()
    assert torch.equal(symeig(Ct)[0], symeig(C)[0])
    strided = torch.stack([C, C], 1)[:, 1]  # non-contiguous batch
    assert torch.equal(symeig(strided)[0], symeig(C)[0])
    # only the symmetric part is used
    A = torch.randn(40, 3, 3, generator=_gen(12), dtype=torch.float64)
    L, V = symeig(C + A - A.mT)
    torch.testing.assert_close(L, symeig(C)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("d", [2, 3])
def test_chunking(d: int) -> None:
    C = _covariances(1000, d, _gen(13))
    L_ref, V_ref = symeig(C)
    L, V = symeig(C, chunk_size=64)
    torch.testing.assert_close(L, L_ref, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(V, V_ref, rtol=1e-12, atol=1e-12)
    bad = C.clone()
    bad[900, 1, 1] = math.nan  # in the partial last chunk
    with pytest.raises(ValueError, match="C"):
        symeig(bad, chunk_size=64)
    bad[900, 1, 1] = 1.0
    bad[70, 0, 1] = math.inf  # off-diagonal, second chunk
    with pytest.raises(ValueError, match="C"):
        symeig(bad, chunk_size=64)


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        torch.ones(3),
        torch.ones(4, 3, 2),
        torch.ones(2, 0, 0),
        torch.ones(2, 3, 3, dtype=torch.int64),
        torch.ones(2, 3, 3, dtype=torch.bool),
        torch.ones(2, 3, 3, dtype=torch.complex64),
    ],
)
def test_invalid_input(bad: Tensor) -> None:
    with pytest.raises(ValueError, match="C"):
        symeig(bad)


@pytest.mark.parametrize("d", [2, 3, 4])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("method", ["auto", "torch"])
def test_non_finite_input(d: int, value: float, method: str) -> None:
    C = torch.eye(d).repeat(5, 1, 1)
    C[3, 0, d - 1] = value
    with pytest.raises(ValueError, match="C: contains NaN or inf"):
        symeig(C, method=method)
    with pytest.raises(ValueError, match="C: contains NaN or inf"):
        symeig(C, method=method, chunk_size=2)


def test_invalid_options() -> None:
    with pytest.raises(TypeError, match="C"):
        symeig([[1.0, 0.0], [0.0, 1.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method"):
        symeig(torch.eye(3), method="lapack")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tie_tol"):
        symeig(torch.eye(3), tie_tol=-1.0)
    with pytest.raises(ValueError, match="evals"):
        eigen_gaps(torch.ones(2, 0))
    with pytest.raises(TypeError, match="evals"):
        eigen_gaps([1.0, 2.0])  # type: ignore[arg-type]


def test_eigen_gaps() -> None:
    L = torch.tensor([[1.0, 2.0, 4.0], [0.0, 0.0, 0.0], [-4.0, 0.0, 0.0]])
    expected = torch.tensor([[0.25, 0.5], [0.0, 0.0], [1.0, 0.0]])
    torch.testing.assert_close(eigen_gaps(L), expected)
    assert eigen_gaps(torch.ones(5, 1)).shape == (5, 0)


# ----------------------------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------------------------


def _sign_invariant_loss(L: Tensor, V: Tensor, W: Tensor) -> Tensor:
    """Depends on the eigenvalues and the projectors ``v v^T`` (not on the eigenvector signs)."""
    P = V.unsqueeze(-1) * V.mT.unsqueeze(-3)  # [..., i, k, j] = v_k[i] v_k[j]
    return (L * L).sum() + (P * W).sum()


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("method", ["auto", "torch"])
def test_gradcheck(d: int, method: str) -> None:
    g = _gen(14)
    C = _with_spectrum(torch.tensor([[-1.0, 0.5, 2.0][:d], [0.3, 1.1, 4.0][:d]], dtype=torch.float64), g)
    C = C + 0.01 * torch.randn(C.shape, generator=g, dtype=torch.float64)  # slightly asymmetric
    C.requires_grad_(True)
    W = torch.randn(2, d, d, d, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda A: symeig(A, method=method)[0], (C,))
    assert torch.autograd.gradcheck(lambda A: _sign_invariant_loss(*symeig(A, method=method), W), (C,))
    assert torch.autograd.gradgradcheck(lambda A: _sign_invariant_loss(*symeig(A, method=method), W), (C,))


def test_gradient_matches_torch_eigh() -> None:
    C = _covariances(20, 3, _gen(15)).requires_grad_(True)
    W = torch.randn(20, 3, 3, 3, generator=_gen(16), dtype=torch.float64)
    (g_ours,) = torch.autograd.grad(_sign_invariant_loss(*symeig(C), W), C)
    L, V = torch.linalg.eigh(C)
    (g_ref,) = torch.autograd.grad(_sign_invariant_loss(L, V, W), C)
    torch.testing.assert_close(g_ours, 0.5 * (g_ref + g_ref.mT), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [2, 3])
def test_finite_gradients_at_repeated_eigenvalues(d: int, dtype: torch.dtype) -> None:
    C = torch.cat([_degenerate(d), torch.eye(d, dtype=torch.float64)[None]]).to(dtype).requires_grad_(True)
    W = torch.randn(C.shape[0], d, d, d, generator=_gen(17), dtype=dtype)
    L, V = symeig(C)
    loss = _sign_invariant_loss(L, V, W) + V.sum()  # V.sum() is not even sign invariant
    (grad,) = torch.autograd.grad(loss, C, create_graph=True)
    assert torch.isfinite(grad).all()
    (grad2,) = torch.autograd.grad((grad * W[:, 0]).sum(), C)  # (linear: no float32 overflow)
    assert torch.isfinite(grad2).all()
    # the eigenvalue part is exact also at ties: d(sum lambda)/dC = I, d(lambda_max)/dC well-defined
    (g_trace,) = torch.autograd.grad(symeig(C)[0].sum(), C)
    torch.testing.assert_close(g_trace, torch.eye(d, dtype=dtype).expand_as(g_trace))


def test_tie_tolerance_option() -> None:
    C = torch.diag(torch.tensor([1.0, 1.0 + 1e-6, 2.0], dtype=torch.float64)).requires_grad_(True)
    L, V = symeig(C)
    (g_default,) = torch.autograd.grad(V[0, 0] * V[1, 0], C)  # (v0 v0^T)_01, sign invariant
    L, V = symeig(C, tie_tol=1e-3)
    (g_tied,) = torch.autograd.grad(V[0, 0] * V[1, 0], C)
    assert g_default.abs().max() > 1e5  # ~ 1 / gap
    assert g_tied.abs().max() < 10.0  # coupling of the (declared) tied pair removed


# ----------------------------------------------------------------------------------------------
# property test
# ----------------------------------------------------------------------------------------------


_entries = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False, width=64)


@settings(max_examples=60, deadline=None)
@given(
    d=st.sampled_from([2, 3]),
    entries=st.lists(_entries, min_size=6, max_size=6),
    exponent=st.integers(min_value=-30, max_value=30),
    tie=st.sampled_from([None, 0, 1]),
    dtype=st.sampled_from(DTYPES),
)
def test_property_random_symmetric(
    d: int, entries: list[float], exponent: int, tie: int | None, dtype: torch.dtype
) -> None:
    A = torch.zeros(d, d, dtype=torch.float64)
    iu = torch.triu_indices(d, d)
    A[iu[0], iu[1]] = torch.tensor(entries[: iu.shape[1]], dtype=torch.float64)
    A = A + A.triu(1).mT
    if tie is not None:  # force a repeated eigenvalue (rounded to the dtype, so nearly repeated)
        L, Q = torch.linalg.eigh(A)
        L[tie + 1 if tie + 1 < d else tie] = L[tie]
        A = (Q * L) @ Q.T
        A = 0.5 * (A + A.T)
    C = (A * 10.0**exponent).to(dtype)
    L, V = symeig(C[None])
    _check(C[None], L, V, RES_TOL[dtype])
