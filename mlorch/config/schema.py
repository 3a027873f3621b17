"""Typed configuration models. Unknown fields are errors (``extra="forbid"``)."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, StrictBool, field_validator, model_validator

__all__ = [
    "AddressClusterConfig",
    "ClusterConfig",
    "JOBQUEUE_KINDS",
    "JobBounds",
    "JobqueueClusterConfig",
    "LocalClusterConfig",
    "walltime_seconds",
]

JOBQUEUE_KINDS = ("slurm", "pbs", "sge", "lsf", "htcondor", "oar")


MAX_WORKERS = 256  # local worker processes; more is a typo (documented in the README)
MAX_GPUS = 64  # GPUs declared on one machine
MAX_THREADS = 256


class _Strict(BaseModel):
    """No unknown fields, no coercion: ``5`` is not ``"5"``, ``true`` is not ``1``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def check_byte_size(value: Any, field: str) -> Any:
    """``"4GB"``, ``"512 MiB"``, a positive number of bytes (or a fraction <= 1 of the machine's memory), ``"auto"``, None."""
    if value is None or value == "auto":
        return value
    if isinstance(value, bool):
        raise ValueError(f"{field}: expected a byte size like '4GB', got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{field}: expected a positive byte size, got {value!r}")
        return value
    if isinstance(value, str):
        from dask.utils import parse_bytes

        try:
            parsed = parse_bytes(value)
        except (ValueError, TypeError):
            raise ValueError(f"{field}: {value[:40]!r} is not a byte size like '4GB' or '512MiB'") from None
        if parsed <= 0:
            raise ValueError(f"{field}: expected a positive byte size, got {value[:40]!r}")
        return value
    raise ValueError(f"{field}: expected a byte size like '4GB', got {type(value).__name__}")


def check_listen_address(value: Any, field: str) -> Any:
    """``"127.0.0.1:8787"``, ``":0"``, ``"localhost:8787"``: a host (may be empty) and a port 0-65535."""
    if value is None:
        return value
    if not isinstance(value, str):
        raise ValueError(f"{field}: expected 'host:port', got {type(value).__name__}")
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or any(c.isspace() for c in host):
        raise ValueError(f"{field}: {value[:60]!r} is not 'host:port' with a port 0-65535")
    return value


class LocalClusterConfig(_Strict):
    """Worker processes on this machine: one per GPU (pinned), the rest CPU-only."""

    kind: Literal["local"] = "local"
    n_workers: PositiveInt | None = Field(default=None, le=MAX_WORKERS)
    threads_per_worker: PositiveInt = Field(default=1, le=MAX_THREADS)
    gpus: Literal["auto"] | NonNegativeInt = Field(default="auto", description="'auto' detects; N declares N slots")
    gpu_threads: PositiveInt = Field(default=2, le=MAX_THREADS)
    memory_limit: str | float | None = "auto"
    dashboard_address: str | None = "127.0.0.1:8787"
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: Any) -> Any:
        if isinstance(value, int) and value > MAX_GPUS:
            raise ValueError(f"at most {MAX_GPUS} GPUs on one machine, got {value}")
        return value

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: Any) -> Any:
        return check_byte_size(value, "memory_limit")

    @field_validator("dashboard_address")
    @classmethod
    def _dashboard(cls, value: Any) -> Any:
        return check_listen_address(value, "dashboard_address")


class AddressClusterConfig(_Strict):
    """An already running scheduler."""

    kind: Literal["address"]
    address: str
    timeout: float = Field(default=30, gt=0, description="seconds to wait for the scheduler")


# SLURM's time formats (sbatch -t): MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
_WALLTIME = re.compile(
    r"^(?:(?P<d>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)$"
)


def walltime_seconds(value: str) -> int:
    """Seconds in a batch-system walltime (``"02:00:00"``, ``"1-12:00:00"``, ``"90"`` minutes)."""
    m = _WALLTIME.match(value.strip())
    if not m:
        raise ValueError(f"walltime {value!r} is not HH:MM:SS, D-HH:MM:SS, MM:SS or minutes")
    if m["d"] is not None:
        days, hours, minutes, seconds = int(m["d"]), int(m["dh"]), int(m["dm"] or 0), int(m["ds"] or 0)
    else:
        parts = [int(p) for p in (m["a"], m["b"], m["c"]) if p is not None]
        days = 0
        hours, minutes, seconds = {1: (0, parts[0], 0), 2: (0, *parts), 3: tuple(parts)}[len(parts)]
    if minutes > 59 and (hours or days) or seconds > 59 or (days and hours > 23):
        raise ValueError(f"walltime {value!r}: a field is out of range")
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise ValueError(f"walltime {value!r} must be longer than zero")
    return total


