"""The run hook: one MLflow run per flow run, always ended in the right state.

``on_run_start`` opens the store, creates the run (:class:`SweepTrialHook` instead
fills the child run a sweep's tracker made for the trial), logs the flow's parameters, the
reproducibility tags and the resolved config, and puts the run id and store URI in
``run.info`` for the tasks. ``on_run_end`` waits for every task event (the flush
barrier), then ends the run: FINISHED; FAILED with the error and failing task;
FAILED with ``mlorch.worker_died`` when a worker died under a task; KILLED on
Ctrl-C or SIGTERM (a SIGTERM handler turns the signal into ``DriverTerminated``
while a run is active in the main thread; the previous handler comes back after).
A sweep trial's run gets the same tags but is left for the sweep's tracker to end.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import signal
import threading
import time
import traceback
from collections.abc import Mapping
from typing import Any

from mlorch.errors import causes
from mlorch.execution.runner import FlowRun
from mlorch.names import (
    FAILED_TASK_TAG,
    FLOW_RUN_TAG,
    FLOW_TAG,
    GPUS_USED_TAG,
    KILLED_REASON_TAG,
    RUN_ID_INFO,
    TRACKING_URI_INFO,
    WORKER_DIED_TAG,
)
from mlorch.tracking import emit, sink
from mlorch.tracking.params import to_text
from mlorch.tracking.repro import repro_tags
from mlorch.tracking.secrets import MASK, Secret, mask, scrub
from mlorch.tracking.store import RunStore

__all__ = ["DriverTerminated", "SweepTrialHook", "TrackingHook"]

log = logging.getLogger("mlorch.tracking")


class DriverTerminated(KeyboardInterrupt):
    """SIGTERM reached the driver while a tracked run was active."""


# -- SIGTERM: installed while at least one tracked run is active in the main thread --
_sig_lock = threading.Lock()
_sig_depth = 0
_sig_previous: Any = None
_finishing = 0  # runs being ended: a SIGTERM now is deferred so the run still gets its state
_sig_pending = False


def _on_sigterm(signum: int, frame: Any) -> None:
    global _sig_pending
    if _finishing:
        _sig_pending = True
        return
    raise DriverTerminated(f"signal {signum} (SIGTERM)")


def _install_sigterm() -> bool:
    global _sig_depth, _sig_previous
    if threading.current_thread() is not threading.main_thread():
        return False
    with _sig_lock:
        if _sig_depth == 0:
            _sig_previous = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, _on_sigterm)
        _sig_depth += 1
    return True


def _restore_sigterm() -> None:
    global _sig_depth, _sig_pending
    with _sig_lock:
        _sig_depth -= 1
        if _sig_depth == 0:
            signal.signal(signal.SIGTERM, _sig_previous if _sig_previous is not None else signal.SIG_DFL)
            if _sig_pending:
                _sig_pending = False
                raise DriverTerminated("SIGTERM received while ending a run")


def _masked_tree(value: Any, name: str = "") -> Any:
    """A YAML-safe copy of the params with secrets masked (for the config artifact)."""
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, dict):
        return {str(k): _masked_tree(v, f"{name}.{k}" if name else str(k)) for k, v in value.items()}
    masked = mask(name, value) if name else value
    if masked == MASK:
        return MASK
    if isinstance(value, (list, tuple)):
        return [_masked_tree(v, name) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return to_text(value)


def returned_numbers(result: Any, prefix: str = "") -> dict[str, float]:
    """The finite numbers a flow returned, as metric names: a number is ``result``, a dict's
    entries go by key (nested dicts as ``a.b``); booleans and anything else are left out."""
    if isinstance(result, Mapping):
        out: dict[str, float] = {}
        for key, value in result.items():
            out.update(returned_numbers(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}"))
        return out
    if isinstance(result, bool) or not isinstance(result, numbers.Real):
        return {}
    value = float(result)
    return {prefix or "result": value} if math.isfinite(value) else {}


def _worker_died(error: BaseException | None) -> bool:
    from distributed.scheduler import KilledWorker

    return any(isinstance(e, KilledWorker) for e in causes(error))


class TrackingHook:
    """Records a flow run in an MLflow run of its own, which it creates and ends (one per flow run)."""

    def __init__(self, run: FlowRun):
        self.run = run
        self.store: RunStore | None = None
        self.run_id: str | None = None
        self.signals = False
        self.target: emit.Target | None = None
        self.logged: dict[str, float] = {}  # the numbers the flow returned, logged as metrics
        self.leave: set[str] = set()  # returned names another writer records (a sweep's target metric)
        self.present: set[str] = set()  # every metric the run holds once it ended (tasks' and returned)

    def _open(self, store: RunStore, run: FlowRun) -> str:
        return store.create_run(run.flow.experiment, f"{run.flow.name}-{time.strftime('%Y%m%d-%H%M%S')}")

    def _close(self, store: RunStore, run_id: str, status: str, message: str | None) -> None:
        store.end_run(run_id, status, message)

    def on_run_start(self, run: FlowRun) -> None:
        flow = run.flow
        self.store = store = self.store or RunStore.open(run.info.get(TRACKING_URI_INFO))
        run.info[TRACKING_URI_INFO] = store.tracking_uri
        sink.subscribe(run.cluster.client)
        tags = repro_tags(run.cluster)
        tags.update({FLOW_TAG: flow.name, FLOW_RUN_TAG: run.run_id})
        self.run_id = self._open(store, run)
        run.info[RUN_ID_INFO] = self.run_id
        try:
            store.log_params(self.run_id, dict(run.params))
            store.set_tags(self.run_id, tags)
            store.log_bytes(self.run_id, self._config_yaml(run).encode(), "config.yaml", "mlorch")
        except Exception as exc:  # the run exists: record what we can, but let the flow run
            log.warning("tracking: could not record the parameters of run %s: %s: %s", self.run_id, type(exc).__name__, exc)
        self.target = (store.tracking_uri, self.run_id)
        emit.push_driver_target(self.target)
        self.signals = _install_sigterm()
        # One line for a flow run of its own; a sweep's trials say nothing each (the sweep's bar speaks).
        level = logging.DEBUG if isinstance(self, SweepTrialHook) else logging.INFO
        log.log(level, "tracking run %s in experiment '%s' (%s)", self.run_id, flow.experiment, store.tracking_uri)

    def _config_yaml(self, run: FlowRun) -> str:
        import yaml

        cluster = run.cluster
        try:
            workers = cluster.worker_resources()
        except Exception:
            workers = []
        config = {
            "flow": run.flow.name,
            "experiment": run.flow.experiment,
            "params": _masked_tree(dict(run.params)),
            "cluster": {
                "kind": cluster.kind,
                "n_workers": len(workers),
                "gpu_ids": list(cluster.gpu_ids),
                "worker_resources": workers,
            },
        }
        return scrub(yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=False))

    def on_run_end(self, run: FlowRun, result: Any, error: BaseException | None) -> None:
        store, run_id = self.store, self.run_id
        if store is None or run_id is None:
            return
        global _finishing
        with _sig_lock:  # sweep threads end runs concurrently: keep the count exact
            _finishing += 1
        try:
            self._finish(run, store, run_id, error, result)
        except Exception as exc:  # never hide the flow's own error behind a tracking one
            log.warning("tracking: could not end run %s cleanly: %s: %s", run_id, type(exc).__name__, exc)
        finally:
            with _sig_lock:
                _finishing -= 1
            if self.target is not None:
                emit.pop_driver_target(self.target)
            if self.signals:
                _restore_sigterm()

    def _log_returned(self, store: RunStore, run_id: str, result: Any, tasks_logged: set[str]) -> None:
        """The numbers the flow returned, as metrics, unless its tasks logged a metric of that name (their
        history stays theirs) or it is one left to someone else (a sweep's target metric). Runs after the
        flush barrier, so ``tasks_logged`` (kept by the store's writer, no query) is complete."""
        numbers = returned_numbers(result)
        self.logged = {k: v for k, v in numbers.items() if k not in tasks_logged and k not in self.leave}
        self.present = tasks_logged | set(self.logged)
        if self.logged:
            store.log_metrics(run_id, self.logged)

    def _finish(self, run: FlowRun, store: RunStore, run_id: str, error: BaseException | None, result: Any = None) -> None:
        interrupted = isinstance(error, KeyboardInterrupt)
        emit.flush(run_id)  # points the flow body logged in this process
        sink.barrier(run.cluster.client, run_id, timeout=5.0 if interrupted else 60.0)
        store.flush()
        tags: dict[str, str] = {}
        gpus = store.gpus_used.pop(run_id, None)
        if gpus:
            tags[GPUS_USED_TAG] = ",".join(str(g) for g in sorted(gpus))
        status, message = "FINISHED", None
        if error is not None:
            status = "KILLED" if interrupted else "FAILED"
            message = f"{type(error).__name__}: {error}"
            if run.failed_task:
                tags[FAILED_TASK_TAG] = run.failed_task
            if _worker_died(error):
                tags[WORKER_DIED_TAG] = "true"
                message = f"a worker died while running task {run.failed_task or '?'}: {message}"
            if interrupted:
                tags[KILLED_REASON_TAG] = "SIGTERM" if isinstance(error, DriverTerminated) else "KeyboardInterrupt (Ctrl-C)"
            else:
                trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
                store.log_bytes(run_id, scrub(trace).encode(), "error.txt", "mlorch")
        if tags:
            store.set_tags(run_id, tags)
        tasks_logged = store.metric_keys.pop(run_id, set())
        if error is None:
            try:
                self._log_returned(store, run_id, result, tasks_logged)
            except Exception as exc:  # the run still ends in its state
                log.warning("tracking: could not log the numbers run %s returned: %s", run_id, exc)
        self._close(store, run_id, status, message)


class SweepTrialHook(TrackingHook):
    """Fills a sweep trial's child run: the sweep's tracker created it and ends it with the trial's state."""

    def __init__(self, store: RunStore, run_id: str, leave: set[str] | None = None):
        self.store, self.fixed_run_id = store, run_id
        self.run_id, self.signals, self.target = None, False, None
        self.logged, self.present = {}, set()
        self.leave = leave if leave is not None else set()

    def _open(self, store: RunStore, run: FlowRun) -> str:
        return self.fixed_run_id

    def _close(self, store: RunStore, run_id: str, status: str, message: str | None) -> None:
        """Nothing: the tracker ends the run, with the trial's error."""
