"""Neighbourhoods of the local frames: argument checks, graph building, and distance ties.

:func:`neighbourhood_ties` flags nodes whose k-NN / radius neighbourhood is decided by a tie of distances
(regular lattices, crystals), i.e. not by the geometry: their frames cannot be equivariant.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..geometry import knn_graph, radius_graph
from .._checks import check_tensor

__all__ = ["TIE_FACTOR", "knn_graph_with_ties", "neighbourhood_ties", "tie_tolerance"]


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------


def _check_dim(dim, name: str = "dim") -> int:
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{name}: expected an integer, got {type(dim).__name__}")
    if dim < 1:
        raise ValueError(f"{name}: expected >= 1, got {dim}")
    return dim


def _check_count(n, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name}: expected an integer, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"{name}: expected >= 0, got {n}")
    return n


def _check_float_dtype(dtype: torch.dtype | None) -> torch.dtype:
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype: expected a floating point torch.dtype, got {dtype!r}")
    return dtype


def _check_pos(pos: Tensor, dim: int | None = None, name: str = "pos") -> None:
    if not isinstance(pos, Tensor):
        raise TypeError(f"{name}: expected a tensor [N, d], got {type(pos).__name__}")
    if pos.dim() != 2:
        raise ValueError(f"{name}: expected shape [N, d], got {tuple(pos.shape)}")
    if not pos.is_floating_point():
        raise TypeError(f"{name}: expected a floating point tensor, got {pos.dtype}")
    if pos.shape[1] < 1:
        raise ValueError(f"{name}: expected d >= 1 coordinates, got shape {tuple(pos.shape)}")
    if dim is not None and pos.shape[1] != dim:
        raise ValueError(f"{name}: expected {dim} coordinates per point (dim={dim}), got shape {tuple(pos.shape)}")
    if pos.numel() and not bool(torch.isfinite(pos).all()):
        raise ValueError(f"{name}: contains NaN or inf")


def _check_batch(batch: Tensor | None, num_nodes: int, device) -> Tensor | None:
    if batch is None:
        return None
    if not isinstance(batch, Tensor):
        raise TypeError(f"batch: expected a tensor [N], got {type(batch).__name__}")
    if batch.dim() != 1 or batch.shape[0] != num_nodes:
        raise ValueError(f"batch: expected shape [{num_nodes}], got {tuple(batch.shape)}")
    if batch.dtype.is_floating_point or batch.dtype == torch.bool or batch.is_complex():
        raise TypeError(f"batch: expected an integer tensor, got {batch.dtype}")
    if batch.numel() and int(batch.min()) < 0:
        raise ValueError("batch: graph indices must be >= 0")
    return batch.to(device=device, dtype=torch.long)


def _check_edge_index(edge_index: Tensor, num_nodes: int, batch: Tensor | None) -> Tensor:
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"edge_index: expected a tensor [2, E], got {type(edge_index).__name__}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index: expected shape [2, E], got {tuple(edge_index.shape)}")
    if edge_index.dtype.is_floating_point or edge_index.dtype == torch.bool or edge_index.is_complex():
        raise TypeError(f"edge_index: expected an integer tensor, got {edge_index.dtype}")
    edge_index = edge_index.long()
    if edge_index.numel():
        lo, hi = int(edge_index.min()), int(edge_index.max())
        if lo < 0 or hi >= num_nodes:
            raise ValueError(f"edge_index: node indices must lie in [0, {num_nodes}), got range [{lo}, {hi}]")
        if batch is not None and not bool((batch[edge_index[0]] == batch[edge_index[1]]).all()):
            raise ValueError("edge_index: contains edges between different graphs of the batch")
    return edge_index


def _resolve_graph(
    pos: Tensor,
    edge_index: Tensor | None,
    batch: Tensor | None,
    k: int | None,
    r: float | None,
    max_num_neighbors: int | None,
) -> Tensor:
    """``edge_index`` as given (validated), or a kNN / radius graph built from ``pos``."""
    batch = _check_batch(batch, pos.shape[0], pos.device)
    if edge_index is not None:
        return _check_edge_index(edge_index.to(pos.device), pos.shape[0], batch)
    if (k is None) == (r is None):
        raise ValueError("edge_index: give edge_index, or exactly one of k (kNN graph) and r (radius graph)")
    if k is not None:
        return knn_graph(pos, k, batch)
    return radius_graph(pos, r, batch, max_num_neighbors=max_num_neighbors)


#: safety factor of the tie tolerance over the rounding error of one computed distance
TIE_FACTOR = 64.0


def tie_tolerance(pos: Tensor, dist: Tensor) -> Tensor:
    """Distances closer than this are treated as tied (per node): ``TIE_FACTOR * eps(dtype) * (|x_i|_inf + dist)``.

    A distance ``|x_j - x_i|`` computed in floating point is off by a few ``eps |x|`` (the rounding of
    the coordinates, and of a rotation/translation applied to them, is relative to their magnitude), so
    two distances closer than that may swap order between a cloud and its transformed copy. The factor
    64 covers the rounding of the distance and of an E(d) transform of the coordinates with margin:
    about ``7.6e-6 |x|`` in float32 and ``1.4e-14 |x|`` in float64.

    Shapes:
        pos ``[N, d]``, dist ``[N]`` -> ``[N]``
    """
    check_tensor("pos", pos, ndim=2, floating=True)
    check_tensor("dist", dist, ndim=1)
    if dist.shape[0] != pos.shape[0]:
        raise ValueError(f"dist: expected shape [{pos.shape[0]}] (one per node of pos), got {tuple(dist.shape)}")
    eps = torch.finfo(pos.dtype).eps
    return TIE_FACTOR * eps * (pos.detach().abs().amax(1) + dist)


def _sort_by_target(pos: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Edges sorted by target, then distance, then source: ``(order, distances, rank within target,
    counts per target)`` (sorted edge ``e`` is ``edge_index[:, order[e]]``)."""
    n = pos.shape[0]
    x = pos.detach()
    src, dst = edge_index[0], edge_index[1]
    dist = (x[src] - x[dst]).norm(dim=1)
    new_target = dst[1:] != dst[:-1]
    if bool((dst[1:] >= dst[:-1]).all()) and bool((new_target | (dist[1:] >= dist[:-1])).all()):
        order = torch.arange(dst.numel(), device=dst.device)  # already sorted (the torch k-NN backend)
    else:
        order = torch.argsort(src, stable=True)
        order = order[torch.argsort(dist[order], stable=True)]
        order = order[torch.argsort(dst[order], stable=True)]
    dst_s = dst[order]
    counts = torch.bincount(dst, minlength=n)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(dst_s.numel(), device=pos.device) - start[dst_s]
    return order, dist[order], rank, counts


