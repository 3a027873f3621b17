"""A long TPE sweep of a plain Optuna objective: mo.sweep against Optuna's own loop (issue 11).

    .venv/bin/python benchmarks/bench_objective.py                 # 2,000 trials, all three
    .venv/bin/python benchmarks/bench_objective.py --trials 500
    .venv/bin/python benchmarks/bench_objective.py --round-trips   # no pre-suggestion (for comparison)
    .venv/bin/python benchmarks/bench_objective.py --mlorch-only   # the tracked sweep alone, in a fresh process
    .venv/bin/python benchmarks/bench_objective.py --sampler-cost  # TPE's ask/suggest/tell alone

One script run, same machine, same objective (two float parameters, a quadratic), TPE
(Optuna 5.0's defaults; mlorch's "tpe" keeps ``constant_liar=True``, Optuna's default):
  - optuna:   ``study.optimize(objective, n_jobs=2)`` on an in-memory study, no tracking;
  - mlorch:   ``mo.sweep(objective)`` on mlorch's local cluster of 2 worker processes (1 thread each;
              its scheduler in a process of its own),
              the project journal, a parent MLflow run plus one child run per trial on a fresh
              SQLite store ("tracking"), and once more with ``tracking=False``.
The rate is trials/s from the sweep's start to the last trial's completion (Optuna's
``datetime_complete``); per fifth, from the previous fifth's last completion. TPE costs more
per trial as the study grows, so the fifths show whether mlorch keeps up late in the sweep.
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
    y = trial.suggest_float("y", -10, 10)
    return (x - 2) ** 2 + (y + 1) ** 2


def _rates(start: float, trials) -> tuple[float, list[float]]:
    """(overall trials/s, trials/s per fifth) from the completion times."""
    ends = sorted(t.datetime_complete.timestamp() for t in trials)
    n = len(ends)
    cuts = [round(n * i / 5) for i in range(6)]
    fifths = []
    for a, b in zip(cuts, cuts[1:]):
        begin = start if a == 0 else ends[a - 1]
        fifths.append((b - a) / max(ends[b - 1] - begin, 1e-9))
    return n / (ends[-1] - start), fifths


def bench_optuna(n: int) -> tuple[float, list[float]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="bench-optuna")
    start = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(objective, n_trials=n, n_jobs=2)
    assert len(study.trials) == n
    return _rates(start, study.trials)


def bench_sampler_cost(n: int, folder: Path) -> list[tuple[str, float, float]]:
    """(storage, CPU ms per trial, of which sampling) of ask + two suggest_float + tell on one thread,
    3 trials kept running (TPE's constant liar sees them, as in a sweep with trials in flight)."""
    import optuna
    from optuna.storages import JournalStorage

    from mlorch.tuning.journal import JournalFile

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    for label, storage in (("memory", None), ("mlorch journal", JournalStorage(JournalFile(str(folder / "j.log"))))):
        study = optuna.create_study(storage=storage, sampler=optuna.samplers.TPESampler(constant_liar=True))
        running: list[tuple[optuna.Trial, float]] = []
        start, sampling = time.process_time(), 0.0
        for _ in range(n):
            trial = study.ask()
            t0 = time.process_time()
            x, y = trial.suggest_float("x", -10, 10), trial.suggest_float("y", -10, 10)
            sampling += time.process_time() - t0
            running.append((trial, (x - 2) ** 2 + (y + 1) ** 2))
            if len(running) > 3:
                study.tell(*running.pop(0))
        rows.append((label, 1e3 * (time.process_time() - start) / n, 1e3 * sampling / n))
    return rows


def bench_mlorch(n: int, folder: Path, tracking: bool) -> tuple[float, list[float], float]:
    """(trials/s to the last completion, per fifth, trials/s until mo.sweep returned)."""
    import mlorch as mo

    os.environ["MLORCH_HOME"] = str(folder / "home")
    os.environ["MLFLOW_TRACKING_URI"] = _fresh_store(folder)
    os.environ["MLORCH_TRACKING"] = "on" if tracking else "off"
    if tracking:
        from mlorch.tracking.store import RunStore

        RunStore.open()  # opened once per process, as in any session
    with mo.cluster(n_workers=2, gpus=0, dashboard_address=None) as cluster:
        cluster.client.wait_for_workers(2, timeout=60)
        start = time.time()
        name = f"bench-objective-{'tracked' if tracking else 'untracked'}"
        sweep = mo.sweep(objective, n_trials=n, name=name, cluster=cluster, progress=False, tracking=tracking)
        total = time.time() - start
    assert sweep.n_finished == n, sweep.n_finished
    if tracking:
        from mlorch.tracking.store import RunStore

        store = RunStore.open()
        runs = store.client.search_runs([store.experiment_id(name)], max_results=50000)
        assert len(runs) == n + 1 and all(r.info.status == "FINISHED" for r in runs), len(runs)
    rate, fifths = _rates(start, sweep.study.trials)
    return rate, fifths, n / total


def _fresh_store(folder: Path) -> str:
    """An empty, already migrated SQLite MLflow store (creation is not what is measured)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    MlflowClient(uri).search_experiments(max_results=1)
    return uri


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--skip-untracked", action="store_true", help="only Optuna and mlorch with tracking")
    parser.add_argument(
        "--round-trips", action="store_true", help="no pre-suggestion: every suggest_* of a worker asks the driver"
    )
    parser.add_argument("--sampler-cost", action="store_true", help="only TPE's ask/suggest/tell, in memory and on the journal")
    parser.add_argument("--mlorch-only", action="store_true", help="only mlorch with tracking, in this fresh process (no ratio)")
    args = parser.parse_args()
    n = args.trials
    if args.sampler_cost:
        with tempfile.TemporaryDirectory(prefix="bench-sampler-") as tmp:
            for label, total, sampling in bench_sampler_cost(n, Path(tmp)):
                print(f"{n} trials, {label:15s}: {total:.2f} ms CPU per trial, of which sampling {sampling:.2f} ms")
        return
    if args.round_trips:
        from mlorch.tuning.remote_trial import TrialServer

        TrialServer.presuggest = False
    rows: list[tuple[str, float, list[float], float | None]] = []
    base = None
    if not args.mlorch_only:
        base, base_fifths = bench_optuna(n)
        rows.append(("optuna study.optimize(n_jobs=2), in memory", base, base_fifths, None))
    with tempfile.TemporaryDirectory(prefix="bench-objective-") as tmp:
        for tracking in (True,) if args.skip_untracked or args.mlorch_only else (True, False):
            folder = Path(tmp) / ("tracked" if tracking else "untracked")
            folder.mkdir()
            rate, fifths, total = bench_mlorch(n, folder, tracking)
            label = f"mlorch mo.sweep, local cluster, tracking {'on ' if tracking else 'off'}"
            rows.append((label, rate, fifths, total))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{n} TPE trials of a trivial two-parameter objective, 2 worker slots (load average after: {load}):")
    for label, rate, fifths, total in rows:
        per = " ".join(f"{f:6.1f}" for f in fifths)
        extra = "" if total is None else f"; {total:.1f}/s until mo.sweep returned"
        ratio = "" if base is None else f" ({rate / base:.2f}x)"
        print(f"  {label:46s}: {rate:6.1f} trials/s{ratio}{extra}")
        print(f"  {'':46s}  per fifth: {per}")


if __name__ == "__main__":
    main()
