"""The charged-particle n-body data set (the EGNN "nbody_small" protocol used by Frame Averaging).

Clean-room re-implementation of the charged-particle simulation of Kipf et al. (NRI, 2018) in the 3-D
form used by Satorras et al. (EGNN, 2021) and Puny et al. (Frame Averaging, 2022):

* ``n = 5`` particles with charges ``q_i = +-1`` (probability 1/2 each), unit masses, no walls;
* initial positions ``x_i ~ N(0, I_3)``; initial velocities ``v_i = 0.5 * u_i / |u_i|``, ``u_i ~ N(0, I_3)``;
* Coulomb forces (like charges repel), each component clipped to ``[-100, 100]``::

      F_i = clip( sum_{j != i} q_i q_j (x_i - x_j) / |x_i - x_j|^3 , -100, 100 )

* semi-implicit (symplectic) Euler with ``dt = 0.001``; one step from state ``(x_k, v_k)`` is::

      v_{k+1} = v_k + dt * F(x_k)          # force at the positions BEFORE the update
      x_{k+1} = x_k + dt * v_{k+1}         # positions move with the NEW velocity

  (this is exactly the NRI/EGNN "leapfrog" loop: one kick ``v += dt F(x_0)`` before the loop, then
  ``x += dt v; [record]; v += dt F(x)`` per step);
* sampling convention of the original code: a trajectory of ``n_steps = 5000`` with
  ``sample_every = 100`` keeps ``T = n_steps / sample_every - 1 = 49`` samples; sample ``k`` is the state
  after ``(k + 1) * sample_every`` steps (the initial state is *not* sample 0: the original code stores it
  in slot 0 and overwrites it at step 100). So input sample 30 is step 3100 and target sample 40 is step
  4100 (one time unit later). The initial state (step 0) is kept separately as ``pos0``/``vel0``.
  Generated arrays therefore use the same indices as the original EGNN ``.npy`` files
  (:func:`load_egnn_npy`), and :class:`NBodyDataset` treats both identically.

Task: input positions, velocities and charges at sample 30, target positions at sample 40; splits of
3000 / 2000 / 2000 simulations (train / valid / test).

Known differences from the original generator (none changes the statistics): with the default
``stream="split"`` the random streams differ (the data are equal in distribution, not bitwise), and the
original reflects initial coordinates outside a box ``[-5, 5]`` once at step 0 (its in-loop wall
handling is disabled), which the default stream omits (a coordinate beyond 5 standard deviations: in
about 6 % of data sets of 7000 simulations); the original computes ``r^2 = |a|^2 + |b|^2 - 2 a.b`` and
``r^3`` with ``pow(r^2, 1.5)`` where we use ``|a - b|^2`` and ``r^2 sqrt(r^2)``.

The published data set: ``NBodyConfig(stream="egnn", seed=43)`` (:meth:`NBodyConfig.egnn_small`, CLI
``--data-stream egnn``) replays the original generator's random stream (legacy NumPy ``RandomState``, its
order of draws, its step-0 reflection; :func:`egnn_initial_conditions`), so every simulation starts from
the same state as in the ``nbody_small`` files behind the published numbers. Its test split has the
published statistics (no motion 0.2715, ``x + c v`` 0.0835 with c = 0.735; a random split gives 0.2711 +-
0.0037 and 0.0870 +- 0.0026), and it is an easy split: 4 % below the population's velocity-extrapolation
error. The trajectories equal a float64 replay of the original loop to ~1e-13 for most simulations; in
about 1 in 8 (close encounters) the last-bit differences of the arithmetic above grow to 1e-2 - 0.3 by the
target time, as they would between two machines (such simulations are equal in distribution only).

Sanity statistics (mean over simulations, particles and coordinates; see :func:`nbody_baselines`),
estimated from 100 000 simulations: "no motion" (predict the input position) gives MSE 0.2711 and the
best single-scale velocity extrapolation ``x + c v`` (c fitted by least squares) gives MSE 0.0870 with
c = 0.725. On one split of 2000 simulations they fluctuate from seed to seed with standard deviations
0.0037 (1.4 %), 0.0026 (3 %) and 0.012. Getting the integrator wrong moves them far more: explicit
Euler (positions updated with the old velocity) gives about 0.32 / 0.057, attracting like charges
0.44 / 0.16, no force clipping 32 / 0.5; the other symplectic order (positions first, then velocities
with the force at the new positions) and an off-by-one sample index (steps 3000 -> 4000) are
statistically indistinguishable from the reference.

Randomness: every split has its own generator, derived from ``NBodyConfig.seed`` by
``numpy.random.SeedSequence(seed, spawn_key=(split_index,))``. All random numbers of a simulation are
drawn as one contiguous block, so the first ``k`` simulations of a split do not depend on the split size
(``n_train=1000`` gives a prefix of ``n_train=3000``), and the integrator is elementwise over
simulations, so a simulation's trajectory does not depend on what it is batched with.

Generated data is cached on disk (see :mod:`equiframe.datasets._cache`): ``$EQUIFRAME_CACHE`` or
``~/.cache/equiframe`` (or ``root=``), keyed by every parameter that affects the arrays.

Example:
    >>> ds = NBodyDataset("train")                 # generates (~6 s) on first use, then cached
    >>> item = ds[0]                               # dict: pos, vel, charge, target, edge_index, edge_attr
    >>> loader = torch.utils.data.DataLoader(ds, batch_size=100, collate_fn=collate_nbody)
    >>> whole = ds.tensors()                       # dense tensors of the whole split
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import NormalDist

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._checks import check_instance, check_int
from . import _cache
from .nbody_config import (
    EGNN_POOLS,
    SPLITS,
    STREAMS,  # noqa: F401  (re-exported)
    NBodyConfig,
    Split,
    Stream,  # noqa: F401  (re-exported)
    _check_split,
)

__all__ = [
    "CACHE_NAME",
    "EGNN_POOLS",
    "FORMAT_VERSION",
    "NBodyConfig",
    "NBodyDataset",
    "SPLITS",
    "egnn_npy_paths",
    "Split",
    "collate_nbody",
    "egnn_initial_conditions",
    "fully_connected_edge_index",
    "generate_nbody",
    "integrate_charged",
    "load_egnn_npy",
    "nbody_baselines",
    "sample_initial_conditions",
    "simulate_charged",
    "split_rng",
]

#: Half-width of the box the EGNN generator reflects the initial positions into (once, at step 0).
EGNN_BOX = 5.0
#: Version of the generated arrays; bump when the simulator's output changes (invalidates caches).
FORMAT_VERSION = 1
#: Sub-directory of the cache root.
CACHE_NAME = "nbody_charged"
_ARRAY_KEYS = ("pos", "vel", "charges", "pos0", "vel0")



def split_rng(config: NBodyConfig, split: Split) -> np.random.Generator:
    """The generator of one split: ``default_rng(SeedSequence(config.seed, spawn_key=(i,)))`` with ``i``
    the index of ``split`` in ``("train", "valid", "test")`` (the same as ``SeedSequence(seed).spawn(3)[i]``)."""
    from .nbody_config import NBodyConfig  # noqa: PLC0415

    check_instance("config", config, NBodyConfig)
    _check_split(split)
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(SPLITS.index(split),)))


def sample_initial_conditions(
    n_sims: int, config: NBodyConfig, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Draw initial positions, velocities and charges.

    One block ``z ~ N(0, 1)`` of shape ``[S, n, 2d + 1]`` is drawn per call (so simulation ``s`` uses the
    ``s``-th sub-block whatever ``S``)::

        pos0 = position_std * z[..., :d]
        vel0 = velocity_norm * u / |u|,   u = z[..., d:2d]
        q    = +1 if z[..., 2d] >= Phi^{-1}(1 - charge_prob) else -1      # P(q = +1) = charge_prob

    Args:
        n_sims: number of simulations ``S >= 1``.
        config: the parameters.
        rng: the random generator (consumed).

    Returns:
        ``{"pos0", "vel0", "charges"}`` as float64 arrays.

    Shapes:
        pos0, vel0: ``[S, n, d]``; charges: ``[S, n, 1]``.
    """
    check_instance("rng", rng, np.random.Generator, "a numpy.random.Generator")
    check_int("n_sims", n_sims, 1)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    n, d = config.n_particles, config.dim
    z = rng.standard_normal((int(n_sims), n, 2 * d + 1))
    pos0 = config.position_std * z[..., :d]
    u = z[..., d : 2 * d]
    vel0 = config.velocity_norm * u / np.linalg.norm(u, axis=-1, keepdims=True)
    p = config.charge_prob
    threshold = math.inf if p == 0 else -math.inf if p == 1 else NormalDist().inv_cdf(1.0 - p)
    charges = np.where(z[..., 2 * d :] >= threshold, 1.0, -1.0)
    return {"pos0": np.ascontiguousarray(pos0), "vel0": np.ascontiguousarray(vel0), "charges": charges}


