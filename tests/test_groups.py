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
