"""Argument checks at the entry of public functions (issue 16: a clear ``TypeError`` / ``ValueError``
naming the argument, never an error from deep inside, a silent NaN or a wrong answer)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["check_instance", "check_not_dir", "check_tensor"]


def check_instance(name: str, value: Any, types: type | tuple[type, ...], what: str | None = None) -> Any:
    """``value`` if it is an instance of ``types``, else ``TypeError`` naming ``name``."""
    if not isinstance(value, types):
        want = what or (types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types))
        raise TypeError(f"{name}: expected {want}, got {type(value).__name__}")
    return value


def check_tensor(name: str, x: Any, *, ndim: int | tuple[int, ...] | None = None, last: int | None = None,
                 floating: bool = False, integer: bool = False, finite: bool = False, nonempty: bool = False
                 ) -> Tensor:
    """``x`` if it is a tensor of the given number of dimensions / last size / kind; finite when asked."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if dims is not None and x.dim() not in dims:
        raise ValueError(f"{name}: expected {' or '.join(map(str, dims))} dimensions, got shape {tuple(x.shape)}")
    if last is not None and (x.dim() == 0 or x.shape[-1] != last):
        raise ValueError(f"{name}: expected a last dimension of size {last}, got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating point tensor, got {x.dtype}")
    if integer and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise TypeError(f"{name}: expected an integer tensor, got {x.dtype}")
    if nonempty and x.numel() == 0:
        raise ValueError(f"{name}: empty (shape {tuple(x.shape)})")
    if finite and x.numel() and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or inf")
    return x


def check_not_dir(name: str, path: str | os.PathLike) -> Path:
    """``path`` as a ``Path`` if it is not an existing directory (a file is expected there)."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{name}: {p} is a directory, not a file")
    return p
