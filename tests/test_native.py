"""The compiled per-row rotation kernel (equiframe._native) against the PyTorch path it replaces."""

import shutil

import pytest
import torch

from equiframe import TensorReps, _native
from equiframe.groups import random_orthogonal
from equiframe.nn import TFConv, receiver_layout, transport_edges
from equiframe.nn.tensor_frames import transport
from equiframe.nn.tf_transport import rotate_edges

needs_native = pytest.mark.skipif(not _native.available(), reason=f"native kernel: {_native.status()['reason']}")

# scalars, vectors, pseudo-vectors, order-2 (normal and pseudo), pseudo scalars, interleaved (scattered) blocks
REPS = ["32x0n+16x1n", "1x0n+7x2n", "2x1n+3x0n+1x2p+1x1p+2x0p+1x2n", "1x2p", "3x0p"]
TOL = {torch.float32: 2e-5, torch.float64: 1e-12}


def _torch_path(monkeypatch, fn):
    with _native.use_native(False):
        return fn()


def test_builds_where_a_compiler_exists():
    st = _native.status()
    assert set(st) == {"mode", "available", "reason", "path"}
    if st["mode"] == "off":
        pytest.skip("EQUIFRAME_NATIVE=0")
    if shutil.which("g++") or shutil.which("c++"):
        assert st["available"], st["reason"]
        assert st["path"].endswith(".so")


@needs_native
@pytest.mark.parametrize("d", [2, 3, 4])
@pytest.mark.parametrize("spec", REPS)
def test_to_local_to_global_match_torch_path(monkeypatch, spec, d, dtype):
    gen = torch.Generator().manual_seed(d)
    reps = TensorReps(spec, dim=d)
    x = torch.randn(300, reps.size, generator=gen, dtype=torch.float64).to(dtype)
    R = random_orthogonal(300, d, generator=gen, dtype=dtype)  # rotations and reflections
    for fn in (lambda: reps.to_local(x, R), lambda: reps.to_global(x, R)):
        got = fn()
        want = _torch_path(monkeypatch, fn)
        torch.testing.assert_close(got, want, rtol=0, atol=TOL[dtype] * want.abs().max().item())
    # exact semantics on one row: rho(R) x with the representation matrix
    M = reps.matrix(R[:1])[0]
    torch.testing.assert_close(reps.to_local(x[:1], R[:1].expand(2, d, d))[0], M @ x[0],
                               rtol=0, atol=TOL[dtype] * 10)


@needs_native
@pytest.mark.parametrize("d", [2, 3])
def test_gather_indices_and_out(d):
    gen = torch.Generator().manual_seed(7)
    reps = TensorReps("2x0n+1x1p+2x2n+1x0p", dim=d)
    x = torch.randn(20, reps.size, generator=gen, dtype=torch.float64)
    R = random_orthogonal(9, d, generator=gen)
    det = torch.linalg.det(R)
    xidx = torch.randint(0, 20, (50,), generator=gen)
    ridx = torch.randint(0, 9, (50,), generator=gen)
    assert _native.native_applies(reps, x, R, det)
    got = _native.rotate(reps, x, R, det, xidx=xidx, ridx=ridx)
    want = reps.transform(x[xidx], R[ridx])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    out = torch.full((50, reps.size), float("nan"), dtype=torch.float64)
    assert _native.rotate(reps, x, R, det, xidx=xidx, ridx=ridx, out=out) is out
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    # R^T (read in place from the transposed view), and the PyTorch path of the same function
    got_t = _native.rotate(reps, x[:9], R, det, transpose=True)
    torch.testing.assert_close(got_t, reps.transform(x[:9], R.transpose(1, 2)), rtol=0, atol=1e-12)
    with _native.use_native(False):
        assert not _native.native_applies(reps, x, R, det)
        torch.testing.assert_close(_native.rotate(reps, x, R, det, xidx=xidx, ridx=ridx), want, rtol=0, atol=1e-12)
        torch.testing.assert_close(_native.rotate(reps, x[:9], R, transpose=True), got_t, rtol=0, atol=1e-12)


