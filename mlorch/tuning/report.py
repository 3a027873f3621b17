"""``mo.report(value, step)``: intermediate values from a task on a worker to the sweep driver.

The worker never touches the Optuna storage. It sends ``(trial, step, value)`` as a
worker event on the topic ``mlorch-report-<sweep>`` (a msgpack message over the
worker's batched stream). The driver, the storage's only writer, calls
``trial.report`` and ``trial.should_prune()``; when the pruner says stop, it sets the
distributed ``Event`` named by :func:`prune_event_name`. ``mo.report`` checks that
event and raises ``optuna.TrialPruned``, so the trial stops at the task's next
report, without the task knowing anything about Optuna.

Outside a sweep (a plain flow run or a direct call) ``mo.report`` only forwards the
value to tracking, if any, and never prunes.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any

from distributed import WorkerPlugin

from mlorch.core.runtime import add_steering_check

__all__ = ["report", "report_topic", "prune_event_name", "should_stop"]


def is_trial_pruned(error: BaseException) -> bool:
    """Optuna's ``TrialPruned`` stops a trial; it is never a fault to retry. (Whoever raised one has
    imported optuna, so looking it up in ``sys.modules`` keeps ``import mlorch`` free of Optuna.)"""
    optuna = sys.modules.get("optuna")
    return optuna is not None and isinstance(error, optuna.TrialPruned)


add_steering_check(is_trial_pruned)  # every process that imports mlorch, workers included


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def report_topic(sweep: str) -> str:
    return f"mlorch-report-{_safe(sweep)}"


def prune_event_name(sweep: str, trial: int) -> str:
    return f"mlorch-prune-{_safe(sweep)}-{trial}"


def report(value: float, step: int) -> None:
    """Report an intermediate ``value`` at ``step`` (an epoch, a boosting round) of the current trial.

    Inside a sweep trial, raises ``optuna.TrialPruned`` once the sweep's pruner has
    decided to stop this trial; let it propagate (the sweep marks the trial PRUNED).

    >>> report(0.5, step=1)  # outside a sweep: a no-op (tracking aside)
    """
    from mlorch.core.context import current_or_none

    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise TypeError(f"mo.report(value, step): step must be an integer >= 0, got {step!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"mo.report(value, step): value must be a number, got {type(value).__name__}") from None
    ctx = current_or_none()
    run = dict(ctx.run) if ctx is not None else {}
    sweep, trial = run.get("sweep"), run.get("trial")
    if sweep is None or trial is None:
        _to_tracking(number, step)
        return
    worker = _worker()
    if worker is None:  # the flow ran in-process (sync backend): nothing to reach
        return
    worker.log_event(report_topic(sweep), {"trial": int(trial), "step": step, "value": number if math.isfinite(number) else None})
    if should_stop(sweep, int(trial)):
        import optuna

        raise optuna.TrialPruned(f"trial {trial} pruned at step {step} by the sweep's pruner")


class QuietPruning(WorkerPlugin):
    """Worker plugin: a pruned trial is not an error, so distributed's "Compute Failed" log for it is dropped."""

    name = "mlorch-quiet-pruning"
    idempotent = True

    def setup(self, worker: Any) -> None:
        import logging

        log = logging.getLogger("distributed.worker")
        if not any(isinstance(f, _PrunedFilter) for f in log.filters):
            log.addFilter(_PrunedFilter())


class _PrunedFilter:
    def filter(self, record: Any) -> bool:
        try:
            return "TrialPruned" not in record.getMessage()
        except Exception:
            return True


def should_stop(sweep: str, trial: int) -> bool:
    """Whether the driver asked this trial to stop (pruned, timed out, or the sweep was stopped)."""
    from distributed import Event

    try:
        return bool(Event(prune_event_name(sweep, trial)).is_set())
    except Exception:  # no client reachable: keep running rather than fail the trial
        return False


def _worker() -> Any:
    try:
        from distributed import get_worker

        return get_worker()
    except ValueError:
        return None


def _to_tracking(value: float, step: int) -> None:
    try:
        from mlorch.tracking import log_metric
    except Exception:
        return
    try:
        log_metric("report", value, step=step)
    except Exception:
        pass
