"""The ``equiframe`` command line.

::

    equiframe data nbody [--root DIR]                      generate (cached) + statistics of the n-body data
    equiframe data normals --source cad --parts 2000       CAD-kernel parts with exact normals (resumable)
    equiframe data graphs exp|sr25                         download EXP / SR25 (checksummed, resumable)
    equiframe train nbody --model fa-gnn --epochs 100 --seeds 0 1 2 [--out runs] [--resume] ...
    equiframe train graphs --dataset csl --model fa-gin-id   graph classification
    equiframe train normals --model fa-pointnet --setting i/so3
    equiframe eval nbody|graphs|normals [RUNS] [--split test]   re-evaluate the best checkpoints of runs
    equiframe eval graphs-separation --dataset exp --model fa-mlp   the separation test (untrained models)
    equiframe estimate normals FILE -o OUT                 normals with the shipped pretrained model
    equiframe report [runs] [--out report.md]              Markdown table of all results (mean ± std)
    equiframe report normals [runs]                        the normals table
    equiframe demo [--out reports/demo]                    the main demonstration and its report

One grammar, ``VERB EXPERIMENT [options]``; the older spellings stay as aliases built from the same argument
functions (``eval PATH``, ``data fetch``, ``graphs separate|classify``, ``normals build|train|estimate|table``;
see ``equiframe --help`` and docs/cli.md). Mistakes (a missing file, an unwritable ``--out``, a bad value, a
strict ``--resume`` without a checkpoint) end with one line ``equiframe COMMAND: error: ...`` on stderr and
exit code 2.

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
from typing import Any, Callable

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
        tf_frame_vectors=args.tf_frames, tf_position_updates=args.tf_position_updates,
        tf_edge_features=args.tf_edge_features, tf_train_frames=args.tf_train_frames,
        dtype=args.dtype, data_root=args.data_root, egnn_npy=args.egnn_npy,
    )
    return NBodyExperiment(cfg)


def _train_config_from_args(args: argparse.Namespace, lr: float):
    from .train import OptimConfig, TrainConfig  # noqa: PLC0415

    return TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size,
        optim=OptimConfig(lr=lr, weight_decay=args.weight_decay, grad_clip=args.grad_clip, schedule=args.lr_schedule,
                          min_lr_ratio=args.min_lr_ratio, anneal_from=args.anneal_from),
        seeds=tuple(args.seeds), eval_every=args.eval_every, patience=args.patience,
        checkpoint_every=args.checkpoint_every, eval_batch_size=args.eval_batch_size, device=args.device,
        num_workers=args.num_workers, out=args.out, name=args.name, resume=args.resume or args.resume_or_start,
        require_checkpoint=args.resume, overwrite=args.overwrite, quiet=args.quiet,
        diagnostics=not args.no_diagnostics, threads=args.threads, compile=args.compile,
    )


def _check_out_dir(out: str, flag: str = "--out") -> None:
    """``--out`` must be (or be creatable as) a writable directory: one line, not a traceback at the first save."""
    path = Path(out)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"{flag}: {probe} is a file, not a directory")
    _check_writable(probe, flag)


def _check_writable(directory: Path, flag: str) -> None:
    """``directory`` (existing) accepts new files: permission bits (``os.access``) and a real probe, an anonymous
    temporary file that leaves nothing behind (root ignores the bits; read-only file systems do not)."""
    import tempfile  # noqa: PLC0415

    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"{flag}: {directory} is not writable")
    try:
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as err:
        raise ValueError(f"{flag}: {directory} is not writable ({err.strerror or err})") from None


def _entries(args: argparse.Namespace, kind: str):
    """``(value, label)`` of the path options a command declares as ``kind`` (its ``set_defaults``: a tuple of
    attribute names, or of ``(attribute, label)`` pairs for positionals); options left unset are skipped."""
    for entry in getattr(args, kind, ()) or ():
        attr, label = (entry, f"--{entry.replace('_', '-')}") if isinstance(entry, str) else entry
        value = getattr(args, attr, None)
        if value is not None:
            yield Path(value), label


def check_paths(args: argparse.Namespace) -> None:
    """Check the path options of a parsed command before it does any work (an error names the option).

    A command declares them with ``set_defaults``: ``output_dirs`` (directories it creates and writes:
    writable, not a file), ``cache_dirs`` (not a file; created when missing, so a missing one must be
    creatable; an existing read-only cache may still be read), ``existing_dirs`` (read: must exist and be a
    directory), ``output_files`` (files it writes: not a directory, in an existing writable
    directory), ``output_paths`` (files it writes, creating their directory: not a directory, the directory
    writable or creatable).

    Raises:
        FileNotFoundError: an existing directory is missing.
        ValueError: a file where a directory is expected (or the reverse), or an unwritable location.
    """
    for path, label in _entries(args, "output_dirs"):
        _check_out_dir(str(path), label)
    for path, label in _entries(args, "cache_dirs"):
        if path.exists() and not path.is_dir():
            raise ValueError(f"{label}: {path} is a file, not a directory")
        if not path.exists():  # to be created: its nearest existing parent must take it (a read-only cache that
            _check_out_dir(str(path), label)  # exists may still be read)
    for path, label in _entries(args, "existing_dirs"):
        if not path.exists():
            raise FileNotFoundError(f"{label}: {path} does not exist")
        if not path.is_dir():
            raise ValueError(f"{label}: {path} is a file, not a directory")
    for path, label in _entries(args, "output_files"):
        if path.is_dir():
            raise ValueError(f"{label}: {path} is a directory, not a file")
        parent = path.parent
        if not parent.is_dir():
            raise FileNotFoundError(f"{label}: the directory {parent} does not exist")
        _check_writable(parent, label)
    for path, label in _entries(args, "output_paths"):
        if path.is_dir():
            raise ValueError(f"{label}: {path} is a directory, not a file")
        _check_out_dir(str(path.parent), label)


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
        raise FileNotFoundError(f"path: {path} does not exist (expected a run directory or a checkpoint.pt, or an "
                                f"experiment: eval nbody|graphs|normals [RUNS], eval graphs-separation ...)")
    targets = [path]
    if path.is_dir() and not (path / "checkpoint.pt").exists():
        targets = sorted(p.parent for p in path.rglob("checkpoint.pt"))
        if not targets:
            raise FileNotFoundError(f"path: no checkpoint.pt under {path}")
    expected = getattr(args, "expect_experiment", None)  # `eval EXPERIMENT RUNS` (not the older `eval PATH`)
    if expected is not None:
        from .train import load_checkpoint  # noqa: PLC0415

        for t in targets:
            name = load_checkpoint(t)["experiment"]["name"]
            if name != expected:
                raise ValueError(f"path: {t} is a {name} run, not {expected} (equiframe eval {name} {t})")
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
def _number_type(convert: Callable[[str], Any], accept: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``convert(text)`` if that succeeds and ``accept``s the value, else an
    ``ArgumentTypeError`` ``expected <expected>, got '<text>'``."""

    def parse(text: str) -> Any:
        try:
            v = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(v):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return v

    return parse


