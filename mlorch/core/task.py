"""``@task``: a plain function plus how to run it (retries, timeout, resources, cache).

A task only defines. Called outside a flow it is the plain function; called while a
flow is being traced it records a node in that flow's graph and returns a ``Ref``.
Arguments are checked against the signature at the call, so a wrong call fails in
the caller's process, naming the task, before anything is submitted.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Generic, ParamSpec, TypeVar, overload

from mlorch.core.resources import parse_request
from mlorch.core.tokens import function_token
from mlorch.errors import FlowDefinitionError

__all__ = ["Task", "task"]

P = ParamSpec("P")
R = TypeVar("R")


class Task(Generic[P, R]):
    """A function registered as a graph node; see :func:`task` for the options."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        retries: int = 0,
        retry_delay: float = 0.0,
        backoff: float = 2.0,
        jitter: float = 0.0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        timeout: float | None = None,
        resources: Mapping[str, float] | None = None,
        cache: bool = False,
        cache_version: str | int | None = None,
    ):
        if not callable(fn):
            raise FlowDefinitionError(f"@mo.task needs a function, got {type(fn).__name__}")
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "task"))
        self.retries = _non_negative_int("retries", retries, self.name)
        self.retry_delay = _non_negative("retry_delay", retry_delay, self.name)
        self.backoff = _non_negative("backoff", backoff, self.name)
        if not 0 <= jitter <= 1:
            raise FlowDefinitionError(f"task '{self.name}': jitter must be within [0, 1], got {jitter!r}")
        self.jitter = float(jitter)
        self.retry_on = retry_on if isinstance(retry_on, tuple) else (retry_on,)
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on):
            raise FlowDefinitionError(f"task '{self.name}': retry_on must be exception types, got {retry_on!r}")
        if timeout is not None and not timeout > 0:
            raise FlowDefinitionError(f"task '{self.name}': timeout must be > 0 seconds, got {timeout!r}")
        self.timeout = None if timeout is None else float(timeout)
        self.resources = _resources(resources or {}, self.name)
        self.cache = bool(cache)
        self.cache_version = cache_version
        self._token: str | None = None
        self._signature: inspect.Signature | None = None
        functools.update_wrapper(self, fn)

    @property
    def token(self) -> str:
        """Digest of the function's identity, code and ``cache_version``."""
        if self._token is None:
            self._token = function_token(self.fn, self.cache_version)
        return self._token

    @property
    def signature(self) -> inspect.Signature:
        if self._signature is None:
            self._signature = inspect.signature(self.fn)
        return self._signature

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        from mlorch.core.trace import current_trace

        trace = current_trace()
        if trace is None:
            return self.fn(*args, **kwargs)
        return trace.add(self, args, kwargs)  # type: ignore[return-value]

    def map(self, *iterables: Any, **kwargs: Any) -> list[Any]:
        """Fan out: one call per element of the positional iterables (zipped).

        Keyword arguments are passed unchanged to every call. An iterable may be the
        ``Ref`` of an upstream task: its length is then learnt when that task has run,
        and each element stays on the workers.
        """
        from mlorch.core.trace import current_trace

        trace = current_trace()
        if not iterables:
            raise FlowDefinitionError(f"{self.name}.map() needs at least one iterable to map over")
        if trace is None:
            columns = [list(it) for it in iterables]
            _same_length(self.name, columns)
            return [self.fn(*row, **kwargs) for row in zip(*columns)]
        columns = [trace.elements(it) if _is_ref(it) else list(it) for it in iterables]
        _same_length(self.name, columns)
        return [trace.add(self, row, kwargs) for row in zip(*columns)]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_signature"] = None  # recomputed on demand; inspect objects pickle poorly
        return state

    def __repr__(self) -> str:
        return f"<mo.task {self.name}>"


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(
    fn: None = None,
    /,
    *,
    name: str | None = ...,
    retries: int = ...,
    retry_delay: float = ...,
    backoff: float = ...,
    jitter: float = ...,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = ...,
    timeout: float | None = ...,
    resources: Mapping[str, float] | None = ...,
    cache: bool = ...,
    cache_version: str | int | None = ...,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
    """Declare a task, bare (``@mo.task``) or with options (``@mo.task(retries=3)``).

    Args:
        retries: extra attempts after the first failure.
        retry_delay: seconds before the first retry; later ones wait ``retry_delay * backoff**n``.
        backoff: growth factor of the delay (default 2).
        jitter: randomises each delay by up to this fraction (0.2 = +/-20 %).
        retry_on: exception types worth retrying (default: any ``Exception``).
        timeout: seconds an attempt may run before it fails with ``TaskTimeoutError``.
        resources: worker resources one call holds, e.g. ``{"GPU": 1}`` or ``{"GPU": 0.5}``.
        cache: keep results on disk under the project folder and reuse them across runs.
        cache_version: bump to invalidate cached results without editing the code.
    """
    if fn is None:
        return functools.partial(_task_from_options, options=options)
    return Task(fn, **options)


def _task_from_options(fn: Callable[..., Any], options: dict[str, Any]) -> Task[..., Any]:
    return Task(fn, **options)


def _is_ref(value: Any) -> bool:
    from mlorch.core.trace import Ref

    return isinstance(value, Ref)


def _same_length(name: str, columns: list[list[Any]]) -> None:
    lengths = {len(c) for c in columns}
    if len(lengths) > 1:
        raise FlowDefinitionError(f"{name}.map(): the iterables have different lengths {sorted(lengths)}")


def _non_negative(field: str, value: float, name: str) -> float:
    if not isinstance(value, (int, float)) or value < 0:
        raise FlowDefinitionError(f"task '{name}': {field} must be a number >= 0, got {value!r}")
    return float(value)


def _non_negative_int(field: str, value: int, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FlowDefinitionError(f"task '{name}': {field} must be an integer >= 0, got {value!r}")
    return value


def _resources(resources: Mapping[str, float], name: str) -> dict[str, float]:
    try:
        return parse_request(resources)
    except ValueError as exc:
        raise FlowDefinitionError(
            f"task '{name}': resources must map names to positive numbers, e.g. {{'GPU': 1}}: {exc}"
        ) from None
