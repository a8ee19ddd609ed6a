r"""Models of the point-cloud normal estimation experiment (unoriented normals, SPEC 4.3).

Every model maps a batch of point clouds to one (unnormalised, unoriented) normal vector per point::

    model(pos) -> normals        # pos [B, N, d] or [N, d]  ->  [B, N, d] or [N, d]

The loss :func:`equiframe.datasets.shapes.normal_loss` normalises the prediction and ignores its
sign, so only the *line* spanned by the output matters.

**Local geometry as typed input** (``features``, the models with a global view). A global-frame
network sees a point only through its coordinates; the normal is a property of the point's
neighbourhood, which such a network would have to discover from coordinates alone. The models can be
given the k-NN geometry of every point as extra per-point input (:func:`knn_geometry`, the same
``k = 16`` neighbourhood, node included, as the k-NN PCA baseline). A PCA normal ``u`` is defined only
up to sign, so it is **not** passed as a vector but as sign-free order-2 tensors:

* ``"none"``: positions only (the classical PointNet / DGCNN / FA input).
* ``"cov"``: the trace-normalised neighbourhood covariance ``C_i / tr C_i`` (type ``1x2n``).
* ``"pca"`` (default of the learned global models): ``[u_i u_i^T, C_i / tr C_i]`` (type ``2x2n``): the
  normal's line and the shape of the neighbourhood (its eigenvalues tell planar from edge/corner).

Both tensors transform as ``T -> Q T Q^T`` under ``x -> Q x + s`` (reflections included), so
:class:`FANormals` declares them with their type to :class:`~equiframe.FrameAveraging`, which rotates
them into each frame (exactly equivariant), while the plain :class:`PointNetSeg` / :class:`DGCNN`
read the same numbers in global coordinates (so they stay non-equivariant: the i/SO(3) collapse is
still visible). The features are computed once per cloud from the input positions and detached (no
gradient flows through the neighbourhood eigen-decomposition).

Models:

* :class:`PointNetSeg` — plain segmentation-style PointNet (negative control).
* :class:`DGCNN` — plain dynamic graph CNN (EdgeConv, :class:`torch_geometric.nn.EdgeConv`).
* :class:`PlainNormals` — a plain backbone with the features in global coordinates and a line head.
* :class:`FANormals` — a backbone wrapped in :class:`~equiframe.FrameAveraging` over the global E(d)
  PCA frame of each cloud: inputs ``{"pos": "pos", "feat": "2x2n"}``, output ``"1x2n"`` (line) or
  ``"1x1n"`` (vector).
* :class:`LocalPointNet` — FA-Local-PointNet: a PointNet on each point's neighbourhood in its local
  PCA frame, predicting the normal in that frame (canonicalisation by a local frame; no transport).
* :class:`TFPointNet` — TF-PointNet++: a PointNet++ (set abstraction with farthest point sampling and
  k-NN grouping, feature propagation back to every point) whose every layer is an unmodified
  :class:`torch_geometric.nn.PointNetConv` made tensor-frame equivariant by
  :class:`~equiframe.nn.tensor_frames.TFConv`.
* :class:`KNNPCANormals` — the learning-free k-NN PCA baseline (``k = 16``), no parameters.

**Output of the global models** (``output``). An unoriented normal is a line, whose natural
equivariant type is the projector ``n n^T`` (``1x2n``), not a vector (a vector needs a sign that the
data does not define). ``output="line"`` (default) lets the backbone predict an order-2 tensor ``P``
(``d^2`` channels, mapped back by the frame as ``R^T P R``) and returns its dominant eigenvector
(:func:`line_to_normal`, power iteration started at the PCA normal): the input channel ``u u^T`` is
then already a correct output, and the network learns the correction. ``"vector"`` predicts a vector
(the classical head); ``"line-residual"`` predicts the line of ``u u^T + P`` (starts at the baseline).

**Normal head of the local-frame models** (``head``). With local PCA frames (centred at the
neighbourhood centroid, node included: the baseline's covariance) the last frame axis ``e_d`` *is*
the k-NN PCA normal, and PCA fails where the neighbourhood straddles two surface patches (edges,
corners, holes). ``head="wlsq"`` (default with PCA frames) fits the plane again with learned,
iteratively reweighted least squares (:class:`PlaneFitHead`: invariant per-neighbour weights from the
network's features and the residuals of the previous fit, started at ``e_d``; cf. Lenssen et al.,
CVPR 2020, *Deep Iterative Surface Normal Estimation*): the network only has to learn which
neighbours belong to the point's own patch. ``"residual"`` predicts ``n_local = e_d + \delta``
(zero-initialised: starts exactly at the baseline; measured to learn much more slowly); ``"free"``
predicts ``n_local`` from scratch (the default with learned frames, whose axes carry no normal).

The equivariant models declare ``inputs = {"pos": "pos"}`` and ``output = "1x1n"`` for
:func:`equiframe.testing.assert_equivariant`; their normal *line* ``n n^T`` is exactly equivariant
(the local-frame models also give an equivariant sign where the frames are non-degenerate; the
global line heads return an arbitrary sign). The metric only uses the line.
"""

