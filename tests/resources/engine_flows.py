"""Flows used by the engine tests; tasks record each execution in a log file (MLORCH_TEST_LOG)."""

from __future__ import annotations

import os
import time

import mlorch as mo


def record(name: str, *extra: object) -> None:
    path = os.environ.get("MLORCH_TEST_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(" ".join([name, *map(str, extra)]) + "\n")


@mo.task
def make_list(n: int) -> list:
    record("make_list", n)
    return list(range(n))


@mo.task
def square(x: int) -> int:
    record("square", x)
    return x * x


@mo.task
def add(x: int, y: int) -> int:
    return x + y


@mo.task
def total(xs: list) -> int:
    return sum(xs)


class WorkerOnly:
    """A value that refuses to be unpickled outside a dask worker: proves data stays on workers."""

    def __init__(self, payload: int):
        self.payload = payload

    def __reduce__(self):
        return (_rebuild_worker_only, (self.payload,))


def _rebuild_worker_only(payload: int) -> WorkerOnly:
    from distributed import get_worker

    get_worker()  # raises ValueError in the caller's process
    return WorkerOnly(payload)


@mo.task
def big_intermediate(n: int) -> WorkerOnly:
    return WorkerOnly(n)


@mo.task
def payload_of(value: WorkerOnly) -> int:
    return value.payload


@mo.flow
def stays_on_workers(n: int = 7) -> int:
    return payload_of(big_intermediate(n))


@mo.flow
def dynamic_fanout(n: int = 4) -> dict:
    items = make_list(n)  # length known only at run time
    squares = square.map(items)
    s = total(squares)
    if s.result() > 10:  # branch on a computed value
        return {"branch": "big", "sum": s, "double": add(s, s)}
    return {"branch": "small", "sum": s}


@mo.flow
def inner(x: int) -> int:
    return square(x)


@mo.flow
def outer(x: int = 3) -> int:
    return add(inner(x), inner(x + 1))


@mo.flow
def ping(n: int = 1):
    return pong(n)


@mo.flow
def pong(n: int = 1):
    return ping(n)


@mo.task(resources={"GPU": 1})
def gpu_interval(i: int, seconds: float) -> tuple:
    start = time.time()
    time.sleep(seconds)
    return (mo.context().gpu_ids, start, time.time(), i)


@mo.task(resources={"GPU": 0.5})
def half_gpu_interval(i: int, seconds: float) -> tuple:
    start = time.time()
    time.sleep(seconds)
    return (mo.context().gpu_ids, start, time.time(), i)


@mo.flow
def gpu_jobs(n: int = 6, seconds: float = 0.3, half: bool = False) -> list:
    fn = half_gpu_interval if half else gpu_interval
    return fn.map(range(n), seconds=seconds)


@mo.task(resources={"TPU": 1})
def needs_tpu() -> int:
    return 1


@mo.flow
def tpu_flow() -> int:
    return needs_tpu()


@mo.task
def side_effect(tag: str) -> None:
    record("side_effect", tag)


@mo.flow
def with_side_effect() -> int:
    side_effect("ran")  # result unused: must still run
    return square(2)


@mo.task
def cpu_gpu_ids(i: int) -> tuple:
    return mo.context().gpu_ids


@mo.flow
def cpu_jobs(n: int = 4) -> list:
    return cpu_gpu_ids.map(range(n))


class Pair(__import__("typing").NamedTuple):
    left: int
    right: int


@mo.task
def pair_sum(pair: Pair) -> int:
    return pair.left + pair.right


@mo.flow
def namedtuple_flow(x: int = 2) -> int:
    return pair_sum(Pair(square(x), square(x + 1)))
