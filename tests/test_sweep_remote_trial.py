"""A plain Optuna objective on a worker whose Optuna calls the driver answers (``tuning/remote_trial.py``).

Real LocalCluster (2 worker processes, its scheduler in this process), real journal files;
each reference is Optuna's own ``study.optimize`` with the same sampler class, one trial at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

import mlorch as mo
from tests.resources import remote_objectives as ro


def _reference(objective, n: int, **study_kwargs) -> optuna.Study:
    study = optuna.create_study(**study_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(objective, n_trials=n, n_jobs=1)
    return study


def _sweep(objective, tmp_path: Path, cluster, name: str, **kwargs) -> mo.Sweep:
    return mo.sweep(
        objective,
        n_trials=kwargs.pop("n_trials", 6),
        max_concurrency=kwargs.pop("max_concurrency", 1),
        storage=str(tmp_path / "journal" / f"{name}.log"),
        name=name,
        cluster=cluster,
        progress=False,
        **kwargs,
    )


@pytest.mark.parametrize("objective", [ro.two_params, ro.conditional], ids=["fixed", "conditional"])
def test_a_stateful_sampler_draws_as_in_study_optimize(objective, cluster, project, no_tracking, tmp_path):
    n = 8
    sweep = _sweep(objective, tmp_path, cluster, f"stateful-{objective.__name__}", n_trials=n, sampler=ro.CountingSampler())
    reference = _reference(objective, n, sampler=ro.CountingSampler())
    got = [t.params for t in sweep.study.trials]
    assert got == [t.params for t in reference.trials]
    assert [t.value for t in sweep.study.trials] == pytest.approx([t.value for t in reference.trials])
    assert sweep.study.sampler.calls == reference.sampler.calls  # the driver's one sampler, no copies


def test_a_parameter_turning_out_conditional_is_pre_suggested_once_then_asked_for(cluster, project, no_tracking, tmp_path):
    """The documented limit: trial 1 does not ask for ``y`` but the driver had pre-suggested it; no trial after."""
    sweep = _sweep(ro.conditional_first, tmp_path, cluster, "conditional-first", n_trials=8, sampler=ro.CountingSampler())
    names = [sorted(t.params) for t in sweep.study.trials]
    assert names == [["x", "y"], ["x", "y"]] + [["x", "y"] if n % 2 == 0 else ["x"] for n in range(2, 8)]
    assert sweep.study.sampler.calls == 8 + 5  # x every trial, y on the four even ones and the spare in trial 1


def test_tpe_proposes_as_in_study_optimize(cluster, project, no_tracking, tmp_path):
    """Seeded TPE past its random start-up, one trial at a time: the same proposals as Optuna's own loop
    (the driver's sampler sees every finished trial, not a stale per-thread snapshot of the study)."""
    n = 24
    sampler = {"name": "tpe", "seed": 7, "n_startup_trials": 4}
    sweep = _sweep(ro.two_params, tmp_path, cluster, "tpe-parity", n_trials=n, sampler=sampler)
    reference = _reference(ro.two_params, n, sampler=optuna.samplers.TPESampler(seed=7, n_startup_trials=4, constant_liar=True))
    assert [t.params for t in sweep.study.trials] == [t.params for t in reference.trials]


def test_trials_in_flight_share_the_driver_sampler(cluster, project, no_tracking, tmp_path):
    """Four at once: every value comes from the driver's one counting sampler, none twice."""
    sweep = _sweep(ro.two_params, tmp_path, cluster, "in-flight", n_trials=12, max_concurrency=4, sampler=ro.CountingSampler())
    trials = sweep.study.trials
    assert len(trials) == 12 and all(t.state == TrialState.COMPLETE for t in trials)
    assert sweep.study.sampler.calls == 3 * 12
    xs = [t.params["x"] for t in trials]
    assert len(set(xs)) == len(xs)


def test_the_sampler_sees_the_parameters_of_the_trials_in_flight(cluster, project, no_tracking, tmp_path):
    """What TPE's constant liar needs: when a trial is sampled, the others running already hold their
    parameters, even the one waiting for a worker (3 in flight on 2 workers). Exempt: the first three,
    asked before any parameter was known, and (as under ``study.optimize(n_jobs=...)``) a trial asked
    an instant before, whose thread has not reached the driver's sampler yet."""
    sampler = ro.LiarWatchingSampler()
    _sweep(ro.slow_two_params, tmp_path, cluster, "liar", n_trials=12, max_concurrency=3, sampler=sampler)
    seen = [others for number, others in sampler.seen if number >= 3]
    assert len(seen) == 9 and all(len(others) <= 2 for others in seen)
    siblings = [params for others in seen[2:] for params in others]  # from trial 5 on: no first-batch sibling
    assert all(params in ([], ["c", "k", "x"]) for params in siblings)  # all parameters at once, or none yet
    assert siblings.count(["c", "k", "x"]) >= 0.75 * len(siblings), seen


def test_optuna_helpers_and_numpy_attributes_work_on_the_worker(cluster, project, no_tracking, tmp_path, monkeypatch):
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    monkeypatch.setenv("MLORCH_TEST_ARTIFACTS", str(artifacts))
    cluster.client.run(lambda: os.environ.__setitem__("MLORCH_TEST_ARTIFACTS", str(artifacts)))
    sweep = _sweep(ro.helpers, tmp_path, cluster, "helpers", n_trials=3, max_concurrency=2)
    driver_pid = os.getpid()
    for t in sweep.study.trials:
        assert t.state == TrialState.COMPLETE, t.user_attrs
        x = t.params["x"]
        assert t.user_attrs["arr"] == pytest.approx(list(np.arange(3) * x))
        assert t.user_attrs["scalar"] == pytest.approx(x)
        assert t.user_attrs["pid"] != driver_pid  # it ran on a worker
        meta = json.loads(t.system_attrs[f"artifacts:{t.user_attrs['artifact']}"])
        assert (artifacts / meta["artifact_id"]).read_text() == f"x={x}"
        from optuna.terminator.erroreval import _CROSS_VALIDATION_SCORES_KEY

        assert t.system_attrs[_CROSS_VALIDATION_SCORES_KEY] == pytest.approx([x, x / 2, x / 3])


def test_report_and_should_prune_prune_as_study_optimize_does(cluster, project, no_tracking, tmp_path):
    pruner = {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 0}
    n = 10
    sweep = _sweep(ro.pruned, tmp_path, cluster, "pruned", n_trials=n, sampler=ro.CountingSampler(), pruner=pruner)
    reference = _reference(
        ro.pruned, n, sampler=ro.CountingSampler(), pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    )
    got = [(t.state, t.params, t.intermediate_values) for t in sweep.study.trials]
    want = [(t.state, t.params, t.intermediate_values) for t in reference.trials]
    assert got == want
    assert any(t.state == TrialState.PRUNED for t in sweep.study.trials)


def test_workers_never_open_the_storage(cluster, project, no_tracking, tmp_path):
    folder = tmp_path / "journal"
    folder.mkdir()
    cluster.client.run(ro.watch_opens, str(folder))
    sweep = _sweep(ro.two_params, tmp_path, cluster, "no-storage", n_trials=6, max_concurrency=2)
    assert all(t.state == TrialState.COMPLETE for t in sweep.study.trials)
    assert (folder / "no-storage.log").exists()
    assert cluster.client.run(ro.opened) == {w: [] for w in cluster.client.scheduler_info(n_workers=-1)["workers"]}
    from mlorch.tuning import storage

    assert cluster.client.run(lambda: list(storage._cache)) == {
        w: [] for w in cluster.client.scheduler_info(n_workers=-1)["workers"]
    }


ADDRESS_DRIVER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    import mlorch as mo
    from tests.resources import remote_objectives as ro
    mo.sweep(ro.which_trial, n_trials=3, max_concurrency=2, name="elsewhere", storage={journal!r},
             progress=False, tracking=False, cluster={{"kind": "address", "address": {address!r}}})
    """
)


def test_a_scheduler_in_another_process_falls_back_to_the_storage(cluster, project, tmp_path):
    """The sweep's driver here is a subprocess: the scheduler (this process's LocalCluster) is not in it."""
    journal = tmp_path / "journal" / "elsewhere.log"
    script = tmp_path / "driver.py"
    root = str(Path(__file__).resolve().parents[1])
    script.write_text(ADDRESS_DRIVER.format(root=root, journal=str(journal), address=cluster.client.scheduler.address))
    proc = subprocess.run(
        [sys.executable, str(script)], env={**os.environ, "MLORCH_HOME": str(project)}, capture_output=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    trials = optuna.load_study(study_name="elsewhere", storage=storage).trials
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    assert {t.user_attrs["trial_class"] for t in trials} == {"Trial"}


def test_a_timed_out_trial_that_calls_the_driver_later_changes_nothing(cluster, project, no_tracking, tmp_path):
    sweep = _sweep(ro.first_overstays, tmp_path, cluster, "overstay", n_trials=3, max_concurrency=2, trial_timeout=1.0)
    trials = sweep.study.trials
    assert trials[0].state == TrialState.FAIL and "timed out" in trials[0].user_attrs["mlorch.error"]
    assert trials[0].intermediate_values == {}
    assert [t.state for t in trials[1:]] == [TrialState.COMPLETE, TrialState.COMPLETE]
    time.sleep(2.0)  # the zombie's report reaches the driver, which refuses it
    assert sweep.study.trials[0].intermediate_values == {}


def test_on_a_local_cluster_workers_call_the_drivers_own_endpoint_on_loopback(cluster, project, no_tracking, tmp_path):
    """The local scheduler is a process of its own: the driver listens for trial calls itself, on 127.0.0.1 only."""
    import socket

    sweep = _sweep(ro.where_the_driver_listens, tmp_path, cluster, "endpoint", n_trials=4, max_concurrency=2)
    trials = sweep.study.trials
    assert all(t.state == TrialState.COMPLETE for t in trials)  # suggest_float of trial 0 was a call to the driver
    addresses = {t.user_attrs["driver_address"] for t in trials}
    assert len(addresses) == 1
    address = addresses.pop()
    assert address.startswith("tcp://127.0.0.1:")
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    with pytest.raises(OSError):  # closed with the sweep
        socket.create_connection((host, int(port)), timeout=2).close()