_positive_int = _number_type(int, lambda v: v >= 1, "a positive integer")
_nonneg_int = _number_type(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number_type(float, lambda v: v > 0 and v != float("inf"), "a positive number")  # not NaN, inf
_nonneg_float = _number_type(float, lambda v: v >= 0 and v != float("inf"), "a number >= 0")


def add_run_mode_arguments(p: argparse.ArgumentParser, *, overwrite_help: str | None = None) -> None:
    """The mutually exclusive ``--resume`` / ``--resume-or-start`` / ``--overwrite`` options of the training
    commands (what to do with runs that exist already)."""
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue existing runs from their last checkpoint (an error where a run has none)")
    mode.add_argument("--resume-or-start", action="store_true",
                      help="continue runs that have a checkpoint, start the others")
    mode.add_argument("--overwrite", action="store_true", help=overwrite_help)


def _unavailable(name: str, err: Exception):
    def run(args: argparse.Namespace) -> int:
        print(f"equiframe {name}: unavailable here: {err} (install the extras: pip install 'equiframe[shapes,graphs]')",
              file=sys.stderr)
        return 2

    return run


def add_nbody_data_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options and handler of ``equiframe data nbody``."""
    p.add_argument("--root", default=None, help="cache root (default: $EQUIFRAME_CACHE or ~/.cache/equiframe)")
    p.add_argument("--seed", type=_nonneg_int, default=None,
                    help="root seed of the simulations (default: 43 with the egnn stream, 0 with split)")
    p.add_argument("--stream", choices=("split", "egnn"), default="egnn",
                    help="random stream of the initial conditions: egnn (the original generator's) or split (ours)")
    p.add_argument("--sims", type=_positive_int, nargs=3, default=[3000, 2000, 2000], metavar=("TRAIN", "VALID", "TEST"),
                    help="simulations generated per split (the first k of a split do not depend on its size)")
    p.add_argument("--egnn-npy", default=None, metavar="DIR",
                    help="show the statistics of the original EGNN .npy files in DIR instead")
    p.add_argument("--json", action="store_true", help="also print the statistics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_data, cache_dirs=("root",), existing_dirs=("egnn_npy",))
    return p


def add_lr_schedule_arguments(p: argparse.ArgumentParser) -> None:
    """``--lr-schedule`` / ``--min-lr-ratio`` (:class:`~equiframe.train.OptimConfig`)."""
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="learning rate over the epochs: constant, or cosine decay to --min-lr-ratio x lr at --epochs")
    p.add_argument("--min-lr-ratio", type=_nonneg_float, default=0.0,
                   help="final learning rate of the cosine schedule as a fraction of --lr (in [0, 1])")
    p.add_argument("--anneal-from", type=_nonneg_int, default=0, metavar="EPOCH",
                   help="cosine schedule: constant --lr for the first EPOCH epochs, then the decay (a run trained "
                        "at a constant rate resumes with --lr-schedule cosine --anneal-from >= its epoch)")


def add_nbody_train_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options and handler of ``equiframe train nbody``."""
    p.add_argument("--model", choices=_MODELS, required=True, help="model to train")
    p.add_argument("--epochs", type=_positive_int, default=100, help="epochs (the protocol allows up to 10000)")
    p.add_argument("--seeds", type=_nonneg_int, nargs="+", default=[0], help="one run per seed, sequentially")
    p.add_argument("--lr", type=_positive_float, default=None,
                    help="learning rate (default per model: fa-gnn/tf-gnn/linear 1e-3, egnn/gnn 5e-4)")
    p.add_argument("--batch-size", type=_positive_int, default=100, help="global batch size")
    p.add_argument("--weight-decay", type=_nonneg_float, default=1e-12, help="Adam weight decay")
    add_lr_schedule_arguments(p)
    p.add_argument("--grad-clip", type=_positive_float, default=None, help="clip the gradient norm")
    p.add_argument("--n-train", type=_positive_int, default=None, help="training simulations used (a prefix; default: all 3000)")
    p.add_argument("--n-valid", type=_positive_int, default=None, help="validation simulations used (a prefix; default: all 2000)")
    p.add_argument("--n-test", type=_positive_int, default=None, help="test simulations used (a prefix; default: all 2000)")
    p.add_argument("--hidden", type=_positive_int, default=None, help="width (default: 60 GNN/FA-GNN, 64 EGNN/TF-GNN)")
    p.add_argument("--layers", type=_positive_int, default=4, help="message passing layers")
    p.add_argument("--fa-mode", choices=("all", "canonical", "stochastic"), default=None,
                    help="FA-GNN frame mode: all = the full 8-element E(3) frame in training and evaluation; "
                         "stochastic = one sampled element per system (and layer) while training, the full frame "
                         "in evaluation; canonical = one canonical element (default: stochastic for "
                         "--fa-variant layerwise, all for input)")
    p.add_argument("--fa-variant", choices=("input", "layerwise"), default="input",
                    help="FA-GNN: input = the input's frame around the whole GNN; layerwise = frame averaging "
                         "at every layer with latent frames (the FA paper's n-body code)")
    p.add_argument("--hidden-reps", default="32x0n+8x1n", help="TF-GNN hidden feature type")
    p.add_argument("--edge-distances", action="store_true", help="GNN/FA-GNN: add squared distances to edge features")
    p.add_argument("--tf-frames", choices=["learned", "coulomb"], default="learned",
                   help="TF-GNN frame axes after the velocity: learned vectors, or the smoothed Coulomb force then learned")
    p.add_argument("--tf-position-updates", action="store_true",
                   help="TF-GNN: EGNN-style equivariant position updates between layers")
    p.add_argument("--tf-edge-features", default="charge",
                   help="TF-GNN edge features: charge, joined by + with coulomb and/or velocity (e.g. charge+velocity)")
    p.add_argument("--tf-train-frames", choices=["fixed", "flip", "stabilizer"], default="fixed",
                   help="TF-GNN frame randomisation while training (evaluation uses the deterministic frames): "
                        "flip = random sign of the last axis, stabilizer = random O(d-1) of the axes after v")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="data and model precision")
    p.add_argument("--eval-every", type=_positive_int, default=1, help="validate every N epochs")
    p.add_argument("--eval-batch-size", type=_positive_int, default=None, help="evaluation batch size")
    p.add_argument("--patience", type=_positive_int, default=None, help="early stopping: evaluations without improvement")
    p.add_argument("--checkpoint-every", type=_positive_int, default=10, help="checkpoint every N epochs")
    p.add_argument("--out", default="runs", help="results root")
    p.add_argument("--name", default=None, help="run directory name (default: the model, e.g. fa-gnn)")
    add_run_mode_arguments(p, overwrite_help="delete existing runs and start again")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--num-workers", type=_nonneg_int, default=0, help="DataLoader worker processes")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch intra-op threads per process")
    p.add_argument("--compile", action="store_true",
                    help="train through torch.compile (inductor; falls back to eager with a warning when no "
                         "compiler works here; compiling takes about a minute per batch shape on CPU)")
    p.add_argument("--data-root", default=None, help="cache root of the generated data")
    p.add_argument("--sims", type=_positive_int, nargs=3, default=[3000, 2000, 2000], metavar=("TRAIN", "VALID", "TEST"),
                    help="simulations generated per split (advanced; --n-train etc. select prefixes of them)")
    p.add_argument("--data-seed", type=_nonneg_int, default=None,
                    help="root seed of the simulations (default: 43 with the egnn stream, 0 with split)")
    p.add_argument("--data-stream", choices=("split", "egnn"), default="egnn",
                    help="random stream of the initial conditions: egnn (the original EGNN generator's stream; with "
                         "the default seed 43 the published nbody_small data set, see `equiframe data nbody --help`) "
                         "or split (ours, one generator per split: independent data sets for other seeds)")
    p.add_argument("--egnn-npy", default=None, metavar="DIR", help="train on the original EGNN .npy files in DIR")
    p.add_argument("--no-diagnostics", action="store_true", help="skip the final equivariance / rotation diagnostics")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    p.set_defaults(func=_cmd_train, output_dirs=("out",), cache_dirs=("data_root",), existing_dirs=("egnn_npy",))
    return p


