"""Per-task overhead of mlorch against raw dask.distributed, same cluster, same run.

Shapes: a fan-out/fan-in of N tasks (N independent ``inc`` calls summed by one task)
and a chain of M dependent ``inc`` calls. Raw Dask runs the same work two ways, a
``dask.delayed`` graph through ``client.compute`` and futures through
``client.map``/``client.submit``; the ratio is taken against the faster of the two.
mlorch traces a flow and runs it.
Runs alternate (raw, mlorch, raw, ...) and medians are reported, so drift on a
shared machine hits both sides alike.

    python benchmarks/bench_overhead.py [--fanout 5000] [--chain 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import dask
from dask import delayed

os.environ.setdefault("MLORCH_TRACKING", "off")  # measure the engine; tracking has its own benchmark

import mlorch as mo  # noqa: E402


def inc(x: int) -> int:
    return x + 1


def total(xs: list) -> int:
    return sum(xs)


inc_task = mo.task(inc)
total_task = mo.task(total)


@mo.flow
def fanout(n: int, salt: int) -> int:
    return total_task(inc_task.map(range(salt, salt + n)))


@mo.flow
def chain(m: int, salt: int) -> int:
    x = salt
    for _ in range(m):
        x = inc_task(x)
    return x


def raw_fanout(client, n: int, salt: int) -> int:
    return client.compute(delayed(total)([delayed(inc)(i) for i in range(salt, salt + n)])).result()


def raw_chain(client, m: int, salt: int) -> int:
    x = salt
    for _ in range(m):
        x = delayed(inc)(x)
    return client.compute(x).result()


def raw_futures_fanout(client, n: int, salt: int) -> int:
    return client.submit(total, client.map(inc, range(salt, salt + n))).result()


def raw_futures_chain(client, m: int, salt: int) -> int:
    x = client.submit(inc, salt)
    for _ in range(m - 1):
        x = client.submit(inc, x)
    return x.result()


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fanout", type=int, default=5000)
    parser.add_argument("--chain", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(f"cluster: LocalCluster, {args.workers} worker processes x 1 thread; dask {dask.__version__}")
    with mo.cluster(n_workers=args.workers, gpus=0, dashboard_address=None) as handle:
        client = handle.client
        # warm-up: imports, pickling caches, worker start
        raw_fanout(client, 200, -1000)
        fanout(200, -2000)
        rows = []
        shapes = [
            (
                f"fan-out/fan-in, {args.fanout} tasks",
                args.fanout,
                (raw_fanout, raw_futures_fanout),
                fanout,
                lambda s: sum(range(s + 1, s + args.fanout + 1)),
            ),
            (f"chain, {args.chain} tasks", args.chain, (raw_chain, raw_futures_chain), chain, lambda s: s + args.chain),
        ]
        for label, n, raws, ours, expect in shapes:
            times: dict[str, list[float]] = {"delayed": [], "futures": [], "mlorch": []}
            for rep in range(args.repeat):
                salt = rep * 1_000_000 + n  # fresh keys each time: nothing reused between repeats
                for name, fn, call_args, offset in [
                    ("delayed", raws[0], (client, n), 0),
                    ("futures", raws[1], (client, n), 250_000),
                    ("mlorch", ours, (n,), 500_000),
                ]:
                    t, v = timed(fn, *call_args, salt + offset)
                    assert v == expect(salt + offset), (label, name, v)
                    times[name].append(t)
            med = {k: statistics.median(v) for k, v in times.items()}
            best_raw = min(med["delayed"], med["futures"])
            rows.append((label, med["delayed"], med["futures"], med["mlorch"], med["mlorch"] / best_raw, n))
        print(f"{'shape':30} {'delayed s':>9} {'futures s':>9} {'mlorch s':>9} {'ratio':>6} {'mlorch ms/task':>15}")
        for label, d, f, o, ratio, n in rows:
            print(f"{label:30} {d:9.2f} {f:9.2f} {o:9.2f} {ratio:6.2f} {1000 * o / n:15.2f}")
        start = time.perf_counter()
        fanout.graph(args.fanout, -3000)  # tracing alone: what mlorch adds in the driver per task
        trace_us = 1e6 * (time.perf_counter() - start) / args.fanout
        print(f"tracing {args.fanout} task calls into a graph: {trace_us:.0f} us per task")
        worst = max(row[4] for row in rows)
        print(f"worst ratio mlorch / fastest raw Dask: {worst:.2f} (target <= 1.25)")


if __name__ == "__main__":
    main()
