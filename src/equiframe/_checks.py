"""Argument checks at the entry of public functions, shared across the library: an integer bound, a finite
real bound, an instance, a tensor (kind, rank, last dimension, finiteness) and a path that must not be a
directory; each raises ``TypeError`` for a value of the wrong type and ``ValueError`` for one out of range,
naming the argument (never an error from deep inside, a silent NaN or a wrong answer).
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["check_instance", "check_int", "check_not_dir", "check_real", "check_tensor"]


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` if it is an integer (Python or NumPy, not ``bool``) with ``value >= minimum``.

    Raises:
        TypeError: ``value`` is not an integer.
        ValueError: ``value < minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected >= {minimum}, got {value}")
    return value


def check_real(name: str, value: object, minimum: float, *, strict: bool) -> float:
    """``value`` if it is a finite real number (not ``bool``) with ``value > minimum`` (``strict``) or
    ``value >= minimum``.

    Raises:
        TypeError: ``value`` is not a real number.
        ValueError: ``value`` is not finite or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__}")
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        op = ">" if strict else ">="
        raise ValueError(f"{name}: expected a finite value {op} {minimum}, got {value}")
    return value


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
