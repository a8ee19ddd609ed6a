import pytest
import torch

from equiframe import EuclideanGroup, random_orthogonal


@pytest.mark.parametrize("name", ["O(2)", "SO(3)", "E(4)", "SE(5)"])
def test_parse_and_sample(name, gen):
    G = EuclideanGroup.parse(name)
    assert str(G) == name
    g = G.sample(200, generator=gen)
    assert bool(G.contains(g).all())
    det = torch.linalg.det(g.Q)
    if G.proper:
        assert bool((det > 0).all())
    else:
        assert bool((det < 0).any()) and bool((det > 0).any())  # reflections are sampled
    assert bool((g.s != 0).any()) == G.translations


def test_generator_reproducible():
    G = EuclideanGroup.parse("E(3)")
    a = G.sample(5, generator=torch.Generator().manual_seed(3))
    b = G.sample(5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.Q, b.Q) and torch.equal(a.s, b.s)


def test_compose_inverse_act(gen):
    G = EuclideanGroup.parse("E(3)")
    g, h = G.sample(4, generator=gen), G.sample(4, generator=gen)
    x = torch.randn(4, 10, 3, generator=gen, dtype=torch.float64)
    torch.testing.assert_close((g @ h).act_batched(x), g.act_batched(h.act_batched(x)))
    torch.testing.assert_close((~g).act_batched(g.act_batched(x)), x)
    v = torch.randn(4, 10, 3, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(g.act_batched(v, "1x1n"), v @ g.Q.transpose(-1, -2))


def test_d_placeholder_and_errors():
    assert EuclideanGroup.parse("SE(d)", dim=4) == EuclideanGroup(4, proper=True, translations=True)
    with pytest.raises(ValueError, match="group"):
        EuclideanGroup.parse("U(3)")
    with pytest.raises(ValueError, match="dimension"):
        EuclideanGroup.parse("E(3)", dim=2)
    with pytest.raises(TypeError):
        EuclideanGroup.parse(3)


def test_haar_first_moment():
    Q = random_orthogonal(4000, 3, generator=torch.Generator().manual_seed(0))
    assert float(Q.mean(0).abs().max()) < 0.05  # E[Q] = 0 under Haar


@pytest.mark.parametrize("dim", [2, 3, 4])
def test_numpy_and_torch_draws_follow_one_convention(dim):
    """One Haar draw, two random streams: a NumPy generator gives float64 arrays (the data generators'
    streams), a torch generator tensors; both orthogonal, reflections only without ``proper``, and the same
    map from the Gaussian matrix (signs of diag R into Q, first column negated for SO(d))."""
    import numpy as np

    for proper in (False, True):
        q = random_orthogonal(500, dim, proper=proper, generator=np.random.default_rng(0))
        Q = random_orthogonal(500, dim, proper=proper, generator=torch.Generator().manual_seed(0))
        assert isinstance(q, np.ndarray) and q.shape == (500, dim, dim) and q.dtype == np.float64
        for m in (torch.from_numpy(q), Q):
            assert torch.allclose(m @ m.transpose(-1, -2), torch.eye(dim, dtype=m.dtype), atol=1e-12)
            det = torch.linalg.det(m)
            assert bool((det > 0).all()) if proper else 100 < int((det < 0).sum()) < 400
        # the same Gaussian matrices through both backends give the same matrices (to rounding)
        A = np.random.default_rng(1).standard_normal((50, dim, dim))
        q = random_orthogonal(50, dim, proper=proper, generator=np.random.default_rng(1))
        Qt, R = torch.linalg.qr(torch.from_numpy(A))
        Qt = Qt * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))[..., None, :]
        if proper:
            Qt[..., :, 0] *= torch.linalg.det(Qt).sign()[..., None]
        assert torch.allclose(torch.from_numpy(q), Qt, atol=1e-12)
    assert random_orthogonal((), 3, generator=np.random.default_rng(0)).shape == (3, 3)  # one matrix


@pytest.mark.parametrize("spelling", ["S_n", "Sn", "S(n)", " S_n "])
def test_symmetric_group_spellings_parse_to_the_type(spelling):
    from equiframe import SymmetricGroup, parse_group

    assert parse_group(spelling) == SymmetricGroup()
    assert parse_group(SymmetricGroup()) is not None and str(SymmetricGroup()) == "S_n"
    with pytest.raises(ValueError, match="not a Euclidean group"):
        EuclideanGroup.parse(spelling)


def test_symmetric_group_samples_permutations_inside_graphs(gen):
    from equiframe import SymmetricGroup

    batch = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    perm = SymmetricGroup().sample(batch, generator=gen)
    assert sorted(perm.tolist()) == list(range(9))
    assert torch.equal(batch[perm], batch)  # nodes stay in their graph
    with pytest.raises(ValueError, match="batch"):
        SymmetricGroup().sample(torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="batch"):
        SymmetricGroup().sample(torch.zeros(3))


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda: EuclideanGroup(0), ValueError, "dim"),
        (lambda: EuclideanGroup(3.0), ValueError, "dim"),
        (lambda: EuclideanGroup(3, proper=1), TypeError, "proper"),
        (lambda: EuclideanGroup.parse("E(3)").sample(-1), ValueError, "n"),
        (lambda: EuclideanGroup.parse("E(3)").sample((2, 1.5)), ValueError, "n"),
        (lambda: random_orthogonal(2, 0), ValueError, "dim"),
        (lambda: random_orthogonal(2, 3, generator=5), TypeError, "generator"),
        (lambda: EuclideanGroup.parse("E(d)"), ValueError, "group"),
    ],
)
def test_bad_arguments_name_the_argument(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_sample_on_device(device, gen):
    g = EuclideanGroup.parse("SE(3)").sample(5, generator=gen, device=device, dtype=torch.float32)
    assert g.Q.device.type == device.type and g.s.device.type == device.type
    assert bool(EuclideanGroup.parse("SE(3)").contains(g.to(torch.float64)).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_act_follows_the_features_dtype(dtype):
    """Elements are sampled in float64 by default; acting on features keeps the features' dtype."""
    g = EuclideanGroup.parse("E(3)").sample(4, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 10, 3, dtype=dtype)
    y = g.act_batched(x, "pos")
    assert y.dtype == dtype
    want = torch.einsum("bij,bnj->bni", g.Q, x.double()) + g.s[:, None]
    torch.testing.assert_close(y.double(), want, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-5)
    single = EuclideanGroup.parse("E(3)").sample(generator=torch.Generator().manual_seed(1))
    assert single.act(x[0], "1x1n").dtype == dtype and single.act(x[0]).dtype == dtype