@needs_native
def test_threads_split_rows_identically():
    reps = TensorReps("1x0n+7x2n", dim=3)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5000, reps.size, generator=gen)
    R = random_orthogonal(5000, 3, generator=gen, dtype=torch.float32)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _native.rotate(reps, x, R)
        torch.set_num_threads(3)  # 5000 x 64 entries > the parallel threshold: three threads
        three = _native.rotate(reps, x, R)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(one, three)


@needs_native
def test_gradients_for_x_twice_differentiable():
    gen = torch.Generator().manual_seed(4)
    reps = TensorReps("1x0n+1x1p+1x2n", dim=3)
    R = random_orthogonal(6, 3, generator=gen)
    det = torch.linalg.det(R)
    xidx = torch.tensor([0, 2, 2, 5, 1, 0, 3])
    ridx = torch.tensor([1, 1, 0, 4, 5, 2, 3])
    x = torch.randn(6, reps.size, generator=gen, dtype=torch.float64, requires_grad=True)
    for kw in ({}, {"xidx": xidx, "ridx": ridx}):
        f = lambda x_: _native.rotate(reps, x_, R, det, **kw)  # noqa: E731
        assert torch.autograd.gradcheck(f, (x,))
        assert torch.autograd.gradgradcheck(f, (x,))


@needs_native
def test_learned_frames_take_the_torch_path_with_frame_gradients(monkeypatch):
    """R.requires_grad -> the PyTorch path (the kernel has no gradient for R): same values, same grads."""
    gen = torch.Generator().manual_seed(5)
    reps = TensorReps("2x1n+1x2n", dim=3)
    x = torch.randn(40, reps.size, generator=gen, dtype=torch.float64)
    A = torch.randn(40, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)

    def run():
        R = torch.linalg.qr(A)[0]
        y = reps.to_local(x, R)
        (g,) = torch.autograd.grad(y.square().sum(), A)
        return y.detach(), g

    y1, g1 = run()
    y2, g2 = _torch_path(monkeypatch, run)
    torch.testing.assert_close(y1, y2, rtol=0, atol=1e-12)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-12)
    assert g1.abs().max() > 0


@needs_native
@pytest.mark.parametrize("case", ["blocked", "padded", "edge"])
def test_transport_and_rotate_edges_match(monkeypatch, case):
    gen = torch.Generator().manual_seed(11)
    reps = TensorReps("2x0n+1x0p+2x1n+1x1p+1x2n+1x2p", dim=3)
    n = 10
    if case == "blocked":
        src, dst = torch.randint(0, n, (30,), generator=gen), torch.arange(n).repeat_interleave(3)
    elif case == "padded":
        src = torch.randint(0, n, (25,), generator=gen)
        dst = torch.arange(n).repeat(3)[torch.randperm(3 * n, generator=gen)][:25]
    else:
        src = torch.randint(0, n, (12,), generator=gen)
        dst = torch.cat([torch.zeros(10, dtype=torch.long), torch.tensor([3, 4])])
    layout = receiver_layout(src, dst, n)
    assert layout.kind == case
    x = torch.randn(n, reps.size, generator=gen, dtype=torch.float64)
    R = random_orthogonal(n, 3, generator=gen)
    got = transport_edges(reps, x, R, R, src, dst, layout=layout)
    torch.testing.assert_close(got, transport(reps, x[src], R, R, src, dst), rtol=0, atol=1e-12)
    y = torch.randn(src.shape[0], reps.size, generator=gen, dtype=torch.float64)
    for inverse in (False, True):
        fn = lambda: rotate_edges(reps, y, R, layout, inverse=inverse)  # noqa: E731
        torch.testing.assert_close(fn(), _torch_path(monkeypatch, fn), rtol=0, atol=1e-12)


