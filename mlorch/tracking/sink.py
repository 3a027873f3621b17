"""The driver side of task events: receive them, count them, and wait for them.

``subscribe(client)`` registers a handler for the ``mlorch-track`` topic. The
handler runs on the client's event loop, so it only counts the event and queues
it for the store's writer thread. ``barrier(client, run_id)`` is the flush
barrier a run's end goes through: it asks every worker how many events it sent
for the run (flushing their buffers first), waits until that many have arrived,
then waits for the writer to write them.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from mlorch.tracking import emit
from mlorch.tracking.store import RunStore

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["barrier", "deliver", "subscribe"]

log = logging.getLogger("mlorch.tracking")
_received: dict[tuple[str, str], int] = defaultdict(int)  # (run id, worker address) -> events
_cond = threading.Condition()
_subscribed: weakref.WeakSet[Any] = weakref.WeakSet()


def deliver(msg: dict[str, Any], client: Client | None = None) -> None:
    """Hand one event to its store's writer; never blocks on I/O."""
    uri = str(msg.get("uri") or "")
    store = RunStore.opened(uri or None)
    if store is not None:
        store.enqueue(msg, client)
    else:  # first event for a store this process has not opened: open it off the event loop
        threading.Thread(target=lambda: RunStore.open(uri or None).enqueue(msg, client), daemon=True).start()
    worker = msg.get("worker")
    if worker:
        with _cond:
            _received[(str(msg.get("run")), str(worker))] += 1
            _cond.notify_all()


def subscribe(client: Client) -> None:
    if client in _subscribed:
        return

    def handler(event: tuple[float, dict[str, Any]]) -> None:
        try:
            deliver(event[1], client)
        except Exception:
            log.exception("tracking: could not accept an event")

    client.subscribe_topic(emit.TOPIC, handler)
    _subscribed.add(client)


def barrier(client: Client | None, run_id: str, timeout: float = 30.0) -> bool:
    """Wait until every event workers sent for ``run_id`` has been received; True if all came."""
    if client is not None and client.status == "running":
        try:
            sent = client.run(emit.sent_counts, run_id, on_error="return")
        except Exception as exc:
            log.warning("tracking: could not ask workers what they sent for run %s: %s", run_id, exc)
            sent = {}
        expected = {w: n for w, n in sent.items() if isinstance(n, int) and n > 0}
        deadline = time.monotonic() + timeout
        with _cond:
            while True:
                missing = {w: n - _received[(run_id, w)] for w, n in expected.items() if _received[(run_id, w)] < n}
                if not missing:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning(
                        "tracking: run %s: %s event(s) from workers did not arrive in %.0f s",
                        run_id,
                        sum(missing.values()),
                        timeout,
                    )
                    return False
                _cond.wait(min(left, 0.5))
    return True
