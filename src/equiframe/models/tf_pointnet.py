"""TF-PointNet++: the normal-estimation PointNet++ made equivariant by Tensor Frames layers.

Split out of :mod:`equiframe.models.normals`, which re-exports :class:`TFPointNet`.
"""

from __future__ import annotations

from typing import get_args

import torch
from torch import Tensor, nn

from ..frames.local import LearnedFrames
from ..reps import TensorReps

from ._normals_common import (
    NORMALS_TYPES,
    FrameKind,
    Head,
    NormalSign,
    _checked_cloud,
    _choice,
    _mlp,
    _positive,
    _zero_last,
    tf_head_kind,
)
from .normals_geometry import _flat_edges, _gather, dense_knn, farthest_point_sampling
from .normals_local import PlaneFitHead, _pca_frames_dense

# ------------------------------------------------------------------------------------------ tensor frames
class TFPointNet(nn.Module):
    r"""TF-PointNet++: a PointNet++ whose PyG ``PointNetConv`` layers are made equivariant by ``TFConv``.

    Levels ``0..L``: level 0 is the cloud, level ``l + 1`` the ``ratio``-fraction of level ``l`` kept
    by :func:`farthest_point_sampling` (E(d)-invariant). Every point keeps its level-0 local frame
    ``R_i`` (local PCA of its ``k`` nearest points, or learned). All layers are

    .. math::
        f'_i = \gamma\Big(\max_{j \in \mathcal N(i)} h\big(\rho(R_i R_j^\top) f_j,\ R_i (x_j - x_i)\big)\Big)

    (``h``, ``gamma``: the unmodified ``local_nn`` / ``global_nn`` of
    :class:`torch_geometric.nn.PointNetConv`; the transport and the local geometry are done by
    :class:`~equiframe.nn.tensor_frames.TFConv`), with features of type ``hidden_reps`` stored in the
    frames:

    1. ``local_layers`` layers on the ``k``-NN graph of level 0 (local geometry);
    2. set abstraction: level ``l + 1`` points pool the features of their ``k`` nearest level-``l``
       points (bipartite ``PointNetConv``);
    3. feature propagation: every level-``l`` point pools the features of its ``fp_k`` nearest
       level-``l + 1`` points, added to its own level-``l`` features (skip connection);
    4. normal head in the local frame, ``\hat n_i = R_i^\top n_local``:

       * ``head="wlsq"`` (default with PCA frames): a learned reweighted plane fit
         (:class:`PlaneFitHead`) through the ``k`` nearest points, started at the PCA normal ``e_d``,
         with per-edge features ``h_ij = MLP([y_ij, |y_ij|])`` (the local geometry; with
         ``edge_transport=True`` also the sender's final features moved into frame ``i``,
         ``\rho(R_i R_j^\top) f_j``, :func:`~equiframe.nn.tensor_frames.transport`), per-point
         features ``[f_i, max_j h_ij]`` (``pool_edges``) and the neighbours' PCA normals seen from ``i``,
         ``R_i R_j^\top e_d``;
       * ``"residual"``: ``n_local = e_d + MLP(f_i)`` (zero-initialised: starts at the baseline);
       * ``"free"``: ``n_local = MLP(f_i)`` (default with learned frames).

    Input features (in the local frame, so invariant): the constant 1 and the normalised
    eigenvalues of the neighbourhood covariance (``(d+1)x0n``), and the neighbourhood's normal line
    ``e_d e_d^T`` (``1x2n``), which the transport turns into the neighbours' normal lines seen from
    ``i``, ``R_i u_j u_j^T R_i^T`` (sign-free). Features inside a frame are invariant, so the head
    and all MLPs are unconstrained; equivariance comes only from the frames and the transport.

    Args:
        dim: space dimension.
        hidden_reps: type of the hidden features (tensors of any order, e.g. ``"32x0n+8x1n"``).
        hidden: width of the MLPs inside the PointNetConv layers.
        k: neighbours per point (frames, local layers and set abstraction).
        local_layers: PointNetConv layers at full resolution.
        ratios: fraction of points kept at each set-abstraction level (``()``: no hierarchy).
        fp_k: coarse neighbours read by the feature propagation.
        frames: ``"pca"`` (local PCA over the ``k`` neighbours) or ``"learned"``.
        head: ``"wlsq"``, ``"residual"`` or ``"free"`` (``None``: ``"wlsq"`` with PCA frames, ``"free"``
            with learned frames).
        learned_cutoff: cutoff radius of the learned frames (positions are in the unit ball).
        iterations: reweighting steps of the ``"wlsq"`` head.
        normalize: measure positions in units of the cloud's mean distance to the ``k``-th neighbour
            (an invariant scale), so that the offsets ``R_i (x_j - x_i)`` the layers read are ``O(1)``
            whatever the sampling density (PointNet++ divides offsets by its ball radius); the frames
            are computed before, from the raw positions.
        pool_edges: ``"wlsq"`` head: also give it the max over neighbours of the per-edge features
            (``g_i = max_j h_ij``, as FA-Local-PointNet's head gets), beside ``f_i``. ``None``: ``True``
            with the ``"wlsq"`` head (the only head it applies to).
        edge_transport: ``"wlsq"`` head: include the transported sender features
            ``rho(R_i R_j^T) f_j`` in the per-edge features. ``None``: ``False``, i.e.
            ``h_ij = MLP([y_ij, |y_ij|])`` from the local geometry (FA-Local-PointNet's edge features), the
            tensor-frame context entering through ``f_i`` -- on the procedural normals benchmark this head
            reaches 0.0785 (1 - cos^2) against 0.0954 with transported edge features (BENCHMARKS.md).
        normal_sign: sign of the PCA frames' normal (last) axis: ``"moments"`` (the third-moment
            rule of :func:`~equiframe.frames.local.local_pca_frames`, undecided -- and then not
            equivariant -- on exactly flat patches, so that neighbouring frames on one face can point
            to opposite sides) or ``"centroid"`` (default: away from the cloud's centroid,
            ``sign(u_i . (x_i - mean_j x_j))``, E(d)-equivariant and the same for all points of a flat
            face, so vector messages between them are coherent). The other axes keep the moment rule.

    Shapes:
        pos ``[B, N, d]`` or ``[N, d]`` -> same shape
    """

    def __init__(self, dim: int = 3, hidden_reps: str = "32x0n+8x1n", hidden: int = 64, k: int = 16,
                 local_layers: int = 2, ratios: tuple[float, ...] = (0.25, 0.25), fp_k: int = 3,
                 frames: FrameKind = "pca", head: Head | None = None, learned_cutoff: float = 0.3,
                 iterations: int = 2, normalize: bool = True, normal_sign: NormalSign = "centroid",
                 pool_edges: bool | None = None, edge_transport: bool | None = None):
        super().__init__()
        from torch_geometric.nn import PointNetConv  # noqa: PLC0415

        from ..nn.tensor_frames import TFConv  # noqa: PLC0415

        self.dim, self.k = _positive("dim", dim), _positive("k", k)
        hidden, local_layers = _positive("hidden", hidden), _positive("local_layers", local_layers)
        self.fp_k = _positive("fp_k", fp_k)
        self.frame_kind = _choice("frames", frames, get_args(FrameKind))
        self.normalize = bool(normalize)
        self.normal_sign = _choice("normal_sign", normal_sign, get_args(NormalSign))
        head = tf_head_kind(head, frames)
        self.head_kind = _choice("head", head, get_args(Head))
        ratios = tuple(float(r) for r in ratios)
        if any(not 0 < r < 1 for r in ratios):
            raise ValueError(f"ratios: expected fractions in (0, 1), got {ratios}")
        self.ratios = ratios
        self.inputs = dict(NORMALS_TYPES)
        self.output = "1x1n"
        self.hidden_reps = TensorReps(hidden_reps, dim=dim)
        if self.hidden_reps.has_pos:
            raise ValueError("hidden_reps: 'pos' blocks are not allowed in hidden features")
        if self.hidden_reps.size == 0:
            raise ValueError("hidden_reps: empty")
        self.in_reps = TensorReps(f"{dim + 1}x0n+1x2n", dim=dim)

        def conv(r_in: TensorReps) -> TFConv:
            layer = PointNetConv(local_nn=_mlp([r_in.size + dim, hidden, hidden]),
                                 global_nn=_mlp([hidden, self.hidden_reps.size], last_act=False),
                                 add_self_loops=False)
            return TFConv(layer, reps_in=r_in, reps_out=self.hidden_reps)

        self.local_convs = nn.ModuleList(conv(self.in_reps if i == 0 else self.hidden_reps)
                                         for i in range(local_layers))
        self.down = nn.ModuleList(conv(self.hidden_reps) for _ in ratios)
        self.up = nn.ModuleList(conv(self.hidden_reps) for _ in ratios)
        self.act = nn.ReLU()
        if self.head_kind == "wlsq":
            pool_edges = True if pool_edges is None else pool_edges
            edge_transport = False if edge_transport is None else edge_transport
            edge_in = (self.hidden_reps.size if edge_transport else 0) + dim + 1
            self.edge_mlp = _mlp([edge_in, hidden, hidden])
            self.pool_edges, self.edge_transport = bool(pool_edges), bool(edge_transport)
            point_dim = self.hidden_reps.size + (hidden if self.pool_edges else 0)
            self.head = PlaneFitHead(hidden, point_dim, hidden, iterations, neighbour_lines=True)
        else:
            if pool_edges or edge_transport is False:
                raise ValueError("pool_edges / edge_transport: options of the 'wlsq' head")
            self.pool_edges, self.edge_transport = False, True
            self.edge_mlp = None
            self.head = _mlp([self.hidden_reps.size, hidden, dim], last_act=False)
            if self.head_kind == "residual":
                _zero_last(self.head)
        self.learned = LearnedFrames(dim, learned_cutoff, k=k) if frames == "learned" else None

    def local_frames(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Frames ``[B N, d, d]`` (rows = axes), neighbour lists ``[B, N, k]`` and the normalised
        eigenvalues ``[B N, d]`` of the neighbourhood covariance along the frame axes."""
        R, idx, lam = _pca_frames_dense(x, self.k)
        if self.learned is None and self.normal_sign == "centroid":
            # orient the normal axis (last row) away from the cloud's centroid: an equivariant rule that
            # also decides the sign on exactly flat patches, where the third moment vanishes
            B, N, d = x.shape
            out = (x - x.mean(dim=1, keepdim=True)).reshape(B * N, d).detach()
            flip = (R[:, d - 1] * out).sum(-1) < 0
            R = torch.cat([R[:, : d - 1], torch.where(flip[:, None], -R[:, d - 1], R[:, d - 1])[:, None]], dim=1)
        if self.learned is not None:
            B, N, d = x.shape
            R = self.learned(x.reshape(B * N, d), _flat_edges(idx[:, :, 1:], N))
            nbr = _gather(x.detach(), idx).reshape(B * N, self.k, d)
            y = nbr - nbr.mean(dim=1, keepdim=True)
            lam = torch.einsum("mab,mkb->mka", R, y).square().mean(dim=1)
            lam = lam / lam.sum(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        return R, idx, lam

    def forward(self, pos: Tensor) -> Tensor:
        x = _checked_cloud(pos, self, self.k)
        B, N, d = x.shape
        R, idx, lam = self.local_frames(x)  # level-0 frames of every point
        if self.normalize:
            # invariant length unit per cloud: the mean distance to the k-th neighbour (PointNet++ divides
            # its offsets by the ball radius), so that the offsets the layers read are O(1)
            kth = (_gather(x, idx[:, :, -1:])[:, :, 0] - x).norm(dim=-1)  # [B, N]
            x = x / kth.mean(dim=1).clamp_min(torch.finfo(x.dtype).tiny)[:, None, None]
        ed = torch.zeros(d * d, dtype=x.dtype, device=x.device)
        ed[-1] = 1.0  # e_d e_d^T, flattened
        f = torch.cat([x.new_ones(B * N, 1), lam, ed.expand(B * N, -1)], dim=-1)
        ei = _flat_edges(idx, N)
        xf = x.reshape(B * N, d)
        for i, c in enumerate(self.local_convs):
            f = c(f, ei, frames=R, pos=xf)
            f = self.act(f) if i < len(self.local_convs) - 1 else f
        # set abstraction: level l -> l + 1; a level is (indices into the level-0 points [B, m], features)
        offs = torch.arange(B, device=x.device) * N

        def flat(sel: Tensor) -> Tensor:  # per-cloud level-0 indices [B, m] -> rows of xf / R [B m]
            return (sel + offs[:, None]).reshape(-1)

        levels = [(torch.arange(N, device=x.device).expand(B, N), f)]
        for ratio, c in zip(self.ratios, self.down):
            sel, f_prev = levels[-1]
            n_prev = sel.shape[1]
            m = max(1, round(n_prev * ratio))
            p_prev = xf[flat(sel)].reshape(B, n_prev, d)
            keep = farthest_point_sampling(p_prev, m)  # [B, m], into level l
            sel_new = torch.gather(sel, 1, keep)
            nb = dense_knn(xf[flat(sel_new)].reshape(B, m, d), p_prev, min(self.k, n_prev))  # into level l
            rows = (keep + (torch.arange(B, device=x.device) * n_prev)[:, None]).reshape(-1)
            f_new = c((f_prev, f_prev[rows]), _flat_edges(nb, n_prev), frames=(R[flat(sel)], R[flat(sel_new)]),
                      pos=(xf[flat(sel)], xf[flat(sel_new)]))
            levels.append((sel_new, self.act(f_new)))
        # feature propagation: level l + 1 -> l, added to the level-l features (skip connection)
        f_up = levels[-1][1]
        for lvl in range(len(self.ratios) - 1, -1, -1):
            sel_c, sel_f, f_skip = levels[lvl + 1][0], levels[lvl][0], levels[lvl][1]
            n_c, n_f = sel_c.shape[1], sel_f.shape[1]
            nb = dense_knn(xf[flat(sel_f)].reshape(B, n_f, d), xf[flat(sel_c)].reshape(B, n_c, d), min(self.fp_k, n_c))
            f_up = f_skip + self.up[lvl]((f_up, f_skip), _flat_edges(nb, n_c), frames=(R[flat(sel_c)], R[flat(sel_f)]),
                                         pos=(xf[flat(sel_c)], xf[flat(sel_f)]))
            if lvl > 0:
                f_up = self.act(f_up)
        f = self.act(f_up)  # [B N, S], level-0 features in the local frames (invariant)
        e_d = torch.eye(d, dtype=x.dtype, device=x.device)[d - 1]
        if self.head_kind == "wlsq":
            # per edge j -> i of the level-0 k-NN graph: the sender's features moved into frame i and the
            # offset in frame i (scaled per point); the plane fit runs in the local frame
            from ..nn.tensor_frames import transport  # noqa: PLC0415

            src, dst = ei[0], ei[1]
            rel = (xf[src] - xf[dst]).reshape(B * N, self.k, d)
            y = torch.einsum("mab,mkb->mka", R, rel)
            y = y / y.norm(dim=-1).amax(dim=1).clamp_min(torch.finfo(x.dtype).tiny)[:, None, None]
            parts = [y, y.norm(dim=-1, keepdim=True)]
            if self.edge_transport:
                parts.insert(0, transport(self.hidden_reps, f[src], R, R, src, dst).reshape(B * N, self.k, -1))
            h = self.edge_mlp(torch.cat(parts, dim=-1))
            # the neighbours' PCA normals (last frame axes) moved into frame i: R_i R_j^T e_d = R_i u_j
            lines = torch.einsum("eab,eb->ea", R[dst], R[src, d - 1]).reshape(B * N, self.k, d)
            g = torch.cat([f, h.amax(dim=1)], dim=-1) if self.pool_edges else f
            n_local = self.head(h, g, y, e_d.expand(B * N, d), lines)
        else:
            n_local = self.head(f)  # [B N, d], invariant
            if self.head_kind == "residual":
                n_local = n_local + e_d
        out = torch.einsum("mab,ma->mb", R, n_local).reshape(B, N, d)  # R_i^T n_local
        return out if pos.dim() == 3 else out[0]
