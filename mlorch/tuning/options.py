"""Turning sweep options (names, small dicts, or Optuna objects) into samplers and pruners.

Names keep notebooks and YAML short (``sampler="tpe"``, ``pruner="median"``); a dict
adds constructor options (``{"name": "median", "n_startup_trials": 2}``); an Optuna
instance is used as it is. Unknown names fail with the field named and the closest
known name, before any trial starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from mlorch.errors import ConfigError, preview

__all__ = ["SAMPLERS", "PRUNERS", "make_sampler", "make_pruner", "check_directions"]

SAMPLERS: dict[str, str] = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "cmaes": "CmaEsSampler",
    "qmc": "QMCSampler",
    "gp": "GPSampler",
    "nsga2": "NSGAIISampler",
    "nsga3": "NSGAIIISampler",
}
PRUNERS: dict[str, str] = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "threshold": "ThresholdPruner",
    "none": "NopPruner",
}


def _split(spec: Any, field: str, known: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, Mapping):
        if "name" not in spec:
            raise ConfigError(f"{field}: a {field} given as a mapping needs a 'name', e.g. {{'name': 'median'}}")
        name, options = spec["name"], {k: v for k, v in spec.items() if k != "name"}
    else:
        name, options = spec, {}
    if not isinstance(name, str) or name.lower() not in known:
        close = difflib.get_close_matches(str(name).lower(), list(known), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{field}: unknown {field} {name!r}{hint} (known: {', '.join(known)})")
    return name.lower(), options


def make_sampler(spec: Any, seed: int | None) -> optuna.samplers.BaseSampler:
    """A sampler from a name, ``{"name": ..., **options}`` or an instance. TPE keeps ``constant_liar=True``."""
    if isinstance(spec, optuna.samplers.BaseSampler):
        return spec
    name, options = _split(spec if spec is not None else "tpe", "sampler", SAMPLERS)
    cls = getattr(optuna.samplers, SAMPLERS[name])
    if name == "tpe":
        # Trials run in parallel: a RUNNING trial must count as "taken" so TPE does not
        # propose a near-duplicate while it is in flight (Optuna 5.0's default; kept explicit).
        options.setdefault("constant_liar", True)
    if seed is not None:
        options.setdefault("seed", seed)
    try:
        return cls(**options)
    except (TypeError, ValueError, ImportError) as exc:
        raise ConfigError(f"sampler: cannot build {SAMPLERS[name]}({options}): {exc}") from None


def _direction_name(direction: Any) -> Any:
    return direction.name.lower() if isinstance(direction, optuna.study.StudyDirection) else direction


def make_pruner(spec: Any) -> optuna.pruners.BasePruner:
    """A pruner from a name, ``{"name": ..., **options}``, an instance, or None: Optuna's default (the median pruner)."""
    if isinstance(spec, optuna.pruners.BasePruner):
        return spec
    name, options = _split(spec if spec is not None else "median", "pruner", PRUNERS)
    cls = getattr(optuna.pruners, PRUNERS[name])
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"pruner: cannot build {PRUNERS[name]}({options}): {exc}") from None


def check_directions(
    metric: str | None,
    direction: Any,
    metrics: Sequence[str] | None,
    directions: Sequence[Any] | None,
    allow_unnamed: bool = False,
) -> tuple[list[str], list[str]]:
    """(metric names, directions) for single- or multi-objective sweeps, checked.

    ``allow_unnamed``: a plain objective may give ``directions=`` alone (its values are
    positional, as in ``optuna.create_study(directions=...)``). Directions may be Optuna's
    ``StudyDirection`` members.
    """
    direction = _direction_name(direction)
    if directions is not None and not isinstance(directions, (str, list, tuple)):
        raise ConfigError(f"directions: expected a list like ['minimize', 'maximize'], got {preview(directions)}")
    if directions is not None and not isinstance(directions, str):
        directions = [_direction_name(d) for d in directions]
    if metrics is not None and metric is not None:
        raise ConfigError("metric: give either metric= (one objective) or metrics= (several), not both")
    if metrics is not None:
        if not isinstance(metrics, (str, list, tuple)):
            raise ConfigError(f"metrics: expected a list of names, got {type(metrics).__name__}")
        names = [metrics] if isinstance(metrics, str) else list(metrics)
        if not names:
            raise ConfigError("metrics: expected at least one name, got []")
        dirs = list(directions) if directions is not None else ["minimize"] * len(names)
        if isinstance(directions, str):
            raise ConfigError("directions: expected a list like ['minimize', 'maximize'], got a string")
        if len(dirs) != len(names):
            raise ConfigError(f"directions: {len(dirs)} direction(s) for {len(names)} metric(s); give one per metric")
        field = "directions"
    else:
        if directions is not None and not allow_unnamed:
            raise ConfigError("directions: use direction= with a single metric=, or metrics= with directions=")
        if directions is not None and (direction is not None or metric is not None):
            raise ConfigError("directions: give either direction= (one objective) or directions= (several), not both")
        if isinstance(directions, str):
            raise ConfigError("directions: expected a list like ['minimize', 'maximize'], got a string")
        names = [metric] if metric is not None else []
        dirs = list(directions) if directions is not None else ["minimize" if direction is None else direction]
        if not dirs:
            raise ConfigError("directions: expected at least one direction")
        field = "direction" if directions is None else "directions"
    for name in names:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"metric: expected the name of a value the target returns, got {preview(name)}")
    for d in dirs:
        if d not in ("minimize", "maximize"):
            close = difflib.get_close_matches(str(d), ["minimize", "maximize"], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{field}: {preview(d)} is neither 'minimize' nor 'maximize'{hint}")
    return names, dirs
