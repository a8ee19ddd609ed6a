"""Tests of equiframe.frames.local: per-node frames R_i with R_i(Q x + s) = R_i(x) Q^T."""

from __future__ import annotations

import math

import pytest
import torch

from equiframe.frames.local import (
    LearnedFrames,
    LocalPCAFrames,
    gram_schmidt_frames,
    identity_frames,
    local_pca_frames,
    neighbourhood_ties,
    polynomial_envelope,
    random_global_frames,
    random_local_frames,
)
from equiframe.geometry import knn_graph
from equiframe.groups import EuclideanGroup, GroupElement

DIMS = [2, 3, 4]

@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin contention on the shared 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


DTYPES = [torch.float32, torch.float64]
SIZES = [24, 40, 17, 31]


def _atol(dtype: torch.dtype) -> float:
    return 1e-9 if dtype == torch.float64 else 1e-4


def _cloud(d: int, dtype: torch.dtype, seed: int = 0, sizes=SIZES):
    """A batch of generic anisotropic clouds and its kNN graph (built once, in float64)."""
    g = torch.Generator().manual_seed(seed)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    scale = torch.linspace(1.0, 0.5, d, dtype=torch.float64)
    pos = torch.randn(batch.numel(), d, generator=g, dtype=torch.float64) * scale
    edge_index = knn_graph(pos, 2 * d + 2, batch, backend="torch")
    return pos.to(dtype), batch, edge_index, g


def _transforms(B: int, d: int, dtype: torch.dtype, g: torch.Generator) -> GroupElement:
    """Independent E(d) elements per graph; graph 0 a reflection, graph 1 a rotation."""
    G = EuclideanGroup.parse(f"E({d})").sample(B, generator=g, dtype=torch.float64, translation_scale=3.0)
    Q = G.Q.clone()
    det = torch.linalg.det(Q)
    want = torch.ones(B, dtype=torch.float64)
    want[0] = -1.0
    want[2:] = det[2:]
    Q[:, 0, :] *= (det * want)[:, None]
    return GroupElement(Q.to(dtype), G.s.to(dtype))


def _orth_err(R: torch.Tensor) -> float:
    eye = torch.eye(R.shape[-1], dtype=R.dtype)
    R = R.detach()
    return float((R @ R.transpose(-1, -2) - eye).abs().max())


# ----------------------------------------------------------------------------------------------
# ablation frames
# ----------------------------------------------------------------------------------------------


def test_identity_and_random_frames():
    R = identity_frames(5, 3, dtype=torch.float64)
    assert R.shape == (5, 3, 3) and torch.equal(R, torch.eye(3, dtype=torch.float64).expand(5, 3, 3))
    R[0, 0, 0] = 2.0  # a real tensor, not a broadcast view
    assert R[1, 0, 0] == 1.0
    g = torch.Generator().manual_seed(0)
    R = random_local_frames(400, 4, g, dtype=torch.float64)
    assert R.shape == (400, 4, 4) and _orth_err(R) < 1e-12
    det = torch.linalg.det(R)
    assert bool((det > 0).any()) and bool((det < 0).any())
    assert torch.equal(R, random_local_frames(400, 4, torch.Generator().manual_seed(0), dtype=torch.float64))
    assert random_local_frames(3, 2).dtype == torch.get_default_dtype()
    batch = torch.tensor([0, 0, 2, 2, 2, 1])
    R = random_global_frames(batch, 3, g, dtype=torch.float32)
    assert R.shape == (6, 3, 3) and R.dtype == torch.float32 and _orth_err(R) < 1e-5
    assert torch.equal(R[0], R[1]) and torch.equal(R[2], R[4]) and not torch.equal(R[0], R[2])
    with pytest.raises(ValueError, match="num_graphs"):
        random_global_frames(batch, 3, g, num_graphs=2)
    with pytest.raises(ValueError, match="dim"):
        identity_frames(3, 0)
    with pytest.raises(ValueError, match="num_nodes"):
        random_local_frames(-1, 3)
    with pytest.raises(TypeError, match="dtype"):
        identity_frames(3, 3, dtype=torch.long)


