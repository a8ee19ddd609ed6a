"""Export the final weights of the headline models into ``src/equiframe/pretrained/weights/``.

    python benchmarks/export_pretrained.py [--runs runs] [--only nbody/tf-gnn ...] [--data-dir ../shared/data]

For every entry of :data:`EXPORTS` this reads the training checkpoint of the chosen seed (``runs/...``, the
gitignored working directory), takes the model state of the best validation epoch (no optimizer state),
records the builder and its keyword arguments by building the model through the experiment's own
``build_model`` (the factory call is observed, not re-typed), and writes a float32 state dict plus its
sidecar with :func:`equiframe.pretrained.save`. The committed test metrics (``results/.../metrics.json``)
go into the sidecar, together with a quick check: the metrics of the first ``CHECK_LIMIT`` test items
evaluated from the checkpoint. The shipped weights must give both back (``tests/test_pretrained.py``).

Seeds: the seed with the lowest validation metric of each run (selection never looks at the test split).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
CHECK_LIMIT = 40
NBODY = ("python -m equiframe train nbody {args} --seeds {seed} --data-stream egnn --eval-every 5 --eval-batch-size 500 "
         "--threads 1 --out runs --device cpu   # benchmarks/nbody_protocol.sh")
EXP = ("python -m equiframe graphs classify --dataset exp --model {model} --frame canonical --train-frame spectral "
       "--train-components shuffled --select loss --seeds 0 1 2 --data-dir ../shared/data --threads 1")
_TF = ("--tf-position-updates --tf-frames coulomb --tf-edge-features charge+velocity+coulomb "
       "--tf-train-frames stabilizer")
TF_LONG = ("python -m equiframe train nbody --model tf-gnn --epochs 1400 --seeds {seed} --threads 1 --eval-every 5 "
           f"--out runs --name tf-gnn-abl-all-stab-long@egnn-small {_TF}; then the same with --resume --epochs 1800 "
           "--lr-schedule cosine --anneal-from 1400 --min-lr-ratio 0.01   # benchmarks/results/nbody_tf_ablation.md")
NORMALS = "python benchmarks/bench_normals.py --runs {key}   # seed 0, the budget of benchmarks/results/normals.md"


@dataclass(frozen=True)
class Export:
    name: str
    run: str          # results/<experiment>/<run> (committed metrics) and runs/<...> (checkpoints)
    checkpoints: str  # the checkpoints' directory under --runs
    command: str


EXPORTS = [
    Export("nbody/tf-gnn", "nbody/tf-gnn-abl-all-stab-long@egnn-small", "nbody/tf-gnn-abl-all-stab-long@egnn-small",
           TF_LONG),
    Export("nbody/fa-gnn", "nbody/fa-gnn-layerwise@egnn-small", "nbody/fa-gnn-layerwise@egnn-small",
           NBODY.format(args="--model fa-gnn --fa-variant layerwise --checkpoint-every 5 --epochs 250", seed="{seed}")),
    Export("nbody/fa-gnn-stochastic", "nbody/fa-gnn-layerwise-stochastic-long@egnn-small",
           "nbody/fa-gnn-layerwise-stochastic-long@egnn-small",
           NBODY.format(args="--model fa-gnn --fa-variant layerwise --fa-mode stochastic --checkpoint-every 5 "
                             "--epochs 550", seed="{seed}") + " (continued in chunks: benchmarks/nbody_long.sh)"),
    Export("nbody/egnn", "nbody/egnn@egnn-small", "nbody/egnn@egnn-small",
           NBODY.format(args="--model egnn --epochs 500", seed="{seed}")),
    Export("nbody/gnn", "nbody/gnn@egnn-small", "nbody/gnn@egnn-small",
           NBODY.format(args="--model gnn --epochs 500", seed="{seed}")),
    Export("graphs/exp-fa-mlp", "graphs/exp-fa-mlp-canonical-trainspectral-shufcomp-selloss-fold0",
           "graphs/exp-fa-mlp-canonical-trainspectral-shufcomp-selloss-fold0", EXP.format(model="fa-mlp")),
    Export("graphs/exp-fa-gin-id", "graphs/exp-fa-gin-id-canonical-trainspectral-shufcomp-selloss-fold0",
           "graphs/exp-fa-gin-id-canonical-trainspectral-shufcomp-selloss-fold0", EXP.format(model="fa-gin-id")),
    Export("normals/tf-pointnet", "normals/tf-pointnet_i-i", "normals_bench/runs/normals/tf-pointnet_i-i",
           NORMALS.format(key="tf-pointnet_i-i")),
    Export("normals/fa-local-pointnet", "normals/fa-local-pointnet_i-i", "normals_bench/runs/normals/fa-local-pointnet_i-i",
           NORMALS.format(key="fa-local-pointnet_i-i")),
]


def _best_seed(results: Path, metric: str) -> int:
    seeds = {}
    for p in sorted(results.glob("seed*/metrics.json")):
        m = json.loads(p.read_text())
        seeds[int(m["seed"])] = float(m["best_val"][metric])
    if not seeds:
        raise FileNotFoundError(f"no committed runs under {results}")
    return min(seeds, key=seeds.get)


def _recorded_build(experiment) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """Build the model through the experiment and record which module-level factory it called, with what."""
    module = sys.modules[type(experiment).__module__]
    calls: list[tuple[str, str, dict[str, Any]]] = []
    patches = []
    for attr, fn in vars(module).items():
        if attr.startswith("build_") and attr.endswith("_model") and inspect.isfunction(fn):
            def recorder(*args, __fn=fn, **kwargs):
                bound = inspect.signature(__fn).bind(*args, **kwargs)
                calls.append((__fn.__module__, __fn.__name__, dict(bound.arguments)))
                return __fn(*args, **kwargs)
            patches.append(mock.patch.object(module, attr, recorder))
    for p in patches:
        p.start()
    try:
        model = experiment.build_model()
    finally:
        for p in patches:
            p.stop()
    if len(calls) != 1:
        raise RuntimeError(f"expected one factory call in {type(experiment).__name__}.build_model, saw {len(calls)}")
    mod, fn, kwargs = calls[0]
    # a generator only seeds training-time frame samples; the shipped model is for evaluation
    kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items() if k != "generator"}
    return model, f"{mod}:{fn}", kwargs


def export(e: Export, runs: Path, data_dir: str | None) -> dict[str, Any]:
    from equiframe import pretrained  # noqa: PLC0415
    from equiframe.pretrained._loader import _Prefix  # noqa: PLC0415  (the same subset as pretrained.evaluate)
    from equiframe.experiments import experiment_from_dict  # noqa: PLC0415
    from equiframe.train import DistInfo, evaluate, load_checkpoint  # noqa: PLC0415

    results = ROOT / "results" / e.run
    exp_name = e.run.split("/")[0]
    probe = json.loads(next(results.glob("seed*/metrics.json")).read_text())
    metric = experiment_from_dict(exp_name, probe["experiment_config"]).metric
    seed = _best_seed(results, metric)
    committed = json.loads((results / f"seed{seed}" / "metrics.json").read_text())
    ckpt = load_checkpoint(runs / e.checkpoints / f"seed{seed}")
    if ckpt["best"]["epoch"] != committed["best_epoch"]:
        raise RuntimeError(f"{e.name}: checkpoint best epoch {ckpt['best']['epoch']} != committed {committed['best_epoch']}")
    config = dict(ckpt["experiment"]["config"])
    overrides = {"data_dir": data_dir} if data_dir and "data_dir" in config else {}
    experiment = experiment_from_dict(ckpt["experiment"]["name"], {**config, **overrides})
    model, builder, kwargs = _recorded_build(experiment)
    model.load_state_dict(ckpt["best"]["state"])
    bs = ckpt["train_config"].get("eval_batch_size") or ckpt["train_config"]["batch_size"]
    check = evaluate(experiment, model, _Prefix(experiment.dataset("test"), CHECK_LIMIT), batch_size=bs,
                     device="cpu", info=DistInfo())
    rec = pretrained.save(
        model, e.name, builder=builder, kwargs=kwargs,
        metrics={"split": "test", **committed["test"]},
        trained={"run": f"results/{e.run}/seed{seed}", "seed": seed, "epochs": committed["epochs_run"],
                 "best_epoch": committed["best_epoch"], "selected_by": f"lowest validation {metric} over seeds",
                 "command": e.command.format(seed=seed)},
        experiment={"name": ckpt["experiment"]["name"], "config": config}, eval_batch_size=bs,
        check={"split": "test", "limit": CHECK_LIMIT, "metrics": check},
    )
    return {"name": e.name, "seed": seed, "bytes": rec.size_bytes, "test": committed["test"], "check": check}


TABLE_BEGIN, TABLE_END = "<!-- pretrained-table:begin -->", "<!-- pretrained-table:end -->"


def table() -> str:
    """Markdown table of the shipped models, from their sidecars."""
    from equiframe import pretrained  # noqa: PLC0415

    rows = ["| name | committed test metrics | run (epochs, best epoch) | size |", "|---|---|---|---|"]
    for name in pretrained.available():
        rec = pretrained.info(name)
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in rec.metrics.items() if k != "split")
        t = rec.trained
        rows.append(f"| `{name}` | {metrics} | `{t['run']}` ({t['epochs']} epochs, best {t['best_epoch']}) | "
                    f"{rec.size_bytes / 1024:.0f} KiB |")
    return "\n".join(rows)


def write_table(path: Path) -> None:
    """Replace the table between the markers of ``path`` (docs/pretrained.md)."""
    text = path.read_text()
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    path.write_text(f"{head}{TABLE_BEGIN}\n{table()}\n{TABLE_END}{tail}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=str(ROOT / "runs"), help="root of the training checkpoints")
    ap.add_argument("--only", nargs="*", help="names to export (default: all)")
    ap.add_argument("--data-dir", default=None, help="directory of the EXP file (graph models)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table-only", action="store_true", help="only rewrite the table of docs/pretrained.md")
    args = ap.parse_args()
    if args.table_only:
        write_table(ROOT / "docs" / "pretrained.md")
        return 0
    torch.set_num_threads(args.threads)
    todo = [e for e in EXPORTS if not args.only or e.name in args.only]
    for e in todo:
        out = export(e, Path(args.runs), args.data_dir)
        print(json.dumps(out), flush=True)
    write_table(ROOT / "docs" / "pretrained.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
