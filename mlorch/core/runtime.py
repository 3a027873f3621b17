"""Runs one task call where the graph puts it (a worker thread, or the caller for sync runs).

Retries live here, not in distributed: distributed's ``retries=`` re-queues at once,
with no backoff, no ``retry_on`` and no per-task timeout. Sleeping between attempts
holds the worker thread (and the task's resources), which is what a flaky GPU job
wants: it keeps its slot.
"""

from __future__ import annotations

import contextvars
import pickle
import random
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlorch.core.cache import MISSING, ResultCache
from mlorch.core.context import TaskContext, _current, gpu_ids_from_env
from mlorch.errors import SerializationError, TaskFailedError, TaskTimeoutError

if TYPE_CHECKING:
    from mlorch.core.task import Task

__all__ = [
    "TaskCall",
    "execute",
    "add_argument_observer",
    "add_error_redactor",
    "add_steering_check",
    "add_task_finalizer",
    "backoff_delay",
    "observe_arguments",
    "pickle_problem",
]

# Callbacks run after every attempt-series, e.g. tracking flushes its metric buffer.
_finalizers: list[Callable[[TaskContext, BaseException | None], None]] = []
# Callbacks that see a task call's arguments: when it is traced (in the driver) and again
# where it runs, before its first attempt. Tracking uses this to remember secret-named
# arguments in both processes, so either one's logs can be scrubbed.
_argument_observers: list[Callable[[Task[..., Any], tuple[Any, ...], Mapping[str, Any]], None]] = []


def add_task_finalizer(fn: Callable[[TaskContext, BaseException | None], None]) -> None:
    """Register ``fn(ctx, error)`` to run in the worker thread when a task call ends."""
    if fn not in _finalizers:
        _finalizers.append(fn)


# Integrations name the exceptions that steer a run (a pruned trial) rather than report a fault.
_steering_checks: list[Callable[[BaseException], bool]] = []


def add_steering_check(check: Callable[[BaseException], bool]) -> None:
    """Register ``check(error)``: True for an exception that must never be retried (it steers the run)."""
    if check not in _steering_checks:
        _steering_checks.append(check)


# Text filters for a task's error before it leaves the worker (tracking masks secrets the
# worker knows, which the caller may not: a token read from the worker's environment).
_error_redactors: list[Callable[[str], str]] = []


def add_error_redactor(fn: Callable[[str], str]) -> None:
    """Register ``fn(text) -> text``, applied to a remote task's error before it is sent to the caller."""
    if fn not in _error_redactors:
        _error_redactors.append(fn)


def _redact(text: str | None) -> str | None:
    if text is None:
        return None
    for fn in _error_redactors:
        text = fn(text)
    return text


def _redact_error(error: BaseException) -> BaseException:
    """``error`` with its string ``args`` (and string attributes) redacted, in place.

    The object lives on the worker and only its pickled copy leaves, so changing it here is
    what keeps a secret it quotes from ever reaching the caller. Nested causes are left as
    they are (the traceback text that describes them is redacted).
    """
    if not _error_redactors:
        return error
    try:
        args = tuple(_redact(a) if isinstance(a, str) else a for a in error.args)
        if args != error.args:
            error.args = args
        for name, value in list(vars(error).items()):
            if isinstance(value, str):
                clean = _redact(value)
                if clean != value:
                    setattr(error, name, clean)
    except Exception:  # an exception type that refuses new attributes: its text is redacted below
        pass
    return error


def add_argument_observer(fn: Callable[[Task[..., Any], tuple[Any, ...], Mapping[str, Any]], None]) -> None:
    """Register ``fn(task, args, kwargs)``, called when a task call is traced and before it runs."""
    if fn not in _argument_observers:
        _argument_observers.append(fn)


