"""Tests of the charged n-body data set (equiframe.datasets.nbody)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from equiframe.datasets import _cache
from equiframe.datasets import nbody
from equiframe.datasets.nbody import (
    SPLITS,
    NBodyConfig,
    NBodyDataset,
    collate_nbody,
    fully_connected_edge_index,
    generate_nbody,
    integrate_charged,
    load_egnn_npy,
    nbody_baselines,
    sample_initial_conditions,
    simulate_charged,
    split_rng,
)

# Population values (100 000 simulations; see the module docstring) and the spread of one split.
ZERO_MOTION = 0.2711
VEL_EXTRAP = 0.0870
C_FIT = 0.725

# A tiny configuration for cache / dataset plumbing tests: 4 samples (steps 100..400).
TINY = NBodyConfig(n_train=12, n_valid=6, n_test=5, n_steps=500, sample_every=100, input_sample=1,
                   target_sample=3, seed=3)


def short(n_steps: int, **kwargs) -> NBodyConfig:
    """The protocol with a shorter trajectory (input sample 0, target the last sample)."""
    return NBodyConfig(n_steps=n_steps, input_sample=0, target_sample=n_steps // 100 - 2, **kwargs)


@pytest.fixture(scope="module")
def sims() -> dict[str, np.ndarray]:
    return simulate_charged(200, NBodyConfig(), np.random.default_rng(1))


# ---------------------------------------------------------------- simulation


def test_shapes_dtypes_and_initial_conditions(sims):
    cfg = NBodyConfig()
    assert cfg.n_samples == 49 and cfg.sample_step(30) == 3100 and cfg.sample_step(40) == 4100
    assert sims["pos"].shape == sims["vel"].shape == (200, 49, 5, 3)
    assert sims["charges"].shape == (200, 5, 1)
    assert sims["pos0"].shape == sims["vel0"].shape == (200, 5, 3)
    for a in sims.values():
        assert a.dtype == np.float64 and a.flags.c_contiguous and np.isfinite(a).all()
    np.testing.assert_allclose(np.linalg.norm(sims["vel0"], axis=-1), 0.5, rtol=1e-12)
    assert set(np.unique(sims["charges"])) == {-1.0, 1.0}
    assert 0.4 < (sims["charges"] > 0).mean() < 0.6
    assert abs(sims["pos0"].std() - 1.0) < 0.1 and abs(sims["pos0"].mean()) < 0.1
    # velocities change over time (forces act) but stay moderate
    assert not np.allclose(np.linalg.norm(sims["vel"][:, 0], axis=-1), 0.5)


def test_determinism_and_seeds():
    cfg = NBodyConfig()
    a = simulate_charged(30, cfg, np.random.default_rng(5))
    b = simulate_charged(30, cfg, np.random.default_rng(5))
    c = simulate_charged(30, cfg, np.random.default_rng(6))
    for k in a:
        assert np.array_equal(a[k], b[k])
    assert not np.allclose(a["pos0"], c["pos0"]) and not np.allclose(a["pos"], c["pos"])
    # prefix stability: the first k simulations do not depend on how many are drawn / batched
    d = simulate_charged(10, cfg, np.random.default_rng(5))
    for k in a:
        assert np.array_equal(a[k][:10], d[k])
    # split generators are distinct and reproducible
    draws = {s: split_rng(cfg, s).standard_normal(4) for s in SPLITS}
    assert not np.allclose(draws["train"], draws["valid"]) and not np.allclose(draws["valid"], draws["test"])
    assert np.array_equal(draws["test"], split_rng(cfg, "test").standard_normal(4))
    assert np.array_equal(draws["train"], np.random.default_rng(np.random.SeedSequence(0).spawn(3)[0]).standard_normal(4))


def _reference_trajectory(x, v, q, cfg: NBodyConfig) -> np.ndarray:
    """Straightforward one-system transcription of the NRI/EGNN loop (half kick, then drift/record/kick)."""
    x, v = x.copy(), v.copy()
    n = len(x)

    def force(x):
        f = np.zeros_like(x)
        for i in range(n):
            for j in range(n):
                if i != j:
                    r = x[i] - x[j]
                    f[i] += q[i, 0] * q[j, 0] * r / np.sqrt(r @ r) ** 3
        return np.clip(f, -cfg.force_clip, cfg.force_clip)

    out = []
    v += cfg.dt * force(x)
    for i in range(1, cfg.n_steps):
        x += cfg.dt * v
        if i % cfg.sample_every == 0:
            out.append(x.copy())
        v += cfg.dt * force(x)
    return np.stack(out)


def test_integrator_matches_reference_loop():
    # 10 samples = 1000 steps: long enough to exercise clipping, short enough to avoid chaotic divergence
    cfg = short(1100)
    init = sample_initial_conditions(4, cfg, np.random.default_rng(11))
    fast = integrate_charged(init["pos0"], init["vel0"], init["charges"], cfg)["pos"]
    for s in range(4):
        ref = _reference_trajectory(init["pos0"][s], init["vel0"][s], init["charges"][s], cfg)
        np.testing.assert_allclose(fast[s], ref, rtol=0, atol=1e-9)


def test_momentum_conserved_without_clipping():
    cfg = short(300, force_clip=1e12)
    out = simulate_charged(50, cfg, np.random.default_rng(2))
    p0 = out["vel0"].sum(axis=1)
    p = out["vel"].sum(axis=2)  # [S, T, d]
    np.testing.assert_allclose(p, np.broadcast_to(p0[:, None], p.shape), atol=1e-9)


def test_energy_conserved_for_like_charges():
    # all charges +1: no close encounters, no clipping, symplectic Euler keeps energy within O(dt)
    cfg = NBodyConfig(charge_prob=1.0)
    out = simulate_charged(20, cfg, np.random.default_rng(4))
    assert (out["charges"] == 1).all()

    def energy(x, v):
        diff = x[..., :, None, :] - x[..., None, :, :]
        r = np.sqrt((diff**2).sum(-1))
        iu = np.triu_indices(x.shape[-2], 1)
        return 0.5 * (v**2).sum((-1, -2)) + (1.0 / r[..., iu[0], iu[1]]).sum(-1)

    e0 = energy(out["pos0"], out["vel0"])
    e = energy(out["pos"], out["vel"])  # [S, T]
    assert np.abs(e - e0[:, None]).max() < 1e-2 * np.abs(e0).min()


def test_statistics_reduced_size():
    """1000 simulations: one-sigma spread is ~2 % (no motion) and ~4.5 % (velocity extrapolation); the
    tolerances are ~3 sigma and still reject e.g. explicit Euler (0.32 / 0.057), attracting like charges
    (0.44 / 0.16) or unclipped forces."""
    out = simulate_charged(1000, NBodyConfig(), np.random.default_rng(2024))
    stats = nbody_baselines(out)
    assert stats["n_sims"] == 1000
    assert abs(stats["zero_motion_mse"] / ZERO_MOTION - 1) < 0.06, stats
    assert abs(stats["velocity_extrapolation_mse"] / VEL_EXTRAP - 1) < 0.13, stats
    assert abs(stats["c"] - C_FIT) < 0.05, stats


@pytest.mark.slow
def test_statistics_full_size(tmp_path: Path):
    data = generate_nbody(NBodyConfig(), root=tmp_path, progress=False)
    for split in SPLITS:
        stats = nbody_baselines(data[split])
        print(split, {k: round(v, 4) for k, v in stats.items()})
        # 2000 simulations: one sigma is 1.4 % / 3 % / 0.012
        assert abs(stats["zero_motion_mse"] / ZERO_MOTION - 1) < 0.045, (split, stats)
        assert abs(stats["velocity_extrapolation_mse"] / VEL_EXTRAP - 1) < 0.09, (split, stats)
        assert abs(stats["c"] - C_FIT) < 0.035, (split, stats)
    pooled = {k: np.concatenate([data[s][k] for s in SPLITS]) for k in ("pos", "vel")}
    stats = nbody_baselines(pooled)  # 7000 simulations
    assert abs(stats["zero_motion_mse"] / ZERO_MOTION - 1) < 0.03, stats
    assert abs(stats["velocity_extrapolation_mse"] / VEL_EXTRAP - 1) < 0.05, stats


# ---------------------------------------------------------------- the EGNN stream


def test_egnn_stream_reproduces_the_published_test_split(tmp_path: Path):
    """The EGNN stream with seed 43 gives the original nbody_small test split: its statistics are the
    published ones (SPEC 4.1: no motion 0.2715, x + c v 0.083 with c 0.735) to within what floating-point
    round-off in the ~1 in 8 chaotic simulations moves them (~1e-4 / 1e-3 / 4e-3), while a random split of
    2000 simulations spreads by 0.0037 / 0.0026 / 0.012 around 0.2711 / 0.0870 / 0.725."""
    cfg = NBodyConfig.egnn_small(n_train=1, n_valid=1)  # the pools are drawn whole; only 2002 simulated
    stats = nbody_baselines(generate_nbody(cfg, root=tmp_path, progress=False)["test"])
    assert stats["n_sims"] == 2000
    assert abs(stats["zero_motion_mse"] - 0.2715) < 5e-4, stats
    assert abs(stats["velocity_extrapolation_mse"] - 0.0835) < 1.5e-3, stats
    assert abs(stats["c"] - 0.735) < 3e-3, stats


def _egnn_draw(rs: np.random.RandomState, cfg: NBodyConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One system's draws of the original generator, written out by hand: charges (n uniforms), positions,
    velocity directions, then two blocks of zero-variance observation noise. Returns the charges, the raw
    positions (times ``position_std``, before any reflection) and the velocities, particles first."""
    n, d, t = cfg.n_particles, cfg.dim, cfg.n_samples
    q = np.where(rs.random_sample((n, 1)) < 0.5, -1.0, 1.0)
    x, u = rs.randn(d, n) * cfg.position_std, rs.randn(d, n)
    rs.randn(t * d * n * 2)  # the noise blocks (an even count: no cached Gaussian in between)
    return q, x.T, (u * cfg.velocity_norm / np.sqrt((u**2).sum(0))).T


