"""Tests of equiframe.geometry: kNN / radius graphs against a brute-force reference."""

from __future__ import annotations

import math

import pytest
import torch

import equiframe.geometry as geometry
from equiframe.geometry import batch_to_ptr, knn_graph, ptr_to_batch, radius_graph
from equiframe.groups import EuclideanGroup

SIZES = [5, 1, 0, 30, 7, 12, 2]

@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin contention on the shared 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)




def _batch(sizes: list[int]) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes, dtype=torch.long))


def _brute(pos: torch.Tensor, batch: torch.Tensor, k: int | None, loop: bool, r: float | None = None) -> torch.Tensor:
    """Reference: per target, candidates of the same graph sorted by (distance, index)."""
    x = pos.double()
    D = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1).sqrt()
    src, dst = [], []
    N = pos.shape[0]
    for i in range(N):
        cand = []
        for j in range(N):
            if batch[i] != batch[j] or (i == j and not loop):
                continue
            if r is not None and D[i, j] > r:
                continue
            cand.append((D[i, j].item(), j))
        cand.sort()
        for _, j in cand[: (len(cand) if k is None else k)]:
            src.append(j)
            dst.append(i)
    return torch.tensor([src, dst], dtype=torch.long).reshape(2, -1)


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [2, 3])
def test_knn_matches_bruteforce(loop, dtype, d):
    g = torch.Generator().manual_seed(0)
    batch = _batch(SIZES)
    pos = torch.randn(batch.numel(), d, generator=g, dtype=torch.float64).to(dtype)
    for k in (1, 4, 40):
        e = knn_graph(pos, k, batch, loop=loop, backend="torch")
        assert e.dtype == torch.long
        assert torch.equal(e, _brute(pos, batch, k, loop)), k


def test_knn_flow_and_counts():
    g = torch.Generator().manual_seed(1)
    batch = _batch(SIZES)
    pos = torch.randn(batch.numel(), 3, generator=g)
    k = 6
    e = knn_graph(pos, k, batch, backend="torch")
    e2 = knn_graph(pos, k, batch, flow="target_to_source", backend="torch")
    assert torch.equal(e, e2.flip(0))
    # no cross-graph edges, no self loops, min(k, n_g - 1) neighbours per target
    assert torch.equal(batch[e[0]], batch[e[1]])
    assert not bool((e[0] == e[1]).any())
    deg = torch.bincount(e[1], minlength=batch.numel())
    sizes = torch.tensor(SIZES)[batch]
    assert torch.equal(deg, torch.clamp(sizes - 1, max=k))
    # sorted by target
    assert bool((e[1][1:] >= e[1][:-1]).all())


def test_knn_chunking_gives_same_result(monkeypatch):
    g = torch.Generator().manual_seed(2)
    batch = _batch([40, 3, 64, 1, 17])
    pos = torch.randn(batch.numel(), 3, generator=g, dtype=torch.float64)
    ref = knn_graph(pos, 5, batch, backend="torch")
    ref_r = radius_graph(pos, 1.0, batch, max_num_neighbors=6, backend="torch")
    seen: list[int] = []
    real = torch.cdist

    def spy(a, b, *args, **kw):
        out = real(a, b, *args, **kw)
        seen.append(out.numel())
        return out

    monkeypatch.setattr(geometry.torch, "cdist", spy)
    for budget in (1, 7, 100, 1000, 5000):
        seen.clear()
        assert torch.equal(knn_graph(pos, 5, batch, backend="torch", max_block_elements=budget), ref)
        # memory bound: never more than the budget, except one row of the largest graph
        assert max(seen) <= max(budget, 64)
        assert torch.equal(
            radius_graph(pos, 1.0, batch, max_num_neighbors=6, backend="torch", max_block_elements=budget), ref_r
        )


