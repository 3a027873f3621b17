"""What a new user meets in the first hour: everything a run returns is recorded, a sweep's parent
run says what code made it, and two sweeps of the same model each keep their best."""

from __future__ import annotations

import optuna
import pytest

import mlorch as mo
from tests.resources import first_hour_flows as fh
from tests.resources import sweep_flows as sf
from tests.tracking_fixtures import children


def test_a_flow_runs_returned_numbers_are_metrics_of_its_run(cluster, store):
    from mlorch.execution.runner import run_flow

    result = run_flow(fh.scored, (), {"lr": 0.02}, cluster=cluster)
    run = store.client.search_runs([store.experiment_id("first-hour")], order_by=["attributes.start_time DESC"])[0]
    assert result["accuracy"] == 0.9
    assert run.data.metrics == {"val_loss": pytest.approx(0.1), "accuracy": 0.9, "detail.f1": 0.8}  # no str, no bool


def test_every_number_a_trial_returns_is_a_metric_of_its_child_run_once(cluster, store, project):
    swept = mo.sweep(
        fh.scored, space={"lr": mo.uniform(0.001, 0.1)}, metric="val_loss", n_trials=2, cluster=cluster, progress=False
    )
    for run in children(store, swept.parent_run_id):
        assert {"val_loss", "accuracy", "detail.f1"} <= set(run.data.metrics)
        assert len(store.client.get_metric_history(run.info.run_id, "val_loss")) == 1  # the target metric once
    parent = store.client.get_run(swept.parent_run_id).data.tags
    child = children(store, swept.parent_run_id)[0].data.tags
    for tag in ("mlorch.git.commit", "mlorch.host", "mlorch.version.mlflow", "mlorch.version.optuna", "mlorch.command"):
        assert parent.get(tag) == child.get(tag) is not None, tag  # the parent says what code made it, as its children do


def test_two_sweeps_of_one_model_name_each_keep_their_best(cluster, store, project, tmp_path):
    def sweep(name: str, cs: list[float], n: int):
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / f"{name}.log")))
        study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True)
        for c in cs:
            study.enqueue_trial({"c": c})
        return mo.sweep(
            sf.model_flow,
            study=study,
            space={"c": mo.loguniform(0.01, 100)},
            metric="loss",
            n_trials=n,
            max_concurrency=1,
            cluster=cluster,
            progress=False,
        )

    first = sweep("models-a", [10.0, 100.0], 2)
    second = sweep("models-b", [0.5, 3.0], 2)
    client = store.client
    assert client.get_model_version_by_alias("sweep-clf", "best-models-a").run_id == first.best_run_id
    assert client.get_model_version_by_alias("sweep-clf", "best-models-b").run_id == second.best_run_id
    assert client.get_model_version_by_alias("sweep-clf", "best").run_id == second.best_run_id  # the last sweep's
    assert client.get_run(first.best_run_id).data.tags["mlorch.best_model"] == "models:/sweep-clf@best-models-a"

    old_best = first.best_run_id
    again = sweep("models-a", [1.0], 3)  # resumed, and better
    assert again.best_run_id != old_best
    assert client.get_model_version_by_alias("sweep-clf", "best-models-a").run_id == again.best_run_id
    assert "mlorch.best_model" not in client.get_run(old_best).data.tags  # no stale pointer
    assert client.get_run(again.best_run_id).data.tags["mlorch.best_model"] == "models:/sweep-clf@best-models-a"
