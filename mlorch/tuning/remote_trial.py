"""A plain Optuna objective on a worker, with every Optuna call answered by the sweep driver.

The worker gets a :class:`RemoteTrial`, a real ``optuna.Trial`` subclass (so
``isinstance`` holds and helpers such as ``optuna.artifacts.upload_artifact`` or
``optuna.terminator.report_cross_validation_scores`` work), whose ``suggest_*``,
``report``, ``should_prune``, ``set_user_attr`` and storage calls (``trial.storage``,
``trial.study``'s reads) travel to the driver. There, :class:`TrialServer` calls the
driver's own ``optuna.Trial`` (the one ``study.ask()`` returned, holding the sweep's
sampler and pruner) and the driver's storage. So the sampler is the driver's one object,
as in ``study.optimize``: a stateful or custom sampler does not repeat itself on copies,
TPE's constant liar sees every trial in flight, and workers never open the storage.

Transport: where the scheduler runs in the driver's process (dask-jobqueue clusters), a
scheduler handler (as optuna-integration's ``DaskStorage`` registers its own), so calls
take the workers' existing TLS connections; :func:`serve_trials` finds out by registering
through ``run_on_scheduler`` and looking for the server in the module's registry, which
only the driver's process has. On mlorch's local cluster, whose scheduler is a process of
its own (``execution/scheduler_process.py``), the driver listens itself: a ``distributed``
comm server on 127.0.0.1 (``_Endpoint``) whose address travels with the trial. Elsewhere
(``kind: address``: a scheduler and workers that may be on other machines) it returns
None and the sweep keeps the storage-based path of ``objective.py`` (the worker reopens
the journal and samples with a copy of the sampler). On the worker a call is
``<peer>.<handler>(payload=...)`` on the worker's own connection pool (the scheduler or
the endpoint); requests and replies are pickled (values as plain in-memory Optuna accepts
them, numpy arrays included). The event loop only forwards: the calls run on the server's
thread, one at a time in arrival order (and one at a time with the driver thread's
pre-suggestions, under the server's lock).

Speed: a round trip per ``suggest_*`` would cost more than a trivial objective. Right
after the trial is asked, the driver thread *pre-suggests* every parameter earlier trials
asked for (same name and distribution, in the order first seen, with the driver's trial, so the
values are in the storage before the trial leaves and the sampler is called in the order
``study.optimize`` would call it) and sends them with the trial; the worker's
``suggest_*`` of such a parameter is then local. Only a new parameter or a changed
distribution asks the driver. A parameter is pre-suggested only while every trial that
returned asked for it, with one distribution: one first asked for after a trial returned
without it, one a returned trial did not ask for, and one asked with a second distribution
are conditional or dynamic, and every trial asks the driver for them from then on.

Limits: the first time a parameter turns out conditional or dynamic, trials already
pre-suggested may differ from ``study.optimize``: a trial that does not ask for a
pre-suggested parameter still has it in its params (the sampler drew it), and one asking
with a changed distribution gets the pre-suggested value (as Optuna does for a name asked
twice in one trial: an incompatible distribution raises, a compatible one warns). A
parameter asked in the first trials in flight and then skipped by the first trial to
return is the typical case; objectives whose parameters are always the same never meet it.

Optuna internals, through ``optuna_private`` (checked against optuna 5.0.0): ``Trial._suggest``
(the one funnel of ``suggest_float``/``suggest_int``/``suggest_categorical``) is overridden on
the worker and called on the driver; the per-thread trial cache of ``Study`` is dropped before
the server's thread samples for another trial (see ``TrialServer._sampling_for``).
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import weakref
from collections.abc import Callable, Container, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, check_distribution_compatibility
from optuna.storages import BaseStorage, InMemoryStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from mlorch.log import get_logger
from mlorch.tuning.optuna_private import FrozenStudy, cached_trial, drop_thread_cache, storage_of, suggest_on, trial_id

__all__ = ["RemoteTrial", "RemoteTrialSpec", "Returned", "TrialServer", "event_loop", "serve_trials"]

log = get_logger("mlorch.sweep")
HANDLER_PREFIX = "mlorch_trial_"
_servers: dict[str, weakref.ref[TrialServer]] = {}  # this process's servers, by handler name
_servers_lock = threading.Lock()
# Storage writes whose last argument is a value the storage may have to write as JSON.
_VALUE_WRITES = frozenset({"set_trial_user_attr", "set_trial_system_attr", "set_study_user_attr", "set_study_system_attr"})


@dataclass(frozen=True)
class RemoteTrialSpec:
    """What the worker needs to build its :class:`RemoteTrial` (pickled with the task)."""

    handler: str
    trial_id: int
    study_name: str
    study_id: int
    directions: tuple[StudyDirection, ...]
    trial: FrozenTrial  # as the driver holds it after pre-suggesting
    address: str | None = None  # the driver's own endpoint; None: through the scheduler's handler


@dataclass(frozen=True)
class Returned:
    """What a RemoteTrial's task returns: the objective's value and the parameters it asked for."""

    value: Any
    asked: frozenset[str]


# -- the driver's side ---------------------------------------------------------------------


def serve_trials(study: optuna.Study, client: Any, name: str, local: bool = False) -> TrialServer | None:
    """A server answering workers' trial calls, or None if workers cannot reach the driver.

    Through a handler on the scheduler where it runs in this process (batch clusters); on a
    ``local`` cluster, whose scheduler is a process of its own, through a comm server of the
    driver's on the loopback interface (``_Endpoint``); else None.
    """
    import uuid

    handler = f"{HANDLER_PREFIX}{uuid.uuid4().hex}"
    server = TrialServer(study, handler, name)
    with _servers_lock:
        _servers[handler] = weakref.ref(server)
    weakref.finalize(server, _forget_server, handler)
    try:
        attached = bool(client.run_on_scheduler(_attach, handler=handler))
    except Exception as exc:  # e.g. a scheduler process that cannot import mlorch
        log.debug("sweep '%s': no trial server on the scheduler: %s", name, exc)
        attached = False
    if attached:
        return server
    if local:
        try:
            server.endpoint = _Endpoint(client, handler)
            return server
        except Exception as exc:  # noqa: BLE001 - the storage-based path still works
            log.warning("sweep '%s': could not listen for trial calls: %s", name, exc)
    _forget_server(handler)
    log.info("sweep '%s': the scheduler runs in another process; objective trials reopen the study on the workers", name)
    return None


def event_loop(client: Any) -> asyncio.AbstractEventLoop:
    """The asyncio loop a (synchronous) client's IO thread runs, for coroutines started from other threads."""
    loop: asyncio.AbstractEventLoop = client.loop.asyncio_loop
    return loop


