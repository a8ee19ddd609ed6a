"""The command line of the normal-estimation experiment: ``equiframe data|train|eval|estimate|report normals``
(and the older ``equiframe normals build|train|estimate|table``), built from one set of argument functions."""

from __future__ import annotations

import argparse
import json
from typing import get_args

import numpy as np
import torch

from ..cli import _nonneg_float, _nonneg_int, _positive_float as _pos_float, _positive_int as _pos_int
from ..cli import add_lr_schedule_arguments
from ..datasets.shapes import ShapesConfig, build_shapes
from ..models.normals import NORMALS_MODELS, FAMode, FrameKind, GlobalOutput, Head, LocalFeatures
from .normals import (
    _DTYPES,
    SETTINGS,
    NormalsExperiment,
    NormalsExperimentConfig,
    Source,
    collect_runs,
    evaluate_model,
    normal_metrics,
    plot_error_histograms,
    plot_predictions,
    results_table,
)

__all__ = ["ESTIMATE_DESCRIPTION", "add_build_arguments", "add_cli", "add_data_arguments", "add_data_cli",
           "add_estimate_arguments", "add_shape_arguments", "add_table_arguments", "add_train_arguments"]


# ---------------------------------------------------------------------------------------------- CLI
def add_shape_arguments(q: argparse.ArgumentParser) -> None:
    """Add the data-set options of ``normals build`` / ``train normals`` to ``q``."""
    q.add_argument("--n-train", type=_pos_int, default=8000)
    q.add_argument("--n-valid", type=_pos_int, default=500)
    q.add_argument("--n-test", type=_pos_int, default=2000)
    q.add_argument("--n-points", type=_pos_int, default=512)
    q.add_argument("--noise", type=_nonneg_float, default=0.0)
    q.add_argument("--data-seed", type=_nonneg_int, default=0)
    q.add_argument("--root", default=None, help="shapes cache root")
    q.add_argument("--source", choices=get_args(Source), default="procedural",
                   help="procedural shapes or the CAD-kernel parts (`equiframe data normals --source cad`)")
    q.add_argument("--cad-parts", type=_pos_int, default=2000, help="parts of the built CAD data set")
    q.add_argument("--cad-points", type=_pos_int, default=10000, help="samples per part of the built CAD data set")


