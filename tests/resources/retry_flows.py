"""Flaky and slow tasks for the retry and timeout tests; attempts are logged to MLORCH_TEST_LOG."""

from __future__ import annotations

import os
import time

import mlorch as mo


def _attempt_log(name: str) -> int:
    path = os.environ["MLORCH_TEST_LOG"]
    with open(path, "a") as fh:
        fh.write(f"{name} {mo.context().attempt} {time.time()}\n")
    with open(path) as fh:
        return sum(1 for line in fh if line.startswith(name + " "))


@mo.task(retries=3, retry_delay=0.2, backoff=2.0, jitter=0.2)
def flaky(succeed_on: int) -> str:
    n = _attempt_log("flaky")
    if n < succeed_on:
        raise ConnectionError(f"transient failure {n}")
    return f"ok after {n}"


@mo.task(retries=3, retry_delay=0.01, retry_on=(ConnectionError,))
def wrong_kind() -> None:
    _attempt_log("wrong_kind")
    raise ValueError("not worth retrying")


@mo.task(retries=1, retry_delay=0.01)
def always_fails() -> None:
    _attempt_log("always_fails")
    raise KeyError("broken")


@mo.task(timeout=0.5, retries=1)
def too_slow() -> None:
    _attempt_log("too_slow")
    time.sleep(30)


@mo.flow
def run_flaky(succeed_on: int = 3) -> str:
    return flaky(succeed_on)


@mo.flow
def run_wrong_kind() -> None:
    return wrong_kind()


@mo.flow
def run_always_fails() -> None:
    return always_fails()


@mo.flow
def run_too_slow() -> None:
    return too_slow()


@mo.task(retries=3, retry_delay=0.01)
def pruned() -> None:
    import optuna

    _attempt_log("pruned")
    raise optuna.TrialPruned("pruned at step 1")


@mo.flow
def run_pruned() -> None:
    return pruned()