def _answerer(handler: str) -> Callable[..., Any]:
    """The comm handler for a sweep's trial calls (it finds the sweep's server by name)."""

    async def answer(comm: Any = None, payload: bytes = b"") -> bytes:
        server = _server(handler)
        if server is None:
            return _reply(False, RuntimeError("the sweep that ran this trial has ended"))
        return await asyncio.wrap_future(server.submit(payload))

    return answer


def _attach(handler: str, dask_scheduler: Any = None) -> bool:
    """Runs on the scheduler: register the handler if this is the driver's process."""
    with _servers_lock:
        if handler not in _servers:
            return False
    dask_scheduler.handlers[handler] = _answerer(handler)
    return True


class _Endpoint:
    """The driver's own ``distributed`` comm server for trial calls, on the client's event loop,
    listening on the loopback interface with the client's security (the local cluster's
    workers run on this machine)."""

    def __init__(self, client: Any, handler: str):
        self._loop = event_loop(client)
        security = client.security
        scheme = str(client.scheduler.address).split("://", 1)[0]

        async def start() -> tuple[Any, str]:
            from distributed.core import Server

            server = Server({handler: _answerer(handler)}, connection_args=security.get_connection_args("scheduler"))
            await server
            await server.listen(f"{scheme}://127.0.0.1:0", **security.get_listen_args("scheduler"))
            return server, str(server.address)

        self._server, self.address = asyncio.run_coroutine_threadsafe(start(), self._loop).result(30)

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._server.close(), self._loop).result(10)
        except Exception as exc:  # the loop may be closing with the cluster
            log.debug("trial endpoint %s: %s", self.address, exc)


