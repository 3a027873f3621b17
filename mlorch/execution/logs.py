"""Worker-side logging reaches the caller's console.

A worker plugin adds one handler to each worker's root logger. It forwards records
emitted *inside a task* (distributed's own chatter stays in the worker log) as
structured events on the topic ``mlorch-log``; the caller subscribes and re-emits
them through its ``mlorch.worker`` logger, prefixed with the task name.
"""

from __future__ import annotations

import logging
from typing import Any

from distributed import Client, WorkerPlugin

from mlorch.core.context import current_or_none

__all__ = ["LOG_TOPIC", "ForwardTaskLogs", "subscribe_task_logs"]

LOG_TOPIC = "mlorch-log"
_driver_logger = logging.getLogger("mlorch.worker")


class _TaskLogHandler(logging.Handler):
    def __init__(self, worker: Any):
        super().__init__(logging.INFO)
        self.worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        ctx = current_or_none()
        if ctx is None:
            return
        try:
            self.worker.log_event(
                LOG_TOPIC,
                {"level": record.levelno, "logger": record.name, "task": ctx.task, "msg": record.getMessage()},
            )
        except Exception:  # never let logging break a task
            self.handleError(record)


class ForwardTaskLogs(WorkerPlugin):
    """Install the forwarding handler on every worker, present and future."""

    name = "mlorch-forward-logs"

    def setup(self, worker: Any) -> None:
        root = logging.getLogger()
        if not any(isinstance(h, _TaskLogHandler) for h in root.handlers):
            root.addHandler(_TaskLogHandler(worker))
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)


def _on_event(event: tuple[float, dict[str, Any]]) -> None:
    _, msg = event
    _driver_logger.log(int(msg.get("level", logging.INFO)), "[%s] %s", msg.get("task"), msg.get("msg"))


def subscribe_task_logs(client: Client) -> None:
    """Register the plugin and print forwarded records through ``mlorch.worker``."""
    client.register_plugin(ForwardTaskLogs())
    client.subscribe_topic(LOG_TOPIC, _on_event)
