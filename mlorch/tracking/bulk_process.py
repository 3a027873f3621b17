"""The SQL work of batched run writes, in a child process of the driver.

In a long sweep of short trials the driver's process is bound by its one GIL (Optuna's
sampler, the journal, the Dask client), and committing the trials' runs (MLflow's
validation, SQLAlchemy, SQLite) is about a tenth of that work
(``benchmarks/bench_objective.py``). :class:`WriterProcess` runs :class:`~mlorch.tracking.bulk_sql.SqlBatches`
for the same store in a child (``execution/children.py``: spawned, the user's script not run
again, gone with the driver). The driver's writer thread still takes each batch from the
queue in order; it sends the batch through a pipe and waits for the child's commit, so
``BulkRuns.wait()`` means what it meant. Until the child is up (it imports MLflow), and if it
ever stops or takes longer than ``WRITE_TIMEOUT`` for a batch, batches are committed in the
driver, as before. A batch the child committed but could not confirm is then written again:
its runs exist already, so that batch is written run by run and the duplicates are logged.
"""

from __future__ import annotations

import logging
import os
import threading
from multiprocessing.connection import Connection
from typing import Any

from mlorch.environment import QUIET_ENV
from mlorch.execution.children import exit_with_parent, spawn_child, stop_child

__all__ = ["WriterProcess"]

log = logging.getLogger("mlorch.tracking")
WRITE_TIMEOUT = 120.0  # seconds for the child to commit one batch before the driver gives it up


class WriterProcess:
    """A child committing batches for one tracking URI. ``write`` and ``close`` may come from
    different threads (the writer thread, a caller after the thread stopped, ``atexit``): one
    at a time, and nothing is sent once closed."""

    def __init__(self, tracking_uri: str):
        self.tracking_uri = tracking_uri
        self.state = "idle"  # idle -> starting -> ready; or broken / closed (never again)
        self._conn: Connection | None = None
        self._process: Any = None
        self._lock = threading.Lock()

    def write(self, batch: list[Any]) -> bool:
        """True once the child has committed ``batch``; False if it cannot (yet): commit it here."""
        with self._lock:
            if self.state == "idle":
                self._start()
                return False
            if self.state == "starting" and not self._ready():
                return False
            conn = self._conn
            if self.state != "ready" or conn is None:
                return False
            try:
                conn.send(batch)
                if not conn.poll(WRITE_TIMEOUT):
                    raise TimeoutError(f"no commit within {WRITE_TIMEOUT:g} s")
                reply = conn.recv()
            except (EOFError, OSError) as exc:  # TimeoutError is an OSError
                self._broken(f"{type(exc).__name__}: {exc}")
                return False
            return bool(reply == "ok")

    def close(self) -> None:
        """Let the child finish and end (a no-op if it never started); later writes are the driver's."""
        with self._lock:
            conn, process = self._conn, self._process
            self._conn = self._process = None
            if self.state in ("starting", "ready") and conn is not None:
                try:
                    conn.send(None)
                except OSError:
                    pass
            self.state = "closed"
        if process is not None:
            stop_child(process)
        if conn is not None:
            conn.close()

    def _start(self) -> None:
        self.state = "starting"
        try:
            self._process, self._conn = spawn_child(_serve, (self.tracking_uri,), "run writer process")
        except Exception as exc:  # noqa: BLE001 - the driver keeps writing itself
            self._broken(f"{type(exc).__name__}: {exc}")

    def _ready(self) -> bool:
        assert self._conn is not None
        try:
            if not self._conn.poll(0):
                return False
            kind, detail = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._broken(f"{type(exc).__name__}: {exc}")
            return False
        if kind != "ready":
            self._broken(str(detail))
            return False
        self.state = "ready"
        return True

    def _broken(self, why: str) -> None:
        """Give the child up (killed if still there); the driver writes from now on."""
        self.state = "broken"
        process, self._process = self._process, None
        if process is not None and process.is_alive():
            process.kill()
        log.warning("tracking: the run writer process stopped (%s); the driver writes runs itself", why)


def _serve(tracking_uri: str, conn: Connection, parent: int) -> None:
    """The child's main: commit each batch it is sent, answer "ok", until told to stop."""
    exit_with_parent(parent)
    os.environ.update(QUIET_ENV)
    from mlorch.log import get_logger

    get_logger("mlorch.tracking")  # the driver's console format for what the child logs
    try:
        from mlflow import MlflowClient

        from mlorch.tracking.bulk_sql import SqlBatches
        from mlorch.tracking.mlflow_private import sql_store

        client = MlflowClient(tracking_uri)
        store = sql_store(client)
        if store is None:
            raise RuntimeError(f"{tracking_uri} is not a SQL store")
        batches = SqlBatches(client, store)
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            batch = conn.recv()
        except EOFError:
            return
        if batch is None:
            return
        batches.write(batch)
        conn.send("ok")
