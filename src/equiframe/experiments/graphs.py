r"""Expressive power of graph models (Frame Averaging paper, SPEC 4.2): separation and classification.

**Separation** (:func:`separate`): untrained, randomly initialised models embed every graph of a data set;
a pair of graphs counts as *distinguished* if, for **any** seed,

.. math::  \lVert \phi_s(G_i) - \phi_s(G_j) \rVert_1 > \tau \qquad (\tau = 10^{-3}),

and the result is the number of pairs never distinguished. Pairs: graph8c all 61,788,286 pairs of the
11117 connected graphs on 8 nodes (100 seeds), EXP the 600 pairs ``(2k, 2k+1)`` (100 seeds), SR25 all
105 pairs of the 15 strongly regular graphs (10 seeds). All pairs of graph8c are handled without a
Python loop over pairs: per block of rows, chunked L1 ``cdist`` on every seed's embeddings, keeping the
pairs within ``tau`` in every seed so far (the block stops as soon as none is left).

**False-positive check**: every graph also gets a randomly relabelled copy (isomorphic, so it must not be
"distinguished"); the rate of graphs with ``||phi_s(G) - phi_s(PG)||_1 > tau`` is reported per seed and
over any seed, beside every count. Exactly invariant models give 0; frame averaging with *sampled* frames
does not (its output is a random variable). ``calibrated`` counts additionally require a pair's distance to
exceed both graphs' own copy distances in the same seed (a crude "beyond the sampling noise" test).

**Classification** (:func:`classify`): EXP-classify (train graphs 400-1199, validate 0-199, test
200-399) and CSL (10 classes x 15 graphs, 5-fold stratified CV: test fold ``k``, validation fold
``k+1 mod 5``, training the other three), trained with the shared loop :func:`equiframe.train.fit`
(Adam, lr 1e-3, cross-entropy, model selection by validation error, test accuracy of the best epoch).
:class:`GraphClassificationExperiment` is registered as experiment ``"graphs"``.

The command line (``add_cli`` and the argument functions) is in :mod:`equiframe.experiments.graphs_cli`.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, get_args

import torch
from torch import Tensor, nn

from ..datasets.fetch import data_source
from ..frames.canonical import canonical_keys
from ..models.graphs import GRAPH_MODEL_NAMES, ComponentOrder, FrameKind, GraphModelName, build_graph_model
from .._machine import machine_description
from ..train import Experiment, OptimConfig, TrainConfig, fit
from . import register_experiment

__all__ = [
    "CLASSIFY_DATASETS",
    "GraphClassificationConfig",
    "GraphClassificationExperiment",
    "PUBLISHED_SEPARATION",
    "SEPARATION_DATASETS",
    "add_cli",
    "classify",
    "csl_folds",
    "default_data_dir",
    "embed_graphs",
    "with_degree",
    "load_separation_graphs",
    "relabelled_copies",
    "separate",
    "undistinguished_pairs",
]

SeparationDataset = Literal["graph8c", "exp", "sr25"]
ClassifyDataset = Literal["exp", "csl"]
SEPARATION_DATASETS: tuple[str, ...] = get_args(SeparationDataset)
CLASSIFY_DATASETS: tuple[str, ...] = get_args(ClassifyDataset)
Dtype = Literal["float32", "float64"]
NodeFeatures = Literal["default", "degree"]
SelectMetric = Literal["error", "loss"]
_DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: Published results (recalled; FA paper Table 3 and the works it cites): undistinguished graph8c pairs,
#: undistinguished EXP pairs, EXP-classify test accuracy (%). SR25: even PPGN misses all 105 pairs.
PUBLISHED_SEPARATION: dict[str, tuple[int, int, float]] = {
    "GCN": (4755, 600, 50.0),
    "GIN": (386, 600, 50.0),
    "ChebNet": (44, 71, 82.0),
    "PPGN": (0, 0, 100.0),
    "FA-MLP": (0, 0, 100.0),
    "FA-GIN+ID": (0, 0, 100.0),
}

#: default seeds of the separation protocol per data set
DEFAULT_SEEDS = {"graph8c": 100, "exp": 100, "sr25": 10}


def default_data_dir() -> Path | None:
    """``$EQUIFRAME_DATA`` (the directory holding ``exp_graphsat.npz`` and ``sr251256.g6``), if set."""
    v = os.environ.get("EQUIFRAME_DATA")
    return Path(v) if v else None


def _data_file(data_dir: str | os.PathLike | None, dataset: str) -> Path:
    from ..datasets.fetch import find_data_file  # noqa: PLC0415

    return find_data_file(dataset, data_dir)  # type: ignore[arg-type]


def load_separation_graphs(dataset: SeparationDataset | ClassifyDataset, data_dir: str | os.PathLike | None = None):
    """The graphs of a benchmark as PyG ``Data`` (``x`` float features: EXP one-hot node type, others ones).

    ``graph8c`` is generated (cached); ``csl`` is built (seed 0); ``exp`` / ``sr25`` are read from
    ``data_dir`` (default ``$EQUIFRAME_DATA``, else ``~/.cache/equiframe/data``, where ``equiframe data fetch``
    puts them): ``exp_graphsat.npz`` (preferred: the draw behind the committed numbers) or ``GRAPHSAT.txt``
    (the public text release, another draw of EXP) / ``sr251256.g6``.
    """
    from ..datasets.graphs import csl_dataset, graph8c, load_exp, load_sr25  # noqa: PLC0415

    if dataset == "graph8c":
        return graph8c()
    if dataset == "exp":
        return load_exp(_data_file(data_dir, "exp"))
    if dataset == "sr25":
        return load_sr25(_data_file(data_dir, "sr25"))
    if dataset == "csl":
        return csl_dataset()
    raise ValueError(f"dataset: expected one of {SEPARATION_DATASETS + ('csl',)}, got {dataset!r}")


def relabelled_copies(graphs: Sequence[Any], generator: torch.Generator) -> list[Any]:
    """Every graph with its nodes relabelled by a uniformly random permutation (``x``, ``y`` carried along).

    Node ``i`` becomes node ``perm[i]`` (:func:`equiframe.frames.graph.permute_graph`); the copies are
    isomorphic to the originals, so an invariant model must embed them identically.
    """
    check_instance("generator", generator, torch.Generator)
    for i, g in enumerate(graphs):
        if getattr(g, "edge_index", None) is None or getattr(g, "num_nodes", None) is None:
            raise ValueError(f"graphs: item {i} is not a graph with edge_index and num_nodes ({type(g).__name__})")
    from torch_geometric.data import Data  # noqa: PLC0415

    from ..transforms import RandomNodePermutation  # noqa: PLC0415

    relabel = {True: RandomNodePermutation(node_attrs=("x",), generator=generator),  # one randperm per graph
               False: RandomNodePermutation(node_attrs=(), generator=generator)}      # (graphs without x)
    out = []
    for g in graphs:
        d = relabel[g.x is not None](Data(edge_index=g.edge_index, x=g.x, num_nodes=g.num_nodes))
        if getattr(g, "y", None) is not None:
            d.y = g.y
        out.append(d)
    return out


def with_degree(graphs: Sequence[Any]) -> list[Any]:
    """Copies of the graphs with the node degree appended to the node features: ``x' = [x, deg]``.

    The input of the GNN-ML code (Balcilar et al., 2021) behind the published GCN / GIN / ChebNet
    separation counts (there ``x = [1, deg]``); relabelling-equivariant, so invariance is unaffected.

    Shapes:
        per graph: x ``[n, F]``, edge_index ``[2, E]`` -> x' ``[n, F + 1]``
    """
    for i, g in enumerate(graphs):
        if getattr(g, "edge_index", None) is None or getattr(g, "num_nodes", None) is None:
            raise ValueError(f"graphs: item {i} is not a graph with edge_index and num_nodes ({type(g).__name__})")
    from torch_geometric.data import Data  # noqa: PLC0415

    from ..transforms import AddDegree  # noqa: PLC0415

    add_degree = AddDegree()
    out = []
    for g in graphs:
        d = add_degree(Data(x=g.x, edge_index=g.edge_index, num_nodes=g.num_nodes))
        if getattr(g, "y", None) is not None:
            d.y = g.y
        out.append(d)
    return out


# ================================================================================================ embeddings
def _chunks(graphs: Sequence[Any], batch_size: int, *, with_keys: bool, max_states: int,
            dtype: torch.dtype) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Collate graphs once into batches (dicts); canonical keys computed per batch if asked."""
    from torch_geometric.data import Batch  # noqa: PLC0415

    out, failed, states = [], 0, 0
    for i in range(0, len(graphs), batch_size):
        b = Batch.from_data_list(list(graphs[i : i + batch_size]))
        d: dict[str, Any] = {"x": b.x.to(dtype), "edge_index": b.edge_index, "batch": b.batch, "num_graphs": b.num_graphs}
        if with_keys:
            lab = canonical_keys(b.edge_index, batch=b.batch, x=b.x, max_states=max_states)
            d["key"] = lab.keys
            failed += int((~lab.ok).sum())
            states = max(states, int(lab.states.max()))
        out.append(d)
    return out, {"canonical_failed": failed, "canonical_max_states": states}


