"""Reports of training runs: a Markdown table (mean ± std over seeds) with the published numbers beside
ours, plus plots (learning curves, error vs rotation angle).

Runs are the directories written by :mod:`equiframe.train` (``<root>/<experiment>/<run>/seed<k>/``):
finished runs have a ``metrics.json``; runs still in progress (or killed) only a checkpoint and a
``curves.csv``, and are listed with their progress. The committed results live in ``results/`` (the same
layout, without checkpoints); training writes to ``runs/``.

The plots need matplotlib (``pip install "equiframe[plots]"``); the tables do not.

Example:
    >>> path = write_report("results", "results/report.md", plots=False)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from ._checks import check_not_dir

__all__ = ["collect_runs", "summarize", "render_markdown", "plot_learning_curves", "plot_rotation", "save_figure", "write_report"]


def _read_curves(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / "curves.csv"
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append({k: float(v) for k, v in row.items() if v not in ("", None)})
    return rows


def collect_runs(root: str | os.PathLike) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """All runs under ``root``: ``(finished, in_progress)``.

    A finished run is its ``metrics.json`` plus ``"path"`` (its ``"run"`` is the name of the run directory); a
    run in progress is
    ``{"path", "experiment", "run", "seed", "epochs_done", "best_val", "best_epoch", "time_s"}`` from its
    ``curves.csv``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root: {root} is not a directory")
    finished, running = [], []
    for ckpt_dir in sorted({p.parent for p in root.rglob("checkpoint.pt")} | {p.parent for p in root.rglob("metrics.json")}):
        mpath = ckpt_dir / "metrics.json"
        if mpath.is_file():
            try:
                m = json.loads(mpath.read_text())
            except json.JSONDecodeError:
                continue
            if not isinstance(m, dict) or "test" not in m:
                continue
            m["path"] = str(ckpt_dir)
            if ckpt_dir.name.startswith("seed") and ckpt_dir.parent != root:
                # the run directory names the run (a benchmark may have trained it under another name)
                m["run"] = ckpt_dir.parent.name
            finished.append(m)
            continue
        curves = _read_curves(ckpt_dir)
        vals = [(r.get(k), r["epoch"]) for r in curves for k in r if k.startswith("val_") and r.get(k) is not None]
        best = min(vals) if vals else (math.nan, 0)
        parts = ckpt_dir.relative_to(root).parts
        running.append({
            "path": str(ckpt_dir), "experiment": parts[-3] if len(parts) >= 3 else "?",
            "run": parts[-2] if len(parts) >= 2 else "?", "seed": parts[-1].removeprefix("seed"),
            "epochs_done": int(curves[-1]["epoch"]) if curves else 0, "best_val": best[0], "best_epoch": int(best[1]),
            "time_s": curves[-1].get("time_s", math.nan) if curves else math.nan,
        })
    return finished, running


def _budget(m: dict[str, Any]) -> str:
    desc = m.get("describe", {})
    parts = [f"{k}={v}" for k, v in desc.items() if k.startswith("n_train")]
    if desc.get("data") not in (None, "generated-seed0"):
        parts.append(f"data {desc['data']}")
    parts.append(f"{m.get('epochs_planned', '?')} ep")
    tc = m.get("train_config", {})
    if "optim" in tc:
        o = tc["optim"]
        lr = f"lr {o['lr']:g}"
        if o.get("schedule", "constant") != "constant":  # e.g. "lr 0.001, cosine from epoch 1400 to 1e-05"
            lr += f", {o['schedule']}" + (f" from epoch {o['anneal_from']}" if o.get("anneal_from") else "")
            lr += f" to {o['lr'] * o.get('min_lr_ratio', 0.0):g}"
        parts.append(lr)
    return ", ".join(parts)


