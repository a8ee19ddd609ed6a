r"""Tensor Frames: make message passing O(d)/E(d)-equivariant with one local frame per node.

Tensor Frames (Lippmann, Gerhartz, Remme, Hamprecht, "Beyond Canonicalization", ICLR 2025) give every
node :math:`i` a local frame :math:`R_i \in O(d)` (rows = axes) that transforms as
:math:`R_i \to R_i Q^\top` under :math:`x \to Q x + s`. Node features are stored in the local frames,
:math:`f_i = \rho(R_i) F_i`, which makes them invariant. A layer computes

.. math::

    f_i' = \psi\Big(f_i,\ \bigoplus_{j \in N(i)} \phi\big(f_i,\ \rho(R_i R_j^\top) f_j,\
           R_i (x_j - x_i),\ \rho_e(R_i) e_{ij}\big)\Big).

Every argument of :math:`\phi` and :math:`\psi` is invariant, so they can be *any* function: an
unmodified PyTorch Geometric layer becomes equivariant once the neighbour features it reads are moved
into the receiver's frame ("transport", :math:`\rho(R_i R_j^\top) f_j`) and its edge geometry is given
in the receiver's frame.

Note: with *equivariant* frames even untransported messages are invariant (``rho(R_j) F_j`` is), so the
network stays equivariant without transport; what transport buys is consistency -- messages are
tensors expressed in one frame, so a layer that is equivariant in global coordinates (e.g. a sum of
neighbour vectors) gives the same global result for any choice of frames (see the tests).

This module provides

* :class:`ToLocal` / :class:`ToGlobal`: move typed features into / out of the node frames;
* :class:`TFConv`: wraps an unmodified :class:`~torch_geometric.nn.conv.MessagePassing` instance (modes
  with the paper's semantics, plus the cheaper LLoCa-style ``mode="message"`` for attention layers);
* :class:`TFGraph`: one graph's edges, frames and positions, validated once, with the receiver layout,
  local edge geometry and per-receiver representation matrices cached for all layers of a forward pass;
* the building blocks :func:`edge_frames`, :func:`transport` (per-edge reference),
  :func:`local_edge_geometry`; the fast per-receiver transport is in :mod:`equiframe.nn.tf_transport`.

The native layers live in :mod:`equiframe.nn.tf_conv` (:class:`TensorFrameConv`) and
:mod:`equiframe.nn.tf_attention` (:class:`TensorFrameAttention`).

Conventions: ``edge_index[0]`` is the source ``j``, ``edge_index[1]`` the target/receiver ``i``
(PyG's ``flow="source_to_target"``); ``frames[i]`` holds the axes of node ``i`` as rows; local
coordinates are ``R_i (x - t_i)`` with origin ``t_i = pos[i]`` for position-typed features.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal, Optional, Sequence

import torch
from torch import Tensor, nn

from .. import _native
from ..reps import TensorReps, as_reps
from .tf_transport import (
    ReceiverLayout,
    _needs_det,
    receiver_layout,
    rotate_by_receiver,
    rotate_edges,
    transport_edges,
)

__all__ = [
    "TFGraph",
    "ToLocal",
    "ToGlobal",
    "TFConv",
    "edge_frames",
    "transport",
    "local_edge_geometry",
    "safe_length",
    "geometry_dim",
    "check_frames",
]

Mode = Literal["auto", "plain", "global", "hook", "expand", "gcn", "message"]
_MODES = ("auto", "plain", "global", "hook", "expand", "gcn", "message")
EdgeGeometry = Literal["auto", "rel_dist", "rel", "dist", "none"]

PairTensor = tuple[Tensor, Tensor]


# ---------------------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------------------
def _check_tensor(x: Any, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    return x


def _all_finite(x: Tensor) -> bool:
    """``True`` iff every entry is finite. One reduction (a NaN/inf makes the sum non-finite); the exact
    elementwise check runs only when the sum is not finite (NaN/inf present, or an overflowing sum)."""
    if x.numel() == 0:
        return True
    with torch.no_grad():
        if bool(torch.isfinite(x.sum())):
            return True
        return bool(torch.isfinite(x).all())


def check_frames(frames: Any, n: int | None, dim: int, name: str = "frames", *, finite: bool = True) -> Tensor:
    """Validate a frame tensor ``[n, dim, dim]`` (floating point, finite) and return it.

    Orthogonality is not checked (learned frames may be orthogonal only up to rounding); a non-orthogonal
    frame silently breaks equivariance, so build frames with :mod:`equiframe.frames`.

    Shapes:
        frames: ``[n, dim, dim]``
    """
    frames = _check_tensor(frames, name)
    if frames.dim() != 3 or frames.shape[-2:] != (dim, dim) or (n is not None and frames.shape[0] != n):
        want = f"[{n if n is not None else 'N'}, {dim}, {dim}]"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(frames.shape)}")
    if not frames.is_floating_point():
        raise TypeError(f"{name}: expected a floating point tensor, got {frames.dtype}")
    if finite and not _all_finite(frames):
        raise ValueError(f"{name}: contains NaN or inf")
    return frames


def _check_pos(pos: Any, n: int, dim: int, name: str = "pos") -> Tensor:
    pos = _check_tensor(pos, name)
    if pos.dim() != 2 or pos.shape != (n, dim):
        raise ValueError(f"{name}: expected shape [{n}, {dim}], got {tuple(pos.shape)}")
    if not pos.is_floating_point():
        raise TypeError(f"{name}: expected a floating point tensor, got {pos.dtype}")
    if not _all_finite(pos):
        raise ValueError(f"{name}: contains NaN or inf")
    return pos


def _check_features(x: Any, n: int | None, size: int, name: str = "x") -> Tensor:
    x = _check_tensor(x, name)
    if x.dim() != 2 or x.shape[1] != size or (n is not None and x.shape[0] != n):
        raise ValueError(
            f"{name}: expected shape [{n if n is not None else 'N'}, {size}] (the reps size), got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating point tensor, got {x.dtype}")
    if not _all_finite(x):
        raise ValueError(f"{name}: contains NaN or inf")
    return x


def _check_edge_index(edge_index: Any, n_src: int, n_dst: int, name: str = "edge_index") -> Tensor:
    if not isinstance(edge_index, Tensor) or edge_index.is_sparse:
        raise TypeError(
            f"{name}: expected a dense integer tensor [2, E] (SparseTensor / torch.sparse adjacency is not "
            f"supported), got {type(edge_index).__name__}"
        )
    if type(edge_index) is not Tensor:  # e.g. torch_geometric.EdgeIndex: use the plain index data
        edge_index = edge_index.as_subclass(Tensor)
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"{name}: expected shape [2, E], got {tuple(edge_index.shape)}")
    if edge_index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name}: expected int64 indices, got {edge_index.dtype}")
    if edge_index.dtype != torch.int64:
        edge_index = edge_index.long()
    if edge_index.shape[1]:
        if n_src == n_dst:  # one pass over both rows
            lo_t, hi_t = torch.aminmax(edge_index)
            lo, hi_src = int(lo_t), int(hi_t)
            hi_dst = hi_src
        else:
            lo_s, hi_s = torch.aminmax(edge_index[0])
            lo_d, hi_d = torch.aminmax(edge_index[1])
            lo, hi_src, hi_dst = min(int(lo_s), int(lo_d)), int(hi_s), int(hi_d)
        if lo < 0 or hi_src >= n_src or hi_dst >= n_dst:
            hi_src, hi_dst = int(edge_index[0].max()), int(edge_index[1].max())  # exact, for the message
            raise ValueError(
                f"{name}: indices out of range (sources must lie in [0, {n_src}), targets in [0, {n_dst}); "
                f"got min {lo}, max source {hi_src}, max target {hi_dst})"
            )
    return edge_index


def _pair(value: Any, name: str) -> tuple[Any, Any, bool]:
    """``(src, dst, homogeneous)`` from a tensor or a 2-tuple (bipartite)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name}: a bipartite pair must have 2 entries (source, target), got {len(value)}")
        return value[0], value[1], False
    return value, value, True


# ---------------------------------------------------------------------------------------------------------
# edge frames, transport, geometry
# ---------------------------------------------------------------------------------------------------------
def edge_frames(frames_src: Tensor, frames_dst: Tensor, src: Tensor, dst: Tensor) -> Tensor:
    r"""Relative frames of the edges :math:`R_{ij} = R_i R_j^\top` (``i = dst``, ``j = src``).

    :math:`R_{ij}` maps coordinates in the sender's frame to the receiver's frame.

    Shapes:
        frames_src: ``[N_src, d, d]``, frames_dst: ``[N_dst, d, d]``, src/dst: ``[E]`` -> ``[E, d, d]``
    """
    return torch.bmm(frames_dst.index_select(0, dst), frames_src.index_select(0, src).transpose(1, 2))


