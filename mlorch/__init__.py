"""mlorch: plain-Python ML pipelines on dask.distributed, with Optuna sweeps and MLflow tracking.

>>> import mlorch as mo
>>> @mo.task
... def double(x: int) -> int:
...     return 2 * x
>>> double(21)  # outside a flow, a task is just the function
42
"""

from mlorch import execution as _execution  # installs the flow runner
from mlorch.app import cluster
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
    ResourceUnavailableError,
    SerializationError,
    TaskArgumentError,
    TaskFailedError,
    TaskTimeoutError,
)

__version__ = "0.1.0"

__all__ = [
    "ClusterError",
    "ConfigError",
    "Flow",
    "FlowCycleError",
    "FlowDefinitionError",
    "FlowGraph",
    "MlorchError",
    "Ref",
    "ResourceUnavailableError",
    "SerializationError",
    "Task",
    "TaskArgumentError",
    "TaskContext",
    "TaskFailedError",
    "TaskTimeoutError",
    "cluster",
    "context",
    "flow",
    "task",
]

del _execution
