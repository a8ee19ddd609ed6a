"""The data generators give the same bytes as before their refactorings (integrate_charged, make_csg_shape
and sample_shape were split into named parts in the one-house renovation; the digests below were computed
with the code before the split, on this project's environment: NumPy, manifold3d and OCP as pinned)."""

import hashlib

import numpy as np
import pytest

from equiframe.datasets.nbody import NBodyConfig, egnn_initial_conditions, integrate_charged


def _digest(*arrays) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()


def test_charged_trajectories_are_the_same_bytes():
    ic = egnn_initial_conditions(NBodyConfig.egnn_small())["train"]
    cfg = NBodyConfig(n_train=40, n_valid=5, n_test=5)
    out = integrate_charged(ic["pos0"][:40], ic["vel0"][:40], ic["charges"][:40], cfg)
    assert _digest(out["pos"], out["vel"]) == "71d0b80cc6db20e79e2304abe121ece2e67b5b5b765baf7283e7d48a5fe77258"


def test_csg_shapes_are_the_same_bytes():
    pytest.importorskip("manifold3d")
    from equiframe.datasets.shapes import make_csg_shape

    meshes = [make_csg_shape(np.random.default_rng(s)) for s in range(5)]
    assert _digest(*[x for m in meshes for x in (m.vertices, m.faces)]) == \
        "00abb424df54da39e9cf9294e4cb812288075af109b2cabc7c19a4d4ee2caba3"


def test_cad_samples_are_the_same_bytes():
    pytest.importorskip("build123d")
    from equiframe.datasets.cad_geometry import make_part, sample_shape

    parts = []
    for s in range(2):
        rng = np.random.default_rng(100 + s)
        part, _ = make_part(rng)
        parts.extend(sample_shape(part, 800, rng))
    assert _digest(*parts) == "26ba738bc6419bf7758d51f8fe89f566c15140089efa49aa71ffa818ef455554"
