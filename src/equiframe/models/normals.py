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

from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor, nn

from ..averaging import FrameAveraging
from ..frames.local import LearnedFrames, local_pca_frames
from ..reps import TensorReps

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
    "PlainNormals",
    "PointNetSeg",
    "TFPointNet",
    "line_to_normal",
    "weighted_plane_normal",
    "build_normals_model",
    "dense_knn",
    "farthest_point_sampling",
    "jet_normals",
    "knn_geometry",
    "open3d_normals",
    "tf_head_kind",
]

NormalsModelName = Literal["pointnet", "dgcnn", "fa-pointnet", "fa-dgcnn", "fa-local-pointnet", "tf-pointnet",
                           "knn-pca"]
NORMALS_MODELS: tuple[str, ...] = get_args(NormalsModelName)
FAMode = Literal["all", "canonical", "stochastic"]
FrameKind = Literal["pca", "learned"]
LocalFeatures = Literal["none", "cov", "pca"]
GlobalOutput = Literal["vector", "line", "line-residual"]
Head = Literal["wlsq", "residual", "free"]
NormalSign = Literal["moments", "centroid"]

#: input / output types of the equivariant models (for the equivariance tests)
NORMALS_TYPES = {"pos": "pos"}
#: type of the per-point local-geometry features (``None``: no features)
FEATURE_REPS: dict[str, str | None] = {"none": None, "cov": "1x2n", "pca": "2x2n"}


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


def _choice(name: str, v: str, options: tuple[str, ...]) -> str:
    if v not in options:
        raise ValueError(f"{name}: expected one of {options}, got {v!r}")
    return v


def tf_head_kind(head: "Head | None", frames: "FrameKind") -> str:
    """The normal head :class:`TFPointNet` uses: ``head``, or by default ``"wlsq"`` with PCA frames and
    ``"free"`` with learned frames."""
    return ("wlsq" if frames == "pca" else "free") if head is None else head


