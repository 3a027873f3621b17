"""Crashes: a worker SIGKILLed mid-trial costs that trial only; a SIGKILLed driver's sweep resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

import mlorch as mo
from mlorch.tuning.storage import default_journal_path
from tests.resources import sweep_flows as sf
from tests.tracking_fixtures import children

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_worker_killed_mid_trial_reruns_that_trial_elsewhere(cluster, store, log, tmp_path, project):
    marker = tmp_path / "killed-once"
    pre = optuna.create_study(
        study_name="kill",
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(default_journal_path()))),
    )
    pre.enqueue_trial({"x": 0.9, "marker": str(marker)})  # the first trial kills its worker
    study = mo.sweep(
        sf.killer,
        space={"x": mo.uniform(0, 1), "marker": mo.choice(["", str(marker)])},
        metric="loss",
        n_trials=4,
        name="kill",
        cluster=cluster,
        progress=False,
        max_concurrency=2,
    )
    assert marker.exists()
    trials = study.study.trials
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    attempts = [r for r in sf.records(log, "attempt") if r["x"] == 0.9]
    assert len(attempts) == 2 and attempts[0]["pid"] != attempts[1]["pid"]  # re-run, same params, new process
    assert trials[0].params["x"] == 0.9 and trials[0].value == pytest.approx((0.9 - 0.3) ** 2)
    runs = children(store, study.parent_run_id)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    cluster.client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker


DRIVER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    import mlorch as mo
    from tests.resources import sweep_flows as sf
    mo.sweep(sf.slow, space={{"x": mo.uniform(0, 1), "seconds": 1.5}}, metric="loss", n_trials=8,
             max_concurrency=2, name="resume", seed=0, progress=False,
             cluster={{"kind": "address", "address": {address!r}}})
    """
)


def test_driver_killed_mid_sweep_resumes_to_exactly_n_trials(cluster, store, project, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(root=ROOT, address=cluster.client.scheduler.address))
    env = {**os.environ, "MLORCH_HOME": str(project), "MLFLOW_TRACKING_URI": store.tracking_uri}
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "driver.log", "w"),
    )
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(default_journal_path())))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                states = Counter(t.state for t in optuna.load_study(study_name="resume", storage=storage).trials)
            except KeyError:
                states = Counter()
            if states[TrialState.COMPLETE] >= 2 and states[TrialState.RUNNING] >= 1:
                break
            assert proc.poll() is None, (tmp_path / "driver.log").read_text()
            time.sleep(0.05)
        else:
            pytest.fail("the driver never had finished and running trials at once")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver, as an OOM killer would
        proc.wait()

    before = optuna.load_study(study_name="resume", storage=storage).trials
    interrupted = [t for t in before if t.state == TrialState.RUNNING]
    assert interrupted

    study = mo.sweep(
        sf.slow,
        space={"x": mo.uniform(0, 1), "seconds": 1.5},
        metric="loss",
        n_trials=8,
        max_concurrency=2,
        name="resume",
        seed=0,
        progress=False,
        cluster=cluster,
    )
    trials = study.study.trials
    closed = [t for t in trials if t.user_attrs.get("mlorch.interrupted")]
    counted = [t for t in trials if not t.user_attrs.get("mlorch.interrupted")]
    assert [t.number for t in closed] == [t.number for t in interrupted]
    assert all(t.state == TrialState.FAIL for t in closed)
    assert len(counted) == 8 and all(t.state == TrialState.COMPLETE for t in counted)
    assert study.n_finished == 8
    # Every interrupted trial ran again with the parameters it had been given (a trial killed
    # between Optuna's ask and its suggestions has none yet: its rerun samples them afresh).
    reruns = {t.user_attrs["mlorch.retry_of"]: t for t in counted if "mlorch.retry_of" in t.user_attrs}
    assert set(reruns) == {t.number for t in interrupted}
    for t in interrupted:
        assert {k: reruns[t.number].params[k] for k in t.params} == t.params

    # MLflow agrees trial for trial: one child run per Optuna trial, states matching, nothing left RUNNING.
    runs = children(store, study.parent_run_id)
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in runs}
    assert len(runs) == len(trials) == len(by_number)
    for t in trials:
        run = by_number[t.number]
        assert t.user_attrs["mlflow_run_id"] == run.info.run_id
        expected = "KILLED" if t.user_attrs.get("mlorch.interrupted") else "FINISHED"
        assert run.info.status == expected, (t.number, run.info.status)
    assert store.client.get_run(study.parent_run_id).info.status == "FINISHED"