def add_eval_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``equiframe eval`` (every experiment: the shared training loop re-evaluates a run)."""
    p.add_argument("--split", choices=("train", "valid", "test"), default="test", help="split to evaluate")
    p.add_argument("--which", choices=("best", "last"), default="best", help="best-validation or last weights")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="evaluation batch size")
    p.add_argument("--diagnostics", action="store_true", help="also measure equivariance and MSE vs rotation")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_eval)
    return p


class _Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes end with one line on stderr, ``PROG: error: MESSAGE (see PROG --help)``,
    and exit code 2 (argparse's usage block is in ``--help``)."""

    def error(self, message: str):  # noqa: D102 - argparse's signature
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _DispatchParser(_Parser):
    """A command whose first argument is an experiment name (the rest is parsed by that experiment's own parser)
    or, in the older spelling, a path (parsed by this parser): ``equiframe eval nbody runs/nbody`` and
    ``equiframe eval runs/nbody`` both work."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.experiments: dict[str, argparse.ArgumentParser] = {}

    def add_experiment(self, name: str, **kwargs) -> argparse.ArgumentParser:
        p = _Parser(prog=f"{self.prog} {name}", formatter_class=_Formatter, **kwargs)
        self.experiments[name] = p
        return p

    def parse_known_args(self, args=None, namespace=None):  # noqa: D102 - argparse's signature
        args = list(sys.argv[1:] if args is None else args)
        if args and args[0] in self.experiments:
            return self.experiments[args[0]].parse_known_args(args[1:], namespace)
        return super().parse_known_args(args, namespace)


def _add_dispatch_parser(sub, name: str, **kwargs) -> _DispatchParser:
    """``sub.add_parser(name, ...)`` creating a :class:`_DispatchParser` (argparse takes the class per action)."""
    cls = sub._parser_class  # noqa: SLF001 - argparse has no per-parser option for it
    sub._parser_class = _DispatchParser  # noqa: SLF001
    try:
        return sub.add_parser(name, formatter_class=_Formatter, **kwargs)
    finally:
        sub._parser_class = cls  # noqa: SLF001


def _optional(module: str, register) -> None:
    """Run ``register(module)`` if ``equiframe.experiments.<module>`` imports (else its commands explain why)."""
    try:
        mod = importlib.import_module(f"equiframe.experiments.{module}")
    except ImportError as err:  # an optional dependency is missing: the command explains itself
        register(None, err)
        return
    register(mod, None)


def _missing(sub, name: str, err: Exception) -> None:
    sub.add_parser(name, help=f"(unavailable: {err})").set_defaults(func=_unavailable(name, err))


def _add_verb(sub: Any, verb: str, *, help: str) -> Any:  # noqa: A002  (argparse's name)
    """Command ``verb`` whose sub-commands are experiments (``equiframe VERB EXPERIMENT``); returns their set."""
    return sub.add_parser(verb, help=help, formatter_class=_Formatter).add_subparsers(
        dest="experiment", required=True, metavar="EXPERIMENT")


def _optional_command(sub: Any, module: str, add: str, *, description_attr: str | None = None,
                      **parser_options: Any) -> None:
    """Sub-command ``module`` of ``sub`` with its options set by ``equiframe.experiments.<module>.<add>`` (and
    its description read from the module's ``description_attr``), or, when that module cannot be imported, a
    command that says why (:func:`_optional`)."""

    def register(mod, err):
        if mod is None:
            _missing(sub, module, err)
            return
        if description_attr is not None:
            parser_options["description"] = getattr(mod, description_attr)
        getattr(mod, add)(sub.add_parser(module, formatter_class=_Formatter, **parser_options))

    _optional(module, register)


GRAMMAR = """\
commands (one grammar: VERB EXPERIMENT [options]; `equiframe VERB EXPERIMENT --help` lists the options):
  equiframe data nbody | normals | graphs exp|sr25     generate (cache) or download a data set
  equiframe train nbody | graphs | normals             train (several seeds, resumable: --resume, --resume-or-start)
  equiframe eval nbody | graphs | normals [RUNS]       re-evaluate trained runs (default RUNS: runs/EXPERIMENT)
  equiframe eval graphs-separation --dataset D ...     the separation test of untrained graph models
  equiframe estimate normals FILE -o OUT               normals of a point cloud with the shipped model
  equiframe report [ROOT] | report normals [ROOT]      Markdown tables of results
  equiframe demo                                       the main demonstration on a small budget

older spellings (aliases, kept for existing scripts):
  equiframe eval PATH             = eval EXPERIMENT PATH (any run directory / checkpoint)
  equiframe data fetch exp|sr25   = data graphs exp|sr25
  equiframe graphs classify ...   = train graphs ...
  equiframe graphs separate ...   = eval graphs-separation ...
  equiframe normals train ...     = train normals ...
  equiframe normals estimate ...  = estimate normals ...
  equiframe normals table --out R = report normals R
  equiframe normals build ...     (the procedural shapes with the training sizes; see data normals)
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``equiframe`` argument parser (one grammar ``VERB EXPERIMENT``; the older spellings are aliases built
    from the same argument functions, so both parse to the same handler and options)."""
    parser = _Parser(
        prog="equiframe",
        description="Frame Averaging and Tensor Frames: make any network invariant/equivariant.\n"
                    "Experiments: nbody (charged particles), graphs (expressive power), normals (point clouds); "
                    "`equiframe demo` runs the n-body benchmark on a small budget.",
        epilog=GRAMMAR, formatter_class=_Formatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_data_commands, _add_train_commands, _add_eval_commands, _add_estimate_commands,
                _add_report_commands, _add_demo_command, _add_aliases):  # in this order (the help lists them so)
        add(sub)
    return parser


def _add_data_commands(sub: Any) -> None:
    """``data EXPERIMENT``: generate or download an experiment's data."""
    from .datasets.fetch import add_cli as _add_fetch_cli  # noqa: PLC0415

    data = sub.add_parser("data", help="generate (and cache) or download the data of an experiment",
                          formatter_class=_Formatter)
    dsub = data.add_subparsers(dest="dataset", required=True, metavar="EXPERIMENT")
    add_nbody_data_arguments(dsub.add_parser(
        "nbody", help="the charged n-body data (EGNN protocol: 3000/2000/2000 simulations)",
        formatter_class=_Formatter,
        description="Generate (and cache) the charged 5-body data set and print its statistics.\n\n"
                    "The default --stream egnn replays the random stream of the original EGNN generator (legacy NumPy "
                    "RandomState, its order of draws); with its default seed 43 it gives the initial conditions "
                    "of the published nbody_small files (generate_dataset.py --num-train 10000 --seed 43 "
                    "--sufix small): the test split's statistics are the published ones (no motion 0.2715, "
                    "x + c v 0.0835 with c = 0.735).",
    ))
    _add_fetch_cli(dsub, "graphs", help="download EXP or SR25 (graph8c, CSL are generated when used)")
    _add_fetch_cli(dsub, "fetch", help="alias of `equiframe data graphs`")

    def data_normals(mod, err):
        if mod is None:
            _missing(dsub, "normals", err)
        else:
            mod.add_data_cli(dsub)

    _optional("normals", data_normals)


def _add_train_commands(sub: Any) -> None:
    """``train EXPERIMENT``: the training commands."""
    tsub = _add_verb(sub, "train", help="train models of an experiment (several seeds; resumable; DDP under torchrun)")
    add_nbody_train_arguments(tsub.add_parser(
        "nbody", formatter_class=_Formatter,
        help="charged n-body: predict positions one time unit ahead",
        description="Train on the charged n-body task (SPEC 4.1 protocol: Adam, batch 100, weight decay 1e-12, "
                    "test MSE at the best validation epoch). Results: OUT/nbody/<model>/seed<k>/ "
                    "(checkpoint.pt, metrics.json, curves.csv, curves.png).\n\n"
                    "Distributed: torchrun --nproc_per_node 2 -m equiframe train nbody ...",
    ))

    _optional_command(tsub, "graphs", "add_classify_arguments",
                      help="graph classification: EXP-classify or CSL (5-fold CV) (older spelling: graphs classify)")
    _optional_command(tsub, "normals", "add_train_arguments",
                      help="point-cloud normal estimation in one setting (older spelling: normals train)")


def _add_eval_commands(sub: Any) -> None:
    """``eval EXPERIMENT|PATH``: re-evaluate runs; ``eval graphs-separation``."""
    ev = _add_dispatch_parser(
        sub, "eval",
        help="re-evaluate trained runs (eval nbody|graphs|normals [RUNS]) or run the graph separation test "
             "(eval graphs-separation)",
        description="equiframe eval EXPERIMENT [RUNS] [options]   (EXPERIMENT: nbody, graphs, normals; RUNS: a run "
                    "directory, checkpoint.pt or a directory of runs, default runs/EXPERIMENT)\n"
                    "equiframe eval graphs-separation --dataset D --model M ...   (untrained models: pairs of "
                    "non-isomorphic graphs never distinguished)\n"
                    "equiframe eval PATH [options]   (older spelling: any run, whatever its experiment)")
    ev.add_argument("path", help="run directory (…/seed0), checkpoint.pt, or a directory of runs")
    add_eval_arguments(ev)
    for name in ("nbody", "graphs", "normals"):
        q = ev.add_experiment(name, description=f"Re-evaluate {name} runs (the best checkpoint by default).")
        q.add_argument("path", nargs="?", default=str(Path("runs") / name),
                       help="run directory (…/seed0), checkpoint.pt, or a directory of runs")
        add_eval_arguments(q).set_defaults(expect_experiment=name)

    def eval_separation(mod, err):
        q = ev.add_experiment("graphs-separation", description="The separation test of untrained graph models "
                                                               "(older spelling: equiframe graphs separate).")
        if mod is None:
            q.set_defaults(func=_unavailable("eval graphs-separation", err))
        else:
            mod.add_separate_arguments(q)

    _optional("graphs", eval_separation)


def _add_estimate_commands(sub: Any) -> None:
    """``estimate normals``: apply a shipped pretrained model."""
    esub = _add_verb(sub, "estimate", help="apply a shipped pretrained model: estimate normals FILE -o OUT")

    _optional_command(esub, "normals", "add_estimate_arguments", description_attr="ESTIMATE_DESCRIPTION",
                      help="normals of a point cloud or mesh with the shipped pretrained model (older spelling: "
                           "normals estimate)")


def _add_report_commands(sub: Any) -> None:
    """``report [ROOT]`` and ``report normals``."""
    rp = _add_dispatch_parser(sub, "report",
                        help="Markdown table of all results under a runs directory (mean ± std over seeds); "
                             "report normals [ROOT]: the normals table",
                        description="equiframe report [ROOT] [--out FILE] [--no-plots]: every experiment's runs\n"
                                    "equiframe report normals [ROOT]: the table of the normals settings "
                                    "(older spelling: normals table --out ROOT)")
    rp.add_argument("root", nargs="?", default="results", help="results root (the committed results; training writes to runs/)")
    rp.add_argument("--out", default=None, help="report path (default: ROOT/report.md)")
    rp.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    rp.set_defaults(func=_cmd_report, output_paths=("out",))

    def report_normals(mod, err):
        q = rp.add_experiment("normals", description="Markdown table of the normals runs under ROOT.")
        if mod is None:
            q.set_defaults(func=_unavailable("report normals", err))
        else:
            mod.add_table_arguments(q, positional=True)

    _optional("normals", report_normals)


def _add_demo_command(sub: Any) -> None:
    """``demo``: the demonstration on a small budget."""
    demo = sub.add_parser("demo", help="run the main demonstration on a small built-in budget and write its report",
                          formatter_class=_Formatter)
    demo.add_argument("--out", default="reports/demo", help="output directory")
    demo.add_argument("--seed", type=_nonneg_int, default=0, help="random seed")
    demo.add_argument("--quick", action="store_true", help="a tiny budget (seconds; for tests)")
    demo.add_argument("--no-pointnet", action="store_true", help="skip the FA-on-PointNet section")
    demo.add_argument("--data-root", default=None, help="cache root of the generated data")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo, output_dirs=("out",), cache_dirs=("data_root",))


def _add_aliases(sub: Any) -> None:
    """The older experiment-specific spellings (aliases built from the same argument functions)."""
    for module in ("graphs", "normals"):
        _optional(module, lambda mod, err, module=module: _missing(sub, module, err) if mod is None
                  else mod.add_cli(sub))


def _one_line(err: BaseException) -> str:
    """The message of an error, on one line: ``ValueError`` / ``OSError`` (the library's argument and path
    errors) as they are, other kinds with their class name and a pointer to the traceback."""
    text = " ".join(str(err).split()) or repr(err)
    if isinstance(err, (ValueError, OSError)):
        return text
    return f"{type(err).__name__}: {text} (EQUIFRAME_DEBUG=1 shows the traceback)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_paths(args)
        return args.func(args)
    except Exception as err:  # noqa: BLE001 - every mistake ends with one line, never a traceback
        if os.environ.get("EQUIFRAME_DEBUG"):
            raise
        print(f"equiframe {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("equiframe: interrupted (a training run resumes from its last checkpoint with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
