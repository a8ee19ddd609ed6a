"""Frames: global PCA frames (O(d)/SO(d)/E(d)/SE(d)), permutation frames for graphs, local frames."""

from .base import Frame
from .pca import Tolerances, covariance, pca_frame

__all__ = ["Frame", "Tolerances", "covariance", "pca_frame"]
