"""The ``equiframe`` command line.

::

    equiframe data nbody [--root DIR]                      generate (cached) + statistics of the n-body data
    equiframe data normals --source cad --parts 2000       CAD-kernel parts with exact normals (resumable)
    equiframe train nbody --model fa-gnn --epochs 100 --seeds 0 1 2 [--out runs] [--resume] ...
    equiframe eval RUN_DIR_OR_CHECKPOINT [--split test]    re-evaluate the best checkpoint of a run
    equiframe report [runs] [--out report.md]              Markdown table of all results (mean ± std)
    equiframe demo [--out reports/demo]                    the main demonstration and its report

``train`` also runs under ``torchrun --nproc_per_node N -m equiframe train ...`` (distributed data
parallel; see :mod:`equiframe.train`). ``python -m equiframe`` is the same command.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

from .models.nbody import MODEL_NAMES as _MODELS


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


# ------------------------------------------------------------------------------------------ data
def _cmd_data(args: argparse.Namespace) -> int:
    from .datasets.nbody import NBodyConfig, generate_nbody, load_egnn_npy, nbody_baselines  # noqa: PLC0415
    from .datasets._cache import resolve_cache_dir  # noqa: PLC0415

    config = NBodyConfig(n_train=args.sims[0], n_valid=args.sims[1], n_test=args.sims[2],
                         **_data_stream_seed(args.stream, args.seed))
    t0 = time.perf_counter()
    if args.egnn_npy:
        splits = {s: load_egnn_npy(args.egnn_npy, s) for s in ("train", "valid", "test")}
        source = f"EGNN .npy files in {args.egnn_npy}"
    else:
        splits = generate_nbody(config, args.root, progress=not args.quiet)
        source = f"generated ({config.stream} stream, seed {config.seed}), cached under {resolve_cache_dir(args.root) / 'nbody_charged'}"
    dt = time.perf_counter() - t0
    print(f"n-body (charged, {config.n_particles} particles, {config.dim}-D): {source}")
    print(f"loaded/generated in {dt:.1f} s; input sample {config.input_sample}, target sample {config.target_sample}")
    print(f"{'split':<6} {'sims':>6} {'zero-motion MSE':>16} {'x + c v MSE':>12} {'c':>7} {'|x| max':>8} {'|v| rms':>8}")
    rows = {}
    for s, arr in splits.items():
        b = nbody_baselines(arr, input_sample=config.input_sample, target_sample=config.target_sample)
        x = arr["pos"][:, config.input_sample]
        v = arr["vel"][:, config.input_sample]
        rows[s] = {**b, "pos_abs_max": float(abs(x).max()), "vel_rms": float((v**2).sum(-1).mean() ** 0.5)}
        print(f"{s:<6} {int(b['n_sims']):>6} {b['zero_motion_mse']:>16.4f} {b['velocity_extrapolation_mse']:>12.4f} "
              f"{b['c']:>7.3f} {rows[s]['pos_abs_max']:>8.2f} {rows[s]['vel_rms']:>8.3f}")
    print("reference (100 000 simulations): zero motion 0.2711, x + c v 0.0870 with c = 0.725; "
          "the EGNN test split (--stream egnn, seed 43): 0.2715, 0.0835, c = 0.735; published Linear 0.0819")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def _data_stream_seed(stream: str, seed: int | None) -> dict[str, object]:
    """``NBodyConfig`` fields of the ``--stream``/``--data-stream`` and seed options: the EGNN stream defaults
    to seed 43 (the published ``nbody_small`` data), the default stream to seed 0."""
    return {"stream": stream, "seed": (43 if stream == "egnn" else 0) if seed is None else seed}


# ------------------------------------------------------------------------------------------ train
def _experiment_from_args(args: argparse.Namespace):
    from .experiments.nbody import NBodyExperiment, NBodyExperimentConfig  # noqa: PLC0415

    if args.egnn_npy and not Path(args.egnn_npy).is_dir():
        raise FileNotFoundError(f"--egnn-npy: {args.egnn_npy} is not a directory")
    from .datasets.nbody import NBodyConfig  # noqa: PLC0415

    sims = args.sims
    cfg = NBodyExperimentConfig(
        data=NBodyConfig(n_train=sims[0], n_valid=sims[1], n_test=sims[2],
                         **_data_stream_seed(args.data_stream, args.data_seed)),
        model=args.model, n_train=args.n_train or sims[0], n_valid=args.n_valid or sims[1],
        n_test=args.n_test or sims[2], hidden=args.hidden,
        layers=args.layers, fa_mode=args.fa_mode, fa_variant=args.fa_variant, hidden_reps=args.hidden_reps, edge_distances=args.edge_distances,
        dtype=args.dtype, data_root=args.data_root, egnn_npy=args.egnn_npy,
    )
    return NBodyExperiment(cfg)


def _train_config_from_args(args: argparse.Namespace, lr: float):
    from .train import OptimConfig, TrainConfig  # noqa: PLC0415

    return TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size,
        optim=OptimConfig(lr=lr, weight_decay=args.weight_decay, grad_clip=args.grad_clip),
        seeds=tuple(args.seeds), eval_every=args.eval_every, patience=args.patience,
        checkpoint_every=args.checkpoint_every, eval_batch_size=args.eval_batch_size, device=args.device,
        num_workers=args.num_workers, out=args.out, name=args.name, resume=args.resume or args.resume_or_start,
        require_checkpoint=args.resume, overwrite=args.overwrite, quiet=args.quiet,
        diagnostics=not args.no_diagnostics, threads=args.threads, compile=args.compile,
    )


def _check_out_dir(out: str) -> None:
    """``--out`` must be (or be creatable as) a writable directory: one line, not a traceback at the first save."""
    path = Path(out)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"--out: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"--out: {probe} is not writable")


def _cmd_train(args: argparse.Namespace) -> int:
    from .experiments.nbody import DEFAULT_LR  # noqa: PLC0415
    from . import train as T  # noqa: PLC0415

    if args.data_root is not None and Path(args.data_root).exists() and not Path(args.data_root).is_dir():
        raise ValueError(f"--data-root: {args.data_root} is a file, not a directory")
    _check_out_dir(args.out)
    experiment = _experiment_from_args(args)
    config = _train_config_from_args(args, args.lr if args.lr is not None else DEFAULT_LR[args.model])
    if args.threads is not None:  # process-wide settings belong to the command, not to the library
        import torch  # noqa: PLC0415

        torch.set_num_threads(args.threads)
    info = T.init_distributed(config.device)
    try:
        results = T.train(experiment, config)
    finally:
        if info.enabled:
            import torch.distributed as dist  # noqa: PLC0415

            dist.destroy_process_group()
    if info.is_main:
        metric = experiment.metric
        vals = [r.metrics["test"][metric] for r in results]
        for r in results:
            print(f"seed {r.metrics['seed']}: test {metric} {r.metrics['test'][metric]:.5f} "
                  f"(best epoch {r.metrics['best_epoch']}/{r.metrics['epochs_run']}) -> {r.run_dir}")
        if len(vals) > 1:
            import statistics  # noqa: PLC0415

            print(f"mean ± std over {len(vals)} seeds: {statistics.mean(vals):.5f} ± {statistics.stdev(vals):.5f}")
    return 0


# ------------------------------------------------------------------------------------------ eval
def _cmd_eval(args: argparse.Namespace) -> int:
    from .train import evaluate_run  # noqa: PLC0415

    path = Path(args.path)
    if not path.exists():
        raise FileNotFoundError(f"path: {path} does not exist (expected a run directory or a checkpoint.pt)")
    targets = [path]
    if path.is_dir() and not (path / "checkpoint.pt").exists():
        targets = sorted(p.parent for p in path.rglob("checkpoint.pt"))
        if not targets:
            raise FileNotFoundError(f"path: no checkpoint.pt under {path}")
    out = []
    for t in targets:
        res = evaluate_run(t, split=args.split, device=args.device, which=args.which, diagnostics=args.diagnostics,
                           batch_size=args.batch_size)
        res["path"] = str(t)
        out.append(res)
        if not args.json:
            m = ", ".join(f"{k} {v:.6g}" for k, v in res["metrics"].items())
            state = "finished" if res["finished"] else "in progress"
            print(f"{t}: {res['split']} {m} ({res['which']} checkpoint, epoch {res['epoch']}, "
                  f"{res['epochs_run']} epochs run, {state})")
            if "diagnostics" in res and res["diagnostics"]:
                d = res["diagnostics"]
                if "equivariance_error_f64" in d:
                    print(f"  E(3) equivariance error (float64): {d['equivariance_error_f64']:.2e}")
                if "rotation" in d:
                    r = d["rotation"]
                    print(f"  MSE vs rotation about {r['axis']}: min {min(r['mse']):.5f}, max {max(r['mse']):.5f}")
    if args.json:
        print(json.dumps(out if len(out) > 1 else out[0], indent=2))
    return 0


# ------------------------------------------------------------------------------------------ report
def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report  # noqa: PLC0415

    root = Path(args.root)
    if not root.is_dir():
        raise FileNotFoundError(f"root: {root} is not a directory (train something first: equiframe train nbody ...)")
    path = write_report(root, args.out, plots=not args.no_plots)
    print(path.read_text())
    print(f"report written to {path}")
    return 0


# ------------------------------------------------------------------------------------------ demo
def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # noqa: PLC0415  (keep --help fast)

    path = run_demo(args.out, seed=args.seed, quick=args.quick, quiet=args.quiet, pointnet=not args.no_pointnet,
                    data_root=args.data_root)
    print(path.read_text())
    print(f"report written to {path}")
    return 0


# ------------------------------------------------------------------------------------------ parser
def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (v > 0) or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (v >= 0) or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


def _unavailable(name: str, err: Exception):
    def run(args: argparse.Namespace) -> int:
        print(f"equiframe {name}: unavailable here: {err} (install the extras: pip install 'equiframe[shapes,graphs]')",
              file=sys.stderr)
        return 2

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="equiframe",
        description="Frame Averaging and Tensor Frames: make any network invariant/equivariant.\n"
                    "Experiments: train, evaluate and report the n-body benchmark; `equiframe demo` runs it all "
                    "on a small budget.",
        formatter_class=_Formatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # data
    data = sub.add_parser("data", help="generate (and cache) a data set, or fetch EXP / SR25",
                          formatter_class=_Formatter)
    dsub = data.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    dn = dsub.add_parser(
        "nbody", help="the charged n-body data (EGNN protocol: 3000/2000/2000 simulations)",
        formatter_class=_Formatter,
        description="Generate (and cache) the charged 5-body data set and print its statistics.\n\n"
                    "The default --stream egnn replays the random stream of the original EGNN generator (legacy NumPy "
                    "RandomState, its order of draws); with its default seed 43 it gives the initial conditions "
                    "of the published nbody_small files (generate_dataset.py --num-train 10000 --seed 43 "
                    "--sufix small): the test split's statistics are the published ones (no motion 0.2715, "
                    "x + c v 0.0835 with c = 0.735).",
    )
    dn.add_argument("--root", default=None, help="cache root (default: $EQUIFRAME_CACHE or ~/.cache/equiframe)")
    dn.add_argument("--seed", type=_nonneg_int, default=None,
                    help="root seed of the simulations (default: 43 with the egnn stream, 0 with split)")
    dn.add_argument("--stream", choices=("split", "egnn"), default="egnn",
                    help="random stream of the initial conditions: egnn (the original generator's) or split (ours)")
    dn.add_argument("--sims", type=_positive_int, nargs=3, default=[3000, 2000, 2000], metavar=("TRAIN", "VALID", "TEST"),
                    help="simulations generated per split (the first k of a split do not depend on its size)")
    dn.add_argument("--egnn-npy", default=None, metavar="DIR",
                    help="show the statistics of the original EGNN .npy files in DIR instead")
    dn.add_argument("--json", action="store_true", help="also print the statistics as JSON")
    dn.add_argument("--quiet", action="store_true", help="no progress bar")
    dn.set_defaults(func=_cmd_data)
    from .datasets.fetch import add_cli as _add_fetch_cli  # noqa: PLC0415

    _add_fetch_cli(dsub)  # equiframe data fetch exp|sr25
    try:  # `equiframe data normals` (procedural or CAD-kernel normal-estimation data)
        importlib.import_module("equiframe.experiments.normals").add_data_cli(dsub)
    except ImportError as err:
        dsub.add_parser("normals", help=f"(unavailable: {err})").set_defaults(func=_unavailable("normals", err))

    # train
    tr = sub.add_parser("train", help="train models of an experiment (several seeds; resumable; DDP under torchrun)",
                        formatter_class=_Formatter)
    tsub = tr.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    tn = tsub.add_parser(
        "nbody", formatter_class=_Formatter,
        help="charged n-body: predict positions one time unit ahead",
        description="Train on the charged n-body task (SPEC 4.1 protocol: Adam, batch 100, weight decay 1e-12, "
                    "test MSE at the best validation epoch). Results: OUT/nbody/<model>/seed<k>/ "
                    "(checkpoint.pt, metrics.json, curves.csv, curves.png).\n\n"
                    "Distributed: torchrun --nproc_per_node 2 -m equiframe train nbody ...",
    )
    tn.add_argument("--model", choices=_MODELS, required=True, help="model to train")
    tn.add_argument("--epochs", type=_positive_int, default=100, help="epochs (the protocol allows up to 10000)")
    tn.add_argument("--seeds", type=_nonneg_int, nargs="+", default=[0], help="one run per seed, sequentially")
    tn.add_argument("--lr", type=_positive_float, default=None,
                    help="learning rate (default per model: fa-gnn/tf-gnn/linear 1e-3, egnn/gnn 5e-4)")
    tn.add_argument("--batch-size", type=_positive_int, default=100, help="global batch size")
    tn.add_argument("--weight-decay", type=_nonneg_float, default=1e-12, help="Adam weight decay")
    tn.add_argument("--grad-clip", type=_positive_float, default=None, help="clip the gradient norm")
    tn.add_argument("--n-train", type=_positive_int, default=None, help="training simulations used (a prefix; default: all 3000)")
    tn.add_argument("--n-valid", type=_positive_int, default=None, help="validation simulations used (a prefix; default: all 2000)")
    tn.add_argument("--n-test", type=_positive_int, default=None, help="test simulations used (a prefix; default: all 2000)")
    tn.add_argument("--hidden", type=_positive_int, default=None, help="width (default: 60 GNN/FA-GNN, 64 EGNN/TF-GNN)")
    tn.add_argument("--layers", type=_positive_int, default=4, help="message passing layers")
    tn.add_argument("--fa-mode", choices=("all", "canonical", "stochastic"), default=None,
                    help="FA-GNN frame mode: all = the full 8-element E(3) frame in training and evaluation; "
                         "stochastic = one sampled element per system (and layer) while training, the full frame "
                         "in evaluation; canonical = one canonical element (default: stochastic for "
                         "--fa-variant layerwise, all for input)")
    tn.add_argument("--fa-variant", choices=("input", "layerwise"), default="input",
                    help="FA-GNN: input = the input's frame around the whole GNN; layerwise = frame averaging "
                         "at every layer with latent frames (the FA paper's n-body code)")
    tn.add_argument("--hidden-reps", default="32x0n+8x1n", help="TF-GNN hidden feature type")
    tn.add_argument("--edge-distances", action="store_true", help="GNN/FA-GNN: add squared distances to edge features")
    tn.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="data and model precision")
    tn.add_argument("--eval-every", type=_positive_int, default=1, help="validate every N epochs")
    tn.add_argument("--eval-batch-size", type=_positive_int, default=None, help="evaluation batch size")
    tn.add_argument("--patience", type=_positive_int, default=None, help="early stopping: evaluations without improvement")
    tn.add_argument("--checkpoint-every", type=_positive_int, default=10, help="checkpoint every N epochs")
    tn.add_argument("--out", default="runs", help="results root")
    tn.add_argument("--name", default=None, help="run directory name (default: the model, e.g. fa-gnn)")
    mode = tn.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue existing runs from their last checkpoint (an error where a run has none)")
    mode.add_argument("--resume-or-start", action="store_true",
                      help="continue runs that have a checkpoint, start the others")
    mode.add_argument("--overwrite", action="store_true", help="delete existing runs and start again")
    tn.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    tn.add_argument("--num-workers", type=_nonneg_int, default=0, help="DataLoader worker processes")
    tn.add_argument("--threads", type=_positive_int, default=None, help="torch intra-op threads per process")
    tn.add_argument("--compile", action="store_true",
                    help="train through torch.compile (inductor; falls back to eager with a warning when no "
                         "compiler works here; compiling takes about a minute per batch shape on CPU)")
    tn.add_argument("--data-root", default=None, help="cache root of the generated data")
    tn.add_argument("--sims", type=_positive_int, nargs=3, default=[3000, 2000, 2000], metavar=("TRAIN", "VALID", "TEST"),
                    help="simulations generated per split (advanced; --n-train etc. select prefixes of them)")
    tn.add_argument("--data-seed", type=_nonneg_int, default=None,
                    help="root seed of the simulations (default: 43 with the egnn stream, 0 with split)")
    tn.add_argument("--data-stream", choices=("split", "egnn"), default="egnn",
                    help="random stream of the initial conditions: egnn (the original EGNN generator's stream; with "
                         "the default seed 43 the published nbody_small data set, see `equiframe data nbody --help`) "
                         "or split (ours, one generator per split: independent data sets for other seeds)")
    tn.add_argument("--egnn-npy", default=None, metavar="DIR", help="train on the original EGNN .npy files in DIR")
    tn.add_argument("--no-diagnostics", action="store_true", help="skip the final equivariance / rotation diagnostics")
    tn.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    tn.set_defaults(func=_cmd_train)

    # eval
    ev = sub.add_parser("eval", help="evaluate a run directory or checkpoint (or every run under a directory)",
                        formatter_class=_Formatter)
    ev.add_argument("path", help="run directory (…/seed0), checkpoint.pt, or a directory of runs")
    ev.add_argument("--split", choices=("train", "valid", "test"), default="test", help="split to evaluate")
    ev.add_argument("--which", choices=("best", "last"), default="best", help="best-validation or last weights")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    ev.add_argument("--batch-size", type=_positive_int, default=None, help="evaluation batch size")
    ev.add_argument("--diagnostics", action="store_true", help="also measure equivariance and MSE vs rotation")
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.set_defaults(func=_cmd_eval)

    # report
    rp = sub.add_parser("report", help="Markdown table of all results under a runs directory (mean ± std over seeds)",
                        formatter_class=_Formatter)
    rp.add_argument("root", nargs="?", default="results", help="results root (the committed results; training writes to runs/)")
    rp.add_argument("--out", default=None, help="report path (default: ROOT/report.md)")
    rp.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    rp.set_defaults(func=_cmd_report)

    # experiments that register their own sub-commands
    for module in ("graphs", "normals"):
        try:
            mod = importlib.import_module(f"equiframe.experiments.{module}")
        except ImportError as err:  # an optional dependency is missing: the command explains itself
            missing = sub.add_parser(module, help=f"(unavailable: {err})")
            missing.set_defaults(func=_unavailable(module, err))
            continue
        mod.add_cli(sub)

    # demo
    demo = sub.add_parser("demo", help="run the main demonstration on a small built-in budget and write its report",
                          formatter_class=_Formatter)
    demo.add_argument("--out", default="reports/demo", help="output directory")
    demo.add_argument("--seed", type=_nonneg_int, default=0, help="random seed")
    demo.add_argument("--quick", action="store_true", help="a tiny budget (seconds; for tests)")
    demo.add_argument("--no-pointnet", action="store_true", help="skip the FA-on-PointNet section")
    demo.add_argument("--data-root", default=None, help="cache root of the generated data")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as err:  # OSError: missing / unwritable paths (FileNotFoundError...)
        if os.environ.get("EQUIFRAME_DEBUG"):
            raise
        print(f"equiframe {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("equiframe: interrupted (a training run resumes from its last checkpoint with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
