"""Shared helpers for the benchmark scripts: alternating timing, machine description, result files."""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from equiframe._machine import machine_description

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    return machine_description()


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def alternate(
    fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1, pause: float = 0.0
) -> dict[str, list[float]]:
    """Time each function once per round, in turn, for ``rounds`` rounds (after ``warmup`` rounds).

    Absolute times on shared machines drift 2-3x; compare per-round ratios (see :func:`ratio`).
    ``pause``: seconds to sleep before each timed call, so that the OpenMP worker threads of the
    previous call have stopped spin-waiting (they otherwise steal a core from a single-threaded
    function timed right after a multi-threaded one).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            if pause:
                time.sleep(pause)
            out[k].append(timed(fn))
    return out


def ratio(times: dict[str, list[float]], a: str, b: str, scale_b: float = 1.0) -> float:
    """Median over rounds of ``time[a] / (scale_b * time[b])``."""
    return statistics.median(x / (scale_b * y) for x, y in zip(times[a], times[b]))


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def write_result(name: str, title: str, body: str, command: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    text = (
        f"## {title}\n\n"
        f"Machine: {machine()}  \n"
        f"Command: `{command}`  \n"
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n{body.strip()}\n"
    )
    path.write_text(text)
    print(text)
    return path


def command_line() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
