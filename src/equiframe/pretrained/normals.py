r"""A ready-to-use normal estimator for point clouds of any size, with shipped weights.

::

    from equiframe.pretrained import normal_estimator
    est = normal_estimator()                    # FA-Local-PointNet trained on the CAD-kernel parts
    normals = est(points)                       # points [N, 3] (numpy or torch) -> unit normals [N, 3]
    normals = est(points, orient=True)          # consistently oriented (k-NN graph / spanning tree)

or on the command line ``equiframe normals estimate scan.ply -o scan_normals.ply [--orient]``.

**How.** The shipped model is a local one (:class:`~equiframe.models.normals.LocalPointNet`): the normal of
point ``i`` depends only on its ``k`` nearest neighbours, in their local PCA frame (exactly
O(3)-equivariant, translation- and scale-invariant). So a cloud of any size is processed as: one k-NN
search (a k-d tree for large clouds, :func:`~equiframe.models.normals.dense_knn`), then the network on
chunks of ``chunk_size`` points (memory bounded by the chunk, not by ``N``), with a progress bar.

**Orientation** (optional; the network's normals are unoriented lines): Hoppe et al. (1992) propagation.
On the symmetrised k-NN graph with edge costs ``1 - |n_i . n_j|`` (plus a small constant), a minimum
spanning tree is grown per connected component (``scipy.sparse.csgraph``); the root of each component
(its point farthest from the component's centroid) is oriented away from the centroid and every other
normal is flipped, if needed, to agree with its parent in the tree (``n_i . n_parent >= 0``).

**Weights** live in ``equiframe/pretrained/weights/``: ``normals__<model>.pt`` (a float32 state dict,
loaded with ``torch.load(..., weights_only=True)``) and the sidecar ``normals__<model>.json``
(``name``, ``file``, ``sha256``, ``builder`` ``"module:Class"``, ``kwargs``, ``metrics``, ``trained``);
the SHA-256 of the ``.pt`` file is verified before loading.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from ..models.normals import LocalPointNet, dense_knn
from ._loader import available, info, load, save
from .._checks import check_instance, check_int

__all__ = [
    "NormalEstimator",
    "available_normal_models",
    "load_normal_model",
    "normal_estimator",
    "orient_normals",
    "save_normal_model",
]

_EXPERIMENT = "normals/"


def _full_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"name: expected a model name such as 'fa-local-pointnet-cad', got {name!r}")
    return name if name.startswith(_EXPERIMENT) else _EXPERIMENT + name


def available_normal_models(weights_dir: str | Path | None = None) -> list[str]:
    """Names ``<model>`` of the shipped normal models that the estimator can run (per-neighbourhood models:
    :class:`~equiframe.models.normals.LocalPointNet`)."""
    names = []
    for full in available(weights_dir):
        if full.startswith(_EXPERIMENT):
            module, _, attr = info(full, weights_dir).builder.partition(":")
            if hasattr(getattr(importlib.import_module(module), attr, None), "forward_neighbourhoods"):
                names.append(full[len(_EXPERIMENT):])
    return names


def load_normal_model(name: str = "fa-local-pointnet-cad", *, weights_dir: str | Path | None = None
                      ) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model of ``normals__<name>.json`` and load its checksummed weights
    (:func:`equiframe.pretrained.load`).

    Returns:
        ``(model, meta)``: the model in eval mode (float32, CPU) and the sidecar's contents.

    Raises:
        ValueError: unknown name, a model the estimator cannot run, or the weight file's SHA-256 differs from the
            sidecar's (:class:`~equiframe.pretrained.ChecksumError`).
    """
    full = _full_name(name)
    if full[len(_EXPERIMENT):] not in available_normal_models(weights_dir):
        raise ValueError(f"name: no shipped normal model {name!r} for the estimator; "
                         f"available: {available_normal_models(weights_dir)}")
    rec = info(full, weights_dir)
    model = load(full, directory=weights_dir)
    meta = json.loads(rec.path.with_suffix(".json").read_text())
    return model.float().eval(), meta


def save_normal_model(model: nn.Module, name: str, kwargs: Mapping[str, Any], *, metrics: Mapping[str, Any],
                      trained: Mapping[str, Any], weights_dir: str | Path | None = None,
                      experiment: Mapping[str, Any] | None = None, eval_batch_size: int | None = None,
                      check: Mapping[str, Any] | None = None) -> Path:
    """Write ``normals__<name>.pt`` (float32 state dict) and its sidecar ``.json`` with the SHA-256
    (:func:`equiframe.pretrained.save`). ``kwargs`` must rebuild the model with ``type(model)(**kwargs)``;
    ``experiment`` (``{"name", "config"}``), ``eval_batch_size`` and ``check`` let
    :func:`equiframe.pretrained.evaluate` re-evaluate it (see :func:`equiframe.pretrained.save`)."""
    check_instance("model", model, nn.Module)
    if not isinstance(name, str) or not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"name: expected a plain file-name part (no path separators), got {name!r}")
    builder = f"{type(model).__module__}:{type(model).__name__}"
    rec = save(model, _full_name(name), builder=builder, kwargs=kwargs, metrics=metrics, trained=trained,
               directory=weights_dir, experiment=experiment, eval_batch_size=eval_batch_size, check=check)
    return rec.path


def _as_points(pos: Any) -> np.ndarray:
    if isinstance(pos, Tensor):
        pos = pos.detach().cpu().numpy()
    if not isinstance(pos, np.ndarray):
        raise TypeError(f"pos: expected a numpy array or a torch tensor, got {type(pos).__name__}")
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"pos: expected shape [N, 3], got {pos.shape}")
    if not np.issubdtype(pos.dtype, np.floating):
        raise TypeError(f"pos: expected floating point coordinates, got {pos.dtype}")
    if not np.isfinite(pos).all():
        raise ValueError(f"pos: point {int(np.argmax(~np.isfinite(pos).all(axis=1)))} has a NaN or inf coordinate")
    return pos


