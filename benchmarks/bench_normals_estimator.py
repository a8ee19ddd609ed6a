"""Time per 10^6 points of the pretrained normal estimator (k-NN search, network, orientation).

    python benchmarks/bench_normals_estimator.py [--points 1000000] [--chunk-size 4096] [--threads 1]

The cloud: area-uniform samples of a procedural torus-like superquadric mesh (no file I/O in the times).
The shipped weights of the estimator's default model (``normals__fa-local-pointnet-cad``) are used when present, else a randomly initialised
model of the same architecture (the time does not depend on the weights). Peak memory: the process's
maximum resident set size (``resource.getrusage``), which includes Python, torch and the cloud.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, write_result  # noqa: E402

from equiframe.datasets.shapes import make_analytic_shape, sample_surface  # noqa: E402
from equiframe.datasets.normal_metrics import normal_metrics  # noqa: E402
from equiframe.models.normals import LocalPointNet, knn_geometry  # noqa: E402
from equiframe.pretrained import WEIGHTS_DIR  # noqa: E402
from equiframe.pretrained.normals import NormalEstimator, normal_estimator, orient_normals  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--chunk-size", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="normals_estimator")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mesh = make_analytic_shape(np.random.default_rng(0), "torus", resolution=96)
    pos, nrm = sample_surface(mesh.vertices, mesh.faces, args.points, np.random.default_rng(1), dtype=np.float64)
    shipped = (WEIGHTS_DIR / "normals__fa-local-pointnet-cad.json").exists()
    if shipped:
        est = normal_estimator(chunk_size=args.chunk_size)
    else:
        torch.manual_seed(0)
        est = NormalEstimator(LocalPointNet(3, 16, 64), chunk_size=args.chunk_size)
    t0 = time.perf_counter()
    n = est(pos)
    t_net = time.perf_counter() - t0
    t0 = time.perf_counter()
    o = orient_normals(pos, n, k=10)
    t_orient = time.perf_counter() - t0
    t0 = time.perf_counter()
    pca = knn_geometry(torch.from_numpy(pos)[None], 16)[1][0]
    t_pca = time.perf_counter() - t0
    m_est = normal_metrics(torch.from_numpy(n).double(), torch.from_numpy(nrm))
    m_pca = normal_metrics(pca, torch.from_numpy(nrm))
    oriented = float(((o * nrm).sum(1) > 0).mean())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per = 1e6 / args.points
    body = (
        f"Cloud: {args.points} area-uniform points on a procedural torus mesh (float64); model: "
        f"{'shipped normals/fa-local-pointnet-cad (k-NN k = ' + str(est.k) + ')' if shipped else 'randomly initialised FA-Local-PointNet (hidden 64, k 16; no shipped weights yet)'}; "
        f"chunk {args.chunk_size} points; {args.threads} torch thread on a shared 2-core machine under heavy load "
        "(times are indicative).\n\n"
        "| step | seconds | seconds per 10^6 points |\n|---|---|---|\n"
        f"| k-NN (k-d tree) + network, unoriented | {t_net:.1f} | {t_net * per:.1f} |\n"
        f"| orientation (k = 10 graph, spanning tree) | {t_orient:.1f} | {t_orient * per:.1f} |\n"
        f"| for comparison: k-NN PCA (k = 16), same k-NN | {t_pca:.1f} | {t_pca * per:.1f} |\n\n"
        f"Peak resident memory of the process: {rss:.0f} MiB. Accuracy against the mesh's face normals: estimator "
        f"1 − cos² {m_est['one_minus_cos2']:.5f}, k-NN PCA {m_pca['one_minus_cos2']:.5f}; after orientation "
        f"{oriented * 100:.2f} % of the normals point outward.\n"
    )
    write_result(args.out, "Normal estimator: time per 10^6 points", body, command_line())


if __name__ == "__main__":
    main()