# ----------------------------------------------------------------------------------------------
# local PCA frames
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("center", ["node", "centroid"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", DIMS)
def test_pca_equivariance_per_graph(d, dtype, center):
    pos, batch, ei, g = _cloud(d, dtype, seed=d)
    G = _transforms(len(SIZES), d, dtype, g)
    pos2 = G.act_batched(pos, "pos", index=batch)
    R, m = local_pca_frames(pos, ei, center=center, return_mask=True)
    R2, m2 = local_pca_frames(pos2, ei, center=center, return_mask=True)
    assert R.dtype == dtype and R.shape == (pos.shape[0], d, d)
    assert _orth_err(R) < 10 * _atol(dtype) and _orth_err(R2) < 10 * _atol(dtype)
    assert torch.equal(m, m2)
    assert float(m.float().mean()) < (0.1 if center == "node" else 0.2)  # generic clouds: few degenerate nodes
    ok = ~m
    expected = R @ G.Q[batch].transpose(-1, -2)
    assert float((R2 - expected)[ok].abs().max()) <= _atol(dtype)
    det = torch.linalg.det(R[ok].double())
    assert bool((det > 0).any()) and bool((det < 0).any())  # O(d) frames, not SO(d)


def test_pca_builds_graph_and_module():
    d, dtype = 3, torch.float64
    pos, batch, _, g = _cloud(d, dtype, seed=11)
    G = _transforms(len(SIZES), d, dtype, g)
    pos2 = G.act_batched(pos, "pos", index=batch)
    mod = LocalPCAFrames(k=8, return_mask=True)
    R, m = mod(pos, batch=batch)
    R2, m2 = mod(pos2, batch=batch)
    expected = R @ G.Q[batch].transpose(-1, -2)
    assert float((R2 - expected)[~m].abs().max()) <= 1e-9
    R3 = local_pca_frames(pos, knn_graph(pos, 8, batch))
    assert torch.equal(R, R3)
    Rr = local_pca_frames(pos, r=1.0, batch=batch)
    Rr2 = local_pca_frames(pos2, r=1.0, batch=batch)
    _, mr = local_pca_frames(pos, r=1.0, batch=batch, return_mask=True)
    assert float((Rr2 - Rr @ G.Q[batch].transpose(-1, -2))[~mr].abs().max()) <= 1e-9


def test_pca_negative_controls():
    """Raw eigenvectors (no sign rule) and right-handed frames fail the reflection check."""
    d, dtype = 3, torch.float64
    pos, batch, ei, g = _cloud(d, dtype, seed=5)
    G = _transforms(len(SIZES), d, dtype, g)
    pos2 = G.act_batched(pos, "pos", index=batch)
    expected_of = lambda R: R @ G.Q[batch].transpose(-1, -2)  # noqa: E731
    src, dst = ei
    N = pos.shape[0]

    def raw(x):
        y = x[src] - x[dst]
        C = torch.zeros(N, d, d, dtype=dtype).index_add_(0, dst, y[:, :, None] * y[:, None, :])
        return torch.linalg.eigh(C)[1].flip(-1).transpose(-1, -2)

    assert float((raw(pos2) - expected_of(raw(pos))).abs().max()) > 0.5
    Rr = local_pca_frames(pos, ei, handedness="right")
    Rr2 = local_pca_frames(pos2, ei, handedness="right")
    assert torch.allclose(torch.linalg.det(Rr), torch.ones(N, dtype=dtype))
    err = (Rr2 - expected_of(Rr)).abs().amax((1, 2))
    refl = torch.linalg.det(G.Q)[batch] < 0
    assert float(err[refl].min()) > 0.5  # every reflected node fails (last axis flipped)
    _, m = local_pca_frames(pos, ei, return_mask=True)
    assert float(err[~refl & ~m].max()) <= 1e-9  # rotations are fine


def test_pca_degenerate_neighbourhoods_are_finite():
    dtype = torch.float64
    # graph 0: isolated node; graph 1: one neighbour; graph 2: collinear; graph 3: coplanar;
    # graph 4: duplicates of the node; graph 5: all identical
    pts = [
        [[0.0, 0.0, 0.0]],
        [[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]],
        [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [-1.0, -1.0, -1.0]],
        [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [3.0, 1.0, 0.0], [-1.0, 0.5, 0.0]],
        [[0.5, 0.5, 0.5]] * 3 + [[1.5, 0.0, 2.0]],
        [[1.0, 2.0, 3.0]] * 4,
    ]
    pos = torch.tensor([p for grp in pts for p in grp], dtype=dtype)
    batch = torch.repeat_interleave(torch.arange(len(pts)), torch.tensor([len(p) for p in pts]))
    ei = knn_graph(pos, 4, batch, backend="torch")
    for center in ("node", "centroid"):
        R, m = local_pca_frames(pos, ei, center=center, return_mask=True)
        assert bool(torch.isfinite(R).all()) and _orth_err(R) < 1e-12
        assert bool(m.all())  # none of these neighbourhoods determines a frame
    R = local_pca_frames(pos, ei)
    assert torch.equal(R[0], torch.eye(3, dtype=dtype))  # isolated -> identity
    assert torch.equal(R[-1], torch.eye(3, dtype=dtype))  # all identical -> identity
    # the single-neighbour node's first axis is its neighbour direction (well defined)
    u = torch.tensor([1.0, 2.0, 3.0], dtype=dtype) / math.sqrt(14.0)
    assert torch.allclose(R[1, 0], u, atol=1e-12)
    # float32 too
    R32 = local_pca_frames(pos.float(), ei)
    assert bool(torch.isfinite(R32).all()) and _orth_err(R32) < 1e-5


def test_pca_gradients_detach_option():
    pos, batch, ei, _ = _cloud(3, torch.float64, seed=3)
    pos = pos.requires_grad_(True)
    R = local_pca_frames(pos, ei)
    assert not R.requires_grad
    R = local_pca_frames(pos, ei, detach=False)
    assert R.requires_grad
    (gpos,) = torch.autograd.grad((R * torch.randn_like(R)).sum(), pos)
    assert bool(torch.isfinite(gpos).all())


def test_pca_edge_weight_and_validation():
    pos, batch, ei, _ = _cloud(3, torch.float64, seed=4)
    w = torch.ones(ei.shape[1], dtype=torch.float64)
    assert torch.allclose(local_pca_frames(pos, ei, edge_weight=2 * w), local_pca_frames(pos, ei), atol=1e-12)
    with pytest.raises(ValueError, match="edge_weight"):
        local_pca_frames(pos, ei, edge_weight=-w)
    with pytest.raises(ValueError, match="edge_weight"):
        local_pca_frames(pos, ei, edge_weight=w[:-1])
    with pytest.raises(ValueError, match="edge_index"):
        local_pca_frames(pos)  # neither graph nor k / r
    with pytest.raises(ValueError, match="edge_index"):
        local_pca_frames(pos, k=3, r=1.0)
    with pytest.raises(ValueError, match="edge_index"):
        local_pca_frames(pos, torch.tensor([[0], [pos.shape[0]]]))
    with pytest.raises(ValueError, match="edge_index"):
        local_pca_frames(pos, torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="different graphs"):
        local_pca_frames(pos, torch.tensor([[0], [pos.shape[0] - 1]]), batch=batch)
    with pytest.raises(ValueError, match="NaN"):
        bad = pos.clone()
        bad[3, 1] = math.nan
        local_pca_frames(bad, ei)
    with pytest.raises(ValueError, match="pos"):
        local_pca_frames(pos[:, 0], ei)
    with pytest.raises(ValueError, match="center"):
        local_pca_frames(pos, ei, center="mean")
    with pytest.raises(ValueError, match="handedness"):
        local_pca_frames(pos, ei, handedness="left")


# ----------------------------------------------------------------------------------------------
# Gram-Schmidt completion
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", DIMS)
def test_gram_schmidt_equivariant_with_reflections(d, dtype):
    g = torch.Generator().manual_seed(d)
    v = torch.randn(64, d, d, generator=g, dtype=torch.float64).to(dtype)
    Q = EuclideanGroup.parse(f"O({d})").sample(64, generator=g, dtype=dtype).Q
    R, m = gram_schmidt_frames(v, return_mask=True)
    R2, m2 = gram_schmidt_frames(v @ Q.transpose(-1, -2), return_mask=True)  # v_k -> Q v_k
    assert torch.equal(m, m2) and int(m.sum()) <= 2  # a random Gaussian matrix is rarely ill-conditioned
    assert _orth_err(R) < 10 * _atol(dtype)
    assert float((R2 - R @ Q.transpose(-1, -2))[~m].abs().max()) <= _atol(dtype)
    # the last axis follows the handedness of the input: det R = sign det(v)
    assert torch.equal(torch.linalg.det(R[~m].double()).sign(), torch.linalg.det(v[~m].double()).sign())


def test_gram_schmidt_fallbacks():
    v = torch.zeros(4, 3, 3, dtype=torch.float64)
    v[1, 0] = torch.tensor([0.0, 0.0, 2.0])  # only one vector
    v[2] = torch.tensor([1.0, 1.0, 0.0])  # all parallel
    v[3, 0], v[3, 1] = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    v[3, 2] = torch.tensor([1.0, 1.0, 0.0])  # last vector in the span of the first two
    R, m = gram_schmidt_frames(v, return_mask=True)
    assert bool(m.all()) and _orth_err(R) < 1e-12
    assert torch.equal(R[0], torch.eye(3, dtype=torch.float64))  # zero vectors -> identity
    assert torch.allclose(R[1, 0], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    assert torch.allclose(torch.linalg.det(R), torch.ones(4, dtype=torch.float64))  # fallback det +1
    with pytest.raises(ValueError, match="vectors"):
        gram_schmidt_frames(torch.zeros(4, 3, 2))


def test_polynomial_envelope_is_c2_at_cutoff():
    x = torch.tensor([0.0, 0.5, 1.0 - 1e-7, 1.0, 1.3], dtype=torch.float64, requires_grad=True)
    u = polynomial_envelope(x, 5)
    assert u.tolist()[0] == 1.0 and u.tolist()[3:] == [0.0, 0.0]
    (du,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    (d2u,) = torch.autograd.grad(du.sum(), x)
    # u'' ~ C (1 - x) near the cutoff: continuous, vanishing at 1
    assert abs(du.tolist()[2]) < 1e-9 and abs(d2u.tolist()[2]) < 1e-3 and d2u.tolist()[3:] == [0.0, 0.0]


# ----------------------------------------------------------------------------------------------
# learned frames
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rbf", ["gaussian", "bessel"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", DIMS)
def test_learned_equivariance_per_graph(d, dtype, rbf):
    pos, batch, ei, g = _cloud(d, dtype, seed=10 + d)
    G = _transforms(len(SIZES), d, dtype, g)
    pos2 = G.act_batched(pos, "pos", index=batch)
    torch.manual_seed(0)  # module init only
    h = torch.randn(pos.shape[0], 2, generator=g, dtype=torch.float64).to(dtype)
    model = LearnedFrames(d, cutoff=4.0, in_features=2, rbf=rbf, hidden_channels=32, return_mask=True).to(dtype)
    with torch.no_grad():
        R, m = model(pos, ei, h=h)
        R2, m2 = model(pos2, ei, h=h)
    assert R.dtype == dtype and R.shape == (pos.shape[0], d, d)
    assert torch.equal(m, m2) and float(m.float().mean()) < 0.15
    assert _orth_err(R) < 10 * _atol(dtype) and _orth_err(R2) < 10 * _atol(dtype)
    expected = R @ G.Q[batch].transpose(-1, -2)
    assert float((R2 - expected)[~m].abs().max()) <= _atol(dtype)
    det = torch.linalg.det(R[~m].double())
    assert bool((det > 0).any()) and bool((det < 0).any())  # reflections are produced


def test_learned_builds_radius_graph_and_knn():
    d, dtype = 3, torch.float64
    pos, batch, _, g = _cloud(d, dtype, seed=21)
    G = _transforms(len(SIZES), d, dtype, g)
    pos2 = G.act_batched(pos, "pos", index=batch)
    torch.manual_seed(1)
    for kw in ({}, {"k": 7}):
        model = LearnedFrames(d, cutoff=2.0, return_mask=True, **kw).double()
        with torch.no_grad():
            R, m = model(pos, batch=batch)
            R2, _ = model(pos2, batch=batch)
        assert float((R2 - R @ G.Q[batch].transpose(-1, -2))[~m].abs().max()) <= 1e-9


def test_learned_negative_control_cross_product_completion():
    """handedness='right' (cross-product / Hodge completion, SO(d) frames) breaks reflections."""
    d, dtype = 3, torch.float64
    pos, batch, ei, g = _cloud(d, dtype, seed=31)
    G = _transforms(len(SIZES), d, dtype, g)
    pos2 = G.act_batched(pos, "pos", index=batch)
    torch.manual_seed(2)
    model = LearnedFrames(d, cutoff=4.0, handedness="right", return_mask=True).double()
    with torch.no_grad():
        R, m = model(pos, ei)
        R2, _ = model(pos2, ei)
    assert torch.allclose(torch.linalg.det(R), torch.ones(len(R), dtype=dtype))
    err = (R2 - R @ G.Q[batch].transpose(-1, -2)).abs().amax((1, 2))
    refl = torch.linalg.det(G.Q)[batch] < 0
    assert float(err[refl & ~m].min()) > 0.5
    assert float(err[~refl & ~m].max()) <= 1e-9


@pytest.mark.parametrize("d", DIMS)
def test_permutation_equivariance(d):
    dtype = torch.float64
    pos, batch, ei, g = _cloud(d, dtype, seed=40 + d)
    N = pos.shape[0]
    perm = torch.randperm(N, generator=g)  # relabel nodes (graphs interleaved in storage)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(N)
    ei_p = inv[ei]
    torch.manual_seed(3)
    model = LearnedFrames(d, cutoff=4.0).double()
    for f in (lambda p, e: local_pca_frames(p, e), lambda p, e: model(p, e).detach()):
        R = f(pos, ei)
        Rp = f(pos[perm], ei_p)
        assert float((Rp - R[perm]).abs().max()) <= 1e-9
    # internally built graphs with an unsorted batch vector
    R = local_pca_frames(pos, k=5, batch=batch)
    Rp = local_pca_frames(pos[perm], k=5, batch=batch[perm])
    assert float((Rp - R[perm]).abs().max()) <= 1e-9


@pytest.mark.parametrize("dtype", DTYPES)
def test_learned_degenerate_finite_first_and_second_derivatives(dtype):
    pts = [
        [[0.0, 0.0, 0.0]],  # isolated
        [[0.0, 0.0, 0.0], [1.0, 0.5, 0.2]],  # one neighbour
        [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [-1.0, -1.0, -1.0]],  # collinear
        [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 0.5, 0.0]],  # coplanar
        [[0.5, 0.5, 0.5]] * 3 + [[1.5, 0.0, 1.0]],  # duplicates
        [[1.0, 2.0, 3.0]] * 4,  # all identical
        [[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]],  # neighbour beyond the cutoff
    ]
    pos = torch.tensor([p for grp in pts for p in grp], dtype=dtype, requires_grad=True)
    batch = torch.repeat_interleave(torch.arange(len(pts)), torch.tensor([len(p) for p in pts]))
    ei = knn_graph(pos, 4, batch, backend="torch")
    torch.manual_seed(4)
    model = LearnedFrames(3, cutoff=3.0, return_mask=True).to(dtype)
    R, m = model(pos, ei)
    assert bool(torch.isfinite(R).all()) and _orth_err(R) < 10 * _atol(dtype)
    assert bool(m[:2].all()) and bool(m[-2:].all())  # isolated, single neighbour, beyond cutoff
    weights = torch.randn(R.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(dtype)
    energy = (R * weights).sum()
    (force,) = torch.autograd.grad(energy, pos, create_graph=True)
    assert bool(torch.isfinite(force).all())
    # force-matching loss: its gradients w.r.t. positions and parameters are second derivatives
    params = list(model.parameters())
    grads = torch.autograd.grad((force * force).sum(), [pos, *params], allow_unused=True)
    assert all(gr is None or bool(torch.isfinite(gr).all()) for gr in grads)
    assert grads[0] is not None and float(grads[0].abs().max()) > 0


def test_learned_double_backward_generic_matches_finite_differences():
    d, dtype = 3, torch.float64
    pos, batch, ei, g = _cloud(d, dtype, seed=50, sizes=[7])
    torch.manual_seed(5)
    model = LearnedFrames(d, cutoff=4.0, num_rbf=6, hidden_channels=8, num_layers=1).double()
    weights = torch.randn(pos.shape[0], d, d, generator=g, dtype=dtype)
    energy = lambda p: (model(p, ei) * weights).sum()  # noqa: E731
    assert torch.autograd.gradcheck(energy, (pos.clone().requires_grad_(True),), atol=1e-6)
    assert torch.autograd.gradgradcheck(energy, (pos.clone().requires_grad_(True),), atol=1e-5)


def test_learned_validation():
    model = LearnedFrames(3, cutoff=2.0)
    pos = torch.randn(10, 3)
    ei = knn_graph(pos, 3)
    with pytest.raises(ValueError, match="dim=3"):
        model(torch.randn(10, 2), ei)
    with pytest.raises(TypeError, match="dtype"):
        model(pos.double(), ei)
    with pytest.raises(ValueError, match="h"):
        model(pos, ei, h=torch.randn(10, 2))
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((10, 3), math.nan), ei)
    with pytest.raises(ValueError, match="edge_index"):
        model(pos, ei.float().long()[:1])
    model_h = LearnedFrames(3, cutoff=2.0, in_features=4)
    with pytest.raises(ValueError, match="h"):
        model_h(pos, ei)
    with pytest.raises(ValueError, match="h"):
        model_h(pos, ei, h=torch.randn(10, 3))
    with pytest.raises(ValueError, match="cutoff"):
        LearnedFrames(3, cutoff=-1.0)
    with pytest.raises(ValueError, match="rbf"):
        LearnedFrames(3, cutoff=1.0, rbf="sinc")
    with pytest.raises(ValueError, match="handedness"):
        LearnedFrames(3, cutoff=1.0, handedness="left")
    with pytest.raises(ValueError, match="dim"):
        LearnedFrames(0, cutoff=1.0)


# ----------------------------------------------------------------------------------------------
# neighbourhood ties: lattices and crystals (unflagged => equivariant)
# ----------------------------------------------------------------------------------------------
def _lattice(kind: str) -> torch.Tensor:
    """A finite patch of a lattice (float64): square/rectangular/hexagonal in 2-D, cubic/fcc in 3-D."""
    if kind in ("square", "rect"):
        g = torch.stack(torch.meshgrid(torch.arange(6.0), torch.arange(6.0), indexing="ij"), -1).reshape(-1, 2)
        return g.double() * (torch.tensor([1.0, 1.37], dtype=torch.float64) if kind == "rect" else 1.0)
    if kind == "hex":
        i, j = torch.meshgrid(torch.arange(6.0), torch.arange(6.0), indexing="ij")
        return torch.stack([i + 0.5 * j, j * math.sqrt(3) / 2], -1).reshape(-1, 2).double()
    cube = torch.stack(torch.meshgrid(*[torch.arange(4.0)] * 3, indexing="ij"), -1).reshape(-1, 3).double()
    if kind == "cubic":
        return cube
    basis = torch.tensor([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], dtype=torch.float64)
    return (cube[:27, None, :] + basis[None]).reshape(-1, 3)  # fcc, 3x3x3 conventional cells


LATTICE_CASES = [("square", 2), ("square", 6), ("rect", 3), ("hex", 2), ("hex", 4), ("cubic", 5), ("fcc", 8),
                 ("fcc", 14)]


def _transformed(pos: torch.Tensor, dtype, g: torch.Generator):
    d = pos.shape[1]
    Q = EuclideanGroup.parse(f"E({d})").sample((), generator=g, dtype=torch.float64, translation_scale=3.0)
    perm = torch.randperm(pos.shape[0], generator=g)
    return Q, perm, (pos @ Q.Q.T + Q.s)[perm].to(dtype)


@pytest.mark.parametrize(("kind", "k"), LATTICE_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pca_lattice_unflagged_nodes_are_equivariant(kind, k, dtype):
    """Rotations, reflections, translations and relabelling of lattice patches: every node left
    unflagged gets the transformed frame, and the flags themselves are invariant."""
    pos64 = _lattice(kind)
    pos = pos64.to(dtype)
    R, m = local_pca_frames(pos, k=k, return_mask=True)
    for seed in (0, 1):  # a rotation and (seed 1) a reflection, each with a relabelling
        g = torch.Generator().manual_seed(seed)
        Q, perm, pos2 = _transformed(pos64, dtype, g)
        if (torch.linalg.det(Q.Q) > 0) == bool(seed):
            Q = GroupElement(Q.Q * torch.tensor([-1.0] + [1.0] * (pos.shape[1] - 1), dtype=torch.float64)[:, None],
                             Q.s)
            pos2 = (pos64 @ Q.Q.T + Q.s)[perm].to(dtype)
        R2, m2 = local_pca_frames(pos2, k=k, return_mask=True)
        assert torch.equal(m2, m[perm]), "the degenerate flags must not depend on the pose or the labels"
        ok = ~m[perm]
        want = (R[perm] @ Q.Q.T.to(dtype))
        if bool(ok.any()):
            assert float((R2 - want)[ok].abs().max()) <= (1e-3 if dtype == torch.float32 else 1e-9)
        assert bool(torch.isfinite(R2).all())


@pytest.mark.parametrize(("kind", "k"), [("fcc", 8)])
def test_lattice_ties_were_silently_wrong_without_the_flag(kind, k):
    """Negative control: with the same k-NN graphs given explicitly (no tie check), some unflagged nodes
    of a lattice get frames that are not equivariant -- the case the tie flag exists for -- and the tie
    flag catches every one of them."""
    pos = _lattice(kind)
    g = torch.Generator().manual_seed(0)
    Q, perm, pos2 = _transformed(pos, torch.float64, g)
    R, m = local_pca_frames(pos, knn_graph(pos, k), return_mask=True)
    R2, m2 = local_pca_frames(pos2, knn_graph(pos2, k), return_mask=True)
    bad = (~m[perm]) & (~m2) & ((R2 - R[perm] @ Q.Q.T).abs().amax((1, 2)) > 1e-6)
    assert bool(bad.any())
    assert bool(neighbourhood_ties(pos, k=k)[perm][bad].all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [2, 3])
def test_random_clouds_mostly_unflagged_and_equivariant(dtype, d):
    g = torch.Generator().manual_seed(d)
    pos64 = torch.randn(60, d, generator=g, dtype=torch.float64) * torch.linspace(1.0, 0.6, d, dtype=torch.float64)
    R, m = local_pca_frames(pos64.to(dtype), k=2 * d + 2, return_mask=True)
    ties = neighbourhood_ties(pos64.to(dtype), k=2 * d + 2)
    assert float(ties.float().mean()) == 0.0 and float(m.float().mean()) < 0.15
    Q, perm, pos2 = _transformed(pos64, dtype, g)
    R2, m2 = local_pca_frames(pos2, k=2 * d + 2, return_mask=True)
    ok = ~m[perm] & ~m2
    assert float((R2 - R[perm] @ Q.Q.T.to(dtype))[ok].abs().max()) <= (1e-3 if dtype == torch.float32 else 1e-9)


def test_tie_rules_radius_cap_and_learned_frames():
    pos = _lattice("square")
    # radius exactly through the second shell (sqrt 2): on the sphere -> flagged; strictly between -> not
    assert bool(neighbourhood_ties(pos, r=math.sqrt(2.0)).all())
    assert not bool(neighbourhood_ties(pos, r=1.2).any())
    # cap inside the first shell (4 points at distance 1, cap 2): tie -> interior nodes flagged
    capped = neighbourhood_ties(pos, r=1.2, max_num_neighbors=2)
    interior = ((pos > 0) & (pos < 5)).all(1)
    assert bool(capped[interior].all())
    # a tie of the k-th and (k+1)-th distance within rounding: flagged in float32, not a real gap
    tiny = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0 + 1e-9], [5.0, 5.0]], dtype=torch.float32)
    assert bool(neighbourhood_ties(tiny, k=1)[0])
    assert not bool(neighbourhood_ties(tiny.double() * torch.tensor([1.0, 1.1], dtype=torch.float64), k=1)[0])
    # learned frames on a k-NN lattice graph flag the tied neighbourhoods, and stay finite with gradients
    torch.manual_seed(0)
    net = LearnedFrames(2, cutoff=3.0, k=3, return_mask=True).double()
    x = pos.clone().requires_grad_(True)
    R, m = net(x)
    assert bool(m[interior].all())
    R.sum().backward()
    assert bool(torch.isfinite(R).all()) and bool(torch.isfinite(x.grad).all())