def _mlp(sizes: list[int], *, last_act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_act:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _zero_last(mlp: nn.Sequential) -> nn.Sequential:
    """Zero the last linear layer (a residual head starts at its skip value)."""
    last = [m for m in mlp if isinstance(m, nn.Linear)][-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return mlp


def _as_batch(pos: Tensor) -> Tensor:
    return pos if pos.dim() == 3 else pos[None]


def _feature_channels(features: str, dim: int) -> int:
    reps = FEATURE_REPS[features]
    return 0 if reps is None else TensorReps(reps, dim=dim).size


def _check_feat(feat: Tensor | None, pos: Tensor, channels: int) -> Tensor | None:
    if channels == 0:
        if feat is not None:
            raise ValueError("feat: this model was built with features='none' and takes no features")
        return None
    if feat is None:
        raise ValueError(f"feat: this model expects {channels} feature channels per point (see knn_geometry)")
    if not isinstance(feat, Tensor) or feat.shape[:-1] != pos.shape[:-1] or feat.shape[-1] != channels:
        shape = tuple(feat.shape) if isinstance(feat, Tensor) else type(feat).__name__
        raise ValueError(f"feat: expected shape {tuple(pos.shape[:-1]) + (channels,)}, got {shape}")
    return feat.to(pos.dtype)


# ------------------------------------------------------------------------------------------ geometry
#: clouds with more points than this (and on the CPU) search neighbours with a k-d tree (scipy)
KDTREE_MIN_POINTS = 4096


def dense_knn(query: Tensor, points: Tensor, k: int, *, exclude_self: bool = False,
              chunk_size: int = 1024) -> Tensor:
    """Indices of the ``k`` nearest ``points`` of every query point, per cloud (dense batches).

    ``idx[b, i]`` lists the ``k`` points of cloud ``b`` closest to ``query[b, i]`` by Euclidean
    distance, nearest first. Small clouds: ``torch.cdist`` + ``topk`` on rows of ``chunk_size``
    queries at a time (``O(M N)`` work). Clouds of more than :data:`KDTREE_MIN_POINTS` points on the
    CPU: a k-d tree (``scipy.spatial.cKDTree``, ``O(N log N)``), so that millions of points run in
    bounded memory; the two agree except in the order of exactly tied distances. With
    ``exclude_self`` (``query is points``) the point itself is left out. This is the one k-NN of the
    normal-estimation code (models, baselines, estimator).

    Shapes:
        query ``[B, M, d]``, points ``[B, N, d]`` -> ``[B, M, k]`` (int64)
    """
    k = _positive("k", k)
    n = points.shape[1] - (1 if exclude_self else 0)
    if k > n:
        raise ValueError(f"k: every cloud needs at least k = {k} neighbours, got {n} points")
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive integer, got {chunk_size!r}")
    query, points = query.detach(), points.detach()  # indices only: no graph through the distances
    if points.shape[1] > KDTREE_MIN_POINTS and points.device.type == "cpu":
        from scipy.spatial import cKDTree  # noqa: PLC0415

        res = []
        for b in range(points.shape[0]):
            tree = cKDTree(points[b].double().numpy())
            _, ii = tree.query(query[b].double().numpy(), k=k + (1 if exclude_self else 0))
            ii = ii.reshape(ii.shape[0], -1)
            if exclude_self:  # drop the query itself (first unless a duplicate point ties with it)
                rows = torch.arange(ii.shape[0])[:, None].numpy()
                keep = ii != rows
                ii = np.stack([r[m][:k] for r, m in zip(ii, keep)])
            res.append(torch.from_numpy(np.ascontiguousarray(ii)).long())
        return torch.stack(res).to(query.device)
    out = []
    for s in range(0, query.shape[1], chunk_size):
        dist = torch.cdist(query[:, s:s + chunk_size], points)  # [B, c, N]
        if exclude_self:
            rows = torch.arange(s, s + dist.shape[1], device=dist.device)
            dist[:, torch.arange(dist.shape[1], device=dist.device), rows] = float("inf")
        out.append(dist.topk(k, dim=-1, largest=False).indices)
    return torch.cat(out, dim=1)


def _gather(x: Tensor, idx: Tensor) -> Tensor:
    """``x [B, N, C]``, ``idx [B, M, k]`` -> ``[B, M, k, C]``."""
    B, M, k = idx.shape
    return torch.gather(x, 1, idx.reshape(B, M * k, 1).expand(-1, -1, x.shape[-1])).reshape(B, M, k, x.shape[-1])


def knn_geometry(pos: Tensor, k: int = 16, *, chunk_size: int = 1024) -> tuple[Tensor, Tensor, Tensor]:
    r"""k-NN neighbourhood covariance, its PCA normal and eigenvalues (the baseline's neighbourhood).

    With ``N_i`` the ``k`` nearest points of ``x_i`` (itself included), ``m_i`` their mean,

    .. math::
        C_i = \frac1k \sum_{j \in N_i} (x_j - m_i)(x_j - m_i)^\top,\qquad
        \hat C_i = C_i / \operatorname{tr} C_i,\qquad \hat C_i u_{i,l} = \lambda_{i,l} u_{i,l}

    with ascending ``lambda`` (they sum to 1); the normal ``u_i = u_{i,1}`` (smallest eigenvalue)
    has an arbitrary sign. ``tr C_i = 0`` (all neighbours identical) gives ``\hat C_i = 0``.
    The result is detached. This is the one local PCA of the normal-estimation code (the k-NN PCA
    baseline :func:`~equiframe.datasets.shapes.knn_pca_normals`, the global models' features);
    ``chunk_size`` is passed to :func:`dense_knn`.

    Returns:
        ``(cov, normal, eigvals)``: ``\hat C`` ``[..., N, d, d]``, ``u`` ``[..., N, d]``,
        ``lambda`` ``[..., N, d]`` (ascending).

    Shapes:
        pos ``[B, N, d]`` or ``[N, d]``
    """
    _check_pos(pos)
    x = _as_batch(pos).detach()
    _, _, C, lam, U = _knn_eigh(x, k, chunk_size)
    normal = U[..., 0]
    if pos.dim() == 2:
        return C[0], normal[0], lam[0]
    return C, normal, lam


def _knn_eigh(x: Tensor, k: int, chunk_size: int = 1024) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """k-NN lists, neighbours, trace-normalised covariance, its ascending eigenvalues and eigenvectors
    (columns) for ``x [B, N, d]`` (the local PCA behind :func:`knn_geometry` and :func:`jet_normals`)."""
    d = x.shape[-1]
    k = _positive("k", k)
    if k < d or k > x.shape[1]:
        raise ValueError(f"k: expected d = {d} <= k <= N = {x.shape[1]}, got {k}")
    idx = dense_knn(x, x, k, chunk_size=chunk_size)
    nbr = _gather(x, idx)  # [B, N, k, d]
    y = nbr - nbr.mean(dim=2, keepdim=True)
    C = torch.einsum("bnka,bnkc->bnac", y, y) / k
    tr = C.diagonal(dim1=-2, dim2=-1).sum(-1)
    C = C / tr.clamp_min(torch.finfo(x.dtype).tiny)[..., None, None]
    lam, U = torch.linalg.eigh(C)
    return idx, nbr, C, lam, U


def jet_normals(pos: Tensor, k: int = 16, order: Literal[1, 2] = 2, *, chunk_size: int = 1024) -> Tensor:
    r"""Jet-fitting normals (osculating jets, Cazals & Pouget 2005): a polynomial height function fitted to
    the ``k`` nearest neighbours in their PCA frame.

    In the frame of the neighbourhood's principal axes (tangent coordinates ``t = (t_1..t_{d-1})``, height
    ``h`` along the smallest axis, origin at the point ``x_i``), fit by least squares

    .. math:: h pprox a_0 + \sum_a a_a t_a + [	ext{order} = 2]\ \sum_{a \le b} a_{ab} t_a t_b

    and return the normal of the graph at the point, :math:`(-
abla_t h(0), 1)` in that frame (sign
    arbitrary). ``order=1`` is a least-squares plane through the neighbours (not the total least
    squares of PCA). Needs ``k`` at least the number of coefficients (``1 + (d-1) + (d-1) d / 2``).

    Shapes:
        pos ``[B, N, d]`` or ``[N, d]`` -> same shape
    """
    _check_pos(pos)
    if order not in (1, 2):
        raise ValueError(f"order: expected 1 or 2, got {order!r}")
    x = _as_batch(pos).detach()
    B, N, d = x.shape
    m = d - 1
    n_coef = 1 + m + (m * (m + 1) // 2 if order == 2 else 0)
    if k < n_coef:
        raise ValueError(f"k: jet fitting of order {order} in {d}-D needs k >= {n_coef} neighbours, got {k}")
    _, nbr, _, _, U = _knn_eigh(x, k, chunk_size)
    rel = nbr - x[:, :, None]  # [B, N, k, d], origin at the point
    z = torch.einsum("bnkc,bnca->bnka", rel, U)  # coordinates along the axes (ascending eigenvalues)
    h, t = z[..., 0], z[..., 1:]
    scale = t.norm(dim=-1).amax(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)  # conditioning
    ts = t / scale[..., None]
    cols = [torch.ones_like(h), *ts.unbind(-1)]
    if order == 2:
        cols += [ts[..., a] * ts[..., b] for a in range(m) for b in range(a, m)]
    A = torch.stack(cols, dim=-1)  # [B, N, k, n_coef]
    AtA = A.transpose(-1, -2) @ A
    ridge = 1e-9 * AtA.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None] * torch.eye(n_coef, dtype=x.dtype)
    coef = torch.linalg.solve(AtA + ridge, (A.transpose(-1, -2) @ h[..., None]))[..., 0]
    grad = coef[..., 1:1 + m] / scale  # dh/dt at t = 0
    n_frame = torch.cat([torch.ones_like(grad[..., :1]), -grad], dim=-1)  # (h, t) components
    out = torch.einsum("bnca,bna->bnc", U, n_frame)
    out = out / out.norm(dim=-1, keepdim=True)
    return out if pos.dim() == 3 else out[0]


def open3d_normals(pos: Tensor, *, knn: int | None = 30, radius: float | None = None) -> Tensor:
    """Open3D's ``PointCloud.estimate_normals`` (its k-NN PCA; the baseline users know), unoriented.

    ``knn`` only: ``KDTreeSearchParamKNN(knn)``; ``radius`` only: ``KDTreeSearchParamRadius(radius)``;
    both: ``KDTreeSearchParamHybrid(radius, max_nn=knn)`` (Open3D's default search is hybrid with
    ``knn = 30``). Requires ``open3d`` (``pip install open3d-cpu`` or ``open3d``; extra ``baselines``).

    Shapes:
        pos ``[B, N, 3]`` or ``[N, 3]`` -> same shape (float64 computation, returned in ``pos.dtype``)
    """
    _check_pos(pos, 3)
    if knn is None and radius is None:
        raise ValueError("open3d_normals: give knn, radius or both")
    if knn is not None:
        _positive("knn", knn)
    if radius is not None and not (isinstance(radius, (int, float)) and radius > 0):
        raise ValueError(f"radius: expected a positive number, got {radius!r}")
    try:
        import open3d as o3d  # noqa: PLC0415
    except ImportError as err:
        raise ImportError("open3d_normals needs Open3D: pip install open3d-cpu (or open3d)") from err
    if knn is not None and radius is not None:
        param = o3d.geometry.KDTreeSearchParamHybrid(radius=float(radius), max_nn=int(knn))
    elif knn is not None:
        param = o3d.geometry.KDTreeSearchParamKNN(knn=int(knn))
    else:
        param = o3d.geometry.KDTreeSearchParamRadius(radius=float(radius))
    x = _as_batch(pos).detach().cpu().double().numpy()
    out = []
    for cloud in x:
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cloud))
        pc.estimate_normals(search_param=param, fast_normal_computation=False)
        out.append(torch.from_numpy(np.asarray(pc.normals).copy()))
    res = torch.stack(out).to(dtype=pos.dtype, device=pos.device)
    return res if pos.dim() == 3 else res[0]


