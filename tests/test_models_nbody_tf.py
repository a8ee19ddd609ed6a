"""TF-GNN's architecture options (issue 17): Coulomb frames, position updates between layers, physical edge
features. Every variant must stay exactly E(d)-equivariant (rotations, reflections, translations), with the
default unchanged (the shipped state dicts keep their keys)."""

from __future__ import annotations

import pytest
import torch

from equiframe.experiments.nbody import NBodyExperiment, NBodyExperimentConfig
from equiframe.models.nbody import NBODY_TYPES, TFGNN, build_nbody_model, coulomb_vectors
from equiframe.testing import assert_equivariant, equivariance_error
from test_models_nbody import systems  # the same ragged batches of charged systems

TOL = {torch.float32: 1e-4, torch.float64: 1e-9}

VARIANTS = [
    {},
    {"position_updates": True},
    {"frame_vectors": "coulomb"},
    {"edge_features": "charge+velocity"},
    {"edge_features": "charge+coulomb"},
    {"position_updates": True, "frame_vectors": "coulomb", "edge_features": "charge+velocity+coulomb"},
]


def perturbed(d=3, dtype=torch.float64, reps="4x0n+2x1n", **kw):
    """A small model with all parameters perturbed (position updates far from their tiny initialisation)."""
    torch.manual_seed(0)
    model = TFGNN(d, reps, hidden_channels=16, layers=3, frame_hidden=8, **kw).to(dtype)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=torch.float64).to(dtype))
    return model


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: "+".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_variants_are_exactly_e3_equivariant(kw, dtype):
    model = perturbed(dtype=dtype, **kw)
    inputs, batch = systems(dtype=dtype, seed=3)
    rep = assert_equivariant(model, inputs, types=NBODY_TYPES, output="pos", group="E(3)", batch=batch,
                             generator=torch.Generator().manual_seed(2), rtol=TOL[dtype])
    assert rep.max_error <= TOL[dtype]


@pytest.mark.parametrize("kw", VARIANTS[1:], ids=lambda kw: "+".join(f"{k}={v}" for k, v in kw.items()))
def test_variants_explicit_reflection_and_translation(kw):
    """x -> Q x + t with det Q = -1 (an explicit reflection composed with a rotation), float64."""
    model = perturbed(**kw)
    inputs, batch = systems(seed=4)
    g = torch.Generator().manual_seed(5)
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    if torch.det(Q) > 0:
        Q = Q @ torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    assert torch.det(Q) < 0
    t = torch.randn(1, 3, generator=g, dtype=torch.float64) * 3
    out = model(**inputs, batch=batch)
    moved = {**inputs, "pos": inputs["pos"] @ Q.T + t, "vel": inputs["vel"] @ Q.T}
    out_moved = model(**moved, batch=batch)
    torch.testing.assert_close(out_moved, out @ Q.T + t, rtol=0, atol=1e-11)
    # and the output depends on the option (not a no-op)
    base = perturbed()
    assert (base(**inputs, batch=batch) - out).abs().max() > 1e-6


@pytest.mark.parametrize("d", [2, 4])
def test_variants_other_dimensions(d):
    for kw in VARIANTS[1:]:
        model = perturbed(d=d, reps="4x0n+2x1n+1x2n", **kw)
        inputs, batch = systems(d=d, seed=6)
        assert_equivariant(model, inputs, types=NBODY_TYPES, output="pos", group=f"E({d})", batch=batch,
                           generator=torch.Generator().manual_seed(0))


def test_negative_control_identity_frames_break_equivariance(monkeypatch):
    """The checker sees the broken model: the same variant with identity frames instead of R_i."""
    model = perturbed(position_updates=True, frame_vectors="coulomb", edge_features="charge+velocity+coulomb")
    inputs, batch = systems()
    monkeypatch.setattr(model, "local_frames", lambda pos, *a, **k: torch.eye(3, dtype=pos.dtype).expand(
        pos.shape[0], 3, 3).contiguous())
    rep = equivariance_error(model, inputs, types=NBODY_TYPES, output="pos", group="E(3)", batch=batch,
                             generator=torch.Generator().manual_seed(0))
    assert rep.max_error > 1e-3
    with pytest.raises(AssertionError):
        assert_equivariant(model, inputs, types=NBODY_TYPES, output="pos", group="E(3)", batch=batch)


