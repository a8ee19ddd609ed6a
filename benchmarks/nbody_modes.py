"""Accuracy of the layer-wise FA-GNN's training-frame modes at equal epochs, and the TF-GNN hidden-rep probe.

    python benchmarks/nbody_modes.py [--runs results/nbody runs/nbody ...] [--equivariance]

Reads the learning curves (``curves.csv``) and, where a run has finished, ``metrics.json`` of the runs
below (trained with ``equiframe train nbody ... --eval-every 5 --eval-batch-size 500 --threads 1`` on the
published data set, 3000 / 2000 / 2000 simulations, Adam lr 1e-3, batch 100):

* ``fa-gnn-layerwise@egnn-small`` -- ``--fa-mode all`` (8 frame elements per system and layer, training and
  evaluation);
* ``fa-gnn-layerwise-stochastic@egnn-small`` -- one sampled element per system and layer while training,
  all 8 in evaluation;
* ``fa-gnn-layerwise-canonical@egnn-small`` -- one canonical element, training and evaluation;

and reports, per mode, the best validation MSE reached within the first E epochs (mean over the seeds that
ran that long; validation every 5 epochs), the test MSE at the best validation epoch of finished runs, and
with ``--equivariance`` the E(3) equivariance error of the trained weights in float64. The second table
compares TF-GNN hidden representations at an equal budget (``tf-gnn@egnn-small`` seed 0 for the base reps,
``tf-probe-50ep-<reps>`` runs for the others).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, write_result  # noqa: E402

MODES = {"all": "fa-gnn-layerwise@egnn-small", "stochastic": "fa-gnn-layerwise-stochastic@egnn-small",
         "canonical": "fa-gnn-layerwise-canonical@egnn-small"}
EPOCHS = (50, 100, 120, 150, 200, 250)
PROBE_EPOCHS = 50


def _seeds(roots: list[Path], name: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for root in roots:
        for d in sorted((root / name).glob("seed*")):
            if (d / "curves.csv").is_file():
                out.setdefault(d.name, d)
    return out


def _val_curve(run: Path) -> dict[int, float]:
    return {int(r["epoch"]): float(r["val_mse"]) for r in csv.DictReader((run / "curves.csv").open())
            if r.get("val_mse")}


def _best_within(curve: dict[int, float], epochs: int) -> float | None:
    if max(curve, default=0) < epochs:
        return None
    return min(v for e, v in curve.items() if e <= epochs)


def _fmt(xs: list[float]) -> str:
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.5f} (1)"
    return f"{statistics.mean(xs):.5f} ± {statistics.stdev(xs):.5f} ({len(xs)})"


def _equivariance(roots: list[Path], name: str, seed: str) -> float | None:
    """Float64 E(3) error of the best weights of ``name/seed`` (the first root that has its checkpoint)."""
    from equiframe.train import evaluate_run  # noqa: PLC0415

    runs = [root / name / seed for root in roots if (root / name / seed / "checkpoint.pt").is_file()]
    if not runs:
        return None
    run = runs[0]
    out = evaluate_run(run, split="valid", device="cpu", batch_size=500, diagnostics=True,
                       experiment_overrides={"n_valid": 10, "diagnostic_samples": 10, "rotation_angles": 1})
    return out["diagnostics"]["equivariance_error_f64"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="*", default=["results/nbody", "runs/nbody"])
    p.add_argument("--equivariance", action="store_true", help="float64 equivariance error of the trained weights")
    args = p.parse_args()
    roots = [Path(r) for r in args.runs]
    head = "| training frames | seeds | " + " | ".join(f"best val ≤ {e} ep" for e in EPOCHS) + \
           " | test MSE at best val (finished runs: budget) |" + (" E(3) error f64 |" if args.equivariance else "")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for mode, name in MODES.items():
        seeds = _seeds(roots, name)
        curves = {s: _val_curve(d) for s, d in seeds.items()}
        cells = [_fmt([b for c in curves.values() if (b := _best_within(c, e)) is not None]) for e in EPOCHS]
        tests = []
        for s, d in seeds.items():
            if (d / "metrics.json").is_file():
                m = json.loads((d / "metrics.json").read_text())
                tests.append(f"{m['test']['mse']:.5f} ({s}: {m['epochs_run']} ep, best {m['best_epoch']})")
        row = f"| {mode} | {', '.join(seeds) or '–'} | " + " | ".join(cells) + f" | {'; '.join(tests) or '–'} |"
        if args.equivariance:
            errs = [e for s in seeds if (e := _equivariance(roots, name, s)) is not None]
            row += f" {max(errs):.1e} |" if errs else " – |"
        rows.append(row)
    probe = ["| TF-GNN hidden reps | params | best val ≤ 50 ep (seed 0) | E(3) error f64 |", "|---|---|---|---|"]
    probes = {"32x0n+8x1n (base)": "tf-gnn@egnn-small"}
    for root in roots:
        for d in sorted(root.glob("tf-probe-50ep-*")):
            probes.setdefault(d.name.removeprefix("tf-probe-50ep-"), d.name)
    for reps, name in probes.items():
        seeds = _seeds(roots, name)
        if "seed0" not in seeds:
            continue
        best = _best_within(_val_curve(seeds["seed0"]), PROBE_EPOCHS)
        meta = seeds["seed0"] / "metrics.json"
        m = json.loads(meta.read_text()) if meta.is_file() else {}
        err = m.get("diagnostics", {}).get("equivariance_error_f64")
        probe.append(f"| {reps} | {m.get('n_params', '–')} | {f'{best:.5f}' if best else '–'} | "
                     f"{f'{err:.1e}' if err is not None else '–'} |")
    body = "\n".join(rows) + "\n\n" + "\n".join(probe) + (
        "\n\nValidation MSE on the 2000 validation simulations of the published data set, evaluated every 5 epochs "
        "with the full frame for `all` and `stochastic` (the canonical element for `canonical`); mean ± std over "
        "seeds (count in brackets). The base TF-GNN row is seed 0 of the 2000-epoch runs read at epoch 50."
    )
    write_result("nbody_modes", "n-body: layer-wise FA-GNN training-frame modes at equal epochs; TF-GNN reps probe",
                 body, command_line())


if __name__ == "__main__":
    main()