@torch.no_grad()
def embed_graphs(model: nn.Module, chunks: Sequence[Mapping[str, Any]], *, frame_info: bool = False):
    """Embeddings of pre-collated batches (see :func:`separate`), concatenated: ``[G, D]``.

    With ``frame_info`` (FA models) also returns ``{"exact": [G] bool, "log10_size": [G] float64,
    "copies": int}`` (``copies``: backbone inputs per pass, i.e. frame elements averaged).
    """
    check_instance("model", model, nn.Module)
    for i, c in enumerate(chunks):
        if not isinstance(c, Mapping) or not {"x", "edge_index", "batch"} <= c.keys():
            raise ValueError(f"chunks: item {i} is not a collated batch with x, edge_index and batch (see separate)")
    outs, exact, logs, copies = [], [], [], 0
    fa = hasattr(model, "fa")
    for c in chunks:
        if fa and frame_info:
            y, (frame, elements) = model(c["x"], c["edge_index"], c["batch"], key=c.get("key"), return_frame=True)
            exact.append(elements.exact.cpu())
            logs.append(frame.log_size().cpu() / math.log(10))
            copies += elements.num_copies
        elif fa:
            y = model(c["x"], c["edge_index"], c["batch"], key=c.get("key"))
        else:
            y = model(c["x"], c["edge_index"], c["batch"])
        outs.append(y)
    emb = torch.cat(outs)
    if not frame_info:
        return emb
    info = {"exact": torch.cat(exact) if exact else None, "log10_size": torch.cat(logs) if logs else None,
            "copies": copies}
    return emb, info


