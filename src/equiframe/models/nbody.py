r"""Models of the charged n-body experiment (EGNN protocol): GNN, FA-GNN, EGNN, TF-GNN, Linear.

Every model takes the same ragged PyG-style batch and predicts the particles' positions one time
unit later::

    model(pos, vel, charge, edge_index, batch, edge_attr=None) -> pos_pred

* :class:`NBodyGNN` — the plain message passing baseline of Satorras et al. (EGNN, 2021): node
  features ``[x_i, v_i]``, edge features ``q_i q_j``, four residual layers, hidden 60. Not
  equivariant (the negative control).
* :class:`FAGNN` — the same GNN wrapped in :class:`~equiframe.FrameAveraging` over the global
  E(3) PCA frame of each system (Puny et al., 2022): exactly E(3)-equivariant.
* :class:`EGNN` — the velocity variant of the E(n)-equivariant GNN (Satorras et al., 2021).
* :class:`TFGNN` — Tensor Frames (Lippmann et al., 2024): learned local frames
  (:class:`~equiframe.frames.local.LearnedFrames`) and the native tensor-frame layer
  :class:`~equiframe.nn.tf_conv.TensorFrameConv` with scalar + vector features.
* :class:`LinearDynamics` — the linear baseline ``y = x + W [x, v] + b`` (or ``x + c v``).

The equivariant models declare ``inputs`` / ``output`` (the types used by
:func:`equiframe.testing.assert_equivariant`): ``pos`` is a position, ``vel`` a vector, ``charge``
and ``edge_attr`` are invariant scalars, the output a position.

Shapes (for all models):
    pos, vel: ``[N, d]``; charge: ``[N, 1]``; edge_index: ``[2, E]`` (``[source j, target i]``, no
    edges between systems); batch: ``[N]`` system index; edge_attr: ``[E, 1]`` (``q_j q_i``; computed
    from ``charge`` when omitted) -> ``[N, d]``.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor, nn

from ..averaging import FrameAveraging
from ..folding import FoldedBatch
from ..frames.local import LearnedFrames, gram_schmidt_frames
from ..frames.pca import pca_frame
from ..geometry import scatter_sum
from ..groups import random_orthogonal
from ..nn.mlp import mlp
from ..reps import TensorReps, as_reps

__all__ = [
    "EGNN",
    "FAGNN",
    "MODEL_NAMES",
    "ModelName",
    "NBODY_TYPES",
    "LayerwiseFAGNN",
    "LinearDynamics",
    "NBodyGNN",
    "TFGNN",
    "build_nbody_model",
    "coulomb_vectors",
]

ModelName = Literal["fa-gnn", "tf-gnn", "egnn", "gnn", "linear", "linear-vel"]
MODEL_NAMES: tuple[str, ...] = get_args(ModelName)
FAMode = Literal["all", "canonical", "stochastic"]
FAVariant = Literal["input", "layerwise"]

#: How the inputs and the output of an n-body model transform (for the equivariance tests).
NBODY_TYPES = {"pos": "pos", "vel": "1x1n", "charge": "scalar", "edge_attr": "scalar"}


# ------------------------------------------------------------------------------------------ helpers
def _check_inputs(pos: Tensor, vel: Tensor, charge: Tensor, edge_index: Tensor) -> None:
    if not isinstance(pos, Tensor) or pos.dim() != 2:
        raise ValueError(f"pos: expected shape [N, d], got {tuple(getattr(pos, 'shape', ()))}")
    if not isinstance(vel, Tensor) or vel.shape != pos.shape:
        raise ValueError(f"vel: expected the shape of pos {tuple(pos.shape)}, got {tuple(getattr(vel, 'shape', ()))}")
    if not isinstance(charge, Tensor) or charge.shape != (pos.shape[0], 1):
        raise ValueError(f"charge: expected shape [{pos.shape[0]}, 1], got {tuple(getattr(charge, 'shape', ()))}")
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index: expected shape [2, E], got {tuple(getattr(edge_index, 'shape', ()))}")


def _edge_attr(charge: Tensor, edge_index: Tensor, edge_attr: Tensor | None) -> Tensor:
    """``q_j q_i`` per edge unless given."""
    if edge_attr is None:
        return charge[edge_index[0]] * charge[edge_index[1]]
    if edge_attr.dim() != 2 or edge_attr.shape[0] != edge_index.shape[1]:
        raise ValueError(f"edge_attr: expected shape [{edge_index.shape[1]}, C], got {tuple(edge_attr.shape)}")
    return edge_attr


def _pair_linear(lin: nn.Linear, h: Tensor, src: Tensor, dst: Tensor, edge: Tensor) -> Tensor:
    r"""``lin(cat([h[dst], h[src], edge], 1))`` computed per node: the message function's first layer, fused.

    .. math::
        W [h_i; h_j; e_{ij}] + b = (W_1 h)_i + (W_2 h)_j + W_3 e_{ij} + b

    The two node terms are one GEMM on the ``N`` nodes (instead of the ``E`` edges) followed by two
    gathers: on the fully connected n-body systems (``E = 4 N``) the layer costs a quarter of the
    unfused one. Equal to the unfused layer up to rounding (the sums are taken in another order).

    Shapes:
        h: ``[N, H]``; src, dst: ``[E]``; edge: ``[E, C]`` with ``lin.in_features == 2 H + C`` -> ``[E, out]``
    """
    H, W = h.shape[1], lin.weight
    out = W.shape[0]
    node = torch.nn.functional.linear(h, torch.cat([W[:, :H], W[:, H : 2 * H]], 0))  # [N, 2 out]
    return torch.addmm(lin.bias, edge, W[:, 2 * H :].t()) + node[:, :out][dst] + node[:, out:][src]


def _message(mlp: nn.Sequential, fused: bool, h: Tensor, src: Tensor, dst: Tensor, edge: Tensor) -> Tensor:
    """``mlp(cat([h[dst], h[src], edge], 1))``, its first (linear) layer fused when ``fused``."""
    if not fused:
        return mlp(torch.cat([h[dst], h[src], edge], dim=1))
    z = _pair_linear(mlp[0], h, src, dst, edge)
    for layer in mlp[1:]:
        z = layer(z)
    return z


def _mlp(sizes: list[int], act: bool = False) -> nn.Sequential:
    """Linear layers with SiLU in between (and after the last one when ``act``): :func:`equiframe.nn.mlp.mlp`."""
    return mlp(sizes, nn.SiLU, last_activation=act)


# ------------------------------------------------------------------------------------------ GNN
class GCL(nn.Module):
    r"""Graph convolutional layer of the EGNN paper's GNN baseline (residual, sum aggregation).

    .. math::
        m_{ij} = \phi_e(h_i, h_j, a_{ij}),\qquad m_i = \sum_{j \in N(i)} m_{ij},\qquad
        h_i' = h_i + \phi_h(h_i, m_i)

    with two-layer SiLU MLPs :math:`\phi_e` (SiLU after both layers) and :math:`\phi_h`. The first layer of
    :math:`\phi_e` is computed per node (:func:`_pair_linear`) unless ``fused_messages`` is set to ``False``
    (the reference path: the same parameters, equal up to rounding).

    Shapes:
        h: ``[N, H]``, edge_index: ``[2, E]``, edge_attr: ``[E, C]`` -> ``[N, H]``
    """

    def __init__(self, hidden: int, edge_dim: int):
        super().__init__()
        self.edge_mlp = _mlp([2 * hidden + edge_dim, hidden, hidden], act=True)
        self.node_mlp = _mlp([2 * hidden, hidden, hidden])
        self.fused_messages = True

    def forward(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        src, dst = edge_index[0], edge_index[1]
        m = _message(self.edge_mlp, self.fused_messages, h, src, dst, edge_attr)
        agg = scatter_sum(m, dst, h.shape[0])
        return h + self.node_mlp(torch.cat([h, agg], dim=1))


class NBodyGNN(nn.Module):
    r"""The GNN baseline of the EGNN paper for n-body (not equivariant).

    .. math::
        h^0_i = W_{in} [x_i, v_i],\quad h^{l+1} = \mathrm{GCL}(h^l, a),\quad
        \hat x_i = x_i + \phi_{out}(h^L_i),\qquad a_{ij} = [q_i q_j\ (,\ |x_i - x_j|^2)]

    Args:
        dim: space dimension ``d``.
        hidden: width (60 in the FA paper's FA-GNN).
        layers: number of message passing layers (4).
        edge_distances: append the squared input distance to the edge features (the EGNN paper's GNN
            uses charge products only).
        node_charge: append the charge to the node features.

    Shapes:
        pos, vel: ``[N, d]``; charge: ``[N, 1]``; edge_index: ``[2, E]``; edge_attr: ``[E, 1]``
        -> ``[N, d]``
    """

    def __init__(self, dim: int = 3, hidden: int = 60, layers: int = 4, *, edge_distances: bool = False,
                 node_charge: bool = False):
        super().__init__()
        _check_sizes(dim=dim, hidden=hidden, layers=layers)
        self.dim, self.edge_distances, self.node_charge = dim, bool(edge_distances), bool(node_charge)
        self.embedding = nn.Linear(2 * dim + int(node_charge), hidden)
        self.layers = nn.ModuleList(GCL(hidden, 1 + int(edge_distances)) for _ in range(layers))
        self.decoder = _mlp([hidden, hidden, dim])

    def forward(self, pos: Tensor, vel: Tensor, charge: Tensor, edge_index: Tensor, batch: Tensor | None = None,
                edge_attr: Tensor | None = None) -> Tensor:
        _check_inputs(pos, vel, charge, edge_index)
        a = _edge_attr(charge, edge_index, edge_attr)
        if self.edge_distances:
            a = torch.cat([a, (pos[edge_index[0]] - pos[edge_index[1]]).square().sum(1, keepdim=True)], 1)
        feats = [pos, vel] + ([charge] if self.node_charge else [])
        h = self.embedding(torch.cat(feats, dim=1))
        for layer in self.layers:
            h = layer(h, edge_index, a)
        return pos + self.decoder(h)


class FAGNN(nn.Module):
    r"""FA-GNN: the n-body GNN averaged over the global E(d) PCA frame of each system.

    .. math::
        \hat X = \frac{1}{|F(X)|}\sum_{(R, t) \in F(X)} R^\top\, \mathrm{GNN}\big(R(X - t), V R^\top, q\big) + t

    (``F`` from the positions of each system; the folded batch runs the GNN once on ``|F| B`` systems.)

    Args:
        dim, hidden, layers, edge_distances, node_charge: the backbone :class:`NBodyGNN`.
        mode: ``"all"`` (2^d elements), ``"canonical"`` (one element on generic input) or
            ``"stochastic"`` (``n_samples`` sampled elements while training, all in eval).
        n_samples: frame elements per system in stochastic mode.
        generator: random source of the stochastic mode.

    Shapes:
        as :class:`NBodyGNN`.
    """

    def __init__(self, dim: int = 3, hidden: int = 60, layers: int = 4, *, mode: FAMode = "all",
                 n_samples: int | None = None, edge_distances: bool = False, node_charge: bool = False,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.inputs = dict(NBODY_TYPES)
        self.output = "pos"
        self.fa = FrameAveraging(
            NBodyGNN(dim, hidden, layers, edge_distances=edge_distances, node_charge=node_charge),
            group=f"E({dim})", inputs=self.inputs, output="pos", mode=mode,
            n_samples=n_samples if mode == "stochastic" else None, generator=generator,
        )

    def forward(self, pos: Tensor, vel: Tensor, charge: Tensor, edge_index: Tensor, batch: Tensor | None = None,
                edge_attr: Tensor | None = None) -> Tensor:
        _check_inputs(pos, vel, charge, edge_index)
        if batch is None:
            batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        return self.fa(pos=pos, vel=vel, charge=charge, edge_attr=_edge_attr(charge, edge_index, edge_attr),
                       edge_index=edge_index, batch=batch)


class LayerwiseFAGNN(nn.Module):
    r"""FA-GNN with frame averaging at every layer (the architecture of the FA paper's n-body code).

    The hidden state of every node is read as ``K = hidden / d`` vectors. Layer 1 runs the GCL in the
    E(d) PCA frames of the positions; every later layer runs it in the frames of the *latent cloud*
    (the ``N K`` hidden vectors of a system seen as points), and the decoder's output is mapped back
    from the last latent frames:

    .. math::
        H^{1} &= \frac{1}{|F_0|}\sum_{(R, t) \in F_0} \mathrm{GCL}_1\big(W_{in}[R(x - t), R v]\big) R \\
        H^{l+1} &= \frac{1}{|F_l|}\sum_{(R, c) \in F_l} \mathrm{GCL}_{l+1}\big((H^{l} - c) R^\top\big) R,
            \qquad F_l = F_{PCA}(\{H^l_{i,k}\}_{i,k}) \\
        \hat x &= t_0 + \frac{1}{|F_{L-1}|}\sum_{(R, c) \in F_{L-1}} \phi_{out}\big(\mathrm{GCL}_L(\cdot)\big) R

    (rows of ``H`` are vectors; local = ``R`` times global; averages carry the frame weights). Every
    layer is an exactly E(d)-equivariant map of the latent vectors (translation invariant: latent
    clouds are centred), so the model is exactly E(d)-equivariant, reflections included, with the
    library's exact handling of degenerate spectra (latent clouds included). Edge features are
    ``[q_i q_j, |x_i - x_j|^2]``, as in that code.

    Gradients do not flow through the latent frames' rotations (``R`` of ``F_l`` is computed from the
    detached latent cloud, as in the official code): the forward pass is exactly equivariant either way,
    and the eigenvector derivatives of a nearly degenerate latent spectrum would be unbounded. They do flow
    through the latent centroids ``c`` (as in the official code), so that the gradient w.r.t. ``H^l`` is
    that of the function computed, which only sees ``H^l - c``: with ``c`` detached it would carry a
    spurious common component (for every system, the sum of the gradients of its ``N K`` latent vectors),
    which moves the parameters without changing the loss.

    Args:
        dim: space dimension ``d``.
        hidden: width, a multiple of ``d`` (60 = 20 vectors in 3-D).
        layers: number of GCL layers (4).
        mode: frame mode of every layer (``"all"``, ``"canonical"``, ``"stochastic"``: ``n_samples``
            elements while training, all in eval).
        n_samples: frame elements per system and layer in stochastic mode.
        generator: random source of the stochastic mode.
        node_charge: append the charge to the input node features.
        tol, max_size: see :func:`~equiframe.frames.pca_frame`.

    Shapes:
        as :class:`NBodyGNN`.
    """

    #: ``torch.compile`` (inductor, CPU, torch 2.13) produced non-finite latent vectors in this model's first
    #: training step (the frame code then stops with an error): the training loop keeps it eager.
    supports_compile = False

    def __init__(self, dim: int = 3, hidden: int = 60, layers: int = 4, *, mode: FAMode = "all",
                 n_samples: int | None = None, generator: torch.Generator | None = None, node_charge: bool = False,
                 tol=None, max_size: int = 1024):
        super().__init__()
        _check_sizes(dim=dim, hidden=hidden, layers=layers)
        if hidden % dim:
            raise ValueError(f"hidden: expected a multiple of dim={dim} (hidden vectors), got {hidden}")
        if mode not in get_args(FAMode):
            raise ValueError(f"mode: expected one of {get_args(FAMode)}, got {mode!r}")
        if mode == "stochastic" and (n_samples is None or isinstance(n_samples, bool) or not isinstance(n_samples, int)
                                     or n_samples < 1):
            raise ValueError(f"n_samples: expected a positive integer for stochastic mode, got {n_samples!r}")
        self.inputs = dict(NBODY_TYPES)
        self.output = "pos"
        self.dim, self.hidden, self.mode, self.n_samples = dim, hidden, mode, n_samples or 1
        self.generator, self.tol, self.max_size, self.node_charge = generator, tol, max_size, bool(node_charge)
        self.embedding = nn.Linear(2 * dim + int(node_charge), hidden)
        self.layers = nn.ModuleList(GCL(hidden, 2) for _ in range(layers))
        self.decoder = _mlp([hidden, hidden, dim])

    def _fold(self, pts: Tensor, pbatch: Tensor, batch: Tensor, edge_index: Tensor):
        """PCA frames of the clouds ``pts`` (example ``pbatch``) and the node/edge copies of each element."""
        mode = self.mode if (self.training or self.mode != "stochastic") else "all"
        frame = pca_frame(pts, group=f"E({self.dim})", batch=pbatch, mode=mode, n_samples=self.n_samples,
                          generator=self.generator, tol=self.tol, max_size=self.max_size)
        fold = FoldedBatch.euclidean(frame, dense=False, batch=batch, edge_index=edge_index)
        R = frame.R.to(pts.dtype)[fold.new_batch]  # [N_rep, d, d] frame of each node copy
        return frame, fold, R

    def _average(self, y: Tensor, fold, R: Tensor, n: int) -> Tensor:
        """``sum_m w_m y_m R_m`` over the copies of every node: local rows ``[N_rep, K, d]`` -> ``[n, K, d]``."""
        w = fold.weight.to(y.dtype)[fold.new_batch]
        yw = torch.matmul(y, R) * w[:, None, None]
        return scatter_sum(yw, fold.node_src, n)

    def forward(self, pos: Tensor, vel: Tensor, charge: Tensor, edge_index: Tensor, batch: Tensor | None = None,
                edge_attr: Tensor | None = None) -> Tensor:
        _check_inputs(pos, vel, charge, edge_index)
        if pos.shape[1] != self.dim:
            raise ValueError(f"pos: expected dimension {self.dim}, got {pos.shape[1]}")
        for name, v in (("pos", pos), ("vel", vel), ("charge", charge)):
            if not bool(torch.isfinite(v).all()):
                raise ValueError(f"{name}: contains NaN or inf")
        n, d, K = pos.shape[0], self.dim, self.hidden // self.dim
        if batch is None:
            batch = torch.zeros(n, dtype=torch.long, device=pos.device)
        a = torch.cat([_edge_attr(charge, edge_index, edge_attr),
                       (pos[edge_index[0]] - pos[edge_index[1]]).square().sum(1, keepdim=True)], 1)
        frame, fold, R = self._fold(pos, batch, batch, edge_index)
        counts = torch.bincount(batch, minlength=frame.num_examples).to(pos.dtype)[:, None]  # nodes per system
        t0 = frame.t[fold.new_batch]  # float64 centroids: far-away systems keep their precision
        x_loc = torch.matmul(R, (pos[fold.node_src].double() - t0).to(pos.dtype)[:, :, None])[:, :, 0]
        v_loc = torch.matmul(R, vel[fold.node_src][:, :, None])[:, :, 0]
        feats = [x_loc, v_loc] + ([charge[fold.node_src]] if self.node_charge else [])
        h = self.embedding(torch.cat(feats, 1))
        for i, layer in enumerate(self.layers):
            h = layer(h, fold.edge_index, a[fold.edge_src])
            if i == len(self.layers) - 1:
                break
            H = self._average(h.view(-1, K, d), fold, R, n)  # [n, K, d] equivariant latent vectors
            _, fold, R = self._fold(H.detach().reshape(n * K, d), batch.repeat_interleave(K), batch, edge_index)
            # the latent centroid of every system, differentiable (the frames R are not): what follows only
            # sees H - c, so the gradient w.r.t. H must not carry a common (translation) component
            c = scatter_sum(H.mean(1), batch, frame.num_examples) / counts  # [B, d]
            h = torch.matmul(H[fold.node_src] - c[batch[fold.node_src]][:, None, :],
                             R.transpose(-1, -2)).reshape(-1, K * d)
        out = self._average(self.decoder(h)[:, None, :], fold, R, n)[:, 0]
        t_ex = frame.example_translation()  # [B, d] centroids of the systems (float64)
        return (out.double() + t_ex[batch]).to(pos.dtype)


# ------------------------------------------------------------------------------------------ EGNN
class EGCLVel(nn.Module):
    r"""E(n)-equivariant layer with velocities (Satorras et al., 2021, eqs. 3-6 and 7):

    .. math::
        m_{ij} &= \phi_e(h_i, h_j, |x_i - x_j|^2, a_{ij}) \\
        x_i' &= x_i + \frac{1}{|N(i)|}\sum_{j} (x_i - x_j)\, \phi_x(m_{ij}) + \phi_v(h_i)\, v_i \\
        h_i' &= h_i + \phi_h(h_i, \textstyle\sum_j m_{ij})

    Shapes:
        h: ``[N, H]``, x, v: ``[N, d]``, edge_index: ``[2, E]``, edge_attr: ``[E, C]`` -> ``([N, H], [N, d])``
    """

    def __init__(self, hidden: int, edge_dim: int, update_features: bool = True):
        super().__init__()
        self.edge_mlp = _mlp([2 * hidden + 1 + edge_dim, hidden, hidden], act=True)
        # the last layer's feature update would not reach the output (no unused parameters: DDP)
        self.node_mlp = _mlp([2 * hidden, hidden, hidden]) if update_features else None
        last = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)  # small initial coordinate updates (as in EGNN)
        self.coord_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), last)
        self.vel_mlp = _mlp([hidden, hidden, 1])
        self.fused_messages = True  # the first layer of phi_e per node (see GCL)

    def forward(self, h: Tensor, x: Tensor, v: Tensor, edge_index: Tensor, edge_attr: Tensor) -> tuple[Tensor, Tensor]:
        src, dst = edge_index[0], edge_index[1]
        diff = x[dst] - x[src]  # x_i - x_j
        radial = diff.square().sum(1, keepdim=True)
        m = _message(self.edge_mlp, self.fused_messages, h, src, dst, torch.cat([radial, edge_attr], dim=1))
        n = h.shape[0]
        deg = scatter_sum(torch.ones_like(radial), dst, n).clamp(min=1)
        x = x + scatter_sum(diff * self.coord_mlp(m), dst, n) / deg + self.vel_mlp(h) * v
        if self.node_mlp is not None:
            h = h + self.node_mlp(torch.cat([h, scatter_sum(m, dst, n)], dim=1))
        return h, x


class EGNN(nn.Module):
    r"""EGNN for n-body (velocity variant), E(d)-equivariant.

    .. math::
        h^0_i = W_{in} |v_i|,\quad a_{ij} = [q_i q_j, |x_i - x_j|^2],\quad
        (h^{l+1}, x^{l+1}) = \mathrm{EGCL}(h^l, x^l, v, a),\quad \hat x = x^L

    Args:
        dim: space dimension.
        hidden: width (64 in the EGNN paper).
        layers: number of layers (4).

    Shapes:
        as :class:`NBodyGNN`.
    """

    def __init__(self, dim: int = 3, hidden: int = 64, layers: int = 4):
        super().__init__()
        _check_sizes(dim=dim, hidden=hidden, layers=layers)
        self.inputs = dict(NBODY_TYPES)
        self.output = "pos"
        self.embedding = nn.Linear(1, hidden)
        self.layers = nn.ModuleList(EGCLVel(hidden, 2, update_features=i < layers - 1) for i in range(layers))

    def forward(self, pos: Tensor, vel: Tensor, charge: Tensor, edge_index: Tensor, batch: Tensor | None = None,
                edge_attr: Tensor | None = None) -> Tensor:
        _check_inputs(pos, vel, charge, edge_index)
        a = _edge_attr(charge, edge_index, edge_attr)
        a = torch.cat([a, (pos[edge_index[0]] - pos[edge_index[1]]).square().sum(1, keepdim=True)], 1)
        h = self.embedding(vel.norm(dim=1, keepdim=True))
        x = pos
        for layer in self.layers:
            h, x = layer(h, x, vel, edge_index, a)
        return x


# ------------------------------------------------------------------------------------------ TF-GNN
TFFrameVectors = Literal["learned", "coulomb"]
TFTrainFrames = Literal["fixed", "flip", "stabilizer"]
TF_EDGE_FEATURES = ("charge", "velocity", "coulomb")
#: smoothing length of the Coulomb terms of TF-GNN (frames and edge features): ``(r^2 + delta^2)``
TF_COULOMB_DELTA = 0.1


def _parse_tf_edge_features(spec: str) -> tuple[str, ...]:
    """``"charge+velocity"`` -> ``("charge", "velocity")`` (canonical order; ``charge`` is required)."""
    if not isinstance(spec, str):
        raise TypeError(f"edge_features: expected a string like 'charge+velocity', got {type(spec).__name__}")
    parts = [t.strip() for t in spec.split("+")]
    bad = [t for t in parts if t not in TF_EDGE_FEATURES]
    if bad or "charge" not in parts or len(set(parts)) != len(parts):
        raise ValueError(f"edge_features: expected 'charge' joined by '+' with optional {TF_EDGE_FEATURES[1:]} "
                         f"(each once), got {spec!r}")
    return tuple(t for t in TF_EDGE_FEATURES if t in parts)


def coulomb_vectors(pos: Tensor, charge: Tensor, edge_index: Tensor, delta: float = TF_COULOMB_DELTA) -> Tensor:
    r"""The smoothed Coulomb force on every particle, an E(d)-equivariant vector:

    .. math::  F_i = \sum_{j \in N(i)} q_i q_j\, \frac{x_i - x_j}{(|x_i - x_j|^2 + \delta^2)^{3/2}}

    Shapes:
        pos: ``[N, d]``; charge: ``[N, 1]``; edge_index: ``[2, E]`` -> ``[N, d]``
    """
    _check_inputs(pos, pos, charge, edge_index)
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not delta > 0 or delta == float("inf"):
        raise ValueError(f"delta: expected a positive finite number, got {delta!r}")
    src, dst = edge_index[0], edge_index[1]
    diff = pos[dst] - pos[src]
    w = charge[dst] * charge[src] * (diff.square().sum(1, keepdim=True) + delta**2).pow(-1.5)
    return scatter_sum(w * diff, dst, pos.shape[0])


class TFGNN(nn.Module):
    r"""Tensor-frame GNN: learned local frames and tensorial (scalar + vector) messages.

    .. math::
        R_i &= \mathrm{GramSchmidt}\big(v_i,\ w_{i,1}, \dots, w_{i,d-1}\big),\qquad
        w_{i,k} = \sum_j \phi_k(|x_j - x_i|, q_i, |v_i|, q_j, |v_j|)\, u(r_{ij})\,\frac{x_j - x_i}{r_{ij}} \\
        f^0_i &= W_{in}\,[q_i, |v_i|, R_i v_i] \\
        f^{l+1}_i &= f^l_i + \mathrm{TFConv}\big(f^l_i, \{\rho(R_i R_j^\top) f^l_j,\ R_i(x^l_j - x^l_i),\
                    |x^l_j - x^l_i|,\ e_{ij}\}_j\big) \\
        x^{l+1}_i &= x^l_i + R_i^\top\, W^l_x f^{l+1}_i \quad (\text{``position_updates``; else } x^l = x) \\
        \hat x_i &= x^{L-1}_i + R_i^\top\, W_{out} f^L_i

    The hidden features have type ``hidden_reps`` (e.g. ``"32x0n+8x1n"``): the vectors are moved
    between neighbouring frames by ``rho(R_i R_j^T)``; every learned map sees invariants only, so the
    prediction is exactly E(d)-equivariant (reflections included) wherever the frames are.

    Args:
        dim: space dimension.
        hidden_reps: type of the node features between layers.
        hidden_channels: width of the message / update MLPs.
        layers: number of tensor-frame layers.
        cutoff: cutoff radius ``r_c`` of the learned frame vectors (envelope ``u``; 20 covers all but
            about 0.1 % of the particle pairs at the input time).
        frame_hidden: width of the frame network ``phi`` (:class:`~equiframe.frames.local.LearnedFrames`,
            Gaussian radial basis).
        num_rbf: radial basis size of the frame network.
        frame_vectors: ``"learned"`` (default): the axes after ``v_i`` come from the learned vectors
            ``w_i``; ``"coulomb"``: the second axis is the smoothed Coulomb force
            :func:`coulomb_vectors` (the charge-weighted sum of relative positions), the remaining
            ``d - 2`` axes learned.
        position_updates: EGNN-style equivariant position updates between layers: after every layer but
            the last, ``x_i += R_i^T W_x f_i`` (a local displacement, initialised small), and the next
            layer's geometry (``R_i (x_j - x_i)``, ``|x_j - x_i|``) uses the updated positions. The frames
            stay those of the input.
        edge_features: the message edge features ``e_ij``, ``"charge"`` (``q_i q_j``, default) joined by
            ``"+"`` with ``"coulomb"`` (the scalar ``q_i q_j / (|x_i - x_j|^2 + \delta^2)`` of the input
            positions) and / or ``"velocity"`` (the relative velocity ``v_j - v_i``, a vector moved to the
            receiver's frame), e.g. ``"charge+velocity"``.
        train_frames: randomisation of the frames while training (evaluation always uses ``R_i``):
            ``"fixed"`` (none, default); ``"flip"``: the last axis of every node's frame is negated with
            probability 1/2 (the sign of the last axis is an arbitrary choice of the frame construction);
            ``"stabilizer"``: the axes after the velocity are replaced by a uniformly random orthogonal
            combination of them (a Haar-random element of O(d - 1) per node, the stabiliser of ``v_i``).
            Both are drawn from torch's global random stream independently of the input, so the training
            model is equivariant in distribution and the evaluation model exactly; like FA-GNN's stochastic
            frames they make the network see every admissible frame, a data augmentation.

    Frames are degenerate (deterministic, non-equivariant fallback axes) only where ``v_i = 0`` or the
    vectors are (nearly) collinear; :meth:`local_frames` with ``return_mask=True`` reports them.

    Shapes:
        as :class:`NBodyGNN`.
    """

    def __init__(self, dim: int = 3, hidden_reps: str = "32x0n+8x1n", hidden_channels: int = 64, layers: int = 4,
                 *, cutoff: float = 20.0, frame_hidden: int = 32, num_rbf: int = 16,
                 frame_vectors: TFFrameVectors = "learned", position_updates: bool = False,
                 edge_features: str = "charge", train_frames: TFTrainFrames = "fixed"):
        super().__init__()
        from ..nn.tf_conv import TensorFrameConv  # noqa: PLC0415

        _check_sizes(dim=dim, hidden=hidden_channels, layers=layers)
        if frame_vectors not in get_args(TFFrameVectors):
            raise ValueError(f"frame_vectors: expected one of {get_args(TFFrameVectors)}, got {frame_vectors!r}")
        if frame_vectors == "coulomb" and dim < 2:
            raise ValueError("frame_vectors: 'coulomb' needs dim >= 2")
        if not isinstance(position_updates, bool):
            raise TypeError(f"position_updates: expected a bool, got {type(position_updates).__name__}")
        if train_frames not in get_args(TFTrainFrames):
            raise ValueError(f"train_frames: expected one of {get_args(TFTrainFrames)}, got {train_frames!r}")
        self.train_frames = train_frames
        self.edge_features = _parse_tf_edge_features(edge_features)
        self.inputs = dict(NBODY_TYPES)
        self.output = "pos"
        self.dim, self.frame_vectors, self.position_updates = dim, frame_vectors, position_updates
        self.reps_in = TensorReps("2x0n+1x1n", dim=dim)
        self.hidden_reps = as_reps(hidden_reps, dim, name="hidden_reps")
        if self.hidden_reps.has_pos:
            raise ValueError("hidden_reps: position blocks are not supported in the hidden features")
        n_scal = 1 + int("coulomb" in self.edge_features)
        reps_edge = f"{n_scal}x0n" + ("+1x1n" if "velocity" in self.edge_features else "")
        self.frames = LearnedFrames(dim, cutoff, in_features=2, hidden_channels=frame_hidden, num_rbf=num_rbf,
                                    rbf="gaussian")
        self.embedding = nn.Linear(self.reps_in.size, self.hidden_reps.size)
        self.layers = nn.ModuleList(
            TensorFrameConv(self.hidden_reps, self.hidden_reps, hidden_channels=hidden_channels, reps_edge=reps_edge,
                            dim=dim)
            for _ in range(layers)
        )
        if position_updates:  # (no new modules by default: the shipped state dicts keep their keys)
            self.pos_updates = nn.ModuleList(nn.Linear(self.hidden_reps.size, dim) for _ in range(layers - 1))
            for lin in self.pos_updates:  # small initial displacements (as EGNN's coordinate MLP)
                nn.init.xavier_uniform_(lin.weight, gain=0.001)
                nn.init.zeros_(lin.bias)
        self.head = nn.Linear(self.hidden_reps.size, dim)

    def local_frames(self, pos: Tensor, vel: Tensor, scalars: Tensor, edge_index: Tensor,
                     return_mask: bool = False, charge: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """Frames ``R_i`` (rows = axes): Gram-Schmidt of ``[v_i, w_i1, ..., w_i(d-1)]`` where ``w_ik`` are the
        first ``d - 1`` equivariant vectors of :class:`LearnedFrames` (learned radial sums over neighbours);
        with ``frame_vectors="coulomb"``, ``[v_i, F_i, w_i1, ..., w_i(d-2)]`` (``F_i``: :func:`coulomb_vectors`,
        ``charge`` required; default: ``scalars[:, :1]``).

        The velocity is a natural, well-conditioned first axis; the learned vectors alone are nearly collinear
        on 5-particle systems at initialisation (their coefficients are smooth functions of few invariants).
        The orthonormalisation runs in float64 whatever the model's dtype (see the comment in the code).

        Shapes:
            pos, vel: ``[N, d]``; scalars: ``[N, 2]``; edge_index: ``[2, E]`` -> ``[N, d, d]`` (and ``[N]``)
        """
        w = self.frames.predict_vectors(pos, edge_index, scalars)  # [N, d, d]
        if self.frame_vectors == "coulomb":
            q = scalars[:, :1] if charge is None else charge
            vectors = torch.cat([vel[:, None, :], coulomb_vectors(pos, q, edge_index)[:, None, :],
                                 w[:, : self.dim - 2]], dim=1)
        else:
            vectors = torch.cat([vel[:, None, :], w[:, : self.dim - 1]], dim=1)
        # Gram-Schmidt in float64: its degeneracy threshold scales with the precision (10 sqrt(eps)), and in
        # float32 (3.5e-3) about 8 % of the nodes of a trained model fell back to non-equivariant axes
        out = gram_schmidt_frames(vectors.double(), return_mask=return_mask)
        if return_mask:
            return out[0].to(pos.dtype), out[1]
        return out.to(pos.dtype)

    def _edge_features(self, pos: Tensor, vel: Tensor, edge_index: Tensor, a: Tensor) -> Tensor:
        """``[q_i q_j (, q_i q_j / (r^2 + delta^2)) (, v_j - v_i)]`` per edge (global vectors)."""
        src, dst = edge_index[0], edge_index[1]
        feats = [a]
        if "coulomb" in self.edge_features:
            r2 = (pos[dst] - pos[src]).square().sum(1, keepdim=True)
            feats.append(a[:, :1] / (r2 + TF_COULOMB_DELTA**2))
        if "velocity" in self.edge_features:
            feats.append(vel[src] - vel[dst])
        return feats[0] if len(feats) == 1 else torch.cat(feats, 1)

    def _randomised(self, R: Tensor) -> Tensor:
        """The training-time frame randomisation (``train_frames``) of frames ``R`` ``[N, d, d]``."""
        n, d = R.shape[0], self.dim
        if self.train_frames == "flip":
            sign = torch.randint(0, 2, (n, 1, 1), device=R.device).to(R.dtype) * 2 - 1
            return torch.cat([R[:, :-1], sign * R[:, -1:]], dim=1)
        q = random_orthogonal(n, d - 1, dtype=R.dtype, device=R.device)  # Haar O(d-1) per node, torch's stream
        return torch.cat([R[:, :1], q @ R[:, 1:]], dim=1)

    def forward(self, pos: Tensor, vel: Tensor, charge: Tensor, edge_index: Tensor, batch: Tensor | None = None,
                edge_attr: Tensor | None = None) -> Tensor:
        _check_inputs(pos, vel, charge, edge_index)
        param = self.embedding.weight
        if pos.dtype != param.dtype:
            raise TypeError(f"pos: dtype {pos.dtype} does not match the model's parameters ({param.dtype}); "
                            f"call .to({pos.dtype}) on the model")
        a = _edge_attr(charge, edge_index, edge_attr)
        if a.shape[1] != 1:
            raise ValueError(f"edge_attr: TF-GNN expects one channel (q_i q_j), got {a.shape[1]}")
        e = self._edge_features(pos, vel, edge_index, a)
        speed = vel.norm(dim=1, keepdim=True)
        scalars = torch.cat([charge, speed], dim=1)
        R = self.local_frames(pos, vel, scalars, edge_index, charge=charge)
        if self.training and self.train_frames != "fixed" and self.dim > 1:
            R = self._randomised(R)
        f = self.embedding(self.reps_in.to_local(torch.cat([scalars, vel], dim=1), R))
        x = pos
        for k, layer in enumerate(self.layers):
            f = f + layer(f, edge_index, R, x, edge_attr=e)
            if self.position_updates and k < len(self.layers) - 1:
                x = x + torch.einsum("nji,nj->ni", R, self.pos_updates[k](f))
        return x + torch.einsum("nji,nj->ni", R, self.head(f))  # R_i^T y_i (local displacement)


# ------------------------------------------------------------------------------------------ Linear
class LinearDynamics(nn.Module):
    r"""Linear baseline.

    ``mode="full"``: :math:`\hat x_i = x_i + W [x_i, v_i] + b` (a linear layer on positions and
    velocities, the EGNN paper's "Linear"); ``mode="velocity"``: :math:`\hat x_i = x_i + c\, v_i`
    with one learned scalar ``c`` (equivariant).

    Shapes:
        as :class:`NBodyGNN`.
    """

    def __init__(self, dim: int = 3, mode: Literal["full", "velocity"] = "full"):
        super().__init__()
        _check_sizes(dim=dim)
        if mode not in ("full", "velocity"):
            raise ValueError(f"mode: expected 'full' or 'velocity', got {mode!r}")
        self.mode = mode
        if mode == "full":
            self.linear = nn.Linear(2 * dim, dim)
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)
        else:
            self.c = nn.Parameter(torch.tensor(0.0))
            self.inputs = dict(NBODY_TYPES)  # E(d)-equivariant: declares its types like the other equivariant models
            self.output = "pos"

    def forward(self, pos: Tensor, vel: Tensor, charge: Tensor, edge_index: Tensor, batch: Tensor | None = None,
                edge_attr: Tensor | None = None) -> Tensor:
        _check_inputs(pos, vel, charge, edge_index)
        if self.mode == "full":
            return pos + self.linear(torch.cat([pos, vel], dim=1))
        return pos + self.c.to(pos.dtype) * vel


# ------------------------------------------------------------------------------------------ factory
def _check_sizes(**sizes: int) -> None:
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive integer, got {v!r}")


def build_nbody_model(name: ModelName, *, dim: int = 3, hidden: int | None = None, layers: int = 4,
                      fa_mode: FAMode = "all", hidden_reps: str = "32x0n+8x1n", edge_distances: bool = False,
                      tf_cutoff: float = 20.0, fa_variant: FAVariant = "input",
                      tf_frame_vectors: TFFrameVectors = "learned", tf_position_updates: bool = False,
                      tf_edge_features: str = "charge", tf_train_frames: TFTrainFrames = "fixed") -> nn.Module:
    """Build one of the n-body models with the protocol's defaults.

    Args:
        name: ``"fa-gnn"``, ``"tf-gnn"``, ``"egnn"``, ``"gnn"``, ``"linear"`` (a linear map of
            ``[x, v]``, EGNN's ``linear``) or ``"linear-vel"`` (``x + c v``, one learned ``c``: EGNN's
            ``linear_vel``, most likely the published "Linear" row).
        dim: space dimension.
        hidden: width (default: 60 for GNN/FA-GNN, 64 for EGNN/TF-GNN message MLPs).
        layers: message passing layers (4).
        fa_mode: frame averaging mode of FA-GNN.
        hidden_reps: TF-GNN feature type.
        edge_distances: GNN/FA-GNN: add squared distances to the edge features.
        tf_cutoff: TF-GNN learned-frame cutoff radius.
        fa_variant: FA-GNN: ``"input"`` (:class:`FAGNN`, one frame of the input around the whole GNN) or
            ``"layerwise"`` (:class:`LayerwiseFAGNN`, frame averaging at every layer as in the FA paper's
            n-body code; its edge features always include squared distances).
        tf_frame_vectors, tf_position_updates, tf_edge_features, tf_train_frames: TF-GNN options
            ``frame_vectors``, ``position_updates``, ``edge_features``, ``train_frames`` of :class:`TFGNN`.
    """
    if fa_variant not in get_args(FAVariant):
        raise ValueError(f"fa_variant: expected one of {get_args(FAVariant)}, got {fa_variant!r}")
    if name == "gnn":
        return NBodyGNN(dim, hidden or 60, layers, edge_distances=edge_distances)
    if name == "fa-gnn" and fa_variant == "layerwise":
        return LayerwiseFAGNN(dim, hidden or 60, layers, mode=fa_mode, n_samples=1 if fa_mode == "stochastic" else None)
    if name == "fa-gnn":
        return FAGNN(dim, hidden or 60, layers, mode=fa_mode, edge_distances=edge_distances,
                     n_samples=1 if fa_mode == "stochastic" else None)
    if name == "egnn":
        return EGNN(dim, hidden or 64, layers)
    if name == "tf-gnn":
        return TFGNN(dim, hidden_reps, hidden or 64, layers, cutoff=tf_cutoff, frame_vectors=tf_frame_vectors,
                     position_updates=tf_position_updates, edge_features=tf_edge_features,
                     train_frames=tf_train_frames)
    if name == "linear":
        return LinearDynamics(dim)
    if name == "linear-vel":
        return LinearDynamics(dim, mode="velocity")
    raise ValueError(f"name: expected one of {MODEL_NAMES}, got {name!r}")
