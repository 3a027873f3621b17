"""MLflow for sweeps: one parent run per sweep, one nested child run per trial.

:class:`SweepTracker` implements the sweep driver's hooks (``mlorch.tuning.hooks``,
keyword-only events): it creates each trial's child run, fills it (a flow trial through
:class:`~mlorch.tracking.hook.SweepTrialHook`, an objective's parameters and values at
its end) and ends it with the trial's Optuna state: FINISHED / FAILED with the error /
KILLED; pruned trials end FINISHED with ``optuna.state=PRUNED``, as MLflow has no pruned
status. Trial and run point at each other: the trial's user attribute ``mlflow_run_id``,
the run's tags ``optuna.trial_number`` / ``optuna.study_name``.

Writes go through a :class:`~mlorch.tracking.child_runs.ChildRuns` writer and never hold
up the ask/tell loop; :meth:`SweepTracker.sweep_finished` waits for them, then writes the
summary (``sweep_summary``). Trials are duck-typed Optuna trials (``number``, ``state``,
``values``, ``params``, ``user_attrs``, ``intermediate_values``): this module needs no
Optuna import of its own.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlorch.names import (
    CONSTRAINTS_SYSTEM_ATTR,
    CONSTRAINTS_TAG,
    DUPLICATE_ATTR,
    DUPLICATE_TAG,
    ERROR_ATTR,
    FEASIBLE_TAG,
    INTERRUPTED_ATTR,
    INTERRUPTED_TAG,
    LOST_ATTR,
    LOST_TAG,
    PARENT_ATTR,
    PARENT_RUN_TAG,
    PRUNED_AT_TAG,
    PRUNED_TAG,
    RUN_ATTR,
    RUN_ID_INFO,
    STUDY_TAG,
    SWEEP_TAG,
    TRACKING_URI_INFO,
    TRIAL_ID_TAG,
    TRIAL_NUMBER_TAG,
    TRIAL_STATE_TAG,
    USER_ATTR_TAG_PREFIX,
)
from mlorch.tracking.child_runs import ChildRuns, Point, child_runs
from mlorch.tracking.hook import SweepTrialHook
from mlorch.tracking.params import param_items
from mlorch.tracking.repro import repro_tags
from mlorch.tracking.store import RunStore
from mlorch.tracking.ui_view import sweep_view, write_sweep_view

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from mlorch.tracking.sweep_summary import Plotter

__all__ = ["SweepTracker", "run_status"]

log = logging.getLogger("mlorch.sweep")


def run_status(frozen: FrozenTrial) -> str:
    """The MLflow status of a finished trial's run."""
    if frozen.user_attrs.get(INTERRUPTED_ATTR):
        return "KILLED"
    return "FINISHED" if frozen.state.name in ("COMPLETE", "PRUNED") else "FAILED"


