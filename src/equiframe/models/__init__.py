"""Models of the experiments, built from library parts (see :mod:`equiframe.models.nbody`)."""

from .nbody import EGNN, FAGNN, MODEL_NAMES, TFGNN, LinearDynamics, NBodyGNN, build_nbody_model

__all__ = ["EGNN", "FAGNN", "MODEL_NAMES", "TFGNN", "LinearDynamics", "NBodyGNN", "build_nbody_model"]