def observe_arguments(task: Task[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Show a call's arguments to every observer; an observer's failure never fails the task."""
    for fn in _argument_observers:
        try:
            fn(task, args, kwargs)
        except Exception:
            import logging

            logging.getLogger("mlorch.runtime").exception("argument observer %r failed", fn)


@dataclass(frozen=True)
class TaskCall:
    """Everything a worker needs to run one node besides its inputs."""

    task: Task[..., Any]
    key: str
    run: Mapping[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None
    # True when the call runs in another process: errors then travel by pickle (without
    # Python's exception chaining) and results must pickle, which is checked here, where
    # the task is still known, rather than failing later inside distributed.
    remote: bool = False


def backoff_delay(attempt: int, delay: float, backoff: float, jitter: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed ``attempt`` (1-based): delay * backoff**(attempt-1), +/- jitter."""
    base = delay * (backoff ** (attempt - 1))
    if jitter:
        base *= 1 + (rng or random).uniform(-jitter, jitter)
    return max(0.0, base)


def execute(call: TaskCall, *args: Any, **kwargs: Any) -> Any:
    """Run ``call.task`` with retries, timeout, cache and context; the graph's callable."""
    task = call.task
    cache = ResultCache(call.cache_dir) if (task.cache and call.cache_dir) else None
    if cache is not None:
        value = cache.get(call.key)
        if value is not MISSING:
            return value
    gpu_ids = gpu_ids_from_env() if task.resources.get("GPU") else ()
    observe_arguments(task, args, kwargs)
    attempt = 0
    while True:
        attempt += 1
        ctx = TaskContext(task.name, call.key, attempt, task.resources, gpu_ids, call.run)
        token = _current.set(ctx)
        error: BaseException | None = None
        try:
            value = _call(task, ctx, args, kwargs)
        except BaseException as exc:  # noqa: BLE001 - decided below
            error = exc
        finally:
            _current.reset(token)
        if error is None:
            if call.remote:
                try:
                    _check_result(task.name, value)
                except SerializationError as exc:
                    _finalize(ctx, exc)
                    raise
            _finalize(ctx, None)
            if cache is not None:
                cache.put(call.key, value)
            return value
        retryable = isinstance(error, task.retry_on) and isinstance(error, Exception) and not _control_flow(error)
        if not retryable or attempt > task.retries:
            _finalize(ctx, error)
            final = _final_error(task.name, attempt, error, remote=call.remote)
            # Remote: the cause travels inside ``final`` (see errors.py) and the caller links it
            # back; chaining it here would make distributed pickle it a second time, raw.
            raise final from (None if call.remote else error)
        time.sleep(backoff_delay(attempt, task.retry_delay, task.backoff, task.jitter))


def _control_flow(error: BaseException) -> bool:
    """Exceptions that steer a run rather than report a fault (a pruned trial): never retried."""
    return bool(getattr(error, "mlorch_no_retry", False)) or any(check(error) for check in _steering_checks)


def _finalize(ctx: TaskContext, error: BaseException | None) -> None:
    for fn in _finalizers:
        try:
            fn(ctx, error)
        except Exception:  # a tracking hiccup must not turn a good result into a failure
            import logging

            logging.getLogger("mlorch.runtime").exception("task finalizer %r failed", fn)


def _final_error(name: str, attempts: int, error: BaseException, remote: bool = False) -> TaskFailedError:
    """The error a task's caller gets; ``remote``: with the secrets this process knows masked."""
    if remote:
        error = _redact_error(error)
    clean: Callable[[str], str] = (lambda text: _redact(text) or "") if remote else (lambda text: text)
    tries = f"{attempts} attempt" + ("s" if attempts != 1 else "")
    text = clean("".join(traceback.format_exception(error)))
    if isinstance(error, _AttemptTimeout):
        message = f"task '{name}' timed out after {error.seconds:g} s ({tries})"
        return TaskTimeoutError(name, attempts, clean(message), error, text)
    if isinstance(error, TaskFailedError):  # a nested flow's task already named itself
        return TaskFailedError(name, attempts, clean(f"task '{name}' failed after {tries}: {error}"), error, text)
    message = f"task '{name}' failed after {tries}: {type(error).__name__}: {error}"
    return TaskFailedError(name, attempts, clean(message), error, text)


def pickle_problem(value: Any) -> Exception | None:
    """Why ``value`` cannot be pickled the way distributed does it (pickle, then cloudpickle), or None.

    numpy and pandas values are trusted without trying: pickling them here would copy
    every large array once more.
    """
    if isinstance(value, (int, float, str, bytes, bool, complex, type(None))):
        return None
    if type(value).__module__.split(".")[0] in ("numpy", "pandas"):
        return None
    try:
        pickle.dumps(value, protocol=5, buffer_callback=lambda _: None)  # out-of-band buffers are not copied
        return None
    except Exception:
        pass
    import cloudpickle

    try:
        cloudpickle.dumps(value, protocol=5, buffer_callback=lambda _: None)
        return None
    except Exception as exc:
        return exc


def _check_result(name: str, value: Any) -> None:
    problem = pickle_problem(value)
    if problem is not None:
        raise SerializationError(
            f"task '{name}' returned a {type(value).__name__}, which cannot be pickled, so it cannot leave "
            f"the worker ({type(problem).__name__}: {problem}). Return plain data (numbers, arrays, a path to "
            "a file) and create the object where it is used."
        )


class _AttemptTimeout(TimeoutError):
    def __init__(self, seconds: float):
        super().__init__(seconds)
        self.seconds = seconds


def _call(task: Task[..., Any], ctx: TaskContext, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if task.timeout is None:
        return task.fn(*args, **kwargs)
    # Python cannot kill a thread: the attempt runs in a daemon thread and is abandoned
    # (not stopped) on timeout; it keeps running while the worker slot moves on.
    outcome: dict[str, Any] = {}
    run_ctx = contextvars.copy_context()

    def target() -> None:
        try:
            outcome["value"] = run_ctx.run(task.fn, *args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"mlorch-{task.name}", daemon=True)
    thread.start()
    thread.join(task.timeout)
    if thread.is_alive():
        raise _AttemptTimeout(task.timeout)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
