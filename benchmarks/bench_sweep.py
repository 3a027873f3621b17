"""Sweep benchmarks: trials/s with full tracking vs Optuna's own loop, and cluster utilisation.

    .venv/bin/python benchmarks/bench_sweep.py                  # both, 300 trials
    .venv/bin/python benchmarks/bench_sweep.py throughput --trials 300
    .venv/bin/python benchmarks/bench_sweep.py utilization --trials 40

throughput: 300 trials of a trivial objective, each with an MLflow run, in one process:
  - optuna:  ``study.optimize(objective, n_jobs=2)`` with optuna-integration's
             ``MLflowCallback`` (one run per trial) on a fresh SQLite store, in-memory study;
  - mlorch:  ``mo.sweep`` of the same objective on 2 worker processes (1 thread each), journal
             storage, a parent MLflow run plus one child run per trial on a fresh SQLite store;
             once on a LocalCluster (its scheduler runs inside the driver process) and once with
             the scheduler in its own process (``dask scheduler``/``dask worker``, kind: address).
             "End to end" runs until ``mo.sweep`` returns: every child run ended, the parent's
             summary, plots and trials table written.
  Both exclude creating the empty SQLite database (a one-off cost for either).
utilization: 120 sleep trials of uneven length (0.2-1.0 s) on 4 thread slots; busy fraction
  = task time / (slots x wall time), measured (a) from the first task's start to the last
  task's start (the fan-out phase: a slot idles only if the driver is late to refill it)
  and (b) to the last task's end (adds the unavoidable tail where fewer trials remain
  than slots).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    return (x - 2) ** 2


def _fresh_store(folder: Path) -> str:
    """An empty, already migrated SQLite MLflow store (creation is not what is measured)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    MlflowClient(uri).search_experiments(max_results=1)
    return uri


def bench_optuna(n: int, folder: Path) -> float:
    import optuna
    from optuna_integration.mlflow import MLflowCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    uri = _fresh_store(folder)
    callback = MLflowCallback(tracking_uri=uri, metric_name="value")
    study = optuna.create_study(study_name="bench-optuna")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(objective, n_trials=n, n_jobs=2, callbacks=[callback])
    elapsed = time.perf_counter() - start
    assert len(study.trials) == n
    return n / elapsed


def bench_mlorch(n: int, folder: Path, external: bool) -> tuple[float, float]:
    """(trials/s until the last tell, trials/s until the sweep returned: child runs ended, summary written).

    ``external``: a cluster started by hand (``dask scheduler`` + ``dask worker``, the ``kind: address``
    deployment), against mlorch's local cluster (whose scheduler also runs in a process of its own).
    """
    import subprocess

    os.environ["MLORCH_HOME"] = str(folder / "home")
    os.environ["MLFLOW_TRACKING_URI"] = _fresh_store(folder)
    import mlorch as mo
    from mlorch.tracking.store import RunStore

    RunStore.open()  # opened once per process, as in any session
    procs: list[subprocess.Popen[bytes]] = []
    if external:
        bindir = Path(sys.executable).parent
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        procs.append(
            subprocess.Popen(
                [str(bindir / "dask"), "scheduler", "--port", "8799", "--dashboard-address", ":0", "--no-show"], **quiet
            )
        )
        procs.append(
            subprocess.Popen(
                [str(bindir / "dask"), "worker", "tcp://127.0.0.1:8799", "--nworkers", "2", "--nthreads", "1", "--no-dashboard"],
                **quiet,
            )
        )
        cluster_cm = mo.cluster({"kind": "address", "address": "tcp://127.0.0.1:8799"})
    else:
        cluster_cm = mo.cluster(n_workers=2, gpus=0, dashboard_address=None)
    try:
        with cluster_cm as cluster:
            cluster.client.wait_for_workers(2, timeout=60)
            start = time.time()
            sweep = mo.sweep(objective, n_trials=n, name="bench-mlorch", cluster=cluster, progress=False)
            total = time.time() - start
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait()
    last = max(t.datetime_complete.timestamp() for t in sweep.study.trials)  # the last tell
    assert sweep.n_finished == n
    store = RunStore.open()
    runs = store.client.search_runs([store.experiment_id("bench-mlorch")], max_results=5000)
    assert len(runs) == n + 1 and all(r.info.status == "FINISHED" for r in runs), len(runs)
    return n / (last - start), n / total