def safe_length(v: Tensor, eps: float = 1e-6) -> Tensor:
    r"""Smooth edge length :math:`\sqrt{|v|^2 + \epsilon^2} - \epsilon` (keeps the last dimension).

    Equal to :math:`|v|` up to :math:`\epsilon`, exactly 0 at :math:`v = 0`, and with finite first and
    second derivatives everywhere (:math:`|v|` itself has a NaN gradient at 0).

    Shapes:
        v: ``[*, d]`` -> ``[*, 1]``
    """
    return torch.sqrt(v.square().sum(-1, keepdim=True) + eps * eps) - eps


def geometry_dim(dim: int, kind: EdgeGeometry = "rel_dist") -> int:
    """Number of edge-geometry channels :class:`TFConv` appends: ``d + 1``, ``d``, ``1`` or ``0``."""
    table = {"rel_dist": dim + 1, "rel": dim, "dist": 1, "none": 0}
    if kind not in table:
        raise ValueError(f"kind: expected one of {sorted(table)}, got {kind!r}")
    return table[kind]


def local_edge_geometry(
    pos_src: Tensor,
    pos_dst: Tensor,
    frames_dst: Tensor | None,
    src: Tensor,
    dst: Tensor,
    kind: Literal["rel_dist", "rel", "dist"] = "rel_dist",
    eps: float = 1e-6,
    layout: ReceiverLayout | None = None,
) -> Tensor:
    r"""Edge geometry in the receiver's frame: ``[R_i (x_j - x_i), safe_length(x_j - x_i)]``.

    ``frames_dst=None`` means identity frames (plain, non-equivariant geometry). ``layout`` (a
    :func:`~equiframe.nn.tf_transport.receiver_layout` of the edges) enables per-receiver batched matmuls.

    Shapes:
        pos_src: ``[N_src, d]``, pos_dst: ``[N_dst, d]``, frames_dst: ``[N_dst, d, d]``, src/dst: ``[E]``
        -> ``[E, d + 1]`` (``rel_dist``), ``[E, d]`` (``rel``) or ``[E, 1]`` (``dist``)
    """
    if src.shape != dst.shape or src.dim() != 1:
        raise ValueError(f"src, dst: expected two [E] index tensors, got {tuple(src.shape)} and {tuple(dst.shape)}")
    fast = _native.edge_geometry(pos_src, pos_dst, frames_dst, src, dst, kind, eps)  # one pass, no autograd
    if fast is not None:
        return fast
    diff = pos_src.index_select(0, src) - pos_dst.index_select(0, dst)
    parts = []
    if kind in ("rel_dist", "rel"):
        if frames_dst is None:
            parts.append(diff)
        elif layout is not None:
            parts.append(rotate_by_receiver(diff, frames_dst, layout))
        else:
            parts.append(torch.bmm(frames_dst.index_select(0, dst), diff.unsqueeze(-1)).squeeze(-1))
    if kind in ("rel_dist", "dist"):
        parts.append(safe_length(diff, eps))
    if not parts:
        raise ValueError(f"kind: expected 'rel_dist', 'rel' or 'dist', got {kind!r}")
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def _det(frames: Tensor) -> Tensor:
    return torch.linalg.det(frames)


def transport(
    reps: TensorReps,
    x_j: Tensor,
    frames_src: Tensor,
    frames_dst: Tensor,
    src: Tensor,
    dst: Tensor,
    *,
    pos_src: Tensor | None = None,
    pos_dst: Tensor | None = None,
    det_src: Tensor | None = None,
    det_dst: Tensor | None = None,
    R_ij: Tensor | None = None,
) -> Tensor:
    r"""Move per-edge sender features into the receiver's frame: :math:`\rho(R_i R_j^\top) f_j`.

    Reference implementation with the per-edge relative frames :math:`R_{ij}` (one small matmul per edge
    and tensor order). The layers use the faster, equivalent
    :func:`~equiframe.nn.tf_transport.transport_edges`, which gathers from the nodes itself and groups
    the work per receiver.

    Position blocks (``pos``) are affine: a local position :math:`p_j = R_j (p - x_j)` becomes
    :math:`R_{ij} p_j + R_i (x_j - x_i) = R_i (p - x_i)`, which needs ``pos_src``/``pos_dst``.
    Scalars (``0n``) are never touched; each tensor order is one batched matmul over the edges.

    Args:
        reps: the type of ``x_j``.
        x_j: sender features, one row per edge (already gathered: ``x[src]``).
        frames_src, frames_dst: node frames of the sender / receiver node sets.
        src, dst: sender / receiver index of every edge.
        pos_src, pos_dst: node positions (only needed if ``reps`` has ``pos`` blocks).
        det_src, det_dst: optional precomputed ``det`` of the frames (pseudo-tensors).
        R_ij: optional precomputed :func:`edge_frames`.

    Shapes:
        x_j: ``[E, reps.size]`` -> ``[E, reps.size]``
    """
    if reps.is_scalar:
        return x_j
    if R_ij is None:
        R_ij = edge_frames(frames_src, frames_dst, src, dst)
    det = None
    if _needs_det(reps):
        ds = _det(frames_src) if det_src is None else det_src
        dd = _det(frames_dst) if det_dst is None else det_dst
        det = dd.index_select(0, dst) * ds.index_select(0, src)
    shift = None
    if reps.has_pos:
        if pos_src is None or pos_dst is None:
            raise ValueError("pos: features with 'pos' blocks need node positions to be moved between frames")
        shift = local_edge_geometry(pos_src, pos_dst, frames_dst, src, dst, "rel")
    return reps.transform(x_j, R_ij, shift, det=det)


# ---------------------------------------------------------------------------------------------------------
# TFGraph: per-forward-pass graph data shared by the layers
# ---------------------------------------------------------------------------------------------------------
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
        >>> g = TFGraph(edge_index, frames, pos)
        >>> h = conv1(x, g)        # computes the layout, geometry and matrices
        >>> h = conv2(h, g)        # reuses them

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


def _as_graph(edge_index: "Tensor | TFGraph", frames: Any, pos: Any) -> TFGraph:
    """A :class:`TFGraph` from a layer's ``(edge_index, frames, pos)`` arguments (or the graph itself)."""
    if isinstance(edge_index, TFGraph):
        if frames is not None or pos is not None:
            raise ValueError("frames: pass frames and pos either through the TFGraph or as arguments, not both")
        return edge_index
    if frames is None:
        raise ValueError("frames: node frames are required (or pass a TFGraph as edge_index)")
    return TFGraph(edge_index, frames, pos)


def _features_on_graph(graph: TFGraph, reps: TensorReps, x_src: Any, x_dst: Any, homogeneous: bool):
    """Check node features (split by :func:`_pair`) against ``graph``; the graph's frames and positions in
    the features' dtype. Returns ``(x_src, x_dst, (f_src, f_dst), (p_src, p_dst))``."""
    if graph.dim != reps.dim:
        raise ValueError(f"frames: got {graph.dim}x{graph.dim} frames, but reps_in has dim {reps.dim}")
    if homogeneous != graph.homogeneous:
        raise ValueError("x: pass a (source, target) pair exactly when frames is a (source, target) pair")
    x_src = _check_features(x_src, graph.n_src, reps.size, "x" if homogeneous else "x[0]")
    x_dst = x_src if homogeneous else _check_features(x_dst, graph.n_dst, reps.size, "x[1]")
    return x_src, x_dst, graph.frames(x_src.dtype), graph.pos(x_src.dtype)


# ---------------------------------------------------------------------------------------------------------
# ToLocal / ToGlobal
# ---------------------------------------------------------------------------------------------------------
def _resolve_reps(reps: "str | TensorReps", dim: int | None, name: str) -> TensorReps:
    if isinstance(reps, TensorReps):
        if dim is not None and dim != reps.dim:
            raise ValueError(f"{name}: reps {reps!r} has dim {reps.dim}, but dim={dim} was given")
        return reps
    if not isinstance(reps, str):
        raise TypeError(f"{name}: expected a reps string or TensorReps, got {type(reps).__name__}")
    return as_reps(reps, 3 if dim is None else dim, name)


class ToLocal(nn.Module):
    r"""Express global typed features in the node frames: :math:`f_i = \rho(R_i) F_i`.

    Position blocks (``pos``) are translated to the node's origin first: :math:`R_i (p - t_i)` with
    ``t_i = pos[i]`` (so a node's own position becomes 0). Tensors and scalars ignore ``pos``.

    Args:
        reps: the type of the features, e.g. ``"16x0n+8x1n+pos"``.
        dim: the space dimension when ``reps`` is a string (default 3, or ``reps.dim``).

    Example:
        >>> to_local = ToLocal("4x0n+2x1n", dim=3)
        >>> f = to_local(F, frames)          # F [N, 10], frames [N, 3, 3]

    Shapes:
        x: ``[N, reps.size]``, frames: ``[N, d, d]``, pos: ``[N, d]`` -> ``[N, reps.size]``
    """

    def __init__(self, reps: "str | TensorReps", dim: int | None = None):
        super().__init__()
        self.reps_in = self.reps_out = _resolve_reps(reps, dim, "reps")

    def forward(self, x: Tensor, frames: Tensor, pos: Tensor | None = None) -> Tensor:
        reps = self.reps_in
        x = _check_features(x, None, reps.size)
        frames = check_frames(frames, x.shape[0], reps.dim).to(x.dtype)
        t = None
        if reps.has_pos:
            if pos is None:
                raise ValueError("pos: reps with 'pos' blocks need the node origins `pos` [N, d]")
            t = _check_pos(pos, x.shape[0], reps.dim).to(x.dtype)
        return reps.to_local(x, frames, t)

    def extra_repr(self) -> str:
        return f"reps={str(self.reps_in)!r}, dim={self.reps_in.dim}"