def undistinguished_pairs(
    embeddings: Tensor,
    threshold: float = 1e-3,
    pairs: Tensor | None = None,
    *,
    self_distance: Tensor | None = None,
    block: int = 512,
) -> Tensor:
    """Pairs whose embeddings are within ``threshold`` (L1) in **every** seed.

    .. math::  U = \\{(i, j) : \\max_s \\lVert E_{s,i} - E_{s,j} \\rVert_1 \\le \\tau\\}

    With ``self_distance`` ``[S, G]`` (each graph's distance to its relabelled copy per seed) a pair also
    stays undistinguished in seed ``s`` when its distance is ``<= max(d_s(i), d_s(j))`` (calibrated count).

    Args:
        embeddings: ``[S, G, D]`` (seeds, graphs, embedding).
        threshold: ``tau``.
        pairs: ``[P, 2]`` pairs to test; ``None`` = all pairs ``i < j`` (chunked, never materialised:
            blocks of ``block`` rows against all graphs, stopping a block when no candidate is left).
        self_distance: optional ``[S, G]`` noise level per graph and seed.
        block: rows per block for all pairs.

    Returns:
        ``[U, 2]`` int64 pairs ``(i, j)``, ``i < j`` for all pairs (the given order otherwise).
    """
    if not isinstance(embeddings, Tensor) or embeddings.dim() != 3:
        raise ValueError(f"embeddings: expected shape [S, G, D], got {tuple(getattr(embeddings, 'shape', ()))}")
    S, G, _ = embeddings.shape
    if S == 0 or G == 0:
        raise ValueError(f"embeddings: empty input of shape {tuple(embeddings.shape)}")
    if not bool(torch.isfinite(embeddings).all()):
        raise ValueError("embeddings: contains NaN or inf")
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold: expected a finite number >= 0, got {threshold!r}")
    if self_distance is not None and self_distance.shape != (S, G):
        raise ValueError(f"self_distance: expected shape [{S}, {G}], got {tuple(self_distance.shape)}")
    if pairs is not None:
        if pairs.dim() != 2 or pairs.shape[1] != 2:
            raise ValueError(f"pairs: expected shape [P, 2], got {tuple(pairs.shape)}")
        if pairs.numel() and (int(pairs.min()) < 0 or int(pairs.max()) >= G):
            raise ValueError(f"pairs: graph ids must lie in [0, {G})")
        d = (embeddings[:, pairs[:, 0]] - embeddings[:, pairs[:, 1]]).abs().sum(-1)  # [S, P]
        same = d <= threshold
        if self_distance is not None:
            same |= d <= torch.maximum(self_distance[:, pairs[:, 0]], self_distance[:, pairs[:, 1]])
        return pairs[same.all(0)]
    found = []
    cols = torch.arange(G)
    for i0 in range(0, G - 1, block):
        rows = torch.arange(i0, min(G, i0 + block))
        cand = cols[None, :] > rows[:, None]  # [b, G], upper triangle
        for s in range(S):
            d = torch.cdist(embeddings[s, rows], embeddings[s], p=1.0)
            ok = d <= threshold
            if self_distance is not None:
                ok |= d <= torch.maximum(self_distance[s, rows][:, None], self_distance[s][None, :])
            cand &= ok
            if not bool(cand.any()):
                break
        nz = torch.nonzero(cand)
        if nz.numel():
            found.append(torch.stack([rows[nz[:, 0]], nz[:, 1]], dim=1))
    return torch.cat(found) if found else torch.zeros(0, 2, dtype=torch.long)


def _machine() -> str:
    return machine_description(python=False)


