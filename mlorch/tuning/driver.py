"""The sweep loop: ask a trial per free slot, run it on the cluster, tell it when it ends.

One driver thread owns the Optuna study (the only writer for flow targets). It
keeps ``limit()`` trials in flight and reacts to one queue of events:

- ``done``    a flow trial's thread finished (value, or the error);
- ``pushed``  an objective's task sent its value (a worker event, before the task ends);
- ``finished`` an objective's task ended (``Future.add_done_callback``): without a
              pushed value (an error, a cancel, a large value) its result is gathered on the
              client's loop, and comes back as ``returned``;
- ``report``  a task called ``mo.report`` (worker event): ``trial.report`` +
              ``should_prune``; pruning sets the trial's distributed ``Event``;
- ``learned`` the first trace showed which resources a flow's tasks ask for.

Each flow trial runs in its own short-lived thread: it calls ``run_flow`` (so the
tracking hook and every flow feature work unchanged) with a backend that holds shared
keys in the sweep's :class:`~mlorch.tuning.pool.KeyPool`. Threads rather than a single
``as_completed`` loop because tracing a flow may block (``ref.result()`` branches,
``task.map(ref)``). An objective trial is one task: the driver thread pre-suggests and
submits it, and its result is gathered on the client's event loop; no thread per
trial, for a driver process whose one GIL bounds a plain objective's sweep.

Finished = COMPLETE + PRUNED + FAIL, except trials closed because a previous
driver died (user attribute ``mlorch.interrupted``): their parameters are run again.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from mlorch.core.resources import describe, unmet
from mlorch.errors import ConfigError, MlorchError, ResourceUnavailableError, causes
from mlorch.execution.cluster import ClusterHandle
from mlorch.execution.jobqueue import LOST_TOPIC
from mlorch.log import get_logger
from mlorch.names import DUPLICATE_ATTR, ERROR_ATTR, INTERRUPTED_ATTR, KEY_SALT_INFO, LOST_ATTR, RETRY_OF_ATTR, RUN_ATTR
from mlorch.tuning.hooks import SweepHooks
from mlorch.tuning.optuna_private import set_trial_attr, storage_of, trial_id
from mlorch.tuning.plan import Plan
from mlorch.tuning.pool import KeyPool, TrialBackend
from mlorch.tuning.remote_trial import event_loop, serve_trials
from mlorch.tuning.report import prune_event_name, report_topic
from mlorch.tuning.space import suggest
from mlorch.tuning.storage import StorageSpec

__all__ = ["SweepDriver", "finished_trials", "resume"]

log = get_logger("mlorch.sweep")
MAX_LOST_ATTEMPTS = 10  # a trial whose job keeps ending under it (its own doing, e.g. memory) fails then
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that count against ``n_trials``."""
    return [t for t in study.get_trials(deepcopy=False) if t.state in FINISHED_STATES and not t.user_attrs.get(INTERRUPTED_ATTR)]


def resume(study: optuna.Study, hooks: SweepHooks) -> list[int]:
    """Close trials a dead driver left RUNNING, re-enqueue their parameters; returns their numbers.

    Each closed trial is FAIL with ``mlorch.interrupted`` (not counted), its MLflow run
    KILLED; runs the dead driver had no time to end are ended as their trials were.
    """
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in running:
        run_id = hooks.trial_interrupted(trial=t, trial_id=trial_id(t))
        if run_id is not None:
            set_trial_attr(study, t, RUN_ATTR, run_id)
        set_trial_attr(study, t, INTERRUPTED_ATTR, True)
        set_trial_attr(study, t, ERROR_ATTR, "the sweep driver stopped while this trial ran; re-enqueued")
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(t.params, user_attrs={RETRY_OF_ATTR: t.number})
    if running:
        log.info(
            "sweep '%s': resuming; trial(s) %s were running when the last driver stopped: re-enqueued",
            study.study_name,
            ", ".join(str(t.number) for t in running),
        )
    trials = study.get_trials(deepcopy=False)
    if trials:
        hooks.sweep_resumed(study=study, trial_ids={t.number: trial_id(t) for t in trials})
    return [t.number for t in running]


