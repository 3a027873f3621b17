"""Sweeps over flows and plain objectives on a real 2-worker cluster, Optuna journal and MLflow store."""

from __future__ import annotations

import math
import time

import optuna
import pytest
from optuna.trial import TrialState

import mlorch as mo
from tests.resources import sweep_flows as sf
from tests.tracking_fixtures import artifact_paths, children

SPACE = {"lr": mo.loguniform(1e-4, 1e-1), "depth": mo.intrange(2, 12)}


def test_flow_sweep_parent_and_child_runs_and_shared_upstream(cluster, store, log):
    study = mo.sweep(
        sf.pipeline,
        space=SPACE,
        metric="val_loss",
        direction="minimize",
        n_trials=6,
        sampler="tpe",
        seed=0,
        name="basic",
        cluster=cluster,
        progress=False,
    )
    trials = study.study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert study.best_value == min(t.value for t in trials)
    assert set(study.best_params) == {"lr", "depth"}
    assert len({t.params["lr"] for t in trials}) == 6  # no duplicate proposals

    # Shared upstream work: load(n=50) does not depend on the swept parameters.
    assert len(sf.records(log, "load")) == 1
    assert len(sf.records(log, "train")) == 6

    parent = store.client.get_run(study.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["sampler"] == "TPESampler" and parent.data.params["n_trials"] == "6"
    assert "loguniform(0.0001, 0.1)" in parent.data.params["space.lr"]
    assert math.isclose(parent.data.metrics["best_val_loss"], study.best_value)
    assert parent.data.tags["best_run_id"] == study.best_run_id
    arts = artifact_paths(store, parent.info.run_id)
    assert {"trials.csv", "plots/optimization_history.png", "plots/param_importances.png"} <= set(arts)

    runs = {r.info.run_id: r for r in children(store, parent.info.run_id)}
    assert len(runs) == 6
    for t in trials:
        run = runs[t.user_attrs["mlflow_run_id"]]  # Optuna -> MLflow
        assert run.data.tags["optuna.trial_number"] == str(t.number)  # MLflow -> Optuna
        assert run.info.status == "FINISHED" and run.data.tags["optuna.state"] == "COMPLETE"
        assert math.isclose(float(run.data.params["lr"]), t.params["lr"])
        assert math.isclose(run.data.metrics["val_loss"], t.value)
        assert "train_loss" in run.data.metrics  # logged by the task into the trial's run
    assert study.best_run_id in runs


def test_failures_are_fail_in_optuna_and_failed_in_mlflow(cluster, store, log, project):
    from mlorch.tuning.storage import default_journal_path

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(default_journal_path())))
    pre = optuna.create_study(study_name="failures", storage=storage)
    for kind in ("ok", "raise", "nan", "slow", "ok"):
        pre.enqueue_trial({"kind": kind, "x": 0.25})
    study = mo.sweep(
        sf.failing,
        space={"kind": mo.choice(["ok", "raise", "nan", "slow"]), "x": mo.uniform(0, 1)},
        metric="score",
        n_trials=5,
        trial_timeout=3,
        name="failures",
        cluster=cluster,
        progress=False,
        max_concurrency=2,
    )
    by_kind = {}
    for t in study.study.trials:
        by_kind.setdefault(t.params["kind"], []).append(t)
    assert [t.state for t in by_kind["ok"]] == [TrialState.COMPLETE] * 2
    assert by_kind["raise"][0].state == TrialState.FAIL
    assert "boom from the trial" in by_kind["raise"][0].user_attrs["mlorch.error"]
    assert by_kind["nan"][0].state == TrialState.FAIL and "NaN" in by_kind["nan"][0].user_attrs["mlorch.error"]
    assert by_kind["slow"][0].state == TrialState.FAIL
    assert "timed out after 3 s" in by_kind["slow"][0].user_attrs["mlorch.error"]
    for kind, expected in (("ok", "FINISHED"), ("raise", "FAILED"), ("nan", "FAILED"), ("slow", "FAILED")):
        run = store.client.get_run(by_kind[kind][0].user_attrs["mlflow_run_id"])
        assert run.info.status == expected, kind
        if expected == "FAILED":
            assert run.data.tags["mlorch.error"] == by_kind[kind][0].user_attrs["mlorch.error"]
    assert study.best_value == 0.25


def test_gpu_trials_never_share_a_device(cluster, log, project, monkeypatch):
    monkeypatch.setenv("MLORCH_TRACKING", "off")
    study = mo.sweep(
        sf.gpu_flow, space={"x": mo.uniform(0, 1)}, metric="loss", n_trials=6, name="gpus", cluster=cluster, progress=False
    )
    assert study.max_concurrency == 2  # 1-GPU tasks, 2 GPU slots (4 thread slots)
    rows = sf.records(log, "gpu")
    assert len(rows) == 6 and all(len(r["ids"]) == 1 and r["ids"][0] in (0, 1) for r in rows)
    for device in (0, 1):
        spans = sorted((r["start"], r["end"]) for r in rows if r["ids"] == [device])
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans
    assert _max_overlap(rows) <= 2


