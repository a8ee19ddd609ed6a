r"""Expressive power of graph models (Frame Averaging paper, SPEC 4.2): the separation protocol.

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

The graph data sets (:func:`load_separation_graphs`, :func:`relabelled_copies`, :func:`with_degree`) are
shared with the classification experiment (:mod:`equiframe.experiments.graphs`, which re-exports every
name of this module).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, get_args

import torch
from torch import Tensor, nn

from ..datasets.fetch import data_source
from ..frames.canonical import canonical_keys
from ..models.graphs import GRAPH_MODEL_NAMES, FrameKind, GraphModelName, build_graph_model
from .._checks import check_instance
from .._machine import machine_description

__all__ = [
    "DEFAULT_SEEDS",
    "PUBLISHED_SEPARATION",
    "SEPARATION_DATASETS",
    "default_data_dir",
    "embed_graphs",
    "load_separation_graphs",
    "relabelled_copies",
    "separate",
    "undistinguished_pairs",
    "with_degree",
]

SeparationDataset = Literal["graph8c", "exp", "sr25"]
SEPARATION_DATASETS: tuple[str, ...] = get_args(SeparationDataset)
Dtype = Literal["float32", "float64"]
NodeFeatures = Literal["default", "degree"]
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


def load_separation_graphs(dataset: SeparationDataset | Literal["csl"], data_dir: str | os.PathLike | None = None):
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


# ================================================================================================ the protocol
@dataclass(frozen=True)
class _SeparationModel:
    """The resolved model settings of one separation run (see :func:`separate`); :meth:`build` makes seed ``s``'s."""

    model: str
    frame: str
    in_dim: int
    n_max: int
    hidden: int
    layers: int
    out_dim: int
    max_size: int
    n_samples: int
    max_states: int
    gin_eps: float
    dtype: torch.dtype

    @property
    def fa(self) -> bool:
        return self.model.startswith("fa-")

    def build(self, seed: int) -> nn.Module:
        """``torch.manual_seed(seed)``, then the model in evaluation mode (FA frames sampled with a
        ``torch.Generator`` seeded ``seed``)."""
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        return build_graph_model(self.model, in_dim=self.in_dim, n_max=self.n_max, hidden=self.hidden,
                                 layers=self.layers, out_dim=self.out_dim, frame=self.frame, mode="all",
                                 max_size=self.max_size, n_samples=self.n_samples, generator=gen,
                                 max_states=self.max_states, gin_eps=self.gin_eps).to(self.dtype).eval()


def _checked_seeds(dataset: str, model: str, seeds: int | None, dtype: str, graphs: Sequence[Any] | None) -> int:
    """The checks of :func:`separate` before any data is read; the number of seeds (default per data set)."""
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
    return seeds


def _run_graphs(dataset: str, graphs: Sequence[Any] | None, data_dir: str | os.PathLike | None,
                node_features: str) -> list[Any]:
    """The graphs of a run: the given ones or the named data set's, with the degree appended if asked."""
    if node_features not in get_args(NodeFeatures):
        raise ValueError(f"node_features: expected one of {get_args(NodeFeatures)}, got {node_features!r}")
    if graphs is None:
        graphs = load_separation_graphs(dataset, data_dir)
    graphs = list(graphs) if node_features == "default" else with_degree(graphs)
    if len(graphs) < 2:
        raise ValueError(f"graphs: need at least 2 graphs, got {len(graphs)}")
    return graphs


def _run_pairs(pairs: Tensor | None | str, dataset: str, num_graphs: int) -> Tensor | None:
    """``pairs`` with ``"default"`` resolved: EXP's consecutive pairs, else ``None`` (all pairs)."""
    from ..datasets.graphs import consecutive_pairs  # noqa: PLC0415

    if isinstance(pairs, str):
        if pairs != "default":
            raise ValueError(f"pairs: expected a tensor, None or 'default', got {pairs!r}")
        pairs = consecutive_pairs(num_graphs) if dataset == "exp" else None
    return pairs


def _frame_summary(spec: _SeparationModel, info: Mapping[str, Any]) -> dict[str, Any]:
    """The ``averaging`` entry of an FA run: exact / sampled graphs and frame sizes (seed 0's frames)."""
    ls = info["log10_size"]
    return {
        "exact_graphs": int(info["exact"].sum()), "sampled_graphs": int((~info["exact"]).sum()),
        "max_size": spec.max_size, "n_samples": spec.n_samples, "frame": spec.frame,
        "median_log10_frame_size": float(ls.median()), "max_log10_frame_size": float(ls.max()),
        "copies_per_pass": info["copies"],
    }


