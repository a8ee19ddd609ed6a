r"""Training samples of the local normal models: random query neighbourhoods of noisy clouds at mixed densities.

A local model (:class:`~equiframe.models.normals.LocalPointNet`) predicts each point's normal from its own
``k``-NN neighbourhood only, so the loss of a cloud is a mean of independent per-point terms. Training on
``q`` random *query points* per cloud (their neighbourhoods taken in the whole cloud) is therefore an
unbiased estimate of the full loss at ``q / N`` of the cost, and the saved time buys more parts per
step. :class:`NeighbourhoodSamples` draws, per training cloud and epoch (seeded by
``(data_seed, epoch, item)``: a resumed run draws the same samples):

1. a density ``N`` from ``densities`` (a random subset of the epoch's fresh area-uniform points);
2. a noise level ``sigma ~ U(0, noise_max)`` (fraction of the cloud's bounding-box diagonal) and
   Gaussian noise of standard deviation ``sigma * diag`` on every position (:func:`add_random_noise`;
   the normals stay exact); with ``clean_share = p`` a share ``p`` of the clouds stays clean (exact
   points keep exact inliers, which models that vote on candidate planes rely on);
3. ``q`` query points and the ``n_neighbours`` nearest points of each (the query itself first).

Evaluation (validation, test) is unchanged: whole clouds through the model's ``forward``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..geometry import dense_knn

__all__ = ["NeighbourhoodSamples", "add_random_noise", "query_neighbourhoods"]


def _check_noise_max(noise_max: float) -> None:
    if not (isinstance(noise_max, (int, float)) and np.isfinite(noise_max) and noise_max >= 0):
        raise ValueError(f"noise_max: expected a finite number >= 0, got {noise_max!r}")


def add_random_noise(pos: Tensor, noise_max: float, rng: np.random.Generator) -> tuple[Tensor, float]:
    """``pos`` plus isotropic Gaussian noise of standard deviation ``sigma * diag``, ``sigma ~ U(0, noise_max)``
    (``diag``: the bounding-box diagonal of ``pos``). Returns the noisy cloud and ``sigma``.

    Shapes:
        pos ``[N, d]`` -> ``[N, d]``
    """
    _check_noise_max(noise_max)
    if noise_max == 0:
        return pos, 0.0
    sigma = float(rng.uniform(0.0, noise_max))
    diag = float((pos.amax(dim=0) - pos.amin(dim=0)).norm())
    eps = torch.from_numpy(rng.normal(0.0, sigma * diag, tuple(pos.shape))).to(pos.dtype)
    return pos + eps, sigma


def query_neighbourhoods(pos: Tensor, n_queries: int, n_neighbours: int) -> tuple[Tensor, Tensor]:
    """The first ``n_queries`` points of ``pos`` (callers shuffle) and their ``n_neighbours`` nearest points
    in ``pos``, nearest first (the query itself first).

    Shapes:
        pos ``[N, d]`` -> center ``[q, d]``, nbr ``[q, n_neighbours, d]``, and the query indices are ``0 .. q-1``
    """
    if not 1 <= n_queries <= pos.shape[0] or not 1 <= n_neighbours <= pos.shape[0]:
        raise ValueError(f"n_queries, n_neighbours: expected 1 .. {pos.shape[0]} (points), got {n_queries}, "
                         f"{n_neighbours}")
    center = pos[:n_queries]
    idx = dense_knn(center, pos, n_neighbours)  # [q, n], nearest first
    return center, pos[idx]


class _EpochView(torch.utils.data.Dataset):
    """A view of a data set that draws per epoch (``self.dataset``): ``set_epoch`` and ``epoch`` go to it."""

    dataset: Any

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self.dataset.epoch


class NeighbourhoodSamples(_EpochView):
    """Training items ``{"center" [q, d], "nbr" [q, n_neighbours, d], "normal" [q, d]}`` from the clouds of
    a resampled data set (see the module docstring).

    Args:
        dataset: a :class:`~equiframe.experiments.normals.FreshPoints` (items ``pos``, ``normal``
            ``[N_max, d]``, fresh every epoch); ``N_max >= max(densities)``.
        n_queries: query points per cloud.
        n_neighbours: neighbours per query (the model's ``n_neighbours``).
        noise_max: largest noise level (fraction of the bounding-box diagonal); 0: clean clouds.
        densities: point counts to draw from (default: all points of the item).
        seed: seed of the draws (with the epoch and the item index).
        clean_share: share of the clouds without noise, in ``[0, 1]`` (0: every cloud gets its noise level;
            only a share ``> 0`` draws the extra coin, so the samples of 0 are those of earlier versions).
    """

    def __init__(self, dataset: Any, n_queries: int, n_neighbours: int, *, noise_max: float = 0.0,
                 densities: Sequence[int] = (), seed: int = 0, clean_share: float = 0.0):
        for name, v in (("n_queries", n_queries), ("n_neighbours", n_neighbours)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        _check_noise_max(noise_max)
        dens = tuple(densities)
        if any(isinstance(n, bool) or not isinstance(n, int) or n <= max(n_queries - 1, n_neighbours) for n in dens):
            raise ValueError(f"densities: expected point counts > n_neighbours = {n_neighbours} and >= n_queries = "
                             f"{n_queries}, got {densities!r}")
        self.dataset, self.n_queries, self.n_neighbours = dataset, n_queries, n_neighbours
        if isinstance(clean_share, bool) or not isinstance(clean_share, (int, float)) or not 0 <= clean_share <= 1:
            raise ValueError(f"clean_share: expected a number in [0, 1], got {clean_share!r}")
        self.noise_max, self.densities, self.seed = float(noise_max), dens, int(seed)
        self.clean_share = float(clean_share)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        item = self.dataset[i]
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 7, self.epoch, int(i)]))
        perm = torch.from_numpy(rng.permutation(item["pos"].shape[0]))
        pos, nrm = item["pos"][perm], item["normal"][perm]
        if self.densities:
            n = int(self.densities[rng.integers(len(self.densities))])
            if n > pos.shape[0]:
                raise ValueError(f"densities: {n} points asked, the item has {pos.shape[0]}")
            pos, nrm = pos[:n], nrm[:n]  # a uniform random subset of the item's (area-uniform) points
        if not (self.clean_share > 0 and rng.random() < self.clean_share):
            pos, _ = add_random_noise(pos, self.noise_max, rng)
        center, nbr = query_neighbourhoods(pos, min(self.n_queries, pos.shape[0]), self.n_neighbours)
        return {"center": center, "nbr": nbr, "normal": nrm[: center.shape[0]]}
