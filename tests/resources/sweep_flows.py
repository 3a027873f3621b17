"""Flows and objectives the sweep tests run; tasks record what they do in files under MLORCH_TEST_LOG's folder."""

from __future__ import annotations

import json
import math
import os
import signal
import time

import mlorch as mo


def record(kind: str, **fields: object) -> None:
    path = os.environ.get("MLORCH_TEST_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"kind": kind, **fields}) + "\n")


def records(path, kind: str | None = None) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [r for r in rows if kind is None or r["kind"] == kind]


# -- a small pipeline: shared loading, then a swept training step ---------------------
@mo.task
def load(n: int) -> list:
    record("load", n=n)
    return [i / n for i in range(n)]


@mo.task
def train(data: list, lr: float, depth: int, mode: str = "ok", sleep: float = 0.0) -> dict:
    ctx = mo.context()
    record("train", trial=ctx.run.get("trial"), lr=lr, depth=depth, pid=os.getpid())
    if sleep:
        time.sleep(sleep)
    if mode == "raise":
        raise ValueError(f"bad lr {lr}")
    if mode == "nan":
        return {"val_loss": float("nan")}
    if mode == "hang":
        time.sleep(30)
    loss = (math.log10(lr) + 2.0) ** 2 + 0.01 * depth + sum(data) * 0
    mo.log_metric("train_loss", loss + 0.1)
    return {"val_loss": loss}


@mo.flow(experiment="sweep-tests")
def pipeline(lr: float = 0.01, depth: int = 3, n: int = 50, mode: str = "ok", sleep: float = 0.0):
    data = load(n)
    result = train(data, lr, depth, mode, sleep)
    return {"val_loss": result["val_loss"], "accuracy": 0.9}


# -- failures chosen by parameter: the sweep must survive all of them -----------------
@mo.task(timeout=None)
def flaky(kind: str, x: float) -> dict:
    record("flaky", what=kind)
    if kind == "raise":
        raise RuntimeError("boom from the trial")
    if kind == "nan":
        return {"score": float("nan")}
    if kind == "slow":
        time.sleep(6)
    return {"score": x}


@mo.flow(experiment="sweep-failures")
def failing(kind: str = "ok", x: float = 0.5):
    return {"score": flaky(kind, x)["score"]}


# -- GPU trials: record which device each held, and when ------------------------------
@mo.task(resources={"GPU": 1})
def gpu_step(x: float) -> float:
    start = time.time()
    time.sleep(0.4)
    record("gpu", ids=list(mo.context().gpu_ids), start=start, end=time.time(), trial=mo.context().run.get("trial"))
    return x * x


@mo.flow(experiment="sweep-gpu")
def gpu_flow(x: float = 0.0):
    return {"loss": gpu_step(x)}


# -- pruning: a learning curve reported every step -----------------------------------
@mo.task
def curve(lr: float, steps: int) -> dict:
    trial = mo.context().run.get("trial")
    value = 0.0
    for step in range(steps):
        value = lr * 10 + 1.0 / (step + 1)
        record("step", trial=trial, step=step)
        mo.report(value, step)
        time.sleep(0.03)
    return {"loss": value}


@mo.flow(experiment="sweep-pruning")
def learning(lr: float = 0.1, steps: int = 12):
    return {"loss": curve(lr, steps)["loss"]}


# -- a model worth registering --------------------------------------------------------
@mo.task
def fit_model(c: float) -> dict:
    from sklearn.linear_model import LogisticRegression

    X = [[0.0], [1.0], [2.0], [3.0]]
    y = [0, 0, 1, 1]
    model = LogisticRegression(C=c).fit(X, y)
    mo.log_model(model, "sweep-clf", input_example=[[0.5]])
    return {"loss": abs(math.log10(c))}


@mo.flow(experiment="sweep-models")
def model_flow(c: float = 1.0):
    return fit_model(c)


# -- worker death: the first attempt of a marked trial kills its worker process ------
@mo.task
def die_once(x: float, marker: str) -> float:
    """Trial 0's first attempt SIGKILLs its worker (the marker file, created atomically, says it happened)."""
    record("attempt", x=x, pid=os.getpid())
    if marker and mo.context().run.get("trial") == 0:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass  # the rerun
        else:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.2)
    return (x - 0.3) ** 2


@mo.flow(experiment="sweep-kill")
def killer(x: float = 0.0, marker: str = ""):
    return {"loss": die_once(x, marker)}


# -- slow trials for the resume test --------------------------------------------------
@mo.task
def slow_square(x: float, seconds: float) -> float:
    time.sleep(seconds)
    return (x - 0.25) ** 2


@mo.flow(experiment="sweep-resume")
def slow(x: float = 0.0, seconds: float = 0.5):
    return {"loss": slow_square(x, seconds)}


# -- plain Optuna objectives ----------------------------------------------------------
def objective(trial):
    x = trial.suggest_float("x", -5, 5)
    kind = trial.suggest_categorical("kind", ["a", "b"])
    for step in range(3):
        trial.report((x - 1) ** 2 + step, step)
    return (x - 1) ** 2 + (0.5 if kind == "b" else 0.0)


def sleepy_objective(trial):
    import time

    x = trial.suggest_float("x", 0, 1)
    time.sleep(3)
    return x


def two_objectives(trial):
    x = trial.suggest_float("x", 0, 1)
    return x, (1 - x) ** 2


def gpu_objective(trial):
    start = time.time()
    x = trial.suggest_float("x", 0, 1)
    time.sleep(0.4)
    record("gpu", ids=[int(os.environ.get("CUDA_VISIBLE_DEVICES", "-1"))], start=start, end=time.time(), trial=trial.number)
    return x


# -- a shared upstream step that fails once, then works -----------------------------
@mo.task
def load_once_flaky(n: int, marker: str) -> list:
    record("flaky_load", n=n)
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise OSError("storage hiccup")
    return [i / n for i in range(n)]


@mo.flow
def flaky_pipeline(lr: float = 0.1, marker: str = "") -> dict:
    data = load_once_flaky(10, marker)
    return train(data, lr, 2)
