"""Flows used by the tracking tests (importable on the workers)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from distributed import WorkerPlugin

import mlorch as mo
from mlorch.tracking import log_text

N_TASKS = 8
POINTS = 1250  # per task: more than one 1000-point batch
KEYS = ("loss", "acc")


@mo.task
def chatty(i: int, points: int) -> int:
    """Logs ``points`` points of two series, with steps, as fast as it can."""
    for step in range(points):
        # values differ per task: MLflow stores identical (key, step, timestamp, value) rows once
        mo.log_metrics({"loss": i + 1.0 / (step + 1), "acc": i + step / points}, step=step)
        mo.log_metric(f"task{i}", float(i), step=step)
    return i


@mo.flow(experiment="concurrent")
def concurrent(points: int = POINTS, n: int = N_TASKS) -> list:
    return [chatty(i, points) for i in range(n)]


@mo.task
def everything(out_dir: str, big: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mo.log_param("task_param", 7)
    mo.log_params({"nested": {"depth": 3}, "long": "x" * 9000})
    mo.set_tag("stage", "train")
    folder = Path(out_dir)
    (folder / "report").mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("hello from a worker\n")
    (folder / "report" / "a.txt").write_text("A")
    (folder / "report" / "sub").mkdir(exist_ok=True)
    (folder / "report" / "sub" / "b.txt").write_text("B")
    (folder / "big.bin").write_bytes(bytes(range(256)) * (big // 256))
    mo.log_artifact(str(folder / "notes.txt"))
    mo.log_artifact(str(folder / "report"), artifact_path="docs")
    mo.log_artifact(str(folder / "big.bin"), artifact_path="data")
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [2, 1, 0])
    mo.log_figure(fig, "plots/curve.png")
    plt.close(fig)
    mo.log_metric("when", 1.0, step=5, timestamp=1_700_000_000.0)
    return os.environ.get("MLORCH_WORKER_TAG", "")


@mo.flow(experiment="kinds")
def kinds(out_dir: str, big: int = 3 << 20, config: dict | None = None) -> str:
    return everything(out_dir, big)


@mo.task
def boom(x: int) -> int:
    raise ValueError(f"bad input {x}")


@mo.task
def fine(x: int) -> int:
    mo.log_metric("fine", 1.0)
    return x


@mo.flow(experiment="failures")
def failing(x: int = 3) -> int:
    ok = fine(x)
    return boom(ok)


@mo.task
def die() -> int:
    os._exit(3)


@mo.flow(experiment="failures")
def dying() -> int:
    return die()


@mo.task
def secretive(token: mo.Secret, password: str) -> str:
    logging.getLogger("secret-task").info("using token %s", token)
    logging.getLogger("secret-task").warning("raw %s", token.get())  # user code leaking the value
    mo.log_param("db_password", password)
    mo.log_param("api_token", token)
    mo.set_tag("note", f"token={token.get()} plain={password}")
    log_text(f"connection: user:{password}@host token={token.get()}", "conn.txt")
    return "ok"


@mo.task
def secret_fails(token: mo.Secret) -> str:
    raise RuntimeError(f"login failed with {token.get()}")


@mo.flow(experiment="secrets")
def with_secrets(token: mo.Secret, db_password: str, cloud: dict, fail: bool = False) -> str:
    if fail:
        return secret_fails(token)
    return secretive(token, db_password)


@mo.task
def nothing(x: int) -> int:
    mo.log_metric("ignored", 1.0)
    return x


@mo.flow(experiment="untracked", tracking=False)
def untracked(x: int = 1) -> int:
    return nothing(x)


@mo.flow(experiment="tracked-small")
def tracked_small(x: int = 1) -> int:
    return nothing(x)


@mo.task
def slow(marker: str, seconds: float) -> int:
    mo.log_metric("started", 1.0)
    Path(marker).write_text("started")
    time.sleep(seconds)
    return 1


@mo.flow(experiment="signals")
def sleepy(marker: str, seconds: float = 120.0) -> int:
    return slow(marker, seconds)


# -- workers that must not touch the store -------------------------------------------
class NoSQLite(WorkerPlugin):
    """Worker plugin: ``sqlite3.connect`` raises on workers and every attempt is counted."""

    name = "mlorch-test-no-sqlite"
    attempts: list = []

    def setup(self, worker) -> None:
        import sqlite3

        NoSQLite._original = sqlite3.connect

        def refuse(*args, **kwargs):
            NoSQLite.attempts.append(repr(args)[:200])
            raise sqlite3.OperationalError("this worker may not open SQLite files")

        sqlite3.connect = refuse

    def teardown(self, worker) -> None:
        import sqlite3

        sqlite3.connect = NoSQLite._original


def worker_store_report() -> dict:
    """What a worker did: SQLite attempts, and whether any MLflow store code was loaded."""
    import sys

    return {
        "sqlite_attempts": list(NoSQLite.attempts),
        "mlflow_modules": sorted(m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")),
        "can_connect": _probe_sqlite(),
    }


def _probe_sqlite() -> bool:
    import sqlite3

    try:
        sqlite3.connect(":memory:").close()
        return True
    except sqlite3.OperationalError:
        NoSQLite.attempts.pop()  # the probe itself
        return False


@mo.task
def fit_sklearn(seed: int) -> float:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    X, y = digits.data / 16.0, digits.target
    clf = LogisticRegression(max_iter=300, random_state=seed).fit(X[seed::2], y[seed::2])
    mo.log_model(clf, name="digits-clf", register=True, input_example=X[:5])
    score = float(clf.score(X, y))
    mo.log_metric("accuracy", score)
    return score


@mo.flow(experiment="registry")
def sklearn_model(seed: int = 0) -> float:
    return fit_sklearn(seed)


@mo.flow(experiment="body-logging")
def body_logs(x: int = 1) -> int:
    mo.log_metric("body_metric", 2.0, step=1)  # runs in the driver, while the flow is traced
    mo.log_metric("body_metric", 3.0, step=2)  # buffered: flushed when the run ends
    mo.set_tag("from", "body")
    return nothing(x)


@mo.task(resources={"GPU": 1})
def on_gpu(x: int) -> list:
    return list(mo.context().gpu_ids)


@mo.flow(experiment="gpus")
def gpu_flow(n: int = 2) -> list:
    return [on_gpu(i) for i in range(n)]