def add_build_arguments(b: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options and handler of ``equiframe normals build`` (generate and cache the procedural shapes)."""
    add_shape_arguments(b)
    b.add_argument("--workers", type=_pos_int, default=None)
    b.set_defaults(func=_cmd_build, cache_dirs=("root",))  # paths: checked by equiframe.cli.check_paths
    return b


def add_train_arguments(t: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options and handler of ``equiframe train normals`` (= ``equiframe normals train``)."""
    add_shape_arguments(t)
    t.add_argument("--model", choices=NORMALS_MODELS, default="fa-pointnet")
    t.add_argument("--setting", choices=SETTINGS, default="i/i")
    t.add_argument("--epochs", type=_pos_int, default=100)
    t.add_argument("--batch-size", type=_pos_int, default=32)
    t.add_argument("--lr", type=_pos_float, default=1e-3)
    add_lr_schedule_arguments(t)
    t.add_argument("--seeds", type=_nonneg_int, nargs="+", default=[0])
    t.add_argument("--name", default=None,
                   help="run directory name (default: from the model and its options, e.g. fa-local-pointnet-k32_i-i)")
    t.add_argument("--hidden", type=_pos_int, default=64)
    t.add_argument("--k", type=_pos_int, default=20)
    t.add_argument("--fa-mode", choices=get_args(FAMode), default="all")
    t.add_argument("--features", choices=get_args(LocalFeatures), default="pca",
                   help="typed local-geometry input of the global models (pointnet, dgcnn, fa-*)")
    t.add_argument("--output", choices=get_args(GlobalOutput), default="line",
                   help="output head of the global models")
    t.add_argument("--head", choices=get_args(Head), default=None, help="normal head of the local-frame models")
    t.add_argument("--local-k", type=_pos_int, default=16)
    t.add_argument("--local-context-k", type=_pos_int, default=None,
                   help="fa-local-pointnet: neighbours of a multi-scale context branch (> --local-k)")
    t.add_argument("--local-vote", type=_pos_int, default=None,
                   help="fa-local-pointnet: start the plane fit from a learned vote among the planes through the "
                        "point and pairs of its N nearest neighbours (N < --local-k)")
    t.add_argument("--train-queries", type=_pos_int, default=None,
                   help="fa-local-pointnet: train on this many random query points per cloud (their neighbourhoods "
                        "in the whole cloud); evaluation uses whole clouds")
    t.add_argument("--train-noise-max", type=_nonneg_float, default=0.0,
                   help="with --train-queries: random Gaussian noise U(0, this) x bbox diagonal per training cloud")
    t.add_argument("--train-clean-share", type=_nonneg_float, default=0.0,
                   help="with --train-noise-max: share of the training clouds left clean (0..1)")
    t.add_argument("--train-densities", type=_pos_int, nargs="+", default=[],
                   help="with --train-queries (cad): random point count per training cloud")
    t.add_argument("--cad-max-points", type=_pos_int, default=2048, help="stored samples per part held in memory")
    t.add_argument("--hidden-reps", default="32x0n+8x1n")
    t.add_argument("--tf-frames", choices=get_args(FrameKind), default="pca")
    t.add_argument("--tf-local-layers", type=_pos_int, default=2)
    t.add_argument("--tf-ratios", type=_pos_float, nargs="*", default=[0.25, 0.25])
    t.add_argument("--tf-no-pool-edges", action="store_true",
                   help="TF-PointNet++ (plane-fit head): do not give the head the neighbour-pooled edge features")
    t.add_argument("--tf-transport-edges", action="store_true",
                   help="TF-PointNet++ (plane-fit head): edge features include the transported sender features")
    t.add_argument("--dgcnn-layers", type=_pos_int, default=3)
    t.add_argument("--dtype", choices=tuple(_DTYPES), default="float32")
    t.add_argument("--out", default="runs")
    t.add_argument("--threads", type=_pos_int, default=None)
    mode = t.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue existing runs from their last checkpoint (an error where a run has none)")
    mode.add_argument("--resume-or-start", action="store_true",
                      help="continue runs that have a checkpoint, start the others")
    mode.add_argument("--overwrite", action="store_true")
    t.add_argument("--checkpoint-every", type=_pos_int, default=None,
                   help="epochs between checkpoints (default min(10, epochs))")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_cmd_train, cache_dirs=("root",), output_dirs=("out",))
    return t


ESTIMATE_DESCRIPTION = ("Reads PLY (ASCII or binary vertices), .xyz (PCPNet) / .txt / .pts rows, or samples "
                        "OFF / OBJ / STL meshes; writes PLY (binary unless --ascii) or text rows x y z nx ny nz.")


