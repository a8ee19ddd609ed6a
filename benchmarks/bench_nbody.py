"""n-body training cost per model, before / after this session's changes, side by side in one process.

    python benchmarks/bench_nbody.py [--batch 100] [--rounds 7] [--steps 3] [--threads 1] [--compile]
        [--runs results/nbody runs/nbody ...]

One training step = forward + backward + Adam on a batch of 100 systems (float32, CPU). Every variant is
timed in turn, one round at a time (``steps`` steps per variant per round); a ratio is the median over
rounds of the per-round time ratio (absolute times drift 2-3x on shared machines, SPEC 6). Variants:

* ``before``: the step as it was (per-edge concatenation in the first message layer, ``foreach`` Adam);
* ``after``: the defaults now (first message layer per node, :func:`equiframe.models.nbody._pair_linear`;
  PyTorch's fused Adam) -- the same parameters, results equal up to rounding;
* ``compiled`` (``--compile``): ``after`` through ``torch.compile`` (inductor);
* the layer-wise FA-GNN with training frames ``stochastic`` (one sampled frame element per system and
  layer; evaluation averages the full frame) and ``canonical``.

The epoch time adds the validation share of the protocol (2000 systems every 5 epochs, forward only, in
batches of 500; FA-GNN evaluates the full frame whatever its training mode). The time to reach a
validation MSE of 0.008 is the number of epochs the model's runs needed (median over the seeds that got
there; learning curves read from ``--runs``) times this epoch time.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, command_line, ratio, write_result  # noqa: E402

from equiframe.experiments.nbody import NBodyExperiment, NBodyExperimentConfig  # noqa: E402

LW = dict(model="fa-gnn", fa_variant="layerwise")
#: label -> (experiment options, run directories with learning curves of this training mode)
MODELS = {
    "gnn": (dict(model="gnn"), ["gnn@egnn-small"]),
    "egnn": (dict(model="egnn"), ["egnn@egnn-small"]),
    "tf-gnn": (dict(model="tf-gnn"), ["tf-gnn@egnn-small"]),
    "fa-gnn layer-wise, all 8 elements": ({**LW, "fa_mode": "all"},
                                          ["fa-gnn-layerwise@egnn-small", "fa-gnn-layerwise-long@egnn-small"]),
    "fa-gnn layer-wise, stochastic (1 element)": ({**LW, "fa_mode": "stochastic"},
                                                  ["fa-gnn-layerwise-stochastic-long@egnn-small"]),
    "fa-gnn layer-wise, canonical": ({**LW, "fa_mode": "canonical"}, ["fa-gnn-layerwise-canonical@egnn-small"]),
}
#: models timed before/after (the others exist only after)
BEFORE = ("gnn", "egnn", "tf-gnn", "fa-gnn layer-wise, all 8 elements")
COMPILED = ("gnn", "egnn", "tf-gnn")  # the layer-wise FA-GNN declares supports_compile = False
TARGET = 0.008


def _variant(opts: dict, batch_size: int, *, before: bool, compiled: bool):
    exp = NBodyExperiment(NBodyExperimentConfig(n_train=batch_size, n_valid=500, n_test=1, **opts))
    torch.manual_seed(0)
    model = exp.build_model()
    for m in model.modules():
        if hasattr(m, "fused_messages"):
            m.fused_messages = not before
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=None if before else True)
    train_model = torch.compile(model) if compiled else model
    return exp, model, train_model, opt


def epochs_to_target(run_roots: list[Path], names: list[str]) -> tuple[float | None, int, int]:
    """Median epochs to the first validation MSE <= TARGET over the seeds of the named runs that reached it,
    and (seeds that reached it, seeds found)."""
    hits, found, seen = [], 0, set()
    for root in run_roots:
        for name in names:
            for curves in sorted((root / name).glob("seed*/curves.csv")):
                if (name, curves.parent.name) in seen:  # the first root that has a run wins
                    continue
                seen.add((name, curves.parent.name))
                found += 1
                for row in csv.DictReader(curves.open()):
                    if row.get("val_mse") and float(row["val_mse"]) <= TARGET:
                        hits.append(int(row["epoch"]))
                        break
    return (statistics.median(hits) if hits else None), len(hits), found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd steps (minutes to compile)")
    p.add_argument("--runs", nargs="*", default=["results/nbody", "runs/nbody"],
                   help="directories of n-body runs whose learning curves give the epochs to validation 0.008")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    steps, evals, params = {}, {}, {}
    batch = vbatch = None
    for label, (opts, _) in MODELS.items():
        kinds = (["before"] if label in BEFORE else []) + ["after"] + (["compiled"] if args.compile and label in COMPILED
                                                                      else [])
        for kind in kinds:
            exp, model, train_model, opt = _variant(opts, args.batch, before=kind == "before", compiled=kind == "compiled")
            if batch is None:
                batch = exp.make_batch(exp.dataset("train"), torch.arange(args.batch))
                vbatch = exp.make_batch(exp.dataset("valid"), torch.arange(500))
            params[label] = sum(q.numel() for q in model.parameters())

            def step(exp=exp, model=train_model, opt=opt):
                model.train()
                for _ in range(args.steps):
                    loss = exp.loss(model, batch)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

            steps[(label, kind)] = step
            if kind == "after":
                def ev(exp=exp, model=model):
                    model.eval()
                    with torch.no_grad():
                        exp.predict(model, vbatch)
                    model.train()

                evals[label] = ev
    times = alternate(steps, rounds=args.rounds, warmup=1)
    etimes = alternate(evals, rounds=max(3, args.rounds // 2), warmup=1)
    egnn = ("egnn", "after")
    rows = ["| model | params | ms / step before | ms / step after | speedup (same model) | after vs EGNN after | "
            "after vs EGNN before | epoch before | epoch after | 10 000 epochs after |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    epoch_s: dict[str, dict[str, float]] = {}
    for label in MODELS:
        ev = statistics.median(etimes[label]) * 4 / 5  # 2000 validation systems every 5 epochs
        per = {k: statistics.median(times[(label, k)]) / args.steps for k in ("before", "after", "compiled")
               if (label, k) in times}
        epoch_s[label] = {k: t * 3000 / args.batch + ev for k, t in per.items()}
        b, eb = per.get("before"), epoch_s[label].get("before")
        speed = f"{ratio(times, (label, 'before'), (label, 'after')):.2f}x" if b else "–"
        rows.append(
            f"| {label} | {params[label]} | {f'{b * 1e3:.1f}' if b else '–'} | {per['after'] * 1e3:.1f} | {speed} | "
            f"{ratio(times, (label, 'after'), egnn):.2f}x | {ratio(times, (label, 'after'), ('egnn', 'before')):.2f}x | "
            f"{f'{eb:.2f} s' if eb else '–'} | "
            f"{epoch_s[label]['after']:.2f} s | {epoch_s[label]['after'] * 1e4 / 3600:.1f} h |")
        if "compiled" in per:
            rows.append(f"| {label}, torch.compile | | | {per['compiled'] * 1e3:.1f} | "
                        f"{ratio(times, (label, 'before'), (label, 'compiled')) if b else float('nan'):.2f}x | "
                        f"{ratio(times, (label, 'compiled'), egnn):.2f}x | | | {epoch_s[label]['compiled']:.2f} s | |")
    roots = [Path(r) for r in args.runs]
    rows2 = [f"| model | epochs to validation MSE {TARGET} (median) | seeds that got there / seeds | wall time before | "
             "wall time after |", "|---|---|---|---|---|"]
    for label, (_, names) in MODELS.items():
        ep, hit, found = epochs_to_target(roots, names)
        if ep is None:
            rows2.append(f"| {label} | not reached | {hit} / {found} | – | – |")
            continue
        before = epoch_s[label].get("before")
        rows2.append(f"| {label} | {ep:g} | {hit} / {found} | {f'{ep * before / 60:.1f} min' if before else '–'} | "
                     f"{ep * epoch_s[label]['after'] / 60:.1f} min |")
    body = "\n".join(rows) + "\n\n" + "\n".join(rows2) + (
        f"\n\nForward + backward + Adam on a batch of {args.batch} systems (5 particles, 20 directed edges each), "
        f"float32, {args.threads} thread(s); median over {args.rounds} alternating rounds of {args.steps} steps; "
        "ratios are medians of per-round ratios. Epoch = 30 steps + the validation share (2000 systems every 5 "
        "epochs, batches of 500, forward only). Epochs to validation 0.008 from the learning curves under "
        f"{', '.join(args.runs)} (runs trained at the protocol's settings; different machines' loads do not matter "
        "here, only epochs are read)."
    )
    write_result("nbody_throughput", "n-body training cost per model, before / after (CPU)", body, command_line())


if __name__ == "__main__":
    main()