class SweepTracker:
    """The sweep hooks that record a sweep in MLflow (see the module docstring)."""

    def __init__(self, store: RunStore):
        self.store = store
        self.writer: ChildRuns = child_runs(store)
        self.parent_run_id: str | None = None
        self.experiment = ""
        self.study_name = ""
        self.metrics: list[str] = []
        self.define_by_run = False  # a plain objective: parameters known only at the end
        self._lock = threading.Lock()
        self._runs: dict[int, str] = {}  # trial number -> child run
        self._creating: dict[int, threading.Event] = {}  # trial number -> set once its run exists
        self._state_tagged: dict[str, str] = {}  # run -> the state its tags already say
        self._fillers: dict[str, SweepTrialHook] = {}  # run -> the hook that filled it (what it logged)
        self._plots: Plotter | None = None

    # -- the sweep ------------------------------------------------------------------------
    def sweep_started(
        self,
        *,
        study: optuna.Study,
        experiment: str,
        summary: Mapping[str, Any],
        metrics: list[str],
        kind: str,
        cluster: Any = None,
        **_: Any,
    ) -> None:
        """Create the parent run, or reopen the one a previous (crashed) driver made."""
        from mlorch.tracking.sweep_summary import plotter

        n_trials = summary.get("n_trials")
        self._plots = plotter(n_trials if isinstance(n_trials, int) else 0)
        self.experiment, self.study_name, self.metrics = experiment, study.study_name, list(metrics)
        self.define_by_run = kind == "objective"
        tags = {SWEEP_TAG: study.study_name, STUDY_TAG: study.study_name}
        try:
            tags.update(repro_tags(cluster))  # git state, versions, host, command or notebook: as its children have
        except Exception as exc:  # never stop a sweep for its tags
            log.warning("sweep tracking: could not read the reproducibility tags: %s", exc)
        existing = study.user_attrs.get(PARENT_ATTR)
        if existing:
            try:
                self.store.client.update_run(existing, status="RUNNING")
                self.store.heartbeat.add(existing)
                self.store.set_tags(existing, tags)  # this run's state of the code, not the first run's
                self.parent_run_id = existing
                self._write_view(study, summary)
                return
            except Exception as exc:
                log.warning("could not reopen the sweep's MLflow run %s (%s); making a new one", existing, exc)
        self.parent_run_id = self.store.create_run(experiment, study.study_name, params=dict(summary), tags=tags)
        study.set_user_attr(PARENT_ATTR, self.parent_run_id)
        self._write_view(study, summary)

    def _write_view(self, study: optuna.Study, summary: Mapping[str, Any]) -> None:
        """The MLflow UI's runs table for this sweep: its parameters and metrics as columns (see ``ui_view``)."""
        space = summary.get("space")
        params = list(space) if isinstance(space, Mapping) else []
        metrics = self.metrics or [
            "objective" if len(study.directions) == 1 else f"objective_{i}" for i in range(len(study.directions))
        ]
        try:
            view = sweep_view(params, metrics)
            write_sweep_view(self.store.client, self.store.experiment_id(self.experiment), study.study_name, view)
        except Exception as exc:  # the UI's view is a convenience: never stop a sweep for it
            log.debug("sweep tracking: could not write the MLflow UI view: %s", exc)

    def sweep_resumed(self, *, study: optuna.Study, trial_ids: Mapping[int, int], **_: Any) -> None:
        """Make every finished trial's run end as the trial did (a dead driver may not have ended or even written it)."""
        if not self.parent_run_id:
            return
        self.writer.settle()  # runs queued just now are in the store before we list them
        runs = {r.data.tags.get(TRIAL_NUMBER_TAG): r for r in self._children()}
        for frozen in study.get_trials(deepcopy=False):
            if not frozen.state.is_finished():
                continue
            run = runs.get(str(frozen.number))
            if run is None:
                if not (self.writer.queues_runs and frozen.user_attrs.get(RUN_ATTR)):
                    continue  # the trial never had a run
                run_id = self.trial_interrupted(trial=frozen, trial_id=trial_ids[frozen.number])
                # (queued, never written: now written under the id Optuna has)
                self._end(run_id, frozen, frozen.user_attrs.get(ERROR_ATTR))
            elif run.info.status != run_status(frozen) or run.data.tags.get(TRIAL_STATE_TAG) != frozen.state.name:
                self._end(run.info.run_id, frozen, frozen.user_attrs.get(ERROR_ATTR))

    def sweep_finished(self, *, study: optuna.Study, status: str = "FINISHED", **_: Any) -> None:
        """Wait for the child runs, then the summary on the parent run: best trial, plots, trials table, best model."""
        from mlorch.tracking.sweep_summary import write_summary

        if self.parent_run_id is None:
            self.writer.close()
            if self._plots is not None:
                self._plots.close()
            return
        from mlorch.tracking.sweep_summary import PlotsHere

        plots = self._plots if self._plots is not None else PlotsHere()
        write_summary(self.store, study, self.parent_run_id, self.metrics, plots, before=self.writer.close)
        self.store.end_run(self.parent_run_id, status)

    # -- trials ---------------------------------------------------------------------------
    def trial_started(
        self, *, trial: optuna.Trial, trial_id: int, state: str | None = None, needs_run: bool = False, **_: Any
    ) -> dict[str, Any]:
        """The run info a flow trial is given (its child run), creating the run once.

        Called as a trial starts (``needs_run`` for a flow, whose hook writes into the run at
        once) and again with ``state`` when it has ended, before Optuna is told. Where
        creating a run costs a round trip, an objective's run waits for its end: its tags
        then go in with the run, and the write overlaps with the next trial.
        """
        # One run per trial, made by whichever caller comes first; the lock is held only to decide
        # who (a create may wait on a batch or a server: others' trials must not wait for it).
        with self._lock:
            run_id = self._runs.get(trial.number)
            creating = self._creating.get(trial.number)
            mine = run_id is None and creating is None and (needs_run or state is not None or self.writer.queues_runs)
            if mine:
                creating = self._creating[trial.number] = threading.Event()
        if mine:
            try:
                tags = self._trial_tags(trial.number, trial_id)
                if state is not None:
                    tags[TRIAL_STATE_TAG] = state
                run_id = self.writer.create(
                    self.experiment, str(self.parent_run_id), self._run_name(trial.number), tags, wait=needs_run
                )
                with self._lock:
                    if state is not None:
                        self._state_tagged[run_id] = state
                    self._runs[trial.number] = run_id
                trial.set_user_attr(RUN_ATTR, run_id)
            finally:
                with self._lock:
                    self._creating.pop(trial.number, None)
                assert creating is not None
                creating.set()
        elif creating is not None:  # another caller is making it: the same run for both
            creating.wait()
            run_id = self._runs.get(trial.number)
        if run_id is None:
            return {}
        return {RUN_ID_INFO: run_id, TRACKING_URI_INFO: self.store.tracking_uri}

    def flow_hooks(self, *, number: int, **_: Any) -> list[Any]:
        """Run hooks that fill a flow trial's child run (parameters, task events, the flow's tags,
        every number it returns)."""
        run_id = self._runs.get(number)
        if run_id is None:
            return []
        # The target metrics are the tracker's to write (with the trial's value, at its last step).
        hook = self._fillers[run_id] = SweepTrialHook(self.store, run_id, leave=set(self.metrics))
        return [hook]

    def trial_reported(self, *, number: int, value: float, step: int, **_: Any) -> None:
        run_id = self._runs.get(number)
        if run_id is not None and math.isfinite(value):
            self.writer.report(run_id, (self.metrics or ["objective"])[0], value, step)

    def trial_finished(self, *, trial: FrozenTrial, error: str | None = None, **_: Any) -> None:
        run_id = self._runs.get(trial.number)
        if run_id is not None:
            self.writer.later(lambda: self._end(run_id, trial, error))

    def trial_interrupted(self, *, trial: FrozenTrial, trial_id: int, **_: Any) -> str:
        """The child run of a trial a dead driver left behind: its own, found by its tags, or made now."""
        self.writer.settle()
        run_id = trial.user_attrs.get(RUN_ATTR)
        if run_id and self._exists(run_id):
            return str(run_id)
        found = self._find_run(trial.number)
        if found is not None:
            return found
        # The driver died before the run was written (or, where runs cost a round trip, before it was created).
        tags = self._trial_tags(trial.number, trial_id)
        name = self._run_name(trial.number)
        return self.writer.create(
            self.experiment, str(self.parent_run_id), name, tags, params=trial.params, run_id=run_id or None
        )

    # -- helpers --------------------------------------------------------------------------
    def _run_name(self, number: int) -> str:
        return f"{self.study_name}-trial-{number}"

    def _trial_tags(self, number: int, trial_id: int) -> dict[str, Any]:
        return {SWEEP_TAG: self.study_name, STUDY_TAG: self.study_name, TRIAL_NUMBER_TAG: number, TRIAL_ID_TAG: trial_id}

    def _end(self, run_id: str, frozen: FrozenTrial, error: str | None) -> None:
        """The trial's values, tags and an objective's params and reports, then its status."""
        stamp = int(time.time() * 1000)
        last = max(frozen.intermediate_values, default=0)
        points: list[Point] = []
        filler = self._fillers.pop(run_id, None)
        logged = filler.present if filler is not None else set()  # the run has these: their history stays theirs
        if frozen.values is not None:
            single = len(frozen.values) == 1
            names = self.metrics or ["objective" if single else f"objective_{i}" for i in range(len(frozen.values))]
            points += [
                (n, float(v), stamp, last) for n, v in zip(names, frozen.values) if math.isfinite(float(v)) and n not in logged
            ]
        if self.define_by_run:  # a plain objective: its trial.report values were stored on the worker
            name = "intermediate_" + (self.metrics or ["objective"])[0]
            points += [(name, float(v), stamp, int(k)) for k, v in frozen.intermediate_values.items() if math.isfinite(v)]
        tags: dict[str, Any] = {}
        if self._state_tagged.pop(run_id, None) != frozen.state.name:
            tags[TRIAL_STATE_TAG] = frozen.state.name
        if frozen.state.name == "PRUNED":
            tags[PRUNED_TAG] = "true"
            if frozen.intermediate_values:
                tags[PRUNED_AT_TAG] = str(last)
        if frozen.user_attrs.get(INTERRUPTED_ATTR):
            tags[INTERRUPTED_TAG] = "true"
        if frozen.user_attrs.get(LOST_ATTR):
            tags[LOST_TAG] = str(frozen.user_attrs[LOST_ATTR])
        if frozen.user_attrs.get(DUPLICATE_ATTR) is not None:
            tags[DUPLICATE_TAG] = str(frozen.user_attrs[DUPLICATE_ATTR])
        tags.update(_user_attr_tags(frozen))
        params = param_items(frozen.params) if self.define_by_run else {}
        self.writer.end(run_id, run_status(frozen), points, params, tags, error)

    def _exists(self, run_id: str) -> bool:
        try:
            self.store.client.get_run(run_id)
        except Exception:
            return False
        return True

    def _children(self) -> list[Any]:
        query = f"tags.{PARENT_RUN_TAG} = '{self.parent_run_id}'"
        exp = self.store.experiment_id(self.experiment)
        return list(self.store.client.search_runs([exp], query, max_results=50000))

    def _find_run(self, number: int) -> str | None:
        if not self.parent_run_id:
            return None
        exp = self.store.experiment_id(self.experiment)
        query = f"tags.{PARENT_RUN_TAG} = '{self.parent_run_id}' and tags.`{TRIAL_NUMBER_TAG}` = '{number}'"
        runs = self.store.client.search_runs([exp], query)
        return runs[0].info.run_id if runs else None


def _user_attr_tags(frozen: FrozenTrial) -> dict[str, Any]:
    """The trial's own user attributes (``optuna.user_attr.<key>``, JSON where it can be) and,
    with a constrained sampler, its constraints and whether it is feasible."""
    tags: dict[str, Any] = {}
    for key, value in frozen.user_attrs.items():
        if key.startswith("mlorch.") or key in (RUN_ATTR,):
            continue
        tags[f"{USER_ATTR_TAG_PREFIX}{key}"] = _json(value)
    constraints = frozen.system_attrs.get(CONSTRAINTS_SYSTEM_ATTR)
    if constraints is not None:
        tags[CONSTRAINTS_TAG] = _json(list(constraints))
        tags[FEASIBLE_TAG] = str(all(c <= 0 for c in constraints)).lower()
    return tags


def _json(value: Any) -> str:
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)
