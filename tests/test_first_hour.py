"""What a new user meets in the first hour: everything a run returns is recorded, a sweep's parent
run says what code made it, and two sweeps of the same model each keep their best."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import optuna
import pytest

import mlorch as mo
from tests.resources import first_hour_flows as fh
from tests.resources import sweep_flows as sf
from tests.test_cli_run import _mlorch  # the `mlorch` command as a user runs it
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


@pytest.mark.parametrize(
    "override, message",
    [
        ("hidden=abc", "--set hidden: expected int, got str 'abc'"),
        ("lr=fast", "--set lr: expected float, got str 'fast'"),
        ("epochs=2.5", "--set epochs: expected int, got float 2.5"),
    ],
)
def test_a_wrong_value_for_a_flow_parameter_is_one_line_before_anything_runs(tmp_path, override, message):
    out = _mlorch(tmp_path, "run", "experiments/digits.py:pipeline", "--set", override, "--cluster", "/nonexistent.yaml")
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == f"mlorch: error: {message}"  # one line, no traceback, before the cluster


def test_a_sweep_yaml_with_a_wrong_value_in_its_space_fails_first(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(
        "target: experiments/digits.py:pipeline\nspace:\n  lr: {loguniform: [1.0e-4, 1.0e-1]}\n  epochs: ten\n"
        "metric: val_loss\nn_trials: 2\ncluster: /nonexistent.yaml\n"
    )
    out = _mlorch(tmp_path, "sweep", str(config))
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == (
        f"mlorch: error: {config}: space['epochs']: flow 'pipeline' parameter 'epochs': expected int, got str 'ten'"
    )


def test_space_entries_are_checked_against_the_annotations(project):

    @mo.flow
    def typed(
        depth: int = 3, lr: float = 0.1, mode: Literal["a", "b"] = "a", out: Path | None = None, flag: bool = False, note=None
    ):
        return {"loss": 1.0}

    def check(space):
        return mo.sweep(typed, space=space, metric="loss", n_trials=1, progress=False, cluster="/nonexistent.yaml")

    with pytest.raises(mo.ConfigError, match=r"space\['depth'\]: uniform\(1, 5\) gives float values; .*expected int"):
        check({"depth": mo.uniform(1, 5)})
    with pytest.raises(mo.ConfigError, match=r"space\['mode'\]: .*expected one of 'a', 'b', got str 'c'"):
        check({"mode": mo.choice(["a", "c"])})
    with pytest.raises(mo.ConfigError, match=r"space\['flag'\]: .*expected bool, got str 'yes'"):
        check({"flag": "yes", "lr": mo.uniform(0, 1)})
    with pytest.raises(mo.ConfigError, match=r"space\['out'\]: .*expected Path or None, got int 3"):
        check({"out": 3, "lr": mo.uniform(0, 1)})
    with pytest.raises(mo.ConfigError, match=r"space\['lr'\]: .*expected float, got bool True"):
        check({"lr": mo.choice([0.1, True])})
    # Accepted: an int for a float, an intrange for a float, a path string, None for Optional, anything unannotated.
    for ok in (
        {"lr": mo.intrange(1, 3)},
        {"lr": mo.uniform(0, 1), "out": "x.txt", "note": object()},
        {"lr": mo.uniform(0, 1), "out": None},
    ):
        with pytest.raises(mo.ConfigError, match="nonexistent"):  # got past every check, to the cluster
            check(ok)


def test_experiments_open_in_the_uis_training_view(cluster, store):
    """MLflow 3.17's UI picks its view from the URL's workflowType, else the browser's storage, else GenAI:
    mlorch ui prints the runs table's URL in the training view, and experiments are tagged as training ones."""
    from mlorch.execution.runner import run_flow
    from mlorch.tracking.ui_view import runs_url

    run_flow(fh.scored, (), {"lr": 0.02}, cluster=cluster)
    experiment = store.client.get_experiment_by_name("first-hour")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    url = runs_url("http://127.0.0.1:5000", store.client)
    runs = f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs?"
    # The experiment with the newest run; the view its last sweep (an earlier test's) stored on it.
    assert url.startswith(runs) and url.endswith("workflowType=machine_learning"), url
    key = experiment.tags.get("mlorch.latest_view")
    assert (f"viewStateShareKey={key}&" in url) if key else url == runs + "workflowType=machine_learning"


def test_mlorch_run_with_a_bad_tracking_uri_fails_first_in_one_line(tmp_path):
    out = _mlorch(
        tmp_path, "run", "experiments/digits.py:pipeline", "--tracking-uri", "bogus://x", "--cluster", "/x.yaml", tracking="on"
    )
    assert out.returncode == 2
    assert out.stderr.startswith("mlorch: error: tracking_uri: 'bogus://x' is not a store MLflow opens")
