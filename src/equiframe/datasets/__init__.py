"""Data sets: n-body (charged particles), graph separation, normal estimation; loaders for real formats.

Submodules are imported on use (``equiframe.datasets.shapes`` needs the ``shapes`` extra:
``manifold3d`` and ``trimesh``).
"""

from .nbody import NBodyConfig, NBodyDataset, generate_nbody, load_egnn_npy, nbody_baselines

__all__ = ["NBodyConfig", "NBodyDataset", "generate_nbody", "load_egnn_npy", "nbody_baselines"]