def _detach(handler: str, dask_scheduler: Any = None) -> bool:
    """Runs on the scheduler: drop the sweep's handler."""
    return dask_scheduler is not None and dask_scheduler.handlers.pop(handler, None) is not None


def _forget_server(handler: str) -> None:
    with _servers_lock:
        _servers.pop(handler, None)


def _server(handler: str) -> TrialServer | None:
    with _servers_lock:
        ref = _servers.get(handler)
    return ref() if ref is not None else None


def _reply(ok: bool, value: Any) -> bytes:
    from distributed.protocol.pickle import dumps

    try:
        return bytes(dumps((ok, value)))
    except Exception as exc:  # an unpicklable result or error: say what it was
        return bytes(dumps((False, RuntimeError(f"{type(value).__name__}: {value} (could not be sent: {exc})"))))


class TrialServer:
    """The driver's end: its trials by id, the parameters worth pre-suggesting, one Optuna thread."""

    presuggest = True  # False: every suggest_* of a worker is a round trip (the reference behaviour)

    def __init__(self, study: optuna.Study, handler: str, sweep: str):
        self.study = study
        self.storage = storage_of(study)
        self.handler = handler
        self.sweep = sweep
        self.json_only = not isinstance(self.storage, InMemoryStorage)
        self.trials: dict[int, optuna.Trial] = {}
        self.known: dict[str, BaseDistribution] = {}  # in the order first asked for
        self.volatile: set[str] = set()
        self.returned = 0  # trials that returned a value (so asked for every parameter they need)
        self._sampling: int | None = None  # the trial this thread last sampled for
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlorch-trial-server")
        self._optuna = threading.Lock()  # the driver's Optuna calls for this server, one at a time
        self.endpoint: _Endpoint | None = None  # set where workers call the driver directly

    def submit(self, payload: bytes) -> Future[bytes]:
        return self._executor.submit(self._answer, payload)

    def shutdown(self, client: Any = None) -> None:
        """The sweep is over: its thread ends, and the scheduler forgets its handler (late calls of a
        zombie trial then get "the sweep has ended") or the endpoint closes (they fail to connect,
        and the zombie's task fails; its trial was told long ago). Never raises."""
        _forget_server(self.handler)
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.endpoint is not None:
            self.endpoint.close()
        elif client is not None:
            try:
                client.run_on_scheduler(_detach, handler=self.handler)
            except Exception as exc:  # the cluster may be closing
                log.debug("sweep '%s': could not remove the trial handler: %s", self.sweep, exc)

    def open(self, trial: optuna.Trial) -> RemoteTrialSpec:
        """Serve ``trial`` (pre-suggesting the known parameters); what the worker gets. Called
        by the driver thread right after ``ask`` (so its samples see the study as ``ask`` left
        it, as in ``study.optimize``), one Optuna call at a time with the server's thread."""
        with self._optuna:
            return self._open(trial)

    def close(self, trial: optuna.Trial, returned: Returned | None) -> Any:
        """The trial's task ended; ``returned`` if it returned (not raised). The objective's value.
        Never raises: the driver must hear of every trial's end."""
        try:
            with self._optuna:
                self._close(trial, returned)
        except Exception as exc:  # bookkeeping only: the trial's outcome does not depend on it
            log.warning("sweep '%s': trial server could not close trial %d: %s", self.sweep, trial.number, exc)
        return None if returned is None else returned.value

    def _sampling_for(self, tid: int) -> None:
        """Optuna caches the study's trials per thread from a trial's first sample until the next
        ``ask``/``tell`` on that thread (``Study._thread_local``, optuna 5.0.0). This thread asks and
        tells nothing, so it drops the cache when it samples for another trial than last time:
        each trial's samplers see the study as of its first sample, as under ``study.optimize``."""
        if self._sampling != tid:
            self._sampling = tid
            drop_thread_cache(self.study)

    def _open(self, trial: optuna.Trial) -> RemoteTrialSpec:
        tid = trial_id(trial)
        self.trials[tid] = trial
        self._sampling = None  # the server thread's next sample takes a fresh view of the study
        if self.presuggest:
            asked = trial.distributions
            for name, distribution in list(self.known.items()):
                if name not in asked:
                    suggest_on(trial, name, distribution)
        return RemoteTrialSpec(
            handler=self.handler,
            trial_id=tid,
            study_name=self.study.study_name,
            study_id=self.storage.get_study_id_from_name(self.study.study_name),
            directions=tuple(self.study.directions),
            trial=copy.deepcopy(self.storage.get_trial(tid)),
            address=None if self.endpoint is None else self.endpoint.address,
        )

    def _close(self, trial: optuna.Trial, returned: Returned | None) -> None:
        self.trials.pop(trial_id(trial), None)
        if returned is not None:  # it asked for every parameter it needed: the others are conditional
            self.returned += 1
            for name in [n for n in self.known if n not in returned.asked]:
                self._forget(name)

    def _forget(self, name: str) -> None:
        self.known.pop(name, None)
        self.volatile.add(name)

    def _learn(self, name: str, distribution: BaseDistribution) -> None:
        if name in self.volatile:
            return
        known = self.known.get(name)
        if known is None and self.returned:  # a trial returned without it: conditional
            self.volatile.add(name)
        elif known is None:
            self.known[name] = distribution
        elif known != distribution:
            self._forget(name)

    def _answer(self, payload: bytes) -> bytes:
        from distributed.protocol.pickle import loads

        try:
            request = loads(payload)
            with self._optuna:
                return _reply(True, self._call(request[0], *request[1:]))
        except BaseException as exc:  # noqa: BLE001 - raised again on the worker
            return _reply(False, exc)

    def _call(self, op: str, *args: Any) -> Any:
        if op == "storage":
            method, arguments = args
            if method in _VALUE_WRITES:
                arguments = (*arguments[:-1], self._storable(arguments[-1]))
            return getattr(self.storage, method)(*arguments)
        tid, *rest = args
        trial = self.trials.get(tid)
        if trial is None:
            raise RuntimeError(f"sweep '{self.sweep}': trial id {tid} is no longer running (timed out or ended)")
        if op == "suggest":
            name, distribution = rest
            self._learn(name, distribution)
            self._sampling_for(tid)
            return suggest_on(trial, name, distribution)
        if op == "report":
            return trial.report(*rest)
        if op == "should_prune":
            return trial.should_prune()
        if op == "set_user_attr":
            key, value = rest
            return trial.set_user_attr(key, self._storable(value))
        raise ValueError(f"unknown trial call {op!r}")

    def _storable(self, value: Any) -> Any:
        """``value`` as the storage can write it: JSON for a journal or a database, as is in memory."""
        if not self.json_only:
            return value
        try:
            json.dumps(value)
            return value
        except (TypeError, ValueError):
            return json.loads(json.dumps(value, default=_plain))


