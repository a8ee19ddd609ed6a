"""The :class:`Frame` container shared by every global frame constructor."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Frame"]


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
    """

    R: Tensor
    t: Tensor
    index: Tensor
    weight: Tensor
    num_examples: int
    degenerate: Tensor
    exact: Tensor

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
