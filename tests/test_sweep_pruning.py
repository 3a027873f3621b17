"""Pruning from remote workers: ``mo.report`` in a task feeds the driver's pruner, which stops the trial."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

import mlorch as mo
from tests.resources import sweep_flows as sf

STEPS = 12
PRUNERS = {
    "median": {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
    "successive_halving": {"name": "successive_halving", "min_resource": 1, "reduction_factor": 2},
    "hyperband": {"name": "hyperband", "min_resource": 1, "max_resource": STEPS, "reduction_factor": 2},
}


@pytest.mark.parametrize("pruner", list(PRUNERS))
def test_pruner_stops_trials_on_the_workers(pruner, cluster, store, log):
    study = mo.sweep(
        sf.learning,
        space={"lr": mo.uniform(0, 1), "steps": STEPS},
        metric="loss",
        n_trials=10,
        sampler="random",
        seed=3,
        pruner=PRUNERS[pruner],
        max_concurrency=2,
        name=f"prune-{pruner}",
        cluster=cluster,
        progress=False,
    )
    trials = study.study.trials
    assert len(trials) == 10 and {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, f"{pruner}: no trial was pruned"
    steps_run = {}
    for row in sf.records(log, "step"):
        steps_run[row["trial"]] = steps_run.get(row["trial"], 0) + 1
    for t in trials:
        # Intermediate values went through the driver into the study, step by step.
        assert sorted(t.intermediate_values) == list(range(len(t.intermediate_values)))
        if t.state == TrialState.COMPLETE:
            assert steps_run[t.number] == STEPS and len(t.intermediate_values) == STEPS  # every report arrived
        else:  # the task on the worker stopped early: it did not run its remaining steps
            assert steps_run[t.number] < STEPS, (pruner, t.number, steps_run[t.number])
        run = store.client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.tags["optuna.state"] == t.state.name
        assert run.info.status == "FINISHED"
        history = store.client.get_metric_history(run.info.run_id, "loss")
        assert {m.step for m in history} >= set(t.intermediate_values)  # intermediate values in MLflow
        if t.state == TrialState.COMPLETE:  # each reported step once, then the trial's value at its last step
            last = max(t.intermediate_values)
            assert sorted(m.step for m in history) == sorted([*t.intermediate_values, last])
        if t.state == TrialState.PRUNED:
            assert run.data.tags["mlorch.pruned"] == "true"
            assert run.data.tags["optuna.pruned_at_step"] == str(max(t.intermediate_values))


def test_report_outside_a_sweep_is_harmless(cluster, project, monkeypatch):
    monkeypatch.setenv("MLORCH_TRACKING", "off")
    assert sf.learning(lr=0.1, steps=3) == {"loss": pytest.approx(1.0 + 1 / 3)}
    mo.report(0.5, step=1)  # in the driver, not in a task: nothing to prune
    with pytest.raises(TypeError, match="step must be an integer"):
        mo.report(0.5, step=-1)
