import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from equiframe import TensorReps, random_orthogonal
from equiframe.reps import Block


def kron_reference(reps: TensorReps, x: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """rho(Q) x by explicit Kronecker powers, one matrix at a time (slow, obviously right)."""
    d = reps.dim
    out = []
    for b, sl in reps.slices():
        M = torch.ones(1, 1, dtype=Q.dtype)
        for _ in range(b.order):
            M = torch.kron(M, Q)
        if b.parity == "p":
            M = M * torch.linalg.det(Q)
        xs = x[..., sl].reshape(*x.shape[:-1], b.mul, d**b.order)
        out.append((xs @ M.T).reshape(*x.shape[:-1], -1))
    return torch.cat(out, -1)


@pytest.mark.parametrize("d", [2, 3, 4, 5])
def test_transform_matches_kronecker_all_orders(d, dtype):
    reps = TensorReps("2x0n+1x1n+1x1p+1x2n+1x0p+1x3n+1x2p" + ("+1x4n" if d <= 3 else ""), dim=d)
    g = torch.Generator().manual_seed(d)
    Q = random_orthogonal((), d, generator=g, dtype=dtype)
    Q = Q * torch.tensor([-1.0] + [1.0] * (d - 1), dtype=dtype)[:, None]  # a reflection
    x = torch.randn(6, reps.size, generator=g, dtype=torch.float64).to(dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(reps.transform(x, Q), kron_reference(reps, x, Q), atol=tol, rtol=tol)


def test_size_and_roundtrip():
    r = TensorReps("2x0n+1x1n+1x1p+1x2n", dim=3)
    assert r.size == 17
    assert TensorReps(str(r), dim=3) == r
    assert hash(TensorReps(str(r), dim=3)) == hash(r)
    assert TensorReps("pos", dim=2).size == 2 and TensorReps("pos", dim=2).has_pos
    assert TensorReps("0n").size == 1
    assert TensorReps(" 16x0n + 8x1n ").blocks == (Block(16, 0, "n"), Block(8, 1, "n"))
    assert TensorReps("3x2n", dim=4).size == 48
    assert r != TensorReps(str(r), dim=2)
    assert (r + "1x1n").size == 20
    assert TensorReps("1x1n+2x1n+1x0n").simplify() == TensorReps("3x1n+1x0n")


def test_immutable():
    r = TensorReps("1x1n")
    with pytest.raises(AttributeError):
        r._blocks = ()


@pytest.mark.parametrize("bad", ["3y1n", "1x1q", "x1n", "1x", "1x1n+", "pos2", "1.5x1n"])
def test_unknown_reps_string(bad):
    with pytest.raises(ValueError, match="reps"):
        TensorReps(bad)


def test_bad_dim_and_shapes():
    with pytest.raises(ValueError, match="dim"):
        TensorReps("1x1n", dim=0)
    r = TensorReps("1x1n", dim=3)
    with pytest.raises(ValueError, match="x: last dimension"):
        r.transform(torch.randn(4, 4), torch.eye(3))
    with pytest.raises(ValueError, match="R: expected"):
        r.transform(torch.randn(4, 3), torch.eye(2))
    with pytest.raises(TypeError):
        TensorReps(3)


def test_noncontiguous_layout_and_scalars_untouched(gen):
    r = TensorReps("1x1n+2x0n+1x1p+1x0n", dim=3)
    Q = random_orthogonal((), 3, generator=gen)
    x = torch.randn(5, r.size, generator=gen, dtype=torch.float64)
    y = r.transform(x, Q)
    torch.testing.assert_close(y[:, 3:5], x[:, 3:5])
    torch.testing.assert_close(y[:, 8], x[:, 8])
    torch.testing.assert_close(y, kron_reference(r, x, Q))


def test_broadcast_per_row_rotations(gen):
    r = TensorReps("2x1n+1x2n", dim=3)
    Q = random_orthogonal(7, 3, generator=gen)
    x = torch.randn(7, r.size, generator=gen, dtype=torch.float64)
    y = r.transform(x, Q)
    for i in range(7):
        torch.testing.assert_close(y[i], kron_reference(r, x[i : i + 1], Q[i])[0])
    # one rotation for many rows, and many rotations for one row
    torch.testing.assert_close(r.transform(x, Q[0]), kron_reference(r, x, Q[0]))
    assert r.transform(x[0], Q).shape == (7, r.size)


def test_positions_translate_vectors_do_not(gen):
    r = TensorReps("pos+1x1n", dim=3)
    Q = torch.eye(3, dtype=torch.float64)
    s = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    x = torch.zeros(1, 6, dtype=torch.float64)
    y = r.transform(x, Q, s)
    assert torch.equal(y[0, :3], s) and torch.equal(y[0, 3:], torch.zeros(3, dtype=torch.float64))
    R = random_orthogonal((), 3, generator=gen)
    x = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(r.to_global(r.to_local(x, R, s), R, s), x)
    loc = r.to_local(x, R, s)
    torch.testing.assert_close(loc[:, :3], (x[:, :3] - s) @ R.T)
    torch.testing.assert_close(loc[:, 3:], x[:, 3:] @ R.T)


reps_strategy = st.lists(
    st.tuples(st.integers(1, 3), st.integers(0, 3), st.sampled_from(["n", "p"])), min_size=1, max_size=4
).map(lambda bl: "+".join(f"{m}x{k}{p}" for m, k, p in bl))


@settings(max_examples=40, deadline=None)
@given(spec=reps_strategy, d=st.integers(2, 4), seed=st.integers(0, 2**31 - 1))
def test_homomorphism_and_inverse(spec, d, seed):
    """rho(A) rho(B) = rho(AB), rho(A^T) = rho(A)^-1, and the string round-trip, for random reps."""
    r = TensorReps(spec, dim=d)
    assert TensorReps(str(r), dim=d) == r
    g = torch.Generator().manual_seed(seed)
    A, B = random_orthogonal(2, d, generator=g)
    torch.testing.assert_close(r.matrix(A) @ r.matrix(B), r.matrix(A @ B), atol=1e-12, rtol=1e-12)
    eye = torch.eye(r.size, dtype=torch.float64)
    torch.testing.assert_close(r.matrix(A.T) @ r.matrix(A), eye, atol=1e-12, rtol=1e-12)
    x = torch.randn(3, r.size, generator=g, dtype=torch.float64)
    torch.testing.assert_close(r.transform(x, A), x @ r.matrix(A).T, atol=1e-12, rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(spec=reps_strategy, d=st.integers(2, 5))
def test_parse_print_roundtrip(spec, d):
    r = TensorReps(spec, dim=d)
    assert str(r) == spec
    assert TensorReps(r) == r and TensorReps(str(r), dim=d).size == r.size


def test_invariant_type_is_a_tensor_reps():
    from equiframe.reps import as_reps

    for spelling in ("scalar", "invariant", " scalar "):
        r = as_reps(spelling, 3)
        assert isinstance(r, TensorReps) and r.is_invariant and r.is_scalar and str(r) == "scalar"
    r = TensorReps("scalar")
    assert r == "scalar" and r == TensorReps.invariant(dim=5) and hash(r) == hash(TensorReps.invariant(dim=5))
    x = torch.randn(4, 7, 2)
    Q = random_orthogonal((), 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(r.transform(x, Q), x) and torch.equal(r.to_global(x, Q), x)
    with pytest.raises(ValueError, match="no fixed size"):
        r.size
    with pytest.raises(ValueError, match="scalar"):
        r + "1x1n"


def test_dim_is_never_guessed():
    r = TensorReps("2x1n+1x0n")
    assert r.dim is None
    with pytest.raises(ValueError, match="dim"):
        r.size
    assert TensorReps("4x0n").size == 4  # scalars need no dimension
    assert TensorReps("4x0n") == TensorReps("4x0n", dim=2)
    # applied to matrices, the dimension is read from them
    Q = random_orthogonal((), 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = torch.randn(3, 5, dtype=torch.float64)
    torch.testing.assert_close(r.transform(x, Q), r.with_dim(2).transform(x, Q))
    with pytest.raises(ValueError, match="dim"):
        TensorReps("1x1n", dim=3).with_dim(2)
    assert TensorReps("1x0n", dim=3).with_dim(2).dim == 2


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda: TensorReps("1x1n", dim=True), ValueError, "dim"),
        (lambda: TensorReps("1x1n", dim=2.0), ValueError, "dim"),
        (lambda: TensorReps([Block(1, -1, "n")]), ValueError, "reps"),
        (lambda: TensorReps([Block(2, 2, "pos")]), ValueError, "reps"),
        (lambda: TensorReps([("1", 1, "n")]), TypeError, "reps"),
        (lambda: TensorReps("1x1n", dim=3) * -1, ValueError, "n"),
        (lambda: TensorReps("1x1n", dim=3).to_local(torch.randn(2, 3), torch.eye(3), chunk_size=0), ValueError, "chunk_size"),
        (lambda: TensorReps("1x1n", dim=3).transform([1.0, 2.0, 3.0], torch.eye(3)), TypeError, "x"),
    ],
)
def test_bad_arguments_name_the_argument(call, err, match):
    with pytest.raises(err, match=match):
        call()


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="0123456789xnpos+ ", max_size=12))
def test_any_string_parses_or_fails_with_a_reps_error(text):
    try:
        r = TensorReps(text, dim=3)
    except ValueError as err:
        assert "reps" in str(err)
    else:
        assert TensorReps(str(r), dim=3) == r or r.is_invariant
