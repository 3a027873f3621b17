"""What a sweep tells the outside world: the hook protocol of the sweep driver.

The driver calls these events with keyword arguments only; an implementation takes
``**_`` so that new keywords can be added without breaking it. MLflow tracking
(``mlorch.tracking.sweep.SweepTracker``) is one such implementation; :class:`NoHooks`
records nothing. Events come from the driver thread, except ``trial_started`` and
``flow_hooks`` (also from a trial's own thread): implementations are thread-safe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial

from mlorch.names import TRACKING_INFO
from mlorch.tracking import enabled
from mlorch.tracking.store import RunStore
from mlorch.tracking.sweep import SweepTracker

__all__ = ["NoHooks", "SweepHooks", "open_hooks"]


class SweepHooks(Protocol):
    def sweep_started(
        self,
        *,
        study: optuna.Study,
        experiment: str,
        summary: Mapping[str, Any],
        metrics: list[str],
        kind: str,
        cluster: Any = None,
        **_: Any,
    ) -> None:
        """Before any trial (a resumed sweep too); ``cluster`` is the sweep's ``ClusterHandle``."""

    def trial_interrupted(self, *, trial: FrozenTrial, trial_id: int, **_: Any) -> str | None:
        """A trial a dead driver left RUNNING is about to be closed; returns the run id to link it to."""

    def sweep_resumed(self, *, study: optuna.Study, trial_ids: Mapping[int, int], **_: Any) -> None:
        """Earlier trials exist: make what was recorded of them agree with the study."""

    def trial_started(
        self, *, trial: optuna.Trial, trial_id: int, state: str | None = None, needs_run: bool = False, **_: Any
    ) -> Mapping[str, Any]:
        """A trial starts (again with ``state`` once it has ended, before Optuna is told).
        Returns entries for a flow trial's run info."""

    def flow_hooks(self, *, number: int, **_: Any) -> list[Any]:
        """Run hooks (``on_run_start`` / ``on_run_end``) for a flow trial's ``run_flow``."""

    def trial_reported(self, *, number: int, value: float, step: int, **_: Any) -> None:
        """An intermediate value (``mo.report``)."""

    def trial_finished(self, *, trial: FrozenTrial, error: str | None = None, **_: Any) -> None:
        """Optuna has been told; the trial's thread has returned (or, stuck past the sweep's end,
        has been given up on: its flow hooks may still write into the run)."""

    def sweep_finished(self, *, study: optuna.Study, status: str = "FINISHED", **_: Any) -> None:
        """The sweep is over (``status`` FINISHED, FAILED or KILLED): write and wait for everything."""


class NoHooks:
    """An untracked sweep: nothing recorded, and its flow trials untracked too."""

    def sweep_started(self, **_: Any) -> None: ...
    def trial_interrupted(self, **_: Any) -> str | None:
        return None

    def sweep_resumed(self, **_: Any) -> None: ...
    def trial_started(self, **_: Any) -> Mapping[str, Any]:
        return {TRACKING_INFO: False}

    def flow_hooks(self, **_: Any) -> list[Any]:
        return []

    def trial_reported(self, **_: Any) -> None: ...
    def trial_finished(self, **_: Any) -> None: ...
    def sweep_finished(self, **_: Any) -> None: ...


def open_hooks(tracking: bool) -> SweepHooks:
    """MLflow tracking if on (``tracking=`` and ``MLORCH_TRACKING``), else :class:`NoHooks`."""
    if not enabled(tracking):
        return NoHooks()
    return SweepTracker(RunStore.open())
