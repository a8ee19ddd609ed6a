"""How much does the n-body test MSE move with the test set itself?

The published numbers (SPEC 4.1) are measured on one fixed test split of 2000 simulations; ours on our
own seed-0 split. Mean-squared errors of these models are dominated by the few simulations with close
encounters, so a different sample of 2000 simulations gives a different number for the same model.
This script re-evaluates the best-validation weights of finished runs on the validation split, on
the test splits of other data seeds (independent simulations of the same distribution; the training
data are the seed-0 training split of our split stream in every case) and on the published test split
(the EGNN generator's stream, seed 43), and prints / records the spread.

    python benchmarks/nbody_testsets.py [--runs runs/nbody] [--seeds 0 1 2 3 4] [--threads 1]

Writes ``benchmarks/results/nbody_testsets.md``. Generating the extra test splits (2000 simulations
per seed, cached) takes well under a minute per seed on one core.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, write_result  # noqa: E402

from equiframe.train import evaluate_run, load_checkpoint  # noqa: E402


def overrides(cfg: dict, seed: int, stream: str = "split") -> dict:
    """Experiment options that evaluate the test split of data seed ``seed`` of ``stream`` (train/valid cut
    to 1); ``overrides(cfg, 43, "egnn")`` is the published test split."""
    data = {**cfg["data"], "stream": stream, "seed": seed, "n_train": 1, "n_valid": 1}
    return {"data": data, "n_train": 1, "n_valid": 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/nbody", help="root of the n-body run directories")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="data seeds of the test splits")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = []
    for ck in sorted(Path(args.runs).glob("*/seed*/checkpoint.pt")):
        c = load_checkpoint(ck)
        if not c["finished"]:
            print(f"{ck.parent}: not finished, skipped", flush=True)
            continue
        cfg = c["experiment"]["config"]
        if cfg["data"]["seed"] != 0 or cfg["data"].get("stream", "split") != "split":
            continue
        val = evaluate_run(ck.parent, split="valid", device="cpu")["metrics"]["mse"]
        tests = {s: evaluate_run(ck.parent, split="test", device="cpu",
                                 experiment_overrides=None if s == 0 else overrides(cfg, s))["metrics"]["mse"]
                 for s in args.seeds}
        row = {"run": f"{ck.parent.parent.name}/{ck.parent.name}", "epoch": c["best"]["epoch"], "valid": val,
               "tests": tests, "published": evaluate_run(ck.parent, split="test", device="cpu",
                                                         experiment_overrides=overrides(cfg, 43, "egnn"))["metrics"]["mse"]}
        print(row, flush=True)
        rows.append(row)
    if not rows:
        sys.exit(f"no finished runs under {args.runs}")
    head = " | ".join(f"test, data seed {s}" for s in args.seeds)
    lines = [f"| run | best epoch | validation (seed 0) | {head} | mean of the test splits | max / min | "
             "published test split (EGNN stream, seed 43) |",
             "|---|---|---|" + "---|" * len(args.seeds) + "---|---|---|"]
    ratios = []
    for r in rows:
        t = list(r["tests"].values())
        ratios.append(max(t) / min(t))
        cells = " | ".join(f"{v:.5f}" for v in t)
        lines.append(f"| {r['run']} | {r['epoch']} | {r['valid']:.5f} | {cells} | {statistics.mean(t):.5f} | "
                     f"{ratios[-1]:.2f} | {r['published']:.5f} |")
    s0 = [r["tests"][args.seeds[0]] / statistics.mean(r["tests"].values()) for r in rows] if args.seeds[0] == 0 else []
    body = (
        "Best-validation weights of every finished run (trained on the seed-0 training split), evaluated on the "
        "seed-0 validation split, on the test splits (2000 simulations each) of several data seeds of our split "
        "stream, and on the published test split (the original EGNN generator's stream replayed, seed 43). "
        f"1 torch thread; {time.perf_counter() - t0:.0f} s.\n\n" + "\n".join(lines) + "\n\n"
        f"Spread of one model's test MSE across test splits (max / min): {min(ratios):.2f}-{max(ratios):.2f}."
        + (f" The seed-0 test split (the one our tables use) gives {min(s0):.2f}-{max(s0):.2f} times the mean "
           "over the test splits." if s0 else "")
    )
    write_result("nbody_testsets", "n-body: test MSE on independent test splits", body, command_line())


if __name__ == "__main__":
    main()
