"""MLflow for sweeps: one parent run per sweep, one nested child run per trial.

The driver makes every run (workers never open the store). A flow trial gets its
child run through ``run_flow(info={"mlflow_run_id": ...})``: the tracking hook then
logs the flow's parameters and task events into it and leaves it open; this module
ends it with the trial's Optuna state (FINISHED / FAILED with the error / KILLED;
pruned trials end FINISHED with the tag ``optuna.state=PRUNED``, as MLflow has no
pruned status). Trial and run point at each other: the trial's user attribute
``mlflow_run_id``, the run's tags ``optuna.trial_number`` / ``optuna.study_name``.

Child-run writes never hold up the driver's ask/tell loop: on SQL stores they are
queued to ``RunStore.bulk`` (batched SQL, see ``mlorch.tracking.bulk``), elsewhere
to writer threads using MLflow's public API; :meth:`SweepTracker.close` waits for
them. With tracking off (or the tracking package missing) :class:`NullTracker`
keeps the same interface.
"""

from __future__ import annotations

import logging
import math
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["NullTracker", "SweepTracker", "open_tracker", "PARENT_ATTR", "RUN_ATTR"]

log = logging.getLogger("mlorch.sweep")

PARENT_ATTR = "mlflow_parent_run_id"  # study user attribute
from mlorch.tuning.handle import RUN_ATTR  # noqa: E402 - trial user attribute, defined where it is read

WRITERS = 2


class NullTracker:
    parent_run_id: str | None = None
    tracking_uri: str | None = None
    define_by_run = False  # a plain objective: parameters known only at the end
    queues_runs = False  # True where starting a run costs nothing (queued): objective trials then get theirs as they start

    def start_sweep(self, study: optuna.Study, experiment: str, summary: Mapping[str, Any]) -> None: ...
    def start_trial(self, trial: optuna.Trial, state: TrialState | None = None, wait: bool = False) -> str | None:
        return None

    def report(self, run_id: str | None, metric: str, value: float, step: int) -> None: ...
    def end_trial(self, run_id: str | None, frozen: FrozenTrial, metrics: list[str], error: str | None) -> None: ...
    def run_for(self, frozen: FrozenTrial) -> str | None:
        return None

    def reconcile(self, study: optuna.Study, metrics: list[str]) -> None: ...
    def finish(self, study: optuna.Study, metrics: list[str], status: str = "FINISHED") -> None: ...
    def close(self) -> None: ...


def open_tracker(enabled: bool) -> NullTracker | SweepTracker:
    if not enabled:
        return NullTracker()
    try:
        from mlorch.tracking import enabled as tracking_enabled
        from mlorch.tracking.store import RunStore
    except ImportError:  # tracking package not installed in this tree
        log.info("mlorch.tracking is not available: the sweep is not tracked in MLflow")
        return NullTracker()
    if not tracking_enabled():  # MLORCH_TRACKING=off
        return NullTracker()
    return SweepTracker(RunStore.open())


