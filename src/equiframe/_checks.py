"""Argument checks shared across the library: an integer bound and a finite real bound, each raising
``TypeError`` for a value of the wrong type and ``ValueError`` for one out of range, naming the argument.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["check_int", "check_real"]


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