def test_pca_degenerate_lattice_gradients_finite():
    """detach=False on a lattice (repeated eigenvalues, ties): values and gradients stay finite."""
    for kind, k in (("square", 4), ("cubic", 6), ("hex", 6)):
        x = _lattice(kind).clone().requires_grad_(True)
        R, m = local_pca_frames(x, k=k, detach=False, return_mask=True)
        assert bool(m.any())
        (R * torch.linspace(0, 1, R.numel(), dtype=R.dtype).view_as(R)).sum().backward()
        assert bool(torch.isfinite(R).all()) and bool(torch.isfinite(x.grad).all())


def test_knn_graph_with_ties_is_knn_graph():
    """The (k+1)-NN search that also finds the ties returns exactly knn_graph(k) (lattices: tied order)."""
    from equiframe.frames.neighbourhood import knn_graph_with_ties

    g = torch.Generator().manual_seed(0)
    clouds = [torch.randn(50, 3, generator=g, dtype=torch.float64), _lattice("square"), _lattice("fcc").float()]
    for pos in clouds:
        batch = torch.arange(pos.shape[0]) * 3 // pos.shape[0]
        for k in (1, 4, 12):
            ei, ties = knn_graph_with_ties(pos, k, batch)
            assert torch.equal(ei, knn_graph(pos, k, batch, backend="torch"))
            assert torch.equal(ties, neighbourhood_ties(pos, k=k, batch=batch))
    tiny = torch.randn(3, 2, generator=g)  # fewer points than k + 1: all of them, no tie
    ei, ties = knn_graph_with_ties(tiny, 4)
    assert torch.equal(ei, knn_graph(tiny, 4, backend="torch")) and not bool(ties.any())
    with pytest.raises(ValueError, match="k"):
        knn_graph_with_ties(tiny, 0)
