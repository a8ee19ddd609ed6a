"""The files of a training run: atomic writes, checkpoints (with the random states that make a
resumed run bitwise equal to an uninterrupted one) and learning curves (CSV and PNG).

Split out of :mod:`equiframe.train`, which re-exports the public names.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from .datasets._cache import _atomic_write  # the one atomic file write
from ._checks import check_instance, check_not_dir

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
CURVES = "curves.csv"
FORMAT_VERSION = 1


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file in the same directory + fsync + ``os.replace``)."""
    check_instance("text", text, str)
    check_not_dir("path", path)
    _atomic_write(Path(path), lambda f: f.write(text), "w")


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically (temporary file + fsync + ``os.replace``)."""
    check_not_dir("path", path)
    _atomic_write(Path(path), lambda f: torch.save(obj, f), "wb")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by the loop (a run directory or the ``checkpoint.pt`` file)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: {path} does not exist (expected a run directory or a {CHECKPOINT} file)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001  (truncated / foreign files)
        raise ValueError(f"checkpoint: cannot read {path}: {err}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "equiframe-run":
        raise ValueError(f"checkpoint: {path} is not an equiframe training checkpoint")
    return ckpt


def _version() -> str:
    try:
        from . import __version__  # noqa: PLC0415

        return __version__
    except ImportError:  # pragma: no cover
        return "unknown"


def _rng_states(model: nn.Module) -> dict[str, Any]:
    gens = {name: m.generator.get_state() for name, m in model.named_modules()
            if isinstance(getattr(m, "generator", None), torch.Generator)}
    out = {"torch": torch.get_rng_state(), "modules": gens}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_states(states: Mapping[str, Any], model: nn.Module) -> None:
    # (checkpoints written before the loop kept its own torch stream also hold Python's and NumPy's global
    # states; the loop draws from neither, and leaves them alone)
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):
            torch.cuda.set_rng_state_all(states["cuda"])
    mods = dict(model.named_modules())
    for name, st in states.get("modules", {}).items():
        if name in mods and isinstance(getattr(mods[name], "generator", None), torch.Generator):
            mods[name].generator.set_state(st)


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _write_curves(run_dir: Path, history: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for row in history:
        for k in row:
            if k not in keys:
                keys.append(k)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, restval="")
    writer.writeheader()
    for row in history:
        writer.writerow(row)
    atomic_write_text(run_dir / CURVES, buf.getvalue())


def _plot_curves(run_dir: Path, history: list[dict[str, Any]], metric: str, title: str) -> None:
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return
    if not history:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot([r["epoch"] for r in history], [r["train_loss"] for r in history], label="train loss")
    ev = [r for r in history if f"val_{metric}" in r]
    ax.plot([r["epoch"] for r in ev], [r[f"val_{metric}"] for r in ev], label=f"valid {metric}", marker="." if len(ev) < 30 else None)
    ax.set_xlabel("epoch")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _atomic_write(run_dir / "curves.png", lambda f: fig.savefig(f, dpi=110, format="png"), "wb")
    plt.close(fig)
