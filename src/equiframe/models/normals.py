r"""Models of the point-cloud normal estimation experiment (unoriented normals, SPEC 4.3).

Every model maps a point cloud to one (unnormalised, unoriented) normal vector per point::

    model(pos) -> normals        # pos [B, N, d] or [N, d]  ->  [B, N, d] or [N, d]

The loss :func:`equiframe.datasets.shapes.normal_loss` normalises the prediction and ignores its
sign, so only the *line* spanned by the output matters.

* :class:`PointNetSeg` — plain segmentation-style PointNet: shared per-point MLP, max-pooled global
  feature concatenated to the per-point features, per-point head. Not equivariant (negative control).
* :class:`DGCNN` — plain dynamic graph CNN: EdgeConv layers (:class:`torch_geometric.nn.EdgeConv`,
  message ``h([x_i, x_j - x_i])``, max aggregation) on a k-NN graph rebuilt in feature space before
  every layer (:func:`equiframe.geometry.knn_graph`; ``torch_cluster`` is not needed).
* :class:`FANormals` — any of those backbones wrapped in :class:`~equiframe.FrameAveraging` over the
  global E(3) PCA frame of each cloud: inputs ``{"pos": "pos"}``, output ``"1x1n"`` (a vector per
  point), exactly E(3)-equivariant.
* :class:`LocalPointNet` — FA-Local-PointNet: one local PCA frame ``R_i`` per point
  (:func:`~equiframe.frames.local.local_pca_frames` over ``k`` neighbours); a PointNet reads the
  neighbourhood in that frame, ``{R_i (x_j - x_i)}_j``, and predicts the normal in local coordinates,
  mapped back with ``R_i^T``.
* :class:`TFPointNet` — TF-PointNet++ (single scale, no subsampling): unmodified
  :class:`torch_geometric.nn.PointNetConv` layers made tensor-frame equivariant by
  :class:`~equiframe.nn.tensor_frames.TFConv`, hidden features of type ``hidden_reps`` (scalars and
  vectors, e.g. ``"32x0n+8x1n"``), local PCA or learned frames, a ``1x1n`` head mapped to global.
* :class:`KNNPCANormals` — the learning-free k-NN PCA baseline
  (:func:`~equiframe.datasets.shapes.knn_pca_normals`, ``k = 16``), no parameters.

The equivariant models declare ``inputs = {"pos": "pos"}`` and ``output = "1x1n"`` for
:func:`equiframe.testing.assert_equivariant`.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor, nn

from ..averaging import FrameAveraging
from ..datasets.shapes import knn_pca_normals
from ..frames.local import LearnedFrames, local_pca_frames
from ..geometry import knn_graph
from ..reps import TensorReps

__all__ = [
    "DGCNN",
    "FANormals",
    "KNNPCANormals",
    "LocalPointNet",
    "NORMALS_MODELS",
    "NormalsModelName",
    "PointNetSeg",
    "TFPointNet",
    "build_normals_model",
]

NormalsModelName = Literal["pointnet", "dgcnn", "fa-pointnet", "fa-dgcnn", "fa-local-pointnet", "tf-pointnet",
                           "knn-pca"]
NORMALS_MODELS: tuple[str, ...] = get_args(NormalsModelName)
FAMode = Literal["all", "canonical", "stochastic"]
FrameKind = Literal["pca", "learned"]

#: input / output types of the equivariant models (for the equivariance tests)
NORMALS_TYPES = {"pos": "pos"}


# ------------------------------------------------------------------------------------------ helpers
def _check_pos(pos: Tensor, dim: int | None = None) -> None:
    if not isinstance(pos, Tensor):
        raise TypeError(f"pos: expected a tensor [B, N, d] or [N, d], got {type(pos).__name__}")
    if pos.dim() not in (2, 3):
        raise ValueError(f"pos: expected shape [B, N, d] or [N, d], got {tuple(pos.shape)}")
    if not pos.is_floating_point():
        raise TypeError(f"pos: expected a floating point tensor, got {pos.dtype}")
    if pos.shape[-2] == 0:
        raise ValueError("pos: empty point cloud (N = 0)")
    if dim is not None and pos.shape[-1] != dim:
        raise ValueError(f"pos: expected {dim} coordinates per point, got shape {tuple(pos.shape)}")
    if not bool(torch.isfinite(pos).all()):
        raise ValueError("pos: contains NaN or inf")


def _check_dtype(pos: Tensor, module: nn.Module) -> None:
    p = next(module.parameters(), None)
    if p is not None and p.dtype != pos.dtype:
        raise TypeError(f"pos: dtype {pos.dtype} does not match the model's parameters ({p.dtype}); "
                        f"call .to({pos.dtype}) on the model")


def _positive(name: str, v: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    return v


def _mlp(sizes: list[int], *, last_act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_act:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _flatten(pos: Tensor) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """``[B, N, d]`` (or ``[N, d]``) -> flat points ``[B N, d]``, batch vector ``[B N]``, original shape."""
    shape = tuple(pos.shape)
    if pos.dim() == 2:
        return pos, torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device), shape
    B, N, d = shape
    batch = torch.arange(B, device=pos.device).repeat_interleave(N)
    return pos.reshape(B * N, d), batch, shape


# ------------------------------------------------------------------------------------------ PointNet
class PointNetSeg(nn.Module):
    r"""Plain segmentation-style PointNet for per-point vectors.

    .. math::
        h_i = \mathrm{MLP}_1(x_i),\quad g = \max_i \mathrm{MLP}_2(h_i),\quad
        \hat n_i = \mathrm{MLP}_3([h_i, g])

    (max over the points of each cloud, channel-wise). Not equivariant.

    Args:
        dim: space dimension ``d``.
        hidden: width of the per-point features ``h_i``.
        global_dim: width of the global feature ``g``.

    Shapes:
        pos ``[B, N, d]`` or ``[N, d]`` -> ``[B, N, d]`` or ``[N, d]``
    """

    def __init__(self, dim: int = 3, hidden: int = 64, global_dim: int = 256):
        super().__init__()
        self.dim = _positive("dim", dim)
        hidden, global_dim = _positive("hidden", hidden), _positive("global_dim", global_dim)
        self.point = _mlp([dim, hidden, hidden])
        self.pool = _mlp([hidden, 2 * hidden, global_dim])
        self.head = _mlp([hidden + global_dim, 2 * hidden, hidden, dim], last_act=False)

    def forward(self, pos: Tensor) -> Tensor:
        _check_pos(pos, self.dim)
        _check_dtype(pos, self)
        x = pos if pos.dim() == 3 else pos[None]
        h = self.point(x)  # [B, N, H]
        g = self.pool(h).amax(dim=1, keepdim=True).expand(-1, x.shape[1], -1)
        out = self.head(torch.cat([h, g], dim=-1))
        return out if pos.dim() == 3 else out[0]


# ------------------------------------------------------------------------------------------ DGCNN
class DGCNN(nn.Module):
    r"""Plain DGCNN (dynamic EdgeConv) for per-point vectors.

    .. math::
        h^{l+1}_i = \max_{j \in \mathrm{kNN}_k(h^l_i)} \mathrm{MLP}_l\big([h^l_i,\ h^l_j - h^l_i]\big),\quad
        g = \max_i W [h^1_i, \dots, h^L_i],\quad \hat n_i = \mathrm{MLP}([h^1_i, \dots, h^L_i, g])

    with ``h^0 = x`` and the k-NN graph of layer ``l`` built in the space of ``h^l`` (dynamic graph;
    layer 0 uses the positions). Not equivariant.

    Args:
        dim: space dimension ``d``.
        k: neighbours per point (20 in the DGCNN paper).
        hidden: width of every EdgeConv layer.
        layers: number of EdgeConv layers.
        global_dim: width of the global feature.
        dynamic: rebuild the graph in feature space before every layer (``False``: the positions'
            graph throughout).

    Shapes:
        pos ``[B, N, d]`` or ``[N, d]`` -> ``[B, N, d]`` or ``[N, d]``
    """

    def __init__(self, dim: int = 3, k: int = 20, hidden: int = 64, layers: int = 3, global_dim: int = 256,
                 dynamic: bool = True):
        super().__init__()
        from torch_geometric.nn import EdgeConv  # noqa: PLC0415

        self.dim = _positive("dim", dim)
        self.k = _positive("k", k)
        hidden, layers, global_dim = _positive("hidden", hidden), _positive("layers", layers), _positive("global_dim", global_dim)
        self.dynamic = bool(dynamic)
        sizes = [dim] + [hidden] * layers
        self.convs = nn.ModuleList(EdgeConv(_mlp([2 * sizes[i], hidden, hidden]), aggr="max") for i in range(layers))
        self.pool = _mlp([hidden * layers, global_dim])
        self.head = _mlp([hidden * layers + global_dim, 2 * hidden, hidden, dim], last_act=False)

    def forward(self, pos: Tensor) -> Tensor:
        _check_pos(pos, self.dim)
        _check_dtype(pos, self)
        x, batch, shape = _flatten(pos)
        B = shape[0] if len(shape) == 3 else 1
        h, feats = x, []
        edge_index = knn_graph(x, self.k, batch)
        for i, conv in enumerate(self.convs):
            if i > 0 and self.dynamic:
                edge_index = knn_graph(h, self.k, batch)
            h = conv(h, edge_index)
            feats.append(h)
        hcat = torch.cat(feats, dim=-1)  # [B N, H L]
        N = hcat.shape[0] // B
        g = self.pool(hcat).reshape(B, N, -1).amax(dim=1, keepdim=True).expand(-1, N, -1).reshape(B * N, -1)
        out = self.head(torch.cat([hcat, g], dim=-1))
        return out.reshape(shape)


# ------------------------------------------------------------------------------------------ FA
class FANormals(nn.Module):
    r"""Frame Averaging over the global E(3) PCA frame of each cloud around a normal-estimation backbone.

    .. math::  \hat n(X) = \sum_{(R, t) \in F(X)} w\, R^\top\, \Phi\big(R (X - t)\big)

    with ``F(X)`` the PCA frames of :func:`equiframe.frames.pca_frame` (8 sign choices in 3-D,
    ``mode="all"``; one element with ``"canonical"``; sampled elements while training with
    ``"stochastic"``, all at evaluation). Exactly E(3)-equivariant (vector output ``1x1n``).

    Args:
        backbone: any module ``pos [M, N, d] -> [M, N, d]`` (:class:`PointNetSeg`, :class:`DGCNN`).
        group: the frame group (``"E(3)"``: centred at the centroid, rotations and reflections).
        mode: FA mode (see :class:`~equiframe.FrameAveraging`).
        n_samples: elements per cloud in ``"stochastic"`` mode.
        generator: random source of the stochastic mode.

    Shapes:
        pos ``[B, N, d]`` or ``[N, d]`` -> ``[B, N, d]`` or ``[N, d]``
    """

    def __init__(self, backbone: nn.Module, group: str = "E(3)", mode: FAMode = "all", n_samples: int | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        if mode not in get_args(FAMode):
            raise ValueError(f"mode: expected one of {get_args(FAMode)}, got {mode!r}")
        self.inputs = dict(NORMALS_TYPES)
        self.output = "1x1n"
        self.fa = FrameAveraging(backbone, group=group, inputs=self.inputs, output=self.output, mode=mode,
                                 n_samples=n_samples if mode == "stochastic" else None, generator=generator)

    @property
    def backbone(self) -> nn.Module:
        return self.fa.backbone

    def forward(self, pos: Tensor) -> Tensor:
        _check_pos(pos)
        _check_dtype(pos, self)
        return self.fa(pos=pos)


# ------------------------------------------------------------------------------------------ local frames
def _dense_knn(x: Tensor, batch: Tensor, k: int) -> Tensor:
    """Neighbour indices ``[M, k]`` of every point (k nearest, itself excluded; graphs need > k points)."""
    ei = knn_graph(x, k, batch)
    M = x.shape[0]
    if ei.shape[1] != M * k:
        raise ValueError(f"pos: every cloud needs more than k = {k} points")
    return ei[0].reshape(M, k)  # sorted by target, then distance


class LocalPointNet(nn.Module):
    r"""FA-Local-PointNet: a PointNet on each point's neighbourhood in its local PCA frame.

    .. math::
        R_i = \mathrm{LocalPCA}(\{x_j - x_i\}_{j \in \mathrm{kNN}(i)}),\quad
        y_{ij} = R_i (x_j - x_i),\quad
        \hat n_i = R_i^\top\, \mathrm{MLP}_2\big(\max_j \mathrm{MLP}_1([y_{ij}, |y_{ij}|])\big)

    Local frames are O(d)-equivariant, ``R_i(QX + s) = R_i(X) Q^T``, hence the prediction is
    E(d)-equivariant wherever the neighbourhood spectrum is separated (see
    :func:`~equiframe.frames.local.local_pca_frames`). The frame's last axis already is the PCA
    normal; the network learns the correction (curvature, edges, corners).

    Args:
        dim: space dimension.
        k: neighbourhood size (frame and PointNet).
        hidden: width of the MLPs.

    Shapes:
        pos ``[B, N, d]`` or ``[N, d]`` -> same shape
    """

    def __init__(self, dim: int = 3, k: int = 20, hidden: int = 64):
        super().__init__()
        self.dim, self.k = _positive("dim", dim), _positive("k", k)
        hidden = _positive("hidden", hidden)
        self.inputs = dict(NORMALS_TYPES)
        self.output = "1x1n"
        self.local = _mlp([dim + 1, hidden, 2 * hidden])
        self.head = _mlp([2 * hidden, hidden, dim], last_act=False)

    def forward(self, pos: Tensor) -> Tensor:
        _check_pos(pos, self.dim)
        _check_dtype(pos, self)
        x, batch, shape = _flatten(pos)
        nbr = _dense_knn(x, batch, self.k)  # [M, k]
        dst = torch.arange(x.shape[0], device=x.device).repeat_interleave(self.k)
        R = local_pca_frames(x, torch.stack([nbr.reshape(-1), dst]))  # [M, d, d], rows = axes
        scale = (x[nbr] - x[:, None]).norm(dim=-1).amax(dim=1).clamp_min(1e-12)  # invariant scale per point
        y = torch.einsum("mab,mkb->mka", R, x[nbr] - x[:, None]) / scale[:, None, None]  # [M, k, d]
        h = self.local(torch.cat([y, y.norm(dim=-1, keepdim=True)], dim=-1)).amax(dim=1)
        n_local = self.head(h)  # [M, d]
        return torch.einsum("mab,ma->mb", R, n_local).reshape(shape)  # R_i^T n_local


# ------------------------------------------------------------------------------------------ tensor frames
class TFPointNet(nn.Module):
    r"""TF-PointNet++ (single scale): PyG ``PointNetConv`` layers made equivariant by ``TFConv``.

    .. math::
        f^{l+1}_i = \gamma_l\Big(\max_{j \in \mathrm{kNN}(i) \cup \{i\}}
            h_l\big(\rho(R_i R_j^\top) f^l_j,\ R_i (x_j - x_i)\big)\Big),\qquad
        \hat n_i = R_i^\top\, W f^L_i

    with ``h_l``, ``gamma_l`` the unmodified ``local_nn`` / ``global_nn`` MLPs of
    :class:`torch_geometric.nn.PointNetConv`, features of type ``hidden_reps`` in the local frames
    ``R_i`` (local PCA over ``k`` neighbours, or :class:`~equiframe.frames.local.LearnedFrames`),
    the vectors moved between neighbouring frames by the wrapper. The input feature is the
    constant scalar 1; the last layer's ``1x1n`` block (``W``: a per-block linear map of the vector
    channels) is the normal in the local frame. PointNet++'s farthest-point subsampling is left out
    (all layers run at full resolution on the ``k``-NN graph of the positions).

    Args:
        dim: space dimension.
        hidden_reps: type of the hidden features (scalars ``0n`` and vectors ``1n``).
        hidden: width of the MLPs inside the PointNetConv layers.
        layers: number of PointNetConv layers.
        k: neighbours per point.
        frames: ``"pca"`` (local PCA over the ``k`` neighbours) or ``"learned"``.
        learned_cutoff: cutoff radius of the learned frames (positions are in the unit ball).

    Shapes:
        pos ``[B, N, d]`` or ``[N, d]`` -> same shape
    """

    def __init__(self, dim: int = 3, hidden_reps: str = "32x0n+8x1n", hidden: int = 64, layers: int = 3,
                 k: int = 16, frames: FrameKind = "pca", learned_cutoff: float = 0.3):
        super().__init__()
        from torch_geometric.nn import PointNetConv  # noqa: PLC0415

        from ..nn.tensor_frames import TFConv  # noqa: PLC0415

        self.dim, self.k = _positive("dim", dim), _positive("k", k)
        hidden, layers = _positive("hidden", hidden), _positive("layers", layers)
        if frames not in get_args(FrameKind):
            raise ValueError(f"frames: expected one of {get_args(FrameKind)}, got {frames!r}")
        self.frame_kind = frames
        self.inputs = dict(NORMALS_TYPES)
        self.output = "1x1n"
        self.hidden_reps = TensorReps(hidden_reps, dim=dim)
        if any(b.parity != "n" or b.order > 1 for b in self.hidden_reps.blocks):
            raise ValueError("hidden_reps: expected scalars 0n and vectors 1n only (e.g. '32x0n+8x1n')")
        n_vec = sum(b.mul for b in self.hidden_reps.blocks if b.order == 1)
        if n_vec == 0:
            raise ValueError("hidden_reps: needs at least one vector block (1x1n) for the normal")
        reps_in = TensorReps("1x0n", dim=dim)
        convs = []
        r_prev = reps_in
        for _ in range(layers):
            conv = PointNetConv(local_nn=_mlp([r_prev.size + dim, hidden, hidden]),
                                global_nn=_mlp([hidden, self.hidden_reps.size], last_act=False))
            convs.append(TFConv(conv, reps_in=r_prev, reps_out=self.hidden_reps))
            r_prev = self.hidden_reps
        self.convs = nn.ModuleList(convs)
        self.act = nn.SiLU()
        self._vec_index = self._vector_channels()
        # normal = sum_c w_c v_c over the vector channels (a linear map that commutes with rotations)
        self.head = nn.Linear(n_vec, 1, bias=False)
        self.learned = LearnedFrames(dim, learned_cutoff, k=k) if frames == "learned" else None

    def _vector_channels(self) -> Tensor:
        """Indices ``[n_vec, d]`` of the vector channels in the feature storage."""
        rows = []
        for b, sl in self.hidden_reps.slices():
            if b.order == 1:
                rows.append(torch.arange(sl.start, sl.stop).reshape(b.mul, self.dim))
        return torch.cat(rows, 0)

    def _gate(self, f: Tensor) -> Tensor:
        """Nonlinearity on the scalar channels only (vectors pass unchanged: stays equivariant)."""
        out = f.clone()
        for b, sl in self.hidden_reps.slices():
            if b.order == 0:
                out[:, sl] = self.act(f[:, sl])
        return out

    def local_frames(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        """``R_i`` ``[M, d, d]`` (rows = axes) from the ``k``-NN graph ``edge_index``."""
        if self.learned is not None:
            return self.learned(x, edge_index)
        return local_pca_frames(x, edge_index)

    def forward(self, pos: Tensor) -> Tensor:
        _check_pos(pos, self.dim)
        _check_dtype(pos, self)
        x, batch, shape = _flatten(pos)
        edge_index = knn_graph(x, self.k, batch)
        R = self.local_frames(x, edge_index, batch)
        f = x.new_ones(x.shape[0], 1)
        for i, conv in enumerate(self.convs):
            g = conv(f, edge_index, frames=R, pos=x)
            f = self._gate(g) if i < len(self.convs) - 1 else g
        v = f[:, self._vec_index.to(f.device)]  # [M, n_vec, d]
        n_local = self.head(v.transpose(1, 2)).squeeze(-1)  # [M, d]
        return torch.einsum("mab,ma->mb", R, n_local).reshape(shape)  # R_i^T n_local


# ------------------------------------------------------------------------------------------ baseline
class KNNPCANormals(nn.Module):
    """Learning-free baseline: smallest principal axis of the ``k`` nearest neighbours
    (:func:`~equiframe.datasets.shapes.knn_pca_normals`); no parameters.

    Shapes:
        pos ``[B, N, d]`` or ``[N, d]`` -> same shape
    """

    def __init__(self, k: int = 16):
        super().__init__()
        self.k = _positive("k", k)
        self.inputs = dict(NORMALS_TYPES)
        self.output = "1x1n"

    def forward(self, pos: Tensor) -> Tensor:
        _check_pos(pos)
        return knn_pca_normals(pos, self.k)


# ------------------------------------------------------------------------------------------ factory
def build_normals_model(
    name: NormalsModelName,
    *,
    dim: int = 3,
    hidden: int = 64,
    k: int = 20,
    fa_mode: FAMode = "all",
    hidden_reps: str = "32x0n+8x1n",
    tf_frames: FrameKind = "pca",
    tf_layers: int = 3,
    tf_k: int = 16,
    dgcnn_layers: int = 3,
    baseline_k: int = 16,
) -> nn.Module:
    """Build a normal-estimation model by name (see the module docstring).

    Args:
        name: one of :data:`NORMALS_MODELS`.
        dim: space dimension.
        hidden: width of the MLPs.
        k: neighbourhood size of DGCNN and FA-Local-PointNet.
        fa_mode: FA mode of ``fa-pointnet`` / ``fa-dgcnn``.
        hidden_reps, tf_frames, tf_layers, tf_k: TF-PointNet++ options.
        dgcnn_layers: EdgeConv layers of (FA-)DGCNN.
        baseline_k: neighbourhood of the k-NN PCA baseline.
    """
    if name not in NORMALS_MODELS:
        raise ValueError(f"name: expected one of {NORMALS_MODELS}, got {name!r}")
    if name == "pointnet":
        return PointNetSeg(dim, hidden)
    if name == "dgcnn":
        return DGCNN(dim, k, hidden, dgcnn_layers)
    if name == "fa-pointnet":
        return FANormals(PointNetSeg(dim, hidden), group=f"E({dim})", mode=fa_mode)
    if name == "fa-dgcnn":
        return FANormals(DGCNN(dim, k, hidden, dgcnn_layers), group=f"E({dim})", mode=fa_mode)
    if name == "fa-local-pointnet":
        return LocalPointNet(dim, k, hidden)
    if name == "tf-pointnet":
        return TFPointNet(dim, hidden_reps, hidden, tf_layers, tf_k, tf_frames)
    return KNNPCANormals(baseline_k)
