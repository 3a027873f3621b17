"""`mlorch run file.py:flow --set k=v --cluster file`: result, progress, worker logs, clear errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mlorch(tmp_path, *args, tracking="off"):
    env = {**os.environ, "MLORCH_HOME": str(tmp_path / "project"), "MLORCH_TRACKING": tracking}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "mlorch", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def cluster_yaml(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("kind: local\nn_workers: 2\ngpus: 0\ndashboard_address: null\n")
    return str(path)


@pytest.mark.slow
def test_run_digits_prints_result_progress_and_worker_logs(tmp_path, cluster_yaml):
    out = _mlorch(
        tmp_path, "run", "experiments/digits.py:pipeline", "--set", "epochs=3", "--set", "lr=0.05", "--cluster", cluster_yaml
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout[out.stdout.index("{") :])
    assert set(result) == {"val_loss", "accuracy"} and 0.5 < result["accuracy"] <= 1.0
    assert "100% Completed" in out.stdout  # the progress bar was drawn while it ran
    # logging.info() inside train_fold ran on worker processes and reached this console, once per fold
    assert sorted(re.findall(r"\[train_fold\] fold (\d) done: val_loss=", out.stderr)) == ["0", "1", "2"]


def test_unknown_parameter_is_named_with_a_suggestion(tmp_path, cluster_yaml):
    out = _mlorch(tmp_path, "run", "experiments/digits.py:pipeline", "--set", "lrr=0.1", "--cluster", cluster_yaml)
    assert out.returncode == 2
    assert "--set lrr: flow 'pipeline' has no parameter 'lrr'; did you mean 'lr'?" in out.stderr


def test_bad_targets_are_explained(tmp_path):
    out = _mlorch(tmp_path, "run", "experiments/nope.py:pipeline")
    assert out.returncode == 2 and "file experiments/nope.py not found" in out.stderr
    out = _mlorch(tmp_path, "run", "experiments/digits.py:pipelin")
    assert out.returncode == 2 and "has no 'pipelin'; did you mean 'pipeline'?" in out.stderr
    out = _mlorch(tmp_path, "run", "experiments/digits.py:summarize")
    assert out.returncode == 2 and "is a Task, not an @mo.flow" in out.stderr


@pytest.mark.slow
def test_tracking_uri_flag_records_the_run_in_that_store(tmp_path, cluster_yaml):
    from mlflow import MlflowClient

    store = tmp_path / "elsewhere"
    out = _mlorch(
        tmp_path,
        "run",
        "experiments/digits.py:pipeline",
        "--set",
        "epochs=2",
        "--no-progress",
        "--cluster",
        cluster_yaml,
        "--tracking-uri",
        str(store),
        tracking="on",
    )
    assert out.returncode == 0, out.stderr
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["epochs"] == "2"
    assert not (tmp_path / "project" / "mlflow.db").exists()  # nothing went to the default store


def test_a_failed_task_is_one_line_without_the_secret_it_quotes(tmp_path, cluster_yaml):
    secret = "sk-cli-0a1b2c3d4e5f"
    out = _mlorch(
        tmp_path, "run", "tests/resources/secret_script.py:by_flow_name", "--set", f"api_key={secret}", "--cluster", cluster_yaml
    )
    assert out.returncode == 2
    assert "mlorch: error: task 'call_service' failed after 1 attempt: ValueError: auth failed for key ***" in out.stderr
    assert secret not in out.stdout + out.stderr
