"""Why FA-MLP misses EXP-classify graphs: where the frame puts the SAT/UNSAT core (and shuffled components).

    python benchmarks/bench_exp_placement.py                 # train missing runs (about 40 min on 2 cores), probe
    python benchmarks/bench_exp_placement.py --no-train      # only probe runs that exist
    python benchmarks/bench_exp_placement.py --runs /tmp/gr --seeds 0 1 2 --models fa-mlp fa-gin-id
    python benchmarks/bench_exp_placement.py --reverse-keys --models fa-mlp --runs /tmp/exp-reversed

Every EXP graph is one of 6 *cores* (the SAT and UNSAT formula graphs of 16, 24 and 32 nodes,
``benchmarks/exp_cores.py``) next to further components that both graphs of its pair
share. The label is the core's; the rest is noise the model must ignore. The spectral frame sorts nodes by
Laplacian keys whose first column (eigenvalue 0: ``1/sqrt(component size)``) puts larger components first,
so a core's *offset* (first frame position of its first tied block) depends on the other components. An MLP
on the frame-ordered adjacency shares no weights across positions: it has to learn every core at every
offset from the training graphs that show it there. This script measures

1. the *training support* of every test graph: how many training graphs hold its core at its offset, and the
   test accuracy of trained FA models per support bin (misclassified graphs listed);
2. a recombination probe: one core of every class joined with the shared components of every training
   pair (the placements training shows), and with 1-2 random shared components smaller than the core
   (in the library's frame the core then comes first: offset 0, a placement training shows rarely for the
   16-node cores).

Runs are the EXP-classify protocol of bench_graphs (canonical evaluation, spectral training orders,
selection on the validation loss), read from ``--runs`` and trained there when missing, each with the
frame's component order in training (``sorted``) and with components shuffled in training (``shuffled``,
``FAGraphModel(train_components="shuffled")``: samples of the component frame, every core at every offset).

``--reverse-keys`` repeats everything with the spectral key columns in *decreasing* Laplacian eigenvalue
order (the frame of ``-L``, i.e. of the Laplacian with edge weights -1: same eigenvectors, reversed
order), so that the component-size column comes last and components interleave: a control showing that
the misses follow the training support of the placement, not one particular graph.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, write_result  # noqa: E402

from equiframe.experiments import experiment_from_dict  # noqa: E402
from equiframe.experiments.graphs import classify, load_separation_graphs  # noqa: E402
from exp_cores import exp_cores  # noqa: E402
import equiframe.frames.graph as graph_frames  # noqa: E402
from equiframe.train import load_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LABEL = {"fa-mlp": "FA-MLP", "fa-gin-id": "FA-GIN+ID"}
BINS = [(0, 0, "0"), (1, 2, "1-2"), (3, 9, "3-9"), (10, 10**9, ">= 10")]


def core_offsets(graphs, masks) -> list[int]:
    """First frame position of the first tied block holding a core node (the same for every frame element)."""
    out = []
    for g, mask in zip(graphs, masks):
        fr = graph_frames.laplacian_frame(g.edge_index, g.num_nodes, x=g.x)
        sizes = fr.block_sizes()
        first = torch.cumsum(sizes, 0) - sizes  # first position of every tied block
        out.append(int(first[fr.node_block()[mask]].min()))
    return out


def reverse_key_order() -> None:
    """Make every spectral frame (and canonical search) of this process use ``-L``: decreasing eigenvalues."""
    original = graph_frames.laplacian_frame

    def reversed_frame(edge_index, num_nodes=None, batch=None, x=None, *, edge_weight=None, **kw):
        if edge_weight is None:
            edge_weight = -torch.ones(edge_index.shape[1], dtype=torch.float64, device=edge_index.device)
        return original(edge_index, num_nodes, batch, x, edge_weight=edge_weight, **kw)

    graph_frames.laplacian_frame = reversed_frame  # the frame code imports it from the module at call time


def _sub(g, mask):
    """The subgraph on the nodes of ``mask`` (node features kept), as ``(x, edge_index)``."""
    from torch_geometric.utils import subgraph  # noqa: PLC0415

    return g.x[mask], subgraph(mask, g.edge_index, relabel_nodes=True, num_nodes=g.num_nodes)[0]


def _join(parts, y):
    from torch_geometric.data import Data  # noqa: PLC0415

    xs, es, off = [], [], 0
    for x, e in parts:
        xs.append(x)
        es.append(e + off)
        off += x.shape[0]
    return Data(x=torch.cat(xs), edge_index=torch.cat(es, 1), num_nodes=off, y=torch.tensor([y]))


def shared_components(graphs, cores, pairs) -> list[list[tuple]]:
    """Per pair ``k`` in ``pairs``: the components graph ``2k`` shares with its partner, as ``(x, edge_index)``."""
    out = []
    for k in pairs:
        g = graphs[2 * k]
        lab = torch.unique(graph_frames.connected_components(g.edge_index, g.num_nodes), return_inverse=True)[1]
        core_lab = int(lab[cores.core[2 * k]][0])
        out.append([_sub(g, lab == c) for c in range(int(lab.max()) + 1) if c != core_lab])
    return out


def run_dir(runs: Path, model: str, components: str, seed: int) -> Path:
    shuf = "-shufcomp" if components == "shuffled" else ""
    return runs / "graphs" / f"exp-{model}-canonical-trainspectral{shuf}-selloss-fold0" / f"seed{seed}"


def label_of(model: str, components: str) -> str:
    return LABEL[model] + (", components shuffled in training" if components == "shuffled" else "")


def load_model(path: Path, data_dir: str):
    ck = load_checkpoint(path / "checkpoint.pt")
    exp = experiment_from_dict(ck["experiment"]["name"], {**ck["experiment"]["config"], "data_dir": data_dir})
    model = exp.build_model()
    model.load_state_dict(ck["best"]["state"])
    return exp, model.eval(), ck["best"]["epoch"]


@torch.no_grad()
def predict(exp, model, graphs, batch_size: int = 100) -> torch.Tensor:
    """Predicted class of every graph (canonical keys computed on the fly for new graphs)."""
    preds = []
    for i in range(0, len(graphs), batch_size):
        b = exp.collate(graphs[i : i + batch_size])
        b.pop("key", None)
        preds.append(exp.logits(model, b).argmax(-1))
    return torch.cat(preds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=str(ROOT / "runs"), help="results root of the EXP-classify runs")
    ap.add_argument("--models", nargs="+", default=["fa-mlp", "fa-gin-id"], choices=sorted(LABEL))
    ap.add_argument("--components", nargs="+", default=["sorted", "shuffled"], choices=["sorted", "shuffled"],
                    help="training component orders to compare (FAGraphModel train_components)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--no-train", action="store_true", help="skip missing runs instead of training them")
    ap.add_argument("--samples", type=int, default=200, help="recombined graphs per core at offset 0")
    ap.add_argument("--data-dir", default=os.environ.get("EQUIFRAME_DATA") or str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reverse-keys", action="store_true",
                    help="control: spectral keys in decreasing eigenvalue order (use another --runs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.reverse_keys:
        if Path(args.runs).resolve() == (ROOT / "runs").resolve():
            ap.error("--reverse-keys: give a --runs directory of its own (the models differ)")
        reverse_key_order()
    t0 = time.perf_counter()
    runs = Path(args.runs)

    graphs = load_separation_graphs("exp", args.data_dir)
    cores = exp_cores(graphs)
    offsets = core_offsets(graphs, cores.core)
    cls = cores.core_class.tolist()
    train, test = range(400, 1200), range(200, 400)
    seen = Counter((cls[i], offsets[i]) for i in train)
    support = {i: seen[(cls[i], offsets[i])] for i in test}
    size = {c: int(cores.core[cls.index(c)].sum()) for c in range(cores.num_classes)}
    label = {c: int(graphs[cls.index(c)].y) for c in range(cores.num_classes)}

    def name(c: int) -> str:
        return f"{'SAT' if label[c] else 'UNSAT'}-{size[c]}"

    # ---- recombined graphs: every core class with training placements and at offset 0
    gen = torch.Generator().manual_seed(0)
    train_shared = shared_components(graphs, cores, range(200, 600))
    all_shared = [c for comps in shared_components(graphs, cores, range(600)) for c in comps]
    n_max = max(g.num_nodes for g in graphs)
    probes: dict[tuple[int, str], list] = {}
    for c in range(cores.num_classes):
        src = next(i for i in test if cls[i] == c)
        core = _sub(graphs[src], cores.core[src])
        k_core = core[0].shape[0]
        probes[(c, "training placements")] = [_join([core] + comps, label[c]) for comps in train_shared
                                              if k_core + sum(x.shape[0] for x, _ in comps) <= n_max]
        pool = [p for p in all_shared if p[0].shape[0] < k_core]
        first = []
        while pool and len(first) < args.samples:
            pick = [pool[int(j)] for j in torch.randperm(len(pool), generator=gen)[: 1 + int(torch.randint(2, (1,), generator=gen))]]
            if k_core + sum(x.shape[0] for x, _ in pick) <= n_max:
                first.append(_join([core] + pick, label[c]))
        probes[(c, "smaller components only")] = first

    # ---- trained runs
    results: dict[str, list[dict]] = defaultdict(list)
    for model, components in [(m, c) for c in args.components for m in args.models]:
        key = label_of(model, components)
        for seed in args.seeds:
            d = run_dir(runs, model, components, seed)
            if not (d / "metrics.json").is_file():
                if args.no_train:
                    print(f"skip {d} (not finished)")
                    continue
                classify("exp", model, 199, frame="canonical", train_frame="spectral", select="loss", seeds=[seed],
                         train_components=components, data_dir=args.data_dir, out=runs, resume=True,
                         threads=args.threads)
            exp, net, epoch = load_model(d, args.data_dir)
            test_graphs = [graphs[i] for i in test]
            ok = (predict(exp, net, test_graphs) == torch.tensor([int(g.y) for g in test_graphs])).tolist()
            probe_acc = {key: float((predict(exp, net, gs) == label[key[0]]).float().mean()) if gs else float("nan")
                         for key, gs in probes.items()}
            results[key].append({"seed": seed, "epoch": epoch, "ok": dict(zip(test, ok)), "probe": probe_acc})
            print(f"{key} seed {seed}: test accuracy {sum(ok) / len(ok):.3f}, missed "
                  f"{[i for i, o in zip(test, ok) if not o]}", flush=True)

    # ---- tables
    keys = ("spectral keys in DECREASING eigenvalue order (control, `--reverse-keys`)" if args.reverse_keys
            else "spectral keys in increasing eigenvalue order (the library's frame)")
    lines = [f"Frames: {keys}.",
             "Runs: EXP-classify, canonical evaluation, spectral training orders, selection on the validation loss "
             f"(199 epochs; seeds {', '.join(map(str, args.seeds))}; best epochs "
             + "; ".join(f"{m} {', '.join(str(r['epoch']) for r in rs)}" for m, rs in results.items()) + ").",
             "Core offset = first frame position of the core's first tied block; training support of a test graph "
             "= training graphs (of 800) with the same core at the same offset, in the frame's own (sorted) "
             "component order, the one evaluation uses. Training with shuffled components shows every core at "
             "every offset its graph's component sizes allow.", "",
             "### Test accuracy", "", "| model | test accuracy % per seed | mean |", "|---|---|---|",
             *[f"| {m} | {', '.join(f'{a:.1f}' for a in accs)} | {sum(accs) / len(accs):.1f} |"
               for m, accs in ((m, [100 * sum(r["ok"].values()) / len(r["ok"]) for r in rs]) for m, rs in results.items())],
             "", "### Test accuracy by training support", "",
             "| training support | test graphs | " + " | ".join(f"{m}: acc % (mean over seeds)" for m in results) + " |",
             "|---|---|" + "---|" * len(results)]
    for lo, hi, lab in BINS:
        ids = [i for i in test if lo <= support[i] <= hi]
        cells = []
        for m, rs in results.items():
            accs = [100 * sum(r["ok"][i] for i in ids) / len(ids) for r in rs] if ids else []
            cells.append(f"{sum(accs) / len(accs):.1f}" if accs else "–")
        lines.append(f"| {lab} | {len(ids)} | " + " | ".join(cells) + " |")
    lines += ["", "Misclassified test graphs (core, offset, training support, seeds that missed it):", ""]
    for m, rs in results.items():
        missed = Counter(i for r in rs for i, o in r["ok"].items() if not o)
        if not missed:
            lines.append(f"- {m}: none")
        for i, n in sorted(missed.items()):
            lines.append(f"- {m}: graph {i} ({name(cls[i])} core, offset {offsets[i]}, support {support[i]}; "
                         f"{n} of {len(rs)} seeds)")
    lines += ["", "### Recombination probe: one core with other components", "",
              "Accuracy % (mean over seeds) on graphs made of one core (taken from the first test graph of its class) "
              "and the shared components of every training pair (`training placements`), or 1-2 random shared "
              f"components smaller than the core (`smaller components only`, {args.samples} graphs, generator seed 0). "
              "Support: median over the probe graphs of the training graphs with the same core at the same offset.",
              "", "| core | placement | graphs | support (median) | " + " | ".join(results) + " |",
              "|---|---|---|---|" + "---|" * len(results)]
    for (c, where), gs in probes.items():
        k_core = size[c]
        offs_probe = core_offsets(gs, [torch.arange(g.num_nodes) < k_core for g in gs])
        sup = statistics.median(seen[(c, o)] for o in offs_probe) if gs else float("nan")
        cells = [f"{100 * sum(r['probe'][(c, where)] for r in rs) / len(rs):.1f}" for rs in results.values()]
        lines.append(f"| {name(c)} | {where} | {len(gs)} | {sup:g} | " + " | ".join(cells) + " |")
    offs = defaultdict(Counter)
    for i in train:
        offs[name(cls[i])][offsets[i]] += 1
    lines += ["", "Core offsets in the training split (offset: graphs): "
              + "; ".join(f"{k}: " + ", ".join(f"{o}: {n}" for o, n in sorted(v.items())) for k, v in sorted(offs.items())),
              "", f"Wall time {time.perf_counter() - t0:.0f} s (including any training)."]
    suffix, title = ("_reversed", " - control: keys in decreasing eigenvalue order") if args.reverse_keys else ("", "")
    write_result("graphs_exp_placement" + suffix,
                 "EXP-classify: where the frame puts the core (FA-MLP's miss of graph 358; shuffled components)" + title,
                 "\n".join(lines), command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