def local_features(pos: Tensor, features: LocalFeatures, k: int = 16) -> Tensor | None:
    """The per-point feature tensor of the ``features`` option (see the module docstring).

    Shapes:
        pos ``[..., N, d]`` -> ``[..., N, C]`` with ``C = 0, d^2, 2 d^2`` for ``"none"``, ``"cov"``,
        ``"pca"`` (``None`` for ``"none"``)
    """
    _choice("features", features, get_args(LocalFeatures))
    if features == "none":
        return None
    C, u, _ = knn_geometry(pos, k)
    cov = C.flatten(-2)
    if features == "cov":
        return cov
    return torch.cat([(u[..., :, None] * u[..., None, :]).flatten(-2), cov], dim=-1)


def farthest_point_sampling(pos: Tensor, m: int) -> Tensor:
    r"""Farthest point sampling of ``m`` points per cloud, E(d)-invariant.

    The first point is the one farthest from the cloud's centroid; then repeatedly the point whose
    distance to the already chosen set is largest, ``i_{t+1} = \arg\max_i \min_{s \le t}
    \|x_i - x_{i_s}\|``. Only distances enter, so the selection is invariant to rotations,
    reflections and translations (up to exact distance ties).

    Shapes:
        pos ``[B, N, d]`` -> ``[B, m]`` (int64)
    """
    m = _positive("m", m)
    B, N, _ = pos.shape
    if m > N:
        raise ValueError(f"m: cannot sample {m} of {N} points")
    x = pos.detach()
    idx = x.new_zeros((B, m), dtype=torch.long)
    cur = (x - x.mean(dim=1, keepdim=True)).square().sum(-1).argmax(dim=1)  # [B]
    dist = torch.full((B, N), float("inf"), dtype=x.dtype, device=x.device)
    ar = torch.arange(B, device=x.device)
    for t in range(m):
        idx[:, t] = cur
        dist = torch.minimum(dist, (x - x[ar, cur][:, None]).square().sum(-1))
        cur = dist.argmax(dim=1)
    return idx


