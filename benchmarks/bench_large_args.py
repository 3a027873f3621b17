"""Bytes moved over loopback when one large argument feeds several tasks: mlorch against raw Dask.

Three tasks take the same 100 MB numpy array on a LocalCluster of 2 worker processes.
Three ways, in the same run, on the same cluster:

- ``mlorch``: a flow called with the array (it scatters the array once, keyed by content);
- ``raw scatter``: ``client.scatter`` by hand, then ``client.submit(f, future)`` per task;
- ``raw inline``: ``client.submit(f, array)`` per task, the array inside every task (what mlorch
  did before: three copies through the scheduler, then to the workers).

Bytes are the loopback interface's ``bytes_sent`` (psutil) across the call: machine-wide, so
other traffic counts too; runs alternate and medians are reported. Every repeat uses a fresh
array (new content, new keys), so nothing is reused between repeats.

    python benchmarks/bench_large_args.py [--mb 100] [--tasks 3] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import psutil

os.environ.setdefault("MLORCH_TRACKING", "off")  # measure the engine

import mlorch as mo  # noqa: E402


def head(x: np.ndarray, i: int) -> float:
    return float(x[i])


head_task = mo.task(head)


@mo.flow
def many(x: np.ndarray, n: int) -> list:
    return [head_task(x, i) for i in range(n)]


def loopback_sent() -> int:
    return int(psutil.net_io_counters(pernic=True)["lo"].bytes_sent)


def measure(fn) -> tuple[int, float]:
    time.sleep(0.5)  # let heartbeats and releases of the previous case go by
    before, start = loopback_sent(), time.perf_counter()
    fn()
    return loopback_sent() - before, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.tasks
    size = args.mb * 1_000_000

    with mo.cluster(n_workers=2, gpus=0, threads_per_worker=1, dashboard_address=None) as handle:
        client = handle.client
        results: dict[str, list[tuple[int, float]]] = {"mlorch": [], "raw scatter": [], "raw inline": []}
        for rep in range(args.repeat):
            arrays = [np.full(size // 8, float(rep * 10 + k)) for k in range(3)]

            def run_mlorch(x: np.ndarray = arrays[0]) -> None:
                assert many(x, n) == [float(x[0])] * n

            def run_scatter(x: np.ndarray = arrays[1]) -> None:
                future = client.scatter(x)
                futures = [client.submit(head, future, i) for i in range(n)]
                assert client.gather(futures) == [float(x[0])] * n
                del future, futures

            def run_inline(x: np.ndarray = arrays[2]) -> None:
                futures = [client.submit(head, x, i) for i in range(n)]
                assert client.gather(futures) == [float(x[0])] * n
                del futures

            for name, fn in (("raw scatter", run_scatter), ("mlorch", run_mlorch), ("raw inline", run_inline)):
                results[name].append(measure(fn))

    payload = size / 1e6
    print(f"{n} tasks on 2 workers, one {payload:.0f} MB argument, medians of {args.repeat}:")
    print(f"{'':<12} {'MB moved':>9} {'MB per task':>12} {'copies':>7} {'seconds':>8}")
    for name, runs in results.items():
        moved = statistics.median(b for b, _ in runs) / 1e6
        seconds = statistics.median(t for _, t in runs)
        print(f"{name:<12} {moved:>9.0f} {moved / n:>12.1f} {moved / payload:>7.2f} {seconds:>8.2f}")


if __name__ == "__main__":
    main()
