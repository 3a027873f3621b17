"""``mlorch sweep <yaml>``: validated config, a real run, and resume by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest

from mlorch.cli import main
from mlorch.cli.sweep import load_sweep
from mlorch.tuning.plan import make_plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = """\
target: {root}/tests/resources/sweep_flows.py:pipeline
space:
  lr: {{loguniform: [1e-4, 1e-1]}}
  depth: {{intrange: [2, 4]}}
  n: 20
metric: val_loss
direction: minimize
n_trials: 3
sampler: {{name: tpe, n_startup_trials: 2}}
name: cli-tiny
cluster: {{n_workers: 1, gpus: 0, dashboard_address: null}}
"""


def test_shipped_digits_sweep_is_valid():
    path = os.path.join(ROOT, "configs", "sweeps", "digits.yaml")
    target, options = load_sweep(path)
    options.pop("cluster")
    options.pop("tracking_uri")
    plan = make_plan(target, **{k: v for k, v in options.items() if k != "storage"}, storage=None)
    assert plan.kind == "flow" and set(plan.space) <= set(target.signature.parameters)
    assert plan.metrics == ["val_loss"] and plan.directions == ["minimize"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (("n_trials: 3", "n_trails: 3"), "unknown field 'n_trails'; did you mean 'n_trials'?"),
        # The same verdict and words as mo.sweep(direction="lowest") gives in Python: one schema.
        (("direction: minimize", "direction: lowest"), "direction: 'lowest' is neither 'minimize' nor 'maximize'"),
        (("{name: tpe, n_startup_trials: 2}", "tpx"), "sampler: unknown sampler 'tpx'; did you mean 'tpe'?"),
        (("{intrange: [2, 4]}", "{intrange: [4, 2]}"), "field 'space.depth': space['depth']: intrange(4, 2) is an empty"),
        (("metric: val_loss", "metric: val_acc"), "metric: flow 'pipeline' never returns 'val_acc'"),
    ],
)
def test_bad_yaml_names_file_and_field_and_exits_2(edit, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLORCH_HOME", str(tmp_path / "project"))
    path = tmp_path / "bad.yaml"
    path.write_text(TINY.format(root=ROOT).replace(*edit))
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"mlorch: error: {path}: " in err and message in err


def test_cli_runs_then_resumes_by_name(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(root=ROOT))
    env = {**os.environ, "MLORCH_HOME": str(tmp_path / "project"), "MLORCH_TRACKING": "off"}

    def run(*extra):
        out = subprocess.run(
            [sys.executable, "-m", "mlorch", "sweep", str(path), *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
        assert out.returncode == 0, out.stderr
        run.stderr = out.stderr
        return json.loads(out.stdout[out.stdout.index("{") :])

    first = run()
    assert first["finished_trials"] == 3 and set(first["best_params"]) == {"lr", "depth", "n"}
    # Output to a pipe (a log file, a batch job): plain progress lines, not a redrawn bar.
    progress = [line for line in run.stderr.splitlines() if line.startswith("sweep cli-tiny: ")]
    assert "\r" not in run.stderr and 1 <= len(progress) <= 3
    assert progress[-1].startswith("sweep cli-tiny: 3/3 trials, best=")
    second = run("--n-trials", "5", "--no-progress")  # same name: the study goes on from 3 to 5
    assert second["finished_trials"] == 5
    journal = tmp_path / "project" / "optuna" / "journal.log"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    assert len(optuna.load_study(study_name="cli-tiny", storage=storage).trials) == 5


def test_tracking_uri_in_the_yaml_points_the_sweep_at_that_store(tmp_path):
    from mlflow import MlflowClient

    store = tmp_path / "elsewhere"
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(root=ROOT) + f"tracking_uri: {store}\n")
    env = {**os.environ, "MLORCH_HOME": str(tmp_path / "project"), "MLORCH_TRACKING": "on"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run(
        [sys.executable, "-m", "mlorch", "sweep", str(path), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 4  # the sweep's parent run and its 3 trials
    assert not (tmp_path / "project" / "mlflow.db").exists()


def test_the_shipped_digits_sweep_runs_from_the_cli(tmp_path):
    """The README's main job, shortened: its own YAML, cluster file and example flow, tracked in MLflow."""
    from mlflow import MlflowClient

    env = {**os.environ, "MLORCH_HOME": str(tmp_path / "project"), "MLORCH_TRACKING": "on"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlorch",
            "sweep",
            "configs/sweeps/digits.yaml",
            "--no-progress",
            "--n-trials",
            "2",
            "--name",
            "digits-cli-test",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout[out.stdout.index("{") :])
    assert result["finished_trials"] == 2 and set(result["best_params"]) == {"lr", "hidden", "alpha", "epochs"}
    client = MlflowClient(f"sqlite:///{tmp_path / 'project' / 'mlflow.db'}")
    run = client.get_run(result["best_run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["val_loss"] == pytest.approx(result["best_value"])
