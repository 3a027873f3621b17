"""Issue 3, items 1, 2 and 4: one MLflow run per flow run, with params, tags, config, and
everything tasks log on remote workers (8 tasks on 2 worker processes at once) counted back."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from mlorch.tracking.store import RunStore
from tests.resources import tracking_flows as tf
from tests.tracking_fixtures import artifact_paths, only_run, read_artifact, runs_of


def test_concurrent_metrics_from_8_tasks_on_2_workers_all_land(cluster, store):
    result = tf.concurrent()
    assert result == list(range(tf.N_TASKS))
    run = only_run(store, "concurrent")
    assert run.info.status == "FINISHED"
    rid = run.info.run_id
    for key in tf.KEYS:
        history = store.client.get_metric_history(rid, key)
        # every task logged the same steps: N_TASKS points per step, none lost, none duplicated
        assert len(history) == tf.N_TASKS * tf.POINTS
        steps = sorted(m.step for m in history)
        assert steps == sorted(list(range(tf.POINTS)) * tf.N_TASKS)
        assert all(m.timestamp > 1_600_000_000_000 for m in history)
    for i in range(tf.N_TASKS):
        history = store.client.get_metric_history(rid, f"task{i}")
        assert len(history) == tf.POINTS and {m.value for m in history} == {float(i)}
    # the tasks really ran on both worker processes at once
    assert run.data.tags["mlorch.cluster.workers"] == "2"


def test_flow_run_params_tags_and_config(cluster, store, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    (repo / "code.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "code.py"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], cwd=repo, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    (repo / "code.py").write_text("x = 2\n")  # uncommitted change: dirty
    monkeypatch.chdir(repo)

    config = {"model": {"layers": [64, 32], "opt": {"lr": 0.01}}, "notes": "y" * 10_000}
    tf.kinds(str(tmp_path / "out"), config=config)

    run = only_run(store, "kinds")
    rid, params, tags = run.info.run_id, run.data.params, run.data.tags
    # flow params: nested dicts flattened, long values truncated instead of failing
    assert params["config.model.opt.lr"] == "0.01"
    assert params["config.model.layers"] == "[64, 32]"
    assert len(params["config.notes"]) == 6000 and params["config.notes"].endswith("[truncated]")
    assert params["big"] == str(3 << 20)
    # params and tags logged by the task on a worker
    assert params["task_param"] == "7" and params["nested.depth"] == "3" and len(params["long"]) == 6000
    assert tags["stage"] == "train"
    # reproducibility record
    assert tags["mlorch.git.commit"] == commit and tags["mlflow.source.git.commit"] == commit
    assert tags["mlorch.git.dirty"] == "true"
    for lib in ("python", "mlorch", "dask", "distributed", "optuna", "mlflow", "torch"):
        assert tags[f"mlorch.version.{lib}"], lib
    assert tags["mlorch.host"] and tags["mlorch.cluster.kind"] == "local"
    assert tags["mlorch.cluster.workers"] == "2" and tags["mlorch.gpus"] == "0,1"
    assert "pytest" in tags["mlorch.command"] or "py.test" in tags["mlorch.command"]
    # resolved config as an artifact
    files = artifact_paths(store, rid)
    conf = yaml.safe_load(read_artifact(store, rid, "mlorch/config.yaml", tmp_path / "dl"))
    assert conf["params"]["config"]["model"]["opt"]["lr"] == 0.01
    assert conf["cluster"]["n_workers"] == 2 and conf["cluster"]["gpu_ids"] == ["0", "1"]
    # artifacts from the worker: a file, a folder (kept as a tree), a file big enough to be fetched from the worker, a figure
    assert {"notes.txt", "docs/report/a.txt", "docs/report/sub/b.txt", "data/big.bin", "plots/curve.png"} <= set(files)
    assert read_artifact(store, rid, "notes.txt", tmp_path / "dl2") == b"hello from a worker\n"
    big = read_artifact(store, rid, "data/big.bin", tmp_path / "dl3")
    assert big == bytes(range(256)) * ((3 << 20) // 256)
    assert read_artifact(store, rid, "plots/curve.png", tmp_path / "dl4")[:8] == b"\x89PNG\r\n\x1a\n"
    # explicit timestamp and step kept
    (point,) = store.client.get_metric_history(rid, "when")
    assert point.step == 5 and point.timestamp == 1_700_000_000_000


def test_one_run_per_flow_run(cluster, store):
    before = len(runs_of(store, "tracked-small"))
    tf.tracked_small(1)
    tf.tracked_small(2)
    runs = runs_of(store, "tracked-small")
    assert len(runs) == before + 2
    assert {r.data.params["x"] for r in runs[:2]} == {"1", "2"}
    assert all(r.info.status == "FINISHED" for r in runs)


def test_tracking_off_by_flag_and_by_environment(cluster, store, monkeypatch):
    assert tf.untracked(5) == 5
    assert runs_of(store, "untracked") == []
    monkeypatch.setenv("MLORCH_TRACKING", "off")
    before = len(runs_of(store, "tracked-small"))
    assert tf.tracked_small(9) == 9
    assert len(runs_of(store, "tracked-small")) == before


def test_sweep_child_run_is_filled_but_not_ended(cluster, store):
    from mlorch.execution.runner import run_flow
    from mlorch.tracking.hook import SweepTrialHook

    def fill(run_id: str) -> dict:  # what a sweep's tracker hands a flow trial
        return {"info": {"mlflow_run_id": run_id}, "extra_hooks": [SweepTrialHook(store, run_id)]}

    parent = store.create_run("sweep-like", "parent", params={"space": {"lr": [0.1, 1]}})
    child = store.create_run("sweep-like", "trial-0", parent_run_id=parent, tags={"trial": 0})
    other = store.create_run("sweep-like", "trial-1", parent_run_id=parent, params={"x": "four"})
    run_flow(tf.tracked_small, (4,), {}, cluster=cluster, **fill(child))
    got = store.client.get_run(child)
    assert got.info.status == "RUNNING"  # the sweep ends it
    assert got.data.params["x"] == "4" and got.data.tags["mlflow.parentRunId"] == parent
    assert got.data.tags["mlorch.flow"] == "tracked_small"
    # a param the sweep already logged differently does not break the trial (MLflow refuses changes)
    assert run_flow(tf.tracked_small, (4,), {}, cluster=cluster, **fill(other)) == 4
    assert store.client.get_run(other).data.params["x"] == "four"
    store.end_run(other, "FINISHED")
    assert len(store.client.get_metric_history(child, "ignored")) == 1
    store.log_metrics(child, {"objective": 0.5}, step=0)
    store.end_run(child, "FINISHED")
    store.end_run(parent, "FINISHED")
    assert store.client.get_run(child).info.status == "FINISHED"
    assert store.client.get_run(parent).data.params["space.lr"] == "[0.1, 1]"
    with pytest.raises(ValueError, match="status must be one of"):
        store.end_run(child, "DONE")


def test_import_mlorch_does_not_import_mlflow():
    code = "import sys, mlorch; print('mlflow' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_logging_from_the_flow_body_and_outside_any_run(cluster, store):
    assert tf.nothing.fn(3) == 3  # a task function called on its own: logging is a no-op
    tf.body_logs(2)
    run = only_run(store, "body-logging")
    assert run.data.tags["from"] == "body"
    assert sorted(m.step for m in store.client.get_metric_history(run.info.run_id, "body_metric")) == [1, 2]
    assert len(store.client.get_metric_history(run.info.run_id, "ignored")) == 1


def test_default_store_lives_in_the_project_folder(cluster, tmp_path, monkeypatch):
    home = tmp_path / "proj"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLORCH_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    tf.tracked_small(3)
    store = RunStore.open()
    assert store.tracking_uri == f"sqlite:///{home / 'mlflow.db'}" and (home / "mlflow.db").is_file()
    run = only_run(store, "tracked-small")
    assert run.info.artifact_uri.startswith((home / "mlartifacts").as_uri())
    assert list((home / "mlartifacts").rglob("config.yaml"))
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


def test_gpu_devices_used_by_tasks_are_recorded(cluster, store):
    used = tf.gpu_flow(4)
    run = only_run(store, "gpus")
    devices = sorted({d for ids in used for d in ids})
    assert devices and run.data.tags["mlorch.gpus.used"] == ",".join(map(str, devices))


NOTEBOOK_CELLS = [
    "import os, mlorch as mo",
    "@mo.task\ndef double(x: int) -> int:\n    mo.log_metric('x2', 2.0 * x)\n    return 2 * x",
    "@mo.flow(experiment='from-notebook')\ndef nb_flow(x: int = 4):\n    return double(x)",
    "with mo.cluster({'kind': 'address', 'address': os.environ['TEST_SCHEDULER']}):\n    print(nb_flow(5))",
]


def test_run_launched_from_a_notebook_records_notebook_and_git(cluster, store, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    repo = tmp_path / "nbrepo"
    repo.mkdir()
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in NOTEBOOK_CELLS])
    nbformat.write(nb, repo / "analysis.ipynb")
    subprocess.run([*git, "add", "analysis.ipynb"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "nb"], cwd=repo, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    # what Jupyter Server tells a kernel about its notebook
    monkeypatch.setenv("JPY_SESSION_NAME", str(repo / "analysis.ipynb"))
    monkeypatch.setenv("TEST_SCHEDULER", cluster.client.scheduler.address)
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(repo)}}).execute()
    assert "10" in "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    run = only_run(store, "from-notebook")
    tags = run.data.tags
    assert tags["mlflow.source.type"] == "NOTEBOOK"
    assert tags["mlorch.notebook"] == str(repo / "analysis.ipynb")
    assert tags["mlorch.git.commit"] == commit and tags["mlorch.git.dirty"] == "false"
    assert tags["mlorch.cluster.kind"] == "address"
    assert len(store.client.get_metric_history(run.info.run_id, "x2")) == 1


def test_run_store_interface_used_by_sweeps(store, tmp_path):
    folder = tmp_path / "bundle"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "sub" / "b.txt").write_text("b")
    run_id = store.create_run("store-api", "direct", params={"opt": {"lr": 0.5}}, tags={"kind": "direct"})
    store.log_params(run_id, {"extra": [1, 2]})
    store.log_metrics(run_id, {f"m{i}": float(i) for i in range(1500)}, step=3)  # > 1000: chunked
    store.set_tags(run_id, {"phase": "done"})
    store.log_artifact(run_id, str(folder), "out")
    store.log_artifact(run_id, str(folder / "a.txt"))
    store.flush()
    store.end_run(run_id, "FAILED", error="ValueError: nope")
    run = store.client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["mlorch.error"] == "ValueError: nope"
    assert run.data.params == {"opt.lr": "0.5", "extra": "[1, 2]"}
    assert len(run.data.metrics) == 1500 and run.data.tags["phase"] == "done" and run.data.tags["kind"] == "direct"
    assert set(artifact_paths(store, run_id)) == {"a.txt", "out/bundle/a.txt", "out/bundle/sub/b.txt"}
    assert RunStore.open(store.tracking_uri) is store  # cached per URI
    with pytest.raises(FileNotFoundError):
        store.log_artifact(run_id, str(tmp_path / "missing.txt"))
