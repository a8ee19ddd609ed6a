"""Training step of FA-Local-PointNet: whole clouds vs random query neighbourhoods (issue 18).

    python benchmarks/bench_normals_training.py [--cad-parts 400] [--pairs 4] [--threads 1]

FA-Local-PointNet canonicalises every neighbourhood with ONE local PCA frame whose axis signs are fixed by
invariant moments (:func:`equiframe.frames.local.local_pca_frames`): it does not average over the 2^d sign
elements, so there are no frame elements to sample in training. Its cost is the per-edge MLP and the
plane-fit head on all ``N k`` edges of every cloud. The model is local (a point's normal depends only on
its neighbourhood), so the training loss can be estimated on ``q`` random query points per cloud
(:mod:`equiframe.experiments.normals_augment`); evaluation still runs whole clouds. This benchmark times one
optimiser step (batch 32 clouds of 512 CAD points, forward + backward + Adam) both ways, alternately in one
process (the machine's speed drifts), and reports the medians and the median of the per-pair ratios.
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

from equiframe.experiments.normals import NormalsExperiment, NormalsExperimentConfig  # noqa: E402


def step_time(exp: NormalsExperiment, model: torch.nn.Module, opt: torch.optim.Optimizer, index: torch.Tensor) -> float:
    ds = exp.dataset("train")
    batch = exp.make_batch(ds, index)
    t = time.perf_counter()
    loss = exp.loss(model, batch)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cad-parts", type=int, default=400)
    ap.add_argument("--root", default=None)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-parts", type=int, default=3200, help="training parts for the time per epoch")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lines = [f"Batch 32 clouds of 512 points from the CAD-kernel training parts, hidden 64, plane-fit head; one step = "
             f"forward + backward + Adam; {args.pairs} alternating pairs per row after one warm-up step each; time per "
             f"epoch = steps for {args.train_parts} training parts x the median step.\n",
             "| neighbourhood k | whole clouds: s / step | query points q | queries: s / step | ratio (median of pairs) | "
             f"s / epoch whole / queries ({args.train_parts} parts) |", "|---|---|---|---|---|---|"]
    steps = -(-args.train_parts // 32)
    for k, q in ((16, 64), (16, 128), (32, 64)):
        base = dict(model="fa-local-pointnet", source="cad", cad_parts=args.cad_parts, n_train=64, n_valid=8, n_test=8,
                    hidden=64, local_k=k, data_root=args.root)
        exps = {"whole": NormalsExperiment(NormalsExperimentConfig(**base)),
                "queries": NormalsExperiment(NormalsExperimentConfig(**base, train_queries=q))}
        state = {}
        for name, exp in exps.items():
            torch.manual_seed(0)
            model = exp.build_model()
            opt = torch.optim.Adam(model.parameters(), 1e-3)
            exp.set_epoch(0)
            step_time(exp, model, opt, torch.arange(32))  # warm-up
            state[name] = (exp, model, opt)
        times: dict[str, list[float]] = {"whole": [], "queries": []}
        for p in range(args.pairs):
            index = torch.arange(32) + 32 * (p % 2)
            for name in ("whole", "queries"):
                times[name].append(step_time(*state[name], index))
        ratio = statistics.median(a / b for a, b in zip(times["whole"], times["queries"]))
        tw, tq = statistics.median(times["whole"]), statistics.median(times["queries"])
        lines.append(f"| {k} | {tw:.2f} | {q} | {tq:.2f} | {ratio:.1f}x | {tw * steps:.0f} / {tq * steps:.0f} |")
        print(lines[-1], flush=True)
    write_result("normals_training", "FA-Local-PointNet training step: whole clouds vs query neighbourhoods",
                 "\n".join(lines), command_line())


if __name__ == "__main__":
    main()
