"""geometry.knn_covariance / gather_neighbours: the dense k-NN local PCA shared by the normal-estimation code."""

import pytest
import torch

from equiframe.geometry import gather_neighbours, knn_covariance
from equiframe.groups import random_orthogonal


def cloud(B=2, N=64, d=3, dtype=torch.float64, seed=0):
    return torch.randn(B, N, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def brute_force(x, k):
    """Covariance of the k nearest points (itself included) by sorting all distances, one point at a time."""
    B, N, d = x.shape
    out = torch.zeros(B, N, d, d, dtype=x.dtype)
    for b in range(B):
        for i in range(N):
            nb = x[b, (x[b] - x[b, i]).norm(dim=1).argsort()[:k]]
            y = nb - nb.mean(0)
            C = y.T @ y / k
            out[b, i] = C / C.trace()
    return out


def test_gather_neighbours_picks_the_listed_rows():
    x = cloud(B=2, N=10, d=4)
    idx = torch.randint(0, 10, (2, 7, 3), generator=torch.Generator().manual_seed(1))
    out = gather_neighbours(x, idx)
    assert out.shape == (2, 7, 3, 4)
    for b in range(2):
        assert torch.equal(out[b], x[b][idx[b]])


@pytest.mark.parametrize("d", [2, 3])
def test_covariance_matches_the_definition_and_the_eigen_decomposition(d):
    x = cloud(N=40, d=d)
    r = knn_covariance(x, 8)
    assert torch.allclose(r.cov, brute_force(x, 8), atol=1e-12)
    assert torch.equal(r.neighbours, gather_neighbours(x, r.index))
    assert torch.allclose(r.cov.diagonal(dim1=-2, dim2=-1).sum(-1), torch.ones(2, 40, dtype=x.dtype))
    assert bool((r.eigvals[..., 1:] >= r.eigvals[..., :-1]).all())  # ascending
    U, lam = r.eigvecs, r.eigvals
    assert torch.allclose(r.cov @ U, U * lam[..., None, :], atol=1e-12)
    assert torch.allclose(U.transpose(-1, -2) @ U, torch.eye(d, dtype=x.dtype).expand_as(U), atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_solvers_agree_and_none_skips_the_eigen_decomposition(dtype, tol):
    x = cloud(N=200, dtype=dtype, seed=3)
    a, b = knn_covariance(x, 16, solver="eigh"), knn_covariance(x, 16, solver="symeig")
    assert torch.equal(a.cov, b.cov) and torch.equal(a.index, b.index)
    assert torch.allclose(a.eigvals, b.eigvals, atol=tol)
    # eigenvectors up to sign (generic clouds: separated eigenvalues)
    dots = (a.eigvecs * b.eigvecs).sum(-2).abs()
    assert torch.allclose(dots, torch.ones_like(dots), atol=100 * tol)
    c = knn_covariance(x, 16, solver=None)
    assert c.eigvals is None and c.eigvecs is None and torch.equal(c.cov, a.cov)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
@pytest.mark.parametrize("proper", [True, False])
def test_covariance_is_equivariant_under_rotations_reflections_and_translations(dtype, tol, proper):
    g = torch.Generator().manual_seed(7)
    x = cloud(N=100, dtype=dtype, seed=5)
    Q = random_orthogonal(1, 3, proper=True, generator=g, dtype=dtype)[0]
    if not proper:
        Q = Q * torch.tensor([1.0, 1.0, -1.0], dtype=dtype)  # a reflection: the other component of O(3)
    assert bool(torch.linalg.det(Q) > 0) == proper
    s = torch.randn(3, generator=g, dtype=dtype)
    r, rq = knn_covariance(x, 10), knn_covariance(x @ Q.T + s, 10)
    assert torch.equal(r.index, rq.index)
    assert torch.allclose(rq.cov, Q @ r.cov @ Q.T, atol=tol)
    assert torch.allclose(rq.eigvals, r.eigvals, atol=tol)
    # negative control: a non-uniform scaling is not a symmetry of the normalised covariance
    S = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=dtype))
    rs = knn_covariance(x @ S, 10)
    assert not torch.allclose(rs.eigvals, r.eigvals, atol=1e-2)


def test_identical_points_give_a_zero_covariance_not_nan():
    x = torch.ones(1, 5, 3)
    for solver in ("eigh", "symeig"):
        r = knn_covariance(x, 3, solver=solver)
        assert torch.equal(r.cov, torch.zeros(1, 5, 3, 3))
        assert bool(torch.isfinite(r.eigvecs).all()) and torch.equal(r.eigvals, torch.zeros(1, 5, 3))


def test_the_normals_models_local_pca_is_this_function():
    from equiframe.models.normals import knn_geometry

    x = cloud(B=1, N=128, dtype=torch.float32, seed=9)
    C, normal, lam = knn_geometry(x[0], 12)
    r = knn_covariance(x, 12)
    assert torch.equal(C, r.cov[0]) and torch.equal(lam, r.eigvals[0]) and torch.equal(normal, r.eigvecs[0, ..., 0])


@pytest.mark.parametrize("kwargs,message", [
    ({"k": 2}, "k: expected d = 3 <= k <= N = 10, got 2"),
    ({"k": 11}, "k: expected d = 3 <= k <= N = 10, got 11"),
    ({"k": 0}, "k: expected a positive integer, got 0"),
    ({"k": True}, "k: expected a positive integer, got True"),
    ({"k": 4, "solver": "qr"}, "solver: expected 'eigh', 'symeig' or None, got 'qr'"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        knn_covariance(cloud(B=1, N=10), **kwargs)
    with pytest.raises(ValueError, match="x: expected a tensor"):
        knn_covariance(torch.zeros(10, 3), 4)