def test_coulomb_vectors_match_the_direct_sum():
    inputs, _ = systems(B=2, seed=7)
    pos, q, ei = inputs["pos"], inputs["charge"], inputs["edge_index"]
    F = coulomb_vectors(pos, q, ei, delta=0.1)
    ref = torch.zeros_like(pos)
    for j, i in ei.T.tolist():
        diff = pos[i] - pos[j]
        ref[i] += q[i, 0] * q[j, 0] * diff / (diff.square().sum() + 0.01) ** 1.5
    torch.testing.assert_close(F, ref)


def test_coulomb_frames_use_the_force_axis():
    model = perturbed(frame_vectors="coulomb")
    inputs, _ = systems(seed=8)
    scalars = torch.cat([inputs["charge"], inputs["vel"].norm(dim=1, keepdim=True)], 1)
    R, deg = model.local_frames(inputs["pos"], inputs["vel"], scalars, inputs["edge_index"], return_mask=True,
                                charge=inputs["charge"])
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand_as(R))
    assert not deg.any()
    v, F = inputs["vel"], coulomb_vectors(inputs["pos"], inputs["charge"], inputs["edge_index"])
    torch.testing.assert_close(R[:, 0], v / v.norm(dim=1, keepdim=True))
    # the second axis lies in span(v, F) and points along F's part orthogonal to v
    Fp = F - (F * R[:, 0]).sum(1, keepdim=True) * R[:, 0]
    torch.testing.assert_close(R[:, 1], Fp / Fp.norm(dim=1, keepdim=True))


def test_position_updates_start_small_and_move_the_geometry():
    torch.manual_seed(0)
    model = TFGNN(3, "4x0n+2x1n", hidden_channels=16, layers=3, frame_hidden=8, position_updates=True).double()
    assert len(model.pos_updates) == 2
    assert all(lin.weight.abs().max() < 1e-2 and lin.bias.abs().max() == 0 for lin in model.pos_updates)
    inputs, batch = systems(seed=9)
    out = model(**inputs, batch=batch)
    out.square().sum().backward()
    assert all(lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0 for lin in model.pos_updates)


def test_default_keeps_the_state_dict_keys():
    keys = set(TFGNN().state_dict())
    assert not any(k.startswith("pos_updates") for k in keys)
    assert keys == set(TFGNN(edge_features="charge", frame_vectors="learned").state_dict())
    # edge features change only the first message layer's input width
    wide = TFGNN(edge_features="charge+velocity+coulomb")
    assert set(wide.state_dict()) == keys
    assert wide.layers[0].msg_edge.in_features == TFGNN().layers[0].msg_edge.in_features + 4


@pytest.mark.parametrize(("kw", "exc", "match"), [
    ({"frame_vectors": "pca"}, ValueError, "frame_vectors"),
    ({"position_updates": 1}, TypeError, "position_updates"),
    ({"edge_features": "velocity"}, ValueError, "edge_features"),
    ({"edge_features": "charge+spin"}, ValueError, "edge_features"),
    ({"edge_features": "charge+velocity+velocity"}, ValueError, "edge_features"),
    ({"edge_features": ["charge"]}, TypeError, "edge_features"),
])
def test_bad_options_raise(kw, exc, match):
    with pytest.raises(exc, match=match):
        TFGNN(3, "4x0n+2x1n", hidden_channels=8, layers=1, **kw)


def test_two_channel_edge_attr_is_rejected():
    model = perturbed(edge_features="charge+velocity")
    inputs, batch = systems()
    with pytest.raises(ValueError, match="edge_attr"):
        model(**{**inputs, "edge_attr": inputs["edge_attr"].repeat(1, 2)}, batch=batch)