class JobBounds(_Strict):
    """How many batch jobs the cluster may hold; a sweep or flow asks for what it can use in between."""

    min: NonNegativeInt = 0
    max: PositiveInt = 1

    @model_validator(mode="after")
    def _ordered(self) -> JobBounds:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is larger than max ({self.max})")
        return self


class JobqueueClusterConfig(_Strict):
    """Worker processes in batch jobs, through dask-jobqueue (SLURM first; PBS, SGE, LSF, HTCondor, OAR).

    Fields map onto dask-jobqueue's own parameters; ``jobqueue`` passes any other
    keyword of its cluster class through unchanged.
    """

    kind: Literal["slurm", "pbs", "sge", "lsf", "htcondor", "oar"]
    queue: str | None = Field(default=None, description="partition (SLURM) or queue")
    account: str | None = None
    walltime: str = "01:00:00"
    cores: PositiveInt = 1
    memory: str = "4GB"
    processes: PositiveInt | None = Field(default=None, description="worker processes per job (default: gpus_per_job or 1)")
    gpus_per_job: NonNegativeInt = 0
    job_extra_directives: list[str] = Field(default_factory=list)
    job_name: str = "mlorch"
    jobs: JobBounds = Field(default_factory=JobBounds)
    interface: str | None = Field(default=None, description="network interface workers and scheduler use (e.g. ib0, lo)")
    scheduler_options: dict[str, Any] = Field(default_factory=dict)
    dashboard_address: str = "127.0.0.1:8787"
    security: StrictBool = Field(default=True, description="TLS with credentials made for this cluster; false turns it off")
    leave_before_walltime: str | None = Field(
        default="auto", description="how long before the walltime workers leave gracefully ('auto': 10%, 20 s to 5 min)"
    )
    log_directory: str | None = Field(default=None, description="job logs (default: <project>/.mlorch/jobs)")
    local_directory: str | None = None
    env: dict[str, str] = Field(default_factory=dict, description="environment variables exported in each job")
    jobqueue: dict[str, Any] = Field(default_factory=dict, description="other keywords of dask-jobqueue's cluster class")

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, value: str) -> str:
        walltime_seconds(value)
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not isinstance(value, str):
            raise ValueError(f"memory {value!r} is not a byte size such as '16GB'")
        return str(check_byte_size(value, "memory"))

    @field_validator("dashboard_address")
    @classmethod
    def _dashboard(cls, value: str) -> str:
        return str(check_listen_address(value, "dashboard_address"))

    @field_validator("leave_before_walltime")
    @classmethod
    def _margin(cls, value: str | None) -> str | None:
        if value in (None, "auto"):
            return value
        from dask.utils import parse_timedelta

        try:
            parse_timedelta(value)
        except (ValueError, TypeError, KeyError):
            raise ValueError(f"{value!r} is not a duration such as '5m' or '30s'") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> JobqueueClusterConfig:
        processes = self.worker_processes
        if self.gpus_per_job and processes != self.gpus_per_job:
            raise ValueError(
                f"processes ({processes}) must equal gpus_per_job ({self.gpus_per_job}): each worker process is pinned to one GPU"
            )
        if self.cores < processes:
            source = "processes" if self.processes else "gpus_per_job"  # gpus_per_job: N gives N worker processes
            raise ValueError(f"cores ({self.cores}) is less than {source} ({processes}): each worker process needs a core")
        if self.gpus_per_job and self.kind != "slurm":
            raise ValueError("gpus_per_job is supported for kind 'slurm'; for other kinds request GPUs in job_extra_directives")
        margin = self.margin_seconds
        if margin is not None and margin >= walltime_seconds(self.walltime):
            raise ValueError(
                f"leave_before_walltime ({self.leave_before_walltime}) is not shorter than walltime ({self.walltime})"
            )
        return self

    @property
    def worker_processes(self) -> int:
        return self.processes or max(self.gpus_per_job, 1)

    @property
    def margin_seconds(self) -> float | None:
        """Seconds before the walltime at which workers leave (None: they stay until killed)."""
        if self.leave_before_walltime is None:
            return None
        if self.leave_before_walltime == "auto":
            return min(max(0.1 * walltime_seconds(self.walltime), 20.0), 300.0)
        from dask.utils import parse_timedelta

        return float(parse_timedelta(self.leave_before_walltime))


ClusterConfig = LocalClusterConfig | AddressClusterConfig | JobqueueClusterConfig