def add_estimate_arguments(e: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options and handler of ``equiframe estimate normals`` (= ``equiframe normals estimate``)."""
    e.add_argument("input", help="point cloud or mesh file")
    e.add_argument("-o", "--output", required=True, help="output .ply / .xyz / .txt / .pts")
    e.add_argument("--model", default="fa-local-pointnet-cad", help="shipped model name")
    e.add_argument("--orient", action="store_true", help="orient the normals consistently (spanning-tree propagation)")
    e.add_argument("--orient-k", type=_pos_int, default=10, help="neighbours of the orientation graph")
    e.add_argument("--samples", type=_pos_int, default=100_000, help="points sampled from a mesh input")
    e.add_argument("--chunk-size", type=_pos_int, default=4096, help="points per network call (bounds the memory)")
    e.add_argument("--ascii", action="store_true", help="write ASCII PLY")
    e.add_argument("--threads", type=_pos_int, default=None)
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=_cmd_estimate, output_files=("output",))
    return e


def add_table_arguments(tb: argparse.ArgumentParser, *, positional: bool = False) -> argparse.ArgumentParser:
    """Options and handler of ``equiframe report normals [ROOT]`` (= ``equiframe normals table [--out ROOT]``):
    the runs root is ``--out`` in the older spelling, the positional ``root`` (like ``equiframe report``) in the
    new one; both land in ``args.out``."""
    if positional:
        tb.add_argument("out", nargs="?", default="runs", metavar="root", help="runs root")
    else:
        tb.add_argument("--out", default="runs", help="runs root")
    tb.set_defaults(func=_cmd_table, existing_dirs=(("out", "root" if positional else "--out"),))
    return tb


def add_cli(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Register the older spellings ``normals build | train | estimate | table`` on an argparse sub-parser
    collection, from the same argument functions as the new grammar (``equiframe train normals``,
    ``equiframe estimate normals``, ``equiframe report normals``; ``normals build`` has no new spelling beyond
    ``equiframe data normals --source procedural``, which builds the default shapes).

    ``normals build`` generates (caches) the meshes; ``normals train --model M --setting S`` trains
    with :func:`equiframe.train.train` and writes prediction / histogram plots into the run directory;
    ``normals table`` prints the Markdown table of all runs under ``--out``.
    """
    p = subparsers.add_parser("normals", help="(older spelling) normals train = train normals, normals estimate = "
                                              "estimate normals, normals table = report normals; normals build")
    sub = p.add_subparsers(dest="normals_command", required=True, metavar="COMMAND")
    add_build_arguments(sub.add_parser("build", help="generate (and cache) the shapes with the training sizes "
                                                     "(see also `equiframe data normals --source procedural`)"))
    add_train_arguments(sub.add_parser("train", help="alias of `equiframe train normals`: train a model in one setting"))
    add_estimate_arguments(sub.add_parser(
        "estimate", help="alias of `equiframe estimate normals`: estimate the normals of a point cloud with the "
                         "shipped pretrained model", description=ESTIMATE_DESCRIPTION))
    add_table_arguments(sub.add_parser("table", help="alias of `equiframe report normals`: Markdown table of the "
                                                     "normals runs under --out"))
    return p


def add_data_arguments(d: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options and handler of ``equiframe data normals``."""
    d.add_argument("--source", choices=("cad", "procedural"), default="cad")
    d.add_argument("--parts", type=_pos_int, default=2000, help="parts (cad) / training shapes (procedural)")
    d.add_argument("--points", type=_pos_int, default=10000, help="exact samples stored per part (cad)")
    d.add_argument("--seed", type=_nonneg_int, default=0)
    d.add_argument("--shard-size", type=_pos_int, default=16, help="parts per shard file (cad)")
    d.add_argument("--workers", type=_pos_int, default=1, help="worker processes (the data do not depend on it)")
    d.add_argument("--root", default=None, help="cache root (default: $EQUIFRAME_CACHE or ~/.cache/equiframe)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=_cmd_data_normals, cache_dirs=("root",))
    return d


def add_data_cli(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Register ``data normals --source cad|procedural`` (the data sets of normal estimation)."""
    return add_data_arguments(subparsers.add_parser(
        "normals", help="normal-estimation data: CAD-kernel parts (exact normals) or procedural shapes",
        description="--source cad: random parametric parts built with OpenCASCADE (build123d; pip install "
                    "'equiframe[cad]'), points sampled area-uniformly on the B-rep faces with the exact surface "
                    "normals; sharded, SHA-256 checked, resumable (run the same command again). --source procedural: "
                    "the boolean-of-primitives meshes of `equiframe normals build`."))


def _cmd_data_normals(args: argparse.Namespace) -> int:
    if args.source == "procedural":
        cfg = ShapesConfig(n_train=args.parts, n_test=max(1, args.parts // 4), seed=args.seed)
        print(build_shapes(cfg, args.root, workers=args.workers, progress=not args.quiet))
        return 0
    from ..datasets.cad import CADConfig, build_cad, load_cad  # noqa: PLC0415

    cfg = CADConfig(n_parts=args.parts, n_points=args.points, seed=args.seed, shard_size=args.shard_size)
    directory = build_cad(cfg, args.root, workers=args.workers, progress=not args.quiet)
    a = load_cad(cfg, args.root, max_points=1)
    fam = np.bincount(a["family"].astype(np.int64))
    print(f"{directory}: {len(a['index'])} parts, {cfg.n_points} points each; "
          f"{float(a['seconds'].mean()):.2f} s per part (build + sample, one process); "
          f"faces per part median {int(np.median(a['n_faces']))}; families {fam.tolist()}")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    cfg = ShapesConfig(n_train=args.n_train + args.n_valid, n_test=args.n_test, n_points=args.n_points,
                       seed=args.data_seed, noise=args.noise)
    print(build_shapes(cfg, args.root, workers=args.workers))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from ..train import OptimConfig, TrainConfig, train  # noqa: PLC0415

    cfg = NormalsExperimentConfig(
        model=args.model, setting=args.setting, n_train=args.n_train, n_valid=args.n_valid, n_test=args.n_test,
        n_points=args.n_points, noise=args.noise, data_seed=args.data_seed, hidden=args.hidden, k=args.k,
        fa_mode=args.fa_mode, features=args.features, output=args.output, head=args.head, local_k=args.local_k,
        local_context_k=args.local_context_k, local_vote=args.local_vote, train_queries=args.train_queries, train_noise_max=args.train_noise_max,
        train_clean_share=args.train_clean_share,
        train_densities=tuple(args.train_densities), cad_max_points=args.cad_max_points,
        hidden_reps=args.hidden_reps, tf_frames=args.tf_frames, tf_local_layers=args.tf_local_layers,
        tf_ratios=tuple(args.tf_ratios), tf_pool_edges=False if args.tf_no_pool_edges else None,
        tf_edge_transport=True if args.tf_transport_edges else None, dgcnn_layers=args.dgcnn_layers, dtype=args.dtype, data_root=args.root,
        diagnostic_samples=args.n_test, source=args.source, cad_parts=args.cad_parts, cad_points=args.cad_points)
    exp = NormalsExperiment(cfg)
    if args.model == "knn-pca":  # no parameters: evaluate only
        res = {rot: evaluate_model(exp.build_model(), exp.test_dataset(rot)) for rot in ("none", "so3")}
        print(json.dumps(res, indent=2))
        return 0
    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optim=OptimConfig(lr=args.lr, schedule=args.lr_schedule,
                                                                                  min_lr_ratio=args.min_lr_ratio,
                                                                                  anneal_from=args.anneal_from),
                     seeds=tuple(args.seeds), out=args.out, resume=args.resume or args.resume_or_start,
                     require_checkpoint=args.resume, overwrite=args.overwrite, name=args.name,
                     quiet=args.quiet, threads=args.threads, checkpoint_every=args.checkpoint_every or max(1, min(10, args.epochs)))
    for r in train(exp, tc):
        from ..train import load_checkpoint  # noqa: PLC0415

        model = exp.build_model()
        model.load_state_dict(load_checkpoint(r.run_dir / "checkpoint.pt")["best"]["state"])
        ds = exp.dataset("test")
        plot_predictions(model, ds, r.run_dir / "predictions.png", indices=tuple(range(min(3, len(ds)))),
                         dtype=exp.torch_dtype, title=exp.run_name)
        ev = evaluate_model(model, ds, dtype=exp.torch_dtype, return_errors=True)
        plot_error_histograms({exp.run_name: ev["errors"]}, r.run_dir / "errors_hist.png")
        print(f"{r.run_dir}: test 1-cos^2 {r.metrics['test']['one_minus_cos2']:.4f}, "
              f"angle {r.metrics['test']['angle_deg']:.2f} deg")
    return 0


def _cmd_estimate(args: argparse.Namespace) -> int:
    import time  # noqa: PLC0415

    from ..datasets.mesh_io import read_point_cloud, write_point_cloud  # noqa: PLC0415
    from ..pretrained.normals import normal_estimator  # noqa: PLC0415

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    cloud = read_point_cloud(args.input, n_samples=args.samples)
    est = normal_estimator(args.model, chunk_size=args.chunk_size)
    normals = est(cloud.pos, orient=args.orient, orient_k=args.orient_k, progress=not args.quiet)
    out = write_point_cloud(args.output, cloud.pos, normals, binary=not args.ascii)
    msg = f"{out}: {len(cloud.pos)} points, normals by {est.meta.get('name', args.model)}"
    msg += " (oriented)" if args.orient else " (unoriented)"
    if cloud.normal is not None and len(cloud.normal) == len(normals):
        m = normal_metrics(torch.from_numpy(normals).double(), torch.from_numpy(cloud.normal).double())
        msg += f"; vs the file's normals: 1-cos^2 {m['one_minus_cos2']:.4f}, RMS angle {m['rms_angle_deg']:.2f} deg"
    print(msg + f" [{time.perf_counter() - t0:.1f} s]")
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    runs = collect_runs(args.out)
    if not runs:
        raise FileNotFoundError(f"root: no normals runs (metrics.json of `equiframe train normals`) under {args.out}")
    print(results_table(runs))
    return 0
