"""Per-row rotations of typed features (the tensor-frame hot path) against an explicit einsum reference.

Covers the component-major kernel of ``TensorReps._rotate`` for ``x [B, C]`` with one matrix per row
(chunked no-grad program, autograd path), ``kron_power``, and the edge-index validation of ``TFGraph``.
"""

from __future__ import annotations

import pytest
import torch

from equiframe.groups import random_orthogonal
from equiframe.nn.tensor_frames import TFGraph
from equiframe.reps import TensorReps, kron_power

_EINSUM = {1: "nai,nmi->nma", 2: "nai,nbj,nmij->nmab", 3: "nai,nbj,nck,nmijk->nmabc"}


def _reference(reps: TensorReps, x: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """rho(R_n) x_n block by block with explicit einsums (order <= 3), det(R) for pseudo blocks."""
    d, n = reps.dim, x.shape[0]
    det = torch.linalg.det(R)
    out = []
    for b, sl in reps.slices():
        xs = x[:, sl]
        if b.order == 0:
            y = xs
        else:
            t = xs.reshape(n, b.mul, *([d] * b.order))
            y = torch.einsum(_EINSUM[b.order], *([R] * b.order), t).reshape(n, -1)
        if b.parity == "p":
            y = y * det[:, None]
        out.append(y)
    return torch.cat(out, 1)


def _tol(dtype: torch.dtype) -> dict:
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-11)


SPECS = [
    "3x1n",
    "2x2n",
    "1x3n",
    "1x0n+7x2n",
    "2x0n+1x1p+2x2n+1x3p",
    "1x2p+3x0n+2x1n+1x0p+2x2n",  # scattered blocks of one order, mixed parities
    "2x2n+1x1n+1x2p+2x3n+1x1p",
]


