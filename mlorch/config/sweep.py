"""The sweep YAML (``mlorch sweep configs/sweeps/<name>.yaml``): fields and types only.

The search space stays a plain mapping here; ``mlorch.tuning.space.space_from_config``
reads it (this package knows nothing of tuning). Unknown fields are errors with a
did-you-mean, like every mlorch config.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

__all__ = ["SweepConfig"]


class SweepConfig(BaseModel):
    """One sweep: what to tune, over which space, for which metric, on which cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = Field(description="path/to/file.py:flow_or_objective")
    space: dict[str, Any] = Field(default_factory=dict)
    metric: str | None = None
    direction: Literal["minimize", "maximize"] | None = None
    metrics: list[str] | None = None
    directions: list[Literal["minimize", "maximize"]] | None = None
    n_trials: PositiveInt = 20
    max_concurrency: PositiveInt | None = None
    sampler: str | dict[str, Any] = "tpe"
    pruner: str | dict[str, Any] | None = Field(default=None, description="default: Optuna's (the median pruner)")
    seed: int | None = None
    name: str | None = None
    resources: dict[str, PositiveFloat] | None = None
    timeout: PositiveFloat | None = Field(default=None, description="seconds for the whole sweep (Optuna's timeout)")
    trial_timeout: PositiveFloat | None = Field(default=None, description="seconds one trial may run")
    load_if_exists: bool = True
    reuse_results: bool = True
    storage: str | None = None
    cluster: str | dict[str, Any] | None = None
    tracking: bool = True
    tracking_uri: str | None = Field(default=None, description="MLflow store (default: MLFLOW_TRACKING_URI, else the project's)")
