"""The n-body models: shapes, gradients, exact E(3) equivariance (FA-GNN, EGNN, TF-GNN) and the
non-equivariant controls (GNN, Linear)."""

from __future__ import annotations

import pytest
import torch

from equiframe.datasets.nbody import fully_connected_edge_index
from equiframe.models.nbody import (
    EGNN,
    FAGNN,
    MODEL_NAMES,
    LayerwiseFAGNN,
    NBODY_TYPES,
    TFGNN,
    LinearDynamics,
    NBodyGNN,
    build_nbody_model,
)
from equiframe.testing import assert_equivariant, equivariance_error

TOL = {torch.float32: 1e-4, torch.float64: 1e-9}


def systems(B=4, n=5, d=3, dtype=torch.float64, seed=0):
    """A ragged batch of ``B`` fully connected charged systems (as NBodyExperiment.make_batch)."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(B * n, d, generator=g, dtype=torch.float64).to(dtype)
    vel = (0.5 * torch.randn(B * n, d, generator=g, dtype=torch.float64)).to(dtype)
    charge = (torch.randint(0, 2, (B * n, 1), generator=g) * 2 - 1).to(dtype)
    ei = fully_connected_edge_index(n)
    edge_index = torch.cat([ei + b * n for b in range(B)], 1)
    batch = torch.arange(B).repeat_interleave(n)
    edge_attr = charge[edge_index[0]] * charge[edge_index[1]]
    return {"pos": pos, "vel": vel, "charge": charge, "edge_index": edge_index, "edge_attr": edge_attr}, batch


def small(name, d=3):
    torch.manual_seed(0)
    if name == "fa-gnn":
        return FAGNN(d, hidden=16, layers=2)
    if name == "egnn":
        return EGNN(d, hidden=16, layers=2)
    if name == "tf-gnn":
        return TFGNN(d, "4x0n+2x1n", hidden_channels=16, layers=2, frame_hidden=8)
    if name == "gnn":
        return NBodyGNN(d, hidden=16, layers=2)
    if name == "linear-vel":
        return LinearDynamics(d, mode="velocity")
    return LinearDynamics(d)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shapes_and_gradients(name, dtype):
    model = small(name).to(dtype)
    inputs, batch = systems(dtype=dtype)
    out = model(**inputs, batch=batch)
    assert out.shape == inputs["pos"].shape and out.dtype == dtype
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ["fa-gnn", "egnn", "tf-gnn", "linear-vel"])
def test_equivariant_models_are_exactly_e3_equivariant(name, dtype):
    model = small(name).to(dtype)
    # a trained-like, non-trivial model: perturb all parameters
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64).to(dtype))
    inputs, batch = systems(dtype=dtype, seed=3)
    rep = assert_equivariant(model, inputs, types=NBODY_TYPES, output="pos", group="E(3)", batch=batch,
                             generator=torch.Generator().manual_seed(2), rtol=TOL[dtype])
    assert rep.max_error <= TOL[dtype]
    # also its own declared types
    assert model.inputs == NBODY_TYPES and model.output == "pos"


def test_fa_gnn_modes_equivariant():
    inputs, batch = systems(seed=5)
    for mode in ("all", "canonical", "stochastic"):
        torch.manual_seed(0)
        model = FAGNN(3, hidden=16, layers=2, mode=mode).double()
        model.eval()  # stochastic: full frame in eval
        assert_equivariant(model, inputs, types=NBODY_TYPES, output="pos", batch=batch,
                           generator=torch.Generator().manual_seed(0))


def test_fa_gnn_stochastic_training_is_reproducible_with_generator():
    inputs, batch = systems(seed=6)
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = FAGNN(3, hidden=8, layers=1, mode="stochastic", n_samples=2,
                      generator=torch.Generator().manual_seed(9)).double()
        outs.append(model(**inputs, batch=batch))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("name", ["gnn", "linear"])
def test_baselines_are_not_equivariant(name):
    """Negative control: the checker must see that the plain GNN / linear layer are not equivariant."""
    model = small(name).double()
    if name == "linear":
        with torch.no_grad():
            model.linear.weight.normal_(generator=torch.Generator().manual_seed(0))
    inputs, batch = systems()
    rep = equivariance_error(model, inputs, types=NBODY_TYPES, output="pos", batch=batch,
                             generator=torch.Generator().manual_seed(0))
    assert rep.max_error > 1e-3
    with pytest.raises(AssertionError):
        assert_equivariant(model, inputs, types=NBODY_TYPES, output="pos", batch=batch)


def test_linear_velocity_mode_is_equivariant():
    model = LinearDynamics(3, mode="velocity").double()
    with torch.no_grad():
        model.c.fill_(0.7)
    inputs, batch = systems()
    assert_equivariant(model, inputs, types=NBODY_TYPES, output="pos", batch=batch)


def test_fa_gnn_folds_every_frame_element():
    """FA-GNN = the average over the 8 frame copies of the backbone (checked by hand for one system)."""
    torch.manual_seed(0)
    model = FAGNN(3, hidden=8, layers=1).double()
    inputs, batch = systems(B=1)
    out, frame = model.fa(pos=inputs["pos"], vel=inputs["vel"], charge=inputs["charge"],
                          edge_attr=inputs["edge_attr"], edge_index=inputs["edge_index"], batch=batch,
                          return_frame=True)
    assert len(frame) == 8
    gnn = model.fa.backbone
    ref = torch.zeros_like(out)
    for R, t in zip(frame.R, frame.t):
        y = gnn((inputs["pos"] - t) @ R.T, inputs["vel"] @ R.T, inputs["charge"], inputs["edge_index"],
                edge_attr=inputs["edge_attr"])
        ref += (y @ R + t) / 8
    torch.testing.assert_close(out, ref)


def test_tf_gnn_frames_are_orthogonal_and_report_degenerate():
    model = small("tf-gnn").double()
    inputs, batch = systems()
    scalars = torch.cat([inputs["charge"], inputs["vel"].norm(dim=1, keepdim=True)], 1)
    R, deg = model.local_frames(inputs["pos"], inputs["vel"], scalars, inputs["edge_index"], return_mask=True)
    eye = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(R @ R.transpose(1, 2), eye.expand_as(R))
    assert not deg.any()
    # a particle at rest has no velocity axis: flagged, still orthogonal, no NaN
    inputs["vel"][0] = 0.0
    scalars = torch.cat([inputs["charge"], inputs["vel"].norm(dim=1, keepdim=True)], 1)
    R, deg = model.local_frames(inputs["pos"], inputs["vel"], scalars, inputs["edge_index"], return_mask=True)
    assert deg[0] and torch.isfinite(R).all()
    assert torch.isfinite(model(**inputs, batch=batch)).all()


def test_other_dimension():
    for name in ("fa-gnn", "egnn", "gnn", "linear"):
        torch.manual_seed(0)
        model = build_nbody_model(name, dim=2, hidden=8, layers=1).double()
        inputs, batch = systems(d=2)
        assert model(**inputs, batch=batch).shape == (20, 2)
    for name in ("fa-gnn", "egnn"):
        torch.manual_seed(0)
        model = build_nbody_model(name, dim=2, hidden=8, layers=1).double()
        inputs, batch = systems(d=2)
        assert_equivariant(model, inputs, types=NBODY_TYPES, output="pos", group="E(2)", batch=batch)
    for d in (2, 4):  # tensor frames in any dimension, with order-2 tensors in the features
        torch.manual_seed(0)
        model = TFGNN(d, "4x0n+2x1n+1x2n", hidden_channels=16, layers=2, frame_hidden=8).double()
        inputs, batch = systems(d=d)
        assert_equivariant(model, inputs, types=NBODY_TYPES, output="pos", group=f"E({d})", batch=batch)


def test_factory_defaults_and_errors():
    assert build_nbody_model("fa-gnn").fa.mode == "all"
    assert build_nbody_model("fa-gnn", fa_mode="canonical").fa.mode == "canonical"
    assert isinstance(build_nbody_model("tf-gnn"), TFGNN)
    gnn = build_nbody_model("gnn")
    assert gnn.embedding.out_features == 60 and len(gnn.layers) == 4
    assert build_nbody_model("egnn").embedding.out_features == 64
    with pytest.raises(ValueError, match="name"):
        build_nbody_model("transformer")
    with pytest.raises(ValueError, match="hidden"):
        NBodyGNN(3, hidden=0)
    with pytest.raises(ValueError, match="mode"):
        LinearDynamics(3, mode="quadratic")


def test_bad_inputs_raise():
    model = small("gnn").double()
    inputs, batch = systems()
    with pytest.raises(ValueError, match="vel"):
        model(**{**inputs, "vel": inputs["vel"][:-1]}, batch=batch)
    with pytest.raises(ValueError, match="charge"):
        model(**{**inputs, "charge": inputs["charge"][:, 0]}, batch=batch)
    with pytest.raises(ValueError, match="edge_attr"):
        model(**{**inputs, "edge_attr": inputs["edge_attr"][:3]}, batch=batch)
    with pytest.raises(TypeError, match="dtype"):
        small("tf-gnn").float()(**inputs, batch=batch)


def test_edge_attr_defaults_to_charge_products():
    model = small("egnn").double()
    inputs, batch = systems()
    a = model(**inputs, batch=batch)
    b = model(**{k: v for k, v in inputs.items() if k != "edge_attr"}, batch=batch)
    torch.testing.assert_close(a, b)


# ------------------------------------------------------------------ FA at every layer (the FA paper's n-body code)
def _perturbed(model, dtype, seed=1):
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64).to(dtype))
    return model


@pytest.mark.parametrize("d", [2, 3, 4])
def test_layerwise_fa_gnn_exactly_equivariant(d, dtype):
    """Rotations, reflections and translations, independent per system, d = 2, 3, 4, float32/64."""
    torch.manual_seed(0)
    model = _perturbed(LayerwiseFAGNN(d, hidden=4 * d, layers=3).to(dtype), dtype)
    inputs, batch = systems(d=d, dtype=dtype, seed=3)
    rep = assert_equivariant(model, inputs, types=NBODY_TYPES, output="pos", group=f"E({d})", batch=batch,
                             generator=torch.Generator().manual_seed(2), rtol=TOL[dtype])
    assert rep.max_error <= TOL[dtype]


def test_layerwise_fa_gnn_modes_and_degenerate_systems():
    inputs, batch = systems(seed=5)
    for mode in ("all", "canonical", "stochastic"):
        torch.manual_seed(0)
        model = LayerwiseFAGNN(3, hidden=12, layers=2, mode=mode, n_samples=2 if mode == "stochastic" else None)
        model = _perturbed(model.double(), torch.float64).eval()
        assert_equivariant(model, inputs, types=NBODY_TYPES, output="pos", batch=batch,
                           generator=torch.Generator().manual_seed(0))
    # degenerate position spectra: a square and a regular-tetrahedron-like system (tied eigenvalues)
    sq = torch.tensor([[1.0, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0], [0, 0, 0]], dtype=torch.float64)
    tet = torch.tensor([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1], [0, 0, 0]], dtype=torch.float64)
    inputs = dict(inputs)
    inputs["pos"] = torch.cat([sq, tet, inputs["pos"][10:]])
    inputs["vel"] = torch.zeros_like(inputs["pos"])  # no velocity to break the symmetry
    torch.manual_seed(0)
    model = _perturbed(LayerwiseFAGNN(3, hidden=12, layers=3).double(), torch.float64)
    out = model(**inputs, batch=batch)
    assert torch.isfinite(out).all()
    assert_equivariant(model, inputs, types=NBODY_TYPES, output="pos", batch=batch,
                       generator=torch.Generator().manual_seed(4))


def test_layerwise_fa_gnn_gradients_and_errors():
    torch.manual_seed(0)
    model = LayerwiseFAGNN(3, hidden=12, layers=3)
    inputs, batch = systems(dtype=torch.float32)
    model(**inputs, batch=batch).square().sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    with pytest.raises(ValueError, match="hidden"):
        LayerwiseFAGNN(3, hidden=10)
    with pytest.raises(ValueError, match="n_samples"):
        LayerwiseFAGNN(3, hidden=12, mode="stochastic")
    with pytest.raises(ValueError, match="pos"):
        model(**{**inputs, "pos": inputs["pos"] * float("nan")}, batch=batch)
    with pytest.raises(ValueError, match="fa_variant"):
        build_nbody_model("fa-gnn", fa_variant="deep")
    assert isinstance(build_nbody_model("fa-gnn", fa_variant="layerwise"), LayerwiseFAGNN)


def test_layerwise_fa_gnn_latent_gradients_have_no_common_component():
    """Every layer after the first sees its latent cloud ``H`` only through ``H - centroid``, so the gradient
    w.r.t. ``H`` sums to zero over each system's latent vectors; with a detached centroid it would not."""

    class Spy(LayerwiseFAGNN):
        def _average(self, y, fold, R, n):
            H = super()._average(y, fold, R, n)
            if H.shape[1] > 1:  # a latent cloud (K vectors per node), not the decoder's output
                H.retain_grad()
                self.latents.append(H)
            return H

    torch.manual_seed(0)
    model = _perturbed(Spy(3, hidden=12, layers=3).double(), torch.float64)
    model.latents = []
    inputs, batch = systems(seed=3)
    model(**inputs, batch=batch).square().sum().backward()
    assert len(model.latents) == 2
    for H in model.latents:
        per_system = torch.zeros(4, 3, dtype=H.dtype).index_add_(0, batch, H.grad.sum(1))
        assert H.grad.abs().max() > 1e-3
        torch.testing.assert_close(per_system, torch.zeros_like(per_system), atol=1e-12, rtol=0)


