"""Running a plain Optuna objective ``def objective(trial)`` on a worker, unchanged.

Such an objective defines its space by calling ``trial.suggest_*`` as it runs. Two ways
to give it a real ``optuna.Trial``:

- on local and batch clusters, a :class:`~mlorch.tuning.remote_trial.RemoteTrial`:
  every Optuna call is answered by the driver's own trial, sampler, pruner and storage
  (``remote_trial.py``), and the worker never opens the storage;
- otherwise (``kind: address``) the worker reopens the study from the storage spec (the
  journal file: one machine or a shared file system; ``DaskStorage`` on batch clusters)
  and wraps the trial the driver asked for (``optuna.Trial(study, trial_id)``). Parameters
  the driver already suggested come back as they are; others are sampled on the worker by
  a copy of the sweep's sampler, reseeded per trial so parallel copies do not draw the
  same numbers (so a stateful sampler does not behave as in ``study.optimize``).

Either way the worker never tells the trial: it returns the value, and the driver tells
(one place decides COMPLETE/PRUNED/FAIL for every kind of target). A small value also
travels to the driver as a scheduler event, ahead of the task's completion, which saves
the driver a round trip to the worker per trial (``_push``).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from mlorch.tuning.remote_trial import RemoteTrial, RemoteTrialSpec, Returned
from mlorch.tuning.storage import StorageSpec, storage_from_spec

__all__ = ["ObjectiveCall", "run_objective"]

PUSH_LIMIT = 64 * 1024  # bytes of a pickled result sent as an event; larger ones are gathered


@dataclass(frozen=True)
class ObjectiveCall:
    objective: Callable[[optuna.Trial], Any]
    study_name: str
    storage: StorageSpec
    sampler: optuna.samplers.BaseSampler | None  # None with ``remote``: the driver samples
    pruner: optuna.pruners.BasePruner
    trial_id: int
    number: int
    sweep: str
    remote: RemoteTrialSpec | None = None  # set: the driver answers the trial's calls
    gc_after_trial: bool = False  # gc.collect() once the objective returned (study.optimize's option)
    result_topic: str | None = None  # set: the value is also pushed to the driver as an event


def run_objective(call: ObjectiveCall) -> Any:
    """The objective's return value (with the names it asked for, for a RemoteTrial: the driver
    pre-suggests only parameters every trial asks for); ``optuna.TrialPruned`` and errors propagate."""
    try:
        result = _run(call)
        if call.result_topic is not None:
            _push(call.result_topic, call.number, result)
        return result
    finally:
        if call.gc_after_trial:
            gc.collect()


def _push(topic: str, number: int, result: Any) -> None:
    """Send a small result to the driver with the task's own messages to the scheduler (an event
    on ``topic``), so the driver need not fetch it from this worker; it still returns as the
    task's result, which the driver gathers if the event is missing (or too large to send)."""
    from distributed import get_worker
    from distributed.protocol.pickle import dumps

    try:
        payload = bytes(dumps(result))
        if len(payload) <= PUSH_LIMIT:
            get_worker().log_event(topic, {"trial": number, "payload": payload})
    except Exception:  # noqa: BLE001 - the driver gathers the result (or its pickling error) instead
        pass


def _run(call: ObjectiveCall) -> Any:
    if call.remote is not None:
        remote = RemoteTrial(call.remote, pruner=call.pruner)
        return Returned(_plain(call.objective(remote)), frozenset(remote.asked))
    sampler = call.sampler
    assert sampler is not None
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
