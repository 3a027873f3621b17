"""``@flow``: a Python function whose task calls are traced into a Dask graph.

A flow only defines. Calling it at top level hands it to the registered runner
(``mlorch.execution`` registers one on import), which traces the body on a cluster
and returns concrete values. Called inside another flow it is inlined: its tasks
join the caller's graph, so nested flows cost nothing extra.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

from mlorch.core.annotations import annotation_of, type_problem
from mlorch.core.trace import Backend, FlowGraph, Ref, Trace, collect_refs, current_trace
from mlorch.errors import FlowCycleError, FlowDefinitionError, TaskArgumentError, preview

__all__ = ["Flow", "flow", "set_runner"]

P = ParamSpec("P")
R = TypeVar("R")


class Runner(Protocol):
    def __call__(self, flow: Flow[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...


_runner: Runner | None = None
_graph_backend: Callable[[], Backend] | None = None


def set_runner(runner: Runner, graph_backend: Callable[[], Backend]) -> None:
    """Install how top-level flow calls run and which backend ``Flow.graph`` uses for ``.result()``."""
    global _runner, _graph_backend
    _runner, _graph_backend = runner, graph_backend


class Flow(Generic[P, R]):
    """A traced pipeline; see :func:`flow`."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        experiment: str | None = None,
        tracking: bool = True,
    ):
        if not callable(fn):
            raise FlowDefinitionError(f"@mo.flow needs a function, got {type(fn).__name__}")
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "flow"))
        self.experiment: str = experiment or self.name
        self.tracking = tracking
        self.signature = inspect.signature(fn)
        functools.update_wrapper(self, fn)

    def parameter_problem(self, name: str) -> str | None:
        """Why ``name`` cannot be passed to this flow (with a did-you-mean), or None if it can.

        The one check of a name against the flow's signature: ``--set`` on the CLI and
        a sweep's space ask it.
        """
        params = self.signature.parameters
        if name in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return None
        known = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; its parameters are: {', '.join(known) or '(none)'}"
        return f"flow '{self.name}' has no parameter '{name}'{hint}"

    def value_problem(self, name: str, value: Any) -> str | None:
        """Why ``value`` does not fit parameter ``name``'s annotation (int, float, bool, str, Path,
        Literal, Optional), e.g. ``expected int, got str 'abc'``; None if it does or cannot be told."""
        problem = type_problem(annotation_of(self.fn, name), value)
        return None if problem is None else f"{problem}, got {type(value).__name__} {preview(value)}"

    def unbound_parameters(self, given: Iterable[str]) -> list[str]:
        """The parameters without a default that ``given`` leaves out."""
        names = set(given)
        return [
            n
            for n, p in self.signature.parameters.items()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in names
        ]

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The flow's parameters with defaults applied; a wrong call names the flow."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TaskArgumentError(
                f"flow '{self.name}{str(self.signature).replace(chr(39), '')}' cannot be called that way: {exc}"
            ) from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        trace = current_trace()
        if trace is not None:
            return self.trace_into(trace, args, kwargs)
        if _runner is None:
            raise RuntimeError("no flow runner installed; import mlorch (not mlorch.core) to run flows")
        return _runner(self, args, kwargs)

    def trace_into(self, trace: Trace, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run the body with ``trace`` active; returns the body's value (containing Refs)."""
        if self in trace.flow_stack:
            chain: list[Flow[..., Any]] = [*trace.flow_stack[trace.flow_stack.index(self) :], self]
            path = " -> ".join(f.name for f in chain)
            raise FlowCycleError(f"flow cycle: {path}; a flow cannot call itself")
        params = self.bind(args, kwargs)
        trace.flow_stack.append(self)
        token = trace.activate()
        try:
            return self.fn(**params)  # type: ignore[call-arg]  # params were bound to fn's own signature
        finally:
            Trace.deactivate(token)
            trace.flow_stack.pop()

    def graph(self, *args: P.args, **kwargs: P.kwargs) -> FlowGraph:
        """The Dask graph a call with these parameters would run, without running it.

        Keys are content-addressed, so they are equal across calls and processes.
        If the body branches on a computed value (``ref.result()``), the tasks it
        needs are run on the active cluster (or in-process) to know the shape.
        """
        backend = _graph_backend() if _graph_backend is not None else _sync_backend()
        trace = Trace(backend=backend)
        value = self.trace_into(trace, args, kwargs)
        refs: list[Ref] = []
        collect_refs(value, refs)
        return trace.graph(outputs=[r.key for r in refs])

    def __repr__(self) -> str:
        return f"<mo.flow {self.name}>"


@overload
def flow(fn: Callable[P, R], /) -> Flow[P, R]: ...
@overload
def flow(
    fn: None = None, /, *, name: str | None = ..., experiment: str | None = ..., tracking: bool = ...
) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
    """Declare a flow, bare (``@mo.flow``) or with options (``@mo.flow(experiment="digits")``).

    Args:
        name: shown in logs and tracking (default: the function name).
        experiment: the MLflow experiment its runs go to (default: the flow name).
        tracking: record runs in MLflow (default True).
    """
    if fn is None:
        return functools.partial(_flow_from_options, options=options)
    return Flow(fn, **options)


def _flow_from_options(fn: Callable[..., Any], options: dict[str, Any]) -> Flow[..., Any]:
    return Flow(fn, **options)


def _sync_backend() -> Backend:
    from mlorch.core.local import SyncBackend

    return SyncBackend()