from __future__ import annotations

from typing import get_args

import numpy as np
import torch
from torch import Tensor, nn

from ..averaging import FrameAveraging
from ._normals_common import (
    FEATURE_REPS,
    NORMALS_MODELS,
    NORMALS_TYPES,
    FAMode,
    FrameKind,
    GlobalOutput,
    Head,
    LocalFeatures,
    NormalSign,  # noqa: F401  (re-exported)
    NormalsModelName,
    _as_batch,
    _check_dtype,
    _check_feat,
    _check_pos,
    _checked_cloud,
    _choice,
    _feature_channels,
    _mlp,
    _positive,
    tf_head_kind,
)
from .normals_geometry import (
    KDTREE_MIN_POINTS,  # noqa: F401  (re-exported)
    _flat_edges,
    dense_knn,
    farthest_point_sampling,
    jet_normals,
    knn_geometry,
    line_to_normal,
    local_features,
    open3d_normals,
)
from .normals_local import (LocalPointNet, PlaneFitHead, PlaneVote, candidate_planes, ransac_normals,
                            weighted_plane_normal)
from .tf_pointnet import TFPointNet
from .._checks import check_int, check_tensor

# the public home of the split-out classes (pretrained manifests and pickles name ``module:Class``)
for _cls in (LocalPointNet, PlaneFitHead, PlaneVote, TFPointNet):
    _cls.__module__ = __name__
del _cls

__all__ = [
    "DGCNN",
    "FANormals",
    "FEATURE_REPS",
    "KNNPCANormals",
    "LocalFeatures",
    "LocalPointNet",
    "NORMALS_MODELS",
    "NormalsModelName",
    "PlaneFitHead",
    "PlaneVote",
    "PlainNormals",
    "PointNetSeg",
    "TFPointNet",
    "line_to_normal",
    "weighted_plane_normal",
    "build_normals_model",
    "candidate_planes",
    "dense_knn",
    "farthest_point_sampling",
    "jet_normals",
    "knn_geometry",
    "open3d_normals",
    "ransac_normals",
    "tf_head_kind",
]


