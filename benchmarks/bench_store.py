"""What one MLflow run costs on a SQLite store: MLflow's public API against mlorch's batched writes.

    .venv/bin/python benchmarks/bench_store.py                 # all parts, 100 runs each
    .venv/bin/python benchmarks/bench_store.py --runs 200

public:  per run, ``create_run`` (tags) + ``log_batch`` (1 metric, 1 param, 1 tag) +
         ``set_terminated`` through ``MlflowClient``, as a sweep's child run would be written
         without batching. Three SQLite settings, each in its own process: the default
         (rollback journal, synchronous=FULL), WAL with synchronous=NORMAL, synchronous=OFF.
         Also prints CPU time / wall time: near 1 means the cost is Python work, not fsync.
bulk:    the same runs through ``mlorch.tracking.bulk.BulkRuns``, committed in batches of
         1, 4 and 16 complete runs (``wait()`` after each batch).
import:  the cold import of ``optuna.importance`` (it loads scikit-learn), which the sweep
         summary's importance plot needs, against ``import optuna`` alone; fresh processes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

MODES = ("default", "wal-normal", "sync-off")
TAGS = {
    "mlflow.parentRunId": "0" * 32,
    "optuna.trial_number": "1",
    "optuna.study_name": "s",
    "mlorch.sweep": "s",
    "optuna.trial_id": "3",
    "mlorch.pid": "1",
    "mlorch.host": "h",
    "mlorch.heartbeat": "1",
}


def _store(folder: str) -> tuple[object, str]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    return client, client.create_experiment("bench")


def public(mode: str, n: int) -> None:
    """Runs in its own process: the SQLite pragmas apply to every connection of the process."""
    if mode != "default":
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        @event.listens_for(Engine, "connect")
        def _pragmas(conn, _record):  # noqa: ANN001
            cursor = conn.cursor()
            if mode == "wal-normal":
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            else:
                cursor.execute("PRAGMA synchronous=OFF")
            cursor.close()

    from mlflow.entities import Metric, Param, RunTag

    with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
        client, exp = _store(folder)
        spent = {"create_run": 0.0, "log_batch": 0.0, "set_terminated": 0.0}
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            run_id = client.create_run(exp, run_name=f"t{i}", tags=TAGS).info.run_id
            t1 = time.perf_counter()
            client.log_batch(
                run_id,
                metrics=[Metric("objective", 1.0, 0, 0)],
                params=[Param("x", "1.0")],
                tags=[RunTag("optuna.state", "COMPLETE")],
            )
            t2 = time.perf_counter()
            client.set_terminated(run_id, "FINISHED")
            spent["create_run"] += t1 - t0
            spent["log_batch"] += t2 - t1
            spent["set_terminated"] += time.perf_counter() - t2
        ratio = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    parts = "  ".join(f"{k} {v / n * 1e3:5.1f}" for k, v in spent.items())
    print(f"  public API, {mode:10s}: {sum(spent.values()) / n * 1e3:5.1f} ms/run  ({parts} ms)  cpu/wall {ratio:.2f}")


def bulk(n: int) -> None:
    from mlorch.tracking.bulk import open_bulk

    for size in (1, 4, 16):
        with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
            client, exp = _store(folder)
            writer = open_bulk(client)
            assert writer is not None
            client.get_experiment(exp)
            start = time.perf_counter()
            for _ in range(n // size):
                for i in range(size):
                    run_id = writer.start_run(exp, f"t{i}", TAGS)
                    writer.end_run(
                        run_id,
                        "FINISHED",
                        metrics=[("objective", 1.0, 0, 0)],
                        params={"x": "1.0"},
                        tags={"optuna.state": "COMPLETE"},
                    )
                assert writer.wait()
            elapsed = time.perf_counter() - start
            writer.close()
            written = len(client.search_runs([exp], "attributes.status = 'FINISHED'", max_results=5000))
            assert written == n // size * size, written
        print(f"  batched, {size:2d} runs per transaction: {elapsed / written * 1e3:5.2f} ms/run")


def cold_import(statement: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--public-mode", choices=MODES, help=argparse.SUPPRESS)  # one mode, in a child process
    args = parser.parse_args()
    if args.public_mode:
        public(args.public_mode, args.runs)
        return
    print(f"one MLflow run (create, 1 metric + 1 param + 1 tag, end) on SQLite, {args.runs} runs:")
    for mode in MODES:
        subprocess.run([sys.executable, __file__, "--runs", str(args.runs), "--public-mode", mode], check=True)
    bulk(args.runs)
    base = min(cold_import("import optuna") for _ in range(2))
    importance = min(cold_import("import optuna.importance") for _ in range(2))
    print(f"cold import: optuna {base:.2f} s, optuna.importance {importance:.2f} s (+{importance - base:.2f} s)")


if __name__ == "__main__":
    main()
