"""The environment of every process mlorch starts or configures: nothing phones home.

One home for it: local workers, batch jobs (exported in their job scripts), the MLflow
client of the driver and ``mlorch ui``'s server all take ``QUIET_ENV``.
"""

from __future__ import annotations

__all__ = ["QUIET_ENV"]

QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
