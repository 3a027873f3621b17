"""``Sweep``: what ``mo.sweep`` returns: an ``optuna.Study``, live in a notebook, a result in a script.

It is the sweep's study (same name and storage), so Optuna code around ``study.optimize``
works unchanged: ``.trials``, ``.get_trials()``, ``.best_trial``, ``.trials_dataframe()``.
mlorch adds ``.best_run_id``, ``.parent_run_id``, ``.result()``, ``.done()`` and a
``.stop()`` that works from anywhere (callbacks included). With ``wait=False`` the driver
runs in a background thread and the study answers at once, as it is; ``.result()`` waits. A ``tqdm.auto`` bar (a widget in Jupyter)
counts finished trials and shows the best value so far; in a batch job or a log file,
plain lines a few times a minute (:mod:`mlorch.tuning.progress`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna

from mlorch.names import INTERRUPTED_ATTR, PARENT_ATTR, RUN_ATTR
from mlorch.tuning.optuna_private import storage_of

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from mlorch.tuning.driver import SweepDriver
    from mlorch.tuning.plan import Plan

__all__ = ["Sweep"]


class Sweep(optuna.Study):
    """A running or finished sweep: the ``optuna.Study`` it optimises, plus mlorch's extras."""

    def __init__(self, plan: Plan, study: optuna.Study, driver: SweepDriver, finish: Callable[[BaseException | None], None]):
        super().__init__(study_name=study.study_name, storage=storage_of(study), sampler=study.sampler, pruner=study.pruner)
        self.plan = plan
        self.study = study
        self.name = plan.name
        self._driver = driver
        self._finish = finish
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._bar: Any = None
        self._tally: dict[Any, int] = {}  # pruned / failed trials, for the bar
        self._best: float | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (``joblib.dump(study, ...)``) as the plain ``optuna.Study`` it is: the driver, its
        cluster and threads stay in this process."""
        return (optuna.Study, (self.study_name, self._storage, self.sampler, self.pruner))

    # -- running ----------------------------------------------------------------------
    def _run(self) -> None:
        error: BaseException | None = None
        try:
            self._driver.run()
        except BaseException as exc:  # noqa: BLE001 - kept for result()
            error = exc
        try:
            self._finish(error)
        except BaseException as exc:  # noqa: BLE001 - a summary that failed must reach result()
            error = error or exc
        finally:
            self._error = error or self._driver.error
            self._close_bar()
            self._done.set()

    def _start(self, wait: bool, progress: bool, initial: int) -> Sweep:
        try:
            if progress:
                from mlorch.tuning.progress import make_progress

                self._bar = make_progress(total=self.plan.n_trials, initial=initial, desc=f"sweep {self.name}")
                self._update_bar(None)
                scaler = getattr(self._driver.handle, "scaler", None)
                if scaler is not None:  # a batch cluster: show its jobs as the queue changes
                    scaler.on_queue(self._on_queue)
            if not wait:
                self._thread = threading.Thread(target=self._run, name=f"mlorch-sweep-{self.name}", daemon=True)
                self._thread.start()
                return self
        except BaseException as exc:  # nothing ran: still end the sweep (its lock, its cluster, its runs)
            self._close_bar()
            self._finish(exc)
            raise
        self._run()
        return self.result()

    def _on_trial(self, frozen: FrozenTrial) -> None:
        """A trial was told (driver thread): the bar, then the user's callbacks, as ``optimize`` calls them."""
        if self._bar is not None:
            self._bar.update(1)
            self._update_bar(frozen)
        for callback in self.plan.callbacks:
            callback(self, frozen)

    def _update_bar(self, frozen: FrozenTrial | None) -> None:
        """Best value and pruned/failed counts: read from the study once, then kept up to date
        from each finished trial (no full read of the study per trial: that grows with the sweep)."""
        from optuna.trial import TrialState

        if frozen is None:
            self._tally = {TrialState.PRUNED: 0, TrialState.FAIL: 0}
            for trial in self.study.get_trials(deepcopy=False):
                if trial.state in self._tally and not trial.user_attrs.get(INTERRUPTED_ATTR):
                    self._tally[trial.state] += 1
            self._best = self._best_or_none()
        elif not frozen.user_attrs.get(INTERRUPTED_ATTR):
            if frozen.state in self._tally:
                self._tally[frozen.state] += 1
            elif frozen.state == TrialState.COMPLETE and not self.plan.multi and frozen.value is not None:
                minimize = self.plan.directions[0] == "minimize"
                if self._best is None or (frozen.value < self._best if minimize else frozen.value > self._best):
                    self._best = float(frozen.value)
        self._bar.set_postfix(self._postfix(), refresh=True)

    def _on_queue(self, _state: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix(self._postfix(), refresh=True)

    def _postfix(self) -> dict[str, Any]:
        postfix: dict[str, Any] = {}
        if self._best is not None:
            postfix["best"] = f"{self._best:.4g}"
        postfix.update({state.name.lower(): n for state, n in self._tally.items() if n})
        jobs = self._driver.handle.status_line()
        if jobs:
            postfix["jobs"] = jobs
        return postfix

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()

    # -- control ----------------------------------------------------------------------
    def stop(self) -> None:
        """Start no more trials; the running ones finish and are told normally. Returns at once
        (from a callback, another thread or a notebook cell; Optuna's only works inside optimize)."""
        self._driver.stop()

    def result(self, timeout: float | None = None) -> Sweep:
        """Wait until the sweep has ended; re-raises what stopped it, if anything did."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"sweep '{self.name}' still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    def done(self) -> bool:
        return self._done.is_set()

    # -- results (Optuna's own: best_trial, best_trials, best_value, trials, ...) -------
    @property
    def best_params(self) -> dict[str, Any]:
        """The best trial's parameters plus the fixed entries of the space (what the flow ran with).
        Raises ValueError before a trial completes, as Optuna does."""
        from mlorch.tuning.plan import is_param

        fixed = {k: v for k, v in self.plan.space.items() if not is_param(v)}
        return {**self.best_trial.params, **fixed}

    def _best_or_none(self) -> float | None:
        if self.plan.multi:
            return None
        try:
            return float(self.best_value)
        except ValueError:
            return None

    @property
    def best_run_id(self) -> str | None:
        """The MLflow run of the best trial (None with tracking off, before a trial completes, or multi-objective)."""
        if self.plan.multi:
            return None
        try:
            return self.best_trial.user_attrs.get(RUN_ATTR)
        except ValueError:
            return None

    @property
    def parent_run_id(self) -> str | None:
        return self.study.user_attrs.get(PARENT_ATTR)

    @property
    def max_concurrency(self) -> int:
        """Trials allowed in flight (as derived from the cluster, or as given)."""
        return self._driver.limit()

    @property
    def max_in_flight(self) -> int:
        """The most trials that were in flight at once."""
        return self._driver.max_in_flight

    @property
    def n_finished(self) -> int:
        from mlorch.tuning.driver import finished_trials

        return len(finished_trials(self.study))

    def status(self) -> str:
        """One line for a notebook: trials so far and the best value and parameters, or that none finished yet."""
        head = f"sweep '{self.name}' ({'done' if self.done() else 'running'}): {self.n_finished}/{self.plan.n_trials} trials"
        best = self._best_or_none()
        if best is None:
            return (
                f"{head}, no trial finished yet"
                if not self.plan.multi
                else f"{head}, {len(self.best_trials)} on the Pareto front"
            )
        name = (self.plan.metrics or ["objective"])[0]
        return f"{head}, best {name}={best:.4g} with {self.best_params}"

    def __repr__(self) -> str:
        state = "done" if self.done() else "running"
        best = self._best_or_none()
        best_text = f", best={best:.4g}" if best is not None else ", no trial finished yet" if not self.n_finished else ""
        return f"<mo.Sweep '{self.name}' {state}: {self.n_finished}/{self.plan.n_trials} trials{best_text}>"