# ------------------------------------------------------------------------------------------ PointNet
class PointNetSeg(nn.Module):
    r"""Plain segmentation-style PointNet for per-point vectors.

    .. math::
        h_i = \mathrm{MLP}_1([x_i, f_i]),\quad g = \max_i \mathrm{MLP}_2(h_i),\quad
        \hat n_i = \mathrm{MLP}_3([h_i, g])

    (max over the points of each cloud, channel-wise) with optional per-point features ``f_i``
    (``feat``, e.g. the :func:`local_features` in global coordinates). Not equivariant.

    Args:
        dim: space dimension ``d``.
        hidden: width of the per-point features ``h_i``.
        global_dim: width of the global feature ``g``.
        in_features: channels of ``feat`` (0: positions only).
        out_channels: channels per point (default ``d``: a vector; ``d^2`` for a line head).

    Shapes:
        pos ``[B, N, d]`` or ``[N, d]``, feat ``[B, N, in_features]`` -> ``[B, N, out_channels]`` or
        ``[N, out_channels]``
    """

    def __init__(self, dim: int = 3, hidden: int = 64, global_dim: int = 256, in_features: int = 0,
                 out_channels: int | None = None):
        super().__init__()
        self.dim = _positive("dim", dim)
        out_channels = dim if out_channels is None else _positive("out_channels", out_channels)
        hidden, global_dim = _positive("hidden", hidden), _positive("global_dim", global_dim)
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 0:
            raise ValueError(f"in_features: expected an integer >= 0, got {in_features!r}")
        self.in_features = in_features
        self.point = _mlp([dim + in_features, hidden, hidden])
        self.pool = _mlp([hidden, 2 * hidden, global_dim])
        self.head = _mlp([hidden + global_dim, 2 * hidden, hidden, out_channels], last_act=False)

    def forward(self, pos: Tensor, feat: Tensor | None = None) -> Tensor:
        _check_pos(pos, self.dim)
        _check_dtype(pos, self)
        feat = _check_feat(feat, pos, self.in_features)
        x = _as_batch(pos)
        if feat is not None:
            x = torch.cat([x, _as_batch(feat)], dim=-1)
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

    with ``h^0 = [x, f]`` (positions and optional per-point features ``f``) and the k-NN graph of layer
    ``l`` built in the space of ``h^l`` (dynamic graph; layer 0 uses the positions). Not equivariant.

    Args:
        dim: space dimension ``d``.
        k: neighbours per point (20 in the DGCNN paper).
        hidden: width of every EdgeConv layer.
        layers: number of EdgeConv layers.
        global_dim: width of the global feature.
        dynamic: rebuild the graph in feature space before every layer (``False``: the positions'
            graph throughout).
        in_features: channels of ``feat`` (0: positions only).
        out_channels: channels per point (default ``d``: a vector; ``d^2`` for a line head).

    Shapes:
        pos ``[B, N, d]`` or ``[N, d]``, feat ``[B, N, in_features]`` -> ``[B, N, out_channels]`` or
        ``[N, out_channels]``
    """

    def __init__(self, dim: int = 3, k: int = 20, hidden: int = 64, layers: int = 3, global_dim: int = 256,
                 dynamic: bool = True, in_features: int = 0, out_channels: int | None = None):
        super().__init__()
        from torch_geometric.nn import EdgeConv  # noqa: PLC0415

        self.dim = _positive("dim", dim)
        out_channels = dim if out_channels is None else _positive("out_channels", out_channels)
        self.k = _positive("k", k)
        hidden, layers, global_dim = _positive("hidden", hidden), _positive("layers", layers), _positive("global_dim", global_dim)
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 0:
            raise ValueError(f"in_features: expected an integer >= 0, got {in_features!r}")
        self.in_features = in_features
        self.dynamic = bool(dynamic)
        sizes = [dim + in_features] + [hidden] * layers
        self.convs = nn.ModuleList(EdgeConv(_mlp([2 * sizes[i], hidden, hidden]), aggr="max") for i in range(layers))
        self.pool = _mlp([hidden * layers, global_dim])
        self.head = _mlp([hidden * layers + global_dim, 2 * hidden, hidden, out_channels], last_act=False)

    def forward(self, pos: Tensor, feat: Tensor | None = None) -> Tensor:
        x = _checked_cloud(pos, self, self.k)
        feat = _check_feat(feat, pos, self.in_features)
        B, N, _ = x.shape
        h = x if feat is None else torch.cat([x, _as_batch(feat)], dim=-1)
        feats = []
        graph = x
        for i, conv in enumerate(self.convs):
            if i > 0 and self.dynamic:
                graph = h.reshape(B, N, -1)
            edge_index = _flat_edges(dense_knn(graph, graph, self.k, exclude_self=True), N)
            h = conv(h.reshape(B * N, -1), edge_index)
            feats.append(h)
        hcat = torch.cat(feats, dim=-1).reshape(B, N, -1)  # [B, N, H L]
        g = self.pool(hcat).amax(dim=1, keepdim=True).expand(-1, N, -1)
        out = self.head(torch.cat([hcat, g], dim=-1))
        return out if pos.dim() == 3 else out[0]


# ------------------------------------------------------------------------------------------ global heads
class _GlobalHead(nn.Module):
    """Shared input/output handling of the global models: typed local features in, vector or line out."""

    def _setup(self, dim: int, features: LocalFeatures, feature_k: int, output: GlobalOutput) -> None:
        self.dim = dim
        self.features = _choice("features", features, get_args(LocalFeatures))
        self.feature_k = _positive("feature_k", feature_k)
        self.output_kind = _choice("output", output, get_args(GlobalOutput))
        self.inputs = dict(NORMALS_TYPES)
        self.output = "1x1n"

    def _inputs(self, pos: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """``(feat, u)``: the typed features (or None) and the PCA normal (only for line outputs)."""
        if self.output_kind == "vector":
            return local_features(pos, self.features, self.feature_k), None  # type: ignore[arg-type]
        C, u, _ = knn_geometry(pos, self.feature_k)
        if self.features == "none":
            return None, u
        cov = C.flatten(-2)
        if self.features == "cov":
            return cov, u
        return torch.cat([(u[..., :, None] * u[..., None, :]).flatten(-2), cov], dim=-1), u

    def _finish(self, y: Tensor, u: Tensor | None) -> Tensor:
        if self.output_kind == "vector":
            return y
        d = self.dim
        P = y.reshape(*y.shape[:-1], d, d)
        if self.output_kind == "line-residual":
            P = P + u[..., :, None] * u[..., None, :]
        return line_to_normal(P, u)

    @staticmethod
    def out_channels(dim: int, output: GlobalOutput) -> int:
        return dim if output == "vector" else dim * dim


class PlainNormals(_GlobalHead):
    r"""A plain (non-equivariant) backbone with the local features in global coordinates.

    ``\hat n = \mathrm{out}(\Phi(X, f(X)))`` with the features ``f`` of :func:`local_features` and the
    output handling of ``output`` (see :class:`FANormals`). The same numbers as the FA models read,
    but in the global frame: not equivariant (the i/SO(3) setting shows it).

    Shapes:
        pos ``[B, N, d]`` or ``[N, d]`` -> same shape
    """

    def __init__(self, backbone: nn.Module, dim: int = 3, features: LocalFeatures = "pca", feature_k: int = 16,
                 output: GlobalOutput = "vector"):
        super().__init__()
        self._setup(dim, features, feature_k, output)
        self.backbone = backbone
        del self.inputs, self.output  # not an equivariant model

    def forward(self, pos: Tensor) -> Tensor:
        _check_pos(pos, self.dim)
        _check_dtype(pos, self)
        feat, u = self._inputs(pos)
        y = self.backbone(pos) if feat is None else self.backbone(pos, feat)
        return self._finish(y, u)


class FANormals(_GlobalHead):
    r"""Frame Averaging over the global E(d) PCA frame of each cloud around a normal-estimation backbone.

    .. math::  Y(X) = \sum_{(R, t) \in F(X)} w\, \rho_{out}(R^\top)\, \Phi\big(R (X - t),\ \rho(R) f(X)\big)

    with ``F(X)`` the PCA frames of :func:`equiframe.frames.pca_frame` (8 sign choices in 3-D,
    ``mode="all"``; one element on generic inputs with ``"canonical"``; sampled elements while
    training with ``"stochastic"``, all at evaluation) and ``f(X)`` the typed local-geometry features
    (``features``; order-2 tensors, ``\rho(R) T = R T R^\top``). Output (``output``):

    * ``"vector"``: ``Y`` is the normal (type ``1x1n``);
    * ``"line"``: ``Y = P`` is an order-2 tensor (``1x2n``, ``d^2`` channels), the normal is its
      dominant eigenvector (:func:`line_to_normal`, started at the PCA normal ``u``). An unoriented
      normal is a line, and ``u u^T`` (an input channel with ``features="pca"``) is a valid output:
      no sign has to be invented;
    * ``"line-residual"``: the line of ``u u^T + P`` (training starts at the k-NN PCA normal).

    Exactly E(d)-equivariant for every option.

    Args:
        backbone: a module ``backbone(pos [M, N, d], feat [M, N, C]) -> [M, N, d or d^2]``
            (:class:`PointNetSeg`, :class:`DGCNN` built with ``in_features = C`` and ``out_channels``),
            or ``backbone(pos)`` for ``features="none"``.
        group: the frame group (``"E(3)"``: centred at the centroid, rotations and reflections).
        mode: FA mode (see :class:`~equiframe.FrameAveraging`).
        n_samples: elements per cloud in ``"stochastic"`` mode.
        generator: random source of the stochastic mode.
        features: local-geometry input (module docstring); must match the backbone's ``in_features``.
        feature_k: neighbourhood of the features.
        output: ``"vector"``, ``"line"`` or ``"line-residual"`` (see above).

    Shapes:
        pos ``[B, N, d]`` or ``[N, d]`` -> ``[B, N, d]`` or ``[N, d]``
    """

    def __init__(self, backbone: nn.Module, group: str = "E(3)", mode: FAMode = "all", n_samples: int | None = None,
                 generator: torch.Generator | None = None, features: LocalFeatures = "none", feature_k: int = 16,
                 output: GlobalOutput = "vector"):
        super().__init__()
        _choice("mode", mode, get_args(FAMode))
        dim = int(getattr(backbone, "dim", 3))
        self._setup(dim, features, feature_k, output)
        fa_inputs = dict(self.inputs)
        if FEATURE_REPS[features] is not None:
            fa_inputs["feat"] = FEATURE_REPS[features]
        self.fa = FrameAveraging(backbone, group=group, inputs=fa_inputs,
                                 output="1x1n" if output == "vector" else "1x2n", mode=mode,
                                 n_samples=n_samples if mode == "stochastic" else None, generator=generator)

    @property
    def backbone(self) -> nn.Module:
        return self.fa.backbone

    def forward(self, pos: Tensor) -> Tensor:
        _check_pos(pos, self.dim)
        _check_dtype(pos, self)
        feat, u = self._inputs(pos)
        y = self.fa(pos=pos) if feat is None else self.fa(pos=pos, feat=feat)
        return self._finish(y, u)


# ------------------------------------------------------------------------------------------ baseline
class KNNPCANormals(nn.Module):
    """Learning-free baseline: smallest principal axis of the ``k`` nearest neighbours
    (:func:`knn_geometry`); no parameters.

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
        return knn_geometry(pos, self.k)[1]