@dataclass
class TrialRecord:
    trial: optuna.Trial
    params: dict[str, Any]
    started: float = field(default_factory=time.monotonic)
    deadline: float | None = None
    info: dict[str, Any] = field(default_factory=dict)  # the trial's entries for its flow run's info
    backend: TrialBackend | None = None
    future: Any = None
    prune_requested: bool = False
    signalled: bool = False
    closed: bool = False
    steps: set[int] = field(default_factory=set)
    lost: int = 0
    deferred: tuple[FrozenTrial, str | None] | None = None
    value_taken: bool = False  # an objective's value came as an event, or is being gathered: once

    @property
    def number(self) -> int:
        return self.trial.number


class SweepDriver:
    """Runs one sweep to ``n_trials`` finished trials (see the module docstring)."""

    def __init__(
        self,
        plan: Plan,
        handle: ClusterHandle,
        study: optuna.Study,
        storage_spec: StorageSpec,
        hooks: SweepHooks,
        on_finish: Callable[[FrozenTrial], None] | None = None,
    ):
        self.plan = plan
        self.handle = handle
        self.client = handle.client
        self.study = study
        self.storage_spec = storage_spec

        # The driver answers an objective's Optuna calls on local and batch clusters (remote_trial.py).
        self.trial_server = (
            serve_trials(study, self.client, plan.name, local=handle.kind == "local") if plan.kind == "objective" else None
        )
        if plan.kind == "objective" and self.trial_server is None and storage_spec[0] == "object":
            raise ConfigError(
                "storage: an Optuna storage object works for a plain objective where the driver answers its "
                "trials (local and batch clusters); this cluster's scheduler runs elsewhere, so the workers "
                "reopen the study: give a journal file path or a database URL"
            )
        if plan.kind == "objective" and self.trial_server is None and not handle.workers_share_files:
            from mlorch.tuning.storage import serve_from_scheduler

            # Batch jobs may not see the driver's files: serve the study through the scheduler.
            self.storage_spec = serve_from_scheduler(storage_of(study), self.client, f"mlorch-{uuid.uuid4().hex}")
        self.hooks = hooks
        self.on_finish = on_finish
        self.flow = plan.target
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.inflight: dict[int, TrialRecord] = {}
        self.pool = KeyPool(self.client, on_resources=lambda r: self.events.put(("learned", r)))
        self._learned: dict[str, float] | None = None
        self._stopping = threading.Event()
        self._metric_seen = plan.metric_checked
        self.error: BaseException | None = None
        self.max_in_flight = 0
        self._zombies: list[int] = []
        self._deferred: list[TrialRecord] = []
        self.finished = 0
        self._owner = f"sweep-{plan.name}-{uuid.uuid4().hex[:6]}"
        self._result_topic = f"mlorch-result-{self._owner}" if plan.kind == "objective" else None
        self._sweep_deadline: float | None = None
        self._seen_params: dict[str, int] | None = None  # parameters -> the first trial that had them
        self._slots, self._totals = self._cluster_capacity()
        self._check_resources()

    # -- capacity -------------------------------------------------------------------
    def _cluster_capacity(self) -> tuple[int, dict[str, float]]:
        self._offers = self.handle.offers()  # a batch cluster's at full size: its jobs come on demand
        slots = sum(o.nthreads for o in self._offers) or 1
        totals: dict[str, float] = {}
        for offer in self._offers:
            for name, amount in offer.resources.items():
                totals[name] = totals.get(name, 0.0) + float(amount)
        return slots, totals

    def _workers_wanted(self) -> int:
        """Workers the trials still to run can use at once (what a batch cluster scales to)."""
        left = self.plan.n_trials - self.finished
        if self.stopping or left <= 0:
            return len(self.inflight)
        at_once = min(left, self.plan.max_concurrency or left)
        if self.plan.kind == "flow" and self.plan.resources is None and self._learned is None:
            at_once = 1
        request = self.plan.resources if self.plan.resources is not None else (self._learned or {})
        offer = self._offers[0] if self._offers else None
        if offer is None:
            return at_once
        per_worker = float(max(offer.nthreads, 1))
        for name, amount in request.items():
            if amount > 0 and name in offer.resources:
                per_worker = min(per_worker, math.floor(offer.resources[name] / amount + 1e-9))
        return max(1, math.ceil(max(at_once, len(self.inflight)) / max(per_worker, 1)))

    def _check_resources(self) -> None:
        offers = [dict(o.resources) for o in self._offers]
        for name, amount in (self.plan.resources or {}).items():
            if unmet(offers, [(name, amount)]):
                raise ResourceUnavailableError(
                    f"resources: a trial asks for {name}={amount:g}, but no worker has that much "
                    f"(workers offer: {describe(offers)}); e.g. mo.cluster(gpus=2)"
                )

    def limit(self) -> int:
        """How many trials may be in flight now."""
        if self.plan.max_concurrency is not None:
            return self.plan.max_concurrency
        request = self.plan.resources
        if request is None and self.plan.kind == "flow":
            if self._learned is None:
                return 1  # learn what one trial's tasks ask for before filling the cluster
            request = self._learned
        # Twice the thread slots: a worker always has the next trial queued when one ends, so
        # no slot idles for a driver round trip (resources, when asked for, cap it exactly).
        caps = [2 * self._slots]
        for name, amount in (request or {}).items():
            if amount > 0 and name in self._totals:
                caps.append(int(math.floor(self._totals[name] / amount + 1e-9)))
        return max(1, min(caps))

    # -- the loop -------------------------------------------------------------------
    def stop(self) -> None:
        """Start no more trials; the running ones finish normally."""
        self._stopping.set()
        self.events.put(("wake",))

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self) -> None:
        topic = report_topic(self.plan.name)
        self.client.subscribe_topic(topic, lambda event: self.events.put(("report", event[1])))
        self.client.subscribe_topic(LOST_TOPIC, lambda event: self.events.put(("lost", event[1])))
        topics = [topic, LOST_TOPIC]
        if self._result_topic is not None:
            self.client.subscribe_topic(self._result_topic, lambda event: self.events.put(("pushed", event[1])))
            topics.append(self._result_topic)
        from mlorch.tuning.report import QuietPruning

        self.client.register_plugin(QuietPruning())  # a pruned trial is not an error on the workers
        try:
            self._loop()
        except BaseException as exc:
            self.error = exc
            self._abort(exc)
            raise
        finally:
            for name in topics:
                try:
                    self.client.unsubscribe_topic(name)
                except Exception:
                    pass
            self._await_deferred(timeout=30.0)
            self._drop_late_futures()
            if self.trial_server is not None:
                self.trial_server.shutdown(self.client)
            self.pool.release_all()
            self.handle.want(self._owner, None)
            self.clear_zombies()
            for rec in self._deferred:  # threads still stuck in a task: end their runs anyway
                self._end_deferred(rec)

    def _loop(self) -> None:
        self.finished = len(finished_trials(self.study))
        if self.plan.timeout is not None:  # the whole sweep's time, as in study.optimize(timeout=)
            self._sweep_deadline = time.monotonic() + self.plan.timeout
        fatal = getattr(self.handle, "on_fatal", None)
        if fatal is not None:  # a batch queue that will never run our jobs wakes the loop
            fatal(lambda: self.events.put(("wake",)))
        while True:
            fatal_error = getattr(self.handle, "fatal", None)
            if fatal_error is not None:
                raise fatal_error
            if self._sweep_deadline is not None and time.monotonic() >= self._sweep_deadline and not self.stopping:
                log.info("sweep '%s': timeout of %g s reached; running trials finish", self.plan.name, self.plan.timeout)
                self.stop()
            while (
                not self.stopping
                and len(self.inflight) < self.limit()
                and self.finished + len(self.inflight) < self.plan.n_trials
            ):
                self._start_trial()
            self.max_in_flight = max(self.max_in_flight, len(self.inflight))
            self.handle.want(self._owner, self._workers_wanted())
            if not self.inflight:
                return
            try:
                event = self.events.get(timeout=self._wait_time())
            except queue.Empty:
                self._expire()
                continue
            kind = event[0]
            if kind == "done":
                self._on_done(*event[1:])
            elif kind == "pushed":
                self._on_pushed(event[1])
            elif kind == "finished":
                self._on_finished(event[1])
            elif kind == "returned":
                self._on_returned(*event[1:])
            elif kind == "report":
                self._on_report(event[1])
            elif kind == "learned":
                self._learned = dict(event[1])
            elif kind == "lost":
                self._on_lost(event[1])
            self._expire()

    def _wait_time(self) -> float | None:
        deadlines = [r.deadline for r in self.inflight.values() if r.deadline is not None]
        if self._sweep_deadline is not None and not self.stopping:
            deadlines.append(self._sweep_deadline)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    # -- starting a trial -------------------------------------------------------------
    def _start_trial(self) -> None:
        trial = self.study.ask()
        params = suggest(trial, self.plan.space)
        rec = TrialRecord(trial=trial, params=params)
        if self.plan.kind == "flow":
            self._note_duplicate(rec)
        if self.plan.trial_timeout is not None:
            rec.deadline = rec.started + self.plan.trial_timeout
        self.inflight[trial.number] = rec
        if self.plan.kind == "objective":
            self._submit_objective(rec)
            return
        rec.backend = TrialBackend(self.client, self.pool, trial.number, offers=self.handle.offers)
        self.pool.trial_started(trial.number)
        thread = threading.Thread(target=self._flow_trial, args=(rec,), name=f"mlorch-trial-{trial.number}", daemon=True)
        thread.start()

    def _note_duplicate(self, rec: TrialRecord) -> None:
        """A trial with exactly the parameters of an earlier one says so (user attribute and MLflow tag);
        with ``reuse_results=False`` its tasks get keys of their own, so nothing is reused."""
        if not self.plan.reuse_results:
            rec.info[KEY_SALT_INFO] = f"{self.study.study_name}/{rec.number}"
        if self._seen_params is None:
            done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            self._seen_params = {_fingerprint(t.params): t.number for t in done}
        fingerprint = _fingerprint(rec.trial.params)
        earlier = self._seen_params.setdefault(fingerprint, rec.number)
        if earlier != rec.number:
            set_trial_attr(self.study, rec.trial, DUPLICATE_ATTR, earlier)
            reuse = "its results are reused where still held" if self.plan.reuse_results else "it runs again"
            log.info("sweep '%s': trial %d has the parameters of trial %d; %s", self.plan.name, rec.number, earlier, reuse)

    def _trial_started(self, rec: TrialRecord, state: TrialState | None = None) -> None:
        """Tell the hooks (the trial's thread, a timeout or an abort may each be first; they make its run once)."""
        rec.info.update(
            self.hooks.trial_started(
                trial=rec.trial,
                trial_id=trial_id(rec.trial),
                state=None if state is None else state.name,
                needs_run=self.plan.kind == "flow",
            )
        )

    def _flow_trial(self, rec: TrialRecord) -> None:
        from mlorch.execution.runner import run_flow

        try:
            self._trial_started(rec)
            info: dict[str, Any] = {"sweep": self.plan.name, "trial": rec.number, **rec.info}
            hooks = self.hooks.flow_hooks(number=rec.number)
            result = run_flow(
                self.flow, (), dict(rec.params), cluster=self.handle, info=info, backend=rec.backend, extra_hooks=hooks
            )
            self.events.put(("done", rec, result, None))
        except BaseException as exc:  # noqa: BLE001 - judged by the driver thread
            self.events.put(("done", rec, None, exc))

    def _submit_objective(self, rec: TrialRecord) -> None:
        """Submit an objective's task from the driver thread (no thread per trial); its value comes
        back as a ``pushed`` event, its end as ``finished``, an error as ``returned``."""
        from mlorch.tuning.objective import ObjectiveCall, run_objective

        server = self.trial_server
        try:
            self._trial_started_safely(rec)
            remote = server.open(rec.trial) if server is not None else None
            call = ObjectiveCall(
                objective=self.plan.target,
                study_name=self.study.study_name,
                storage=self.storage_spec,
                sampler=self.plan.sampler if remote is None else None,
                pruner=self.plan.pruner,
                trial_id=trial_id(rec.trial),
                number=rec.number,
                sweep=self.plan.name,
                remote=remote,
                gc_after_trial=self.plan.gc_after_trial,
                result_topic=self._result_topic,
            )
            key = f"mlorch-trial-{self.plan.target_name}-{rec.number}-{uuid.uuid4().hex[:8]}"
            rec.future = self.client.submit(run_objective, call, key=key, pure=False, resources=self.plan.resources)
            rec.future.add_done_callback(lambda _: self.events.put(("finished", rec)))
        except BaseException as exc:  # noqa: BLE001 - the trial fails, the sweep goes on
            self.events.put(("returned", rec, _settled(error=exc)))

    def _on_pushed(self, msg: dict[str, Any]) -> None:
        """An objective's value, sent by its worker before its task ended."""
        rec = self.inflight.get(int(msg.get("trial", -1)))
        if rec is None or rec.closed or rec.value_taken or not isinstance(msg.get("payload"), bytes):
            return
        from distributed.protocol.pickle import loads

        try:
            value = loads(msg["payload"])
        except Exception as exc:  # noqa: BLE001 - the task's own result is gathered instead
            log.debug("sweep '%s': trial %d: unreadable value event (%s)", self.plan.name, rec.number, exc)
            return
        rec.value_taken = True
        self._on_returned(rec, _settled(value=value))

    def _on_finished(self, rec: TrialRecord) -> None:
        """An objective's task ended: done if its value came first; else fetch its result or error."""
        if rec.value_taken:
            rec.future = None  # the client forgets the key
            return
        rec.value_taken = True
        try:
            gathered = asyncio.run_coroutine_threadsafe(_gather(self.client, rec.future), event_loop(self.client))
        except Exception as exc:  # noqa: BLE001 - e.g. the client's loop is closing: the trial still ends
            self.events.put(("returned", rec, _settled(error=exc)))
            return
        gathered.add_done_callback(lambda done: self.events.put(("returned", rec, done)))

    def _on_returned(self, rec: TrialRecord, gathered: Future[Any]) -> None:
        """An objective's task ended: its value from the worker, or its error."""
        value, error = None, None
        try:
            value = gathered.result()
        except BaseException as exc:  # noqa: BLE001
            error = exc
        if self.trial_server is not None:
            value = self.trial_server.close(rec.trial, value if error is None else None)  # the objective's value
        try:
            self._trial_started(rec, self._outcome(rec, value, error)[0])
        except BaseException as exc:  # noqa: BLE001 - tracking trouble must not lose the trial
            log.warning("sweep '%s': could not track trial %d: %s", self.plan.name, rec.number, exc)
        self._on_done(rec, value, error)

    def _trial_started_safely(self, rec: TrialRecord) -> None:
        try:
            self._trial_started(rec)
        except Exception as exc:  # tracking trouble must not lose the trial
            log.warning("sweep '%s': could not track trial %d: %s", self.plan.name, rec.number, exc)

    # -- finishing a trial ------------------------------------------------------------
    def _on_done(self, rec: TrialRecord, result: Any, error: BaseException | None) -> None:
        self.inflight.pop(rec.number, None)
        if self._learned is None and self.plan.kind == "flow":
            self._learned = {}  # the trial ended before submitting: do not stay serial for ever
        if rec.closed:  # already told (timed out); its thread has now let go of the run
            self._end_deferred(rec)
            return
        state, values, message = self._outcome(rec, result, error)
        self._tell(rec, state, values, message)
        if state == TrialState.FAIL and error is not None and self.plan.catch is not None:
            if not any(isinstance(e, self.plan.catch) for e in causes(error)):
                self.error = self.error or error  # not in catch=: the sweep stops with it, as optimize does
                self.stop()

    def _await_deferred(self, timeout: float) -> None:
        """Let cancelled trials' threads return (their flow run's hook writes last) before ending their runs."""
        deadline = time.monotonic() + timeout
        while any(r.deferred is not None for r in self._deferred):
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            if event[0] == "done" and event[1].closed:
                self._end_deferred(event[1])
            elif event[0] == "finished" and event[1].closed:
                self._on_finished(event[1])
            elif event[0] == "returned" and event[1].closed:
                self._on_returned(*event[1:])

    def _drop_late_futures(self) -> None:
        """Forget the futures of objective tasks whose end came after the loop (their values were
        taken), so their results do not stay on the workers while the sweep object lives."""
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            if event[0] == "finished" and event[1].value_taken:
                event[1].future = None

    def _end_deferred(self, rec: TrialRecord) -> None:
        if rec.deferred is not None:
            frozen, message = rec.deferred
            rec.deferred = None
            self.hooks.trial_finished(trial=frozen, error=message)

    def _outcome(self, rec: TrialRecord, result: Any, error: BaseException | None) -> tuple[TrialState, Any, str | None]:
        if error is not None:
            if rec.prune_requested or _is_pruned(error):
                return TrialState.PRUNED, None, None
            if isinstance(error, ResourceUnavailableError) and self.plan.kind == "flow":
                self.error = error  # every trial would fail the same way: stop the sweep
                self.stop()
            return TrialState.FAIL, None, _describe(error)
        try:
            values = self._values(result)
        except _BadResult as exc:
            return TrialState.FAIL, None, str(exc)
        return TrialState.COMPLETE, values, None

    def _values(self, result: Any) -> list[float]:
        plan = self.plan
        if plan.kind == "flow":
            if isinstance(result, dict):
                missing = [m for m in plan.metrics if m not in result]
                if missing:
                    keys = ", ".join(map(str, result)) or "(none)"
                    message = f"metric '{missing[0]}' is not in the flow's result (keys: {keys})"
                    if not self._metric_seen:  # the first result already lacks it: a config error
                        self.error = ConfigError(
                            f"metric: flow '{plan.target_name}' returned no '{missing[0]}' (it returned: {keys})"
                        )
                        self.stop()
                    raise _BadResult(message)
                self._metric_seen = True
                raw = [result[m] for m in plan.metrics]
            elif len(plan.metrics) == 1 and _is_number(result):
                raw = [result]
            else:
                raise _BadResult(f"the flow returned {type(result).__name__}, not a dict with '{plan.metrics[0]}'")
        else:
            raw = list(result) if isinstance(result, (list, tuple)) else [result]
        if len(raw) != len(plan.directions):
            raise _BadResult(f"the target returned {len(raw)} value(s) for {len(plan.directions)} objective(s)")
        values: list[float] = []
        for name, v in zip(plan.metrics or ["objective"] * len(raw), raw):
            if not _is_number(v):
                raise _BadResult(f"'{name}' is {type(v).__name__} {v!r}, not a number")
            f = float(v)
            if math.isnan(f):
                raise _BadResult(f"'{name}' is NaN")
            values.append(f)
        return values

    def _tell(
        self, rec: TrialRecord, state: TrialState, values: list[float] | None, message: str | None, defer: bool = False
    ) -> None:
        """Tell Optuna; end the MLflow run now, or (``defer``) once the trial's thread is gone."""
        rec.closed = True
        self._trial_started(rec, state)  # a no-op unless the trial ends before its thread made the run
        if message:
            set_trial_attr(self.study, rec.trial, ERROR_ATTR, message[:2000])
            log.warning("sweep '%s': trial %d failed: %s", self.plan.name, rec.number, message)
        frozen = self.study.tell(
            rec.number, values=values if state == TrialState.COMPLETE else None, state=state, skip_if_finished=True
        )
        if not frozen.user_attrs.get(INTERRUPTED_ATTR):
            self.finished += 1
        if state == TrialState.PRUNED and not rec.prune_requested:  # an objective's own should_prune()
            at = max(frozen.intermediate_values, default=None)
            log.info("sweep '%s': trial %d pruned%s", self.plan.name, rec.number, "" if at is None else f" at step {at}")
        if defer:
            rec.deferred = (frozen, message)
            self._deferred.append(rec)
        else:
            self.hooks.trial_finished(trial=frozen, error=message)
        if rec.signalled:
            self._event(rec.number, clear=True)
        if self.on_finish is not None and not frozen.user_attrs.get(INTERRUPTED_ATTR):
            self.on_finish(frozen)  # the bar and the user's callbacks: a trial closed by an abort does not count

    # -- reports, pruning, timeouts ---------------------------------------------------
    def _on_report(self, msg: dict[str, Any]) -> None:
        rec = self.inflight.get(int(msg.get("trial", -1)))
        value, step = msg.get("value"), int(msg.get("step", 0))
        if rec is None or rec.closed or value is None:
            return
        self.hooks.trial_reported(number=rec.number, value=float(value), step=step)
        if self.plan.multi or rec.prune_requested:
            return
        if step in rec.steps:  # Optuna keeps the first value of a step (a retried task reports again)
            return
        rec.steps.add(step)
        rec.trial.report(float(value), step)
        if rec.trial.should_prune():
            rec.prune_requested = True
            log.info("sweep '%s': trial %d pruned at step %d", self.plan.name, rec.number, step)
            self._event(rec.number)
            rec.signalled = True

    def _on_lost(self, msg: dict[str, Any]) -> None:
        """A worker left with its batch job (scancel, preemption) while running these keys:
        the trials they belong to run again; each keeps a count of attempts lost that way."""
        keys = set(msg.get("keys") or ())
        for rec in list(self.inflight.values()):
            own = set(rec.backend.futures) if rec.backend is not None else set()
            if rec.future is not None:
                own.add(str(rec.future.key))
            if rec.closed or not own & keys:
                continue
            rec.lost += 1
            set_trial_attr(self.study, rec.trial, LOST_ATTR, rec.lost)
            if rec.lost >= MAX_LOST_ATTEMPTS:
                self.inflight.pop(rec.number, None)
                self._cancel(rec)
                self._tell(
                    rec,
                    TrialState.FAIL,
                    None,
                    f"the trial's batch job ended under it {rec.lost} times (its own memory or time use?)",
                    defer=True,
                )
                continue
            log.info(
                "sweep '%s': trial %d lost its worker to the batch system (%s); it runs again",
                self.plan.name,
                rec.number,
                msg.get("worker"),
            )

    def _event(self, number: int, clear: bool = False) -> None:
        from distributed import Event

        try:
            event = Event(prune_event_name(self.plan.name, number), client=self.client)
            event.clear() if clear else event.set()
        except Exception as exc:
            log.warning("sweep '%s': could not signal trial %d: %s", self.plan.name, number, exc)

    def _expire(self) -> None:
        now = time.monotonic()
        for rec in list(self.inflight.values()):
            if rec.deadline is not None and now >= rec.deadline and not rec.closed:
                self.inflight.pop(rec.number, None)
                self._cancel(rec)
                self._tell(
                    rec, TrialState.FAIL, None, f"trial timed out after {self.plan.trial_timeout:g} s (trial_timeout)", defer=True
                )

    def _cancel(self, rec: TrialRecord) -> None:
        self._event(rec.number)  # mo.report raises at the next step; a queued objective never starts
        rec.signalled = False  # keep the event set until the zombie thread is gone; cleared at sweep end
        self._zombies.append(rec.number)
        if rec.backend is not None:
            rec.backend.cancel()
        if rec.future is not None:
            try:
                rec.future.cancel()
            except Exception:
                pass

    def clear_zombies(self) -> None:
        for number in self._zombies:
            self._event(number, clear=True)
        self._zombies = []

    def _abort(self, exc: BaseException) -> None:
        """The driver itself is going down (Ctrl-C, an error): close running trials as interrupted."""
        self.handle.want(self._owner, None)  # batch jobs go as soon as their trials are cancelled
        for rec in list(self.inflight.values()):
            self._cancel(rec)
            try:
                set_trial_attr(self.study, rec.trial, INTERRUPTED_ATTR, True)
                self.study.enqueue_trial(
                    rec.params if self.plan.kind == "flow" else rec.trial.params, user_attrs={RETRY_OF_ATTR: rec.number}
                )
                self._tell(rec, TrialState.FAIL, None, f"the sweep driver stopped: {type(exc).__name__}", defer=True)
            except Exception:
                log.exception("sweep '%s': could not close trial %d", self.plan.name, rec.number)
        self.inflight.clear()


class _BadResult(Exception):
    pass


def _settled(value: Any = None, error: BaseException | None = None) -> Future[Any]:
    """A finished future holding ``value`` or ``error`` (how an objective's end reaches ``_on_returned``)."""
    done: Future[Any] = Future()
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(value)
    return done


async def _gather(client: Any, future: Any) -> Any:
    """A task's result, fetched from its worker, on the client's event loop."""
    return await client.gather(future, direct=True, asynchronous=True)


def _is_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return not isinstance(v, (str, bytes))


def _fingerprint(params: dict[str, Any]) -> str:
    return repr(sorted(params.items()))


def _is_pruned(error: BaseException) -> bool:
    return any(isinstance(e, optuna.TrialPruned) for e in causes(error))


def _describe(error: BaseException) -> str:
    if isinstance(error, MlorchError):
        return str(error)
    return f"{type(error).__name__}: {error}"
