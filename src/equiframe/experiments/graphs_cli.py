"""The command line of the graph experiments: ``equiframe train graphs`` / ``eval graphs-separation`` (and the
older ``equiframe graphs separate|classify``), built from one set of argument functions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, get_args

import torch

from ..cli import _nonneg_float, _nonneg_int, _positive_float as _pos_float, _positive_int as _pos_int
from ..cli import add_run_mode_arguments
from ..models.graphs import GRAPH_MODEL_NAMES, ComponentOrder, FrameKind
from .graphs import _DTYPES, CLASSIFY_DATASETS, SEPARATION_DATASETS, NodeFeatures, SelectMetric, classify, separate

__all__ = ["add_classify_arguments", "add_cli", "add_separate_arguments"]


def _fold(s: str) -> int:
    v = _nonneg_int(s)
    if v > 4:
        raise argparse.ArgumentTypeError(f"expected a fold 0..4, got {s!r}")
    return v


def _cmd_separate(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    res = separate(args.dataset, args.model, args.seeds, threshold=args.threshold, frame=args.frame,
                   max_size=args.max_size, n_samples=args.n_samples, hidden=args.hidden, layers=args.layers,
                   out_dim=args.out_dim, dtype=args.dtype, batch_size=args.batch_size, data_dir=args.data_dir,
                   false_positives=not args.no_false_positives, progress=not args.quiet, gin_eps=args.gin_eps,
                   node_features=args.node_features)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        fp = "n/a" if res["fp_rate_mean"] is None else f"{res['fp_rate_mean']:.4f} (any seed {res['fp_rate_any_seed']:.4f})"
        print(f"{res['dataset']} {res['model']}{'/' + res['frame'] if res['frame'] else ''}: "
              f"{res['undistinguished']} of {res['pairs']} pairs never distinguished "
              f"(calibrated {res['undistinguished_calibrated']}); false-positive rate {fp}; "
              f"{res['seeds']} seeds, {res['wall_time_s']:.0f} s")
        if res["averaging"].get("frame"):
            a = res["averaging"]
            print(f"averaging: {a['exact_graphs']} graphs exact, {a['sampled_graphs']} sampled ({a['n_samples']} "
                  f"sample(s)); max_size {a['max_size']}; median log10|F| {a['median_log10_frame_size']:.2f}")
    return 0


def _cmd_classify(args: argparse.Namespace) -> int:
    res = classify(args.dataset, args.model, args.epochs, frame=args.frame, train_frame=args.train_frame,
                   select=args.select, train_components=args.train_components, seeds=args.seeds, folds=args.folds, lr=args.lr, weight_decay=args.weight_decay, batch_size=args.batch_size, hidden=args.hidden,
                   layers=args.layers, max_size=args.max_size, n_samples=args.n_samples, dtype=args.dtype, data_dir=args.data_dir,
                   out=args.out, eval_every=args.eval_every, overwrite=args.overwrite,
                   resume=args.resume or args.resume_or_start, require_checkpoint=args.resume,
                   quiet=args.quiet, threads=args.threads, device=args.device)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        fr = ""
        if res["frame"]:
            fr = "/" + res["frame"] + (f" (trained on {res['train_frame']})" if res["train_frame"] != res["frame"] else "")
            fr += " (components shuffled in training)" if res["train_components"] == "shuffled" else ""
        print(f"{res['dataset']} {res['model']}{fr}: test accuracy "
              f"{100 * res['test_accuracy_mean']:.1f} ± {100 * res['test_accuracy_std']:.1f} % "
              f"({len(res['runs'])} runs, {res['epochs']} epochs, {res['wall_time_s']:.0f} s)")
    return 0


def _add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=GRAPH_MODEL_NAMES, required=True, help="model")
    p.add_argument("--frame", choices=get_args(FrameKind), default="spectral",
                   help="FA frames: spectral (paper) or canonical (individualisation-refinement keys)")
    p.add_argument("--n-samples", type=_pos_int, default=1, help="frame samples per graph above --max-size")
    p.add_argument("--hidden", type=_pos_int, default=64, help="width")
    p.add_argument("--layers", type=_pos_int, default=3, help="layers")
    p.add_argument("--dtype", choices=tuple(_DTYPES), default="float32", help="precision")
    p.add_argument("--data-dir", default=None, help="directory of exp_graphsat.npz / sr251256.g6 "
                   "(None: $EQUIFRAME_DATA)")
    p.add_argument("--threads", type=_pos_int, default=None, help="torch intra-op threads (None: unchanged)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def add_separate_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of the separation test (``equiframe eval graphs-separation`` = ``equiframe graphs
    separate``) to ``p`` and set its handler. Returns ``p``."""
    p.add_argument("--dataset", choices=SEPARATION_DATASETS, required=True, help="data set")
    _add_common_arguments(p)
    p.add_argument("--seeds", type=_pos_int, default=None, help="random initialisations (None: 100; SR25: 10)")
    p.add_argument("--threshold", type=_nonneg_float, default=1e-3, help="L1 distance above which a pair is distinguished")
    p.add_argument("--max-size", type=_pos_int, default=None,
                   help="largest frame averaged exactly (None: 40320 on graph8c, 1024 else)")
    p.add_argument("--out-dim", type=_pos_int, default=10, help="embedding size")
    p.add_argument("--batch-size", type=_pos_int, default=None, help="graphs per forward pass (None: 2048 for FA on graph8c, 4096 else)")
    p.add_argument("--gin-eps", type=float, default=0.0, help="initial GIN epsilon (FA-GIN+ID, GIN)")
    p.add_argument("--node-features", choices=get_args(NodeFeatures), default="default",
                   help="node features: the data set's (EXP node types, else ones) or with the degree appended")
    p.add_argument("--no-false-positives", action="store_true", help="skip the relabelled-copy check")
    p.set_defaults(func=_cmd_separate, existing_dirs=("data_dir",))  # paths: checked by equiframe.cli.check_paths
    return p


