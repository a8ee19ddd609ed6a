"""TFGraph: one graph's edges, frames and positions, validated once and cached for every layer of a pass."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from ...reps import TensorReps
from ..tf_transport import ReceiverLayout, receiver_layout
from .checks import _check_device, _check_edge_index, _check_features, _check_pos, _check_tensor, _pair, check_frames
from .geometry import local_edge_geometry

__all__ = ["PairTensor", "TFGraph"]

PairTensor = tuple[Tensor, Tensor]


class TFGraph:
    r"""One graph in tensor-frame form, shared by every tensor-frame layer of a forward pass.

    Validates the edges, frames and positions once and caches, lazily and per dtype, what each layer
    would otherwise recompute: the receiver layout of the edges (:func:`~equiframe.nn.tf_transport.
    receiver_layout`), the local edge geometry :math:`[R_i (x_j - x_i), |x_j - x_i|]`, and the per-receiver
    representation matrices :math:`R_i^{\otimes p}` (with :math:`\det R_i`, :math:`R_i x_i`) used by the
    transport. The per-edge relative rotations :math:`R_i R_j^\top` are never formed: the transport goes
    through the global frame (:math:`\rho(R_i R_j^\top) f_j = \rho(R_i)\,\rho(R_j^\top) f_j`).

    Pass it instead of ``edge_index`` to :class:`TFConv` and :class:`~equiframe.nn.tf_conv.TensorFrameConv`
    (``frames``/``pos`` then come from the graph). The cache lives on this object, never on a module.
    Build one per forward pass: the cached tensors carry the autograd history of ``frames``/``pos``, so
    a graph must not be reused across optimiser steps when those require gradients.

    Example:
        >>> import torch
        >>> from torch_geometric.nn import GCNConv
        >>> from equiframe.geometry import knn_graph
        >>> from equiframe.frames import random_local_frames
        >>> from equiframe.nn import TFConv, TFGraph
        >>> gen = torch.Generator().manual_seed(0)
        >>> pos, x = torch.randn(12, 3, generator=gen), torch.randn(12, 7, generator=gen)
        >>> edge_index, frames = knn_graph(pos, k=3), random_local_frames(12, 3, generator=gen)
        >>> conv1 = TFConv(GCNConv(7, 7), "1x0n+2x1n", "1x0n+2x1n", dim=3)
        >>> conv2 = TFConv(GCNConv(7, 7), "1x0n+2x1n", "1x0n+2x1n", dim=3)
        >>> g = TFGraph(edge_index, frames, pos)
        >>> h = conv1(x, g)        # computes the layout, geometry and matrices
        >>> h = conv2(h, g)        # reuses them
        >>> tuple(h.shape)
        (12, 7)

    Args:
        edge_index: ``[2, E]`` (row 0 = source ``j``, row 1 = receiver ``i``).
        frames: node frames ``[N, d, d]`` (rows = axes), or a ``(source, target)`` pair for bipartite graphs.
        pos: node positions ``[N, d]`` (or a pair); needed for edge geometry and ``pos``-typed features.

    Shapes:
        edge_index: ``[2, E]``; frames: ``[N, d, d]`` or ``([N_src, d, d], [N_dst, d, d])``;
        pos: ``[N, d]`` or a pair.
    """

    def __init__(self, edge_index: Tensor, frames: "Tensor | PairTensor", pos: "Tensor | PairTensor | None" = None):
        f_src, f_dst, homogeneous = _pair(frames, "frames")
        name = "frames" if homogeneous else "frames[0]"
        f_src = _check_tensor(f_src, name)
        if f_src.dim() != 3 or f_src.shape[-1] != f_src.shape[-2] or f_src.shape[-1] < 1:
            raise ValueError(f"{name}: expected shape [N, d, d], got {tuple(f_src.shape)}")
        d = int(f_src.shape[-1])
        raw_pos = _pair(pos, "pos")[:2] if pos is not None else (None, None)
        _check_device(name, f_src, ("frames[1]", f_dst), ("pos" if homogeneous else "pos[0]", raw_pos[0]),
                      ("pos[1]", raw_pos[1]), ("edge_index", edge_index))
        f_src = check_frames(f_src, None, d, name)
        f_dst = f_src if homogeneous else check_frames(f_dst, None, d, "frames[1]")
        n_src, n_dst = int(f_src.shape[0]), int(f_dst.shape[0])
        p_src = p_dst = None
        if pos is not None:
            p_src, p_dst, homo_p = _pair(pos, "pos")
            if homo_p != homogeneous:
                raise ValueError("pos: pass a (source, target) pair exactly when frames is a pair")
            p_src = _check_pos(p_src, n_src, d, "pos" if homogeneous else "pos[0]")
            p_dst = p_src if homogeneous else _check_pos(p_dst, n_dst, d, "pos[1]")
        edge_index = _check_edge_index(edge_index, n_src, n_dst)
        self.edge_index = edge_index
        self.src, self.dst = edge_index[0], edge_index[1]
        self.homogeneous = homogeneous
        self.dim, self.n_src, self.n_dst = d, n_src, n_dst
        self._frames = (f_src, f_dst)
        self._pos = (p_src, p_dst)
        self._layout: ReceiverLayout | None = None
        self.cache: dict = {}  # lazily computed tensors, keyed by (what, ..., dtype)

    @property
    def num_edges(self) -> int:
        return int(self.src.shape[0])

    @property
    def has_pos(self) -> bool:
        return self._pos[0] is not None

    @property
    def layout(self) -> ReceiverLayout:
        """The receiver layout of the edges (computed once)."""
        if self._layout is None:
            self._layout = receiver_layout(self.src, self.dst, self.n_dst)
        return self._layout

    def _cast_pair(self, name: str, pair: tuple, dtype: torch.dtype | None) -> tuple:
        """``pair`` (sender, receiver tensors) in ``dtype``, cast once and cached (one cast when homogeneous)."""
        a, b = pair
        if a is None or dtype is None or a.dtype == dtype:
            return pair
        key = (name, dtype)
        if key not in self.cache:
            ca = a.to(dtype)
            self.cache[key] = (ca, ca if self.homogeneous else b.to(dtype))
        return self.cache[key]

    def frames(self, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        """``(frames_src, frames_dst)`` in ``dtype`` (the same tensor twice for a homogeneous graph)."""
        return self._cast_pair("frames", self._frames, dtype)

    def pos(self, dtype: torch.dtype | None = None) -> tuple[Tensor | None, Tensor | None]:
        """``(pos_src, pos_dst)`` in ``dtype`` (``(None, None)`` without positions)."""
        return self._cast_pair("pos", self._pos, dtype)

    def geometry(
        self, kind: Literal["rel_dist", "rel", "dist"] = "rel_dist", eps: float = 1e-6, dtype: torch.dtype | None = None
    ) -> Tensor:
        """:func:`local_edge_geometry` of the graph's edges in the receivers' frames (cached).

        Shapes:
            -> ``[E, geometry_dim(d, kind)]``
        """
        if not self.has_pos:
            raise ValueError("pos: edge geometry needs node positions; build the TFGraph with pos=...")
        key = ("geometry", kind, float(eps), dtype)
        if key not in self.cache:
            f_src, f_dst = self.frames(dtype)
            p_src, p_dst = self.pos(dtype)
            self.cache[key] = local_edge_geometry(p_src, p_dst, f_dst, self.src, self.dst, kind, eps,
                                                  layout=self.layout)
        return self.cache[key]

    def __repr__(self) -> str:
        kind = "homogeneous" if self.homogeneous else "bipartite"
        return (f"TFGraph({kind}, n_src={self.n_src}, n_dst={self.n_dst}, num_edges={self.num_edges}, "
                f"dim={self.dim}, pos={self.has_pos})")


def _as_graph(edge_index: "Tensor | TFGraph", frames: Any, pos: Any, dim: int | None = None) -> TFGraph:
    """A :class:`TFGraph` from a layer's ``(edge_index, frames, pos)`` arguments (or the graph itself);
    ``dim``: the layer's space dimension, checked against the frames first (so that a wrong frame shape
    is reported as ``frames``, not as a mismatch of ``pos``)."""
    if isinstance(edge_index, TFGraph):
        if frames is not None or pos is not None:
            raise ValueError("frames: pass frames and pos either through the TFGraph or as arguments, not both")
        return edge_index
    if frames is None:
        raise ValueError("frames: node frames are required (or pass a TFGraph as edge_index)")
    if dim is not None:
        for k, f in enumerate(frames if isinstance(frames, (tuple, list)) else (frames,)):
            if isinstance(f, Tensor) and (f.dim() != 3 or f.shape[-2:] != (dim, dim)):
                name = "frames" if isinstance(frames, Tensor) else f"frames[{k}]"
                raise ValueError(f"{name}: expected shape [N, {dim}, {dim}] (reps of dim {dim}), got {tuple(f.shape)}")
    return TFGraph(edge_index, frames, pos)


def _features_on_graph(graph: TFGraph, reps: TensorReps, x_src: Any, x_dst: Any, homogeneous: bool):
    """Check node features (split by :func:`_pair`) against ``graph``; the graph's frames and positions in
    the features' dtype. Returns ``(x_src, x_dst, (f_src, f_dst), (p_src, p_dst))``."""
    if graph.dim != reps.dim:
        raise ValueError(f"frames: got {graph.dim}x{graph.dim} frames, but reps_in has dim {reps.dim}")
    if homogeneous != graph.homogeneous:
        raise ValueError("x: pass a (source, target) pair exactly when frames is a (source, target) pair")
    _check_device("frames", graph._frames[0], ("x" if homogeneous else "x[0]", x_src), ("x[1]", x_dst))
    x_src = _check_features(x_src, graph.n_src, reps.size, "x" if homogeneous else "x[0]")
    x_dst = x_src if homogeneous else _check_features(x_dst, graph.n_dst, reps.size, "x[1]")
    return x_src, x_dst, graph.frames(x_src.dtype), graph.pos(x_src.dtype)