def separate(
    dataset: SeparationDataset,
    model: GraphModelName,
    seeds: int | None = None,
    *,
    threshold: float = 1e-3,
    frame: FrameKind = "spectral",
    max_size: int | None = None,
    n_samples: int = 1,
    hidden: int = 64,
    layers: int = 3,
    out_dim: int = 10,
    dtype: Dtype = "float32",
    batch_size: int | None = None,
    data_dir: str | os.PathLike | None = None,
    false_positives: bool = True,
    relabel_seed: int = 12345,
    max_states: int = 20_000,
    gin_eps: float = 0.0,
    node_features: NodeFeatures = "default",
    graphs: Sequence[Any] | None = None,
    pairs: Tensor | None | Literal["default"] = "default",
    progress: bool = False,
) -> dict[str, Any]:
    """The separation protocol: pairs of non-isomorphic graphs never distinguished by untrained models.

    For every seed ``s = 0..seeds-1``: ``torch.manual_seed(s)``, build the model (FA frames sampled with a
    ``torch.Generator`` seeded ``s``), embed all graphs (and their relabelled copies); then count the pairs
    within ``threshold`` (L1) in every seed (:func:`undistinguished_pairs`) and the false-positive rates.

    Args:
        dataset: ``"graph8c"``, ``"exp"`` or ``"sr25"`` (ignored when ``graphs`` is given).
        model: ``"fa-mlp"``, ``"fa-gin-id"``, ``"gin"`` or ``"gcn"``.
        seeds: number of seeds (default 100; 10 for SR25).
        threshold: the L1 threshold ``tau``.
        frame: FA frames: ``"spectral"`` (paper) or ``"canonical"`` (see :mod:`equiframe.models.graphs`).
        max_size: largest frame averaged exactly (default: 40320 = 8! on graph8c, i.e. all exact; 1024 else).
        n_samples: samples per graph above ``max_size``.
        hidden, layers, out_dim: model size.
        dtype: ``"float32"`` or ``"float64"``.
        batch_size: graphs per forward pass (default: 2048 FA on graph8c, 4096 otherwise).
        data_dir: directory of ``exp_graphsat.npz`` / ``sr251256.g6`` (default ``$EQUIFRAME_DATA``).
        false_positives: also embed relabelled copies and report the false-positive rates.
        relabel_seed: seed of the relabelling permutations.
        max_states: canonical-frame search budget per graph.
        gin_eps: initial GIN ``epsilon`` (FA-GIN+ID, GIN); PyG's default 0.
        node_features: ``"default"`` (the data set's features: EXP node types, else ones) or ``"degree"``
            (the node degree appended, :func:`with_degree`: the input of the code behind the published
            GCN / GIN counts).
        graphs: use these graphs (PyG ``Data`` with ``x``) instead of a named data set (e.g. in tests).
        pairs: ``[P, 2]`` pairs to test, ``None`` for all pairs, ``"default"``: the data set's pairs
            (EXP consecutive pairs, else all pairs).
        progress: print one line per seed.

    Returns:
        A JSON-serialisable dict: ``undistinguished`` (count) and ``undistinguished_calibrated``,
        ``pairs`` (tested), ``fp_rate_mean`` / ``fp_rate_max`` (per seed) and ``fp_rate_any_seed``,
        ``averaging`` (exact / sampled graph counts, frame sizes), budgets, wall time, machine, and
        ``undistinguished_pairs`` (the pairs, when at most 10,000).
    """
    from ..datasets.graphs import consecutive_pairs  # noqa: PLC0415

    if model not in GRAPH_MODEL_NAMES:
        raise ValueError(f"model: expected one of {GRAPH_MODEL_NAMES}, got {model!r}")
    if graphs is None and dataset not in SEPARATION_DATASETS:
        raise ValueError(f"dataset: expected one of {SEPARATION_DATASETS}, got {dataset!r}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
    if seeds is None:
        seeds = DEFAULT_SEEDS.get(dataset, 10)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds: expected a positive integer, got {seeds!r}")
    t0 = time.perf_counter()
    tdt = _DTYPES[dtype]
    if node_features not in get_args(NodeFeatures):
        raise ValueError(f"node_features: expected one of {get_args(NodeFeatures)}, got {node_features!r}")
    from_files = graphs is None
    if graphs is None:
        graphs = load_separation_graphs(dataset, data_dir)
    graphs = list(graphs) if node_features == "default" else with_degree(graphs)
    if len(graphs) < 2:
        raise ValueError(f"graphs: need at least 2 graphs, got {len(graphs)}")
    G = len(graphs)
    n_max = max(g.num_nodes for g in graphs)
    in_dim = graphs[0].x.shape[1]
    fa = model.startswith("fa-")
    if max_size is None:
        max_size = 40320 if (dataset == "graph8c" and n_max <= 8) else 1024
    if batch_size is None:
        batch_size = 2048 if fa and dataset == "graph8c" else 4096
    if isinstance(pairs, str):
        if pairs != "default":
            raise ValueError(f"pairs: expected a tensor, None or 'default', got {pairs!r}")
        pairs = consecutive_pairs(G) if dataset == "exp" else None
    with_keys = fa and frame == "canonical"
    chunks, kinfo = _chunks(graphs, batch_size, with_keys=with_keys, max_states=max_states, dtype=tdt)
    copies, cinfo = [], {}
    if false_positives:
        copies_g = relabelled_copies(graphs, torch.Generator().manual_seed(relabel_seed))
        copies, cinfo = _chunks(copies_g, batch_size, with_keys=with_keys, max_states=max_states, dtype=tdt)
    t_prep = time.perf_counter() - t0

    emb = torch.empty(seeds, G, out_dim, dtype=tdt)
    selfd = torch.zeros(seeds, G, dtype=tdt)
    averaging: dict[str, Any] = {}
    for s in range(seeds):
        torch.manual_seed(s)
        gen = torch.Generator().manual_seed(s)
        net = build_graph_model(model, in_dim=in_dim, n_max=n_max, hidden=hidden, layers=layers, out_dim=out_dim,
                                frame=frame, mode="all", max_size=max_size, n_samples=n_samples, generator=gen,
                                max_states=max_states, gin_eps=gin_eps).to(tdt).eval()
        if s == 0 and fa:
            e, info = embed_graphs(net, chunks, frame_info=True)
            ls = info["log10_size"]
            averaging = {
                "exact_graphs": int(info["exact"].sum()), "sampled_graphs": int((~info["exact"]).sum()),
                "max_size": max_size, "n_samples": n_samples, "frame": frame,
                "median_log10_frame_size": float(ls.median()), "max_log10_frame_size": float(ls.max()),
                "copies_per_pass": info["copies"],
            }
        else:
            e = embed_graphs(net, chunks)
        emb[s] = e
        if false_positives:
            selfd[s] = (e - embed_graphs(net, copies)).abs().sum(-1)
        if progress:
            fp = float((selfd[s] > threshold).double().mean()) if false_positives else float("nan")
            print(f"[separate {dataset}/{model}{'/' + frame if fa else ''}] seed {s + 1}/{seeds} fp {fp:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    t_embed = time.perf_counter() - t0 - t_prep
    und = undistinguished_pairs(emb, threshold, pairs)
    und_cal = undistinguished_pairs(emb, threshold, pairs, self_distance=selfd) if false_positives else und
    n_pairs = G * (G - 1) // 2 if pairs is None else int(pairs.shape[0])
    fp_seed = (selfd > threshold).double().mean(1) if false_positives else None
    result: dict[str, Any] = {
        "dataset": dataset, **(data_source(dataset, data_dir) if from_files else {}),
        "model": model, "frame": frame if fa else None, "seeds": seeds, "threshold": threshold, "graphs": G, "pairs": n_pairs, "undistinguished": int(und.shape[0]),
        "undistinguished_calibrated": int(und_cal.shape[0]),
        "undistinguished_pairs": und.tolist() if und.shape[0] <= 10_000 else None,
        "fp_rate_mean": float(fp_seed.mean()) if fp_seed is not None else None,
        "fp_rate_max": float(fp_seed.max()) if fp_seed is not None else None,
        "fp_rate_any_seed": float((selfd > threshold).any(0).double().mean()) if false_positives else None,
        "fp_max_distance": float(selfd.max()) if false_positives else None,
        "averaging": averaging or {"frame": None, "note": "no frames (permutation invariant by construction)"},
        "canonical": ({"failed_graphs": kinfo["canonical_failed"], "failed_copies": cinfo.get("canonical_failed", 0),
                       "max_states_visited": max(kinfo["canonical_max_states"], cinfo.get("canonical_max_states", 0)),
                       "max_states": max_states} if with_keys else None),
        "model_config": {"hidden": hidden, "layers": layers, "out_dim": out_dim, "dtype": dtype, "n_max": n_max,
                         "gin_eps": gin_eps, "node_features": node_features},
        "time_prepare_s": t_prep, "time_embed_s": t_embed, "wall_time_s": time.perf_counter() - t0,
        "machine": _machine(),
    }
    return result


# ================================================================================================ classification
def csl_folds(labels: Sequence[int], folds: int = 5, seed: int = 0) -> list[list[int]]:
    """Stratified folds: every class's items shuffled (``numpy`` generator ``seed``) and dealt round-robin.

    Returns:
        ``folds`` lists of item indices (sorted), each with ``count_c / folds`` items of class ``c``.
    """
    check_int("folds", folds, 2)
    if len(labels) < folds:
        raise ValueError(f"labels: {len(labels)} item(s) cannot fill {folds} folds")
    import numpy as np  # noqa: PLC0415

    if folds < 2:
        raise ValueError(f"folds: expected >= 2, got {folds}")
    rng = np.random.default_rng(seed)
    labels = list(int(v) for v in labels)
    out: list[list[int]] = [[] for _ in range(folds)]
    for c in sorted(set(labels)):
        idx = [i for i, v in enumerate(labels) if v == c]
        idx = [idx[k] for k in rng.permutation(len(idx))]
        for k, i in enumerate(idx):
            out[k % folds].append(i)
    return [sorted(f) for f in out]


@dataclass(frozen=True)
class GraphClassificationConfig:
    """EXP-classify or CSL with one of the graph models.

    Attributes:
        dataset: ``"exp"`` (fixed split) or ``"csl"`` (5-fold CV, see :func:`csl_folds`).
        model: ``"fa-mlp"``, ``"fa-gin-id"``, ``"gin"``, ``"gcn"``.
        frame: FA frames (``"spectral"`` or ``"canonical"``) of evaluation (and of training by default).
        train_frame: FA frames while training; ``None`` = ``frame``. ``frame="canonical",
            train_frame="spectral"`` trains on sampled spectral-frame orders (augmentation over the frame)
            and evaluates with the exact, single-element canonical frame (see
            :class:`~equiframe.models.graphs.FAGraphModel`).
        fold: CSL test fold ``0..4`` (EXP: 0).
        hidden, layers: model size.
        max_size: evaluation: frames up to this size are averaged exactly, larger ones sampled.
        n_samples: frame samples per graph in training (and in evaluation above ``max_size``).
        dtype: ``"float32"`` / ``"float64"``.
        data_dir: directory of ``exp_graphsat.npz`` (default ``$EQUIFRAME_DATA``).
        max_states: canonical-frame search budget.
        select: validation metric of model selection (lower is better; the test accuracy is reported at
            the selected epoch): ``"error"`` (the first epoch with the lowest validation error) or
            ``"loss"`` (the lowest validation cross-entropy, as in the FA paper's code). With sampled
            training frames the validation error fluctuates between epochs and often first reaches its
            minimum at an early, not yet converged epoch; the loss ranks the converged epochs.
        train_components: ``"shuffled"`` samples training orders with every graph's connected components in
            random order (FA models; see :class:`~equiframe.models.graphs.FAGraphModel`); ``"sorted"``: the
            frame's own order.
    """

    dataset: ClassifyDataset = "exp"
    model: GraphModelName = "fa-gin-id"
    frame: FrameKind = "spectral"
    train_frame: FrameKind | None = None
    fold: int = 0
    hidden: int = 64
    layers: int = 3
    max_size: int = 1024
    n_samples: int = 1
    dtype: Dtype = "float32"
    data_dir: str | None = None
    max_states: int = 20_000
    select: SelectMetric = "error"
    train_components: ComponentOrder = "sorted"

    def __post_init__(self) -> None:
        if self.dataset not in CLASSIFY_DATASETS:
            raise ValueError(f"dataset: expected one of {CLASSIFY_DATASETS}, got {self.dataset!r}")
        if self.model not in GRAPH_MODEL_NAMES:
            raise ValueError(f"model: expected one of {GRAPH_MODEL_NAMES}, got {self.model!r}")
        if self.frame not in get_args(FrameKind):
            raise ValueError(f"frame: expected one of {get_args(FrameKind)}, got {self.frame!r}")
        if self.train_frame is not None and self.train_frame not in get_args(FrameKind):
            raise ValueError(f"train_frame: expected None or one of {get_args(FrameKind)}, got {self.train_frame!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {self.dtype!r}")
        if self.select not in get_args(SelectMetric):
            raise ValueError(f"select: expected one of {get_args(SelectMetric)}, got {self.select!r}")
        if self.train_components not in get_args(ComponentOrder):
            raise ValueError(f"train_components: expected one of {get_args(ComponentOrder)}, got {self.train_components!r}")
        if self.train_components != "sorted" and not self.model.startswith("fa-"):
            raise ValueError(f"train_components: only FA models sample frame orders, not {self.model!r}")
        nfolds = 5 if self.dataset == "csl" else 1
        if isinstance(self.fold, bool) or not isinstance(self.fold, int) or not 0 <= self.fold < nfolds:
            raise ValueError(f"fold: expected an integer in [0, {nfolds}) for {self.dataset}, got {self.fold!r}")
        for name in ("hidden", "layers", "max_size", "n_samples", "max_states"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GraphClassificationConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"config: unknown graph classification options {sorted(unknown)}")
        return cls(**dict(d))


class _GraphList(torch.utils.data.Dataset):
    def __init__(self, graphs: list[Any]):
        self.graphs = graphs

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, i: int) -> Any:
        return self.graphs[i]


@register_experiment
class GraphClassificationExperiment(Experiment):
    """EXP-classify / CSL for :mod:`equiframe.train` (metric: classification error, lower is better).

    The model-selection metric of an instance is ``config.select`` (``metric`` of the instance; the class
    attribute ``"error"`` is the metric reports show).

    Batches are dicts: ``x`` ``[N, F]``, ``edge_index``, ``batch``, ``y`` ``[B]``, ``key`` (canonical
    frames: precomputed canonical node keys), ``num_graphs``.
    """

    name = "graphs"
    metric = "error"
    published = {"fa-mlp": 0.0, "fa-gin-id": 0.0, "gin": 0.5, "gcn": 0.5}  # EXP-classify test error, by model
    published_csl = {"fa-mlp": 0.0, "fa-gin-id": 0.0, "gin": 0.9}  # CSL test error, by model
    references = {"EXP GIN error": 0.5, "EXP FA-MLP error": 0.0, "EXP FA-GIN+ID error": 0.0, "CSL GIN error": 0.9,
                  "CSL FA error": 0.0}

    def __init__(self, config: GraphClassificationConfig | None = None, **kwargs: Any):
        if config is None:
            config = GraphClassificationConfig(**kwargs)
        elif kwargs:
            raise TypeError("GraphClassificationExperiment: give a config or keyword options, not both")
        if not isinstance(config, GraphClassificationConfig):
            raise TypeError(f"config: expected a GraphClassificationConfig, got {type(config).__name__}")
        self.config = config
        self.metric = config.select  # selection metric of the training loop (instance level)
        self._graphs: list[Any] | None = None
        self._splits: dict[str, _GraphList] = {}

    @property
    def run_name(self) -> str:
        c = self.config
        fr = ""
        if c.model.startswith("fa-"):
            fr = f"-{c.frame}"
            if c.train_frame not in (None, c.frame):
                fr += f"-train{c.train_frame}"
            if c.train_components == "shuffled":
                fr += "-shufcomp"
        sel = "-selloss" if c.select == "loss" else ""
        return f"{c.dataset}-{c.model}{fr}{sel}-fold{c.fold}"

    def to_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GraphClassificationExperiment":
        return cls(GraphClassificationConfig.from_dict(d))

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.config.dataset, **data_source(self.config.dataset, self.config.data_dir),
                "model": self.config.model, "frame": self.config.frame,
                "train_frame": self.config.train_frame or self.config.frame,
                "train_components": self.config.train_components,
                "fold": self.config.fold, **{f"n_{k}": len(self.dataset(k)) for k in ("train", "valid", "test")},
                "published": (self.published if self.config.dataset == "exp" else self.published_csl).get(self.config.model)}

    # ------------------------------------------------------------------ data
    def _all_graphs(self) -> list[Any]:
        if self._graphs is None:
            c = self.config
            graphs = list(load_separation_graphs(c.dataset, c.data_dir))
            if c.model.startswith("fa-") and "canonical" in (c.frame, c.train_frame):
                from torch_geometric.data import Batch  # noqa: PLC0415

                for i in range(0, len(graphs), 1024):
                    part = graphs[i : i + 1024]
                    b = Batch.from_data_list(part)
                    lab = canonical_keys(b.edge_index, batch=b.batch, x=b.x, max_states=c.max_states)
                    for j, g in enumerate(part):
                        g.canon_key = lab.keys[b.ptr[j] : b.ptr[j + 1]].clone()
            self._graphs = graphs
        return self._graphs

    def split_indices(self) -> dict[str, list[int]]:
        """Graph indices of the train / valid / test splits."""
        c = self.config
        if c.dataset == "exp":
            return {"train": list(range(400, 1200)), "valid": list(range(0, 200)), "test": list(range(200, 400))}
        folds = csl_folds([int(g.y) for g in self._all_graphs()], 5, seed=0)
        test, valid = folds[c.fold], folds[(c.fold + 1) % 5]
        train = sorted(i for k, f in enumerate(folds) if k not in (c.fold, (c.fold + 1) % 5) for i in f)
        return {"train": train, "valid": valid, "test": test}

    @property
    def n_max(self) -> int:
        return max(g.num_nodes for g in self._all_graphs())

    @property
    def num_classes(self) -> int:
        return 2 if self.config.dataset == "exp" else 10

    def dataset(self, split: str) -> _GraphList:
        if split not in ("train", "valid", "test"):
            raise ValueError(f"split: expected 'train', 'valid' or 'test', got {split!r}")
        if split not in self._splits:
            graphs = self._all_graphs()
            self._splits[split] = _GraphList([graphs[i] for i in self.split_indices()[split]])
        return self._splits[split]

    def make_batch(self, dataset: _GraphList, index: Tensor) -> dict[str, Any]:
        from torch_geometric.data import Batch  # noqa: PLC0415

        b = Batch.from_data_list([dataset[int(i)] for i in index])
        out = {"x": b.x.to(_DTYPES[self.config.dtype]), "edge_index": b.edge_index, "batch": b.batch,
               "y": b.y.reshape(-1), "num_graphs": b.num_graphs}
        if hasattr(b, "canon_key") and b.canon_key is not None:
            out["key"] = b.canon_key
        return out

    def collate(self, items: Sequence[Any]) -> dict[str, Any]:
        return self.make_batch(_GraphList(list(items)), torch.arange(len(items)))

    # ------------------------------------------------------------------ model, loss, metrics
    def build_model(self) -> nn.Module:
        c = self.config
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))  # from the loop's seeded RNG
        in_dim = self._all_graphs()[0].x.shape[1]
        model = build_graph_model(c.model, in_dim=in_dim, n_max=self.n_max, hidden=c.hidden, layers=c.layers,
                                  out_dim=self.num_classes, frame=c.frame, train_frame=c.train_frame, mode="stochastic", max_size=c.max_size,
                                  n_samples=c.n_samples, generator=gen, max_states=c.max_states,
                                  train_components=c.train_components)
        return model.to(_DTYPES[c.dtype])

    @staticmethod
    def logits(model: nn.Module, batch: Mapping[str, Any]) -> Tensor:
        return model(batch["x"], batch["edge_index"], batch["batch"], key=batch.get("key"))

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> Tensor:
        return nn.functional.cross_entropy(self.logits(model, batch), batch["y"])

    def metrics(self, model: nn.Module, batch: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
        logits = self.logits(model, batch)
        n = float(batch["y"].numel())
        correct = float((logits.argmax(-1) == batch["y"]).sum())
        ce = float(nn.functional.cross_entropy(logits, batch["y"], reduction="sum"))
        return {"error": (n - correct, n), "accuracy": (correct, n), "loss": (ce, n)}

    @torch.no_grad()
    def diagnostics(self, model: nn.Module, device: torch.device, *, relabel_seed: int = 12345,
                    batch_size: int = 32) -> dict[str, Any]:
        """Invariance of the trained model on the test split: every test graph against a randomly relabelled
        copy (:func:`relabelled_copies`, generator seeded ``relabel_seed``), in evaluation mode.

        .. math::  \\Delta = \\max_{G \\in \\mathrm{test}} \\lVert f(G) - f(PG) \\rVert_\\infty

        Exactly invariant models (GIN, GCN, canonical frames, exactly averaged frames) give ``Delta`` at
        float rounding level and identical predictions; sampled frames do not. Canonical keys of the copies
        are computed on the fly (their own search, independent of the originals').

        Returns:
            ``{"relabel_max_abs_logit_diff", "relabel_prediction_agreement", "relabel_test_accuracy",
            "relabel_graphs"}``.
        """
        was_training = model.training
        model.eval()
        graphs = list(self.dataset("test"))
        copies = relabelled_copies(graphs, torch.Generator().manual_seed(relabel_seed))
        diff, agree, correct = 0.0, 0, 0
        for i in range(0, len(graphs), batch_size):
            a = self.to_device(self.collate(graphs[i : i + batch_size]), device)
            b = self.to_device(self.collate(copies[i : i + batch_size]), device)
            la, lb = self.logits(model, a), self.logits(model, b)
            diff = max(diff, float((la - lb).abs().max()))
            agree += int((la.argmax(-1) == lb.argmax(-1)).sum())
            correct += int((lb.argmax(-1) == b["y"]).sum())
        model.train(was_training)
        n = len(graphs)
        return {"relabel_max_abs_logit_diff": diff, "relabel_prediction_agreement": agree / n,
                "relabel_test_accuracy": correct / n, "relabel_graphs": n}


def classify(
    dataset: ClassifyDataset,
    model: GraphModelName,
    epochs: int = 199,
    *,
    frame: FrameKind = "spectral",
    train_frame: FrameKind | None = None,
    select: SelectMetric = "error",
    train_components: ComponentOrder = "sorted",
    seeds: Sequence[int] = (0,),
    folds: Sequence[int] | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 32,
    hidden: int = 64,
    layers: int = 3,
    max_size: int = 1024,
    n_samples: int = 1,
    dtype: Dtype = "float32",
    data_dir: str | os.PathLike | None = None,
    out: str | os.PathLike = "runs",
    eval_every: int = 1,
    overwrite: bool = False,
    resume: bool = False,
    quiet: bool = True,
    threads: int | None = None,
    device: str = "cpu",
    require_checkpoint: bool = False,
) -> dict[str, Any]:
    """Train and test a graph classifier with the shared loop (:func:`equiframe.train.fit`).

    EXP: one split (train 400-1199, valid 0-199, test 200-399). CSL: folds ``0..4`` by default (test fold
    ``k``, validation fold ``k+1 mod 5``). Adam (lr ``lr``, weight decay ``weight_decay``, default 0),
    cross-entropy, model selection on the validation ``select`` metric (``"error"`` or ``"loss"``, see
    :class:`GraphClassificationConfig`); runs are written to
    ``out/graphs/<dataset>-<model>[-frame[-train<train_frame>][-shufcomp]][-selloss]-fold<k>/seed<s>/``.

    FA models train with ``n_samples`` sampled elements per graph of the ``train_frame`` (default: ``frame``)
    and evaluate with ``frame``: exact averages up to ``max_size`` elements, ``n_samples`` samples above
    (canonical frames: always exact, one element). ``frame="canonical", train_frame="spectral"`` =
    augmentation over the spectral frame in training, exactly invariant evaluation. ``train_components=
    "shuffled"`` samples the training orders from the component frame instead (connected components in random
    order; :func:`~equiframe.frames.graph.shuffle_components`). ``resume`` continues runs from their checkpoints;
    with ``require_checkpoint`` a run without one is a ``FileNotFoundError`` (the CLI's ``--resume``; its
    ``--resume-or-start`` starts such runs).

    Returns:
        ``{"test_accuracy_mean", "test_accuracy_std", "runs": [{fold, seed, test_accuracy, best_epoch,
        wall_time_s, invariance, ...}], ...}`` (accuracies in [0, 1]; ``invariance``: the best model on
        relabelled copies of the test graphs, see :meth:`GraphClassificationExperiment.diagnostics`).
    """
    if dataset not in CLASSIFY_DATASETS:
        raise ValueError(f"dataset: expected one of {CLASSIFY_DATASETS}, got {dataset!r}")
    if folds is None:
        folds = range(5) if dataset == "csl" else (0,)
    t0 = time.perf_counter()
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, optim=OptimConfig(lr=lr, weight_decay=weight_decay),
                      seeds=tuple(seeds), eval_every=eval_every, checkpoint_every=max(10, epochs), out=str(out),
                      overwrite=overwrite, resume=resume, require_checkpoint=require_checkpoint, quiet=quiet,
                      threads=threads, device=device, diagnostics=True)
    runs = []
    for fold in folds:
        exp = GraphClassificationExperiment(GraphClassificationConfig(
            dataset=dataset, model=model, frame=frame, train_frame=train_frame, select=select,
            train_components=train_components, fold=int(fold), hidden=hidden, layers=layers,
            max_size=max_size, n_samples=n_samples, dtype=dtype, data_dir=None if data_dir is None else str(data_dir)))
        for seed in cfg.seeds:
            r = fit(exp, cfg, seed)
            m = r.metrics
            runs.append({"fold": int(fold), "seed": seed, "test_accuracy": m["test"]["accuracy"],
                         "best_val_accuracy": m["best_val"].get("accuracy"), "best_epoch": m["best_epoch"],
                         "epochs_run": m["epochs_run"], "wall_time_s": m["wall_time_s"], "run_dir": str(r.run_dir),
                         "invariance": m.get("diagnostics") or None})
    accs = [r["test_accuracy"] for r in runs]
    return {
        "dataset": dataset, "model": model, "frame": frame if model.startswith("fa-") else None,
        "train_frame": (train_frame or frame) if model.startswith("fa-") else None, "select": select,
        "train_components": train_components if model.startswith("fa-") else None,
        "epochs": epochs,
        "lr": lr, "weight_decay": weight_decay, "batch_size": batch_size, "n_samples": n_samples, "max_size": max_size,
        "test_accuracy_mean": statistics.fmean(accs), "test_accuracy_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
        "runs": runs, "wall_time_s": time.perf_counter() - t0, "machine": _machine(),
    }



from .graphs_cli import add_classify_arguments, add_cli, add_separate_arguments  # noqa: E402  (re-exported)
from .._checks import check_int
from .._entry_checks import check_instance
