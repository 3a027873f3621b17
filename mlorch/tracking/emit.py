"""The task side of tracking: buffer what a task logs and ship it to the single writer.

Workers never open the MLflow store. Everything a task logs becomes a small
msgpack-able event on the topic ``mlorch-track``, sent with ``Worker.log_event``
over the worker's ordered stream to the scheduler and on to the driver, which
writes it (see ``mlorch.tracking.sink``). Metrics are buffered per process and
sent as one event per ~1000 points or per second, and always when a task call ends
(a runtime finalizer), so ``log_metric`` costs an append, not a database round trip.

Large payloads (artifacts, models over ``STAGE_BYTES``, 256 KiB) are not pushed through the
scheduler: the worker keeps them and the event carries a handle the driver uses to
fetch them (``client.run(take_blob, ...)``) straight from that worker.

Each worker counts the events it sent per run; the driver compares that with what it
received before it closes a run (the flush barrier in ``sink.barrier``).

Outside a worker (the driver itself, a sync backend) events go straight to the
driver's sink in this process.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from mlorch.core.context import TaskContext, current_or_none
from mlorch.tracking.limits import METRICS_PER_REQUEST

__all__ = [
    "TOPIC",
    "FLUSH_POINTS",
    "FLUSH_SECONDS",
    "STAGE_BYTES",
    "Target",
    "current_target",
    "emit",
    "flush",
    "push_metric",
    "sent_counts",
    "take_blob",
]

TOPIC = "mlorch-track"
FLUSH_POINTS = METRICS_PER_REQUEST  # one event becomes one request
FLUSH_SECONDS = 1.0
STAGE_BYTES = 256 << 10  # the scheduler keeps the last 1000 events per topic: keep them small

Target = tuple[str, str]  # (tracking uri, MLflow run id)

# Where events produced in the driver's own process go (no worker to send them from): the
# tracking package wires this to ``sink.deliver`` when it is imported (``deliver_locally_to``).
_local_delivery: Callable[[dict[str, Any]], None] | None = None
# Where logging goes when no task is running in this thread: the flow run this driver
# thread is executing (per thread, as a sweep may run several flows at once).
_driver = threading.local()


def deliver_locally_to(deliver: Callable[[dict[str, Any]], None]) -> None:
    """Where events made outside any worker (the flow body, a notebook) are handed over."""
    global _local_delivery
    _local_delivery = deliver


def _driver_targets() -> list[Target]:
    if not hasattr(_driver, "targets"):
        _driver.targets = []
    return _driver.targets


def push_driver_target(target: Target) -> None:
    _driver_targets().append(target)


def pop_driver_target(target: Target) -> None:
    targets = _driver_targets()
    if target in targets:
        targets.remove(target)


def current_target(ctx: TaskContext | None = None) -> Target | None:
    """The run that logging in this thread belongs to, or None when there is none."""
    ctx = ctx if ctx is not None else current_or_none()
    if ctx is not None:
        run_id = ctx.run.get("mlflow_run_id")
        uri = ctx.run.get("mlflow_tracking_uri")
        return (str(uri), str(run_id)) if run_id and uri else None
    targets = _driver_targets()
    return targets[-1] if targets else None


def _worker() -> Any | None:
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def on_worker() -> bool:
    """True inside a dask worker process (where the store must not be opened)."""
    return _worker() is not None


class _Outbox:
    """Per-process metric buffer and event sender, shared by all task threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.metrics: dict[Target, list[list[Any]]] = defaultdict(list)
        self.count = 0
        self.sent: dict[tuple[str, str], int] = defaultdict(int)  # (run id, worker address) -> events
        self.blobs: dict[str, bytes] = {}
        self.worker: Any = None
        self.last_flush = time.monotonic()
        self.flusher: threading.Thread | None = None
        self.flush_lock = threading.Lock()

    # -- metrics --------------------------------------------------------------------
    def push(self, target: Target, points: list[list[Any]]) -> None:
        worker = None
        with self.lock:
            self.metrics[target].extend(points)
            self.count += len(points)
            due = self.count >= FLUSH_POINTS or time.monotonic() - self.last_flush >= FLUSH_SECONDS
            if self.worker is None:
                worker = _worker()
        if worker is not None:
            self.worker = worker
            self._start_flusher()
        if due:
            self.flush()

    def flush(self, run_id: str | None = None) -> None:
        """Send buffered metrics (of one run, or all) now.

        Taking and sending happen under ``flush_lock``: a concurrent flush (the barrier's,
        or a task's end) waits until points another thread took are really sent, so the
        barrier's count is never read between the take and the send.
        """
        with self.flush_lock:
            with self.lock:
                if run_id is None:
                    pending, self.metrics = self.metrics, defaultdict(list)
                else:
                    pending = {t: self.metrics.pop(t) for t in list(self.metrics) if t[1] == run_id}
                self.count = sum(len(v) for v in self.metrics.values())
                self.last_flush = time.monotonic()
            for (uri, rid), points in pending.items():
                for start in range(0, len(points), FLUSH_POINTS):
                    self.send({"kind": "metrics", "uri": uri, "run": rid, "metrics": points[start : start + FLUSH_POINTS]})

    def _start_flusher(self) -> None:
        if self.flusher is not None and self.flusher.is_alive():
            return
        self.flusher = threading.Thread(target=self._flush_loop, name="mlorch-track-flush", daemon=True)
        self.flusher.start()

    def _flush_loop(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            if self.count:
                try:
                    self.flush()
                except Exception:  # the worker may be closing; the task-end flush still runs
                    pass

    # -- events ---------------------------------------------------------------------
    def send(self, msg: dict[str, Any]) -> None:
        worker = _worker() or self.worker  # the task's own worker; the cached one for the flusher thread
        if worker is None:
            if _local_delivery is None:
                raise RuntimeError("mlorch.tracking.emit: no local delivery wired (import mlorch.tracking)")
            _local_delivery(msg)
            return
        self.worker = worker
        msg["worker"] = worker.address
        with self.lock:  # count and send under one lock: the barrier never sees a count ahead of its events
            self.sent[(msg["run"], worker.address)] += 1
            worker.log_event(TOPIC, msg)

    def stage(self, data: bytes) -> dict[str, Any]:
        """Inline small payloads; keep big ones here and return a handle to fetch them."""
        if len(data) <= STAGE_BYTES or (self.worker or _worker()) is None:
            return {"data": data}
        blob = uuid.uuid4().hex
        with self.lock:
            self.blobs[blob] = data
        return {"blob": blob}


_outbox = _Outbox()


def push_metric(target: Target, points: list[list[Any]]) -> None:
    _outbox.push(target, points)


def emit(target: Target, kind: str, **fields: Any) -> None:
    """Send one non-metric event (params, tags, artifact, model...) for ``target``'s run."""
    uri, run_id = target
    _outbox.send({"kind": kind, "uri": uri, "run": run_id, **fields})


def stage(data: bytes) -> dict[str, Any]:
    return _outbox.stage(data)


def flush(run_id: str | None = None) -> None:
    _outbox.flush(run_id)


def sent_counts(run_id: str, dask_worker: Any = None) -> int:
    """Flush ``run_id``'s buffer, then say how many events this worker sent for it (the barrier).

    Run through ``client.run``, which passes ``dask_worker``; counting per worker address
    keeps the answer right when several workers share one process.
    """
    _outbox.flush(run_id)
    address = getattr(dask_worker, "address", None)
    with _outbox.lock:
        if address is None:
            return sum(n for (rid, _), n in _outbox.sent.items() if rid == run_id)
        return _outbox.sent.get((run_id, address), 0)


def take_blob(blob: str) -> bytes | None:
    """Hand a staged payload to the driver (once)."""
    with _outbox.lock:
        return _outbox.blobs.pop(blob, None)


def on_task_end(ctx: TaskContext, error: BaseException | None) -> None:
    """Runtime finalizer: a task's points leave the worker before its result does."""
    target = current_target(ctx)
    if target is None:
        return
    if ctx.gpu_ids:
        emit(target, "gpus", task=ctx.task, ids=[int(i) for i in ctx.gpu_ids])
    _outbox.flush()
