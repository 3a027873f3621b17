"""Typed configuration models. Unknown fields are errors (``extra="forbid"``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

__all__ = ["AddressClusterConfig", "ClusterConfig", "LocalClusterConfig", "JOBQUEUE_KINDS"]

JOBQUEUE_KINDS = ("slurm", "pbs", "sge", "lsf", "htcondor", "oar")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalClusterConfig(_Strict):
    """Worker processes on this machine: one per GPU (pinned), the rest CPU-only."""

    kind: Literal["local"] = "local"
    n_workers: PositiveInt | None = None
    threads_per_worker: PositiveInt = 1
    gpus: int | Literal["auto"] = Field(default="auto", description="'auto' detects; N declares N slots")
    gpu_threads: PositiveInt = 2
    memory_limit: str | float | None = "auto"
    dashboard_address: str | None = ":8787"
    env: dict[str, str] = Field(default_factory=dict)


class AddressClusterConfig(_Strict):
    """An already running scheduler."""

    kind: Literal["address"]
    address: str
    timeout: float = Field(default=30, gt=0, description="seconds to wait for the scheduler")


ClusterConfig = LocalClusterConfig | AddressClusterConfig
