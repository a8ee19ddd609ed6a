"""Tensor Frames: equivariant message passing with one local frame per node.

* :class:`TFConv` wraps an *unmodified* PyTorch Geometric ``MessagePassing`` layer (one line);
* :class:`TFGraph` holds one graph's edges, frames and positions and caches what every layer would
  recompute (receiver layout, local edge geometry, per-receiver representation matrices);
* :class:`ToLocal` / :class:`ToGlobal` move typed features into / out of the node frames;
* :func:`use_native` switches the compiled CPU rotation kernel on/off for a block of code;
* :class:`TensorFrameConv` is a native tensor-frame layer, :class:`TensorFrameAttention` the
  global-frame attention (queries/keys/values moved to the global frame, O(N) frame work);
* :func:`mlp` is the one multi-layer perceptron helper of the package's models.
"""

from .._native import use_native
from .mlp import mlp
from .tensor_frames import TFConv, TFGraph, ToGlobal, ToLocal, local_edge_geometry, transport
from .tf_attention import TensorFrameAttention
from .tf_conv import TensorFrameConv
from .tf_transport import receiver_layout, transport_edges

__all__ = [
    "TFConv",
    "TFGraph",
    "ToGlobal",
    "ToLocal",
    "TensorFrameAttention",
    "TensorFrameConv",
    "local_edge_geometry",
    "mlp",
    "receiver_layout",
    "transport",
    "transport_edges",
    "use_native",
]
