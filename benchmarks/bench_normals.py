"""Normal estimation on a CPU budget: every model, the three rotation settings, resumable.

    python benchmarks/bench_normals.py [--n-train 320] [--n-valid 64] [--n-test 128] [--scale 1.0]
                                       [--runs KEY ...] [--out runs/normals_bench] [--threads 1]

Every run goes through :class:`equiframe.experiments.normals.NormalsExperiment` and the shared training
loop (Adam 1e-3, batch 32, 512 fresh area-uniform points per shape and epoch, best-validation
checkpoint, ``torch.set_num_threads(1)``). The runs are listed in :data:`RUNS` in priority order.

Resumable: a finished run leaves ``<out>/results/<key>.json`` and is skipped next time (its budget and
data options are part of the file and must match, else it is rerun); an interrupted training resumes
from its last checkpoint (``checkpoint_every`` 2 epochs). ``benchmarks/results/normals.md`` is
rewritten from all result files after every run, so partial results survive an interruption.

``i/i`` runs also report the ``i/SO(3)`` column (same model, rotated test set). ``SO(3)/SO(3)`` is
trained on freshly rotated shapes every epoch. Reduced budget (minutes): ``--n-train 64 --n-valid 16
--n-test 32 --scale 0.1 --runs knn-pca fa-local-pointnet_i-i tf-pointnet_i-i``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine, write_result  # noqa: E402

from equiframe.datasets.shapes import knn_pca_normals, normal_loss  # noqa: E402
from equiframe.experiments.normals import (  # noqa: E402
    NormalsExperiment,
    NormalsExperimentConfig,
    evaluate_model,
    plot_error_histograms,
    plot_predictions,
    results_table,
)
from equiframe.train import OptimConfig, TrainConfig, fit, load_checkpoint  # noqa: E402

RESULTS_MD = Path(__file__).resolve().parent / "results"

#: display name and options per model (the budget is in RUNS)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "pointnet-xyz": ("PointNet (xyz only)", {"model": "pointnet", "features": "none", "output": "vector"}),
    "pointnet": ("PointNet (+ k-NN features in global coords)", {"model": "pointnet"}),
    "dgcnn": ("DGCNN (+ features; hidden 32, 2 EdgeConv, k=20)", {"model": "dgcnn", "hidden": 32, "dgcnn_layers": 2}),
    "fa-pointnet": ("FA-PointNet (E(3) canonical frame, typed 2x2n features)", {"model": "fa-pointnet",
                                                                                 "fa_mode": "canonical"}),
    "fa-dgcnn": ("FA-DGCNN (E(3) canonical, typed features; hidden 32, 2 EdgeConv)",
                 {"model": "fa-dgcnn", "fa_mode": "canonical", "hidden": 32, "dgcnn_layers": 2}),
    "fa-local-pointnet": ("FA-Local-PointNet (local PCA frames k=16, learned plane fit)",
                          {"model": "fa-local-pointnet", "hidden": 32}),
    "tf-pointnet": ("TF-PointNet++ (TFConv(PointNetConv), 32x0n+8x1n, 2 SA levels, learned plane fit on local "
                    "geometry + TF features)", {"model": "tf-pointnet", "hidden": 32}),
    # size control for the TF-PointNet++ vs FA-Local-PointNet comparison (ablation table)
    "fa-local-pointnet-h64": ("FA-Local-PointNet, hidden 64 (parameter count near TF-PointNet++'s)",
                              {"model": "fa-local-pointnet", "hidden": 64}),
    # the earlier plane-fit head (per-edge features from the transported sender features, no pooling) and
    # two ablations of it (ablation table)
    "tf-pointnet-transport": ("TF-PointNet++, head edge features = transported sender features + geometry",
                              {"model": "tf-pointnet", "hidden": 32, "tf_pool_edges": False,
                               "tf_edge_transport": True}),
    "tf-pointnet-pool": ("TF-PointNet++, transported sender features + geometry + neighbour-pooled edge features",
                         {"model": "tf-pointnet", "hidden": 32, "tf_pool_edges": True, "tf_edge_transport": True}),
    "tf-pointnet-flat": ("TF-PointNet++, transported sender features + geometry, no set abstraction (3 layers on the k-NN graph)",
                         {"model": "tf-pointnet", "hidden": 32, "tf_ratios": (), "tf_local_layers": 3,
                          "tf_pool_edges": False, "tf_edge_transport": True}),
    # earlier TF-PointNet++ runs (kept for the record; not in RUNS, the code changed since):
    # v0: raw offsets (no position normalisation), plane-fit width 16, moment-sign frames;
    # moments: the current model but frames whose normal-axis sign comes from the third moment only
    "tf-pointnet-v0": ("TF-PointNet++ v0 (raw offsets, plane-fit width 16, moment signs; superseded)",
                       {"model": "tf-pointnet"}),
    "tf-pointnet-moments": ("TF-PointNet++ with moment-sign frames (normal_sign='moments'; superseded)",
                            {"model": "tf-pointnet"}),
    # plane-fit head with ReLU units and a clamped weight floor (before the SiLU change)
    "fa-local-pointnet-relu": ("FA-Local-PointNet with ReLU plane-fit head (superseded)",
                               {"model": "fa-local-pointnet"}),
}
#: hand-written discussion appended to the Markdown (targets, published numbers)
NOTES = """
**Targets (issue 6), at this budget (1 seed, 320 training shapes, 15-20 epochs):**

