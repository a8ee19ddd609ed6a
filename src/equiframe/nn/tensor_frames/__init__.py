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

This package provides

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

Layout: :mod:`.checks` (argument checks), :mod:`.geometry` (edge frames, transport, local geometry),
:mod:`.graph` (:class:`TFGraph`), :mod:`.local` (:class:`ToLocal`, :class:`ToGlobal`), :mod:`.strategies`
(one class per transport strategy), :mod:`.capabilities` (what a layer can do, the probe),
:mod:`.hooks` (the per-call PyG hooks), :mod:`.conv` (:class:`TFConv`).
"""

from __future__ import annotations

from .capabilities import LayerCaps, inspect_layer
from .checks import check_frames
from .conv import Mode, TFConv
from .geometry import EdgeGeometry, edge_frames, geometry_dim, local_edge_geometry, safe_length, transport
from .graph import TFGraph
from .local import ToGlobal, ToLocal

__all__ = [
    "EdgeGeometry",
    "LayerCaps",
    "Mode",
    "TFConv",
    "TFGraph",
    "ToGlobal",
    "ToLocal",
    "check_frames",
    "edge_frames",
    "geometry_dim",
    "inspect_layer",
    "local_edge_geometry",
    "safe_length",
    "transport",
]
