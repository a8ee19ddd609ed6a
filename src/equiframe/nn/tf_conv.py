r"""A native tensor-frame message passing layer with an efficient transport hot path.

:class:`TensorFrameConv` implements

.. math::

    m_{ij} &= \phi\big(f_i,\ \rho(R_i R_j^\top) f_j,\ R_i (x_j - x_i),\ |x_j - x_i|,\ \rho_e(R_i) e_{ij}\big),\\
    a_i &= \operatorname{AGG}_{j \in N(i)} m_{ij} \quad (\text{sum or mean}),\qquad
    f_i' = \psi\big(f_i,\ a_i\big),

with MLPs :math:`\phi` (``message_layers`` linear layers) and :math:`\psi` (``update_layers``).
All inputs of :math:`\phi` and :math:`\psi` are invariant, so the layer maps local features of type
``reps_in`` to local features of type ``reps_out`` equivariantly.

Hot path (exact rewrites, no approximation):

* The first linear layer of :math:`\phi` is split by input: :math:`W_a f_i` and the part acting on the
  *scalar* channels of :math:`f_j` are computed once per node and gathered; only the tensorial channels
  of :math:`f_j` (the ones that change under transport) and the geometry go through a per-edge matmul.
  Scalars (``0n``) are never transported; each tensor order is one batched matmul over the edges.
* The last linear layer of :math:`\phi` commutes with the (linear) sum/mean aggregation and is applied
  per node after aggregating: :math:`\sum_j (W h_{ij} + b) = W \sum_j h_{ij} + \deg_i\, b`.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from ..geometry import scatter_sum
from ..reps import Block, TensorReps
from .mlp import mlp
from .tensor_frames.checks import _check_device, _check_edge_index, _check_features, _check_module_device, _check_pos, _pair
from .tensor_frames.geometry import geometry_dim, local_edge_geometry
from .tensor_frames.graph import TFGraph, _as_graph, _features_on_graph
from .tensor_frames.local import _resolve_reps
from .tf_transport import receiver_layout, transport_edges

__all__ = ["TensorFrameConv"]

Activation = Literal["silu", "relu", "gelu", "tanh"]

_ACT = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def _split_scalar(reps: TensorReps) -> tuple[Tensor, Tensor, TensorReps]:
    """Channel indices of the ``0n`` scalars and of the rest, and the reps of the rest (storage order)."""
    scal, tens, blocks = [], [], []
    for b, sl in reps.slices():
        idx = list(range(sl.start, sl.stop))
        if b.order == 0 and b.parity == "n":
            scal += idx
        else:
            tens += idx
            blocks.append(Block(b.mul, b.order, b.parity))
    return (
        torch.tensor(scal, dtype=torch.long),
        torch.tensor(tens, dtype=torch.long),
        TensorReps(tuple(blocks), dim=reps.dim),
    )


def _as_slice(idx: Tensor) -> slice | None:
    if idx.numel() == 0:
        return slice(0, 0)
    lo, hi = int(idx[0]), int(idx[-1]) + 1
    return slice(lo, hi) if hi - lo == idx.numel() and bool((idx == torch.arange(lo, hi)).all()) else None


class _ConvInputs(NamedTuple):
    """What :meth:`TensorFrameConv.forward` reads of a call (frames ``None`` for identity frames)."""

    x_src: Tensor
    x_dst: Tensor
    f_src: Tensor | None
    f_dst: Tensor | None
    p_src: Tensor | None
    p_dst: Tensor | None
    src: Tensor
    dst: Tensor
    layout: Any
    cache: Any
    n_dst: int
    dtype: torch.dtype
    graph: TFGraph | None


class TensorFrameConv(nn.Module):
    r"""Tensor-frame message passing with MLP message :math:`\phi` and update :math:`\psi`.

    Args:
        reps_in: type of the input node features (local frames).
        reps_out: type of the output node features (local frames).
        dim: space dimension for string reps (default 3 or the reps' dim).
        hidden_channels: width of both MLPs (and of the messages).
        message_layers: number of linear layers of :math:`\phi` (``>= 2``; the last one is applied after
            aggregation, which is exact for sum/mean).
        update_layers: number of linear layers of :math:`\psi` (``>= 1``).
        aggr: ``"sum"`` or ``"mean"``.
        reps_edge: type of optional user edge features (global; moved to the receiver frame by
            :math:`\rho_e(R_i)`); ``None`` = no edge features.
        geometry: append :math:`[R_i (x_j - x_i), |x_j - x_i|]` (``d + 1`` channels) to the message input.
        activation: nonlinearity of the MLPs.
        transport: ``False`` skips :math:`\rho(R_i R_j^\top)` (ablation only: not equivariant).
        length_eps: smoothing of the edge length (see :func:`~equiframe.nn.tensor_frames.safe_length`).

    ``frames=None`` in :meth:`forward` means identity frames: the layer is then a plain (non-equivariant)
    message passing network with the same architecture, the baseline used in the benchmarks. A
    :class:`~equiframe.nn.tensor_frames.TFGraph` may be passed instead of ``edge_index`` (then no
    ``frames``/``pos``): its layout, geometry and receiver matrices are shared with the other layers.

    Example:
        >>> import torch
        >>> from equiframe.frames import random_local_frames
        >>> from equiframe.nn import TensorFrameConv, ToLocal
        >>> from equiframe.geometry import knn_graph
        >>> gen = torch.Generator().manual_seed(0)
        >>> pos = torch.randn(20, 3, generator=gen)
        >>> edge_index = knn_graph(pos, k=4)
        >>> frames = random_local_frames(20, 3, generator=gen)
        >>> f_local = ToLocal("16x0n+8x1n", dim=3)(torch.randn(20, 40, generator=gen), frames)
        >>> conv = TensorFrameConv("16x0n+8x1n", "16x0n+8x1n", dim=3, hidden_channels=64)
        >>> out = conv(f_local, edge_index, frames, pos)
        >>> tuple(out.shape)
        (20, 40)

    Shapes:
        x: ``[N, reps_in.size]`` or ``([N_src, S], [N_dst, S])``; edge_index: ``[2, E]`` or a ``TFGraph``;
        frames: ``[N, d, d]`` or a pair; pos: ``[N, d]`` or a pair; edge_attr: ``[E, reps_edge.size]``
        -> ``[N_dst, reps_out.size]``
    """

    def __init__(
        self,
        reps_in: "str | TensorReps",
        reps_out: "str | TensorReps",
        *,
        dim: int | None = None,
        hidden_channels: int = 64,
        message_layers: int = 2,
        update_layers: int = 2,
        aggr: Literal["sum", "mean"] = "sum",
        reps_edge: "str | TensorReps | None" = None,
        geometry: bool = True,
        activation: Activation = "silu",
        transport: bool = True,
        length_eps: float = 1e-6,
    ):
        super().__init__()
        self.reps_in = _resolve_reps(reps_in, dim, "reps_in")
        d = self.reps_in.dim
        self.reps_out = _resolve_reps(reps_out, d, "reps_out")
        self.reps_edge = None if reps_edge is None else _resolve_reps(reps_edge, d, "reps_edge")
        if self.reps_edge is not None and self.reps_edge.has_pos:
            raise ValueError("reps_edge: 'pos' blocks are not meaningful for edge features")
        for name, val, lo in (("hidden_channels", hidden_channels, 1), ("message_layers", message_layers, 2),
                              ("update_layers", update_layers, 1)):
            if not isinstance(val, int) or isinstance(val, bool) or val < lo:
                raise ValueError(f"{name}: expected an integer >= {lo}, got {val!r}")
        if aggr not in ("sum", "mean"):
            raise ValueError(f"aggr: expected 'sum' or 'mean', got {aggr!r}")
        if activation not in _ACT:
            raise ValueError(f"activation: expected one of {sorted(_ACT)}, got {activation!r}")
        if not (isinstance(length_eps, (int, float)) and length_eps > 0):
            raise ValueError(f"length_eps: expected a positive float, got {length_eps!r}")
        self.aggr = aggr
        self.geometry = bool(geometry)
        self.transport = bool(transport)
        self.length_eps = float(length_eps)
        self.activation = activation
        scal, tens, reps_t = _split_scalar(self.reps_in)
        self.reps_tensor = reps_t
        self._scal_slice, self._tens_slice = _as_slice(scal), _as_slice(tens)
        self.register_buffer("_scal_idx", scal, persistent=False)
        self.register_buffer("_tens_idx", tens, persistent=False)
        c_in, c_s, c_t = self.reps_in.size, scal.numel(), tens.numel()
        c_e = 0 if self.reps_edge is None else self.reps_edge.size
        c_g = geometry_dim(d, "rel_dist") if self.geometry else 0
        h = hidden_channels
        # first message layer, split by input: receiver (per node), sender scalars (per node), per edge
        self.msg_dst = nn.Linear(c_in, h, bias=True)
        self.msg_src = nn.Linear(c_s, h, bias=False) if c_s else None
        self.msg_edge = nn.Linear(c_t + c_g + c_e, h, bias=False) if (c_t + c_g + c_e) else None
        act = _ACT[activation]
        mids: list[nn.Module] = []
        for _ in range(message_layers - 2):
            mids += [act(), nn.Linear(h, h)]
        mids.append(act())
        self.msg_mid = nn.Sequential(*mids)
        self.msg_out = nn.Linear(h, h)  # applied after aggregation (exact for sum/mean)
        self.update_mlp = mlp([c_in + h] + [h] * (update_layers - 1) + [self.reps_out.size], act)

    def extra_repr(self) -> str:
        return (
            f"reps_in={str(self.reps_in)!r}, reps_out={str(self.reps_out)!r}, dim={self.reps_in.dim}, "
            f"aggr={self.aggr!r}, geometry={self.geometry}" + ("" if self.transport else ", transport=False")
        )

    def _take(self, x: Tensor, sl: slice | None, idx: Tensor) -> Tensor:
        return x[:, sl] if sl is not None else x.index_select(1, idx)

    def forward(
        self,
        x: "Tensor | tuple[Tensor, Tensor]",
        edge_index: "Tensor | TFGraph",
        frames: "Tensor | tuple[Tensor, Tensor] | None" = None,
        pos: "Tensor | tuple[Tensor, Tensor] | None" = None,
        edge_attr: Tensor | None = None,
    ) -> Tensor:
        io = self._inputs(x, edge_index, frames, pos, edge_attr)
        pieces = self._edge_pieces(io, edge_attr)
        h = self.msg_dst(io.x_dst).index_select(0, io.dst)
        if self.msg_src is not None:
            h = h + self.msg_src(self._take(io.x_src, self._scal_slice, self._scal_idx)).index_select(0, io.src)
        if self.msg_edge is not None:
            e_in = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)
            h = h + self.msg_edge(e_in)
        h = self.msg_mid(h)
        return self.update_mlp(torch.cat([io.x_dst, self._aggregate(h, io.dst, io.n_dst)], dim=-1))

    def _inputs(self, x, edge_index, frames, pos, edge_attr) -> "_ConvInputs":
        """Features, frames, positions and edges of a call, checked (devices included): on a :class:`TFGraph`
        (or with ``frames``), or with identity frames (the plain, non-equivariant network of the same
        architecture)."""
        reps, d = self.reps_in, self.reps_in.dim
        x_src, x_dst, homogeneous = _pair(x, "x")
        if isinstance(x_src, Tensor):
            _check_device("x", x_src, ("x[1]", x_dst), ("edge_attr", edge_attr))
            _check_module_device(self, x_src, "x" if homogeneous else "x[0]")
        if isinstance(edge_index, TFGraph) or frames is not None:
            graph = _as_graph(edge_index, frames, pos, self.reps_in.dim)
            x_src, x_dst, (f_src, f_dst), (p_src, p_dst) = _features_on_graph(graph, reps, x_src, x_dst, homogeneous)
            if p_src is None and (self.geometry or reps.has_pos):
                raise ValueError("pos: node positions are required (geometry=True or reps_in has 'pos' blocks)")
            return _ConvInputs(x_src, x_dst, f_src, f_dst, p_src, p_dst, graph.src, graph.dst, graph.layout,
                               graph.cache, graph.n_dst, x_src.dtype, graph)
        x_src = _check_features(x_src, None, reps.size, "x" if homogeneous else "x[0]")
        x_dst = x_src if homogeneous else _check_features(x_dst, None, reps.size, "x[1]")
        n_src, n_dst, dtype = x_src.shape[0], x_dst.shape[0], x_src.dtype
        p_src = p_dst = None
        if pos is not None:
            p_src, p_dst, homo_p = _pair(pos, "pos")
            if homo_p != homogeneous:
                raise ValueError("pos: pass a (source, target) pair exactly when x is a bipartite pair")
            p_src = _check_pos(p_src, n_src, d, "pos" if homogeneous else "pos[0]").to(dtype)
            p_dst = p_src if homogeneous else _check_pos(p_dst, n_dst, d, "pos[1]").to(dtype)
        elif self.geometry or reps.has_pos:
            raise ValueError("pos: node positions are required (geometry=True or reps_in has 'pos' blocks)")
        _check_device("x", x_src, ("pos", p_src), ("pos[1]", p_dst), ("edge_index", edge_index))
        edge_index = _check_edge_index(edge_index, n_src, n_dst)
        src, dst = edge_index[0], edge_index[1]
        return _ConvInputs(x_src, x_dst, None, None, p_src, p_dst, src, dst, receiver_layout(src, dst, n_dst), None,
                           n_dst, dtype, None)

    def _edge_pieces(self, io: "_ConvInputs", edge_attr: Tensor | None) -> list[Tensor]:
        """The per-edge input of the first message layer: transported tensors, geometry, edge features."""
        d, dtype, src, dst = self.reps_in.dim, io.dtype, io.src, io.dst
        pieces = []
        if self.reps_tensor.size:
            if self.transport and io.f_src is not None:
                t_j = transport_edges(
                    self.reps_tensor, self._take(io.x_src, self._tens_slice, self._tens_idx), io.f_src, io.f_dst,
                    src, dst, pos_src=io.p_src, pos_dst=io.p_dst, layout=io.layout, cache=io.cache,
                )
            else:
                t_j = self._take(io.x_src, self._tens_slice, self._tens_idx).index_select(0, src)
                if self.reps_tensor.has_pos:  # identity frames: positions still move to the receiver's origin
                    t_j = self.reps_tensor.transform(
                        t_j, torch.eye(d, dtype=dtype, device=t_j.device),
                        io.p_src.index_select(0, src) - io.p_dst.index_select(0, dst),
                    )
            pieces.append(t_j)
        if self.geometry:
            if io.graph is not None:
                pieces.append(io.graph.geometry("rel_dist", self.length_eps, dtype))
            else:
                pieces.append(local_edge_geometry(io.p_src, io.p_dst, None, src, dst, "rel_dist", self.length_eps))
        if self.reps_edge is not None:
            if edge_attr is None:
                raise ValueError(f"edge_attr: required, reps_edge is {str(self.reps_edge)!r}")
            edge_attr = _check_features(edge_attr, src.shape[0], self.reps_edge.size, "edge_attr").to(dtype)
            if not self.reps_edge.is_scalar and io.f_dst is not None:
                edge_attr = self.reps_edge.to_local(edge_attr, io.f_dst.index_select(0, dst))
            pieces.append(edge_attr)
        elif edge_attr is not None:
            raise ValueError("edge_attr: given, but the layer was built with reps_edge=None")
        return pieces

    def _aggregate(self, h: Tensor, dst: Tensor, n_dst: int) -> Tensor:
        """Sum or mean of the messages per receiver, then the last message layer per node (exact for the
        linear sum / mean: the bias is scaled by the number of messages, or 0 / 1 for the mean)."""
        n_e = dst.shape[0]
        agg = scatter_sum(h, dst, n_dst)
        deg = scatter_sum(torch.ones(n_e, dtype=h.dtype, device=h.device), dst, n_dst)
        if self.aggr == "mean":
            agg = agg / deg.clamp(min=1).unsqueeze(-1)
            scale = (deg > 0).to(h.dtype).unsqueeze(-1)
        else:
            scale = deg.unsqueeze(-1)
        return nn.functional.linear(agg, self.msg_out.weight) + scale * self.msg_out.bias