def orient_normals(pos: Any, normal: Any, k: int = 10) -> np.ndarray:
    """Consistently orient unoriented normals by propagation over a minimum spanning tree of the k-NN graph
    (see the module docstring). Returns a copy of ``normal`` with some rows negated.

    Shapes:
        pos, normal: ``[N, 3]`` -> ``[N, 3]``
    """
    from scipy.sparse import coo_matrix  # noqa: PLC0415
    from scipy.sparse.csgraph import breadth_first_order, connected_components, minimum_spanning_tree  # noqa: PLC0415

    x = _as_points(pos).astype(np.float64)
    n = np.array(normal.detach().cpu().numpy() if isinstance(normal, Tensor) else normal, dtype=np.float64)
    if n.shape != x.shape:
        raise ValueError(f"normal: expected shape {x.shape}, got {n.shape}")
    N = x.shape[0]
    if N == 1:
        return n
    k = min(int(k), N - 1)
    idx = dense_knn(torch.from_numpy(x)[None], torch.from_numpy(x)[None], k, exclude_self=True)[0].numpy()
    rows = np.repeat(np.arange(N), k)
    cols = idx.reshape(-1)
    cost = 1.0 - np.abs((n[rows] * n[cols]).sum(-1)) + 1e-6  # > 0: scipy drops zero-weight edges
    g = coo_matrix((cost, (rows, cols)), shape=(N, N)).tocsr()
    g = g.maximum(g.T)  # symmetric
    tree = minimum_spanning_tree(g)
    tree = tree + tree.T
    n_comp, labels = connected_components(tree, directed=False)
    out = n.copy()
    for c in range(n_comp):
        members = np.nonzero(labels == c)[0]
        centroid = x[members].mean(axis=0)
        root = int(members[np.argmax(np.linalg.norm(x[members] - centroid, axis=1))])
        if out[root] @ (x[root] - centroid) < 0:
            out[root] = -out[root]
        order, parent = breadth_first_order(tree, root, directed=False, return_predecessors=True)
        for i in order[1:]:  # parents come before children in BFS order
            if out[i] @ out[parent[i]] < 0:
                out[i] = -out[i]
    return out


class NormalEstimator:
    """Per-point normals of clouds of any size with a local model (see the module docstring).

    Args:
        model: a :class:`~equiframe.models.normals.LocalPointNet` (its ``n_neighbours`` is the neighbourhood).
        chunk_size: points per network call (bounds the memory: about ``chunk_size * k * 2 hidden`` floats, and
            with a plane vote ``chunk_size * candidates * (k + hidden)``; 4096 was faster than 16384 on a CPU).
        device: where the network runs.
        meta: the weight file's sidecar (kept as :attr:`meta`).
    """

    def __init__(self, model: nn.Module, *, chunk_size: int = 4096, device: str | torch.device = "cpu",
                 meta: Mapping[str, Any] | None = None) -> None:
        if not isinstance(model, LocalPointNet):
            raise TypeError(f"model: expected a LocalPointNet (a model of k-NN neighbourhoods), got {type(model).__name__}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
        self.model = model.eval().to(device)
        self.chunk_size, self.device = chunk_size, torch.device(device)
        self.meta = dict(meta or {})

    @property
    def k(self) -> int:
        """Neighbours per point the model takes (its ``n_neighbours``: ``context_k`` with a context branch)."""
        return self.model.n_neighbours

    @torch.no_grad()
    def __call__(self, pos: Any, *, orient: bool = False, orient_k: int = 10, progress: bool = False) -> np.ndarray:
        """Unit normals ``[N, 3]`` (float32) of the points ``pos [N, 3]`` (``N > k``).

        Raises:
            ValueError: wrong shape, NaN/inf coordinates, or fewer than ``k + 1`` points.
        """
        x = _as_points(pos)
        N = x.shape[0]
        if N <= self.k:
            raise ValueError(f"pos: the estimator needs more than k = {self.k} points, got {N}")
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
        # offsets in float64 (large coordinates lose nothing), the network in float32
        idx = dense_knn(xt[None], xt[None], self.k)[0]  # [N, k], the point itself first
        out = np.empty((N, 3), dtype=np.float32)
        from tqdm.auto import tqdm  # noqa: PLC0415

        for s in tqdm(range(0, N, self.chunk_size), desc="normals", unit="chunk", disable=not progress):
            sl = slice(s, min(N, s + self.chunk_size))
            center = xt[sl]
            rel = xt[idx[sl]] - center[:, None]
            scale = rel.norm(dim=-1).amax(dim=1).clamp_min(1e-300)[:, None, None]  # the model is scale-invariant
            nb = (rel / scale).float().to(self.device)
            pred = self.model.forward_neighbourhoods(torch.zeros_like(nb[:, 0]), nb)
            out[sl] = torch.nn.functional.normalize(pred, dim=-1).cpu().numpy()
        if orient:
            out = orient_normals(x, out, orient_k).astype(np.float32)
        return out


def normal_estimator(name: str = "fa-local-pointnet-cad", *, chunk_size: int = 4096,
                     device: str | torch.device = "cpu", weights_dir: str | Path | None = None) -> NormalEstimator:
    """The pretrained normal estimator ``name`` (see :func:`available_normal_models`), weights verified by
    SHA-256 and loaded with ``weights_only=True``."""
    check_int("chunk_size", chunk_size, 1)
    model, meta = load_normal_model(name, weights_dir=weights_dir)
    return NormalEstimator(model, chunk_size=chunk_size, device=device, meta=meta)
