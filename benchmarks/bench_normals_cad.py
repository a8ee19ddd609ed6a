"""Normal estimation on the CAD-kernel parts: trained models x classical baselines x noise x density.

    python benchmarks/bench_normals_cad.py --runs /work/wt/out/h3/runs --cad-parts 1008 [--n-test 32]
        [--densities 512 2048 10000] [--noises 0 0.0025 0.005 0.012] [--threads 1]

Data: the test split of the CAD-kernel data set (``equiframe data normals --source cad``; parts
``i % 10 == 9``), every cloud randomly rotated (``SO(3)``), a density = a random subset of the exact
area-uniform samples of a part, Gaussian noise ``sigma`` x the bounding-box diagonal on the positions
(PCPNet's levels); the procedural boolean-of-primitives test shapes (:mod:`equiframe.datasets.shapes`)
are the second source (512 points). Metrics: :func:`equiframe.datasets.normal_metrics.normal_metrics`.

Methods: k-NN PCA (k = 16, the SPEC's baseline, and the best k per density and noise, chosen on
the validation split), jet fitting (order 2, its best k on validation), an exhaustive RANSAC over the planes
through each point and pairs of its 12 nearest neighbours (:func:`ransac_normals`, k = 32, its inlier scale
tau chosen on validation), Open3D ``estimate_normals``
(k-NN ``knn=16`` / ``30`` and hybrid ``radius = 2 x`` the mean 16-th-neighbour distance, ``max_nn = 30``),
and every trained run under ``--runs`` (best-validation checkpoint; the local models at every density,
TF-PointNet++ at its training density 512 only). Per-shape regressions: the test parts where the best
model is furthest above k-NN PCA (k = 16), at 512 points without noise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, write_result  # noqa: E402

from equiframe.datasets.cad import FAMILIES, CADConfig, CADNormalsDataset  # noqa: E402
from equiframe.datasets.shapes import NormalsDataset, ShapesConfig, normal_loss  # noqa: E402
from equiframe.datasets.normal_metrics import METRICS, normal_metrics  # noqa: E402
from equiframe.models.normals import dense_knn, jet_normals, knn_geometry, open3d_normals, ransac_normals  # noqa: E402
from equiframe.experiments import experiment_from_dict  # noqa: E402
from equiframe.train import load_checkpoint  # noqa: E402

Method = Callable[[torch.Tensor], torch.Tensor]
PCA_KS = (8, 12, 16, 24, 32, 48)
JET_KS = (16, 24, 32, 48)
RANSAC_TAUS = (0.005, 0.01, 0.02, 0.05, 0.1)


def clouds(cfg: CADConfig, split: str, n: int, density: int, noise: float, root: str | None) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    ds = CADNormalsDataset(split, cfg, root, n_points=density, noise=noise, rotation="so3",  # type: ignore[arg-type]
                           max_points=max(density, 2048))
    n = min(n, len(ds))
    items = [ds[i] for i in range(n)]
    return (torch.stack([it["pos"] for it in items]).double(), torch.stack([it["normal"] for it in items]).double(),
            [int(ds.arrays["family"][i]) for i in range(n)])


def hybrid_radius(pos: torch.Tensor) -> float:
    idx = dense_knn(pos[:1], pos[:1], 17)[0, :, -1]
    return float(2 * (pos[0, idx] - pos[0]).norm(dim=-1).mean())


def load_runs(root: Path) -> dict[str, tuple[torch.nn.Module, dict[str, Any]]]:
    out = {}
    for ck in sorted(root.glob("normals/*/seed*/checkpoint.pt")):
        c = load_checkpoint(ck)
        exp = experiment_from_dict(c["experiment"]["name"], dict(c["experiment"]["config"]))
        model = exp.build_model().double()
        model.load_state_dict(c["best"]["state"])
        model.eval()
        name = f"{ck.parent.parent.name}/{ck.parent.name}"
        out[name] = (model, {"epoch": c["epoch"], "best_epoch": c["best"]["epoch"], "best_val": c["best"]["value"],
                             "config": exp.to_dict(), "wall_s": sum(h.get("time_s", 0) for h in c.get("history", []))
                             if isinstance(c.get("history"), list) else None,
                             "params": sum(p.numel() for p in model.parameters())})
    return out


def add_seed_means(rows: dict[str, dict[str, float]], runs: dict[str, Any]) -> None:
    """Add a row ``<run>/mean of n seeds`` (mean of every metric) for each run trained with several seeds."""
    groups: dict[str, list[str]] = {}
    for name in runs:
        if name in rows:
            groups.setdefault(name.rsplit("/", 1)[0], []).append(name)
    for run, names in groups.items():
        if len(names) > 1:
            rows[f"{run}/mean of {len(names)} seeds"] = {
                k: float(np.mean([rows[n][k] for n in names])) for k in rows[names[0]]}


def model_options(c: dict[str, Any]) -> str:
    """The non-default options of a local model, for the budget table."""
    out = f", k {c['local_k']}" if c["model"] == "fa-local-pointnet" else ""
    out += f", hidden {c['hidden']}" if c["model"] == "fa-local-pointnet" and c.get("hidden", 64) != 64 else ""
    out += f", context k {c['local_context_k']}" if c.get("local_context_k") else ""
    return out + (f", plane vote over pairs of {c['local_vote']} neighbours" if c.get("local_vote") else "")


def training_samples(c: dict[str, Any]) -> str:
    """How the training clouds were drawn (points, query points, noise, densities)."""
    if not c.get("train_queries"):
        return f"whole clouds, {c['n_points']} points, noise {c['noise'] * 100:g} %"
    dens = "/".join(map(str, c.get("train_densities") or [c["n_points"]]))
    return (f"{c['train_queries']} query points per cloud of {dens} points, noise U(0, "
            f"{c.get('train_noise_max', 0) * 100:g} %)")


@torch.no_grad()
def batched(fn: Method, pos: torch.Tensor, bs: int) -> torch.Tensor:
    return torch.cat([fn(pos[s:s + bs]) for s in range(0, len(pos), bs)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=None, help="directory with normals/<run>/seed*/checkpoint.pt")
    ap.add_argument("--cad-parts", type=int, default=1008)
    ap.add_argument("--cad-points", type=int, default=10000)
    ap.add_argument("--root", default=None, help="cache root")
    ap.add_argument("--n-test", type=int, default=32)
    ap.add_argument("--n-valid", type=int, default=16, help="validation parts for the best k")
    ap.add_argument("--n-test-dense", type=int, default=8, help="test (and validation) parts at densities above 2048")
    ap.add_argument("--densities", type=int, nargs="+", default=[512, 2048, 10000])
    ap.add_argument("--noises", type=float, nargs="+", default=[0.0, 0.0025, 0.005, 0.012])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="normals_cad")
    ap.add_argument("--json", default=None, help="also write the raw numbers here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    cfg = CADConfig(n_parts=args.cad_parts, n_points=args.cad_points)
    runs = load_runs(Path(args.runs)) if args.runs else {}
    try:
        open3d_normals(torch.randn(20, 3, dtype=torch.float64), knn=5)
        have_o3d = True
    except ImportError as err:
        print(f"Open3D unavailable: {err}")
        have_o3d = False

    rows: dict[tuple[int, float], dict[str, dict[str, float]]] = {}
    best_k: dict[tuple[int, float], dict[str, int]] = {}
    per_shape: dict[str, np.ndarray] = {}
    fams: list[int] = []
    for density in args.densities:
        for noise in args.noises:
            key = (density, noise)
            # best k on the validation split
            n_test = args.n_test if density <= 2048 else min(args.n_test, args.n_test_dense)
            n_valid = args.n_valid if density <= 2048 else min(args.n_valid, args.n_test_dense)
            vpos, vnrm, _ = clouds(cfg, "valid", n_valid, density, noise, args.root)
            kp = min(PCA_KS, key=lambda k: normal_metrics(knn_geometry(vpos, k)[1], vnrm)["one_minus_cos2"])
            kj = min(JET_KS, key=lambda k: normal_metrics(jet_normals(vpos, k), vnrm)["one_minus_cos2"])
            kr = min(RANSAC_TAUS, key=lambda t: normal_metrics(ransac_normals(vpos, 32, 12, t), vnrm)["one_minus_cos2"])
            best_k[key] = {"pca": kp, "jet": kj, "ransac": kr}
            pos, nrm, fam = clouds(cfg, "test", n_test, density, noise, args.root)
            methods: dict[str, Method] = {
                "k-NN PCA (k=16)": lambda p: knn_geometry(p, 16)[1],
                f"k-NN PCA (best k on valid: {kp})": lambda p, k=kp: knn_geometry(p, k)[1],
                f"jet fitting, order 2 (best k on valid: {kj})": lambda p, k=kj: jet_normals(p, k),
                f"RANSAC over neighbour pairs, k=32 (best k on valid: tau {kr})": lambda p, t=kr: ransac_normals(p, 32, 12, t),
            }
            if have_o3d:
                r = hybrid_radius(pos)
                methods["Open3D estimate_normals, KNN(16)"] = lambda p: open3d_normals(p, knn=16)
                methods["Open3D estimate_normals, KNN(30)"] = lambda p: open3d_normals(p, knn=30)
                methods[f"Open3D estimate_normals, Hybrid(r={r:.3f}, 30)"] = lambda p, r=r: open3d_normals(p, knn=30, radius=r)
            for name, (model, meta) in runs.items():
                if meta["config"]["model"] != "fa-local-pointnet" and density != 512:
                    continue
                methods[f"{name}"] = lambda p, m=model: m(p)
            rows[key] = {}
            for name, fn in methods.items():
                t = time.perf_counter()
                pred = batched(fn, pos, 8 if density <= 2048 else 1)
                m = normal_metrics(pred, nrm)
                m["seconds"] = time.perf_counter() - t
                rows[key][name.split(" (best k")[0] if "best k" in name else name] = m
                if density == 512 and noise == 0.0:
                    per_shape[name] = normal_loss(pred, nrm, reduction="none").mean(-1).numpy()
                    fams = fam
            add_seed_means(rows[key], runs)
            print(f"density {density} noise {noise}: " + ", ".join(f"{n}: {v['one_minus_cos2']:.4f}" for n, v in rows[key].items()),
                  flush=True)

    # procedural source (second), 512 points, rotated
    sc = ShapesConfig(n_train=64, n_test=args.n_test)
    proc = NormalsDataset("test", sc, args.root, rotation="so3")
    ppos = torch.stack([proc[i]["pos"] for i in range(len(proc))]).double()
    pnrm = torch.stack([proc[i]["normal"] for i in range(len(proc))]).double()
    proc_rows = {"k-NN PCA (k=16)": normal_metrics(knn_geometry(ppos, 16)[1], pnrm),
                 "jet fitting, order 2 (k=16)": normal_metrics(jet_normals(ppos, 16), pnrm),
                 "RANSAC over neighbour pairs, k=32 (tau 0.01)": normal_metrics(ransac_normals(ppos), pnrm)}
    if have_o3d:
        proc_rows["Open3D estimate_normals, KNN(30)"] = normal_metrics(open3d_normals(ppos, knn=30), pnrm)
    for name, (model, _) in runs.items():
        proc_rows[name] = normal_metrics(batched(lambda p, m=model: m(p), ppos, 8), pnrm)
    add_seed_means(proc_rows, runs)

    # ---------------------------------------------------------------- report
    def cells(m: dict[str, float]) -> str:
        return f"{m['one_minus_cos2']:.4f} | {m['rms_angle_deg']:.2f} | {m['pgp5']:.3f} | {m['pgp10']:.3f}"

    lines = []
    lines.append(
        f"CAD-kernel test parts (`equiframe data normals --source cad --parts {args.cad_parts}`, seed 0; test split = "
        f"parts with i % 10 == 9, first {args.n_test}; best k chosen on the first {args.n_valid} validation parts), "
        "each cloud randomly rotated (SO(3)); noise = Gaussian sigma as a fraction of the bounding-box diagonal. "
        "Columns: 1 − cos², RMS angle (deg), PGP5, PGP10 (shares of points under 5 / 10 degrees).\n")
    if not have_o3d:
        lines.append("Open3D could not be imported on this machine (rows missing).\n")
    for (density, noise), r in rows.items():
        n_parts = args.n_test if density <= 2048 else min(args.n_test, args.n_test_dense)
        lines.append(f"\n### {density} points, noise {noise * 100:g} % ({n_parts} test parts)\n")
        lines.append("| method | 1 − cos² | RMS angle | PGP5 | PGP10 | s |")
        lines.append("|---|---|---|---|---|---|")
        for name, m in sorted(r.items(), key=lambda x: x[1]["one_minus_cos2"]):
            lines.append(f"| {name} | {cells(m)} | {m['seconds']:.1f} |")
    lines.append("\nBest k on validation (k-NN PCA / jet) and RANSAC's best tau: " + "; ".join(
        f"{d} pts, {n * 100:g} %: {v['pca']} / {v['jet']}, tau {v['ransac']}" for (d, n), v in best_k.items()))
    lines.append(f"\n### Second source: procedural boolean-of-primitives shapes (512 points, rotated, {len(proc)} test shapes)\n")
    lines.append("| method | 1 − cos² | RMS angle | PGP5 | PGP10 |")
    lines.append("|---|---|---|---|---|")
    for name, m in sorted(proc_rows.items(), key=lambda x: x[1]["one_minus_cos2"]):
        lines.append(f"| {name} | {cells(m)} |")
    if runs:
        lines.append("\n### Trained runs (budget)\n")
        lines.append("| run | model | params | training parts | training samples | epochs run | best epoch | "
                     "best valid 1 − cos² | seed |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for name, (_, meta) in runs.items():
            c = meta["config"]
            lines.append(f"| {name} | {c['model']} (hidden {c['hidden']}{model_options(c)}) | {meta['params']} | "
                         f"{c['n_train']} | {training_samples(c)} | {meta['epoch']} | {meta['best_epoch']} | "
                         f"{meta['best_val']:.4f} | {name.rsplit('seed', 1)[-1]} |")
        model_names = [n for n in per_shape if n in runs]
        if model_names:
            best = min(model_names, key=lambda n: per_shape[n].mean())
            base = per_shape["k-NN PCA (k=16)"]
            ratio = per_shape[best] / np.maximum(base, 1e-12)
            worst = np.argsort(-(per_shape[best] - base))[:6]
            lines.append(f"\n### Worst test parts of {best} against k-NN PCA (k = 16), 512 points, no noise\n")
            lines.append(f"Parts where the model is worse than PCA: {int((per_shape[best] > base).sum())} of {len(base)}; "
                         f"median per-part ratio model / PCA {np.median(ratio):.2f}.\n")
            lines.append("| test part | family | model 1 − cos² | PCA 1 − cos² | ratio |")
            lines.append("|---|---|---|---|---|")
            for i in worst:
                lines.append(f"| {i} | {FAMILIES[fams[i]]} | {per_shape[best][i]:.4f} | {base[i]:.4f} | {ratio[i]:.2f} |")
            lines.append(f"\nBy family (same parts): mean 1 − cos² of {best} and of k-NN PCA (k = 16), their ratio, "
                         "and the parts where the model is worse than PCA.\n")
            lines.append("| family | parts | model 1 − cos² | PCA 1 − cos² | ratio | parts worse than PCA |")
            lines.append("|---|---|---|---|---|---|")
            fa = np.asarray(fams)
            for f in sorted(set(fams)):
                sel = fa == f
                mm, pm = float(per_shape[best][sel].mean()), float(base[sel].mean())
                lines.append(f"| {FAMILIES[f]} | {int(sel.sum())} | {mm:.4f} | {pm:.4f} | {mm / max(pm, 1e-12):.2f} | "
                             f"{int((per_shape[best][sel] > base[sel]).sum())} |")
    lines.append(f"\nWall time of this benchmark: {time.perf_counter() - t0:.0f} s ({args.threads} torch thread, shared "
                 "2-core machine under heavy load from other jobs: times are indicative).")
    write_result(args.out, "Normal estimation on CAD-kernel parts: models x baselines x noise x density", "\n".join(lines),
                 command_line())
    if args.json:
        Path(args.json).write_text(json.dumps({f"{d}_{n}": r for (d, n), r in rows.items()} | {"procedural": proc_rows},
                                              indent=1, default=float))


if __name__ == "__main__":
    main()
