"""Neighbourhood graphs (k-nearest-neighbour and radius graphs) without compiled extensions.

The functions follow torch_geometric's conventions: ``edge_index[0]`` holds the *source* ``j`` and
``edge_index[1]`` the *target* ``i`` (messages flow ``j -> i``, ``flow="source_to_target"``); each
target receives edges from its nearest sources. ``flow="target_to_source"`` swaps the two rows.
No edge connects two different graphs of a PyG batch (``batch`` vector).

Backends: ``backend="auto"`` uses ``torch_cluster`` when it can be imported, and otherwise the pure
torch implementation below (``backend="torch"`` forces it). The pure torch implementation:

* computes exact pairwise distances ``||x_i - x_j||`` (``torch.cdist`` without the
  ``|x|^2 + |y|^2 - 2 x.y`` matmul trick, which loses accuracy for translated clouds and makes
  results depend on the chunking) inside dense per-graph blocks, so the work is
  ``sum_g n_g^2`` and never ``N^2``: consecutive graphs are padded into blocks of at most
  ``max_block_elements`` distances, a graph too large for one block is processed in chunks of
  target rows;
* is deterministic: neighbours are the ``k`` smallest distances with ties broken by the smaller
  source index; edges are sorted by target index, then by distance, then by source index
  (torch_cluster makes no such promise about ties or order);
* never returns self loops unless ``loop=True`` (the node itself is excluded explicitly, also when
  duplicate points tie with it), and returns fewer than ``k`` neighbours for targets whose graph
  has fewer than ``k + 1`` nodes;
* ``radius_graph`` keeps, per target, the ``max_num_neighbors`` *nearest* sources with
  ``||x_i - x_j|| <= r`` (torch_cluster keeps an implementation-defined subset).

Dense batches of clouds ``[B, N, d]`` (the normal-estimation models and the estimator) use
:func:`dense_knn`: neighbour lists ``[B, M, k]``, distances by ``torch.cdist``'s default (the matmul form,
fast on dense batches) and ``topk``, a k-d tree above :data:`KDTREE_MIN_POINTS` points on the CPU. Its
neighbour choice, tie order included, is what the shipped normal models were trained with, so it keeps
them rather than the exact distances and tie rule above.

The local PCA of a neighbourhood (offsets, covariance and the moments that fix the axes' signs) is computed in
one place, :func:`_neighbourhood_moments`, by scatter sums over the neighbourhood's edges
(:func:`scatter_sum`): :func:`knn_covariance` (dense k-NN batches) and
:func:`equiframe.frames.local.local_pca_frames` (any weighted graph) both call it.

An unsorted ``batch`` vector is handled (nodes are stably sorted by graph internally, results are
mapped back to the original node indices); :func:`batch_to_ptr` requires a sorted one.
Positions are not differentiated through (the graph is discrete): inputs are detached.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from ._checks import check_int, check_tensor

__all__ = ["KDTREE_MIN_POINTS", "KNNCovariance", "dense_knn", "gather_neighbours", "knn_covariance", "knn_graph",
           "scatter_sum",
           "radius_graph", "batch_to_ptr", "ptr_to_batch"]

Flow = Literal["source_to_target", "target_to_source"]
Backend = Literal["auto", "torch", "torch_cluster"]

#: default budget (number of pairwise distances held at once) of the pure torch implementation
DEFAULT_BLOCK_ELEMENTS = 1 << 20


# ----------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------


def _check_pos(pos: Tensor, name: str = "pos") -> None:
    if not isinstance(pos, Tensor):
        raise TypeError(f"{name}: expected a tensor [N, d], got {type(pos).__name__}")
    if pos.dim() != 2:
        raise ValueError(f"{name}: expected shape [N, d], got {tuple(pos.shape)}")
    if pos.shape[1] < 1:
        raise ValueError(f"{name}: expected at least one coordinate (d >= 1), got shape {tuple(pos.shape)}")
    if not pos.is_floating_point():
        raise TypeError(f"{name}: expected a floating point tensor, got {pos.dtype}")
    if pos.numel() and not bool(torch.isfinite(pos).all()):
        raise ValueError(f"{name}: contains NaN or inf")


def _check_batch(batch: Tensor | None, num_nodes: int, device: torch.device, name: str = "batch") -> Tensor | None:
    if batch is None:
        return None
    if not isinstance(batch, Tensor):
        raise TypeError(f"{name}: expected a tensor [N] of graph indices, got {type(batch).__name__}")
    if batch.dim() != 1 or batch.shape[0] != num_nodes:
        raise ValueError(f"{name}: expected shape [{num_nodes}] (one graph index per node), got {tuple(batch.shape)}")
    if batch.dtype.is_floating_point or batch.dtype == torch.bool or batch.is_complex():
        raise TypeError(f"{name}: expected an integer tensor, got {batch.dtype}")
    if batch.numel() and int(batch.min()) < 0:
        raise ValueError(f"{name}: graph indices must be >= 0")
    return batch.to(device=device, dtype=torch.long)


def _check_flow(flow: str) -> None:
    if flow not in ("source_to_target", "target_to_source"):
        raise ValueError(f"flow: expected 'source_to_target' or 'target_to_source', got {flow!r}")


def _check_backend(backend: str) -> None:
    if backend not in ("auto", "torch", "torch_cluster"):
        raise ValueError(f"backend: expected 'auto', 'torch' or 'torch_cluster', got {backend!r}")


def _torch_cluster():
    try:
        import torch_cluster  # noqa: PLC0415
    except ImportError:
        return None
    return torch_cluster


# ----------------------------------------------------------------------------------------------
# batch <-> ptr
# ----------------------------------------------------------------------------------------------


def batch_to_ptr(batch: Tensor, num_graphs: int | None = None) -> Tensor:
    """CSR pointer of a sorted PyG batch vector: graph ``g`` owns nodes ``ptr[g]:ptr[g+1]``.

    ``ptr = [0, cumsum(bincount(batch, minlength=num_graphs))]``; empty graphs are allowed.

    Args:
        batch: sorted graph index of each node.
        num_graphs: number of graphs ``B`` (default ``max(batch) + 1``, 0 for an empty batch).

    Raises:
        ValueError: ``batch`` is not sorted, has negative entries, or ``num_graphs`` is too small.

    Shapes:
        batch ``[N]`` -> ptr ``[B + 1]`` (int64)
    """
    if not isinstance(batch, Tensor):
        raise TypeError(f"batch: expected a tensor [N], got {type(batch).__name__}")
    if batch.dim() != 1:
        raise ValueError(f"batch: expected shape [N], got {tuple(batch.shape)}")
    batch = _check_batch(batch, batch.shape[0], batch.device)
    if batch.numel() > 1 and not bool((batch[1:] >= batch[:-1]).all()):
        raise ValueError("batch: must be sorted (non-decreasing) to define a ptr vector")
    needed = int(batch.max()) + 1 if batch.numel() else 0
    if num_graphs is None:
        num_graphs = needed
    num_graphs = check_int("num_graphs", num_graphs, 0)
    if num_graphs < needed:
        raise ValueError(f"num_graphs: {num_graphs} is smaller than max(batch) + 1 = {needed}")
    counts = torch.bincount(batch, minlength=num_graphs)
    ptr = torch.zeros(num_graphs + 1, dtype=torch.long, device=batch.device)
    torch.cumsum(counts, 0, out=ptr[1:])
    return ptr


def ptr_to_batch(ptr: Tensor) -> Tensor:
    """Inverse of :func:`batch_to_ptr`: ``batch[n] = g`` for ``ptr[g] <= n < ptr[g+1]``.

    Shapes:
        ptr ``[B + 1]`` -> batch ``[ptr[-1]]``
    """
    if isinstance(ptr, Tensor):
        check_tensor("ptr", ptr, integer=True)
    if not isinstance(ptr, Tensor) or ptr.dim() != 1 or ptr.numel() < 1:
        raise ValueError("ptr: expected a 1-D tensor [B + 1]")
    counts = ptr[1:] - ptr[:-1]
    if counts.numel() and int(counts.min()) < 0:
        raise ValueError("ptr: must be non-decreasing")
    return torch.repeat_interleave(torch.arange(counts.numel(), device=ptr.device), counts)


# ----------------------------------------------------------------------------------------------
# deterministic k-smallest selection
# ----------------------------------------------------------------------------------------------


def _k_smallest(D: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` smallest entries of each row of ``D`` with ties broken by the smaller column.

    Returns values and column indices sorted by ``(value, column)``. ``topk`` alone does not
    specify which of several tied entries it returns; when the ``k``-th and ``(k+1)``-th smallest
    values tie (rare: duplicate points, lattices), the row is recomputed with the integer key
    ``column + ncols * [D > t] * 2 + ncols * [D == t]`` (``t`` = the ``k``-th smallest value), whose
    ``k`` smallest entries are unique.

    Shapes:
        D ``[R, n]`` -> values, indices ``[R, min(k, n)]``
    """
    ncols = D.shape[-1]
    kk = min(k, ncols)
    m = min(k + 1, ncols)
    if kk == 0:
        empty = D.new_empty(D.shape[0], 0)
        return empty, torch.empty(D.shape[0], 0, dtype=torch.long, device=D.device)
    vals, idx = torch.topk(D, m, dim=-1, largest=False, sorted=True)
    if m > kk:
        t = vals[:, kk - 1]
        tie = (vals[:, kk] == t) & torch.isfinite(t)
        if bool(tie.any()):
            rows = tie.nonzero().squeeze(1)
            Dsub = D[rows]
            tsub = t[rows, None]
            cols = torch.arange(ncols, device=D.device)
            key = cols + ncols * (2 * (Dsub > tsub).long() + (Dsub == tsub).long())
            sel = torch.topk(key, kk, dim=-1, largest=False, sorted=True).indices
            idx = idx[:, :kk].clone()
            vals = vals[:, :kk].clone()
            idx[rows] = sel
            vals[rows] = Dsub.gather(1, sel)
    vals, idx = vals[:, :kk], idx[:, :kk]
    if kk > 1:
        # values are sorted; order runs of equal values by column (only rows that have such runs)
        run = (vals[:, 1:] == vals[:, :-1]).any(1)
        if bool(run.any()):
            rows = run.nonzero().squeeze(1)
            v, c = vals[rows], idx[rows]
            order = torch.argsort(c, dim=-1)
            v, c = v.gather(1, order), c.gather(1, order)
            order = torch.argsort(v, dim=-1, stable=True)
            vals, idx = vals.clone(), idx.clone()
            vals[rows], idx[rows] = v.gather(1, order), c.gather(1, order)
    return vals, idx


