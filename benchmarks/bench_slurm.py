"""SLURM benchmark (needs the local SLURM of ``.ci/setup-slurm``): start-up, scaling, throughput.

    .venv/bin/python benchmarks/bench_slurm.py              # --trials 60 --seconds 0.5

- first trial: from ``mo.cluster(<slurm>)`` to the first trial running on a worker (cluster
  start, job submission, the job starting, the worker's Python start-up and connection);
- scale-up: a demand of 2 workers from 0 until both are connected; scale-down: the demand
  dropped to 0 until the jobs have left the queue;
- throughput: trials/s of one flow sweep (``--trials`` trials sleeping ``--seconds``) on
  2 SLURM jobs x 1 worker x 1 thread against a LocalCluster of 2 workers x 1 thread, same
  run, same flow, tracking off; the ratio is SLURM over LocalCluster (1.0 = no cost).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ["MLORCH_TRACKING"] = "off"

import mlorch as mo  # noqa: E402


@mo.task
def nap(x: float, seconds: float) -> float:
    time.sleep(seconds)
    return (x - 0.3) ** 2


@mo.flow
def napping(x: float = 0.0, seconds: float = 0.5):
    return {"loss": nap(x, seconds)}


def slurm_config(name: str, folder: Path) -> dict:
    return {
        "kind": "slurm",
        "queue": "gpu",
        "walltime": "00:30:00",
        "cores": 1,
        "memory": "1GB",
        "interface": "lo",
        "dashboard_address": "127.0.0.1:0",
        "job_name": name,
        "jobs": {"min": 0, "max": 2},
        "log_directory": str(folder / "jobs"),
        "env": {"PYTHONPATH": str(ROOT)},
    }


def jobs_in_queue(name: str) -> int:
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True)
    return len(out.stdout.split())


def wait(predicate, timeout: float = 120.0) -> float:
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("benchmark step did not finish")
        time.sleep(0.05)
    return time.perf_counter() - start


def sweep_rate(handle, trials: int, seconds: float, name: str) -> float:
    start = time.perf_counter()
    study = mo.sweep(
        napping,
        space={"x": mo.uniform(0, 1), "seconds": seconds},
        metric="loss",
        n_trials=trials,
        name=name,
        cluster=handle,
        progress=False,
        tracking=False,
    )
    assert study.n_finished == trials
    return trials / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    os.environ["MLORCH_HOME"] = str(folder / "project")
    name = f"bench-{uuid.uuid4().hex[:6]}"
    try:
        t0 = time.perf_counter()
        with mo.cluster(slurm_config(name, folder)) as handle:
            first = mo.sweep(
                napping,
                space={"x": mo.uniform(0, 1), "seconds": 0.0},
                metric="loss",
                n_trials=1,
                name=f"{name}-first",
                cluster=handle,
                progress=False,
                tracking=False,
            )
            first_trial = time.perf_counter() - t0
            assert first.n_finished == 1
            wait(lambda: jobs_in_queue(name) == 0)
            handle.want("bench", 2)
            up = wait(lambda: handle.n_workers == 2)
            handle.want("bench", None)
            down = wait(lambda: jobs_in_queue(name) == 0)
            handle.want("bench", 2)
            wait(lambda: handle.n_workers == 2)
            slurm_rate = sweep_rate(handle, args.trials, args.seconds, f"{name}-slurm")
            handle.want("bench", None)
        with mo.cluster(n_workers=2, gpus=0, dashboard_address=None) as local:
            local_rate = sweep_rate(local, args.trials, args.seconds, f"{name}-local")
    finally:
        subprocess.run(["scancel", "-n", name], check=False)
    print(f"first trial running after mo.cluster(<slurm>): {first_trial:.2f} s (cluster start + job + worker start-up)")
    print(f"scale-up 0 -> 2 workers: {up:.2f} s; scale-down 2 -> 0 jobs in the queue: {down:.2f} s")
    print(f"throughput, {args.trials} trials of {args.seconds:g} s on 2 workers x 1 thread:")
    print(
        f"  LocalCluster {local_rate:.2f} trials/s, SLURM {slurm_rate:.2f} trials/s, ratio SLURM/local {slurm_rate / local_rate:.2f}"
    )


if __name__ == "__main__":
    main()
