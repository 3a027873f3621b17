"""MLflow tracking: one run per flow run, logging from any worker, models in the registry.

Importing this package is cheap (MLflow is imported when the first tracked flow
starts). It registers the run hook that records flow runs, and the task finalizer
that flushes a task's buffered metrics when it ends. ``tracking=False`` on a flow or
``MLORCH_TRACKING=off`` switches it off. See ``store`` (the single writer),
``emit`` (the task side) and ``hook`` (run life cycle).
"""

from __future__ import annotations

import os
from typing import Any

from mlorch.core.runtime import add_argument_observer, add_error_redactor, add_task_finalizer
from mlorch.execution.runner import FlowRun, add_run_hook
from mlorch.names import RUN_ID_INFO, TRACKING_INFO
from mlorch.tracking import emit, sink
from mlorch.tracking.api import (
    log_artifact,
    log_figure,
    log_metric,
    log_metrics,
    log_model,
    log_param,
    log_params,
    log_text,
    set_model_alias,
    set_tag,
)
from mlorch.tracking.emit import on_task_end
from mlorch.tracking.secret_logs import SecretsHook, install_scrubbers, remember_arguments
from mlorch.tracking.secrets import Secret, scrub, set_secret_patterns
from mlorch.tracking.store import configure

__all__ = [
    "Secret",
    "configure",
    "enabled",
    "log_artifact",
    "log_figure",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_param",
    "log_params",
    "log_text",
    "set_model_alias",
    "set_secret_patterns",
    "set_tag",
]


def enabled(requested: bool = True) -> bool:
    """Whether to record in MLflow: the one place this is decided.

    ``requested`` is the caller's own switch (a flow's or a sweep's ``tracking=``);
    ``MLORCH_TRACKING=off``/``0``/``false``/``no`` turns everything off.
    """
    return requested and os.environ.get("MLORCH_TRACKING", "on").strip().lower() not in ("off", "0", "false", "no")


def _hook_factory(run: FlowRun) -> Any:
    if not enabled(getattr(run.flow, "tracking", True) and run.info.get(TRACKING_INFO, True)):
        return None
    if run.info.get(RUN_ID_INFO):  # a sweep's trial: the sweep's tracker adds the hook that fills its run
        return None
    from mlorch.tracking.hook import TrackingHook  # imports mlflow, only when a tracked flow runs

    return TrackingHook(run)


def _secrets_hook_factory(run: FlowRun) -> Any:
    return SecretsHook()


add_run_hook(_hook_factory)
add_run_hook(_secrets_hook_factory)  # on even without tracking: logs are scrubbed either way
add_task_finalizer(on_task_end)
emit.deliver_locally_to(lambda msg: sink.deliver(msg, None))
add_argument_observer(remember_arguments)
add_error_redactor(scrub)  # a task's error leaves its worker without the secrets the worker knows
# Every log line this process writes, task logs forwarded to the driver, and distributed's
# report of a failed task on a worker (see secret_logs.py for how workers learn the secrets).
install_scrubbers()
