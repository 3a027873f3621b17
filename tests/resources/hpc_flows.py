"""Flows the SLURM tests run: tasks record where they ran (job, device, time) in MLORCH_TEST_LOG."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import mlorch as mo
from tests.resources.sweep_flows import record


def _where(**fields: object) -> None:
    record(
        "where",
        job=os.environ.get("SLURM_JOB_ID"),
        visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
        ids=list(mo.context().gpu_ids),
        trial=mo.context().run.get("trial"),
        pid=os.getpid(),
        **fields,
    )


@mo.task(resources={"GPU": 1})
def on_gpu(i: int, seconds: float) -> int:
    start = time.time()
    time.sleep(seconds)
    _where(i=i, start=start, end=time.time())
    return i


@mo.flow
def gpu_fanout(n: int = 4, seconds: float = 1.0):
    return on_gpu.map(range(n), seconds=seconds)


@mo.task(resources={"GPU": 0.5})
def half_gpu(x: float, seconds: float) -> float:
    start = time.time()
    time.sleep(seconds)
    _where(start=start, end=time.time())
    return (x - 0.5) ** 2


@mo.flow(experiment="hpc-half")
def half(x: float = 0.0, seconds: float = 1.5):
    return {"loss": half_gpu(x, seconds)}


@mo.task
def timed(x: float, seconds: float) -> float:
    start = time.time()
    record("begin", trial=mo.context().run.get("trial"), job=os.environ.get("SLURM_JOB_ID"), start=start)
    time.sleep(seconds)
    _where(start=start, end=time.time())
    return (x - 0.3) ** 2


@mo.flow(experiment="hpc-timed")
def steady(x: float = 0.0, seconds: float = 2.0):
    return {"loss": timed(x, seconds)}


@mo.task
def cancel_own_job(x: float, marker: str, times: int) -> float:
    """Trial 0 scancels its own job on each of its first ``times`` attempts (as a preemption would)."""
    _where(start=time.time())
    if mo.context().run.get("trial") == 0:
        count = len(os.listdir(marker)) if os.path.isdir(marker) else 0
        if count < times:
            os.makedirs(marker, exist_ok=True)
            open(os.path.join(marker, f"{count}-{os.getpid()}"), "w").close()
            subprocess.run(["scancel", os.environ["SLURM_JOB_ID"]], check=False)
            time.sleep(60)  # the batch system ends the job long before this
    time.sleep(0.5)
    return (x - 0.3) ** 2


@mo.flow(experiment="hpc-preempt")
def preempted(x: float = 0.0, marker: str = "", times: int = 1):
    return {"loss": cancel_own_job(x, marker, times)}


@mo.task
def crash_worker(x: float) -> float:
    """Kills its own worker process with SIGSEGV every time, as a crashing native library would."""
    _where(start=time.time())
    if mo.context().run.get("trial") == 0:
        os.kill(os.getpid(), signal.SIGSEGV)
    return x


@mo.flow(experiment="hpc-crash")
def crashing(x: float = 0.0):
    return {"loss": crash_worker(x)}


@mo.task
def peek(x: float, folders: list) -> float:
    """What a worker job sees of the driver's project folder and MLflow store (should be: nothing)."""
    record(
        "peek", seen={f: sorted(os.listdir(f)) if os.path.isdir(f) else None for f in folders}, job=os.environ.get("SLURM_JOB_ID")
    )
    mo.log_metric("peeked", x)
    return (x - 0.3) ** 2


@mo.flow(experiment="hpc-private")
def private(x: float = 0.0, folders: list = ()):
    return {"loss": peek(x, list(folders))}


def peeking_objective(trial):
    """A plain Optuna objective that also records what its worker job sees of the hidden folders."""
    x = trial.suggest_float("x", 0, 1)
    kind = trial.suggest_categorical("kind", ["a", "b"])
    folders = [f for f in os.environ.get("MLORCH_TEST_HIDDEN", "").split(":") if f]
    record(
        "peek", seen={f: sorted(os.listdir(f)) if os.path.isdir(f) else None for f in folders}, job=os.environ.get("SLURM_JOB_ID")
    )
    for step in range(2):
        trial.report(x + step, step)
    trial.set_user_attr("kind_seen", kind)
    return (x - 0.3) ** 2 + (0.1 if kind == "b" else 0.0)