def egnn_initial_conditions(config: NBodyConfig) -> dict[Split, dict[str, np.ndarray]]:
    """The initial conditions of the original EGNN generator, drawn from its random stream.

    The EGNN script seeds the legacy global stream once (``numpy.random.seed(seed)``) and then simulates
    ``EGNN_POOLS`` = 10 000 training, 2000 validation and 2000 test systems one after another. Per system
    it draws, in this order: the charges (``choice([-1, 0, 1], size=(n, 1), p=[1 - p, 0, p])``: ``n``
    uniforms), positions ``position_std * randn(d, n)``, the velocity directions ``randn(d, n)``, and,
    after integrating, two blocks ``randn(T, d, n)`` of observation noise that it multiplies by a noise
    variance of 0. This function replays exactly these calls on ``numpy.random.RandomState(config.seed)``
    (the noise blocks are drawn and discarded), so it yields the same numbers as the original files'
    step-0 states: the legacy stream is frozen by NumPy's compatibility policy. As in the original, the
    velocities are ``u * velocity_norm / |u|`` per particle and initial coordinates outside the box
    ``[-5, 5]`` are reflected into it once (with the velocity component pointing inwards).

    Only the initial conditions are replayed; :func:`integrate_charged` integrates them with the same
    equations (its floating-point operations differ from the original's in the last bits, see the
    module docstring).

    Args:
        config: an ``NBodyConfig`` with ``stream="egnn"`` (``n_{split}`` of at most ``EGNN_POOLS[split]``:
            the first ones of each split are kept).

    Returns:
        ``{split: {"pos0", "vel0", "charges"}}`` float64 arrays.

    Shapes:
        pos0, vel0: ``[S, n, d]``; charges: ``[S, n, 1]`` (``S = config.n_sims(split)``).
    """
    if not isinstance(config, NBodyConfig):
        raise TypeError(f"config: expected an NBodyConfig, got {type(config).__name__}")
    if config.stream != "egnn":
        raise ValueError(f"config.stream: expected 'egnn', got {config.stream!r}")
    rs = np.random.RandomState(config.seed)
    n, d, t = config.n_particles, config.dim, config.n_samples
    types = np.array([-1.0, 0.0, 1.0])
    probs = [1.0 - config.charge_prob, 0.0, config.charge_prob]
    out: dict[Split, dict[str, np.ndarray]] = {}
    for split in SPLITS:
        keep = config.n_sims(split)
        pos0, vel0, charges = np.empty((keep, n, d)), np.empty((keep, n, d)), np.empty((keep, n, 1))
        for s in range(EGNN_POOLS[split]):
            q = rs.choice(types, size=(n, 1), p=probs)
            x = rs.randn(d, n) * config.position_std
            u = rs.randn(d, n)
            rs.randn(t, d, n)  # the original's observation noise (variance 0): drawn and discarded
            rs.randn(t, d, n)
            if s < keep:
                v = u * config.velocity_norm / np.sqrt((u**2).sum(axis=0)).reshape(1, -1)
                over, under = x > EGNN_BOX, x < -EGNN_BOX
                x[over], v[over] = 2 * EGNN_BOX - x[over], -np.abs(v[over])
                x[under], v[under] = -2 * EGNN_BOX - x[under], np.abs(v[under])
                pos0[s], vel0[s], charges[s] = x.T, v.T, q
        out[split] = {"pos0": pos0, "vel0": vel0, "charges": charges}
    return out