@pytest.mark.parametrize("native", ["0", "auto"])
@pytest.mark.parametrize("name", ["GINConv", "GINEConv"])
def test_wrapped_layer_equivariant_with_and_without_kernel(monkeypatch, name, native):
    """End to end (global mode for GIN, per-edge hook for GINE), both paths, rotations and reflections."""
    from torch_geometric.nn import GINConv, GINEConv

    monkeypatch.setenv("EQUIFRAME_NATIVE", native)
    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(0)
    reps = TensorReps("2x0n+1x1n+1x1p+1x2n", dim=3)
    c = reps.size
    mlp = torch.nn.Sequential(torch.nn.Linear(c, 16), torch.nn.Tanh(), torch.nn.Linear(16, c))
    layer = GINConv(mlp) if name == "GINConv" else GINEConv(mlp, edge_dim=4)
    conv = TFConv(layer, reps).double()
    n, k = 12, 4
    pos = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    nb = torch.cdist(pos, pos).topk(k + 1, largest=False).indices[:, 1:]
    ei = torch.stack([nb.reshape(-1), torch.arange(n).repeat_interleave(k)])
    F = torch.randn(n, c, generator=gen, dtype=torch.float64)
    frames = random_orthogonal(n, 3, generator=gen)
    Q = random_orthogonal(1, 3, generator=gen)[0]
    Q = Q * torch.sign(torch.linalg.det(Q)) * -1  # a reflection: det -1

    def net(F_, frames_, pos_):
        return reps.to_global(conv(reps.to_local(F_, frames_), ei, frames_, pos_), frames_)

    out = net(F, frames, pos)
    out2 = net(reps.transform(F, Q.expand(n, 3, 3)), frames @ Q.T, pos @ Q.T + 1.5)
    torch.testing.assert_close(out2, reps.transform(out, Q.expand(n, 3, 3)), rtol=0, atol=1e-10)


def test_validation_and_modes(monkeypatch):
    reps = TensorReps("1x1p", dim=3)
    x = torch.randn(4, 3)
    R = random_orthogonal(4, 3, dtype=torch.float32)
    monkeypatch.setenv("EQUIFRAME_NATIVE", "sometimes")
    with pytest.raises(ValueError, match="EQUIFRAME_NATIVE"):
        _native.available()
    monkeypatch.setenv("EQUIFRAME_NATIVE", "off")
    assert not _native.available() and not _native.native_applies(reps, x, R)
    assert _native.status()["reason"] == "disabled by EQUIFRAME_NATIVE"
    with _native.use_native(None):  # overrides the environment inside the block
        assert _native.status()["mode"] == "auto"
    monkeypatch.setenv("EQUIFRAME_NATIVE", "auto")
    with pytest.raises(TypeError, match="enabled"):
        with _native.use_native("yes"):  # type: ignore[arg-type]
            pass
    det = torch.linalg.det(R)
    if _native.available():
        with pytest.raises(IndexError, match="xidx"):
            _native.rotate(reps, x, R, det, xidx=torch.tensor([0, 4]))
        with pytest.raises(IndexError, match="ridx"):
            _native.rotate(reps, x, R, det, ridx=torch.tensor([-1]))
        with pytest.raises(ValueError, match="out"):
            _native.rotate(reps, x, R, det, out=torch.empty(3, 3))
    with pytest.raises(ValueError, match="pos"):
        _native.rotate(TensorReps("1xpos", dim=3), x, R)
    # out of scope -> the PyTorch path: order 3, d = 5, float16, mixed dtypes
    assert not _native.native_applies(TensorReps("1x3n", dim=3), torch.randn(4, 27), R)
    assert not _native.native_applies(TensorReps("1x1n", dim=5), torch.randn(4, 5),
                                      random_orthogonal(4, 5, dtype=torch.float32))
    assert not _native.native_applies(reps, x.half(), R.half())
    assert not _native.native_applies(reps, x.double(), R)
    y3 = _native.rotate(TensorReps("1x3n", dim=3), torch.randn(4, 27, dtype=torch.float64), R.double())
    assert y3.shape == (4, 27)


