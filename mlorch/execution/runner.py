"""Running a flow on a distributed cluster: trace, check resources, submit, gather.

Intermediate results stay on the workers: the client holds futures (so keys are
computed once per run and reused by ``.result()`` and later submissions) but only
gathers the keys a caller asked for. Every key is submitted under its content
address, so two runs of the same task with the same inputs share one key. Large
arguments (the trace's data nodes) are scattered once per run, straight to a worker,
and tasks depend on their keys, so three tasks using a 100 MB array do not ship it
three times through the scheduler.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from distributed import Client, Future, as_completed

from mlorch.core.flow import Flow, set_runner
from mlorch.core.resources import describe, unmet
from mlorch.core.trace import Ref, Trace, collect_refs, substitute
from mlorch.errors import ResourceUnavailableError, TaskFailedError
from mlorch.execution.cluster import ClusterHandle, WorkerOffer, active_cluster, default_cluster
from mlorch.log import get_logger
from mlorch.names import KEY_SALT_INFO
from mlorch.project import cache_dir as default_cache_dir

log = get_logger("mlorch.runner")

__all__ = ["DistributedBackend", "FlowRun", "RunHook", "add_run_hook", "run_flow", "install"]


@dataclass
class FlowRun:
    """One execution of a flow, as hooks (tracking, sweeps) see it."""

    flow: Flow[..., Any]
    params: dict[str, Any]
    cluster: ClusterHandle
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    info: dict[str, Any] = field(default_factory=dict)  # hooks add ids workers need (e.g. MLflow run id)
    started: float = field(default_factory=time.time)
    failed_task: str | None = None


class RunHook(Protocol):
    """Extension points around a flow run; tracking is one."""

    def on_run_start(self, run: FlowRun) -> None: ...
    def on_run_end(self, run: FlowRun, result: Any, error: BaseException | None) -> None: ...


_hooks: list[Callable[[FlowRun], RunHook | None]] = []


def add_run_hook(factory: Callable[[FlowRun], RunHook | None]) -> None:
    """Register ``factory(run)``; it returns a hook for that run, or None to stay out."""
    if factory not in _hooks:
        _hooks.append(factory)


class DistributedBackend:
    """Submits parts of a trace to a Client and keeps their futures for the run."""

    remote = True  # tasks run in worker processes: results must pickle, errors travel by pickle

    def __init__(self, client: Client, offers: Callable[[], list[WorkerOffer]] | None = None):
        self.client = client
        self.futures: dict[str, Future] = {}
        self._offers: list[dict[str, float]] | None = None
        self._offer_source = offers

    def compute(self, trace: Trace, keys: list[str]) -> list[Any]:
        """Values for ``keys`` mid-trace; their ancestors stay held, since the rest of the flow may reuse them."""
        needed = trace.ancestors(keys)
        self.submit(trace, list(needed))
        return self.client.gather([self.futures[k] for k in keys])

    def submit(self, trace: Trace, keys: list[str]) -> list[Future]:
        """Futures for ``keys``; only what is not yet held is sent, with the ancestors it needs."""
        missing = [k for k in dict.fromkeys(keys) if k not in self.futures]
        if missing:
            needed = trace.ancestors(missing)
            self.check_resources(trace, needed)
            self.scatter_arguments(trace, needed)
            missing = [k for k in missing if k not in self.futures]
            if missing:
                futures = self.client.get(trace.graph(needed - trace.data_keys), missing, sync=False)
                self.futures.update(zip(missing, futures))
        return [self.futures[k] for k in keys]

    def scatter_arguments(self, trace: Trace, keys: set[str]) -> None:
        """Send the large arguments among ``keys`` to the cluster once, under their content keys."""
        wanted = {k: trace.nodes[k] for k in sorted(keys & trace.data_keys) if k not in self.futures}
        if wanted:
            values = {k: node.value for k, node in wanted.items()}  # type: ignore[attr-defined]  # DataNode
            self.futures.update(self.client.scatter(values, hash=False))

    def check_resources(self, trace: Trace, keys: set[str]) -> None:
        """Fail fast on a request no worker can ever meet (distributed would wait forever)."""
        requests = trace.resource_requests(keys)
        if not requests:
            return
        for attempt in (0, 1):
            if self._offers is None or attempt:
                if self._offer_source is not None:
                    self._offers = [dict(o.resources) for o in self._offer_source()]
                else:
                    info = self.client.scheduler_info(n_workers=-1)["workers"]
                    self._offers = [dict(w.get("resources") or {}) for w in info.values()]
            offers = self._offers
            missing = {req: name for req, name in requests.items() if unmet(offers, req)}
            if not missing:
                return
        req, name = next(iter(missing.items()))
        raise ResourceUnavailableError(
            f"task '{name}' asks for resources {dict(req)}, but no worker of this cluster has them "
            f"(workers offer: {describe(offers)}). Start the cluster with enough slots, e.g. "
            f"mo.cluster(gpus=1) or `gpus: 1` in the cluster YAML."
        )

    def release(self) -> None:
        for future in self.futures.values():
            future.release()
        self.futures.clear()


def run_flow(
    flow: Flow[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    cluster: ClusterHandle | None = None,
    progress: bool = False,
    cache_dir: str | None = None,
    extra_hooks: list[RunHook] | None = None,
    info: dict[str, Any] | None = None,
    backend: DistributedBackend | None = None,
) -> Any:
    """Trace ``flow`` on ``cluster`` (default: the active one), run it, return concrete values.

    ``info`` presets ``FlowRun.info`` (what workers see as ``mo.context().run``); a sweep
    uses it to hand a trial its MLflow child run and trial number. ``backend`` lets a
    sweep keep keys shared by its trials (its ``release()`` decides what is let go).
    """
    handle = cluster or active_cluster() or default_cluster()
    run = FlowRun(flow=flow, params=flow.bind(args, kwargs), cluster=handle, info=dict(info or {}))
    hooks = [h for h in (factory(run) for factory in _hooks) if h is not None] + list(extra_hooks or [])
    started: list[RunHook] = []
    owner = None
    if backend is None:  # a run of its own (a sweep's trials share the sweep's demand)
        backend = DistributedBackend(handle.client, offers=handle.offers)
        owner = f"flow-{run.run_id}"
        handle.want(owner, -1)
    result: Any = None
    error: BaseException | None = None
    trace: Trace | None = None
    try:
        for hook in hooks:
            hook.on_run_start(run)
            started.append(hook)
        trace = Trace(
            backend=backend,
            run=run.info,
            cache_dir=str(cache_dir or default_cache_dir()),
            salt=str(run.info.get(KEY_SALT_INFO, "")),
        )
        value = flow.trace_into(trace, (), run.params)
        refs: list[Ref] = []
        collect_refs(value, refs)
        outputs = [r.key for r in refs]
        futures = backend.submit(trace, outputs + trace.leaves())
        if futures:
            with handle.client.as_current():
                if progress:
                    from distributed import progress as show_progress

                    show_progress(futures, multi=False)
                for done in as_completed(futures):  # a failure surfaces at once, not after the rest
                    if done.status == "error":
                        break
        for future in futures:
            if future.status == "error":
                exc = future.exception()
                key = str(getattr(exc, "task", None) or future.key)  # KilledWorker names the key
                run.failed_task = trace.names.get(key, key)
                if isinstance(exc, TaskFailedError) and exc.cause is not None and exc.__cause__ is None:
                    exc.__cause__ = exc.cause  # the worker could not chain it (see core/runtime.py)
                future.result()  # raises the task's error here
        values = handle.client.gather(futures[: len(outputs)]) if outputs else []
        result = substitute(value, dict(zip(outputs, values)))
        return result
    except BaseException as exc:
        error = exc
        failed = getattr(exc, "task", None)
        if run.failed_task is None and failed:
            run.failed_task = trace.names.get(str(failed), str(failed)) if trace is not None else str(failed)
        raise
    finally:
        backend.release()
        if owner is not None:
            handle.want(owner, None)
        _end_hooks(started, run, result, error)


def _end_hooks(hooks: list[RunHook], run: FlowRun, result: Any, error: BaseException | None) -> None:
    """End every started hook, even if one fails; a hook's own error never hides the run's.

    A hook may raise a BaseException on purpose (tracking re-raises a SIGTERM it deferred
    while ending the run): that one is re-raised once all hooks have ended.
    """
    deferred: BaseException | None = None
    for hook in reversed(hooks):
        try:
            hook.on_run_end(run, result, error)
        except Exception:
            log.exception("run hook %r failed while ending run %s", hook, run.run_id)
        except BaseException as exc:  # noqa: BLE001 - a deferred signal, re-raised below
            deferred = deferred or exc
    if deferred is not None:
        raise deferred


def _graph_backend() -> DistributedBackend | Any:
    handle = active_cluster()
    if handle is None:
        from mlorch.core.local import SyncBackend

        return SyncBackend()
    return DistributedBackend(handle.client)


def install() -> None:
    """Make top-level flow calls run through ``run_flow``."""
    set_runner(run_flow, _graph_backend)
