"""Cost of ``mo.log_metric`` inside a task against a bare ``mlflow.log_metric``, same store, same run.

mlorch buffers points in the worker and ships them to the driver, which writes them
with ``log_batch`` (1000 a request); the bare call is one SQLite transaction per point.
The task times its own logging loop (what the task pays); the bare loop runs in the
driver against the same SQLite store and the same MLflow run. Afterwards every point
of both series is counted back through ``MlflowClient``. Target: ratio <= 0.1.

    python benchmarks/bench_logging.py [--points 20000] [--bare 300] [--store DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import mlorch as mo


@mo.task
def log_points(n: int, repeat: int) -> list:
    """Log ``n`` points ``repeat`` times; return the seconds each pass took."""
    times = []
    for r in range(repeat):
        start = time.perf_counter()
        for i in range(n):
            mo.log_metric("mo_metric", i * 0.001 + r, step=r * n + i)
        times.append(time.perf_counter() - start)
    return times


@mo.flow(experiment="bench-logging")
def bench(n: int, repeat: int) -> list:
    return log_points(n, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20_000, help="mo.log_metric calls per pass")
    parser.add_argument("--repeat", type=int, default=3, help="passes (median reported)")
    parser.add_argument("--bare", type=int, default=300, help="bare mlflow.log_metric calls per pass")
    parser.add_argument("--store", help="folder for the SQLite store (default: a temporary one)")
    args = parser.parse_args()

    folder = Path(args.store or tempfile.mkdtemp(prefix="mlorch-bench-"))
    uri = f"sqlite:///{folder.resolve() / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLORCH_HOME"] = str(folder / "project")

    import mlflow

    from mlorch.execution.runner import run_flow
    from mlorch.tracking.store import RunStore

    store = RunStore.open(uri)
    run_id = store.create_run("bench-logging", "bench")
    with mo.cluster(n_workers=2, gpus=0, dashboard_address=None) as cluster:
        t0 = time.perf_counter()
        mo_times = run_flow(bench, (args.points, args.repeat), {}, cluster=cluster, info={"mlflow_run_id": run_id})
        flow_wall = time.perf_counter() - t0

    mlflow.set_tracking_uri(uri)
    bare_times = []
    for r in range(args.repeat):
        start = time.perf_counter()
        for i in range(args.bare):
            mlflow.log_metric("bare_metric", i * 0.001 + r, step=r * args.bare + i, run_id=run_id)
        bare_times.append(time.perf_counter() - start)
    store.end_run(run_id)

    landed_mo = len(store.client.get_metric_history(run_id, "mo_metric"))
    landed_bare = len(store.client.get_metric_history(run_id, "bare_metric"))
    per_mo = statistics.median(mo_times) / args.points
    per_bare = statistics.median(bare_times) / args.bare
    ratio = per_mo / per_bare
    print(f"store: {uri}")
    print(f"mo.log_metric in a task : {per_mo * 1e6:8.2f} us/call  ({args.points} calls x {args.repeat}, median)")
    print(f"bare mlflow.log_metric  : {per_bare * 1e6:8.2f} us/call  ({args.bare} calls x {args.repeat}, median)")
    print(f"ratio                   : {ratio:.4f}  (target <= 0.1)")
    print(f"flow wall time (all {args.points * args.repeat} points written before it returned): {flow_wall:.2f} s")
    print(f"points landed           : mo {landed_mo}/{args.points * args.repeat}, bare {landed_bare}/{args.bare * args.repeat}")
    if not args.store:
        shutil.rmtree(folder, ignore_errors=True)
    assert landed_mo == args.points * args.repeat, "lost mo.log_metric points"
    assert landed_bare == args.bare * args.repeat, "lost bare points"
    assert ratio <= 0.1, f"ratio {ratio:.3f} above the 0.1 target"


if __name__ == "__main__":
    main()
