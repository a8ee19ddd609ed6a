"""equiframe: make any neural network invariant or equivariant with frames.

Two systems:

* **Frame Averaging** (Puny et al., ICLR 2022): :class:`FrameAveraging` wraps any backbone and averages
  it over a small input-dependent set of group elements (PCA frames for O(d)/SO(d)/E(d)/SE(d)).
* **Tensor Frames** (Lippmann et al., 2024): one local frame per node; :mod:`equiframe.nn` makes
  PyTorch Geometric message passing layers equivariant by moving tensorial messages between frames.
"""

from .averaging import SCALAR, FoldedBatch, FrameAveraging
from .frames.base import Frame, Frames
from .frames.laplacian import LaplacianFrames
from .frames.pca import PCAFrames, Tolerances, pca_frame
from .linalg import eigen_gaps, symeig
from .groups import EuclideanGroup, GroupElement, SymmetricGroup, parse_group, random_orthogonal
from .reps import Block, TensorReps, as_reps

__version__ = "0.1.0"

__all__ = [
    "SCALAR",
    "FoldedBatch",
    "Frame",
    "Frames",
    "FrameAveraging",
    "LaplacianFrames",
    "PCAFrames",
    "SymmetricGroup",
    "as_reps",
    "parse_group",
    "Tolerances",
    "pca_frame",
    "symeig",
    "eigen_gaps",
    "Block", "EuclideanGroup", "GroupElement", "TensorReps", "random_orthogonal", "__version__"]
