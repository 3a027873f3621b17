"""Running a plain Optuna objective ``def objective(trial)`` on a worker, unchanged.

Such an objective defines its space by calling ``trial.suggest_*`` as it runs, so
the worker needs a real ``optuna.Trial``: it reopens the study from the storage spec
(the journal file: one machine or a shared file system) and wraps the trial the
driver asked for (``optuna.Trial(study, trial_id)``). Parameters the sweep's
``space=`` pre-suggested on the driver come back as they are; others are sampled on
the worker by a copy of the sweep's sampler, reseeded per trial so parallel copies
do not draw the same numbers (so with ``seed=`` only the driver's pre-suggested
parameters are reproducible). ``trial.report``/``should_prune`` work as in
``study.optimize``. The worker never tells the trial: it returns the value, and the
driver tells (one place decides COMPLETE/PRUNED/FAIL for every kind of target).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from mlorch.tuning.storage import StorageSpec, storage_from_spec

__all__ = ["ObjectiveCall", "run_objective"]


@dataclass(frozen=True)
class ObjectiveCall:
    objective: Callable[[optuna.Trial], Any]
    study_name: str
    storage: StorageSpec
    sampler: optuna.samplers.BaseSampler
    pruner: optuna.pruners.BasePruner
    trial_id: int
    number: int
    sweep: str


def run_objective(call: ObjectiveCall) -> Any:
    """The objective's return value; ``optuna.TrialPruned`` and errors propagate to the driver."""
    sampler = call.sampler
    sampler.reseed_rng()  # each trial unpickles the same sampler state: draw fresh numbers
    study = optuna.load_study(
        study_name=call.study_name, storage=storage_from_spec(call.storage), sampler=sampler, pruner=call.pruner
    )
    trial = optuna.Trial(study, call.trial_id)
    value = call.objective(trial)
    return _plain(value)


def _plain(value: Any) -> Any:
    """Numbers as Python floats (numpy scalars and 0-d tensors pickle heavily and vary)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    try:
        return float(value)
    except (TypeError, ValueError):
        return value