def test_knn_duplicates_ties_broken_by_index():
    g = torch.Generator().manual_seed(3)
    pos = torch.randint(0, 3, (50, 2), generator=g).double()  # many exact duplicates and ties
    batch = torch.zeros(50, dtype=torch.long)
    for budget in (1 << 20, 30):
        e = knn_graph(pos, 5, batch, backend="torch", max_block_elements=budget)
        assert torch.equal(e, _brute(pos, batch, 5, False))
        assert not bool((e[0] == e[1]).any())
    # all points identical: the k lowest other indices, no self loops
    same = torch.zeros(6, 3)
    e = knn_graph(same, 3, backend="torch")
    assert e[0].view(6, 3).tolist() == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2], [0, 1, 2], [0, 1, 2]]
    e = knn_graph(same, 2, loop=True, backend="torch")
    assert e[0].view(6, 2).tolist() == [[0, 1]] * 6


def test_knn_unsorted_batch_is_handled():
    g = torch.Generator().manual_seed(4)
    batch = _batch(SIZES)
    pos = torch.randn(batch.numel(), 3, generator=g, dtype=torch.float64)
    perm = torch.randperm(batch.numel(), generator=g)
    e = knn_graph(pos[perm], 4, batch[perm], backend="torch")
    assert torch.equal(e, _brute(pos[perm], batch[perm], 4, False))
    r = radius_graph(pos[perm], 1.5, batch[perm], max_num_neighbors=3, backend="torch")
    assert torch.equal(r, _brute(pos[perm], batch[perm], 3, False, r=1.5))


def test_knn_permutation_and_euclidean_invariance():
    g = torch.Generator().manual_seed(5)
    batch = _batch([20, 33, 9])
    pos = torch.randn(batch.numel(), 3, generator=g, dtype=torch.float64)
    e = knn_graph(pos, 6, batch, backend="torch")
    # per-graph independent E(3) transforms, reflections included: same graph
    G = EuclideanGroup.parse("E(3)").sample(3, generator=g, dtype=torch.float64)
    e2 = knn_graph(G.act_batched(pos, "pos", index=batch), 6, batch, backend="torch")
    assert torch.equal(e, e2)
    # relabelling nodes within graphs relabels edges
    perm = torch.cat([torch.randperm(n, generator=g) + s for n, s in ((20, 0), (33, 20), (9, 53))])
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    e3 = knn_graph(pos[perm], 6, batch, backend="torch")
    mapped = inv[e]
    key = lambda ei: sorted(zip(ei[1].tolist(), ei[0].tolist()))  # noqa: E731
    assert key(e3) == key(mapped)
    assert torch.equal(knn_graph(pos, 6, batch, backend="torch"), e)  # deterministic


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("cap", [None, 1, 3, 64])
def test_radius_matches_bruteforce(loop, cap):
    g = torch.Generator().manual_seed(6)
    batch = _batch(SIZES)
    pos = torch.randn(batch.numel(), 3, generator=g, dtype=torch.float64)
    e = radius_graph(pos, 1.1, batch, max_num_neighbors=cap, loop=loop, backend="torch")
    assert torch.equal(e, _brute(pos, batch, cap, loop, r=1.1))
    assert torch.equal(
        radius_graph(pos, 1.1, batch, max_num_neighbors=cap, loop=loop, flow="target_to_source", backend="torch"),
        e.flip(0),
    )


def test_batch_to_ptr_roundtrip_and_errors():
    batch = _batch([3, 0, 2, 1])
    ptr = batch_to_ptr(batch)
    assert ptr.tolist() == [0, 3, 3, 5, 6]
    assert torch.equal(ptr_to_batch(ptr), batch)
    assert batch_to_ptr(batch, num_graphs=6).tolist() == [0, 3, 3, 5, 6, 6, 6]
    assert batch_to_ptr(torch.zeros(0, dtype=torch.long)).tolist() == [0]
    with pytest.raises(ValueError, match="sorted"):
        batch_to_ptr(torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="num_graphs"):
        batch_to_ptr(batch, num_graphs=2)
    with pytest.raises(ValueError, match="batch"):
        batch_to_ptr(torch.tensor([[0, 1]]))


