"""Configuration of the charged-particle n-body data set (:class:`NBodyConfig`) and its argument checks.

Split out of :mod:`equiframe.datasets.nbody`, which re-exports the public names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import numpy as np

from .._checks import check_int, check_real

Split = Literal["train", "valid", "test"]
SPLITS: tuple[Split, ...] = get_args(Split)
Stream = Literal["split", "egnn"]
STREAMS: tuple[Stream, ...] = get_args(Stream)
#: Simulations per split that the EGNN generator draws, in this order, from one legacy NumPy stream
#: (``generate_dataset.py --num-train 10000 --seed 43 --sufix small``: 10 000 training simulations, of which
#: the protocol uses the first 3000, then 2000 validation and 2000 test simulations).
EGNN_POOLS: dict[Split, int] = {"train": 10_000, "valid": 2_000, "test": 2_000}


def _check_split(split: object) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")


@dataclass(frozen=True)
class NBodyConfig:
    """All parameters of the charged n-body data set (defaults: the EGNN/FA protocol).

    Attributes:
        n_particles: particles per system (``>= 2``).
        dim: space dimension (``>= 1``; the protocol uses 3).
        n_train, n_valid, n_test: simulations per split (``>= 1``).
        dt: integrator time step.
        n_steps: trajectory length in steps (a multiple of ``sample_every``).
        sample_every: steps between stored samples; sample ``k`` is step ``(k + 1) * sample_every``.
        input_sample, target_sample: sample indices of the input and target (``0 <= . < n_samples``);
            they select data only and do not change the generated arrays (nor the cache key).
        position_std: standard deviation of the initial positions.
        velocity_norm: norm of every initial velocity (``0`` gives particles at rest).
        charge_prob: probability of charge ``+1`` (else ``-1``).
        interaction_strength: factor ``k`` of the force ``k q_i q_j (x_i - x_j) / r^3``.
        force_clip: each force component is clipped to ``[-force_clip, force_clip]``.
        seed: root seed; the splits use independent derived seeds (see :func:`split_rng`).
        stream: where the initial conditions come from. ``"split"`` (default): one modern NumPy generator
            per split (:func:`split_rng`). ``"egnn"``: the single legacy ``numpy.random.RandomState(seed)``
            stream of the original EGNN generator, drawn in its order (:func:`egnn_initial_conditions`);
            with ``seed=43`` these are the initial conditions of the ``nbody_small`` files behind the
            published numbers (see :meth:`egnn_small`).
    """

    n_particles: int = 5
    dim: int = 3
    n_train: int = 3000
    n_valid: int = 2000
    n_test: int = 2000
    dt: float = 0.001
    n_steps: int = 5000
    sample_every: int = 100
    input_sample: int = 30
    target_sample: int = 40
    position_std: float = 1.0
    velocity_norm: float = 0.5
    charge_prob: float = 0.5
    interaction_strength: float = 1.0
    force_clip: float = 100.0
    seed: int = 0
    stream: Stream = "split"

    @classmethod
    def egnn_small(cls, **overrides: Any) -> NBodyConfig:
        """The EGNN ``nbody_small`` data set: ``NBodyConfig(stream="egnn", seed=43)`` (the protocol's
        3000 / 2000 / 2000 simulations; ``overrides`` change other fields)."""
        return cls(**{"stream": "egnn", "seed": 43, **overrides})

    def __post_init__(self) -> None:
        check_int("n_particles", self.n_particles, 2)
        check_int("dim", self.dim, 1)
        for split in SPLITS:
            check_int(f"n_{split}", getattr(self, f"n_{split}"), 1)
        check_real("dt", self.dt, 0.0, strict=True)
        check_int("sample_every", self.sample_every, 1)
        check_int("n_steps", self.n_steps, 2 * self.sample_every)
        if self.n_steps % self.sample_every:
            raise ValueError(
                f"n_steps: expected a multiple of sample_every={self.sample_every}, got {self.n_steps}"
            )
        for name in ("input_sample", "target_sample"):
            check_int(name, getattr(self, name), 0)
            if getattr(self, name) >= self.n_samples:
                raise ValueError(
                    f"{name}: expected < n_samples = n_steps // sample_every - 1 = {self.n_samples}, "
                    f"got {getattr(self, name)}"
                )
        check_real("position_std", self.position_std, 0.0, strict=True)
        check_real("velocity_norm", self.velocity_norm, 0.0, strict=False)
        check_real("charge_prob", self.charge_prob, 0.0, strict=False)
        if self.charge_prob > 1:
            raise ValueError(f"charge_prob: expected a probability in [0, 1], got {self.charge_prob}")
        check_real("interaction_strength", self.interaction_strength, 0.0, strict=False)
        check_real("force_clip", self.force_clip, 0.0, strict=True)
        check_int("seed", self.seed, 0)
        if self.stream not in STREAMS:
            raise ValueError(f"stream: expected one of {STREAMS}, got {self.stream!r}")
        if self.stream == "egnn":
            if self.seed >= 2**32:
                raise ValueError(f"seed: the 'egnn' stream (numpy RandomState) needs a seed < 2**32, got {self.seed}")
            for split, pool in EGNN_POOLS.items():
                if self.n_sims(split) > pool:
                    raise ValueError(
                        f"n_{split}: the 'egnn' stream draws {pool} {split} simulations (as the EGNN "
                        f"generator), so at most {pool} can be used, got {self.n_sims(split)}"
                    )

    @property
    def n_samples(self) -> int:
        """Stored samples per trajectory: ``n_steps // sample_every - 1`` (49 for the protocol)."""
        return self.n_steps // self.sample_every - 1

    def sample_step(self, sample: int) -> int:
        """The integration step of sample index ``sample``: ``(sample + 1) * sample_every``."""
        return (sample + 1) * self.sample_every

    def n_sims(self, split: Split) -> int:
        """Number of simulations of ``split``."""
        _check_split(split)
        return int(getattr(self, f"n_{split}"))

    def simulation_params(self) -> dict[str, int | float | str]:
        """Every parameter that determines the generated arrays (the cache key); excludes
        ``input_sample``/``target_sample``, which only select data."""
        d = asdict(self)
        del d["input_sample"], d["target_sample"]
        stream = d.pop("stream")
        params: dict[str, int | float | str] = {
            k: (int(v) if isinstance(v, (int, np.integer)) else float(v)) for k, v in d.items()
        }
        if stream != "split":  # the default stream is left out: caches written before the option stay valid
            params["stream"] = stream
        return params
