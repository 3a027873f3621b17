"""The whole mlorch exception tree, in one place.

    MlorchError
    ├── ConfigError (ValueError)            a YAML file or a keyword names a bad field
    ├── FlowDefinitionError (TypeError)     a task or flow is used wrongly
    │   ├── TaskArgumentError               a call does not match the task's signature
    │   ├── SerializationError              an argument or a result cannot travel between processes
    │   └── FlowCycleError                  a flow calls itself, directly or not
    ├── ResourceUnavailableError (RuntimeError)  no worker can meet a task's resources
    ├── ClusterError (RuntimeError)         a cluster could not be started or reached
    ├── SweepRunningError (RuntimeError)    the same sweep is already running in another driver
    ├── TaskFailedError (RuntimeError)      a task raised on its last attempt
    │   └── TaskTimeoutError (TimeoutError) a task ran past its ``timeout``
    └── RemoteTaskError (RuntimeError)      stand-in for a task's exception whose class cannot be rebuilt here

Every field is kept in ``args`` so that errors raised on a worker pickle and
arrive intact in the caller's process (distributed ships exceptions by pickle).

A task's own exception travels inside its ``TaskFailedError`` as bytes pickled by
cloudpickle, plus its class path, message and traceback text. The caller rebuilds
it as its own class when it can: cloudpickle brings back classes defined in the
user's script (a worker's ``__main__`` is not the script, so plain pickle cannot),
else the class is imported by name; failing both, a :class:`RemoteTaskError` keeps
the class name, the message and the worker's traceback.
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
    "RemoteTaskError",
    "ResourceUnavailableError",
    "SerializationError",
    "SweepRunningError",
    "TaskArgumentError",
    "TaskFailedError",
    "TaskTimeoutError",
    "causes",
    "preview",
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
    """An argument (or a task's result) cannot be pickled, so it cannot travel between processes."""


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
        cause: the exception of the last attempt, as its own class when this process can
            rebuild it, else a :class:`RemoteTaskError` with its class name and message.
        traceback: the cause's traceback as text, formatted where the task ran.
    """

    def __init__(
        self,
        task: str,
        attempts: int,
        message: str,
        cause: BaseException | None = None,
        traceback: str | None = None,
    ):
        super().__init__(task, attempts, message, cause, traceback)
        self.task = task
        self.attempts = attempts
        self.message = message
        self.cause = cause
        self.traceback = traceback

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:  # short: distributed logs it in the worker's "Compute Failed" line
        return f"{type(self).__name__}({self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_failure, (type(self), self.task, self.attempts, self.message, _ship(self.cause), self.traceback))


class TaskTimeoutError(TaskFailedError, TimeoutError):
    """A task ran past its ``timeout`` on every attempt."""


class RemoteTaskError(MlorchError, RuntimeError):
    """A task's exception whose class this process cannot import or rebuild.

    Attributes:
        type_name: the original class, ``module.QualName``.
        message: ``str()`` of the original exception.
        traceback: its traceback as text, from where the task ran.
    """

    def __init__(self, type_name: str, message: str, traceback: str | None = None):
        super().__init__(type_name, message, traceback)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback

    @property
    def name(self) -> str:
        """The original class's own name (``MyError``)."""
        return self.type_name.rsplit(".", 1)[-1]

    def __str__(self) -> str:
        text = f"{self.name}: {self.message} (class {self.type_name} cannot be imported in this process)"
        return f"{text}\n{self.traceback.rstrip()}" if self.traceback else text


def _ship(exc: BaseException | None) -> tuple[Any, ...] | None:
    """What of ``exc`` can travel: cloudpickle bytes (if they load here), class path, args, message."""
    if exc is None:
        return None
    import pickle

    import cloudpickle

    data: bytes | None
    try:
        data = cloudpickle.dumps(exc)
        pickle.loads(data)  # an exception whose __init__ rejects its own args fails here, not in the caller
    except Exception:
        data = None
    args: tuple[Any, ...] | None
    try:
        args = tuple(exc.args)
        pickle.loads(pickle.dumps(args))
    except Exception:
        args = None
    cls = type(exc)
    return (data, cls.__module__, cls.__qualname__, args, _text(exc))


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return repr(exc)


def _rebuild_failure(
    cls: type[TaskFailedError],
    task: str,
    attempts: int,
    message: str,
    shipped: tuple[Any, ...] | None,
    traceback: str | None,
) -> TaskFailedError:
    cause = _rebuild_cause(shipped, traceback)
    if cause is not None and traceback and cause.__traceback__ is None and not isinstance(cause, RemoteTaskError):
        # Its frames stayed on the worker: show their text where Python prints the exception.
        cause.add_note(f"(raised in task '{task}' on a worker)\n{traceback.rstrip()}")
    return cls(task, attempts, message, cause, traceback)


def _rebuild_cause(shipped: tuple[Any, ...] | None, traceback: str | None) -> BaseException | None:
    """The shipped exception as its own class if this process can make one, else a stand-in."""
    if shipped is None:
        return None
    import pickle

    data, module, qualname, args, message = shipped
    if data is not None:
        try:
            exc = pickle.loads(data)
            if isinstance(exc, BaseException):
                return exc
        except Exception:
            pass
    cls = _import_class(module, qualname)
    if cls is not None:
        for build in (lambda: cls(*(args if args is not None else (message,))), lambda: cls.__new__(cls, message)):
            try:
                exc = build()
                if isinstance(exc, BaseException):
                    return exc
            except Exception:
                continue
    return RemoteTaskError(f"{module}.{qualname}", message, traceback)


def _import_class(module: str, qualname: str) -> type[BaseException] | None:
    """``module.qualname`` if it names an exception class here (``__main__``: the caller's script)."""
    import importlib
    import sys

    try:
        obj: Any = sys.modules[module] if module in sys.modules else importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception:
        return None
    return obj if isinstance(obj, type) and issubclass(obj, BaseException) else None


def causes(error: BaseException | None) -> Iterator[BaseException]:
    """``error`` and what led to it: mlorch's ``.cause``, then ``__cause__``/``__context__`` (each once)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__


def preview(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error message stays short whatever the input.
    (A container's repr is built with a budget, so a huge or alias-expanded value costs little.)"""
    text = _bounded_repr(value, limit + 1)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bounded_repr(value: object, budget: int) -> str:
    if budget <= 0:
        return "..."
    if isinstance(value, (dict, list, tuple, set)):
        brackets = {dict: "{}", list: "[]", tuple: "()", set: "{}"}.get(type(value), "[]")
        opening, closing = brackets[0], brackets[1]
        parts: list[str] = []
        used = 1
        items = value.items() if isinstance(value, dict) else value
        for item in items:
            if used >= budget:
                parts.append("...")
                break
            if isinstance(value, dict):
                key, val = item
                text = f"{_bounded_repr(key, budget - used)}: {_bounded_repr(val, budget - used)}"
            else:
                text = _bounded_repr(item, budget - used)
            parts.append(text)
            used += len(text) + 2
        return opening + ", ".join(parts) + closing
    text = repr(value)
    return text[:budget]