def test_egnn_stream_draw_order():
    """Per system the original draws charges (n uniforms), positions, velocity directions, then two blocks
    of zero-variance observation noise, on one legacy stream; later splits start after the whole pool."""
    cfg = NBodyConfig.egnn_small(n_train=2, n_valid=1, n_test=1, seed=7)
    got = nbody.egnn_initial_conditions(cfg)
    rs = np.random.RandomState(7)
    first = [_egnn_draw(rs, cfg) for _ in range(2)]
    for _ in range(nbody.EGNN_POOLS["train"] - 2):
        _egnn_draw(rs, cfg)
    valid = _egnn_draw(rs, cfg)
    for k, (q, x, v) in enumerate(first):
        np.testing.assert_array_equal(got["train"]["charges"][k], q)
        np.testing.assert_array_equal(got["train"]["pos0"][k], x)  # |x| < 5 for these draws
        np.testing.assert_array_equal(got["train"]["vel0"][k], v)
    np.testing.assert_array_equal(got["valid"]["pos0"][0], valid[1])
    np.testing.assert_array_equal(got["valid"]["charges"][0], valid[0])
    # a prefix of a split does not depend on how many of the split are kept
    more = nbody.egnn_initial_conditions(NBodyConfig.egnn_small(n_train=5, n_valid=3, n_test=2, seed=7))
    for split in SPLITS:
        for key, a in got[split].items():
            np.testing.assert_array_equal(more[split][key][: len(a)], a)


