"""The one multi-layer perceptron helper of the package's models."""

from __future__ import annotations

import numbers
from typing import Callable, Sequence

from torch import nn

__all__ = ["mlp"]


def mlp(sizes: Sequence[int], activation: Callable[[], nn.Module] = nn.ReLU, *,
        last_activation: bool = False) -> nn.Sequential:
    r"""Linear layers of widths ``sizes`` with ``activation()`` between them (and after the last one when
    ``last_activation``): ``Linear(s_0, s_1), act, Linear(s_1, s_2), ..., Linear(s_{L-1}, s_L)[, act]``.

    The layers are built in order, so a seeded ``torch.manual_seed`` gives the same initial weights as the
    same ``nn.Sequential`` written out, and its state-dict keys are ``"0.weight"``, ``"0.bias"``,
    ``"2.weight"``, ... (activations hold no parameters).

    Args:
        sizes: input width followed by the width of every linear layer (at least two numbers).
        activation: a module factory, e.g. ``nn.ReLU`` (default) or ``nn.SiLU``.
        last_activation: also apply the activation after the last linear layer.

    Shapes:
        ``[*, sizes[0]]`` -> ``[*, sizes[-1]]``

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from equiframe.nn.mlp import mlp
        >>> net = mlp([4, 16, 16, 3], nn.SiLU)
        >>> net(torch.randn(10, 4)).shape
        torch.Size([10, 3])
        >>> list(net.state_dict())
        ['0.weight', '0.bias', '2.weight', '2.bias', '4.weight', '4.bias']
    """
    sizes = list(sizes)
    if len(sizes) < 2 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in sizes):
        raise ValueError(f"sizes: expected at least two positive integers, got {sizes!r}")
    if not callable(activation):
        raise TypeError(f"activation: expected a module factory such as nn.ReLU, got {activation!r}")
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_activation:
            layers.append(activation())
    return nn.Sequential(*layers)