LOST_QUEUE_DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {root!r})
    import optuna
    import mlorch.tracking.bulk
    from mlorch.tracking.store import RunStore
    from mlorch.tuning.storage import open_storage
    from mlorch.tracking.sweep import SweepTracker
    from mlorch.tuning.optuna_private import trial_id

    mlorch.tracking.bulk.LINGER = 3600  # the batch is still gathering writes when the process dies
    storage, _ = open_storage(None)
    study = optuna.create_study(study_name="lost-queue", storage=storage, directions=["minimize"])
    tracker = SweepTracker(RunStore.open())
    tracker.sweep_started(study=study, experiment="lost-queue", summary={{}}, metrics=[], kind="objective")
    finished, running = study.ask(), study.ask()
    for trial in (finished, running):
        trial.suggest_float("x", -5, 5)
        trial.suggest_categorical("kind", ["a", "b"])
        tracker.trial_started(trial=trial, trial_id=trial_id(trial))  # links the run: user attribute mlflow_run_id
    frozen = study.tell(finished, 0.5)
    tracker.trial_finished(trial=frozen)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_runs_still_queued_when_the_driver_died_are_written_on_resume(cluster, store, project, tmp_path):
    """A driver SIGKILLed between Optuna's tell and the next batch commit loses runs that were only queued.

    The next sweep of the same name writes each lost run under the id Optuna holds: a
    finished trial's run ended as the trial ended, a running trial's run KILLED.
    """
    script = tmp_path / "driver.py"
    script.write_text(LOST_QUEUE_DRIVER.format(root=ROOT))
    env = {**os.environ, "MLORCH_HOME": str(project), "MLFLOW_TRACKING_URI": store.tracking_uri}
    proc = subprocess.run([sys.executable, str(script)], env=env, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(default_journal_path())))
    study = optuna.load_study(study_name="lost-queue", storage=storage)
    finished, running = sorted(study.trials, key=lambda t: t.number)
    assert (finished.state, running.state) == (TrialState.COMPLETE, TrialState.RUNNING)
    lost = {t.number: t.user_attrs["mlflow_run_id"] for t in study.trials}
    assert children(store, study.user_attrs["mlflow_parent_run_id"]) == []  # nothing reached the store

    sweep = mo.sweep(sf.objective, n_trials=3, name="lost-queue", progress=False, cluster=cluster)
    runs = {r.info.run_id: r for r in children(store, sweep.parent_run_id)}
    first, second = runs[lost[finished.number]], runs[lost[running.number]]
    assert first.info.status == "FINISHED" and first.data.tags["optuna.state"] == "COMPLETE"
    assert first.data.metrics["objective"] == 0.5 and float(first.data.params["x"]) == finished.params["x"]
    assert second.info.status == "KILLED" and second.data.tags["mlorch.interrupted"] == "true"
    trials = sweep.study.trials
    assert len(runs) == len(trials) == 4  # 3 counted (the lost finished one among them) + the interrupted one
    assert {t.user_attrs["mlflow_run_id"] for t in trials} == set(runs)
    assert all(r.info.status != "RUNNING" for r in runs.values())


def test_a_second_driver_on_a_running_sweep_is_refused_and_touches_nothing(cluster, store, project):
    space = {"x": mo.uniform(0, 1), "seconds": 1.0}
    first = mo.sweep(
        sf.slow,
        space=space,
        metric="loss",
        n_trials=3,
        max_concurrency=1,
        name="busy",
        wait=False,
        progress=False,
        cluster=cluster,
    )
    with pytest.raises(mo.SweepRunningError, match=rf"sweep 'busy' is already running \(pid {os.getpid()} on "):
        mo.sweep(sf.slow, space=space, metric="loss", n_trials=3, name="busy", progress=False, cluster=cluster)
    first.result()
    trials = first.study.trials
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    assert not any(t.user_attrs.get("mlorch.interrupted") for t in trials)  # nobody closed them under it
    again = mo.sweep(sf.slow, space=space, metric="loss", n_trials=3, name="busy", progress=False, cluster=cluster)
    assert again.n_finished == 3 and len(again.study.trials) == 3  # the lock is free once a sweep ends