# ----------------------------------------------------------------------------------------------
# the blocked brute-force search
# ----------------------------------------------------------------------------------------------


def _plan_blocks(counts: list[int], budget: int) -> list[tuple[int, int]]:
    """Split graphs ``0..B-1`` into runs ``[g0, g1)`` with ``(g1 - g0) * max(n_g)^2 <= budget``
    (a single graph per run when ``n_g^2 > budget``; it is then row-chunked)."""
    runs: list[tuple[int, int]] = []
    B = len(counts)
    g = 0
    while g < B:
        n = max(counts[g], 1)
        if n * n >= budget:
            runs.append((g, g + 1))
            g += 1
            continue
        nmax = n
        h = g + 1
        while h < B:
            m = max(nmax, counts[h])
            if (h + 1 - g) * m * m > budget:
                break
            nmax = m
            h += 1
        runs.append((g, h))
        g = h
    return runs


def _search_sorted(
    pos: Tensor,
    ptr: list[int],
    *,
    k: int,
    r: float | None,
    loop: bool,
    budget: int,
) -> tuple[Tensor, Tensor]:
    """Neighbours of every node of a batch with sorted graphs (``ptr`` as a Python list).

    Returns ``(src, dst)`` sorted by ``dst`` then distance then ``src``.
    """
    device = pos.device
    d = pos.shape[1]
    counts = [ptr[g + 1] - ptr[g] for g in range(len(ptr) - 1)]
    srcs: list[Tensor] = []
    dsts: list[Tensor] = []
    r_val = None if r is None else float(r)

    def emit(D: Tensor, tgt_start: Tensor, src_start: Tensor, nt: Tensor) -> None:
        # D [G, T, S]; tgt_start / src_start [G]; nt [G] number of valid target rows per block row
        G, T, S = D.shape
        vals, cols = _k_smallest(D.reshape(G * T, S), k)
        keep = torch.isfinite(vals)
        if r_val is not None:
            keep &= vals <= r_val
        rows = torch.arange(T, device=device)
        valid_row = rows[None, :] < nt[:, None]  # [G, T]
        keep &= valid_row.reshape(G * T, 1)
        tgt = (tgt_start[:, None] + rows[None, :]).reshape(G * T, 1).expand_as(cols)
        src = src_start.repeat_interleave(T)[:, None] + cols
        srcs.append(src[keep])
        dsts.append(tgt[keep])

    for g0, g1 in _plan_blocks(counts, budget):
        n0 = counts[g0]
        if g1 == g0 + 1 and n0 * n0 >= budget and n0 > 0:
            # one large graph: chunks of target rows against all of its nodes
            base = ptr[g0]
            src_pos = pos[base : base + n0].unsqueeze(0)
            rows_per_chunk = max(1, budget // n0)
            for r0 in range(0, n0, rows_per_chunk):
                r1 = min(n0, r0 + rows_per_chunk)
                D = torch.cdist(pos[base + r0 : base + r1].unsqueeze(0), src_pos, compute_mode="donot_use_mm_for_euclid_dist")
                if not loop:
                    t_idx = torch.arange(r1 - r0, device=device)
                    D[0, t_idx, t_idx + r0] = math.inf
                start = torch.tensor([base + r0], device=device)
                emit(D, start, torch.tensor([base], device=device), torch.tensor([r1 - r0], device=device))
            continue
        sizes = counts[g0:g1]
        nmax = max(sizes)
        if nmax == 0:
            continue
        G = g1 - g0
        lo, hi = ptr[g0], ptr[g1]
        starts = torch.tensor(ptr[g0:g1], device=device)
        nvec = torch.tensor(sizes, device=device)
        # padded dense block [G, nmax, d]
        graph_of = torch.repeat_interleave(torch.arange(G, device=device), nvec)
        local = torch.arange(lo, hi, device=device) - starts[graph_of]
        P = pos.new_zeros(G, nmax, d)
        P[graph_of, local] = pos[lo:hi]
        D = torch.cdist(P, P, compute_mode="donot_use_mm_for_euclid_dist")
        if min(sizes) < nmax:
            pad = torch.arange(nmax, device=device)[None, :] >= nvec[:, None]  # [G, nmax]
            D.masked_fill_(pad[:, None, :], math.inf)
        if not loop:
            D.diagonal(dim1=-2, dim2=-1).fill_(math.inf)
        emit(D, starts, starts, nvec)

    if not srcs:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, empty
    return torch.cat(srcs), torch.cat(dsts)


def _search(
    pos: Tensor,
    batch: Tensor | None,
    *,
    k: int,
    r: float | None,
    loop: bool,
    budget: int,
) -> tuple[Tensor, Tensor]:
    """Dispatch on sorted / unsorted batch; returns ``(src, dst)``."""
    N = pos.shape[0]
    pos = pos.detach()
    if pos.dtype not in (torch.float32, torch.float64):
        pos = pos.float()
    if batch is None:
        return _search_sorted(pos, [0, N], k=k, r=r, loop=loop, budget=budget)
    if N > 1 and not bool((batch[1:] >= batch[:-1]).all()):
        perm = torch.argsort(batch, stable=True)
        src, dst = _search(pos[perm], batch[perm], k=k, r=r, loop=loop, budget=budget)
        src, dst = perm[src], perm[dst]
        # re-sort by original target index, keeping the per-target (distance, index) order
        order = torch.argsort(dst, stable=True)
        return src[order], dst[order]
    ptr = batch_to_ptr(batch).tolist()
    return _search_sorted(pos, ptr, k=k, r=r, loop=loop, budget=budget)


def _finish(src: Tensor, dst: Tensor, flow: str) -> Tensor:
    return torch.stack([src, dst], 0) if flow == "source_to_target" else torch.stack([dst, src], 0)


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------


def knn_graph(
    pos: Tensor,
    k: int,
    batch: Tensor | None = None,
    loop: bool = False,
    flow: Flow = "source_to_target",
    *,
    backend: Backend = "auto",
    max_block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> Tensor:
    """k-nearest-neighbour graph: each target ``i`` receives edges from its ``k`` nearest sources.

    ``N_k(i) = {j != i in graph(i)}`` with the ``k`` smallest ``||x_j - x_i||`` (ties: smaller ``j``);
    ``edge_index = [[j ...], [i ...]]`` for ``flow="source_to_target"``.

    Args:
        pos: node positions.
        k: number of neighbours per node (``>= 1``); targets in graphs with fewer than ``k + 1``
            nodes (``k`` with ``loop=True``) get all nodes of their graph.
        batch: graph index of each node (PyG batch vector); sorted or not. ``None`` = one graph.
        loop: include ``i`` itself as one of its ``k`` neighbours (distance 0).
        flow: ``"source_to_target"`` (row 0 = source ``j``) or ``"target_to_source"`` (rows swapped).
        backend: ``"auto"`` (torch_cluster if importable, else ``"torch"``), ``"torch"`` or
            ``"torch_cluster"``. Only ``"torch"`` guarantees the tie and ordering rules above.
        max_block_elements: memory budget of the torch backend (pairwise distances held at once).

    Returns:
        ``edge_index`` (int64), sorted by target, then distance, then source (torch backend).

    Raises:
        ValueError / TypeError: wrong shapes or dtypes, NaN/inf positions, ``k < 1``, bad ``flow``.

    Shapes:
        pos ``[N, d]``, batch ``[N]`` -> edge_index ``[2, E]`` with ``E <= N k``
    """
    _check_pos(pos)
    k = check_int("k", k, 1)
    _check_flow(flow)
    _check_backend(backend)
    budget = check_int("max_block_elements", max_block_elements, 1)
    batch = _check_batch(batch, pos.shape[0], pos.device)
    tc = _torch_cluster() if backend != "torch" else None
    if backend == "torch_cluster" and tc is None:
        raise ImportError("backend='torch_cluster' requested but torch_cluster is not installed")
    if tc is not None:
        return tc.knn_graph(pos.detach(), k, batch, loop=loop, flow=flow)
    src, dst = _search(pos, batch, k=k, r=None, loop=loop, budget=budget)
    return _finish(src, dst, flow)


def radius_graph(
    pos: Tensor,
    r: float,
    batch: Tensor | None = None,
    max_num_neighbors: int | None = 64,
    loop: bool = False,
    flow: Flow = "source_to_target",
    *,
    backend: Backend = "auto",
    max_block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> Tensor:
    """Radius graph: each target ``i`` receives edges from the sources with ``||x_j - x_i|| <= r``.

    At most ``max_num_neighbors`` edges per target are kept: the nearest ones (ties: smaller ``j``).

    Args:
        pos: node positions.
        r: radius (finite, ``> 0``).
        batch: graph index of each node (sorted or not); ``None`` = one graph.
        max_num_neighbors: cap on the number of neighbours per target; ``None`` = no cap.
        loop: include self loops ``(i, i)``.
        flow: ``"source_to_target"`` (row 0 = source ``j``) or ``"target_to_source"``.
        backend: as in :func:`knn_graph` (torch_cluster keeps an unspecified subset when capped).
        max_block_elements: memory budget of the torch backend.

    Shapes:
        pos ``[N, d]``, batch ``[N]`` -> edge_index ``[2, E]``
    """
    _check_pos(pos)
    if isinstance(r, Tensor):
        r = float(r)
    if not isinstance(r, (int, float)) or isinstance(r, bool):
        raise TypeError(f"r: expected a number, got {type(r).__name__}")
    if not math.isfinite(r) or r <= 0:
        raise ValueError(f"r: expected a finite radius > 0, got {r}")
    _check_flow(flow)
    _check_backend(backend)
    budget = check_int("max_block_elements", max_block_elements, 1)
    batch = _check_batch(batch, pos.shape[0], pos.device)
    N = pos.shape[0]
    if max_num_neighbors is None:
        cap = max(N, 1)
    else:
        cap = check_int("max_num_neighbors", max_num_neighbors, 1)
    tc = _torch_cluster() if backend != "torch" else None
    if backend == "torch_cluster" and tc is None:
        raise ImportError("backend='torch_cluster' requested but torch_cluster is not installed")
    if tc is not None:
        return tc.radius_graph(pos.detach(), float(r), batch, loop=loop, max_num_neighbors=cap, flow=flow)
    src, dst = _search(pos, batch, k=cap, r=float(r), loop=loop, budget=budget)
    return _finish(src, dst, flow)


# ----------------------------------------------------------------------------------------------
# dense batches of clouds
# ----------------------------------------------------------------------------------------------

#: clouds with more points than this (and on the CPU) search neighbours with a k-d tree (scipy)
KDTREE_MIN_POINTS = 4096


def dense_knn(query: Tensor, points: Tensor, k: int, *, exclude_self: bool = False,
              chunk_size: int = 1024, kdtree_min_points: int | None = None) -> Tensor:
    """Indices of the ``k`` nearest ``points`` of every query point, per cloud (dense batches).

    ``idx[b, i]`` lists the ``k`` points of cloud ``b`` closest to ``query[b, i]`` by Euclidean
    distance, nearest first. Small clouds: ``torch.cdist`` (its default matmul form) and ``topk`` on
    rows of ``chunk_size`` queries at a time (``O(M N)`` work); unlike :func:`knn_graph`, the order of
    exactly tied distances is ``topk``'s. Such ties occur on the normals test clouds (a second point at
    distance 0 from the query, equal distances further down: 3 of the TF-PointNet++ k-NN calls on its
    128 test clouds), so this order is part of what the shipped normal models compute. Clouds of more than ``kdtree_min_points``
    points (default :data:`KDTREE_MIN_POINTS`) on the CPU: a k-d tree (``scipy.spatial.cKDTree``,
    ``O(N log N)``), so that millions of points run in bounded memory; the two agree except in the
    order of exactly tied distances. With ``exclude_self`` (``query is points``) the point itself is
    left out.

    Shapes:
        query ``[B, M, d]``, points ``[B, N, d]`` -> ``[B, M, k]`` (int64); one cloud unbatched:
        query ``[M, d]``, points ``[N, d]`` -> ``[M, k]``
    """
    check_tensor("query", query, ndim=(2, 3), floating=True)
    check_tensor("points", points, ndim=(2, 3), floating=True)
    if query.shape[-1] != points.shape[-1] or query.dim() != points.dim():
        raise ValueError(f"points, query: expected the same dimension d and layout, got {tuple(points.shape)} and "
                         f"{tuple(query.shape)}")
    if points.dim() == 2:
        return dense_knn(query[None], points[None], k, exclude_self=exclude_self, chunk_size=chunk_size,
                         kdtree_min_points=kdtree_min_points)[0]
    if query.shape[0] != points.shape[0]:
        raise ValueError(f"points, query: expected the same number of clouds B, got {tuple(points.shape)} and "
                         f"{tuple(query.shape)}")
    k = check_int("k", k, 1)
    n = points.shape[1] - (1 if exclude_self else 0)
    if k > n:
        raise ValueError(f"k: every cloud needs at least k = {k} neighbours, got {n} points")
    chunk_size = check_int("chunk_size", chunk_size, 1)
    threshold = KDTREE_MIN_POINTS if kdtree_min_points is None else check_int("kdtree_min_points", kdtree_min_points, 0)
    query, points = query.detach(), points.detach()  # indices only: no graph through the distances
    if points.shape[1] > threshold and points.device.type == "cpu":
        return _kdtree_knn(query, points, k, exclude_self)
    out = []
    for s in range(0, query.shape[1], chunk_size):
        dist = torch.cdist(query[:, s:s + chunk_size], points)  # [B, c, N]
        if exclude_self:
            rows = torch.arange(s, s + dist.shape[1], device=dist.device)
            dist[:, torch.arange(dist.shape[1], device=dist.device), rows] = float("inf")
        out.append(dist.topk(k, dim=-1, largest=False).indices)
    return torch.cat(out, dim=1)


def _kdtree_knn(query: Tensor, points: Tensor, k: int, exclude_self: bool) -> Tensor:
    """The k-d tree path of :func:`dense_knn` (CPU, float64 coordinates)."""
    import numpy as np  # noqa: PLC0415
    from scipy.spatial import cKDTree  # noqa: PLC0415

    res = []
    for b in range(points.shape[0]):
        tree = cKDTree(points[b].double().numpy())
        _, ii = tree.query(query[b].double().numpy(), k=k + (1 if exclude_self else 0))
        ii = ii.reshape(ii.shape[0], -1)
        if exclude_self:  # drop the query itself (first unless a duplicate point ties with it)
            rows = torch.arange(ii.shape[0])[:, None].numpy()
            keep = ii != rows
            ii = np.stack([r[m][:k] for r, m in zip(ii, keep)])
        res.append(torch.from_numpy(np.ascontiguousarray(ii)).long())
    return torch.stack(res).to(query.device)


# ----------------------------------------------------------------------------------------------
# local covariance of k-NN neighbourhoods (dense batches)
# ----------------------------------------------------------------------------------------------


def gather_neighbours(x: Tensor, idx: Tensor) -> Tensor:
    """The rows of ``x`` listed in ``idx``, per cloud: ``out[b, i, j] = x[b, idx[b, i, j]]``.

    Shapes:
        x ``[B, N, C]``, idx ``[B, M, k]`` -> ``[B, M, k, C]`` (shapes and dtypes are checked, index ranges are
        not: a hot-path kernel, see the conventions page)
    """
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(f"x: expected a [B, N, C] tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if not isinstance(idx, Tensor) or idx.dim() != 3 or idx.dtype != torch.long or idx.shape[0] != x.shape[0]:
        raise ValueError(f"idx: expected int64 indices [B, M, k] with B = {x.shape[0]}, got "
                         f"{getattr(idx, 'dtype', type(idx).__name__)} {tuple(getattr(idx, 'shape', ()))}")
    B, M, k = idx.shape
    return torch.gather(x, 1, idx.reshape(B, M * k, 1).expand(-1, -1, x.shape[-1])).reshape(B, M, k, x.shape[-1])


def scatter_sum(values: Tensor, index: Tensor, num_nodes: int) -> Tensor:
    r"""``out[i] = sum_{m : index[m] = i} values[m]`` over the first dimension (``index_add_``).

    Shapes:
        values ``[M, *]``, index ``[M]`` (int64, in ``[0, num_nodes)``) -> ``[num_nodes, *]``

    Shapes and dtypes are checked (no host synchronisation); an index outside ``[0, num_nodes)`` is
    ``index_add_``'s own error.
    """
    if not isinstance(values, Tensor) or values.dim() < 1:
        raise ValueError(f"values: expected a tensor [M, *], got {getattr(values, 'shape', type(values).__name__)}")
    if (not isinstance(index, Tensor) or index.dtype != torch.long or index.dim() != 1
            or index.shape[0] != values.shape[0]):
        raise ValueError(f"index: expected int64 indices [M] with M = {values.shape[0]} (one per row of values), got "
                         f"{getattr(index, 'dtype', type(index).__name__)} {tuple(getattr(index, 'shape', ()))}")
    num_nodes = check_int("num_nodes", num_nodes, 0)
    return values.new_zeros((num_nodes, *values.shape[1:])).index_add_(0, index, values)


def _neighbourhood_moments(x: Tensor, src: Tensor, dst: Tensor, w: Tensor, weighted: bool,
                           center: str, x_dst: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""The local PCA moments of every node's neighbourhood ``{j : (j, i) an edge}``, in one scatter:

    .. math::
        y_{ij} = x_j - c_i,\quad C_i = \sum_j w_{ij}\, y_{ij} y_{ij}^\top,\quad
        M_i = \sum_j w_{ij}\, y_{ij},\quad a_i = \sum_j w_{ij} |y_{ij}|,\quad b_i = \sum_j w_{ij} |y_{ij}|^3

    with ``c_i = x_i`` (``center="node"``) or the weighted centroid ``sum_j w_ij x_j / sum_j w_ij``
    (``"centroid"``), offsets taken from the node first (translation-exact). ``a`` and ``b`` are the scale
    normalisers of the moment sign tests of :func:`~equiframe.frames.local.local_pca_frames` (detached).
    ``weighted=False`` skips the multiplication by the (all-one) ``w``. ``x_dst`` (default ``x``): the
    positions of the receiving nodes, indexed by ``dst`` (a block of receivers, e.g. to bound the memory).

    Shapes:
        x ``[N_src, d]``, src / dst / w ``[E]``, x_dst ``[N, d]`` -> y ``[E, d]``, C ``[N, d, d]``, M ``[N, d]``,
        a ``[N]``, b ``[N]``
    """
    x_dst = x if x_dst is None else x_dst
    N, d = x_dst.shape
    E = src.shape[0]
    y = x[src] - x_dst[dst]  # [E, d] offsets from the node (translation-exact)
    if center == "centroid":
        Wm = scatter_sum(torch.cat([w[:, None], w[:, None] * y], 1), dst, N)
        W = Wm[:, 0]
        m = Wm[:, 1:] / torch.where(W > 0, W, torch.ones_like(W))[:, None]
        y = y - m[dst]
    yn = y.detach().norm(dim=1, keepdim=True)
    per_edge = torch.cat([(y[:, :, None] * y[:, None, :]).reshape(E, d * d), y, yn.to(y.dtype), yn**3], 1)
    if weighted:
        per_edge = per_edge * w[:, None]
    S = scatter_sum(per_edge, dst, N)
    C = S[:, : d * d].reshape(N, d, d)
    M1 = S[:, d * d : d * d + d]
    return y, C, M1, S[:, -2].detach(), S[:, -1].detach()


class KNNCovariance(NamedTuple):
    """Result of :func:`knn_covariance` (``eigvals`` / ``eigvecs`` are ``None`` with ``solver=None``)."""

    index: Tensor
    neighbours: Tensor
    cov: Tensor
    eigvals: Tensor | None
    eigvecs: Tensor | None


def knn_covariance(x: Tensor, k: int, *, solver: Literal["eigh", "symeig"] | None = "eigh",
                   chunk_size: int = 1024) -> KNNCovariance:
    r"""Trace-normalised covariance of every point's ``k`` nearest neighbours (itself included) and its
    eigen-decomposition: the local PCA of dense batches of clouds.

    With ``N_i`` the ``k`` nearest points of ``x_i`` (:func:`dense_knn`, the point itself included) and
    ``m_i`` their mean,

    .. math::
        C_i = \frac1k \sum_{j \in N_i} (x_j - m_i)(x_j - m_i)^\top,\qquad
        \hat C_i = C_i / \operatorname{tr} C_i,\qquad \hat C_i u_{i,l} = \lambda_{i,l} u_{i,l}

    (``tr C_i = 0`` gives ``\hat C_i = 0``), ``lambda`` ascending, eigenvectors in the columns.

    This is the local PCA of the normal-estimation models (their features, the k-NN PCA baseline, jet
    fits) in the dense ``[B, N, d]`` layout; the covariance is summed over the flattened k-NN edges by
    :func:`_neighbourhood_moments`, the same computation as the (weighted, any-graph)
    :func:`equiframe.frames.local.local_pca_frames`.

    Args:
        x: the clouds (not differentiated through for the neighbour choice).
        k: neighbours per point, ``d <= k <= N``.
        solver: ``"eigh"`` (:func:`torch.linalg.eigh`, what the normal models use), ``"symeig"``
            (:func:`equiframe.linalg.symeig`, the closed form of :func:`~equiframe.frames.local.local_pca_frames`)
            or ``None`` (covariances only).
        chunk_size: query rows per distance block of :func:`dense_knn`; the moments are summed over blocks
            of ``64 * chunk_size`` points (memory bounded by the block, not by ``N``).

    Returns:
        :class:`KNNCovariance` ``(index, neighbours, cov, eigvals, eigvecs)``.

    Shapes:
        x ``[B, N, d]`` -> index ``[B, N, k]``, neighbours ``[B, N, k, d]``, cov ``[B, N, d, d]``,
        eigvals ``[B, N, d]``, eigvecs ``[B, N, d, d]``
    """
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(f"x: expected a tensor [B, N, d], got {tuple(getattr(x, 'shape', ())) or type(x).__name__}")
    if solver not in ("eigh", "symeig", None):
        raise ValueError(f"solver: expected 'eigh', 'symeig' or None, got {solver!r}")
    d = x.shape[-1]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k: expected a positive integer, got {k!r}")
    if k < d or k > x.shape[1]:
        raise ValueError(f"k: expected d = {d} <= k <= N = {x.shape[1]}, got {k}")
    idx = dense_knn(x, x, k, chunk_size=chunk_size)
    nbr = gather_neighbours(x, idx)  # [B, N, k, d]
    B, N, _ = x.shape
    src = (idx + N * torch.arange(B, device=x.device)[:, None, None]).reshape(-1)  # flat edges j -> i
    xf = x.reshape(B * N, d)
    block = 64 * chunk_size  # receivers per block: their k edges are contiguous in src
    C = torch.cat([
        _neighbourhood_moments(xf, src[s * k:(s + n) * k], torch.arange(n, device=x.device).repeat_interleave(k),
                               x.new_ones(n * k), False, "centroid", x_dst=xf[s:s + n])[1]
        for s in range(0, B * N, block) for n in [min(block, B * N - s)]])
    C = C.reshape(B, N, d, d) / k
    tr = C.diagonal(dim1=-2, dim2=-1).sum(-1)
    C = C / tr.clamp_min(torch.finfo(x.dtype).tiny)[..., None, None]
    if solver is None:
        return KNNCovariance(idx, nbr, C, None, None)
    if solver == "eigh":
        lam, U = torch.linalg.eigh(C)
    else:
        from .linalg import symeig  # noqa: PLC0415

        lam, U = symeig(C)
    return KNNCovariance(idx, nbr, C, lam, U)