def test_fractional_gpu_objective_runs_two_per_device(cluster, log, project, monkeypatch):
    monkeypatch.setenv("MLORCH_TRACKING", "off")
    study = mo.sweep(sf.gpu_objective, n_trials=8, resources={"GPU": 0.5}, name="half-gpus", cluster=cluster, progress=False)
    assert study.max_concurrency == 4
    rows = sf.records(log, "gpu")
    assert len(rows) == 8
    per_device = [_max_overlap([r for r in rows if r["ids"] == [device]]) for device in (0, 1)]
    assert max(per_device) == 2, per_device  # two half-GPU trials really shared a device at once
    assert _max_overlap(rows) <= 4  # (at most 2 per device is also the GPU workers' thread count)


def test_plain_optuna_objective_runs_unchanged(cluster, store, project):
    study = mo.sweep(sf.objective, n_trials=6, seed=1, name="plain", cluster=cluster, progress=False, pruner="median")
    trials = study.study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert all(set(t.params) == {"x", "kind"} for t in trials)
    assert all(sorted(t.intermediate_values) == [0, 1, 2] for t in trials)  # trial.report on the worker
    run = store.client.get_run(study.best_run_id)
    assert float(run.data.params["x"]) == pytest.approx(study.best_params["x"])
    assert run.data.metrics["objective"] == pytest.approx(study.best_value)
    history = store.client.get_metric_history(study.best_run_id, "intermediate_objective")
    assert sorted(m.step for m in history) == [0, 1, 2]


def test_multi_objective(cluster, project, monkeypatch):
    monkeypatch.setenv("MLORCH_TRACKING", "off")
    study = mo.sweep(
        sf.two_objectives,
        metrics=["a", "b"],
        directions=["minimize", "minimize"],
        n_trials=5,
        sampler="nsga2",
        name="pareto",
        cluster=cluster,
        progress=False,
    )
    assert [t.state for t in study.study.trials] == [TrialState.COMPLETE] * 5
    assert study.best_trials and all(len(t.values) == 2 for t in study.best_trials)


def test_notebook_handle_returns_at_once_stops_cleanly(cluster, store, log):
    handle = mo.sweep(
        sf.pipeline,
        space={**SPACE, "sleep": 0.4},
        metric="val_loss",
        n_trials=40,
        name="notebook",
        cluster=cluster,
        wait=False,
        progress=True,
    )
    assert not handle.done()
    deadline = time.monotonic() + 60
    while handle.n_finished < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert handle.best_params and isinstance(handle.best_value, float)
    # Trials running on the cluster already hold their parameters in the study (suggested on the
    # driver before submission), so TPE's constant liar sees them.
    started = {r["trial"] for r in sf.records(log, "train")}
    running = [t for t in handle.study.get_trials(states=(TrialState.RUNNING,)) if t.number in started]
    assert running and all(set(t.params) == {"lr", "depth"} for t in running)
    assert handle.plan.sampler._constant_liar is True
    handle.stop()
    handle.result(timeout=60)
    trials = handle.study.trials
    assert 2 <= handle.n_finished < 40
    assert all(t.state == TrialState.COMPLETE for t in trials)  # running trials finished, none cut short
    assert len(handle.trials_dataframe()) == len(trials)
    assert handle._bar.n == handle.n_finished
    assert f"best={handle.best_value:.4g}" in handle._bar.postfix  # kept up to date trial by trial
    runs = children(store, handle.parent_run_id)
    assert len(runs) == len(trials) and {r.info.status for r in runs} == {"FINISHED"}
    assert store.client.get_run(handle.parent_run_id).info.status == "FINISHED"


def test_best_trials_model_gets_alias_best(cluster, store):
    study = mo.sweep(
        sf.model_flow,
        space={"c": mo.loguniform(0.01, 100)},
        metric="loss",
        n_trials=3,
        name="models",
        cluster=cluster,
        progress=False,
        max_concurrency=1,
    )
    version = store.client.get_model_version_by_alias("sweep-clf", "best")
    assert version.run_id == study.best_run_id


def test_metric_missing_from_an_opaque_result_stops_the_sweep(cluster, project, monkeypatch):
    monkeypatch.setenv("MLORCH_TRACKING", "off")

    @mo.flow
    def opaque(x: float = 0.0):
        out = {"other": sf.load(3)}
        return out

    with pytest.raises(mo.ConfigError, match=r"metric: flow 'opaque' returned no 'loss' \(it returned: other\)"):
        mo.sweep(
            opaque,
            space={"x": mo.uniform(0, 1)},
            metric="loss",
            n_trials=20,
            name="opaque",
            cluster=cluster,
            progress=False,
            max_concurrency=1,
        )
    from mlorch.tuning.storage import open_storage

    assert len(optuna.load_study(study_name="opaque", storage=open_storage(None)[0]).trials) == 1  # stopped at once


