"""Tracing a flow into a Dask graph, and the ``Ref`` a traced task call returns.

While a flow body runs, every task call appends one ``dask._task_spec.Task`` node
to the current ``Trace`` under a content-addressed key. Nothing runs until a value
is needed: ``ref.result()`` (branching), ``task.map(ref)`` (a fan-out whose width is
only known at run time) or the end of the flow. Then the traced graph is handed to
the trace's backend (a distributed Client, or dask's synchronous scheduler); keys the
backend already holds are not recomputed, so the graph "continues from there".

Nodes are grouped into HighLevelGraph layers by their resource annotations, because
distributed reads restrictions from layer annotations.

An argument of ``LARGE_ARGUMENT_BYTES`` or more (an array, a long bytes string) becomes
a data node of its own, keyed by its content, that the tasks using it depend on: it is
in the graph once however many tasks take it, and a distributed backend scatters it
once instead of shipping a copy inside every task.
"""

from __future__ import annotations

import contextvars
import hashlib
import operator
from collections.abc import Iterator, Mapping
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from dask.sizeof import sizeof

from mlorch.core import dask_private as ts
from mlorch.core.runtime import TaskCall, execute, observe_arguments, pickle_problem
from mlorch.errors import FlowDefinitionError, SerializationError, TaskArgumentError

if TYPE_CHECKING:
    from mlorch.core.flow import Flow
    from mlorch.core.task import Task

__all__ = ["LARGE_ARGUMENT_BYTES", "Backend", "FlowGraph", "Ref", "Trace", "current_trace"]

# From this size (dask.sizeof) an argument is a graph node of its own, sent once.
LARGE_ARGUMENT_BYTES = 1 << 20

_trace: contextvars.ContextVar[Trace | None] = contextvars.ContextVar("mlorch_trace", default=None)

_PRIMITIVES = (int, float, str, bytes, bool, complex, type(None))


def current_trace() -> Trace | None:
    return _trace.get()


class Backend(Protocol):
    """Where a trace's nodes run; ``compute`` must keep results it returns available by key."""

    def compute(self, trace: Trace, keys: list[str]) -> list[Any]: ...


class Ref:
    """The future result of a task call inside a flow.

    Pass it to other tasks (it becomes a graph edge), index it (``ref["score"]``),
    or call ``.result()`` to fetch the value into the flow body, e.g. to branch.
    """

    __slots__ = ("key", "task_name", "_trace")

    def __init__(self, key: str, task_name: str, trace: Trace):
        self.key = key
        self.task_name = task_name
        self._trace = trace

    def result(self) -> Any:
        """Run what this value needs (if not yet run) and return it."""
        return self._trace.values([self.key])[0]

    def __getitem__(self, item: Any) -> Ref:
        return self._trace.add_builtin("getitem", operator.getitem, (self, item))

    def __bool__(self) -> bool:
        raise TypeError(
            f"the truth of task result '{self.task_name}' is not known while the flow is traced; "
            f"use `{self.task_name}_result.result()` to branch on its value"
        )

    def __iter__(self) -> Iterator[Any]:
        raise TypeError(
            f"cannot iterate over the result of task '{self.task_name}' while tracing; "
            "fan out with `some_task.map(ref)`, or call `.result()` to fetch it"
        )

    def __repr__(self) -> str:
        return f"<mo.Ref {self.key}>"


class FlowGraph(HighLevelGraph):
    """A flow's Dask graph plus the keys that make up its return value."""

    outputs: list[str]

    def to_delayed(self) -> list[Delayed]:
        """One ``dask.delayed.Delayed`` per output key, computable with ``dask.compute``."""
        layer_of = {k: name for name, layer in self.layers.items() for k in layer}
        return [Delayed(k, self, layer=layer_of[k]) for k in self.outputs]