class ToGlobal(nn.Module):
    r"""Map local features back to the global frame: :math:`F_i = \rho(R_i^\top) f_i` (positions
    :math:`R_i^\top p + t_i`, ``t_i = pos[i]``).

    Args:
        reps: the type of the features.
        dim: the space dimension when ``reps`` is a string.

    Shapes:
        x: ``[N, reps.size]``, frames: ``[N, d, d]``, pos: ``[N, d]`` -> ``[N, reps.size]``
    """

    def __init__(self, reps: "str | TensorReps", dim: int | None = None):
        super().__init__()
        self.reps_in = self.reps_out = _resolve_reps(reps, dim, "reps")

    def forward(self, x: Tensor, frames: Tensor, pos: Tensor | None = None) -> Tensor:
        reps = self.reps_in
        x = _check_features(x, None, reps.size)
        frames = check_frames(frames, x.shape[0], reps.dim).to(x.dtype)
        t = None
        if reps.has_pos:
            if pos is None:
                raise ValueError("pos: reps with 'pos' blocks need the node origins `pos` [N, d]")
            t = _check_pos(pos, x.shape[0], reps.dim).to(x.dtype)
        return reps.to_global(x, frames, t)

    def extra_repr(self) -> str:
        return f"reps={str(self.reps_in)!r}, dim={self.reps_in.dim}"


# ---------------------------------------------------------------------------------------------------------
# TFConv: wrap an unmodified PyG layer
# ---------------------------------------------------------------------------------------------------------
class _NotHookable(Exception):
    """Raised inside a hooked layer when the per-message transport would be wrong."""


def _class_names(layer: nn.Module) -> set[str]:
    return {c.__name__ for c in type(layer).__mro__}


# Multi-hop / feature-graph layers: refused (the second hop would need another transport).
_UNSUPPORTED = {
    "ChebConv", "TAGConv", "APPNP", "SGConv", "SSGConv", "MixHopConv", "ARMAConv", "DNAConv", "GatedGraphConv",
    "DynamicEdgeConv",
}
# Layers known to transform x per node before `propagate` (hook mode would be rejected): go straight to expand.
_EXPAND_FIRST = {
    "GATConv", "GATv2Conv", "TransformerConv", "PointTransformerConv", "ResGatedGraphConv", "GeneralConv",
    "LEConv", "FeaStConv", "GMMConv", "SplineConv", "NNConv", "CGConv", "GENConv", "FiLMConv", "GravNetConv",
    "AGNNConv", "SuperGATConv", "HEATConv", "RGATConv", "PDNConv", "PNAConv", "EGConv", "FAConv",
}
# Layers known not to accept a bipartite (x_src, x_dst) input but supported through an adapter.
_GCN_LIKE = {"GCNConv"}
# Layers whose message is linear in x_j (x_j, or a per-edge scalar times x_j): with a linear aggregation
# (sum/mean) the transport commutes with the aggregation and can go through the global frame.
_LINEAR_MESSAGE = {"GINConv", "SAGEConv", "GraphConv", "GCNConv", "SimpleConv"}
_LINEAR_AGGR = {"add", "sum", "mean"}
# mode="message": the propagate arguments that carry the layer's per-node projections of the senders (read
# per edge as `<name>_j`), typed as reps_out per head and transported sender frame -> receiver frame.
@dataclass(frozen=True)
class _MessageSpec:
    """How :class:`TFConv` runs a layer in message mode.

    Attributes:
        args: propagate arguments whose sender parts are per-node projections read as ``<name>_j``.
        global_frame: the message is linear in ``args`` (or uses them only through inner products and
            linear combinations) with a linear aggregation: move them to the global frame per node
            (:math:`O(N)`) and rotate the aggregate back, instead of transporting them per edge.
        receiver_args: receiver-side projections read as ``<name>_i`` (moved to the global frame too).
        edge_lin: sub-module projecting ``edge_attr`` inside the message; its (receiver-frame) output is
            moved to the global frame per edge by its receiver's frame (no gather).
    """

    args: tuple[str, ...]
    global_frame: bool = False
    receiver_args: tuple[str, ...] = ()
    edge_lin: str | None = None


_MESSAGE_SPECS: dict[str, _MessageSpec] = {
    # message alpha_ij * x_j, "add": O(N); the attention logits use per-node invariants a^T W f_j only
    "GATConv": _MessageSpec(("x",), global_frame=True),
    # x_j enters the attention non-linearly (leaky_relu(x_i + x_j + e_ij)): per-edge transport, reused
    "GATv2Conv": _MessageSpec(("x",)),
    # <q_i, k_j + e_ij> and sum_j a_ij (v_j + e_ij): q, k, v to the global frame per node, e_ij per edge
    "TransformerConv": _MessageSpec(("key", "value"), global_frame=True, receiver_args=("query",),
                                    edge_lin="lin_edge"),
    # channel-wise attention weights times x_j: per-edge transport
    "PointTransformerConv": _MessageSpec(("x",)),
}
_MESSAGE_ARGS = {k: v.args for k, v in _MESSAGE_SPECS.items()}
_OVERRIDABLE = ("forward", "message", "edge_update", "message_and_aggregate", "aggregate", "update")


def _message_spec(layer: nn.Module) -> _MessageSpec | None:
    """The message-mode spec of a layer of a known class whose message-passing methods are not
    overridden by a subclass; ``None`` otherwise."""
    for cls in type(layer).__mro__:
        if cls.__name__ in _MESSAGE_SPECS:
            if any(getattr(type(layer), a, None) is not getattr(cls, a, None) for a in _OVERRIDABLE):
                return None
            return _MESSAGE_SPECS[cls.__name__]
    return None


def _is_linear(module: nn.Module) -> bool:
    """A plain affine map ``x W^T + b`` (``torch.nn.Linear`` or PyG's ``Linear``, forward not overridden)."""
    from torch_geometric.nn.dense.linear import Linear as PygLinear

    for cls in (nn.Linear, PygLinear):
        if isinstance(module, cls) and type(module).forward is cls.forward:
            return True
    return False


