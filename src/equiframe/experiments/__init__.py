"""Experiments: a config, the data sets, a model factory and the metrics, run by :mod:`equiframe.train`.

The registry maps an experiment's name (the results sub-directory, stored in every checkpoint) to its
class, so that ``equiframe eval`` / :func:`equiframe.train.evaluate_run` can rebuild a run.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from ..train import Experiment
from .nbody import PUBLISHED_NBODY, NBodyExperiment, NBodyExperimentConfig

__all__ = ["EXPERIMENTS", "NBodyExperiment", "NBodyExperimentConfig", "PUBLISHED_NBODY", "experiment_from_dict",
           "get_experiment_class", "register_experiment"]

EXPERIMENTS: dict[str, type[Experiment]] = {NBodyExperiment.name: NBodyExperiment}


def register_experiment(cls: type[Experiment]) -> type[Experiment]:
    """Add an experiment class to the registry (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Experiment)) or not cls.name:
        raise TypeError("cls: expected an Experiment subclass with a non-empty `name`")
    EXPERIMENTS[cls.name] = cls
    return cls


def get_experiment_class(name: str) -> type[Experiment]:
    """The experiment class registered as ``name``; ``equiframe.experiments.<name>`` is imported on first
    use if it is not registered yet (experiment modules register themselves when imported)."""
    if name not in EXPERIMENTS and isinstance(name, str) and name.isidentifier():
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
        else:
            for obj in vars(module).values():
                if isinstance(obj, type) and issubclass(obj, Experiment) and getattr(obj, "name", "") == name:
                    EXPERIMENTS.setdefault(name, obj)
    if name not in EXPERIMENTS:
        raise ValueError(f"name: unknown experiment {name!r}; known: {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def experiment_from_dict(name: str, config: Mapping[str, Any]) -> Experiment:
    """Rebuild a registered experiment from its name and ``to_dict()`` config."""
    return get_experiment_class(name).from_dict(config)