def _max_overlap(rows) -> int:
    points = sorted([(r["start"], 1) for r in rows] + [(r["end"], -1) for r in rows], key=lambda p: (p[0], p[1]))
    best = current = 0
    for _, delta in points:
        current += delta
        best = max(best, current)
    return best


def test_every_trial_of_a_large_sweep_has_its_child_run(cluster, store, project):
    """Child runs are written in batches (``tracking.bulk``): each trial's run complete, owned by this driver."""
    n = 48
    study = mo.sweep(sf.objective, n_trials=n, name="large", cluster=cluster, progress=False)
    trials = study.study.trials
    assert len(trials) == n and all(t.state == TrialState.COMPLETE for t in trials)
    runs = {r.info.run_id: r for r in children(store, study.parent_run_id)}
    assert len(runs) == n
    for t in trials:
        run = runs[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED" and run.data.tags["optuna.state"] == "COMPLETE"
        assert run.info.run_name == f"large-trial-{t.number}"
        assert run.data.tags["optuna.trial_number"] == str(t.number)
        assert run.data.tags["mlorch.pid"] == str(__import__("os").getpid())  # owned by this driver (reaper)
        assert float(run.data.params["x"]) == pytest.approx(t.params["x"]) and run.data.params["kind"] == t.params["kind"]
        assert run.data.metrics["objective"] == pytest.approx(t.value)
        history = store.client.get_metric_history(run.info.run_id, "intermediate_objective")
        assert sorted((m.step, m.value) for m in history) == sorted(t.intermediate_values.items())
    assert store.client.get_run(study.parent_run_id).info.status == "FINISHED"


def test_an_objective_trial_is_a_running_child_run_while_it_runs(cluster, store, project):
    sweep = mo.sweep(sf.sleepy_objective, n_trials=1, name="visible", cluster=cluster, progress=False, wait=False)
    seen = []
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline and not sweep.done():
        seen = [r for r in children(store, sweep.parent_run_id) if r.info.status == "RUNNING"]
        time.sleep(0.1)
    sweep.result()
    assert len(seen) == 1 and seen[0].data.tags["optuna.trial_number"] == "0"
    assert store.client.get_run(seen[0].info.run_id).info.status == "FINISHED"


def test_a_failed_shared_step_is_recomputed_for_later_trials(cluster, store, log, tmp_path):
    marker = str(tmp_path / "failed-once")
    study = mo.sweep(
        sf.flaky_pipeline,
        space={"lr": mo.uniform(0.01, 0.5), "marker": marker},
        metric="val_loss",
        n_trials=3,
        max_concurrency=1,
        name="flaky-shared",
        cluster=cluster,
        progress=False,
    )
    states = [t.state for t in sorted(study.study.trials, key=lambda t: t.number)]
    assert states == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert len(sf.records(log, "flaky_load")) == 2  # failed once, then computed once and shared


def _drawn_study(n: int = 30) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.5) ** 2 + t.suggest_int("n", 0, 3), n_trials=n)
    return study


def test_a_long_sweeps_plots_are_drawn_by_a_child_process(tmp_path):
    import os

    import psutil

    from mlorch.tracking.sweep_summary import CHILD_PLOTS_FROM, PlotsInChild, _plots, plotter

    assert isinstance(plotter(CHILD_PLOTS_FROM), PlotsInChild) and not isinstance(plotter(5), PlotsInChild)
    study = _drawn_study()
    plots = PlotsInChild()
    child = psutil.Process(plots._process.pid)
    assert child.ppid() == os.getpid()
    (tmp_path / "child").mkdir()
    (tmp_path / "here").mkdir()
    drawn = plots.draw(study, tmp_path / "child", False)
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE  # done with it
    here = _plots(study, tmp_path / "here", False)
    assert [p.name for p in drawn] == [p.name for p in here] and "param_importances.png" in [p.name for p in drawn]
    assert all(p.parent == tmp_path / "child" and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in drawn)


def test_plots_are_drawn_in_the_driver_when_the_plots_process_is_gone(tmp_path, caplog):
    import logging

    from mlorch.tracking.sweep_summary import PlotsInChild

    plots = PlotsInChild()
    plots._process.kill()  # SIGKILL: as if it had crashed
    plots._process.join(10)
    with caplog.at_level(logging.WARNING, logger="mlorch.sweep"):
        drawn = plots.draw(_drawn_study(), tmp_path, False)
    assert "optimization_history.png" in [p.name for p in drawn] and all(p.exists() for p in drawn)
    assert any("plots process stopped" in r.getMessage() for r in caplog.records)