def test_layerwise_fa_gnn_negative_control():
    """Dropping the latent frames (running the layers on global latent vectors) breaks equivariance, and
    the checker sees it."""

    class Broken(LayerwiseFAGNN):
        def _average(self, y, fold, R, n):  # forget to rotate back: local rows averaged as if global
            w = fold.weight.to(y.dtype)[fold.new_batch]
            return (y * w[:, None, None]).new_zeros(n, *y.shape[1:]).index_add_(0, fold.node_src, y * w[:, None, None])

    torch.manual_seed(0)
    model = _perturbed(Broken(3, hidden=12, layers=2).double(), torch.float64)
    inputs, batch = systems(seed=3)
    with pytest.raises(AssertionError):
        assert_equivariant(model, inputs, types=NBODY_TYPES, output="pos", batch=batch,
                           generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("name,kw", [("gnn", {}), ("egnn", {}), ("fa-gnn", {"fa_variant": "layerwise"})])
def test_fused_messages_equal_the_reference_path(name, kw):
    """The first message layer computed per node (the default) equals the per-edge concatenation (the
    reference path, ``fused_messages = False``) up to rounding, outputs and gradients, same parameters."""
    inputs, batch = systems(B=3, dtype=torch.float64)
    torch.manual_seed(0)
    model = build_nbody_model(name, **kw).double()
    layers = [m for m in model.modules() if hasattr(m, "fused_messages")]
    assert layers and all(m.fused_messages for m in layers)
    outs = []
    for fused in (True, False):
        for m in layers:
            m.fused_messages = fused
        model.zero_grad()
        y = model(**inputs, batch=batch)
        y.square().sum().backward()
        outs.append((y.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-12, atol=1e-12)
    for a, b in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
