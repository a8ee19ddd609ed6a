"""Shared fixtures: the whole suite runs in float32 and float64 where a test takes ``dtype``."""

import itertools
import os
from pathlib import Path

import pytest
import torch

# Under pytest-xdist every worker is a process: one intra-op thread each avoids oversubscribing the
# cores (small ops slow down by orders of magnitude when 2 workers x 2 threads share 2 cores).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# tolerances of the project (relative to the output scale): SPEC / issue 2
TOL = {torch.float32: 1e-4, torch.float64: 1e-9}


@pytest.fixture(params=[torch.float32, torch.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """The device to run on: every test that takes it runs on the CPU and, where one is present, on CUDA."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device(request.param)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def anisotropic_cloud(B: int = 2, N: int = 40, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    """``B`` Gaussian clouds of ``N`` points in 3-D with axis scales 1 / 0.7 / 0.4 (a separated global PCA
    spectrum), seeded."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, N, 3, generator=g, dtype=dtype) * torch.tensor([1.0, 0.7, 0.4], dtype=dtype)


def line_outer(n: torch.Tensor) -> torch.Tensor:
    """``u u^T`` (flattened) of the unit vector along ``n``: the sign-free form in which unoriented normals are
    compared."""
    u = n / n.norm(dim=-1, keepdim=True)
    return (u[..., :, None] * u[..., None, :]).flatten(-2)


def assert_reflection_and_float32_lines(m64, m32, pos: torch.Tensor) -> None:
    """The unoriented normals ``u u^T`` of a 3-D normal model: exactly reflection-equivariant in float64
    (``m64``), and under a rotation plus translation equal in float32 (``m32``) for the bulk of the points
    (median error <= 1e-4, 90 % <= 1e-3: k-NN ties may flip a few)."""
    P = torch.diag(torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64))  # a reflection
    torch.testing.assert_close(line_outer(m64(pos @ P.T)).unflatten(-1, (3, 3)),
                               P @ line_outer(m64(pos)).unflatten(-1, (3, 3)) @ P.T, rtol=1e-9, atol=1e-9)
    x = pos.float()
    Q = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(3)))[0]
    with torch.no_grad():
        err = line_outer(m32(x @ Q.T + 0.3)).unflatten(-1, (3, 3)) - Q @ line_outer(m32(x)).unflatten(-1, (3, 3)) @ Q.T
    err = err.flatten(-2).abs().amax(-1).flatten()
    assert float(err.median()) <= 1e-4 and float(err.quantile(0.9)) <= 1e-3


def cube(d=3, dtype=torch.float64):
    return torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=dtype)


def regular_simplex(d=3, dtype=torch.float64):
    """d+1 vertices of a regular simplex in R^d (centred)."""
    E = torch.eye(d + 1, dtype=torch.float64) - 1.0 / (d + 1)
    U, S, _ = torch.linalg.svd(E)
    return (U[:, :d] * S[:d]).to(dtype)


def square_in(d=3, dtype=torch.float64):
    sq = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    return torch.cat([sq, torch.zeros(4, d - 2, dtype=torch.float64)], 1).to(dtype)


def degenerate_clouds(d=3, dtype=torch.float64):
    """Named degenerate inputs: symmetric shapes, collinear, single point, identical, duplicates."""
    g = torch.Generator().manual_seed(7)
    generic = torch.randn(9, d, generator=g, dtype=torch.float64)
    line = torch.linspace(-1, 2, 5, dtype=torch.float64)[:, None] * torch.randn(1, d, generator=g, dtype=torch.float64)
    out = {
        "cube": cube(d),
        "simplex": regular_simplex(d),
        "square": square_in(d),
        "collinear": line + 0.3,
        "single": torch.randn(1, d, generator=g, dtype=torch.float64),
        "identical": torch.ones(4, d, dtype=torch.float64) * 0.5,
        "duplicates": torch.cat([generic, generic[:3]]),
    }
    return {k: v.to(dtype) for k, v in out.items()}


def disjoint_union(*graphs):
    """The PyG ``Data`` of the disjoint union of graphs (``x`` concatenated, node ids offset), in the given order."""
    from torch_geometric.data import Data

    xs, es, off = [], [], 0
    for g in graphs:
        xs.append(g.x)
        es.append(g.edge_index + off)
        off += g.num_nodes
    return Data(x=torch.cat(xs), edge_index=torch.cat(es, 1), num_nodes=off)