def test_egnn_stream_reflects_initial_positions_into_the_box():
    cfg = NBodyConfig.egnn_small(n_train=200, n_valid=1, n_test=1, position_std=3.0)
    init = nbody.egnn_initial_conditions(cfg)["train"]
    raw = np.random.RandomState(43)
    outside = 0
    for s in range(200):
        _, x, _ = _egnn_draw(raw, cfg)
        over, under = x > 5, x < -5
        outside += int(over.sum() + under.sum())
        np.testing.assert_allclose(init["pos0"][s][over], 10 - x[over])
        np.testing.assert_allclose(init["pos0"][s][under], -10 - x[under])
        assert (init["vel0"][s][over] <= 0).all() and (init["vel0"][s][under] >= 0).all()
    assert outside > 10 and np.abs(init["pos0"]).max() <= 5
    np.testing.assert_allclose(np.linalg.norm(init["vel0"], axis=-1), 0.5)


def test_egnn_stream_config_and_cache_key():
    assert NBodyConfig.egnn_small() == NBodyConfig(stream="egnn", seed=43)
    # the default stream keeps the cache key it had before the option existed
    assert "stream" not in NBodyConfig().simulation_params()
    assert NBodyConfig(stream="egnn").simulation_params()["stream"] == "egnn"
    with pytest.raises(ValueError, match="stream"):
        NBodyConfig(stream="egnn-small")
    with pytest.raises(ValueError, match="at most 10000"):
        NBodyConfig.egnn_small(n_train=10001)
    with pytest.raises(ValueError, match="2\\*\\*32"):
        NBodyConfig(stream="egnn", seed=2**32)
    with pytest.raises(ValueError, match="'egnn'"):
        nbody.egnn_initial_conditions(NBodyConfig())