@pytest.mark.parametrize("d", [2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("spec", SPECS)
def test_rotate_rows_matches_einsum(d, dtype, spec):
    gen = torch.Generator().manual_seed(d * 101 + len(spec))
    reps = TensorReps(spec, dim=d)
    # a small chunk forces many chunks and an overlapping last chunk (537 is not a multiple of it)
    for n in (2, 3, 537):
        R = random_orthogonal(n, d, generator=gen, dtype=dtype)
        x = torch.randn(n, reps.size, generator=gen, dtype=dtype)
        with torch.no_grad():
            torch.testing.assert_close(reps.to_local(x, R, chunk_size=64), _reference(reps, x, R), **_tol(dtype))
            torch.testing.assert_close(reps.to_global(x, R, chunk_size=64), _reference(reps, x, R.transpose(1, 2)), **_tol(dtype))
        xg, Rg = x.clone().requires_grad_(), R.clone().requires_grad_()
        y = reps.transform(xg, Rg)
        assert y.requires_grad
        torch.testing.assert_close(y, _reference(reps, x, R), **_tol(dtype))
        # gradients equal the reference's
        w = torch.randn(y.shape, generator=gen, dtype=dtype)
        gx, gR = torch.autograd.grad((y * w).sum(), (xg, Rg))
        xr, Rr = x.clone().requires_grad_(), R.clone().requires_grad_()
        rx, rR = torch.autograd.grad((_reference(reps, xr, Rr) * w).sum(), (xr, Rr))
        torch.testing.assert_close(gx, rx, **_tol(dtype))
        torch.testing.assert_close(gR, rR, **_tol(dtype))


@pytest.mark.parametrize("spec", ["1x0n+2x2n", "1x1p+1x3n", "2x1n+1x0p+1x2p"])
def test_rotate_rows_gradcheck(spec):
    gen = torch.Generator().manual_seed(3)
    reps = TensorReps(spec, dim=3)
    R = random_orthogonal(4, 3, generator=gen, dtype=torch.float64).requires_grad_()
    x = torch.randn(4, reps.size, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: reps.transform(a, b), (x, R))
    assert torch.autograd.gradcheck(lambda a, b: reps.to_global(a, b), (x, R))


def test_rotate_rows_no_grad_equals_grad_path():
    """The chunked in-place program (inference) and the out-of-place autograd path agree exactly-ish."""
    gen = torch.Generator().manual_seed(5)
    reps = TensorReps("3x0n+2x1n+1x1p+4x2n+1x3p", dim=3)
    R = random_orthogonal(1000, 3, generator=gen, dtype=torch.float64)
    x = torch.randn(1000, reps.size, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        a = reps.to_local(x, R, chunk_size=100)
    b = reps.to_local(x.clone().requires_grad_(), R).detach()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


def test_rotate_rows_inverse_and_noncontiguous_input():
    gen = torch.Generator().manual_seed(6)
    reps = TensorReps("1x0n+7x2n", dim=3)
    R = random_orthogonal(300, 3, generator=gen, dtype=torch.float32)
    big = torch.randn(300, reps.size + 5, generator=gen)
    x = big[:, 2 : 2 + reps.size]  # a strided slice
    with torch.no_grad():
        y = reps.to_local(x, R)
        torch.testing.assert_close(y, _reference(reps, x.contiguous(), R), **_tol(torch.float32))
        torch.testing.assert_close(reps.to_global(y, R), x, **_tol(torch.float32))
    assert y.is_contiguous() and y.shape == x.shape


def test_rotate_rows_mixed_dtypes_promote():
    gen = torch.Generator().manual_seed(7)
    reps = TensorReps("2x2n", dim=3)
    R = random_orthogonal(10, 3, generator=gen, dtype=torch.float64)
    x = torch.randn(10, reps.size, generator=gen)
    y = reps.to_local(x, R)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, _reference(reps, x.double(), R), **_tol(torch.float64))


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("batch", [(5,), (2, 3), ()])
def test_kron_power_matches_einsum(k, batch):
    gen = torch.Generator().manual_seed(k)
    for d in (1, 2, 3):
        R = torch.randn(*batch, d, d, generator=gen, dtype=torch.float64)
        K = kron_power(R, k)
        assert K.shape == (*batch, d**k, d**k)
        ref = torch.ones(*batch, 1, 1, dtype=torch.float64)
        for _ in range(k):
            q = ref.shape[-1]
            ref = torch.einsum("...ac,...bd->...abcd", ref, R).reshape(*batch, q * d, q * d)
        torch.testing.assert_close(K, ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(kron_power(R.transpose(-1, -2), k), ref.transpose(-1, -2), rtol=0, atol=1e-12)


def test_kron_power_gradcheck():
    gen = torch.Generator().manual_seed(1)
    R = torch.randn(3, 2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda r: kron_power(r, 3), (R,))


def test_graph_edge_index_range_checked():
    gen = torch.Generator().manual_seed(2)
    R = random_orthogonal(4, 3, generator=gen)
    ok = torch.tensor([[0, 1, 3], [1, 2, 0]])
    assert TFGraph(ok, R).num_edges == 3
    with pytest.raises(ValueError, match="max source 4"):
        TFGraph(torch.tensor([[0, 4], [1, 2]]), R)
    with pytest.raises(ValueError, match="got min -1"):
        TFGraph(torch.tensor([[0, 1], [-1, 2]]), R)
    R2 = random_orthogonal(2, 3, generator=gen)
    assert TFGraph(torch.tensor([[3, 0], [1, 0]]), (R, R2)).num_edges == 2
    with pytest.raises(ValueError, match="max target 2"):
        TFGraph(torch.tensor([[3, 0], [2, 0]]), (R, R2))


@pytest.mark.parametrize("name", ["GINConv", "SAGEConv", "GCNConv", "GINEConv"])
@pytest.mark.parametrize("grad", [False, True])
def test_light_layers_chunked_rotations_equal_expand(name, grad):
    """TFConv on an order-2-heavy reps with the per-node rotations forced into many chunks (no-grad program)
    or through the autograd path equals the per-edge transport of expand/gcn mode (float64)."""
    from torch_geometric.nn import GCNConv, GINConv, GINEConv, SAGEConv

    from equiframe.nn.tensor_frames import TFConv

    gen = torch.Generator().manual_seed(11)
    torch.manual_seed(0)
    reps = TensorReps("1x0n+3x2n+1x1p", dim=3)
    n, k = 2500, 4  # more rows than one default chunk (2114 rows of this reps): several chunks, the last overlapping
    pos = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    nb = torch.cdist(pos, pos).fill_diagonal_(float("inf")).topk(k, largest=False).indices
    ei = torch.stack([nb.reshape(-1), torch.arange(n).repeat_interleave(k)])
    frames = random_orthogonal(n, 3, generator=gen, dtype=torch.float64)
    x = torch.randn(n, reps.size, generator=gen, dtype=torch.float64, requires_grad=grad)
    s = reps.size
    mlp = torch.nn.Sequential(torch.nn.Linear(s, 16), torch.nn.ReLU(), torch.nn.Linear(16, s))
    layer = {"GINConv": lambda: GINConv(mlp), "SAGEConv": lambda: SAGEConv(s, s), "GCNConv": lambda: GCNConv(s, s),
             "GINEConv": lambda: GINEConv(mlp, edge_dim=4)}[name]().double()
    fast = TFConv(layer, reps)
    slow = TFConv(layer, reps, mode="gcn" if name == "GCNConv" else "expand")
    with torch.set_grad_enabled(grad):
        a, b = fast(x, ei, frames, pos), slow(x, ei, frames, pos)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-11)
    if grad:
        ga = torch.autograd.grad(a.square().sum(), x)[0]
        gb = torch.autograd.grad(b.square().sum(), x)[0]
        torch.testing.assert_close(ga, gb, rtol=0, atol=1e-10)
