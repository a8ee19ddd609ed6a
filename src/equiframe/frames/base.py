"""The :class:`Frame` container shared by every global frame constructor, and :class:`Frames`, the
base of the frame constructor objects (:class:`~equiframe.frames.PCAFrames`,
:class:`~equiframe.frames.LaplacianFrames`) that :class:`~equiframe.FrameAveraging` takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

__all__ = ["Frame", "Frames", "Mode", "EvalMode"]

Mode = Literal["all", "canonical", "stochastic"]
"""``"all"``: the full frame; ``"canonical"``: the smallest equivariant frame (one element on generic
inputs); ``"stochastic"``: ``n_samples`` elements drawn per example (training), ``eval_mode`` in ``eval()``."""

EvalMode = Literal["all", "canonical"]


def check_positive_int(value, name: str) -> int:
    """``value`` as a positive ``int``, or a ``ValueError``/``TypeError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return value


def check_choice(value, name: str, choices: tuple) -> str:
    """``value`` if it is one of ``choices``, else a ``ValueError`` naming ``name``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def all_finite(x: Tensor) -> bool:
    """Whether ``x`` has no NaN/inf: one float64 sum (a finite sum proves it for float32/16 input, whose
    sums cannot overflow in float64), an element-wise check only when the sum is not finite."""
    if x.numel() == 0:
        return True
    if x.dtype != torch.float64 and bool(torch.isfinite(x.sum(dtype=torch.float64))):
        return True
    return bool(torch.isfinite(x).all())


def check_generator(generator) -> "torch.Generator | None":
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    return generator


class Frames:
    """Base class of the frame constructors: a group, a mode and the sampling options.

    A ``Frames`` object is called on an input and returns that input's frame; it holds no state
    besides its options (and the ``generator`` of stochastic modes). Subclasses set :attr:`group`.

    Attributes:
        mode: the mode used in training (and always, unless it is ``"stochastic"``).
        eval_mode: the mode used in ``eval()`` when ``mode`` is ``"stochastic"``.
        n_samples: elements drawn per example in stochastic mode.
        generator: the ``torch.Generator`` of stochastic sampling (None: torch's default).
        max_size: largest frame enumerated exactly; larger (symmetric) frames are sampled.
    """

    group: object

    def __init__(
        self,
        mode: Mode = "all",
        *,
        n_samples: int = 1,
        eval_mode: EvalMode = "all",
        generator: torch.Generator | None = None,
        max_size: int = 1024,
    ):
        self.mode = check_choice(mode, "mode", get_args(Mode))
        self.eval_mode = check_choice(eval_mode, "eval_mode", get_args(EvalMode))
        self.n_samples = check_positive_int(n_samples, "n_samples")
        self.generator = check_generator(generator)
        self.max_size = check_positive_int(max_size, "max_size")

    def current_mode(self, training: bool) -> str:
        """The mode in effect: :attr:`mode`, or :attr:`eval_mode` when not training in stochastic mode."""
        return self.mode if (training or self.mode != "stochastic") else self.eval_mode

    def _options_repr(self) -> str:
        extra = f", n_samples={self.n_samples}, eval_mode={self.eval_mode!r}" if self.mode == "stochastic" else ""
        return f"group={str(self.group)!r}, mode={self.mode!r}{extra}, max_size={self.max_size}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._options_repr()})"


@dataclass(frozen=True)
class Frame:
    """A weighted set of frame elements for each example of a batch, stored flat.

    Frame element ``m`` belongs to example ``index[m]`` and is ``(R[m], t[m])``: ``R`` has the
    frame axes as rows, local coordinates are ``R (x - t)``. Averages use ``weight`` (they sum to 1
    per example). Elements of one example are contiguous and examples appear in order.

    Attributes:
        R: ``[M, d, d]`` orthogonal matrices.
        t: ``[M, d]`` translations (zeros for O(d)/SO(d)), kept in float64 so that clouds far
            from the origin keep the precision of their input when centred.
        index: ``[M]`` example of each element (sorted).
        weight: ``[M]`` averaging weights.
        num_examples: ``B``.
        degenerate: ``[B]`` bool, examples whose spectrum had (near-)repeated eigenvalues, handled
            by the robust point-tuple construction.
        exact: ``[B]`` bool, False where the frame was sampled (stochastic mode, or a symmetric
            input whose frame exceeded ``max_size``): averages are then equivariant in distribution only.
        example_t: ``[B, d]`` float64, the translation shared by all elements of each example, when the
            constructor knows it (PCA frames); None: :meth:`example_translation` checks ``t``.
    """

    R: Tensor
    t: Tensor
    index: Tensor
    weight: Tensor
    num_examples: int
    degenerate: Tensor
    exact: Tensor
    example_t: "Tensor | None" = None

    @property
    def dim(self) -> int:
        return self.R.shape[-1]

    @property
    def sizes(self) -> Tensor:
        """``[B]`` number of elements per example."""
        return torch.bincount(self.index, minlength=self.num_examples)

    def __len__(self) -> int:
        return self.R.shape[0]

    @property
    def uniform_size(self) -> int | None:
        """The common number of elements per example, or None if sizes differ."""
        M, B = len(self), self.num_examples
        if B == 0 or M % B:
            return None
        k = M // B
        return k if bool((self.index == torch.arange(B, device=self.index.device).repeat_interleave(k)).all()) else None

    def example_translation(self) -> Tensor | None:
        """``[B, d]`` if every element of an example shares its translation (PCA frames), else None."""
        if self.example_t is not None:
            return self.example_t
        sizes = self.sizes
        if bool((sizes == 0).any()):
            return None
        first = sizes.cumsum(0) - sizes  # elements are sorted by example
        te = self.t[first]
        return te if torch.equal(te[self.index], self.t) else None

    def average(self, values: Tensor, weighted: bool = True) -> Tensor:
        """Weighted average of per-element ``values [M, *]`` into ``[B, *]``."""
        v = values * self.weight.to(values.dtype).reshape(-1, *([1] * (values.dim() - 1))) if weighted else values
        k = self.uniform_size
        if k is not None:
            return v.reshape(self.num_examples, k, *values.shape[1:]).sum(1)
        out = values.new_zeros(self.num_examples, *values.shape[1:])
        return out.index_add_(0, self.index, v)
