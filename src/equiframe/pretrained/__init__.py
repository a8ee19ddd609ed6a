"""Pretrained models shipped with equiframe (checksummed float32 state dicts in ``weights/``).

* :func:`normal_estimator`: point-cloud normals of any size (:mod:`equiframe.pretrained.normals`).
"""

from .normals import NormalEstimator, available_normal_models, load_normal_model, normal_estimator, orient_normals

__all__ = ["NormalEstimator", "available_normal_models", "load_normal_model", "normal_estimator", "orient_normals"]
