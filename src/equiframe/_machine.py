"""One-line description of the machine a result was measured on (for result tables and reports)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

__all__ = ["cpu_name", "machine_description"]


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s ``model name`` where it exists, else :mod:`platform`'s guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "?"


def machine_description(*, python: bool = True) -> str:
    """``"<cpu>; <n> cores; torch <version>; <threads> threads[; Python <version>]"``."""
    s = f"{cpu_name()}; {os.cpu_count()} cores; torch {torch.__version__}; {torch.get_num_threads()} threads"
    return s + (f"; Python {platform.python_version()}" if python else "")
