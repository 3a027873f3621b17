"""Holding results that recur across a sweep's trials, so shared upstream work runs once.

Task keys are content addressed: ``load_digits()`` has the same key in every trial,
``train(data, lr=0.01)`` a different one per ``lr``. Dask computes a key once *while
some client holds a future for it* and forgets it when the last one is released. A
plain flow run holds only the keys it asked for, and only for the run; so each trial
would load the data again.

Each trial therefore gets a :class:`TrialBackend` that requests *every* key of the
graph it submits (so intermediates are held too), and the sweep's :class:`KeyPool`
decides what to keep when the trial ends:

- a key used by two or more trials is *shared* and held until the sweep ends;
- a key of a finished trial used by no other trial yet is kept until a trial that
  started after it finished has ended (it then had its chance to reuse it), and
  released then. Memory cost: about one finished trial's results per slot.

The pool also records the resources the traced tasks ask for, so the driver can
derive how many trials fit on the cluster at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from distributed import Client, Future

from mlorch.core.trace import Trace
from mlorch.execution.cluster import WorkerOffer
from mlorch.execution.runner import DistributedBackend

__all__ = ["KeyPool", "TrialBackend"]


class KeyPool:
    """Futures held across a sweep's trials (see the module docstring)."""

    def __init__(self, client: Client, on_resources: Callable[[dict[str, float]], None] | None = None):
        self.client = client
        self.on_resources = on_resources
        self._lock = threading.Lock()
        self._futures: dict[str, Future] = {}
        self._users: dict[str, set[int]] = {}
        self._shared: set[str] = set()
        self._pending: list[tuple[int, set[str]]] = []  # (started-trials count when parked, keys)
        self._started = 0
        self._start_seq: dict[int, int] = {}
        self.offers: list[dict[str, float]] | None = None
        self.seen_resources: dict[str, float] = {}
        self._observed = False

    def trial_started(self, trial: int) -> None:
        with self._lock:
            self._started += 1
            self._start_seq[trial] = self._started

    def hold(self, trial: int, futures: dict[str, Future]) -> None:
        with self._lock:
            for key, future in futures.items():
                users = self._users.setdefault(key, set())
                users.add(trial)
                if key not in self._futures:
                    self._futures[key] = future
                if len(users) > 1:
                    self._shared.add(key)

    def held(self, keys: set[str]) -> dict[str, Future]:
        """The futures the pool already holds among ``keys`` (another trial's results or arguments)."""
        with self._lock:
            return {k: self._futures[k] for k in keys if k in self._futures}

    def observe(self, requests: dict[tuple[tuple[str, float], ...], str]) -> None:
        with self._lock:
            changed = not self._observed  # the first trace always tells (even "no resources")
            self._observed = True
            for request in requests:
                for name, amount in request:
                    if amount > self.seen_resources.get(name, 0):
                        self.seen_resources[name] = amount
                        changed = True
        if changed and self.on_resources is not None:
            self.on_resources(dict(self.seen_resources))

    def trial_finished(self, trial: int) -> None:
        """Park the trial's own keys; release keys parked before this trial started."""
        release: list[Future] = []
        with self._lock:
            # A failed or cancelled key must not be reused: holding it would hand the same
            # error to every later trial. Let it go so the next trial computes it afresh.
            for key in [k for k, f in self._futures.items() if f.status in ("error", "cancelled")]:
                self._shared.discard(key)
                release.extend(self._drop(key))
            seq = self._start_seq.pop(trial, 0)
            own = {k for k, users in self._users.items() if trial in users and k not in self._shared}
            keep: list[tuple[int, set[str]]] = []
            for parked_at, keys in self._pending:
                if seq > parked_at:  # this trial started after those keys were parked
                    for key in keys - self._shared:
                        release.extend(self._drop(key))
                else:
                    keep.append((parked_at, keys))
            self._pending = keep
            if own:
                self._pending.append((self._started, own))
        for future in release:
            future.release()

    def _drop(self, key: str) -> list[Future]:
        self._users.pop(key, None)
        future = self._futures.pop(key, None)
        return [future] if future is not None else []

    @property
    def shared_keys(self) -> set[str]:
        with self._lock:
            return set(self._shared)

    def release_all(self) -> None:
        with self._lock:
            futures = list(self._futures.values())
            self._futures.clear()
            self._users.clear()
            self._shared.clear()
            self._pending.clear()
        for future in futures:
            future.release()


class TrialBackend(DistributedBackend):
    """A flow run's backend that holds every key it submits in the sweep's pool."""

    def __init__(self, client: Client, pool: KeyPool, trial: int, offers: Callable[[], list[WorkerOffer]] | None = None):
        super().__init__(client, offers=offers)
        self.pool = pool
        self.trial = trial
        self._offers = pool.offers
        self.cancelled = False

    def submit(self, trial: Trace, keys: list[str]) -> list[Future]:
        if self.cancelled:
            from distributed.client import FutureCancelledError

            raise FutureCancelledError(str(keys[0]) if keys else "trial", "cancelled", "the sweep cancelled this trial")
        missing = [k for k in dict.fromkeys(keys) if k not in self.futures]
        if missing:
            needed = trial.ancestors(missing)
            self.check_resources(trial, needed)  # first: a sweep learns only resources that can be met
            self.pool.observe(trial.resource_requests(needed))
            self.pool.offers = self._offers
            # Large arguments (a big fixed parameter of the sweep) are scattered once and shared by
            # content key: a later trial finds them held in the pool instead of resending them.
            data = needed & trial.data_keys
            self.futures.update(self.pool.held(data))
            self.scatter_arguments(trial, data)
            order = [k for k in needed if k not in trial.data_keys]
            futures = self.client.get(trial.graph(set(order)), order, sync=False) if order else []
            by_key = {**dict(zip(order, futures)), **{k: self.futures[k] for k in data}}
            self.pool.hold(self.trial, by_key)
            self.futures.update(by_key)
        return [self.futures[k] for k in keys]

    def cancel(self) -> None:
        """Stop the trial's tasks that have not run yet (a running Python task cannot be killed)."""
        self.cancelled = True
        own = [f for k, f in self.futures.items() if k not in self.pool.shared_keys]
        if own:
            try:
                self.client.cancel(own)
            except Exception:
                pass

    def release(self) -> None:
        # The pool, not the trial, decides when these keys are let go.
        self.futures.clear()
        self.pool.trial_finished(self.trial)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"<TrialBackend trial={self.trial} keys={len(self.futures)}>"
