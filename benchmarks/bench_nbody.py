"""n-body training throughput of every model (forward + backward + Adam step, batch 100, CPU) and the
cost of FA-GNN and TF-GNN relative to EGNN.

    python benchmarks/bench_nbody.py [--batch 100] [--rounds 5] [--steps 3] [--threads 1]

Models are timed alternately, one round at a time (``steps`` training steps per model per round); the
relative costs are medians of per-round ratios (absolute times drift on shared machines). Also reports
the epoch time implied for the protocol's 3000 training simulations and the time 10 000 epochs would
take at that speed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, command_line, ratio, write_result  # noqa: E402

from equiframe.experiments.nbody import NBodyExperiment, NBodyExperimentConfig  # noqa: E402

VARIANTS = {
    "linear": dict(model="linear"),
    "gnn": dict(model="gnn"),
    "egnn": dict(model="egnn"),
    "tf-gnn": dict(model="tf-gnn"),
    "fa-gnn (all, 8 elements)": dict(model="fa-gnn"),
    "fa-gnn (canonical)": dict(model="fa-gnn", fa_mode="canonical"),
    "fa-gnn (stochastic, 1 element)": dict(model="fa-gnn", fa_mode="stochastic"),
    "fa-gnn layerwise (all, 8 elements per layer)": dict(model="fa-gnn", fa_variant="layerwise"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    steps = {}
    params = {}
    batch = None
    for name, opts in VARIANTS.items():
        exp = NBodyExperiment(NBodyExperimentConfig(n_train=args.batch, n_valid=1, n_test=1, **opts))
        if batch is None:
            batch = exp.make_batch(exp.dataset("train"), torch.arange(args.batch))
        torch.manual_seed(0)
        model = exp.build_model()
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        params[name] = sum(q.numel() for q in model.parameters())

        def step(exp=exp, model=model, opt=opt):
            for _ in range(args.steps):
                loss = exp.loss(model, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        steps[name] = step
    times = alternate(steps, rounds=args.rounds, warmup=1)
    rows = [
        "| model | params | ms / step (batch %d) | samples / s | vs EGNN (time) | epoch of 3000 | 10 000 epochs |" % args.batch,
        "|---|---|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        t = statistics.median(times[name]) / args.steps
        epoch = t * 3000 / args.batch
        rows.append(
            f"| {name} | {params[name]} | {t * 1e3:.1f} | {args.batch / t:.0f} | {ratio(times, name, 'egnn'):.2f}x | "
            f"{epoch:.2f} s | {epoch * 1e4 / 3600:.1f} h |"
        )
    body = "\n".join(rows) + (
        f"\n\nForward + backward + Adam step on a batch of {args.batch} systems (5 particles, 20 directed edges each), "
        f"float32, {args.threads} thread(s); median over {args.rounds} alternating rounds of {args.steps} steps; "
        "'vs EGNN' is the median per-round time ratio. Training epochs also run a validation pass "
        "(forward only on 2000 systems, about a third of this cost per system), not included here."
    )
    write_result("nbody_throughput", "n-body training throughput (CPU)", body, command_line())


if __name__ == "__main__":
    main()
