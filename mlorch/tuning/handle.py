"""``Sweep``: what ``mo.sweep`` returns, a live handle in a notebook, a result in a script.

With ``wait=False`` the driver runs in a background thread and the handle answers
at once: ``.best_params``/``.best_value``/``.best_run_id`` read the study as it is,
``.trials_dataframe()`` is Optuna's table, ``.stop()`` lets running trials finish
and starts no more, ``.result()`` waits. A ``tqdm.auto`` bar (a widget in Jupyter)
counts finished trials and shows the best value so far; in a batch job or a log file,
plain lines a few times a minute (:mod:`mlorch.tuning.progress`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlorch.names import INTERRUPTED_ATTR, PARENT_ATTR, RUN_ATTR

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    from optuna.trial import FrozenTrial

    from mlorch.tuning.driver import SweepDriver
    from mlorch.tuning.plan import Plan

__all__ = ["Sweep"]


class Sweep:
    """A running or finished sweep over ``study`` (an ``optuna.Study``)."""

    def __init__(self, plan: Plan, study: optuna.Study, driver: SweepDriver, finish: Callable[[BaseException | None], None]):
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
        if self._bar is not None:
            self._bar.update(1)
            self._update_bar(frozen)

    def _update_bar(self, frozen: FrozenTrial | None) -> None:
        """Best value and pruned/failed counts: read from the study once, then kept up to date
        from each finished trial (no full read of the study per trial: that grows with the sweep)."""
        from optuna.trial import TrialState

        if frozen is None:
            self._tally = {TrialState.PRUNED: 0, TrialState.FAIL: 0}
            for trial in self.study.get_trials(deepcopy=False):
                if trial.state in self._tally and not trial.user_attrs.get(INTERRUPTED_ATTR):
                    self._tally[trial.state] += 1
            self._best = self.best_value
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
    def stop(self) -> Sweep:
        """Start no more trials; the running ones finish and are told normally. Returns at once."""
        self._driver.stop()
        return self

    def result(self, timeout: float | None = None) -> Sweep:
        """Wait until the sweep has ended; re-raises what stopped it, if anything did."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"sweep '{self.name}' still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    def done(self) -> bool:
        return self._done.is_set()

    # -- results ----------------------------------------------------------------------
    @property
    def best_trial(self) -> FrozenTrial | None:
        """The best finished trial so far; None before one completes (or for multi-objective)."""
        if self.plan.multi:
            return None
        try:
            return self.study.best_trial
        except ValueError:
            return None

    @property
    def best_trials(self) -> list[FrozenTrial]:
        """The Pareto front (multi-objective) or the best trial, as Optuna defines them."""
        return list(self.study.best_trials)

    @property
    def best_params(self) -> dict[str, Any] | None:
        """The best trial's parameters (swept ones plus fixed entries of the space); None before one completes."""
        best = self.best_trial
        if best is None:
            return None
        from mlorch.tuning.plan import is_param

        fixed = {k: v for k, v in self.plan.space.items() if not is_param(v)}
        return {**best.params, **fixed}

    @property
    def best_value(self) -> float | None:
        best = self.best_trial
        return None if best is None or best.value is None else float(best.value)

    @property
    def best_run_id(self) -> str | None:
        """The MLflow run of the best trial (None with tracking off, or before a trial completes)."""
        best = self.best_trial
        return None if best is None else best.user_attrs.get(RUN_ATTR)

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

    def trials_dataframe(self, **kwargs: Any) -> pd.DataFrame:
        return self.study.trials_dataframe(**kwargs)

    @property
    def n_finished(self) -> int:
        from mlorch.tuning.driver import finished_trials

        return len(finished_trials(self.study))

    def __repr__(self) -> str:
        state = "done" if self.done() else "running"
        best = self.best_value
        best_text = f", best={best:.4g}" if best is not None else ""
        return f"<mo.Sweep '{self.name}' {state}: {self.n_finished}/{self.plan.n_trials} trials{best_text}>"