def test_factory_and_experiment_config_pass_the_options():
    m = build_nbody_model("tf-gnn", hidden=8, layers=2, hidden_reps="4x0n+2x1n", tf_frame_vectors="coulomb",
                          tf_position_updates=True, tf_edge_features="charge+velocity")
    assert m.frame_vectors == "coulomb" and m.position_updates and m.edge_features == ("charge", "velocity")
    cfg = NBodyExperimentConfig(model="tf-gnn", n_train=10, n_valid=10, n_test=10, hidden=8, layers=2,
                                hidden_reps="4x0n+2x1n", tf_frame_vectors="coulomb", tf_position_updates=True,
                                tf_edge_features="charge+coulomb")
    model = NBodyExperiment(cfg).build_model()
    assert model.frame_vectors == "coulomb" and model.position_updates and model.edge_features == ("charge", "coulomb")
    again = NBodyExperimentConfig.from_dict(cfg.to_dict())
    assert again == cfg
    old = {k: v for k, v in cfg.to_dict().items() if not k.startswith("tf_") or k == "tf_cutoff"}
    assert NBodyExperimentConfig.from_dict(old).tf_edge_features == "charge"  # configs written before the options
    with pytest.raises(ValueError, match="tf_frame_vectors"):
        NBodyExperimentConfig(model="tf-gnn", tf_frame_vectors="random")
    with pytest.raises(ValueError, match="tf_edge_features"):
        NBodyExperimentConfig(model="tf-gnn", tf_edge_features="velocity")
    with pytest.raises(TypeError, match="tf_position_updates"):
        NBodyExperimentConfig(model="tf-gnn", tf_position_updates="yes")


def test_cli_options_reach_the_config():
    from equiframe.cli import _experiment_from_args, build_parser

    args = build_parser().parse_args(["train", "nbody", "--model", "tf-gnn", "--tf-frames", "coulomb",
                                      "--tf-position-updates", "--tf-edge-features", "charge+velocity"])
    c = _experiment_from_args(args).config
    assert (c.tf_frame_vectors, c.tf_position_updates, c.tf_edge_features) == ("coulomb", True, "charge+velocity")
    args = build_parser().parse_args(["train", "nbody", "--model", "tf-gnn"])
    c = _experiment_from_args(args).config
    assert (c.tf_frame_vectors, c.tf_position_updates, c.tf_edge_features) == ("learned", False, "charge")


@pytest.mark.parametrize("mode", ["flip", "stabilizer"])
def test_train_frames_randomise_only_in_training(mode, monkeypatch):
    model = perturbed(train_frames=mode, edge_features="charge+velocity")
    inputs, batch = systems(seed=10)
    # evaluation: the deterministic frames, exactly equivariant
    model.eval()
    assert_equivariant(model, inputs, types=NBODY_TYPES, output="pos", group="E(3)", batch=batch,
                       generator=torch.Generator().manual_seed(0))
    ref = model(**inputs, batch=batch)
    model.train()
    torch.manual_seed(0)
    a = model(**inputs, batch=batch)
    torch.manual_seed(0)
    b = model(**inputs, batch=batch)
    torch.testing.assert_close(a, b)  # reproducible under the global seed
    assert (a - ref).abs().max() > 1e-6  # and different from the evaluation model
    # the randomised frames are orthogonal frames of the admissible set: first axis v / |v|, rest in its complement
    scalars = torch.cat([inputs["charge"], inputs["vel"].norm(dim=1, keepdim=True)], 1)
    R = model.local_frames(inputs["pos"], inputs["vel"], scalars, inputs["edge_index"])
    Rr = model._randomised(R)
    eye = torch.eye(3, dtype=torch.float64).expand_as(R)
    torch.testing.assert_close(Rr @ Rr.transpose(1, 2), eye)
    torch.testing.assert_close(Rr[:, 0], R[:, 0])
    if mode == "flip":
        assert torch.allclose(Rr[:, 1], R[:, 1]) and torch.allclose(Rr[:, 2].abs(), R[:, 2].abs())
    # a random input-independent frame choice: the training output moved by g equals g of the output under the
    # same draw (equivariant in distribution, here draw by draw)
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    Q = Q @ torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    torch.manual_seed(5)
    out = model(**inputs, batch=batch)
    torch.manual_seed(5)
    moved = model(**{**inputs, "pos": inputs["pos"] @ Q.T, "vel": inputs["vel"] @ Q.T}, batch=batch)
    torch.testing.assert_close(moved, out @ Q.T, rtol=0, atol=1e-10)


def test_train_frames_bad_value():
    with pytest.raises(ValueError, match="train_frames"):
        TFGNN(3, "4x0n+2x1n", hidden_channels=8, layers=1, train_frames="random")
    with pytest.raises(ValueError, match="tf_train_frames"):
        NBodyExperimentConfig(model="tf-gnn", tf_train_frames="random")