def _flat_edges(idx: Tensor, n_src: int) -> Tensor:
    """Dense neighbour lists ``idx [B, M, k]`` (sources within each cloud of ``n_src`` points) ->
    ``edge_index [2, B M k]`` over the flattened batch (source ``b n_src + j``, target ``b M + i``)."""
    B, M, k = idx.shape
    src = (idx + (torch.arange(B, device=idx.device) * n_src)[:, None, None]).reshape(-1)
    dst = torch.arange(B * M, device=idx.device).repeat_interleave(k)
    return torch.stack([src, dst])


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
        _check_pos(pos, self.dim)
        _check_dtype(pos, self)
        feat = _check_feat(feat, pos, self.in_features)
        x = _as_batch(pos)
        B, N, _ = x.shape
        if N <= self.k:
            raise ValueError(f"pos: every cloud needs more than k = {self.k} points")
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
def line_to_normal(P: Tensor, start: Tensor, steps: int = 3) -> Tensor:
    r"""Dominant eigenvector of the symmetric part of ``P`` (largest ``|lambda|``) by power iteration.

    ``S = (P + P^T) / 2``, ``v_0 = start``, ``v_{t+1} = S v_t / \|S v_t\|``. Equivariant (``P -> Q P Q^T``,
    ``start -> +-Q start`` gives ``v -> +-Q v``), bounded gradients (no eigen-decomposition) and, for
    ``P = u u^T`` with ``start = u``, exactly ``u``.

    Shapes:
        P ``[..., d, d]``, start ``[..., d]`` -> ``[..., d]``
    """
    S = 0.5 * (P + P.transpose(-1, -2))
    v = start
    for _ in range(steps):
        v = (S @ v[..., None])[..., 0]
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    return v


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


