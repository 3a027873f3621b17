"""The whole mlorch exception tree, in one place.

    MlorchError
    ├── ConfigError (ValueError)            a YAML file or a keyword names a bad field
    ├── FlowDefinitionError (TypeError)     a task or flow is used wrongly
    │   ├── TaskArgumentError               a call does not match the task's signature
    │   ├── SerializationError              an argument cannot travel to a worker
    │   └── FlowCycleError                  a flow calls itself, directly or not
    ├── ResourceUnavailableError (RuntimeError)  no worker can meet a task's resources
    ├── ClusterError (RuntimeError)         a cluster could not be started or reached
    ├── SweepRunningError (RuntimeError)    the same sweep is already running in another driver
    └── TaskFailedError (RuntimeError)      a task raised on its last attempt
        └── TaskTimeoutError (TimeoutError) a task ran past its ``timeout``

Every field is kept in ``args`` so that errors raised on a worker pickle and
arrive intact in the caller's process (distributed ships exceptions by pickle).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = [
    "ClusterError",
    "ConfigError",
    "FlowCycleError",
    "FlowDefinitionError",
    "MlorchError",
    "ResourceUnavailableError",
    "SerializationError",
    "SweepRunningError",
    "TaskArgumentError",
    "TaskFailedError",
    "TaskTimeoutError",
    "causes",
]


class MlorchError(Exception):
    """Root of every error mlorch raises on purpose."""


class ConfigError(MlorchError, ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


class FlowDefinitionError(MlorchError, TypeError):
    """A task or flow is defined or called in a way that cannot work."""


class TaskArgumentError(FlowDefinitionError):
    """A task was called with arguments its signature does not accept."""


class SerializationError(FlowDefinitionError):
    """An argument cannot be pickled, so it cannot be sent to a worker."""


class FlowCycleError(FlowDefinitionError):
    """A flow calls itself (directly or through other flows)."""


class ResourceUnavailableError(MlorchError, RuntimeError):
    """A task asks for a resource that no worker of the cluster declares."""


class ClusterError(MlorchError, RuntimeError):
    """A cluster could not be started, reached or shut down."""


class SweepRunningError(MlorchError, RuntimeError):
    """A sweep of the same name, on the same storage, is already running in another driver."""


class TaskFailedError(MlorchError, RuntimeError):
    """A task raised on its final attempt.

    Attributes:
        task: the task's name.
        attempts: how many times it ran.
        cause: the exception of the last attempt (when it could be pickled).
    """

    def __init__(self, task: str, attempts: int, message: str, cause: BaseException | None = None):
        super().__init__(task, attempts, message, cause)
        self.task = task
        self.attempts = attempts
        self.message = message
        self.cause = cause

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.task, self.attempts, self.message, _picklable(self.cause)))


class TaskTimeoutError(TaskFailedError, TimeoutError):
    """A task ran past its ``timeout`` on every attempt."""


def _picklable(exc: BaseException | None) -> BaseException | None:
    """Keep an exception only if it survives pickling; otherwise a RuntimeError with its text."""
    if exc is None:
        return None
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def causes(error: BaseException | None) -> Iterator[BaseException]:
    """``error`` and what led to it: mlorch's ``.cause``, then ``__cause__``/``__context__`` (each once)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
