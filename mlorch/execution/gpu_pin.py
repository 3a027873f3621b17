"""Nanny preload for batch jobs with several GPUs: pins each worker process to one of them.

SLURM gives a ``--gres=gpu:N`` job ``CUDA_VISIBLE_DEVICES=a,b,...`` and dask-jobqueue
starts N worker processes in it (``--nworkers N``, named ``<job>-0`` ... ``<job>-N-1``).
Before a nanny spawns its worker, this sets the worker's ``CUDA_VISIBLE_DEVICES`` to
the device at its own index, so each process sees exactly one GPU (the pattern
dask-cuda uses), and ``mo.context().gpu_ids`` names it.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["dask_setup", "device_for"]


def device_for(worker_name: str, assigned: str, workers_per_job: int) -> str | None:
    """The device a worker named ``worker_name`` should see, given the job's devices."""
    devices = [d.strip() for d in assigned.split(",") if d.strip()]
    if not devices:
        return None
    index = 0
    if workers_per_job > 1:
        suffix = str(worker_name).rsplit("-", 1)[-1]
        index = int(suffix) if suffix.isdigit() else 0
    return devices[index % len(devices)]


def dask_setup(nanny: Any) -> None:
    device = device_for(
        str(nanny.name), os.environ.get("CUDA_VISIBLE_DEVICES", ""), int(os.environ.get("MLORCH_WORKERS_PER_JOB", "1"))
    )
    if device is not None:
        nanny.env["CUDA_VISIBLE_DEVICES"] = device
