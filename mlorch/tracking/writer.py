"""The writer thread of a ``RunStore``: turns task events into MLflow calls.

It takes whatever is queued, writes all metric points of that batch per run with
``log_batch`` (1000 a request), then the other events in arrival order. A failing
write is logged and skipped: one bad event must not stop the others.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from mlorch.names import TASK_RUN_TAG, TASK_TAG
from mlorch.tracking import emit

if TYPE_CHECKING:
    from distributed import Client

    from mlorch.tracking.store import RunStore

__all__ = ["write_forever"]

log = logging.getLogger("mlorch.tracking")
_MAX_BATCH = 10_000  # events drained per round


def write_forever(store: RunStore, inbox: queue.Queue[Any]) -> None:
    while True:
        batch = [inbox.get()]
        while len(batch) < _MAX_BATCH:
            try:
                batch.append(inbox.get_nowait())
            except queue.Empty:
                break
        write_batch(store, batch)


def write_batch(store: RunStore, batch: list[tuple[dict[str, Any], Client | None]]) -> None:
    from mlflow.entities import Metric

    points: dict[str, list[Any]] = defaultdict(list)
    others: list[tuple[dict[str, Any], Client | None]] = []
    for msg, client in batch:
        if msg.get("kind") == "metrics":
            points[msg["run"]].extend(Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in msg["metrics"])
            store.metric_keys.setdefault(msg["run"], set()).update(str(m[0]) for m in msg["metrics"])
        else:
            others.append((msg, client))
    for run_id, metrics in points.items():
        _guard(lambda: store.write_points(run_id, metrics), f"{len(metrics)} metric points", run_id)
    for msg, client in others:
        kind = msg.get("kind")
        if kind == "_flush":
            done: threading.Event = msg["done"]
            done.set()
            continue
        _guard(lambda: _write_one(store, msg, client), f"a '{kind}' event", msg.get("run"))


def _guard(fn: Any, what: str, run_id: str | None) -> None:
    try:
        fn()
    except Exception as exc:
        log.warning("tracking: could not write %s to run %s: %s: %s", what, run_id, type(exc).__name__, exc)


def _payload(msg: dict[str, Any], client: Client | None) -> bytes:
    if "data" in msg:
        return bytes(msg["data"])
    if client is None or not msg.get("worker"):
        raise RuntimeError("a staged payload arrived without a way to fetch it")
    got = client.run(emit.take_blob, msg["blob"], workers=[msg["worker"]], on_error="return")
    data = got.get(msg["worker"])
    if not isinstance(data, (bytes, bytearray)):
        raise RuntimeError(f"worker {msg['worker']} no longer holds the payload ({data!r})")
    return bytes(data)


def _write_one(store: RunStore, msg: dict[str, Any], client: Client | None) -> None:
    kind, run_id = msg["kind"], msg["run"]
    if kind == "params":
        store.log_params(run_id, msg["params"])
    elif kind == "tags":
        store.set_tags(run_id, msg["tags"])
    elif kind == "artifact":
        store.log_bytes(run_id, _payload(msg, client), msg["name"], msg.get("path"))
    elif kind == "gpus":
        store.gpus_used.setdefault(run_id, set()).update(int(i) for i in msg["ids"])
    elif kind == "model":
        import cloudpickle

        from mlorch.tracking.models import log_packed_model

        tags = {TASK_RUN_TAG: run_id}
        if msg.get("task"):
            tags[TASK_TAG] = str(msg["task"])
        version = log_packed_model(
            store.client,
            store.tracking_uri,
            run_id,
            _payload(msg, client),
            name=msg["name"],
            flavor=msg["flavor"],
            register=bool(msg.get("register")),
            options=cloudpickle.loads(msg["options"]) if msg.get("options") else {},
            tags=tags,
        )
        if version is not None:
            store.set_tags(run_id, {f"mlorch.model.{msg['name']}.version": str(version)})
    elif kind == "alias":
        store.set_model_alias(msg["name"], msg["alias"], msg.get("version"))
    else:
        log.warning("tracking: unknown event kind %r ignored", kind)