* Equivariant models give the same numbers in all three settings: i/i, i/SO(3) and SO(3)/SO(3) agree to
  the fourth digit for every FA-* and TF-* model (f64 equivariance errors 1e-14 to 7e-13); the measured
  SO(3)/SO(3) runs differ from i/i by at most 0.0011 (float32 trajectories diverge; within seed noise).
  Plain models collapse in i/SO(3): PointNet (xyz) 0.2529 -> 0.4278, PointNet with k-NN features 0.1215 ->
  0.1489, DGCNN 0.1274 -> 0.1396.
* Every learned equivariant model beats the k-NN PCA baseline of the SPEC (k = 16, 0.1347): FA-PointNet
  0.1295, FA-DGCNN 0.1330, FA-Local-PointNet 0.0841, TF-PointNet++ 0.0785. Only the local-frame models also
  beat k-NN PCA with its best k on validation (k = 4, 0.1162); the global-frame FA models need more epochs
  (still improving at the last epoch).
* **TF-PointNet++ is the best model in SO(3)/SO(3)** (0.0796 / 9.81 deg; i/i 0.0785 / 9.74 deg), ahead of
  FA-Local-PointNet (0.0841; with hidden 64, 25 k parameters near TF-PointNet++'s 33 k: 0.0813). This needed
  the plane-fit head to read the local geometry per edge (as FA-Local-PointNet's does) and the tensor-frame
  features per point: with the transported sender features as edge features (the earlier default, ablation
  table) TF-PointNet++ reached only 0.0954 (0.0983 with pooling, 0.0942 without set abstraction).
* Second seed (CLI, same budget: `equiframe normals train --model M --setting i/i --n-train 320 --n-valid 64
  --n-test 128 --epochs 16 --hidden 32 --seeds 1 --out runs/normals_seed1`): TF-PointNet++ 0.0798 / 9.85 deg,
  FA-Local-PointNet 0.0845 / 10.34 deg; over seeds 0-1: 0.0792 +- 0.0009 vs 0.0843 +- 0.0003.
* Published numbers are for ABC (FA paper, 250 epochs on 8000 shapes) and ModelNet40 (Tensor Frames) and
  are not comparable with this procedural set; SPEC 4.3's prototype CSG set gave k-NN PCA 0.18 (ours 0.1347).
* Budget: the learned models were still improving at their last epoch; a longer run (`--scale 3`,
  `--n-train 1280`) and more seeds are the next step, with `--name` and `--out` pointing elsewhere so this
  table stays.
"""
#: keys of superseded runs (their own table)
SUPERSEDED = ("tf-pointnet-v0", "tf-pointnet-moments", "fa-local-pointnet-relu", "tf-pointnet-transport",
              "tf-pointnet-pool", "tf-pointnet-flat", "fa-local-pointnet-h64")

#: (key, setting, epochs at scale 1), in priority order
RUNS: list[tuple[str, str, int]] = [
    ("fa-local-pointnet", "i/i", 16),
    ("tf-pointnet", "i/i", 16),
    ("fa-pointnet", "i/i", 20),
    ("pointnet", "i/i", 20),
    ("pointnet-xyz", "i/i", 20),
    ("tf-pointnet", "so3/so3", 16),
    ("fa-pointnet", "so3/so3", 20),
    ("dgcnn", "i/i", 15),
    ("fa-dgcnn", "i/i", 15),
    ("pointnet", "so3/so3", 20),
    ("fa-local-pointnet", "so3/so3", 16),
    ("tf-pointnet-transport", "i/i", 16),
    ("tf-pointnet-transport", "so3/so3", 16),
    ("tf-pointnet-pool", "i/i", 16),
    ("tf-pointnet-flat", "i/i", 16),
    ("fa-local-pointnet-h64", "i/i", 16),
]
EQUIVARIANT = ("fa-pointnet", "fa-dgcnn", "fa-local-pointnet", "tf-pointnet", "tf-pointnet-transport", "tf-pointnet-pool",
               "tf-pointnet-flat", "fa-local-pointnet-h64")
BASELINE_KS = (4, 6, 8, 12, 16, 24)


def run_key(model: str, setting: str) -> str:
    return f"{model}_{setting.replace('/', '-')}"


def _data(args: argparse.Namespace) -> dict[str, Any]:
    return dict(n_train=args.n_train, n_valid=args.n_valid, n_test=args.n_test, diagnostic_samples=args.n_test)


def _load(path: Path, expect: dict[str, Any]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    r = json.loads(path.read_text())
    return r if all(r.get("budget", {}).get(k) == v for k, v in expect.items()) else None


@torch.no_grad()
def baseline(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """k-NN PCA with k = 16 (SPEC) and with the k of the best validation score."""
    path = out / "results" / "knn-pca.json"
    budget = {**_data(args), "epochs": 0}
    r = _load(path, budget)
    if r is not None:
        return r
    exp = NormalsExperiment(NormalsExperimentConfig(model="knn-pca", **_data(args)))
    t0 = time.perf_counter()
    valid = exp.dataset("valid")
    vpos = torch.stack([valid[i]["pos"] for i in range(len(valid))])
    vn = torch.stack([valid[i]["normal"] for i in range(len(valid))])
    val = {k: float(normal_loss(knn_pca_normals(vpos, k), vn)) for k in BASELINE_KS}
    best_k = min(val, key=val.get)
    test = {}
    for k in sorted({16, best_k}):
        exp_k = NormalsExperiment(NormalsExperimentConfig(model="knn-pca", baseline_k=k, **_data(args)))
        test[k] = {rot: evaluate_model(exp_k.build_model(), exp_k.test_dataset(rot)) for rot in ("none", "so3")}
    r = {"key": "knn-pca", "budget": budget, "valid_by_k": val, "best_k": best_k,
         "test": {str(k): v for k, v in test.items()}, "wall_time_s": time.perf_counter() - t0}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=1))
    return r


def train_run(args: argparse.Namespace, out: Path, key: str, setting: str, epochs: int) -> dict[str, Any]:
    name, opts = MODELS[key]
    rk = run_key(key, setting)
    path = out / "results" / f"{rk}.json"
    budget = {**_data(args), "epochs": epochs}
    r = _load(path, budget)
    if r is not None:
        print(f"{rk}: done before, skipped", flush=True)
        return r
    cfg = NormalsExperimentConfig(setting=setting, **_data(args), **opts)
    exp = NormalsExperiment(cfg)
    tc = TrainConfig(epochs=epochs, batch_size=32, optim=OptimConfig(lr=1e-3), out=str(out / "runs"), name=rk,
                     resume=True, quiet=True, checkpoint_every=2, threads=args.threads, device="cpu")
    res = fit(exp, tc, 0)
    m = res.metrics
    diag = m.get("diagnostics") or {}
    r = {"key": rk, "model": key, "name": name, "setting": setting, "budget": budget,
         "config": cfg.to_dict(), "params": m["n_params"], "epochs_run": m["epochs_run"], "best_epoch": m["best_epoch"],
         "steps": m["epochs_run"] * -(-args.n_train // 32), "wall_time_s": m["wall_time_s"],
         "time_per_epoch_s": m.get("time_per_epoch_s"), "test": m["test"],
         "test_by_rotation": diag.get("test_by_rotation"),
         "equivariance_error_f64": diag.get("equivariance_error_f64"),
         "equivariance_error_f64_generic": diag.get("equivariance_error_f64_generic"),
         "run_dir": str(res.run_dir)}
    # pictures of the test predictions (rotated test set) and the per-point error distribution
    model = exp.build_model()
    model.load_state_dict(load_checkpoint(res.run_dir / "checkpoint.pt")["best"]["state"])
    test_so3 = exp.test_dataset("so3")
    ev = evaluate_model(model, test_so3, return_errors=True)
    np.save(res.run_dir / "errors_test_so3.npy", ev["errors"].astype(np.float32))
    plot_predictions(model, test_so3, res.run_dir / "predictions.png", title=f"{rk} (SO(3) test)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=1))
    print(f"{rk}: test {m['test']['one_minus_cos2']:.4f} / {m['test']['angle_deg']:.2f} deg, "
          f"{m['wall_time_s']:.0f} s", flush=True)
    return r


def _cell(v: dict[str, float] | None) -> str:
    return "not run" if not v else f"{v['one_minus_cos2']:.4f} / {v['angle_deg']:.2f}°"


def report(args: argparse.Namespace, out: Path, t_session: float) -> None:
    """Rewrite benchmarks/results/normals.md from the result files."""
    res_dir = out / "results"
    bl = _load(res_dir / "knn-pca.json", {**_data(args), "epochs": 0})
    runs = {}
    for f in sorted(res_dir.glob("*_*.json")):
        r = json.loads(f.read_text())
        if r.get("budget", {}).get("n_train") == args.n_train:
            runs[r["key"]] = r
    current = {k: v for k, v in MODELS.items() if k not in SUPERSEDED}
    rows: dict[str, dict[str, Any]] = {}
    notes: dict[str, str] = {}
    if bl is not None:
        labels = ((16, "k-NN PCA (k=16, SPEC), no training"),
                  (bl["best_k"], f"k-NN PCA (k={bl['best_k']}, best on validation)"))
        for k, label in labels:
            t = bl["test"][str(k)]
            rows[label] = {"i/i": t["none"], "i/so3": t["so3"], "so3/so3": t["so3"]}
    for key, (name, _) in current.items():
        row: dict[str, Any] = {}
        ii, rr = runs.get(run_key(key, "i/i")), runs.get(run_key(key, "so3/so3"))
        if ii:
            row["i/i"] = ii["test"]
            row["i/so3"] = (ii.get("test_by_rotation") or {}).get("so3")
        if rr:
            row["so3/so3"] = rr["test"]
        if row:
            rows[name] = row
            if ii and not rr and key in EQUIVARIANT:
                notes[name] = "so3/so3 not trained: equal to i/i by exact equivariance"
    table = []
    for line in results_table(rows).splitlines():
        name = line.split(" | ")[0].lstrip("| ")
        if name in notes:
            line = line[: line.rfind("not run")] + "≡ i/i ¹ |"
        table.append(line)
    lines = ["\n".join(table)]
    lines += ["", "| model | setting | epochs (steps) | best epoch | params | training wall time | s / epoch | "
              "O(3) error f64, test shapes | O(3) error f64, generic cloud |", "|---|---|---|---|---|---|---|---|---|"]
    total = 0.0
    if bl is not None:
        total += bl["wall_time_s"]
        lines.append(f"| k-NN PCA | all | 0 | - | 0 | {bl['wall_time_s']:.0f} s (evaluation) | - | - | - |")

    def budget_cells(r: dict[str, Any]) -> str:
        return (f"{r['epochs_run']} ({r['steps']}) | {r['best_epoch']} | {r['params']} | "
                f"{r['wall_time_s'] / 60:.1f} min | {r['time_per_epoch_s']:.0f}")

    for key, (name, _) in current.items():
        for setting in ("i/i", "so3/so3"):
            r = runs.get(run_key(key, setting))
            if not r:
                continue
            total += r["wall_time_s"]
            e1, e2 = r.get("equivariance_error_f64"), r.get("equivariance_error_f64_generic")
            lines.append(f"| {name} | {setting} | {budget_cells(r)} | "
                         f"{'-' if e1 is None else f'{e1:.1e}'} | {'-' if e2 is None else f'{e2:.1e}'} |")
    old = [(MODELS[k][0], r) for k in SUPERSEDED for s_ in ("i/i", "so3/so3") if (r := runs.get(run_key(k, s_)))]
    if old:
        lines += ["", "Superseded and ablation runs (same budget; earlier code or other options; not in the sums):", "",
                  "| run | setting | test 1-cos² / angle | i/SO(3) | epochs (steps) | best epoch | params | "
                  "wall time | s / epoch | O(3) error f64, test shapes |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in old:
            tb = (r.get("test_by_rotation") or {}).get("so3") if r["setting"] == "i/i" else None
            e1 = r.get("equivariance_error_f64")
            lines.append(f"| {name} | {r['setting']} | {_cell(r['test'])} | {_cell(tb) if tb else '-'} | "
                         f"{budget_cells(r)} | {'-' if e1 is None else f'{e1:.1e}'} |")
    val = "" if bl is None else ", ".join(f"k={k}: {v:.4f}" for k, v in bl["valid_by_k"].items())
    body = (
        f"CPU budget: {args.n_train} training shapes (fresh 512 area-uniform points per shape and epoch), "
        f"{args.n_valid} validation shapes (model selection: best validation epoch), {args.n_test} test shapes "
        f"(fixed points); procedural CSG + analytic shapes (`ShapesConfig` seed 0, no noise). Adam 1e-3, "
        f"batch 32, {args.threads} torch thread, seed 0, `nice -n 5` on a 2-core machine shared with other "
        f"benchmarks (wall times are indicative: the machine ran 2-4 processes at a time). Cells: mean test "
        f"1-cos² / mean angle over all test points. i/SO(3) = the i/i model on the rotated test set. Sum of the "
        f"training / evaluation wall times of the current runs: {total / 60:.0f} min.\n\n"
        + "\n".join(lines)
        + ("\n\n¹ SO(3)/SO(3) not trained for this model: an exactly equivariant model trained on rotated shapes "
           "follows the same trajectory as on canonical ones, so the column equals i/i (the i/SO(3) column, "
           "measured, confirms it)." if notes else "")
        + (f"\n\nk-NN PCA validation 1-cos² by k: {val}." if val else "")
        + ("\n\n" + NOTES.strip() if NOTES.strip() else "")
    )
    title = "Normal estimation (CPU budget)" if args.name == "normals" else f"Normal estimation ({args.name})"
    write_result(args.name, title, body, command_line().replace(" --report-only", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=320)
    ap.add_argument("--n-valid", type=int, default=64)
    ap.add_argument("--n-test", type=int, default=128)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every run's epochs")
    ap.add_argument("--runs", nargs="+", default=None,
                    help="subset: 'knn-pca' and run keys like tf-pointnet_i-i (default: all, in priority order)")
    ap.add_argument("--out", default="runs/normals_bench")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="normals",
                    help="result name: benchmarks/results/<name>.md and <name>_errors.png (use another name with "
                         "another --out for a second budget, so the main table is not overwritten)")
    ap.add_argument("--report-only", action="store_true", help="only rewrite the Markdown from the result files")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    t0 = time.perf_counter()
    keys = [run_key(k, s) for k, s, _ in RUNS]
    if args.runs is not None:
        bad = set(args.runs) - set(keys) - {"knn-pca"}
        if bad:
            ap.error(f"--runs: unknown {sorted(bad)}; known: knn-pca {' '.join(keys)}")
    if not args.report_only:
        if args.runs is None or "knn-pca" in args.runs:
            baseline(args, out)
            report(args, out, t0)
        for key, setting, epochs in RUNS:
            if args.runs is not None and run_key(key, setting) not in args.runs:
                continue
            train_run(args, out, key, setting, max(1, round(epochs * args.scale)))
            report(args, out, t0)
    report(args, out, t0)
    hist = {}
    for key, setting, _ in RUNS:
        f = out / "runs" / "normals" / run_key(key, setting) / "seed0" / "errors_test_so3.npy"
        if f.exists():
            hist[f"{key} {setting}"] = np.load(f)
    if hist:
        plot_error_histograms(hist, RESULTS_MD / f"{args.name}_errors.png", title="SO(3) test set: per-point angle errors")
    print(f"machine: {machine()}; session {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