def bench_utilization(n: int) -> tuple[float, float, int, float]:
    """(busy fraction while trials remained to start, busy fraction overall, slots, wall seconds)."""
    import json

    import mlorch as mo

    os.environ["MLORCH_TRACKING"] = "off"
    os.environ["MLORCH_HOME"] = tempfile.mkdtemp(prefix="mlorch-bench-")
    spans_file = Path(os.environ["MLORCH_HOME"]) / "spans.jsonl"

    @mo.task
    def nap(seconds: float, log: str) -> float:
        t0 = time.time()
        time.sleep(seconds)
        with open(log, "a") as fh:
            fh.write(json.dumps([t0, time.time()]) + "\n")
        return seconds

    @mo.flow(tracking=False)
    def sleepy(seconds: float = 0.5, log: str = ""):
        return {"loss": nap(seconds, log)}

    with mo.cluster(n_workers=2, gpus=0, threads_per_worker=2, dashboard_address=None) as cluster:
        slots = sum(w["nthreads"] for w in cluster.client.scheduler_info(n_workers=-1)["workers"].values())
        mo.sweep(
            sleepy,
            space={"seconds": mo.uniform(0.2, 1.0), "log": str(spans_file)},
            metric="loss",
            n_trials=n,
            sampler="random",
            seed=0,
            name="bench-util",
            cluster=cluster,
            progress=False,
        )
    spans = [tuple(json.loads(line)) for line in spans_file.read_text().splitlines()]
    first, last_start, last_end = min(s for s, _ in spans), max(s for s, _ in spans), max(e for _, e in spans)
    steady = sum(max(0.0, min(e, last_start) - s) for s, e in spans) / (slots * (last_start - first))
    overall = sum(e - s for s, e in spans) / (slots * (last_end - first))
    return steady, overall, slots, last_end - first


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("which", nargs="?", default="all", choices=["all", "throughput", "utilization"])
    parser.add_argument("--trials", type=int, default=None)
    args = parser.parse_args()
    if args.which in ("all", "throughput"):
        n = args.trials or 300
        with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
            rates = {}
            for label in ("optuna", "local", "external"):
                folder = Path(tmp) / label
                folder.mkdir()
                rates[label] = bench_optuna(n, folder) if label == "optuna" else bench_mlorch(n, folder, label == "external")
        base = rates["optuna"]
        print(f"throughput, {n} trials of a trivial objective, one MLflow run per trial (SQLite):")
        print(f"  optuna study.optimize(n_jobs=2) + MLflowCallback        : {base:6.1f} trials/s")
        for label, text in (("local", "local cluster (mo.cluster())"), ("external", "dask scheduler + workers (kind: address)")):
            told, total = rates[label]
            print(
                f"  mlorch mo.sweep, {text:38s}: {total:6.1f} trials/s end to end ({total / base:.2f}x); "
                f"{told:.1f} trials/s to the last tell ({told / base:.2f}x)"
            )
    if args.which in ("all", "utilization"):
        n = args.trials if args.which == "utilization" and args.trials else 120
        steady, overall, slots, wall = bench_utilization(n)
        print(f"utilization, {n} sleep trials (0.2-1.0 s) on {slots} slots, {wall:.1f} s:")
        print(f"  busy while trials remained to start: {steady:.1%}; whole sweep incl. the tail: {overall:.1%}")


if __name__ == "__main__":
    main()