class SweepTracker(NullTracker):
    """Parent/child MLflow runs of one sweep, written through ``RunStore``.

    On SQL stores child runs go through ``store.bulk`` (queued, committed in batches,
    see ``mlorch.tracking.bulk``); elsewhere through the public API on writer threads.
    """

    def __init__(self, store: Any):
        self.store = store
        self.bulk = store.bulk
        self.tracking_uri = store.tracking_uri
        self.parent_run_id: str | None = None
        self.experiment = ""
        self.study_name = ""
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._buffer_lock = threading.Lock()
        self._points: dict[str, list[Any]] = {}
        self._flushed = 0.0
        self._state_tagged: dict[str, str] = {}
        self._importing: threading.Thread | None = None
        # Public API only: jobs touch one run each, so they may run side by side (SQLite
        # serialises the commits, but one thread's fsync overlaps with the other's ORM work).
        self._threads = (
            []
            if self.bulk is not None
            else [threading.Thread(target=self._work, name=f"mlorch-sweep-tracking-{i}", daemon=True) for i in range(WRITERS)]
        )
        for thread in self._threads:
            thread.start()

    @property
    def queues_runs(self) -> bool:  # type: ignore[override]
        return self.bulk is not None

    # -- the writer threads (public API) -------------------------------------------------
    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # tracking must never stop a sweep
                log.exception("sweep tracking: a write failed")

    def _later(self, job: Callable[[], None]) -> None:
        if self.bulk is not None:  # queueing is cheap: no thread hop
            try:
                job()
            except Exception:
                log.exception("sweep tracking: a write failed")
            return
        self._queue.put(job)

    def close(self) -> None:
        """Every child-run write so far is in the store when this returns."""
        alive = [t for t in self._threads if t.is_alive()]
        for _ in alive:
            self._queue.put(None)
        for thread in alive:
            thread.join()
        if self.bulk is not None and not self.bulk.wait():
            log.warning("sweep tracking: child runs were still being written after 120 s")

    # -- runs -------------------------------------------------------------------------
    def start_sweep(self, study: optuna.Study, experiment: str, summary: Mapping[str, Any]) -> None:
        """Create the parent run, or reopen the one a previous (crashed) driver made."""
        self._importing = threading.Thread(target=_import_plotting, name="mlorch-import-plotting", daemon=True)
        self._importing.start()
        self.experiment, self.study_name = experiment, study.study_name
        existing = study.user_attrs.get(PARENT_ATTR)
        if existing:
            try:
                self.store.client.update_run(existing, status="RUNNING")
                self.store.heartbeat.add(existing)
                self.parent_run_id = existing
                return
            except Exception as exc:
                log.warning("could not reopen the sweep's MLflow run %s (%s); making a new one", existing, exc)
        tags = {"mlorch.sweep": study.study_name, "optuna.study_name": study.study_name}
        self.parent_run_id = self.store.create_run(experiment, study.study_name, params=dict(summary), tags=tags)
        study.set_user_attr(PARENT_ATTR, self.parent_run_id)

    def start_trial(self, trial: optuna.Trial, state: TrialState | None = None, wait: bool = False) -> str:
        """The trial's child run, tags only (with ``state`` when the trial has ended).

        ``wait``: return only once the run is in the store (a flow's tracking hook
        writes into it at once). A flow's parameters are logged by that hook; an
        objective's are known only when it ends and go into the closing write.
        """
        tags = self._trial_tags(trial.number, trial._trial_id)
        if state is not None:
            tags["optuna.state"] = state.name
        run_id = self._create(f"{self.study_name}-trial-{trial.number}", tags, wait=wait)
        if state is not None:
            self._state_tagged[run_id] = state.name
        return run_id

    def _create(
        self,
        name: str,
        tags: Mapping[str, Any],
        params: Mapping[str, Any] | None = None,
        wait: bool = False,
        run_id: str | None = None,
    ) -> str:
        if self.bulk is None:
            return str(self.store.create_run(self.experiment, name, params=params, tags=tags, parent_run_id=self.parent_run_id))
        from mlorch.tracking.liveness import owner_tags
        from mlorch.tracking.params import param_items, tag_items

        all_tags = {**tag_items(tags), **owner_tags(), "mlflow.parentRunId": str(self.parent_run_id)}
        run_id = self.bulk.start_run(self.store.experiment_id(self.experiment), name, all_tags, run_id=run_id)
        if params:
            self.bulk.log(run_id, params=param_items(params))
        self.store.heartbeat.add(run_id)
        if wait:
            self.bulk.wait()
        return run_id

    def _trial_tags(self, number: int, trial_id: int) -> dict[str, Any]:
        return {
            "mlorch.sweep": self.study_name,
            "optuna.study_name": self.study_name,
            "optuna.trial_number": number,
            "optuna.trial_id": trial_id,
        }

    def report(self, run_id: str | None, metric: str, value: float, step: int) -> None:
        """An intermediate value: queued (SQL stores), else buffered and written every 1 s or at the trial's end."""
        if run_id is None or not math.isfinite(value):
            return
        stamp = int(time.time() * 1000)
        if self.bulk is not None:
            self.bulk.log(run_id, metrics=[(metric, value, stamp, step)])
            return
        from mlflow.entities import Metric

        with self._buffer_lock:
            self._points.setdefault(run_id, []).append(Metric(metric, value, stamp, step))
            due = time.monotonic() - self._flushed > 1.0
        if due:
            self._flushed = time.monotonic()
            self._later(self._write_points)

    def _write_points(self) -> None:
        with self._buffer_lock:
            batches, self._points = self._points, {}
        for run_id, points in batches.items():
            self.store.write_points(run_id, points)

    def end_trial(self, run_id: str | None, frozen: FrozenTrial, metrics: list[str], error: str | None) -> None:
        if run_id is None:
            return
        self._later(lambda: self._end_trial(run_id, frozen, metrics, error))

    def _end_trial(self, run_id: str, frozen: FrozenTrial, metrics: list[str], error: str | None) -> None:
        """The trial's values, buffered points, tags and an objective's params, then its status."""
        from mlorch.tracking.params import MAX_TAG, param_items, tag_items, truncate
        from mlorch.tracking.secrets import scrub

        stamp = int(time.time() * 1000)
        last = max(frozen.intermediate_values, default=0)
        points: list[tuple[str, float, int, int]] = []
        if frozen.values is not None:
            names = metrics or [f"objective_{i}" if len(frozen.values) > 1 else "objective" for i in range(len(frozen.values))]
            points += [(n, float(v), stamp, last) for n, v in zip(names, frozen.values) if math.isfinite(float(v))]
        if self.define_by_run:  # a plain objective: its trial.report values were stored on the worker
            name = "intermediate_" + (metrics or ["objective"])[0]
            points += [(name, float(v), stamp, int(k)) for k, v in frozen.intermediate_values.items() if math.isfinite(v)]
        tags: dict[str, Any] = {}
        if self._state_tagged.pop(run_id, None) != frozen.state.name:
            tags["optuna.state"] = frozen.state.name
        if frozen.state == TrialState.PRUNED:
            tags["mlorch.pruned"] = "true"
            if frozen.intermediate_values:
                tags["optuna.pruned_at_step"] = str(last)
        if frozen.user_attrs.get("mlorch.interrupted"):
            tags["mlorch.interrupted"] = "true"
        if frozen.user_attrs.get("mlorch.lost_attempts"):  # attempts lost with a batch job, then run again
            tags["mlorch.lost_attempts"] = str(frozen.user_attrs["mlorch.lost_attempts"])
        params = param_items(frozen.params) if self.define_by_run else {}
        if self.bulk is not None:
            if error:
                tags["mlorch.error"] = truncate(scrub(error), MAX_TAG)
            self.store.heartbeat.remove(run_id)
            self.bulk.end_run(run_id, _status(frozen), metrics=points, params=params, tags=tag_items(tags))
            return
        self._end_public(run_id, frozen, points, params, tags, error)

    def _end_public(
        self,
        run_id: str,
        frozen: FrozenTrial,
        points: list[tuple[str, float, int, int]],
        params: dict[str, str],
        tags: dict[str, Any],
        error: str | None,
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        from mlorch.tracking.params import tag_items

        with self._buffer_lock:
            buffered = self._points.pop(run_id, [])
        metric_list = buffered + [Metric(*p) for p in points]
        tag_list = [RunTag(k, v) for k, v in tag_items(tags).items()]
        param_list = [Param(k, v) for k, v in params.items()]
        if len(metric_list) <= 1000 and len(tag_list) + len(param_list) <= 100:
            self.store.client.log_batch(run_id, metrics=metric_list, params=param_list, tags=tag_list)
        else:
            self.store.write_points(run_id, metric_list)
            if params:
                self.store.log_params(run_id, frozen.params)
            self.store.set_tags(run_id, tags)
        self.store.end_run(run_id, _status(frozen), error=error)

    def run_for(self, frozen: FrozenTrial) -> str | None:
        """The child run of a trial a dead driver left RUNNING: its own, found by its tags, or made now."""
        if self.bulk is not None:
            self.bulk.wait()  # a run queued earlier in this process is visible before we look
        run_id = frozen.user_attrs.get(RUN_ATTR)
        if run_id and self._exists(run_id):
            return str(run_id)
        found = self._find_run(frozen.number)
        if found is not None:
            return found
        # The driver died before the run was written (or, without bulk writes, before it was created).
        name = f"{self.study_name}-trial-{frozen.number}"
        tags = self._trial_tags(frozen.number, frozen._trial_id)
        return self._create(name, tags, params=frozen.params, run_id=run_id or None)

    def _exists(self, run_id: str) -> bool:
        try:
            self.store.client.get_run(run_id)
        except Exception:
            return False
        return True

    def reconcile(self, study: optuna.Study, metrics: list[str]) -> None:
        """Make every finished trial's run end as the trial did (a dead driver may not have ended or even written it)."""
        if not self.parent_run_id:
            return
        if self.bulk is not None:
            self.bulk.wait()  # runs resume() just queued are in the store before we list them
        runs = {r.data.tags.get("optuna.trial_number"): r for r in self._children()}
        for frozen in study.get_trials(deepcopy=False):
            if not frozen.state.is_finished():
                continue
            run = runs.get(str(frozen.number))
            if run is None:
                if self.bulk is None or not frozen.user_attrs.get(RUN_ATTR):
                    continue  # the trial never had a run
                run_id = self.run_for(frozen)  # queued, never written: write it under the id Optuna has
                self._end_trial(str(run_id), frozen, metrics, frozen.user_attrs.get("mlorch.error"))
                continue
            expected = _status(frozen)
            if run.info.status != expected or run.data.tags.get("optuna.state") != frozen.state.name:
                self._end_trial(run.info.run_id, frozen, metrics, frozen.user_attrs.get("mlorch.error"))

    def _children(self) -> list[Any]:
        query = f"tags.mlflow.parentRunId = '{self.parent_run_id}'"
        exp = self.store.experiment_id(self.experiment)
        return list(self.store.client.search_runs([exp], query, max_results=50000))

    def _find_run(self, number: int) -> str | None:
        if not self.parent_run_id:
            return None
        exp = self.store.experiment_id(self.experiment)
        runs = self.store.client.search_runs(
            [exp], f"tags.mlflow.parentRunId = '{self.parent_run_id}' and tags.`optuna.trial_number` = '{number}'"
        )
        return runs[0].info.run_id if runs else None

    def finish(self, study: optuna.Study, metrics: list[str], status: str = "FINISHED") -> None:
        """Summary of the sweep on the parent run: best trial, plots, trials table, best model."""
        parent = self.parent_run_id
        with tempfile.TemporaryDirectory(prefix="mlorch-sweep-") as tmp:
            # Plots need only the study: draw them while the writers finish the child runs.
            files: list[Path] = []
            multi = len(study.directions) > 1

            def draw() -> None:
                if self._importing is not None:
                    self._importing.join()  # one thread importing a package at a time
                files.extend(_plots(study, Path(tmp), multi))

            drawer = threading.Thread(target=draw, daemon=True)
            if parent is not None:
                drawer.start()
            self.close()  # every child run is ended before the summary reads them
            if parent is None:
                return
            drawer.join()
            try:
                self._summarise(study, metrics, parent, Path(tmp), files)
            except Exception:
                log.exception("sweep tracking: could not write the sweep summary")
        self.store.end_run(parent, status)

    def _summarise(self, study: optuna.Study, metrics: list[str], parent: str, folder: Path, plots: list[Path]) -> None:
        trials = study.get_trials(deepcopy=False)
        counts = {s.name.lower(): sum(1 for t in trials if t.state == s) for s in TrialState}
        self.store.log_metrics(parent, {f"trials_{k}": float(v) for k, v in counts.items() if v})
        multi = len(study.directions) > 1
        best: list[FrozenTrial] = []
        try:
            best = list(study.best_trials) if multi else [study.best_trial]
        except ValueError:
            best = []
        if best and not multi:
            b = best[0]
            name = metrics[0] if metrics else "objective"
            self.store.log_metrics(parent, {f"best_{name}": float(b.value)})  # type: ignore[arg-type]
            self.store.log_params(parent, {f"best.{k}": v for k, v in b.params.items()})
            self.store.set_tags(
                parent,
                {"best_trial": b.number, "best_run_id": b.user_attrs.get(RUN_ATTR, "")},
            )
        table = folder / "trials.csv"
        study.trials_dataframe().to_csv(table, index=False)
        self.store.log_artifact(parent, str(table))
        for file in plots:
            self.store.log_artifact(parent, str(file), "plots")
        if best and not multi:
            self._register_best(best[0])

    def _register_best(self, best: FrozenTrial) -> None:
        """Give the best trial's logged model the registry alias ``best``."""
        run_id = best.user_attrs.get(RUN_ATTR)
        if not run_id:
            return
        client = self.store.client
        outputs = getattr(client.get_run(run_id), "outputs", None)
        model_ids = [o.model_id for o in (getattr(outputs, "model_outputs", None) or [])]
        models = [client.get_logged_model(m) for m in dict.fromkeys(model_ids)]
        for model in models:
            versions = [v for v in client.search_model_versions(f"name='{model.name}'") if v.run_id == run_id]
            if versions:
                version = max(int(v.version) for v in versions)
            else:
                import mlflow
                from mlflow.tracking._tracking_service.utils import _use_tracking_uri

                with _use_tracking_uri(str(self.tracking_uri)):
                    version = int(mlflow.register_model(model.model_uri, model.name, await_registration_for=60).version)
            client.set_registered_model_alias(model.name, "best", str(version))
            client.set_tag(run_id, "mlorch.best_model", f"models:/{model.name}@best")


def _status(frozen: FrozenTrial) -> str:
    """The MLflow status of a finished trial's run."""
    if frozen.user_attrs.get("mlorch.interrupted"):
        return "KILLED"
    return {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "FINISHED"}.get(frozen.state, "FAILED")


def _import_plotting() -> None:
    """Import what the summary plots need while trials run: a cold import of
    ``optuna.importance`` (which loads scikit-learn) costs seconds at the sweep's end."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import optuna.importance  # noqa: F401
        import optuna.visualization.matplotlib  # noqa: F401
    except Exception as exc:  # the summary reports what it cannot draw
        log.debug("could not import the plotting libraries: %s", exc)


def _plots(study: optuna.Study, folder: Path, multi: bool) -> list[Path]:
    """Optuna's own plots as PNGs (matplotlib backend; no browser, no plotly)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    out: list[Path] = []
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    plots: list[tuple[str, Callable[[], Any]]] = []
    if multi:
        plots.append(("pareto_front.png", lambda: ovm.plot_pareto_front(study)))
    else:
        plots.append(("optimization_history.png", lambda: ovm.plot_optimization_history(study)))
        if len(complete) >= 2 and len({k for t in complete for k in t.params}) >= 1:
            plots.append(("param_importances.png", lambda: _importances(study, ovm)))
        if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
            plots.append(("intermediate_values.png", lambda: ovm.plot_intermediate_values(study)))
    import warnings

    for name, make in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = make()
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                path = folder / name
                fig.savefig(path, dpi=80, bbox_inches="tight")
            plt.close(fig)
            out.append(path)
        except Exception as exc:  # e.g. importances need >1 distinct value per parameter
            log.info("sweep plot %s skipped: %s: %s", name, type(exc).__name__, exc)
    return out


def _importances(study: optuna.Study, ovm: Any) -> Any:
    """Parameter importances; PED-ANOVA (milliseconds) before fANOVA (seconds with 64 trees)."""
    try:
        return ovm.plot_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    except Exception:
        return ovm.plot_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(n_trees=16))