# ------------------------------------------------------------------------------------------ factory
def build_normals_model(
    name: NormalsModelName,
    *,
    dim: int = 3,
    hidden: int = 64,
    k: int = 20,
    fa_mode: FAMode = "all",
    features: LocalFeatures = "pca",
    feature_k: int = 16,
    output: GlobalOutput = "line",
    hidden_reps: str = "32x0n+8x1n",
    tf_frames: FrameKind = "pca",
    tf_local_layers: int = 2,
    tf_ratios: tuple[float, ...] = (0.25, 0.25),
    tf_k: int = 16,
    tf_pool_edges: bool | None = None,
    tf_edge_transport: bool | None = None,
    local_k: int = 16,
    local_context_k: int | None = None,
    local_vote: int | None = None,
    head: Head | None = None,
    dgcnn_layers: int = 3,
    baseline_k: int = 16,
) -> nn.Module:
    """Build a normal-estimation model by name (see the module docstring).

    Args:
        name: one of :data:`NORMALS_MODELS`.
        dim: space dimension.
        hidden: width of the MLPs.
        k: neighbourhood size of the (FA-)DGCNN graphs.
        fa_mode: FA mode of ``fa-pointnet`` / ``fa-dgcnn``.
        features: local-geometry input of the global models (``pointnet``, ``dgcnn``, ``fa-*``);
            default ``"pca"``: ``[u u^T, C / tr C]`` (``2x2n``).
        feature_k: neighbourhood of those features (16, the baseline's).
        output: output head of the global models (:class:`FANormals`); default ``"line"``.
        hidden_reps, tf_frames, tf_local_layers, tf_ratios, tf_k, tf_pool_edges, tf_edge_transport:
            TF-PointNet++ options (the last two: :class:`TFPointNet`'s ``pool_edges`` / ``edge_transport``).
        local_k: neighbourhood of FA-Local-PointNet (frame and PointNet).
        local_context_k: FA-Local-PointNet's multi-scale context neighbourhood (``None``: none; see
            :class:`LocalPointNet`'s ``context_k``).
        local_vote: FA-Local-PointNet's plane vote (``None``: none; see :class:`LocalPointNet`'s ``vote``).
        head: head of the local-frame models (``None``: ``"wlsq"`` with PCA frames, ``"free"`` with
            learned frames).
        dgcnn_layers: EdgeConv layers of (FA-)DGCNN.
        baseline_k: neighbourhood of the k-NN PCA baseline.
    """
    _choice("name", name, NORMALS_MODELS)
    _choice("features", features, get_args(LocalFeatures))
    nf = _feature_channels(features, dim)
    if name in ("pointnet", "dgcnn", "fa-pointnet", "fa-dgcnn"):
        _choice("output", output, get_args(GlobalOutput))
        oc = _GlobalHead.out_channels(dim, output)
        if name.endswith("pointnet"):
            backbone: nn.Module = PointNetSeg(dim, hidden, in_features=nf, out_channels=oc)
        else:
            backbone = DGCNN(dim, k, hidden, dgcnn_layers, in_features=nf, out_channels=oc)
        if name.startswith("fa-"):
            return FANormals(backbone, group=f"E({dim})", mode=fa_mode, features=features, feature_k=feature_k,
                             output=output)
        if nf == 0 and output == "vector":
            return backbone
        return PlainNormals(backbone, dim, features, feature_k, output)
    if name == "fa-local-pointnet":
        return LocalPointNet(dim, local_k, hidden, head=head or "wlsq", context_k=local_context_k,
                             vote=local_vote)
    if name == "tf-pointnet":
        return TFPointNet(dim, hidden_reps, hidden, tf_k, tf_local_layers, tf_ratios, frames=tf_frames, head=head,
                          pool_edges=tf_pool_edges, edge_transport=tf_edge_transport)
    return KNNPCANormals(baseline_k)