def test_baselines_on_synthetic_data():
    rng = np.random.default_rng(0)
    pos = rng.standard_normal((7, 3, 4, 2))
    vel = rng.standard_normal((7, 3, 4, 2))
    pos[:, 2] = pos[:, 0] + 0.8 * vel[:, 0]
    stats = nbody_baselines({"pos": pos, "vel": vel}, input_sample=0, target_sample=2)
    assert stats["c"] == pytest.approx(0.8)
    assert stats["velocity_extrapolation_mse"] == pytest.approx(0.0, abs=1e-25)
    assert stats["zero_motion_mse"] == pytest.approx(np.mean((0.8 * vel[:, 0]) ** 2))
    with pytest.raises(ValueError, match="target_sample"):
        nbody_baselines({"pos": pos, "vel": vel}, input_sample=0, target_sample=3)
    with pytest.raises(TypeError, match="arrays"):
        nbody_baselines({"pos": pos})
    with pytest.raises(ValueError, match="vel"):
        nbody_baselines({"pos": pos, "vel": vel[:, :2]}, input_sample=0, target_sample=1)
    bad = pos.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        nbody_baselines({"pos": bad, "vel": vel}, input_sample=0, target_sample=1)


def test_other_dimensions_and_sizes():
    cfg = short(400, n_particles=3, dim=2)
    out = simulate_charged(7, cfg, np.random.default_rng(0))
    assert out["pos"].shape == (7, 3, 3, 2) and out["charges"].shape == (7, 3, 1)


