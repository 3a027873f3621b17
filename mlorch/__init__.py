"""mlorch: plain-Python ML pipelines on dask.distributed, with Optuna sweeps and MLflow tracking.

>>> import mlorch as mo
>>> @mo.task
... def double(x: int) -> int:
...     return 2 * x
>>> double(21)  # outside a flow, a task is just the function
42
"""

from mlorch import execution as _execution  # installs the flow runner
from mlorch.app import cluster, sweep
from mlorch.core.context import TaskContext, context
from mlorch.core.flow import Flow, flow
from mlorch.core.task import Task, task
from mlorch.core.trace import FlowGraph, Ref
from mlorch.errors import (
    ClusterError,
    ConfigError,
    FlowCycleError,
    FlowDefinitionError,
    MlorchError,
    RemoteTaskError,
    ResourceUnavailableError,
    SerializationError,
    SweepRunningError,
    TaskArgumentError,
    TaskFailedError,
    TaskTimeoutError,
)
from mlorch.tracking import (
    Secret,
    log_artifact,
    log_figure,
    log_metric,
    log_metrics,
    log_model,
    log_param,
    log_params,
    set_model_alias,
    set_tag,
)
from mlorch.tuning import choice, intrange, loguniform, report, uniform

__version__ = "0.1.0"

__all__ = [
    "ClusterError",
    "ConfigError",
    "Flow",
    "FlowCycleError",
    "FlowDefinitionError",
    "FlowGraph",
    "MlorchError",
    "RemoteTaskError",
    "Ref",
    "ResourceUnavailableError",
    "Secret",
    "SerializationError",
    "Sweep",
    "SweepRunningError",
    "Task",
    "TaskArgumentError",
    "TaskContext",
    "TaskFailedError",
    "TaskTimeoutError",
    "choice",
    "cluster",
    "context",
    "flow",
    "intrange",
    "log_artifact",
    "log_figure",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_param",
    "log_params",
    "loguniform",
    "report",
    "set_model_alias",
    "set_tag",
    "sweep",
    "task",
    "uniform",
]

del _execution


def __getattr__(name: str) -> object:
    """``mo.Sweep`` (an ``optuna.Study`` subclass) on first use: ``import mlorch`` loads no Optuna."""
    if name == "Sweep":
        from mlorch.tuning.handle import Sweep

        return Sweep
    raise AttributeError(f"module 'mlorch' has no attribute {name!r}")