def test_validation_errors():
    pos = torch.randn(10, 3)
    with pytest.raises(ValueError, match="pos"):
        knn_graph(torch.randn(10), 2)
    with pytest.raises(ValueError, match="NaN"):
        knn_graph(torch.tensor([[0.0, math.nan]]), 2)
    with pytest.raises(ValueError, match="NaN"):
        radius_graph(torch.tensor([[0.0, math.inf]]), 1.0)
    with pytest.raises(TypeError, match="pos"):
        knn_graph(torch.zeros(4, 3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="k"):
        knn_graph(pos, 0)
    with pytest.raises(TypeError, match="k"):
        knn_graph(pos, 2.5)
    with pytest.raises(ValueError, match="batch"):
        knn_graph(pos, 2, torch.zeros(9, dtype=torch.long))
    with pytest.raises(TypeError, match="batch"):
        knn_graph(pos, 2, torch.zeros(10))
    with pytest.raises(ValueError, match="batch"):
        knn_graph(pos, 2, -torch.ones(10, dtype=torch.long))
    with pytest.raises(ValueError, match="flow"):
        knn_graph(pos, 2, flow="both")
    with pytest.raises(ValueError, match="backend"):
        knn_graph(pos, 2, backend="faiss")
    with pytest.raises(ValueError, match="r"):
        radius_graph(pos, 0.0)
    with pytest.raises(ValueError, match="r"):
        radius_graph(pos, math.inf)
    with pytest.raises(ValueError, match="max_num_neighbors"):
        radius_graph(pos, 1.0, max_num_neighbors=0)
    if geometry._torch_cluster() is None:
        with pytest.raises(ImportError, match="torch_cluster"):
            knn_graph(pos, 2, backend="torch_cluster")


def test_empty_and_tiny_inputs():
    e = knn_graph(torch.zeros(0, 3), 4, backend="torch")
    assert e.shape == (2, 0)
    e = knn_graph(torch.zeros(1, 3), 4, backend="torch")
    assert e.shape == (2, 0)
    e = knn_graph(torch.zeros(1, 3), 4, loop=True, backend="torch")
    assert e.tolist() == [[0], [0]]
    e = radius_graph(torch.zeros(0, 2), 1.0, backend="torch")
    assert e.shape == (2, 0)


def test_many_graphs_memory_bounded(monkeypatch):
    """10^4 nodes in 1024-node graphs: blocks never exceed the budget (no N^2 allocation)."""
    g = torch.Generator().manual_seed(7)
    N = 10_000
    batch = torch.arange(N) // 1024
    pos = torch.randn(N, 3, generator=g)
    seen: list[int] = []
    real = torch.cdist

    def spy(a, b, *args, **kw):
        out = real(a, b, *args, **kw)
        seen.append(out.numel())
        return out

    monkeypatch.setattr(geometry.torch, "cdist", spy)
    e = knn_graph(pos, 8, batch, backend="torch")
    assert e.shape == (2, 8 * N)
    assert max(seen) <= geometry.DEFAULT_BLOCK_ELEMENTS
    assert torch.equal(batch[e[0]], batch[e[1]])


@pytest.mark.skipif(geometry._torch_cluster() is None, reason="torch_cluster not installed")
def test_matches_torch_cluster():  # pragma: no cover - torch_cluster is optional
    g = torch.Generator().manual_seed(8)
    batch = _batch([30, 40])
    pos = torch.randn(70, 3, generator=g, dtype=torch.float64)
    key = lambda ei: sorted(zip(ei[1].tolist(), ei[0].tolist()))  # noqa: E731
    assert key(knn_graph(pos, 5, batch, backend="torch")) == key(knn_graph(pos, 5, batch, backend="torch_cluster"))


# ------------------------------------------------------------------------------------------ dense batches
def test_dense_knn_agrees_with_knn_graph():
    from equiframe.geometry import dense_knn

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 40, 3, generator=g, dtype=torch.float64)
    idx = dense_knn(x, x, 5, exclude_self=True)
    batch = torch.arange(2).repeat_interleave(40)
    ei = knn_graph(x.reshape(80, 3), 5, batch, backend="torch")
    assert torch.equal(idx.reshape(80, 5) + 40 * batch[:, None], ei[0].reshape(80, 5))
    # exact ties: the same set as knn_graph (their order is topk's)
    sq = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [3.0, 0.0]]], dtype=torch.float64)
    got = dense_knn(sq[:, :1], sq, 5).tolist()[0][0]
    assert got[0] == 0 and sorted(got) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="k"):
        dense_knn(x, x, 40, exclude_self=True)
    with pytest.raises(ValueError, match="kdtree_min_points"):
        dense_knn(x, x, 3, kdtree_min_points=-1)
    with pytest.raises(ValueError, match="points, query"):
        dense_knn(x, x[..., :2], 3)
    with pytest.raises((TypeError, ValueError), match="query"):
        dense_knn(x.long(), x, 3)
    with pytest.raises(ValueError, match="number of clouds"):
        dense_knn(x[:1], x, 3)
    with pytest.raises(ValueError, match="layout"):
        dense_knn(x[0], x, 3)