def summarize(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group finished runs by (experiment, run name, budget) and aggregate over seeds.

    Returns rows ``{"experiment", "run", "budget", "metric", "n_seeds", "seeds", "mean", "std", "values",
    "best_epochs", "epochs_run", "wall_time_s", "time_per_epoch_s", "equivariance_error", "published",
    "n_params"}`` sorted by experiment and mean.
    """
    runs = list(runs)
    for i, m in enumerate(runs):
        if not isinstance(m, Mapping) or not {"experiment", "run"} <= m.keys():
            raise ValueError(f"runs: item {i} is not the metrics of a run (metrics.json: experiment, run, ...)")
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for m in runs:
        groups[(m["experiment"], m["run"], _budget(m))].append(m)
    rows = []
    for (exp, run, budget), ms in groups.items():
        ms = sorted(ms, key=lambda m: m["seed"])
        metric = _metric_of(exp, ms[0])
        values = [float(m["test"][metric]) for m in ms]
        eq = [m.get("diagnostics", {}).get("equivariance_error_f64") for m in ms]
        eq = [e for e in eq if e is not None]
        rows.append({
            "experiment": exp, "run": run, "budget": budget, "metric": metric, "n_seeds": len(ms),
            "seeds": [m["seed"] for m in ms], "values": values, "mean": statistics.mean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "best_epochs": [m["best_epoch"] for m in ms], "epochs_run": [m["epochs_run"] for m in ms],
            "wall_time_s": statistics.mean(float(m["wall_time_s"]) for m in ms),
            "time_per_epoch_s": statistics.mean(float(m.get("time_per_epoch_s", math.nan)) for m in ms),
            "equivariance_error": max(eq) if eq else None,
            "published": _published_of(exp, run, ms[0]),
            "n_params": ms[0].get("n_params"), "device": ms[0].get("device"),
            "world_size": ms[0].get("world_size", 1),
        })
    rows.sort(key=lambda r: (r["experiment"], r["mean"]))
    return rows


def _experiment_class(name: str):
    try:
        from .experiments import get_experiment_class  # noqa: PLC0415

        return get_experiment_class(name)
    except (ImportError, ValueError):
        return None


def _metric_of(exp: str, m: dict[str, Any]) -> str:
    cls = _experiment_class(exp)
    if cls is not None and cls.metric in m["test"]:
        return cls.metric
    return sorted(m["test"])[0]


def _published_of(exp: str, run: str, m: dict[str, Any]) -> float | None:
    """The published number of a run: what its experiment's ``describe()`` recorded (by model), else looked up
    by the run name without its data set (``@...``) and frame-mode suffixes."""
    desc = m.get("describe", {})
    if "published" in desc:
        return desc["published"]
    return _published(exp).get(run.split("@")[0].split("-canonical")[0].split("-stochastic")[0])


def _published(exp: str) -> dict[str, float]:
    cls = _experiment_class(exp)
    return dict(getattr(cls, "published", {}) or {}) if cls is not None else {}


def _fmt(v: float | None, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def _fmt_time(s: float) -> str:
    if math.isnan(s):
        return "–"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def render_markdown(
    rows: Sequence[dict[str, Any]],
    running: Sequence[dict[str, Any]] = (),
    *,
    title: str = "equiframe results",
    plots: Sequence[tuple[str, str]] = (),
    preamble: str = "",
) -> str:
    """The Markdown report: one table per experiment, the published references, runs in progress, plots."""
    if isinstance(rows, (str, bytes)) or not all(isinstance(r, Mapping) for r in rows):
        raise TypeError("rows: expected a sequence of summary rows (dicts, from summarize())")
    lines = [f"# {title}", ""]
    if preamble:
        lines += [preamble.rstrip(), ""]
    for exp in sorted({r["experiment"] for r in rows} | {r["experiment"] for r in running}):
        er = [r for r in rows if r["experiment"] == exp]
        lines += [f"## {exp}", ""]
        if er:
            metric = er[0]["metric"]
            lines += [
                f"| model | budget | test {metric} (mean ± std) | seeds | published | best epoch | epochs run | "
                "time / epoch | wall time / seed | equivariance error (f64) | params |",
                "|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for r in er:
                std = f" ± {r['std']:.4f}" if r["n_seeds"] > 1 else ""
                eq = "–" if r["equivariance_error"] is None else f"{r['equivariance_error']:.1e}"
                lines.append(
                    f"| {r['run']} | {r['budget']} | {r['mean']:.4f}{std} | {r['n_seeds']} | {_fmt(r['published'])} | "
                    f"{', '.join(map(str, r['best_epochs']))} | {', '.join(map(str, r['epochs_run']))} | "
                    f"{_fmt_time(r['time_per_epoch_s'])} | {_fmt_time(r['wall_time_s'])} | {eq} | {r['n_params'] or '–'} |"
                )
            lines.append("")
            devices = sorted({f"{r['device']} × {r['world_size']}" for r in er})
            lines.append(f"Devices (device × processes): {', '.join(devices)}. Test {metric} is measured with the "
                         "weights of the best validation epoch.")
            lines.append("")
        cls = _experiment_class(exp)
        refs = getattr(cls, "references", {}) if cls is not None else {}
        if refs:
            lines.append("Published test " + (er[0]["metric"] if er else "metric") + " (full protocol): "
                         + ", ".join(f"{k} {v:g}" for k, v in refs.items()) + ".")
            lines.append("")
        rr = [r for r in running if r["experiment"] == exp]
        if rr:
            lines += ["Runs in progress or interrupted (resume with `--resume`):", "",
                      "| run | seed | epochs done | best val (epoch) | time | path |", "|---|---|---|---|---|---|"]
            for r in rr:
                lines.append(f"| {r['run']} | {r['seed']} | {r['epochs_done']} | {_fmt(r['best_val'])} "
                             f"({r['best_epoch']}) | {_fmt_time(r['time_s'])} | `{r['path']}` |")
            lines.append("")
    if not rows and not running:
        lines += ["No runs found.", ""]
    for caption, rel in plots:
        lines += [f"![{caption}]({rel})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _pyplot():
    """matplotlib's pyplot on the Agg backend, imported on first use (an optional dependency)."""
    try:
        import matplotlib  # noqa: PLC0415
    except ImportError as err:
        raise ImportError(
            "plots need matplotlib, an optional dependency: pip install 'equiframe[plots]' "
            "(or write the tables only: write_report(..., plots=False), `equiframe report --no-plots`)"
        ) from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _colors(names: Sequence[str]) -> dict[str, Any]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    return {n: cmap(i % 10) for i, n in enumerate(sorted(set(names)))}


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Lay out a matplotlib figure tightly, write it to ``path`` (parent directories created) and close it.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if not (hasattr(fig, "savefig") and hasattr(fig, "tight_layout")):
        raise TypeError(f"fig: expected a matplotlib Figure, got {type(fig).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        _pyplot().close(fig)
        raise TypeError(f"path: expected a file path, got {type(path).__name__}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
    return path


def plot_learning_curves(runs: Sequence[dict[str, Any]], path: str | os.PathLike, *, metric: str = "mse") -> Path | None:
    """Validation metric (solid) and training loss (dotted) against epochs, one colour per model."""
    check_not_dir("path", path)
    plt = _pyplot()
    curves = [(m["run"], _read_curves(Path(m["path"]))) for m in runs]
    curves = [(n, c) for n, c in curves if c]
    if not curves:
        return None
    colors = _colors([n for n, _ in curves])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    seen = set()
    for name, c in curves:
        ev = [r for r in c if f"val_{metric}" in r]
        ax.plot([r["epoch"] for r in ev], [r[f"val_{metric}"] for r in ev], color=colors[name],
                label=f"{name} (valid)" if name not in seen else None)
        ax.plot([r["epoch"] for r in c], [r["train_loss"] for r in c], color=colors[name], ls=":", alpha=0.7)
        seen.add(name)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{metric} (solid: validation, dotted: training)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_rotation(runs: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """Test metric against the rotation angle of the test inputs (mean over seeds per model)."""
    check_not_dir("path", path)
    plt = _pyplot()
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in runs:
        rot = m.get("diagnostics", {}).get("rotation")
        if rot:
            by[m["run"]].append(rot)
    if not by:
        return None
    colors = _colors(list(by))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    axis = "z"
    for name, rots in sorted(by.items()):
        angles = rots[0]["angles_deg"]
        axis = rots[0].get("axis", axis)
        mse = [statistics.mean(r["mse"][i] for r in rots) for i in range(len(angles))]
        ax.plot(angles, mse, marker="o", ms=3, color=colors[name], label=name)
    ax.set_yscale("log")
    ax.set_xlabel(f"rotation of the test inputs about {axis} (degrees)")
    ax.set_ylabel("test MSE")
    ax.set_xticks(range(0, 361, 60))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_report(
    root: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    plots: bool = True,
    title: str = "equiframe results",
    preamble: str = "",
) -> Path:
    """Collect the runs under ``root`` and write the Markdown report (and PNG plots next to it).

    Returns:
        the report's path (default ``root/report.md``).
    """
    root = Path(root)
    finished, running = collect_runs(root)
    out = Path(out) if out is not None else root / "report.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = summarize(finished)
    figs: list[tuple[str, str]] = []
    if plots and finished:
        stem = out.stem
        for exp in sorted({m["experiment"] for m in finished}):
            ms = [m for m in finished if m["experiment"] == exp]
            metric = _metric_of(exp, ms[0])
            p = plot_learning_curves(ms, out.parent / f"{stem}_{exp}_curves.png", metric=metric)
            if p is not None:
                figs.append((f"{exp}: learning curves", p.name))
            p = plot_rotation(ms, out.parent / f"{stem}_{exp}_rotation.png")
            if p is not None:
                figs.append((f"{exp}: test error vs rotation angle", p.name))
    text = render_markdown(rows, running, title=title, plots=figs, preamble=preamble)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    return out
