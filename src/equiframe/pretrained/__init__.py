"""Pretrained weights of the headline models, shipped with the package.

Each model is a small float32 state dict ``weights/<experiment>__<model>.pt`` with a JSON sidecar
``weights/<experiment>__<model>.json`` that records its SHA-256, the class or factory that builds it
(``"module:attribute"`` plus keyword arguments), the committed test metrics of the run it comes from
and how that run was trained. :func:`load` verifies the checksum, reads the file with
``torch.load(..., weights_only=True)`` (no unpickling of code), builds the model and returns it in
``eval()`` mode. :func:`evaluate` re-runs the experiment's evaluation on the shipped weights.

Example:
    >>> import equiframe.pretrained
    >>> "nbody/tf-gnn" in equiframe.pretrained.available()
    True
    >>> model = equiframe.pretrained.load("nbody/tf-gnn")
    >>> round(equiframe.pretrained.info("nbody/tf-gnn").metrics["mse"], 4)
    0.0052

A new model is added with :func:`save` (one ``.pt`` and one ``.json`` file; there is no central
manifest to edit). :func:`normal_estimator` wraps a shipped normals model into an estimator for point
clouds of any size (:mod:`equiframe.pretrained.normals`).
"""

from ._loader import ChecksumError, available, build, evaluate, info, load, save
from ._registry import WEIGHTS_DIR, WeightsInfo, sha256_of
from .normals import NormalEstimator, available_normal_models, load_normal_model, normal_estimator, orient_normals

__all__ = ["ChecksumError", "NormalEstimator", "WEIGHTS_DIR", "WeightsInfo", "available", "available_normal_models",
           "build", "evaluate", "info", "load", "load_normal_model", "normal_estimator", "orient_normals", "save",
           "sha256_of"]
