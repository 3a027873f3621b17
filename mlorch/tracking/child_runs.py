"""Writing a sweep's child runs without holding up its ask/tell loop: two writers, one interface.

:class:`BulkChildRuns` (SQL stores) queues every write to ``RunStore.bulk`` (batched
SQL, see :mod:`mlorch.tracking.bulk`): creating a run is free, so an objective trial
gets its run when it starts. :class:`PublicChildRuns` (an ``http://`` server, any
other store) uses MLflow's public API on two writer threads and buffers intermediate
values for a second; creating a run costs a round trip, so an objective trial's run is
made when it ends, with its final tags. :func:`child_runs` picks one for a store.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from mlorch.names import ERROR_TAG, PARENT_RUN_TAG
from mlorch.tracking.bulk import BulkRuns
from mlorch.tracking.limits import MAX_TAG, METRICS_PER_REQUEST, PARAMS_TAGS_PER_REQUEST
from mlorch.tracking.liveness import owner_tags
from mlorch.tracking.params import param_items, tag_items, truncate
from mlorch.tracking.secrets import scrub
from mlorch.tracking.store import RunStore

__all__ = ["BulkChildRuns", "ChildRuns", "Point", "PublicChildRuns", "child_runs"]

log = logging.getLogger("mlorch.sweep")
Point = tuple[str, float, int, int]  # (metric, value, timestamp ms, step)
WRITERS = 2  # public API threads: one's fsync overlaps with the other's ORM work


class ChildRuns(Protocol):
    """How a sweep's tracker writes child runs (see the module docstring for the two kinds)."""

    queues_runs: bool  # True where creating a run costs nothing (it is queued)

    def create(
        self,
        experiment: str,
        parent_run_id: str,
        name: str,
        tags: Mapping[str, Any],
        params: Mapping[str, Any] | None = None,
        wait: bool = False,
        run_id: str | None = None,
    ) -> str: ...
    def report(self, run_id: str, metric: str, value: float, step: int) -> None: ...
    def end(
        self, run_id: str, status: str, points: list[Point], params: Mapping[str, str], tags: Mapping[str, Any], error: str | None
    ) -> None: ...
    def later(self, job: Callable[[], None]) -> None: ...
    def settle(self) -> None: ...
    def close(self) -> None: ...


def child_runs(store: RunStore) -> ChildRuns:
    bulk = store.bulk
    return BulkChildRuns(store, bulk) if bulk is not None else PublicChildRuns(store)


def _run(job: Callable[[], None]) -> None:
    try:
        job()
    except Exception:  # tracking must never stop a sweep
        log.exception("sweep tracking: a write failed")


class BulkChildRuns:
    queues_runs = True

    def __init__(self, store: RunStore, bulk: BulkRuns):
        self.store, self.bulk = store, bulk

    def create(
        self,
        experiment: str,
        parent_run_id: str,
        name: str,
        tags: Mapping[str, Any],
        params: Mapping[str, Any] | None = None,
        wait: bool = False,
        run_id: str | None = None,
    ) -> str:
        all_tags = {**tag_items(tags), **owner_tags(), PARENT_RUN_TAG: parent_run_id}
        run_id = self.bulk.start_run(self.store.experiment_id(experiment), name, all_tags, run_id=run_id)
        if params:
            self.bulk.log(run_id, params=param_items(params))
        self.store.heartbeat.add(run_id)
        if wait:
            self.bulk.wait()
        return run_id

    def report(self, run_id: str, metric: str, value: float, step: int) -> None:
        self.bulk.log(run_id, metrics=[(metric, value, int(time.time() * 1000), step)])

    def end(
        self, run_id: str, status: str, points: list[Point], params: Mapping[str, str], tags: Mapping[str, Any], error: str | None
    ) -> None:
        all_tags = dict(tags)
        if error:
            all_tags[ERROR_TAG] = truncate(scrub(error), MAX_TAG)
        self.store.heartbeat.remove(run_id)
        self.bulk.end_run(run_id, status, metrics=points, params=params, tags=tag_items(all_tags))

    def later(self, job: Callable[[], None]) -> None:
        _run(job)  # queueing is cheap: no thread hop

    def settle(self) -> None:
        """Runs queued so far are in the store (before searching it)."""
        self.bulk.wait()

    def close(self) -> None:
        if not self.bulk.wait():
            log.warning("sweep tracking: child runs were still being written after 120 s")


class PublicChildRuns:
    queues_runs = False

    def __init__(self, store: RunStore):
        self.store = store
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._points: dict[str, list[Any]] = {}
        self._flushed = 0.0
        self._threads = [
            threading.Thread(target=self._work, name=f"mlorch-sweep-tracking-{i}", daemon=True) for i in range(WRITERS)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            _run(job)

    def create(
        self,
        experiment: str,
        parent_run_id: str,
        name: str,
        tags: Mapping[str, Any],
        params: Mapping[str, Any] | None = None,
        wait: bool = False,
        run_id: str | None = None,
    ) -> str:
        return self.store.create_run(experiment, name, params=params, tags=tags, parent_run_id=parent_run_id)

    def report(self, run_id: str, metric: str, value: float, step: int) -> None:
        """Buffered; written every second and at the trial's end."""
        from mlflow.entities import Metric

        with self._lock:
            self._points.setdefault(run_id, []).append(Metric(metric, value, int(time.time() * 1000), step))
            due = time.monotonic() - self._flushed > 1.0
        if due:
            self._flushed = time.monotonic()
            self.later(self._write_points)

    def _write_points(self) -> None:
        with self._lock:
            batches, self._points = self._points, {}
        for run_id, points in batches.items():
            self.store.write_points(run_id, points)

    def end(
        self, run_id: str, status: str, points: list[Point], params: Mapping[str, str], tags: Mapping[str, Any], error: str | None
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        with self._lock:
            buffered = self._points.pop(run_id, [])
        metric_list = buffered + [Metric(*p) for p in points]
        tag_list = [RunTag(k, v) for k, v in tag_items(tags).items()]
        param_list = [Param(k, v) for k, v in params.items()]
        if len(metric_list) <= METRICS_PER_REQUEST and len(tag_list) + len(param_list) <= PARAMS_TAGS_PER_REQUEST:
            self.store.client.log_batch(run_id, metrics=metric_list, params=param_list, tags=tag_list)
        else:
            self.store.write_points(run_id, metric_list)
            self.store.log_params(run_id, params)
            self.store.set_tags(run_id, tags)
        self.store.end_run(run_id, status, error=error)

    def later(self, job: Callable[[], None]) -> None:
        self._queue.put(job)

    def settle(self) -> None:
        """Runs are created synchronously: nothing to wait for."""

    def close(self) -> None:
        """Every write so far is in the store when this returns."""
        alive = [t for t in self._threads if t.is_alive()]
        for _ in alive:
            self._queue.put(None)
        for thread in alive:
            thread.join()
