"""What a running task can ask about itself: ``mo.context()``.

The context is a ``contextvars.ContextVar`` set by the task runtime around each
call, so it is right per thread on a multi-threaded worker and empty outside tasks.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TaskContext", "context", "gpu_ids_from_env"]


@dataclass(frozen=True)
class TaskContext:
    """Facts about the task attempt running in this thread.

    Attributes:
        task: the task's name.
        key: its content-addressed graph key.
        attempt: 1 for the first try, 2 for the first retry, ...
        resources: what the task asked for, e.g. ``{"GPU": 1}``.
        gpu_ids: the GPU devices this task may use (empty for CPU tasks).
        run: facts about the flow run (ids used by tracking and sweeps).
    """

    task: str
    key: str
    attempt: int = 1
    resources: Mapping[str, float] = field(default_factory=dict)
    gpu_ids: tuple[int, ...] = ()
    run: Mapping[str, Any] = field(default_factory=dict)


_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar("mlorch_task", default=None)


def context() -> TaskContext:
    """The context of the task running in this thread.

    Raises:
        RuntimeError: when called outside a task.
    """
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("mo.context() is only available inside a running @mo.task")
    return ctx


def current_or_none() -> TaskContext | None:
    return _current.get()


def gpu_ids_from_env(env: Mapping[str, str] | None = None) -> tuple[int, ...]:
    """Device indices listed in CUDA_VISIBLE_DEVICES (the worker's pinned GPU)."""
    value = (env if env is not None else os.environ).get("CUDA_VISIBLE_DEVICES", "")
    ids = []
    for part in value.split(","):
        part = part.strip()
        if part.isdigit():
            ids.append(int(part))
    return tuple(ids)