def _plain(value: Any) -> Any:
    """numpy arrays and scalars (and anything else with ``tolist``/``item``) as JSON values."""
    for method in ("tolist", "item"):
        convert = getattr(value, method, None)
        if callable(convert):
            return convert()
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"a {type(value).__name__} cannot be stored as JSON: {value!r}")


# -- the worker's side ---------------------------------------------------------------------


class _Channel:
    """Calls to the driver through the worker's connection pool: to the driver's endpoint,
    or to the scheduler (which runs in the driver's process) where there is none."""

    def __init__(self, handler: str, address: str | None = None):
        from distributed import get_worker

        self.handler = handler
        self.address = address
        self.worker = get_worker()

    def __call__(self, *request: Any) -> Any:
        from distributed.protocol.pickle import dumps, loads
        from distributed.utils import sync

        peer = self.worker.scheduler if self.address is None else self.worker.rpc(self.address)
        send = getattr(peer, self.handler)
        ok, value = loads(sync(self.worker.loop, send, payload=bytes(dumps(request))))
        if not ok:
            raise value
        return value


class _DriverSampler(optuna.samplers.BaseSampler):
    """The worker's study's sampler: sampling is the driver's (a RemoteTrial never calls it)."""

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        raise RuntimeError("in an mlorch sweep, the driver samples; ask the trial (trial.suggest_*), not the study's sampler")