def _embed_seeds(spec: _SeparationModel, seeds: int, chunks: Sequence[Mapping[str, Any]],
                 copies: Sequence[Mapping[str, Any]] | None, *, num_graphs: int, threshold: float,
                 progress: str | None, t0: float) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Every seed's embeddings ``[S, G, D]``, each graph's L1 distance to its relabelled copy ``[S, G]`` (zeros
    without ``copies``) and the frame summary of seed 0 (FA models, else ``{}``); ``progress``: a line prefix."""
    emb = torch.empty(seeds, num_graphs, spec.out_dim, dtype=spec.dtype)
    selfd = torch.zeros(seeds, num_graphs, dtype=spec.dtype)
    averaging: dict[str, Any] = {}
    for s in range(seeds):
        net = spec.build(s)
        if s == 0 and spec.fa:
            e, info = embed_graphs(net, chunks, frame_info=True)
            averaging = _frame_summary(spec, info)
        else:
            e = embed_graphs(net, chunks)
        emb[s] = e
        if copies is not None:
            selfd[s] = (e - embed_graphs(net, copies)).abs().sum(-1)
        if progress is not None:
            fp = float((selfd[s] > threshold).double().mean()) if copies is not None else float("nan")
            print(f"{progress} seed {s + 1}/{seeds} fp {fp:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return emb, selfd, averaging


def _pair_counts(emb: Tensor, selfd: Tensor | None, threshold: float, pairs: Tensor | None) -> dict[str, Any]:
    """The counts of a run: pairs tested, undistinguished (plain and calibrated by ``selfd``, the copy
    distances; ``None`` = no false-positive check) and the false-positive rates."""
    und = undistinguished_pairs(emb, threshold, pairs)
    und_cal = undistinguished_pairs(emb, threshold, pairs, self_distance=selfd) if selfd is not None else und
    G = emb.shape[1]
    fp_seed = (selfd > threshold).double().mean(1) if selfd is not None else None
    return {
        "pairs": G * (G - 1) // 2 if pairs is None else int(pairs.shape[0]), "undistinguished": int(und.shape[0]),
        "undistinguished_calibrated": int(und_cal.shape[0]),
        "undistinguished_pairs": und.tolist() if und.shape[0] <= 10_000 else None,
        "fp_rate_mean": float(fp_seed.mean()) if fp_seed is not None else None,
        "fp_rate_max": float(fp_seed.max()) if fp_seed is not None else None,
        "fp_rate_any_seed": float((selfd > threshold).any(0).double().mean()) if selfd is not None else None,
        "fp_max_distance": float(selfd.max()) if selfd is not None else None,
    }


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
    seeds = _checked_seeds(dataset, model, seeds, dtype, graphs)
    t0 = time.perf_counter()
    from_files = graphs is None
    graphs = _run_graphs(dataset, graphs, data_dir, node_features)
    G = len(graphs)
    fa = model.startswith("fa-")
    n_max = max(g.num_nodes for g in graphs)
    if max_size is None:
        max_size = 40320 if (dataset == "graph8c" and n_max <= 8) else 1024
    if batch_size is None:
        batch_size = 2048 if fa and dataset == "graph8c" else 4096
    pairs = _run_pairs(pairs, dataset, G)
    spec = _SeparationModel(model, frame, graphs[0].x.shape[1], n_max, hidden, layers, out_dim, max_size, n_samples,
                            max_states, gin_eps, _DTYPES[dtype])
    with_keys = fa and frame == "canonical"
    chunks, kinfo = _chunks(graphs, batch_size, with_keys=with_keys, max_states=max_states, dtype=spec.dtype)
    copies, cinfo = None, {}
    if false_positives:
        copies_g = relabelled_copies(graphs, torch.Generator().manual_seed(relabel_seed))
        copies, cinfo = _chunks(copies_g, batch_size, with_keys=with_keys, max_states=max_states, dtype=spec.dtype)
    t_prep = time.perf_counter() - t0

    label = f"[separate {dataset}/{model}{'/' + frame if fa else ''}]" if progress else None
    emb, selfd, averaging = _embed_seeds(spec, seeds, chunks, copies, num_graphs=G, threshold=threshold,
                                         progress=label, t0=t0)
    t_embed = time.perf_counter() - t0 - t_prep
    return {
        "dataset": dataset, **(data_source(dataset, data_dir) if from_files else {}),
        "model": model, "frame": frame if fa else None, "seeds": seeds, "threshold": threshold,
        "graphs": G, **_pair_counts(emb, selfd if false_positives else None, threshold, pairs),
        "averaging": averaging or {"frame": None, "note": "no frames (permutation invariant by construction)"},
        "canonical": ({"failed_graphs": kinfo["canonical_failed"], "failed_copies": cinfo.get("canonical_failed", 0),
                       "max_states_visited": max(kinfo["canonical_max_states"], cinfo.get("canonical_max_states", 0)),
                       "max_states": max_states} if with_keys else None),
        "model_config": {"hidden": hidden, "layers": layers, "out_dim": out_dim, "dtype": dtype, "n_max": n_max,
                         "gin_eps": gin_eps, "node_features": node_features},
        "time_prepare_s": t_prep, "time_embed_s": t_embed, "wall_time_s": time.perf_counter() - t0,
        "machine": _machine(),
    }
