"""Export the best-validation weights of a FA-Local-PointNet run as the shipped normal estimator.

    python benchmarks/export_normal_weights.py RUN_DIR [--name fa-local-pointnet-cad] [--command "..."]

Writes ``src/equiframe/pretrained/weights/normals__<name>.pt`` (float32 state dict) and the sidecar
``normals__<name>.json`` (SHA-256, builder, constructor kwargs, the run's test metrics and its float64
equivariance errors, the training command, epochs and seed), with the experiment to re-evaluate it
(``equiframe.pretrained.evaluate``) and a quick check: the metrics of the first ``CHECK_LIMIT`` test parts
(the tests rebuild those parts and compare).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from equiframe.experiments import experiment_from_dict
from equiframe.models.normals import LocalPointNet
from equiframe.pretrained.normals import save_normal_model
from equiframe.pretrained._loader import _Prefix
from equiframe.train import DistInfo, evaluate, load_checkpoint

#: test parts of the quick re-evaluation check recorded in the sidecar
CHECK_LIMIT = 1
EVAL_BATCH_SIZE = 16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run_dir")
    ap.add_argument("--name", default="fa-local-pointnet-cad")
    ap.add_argument("--command", default="")
    ap.add_argument("--results", default=None,
                    help="where the run's metrics.json / curves.csv are committed (default results/normals/<run>/<seed>)")
    args = ap.parse_args()
    run = Path(args.run_dir)
    ck = load_checkpoint(run / "checkpoint.pt")
    cfg = dict(ck["experiment"]["config"])
    exp = experiment_from_dict(ck["experiment"]["name"], cfg)
    model = exp.build_model()
    if not isinstance(model, LocalPointNet):
        raise SystemExit(f"{run}: the estimator ships LocalPointNet models, got {type(model).__name__}")
    model.load_state_dict(ck["best"]["state"])
    # the sidecar's metrics are the run's test metrics; the rest of the evaluation goes under trained.evaluation
    m = json.loads((run / "metrics.json").read_text())
    metrics = dict(m["test"])
    evaluation: dict = {"best_valid_one_minus_cos2": ck["best"]["value"], "best_epoch": ck["best"]["epoch"]}
    diag = m.get("diagnostics") or {}
    for k in ("equivariance_error_f64", "equivariance_error_f64_generic", "test_by_rotation"):
        if k in diag:
            evaluation[k] = diag[k]
    kwargs = {"dim": model.dim, "k": model.k, "hidden": cfg["hidden"], "head": model.head_kind,
              "iterations": model.head.iterations if hasattr(model.head, "iterations") else 2}
    if model.context_k is not None:
        kwargs["context_k"] = model.context_k
    if model.vote_k is not None:
        kwargs["vote"] = model.vote_k
    data = {k: cfg[k] for k in ("source", "cad_parts", "cad_points", "n_train", "n_valid", "n_test", "n_points",
                                "noise", "data_seed", "setting", "local_k", "local_context_k", "local_vote", "train_queries", "train_clean_share",
                                "train_noise_max", "train_densities") if k in cfg}
    results = args.results or f"results/normals/{run.parent.name}/{run.name}"
    model.eval()
    check = evaluate(exp, model, _Prefix(exp.dataset("test"), CHECK_LIMIT), batch_size=EVAL_BATCH_SIZE,
                     info=DistInfo())
    pt = save_normal_model(model, args.name, kwargs, metrics=metrics,
                           trained={"command": args.command, "epochs": ck["epoch"], "best_epoch": ck["best"]["epoch"],
                                    "seed": int(m["seed"]), "run": results, "data": data, "evaluation": evaluation},
                           experiment={"name": ck["experiment"]["name"], "config": {**cfg, "data_root": None}},
                           eval_batch_size=EVAL_BATCH_SIZE,
                           check={"split": "test", "limit": CHECK_LIMIT, "metrics": check})
    print(pt, pt.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
