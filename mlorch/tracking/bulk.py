"""Many small MLflow runs, written in one SQL transaction per batch instead of ~8 per run.

Through MLflow's public API a run costs 30-38 ms on SQLite (``benchmarks/bench_store.py``):
``create_run``, ``log_batch`` and ``set_terminated`` are ~8 commits and ~60 statements through the ORM.
A sweep of short trials is bound by that, not by the cluster. For SQL stores (MLflow's
``SqlAlchemyStore``: SQLite, PostgreSQL, MySQL) :class:`BulkRuns` queues run writes,
and one thread commits everything queued in a single transaction of ``executemany``
inserts into MLflow's own tables, through MLflow's own models and session maker:
1-6 ms per run (1 to 16 runs per transaction). A run started and ended within one batch is inserted once, ended.

The rows are the ones ``create_run``/``log_batch``/``update_run_info`` write (the
``mlflow.runName`` tag, the artifact URI, ``latest_metrics``; ``bulk_sql.py``); tests read
them back through ``MlflowClient`` and the MLflow UI. :func:`open_bulk` returns None for
other stores (an ``http://`` server) or a schema whose run table this module does not
know; callers then use the public API. A batch that fails is retried run by run, each
part through the public API where one exists. In a long sweep the SQL work moves to a
child process (``bulk_process.py``); this module keeps the queue and its order.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from mlorch.names import RUN_NAME_TAG, USER_TAG
from mlorch.tracking.bulk_process import WriterProcess
from mlorch.tracking.bulk_sql import PendingRun, SqlBatches
from mlorch.tracking.mlflow_private import sql_models, sql_store

__all__ = ["BulkRuns", "open_bulk"]

log = logging.getLogger("mlorch.tracking")

# Columns of MLflow's ``runs`` table this module fills; any other column must be optional.
_RUN_COLUMNS = {
    "run_uuid",
    "name",
    "source_type",
    "source_name",
    "entry_point_name",
    "user_id",
    "status",
    "start_time",
    "end_time",
    "deleted_time",
    "source_version",
    "lifecycle_stage",
    "artifact_uri",
    "experiment_id",
}
# How long a batch gathers writes before it commits (unless someone waits for it): a run
# that lives less than this is inserted once, ended, and fewer transactions hold the lock.
LINGER = 0.2
# Runs queued before the SQL work moves to the writer process: a short sweep is not worth a
# process (its start imports MLflow, ~1.5 s of a core); a long one of short trials is.
PROCESS_AFTER_RUNS = 100


def open_bulk(client: Any, tracking_uri: str | None = None) -> BulkRuns | None:
    """A :class:`BulkRuns` for ``client``'s store, or None when that store is not one it can write.
    With ``tracking_uri`` (the same store's), long sweeps' writes move to a child process."""
    store = sql_store(client)
    if store is None:
        return None
    columns = sql_models().SqlRun.__table__.columns
    unknown = [c.name for c in columns if c.name not in _RUN_COLUMNS and not c.nullable and c.default is None]
    if not _RUN_COLUMNS <= set(columns.keys()) or unknown:
        log.info("MLflow's run table has columns mlorch does not fill (%s): writing runs one by one", unknown)
        return None
    return BulkRuns(client, store, tracking_uri)


class BulkRuns:
    """Queues run writes; one daemon thread commits each batch (see the module docstring)."""

    def __init__(self, client: Any, sql_store: Any, tracking_uri: str | None = None):
        self.client = client
        self._batches = SqlBatches(client, sql_store)
        # Long sweeps: the SQL work moves to a child process (bulk_process.py); None: always here.
        self._process = None if tracking_uri is None else WriterProcess(tracking_uri)
        self._runs = 0  # runs queued so far (the child starts once a sweep is long enough)
        self._cond = threading.Condition()
        self._pending: dict[str, PendingRun] = {}
        self._queued = 0  # writes accepted so far
        self._committed = 0  # writes whose batch has been committed (or given up on)
        self._closing = False
        self._urgent = False  # someone waits: commit without lingering
        self._stopped = False  # the thread is gone: callers write themselves
        self._writing = threading.Lock()  # one batch at a time, from taking it to counting it committed
        self._locations: dict[str, str] = {}
        self._thread = threading.Thread(target=self._loop, name="mlorch-bulk-runs", daemon=True)
        self._thread.start()

    # -- queueing -----------------------------------------------------------------------
    def start_run(
        self, experiment_id: str, name: str, tags: Mapping[str, str], start_time: int | None = None, run_id: str | None = None
    ) -> str:
        """A new RUNNING run's id, at once (``run_id``: an id handed out before but never written)."""
        from mlflow.utils.uri import append_to_uri_path

        run_id = run_id or uuid.uuid4().hex
        location = self._artifact_location(experiment_id)
        row = {
            "run_uuid": run_id,
            "name": name,
            "source_type": "UNKNOWN",
            "source_name": "",
            "entry_point_name": "",
            "user_id": tags.get(USER_TAG, "unknown"),
            "status": "RUNNING",
            "start_time": start_time or _now(),
            "end_time": None,
            "deleted_time": None,
            "source_version": "",
            "lifecycle_stage": "active",
            "artifact_uri": append_to_uri_path(location, run_id, "artifacts"),
            "experiment_id": int(experiment_id),
        }
        with self._cond:
            pending = self._entry(run_id)
            pending.row = row
            pending.tags.update({**tags, RUN_NAME_TAG: name})
            self._runs += 1
        self._after_queueing()
        return run_id

    def log(
        self,
        run_id: str,
        metrics: Iterable[tuple[str, float, int, int]] = (),
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Queue metric points ``(key, value, timestamp_ms, step)``, params and tags for ``run_id``."""
        with self._cond:
            self._add(run_id, metrics, params, tags)
        self._after_queueing()

    def end_run(
        self,
        run_id: str,
        status: str,
        end_time: int | None = None,
        metrics: Iterable[tuple[str, float, int, int]] = (),
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Queue the run's last data (as :meth:`log`) and its terminal status."""
        with self._cond:
            pending = self._add(run_id, metrics, params, tags)
            pending.status, pending.end_time = status, end_time or _now()
        self._after_queueing()

    def _add(
        self,
        run_id: str,
        metrics: Iterable[tuple[str, float, int, int]],
        params: Mapping[str, str] | None,
        tags: Mapping[str, str] | None,
    ) -> PendingRun:
        pending = self._entry(run_id)
        pending.metrics.extend(metrics)
        for key, value in (params or {}).items():  # MLflow params are write-once: the first value stays
            if pending.params.setdefault(key, value) != value:
                log.warning("tracking: run %s: param %r is already %r; %r not logged", run_id, key, pending.params[key], value)
        pending.tags.update(tags or {})
        return pending

    def _entry(self, run_id: str) -> PendingRun:
        pending = self._pending.get(run_id)
        if pending is None:
            pending = self._pending[run_id] = PendingRun(run_id)
        self._queued += 1
        self._cond.notify_all()
        return pending

    def _after_queueing(self) -> None:
        """Once the thread has stopped (closed, or the process is exiting), writes are made here and now."""
        if self._stopped:
            self._write_pending()

    def wait(self, timeout: float | None = 120) -> bool:
        """Return when every write queued so far is committed (or given up on, logged); False on timeout."""
        if self._stopped:
            self._write_pending()
        with self._cond:
            target = self._queued
            self._urgent = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._committed >= target, timeout)

    def close(self, timeout: float | None = 120) -> None:
        """Commit what is queued and stop the thread; later writes are made by their callers."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._process is not None:
            self._process.close()

    # -- the writer thread ----------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._pending or self._closing)
                    if not self._pending:
                        self._stopped = True  # under the lock: a write queued after this is made by its caller
                        return
                    self._cond.wait_for(lambda: self._urgent or self._closing, timeout=LINGER)
                self._write_pending()
        except BaseException:
            log.exception("tracking: the batched run writer stopped")
            with self._cond:
                self._stopped = True
            raise

    def _write_pending(self) -> None:
        """Write what is queued. One writer at a time, so writes land in the order they were queued
        and a caller whose writes another thread took waits here until they are committed."""
        with self._writing:
            with self._cond:
                batch, self._pending = list(self._pending.values()), {}
                self._urgent = False
                upto = self._queued
            if batch:
                self._write_batch(batch)
            with self._cond:
                self._committed = max(self._committed, upto)
                self._cond.notify_all()

    def _write_batch(self, batch: list[PendingRun]) -> None:
        """Commit ``batch`` (logs and falls back on errors; raises only on BaseException): in the
        writer process once the sweep is long enough and the process is up, else here."""
        process = self._process
        if process is not None and self._runs >= PROCESS_AFTER_RUNS and process.write(batch):
            return
        self._batches.write(batch)

    def _artifact_location(self, experiment_id: str) -> str:
        location = self._locations.get(experiment_id)
        if location is None:
            location = self._locations[experiment_id] = self.client.get_experiment(experiment_id).artifact_location
        return location


def _now() -> int:
    return int(time.time() * 1000)