def _sorted_neighbour_distances(pos: Tensor, edge_index: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Per target, the ascending distances to its sources ``[N, width]`` (``inf`` padded) and the counts."""
    order, dist_s, rank, counts = _sort_by_target(pos, edge_index)
    dst_s = edge_index[1][order]
    keep = rank < width
    D = torch.full((pos.shape[0], width), float("inf"), dtype=pos.dtype, device=pos.device)
    D[dst_s[keep], rank[keep]] = dist_s[keep]
    return D, counts


def _knn_ties(pos: Tensor, ei: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """From a ``(k+1)``-NN graph: the ``k``-NN graph (first ``k`` sources per target by distance, then
    index) and the tie flags."""
    order, dist_s, rank, counts = _sort_by_target(pos, ei)
    n = pos.shape[0]
    D = torch.full((n, k + 1), float("inf"), dtype=pos.dtype, device=pos.device)
    dst_s = ei[1][order]
    D[dst_s, rank] = dist_s
    full = counts >= k + 1
    dk = torch.where(full, D[:, k], D.new_zeros(()))
    ties = full & (dk - D[:, k - 1] <= tie_tolerance(pos, dk))
    return ei[:, order[rank < k]], ties


def knn_graph_with_ties(pos: Tensor, k: int, batch: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """:func:`equiframe.geometry.knn_graph` ``(pos, k, batch)`` (the same edges, sorted by target, distance,
    source) and :func:`neighbourhood_ties` for it, from one ``(k+1)``-NN search.

    Shapes:
        pos ``[N, d]``, batch ``[N]`` -> edge_index ``[2, E]``, ties ``[N]`` (bool)
    """
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k: expected an integer, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k: expected >= 1, got {k}")
    return _knn_ties(pos, knn_graph(pos.detach(), k + 1, batch), k)


def neighbourhood_ties(
    pos: Tensor,
    *,
    k: int | None = None,
    r: float | None = None,
    batch: Tensor | None = None,
    max_num_neighbors: int | None = None,
    boundary: bool = True,
) -> Tensor:
    r"""Nodes whose k-NN / radius neighbourhood is not determined by the geometry (a tie decides it).

    * k-NN: the ``k``-th and ``(k+1)``-th nearest distances tie (regular lattices, crystals): which of the
      tied points is a neighbour depends on the labelling, not on the geometry.
    * radius ``r`` with a cap: more than ``max_num_neighbors`` points within ``r`` and the cap falls
      between tied distances.
    * radius ``r`` (``boundary=True``): a point lies on the sphere of radius ``r`` (within the tolerance),
      so rounding decides whether it is a neighbour.

    Distances tie when they differ by at most :func:`tie_tolerance`. A graph that has fewer points
    than ``k + 1`` gives each node all of them (no tie).

    Shapes:
        pos ``[N, d]``, batch ``[N]`` -> ``[N]`` (bool)
    """
    if (k is None) == (r is None):
        raise ValueError("k, r: pass exactly one of k (k-NN) and r (radius)")
    n = pos.shape[0]
    ties = torch.zeros(n, dtype=torch.bool, device=pos.device)
    if n == 0:
        return ties
    if k is not None:
        return knn_graph_with_ties(pos, k, batch)[1]
    assert r is not None
    margin = float(tie_tolerance(pos, pos.new_full((n,), float(r))).max())
    cap = None if max_num_neighbors is None else max_num_neighbors + 1
    ei = radius_graph(pos.detach(), float(r) + margin, batch, max_num_neighbors=cap)
    width = int(torch.bincount(ei[1], minlength=n).max()) if ei.numel() else 1
    D, counts = _sorted_neighbour_distances(pos, ei, max(width, 1))
    tol = tie_tolerance(pos, pos.new_full((n,), float(r)))
    if boundary:
        ties |= ((D - r).abs() <= tol[:, None]).any(1)
    if max_num_neighbors is not None and width > max_num_neighbors:
        m = max_num_neighbors
        inside = counts > m
        dm = torch.where(inside, D[:, m], D.new_zeros(()))
        ties |= inside & (dm <= r) & (dm - D[:, m - 1] <= tie_tolerance(pos, dm))
    return ties


def _default_tol(dtype: torch.dtype) -> float:
    """``10 sqrt(eps)``: ``3.5e-3`` in float32, ``1.5e-7`` in float64."""
    return 10.0 * math.sqrt(torch.finfo(dtype).eps)