def _typed_reps(reps_out: TensorReps, t: Tensor, name: str) -> TensorReps:
    """Type of a per-node projection ``t`` ``[N, S]`` or ``[N, H, C]`` in message mode: ``reps_out`` when
    ``S = reps_out.size`` (heads concatenated, as in the layer's output), else ``S / reps_out.size``
    concatenated copies of ``reps_out`` (one per head, averaged by the layer)."""
    size = 1
    for n in t.shape[1:]:
        size *= int(n)
    r = reps_out
    if size == r.size:
        if t.dim() == 3 and t.shape[1] > 1:  # heads concatenated: no tensor may straddle two heads
            c = int(t.shape[-1])
            for b, sl in r.slices():
                q = r.dim**b.order
                for o in range(sl.start, sl.stop, q):
                    if o // c != (o + q - 1) // c:
                        raise ValueError(
                            f"reps_out: {str(r)!r} does not split into {t.shape[1]} heads of {c} channels "
                            f"(a tensor of block {b} straddles two heads)"
                        )
        return r
    if r.size and size % r.size == 0:
        return TensorReps(r.blocks * (size // r.size), dim=r.dim)
    raise ValueError(
        f"mode: 'message' types {name!r} ({size} channels per node) as reps_out per head, but {size} is not "
        f"a multiple of reps_out.size = {r.size}"
    )


class _HookSession:
    """Per-call closure state of the hooked modes (lives only for one forward call; never on a module).

    ``kind``: ``"hook"`` (transport the raw ``x_j``), ``"global"`` (aggregate the raw input in the global
    frame) or ``"message"`` (transport the layer's per-node projections named in ``message_args``).
    """

    def __init__(
        self,
        owner: "TFConv",
        x_src: Tensor,
        frames_src: Tensor,
        frames_dst: Tensor,
        pos_src: Tensor | None,
        pos_dst: Tensor | None,
        pos_token_src: Tensor | None,
        graph: TFGraph,
        kind: Literal["hook", "global", "message"] = "hook",
        spec: _MessageSpec | None = None,
    ):
        self.owner = owner
        self.kind = kind
        self.global_mode = kind == "global"
        self.spec = spec if spec is not None else _MessageSpec(())
        self.message_args = set(self.spec.args)
        self.edge_global = False  # message mode through the global frame: rotate the edge projection too
        self.current: tuple[Tensor, Tensor, Any, Tensor] | None = None  # edges being messaged (layout lazy)
        self._edge_in: Tensor | None = None  # edge projection input stashed by edge_lin_pre_hook
        self._g: Tensor | None = None  # global-frame sender features (global mode)
        self.n_global = 0  # propagates aggregated in the global frame, awaiting their aggregate hook
        self.agg_reps: list[TensorReps] = []  # type of each of those aggregates
        self.x_src = x_src
        self.frames_src, self.frames_dst = frames_src, frames_dst
        self.pos_src, self.pos_dst = pos_src, pos_dst
        self.pos_token_src = pos_token_src
        self.graph = graph  # the input graph, its layout and cache (reused when the layer keeps the edges)
        self.pending: list[tuple[dict[str, tuple[str, Any]], Tensor, Tensor, Any, Tensor]] = []
        self.need_transport = owner.transport and not owner.reps_in.is_scalar
        self.typed_transport = owner.transport and not owner.reps_out.is_scalar
        self._typed_done: list[tuple[Tensor, Tensor, Tensor]] = []  # (projection, edge_index, transported)

    # -- helpers -----------------------------------------------------------------------------------------
    def _edges(self, module: nn.Module, edge_index: Tensor) -> tuple[Tensor, Tensor, Tensor, Any]:
        """``(edge_index, src, dst, layout)`` of the edges a propagate runs on; ``layout()`` is lazy."""
        i_row, j_row = (1, 0) if module.flow == "source_to_target" else (0, 1)
        if type(edge_index) is not Tensor:
            edge_index = edge_index.as_subclass(Tensor)
        src, dst = edge_index[j_row], edge_index[i_row]
        graph, n_dst = self.graph, self.frames_dst.shape[0]
        memo: list[ReceiverLayout] = []

        def layout() -> ReceiverLayout:  # built on first use only (global modes never need it)
            if not memo:
                same = edge_index is graph.edge_index and i_row == 1
                memo.append(graph.layout if same else receiver_layout(src, dst, n_dst))
            return memo[0]

        return edge_index, src, dst, layout

    def _cache_for(self, edge_index: Tensor) -> dict | None:
        """The graph's cache: the receiver matrices depend on the receivers' frames only, which every edge
        set of the layer (e.g. with added self-loops) shares."""
        return self.graph.cache

    def typed_edges(self, t: Tensor, name: str, src: Tensor, dst: Tensor, layout: ReceiverLayout,
                    edge_index: Tensor) -> Tensor:
        """Per-edge ``rho(R_i R_j^T) t_j`` of a per-node projection ``t`` (computed once per edge set)."""
        for proj, ei, done in self._typed_done:
            if proj is t and ei is edge_index:
                return done
        reps = _typed_reps(self.owner.reps_out, t, name)
        n = t.shape[0]
        y = transport_edges(reps, t.reshape(n, reps.size), self.frames_src, self.frames_dst, src, dst,
                            layout=layout, cache=self._cache_for(edge_index))
        y = y.view(src.shape[0], *t.shape[1:])
        self._typed_done.append((t, edge_index, y))
        return y

    def global_x(self) -> Tensor:
        """Sender features in the global frame, ``rho(R_j^T) f_j`` (computed once per call)."""
        if self._g is None:
            self._g = self.owner.reps_in.to_global(self.x_src, self.frames_src)
        return self._g

    def _classify(self, base: str, name: str, src_part: Tensor, in_message: bool) -> str | None:
        """What to do with a sender argument: ``"pos"``, ``"typed"``, ``"x"``, ``"global"`` or ``None``."""
        if self.pos_token_src is not None and src_part is self.pos_token_src:
            return "pos"
        if self.kind == "message" and base in self.message_args:
            return "typed" if self.typed_transport else None
        if src_part is self.x_src or (self._g is not None and src_part is self._g):
            if not self.need_transport:
                return None
            return "global" if (self.global_mode and in_message) else "x"
        if self.kind == "message" or not self.need_transport:
            return None  # invariant per-node quantities (attention logits, ...): any function of them is too
        raise _NotHookable(
            f"the layer passes {base!r} (not the raw input features) to propagate and reads {name!r}: it "
            "transforms x per node before message passing"
        )

    # -- hooks -------------------------------------------------------------------------------------------
    def pre_propagate(self, module: nn.Module, inputs: tuple):
        edge_index, size, kwargs = inputs
        if not isinstance(edge_index, Tensor) or edge_index.is_sparse:
            raise _NotHookable("the layer propagates over a sparse adjacency (fused message_and_aggregate)")
        if getattr(module, "decomposed_layers", 1) != 1:
            raise _NotHookable("decomposed_layers > 1 splits the channels of x")
        message_args = set(module.inspector.get_param_names("message"))
        user_args = set(module._user_args)
        plan: dict[str, tuple[str, Any]] = {}
        for name in module._user_args:
            if not name.endswith("_j"):
                continue
            base = name[:-2]
            value = kwargs.get(base, None)
            src_part = value[0] if isinstance(value, (tuple, list)) else value
            if src_part is None or not isinstance(src_part, Tensor):
                continue
            kind = self._classify(base, name, src_part, True)
            if kind is None:
                continue
            if name not in message_args:
                raise _NotHookable(f"{name!r} is read outside `message` (aggregate/update)")
            if kind == "global" and (base + "_i" in message_args or base in user_args):
                raise _NotHookable(f"the message reads {base!r} beyond {name!r}: not a linear message")
            plan[base] = (kind, src_part)
        edge_index, src, dst, layout = self._edges(module, edge_index)
        aggr = getattr(module, "aggr", None)
        linear_aggr = isinstance(aggr, str) and aggr in _LINEAR_AGGR
        if any(k == "global" for k, _ in plan.values()):
            if len(plan) != 1:
                raise _NotHookable("global mode needs a message that is linear in one sender argument")
            if not linear_aggr:
                raise _NotHookable(f"aggregation {aggr!r} is not linear (sum/mean)")
            (base,) = plan
            value = kwargs[base]
            tgt = value[1] if isinstance(value, (tuple, list)) else value
            kwargs[base] = (self.global_x(), tgt)  # PyG gathers g_j = rho(R_j^T) f_j: no per-edge work
            self.n_global += 1
            self.agg_reps.append(self.owner.reps_in)
            self.pending.append(({}, src, dst, layout, edge_index))
            return edge_index, size, kwargs
        if self._message_global_ok(plan, kwargs, message_args, user_args, linear_aggr):
            reps = None
            for base, (_kind, t) in plan.items():
                # sum_j a_ij rho(R_i R_j^T) t_j = rho(R_i) sum_j a_ij rho(R_j^T) t_j, and inner products
                # <u_i, rho(R_i R_j^T) t_j> = <rho(R_i^T) u_i, rho(R_j^T) t_j>: every projection per node
                reps = _typed_reps(self.owner.reps_out, t, base)
                glob = reps.to_global(t.reshape(t.shape[0], reps.size), self.frames_src).view(t.shape)
                value = kwargs[base]
                kwargs[base] = (glob, value[1] if isinstance(value, (tuple, list)) else value)
            for name in self.spec.receiver_args:
                value = kwargs[name]
                u = value[1] if isinstance(value, (tuple, list)) else value
                r_u = _typed_reps(self.owner.reps_out, u, name)
                glob = r_u.to_global(u.reshape(u.shape[0], r_u.size), self.frames_dst).view(u.shape)
                kwargs[name] = (value[0], glob) if isinstance(value, (tuple, list)) else glob
            self.edge_global = True
            self.n_global += 1
            self.agg_reps.append(reps)
            self.pending.append(({}, src, dst, layout, edge_index))
            return edge_index, size, kwargs
        self.pending.append((plan, src, dst, layout, edge_index))
        # The sender rows are gathered by the transport itself: let PyG gather a zero-width view instead
        # (saves one pass over [E, C]); only if the argument is not also read without suffix.
        changed = False
        for base in plan:
            if base in user_args:
                continue
            value = kwargs[base]
            tgt = value[1] if isinstance(value, (tuple, list)) else value
            kwargs[base] = (plan[base][1][:, :0], tgt)
            changed = True
        return (edge_index, size, kwargs) if changed else None

    def _message_global_ok(self, plan, kwargs, message_args, user_args, linear_aggr) -> bool:
        """Message mode through the global frame: all named projections present and read only as
        ``<name>_j`` (receiver projections only as ``<name>_i``), a linear aggregation."""
        spec = self.spec
        if self.kind != "message" or not spec.global_frame or not linear_aggr or not plan:
            return False
        if set(plan) != set(spec.args) or any(k != "typed" for k, _ in plan.values()):
            return False
        if any(b + "_i" in message_args or b in user_args for b in plan):
            return False
        for name in spec.receiver_args:
            value = kwargs.get(name, None)
            u = value[1] if isinstance(value, (tuple, list)) else value
            if not isinstance(u, Tensor) or name + "_j" in message_args or name in user_args:
                return False
        return True

    def edge_lin_pre_hook(self, module: nn.Module, inputs: tuple):
        r"""Message mode through the global frame, edge projection :math:`e_{ij} = W a_{ij} + b` (receiver
        frame), needed in the global frame as :math:`\rho(R_i^\top) e_{ij}`. For a linear map of few edge
        channels on a blocked graph the rotation is folded into the weights,
        :math:`(\rho(R_i^\top) W) a_{ij} + \rho(R_i^\top) b` (rotating ``F + 1`` weight rows per receiver
        instead of ``k`` edge rows); the module itself then runs on one dummy row only."""
        self._edge_in = None
        if not self.edge_global or self.current is None or not inputs:
            return None
        a, layout = inputs[0], self.current[2]()
        weight = getattr(module, "weight", None)
        if (
            layout.kind == "blocked" and len(layout.segments) == 1 and isinstance(a, Tensor) and a.dim() == 2
            and a.shape[0] == layout.n_edges and isinstance(weight, Tensor) and weight.dim() == 2
            and weight.shape[1] == a.shape[1] and (a.shape[1] + 1) * layout.n_dst <= a.shape[0]
            and _is_linear(module)
        ):
            self._edge_in = a
            return (a[:1],)
        return None

    def edge_lin_hook(self, module: nn.Module, inputs: tuple, output: Tensor):
        """Forward hook of the edge projection (see :meth:`edge_lin_pre_hook`)."""
        if not self.edge_global or self.current is None:
            return None
        _src, _dst, get_layout, edge_index = self.current
        layout = get_layout()
        a, self._edge_in = self._edge_in, None
        if a is not None:  # rotated weights, one small product per receiver
            reps = _typed_reps(self.owner.reps_out, output, "edge projection")
            weight, bias = module.weight, module.bias
            n, k, nf = layout.n_dst, layout.segments[0][2], a.shape[1]
            rows = weight.t() if bias is None else torch.cat([weight.t(), bias.view(1, -1)], 0)  # [F (+1), C]
            nr = rows.shape[0]
            w_t = reps.to_global(  # rows rho(R_i^T) W[:, c] (and rho(R_i^T) b) of every receiver i
                rows.unsqueeze(0).expand(n, nr, reps.size).reshape(n * nr, reps.size),
                self.frames_dst.repeat_interleave(nr, 0),
            ).view(n, nr, reps.size)
            a3 = a.view(n, k, nf)
            y = torch.bmm(a3, w_t) if bias is None else torch.baddbmm(w_t[:, nf:], a3, w_t[:, :nf])
            return y.view(a.shape[0], *output.shape[1:])
        reps = _typed_reps(self.owner.reps_out, output, "edge projection")
        return rotate_edges(reps, output.reshape(output.shape[0], reps.size), self.frames_dst, layout,
                            inverse=True, cache=self._cache_for(edge_index), in_place=True).view(output.shape)

    def lin_hook(self, module: nn.Module, inputs: tuple, output: Tensor):
        """GCNConv: skip its per-node ``lin`` on the input (applied after aggregation instead)."""
        if inputs and inputs[0] is self.x_src:
            return self.global_x()
        return None

    def post_aggregate(self, module: nn.Module, inputs: tuple, out: Tensor):
        """Global-frame aggregates ``sum_j w_ij g_j`` -> ``rho(R_i) (...)`` (+ GCNConv's skipped ``lin``)."""
        if self.n_global == 0:
            return None
        self.n_global -= 1
        reps = self.agg_reps.pop(0)
        shape = out.shape
        out = reps.to_local(out.reshape(shape[0], reps.size), self.frames_dst).view(shape)
        if self.global_mode and self.owner._skip_lin:
            out = module.lin(out)
        return out

    def _per_edge(self, kind: str, payload: Any, name: str, src, dst, layout, edge_index) -> Tensor:
        owner = self.owner
        layout = layout()
        if kind == "x":
            return transport_edges(
                owner.reps_in, self.x_src, self.frames_src, self.frames_dst, src, dst,
                pos_src=self.pos_src, pos_dst=self.pos_dst, layout=layout, cache=self._cache_for(edge_index),
            )
        if kind == "typed":
            return self.typed_edges(payload, name, src, dst, layout, edge_index)
        # positions: receiver at the origin, sender at R_i (x_j - x_i)
        if edge_index is self.graph.edge_index:
            return self.graph.geometry("rel", dtype=self.frames_dst.dtype)
        return local_edge_geometry(self.pos_src, self.pos_dst, self.frames_dst, src, dst, "rel", layout=layout)

    def pre_message(self, module: nn.Module, inputs: tuple) -> Optional[dict]:
        if not self.pending:
            raise RuntimeError("TFConv: message called without a preceding propagate (unsupported layer)")
        plan, src, dst, layout, edge_index = self.pending.pop()
        self.current = (src, dst, layout, edge_index)
        if not plan:
            return None
        msg_kwargs = dict(inputs[0])
        for base, (kind, payload) in plan.items():
            msg_kwargs[base + "_j"] = self._per_edge(kind, payload, base, src, dst, layout, edge_index)
        return msg_kwargs

    def pre_edge_update(self, module: nn.Module, inputs: tuple):
        """``edge_updater``: sender tensors read as ``<name>_j`` in ``edge_update`` (GATv2Conv's attention
        logits read ``x_j``). Hook/global modes refuse them; message mode moves them into the receiver's
        frame by handing PyG per-edge sources with an identity edge index ``(arange(E), dst)``."""
        edge_index, size, kwargs = inputs
        reads = [n for n in module._edge_user_args if n.endswith("_j")]
        todo: dict[str, tuple[str, Any]] = {}
        for name in reads:
            base = name[:-2]
            value = kwargs.get(base, None)
            src_part = value[0] if isinstance(value, (tuple, list)) else value
            if not isinstance(src_part, Tensor):
                continue
            kind = self._classify(base, name, src_part, False) if self.kind == "message" else None
            if self.kind != "message":
                if self.pos_token_src is not None and src_part is self.pos_token_src:
                    raise _NotHookable(f"edge_update reads {name!r} (positions) which cannot be hooked")
                if self.need_transport:
                    raise _NotHookable(f"edge_update reads the per-node tensor {name!r} of the senders")
                continue
            if kind is not None:
                if base in module._edge_user_args:
                    raise _NotHookable(f"edge_update reads {base!r} beyond {name!r}")
                todo[base] = (kind, src_part)
        if not todo:
            return None
        if not isinstance(edge_index, Tensor) or edge_index.is_sparse:
            raise _NotHookable("the layer updates edges over a sparse adjacency")
        edge_index, src, dst, layout = self._edges(module, edge_index)
        new_kwargs = dict(kwargs)
        for name in reads:
            base = name[:-2]
            value = kwargs.get(base, None)
            src_part = value[0] if isinstance(value, (tuple, list)) else value
            if not isinstance(src_part, Tensor):
                continue
            tgt = value[1] if isinstance(value, (tuple, list)) else value
            if base in todo:
                kind, payload = todo[base]
                per_edge = self._per_edge(kind, payload, base, src, dst, layout, edge_index)
            else:
                per_edge = src_part.index_select(0, src)  # invariant: just gathered
            new_kwargs[base] = (per_edge, tgt)
        n_e = src.shape[0]
        ident = torch.stack([torch.arange(n_e, device=src.device), dst])
        new_size = None if size is None else (n_e, size[1])
        return ident, new_size, new_kwargs


class TFConv(nn.Module):
    r"""Make an unmodified PyTorch Geometric message passing layer tensor-frame equivariant.

    The wrapped layer sees only invariant inputs: node features in the local frames (``[N, reps_in.size]``),
    neighbour features moved into the receiver's frame per edge, :math:`\rho(R_i R_j^\top) f_j`, and
    edge geometry in the receiver's frame. Its output is read as features of type ``reps_out`` in the
    local frame of the receiver, so the composition with :class:`ToLocal` / :class:`ToGlobal` is
    O(d)-equivariant (E(d) with positions), whatever the layer computes.

    .. code-block:: python

        conv = TFConv(GATv2Conv(reps.size, reps.size, edge_dim=d + 1), reps_in=reps)
        out = conv(x_local, edge_index, frames=frames, pos=pos)   # [N, reps.size], local frames
        g = TFGraph(edge_index, frames, pos)                     # or: share graph data between layers
        out = conv(x_local, g)

    **How the neighbour features are moved** (``mode``). ``"plain"``, ``"global"``, ``"hook"``,
    ``"expand"`` and ``"gcn"`` all compute the *same* function (the paper's layer: the wrapped layer applied
    to transported neighbour features, :math:`\phi(f_i, \rho(R_i R_j^\top) f_j, \dots)`); they differ only
    in cost and in the layers they accept. ``"message"`` is a different, cheaper layer (see below).

    * ``"plain"``: no transport at all; only possible when ``reps_in`` is all ``0n`` scalars and the
      layer reads no positions. The layer runs on the original graph: zero overhead besides the edge
      geometry.
    * ``"global"``: for layers whose message is *linear* in ``x_j`` (``x_j`` or a per-edge scalar times
      ``x_j``: GINConv, SAGEConv(``project=False``), GraphConv, SimpleConv, GCNConv) with a ``sum``/``mean``
      aggregation and no ``pos`` blocks, the transport commutes with the aggregation:
      :math:`\sum_j w_{ij}\,\rho(R_i R_j^\top) f_j = \rho(R_i) \sum_j w_{ij}\, g_j` with
      :math:`g_j = \rho(R_j^\top) f_j`. The layer propagates the global-frame :math:`g` (per-call PyG
      ``propagate`` pre-hook) and the aggregate is rotated back by an ``aggregate`` forward hook: the
      transport costs :math:`O(N)` instead of :math:`O(E)` (LLoCa's trick). For GCNConv its bias-free
      per-node ``lin`` is moved behind the aggregation (a per-call forward hook on ``layer.lin``), exact by
      linearity. The hooks verify the data flow (tensor identity) and fall back to ``"hook"``/``"gcn"``.
    * ``"hook"``: the layer runs on the original graph; per call (and removed afterwards) the wrapper
      registers PyG ``propagate``/``message`` pre-hooks that replace ``x_j`` by
      :math:`\rho(R_i R_j^\top) x_j` and ``pos_j``/``pos_i`` by :math:`R_i (x_j - x_i)` / ``0``. This is
      valid only if the layer hands the *raw* input ``x`` to ``propagate`` (no per-node transform of
      ``x`` before message passing, because :math:`\mathrm{lin}(\rho(R_{ij}) f_j) \ne` a transported
      :math:`\mathrm{lin}(f_j)`). The hooks *verify* this on every call (by tensor identity) and refuse
      otherwise. Cost: one batched matmul per tensor type, grouped per receiver
      (:func:`~equiframe.nn.tf_transport.transport_edges`); PyG's own gather of ``x_j`` is skipped. Used
      for GINEConv, EdgeConv, PointNetConv, and GINConv/SAGEConv/GraphConv with non-linear aggregations.
    * ``"expand"``: the graph is expanded to a bipartite graph whose sources are per-edge copies of the
      senders, already transported, ``x_src = [f_{0..M-1}; \rho(R_i R_j^\top) f_j \text{ per edge}]``
      (the first ``M = min(N_src, N_dst)`` copies are the nodes themselves so that self-loops the layer
      adds, ``k -> k``, hit the right copy; self-loop edges of the input are mapped to them), and the
      layer is called as ``layer((x_src, x_dst), edge_index=(copy_e, i_e))``. Every per-node transform
      of the layer is then applied to transported features, so *any* layer that accepts bipartite input
      is correct; cost: the source-side per-node work (e.g. GATConv's ``lin`` and attention projections)
      runs on ``M + E`` rows instead of ``N`` -- about 2x a plain GATConv. Used for GATConv, GATv2Conv,
      TransformerConv, PointTransformerConv, SAGEConv(``project=True``).
    * ``"gcn"``: adapter for :class:`~torch_geometric.nn.GCNConv` (no bipartite input) when ``"global"``
      does not apply (``lin`` with bias, ``pos`` blocks): a homogeneous graph on ``N + E`` nodes (nodes,
      then edge copies) with extra copy self-loops weighted by the sender's GCN degree, which reproduces
      the symmetric normalisation :math:`\hat d_i^{-1/2} w_{ij} \hat d_j^{-1/2}` exactly; rows ``:N``.
    * ``"message"`` (opt-in; GATConv, GATv2Conv, TransformerConv, PointTransformerConv, or any layer with
      ``message_args``): **a different, cheaper tensor-frame layer** in the style of LLoCa. The layer's own
      per-node projections run once per node on the *untransported* local features, i.e. in each node's
      own frame (:math:`O(N)`), and the projected sender tensors the message reads -- the propagate
      arguments named in ``message_args`` (GATConv/GATv2Conv/PointTransformerConv: ``x_j``,
      TransformerConv: ``key_j`` and ``value_j``) -- are typed as ``reps_out`` per head (``heads``
      copies when the heads are averaged; ``reps_out`` itself when they are concatenated, each head then
      holding whole tensors) and moved from the sender's frame to the receiver's,
      :math:`\rho(R_i R_j^\top)\,W f_j`. Compare ``"expand"``, which computes :math:`W \rho(R_i R_j^\top) f_j`
      (projection in the receiver's frame): both are exactly O(d)-equivariant, but they are different
      functions, so weights trained in one mode do not carry over. Every other sender quantity the layer
      computes per node -- GATConv's :math:`a_{src}^\top W f_j`, PointTransformerConv's
      :math:`\mathrm{lin_{src}}(f_j)` -- is left untransported: it is an invariant of the sender's local
      features, so the attention logits (built from such invariants, from projections moved into the
      receiver's frame, and from the local edge geometry) are invariant and the layer stays equivariant.
      Cost: for GATConv, whose message :math:`\alpha_{ij} x_j` is linear with ``add`` aggregation, the
      projections go through the global frame, :math:`\sum_j \alpha_{ij}\rho(R_i R_j^\top) x_j =
      \rho(R_i)\sum_j \alpha_{ij}\rho(R_j^\top) x_j` (:math:`O(N)` frame work); for the others one
      per-edge transport of each named projection (GATv2Conv's ``x_j`` is transported once and reused by
      its attention ``edge_update`` and its message).
    * ``"auto"`` (default): ``"plain"`` if possible, else ``"global"`` if it applies, ``"gcn"`` for other
      GCNConv, ``"expand"`` for layers known to transform ``x`` before propagating, otherwise ``"hook"``,
      falling back to ``"expand"`` when the hook verification fails (and under ``torch.compile``, where PyG
      skips hooks). :meth:`resolved_mode` tells the choice. ``"auto"`` never picks ``"message"``: it keeps
      the paper's semantics (the same function in every mode), so switching to the cheaper layer is an
      explicit modelling choice.

    The hooks live only for the duration of one call (removed in a ``finally``), so nothing is left on the
    layer, but two threads must not run the *same* wrapped layer instance concurrently.

    **Support rule.** A layer is supported if (a) it is a ``MessagePassing`` that reads neighbour
    features only through ``propagate`` (``x_j``-style arguments) on a dense ``edge_index``, with
    ``flow="source_to_target"``, and (b) either it passes
    the raw ``x`` (and ``pos``) to ``propagate`` (hook), or it accepts bipartite input ``(x_src, x_dst)``
    with optional ``edge_attr``/``pos`` (expand), or it is GCNConv. Multi-hop layers (ChebConv, TAGConv,
    APPNP, SGConv, ARMAConv, ...) are refused: from the second hop on, the propagated features are
    already in receiver frames and would need a second transport that no wrapper can insert.

    **Edge geometry** (``edge_geometry``): for layers whose ``forward`` takes ``edge_attr`` and whose
    ``edge_dim`` attribute is not ``None`` (GATConv, GATv2Conv, TransformerConv) or who have no
    ``edge_dim`` attribute (GINEConv), ``"auto"`` passes
    ``edge_attr = [rho_e(R_i) e_ij, R_i (x_j - x_i), safe_length(x_j - x_i)]`` (user edge features of type
    ``reps_edge`` first, then ``d + 1`` geometry channels): create the layer with
    ``edge_dim = reps_edge.size + d + 1`` (see :func:`geometry_dim`). Layers reading ``pos``
    (PointNetConv, PointTransformerConv) receive positions in the receiver's frame instead: the receiver
    at ``0``, the sender at :math:`R_i (x_j - x_i)` (hook/message: ``pos`` is zeros and ``pos_j`` is
    replaced per edge; expand: ``pos = (pos_src_copies, zeros)``). The layer never sees global coordinates.

    Args:
        layer: an instance of a PyG ``MessagePassing`` layer (not modified; its input channels must be
            ``reps_in.size`` and its output channels ``reps_out.size``).
        reps_in: type of the input features (in local frames).
        reps_out: type of the output features; ``None`` = ``reps_in``.
        dim: space dimension for string reps (default 3 or the reps' dim).
        reps_edge: type of optional user edge features ``edge_attr`` (global, moved by
            :math:`\rho_e(R_i)`); default: scalars of whatever size is passed.
        edge_geometry: which geometry channels to append to ``edge_attr`` (``"auto"``: ``"rel_dist"`` for
            layers that take edge features as described above, else ``"none"``).
        mode: see above.
        message_args: for ``mode="message"``: the names of the ``propagate`` arguments whose sender parts
            are per-node projections to transport (default: the table above for the known layers).
        transport: ``False`` disables the feature transport (ablation / negative control: the result is
            then *not* equivariant for non-scalar reps). Geometry stays local.
        length_eps: smoothing of the edge length, see :func:`safe_length`.

    Shapes:
        x: ``[N, reps_in.size]`` or bipartite ``([N_src, S], [N_dst, S])``;
        edge_index: ``[2, E]`` (or a :class:`TFGraph`, then no ``frames``/``pos``);
        frames: ``[N, d, d]`` or ``([N_src, d, d], [N_dst, d, d])``; pos: ``[N, d]`` or a pair;
        edge_attr: ``[E, reps_edge.size]`` -> ``[N_dst, reps_out.size]`` in the receivers' local frames.
    """

    def __init__(
        self,
        layer: nn.Module,
        reps_in: "str | TensorReps",
        reps_out: "str | TensorReps | None" = None,
        *,
        dim: int | None = None,
        reps_edge: "str | TensorReps | None" = None,
        edge_geometry: EdgeGeometry = "auto",
        mode: Mode = "auto",
        message_args: "Sequence[str] | None" = None,
        transport: bool = True,
        length_eps: float = 1e-6,
    ):
        super().__init__()
        from torch_geometric.nn.conv import MessagePassing

        if not isinstance(layer, MessagePassing):
            raise TypeError(f"layer: expected a torch_geometric MessagePassing instance, got {type(layer).__name__}")
        if _class_names(layer) & _UNSUPPORTED:
            raise TypeError(
                f"layer: {type(layer).__name__} is not supported (multi-hop or feature-graph layers would need "
                "a second transport between frames inside the layer)"
            )
        if getattr(layer, "flow", "source_to_target") != "source_to_target":
            raise ValueError("layer: only flow='source_to_target' is supported (edge_index[1] is the receiver)")
        self.layer = layer
        self.reps_in = _resolve_reps(reps_in, dim, "reps_in")
        d = self.reps_in.dim
        self.reps_out = self.reps_in if reps_out is None else _resolve_reps(reps_out, d, "reps_out")
        self.reps_edge = None if reps_edge is None else _resolve_reps(reps_edge, d, "reps_edge")
        if mode not in _MODES:
            raise ValueError(f"mode: expected one of {', '.join(repr(m) for m in _MODES)}, got {mode!r}")
        if edge_geometry not in ("auto", "rel_dist", "rel", "dist", "none"):
            raise ValueError(
                f"edge_geometry: expected 'auto', 'rel_dist', 'rel', 'dist' or 'none', got {edge_geometry!r}"
            )
        if not (isinstance(length_eps, (int, float)) and length_eps > 0):
            raise ValueError(f"length_eps: expected a positive float, got {length_eps!r}")
        self.mode = mode
        self.transport = bool(transport)
        self.length_eps = float(length_eps)
        params = inspect.signature(layer.forward).parameters
        self._reads_pos = "pos" in params
        self._takes_edge_attr = "edge_attr" in params
        if edge_geometry == "auto":
            wants = self._takes_edge_attr and getattr(layer, "edge_dim", "absent") is not None
            edge_geometry = "rel_dist" if wants else "none"
        if edge_geometry != "none" and not self._takes_edge_attr:
            raise ValueError(f"edge_geometry: {type(layer).__name__}.forward takes no `edge_attr`")
        self.edge_geometry: EdgeGeometry = edge_geometry
        names = _class_names(layer)
        if mode == "plain" and not self._plain_possible():
            raise ValueError(
                "mode: 'plain' needs all-scalar reps_in (no transport) and a layer that reads no `pos`"
            )
        if mode == "gcn" and "GCNConv" not in names:
            raise ValueError(f"mode: 'gcn' is the adapter for GCNConv, got {type(layer).__name__}")
        self._skip_lin = "GCNConv" in names
        if mode == "global" and not self._global_possible():
            raise ValueError(
                f"mode: 'global' needs a layer with a message linear in x_j ({sorted(_LINEAR_MESSAGE)}), "
                f"a 'sum'/'mean' aggregation and reps_in without 'pos' blocks"
            )
        self._message_spec: _MessageSpec | None = None
        if message_args is not None:
            if isinstance(message_args, str) or not all(isinstance(a, str) and a for a in message_args):
                raise TypeError(f"message_args: expected a sequence of argument names, got {message_args!r}")
            if not message_args:
                raise ValueError("message_args: must name at least one propagate argument")
            self._message_spec = _MessageSpec(tuple(message_args))  # generic: per-edge transport
        elif mode == "message":
            self._message_spec = _message_spec(layer)
            if self._message_spec is None:
                raise ValueError(
                    f"mode: 'message' needs a layer with known per-node projections ({sorted(_MESSAGE_ARGS)}, "
                    f"methods not overridden) or message_args=(...) naming them; got {type(layer).__name__}"
                )
        if message_args is not None and mode != "message":
            raise ValueError("message_args: only used with mode='message'")

    # -- mode resolution ---------------------------------------------------------------------------------
    def _plain_possible(self) -> bool:
        return (self.reps_in.is_scalar or not self.transport) and not self._reads_pos

    def _global_possible(self) -> bool:
        names = _class_names(self.layer)
        aggr = getattr(self.layer, "aggr", None)
        ok = bool(names & _LINEAR_MESSAGE) and isinstance(aggr, str) and aggr in _LINEAR_AGGR
        ok = ok and not self.reps_in.has_pos and not self._reads_pos
        if ok and "SAGEConv" in names:
            ok = not getattr(self.layer, "project", False)
        if ok and self._skip_lin:
            lin = getattr(self.layer, "lin", None)
            ok = lin is not None and getattr(lin, "bias", None) is None
        return ok

    def resolved_mode(self) -> str:
        """The mode ``"auto"`` picks for this layer (before a possible runtime fallback:
        global -> hook/gcn, hook -> expand)."""
        if self.mode != "auto":
            return self.mode
        if self._plain_possible():
            return "plain"
        if self._global_possible():
            return "global"
        names = _class_names(self.layer)
        if names & _GCN_LIKE:
            return "gcn"
        if names & _EXPAND_FIRST and not (self.reps_in.is_scalar or not self.transport):
            return "expand"
        return "hook"

    @property
    def edge_dim(self) -> int:
        """Edge channels passed to the layer, excluding user edge features: ``geometry_dim(d, ...)``."""
        return geometry_dim(self.reps_in.dim, self.edge_geometry)

    def extra_repr(self) -> str:
        return (
            f"reps_in={str(self.reps_in)!r}, reps_out={str(self.reps_out)!r}, dim={self.reps_in.dim}, "
            f"mode={self.mode!r} -> {self.resolved_mode()!r}, edge_geometry={self.edge_geometry!r}"
            + ("" if self.transport else ", transport=False")
        )

    # -- forward -----------------------------------------------------------------------------------------
    def forward(
        self,
        x: "Tensor | PairTensor",
        edge_index: "Tensor | TFGraph",
        frames: "Tensor | PairTensor | None" = None,
        pos: "Tensor | PairTensor | None" = None,
        edge_attr: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        graph = _as_graph(edge_index, frames, pos)
        reps, d = self.reps_in, self.reps_in.dim
        x_src, x_dst, (f_src, f_dst), (p_src, p_dst) = _features_on_graph(graph, reps, *_pair(x, "x"))
        homogeneous, dtype = graph.homogeneous, x_src.dtype
        needs_pos = self.edge_geometry != "none" or self._reads_pos or reps.has_pos
        if p_src is None and needs_pos:
            why = "reps_in has 'pos' blocks" if reps.has_pos else (
                f"{type(self.layer).__name__} reads positions" if self._reads_pos else "edge geometry is on"
            )
            raise ValueError(f"pos: node positions are required ({why})")
        if "size" in kwargs:
            raise ValueError("size: not supported; the node counts are taken from x (pass a pair for bipartite)")
        src, dst = graph.src, graph.dst
        # edge features for the layer: user features in the receiver frame + local geometry
        extra = None
        if edge_attr is not None:
            if not self._takes_edge_attr:
                raise ValueError(f"edge_attr: {type(self.layer).__name__}.forward takes no `edge_attr`")
            edge_attr = _check_tensor(edge_attr, "edge_attr")
            if edge_attr.dim() == 1:
                edge_attr = edge_attr.unsqueeze(-1)
            if edge_attr.dim() != 2 or edge_attr.shape[0] != src.shape[0]:
                raise ValueError(f"edge_attr: expected shape [{src.shape[0]}, C], got {tuple(edge_attr.shape)}")
            edge_attr = edge_attr.to(dtype)
            if self.reps_edge is not None:
                if edge_attr.shape[1] != self.reps_edge.size:
                    raise ValueError(
                        f"edge_attr: last dimension {edge_attr.shape[1]} does not match reps_edge "
                        f"{str(self.reps_edge)!r} of size {self.reps_edge.size}"
                    )
                if not self.reps_edge.is_scalar:
                    if self.reps_edge.has_pos:
                        raise ValueError("reps_edge: 'pos' blocks are not meaningful for edge features")
                    edge_attr = self.reps_edge.to_local(edge_attr, f_dst.index_select(0, dst))
            extra = edge_attr
        if self.edge_geometry != "none":
            geom = graph.geometry(self.edge_geometry, self.length_eps, dtype)
            extra = geom if extra is None else torch.cat([extra, geom], dim=-1)
        if extra is not None:
            kwargs["edge_attr"] = extra
        args = (x_src, x_dst, homogeneous, f_src, f_dst, p_src, p_dst, graph)

        mode = self.resolved_mode()
        if mode in ("hook", "global", "message") and torch.compiler.is_compiling():
            if self.mode in ("hook", "global", "message"):
                raise RuntimeError(
                    f"mode: {mode!r} does not work under torch.compile (PyG skips hooks); use 'expand'"
                )
            mode = "gcn" if self._skip_lin else "expand"
        if mode == "global":
            try:
                return self._check_out(self._forward_hook(*args, dict(kwargs), kind="global"))
            except _NotHookable as err:
                if self.mode == "global":
                    raise ValueError(f"mode: 'global' is invalid for {type(self.layer).__name__}: {err}") from None
                mode = "gcn" if self._skip_lin else "hook"
        if mode == "plain":
            x_arg = x_src if homogeneous else (x_src, x_dst)
            out = self.layer(x=x_arg, edge_index=graph.edge_index, **kwargs)
        elif mode == "message" and (self.reps_out.is_scalar or not self.transport) and not self._reads_pos and (
            self.reps_in.is_scalar or not self.transport
        ):  # nothing to move: scalar projections of scalar inputs are invariant as they are
            x_arg = x_src if homogeneous else (x_src, x_dst)
            out = self.layer(x=x_arg, edge_index=graph.edge_index, **kwargs)
        elif mode == "message":
            try:
                out = self._forward_hook(*args, dict(kwargs), kind="message")
            except _NotHookable as err:
                raise ValueError(f"mode: 'message' is invalid for {type(self.layer).__name__}: {err}") from None
        elif mode == "hook":
            try:
                out = self._forward_hook(*args, dict(kwargs))
            except _NotHookable as err:
                if self.mode == "hook":
                    raise ValueError(
                        f"mode: 'hook' is invalid for {type(self.layer).__name__}: {err}; use mode='expand'"
                    ) from None
                out = self._forward_expand(*args, kwargs)
        elif mode == "expand":
            out = self._forward_expand(*args, kwargs)
        else:  # gcn
            if not homogeneous:
                raise ValueError("x: GCNConv does not support bipartite input")
            out = self._forward_gcn(x_src, f_src, p_src, graph, kwargs)
        return self._check_out(out)

    def _check_out(self, out):
        y = out[0] if isinstance(out, tuple) else out
        if isinstance(y, Tensor) and (y.dim() != 2 or y.shape[-1] != self.reps_out.size):
            raise ValueError(
                f"reps_out: the layer returned shape {tuple(y.shape)}, which does not match reps_out "
                f"{str(self.reps_out)!r} of size {self.reps_out.size}"
            )
        return out

    # -- hooked modes (hook, global, message) ------------------------------------------------------------
    def _forward_hook(self, x_src, x_dst, homogeneous, f_src, f_dst, p_src, p_dst, graph, kwargs, kind="hook"):
        layer = self.layer
        pos_token_src = None
        if self._reads_pos:
            # the layer never sees global positions: every node sits at the origin of its own frame;
            # the sender's position is replaced per edge by R_i (x_j - x_i) in the message hook.
            pos_token_src = torch.zeros_like(p_src)
            pos_token_dst = pos_token_src if homogeneous else torch.zeros_like(p_dst)
            kwargs["pos"] = pos_token_src if homogeneous else (pos_token_src, pos_token_dst)
        session = _HookSession(
            self, x_src, f_src, f_dst, p_src, p_dst, pos_token_src, graph, kind=kind,
            spec=self._message_spec if kind == "message" else None,
        )
        handles = [
            layer.register_propagate_forward_pre_hook(session.pre_propagate),
            layer.register_message_forward_pre_hook(session.pre_message),
            layer.register_edge_update_forward_pre_hook(session.pre_edge_update),
        ]
        if kind in ("global", "message"):
            handles.append(layer.register_aggregate_forward_hook(session.post_aggregate))
        if kind == "global" and self._skip_lin:
            handles.append(layer.lin.register_forward_hook(session.lin_hook))
        if kind == "message" and session.spec.edge_lin is not None:
            edge_lin = getattr(layer, session.spec.edge_lin, None)
            if isinstance(edge_lin, nn.Module):
                handles.append(edge_lin.register_forward_pre_hook(session.edge_lin_pre_hook))
                handles.append(edge_lin.register_forward_hook(session.edge_lin_hook))
        try:
            x_arg = x_src if homogeneous else (x_src, x_dst)
            out = layer(x=x_arg, edge_index=graph.edge_index, **kwargs)
        finally:
            for h in handles:
                h.remove()
        if kind == "global" and (session.n_global or (self._skip_lin and session._g is None)):
            raise _NotHookable("the aggregation was not intercepted as expected")
        if session.n_global:
            raise RuntimeError(f"TFConv: {type(layer).__name__} did not aggregate as expected (message mode)")
        if session.pending:
            raise RuntimeError(
                f"TFConv: {type(layer).__name__} ran propagate without calling `message` (fused path); "
                "use mode='expand'"
            )
        return out

    # -- expand mode -------------------------------------------------------------------------------------
    def _copies(self, x_src, homogeneous, f_src, f_dst, p_src, p_dst, graph, m):
        """Transported sender copies ``[M + E, S]`` (self copies first) and remapped sources ``[E]``."""
        reps = self.reps_in
        src, dst = graph.src, graph.dst
        n_e = src.shape[0]
        ar_m = torch.arange(m, device=src.device)
        if self.transport and not reps.is_scalar:
            edge_part = transport_edges(reps, x_src, f_src, f_dst, src, dst, pos_src=p_src, pos_dst=p_dst,
                                        layout=graph.layout, cache=graph.cache)
            if homogeneous:
                self_part = x_src[:m]
            else:
                self_part = transport_edges(reps, x_src, f_src, f_dst[:m], ar_m, ar_m, pos_src=p_src,
                                            pos_dst=p_dst[:m])
            x_copies = torch.cat([self_part, edge_part], 0)
        else:
            x_copies = torch.cat([x_src[:m], x_src.index_select(0, src)], 0)
        is_self = (src == dst) & (src < m)
        new_src = torch.where(is_self, src, m + torch.arange(n_e, device=src.device))
        pos_copies = None
        if self._reads_pos:
            if homogeneous:
                own = p_src.new_zeros(m, reps.dim)
            else:
                own = local_edge_geometry(p_src, p_dst, f_dst, ar_m, ar_m, "rel")
            pos_copies = torch.cat([own, graph.geometry("rel", dtype=p_src.dtype)], 0)
        return x_copies, new_src, pos_copies

    def _forward_expand(self, x_src, x_dst, homogeneous, f_src, f_dst, p_src, p_dst, graph, kwargs):
        if getattr(self.layer, "flow", "source_to_target") != "source_to_target":
            raise ValueError("layer: expand mode supports only flow='source_to_target'")
        n_src, n_dst = x_src.shape[0], x_dst.shape[0]
        m = min(n_src, n_dst)
        x_copies, new_src, pos_copies = self._copies(x_src, homogeneous, f_src, f_dst, p_src, p_dst, graph, m)
        if self._reads_pos:
            kwargs["pos"] = (pos_copies, torch.zeros(n_dst, self.reps_in.dim, dtype=x_src.dtype, device=x_src.device))
        ei = torch.stack([new_src, graph.dst])
        try:
            return self.layer(x=(x_copies, x_dst), edge_index=ei, **kwargs)
        except ValueError as err:
            if "tuple" in str(err) or "bipartite" in str(err):
                raise ValueError(
                    f"layer: {type(self.layer).__name__} does not accept bipartite input, which expand mode "
                    f"needs ({err})"
                ) from err
            raise

    # -- GCN adapter -------------------------------------------------------------------------------------
    def _forward_gcn(self, x, frames, pos, graph, kwargs):
        from torch_geometric.utils import add_remaining_self_loops, scatter

        layer = self.layer
        if layer.flow != "source_to_target":
            raise ValueError("layer: the GCNConv adapter supports only flow='source_to_target'")
        n = x.shape[0]
        src, dst = graph.src, graph.dst
        n_e = src.shape[0]
        # node set = [the n nodes themselves; one transported copy per edge]
        x_copies, new_src, _ = self._copies(x, True, frames, frames, pos, pos, graph, n)
        w = kwargs.pop("edge_weight", None)
        if w is not None:
            w = _check_tensor(w, "edge_weight").to(x.dtype)
            if w.shape != (n_e,):
                raise ValueError(f"edge_weight: expected shape [{n_e}], got {tuple(w.shape)}")
        ei = torch.stack([new_src, dst])
        if layer.normalize:
            # copy e gets a self-loop weighted by its sender's GCN degree, so that GCN's symmetric
            # normalisation on the expanded graph equals d_i^-1/2 w_ij d_j^-1/2 of the original graph
            w0 = torch.ones(n_e, dtype=x.dtype, device=x.device) if w is None else w
            if layer.add_self_loops:
                fill = 2.0 if layer.improved else 1.0
                ei_l, w_l = add_remaining_self_loops(graph.edge_index, w0, fill, n)
            else:
                ei_l, w_l = graph.edge_index, w0
            deg = scatter(w_l, ei_l[1], dim=0, dim_size=n, reduce="sum")
            copy_ids = n + torch.arange(n_e, device=x.device)
            ei = torch.cat([ei, torch.stack([copy_ids, copy_ids])], dim=1)
            w = torch.cat([w0, deg.index_select(0, src)])
        out = layer(x=x_copies, edge_index=ei, edge_weight=w, **kwargs)
        return out[:n]