def test_require_mode_raises_without_compiler(monkeypatch):
    """``$CXX`` names the compiler; when it does not exist, 'require' raises and 'auto' falls back."""
    monkeypatch.setenv("CXX", "/nonexistent/equiframe-test-c++")
    with _native.use_native(True):
        with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
            _native.available()
        assert not _native.status()["available"]
    with _native.use_native(None):
        assert not _native.available()  # auto: falls back silently
        assert "no C++ compiler" in _native.status()["reason"]
        reps = TensorReps("1x1n", dim=3)
        x, R = torch.randn(3, 3), random_orthogonal(3, 3, dtype=torch.float32)
        torch.testing.assert_close(_native.rotate(reps, x, R), reps.transform(x, R))


_FORK_CASE: dict = {}


@needs_native
def test_threads_work_in_a_forked_child():
    """The thread pool is rebuilt after fork (DataLoader workers, some launchers fork)."""
    import multiprocessing as mp

    reps = TensorReps("1x0n+7x2n", dim=3)
    x = torch.randn(5000, reps.size)
    R = random_orthogonal(5000, 3, dtype=torch.float32)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        want = _native.rotate(reps, x, R)  # starts the pool in the parent
        _FORK_CASE.update(x=x, R=R, want=want)  # inherited by the child (no tensors through the queues)
        with mp.get_context("fork").Pool(1) as pool:
            same = pool.apply_async(_rotate_in_child).get(timeout=60)
    finally:
        torch.set_num_threads(old)
        _FORK_CASE.clear()
    assert same


def _rotate_in_child() -> bool:
    torch.set_num_threads(2)  # two native threads (our own pool, rebuilt after fork)
    c = _FORK_CASE
    y = _native.rotate(TensorReps("1x0n+7x2n", dim=3), c["x"], c["R"])
    torch.set_num_threads(1)  # torch's own OpenMP pool is not fork safe: compare without it
    return torch.equal(y, c["want"])


@pytest.mark.parametrize("d", [2, 3, 4])
@pytest.mark.parametrize("kind", ["rel_dist", "rel", "dist"])
def test_edge_geometry_matches_torch_path(monkeypatch, d, kind, dtype):
    from equiframe.nn.tensor_frames import local_edge_geometry

    gen = torch.Generator().manual_seed(d)
    ps = torch.randn(30, d, generator=gen, dtype=torch.float64).to(dtype)
    pd = torch.randn(20, d, generator=gen, dtype=torch.float64).to(dtype)
    R = random_orthogonal(20, d, generator=gen, dtype=dtype)
    src, dst = torch.randint(0, 30, (70,), generator=gen), torch.randint(0, 20, (70,), generator=gen)
    src[0], dst[0] = 0, 0
    ps[0] = pd[0]  # a zero-length edge: exactly 0
    for frames in (R, None):
        fn = lambda: local_edge_geometry(ps, pd, frames, src, dst, kind)  # noqa: E731
        got, want = fn(), _torch_path(monkeypatch, fn)
        torch.testing.assert_close(got, want, rtol=0, atol=TOL[dtype] * 10)
        assert got[0].abs().max() == 0
    if _native.available():
        assert _native.edge_geometry(ps, pd, R, src, dst, kind) is not None
        with pytest.raises(IndexError, match="dst"):
            _native.edge_geometry(ps, pd, R, src, dst.clamp(max=19) + 1, kind)
    # positions that need gradients (forces) take the PyTorch path
    ps_g = ps.clone().requires_grad_()
    assert _native.edge_geometry(ps_g, pd, R, src, dst, kind) is None
    local_edge_geometry(ps_g, pd, R, src, dst, kind).sum().backward()
    assert torch.isfinite(ps_g.grad).all()
