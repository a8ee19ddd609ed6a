r"""Tensor-frame attention with the global-frame trick (LLoCa, Spinner et al. 2025).

In tensor frames an attention layer needs, for every edge, the key and value of the sender moved into
the receiver's frame, :math:`k_{ij} = \rho(R_i R_j^\top) k_j`, :math:`v_{ij} = \rho(R_i R_j^\top) v_j`
(:math:`O(E)` transports). Because :math:`\rho` is orthogonal (Cartesian tensors, pseudo signs
:math:`\pm 1`),

.. math::

    \langle q_i, \rho(R_i R_j^\top) k_j \rangle = \langle \rho(R_i^\top) q_i, \rho(R_j^\top) k_j \rangle
    = \langle Q_i, K_j \rangle, \qquad
    \sum_j a_{ij}\, \rho(R_i R_j^\top) v_j = \rho(R_i) \sum_j a_{ij} V_j,

with global-frame :math:`Q_i = \rho(R_i^\top) q_i`, :math:`K_j`, :math:`V_j` computed once per node
(:math:`O(N)`). Any standard attention kernel then applies unchanged: a PyG edge softmax on a sparse
graph, or :func:`torch.nn.functional.scaled_dot_product_attention` on dense per-graph blocks; the result
is mapped back to the receiver's frame by :math:`\rho(R_i)`. (The Frobenius inner product of two
order-:math:`k` tensors is :math:`O(d)`-invariant; the product of two pseudo-tensors is a normal scalar.)
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from ..geometry import scatter_sum
from ..reps import TensorReps
from .tensor_frames.checks import _check_device, _check_edge_index, _check_features, _check_module_device, check_frames
from .tensor_frames.geometry import edge_frames
from .tensor_frames.local import _resolve_reps

__all__ = ["TensorFrameAttention"]


class TensorFrameAttention(nn.Module):
    r"""Multi-head attention between tensor-frame node features.

    .. math::

        q_i = W_q f_i,\ k_j = W_k f_j,\ v_j = W_v f_j \quad(\text{local tensors of type } \texttt{reps\_qk},
        \texttt{reps\_v}),\\
        a_{ij} = \operatorname{softmax}_j \frac{\langle q_i, \rho(R_i R_j^\top) k_j\rangle}{\sqrt{|q|}},\qquad
        f_i' = W_o \big[\textstyle\sum_j a_{ij}\, \rho(R_i R_j^\top) v_j\big] + W_s f_i,

    per head. ``path="global"`` evaluates it with :math:`O(N)` frame changes (see the module docstring),
    ``path="edge"`` with the per-edge transports (reference implementation, :math:`O(E)`).

    Args:
        reps_in: type of the input node features (local frames).
        reps_out: type of the output node features.
        reps_qk: type of one head's query/key (e.g. ``"8x0n+4x1n"``).
        reps_v: type of one head's value (default ``reps_qk``).
        heads: number of heads.
        dim: space dimension for string reps.
        path: ``"global"`` (fast) or ``"edge"`` (reference).
        skip: add the linear skip connection :math:`W_s f_i`.

    ``edge_index=None`` means full attention within each graph (``batch`` vector, default one graph); the
    global path then uses ``scaled_dot_product_attention`` on padded dense blocks.

    Shapes:
        x: ``[N, reps_in.size]``, frames: ``[N, d, d]``, edge_index: ``[2, E]`` or ``None``,
        batch: ``[N]`` -> ``[N, reps_out.size]``
    """

    def __init__(
        self,
        reps_in: "str | TensorReps",
        reps_out: "str | TensorReps",
        *,
        reps_qk: "str | TensorReps",
        reps_v: "str | TensorReps | None" = None,
        heads: int = 1,
        dim: int | None = None,
        path: Literal["global", "edge"] = "global",
        skip: bool = True,
    ):
        super().__init__()
        self.reps_in = _resolve_reps(reps_in, dim, "reps_in")
        d = self.reps_in.dim
        self.reps_out = _resolve_reps(reps_out, d, "reps_out")
        self.reps_qk = _resolve_reps(reps_qk, d, "reps_qk")
        self.reps_v = self.reps_qk if reps_v is None else _resolve_reps(reps_v, d, "reps_v")
        for r, name in ((self.reps_qk, "reps_qk"), (self.reps_v, "reps_v")):
            if r.has_pos:
                raise ValueError(f"{name}: 'pos' blocks are not allowed (attention needs linear types)")
            if r.size == 0:
                raise ValueError(f"{name}: must not be empty")
        if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1:
            raise ValueError(f"heads: expected a positive integer, got {heads!r}")
        if path not in ("global", "edge"):
            raise ValueError(f"path: expected 'global' or 'edge', got {path!r}")
        self.heads, self.path = heads, path
        c = self.reps_in.size
        self.lin_q = nn.Linear(c, heads * self.reps_qk.size, bias=False)
        self.lin_k = nn.Linear(c, heads * self.reps_qk.size, bias=False)
        self.lin_v = nn.Linear(c, heads * self.reps_v.size, bias=False)
        self.lin_o = nn.Linear(heads * self.reps_v.size, self.reps_out.size)
        self.lin_s = nn.Linear(c, self.reps_out.size, bias=False) if skip else None

    def extra_repr(self) -> str:
        return (
            f"reps_in={str(self.reps_in)!r}, reps_out={str(self.reps_out)!r}, reps_qk={str(self.reps_qk)!r}, "
            f"reps_v={str(self.reps_v)!r}, heads={self.heads}, path={self.path!r}"
        )

    def forward(
        self,
        x: Tensor,
        frames: Tensor,
        edge_index: Tensor | None = None,
        batch: Tensor | None = None,
        *,
        path: Literal["global", "edge"] | None = None,
    ) -> Tensor:
        path = self.path if path is None else path
        if path not in ("global", "edge"):
            raise ValueError(f"path: expected 'global' or 'edge', got {path!r}")
        d, H = self.reps_in.dim, self.heads
        if isinstance(x, Tensor):
            _check_device("x", x, ("frames", frames), ("edge_index", edge_index), ("batch", batch))
            _check_module_device(self, x)
        x = _check_features(x, None, self.reps_in.size)
        n = x.shape[0]
        frames = check_frames(frames, n, d).to(x.dtype)
        if batch is not None:
            if not isinstance(batch, Tensor) or batch.shape != (n,) or batch.dtype != torch.long:
                raise ValueError(f"batch: expected an int64 tensor of shape [{n}]")
        if edge_index is not None:
            edge_index = _check_edge_index(edge_index, n, n)
        q = self.lin_q(x).view(n, H, -1)
        k = self.lin_k(x).view(n, H, -1)
        v = self.lin_v(x).view(n, H, -1)
        scale = 1.0 / math.sqrt(self.reps_qk.size)
        if path == "global":
            Rb = frames.unsqueeze(1)  # [N, 1, d, d] broadcast over heads
            Q = self.reps_qk.to_global(q, Rb)
            K = self.reps_qk.to_global(k, Rb)
            V = self.reps_v.to_global(v, Rb)
            if edge_index is None:
                o = self._dense(Q, K, V, batch, scale)
            else:
                o = self._sparse(Q, K, V, edge_index[0], edge_index[1], n, scale)
            o = self.reps_v.to_local(o, Rb)
        else:
            if edge_index is None:
                edge_index = self._full_graph(n, batch, x.device)
            src, dst = edge_index[0], edge_index[1]
            R = edge_frames(frames, frames, src, dst).unsqueeze(1)  # [E, 1, d, d]
            det = None
            if any(b.parity == "p" for b in (*self.reps_qk.blocks, *self.reps_v.blocks)):
                dt = torch.linalg.det(frames)
                det = (dt.index_select(0, dst) * dt.index_select(0, src)).unsqueeze(1)
            k_ij = self.reps_qk.transform(k.index_select(0, src), R, det=det)
            v_ij = self.reps_v.transform(v.index_select(0, src), R, det=det)
            o = self._sparse_edges(q.index_select(0, dst), k_ij, v_ij, dst, n, scale)
        out = self.lin_o(o.reshape(n, -1))
        if self.lin_s is not None:
            out = out + self.lin_s(x)
        return out

    # -- kernels -----------------------------------------------------------------------------------------
    @staticmethod
    def _full_graph(n: int, batch: Tensor | None, device) -> Tensor:
        if batch is None:
            batch = torch.zeros(n, dtype=torch.long, device=device)
        same = batch.unsqueeze(0) == batch.unsqueeze(1)
        dst, src = same.nonzero(as_tuple=True)
        return torch.stack([src, dst])

    def _sparse(self, Q, K, V, src, dst, n, scale):
        return self._sparse_edges(Q.index_select(0, dst), K.index_select(0, src), V.index_select(0, src), dst, n, scale)

    @staticmethod
    def _sparse_edges(q_e, k_e, v_e, dst, n, scale):
        from torch_geometric.utils import softmax

        logits = (q_e * k_e).sum(-1) * scale  # [E, H]
        a = softmax(logits, dst, num_nodes=n)
        return scatter_sum(a.unsqueeze(-1) * v_e, dst, n)

    @staticmethod
    def _dense(Q, K, V, batch, scale):
        from torch_geometric.utils import to_dense_batch

        n, H = Q.shape[0], Q.shape[1]
        if batch is None:
            Qd, Kd, Vd = Q.unsqueeze(0), K.unsqueeze(0), V.unsqueeze(0)
            mask = None
        else:
            Qd, mask = to_dense_batch(Q.reshape(n, -1), batch)
            Kd, _ = to_dense_batch(K.reshape(n, -1), batch)
            Vd, _ = to_dense_batch(V.reshape(n, -1), batch)
            B, M = mask.shape
            Qd, Kd, Vd = Qd.view(B, M, H, -1), Kd.view(B, M, H, -1), Vd.view(B, M, H, -1)
        # [B, H, M, S]
        Qd, Kd, Vd = Qd.transpose(1, 2), Kd.transpose(1, 2), Vd.transpose(1, 2)
        attn_mask = None if mask is None else mask[:, None, None, :]
        o = nn.functional.scaled_dot_product_attention(Qd, Kd, Vd, attn_mask=attn_mask, scale=scale)
        o = o.transpose(1, 2)  # [B, M, H, S]
        return o.reshape(-1, H, o.shape[-1]) if mask is None else o[mask]
