"""``RunStore``: the one place in a process that writes to MLflow.

Driver code (the run hook, sweeps) calls it directly; events from tasks reach it
through ``sink.subscribe`` and are written by one background thread per store, which
batches metrics into ``log_batch`` requests of at most 1000 points. Workers never
open the store, so it works when they cannot see the SQLite file (HPC) and there
is never a second writer to lock the database.

Where the store is: the ``tracking_uri`` argument, else ``MLFLOW_TRACKING_URI``,
else :func:`configure`'s URI, else ``sqlite:///<project home>/mlflow.db``. Artifacts
of SQLite stores live beside the database (``<dir>/mlartifacts/<experiment>``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlorch.environment import QUIET_ENV
from mlorch.errors import ConfigError, preview
from mlorch.log import quieted
from mlorch.names import ERROR_TAG, EXPERIMENT_KIND_TAG, PARENT_RUN_TAG, TRAINING_KIND
from mlorch.project import home
from mlorch.tracking.bulk import BulkRuns, open_bulk
from mlorch.tracking.limits import MAX_TAG, METRICS_PER_REQUEST, PARAMS_TAGS_PER_REQUEST, chunks, retry_busy
from mlorch.tracking.liveness import Heartbeat, owner_tags, reap_orphans
from mlorch.tracking.params import param_items, tag_items, truncate
from mlorch.tracking.secrets import scrub
from mlorch.tracking.writer import write_forever
from mlorch.uris import sqlite_path

if TYPE_CHECKING:
    from distributed import Client
    from mlflow import MlflowClient


__all__ = ["RunStore", "check_tracking_uri", "configure", "resolve_uri"]

log = logging.getLogger("mlorch.tracking")
STATUSES = ("FINISHED", "FAILED", "KILLED")
_configured_uri: str | None = None
_stores: dict[str, RunStore] = {}
_open_lock = threading.Lock()


def configure(tracking_uri: str | None = None) -> None:
    """Set the store used when neither an argument nor ``MLFLOW_TRACKING_URI`` names one."""
    global _configured_uri
    _configured_uri = tracking_uri


TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks")


def check_tracking_uri(tracking_uri: str | None = None) -> str:
    """The resolved tracking URI if MLflow can open its kind of store; else a ConfigError naming it."""
    uri = resolve_uri(tracking_uri)
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else uri.split(":", 1)[0]
    if scheme not in TRACKING_SCHEMES:
        raise ConfigError(
            f"tracking_uri: {preview(uri)} is not a store MLflow opens (scheme {preview(scheme, 30)}; "
            f"known: {', '.join(TRACKING_SCHEMES)}, or a folder path)"
        )
    return uri


def resolve_uri(tracking_uri: str | None = None) -> str:
    """Argument > ``MLFLOW_TRACKING_URI`` > :func:`configure` > the project's SQLite file."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or _configured_uri
    if uri:
        if "://" not in uri and not uri.startswith("sqlite:"):  # a plain folder or file path
            path = Path(uri).resolve()
            uri = f"sqlite:///{path if path.suffix == '.db' else path / 'mlflow.db'}"
        return uri

    return f"sqlite:///{home() / 'mlflow.db'}"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise first-time creation of a SQLite store across processes (parallel creation corrupts it)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class RunStore:
    """One MLflow tracking store, opened once per process per URI (see module docs)."""

    def __init__(self, tracking_uri: str, client: MlflowClient):
        self.tracking_uri = tracking_uri
        self.client = client
        self.artifact_root: Path | None = None
        db = sqlite_path(tracking_uri)
        if db is not None:
            self.artifact_root = db.parent / "mlartifacts"
        self.gpus_used: dict[str, set[int]] = {}
        self.metric_keys: dict[str, set[str]] = {}  # run -> metrics its tasks logged (the writer fills it)
        self._experiments: dict[str, str] = {}
        self._queue: queue.Queue[Any] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._bulk: BulkRuns | None | bool = False  # False: not opened yet

        self.heartbeat = Heartbeat(self)

    # -- opening --------------------------------------------------------------------
    @classmethod
    def opened(cls, tracking_uri: str | None = None) -> RunStore | None:
        """The store for ``tracking_uri`` if this process has opened it already (never blocks on I/O)."""
        return _stores.get(tracking_uri or "") or _stores.get(resolve_uri(tracking_uri))

    @classmethod
    def open(cls, tracking_uri: str | None = None) -> RunStore:
        """The store for ``tracking_uri`` (see :func:`resolve_uri`), created and checked on first use.

        Opening a store for the first time in a process also ends runs left RUNNING by a
        driver that died (SIGKILL, power loss): they are marked KILLED.
        """
        uri = resolve_uri(tracking_uri)
        with _open_lock:
            store = _stores.get(uri)
            if store is None:
                check_tracking_uri(uri)  # a ConfigError naming the URI, not MLflow's own traceback
                store = cls._create(uri)
                _stores[uri] = store
        return store

    @classmethod
    def _create(cls, uri: str) -> RunStore:

        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)
        from mlflow import MlflowClient

        db = sqlite_path(uri)
        lock = _file_lock(db) if db is not None else contextlib.nullcontext()
        with lock, quieted("mlflow.store.db.utils", "alembic"):
            # MLflow creates and migrates the database when the client opens its store: once, under the lock.
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_experiments(max_results=1)
        store = cls(uri, client)

        try:
            reap_orphans(store)
        except Exception as exc:  # never block a run because clean-up failed
            log.warning("could not check for orphaned runs: %s: %s", type(exc).__name__, exc)
        return store

    # -- runs -----------------------------------------------------------------------
    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created (with artifacts beside a SQLite store) if missing."""
        if name in self._experiments:
            return self._experiments[name]
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            location = None
            if self.artifact_root is not None:
                safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
                location = (self.artifact_root / safe).as_uri()
            try:
                tags = {EXPERIMENT_KIND_TAG: TRAINING_KIND}  # the UI files it under model training
                exp_id = self.client.create_experiment(name, artifact_location=location, tags=tags)
            except Exception:  # created meanwhile by another process
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            exp_id = exp.experiment_id
        self._experiments[name] = exp_id
        return exp_id

    def create_run(
        self,
        experiment: str,
        run_name: str | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
    ) -> str:
        """Start a RUNNING run (heartbeated until :meth:`end_run`); returns its id."""

        all_tags = {**tag_items(tags or {}), **owner_tags()}
        if parent_run_id:
            all_tags[PARENT_RUN_TAG] = parent_run_id
        run = retry_busy(
            lambda: self.client.create_run(self.experiment_id(experiment), run_name=run_name, tags=all_tags),
            "create_run",
        )
        run_id = run.info.run_id
        self.heartbeat.add(run_id)
        if params:
            self.log_params(run_id, params)
        return run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Flattened, secrets masked, long values truncated; 100 per request."""
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in param_items(params).items()]
        for chunk in chunks(items, PARAMS_TAGS_PER_REQUEST):
            retry_busy(lambda: self.client.log_batch(run_id, params=chunk), "log_params")

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.write_points(run_id, [Metric(k, float(v), now, int(step or 0)) for k, v in metrics.items()])

    def write_points(self, run_id: str, metrics: list[Any]) -> None:
        """``mlflow.entities.Metric`` objects, as many per request as MLflow takes."""
        for chunk in chunks(metrics, METRICS_PER_REQUEST):
            retry_busy(lambda: self.client.log_batch(run_id, metrics=chunk), "log_metrics")

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, v) for k, v in tag_items(tags).items()]
        for chunk in chunks(items, PARAMS_TAGS_PER_REQUEST):
            retry_busy(lambda: self.client.log_batch(run_id, tags=chunk), "set_tags")

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        """Upload a file, or a folder's files under its name; text files are scrubbed of known secrets."""
        path = Path(local_path)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                rel = file.parent.relative_to(path).as_posix()
                sub = "/".join(p for p in (artifact_path, path.name, None if rel == "." else rel) if p)
                self.log_artifact(run_id, str(file), sub)
            return
        if not path.is_file():
            raise FileNotFoundError(f"log_artifact: {path} does not exist")
        with _scrubbed(path) as upload:
            retry_busy(lambda: self.client.log_artifact(run_id, str(upload), artifact_path), "log_artifact")

    def log_bytes(self, run_id: str, data: bytes, name: str, artifact_path: str | None = None) -> None:
        with tempfile.TemporaryDirectory(prefix="mlorch-art-") as tmp:
            file = Path(tmp) / name
            file.write_bytes(data)
            self.log_artifact(run_id, str(file), artifact_path)

    def end_run(self, run_id: str, status: str = "FINISHED", error: str | None = None) -> None:
        """Write what is pending for it, then set the terminal status (and the error as a tag)."""
        if status not in STATUSES:
            raise ValueError(f"end_run: status must be one of {', '.join(STATUSES)}, got {status!r}")
        self.flush()
        self.heartbeat.remove(run_id)
        if error:
            self.set_tags(run_id, {ERROR_TAG: truncate(scrub(error), MAX_TAG)})
        retry_busy(lambda: self.client.set_terminated(run_id, status), "end_run")

    @property
    def bulk(self) -> BulkRuns | None:
        """Batched writes of many small runs (SQL stores, see ``bulk``); None where only the public API works."""
        with self._writer_lock:
            if self._bulk is False:
                self._bulk = open_bulk(self.client, self.tracking_uri)
                if self._bulk is not None:
                    import atexit

                    atexit.register(self._bulk.close)  # what is queued is written before the process exits
            return self._bulk  # type: ignore[return-value]

    # -- registry -------------------------------------------------------------------
    def set_model_alias(self, name: str, alias: str, version: int | str | None = None) -> int:
        if version is None:
            versions = self.client.search_model_versions(f"name='{name}'")
            if not versions:
                raise ValueError(f"set_model_alias: registered model {name!r} has no versions in {self.tracking_uri}")
            version = max(int(v.version) for v in versions)
        self.client.set_registered_model_alias(name, alias, str(version))
        return int(version)

    # -- events from tasks ------------------------------------------------------------
    def enqueue(self, msg: dict[str, Any], client: Client | None = None) -> None:
        """Queue an event for the writer thread (never blocks the caller's event loop)."""
        self._queue.put((msg, client))
        if self._writer is None or not self._writer.is_alive():
            with self._writer_lock:
                if self._writer is None or not self._writer.is_alive():
                    self._writer = threading.Thread(
                        target=write_forever, args=(self, self._queue), name="mlorch-track-writer", daemon=True
                    )
                    self._writer.start()

    def flush(self, timeout: float | None = 120) -> None:
        """Return when every event received so far is written."""
        if self._writer is None or not self._writer.is_alive():
            if self._queue.empty():
                return
        done = threading.Event()
        self.enqueue({"kind": "_flush", "done": done})
        if not done.wait(timeout):
            log.warning("tracking writer did not catch up within %s s", timeout)


@contextlib.contextmanager
def _scrubbed(path: Path) -> Iterator[Path]:
    """``path``, or a copy with known secrets masked when it is a text file that contains one."""
    if path.is_file() and path.stat().st_size < 16 << 20:
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and scrub(text) != text:
            with tempfile.TemporaryDirectory(prefix="mlorch-scrub-") as tmp:
                copy = Path(tmp) / path.name
                copy.write_text(scrub(text))
                yield copy
                return
    yield path