@pytest.mark.parametrize("kdtree_min_points", [0, None])
def test_dense_knn_of_one_unbatched_cloud_is_the_batched_one(kdtree_min_points):
    from equiframe.geometry import dense_knn

    x = torch.randn(3, 50, 3, generator=torch.Generator().manual_seed(1))
    for b in range(3):  # [N, d] -> [M, k]: points counted on axis 0, as the batched call counts them on axis 1
        one = dense_knn(x[b, :20], x[b], 6, kdtree_min_points=kdtree_min_points)
        assert one.shape == (20, 6) and torch.equal(one, dense_knn(x[b:b + 1, :20], x[b:b + 1], 6)[0])
    assert dense_knn(x[0], x[0], 49, exclude_self=True).shape == (50, 49)
    with pytest.raises(ValueError, match="k: every cloud needs at least k = 51"):
        dense_knn(x[0], x[0], 51)


def test_scatter_sum_sums_rows_by_index():
    from equiframe.geometry import scatter_sum

    g = torch.Generator().manual_seed(0)
    values = torch.randn(30, 2, 3, generator=g, dtype=torch.float64)
    index = torch.randint(0, 7, (30,), generator=g)
    out = scatter_sum(values, index, 9)
    want = torch.stack([values[index == i].sum(0) for i in range(9)])  # rows 7, 8: empty sums
    assert out.shape == (9, 2, 3) and torch.allclose(out, want, atol=1e-14) and not out[7:].any()
    assert scatter_sum(values[:0], index[:0], 0).shape == (0, 2, 3)
    with pytest.raises((IndexError, RuntimeError)):
        scatter_sum(values, index, 5)  # an index outside [0, num_nodes): index_add_'s own error


def test_knn_covariance_blocks_give_the_same_moments():
    # the moments are summed over blocks of 64 * chunk_size receivers (bounded memory): the same sums, bit for bit
    from equiframe.geometry import knn_covariance

    x = torch.randn(2, 300, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    small, large = knn_covariance(x, 12, chunk_size=1), knn_covariance(x, 12, chunk_size=4096)
    assert torch.equal(small.cov, large.cov) and torch.equal(small.index, large.index)
    ref = small.neighbours - small.neighbours.mean(dim=2, keepdim=True)
    C = torch.einsum("bnka,bnkc->bnac", ref, ref)
    torch.testing.assert_close(small.cov, C / C.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None])