def add_classify_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of graph classification training (``equiframe train graphs`` = ``equiframe graphs
    classify``) to ``p`` and set its handler. Returns ``p``."""
    p.add_argument("--dataset", choices=CLASSIFY_DATASETS, required=True, help="data set")
    _add_common_arguments(p)
    p.add_argument("--train-frame", choices=get_args(FrameKind), default=None,
                   help="FA frames while training (None: --frame); '--frame canonical --train-frame spectral' "
                        "trains on sampled spectral orders and evaluates with the exact canonical frame")
    p.add_argument("--select", choices=get_args(SelectMetric), default="error",
                   help="validation metric of model selection: error (first epoch of the lowest error) or loss "
                        "(lowest cross-entropy, as the FA paper's code)")
    p.add_argument("--train-components", choices=get_args(ComponentOrder), default="sorted",
                   help="FA models: 'shuffled' samples training orders with each graph's connected components in "
                        "random order (position-reading backbones then see every component at every offset)")
    p.add_argument("--epochs", type=_pos_int, default=199, help="epochs")
    p.add_argument("--seeds", type=_nonneg_int, nargs="+", default=[0], help="seeds")
    p.add_argument("--folds", type=_fold, nargs="+", default=None, help="CSL folds 0..4 (None: all 5)")
    p.add_argument("--lr", type=_pos_float, default=1e-3, help="Adam learning rate")
    p.add_argument("--weight-decay", type=_nonneg_float, default=0.0, help="Adam weight decay")
    p.add_argument("--batch-size", type=_pos_int, default=32, help="batch size")
    p.add_argument("--max-size", type=_pos_int, default=1024, help="evaluation: largest frame averaged exactly")
    p.add_argument("--eval-every", type=_pos_int, default=1, help="validate every N epochs")
    p.add_argument("--out", default="runs", help="results root")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    add_run_mode_arguments(p, overwrite_help="start existing runs again")
    p.set_defaults(func=_cmd_classify, existing_dirs=("data_dir",), output_dirs=("out",))
    return p


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register the older spellings ``graphs separate`` and ``graphs classify`` on an ``argparse`` sub-parser set
    (aliases of ``equiframe eval graphs-separation`` and ``equiframe train graphs``: the same argument functions,
    :func:`add_separate_arguments` and :func:`add_classify_arguments`).

    Each sub-command sets ``func`` (``args.func(args) -> int``), like the other commands of
    :mod:`equiframe.cli`. Returns the ``graphs`` parser.
    """
    fmt = argparse.ArgumentDefaultsHelpFormatter
    gp = subparsers.add_parser("graphs", formatter_class=fmt,
                               help="(older spelling) graphs separate = eval graphs-separation, "
                                    "graphs classify = train graphs")
    gsub = gp.add_subparsers(dest="graphs_command", required=True, metavar="TASK")
    add_separate_arguments(gsub.add_parser(
        "separate", formatter_class=fmt,
        help="alias of `equiframe eval graphs-separation`: count pairs of non-isomorphic graphs that untrained "
             "models never distinguish"))
    add_classify_arguments(gsub.add_parser(
        "classify", formatter_class=fmt,
        help="alias of `equiframe train graphs`: train and test on EXP-classify or CSL (5-fold CV)"))
    return gp