def test_config_validation():
    with pytest.raises(ValueError, match="n_steps"):
        NBodyConfig(n_steps=5050)
    with pytest.raises(ValueError, match="target_sample"):
        NBodyConfig(target_sample=49)
    with pytest.raises(ValueError, match="dt"):
        NBodyConfig(dt=0.0)
    with pytest.raises(ValueError, match="dt"):
        NBodyConfig(dt=float("nan"))
    with pytest.raises(TypeError, match="n_train"):
        NBodyConfig(n_train=3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_test"):
        NBodyConfig(n_test=0)
    with pytest.raises(ValueError, match="charge_prob"):
        NBodyConfig(charge_prob=1.5)
    with pytest.raises(ValueError, match="n_particles"):
        NBodyConfig(n_particles=1)
    with pytest.raises(TypeError, match="seed"):
        NBodyConfig(seed=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split"):
        NBodyConfig().n_sims("val")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rng"):
        simulate_charged(3, NBodyConfig(), 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_sims"):
        simulate_charged(0, NBodyConfig(), np.random.default_rng(0))
    params = NBodyConfig().simulation_params()
    assert "input_sample" not in params and params["dt"] == 0.001 and params["seed"] == 0


def test_integrate_input_validation():
    cfg = short(200)
    x = np.zeros((2, 5, 3))
    x[:, :, 0] = np.arange(5)
    q = np.ones((2, 5, 1))
    with pytest.raises(ValueError, match="vel0"):
        integrate_charged(x, x[:, :4], q, cfg)
    with pytest.raises(ValueError, match="charges"):
        integrate_charged(x, x, q[:, :3], cfg)
    bad = x.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="pos0"):
        integrate_charged(bad, x, q, cfg)
    with pytest.raises(ValueError, match="pos0"):
        integrate_charged(x[0], x[0], q[0], cfg)
    coincident = x.copy()
    coincident[:, 1] = coincident[:, 0]
    with pytest.raises(ValueError, match="non-finite"):
        integrate_charged(coincident, np.zeros_like(x), q, cfg)
    # [S, n] charges are accepted too
    out = integrate_charged(x, np.zeros_like(x), q[..., 0], cfg)
    assert out["pos"].shape == (2, 1, 5, 3)


# ---------------------------------------------------------------- generation + cache


def test_generate_matches_split_simulations(tmp_path: Path):
    data = generate_nbody(TINY, root=tmp_path, progress=False)
    for split in SPLITS:
        alone = simulate_charged(TINY.n_sims(split), TINY, split_rng(TINY, split))
        assert set(data[split]) == set(alone)
        for k in alone:
            assert np.array_equal(data[split][k], alone[k]), (split, k)
    assert data["train"]["pos"].shape == (12, 4, 5, 3) and data["test"]["charges"].shape == (5, 5, 1)


def test_cache_hit_miss_and_corruption(tmp_path: Path, monkeypatch):
    calls = []
    real = nbody.integrate_charged

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(nbody, "integrate_charged", counting)
    first = generate_nbody(TINY, root=tmp_path, progress=False)
    assert len(calls) == 1
    second = generate_nbody(TINY, root=tmp_path, progress=False)
    assert len(calls) == 1  # hit: no regeneration
    for s in SPLITS:
        for k in first[s]:
            assert np.array_equal(first[s][k], second[s][k])
    # selection-only parameters share the entry; any simulation parameter is a miss
    generate_nbody(NBodyConfig(**{**TINY.__dict__, "target_sample": 2}), root=tmp_path, progress=False)
    assert len(calls) == 1
    for change in ({"dt": 0.0011}, {"seed": 4}, {"n_test": 6}, {"force_clip": 50.0}, {"velocity_norm": 0.4}):
        generate_nbody(NBodyConfig(**{**TINY.__dict__, **change}), root=tmp_path, progress=False)
    assert len(calls) == 6
    assert len(list((tmp_path / nbody.CACHE_NAME).glob("*.npz"))) == 6
    # manifest holds every generation parameter and the format version
    entry = _cache.cache_entry(nbody.CACHE_NAME, TINY.simulation_params(), nbody.FORMAT_VERSION, tmp_path)
    manifest = json.loads(entry.manifest_path.read_text())
    assert manifest["params"] == TINY.simulation_params()
    assert manifest["format_version"] == nbody.FORMAT_VERSION
    # corrupted file: clear error on request, otherwise a warning and regeneration
    _cache.save_arrays_npz(entry.npz_path, {k: v * 0 for k, v in _cache.load_arrays_npz(entry.npz_path).items()})
    with pytest.raises(_cache.CacheCorruptedError, match="checksum"):
        generate_nbody(TINY, root=tmp_path, progress=False, on_corrupt="raise")
    with pytest.warns(RuntimeWarning, match="checksum"):
        third = generate_nbody(TINY, root=tmp_path, progress=False)
    assert len(calls) == 7
    assert np.array_equal(third["test"]["pos"], first["test"]["pos"])
    # cache=False neither reads nor writes
    generate_nbody(TINY, root=tmp_path / "nowhere", progress=False, cache=False)
    assert len(calls) == 8 and not (tmp_path / "nowhere").exists()


def test_default_root_from_env(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("EQUIFRAME_CACHE", str(tmp_path))
    generate_nbody(TINY, progress=False)
    assert len(list((tmp_path / nbody.CACHE_NAME).glob("*.json"))) == 1


# ---------------------------------------------------------------- EGNN files


def _write_egnn(directory: Path, split: str, suffix: str, S=4, T=6, n=5, d=3, edges=True):
    rng = np.random.default_rng(0)
    loc = rng.standard_normal((S, T, d, n))
    vel = rng.standard_normal((S, T, d, n))
    charges = rng.choice([-1.0, 1.0], size=(S, n, 1))
    np.save(directory / f"loc_{split}{suffix}.npy", loc)
    np.save(directory / f"vel_{split}{suffix}.npy", vel)
    np.save(directory / f"charges_{split}{suffix}.npy", charges)
    if edges:
        np.save(directory / f"edges_{split}{suffix}.npy", charges @ charges.transpose(0, 2, 1))
    return loc, vel, charges


def test_load_egnn_roundtrip(tmp_path: Path):
    loc, vel, charges = _write_egnn(tmp_path, "valid", "_charged5_initvel1small")
    out = load_egnn_npy(tmp_path, "valid")
    assert out["pos"].shape == (4, 6, 5, 3)
    assert np.array_equal(out["pos"], loc.transpose(0, 1, 3, 2))
    assert np.array_equal(out["vel"][:, 2, 4, 1], vel[:, 2, 1, 4])
    assert np.array_equal(out["charges"], charges)
    assert np.array_equal(out["edges"], charges @ charges.transpose(0, 2, 1))
    ds = NBodyDataset.from_arrays(out, input_sample=1, target_sample=5)
    assert len(ds) == 4
    torch.testing.assert_close(ds[2]["target"], torch.as_tensor(loc[2, 5].T, dtype=torch.float32))
    torch.testing.assert_close(ds[2]["vel"], torch.as_tensor(vel[2, 1].T, dtype=torch.float32))
    # a layout generated here loads back identically through the EGNN path
    sim = simulate_charged(3, short(700), np.random.default_rng(0))
    np.save(tmp_path / "loc_test_x.npy", sim["pos"].transpose(0, 1, 3, 2))
    np.save(tmp_path / "vel_test_x.npy", sim["vel"].transpose(0, 1, 3, 2))
    np.save(tmp_path / "charges_test_x.npy", sim["charges"])
    back = load_egnn_npy(tmp_path, "test", suffix="_x")
    assert set(back) == {"pos", "vel", "charges"}
    for k in back:
        assert np.array_equal(back[k], sim[k])


def test_load_egnn_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_egnn_npy(tmp_path / "nope", "train")
    _write_egnn(tmp_path, "train", "", edges=False)
    (tmp_path / "vel_train.npy").unlink()
    with pytest.raises(FileNotFoundError, match="vel_train.npy"):
        load_egnn_npy(tmp_path, "train", suffix="")
    with pytest.raises(FileNotFoundError, match="loc_test_charged"):
        load_egnn_npy(tmp_path, "test")
    with pytest.raises(ValueError, match="split"):
        load_egnn_npy(tmp_path, "val")  # type: ignore[arg-type]
    _write_egnn(tmp_path, "train", "", edges=False)
    np.save(tmp_path / "vel_train.npy", np.zeros((4, 6, 5, 3)))  # particles/coords swapped
    with pytest.raises(ValueError, match="vel_train.npy"):
        load_egnn_npy(tmp_path, "train", suffix="")
    _write_egnn(tmp_path, "train", "", edges=False)
    np.save(tmp_path / "charges_train.npy", np.zeros((4, 5)))
    with pytest.raises(ValueError, match="charges_train.npy"):
        load_egnn_npy(tmp_path, "train", suffix="")
    _write_egnn(tmp_path, "train", "", edges=False)
    np.save(tmp_path / "loc_train.npy", np.zeros((4, 3, 5)))
    with pytest.raises(ValueError, match="loc_train.npy"):
        load_egnn_npy(tmp_path, "train", suffix="")


# ---------------------------------------------------------------- torch dataset


def test_dataset_items_and_batches(tmp_path: Path):
    ds = NBodyDataset("train", TINY, root=tmp_path, progress=False)
    raw = generate_nbody(TINY, root=tmp_path, progress=False)["train"]
    assert len(ds) == 12 and ds.split == "train" and ds.n_particles == 5
    item = ds[3]
    assert set(item) == {"pos", "vel", "charge", "target", "edge_index", "edge_attr"}
    assert item["pos"].shape == item["vel"].shape == item["target"].shape == (5, 3)
    assert item["charge"].shape == (5, 1) and item["edge_attr"].shape == (20, 1)
    assert item["pos"].dtype == torch.float32 and item["edge_index"].dtype == torch.long
    torch.testing.assert_close(item["pos"], torch.as_tensor(raw["pos"][3, 1], dtype=torch.float32))
    torch.testing.assert_close(item["vel"], torch.as_tensor(raw["vel"][3, 1], dtype=torch.float32))
    torch.testing.assert_close(item["target"], torch.as_tensor(raw["pos"][3, 3], dtype=torch.float32))
    ei = item["edge_index"]
    assert ei.shape == (2, 20) and (ei[0] != ei[1]).all()
    assert len({(int(a), int(b)) for a, b in ei.T}) == 20
    torch.testing.assert_close(item["edge_attr"], item["charge"][ei[0]] * item["charge"][ei[1]])
    assert ds[-1]["pos"].equal(ds[11]["pos"])
    with pytest.raises(IndexError):
        ds[12]
    # collate == get_batch, and the graph part is consistent with the flattened nodes
    loader = torch.utils.data.DataLoader(ds, batch_size=5, shuffle=False, collate_fn=collate_nbody)
    batch = next(iter(loader))
    fast = ds.get_batch(torch.arange(5))
    assert set(batch) == set(fast)
    for k in batch:
        assert batch[k].equal(fast[k]), k
    assert batch["pos"].shape == (5, 5, 3) and batch["edge_index"].shape == (2, 100)
    assert batch["batch"].tolist() == sum([[b] * 5 for b in range(5)], [])
    src, dst = batch["edge_index"]
    assert (batch["batch"][src] == batch["batch"][dst]).all()
    q = batch["charge"].reshape(-1, 1)
    torch.testing.assert_close(batch["edge_attr"], q[src] * q[dst])
    assert sum(b["pos"].shape[0] for b in loader) == 12
    whole = ds.tensors()
    assert whole["pos"].shape == (12, 5, 3) and whole["edge_index"].shape == (2, 20)
    assert ds.get_batch(slice(0, 3))["pos"].equal(whole["pos"][:3])
    with pytest.raises(ValueError, match="index"):
        ds.get_batch([])
    with pytest.raises(IndexError):
        ds.get_batch([0, 12])
    with pytest.raises(ValueError, match="items"):
        collate_nbody([])


def test_dataset_options(tmp_path: Path):
    ds64 = NBodyDataset("test", TINY, root=tmp_path, max_samples=3, dtype=torch.float64, progress=False)
    assert len(ds64) == 3 and ds64[0]["pos"].dtype == torch.float64
    ds32 = NBodyDataset("test", TINY, root=tmp_path, progress=False)
    torch.testing.assert_close(ds32[2]["pos"], ds64[2]["pos"].float())
    with pytest.raises(ValueError, match="max_samples"):
        NBodyDataset("test", TINY, root=tmp_path, max_samples=6, progress=False)
    with pytest.raises(ValueError, match="split"):
        NBodyDataset("validation", TINY, root=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dtype"):
        NBodyDataset("test", TINY, root=tmp_path, dtype=torch.int64, progress=False)
    with pytest.raises(ValueError, match="input_sample"):
        NBodyDataset.from_arrays(generate_nbody(TINY, root=tmp_path, progress=False)["test"], input_sample=4)


def test_fully_connected_edge_index():
    ei = fully_connected_edge_index(3)
    assert ei.tolist() == [[0, 0, 1, 1, 2, 2], [1, 2, 0, 2, 0, 1]]
    assert fully_connected_edge_index(1).shape == (2, 0)


def test_fa_mode_defaults_per_variant():
    """``fa_mode=None`` resolves per variant (layer-wise: stochastic training frames, full-frame evaluation; input
    frame: all) and the resolved mode is what configs store, so runs made before keep their meaning."""
    from equiframe.experiments.nbody import NBodyExperiment, NBodyExperimentConfig  # noqa: PLC0415

    lw = NBodyExperimentConfig(model="fa-gnn", fa_variant="layerwise")
    assert lw.fa_mode == "stochastic" and lw.to_dict()["fa_mode"] == "stochastic"
    assert NBodyExperiment(lw).run_name == "fa-gnn-layerwise-stochastic@egnn-small"
    assert NBodyExperimentConfig(model="fa-gnn").fa_mode == "all"
    old = NBodyExperimentConfig(model="fa-gnn", fa_variant="layerwise", fa_mode="all")
    assert NBodyExperimentConfig.from_dict(old.to_dict()).fa_mode == "all"
    assert NBodyExperiment(old).run_name == "fa-gnn-layerwise@egnn-small"
