"""Normal estimation on a reduced CPU budget: every model in the three rotation settings.

    python benchmarks/bench_normals.py [--n-train 128] [--n-valid 32] [--n-test 64] [--scale 1.0]
                                       [--phases i so3] [--out runs/bench_normals]

Runs :class:`equiframe.experiments.normals.NormalsExperiment` through the shared training loop
(Adam 1e-3, batch 32, 512 points per shape) with ``torch.set_num_threads(1)``. Phase ``i`` trains every
model on canonical poses (``i/i``; its diagnostics also give the ``i/so3`` column: same model, rotated
test set); phase ``so3`` trains on rotated shapes (``so3/so3``). The k-NN PCA baseline is evaluated
without training. ``--scale`` multiplies every model's epoch budget. Results are rewritten to
``benchmarks/results/normals.md`` after every run (partial results survive an interruption).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, write_result  # noqa: E402

from equiframe.experiments.normals import (  # noqa: E402
    NormalsExperiment,
    NormalsExperimentConfig,
    evaluate_model,
    plot_error_histograms,
    plot_predictions,
    results_table,
)
from equiframe.train import OptimConfig, TrainConfig, fit, load_checkpoint  # noqa: E402

# model -> (display name, config overrides, epochs at scale 1)
MODELS: dict[str, tuple[str, dict, int]] = {
    "pointnet": ("PointNet", {}, 20),
    "dgcnn": ("DGCNN (hidden 32, 2 EdgeConv, k=20)", {"hidden": 32, "dgcnn_layers": 2}, 5),
    "fa-pointnet": ("FA-PointNet (E(3), all 8)", {}, 6),
    "fa-dgcnn": ("FA-DGCNN (E(3), 1 sampled elem. train / all 8 eval; hidden 32, 2 EdgeConv)",
                 {"hidden": 32, "dgcnn_layers": 2, "fa_mode": "stochastic"}, 4),
    "fa-local-pointnet": ("FA-Local-PointNet (local PCA, k=20)", {}, 6),
    "tf-pointnet": ("TF-PointNet++ (TFConv(PointNetConv), 32x0n+8x1n, PCA frames, k=16)", {}, 5),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=128)
    ap.add_argument("--n-valid", type=int, default=32)
    ap.add_argument("--n-test", type=int, default=64)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--phases", nargs="+", choices=("i", "so3"), default=["i", "so3"])
    ap.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    ap.add_argument("--out", default="runs/bench_normals")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    base = dict(n_train=args.n_train, n_valid=args.n_valid, n_test=args.n_test, diagnostic_samples=args.n_test)
    rows: dict[str, dict] = {}
    info: dict[str, dict] = {}
    hist: dict[str, object] = {}
    t_all = time.perf_counter()

    # learning-free baseline
    exp = NormalsExperiment(NormalsExperimentConfig(model="knn-pca", **base))
    bl = exp.build_model()
    t0 = time.perf_counter()
    r = {rot: evaluate_model(bl, exp.test_dataset(rot), return_errors=rot == "so3") for rot in ("none", "so3")}
    hist["k-NN PCA (k=16)"] = r["so3"].pop("errors")
    rows["k-NN PCA (k=16), no training"] = {"i/i": r["none"], "i/so3": r["so3"], "so3/so3": r["so3"]}
    info["k-NN PCA (k=16), no training"] = {"epochs": 0, "wall": time.perf_counter() - t0}

    def report() -> None:
        lines = [results_table(rows), "",
                 "| model | epochs | params | wall time per training (s) | O(3) equiv. error (f64, n n^T) |",
                 "|---|---|---|---|---|"]
        for name, d in info.items():
            walls = ", ".join(f"{k}: {v:.0f}" for k, v in d.get("walls", {}).items()) or f"{d.get('wall', 0):.1f}"
            lines.append(f"| {name} | {d.get('epochs', 0)} | {d.get('params', 0)} | {walls} | {d.get('equiv', '-')} |")
        body = (
            f"Reduced CPU budget: {args.n_train} training shapes (fresh 512 points per epoch), {args.n_valid} "
            f"validation shapes (model selection), {args.n_test} test shapes, 512 points; Adam 1e-3, batch 32, "
            f"1 thread; procedural CSG + analytic shapes (ShapesConfig seed 0, no noise). Cells: mean test "
            f"1-cos² / mean angle over all test points, best-validation checkpoint, seed 0. The i/SO(3) column "
            f"is the i/i-trained model on the rotated test set. Total wall time so far: "
            f"{time.perf_counter() - t_all:.0f} s.\n\n" + "\n".join(lines)
        )
        write_result("normals", "Normal estimation (reduced budget)", body, command_line())

    for phase in args.phases:
        setting = "i/i" if phase == "i" else "so3/so3"
        for key in args.models:
            name, over, epochs = MODELS[key]
            epochs = max(1, round(epochs * args.scale))
            exp = NormalsExperiment(NormalsExperimentConfig(model=key, setting=setting, **base, **over))
            tc = TrainConfig(epochs=epochs, batch_size=32, optim=OptimConfig(lr=1e-3), out=str(out), overwrite=True,
                             quiet=True, checkpoint_every=epochs, threads=args.threads)
            res = fit(exp, tc, 0)
            m = res.metrics
            row = rows.setdefault(name, {})
            row[setting] = m["test"]
            tb = m["diagnostics"].get("test_by_rotation", {})
            if setting == "i/i" and tb:
                row["i/so3"] = tb["so3"]
            d = info.setdefault(name, {"epochs": epochs, "params": m["n_params"], "walls": {}})
            d["walls"][setting] = m["wall_time_s"]
            d["equiv"] = f"{m['diagnostics'].get('equivariance_error_f64', float('nan')):.1e}"
            if setting == "so3/so3":
                model = exp.build_model()
                model.load_state_dict(load_checkpoint(res.run_dir / "checkpoint.pt")["best"]["state"])
                ev = evaluate_model(model, exp.dataset("test"), return_errors=True)
                hist[key] = ev["errors"]
                plot_predictions(model, exp.dataset("test"), res.run_dir / "predictions.png", title=f"{key} so3/so3")
            print(key, setting, json.dumps(m["test"]), f"{m['wall_time_s']:.0f}s", flush=True)
            report()
    if hist:
        plot_error_histograms(hist, Path(__file__).resolve().parent / "results" / "normals_errors.png",
                              title="SO(3)/SO(3) test angle errors (reduced budget)")
    report()


if __name__ == "__main__":
    main()
