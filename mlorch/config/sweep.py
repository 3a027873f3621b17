"""The sweep YAML (``mlorch sweep configs/sweeps/<name>.yaml``): which fields exist.

One schema for YAML and Python: the values of the fields ``mo.sweep`` takes are checked by
``mo.sweep`` itself (``mlorch.tuning.plan``), so a sweep written in YAML and the same sweep
written in Python get the same verdicts and the same messages (the CLI adds the file
name). This model only knows the field names (unknown ones are errors with a
did-you-mean) and checks what exists in YAML alone: ``target``, ``cluster``,
``tracking_uri``. The search space stays a plain mapping here;
``mlorch.tuning.space.space_from_config`` reads it (this package knows nothing of tuning).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SweepConfig"]


class SweepConfig(BaseModel):
    """One sweep: what to tune, over which space, for which metric, on which cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    target: str = Field(description="path/to/file.py:flow_or_objective")
    space: dict[str, Any] = Field(default_factory=dict)
    # Checked by mo.sweep (mlorch.tuning.plan), as for a sweep written in Python:
    metric: Any = None
    direction: Any = None
    metrics: Any = None
    directions: Any = None
    n_trials: Any = 20
    max_concurrency: Any = None
    sampler: Any = "tpe"
    pruner: Any = Field(default=None, description="default: Optuna's (the median pruner)")
    seed: Any = None
    name: Any = None
    resources: Any = None
    timeout: Any = Field(default=None, description="seconds for the whole sweep (Optuna's timeout)")
    trial_timeout: Any = Field(default=None, description="seconds one trial may run")
    load_if_exists: Any = True
    reuse_results: Any = True
    storage: Any = None
    tracking: Any = True
    # YAML only:
    cluster: str | dict[str, Any] | None = None
    tracking_uri: str | None = Field(default=None, description="MLflow store (default: MLFLOW_TRACKING_URI, else the project's)")