# ------------------------------------------------------------------------------------------ local frames
def _pca_frames_dense(x: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Local PCA frames of the ``k``-NN neighbourhoods (node included, centroid-centred: the baseline's
    covariance), the neighbour lists and the normalised eigenvalues (descending, as the frame axes).

    Shapes:
        x ``[B, N, d]`` -> frames ``[B N, d, d]``, idx ``[B, N, k]``, eigvals ``[B N, d]``
    """
    B, N, d = x.shape
    idx = dense_knn(x, x, k)  # [B, N, k], node first
    ei = _flat_edges(idx, N)
    xf = x.reshape(B * N, d)
    R = local_pca_frames(xf, ei, center="centroid")  # [B N, d, d], rows = axes, descending eigenvalues
    nbr = _gather(x.detach(), idx).reshape(B * N, k, d)
    y = nbr - nbr.mean(dim=1, keepdim=True)
    lam = torch.einsum("mab,mkb->mka", R, y).square().mean(dim=1)  # variance along each axis
    lam = lam / lam.sum(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    return R, idx, lam


def weighted_plane_normal(y: Tensor, w: Tensor, start: Tensor, steps: int = 4, shift: float = 1e-4) -> Tensor:
    r"""Normal of the weighted least-squares plane through points ``y``, by inverse iteration.

    .. math::
        c = \frac{\sum_j w_j y_j}{\sum_j w_j},\quad
        C = \frac{\sum_j w_j (y_j - c)(y_j - c)^\top}{\sum_j w_j},\quad
        v_0 = \text{start},\quad v_{t+1} = \frac{(C + \epsilon\, \mathrm{tr}(C) I)^{-1} v_t}{\|\cdot\|}

    (``epsilon = shift``). ``v_t`` converges to the eigenvector of ``C`` with the smallest eigenvalue
    at the rate ``(lambda_1 + eps)/(lambda_2 + eps)`` per step (fast for surface patches), keeps the
    side of ``start`` (no sign flips) and, unlike an eigen-decomposition, has bounded gradients also
    at (near-)repeated eigenvalues. With uniform weights and ``start`` already the smallest
    eigenvector (the k-NN PCA normal) the result is ``start``. Equivariant: rotating ``y`` and ``start``
    rotates the result (invariant weights).

    Shapes:
        y ``[M, k, d]``, w ``[M, k]`` (non-negative, not all 0), start ``[M, d]`` -> ``[M, d]``
    """
    d = y.shape[-1]
    wn = w / w.sum(dim=1, keepdim=True)
    c = (wn[..., None] * y).sum(dim=1, keepdim=True)
    z = y - c
    C = torch.einsum("mk,mka,mkb->mab", wn, z, z)
    tr = C.diagonal(dim1=-2, dim2=-1).sum(-1)
    eye = torch.eye(d, dtype=y.dtype, device=y.device)
    A = C + (shift * tr + torch.finfo(y.dtype).tiny)[:, None, None] * eye
    v = start
    for _ in range(steps):
        v = torch.linalg.solve(A, v)
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(y.dtype).tiny)
    return v


class PlaneFitHead(nn.Module):
    r"""Learned iteratively reweighted plane fit (a normal head for local-frame models).

    Starting from ``n^0 = `` ``start`` and the unweighted centroid ``c^0``, ``iterations`` times

    .. math::
        w^t_{ij} = 10^{-3} + \sigma\Big(W_2\, \mathrm{SiLU}\big(A h_{ij} + B g_i
            + C\,[\,|n^{t-1} \cdot (y_{ij} - c^{t-1})|,\ |n^{t-1} \cdot y_{ij}|\,] / \bar r_i + b\big)\Big),
        \qquad (n^t, c^t) = \mathrm{fit}(y_i, w^t_i)

    (:func:`weighted_plane_normal`; ``\bar r_i`` the mean neighbour distance, for scale invariance)
    with invariant per-edge features ``h_ij`` and per-point features ``g_i``. With
    ``neighbour_lines`` the residuals also contain ``(n^{t-1} \cdot m_{ij})^2``, the alignment with
    the neighbours' own normal directions ``m_ij`` (unit, in the same frame; sign-free). The residuals of the
    previous fit tell which neighbours lie on the point's own surface patch (iteratively reweighted
    least squares with learned weights). At initialisation ``W_2`` is small, so every weight is near
    1/2 and the head starts near the unweighted plane fit (the k-NN PCA normal when ``start`` is it;
    a zero ``W_2`` would start exactly there but measurably slowed the first epochs down). SiLU and the
    additive weight floor keep every unit and weight trainable: with ReLU and a clamped floor a
    TF-PointNet++ run once fell into a state with constant weights (exactly the PCA normal, zero
    gradient) after 8 epochs.

    Args:
        edge_dim: channels of ``h_ij``.
        point_dim: channels of ``g_i``.
        hidden: width of the weight MLP.
        iterations: reweighting steps.

    Shapes:
        h_edge ``[M, k, edge_dim]``, h_point ``[M, point_dim]``, y ``[M, k, d]`` (invariant local
        coordinates), start ``[M, d]``, lines ``[M, k, d]`` -> ``[M, d]``
    """

    def __init__(self, edge_dim: int, point_dim: int, hidden: int = 32, iterations: int = 2,
                 neighbour_lines: bool = False):
        super().__init__()
        self.iterations = _positive("iterations", iterations)
        self.neighbour_lines = bool(neighbour_lines)
        self.a = nn.Linear(edge_dim, hidden)
        self.b = nn.Linear(point_dim, hidden, bias=False)
        self.c = nn.Linear(3 if neighbour_lines else 2, hidden, bias=False)
        self.out = nn.Linear(hidden, 1)  # default init: weights start near 1/2 (near the unweighted fit)

    def forward(self, h_edge: Tensor, h_point: Tensor, y: Tensor, start: Tensor, lines: Tensor | None = None) -> Tensor:
        if (lines is not None) != self.neighbour_lines:
            raise ValueError("lines: give the neighbours' unit normal directions exactly when neighbour_lines=True")
        base = self.a(h_edge) + self.b(h_point)[:, None]  # [M, k, H], shared by the iterations
        scale = y.norm(dim=-1).mean(dim=1, keepdim=True).clamp_min(torch.finfo(y.dtype).tiny)  # [M, 1]
        n, c = start, y.mean(dim=1, keepdim=True)
        for _ in range(self.iterations):
            r = [((y - c) * n[:, None]).sum(-1).abs() / scale, (y * n[:, None]).sum(-1).abs() / scale]
            if lines is not None:
                r.append((lines * n[:, None]).sum(-1).square())
            z = self.out(nn.functional.silu(base + self.c(torch.stack(r, dim=-1))))[..., 0]
            w = _weights(z)
            n = weighted_plane_normal(y, w, n)
            c = ((w / w.sum(dim=1, keepdim=True))[..., None] * y).sum(dim=1, keepdim=True)
        return n


def _weights(z: Tensor) -> Tensor:
    """Plane-fit weights ``sigmoid(z) + 10^{-3}`` in ``(0.001, 1.001)``: never all zero, and unlike a clamp
    the floor keeps the gradient of every weight alive."""
    return torch.sigmoid(z) + 1e-3


class LocalPointNet(nn.Module):
    r"""FA-Local-PointNet: a PointNet on each point's neighbourhood in its local PCA frame.

    .. math::
        R_i = \mathrm{LocalPCA}(\mathrm{kNN}(i)),\quad
        y_{ij} = R_i (x_j - x_i) / s_i,\quad
        h_{ij} = \mathrm{MLP}_1([y_{ij}, |y_{ij}|]),\quad g_i = \max_j h_{ij}

    (``s_i`` the largest neighbour distance: scale invariance), then the normal in the local frame

    * ``head="wlsq"`` (default): ``n_local`` = normal of a learned, iteratively reweighted
      least-squares plane through the ``y_ij`` (:class:`PlaneFitHead` with edge features ``h_ij`` and
      point features ``g_i``, started from the PCA normal ``e_d``): the network learns which
      neighbours lie on the point's own surface patch (uniform weights give the k-NN PCA baseline);
    * ``"residual"``: ``n_local = e_d + MLP_2(g_i)`` (zero-initialised: starts at the baseline);
    * ``"free"``: ``n_local = MLP_2(g_i)``,

    and ``\hat n_i = R_i^\top n_local``. Local frames are O(d)-equivariant,
    ``R_i(QX + s) = R_i(X) Q^T``, hence the prediction is E(d)-equivariant wherever the neighbourhood
    spectrum is separated (see :func:`~equiframe.frames.local.local_pca_frames`). The frame's last
    axis is the k-NN PCA normal (centroid-centred covariance of the ``k`` nearest points, node
    included: exactly the baseline's).

    Args:
        dim: space dimension.
        k: neighbourhood size (frame and PointNet).
        hidden: width of the MLPs.
        head: ``"wlsq"``, ``"residual"`` or ``"free"`` (see above).
        iterations: reweighting steps of the ``"wlsq"`` head.

    Shapes:
        pos ``[B, N, d]`` or ``[N, d]`` -> same shape
    """

    def __init__(self, dim: int = 3, k: int = 16, hidden: int = 32, head: Head = "wlsq", iterations: int = 2):
        super().__init__()
        self.dim, self.k = _positive("dim", dim), _positive("k", k)
        hidden = _positive("hidden", hidden)
        self.head_kind = _choice("head", head, get_args(Head))
        self.inputs = dict(NORMALS_TYPES)
        self.output = "1x1n"
        self.local = _mlp([dim + 1, hidden, 2 * hidden])
        if head == "wlsq":
            self.head = PlaneFitHead(2 * hidden, 2 * hidden, hidden, iterations)
        else:
            self.head = _mlp([2 * hidden, hidden, dim], last_act=False)
            if head == "residual":
                _zero_last(self.head)

    def forward(self, pos: Tensor) -> Tensor:
        _check_pos(pos, self.dim)
        _check_dtype(pos, self)
        x = _as_batch(pos)
        B, N, d = x.shape
        if N <= self.k:
            raise ValueError(f"pos: every cloud needs more than k = {self.k} points")
        R, idx, _ = _pca_frames_dense(x, self.k)
        rel = (_gather(x, idx) - x[:, :, None]).reshape(B * N, self.k, d)
        out = self._predict(R, rel).reshape(B, N, d)
        return out if pos.dim() == 3 else out[0]

    def forward_neighbourhoods(self, center: Tensor, nbr: Tensor) -> Tensor:
        """The normals of points ``center`` from their ``k``-NN neighbourhoods ``nbr`` (the point itself
        included, as :func:`dense_knn` returns it), independently per point: what :meth:`forward` computes
        for every point of a cloud. Used by the estimator to run clouds of any size in chunks.

        Shapes:
            center ``[M, d]``, nbr ``[M, k, d]`` -> ``[M, d]``
        """
        if center.dim() != 2 or nbr.dim() != 3 or nbr.shape[0] != center.shape[0] or nbr.shape[2] != center.shape[1]:
            raise ValueError(f"center, nbr: expected [M, d] and [M, k, d], got {tuple(center.shape)} and {tuple(nbr.shape)}")
        if nbr.shape[1] != self.k or center.shape[1] != self.dim:
            raise ValueError(f"nbr: expected k = {self.k} neighbours of {self.dim}-D points, got {tuple(nbr.shape)}")
        _check_dtype(center, self)
        M, k, d = nbr.shape
        # the frames of local_pca_frames on a graph whose node i receives edges from its k neighbour copies
        pos = torch.cat([center, nbr.reshape(M * k, d)])
        ei = torch.stack([M + torch.arange(M * k, device=pos.device),
                          torch.arange(M, device=pos.device).repeat_interleave(k)])
        R = local_pca_frames(pos, ei, center="centroid")[:M]
        return self._predict(R, nbr - center[:, None])

    def _predict(self, R: Tensor, rel: Tensor) -> Tensor:
        """Normals ``[M, d]`` from frames ``R [M, d, d]`` and neighbour offsets ``rel [M, k, d]``."""
        M, _, d = rel.shape
        scale = rel.norm(dim=-1).amax(dim=1).clamp_min(torch.finfo(rel.dtype).tiny)  # invariant scale per point
        y = torch.einsum("mab,mkb->mka", R, rel) / scale[:, None, None]  # [M, k, d]
        h = self.local(torch.cat([y, y.norm(dim=-1, keepdim=True)], dim=-1))  # [M, k, 2H]
        g = h.amax(dim=1)
        e_d = torch.eye(d, dtype=rel.dtype, device=rel.device)[d - 1]
        if self.head_kind == "wlsq":
            n_local = self.head(h, g, y, e_d.expand(M, d))
        else:
            n_local = self.head(g)  # [M, d]
            if self.head_kind == "residual":
                n_local = n_local + e_d
        return torch.einsum("mab,ma->mb", R, n_local)  # R_i^T n_local


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
        _check_pos(pos, self.dim)
        _check_dtype(pos, self)
        x = _as_batch(pos)
        B, N, d = x.shape
        if N <= self.k:
            raise ValueError(f"pos: every cloud needs more than k = {self.k} points")
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
        return LocalPointNet(dim, local_k, hidden, head=head or "wlsq")
    if name == "tf-pointnet":
        return TFPointNet(dim, hidden_reps, hidden, tf_k, tf_local_layers, tf_ratios, frames=tf_frames, head=head,
                          pool_edges=tf_pool_edges, edge_transport=tf_edge_transport)
    return KNNPCANormals(baseline_k)
