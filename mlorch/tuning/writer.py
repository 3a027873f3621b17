"""A helper process for the per-trial MLflow writes of large sweeps.

Measured on 2 cores: a child run costs ~35 ms of SQLAlchemy work (create, one
``log_batch``, ``set_terminated``), all under the driver's GIL, next to Optuna and
(for a LocalCluster) the Dask scheduler. Past a few dozen trials that, not the
cluster, bounds a sweep. This process owns one ``MlflowClient`` and does those three
writes; the driver sends a message and waits only for a new run's id. Everything
else (the parent run, heartbeats, summaries, the tracking hook) stays in the driver's
``RunStore``. It is still the same SQLite file on the driver's machine, written by
one process at a time (SQLite's lock), so HPC nodes never open it.

Any failure of the process falls back to writing in the driver.
"""

from __future__ import annotations

import collections
import multiprocessing
import threading
from concurrent.futures import Future
from typing import Any

__all__ = ["RemoteWriter"]


class RemoteWriter:
    """Calls into a spawned writer process; each returns a future, answered in order."""

    def __init__(self, tracking_uri: str):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(tracking_uri, child), name="mlorch-sweep-writer", daemon=True)
        self._proc.start()
        child.close()
        self._lock = threading.Lock()
        self._pending: collections.deque[Future[Any]] = collections.deque()
        self._reader = threading.Thread(target=self._read, name="mlorch-sweep-writer-replies", daemon=True)
        self._reader.start()

    def submit(self, op: str, *args: Any) -> Future[Any]:
        """Send ``op`` now; the future holds its result (or a RuntimeError) when the process has done it."""
        future: Future[Any] = Future()
        with self._lock:
            if not self._proc.is_alive():
                raise RuntimeError("the sweep writer process is not running")
            self._pending.append(future)
            self._conn.send((op, args))
        return future

    def call(self, op: str, *args: Any) -> Any:
        return self.submit(op, *args).result()

    def _read(self) -> None:
        while True:
            try:
                status, value = self._conn.recv()
            except (EOFError, OSError):
                break
            future = self._pending.popleft()
            if status == "ok":
                future.set_result(value)
            else:
                future.set_exception(RuntimeError(f"sweep writer process: {value}"))
        while self._pending:  # the process is gone: nobody will answer these
            self._pending.popleft().set_exception(RuntimeError("the sweep writer process stopped"))

    def close(self) -> None:
        """Wait for every submitted write, then stop the process."""
        try:
            self.call("stop")
        except Exception:
            pass
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._reader.join(timeout=5)


def _serve(tracking_uri: str, conn: Any) -> None:  # runs in the writer process
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    from mlorch.tracking.store import _retry

    client = MlflowClient(tracking_uri=tracking_uri)
    while True:
        try:
            op, args = conn.recv()
        except EOFError:
            return
        try:
            if op == "stop":
                conn.send(("ok", None))
                conn.close()
                return
            if op == "create":
                experiment_id, run_name, tags = args
                run = _retry(lambda: client.create_run(experiment_id, run_name=run_name, tags=tags), "create_run")
                conn.send(("ok", run.info.run_id))
            elif op == "finish":
                run_id, metrics, params, tags, status = args
                points = [Metric(k, v, ts, step) for k, v, ts, step in metrics]
                _retry(
                    lambda: client.log_batch(
                        run_id,
                        metrics=points,
                        params=[Param(k, v) for k, v in params.items()],
                        tags=[RunTag(k, v) for k, v in tags.items()],
                    ),
                    "log_batch",
                )
                _retry(lambda: client.set_terminated(run_id, status), "end_run")
                conn.send(("ok", None))
            else:
                conn.send(("err", f"unknown operation {op!r}"))
        except Exception as exc:  # reported to the caller, who falls back to writing itself
            conn.send(("err", f"{type(exc).__name__}: {exc}"))
