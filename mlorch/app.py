"""Composition root: turns configuration into running parts (a cluster; the cluster a sweep names)."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

from mlorch.config import load_cluster_config
from mlorch.config.schema import JobqueueClusterConfig, walltime_seconds
from mlorch.execution.cluster import PROVIDERS, ClusterHandle
from mlorch.tuning.api import sweep as _sweep

__all__ = ["cluster", "jobqueue_spec", "sweep"]


def cluster(config: str | os.PathLike[str] | Mapping[str, Any] | None = None, **options: Any) -> ClusterHandle:
    """Start (or connect to) a cluster and make it the one flows run on until closed.

    ``config`` is a YAML path (``configs/cluster/local.yaml``) or a mapping; keyword
    options override its fields (``mo.cluster(n_workers=2, gpus=2)``). Use it as a
    context manager, or call ``.close()``.
    """
    cfg = load_cluster_config(config, **options)
    if isinstance(cfg, JobqueueClusterConfig):
        from mlorch.execution.jobqueue import start_jobqueue

        return start_jobqueue(jobqueue_spec(cfg, _label(config)))
    fields = cfg.model_dump(exclude={"kind"})
    return PROVIDERS[cfg.kind](**fields)


@functools.wraps(_sweep)
def sweep(target: Any, **options: Any) -> Any:
    spec = options.get("cluster")
    if isinstance(spec, (str, os.PathLike, Mapping)):
        options["cluster"] = functools.partial(cluster, spec)  # started after the arguments are checked and the lock is held
    return _sweep(target, **options)


def _label(config: Any) -> str:
    return str(config) if isinstance(config, (str, os.PathLike)) else "cluster options"


def jobqueue_spec(cfg: JobqueueClusterConfig, source: str = "cluster options") -> Any:
    """The plain values the execution layer needs from a validated jobqueue config."""
    from mlorch.execution.jobqueue import MAPPED, JobqueueSpec
    from mlorch.project import home

    log_directory = cfg.log_directory or str(home() / "jobs")
    return JobqueueSpec(
        kind=cfg.kind,
        fields={name: getattr(cfg, name) for name in MAPPED},
        processes=cfg.worker_processes,
        gpus_per_job=cfg.gpus_per_job,
        jobs_min=cfg.jobs.min,
        jobs_max=cfg.jobs.max,
        walltime_s=walltime_seconds(cfg.walltime),
        margin_s=cfg.margin_seconds,
        job_extra_directives=list(cfg.job_extra_directives),
        scheduler_options=dict(cfg.scheduler_options),
        dashboard_address=cfg.dashboard_address,
        security=cfg.security,
        log_directory=str(os.path.abspath(log_directory)),
        env=dict(cfg.env),
        passthrough=dict(cfg.jobqueue),
        source=source,
    )
