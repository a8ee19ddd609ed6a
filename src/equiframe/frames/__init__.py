"""Frames: frame constructor objects (:class:`PCAFrames`, :class:`LaplacianFrames`), global PCA frames
(O(d)/SO(d)/E(d)/SE(d)), permutation frames and canonical labelling for graphs, local frames."""

from .base import Frame, Frames
from .canonical import CanonicalBudgetWarning, CanonicalLabels, canonical_keys
from .graph import PermutationFrame, canonical_ranks, frame_elements, laplacian_frame  # (imports .components)
from .components import shuffle_components
from .local import (
    LearnedFrames,
    LocalPCAFrames,
    identity_frames,
    local_pca_frames,
    neighbourhood_ties,
    random_global_frames,
    random_local_frames,
)
from .laplacian import LaplacianFrames
from .pca import PCAFrames, Tolerances, covariance, pca_frame

__all__ = [
    "CanonicalBudgetWarning",
    "CanonicalLabels",
    "Frame",
    "Frames",
    "LaplacianFrames",
    "PCAFrames",
    "LearnedFrames",
    "LocalPCAFrames",
    "PermutationFrame",
    "Tolerances",
    "canonical_keys",
    "canonical_ranks",
    "covariance",
    "frame_elements",
    "identity_frames",
    "laplacian_frame",
    "local_pca_frames",
    "neighbourhood_ties",
    "pca_frame",
    "random_global_frames",
    "random_local_frames",
    "shuffle_components",
]