def _pair_tables(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(a, b)``, ``a < b`` (``triu`` order) and, per particle, indices into ``[f; -f]``."""
    first, second = np.triu_indices(n, k=1)
    n_pairs = first.size
    pair_of = {(int(a), int(b)): p for p, (a, b) in enumerate(zip(first, second))}
    gather = np.empty((n, n - 1), dtype=np.intp)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for k, j in enumerate(others):
            # f_p is the force on a from b; the force on b from a is -f_p (stored at P + p)
            gather[i, k] = pair_of[(i, j)] if i < j else n_pairs + pair_of[(j, i)]
    return first, second, gather


def integrate_charged(
    pos0: np.ndarray,
    vel0: np.ndarray,
    charges: np.ndarray,
    config: NBodyConfig,
    *,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Integrate many charged systems at once (vectorised over simulations, loop over time steps).

    Per step (float64), with ``k = config.interaction_strength`` and ``c = config.force_clip``::

        F_i = clip( sum_{j != i} k q_i q_j (x_i - x_j) / |x_i - x_j|^3 , -c, c )   (per component)
        v  <- v + dt * F(x)
        x  <- x + dt * v

    and the state after step ``(t + 1) * sample_every`` is stored as sample ``t`` for
    ``t = 0 .. n_samples - 1`` (the last ``sample_every`` steps of ``n_steps`` are never stored, as in the
    original code, so they are not integrated).

    Args:
        pos0, vel0: initial positions and velocities.
        charges: charges (``[S, n, 1]`` or ``[S, n]``).
        config: the time step, lengths, interaction strength and force clip are used.
        progress: show a tqdm bar over time steps.

    Returns:
        ``{"pos", "vel"}`` float64 trajectories.

    Shapes:
        pos0, vel0: ``[S, n, d]``; charges: ``[S, n, 1]`` -> pos, vel: ``[S, T, n, d]`` with
        ``T = config.n_samples``.

    Raises:
        ValueError: bad shapes, non-finite inputs, or a non-finite result (two particles exactly on top
            of each other).
    """
    pos0, vel0, charges = _checked_initial_state(pos0, vel0, charges)
    n_sims, n, d = pos0.shape
    # simulations on the last (contiguous) axis: every operation is elementwise over simulations
    x = np.ascontiguousarray(np.moveaxis(pos0, 0, -1))  # [n, d, S]
    v = np.ascontiguousarray(np.moveaxis(vel0, 0, -1))
    forces = _CoulombForces(np.moveaxis(charges[..., 0], 0, -1), d, config)
    n_keep = config.n_samples
    out_x = np.empty((n_keep, n, d, n_sims))
    out_v = np.empty_like(out_x)
    dt, every = float(config.dt), config.sample_every
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for step in tqdm(range(1, n_keep * every + 1), disable=not progress, desc="n-body", unit="step",
                         mininterval=0.5):
            v += dt * forces(x)
            x += dt * v
            if step % every == 0:
                out_x[step // every - 1] = x
                out_v[step // every - 1] = v
    pos = np.ascontiguousarray(out_x.transpose(3, 0, 1, 2))
    vel = np.ascontiguousarray(out_v.transpose(3, 0, 1, 2))
    if not (np.isfinite(pos).all() and np.isfinite(vel).all()):
        raise ValueError("integrate_charged: non-finite trajectory (two particles at the same position?)")
    return {"pos": pos, "vel": vel}


def _checked_initial_state(pos0: object, vel0: object, charges: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``pos0``, ``vel0`` ``[S, n, d]`` and ``charges`` ``[S, n, 1]`` as float64 arrays, checked (``n >= 2``)."""
    pos0, vel0 = _as_float_array("pos0", pos0, 3), _as_float_array("vel0", vel0, 3)
    if vel0.shape != pos0.shape:
        raise ValueError(f"vel0: expected the shape of pos0 {pos0.shape}, got {vel0.shape}")
    charges = _as_float_array("charges", charges, None)
    if charges.shape == pos0.shape[:2]:
        charges = charges[..., None]
    if charges.shape != pos0.shape[:2] + (1,):
        raise ValueError(f"charges: expected shape {pos0.shape[:2] + (1,)}, got {charges.shape}")
    if pos0.shape[1] < 2:
        raise ValueError(f"pos0: expected at least 2 particles, got {pos0.shape[1]}")
    return pos0, vel0, charges


class _CoulombForces:
    """The clipped Coulomb force of :func:`integrate_charged` on all particles of ``S`` systems at once,
    with preallocated buffers (simulations on the last axis).

    Shapes:
        charges ``q [n, S]``; call: ``x [n, d, S]`` -> force ``[n, d, S]``
    """

    def __init__(self, q: np.ndarray, d: int, config: NBodyConfig):
        n, n_sims = q.shape
        self.first, self.second, self.gather = _pair_tables(n)
        n_pairs = self.first.size
        self.qq = (config.interaction_strength * q[self.first] * q[self.second])[:, None, :]  # [P, 1, S]
        self.diff = np.empty((n_pairs, d, n_sims))
        self.sq = np.empty_like(self.diff)
        self.f_signed = np.empty((2 * n_pairs, d, n_sims))
        self.clip = float(config.force_clip)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n_pairs, diff, sq, f_signed = self.first.size, self.diff, self.sq, self.f_signed
        np.subtract(x[self.first], x[self.second], out=diff)  # x_a - x_b
        np.multiply(diff, diff, out=sq)
        r2 = sq.sum(axis=1, keepdims=True)  # [P, 1, S], summed in a fixed order over d
        # k q_a q_b / r^3 with correctly rounded ops only (sqrt, *, /): bitwise reproducible
        np.multiply(diff, self.qq / (r2 * np.sqrt(r2)), out=f_signed[:n_pairs])
        np.negative(f_signed[:n_pairs], out=f_signed[n_pairs:])
        force = f_signed[self.gather].sum(axis=1)  # [n, d, S], summed in a fixed order over j
        np.clip(force, -self.clip, self.clip, out=force)
        return force


def _as_float_array(name: str, a: object, ndim: int | None) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu().numpy()
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(a).__name__}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{name}: expected a real numeric dtype, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name}: empty array of shape {a.shape}")
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return a


def simulate_charged(
    n_sims: int, config: NBodyConfig, rng: np.random.Generator, *, progress: bool = False
) -> dict[str, np.ndarray]:
    """Draw initial conditions (:func:`sample_initial_conditions`) and integrate them
    (:func:`integrate_charged`).

    Returns:
        float64 arrays ``pos``, ``vel`` (samples), ``charges``, ``pos0``, ``vel0`` (step 0).

    Shapes:
        pos, vel: ``[S, T, n, d]``; charges: ``[S, n, 1]``; pos0, vel0: ``[S, n, d]``.
    """
    init = sample_initial_conditions(n_sims, config, rng)
    traj = integrate_charged(init["pos0"], init["vel0"], init["charges"], config, progress=progress)
    return {**traj, **init}


def generate_nbody(
    config: NBodyConfig | None = None,
    root: str | os.PathLike | None = None,
    progress: bool = True,
    *,
    cache: bool = True,
    on_corrupt: _cache.OnCorrupt = "rebuild",
) -> dict[Split, dict[str, np.ndarray]]:
    """All three splits, generated once and cached on disk.

    The splits' initial conditions are drawn from their own generators (:func:`split_rng`) and
    integrated together in one vectorised pass (about 6 s for 7000 simulations on one core).

    Args:
        config: parameters (default :class:`NBodyConfig()`).
        root: cache root (default ``$EQUIFRAME_CACHE`` or ``~/.cache/equiframe``).
        progress: tqdm bar over time steps while generating.
        cache: read/write the disk cache; ``False`` always generates and writes nothing.
        on_corrupt: what to do with a corrupted cache entry: ``"rebuild"`` (warn) or ``"raise"``.

    Returns:
        ``{split: {"pos", "vel", "charges", "pos0", "vel0"}}`` of float64 arrays.

    Shapes:
        pos, vel: ``[S, T, n, d]`` (``T = config.n_samples``); charges: ``[S, n, 1]``;
        pos0, vel0: ``[S, n, d]``; ``S = config.n_sims(split)``.
    """
    config = NBodyConfig() if config is None else config
    if not isinstance(config, NBodyConfig):
        raise TypeError(f"config: expected an NBodyConfig, got {type(config).__name__}")

    def build() -> dict[str, np.ndarray]:
        if config.stream == "egnn":
            by_split = egnn_initial_conditions(config)
            inits = [by_split[s] for s in SPLITS]
        else:
            inits = [sample_initial_conditions(config.n_sims(s), config, split_rng(config, s)) for s in SPLITS]
        joint = {k: np.concatenate([init[k] for init in inits]) for k in inits[0]}
        traj = {**integrate_charged(joint["pos0"], joint["vel0"], joint["charges"], config,
                                    progress=progress), **joint}
        flat: dict[str, np.ndarray] = {}
        start = 0
        for s in SPLITS:
            stop = start + config.n_sims(s)
            for k in _ARRAY_KEYS:
                flat[f"{s}__{k}"] = np.ascontiguousarray(traj[k][start:stop])
            start = stop
        return flat

    if cache:
        flat = _cache.load_or_build(CACHE_NAME, config.simulation_params(), build,
                                    format_version=FORMAT_VERSION, root=root, on_corrupt=on_corrupt)
    else:
        flat = build()
    return {s: {k: flat[f"{s}__{k}"] for k in _ARRAY_KEYS} for s in SPLITS}


def egnn_npy_paths(directory: str | os.PathLike, split: Split, suffix: str = "_charged5_initvel1small"
                   ) -> dict[str, Path]:
    """The EGNN ``.npy`` files of a split (``loc``, ``vel``, ``charges``, ``edges``; see :func:`load_egnn_npy`),
    checked: the directory and the three required files exist (``edges`` is optional).

    Raises:
        FileNotFoundError: the directory or a required file is missing (all missing files are named).
    """
    _check_split(split)
    if not isinstance(suffix, str):
        raise TypeError(f"suffix: expected a str, got {type(suffix).__name__}")
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"directory: {directory} is not a directory")
    paths = {kind: directory / f"{kind}_{split}{suffix}.npy" for kind in ("loc", "vel", "charges", "edges")}
    missing = [str(p) for kind, p in paths.items() if kind != "edges" and not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"missing EGNN n-body file(s) for split {split!r} with suffix {suffix!r}: {', '.join(missing)}"
        )
    return paths


def load_egnn_npy(
    directory: str | os.PathLike, split: Split, suffix: str = "_charged5_initvel1small"
) -> dict[str, np.ndarray]:
    """Load a split of the original EGNN ``.npy`` files into this module's layout.

    Files (``{s}`` = ``split``): ``loc_{s}{suffix}.npy`` and ``vel_{s}{suffix}.npy`` of shape
    ``[S, T, d, n]`` (coordinates *before* particles), ``charges_{s}{suffix}.npy`` ``[S, n, 1]`` and,
    optionally, ``edges_{s}{suffix}.npy`` ``[S, n, n]`` (``q_i q_j``). Sample indices are those of the
    EGNN files, which are also those of :func:`generate_nbody` (sample ``k`` = step ``(k+1) * 100``).

    Returns:
        ``{"pos", "vel", "charges"}`` (plus ``"edges"`` if the file exists), dtype as stored.

    Shapes:
        pos, vel: ``[S, T, n, d]``; charges: ``[S, n, 1]``; edges: ``[S, n, n]``.

    Raises:
        FileNotFoundError: the directory or a required file is missing (all missing files are named).
        ValueError: unknown split, or inconsistent shapes.
    """
    paths = egnn_npy_paths(directory, split, suffix)
    loaded = {kind: np.load(p, allow_pickle=False) for kind, p in paths.items() if p.is_file()}
    loc, vel, charges = loaded["loc"], loaded["vel"], loaded["charges"]
    if loc.ndim != 4:
        raise ValueError(f"{paths['loc'].name}: expected shape [S, T, d, n], got {loc.shape}")
    if vel.shape != loc.shape:
        raise ValueError(f"{paths['vel'].name}: expected the shape of {paths['loc'].name} {loc.shape}, "
                         f"got {vel.shape}")
    n_sims, _, _, n = loc.shape
    if charges.shape != (n_sims, n, 1):
        raise ValueError(f"{paths['charges'].name}: expected shape {(n_sims, n, 1)}, got {charges.shape}")
    out = {
        "pos": np.ascontiguousarray(loc.transpose(0, 1, 3, 2)),
        "vel": np.ascontiguousarray(vel.transpose(0, 1, 3, 2)),
        "charges": charges,
    }
    if "edges" in loaded:
        if loaded["edges"].shape != (n_sims, n, n):
            raise ValueError(f"{paths['edges'].name}: expected shape {(n_sims, n, n)}, "
                             f"got {loaded['edges'].shape}")
        out["edges"] = loaded["edges"]
    return out


def nbody_baselines(
    arrays: Mapping[str, np.ndarray], *, input_sample: int = 30, target_sample: int = 40
) -> dict[str, float]:
    """Two trivial predictors of the target positions, as a sanity check of a split.

    With ``x = pos[:, input_sample]``, ``v = vel[:, input_sample]``, ``y = pos[:, target_sample]``
    and means over simulations, particles and coordinates::

        zero_motion_mse            = mean (y - x)^2
        c                          = <y - x, v> / <v, v>          (least squares over the whole split)
        velocity_extrapolation_mse = mean (y - x - c v)^2

    Args:
        arrays: a split with ``"pos"`` and ``"vel"`` (numpy arrays or tensors).
        input_sample, target_sample: sample indices.

    Returns:
        ``{"zero_motion_mse", "velocity_extrapolation_mse", "c", "n_sims"}`` (floats; computed in float64).

    Shapes:
        pos, vel: ``[S, T, n, d]``.
    """
    if not isinstance(arrays, Mapping) or "pos" not in arrays or "vel" not in arrays:
        raise TypeError("arrays: expected a mapping with 'pos' and 'vel'")
    pos = _as_float_array("arrays['pos']", arrays["pos"], 4)
    vel = _as_float_array("arrays['vel']", arrays["vel"], 4)
    if vel.shape != pos.shape:
        raise ValueError(f"arrays['vel']: expected the shape of arrays['pos'] {pos.shape}, got {vel.shape}")
    for name, idx in (("input_sample", input_sample), ("target_sample", target_sample)):
        check_int(name, idx, 0)
        if idx >= pos.shape[1]:
            raise ValueError(f"{name}: expected < {pos.shape[1]} (samples stored), got {idx}")
    x, v, y = pos[:, input_sample], vel[:, input_sample], pos[:, target_sample]
    dx = y - x
    vv = float(np.vdot(v, v))
    c = float(np.vdot(dx, v)) / vv if vv > 0 else 0.0
    return {
        "zero_motion_mse": float(np.mean(dx**2)),
        "velocity_extrapolation_mse": float(np.mean((dx - c * v) ** 2)),
        "c": c,
        "n_sims": float(pos.shape[0]),
    }


def fully_connected_edge_index(n: int, device: torch.device | str | None = None) -> Tensor:
    """Directed edges of the complete graph without self-loops, source-major (as in EGNN):
    ``(0,1), (0,2), ..., (0,n-1), (1,0), (1,2), ...``.

    Shapes:
        -> ``[2, n (n - 1)]`` (int64)
    """
    check_int("n", n, 1)
    rows, cols = torch.meshgrid(torch.arange(n, device=device), torch.arange(n, device=device), indexing="ij")
    keep = rows != cols
    return torch.stack([rows[keep], cols[keep]])


class NBodyDataset(torch.utils.data.Dataset):
    """One split of the charged n-body task as tensors.

    Item ``i`` is a dict (``n`` particles, ``d`` dims, ``E = n (n - 1)`` edges)::

        pos    [n, d]  positions at input_sample        vel    [n, d]  velocities at input_sample
        charge [n, 1]  charges (+-1)                    target [n, d]  positions at target_sample
        edge_index [2, E] complete graph, no self-loops (int64, shared by all items)
        edge_attr  [E, 1] q_src * q_dst (as in EGNN)

    Use :func:`collate_nbody` as ``collate_fn`` of a DataLoader, :meth:`get_batch` for fast dense
    batches, or :meth:`tensors` for the whole split.

    Args:
        split: ``"train"``, ``"valid"`` or ``"test"``.
        config: parameters (default :class:`NBodyConfig()`); data come from :func:`generate_nbody`.
        root: cache root.
        max_samples: keep only the first ``max_samples`` simulations (``None``: all).
        dtype: floating dtype of the tensors (float32 by default, float64 allowed).
        progress: tqdm bar if the data have to be generated.
    """

    def __init__(
        self,
        split: Split,
        config: NBodyConfig | None = None,
        root: str | os.PathLike | None = None,
        max_samples: int | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        progress: bool = True,
    ) -> None:
        _check_split(split)
        config = NBodyConfig() if config is None else config
        arrays = generate_nbody(config, root, progress)[split]
        self._setup(arrays, config.input_sample, config.target_sample, max_samples, dtype)
        self.split: Split | None = split
        self.config: NBodyConfig | None = config

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, np.ndarray],
        *,
        input_sample: int = 30,
        target_sample: int = 40,
        max_samples: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> "NBodyDataset":
        """A dataset over given trajectories, e.g. ``load_egnn_npy(dir, "test")`` or one split of
        :func:`generate_nbody` (``pos``/``vel`` ``[S, T, n, d]``, ``charges`` ``[S, n, 1]``)."""
        self = cls.__new__(cls)
        self._setup(arrays, input_sample, target_sample, max_samples, dtype)
        self.split = None
        self.config = None
        return self

    def _setup(
        self,
        arrays: Mapping[str, np.ndarray],
        input_sample: int,
        target_sample: int,
        max_samples: int | None,
        dtype: torch.dtype,
    ) -> None:
        if dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            raise TypeError(f"dtype: expected a floating torch dtype, got {dtype}")
        if not isinstance(arrays, Mapping) or not all(k in arrays for k in ("pos", "vel", "charges")):
            raise TypeError("arrays: expected a mapping with 'pos', 'vel' and 'charges'")
        pos = _as_float_array("arrays['pos']", arrays["pos"], 4)
        vel = _as_float_array("arrays['vel']", arrays["vel"], 4)
        charges = _as_float_array("arrays['charges']", arrays["charges"], 3)
        n_sims, n_time, n, _ = pos.shape
        if vel.shape != pos.shape:
            raise ValueError(f"arrays['vel']: expected shape {pos.shape}, got {vel.shape}")
        if charges.shape != (n_sims, n, 1):
            raise ValueError(f"arrays['charges']: expected shape {(n_sims, n, 1)}, got {charges.shape}")
        for name, idx in (("input_sample", input_sample), ("target_sample", target_sample)):
            check_int(name, idx, 0)
            if idx >= n_time:
                raise ValueError(f"{name}: expected < {n_time} (samples stored), got {idx}")
        if max_samples is not None:
            check_int("max_samples", max_samples, 1)
            if max_samples > n_sims:
                raise ValueError(f"max_samples: expected <= {n_sims} (simulations in the split), got {max_samples}")
            n_sims = int(max_samples)
        self.input_sample, self.target_sample = int(input_sample), int(target_sample)
        self.dtype = dtype
        self.pos = torch.as_tensor(pos[:n_sims, input_sample], dtype=dtype).contiguous()
        self.vel = torch.as_tensor(vel[:n_sims, input_sample], dtype=dtype).contiguous()
        self.target = torch.as_tensor(pos[:n_sims, target_sample], dtype=dtype).contiguous()
        self.charge = torch.as_tensor(charges[:n_sims], dtype=dtype).contiguous()
        self.edge_index = fully_connected_edge_index(n)
        src, dst = self.edge_index
        self.edge_attr = self.charge[:, src] * self.charge[:, dst]  # [S, E, 1]

    @property
    def n_particles(self) -> int:
        return self.pos.shape[1]

    def __len__(self) -> int:
        return self.pos.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index: expected an int, got {type(i).__name__} (use get_batch for many)")
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} simulations")
        return {
            "pos": self.pos[i],
            "vel": self.vel[i],
            "charge": self.charge[i],
            "target": self.target[i],
            "edge_index": self.edge_index,
            "edge_attr": self.edge_attr[i],
        }

    def tensors(self) -> dict[str, Tensor]:
        """The whole split: ``pos``, ``vel``, ``target`` ``[S, n, d]``, ``charge`` ``[S, n, 1]``,
        ``edge_attr`` ``[S, E, 1]`` and the single-graph ``edge_index`` ``[2, E]`` (no copies)."""
        return {"pos": self.pos, "vel": self.vel, "charge": self.charge, "target": self.target,
                "edge_index": self.edge_index, "edge_attr": self.edge_attr}

    def get_batch(self, index: Tensor | Sequence[int] | slice) -> dict[str, Tensor]:
        """A batch by tensor indexing, in the format of :func:`collate_nbody` (fast dense path)."""
        if isinstance(index, slice):
            index = torch.arange(len(self))[index]
        index = torch.as_tensor(index, dtype=torch.long)
        if index.ndim != 1 or index.numel() == 0:
            raise ValueError(f"index: expected a non-empty 1-D index, got shape {tuple(index.shape)}")
        if (index < -len(self)).any() or (index >= len(self)).any():
            raise IndexError(f"index: out of range for {len(self)} simulations")
        return _batched(self.pos[index], self.vel[index], self.charge[index], self.target[index],
                        self.edge_attr[index], self.edge_index)


def _batched(pos: Tensor, vel: Tensor, charge: Tensor, target: Tensor, edge_attr: Tensor,
             edge_index: Tensor) -> dict[str, Tensor]:
    b, n = pos.shape[:2]
    offsets = torch.arange(b, device=edge_index.device).repeat_interleave(edge_index.shape[1]) * n
    return {
        "pos": pos,
        "vel": vel,
        "charge": charge,
        "target": target,
        "edge_attr": edge_attr.reshape(-1, edge_attr.shape[-1]),
        "edge_index": edge_index.repeat(1, b) + offsets,
        "batch": torch.arange(b, device=pos.device).repeat_interleave(n),
    }


def collate_nbody(items: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Collate :class:`NBodyDataset` items into one dense + graph batch.

    Returns:
        ``pos``, ``vel``, ``target`` ``[B, n, d]`` and ``charge`` ``[B, n, 1]`` (dense; flatten with
        ``.reshape(B * n, -1)`` for a GNN), ``edge_index`` ``[2, B E]`` over the flattened ``B n`` nodes
        (graph ``b`` offset by ``b n``), ``edge_attr`` ``[B E, 1]``, ``batch`` ``[B n]`` (graph id per node).
    """
    if len(items) == 0:
        raise ValueError("items: expected a non-empty batch")
    stack = {k: torch.stack([it[k] for it in items]) for k in ("pos", "vel", "charge", "target", "edge_attr")}
    return _batched(stack["pos"], stack["vel"], stack["charge"], stack["target"], stack["edge_attr"],
                    items[0]["edge_index"])