class RemoteTrial(optuna.Trial):
    """The ``optuna.Trial`` an objective gets on a worker (see the module docstring)."""

    def __init__(self, spec: RemoteTrialSpec, pruner: optuna.pruners.BasePruner, call: Callable[..., Any] | None = None):
        self._driver = call if call is not None else _Channel(spec.handler, spec.address)
        self._id = spec.trial_id
        storage = RemoteStorage(self._driver, spec)
        study = optuna.Study(spec.study_name, storage=storage, sampler=_DriverSampler(), pruner=pruner)
        super().__init__(study, spec.trial_id)
        self.asked: set[str] = set()  # names the objective asked for (some the driver pre-suggested)

    def _suggest(self, name: str, distribution: BaseDistribution) -> Any:
        self.asked.add(name)
        cached = cached_trial(self)
        if cached.distributions.get(name) == distribution:  # pre-suggested, or asked before
            return cached.params[name]
        if name in cached.distributions:
            check_distribution_compatibility(cached.distributions[name], distribution)
        value = self._driver("suggest", self._id, name, distribution)
        if name not in cached.distributions:
            cached.distributions[name] = distribution
            cached.params[name] = value
        return value

    def report(self, value: float, step: int) -> None:
        self._driver("report", self._id, value, step)
        cached_trial(self).intermediate_values.setdefault(step, float(value))

    def should_prune(self) -> bool:
        return bool(self._driver("should_prune", self._id))

    def set_user_attr(self, key: str, value: Any) -> None:
        self._driver("set_user_attr", self._id, key, value)
        cached_trial(self).user_attrs[key] = value


class RemoteStorage(BaseStorage):
    """``trial.storage`` on a worker: every call is the driver's storage's (the study's id,
    name and directions, and the trial's first read, are known locally)."""

    def __init__(self, call: Callable[..., Any], spec: RemoteTrialSpec):
        self._driver = call
        self._spec = spec
        self._first_read: FrozenTrial | None = copy.deepcopy(spec.trial)

    def _forward(self, method: str, *args: Any) -> Any:
        return self._driver("storage", method, args)

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return int(self._forward("create_new_study", directions, study_name))

    def delete_study(self, study_id: int) -> None:
        self._forward("delete_study", study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._forward("set_study_user_attr", study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._forward("set_study_system_attr", study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        if study_name == self._spec.study_name:
            return self._spec.study_id
        return int(self._forward("get_study_id_from_name", study_name))

    def get_study_name_from_id(self, study_id: int) -> str:
        if study_id == self._spec.study_id:
            return self._spec.study_name
        return str(self._forward("get_study_name_from_id", study_id))

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        if study_id == self._spec.study_id:
            return list(self._spec.directions)
        return list(self._forward("get_study_directions", study_id))

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return dict(self._forward("get_study_user_attrs", study_id))

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return dict(self._forward("get_study_system_attrs", study_id))

    def get_all_studies(self) -> list[FrozenStudy]:
        return list(self._forward("get_all_studies"))

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return int(self._forward("create_new_trial", study_id, template_trial))

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: BaseDistribution
    ) -> None:
        self._forward("set_trial_param", trial_id, param_name, param_value_internal, distribution)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return int(self._forward("get_trial_id_from_study_id_trial_number", study_id, trial_number))

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        return bool(self._forward("set_trial_state_values", trial_id, state, values))

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._forward("set_trial_intermediate_value", trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._forward("set_trial_user_attr", trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._forward("set_trial_system_attr", trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        first = self._first_read
        if first is not None and trial_id == self._spec.trial_id:  # optuna.Trial.__init__'s read
            self._first_read = None
            return first
        trial: FrozenTrial = self._forward("get_trial", trial_id)
        return trial

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        if states is not None:
            states = tuple(s for s in TrialState if s in states)  # any container, sent as a tuple
        return list(self._forward("get_all_trials", study_id, False, states))