@dataclass
class Trace:
    """The graph being built by one flow run."""

    backend: Backend
    run: Mapping[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None
    check_pickle: bool = True
    salt: str = ""  # mixed into every key: a run that must not reuse another's results (a noisy objective)
    remote: bool = False  # tasks run in other processes (see TaskCall.remote); default: the backend's ``remote``
    nodes: dict[str, ts.GraphNode] = field(default_factory=dict)
    data_keys: set[str] = field(default_factory=set)  # large arguments, one node each
    # dask tokens of large arguments by id (the value kept alive with it): hashing 100 MB
    # once for its node and once more for every task key that covers it would dominate tracing
    tokens: dict[int, tuple[Any, str]] = field(default_factory=dict)
    deps: dict[str, frozenset[str]] = field(default_factory=dict)
    resources: dict[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    has_dependents: set[str] = field(default_factory=set)
    flow_stack: list[Flow[..., Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.remote = self.remote or bool(getattr(self.backend, "remote", False))

    # -- building -----------------------------------------------------------------
    def add(self, task: Task[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Ref:
        try:
            task.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TaskArgumentError(
                f"task '{task.name}{_plain(task.signature)}' cannot be called with {_describe_call(args, kwargs)}: {exc}"
            ) from None
        observe_arguments(task, args, kwargs)
        deps: set[str] = set()
        spec_args = [self._spec(a, deps, task.name, i) for i, a in enumerate(args)]
        spec_kwargs = {k: self._spec(v, deps, task.name, k) for k, v in kwargs.items()}
        key = f"{task.name}-{_digest(task.token + self.salt, args, kwargs, self.tokens)}"
        if key not in self.nodes:
            call = TaskCall(task, key, self.run, self.cache_dir, self.remote)
            self.nodes[key] = ts.Task(key, execute, call, *spec_args, **spec_kwargs)
            self._link(key, deps, task.name, tuple(sorted(task.resources.items())))
        return Ref(key, task.name, self)

    def add_builtin(self, name: str, fn: Any, args: tuple[Any, ...]) -> Ref:
        """A light helper node (getitem, len) that is not a user task."""
        deps: set[str] = set()
        spec_args = [self._spec(a, deps, name, i) for i, a in enumerate(args)]
        key = f"{name}-{_digest(name, args, {}, self.tokens)}"
        if key not in self.nodes:
            self.nodes[key] = ts.Task(key, fn, *spec_args)
            self._link(key, deps, name, ())
        return Ref(key, name, self)

    def _link(self, key: str, deps: set[str], name: str, resources: tuple[tuple[str, float], ...]) -> None:
        self.deps[key] = frozenset(deps)
        self.names[key] = name
        self.resources[key] = resources
        self.has_dependents.update(deps)

    def _spec(self, value: Any, deps: set[str], task: str, where: Any, nested: bool = False) -> Any:
        """Turn Refs inside ``value`` into graph references, checking the rest can travel."""
        if isinstance(value, _PRIMITIVES):
            if isinstance(value, (bytes, str)) and len(value) >= LARGE_ARGUMENT_BYTES:
                return self._data(value, deps, nested)
            return value
        if isinstance(value, Ref):
            if value._trace is not self:
                raise FlowDefinitionError(
                    f"task '{task}' got a result of task '{value.task_name}' from another flow run; "
                    "results cannot be shared between runs"
                )
            deps.add(value.key)
            return ts.Alias(value.key) if nested else ts.TaskRef(value.key)
        container = type(value)
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple: rebuilt field by field
            inner_nt: set[str] = set()
            items = [self._spec(v, inner_nt, task, where, True) for v in value]
            if not inner_nt:
                return value
            deps.update(inner_nt)
            return ts.parse_input(container(*items))
        if container in (list, tuple, set, frozenset, dict):
            inner: set[str] = set()
            if container is dict:
                built: Any = {k: self._spec(v, inner, task, where, True) for k, v in value.items()}
            else:
                built = container(self._spec(v, inner, task, where, True) for v in value)
            if not inner:
                return built
            deps.update(inner)
            return ts.parse_input(built)  # a List/Dict/... node that resolves its members
        if isinstance(value, (MappingABC, list, tuple, set, frozenset)) and _contains_ref(value):
            raise FlowDefinitionError(
                f"task '{task}': argument {where!r} is a {container.__name__} holding task results; "
                "pass them in a plain list, tuple, dict or namedtuple so they become graph edges"
            )
        if self.check_pickle:
            _check_picklable(value, task, where)
        if sizeof(value) >= LARGE_ARGUMENT_BYTES:
            return self._data(value, deps, nested)
        return value

    def _data(self, value: Any, deps: set[str], nested: bool) -> Any:
        """A large argument as a node of its own, keyed by content, so it travels once."""
        key = f"argument-{_token(value, self.tokens)}"
        if key not in self.nodes:
            self.nodes[key] = ts.DataNode(key, value)
            self._link(key, set(), "argument", ())
            self.data_keys.add(key)
        deps.add(key)
        return ts.Alias(key) if nested else ts.TaskRef(key)

    # -- running ------------------------------------------------------------------
    def values(self, keys: list[str]) -> list[Any]:
        return self.backend.compute(self, keys)

    def elements(self, ref: Ref) -> list[Ref]:
        """Refs to each element of an upstream result, whose length is fetched (not its data)."""
        length = self.add_builtin("len", len, (ref,)).result()
        return [ref[i] for i in range(length)]

    def ancestors(self, keys: list[str]) -> set[str]:
        """``keys`` and every key they depend on."""
        seen: set[str] = set()
        stack = list(keys)
        while stack:
            key = stack.pop()
            if key in seen:
                continue
            seen.add(key)
            stack.extend(self.deps[key])
        return seen

    def leaves(self) -> list[str]:
        """Keys nothing else consumes: side-effect tasks must run even if not returned."""
        return [k for k in self.nodes if k not in self.has_dependents]

    def graph(self, keys: set[str] | None = None, outputs: list[str] | None = None) -> FlowGraph:
        """The traced nodes (or the subset ``keys``) as a HighLevelGraph with one layer per resource set."""
        selected = self.nodes.keys() if keys is None else keys
        groups: dict[tuple[tuple[str, float], ...], dict[str, ts.GraphNode]] = {}
        for key in selected:
            groups.setdefault(self.resources[key], {})[key] = self.nodes[key]
        layer_names = {res: ("mlorch-" + tokenize(res)[:8]) for res in groups}
        layer_of = {key: layer_names[res] for res, nodes in groups.items() for key in nodes}
        layers: dict[str, MaterializedLayer] = {}
        dependencies: dict[str, set[str]] = {}
        for res, nodes in groups.items():
            name = layer_names[res]
            annotations = {"resources": dict(res)} if res else None
            layers[name] = MaterializedLayer(nodes, annotations=annotations)
            # a dependency outside ``keys`` is one the backend already holds (a scattered argument)
            dependencies[name] = {layer_of[d] for k in nodes for d in self.deps[k] if d in layer_of and layer_of[d] != name}
        graph = FlowGraph(layers, dependencies)
        graph.outputs = list(outputs or [])
        return graph

    def resource_requests(self, keys: set[str] | None = None) -> dict[tuple[tuple[str, float], ...], str]:
        """Distinct resource requests among ``keys`` -> one task name asking for it."""
        out: dict[tuple[tuple[str, float], ...], str] = {}
        for key in self.nodes if keys is None else keys:
            res = self.resources[key]
            if res and res not in out:
                out[res] = self.names[key]
        return out

    def activate(self) -> contextvars.Token[Trace | None]:
        return _trace.set(self)

    @staticmethod
    def deactivate(token: contextvars.Token[Trace | None]) -> None:
        _trace.reset(token)


def collect_refs(value: Any, out: list[Ref]) -> None:
    """Every Ref inside a (nested) return value, in order."""
    if isinstance(value, Ref):
        out.append(value)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            collect_refs(v, out)
    elif isinstance(value, MappingABC):
        for v in value.values():
            collect_refs(v, out)


def _contains_ref(value: Any) -> bool:
    found: list[Ref] = []
    collect_refs(value, found)
    return bool(found)


def substitute(value: Any, results: Mapping[str, Any]) -> Any:
    """The return value with each Ref replaced by its computed result."""
    if isinstance(value, Ref):
        return results[value.key]
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [substitute(v, results) for v in value]
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
            return type(value)(*items)
        return type(value)(items)
    if isinstance(value, MappingABC):
        mapped = {k: substitute(v, results) for k, v in value.items()}
        try:
            return type(value)(mapped)  # type: ignore[call-arg]
        except TypeError:  # e.g. defaultdict, whose first argument is a factory
            return mapped
    return value


def _digest(
    identity: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], tokens: dict[int, tuple[Any, str]] | None = None
) -> str:
    """A 32-hex digest of a call: ``identity`` plus its arguments, each Ref standing for its key.

    Plain values (numbers, strings, containers of them) are written out directly, which is
    several times faster than ``dask.tokenize`` on the per-task hot path; anything else is
    tokenized by dask (deterministic for numpy, pandas and most picklable objects), as are
    strings and bytes of ``LARGE_ARGUMENT_BYTES`` or more; ``tokens`` remembers large values' tokens.
    """
    parts = [identity]
    _fingerprint(args, parts, tokens)
    _fingerprint(dict(sorted(kwargs.items())), parts, tokens)
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


def _fingerprint(value: Any, out: list[str], tokens: dict[int, tuple[Any, str]] | None = None) -> None:
    kind = type(value)
    if kind in (str, bytes) and len(value) >= LARGE_ARGUMENT_BYTES:
        out.append("dask:" + _token(value, tokens))
    elif kind in (int, float, bool, str, bytes, complex) or value is None:
        out.append(f"{kind.__name__}:{value!r}")
    elif kind is Ref:
        out.append("@" + value.key)
    elif kind in (list, tuple) or (isinstance(value, tuple) and hasattr(value, "_fields")):
        out.append(kind.__qualname__ + "[")
        for item in value:
            _fingerprint(item, out, tokens)
        out.append("]")
    elif kind in (set, frozenset):  # iteration order varies between processes
        items = []
        for item in value:
            sub: list[str] = []
            _fingerprint(item, sub, tokens)
            items.append("\x1f".join(sub))
        out.append("set{" + "\x1e".join(sorted(items)) + "}")
    elif kind is dict:
        out.append("dict{")
        for k, v in value.items():
            _fingerprint(k, out, tokens)
            _fingerprint(v, out, tokens)
        out.append("}")
    else:
        out.append("dask:" + _token(value, tokens))


def _token(value: Any, tokens: dict[int, tuple[Any, str]] | None) -> str:
    """``tokenize(value)``, remembered in ``tokens`` for values that large arguments are made of."""
    if tokens is not None:
        held = tokens.get(id(value))
        if held is not None and held[0] is value:
            return held[1]
    token = tokenize(value)
    if tokens is not None and sizeof(value) >= LARGE_ARGUMENT_BYTES:
        tokens[id(value)] = (value, token)
    return token


def _check_picklable(value: Any, task: str, where: Any) -> None:
    problem = pickle_problem(value)
    if problem is not None:
        label = f"argument {where!r}" if isinstance(where, str) else f"positional argument {where}"
        raise SerializationError(
            f"task '{task}': {label} of type {type(value).__name__} cannot be pickled, so it cannot be "
            f"sent to a worker ({type(problem).__name__}: {problem}). Pass something picklable (a path, a config "
            "dict) and open the resource inside the task."
        )


def _plain(signature: Any) -> str:
    """A signature as written, without the quotes postponed annotations add."""
    return str(signature).replace("'", "")


def _describe_call(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    parts = [type(a).__name__ for a in args] + [f"{k}={type(v).__name__}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"
