"""The frame constructor object for S_n (node permutations of graphs), over :mod:`equiframe.frames.graph`.

:class:`LaplacianFrames` holds the options (mode, sampling, the component order) and calls the public
functions of :mod:`equiframe.frames.graph` (:func:`~equiframe.frames.graph.laplacian_frame`,
:func:`~equiframe.frames.graph.shuffle_components`, :func:`~equiframe.frames.graph.frame_elements`).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from ..groups import SymmetricGroup
from .base import EvalMode, Frames, Mode, check_choice
from .graph import FrameElements, PermutationFrame, frame_elements, laplacian_frame, shuffle_components

__all__ = ["LaplacianFrames", "Components"]

Components = Literal["sorted", "shuffled"]


class LaplacianFrames(Frames):
    """Spectral S_n frames of graphs (Laplacian eigenvectors, ties grouped with a tolerance).

    The frame of a graph is every node order consistent with the spectral sort (all orders inside
    tied blocks); see :func:`~equiframe.frames.graph.laplacian_frame`. Frames up to ``max_size``
    elements are averaged exactly in mode ``"all"``, larger ones sampled (``n_samples`` elements).

    Args:
        mode: ``"all"`` (exact up to ``max_size``, ``n_samples`` samples above), ``"canonical"`` (one
            element), ``"stochastic"`` (``n_samples`` samples per graph while training).
        n_samples, eval_mode, generator, max_size: see :class:`~equiframe.frames.Frames`.
        components: ``"shuffled"`` (stochastic mode only): while sampling in training, every graph's
            connected components come in a uniformly random order
            (:func:`~equiframe.frames.graph.shuffle_components`); ``"sorted"``: the spectral frame throughout.

    Example:
        >>> import torch
        >>> from torch_geometric.utils import to_undirected
        >>> edge_index = to_undirected(torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]]))   # a path on 5 nodes
        >>> batch = torch.zeros(5, dtype=torch.long)
        >>> frames = LaplacianFrames(mode="stochastic", n_samples=1, generator=torch.Generator().manual_seed(0))
        >>> frame, elements = frames(edge_index, batch, training=True)

    Shapes:
        edge_index: ``[2, E]``, batch: ``[N]``, x: ``[N, F]`` -> (PermutationFrame, FrameElements)
    """

    group = SymmetricGroup()

    def __init__(
        self,
        mode: Mode = "all",
        *,
        n_samples: int = 1,
        eval_mode: EvalMode = "all",
        generator: torch.Generator | None = None,
        max_size: int = 1024,
        components: Components = "sorted",
    ):
        super().__init__(mode, n_samples=n_samples, eval_mode=eval_mode, generator=generator, max_size=max_size)
        self.components = check_choice(components, "components", get_args(Components))
        if components != "sorted" and mode != "stochastic":
            raise ValueError("components: 'shuffled' acts on sampled training frames; use mode='stochastic'")

    def __call__(
        self,
        edge_index: Tensor,
        batch: Tensor,
        x: Tensor | None = None,
        *,
        training: bool = False,
        num_graphs: int | None = None,
        weight_dtype: torch.dtype = torch.float32,
    ) -> tuple[PermutationFrame, FrameElements]:
        """The frames of a batch of graphs and the elements to average over in the current mode.

        Args:
            edge_index: the edges of the batch.
            batch: sorted graph index of every node.
            x: optional node features used as extra sort keys.
            training: whether the model is training (stochastic mode samples then).
            num_graphs: number of graphs (default ``batch.max() + 1``).
            weight_dtype: dtype of the averaging weights.
        """
        B = num_graphs if num_graphs is not None else (int(batch.max()) + 1 if batch.numel() else 0)
        frame = laplacian_frame(edge_index, num_nodes=batch.shape[0], batch=batch, x=x, num_graphs=B)
        mode = self.current_mode(training)
        if self.components == "shuffled" and mode == "stochastic":
            frame = shuffle_components(frame, edge_index, self.generator)
        limit = self.max_size if mode == "all" else 1
        k = 1 if mode == "canonical" else self.n_samples
        elements = frame_elements(frame, limit=limit, k=k, generator=self.generator, weight_dtype=weight_dtype)
        return frame, elements

    def _options_repr(self) -> str:
        extra = f", components={self.components!r}" if self.components != "sorted" else ""
        return super()._options_repr() + extra
