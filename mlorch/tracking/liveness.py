"""No run stays RUNNING after its driver is gone.

A driver that exits normally, raises, or gets SIGTERM/Ctrl-C ends its runs itself
(see ``hook``). For SIGKILL, OOM kills or power loss there is a heartbeat: every
run a ``RunStore`` creates carries ``mlorch.pid``/``mlorch.host`` tags and a
``mlorch.heartbeat`` tag (unix seconds) that a daemon thread refreshes every
``MLORCH_HEARTBEAT_SECONDS`` (default 10). When a store is first opened in a
process, RUNNING runs whose driver is gone are marked KILLED: on this host, when
their pid is dead; anywhere, when their heartbeat is older than
``MLORCH_HEARTBEAT_STALE_SECONDS`` (default 6 intervals).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING

from mlorch.names import HEARTBEAT_TAG, HOST_TAG, KILLED_REASON_TAG, PID_TAG

if TYPE_CHECKING:
    from mlorch.tracking.store import RunStore

__all__ = ["Heartbeat", "owner_tags", "reap_orphans"]

log = logging.getLogger("mlorch.tracking")
HEARTBEAT = HEARTBEAT_TAG


def interval() -> float:
    return float(os.environ.get("MLORCH_HEARTBEAT_SECONDS", "10"))


def stale_after() -> float:
    return float(os.environ.get("MLORCH_HEARTBEAT_STALE_SECONDS", str(6 * interval())))


def owner_tags() -> dict[str, str]:
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname(), HEARTBEAT: f"{time.time():.0f}"}


class Heartbeat:
    """Refreshes ``mlorch.heartbeat`` on the store's live runs from one daemon thread."""

    def __init__(self, store: RunStore):
        self.store = store
        self.runs: set[str] = set()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, run_id: str) -> None:
        with self.lock:
            self.runs.add(run_id)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, name="mlorch-heartbeat", daemon=True)
                self.thread.start()

    def remove(self, run_id: str) -> None:
        with self.lock:
            self.runs.discard(run_id)

    def _loop(self) -> None:
        while True:
            time.sleep(interval())
            with self.lock:
                runs = list(self.runs)
            now = f"{time.time():.0f}"
            for run_id in runs:
                try:
                    self.store.client.set_tag(run_id, HEARTBEAT, now)
                except Exception as exc:  # the store may be briefly unreachable
                    log.debug("heartbeat for %s failed: %s", run_id, exc)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphans(store: RunStore) -> list[str]:
    """Mark KILLED the RUNNING runs whose driver is gone; returns their ids."""
    client = store.client
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    host, now, stale = socket.gethostname(), time.time(), stale_after()
    killed = []
    token = None
    while True:
        page = client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=1000, page_token=token)
        for run in page:
            tags = run.data.tags
            if HEARTBEAT not in tags:
                continue  # not started by mlorch
            try:
                beat = float(tags[HEARTBEAT])
                pid = int(tags.get(PID_TAG, "0"))
            except ValueError:
                continue
            if pid == os.getpid() and tags.get(HOST_TAG) == host:
                continue
            dead_here = tags.get(HOST_TAG) == host and pid > 0 and not _pid_alive(pid)
            if dead_here or now - beat > stale:
                reason = "driver process is gone" if dead_here else f"no heartbeat for {now - beat:.0f} s"
                client.set_tag(run.info.run_id, KILLED_REASON_TAG, reason)
                client.set_terminated(run.info.run_id, "KILLED")
                killed.append(run.info.run_id)
        token = page.token
        if not token:
            break
    if killed:
        log.warning("marked %d orphaned run(s) KILLED (their driver died): %s", len(killed), ", ".join(killed))
    return killed
