"""Issue 3, items 2 and 8 over HTTP: ``mlorch ui`` serves the project's store on 127.0.0.1,
flows log to that real ``mlflow server`` (metrics, artifacts through the artifact proxy, a
registered model), and Ctrl-C stops it with nothing left listening.

This module starts the only ``mlflow server`` of the tracking suite (through ``mlorch ui``)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow import MlflowClient

import mlorch as mo
from tests.resources import sweep_flows as sf
from tests.resources import tracking_flows as tf

pytestmark = pytest.mark.mlflow_server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_ui(home) -> tuple[subprocess.Popen, str]:
    """``mlorch ui --port <free>`` on project folder ``home``, once it printed its URL."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLORCH_HOME"] = str(home)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlorch", "ui", "--port", str(_free_port())],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    url = None
    deadline = time.monotonic() + 150
    lines = []
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        found = re.search(r"(http://\S+)", line)
        url = found.group(1) if found and "MLflow UI" in line else None
    if url is None:
        _stop_ui(proc)
        pytest.fail(f"mlorch ui printed no URL: {lines[-20:]}")
    return proc, url


def _stop_ui(proc: subprocess.Popen) -> None:
    if proc.poll() is None:  # let `mlorch ui` stop its server
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """``mlorch ui`` on a fresh project; yields (process, url, project folder)."""
    home = tmp_path_factory.mktemp("ui-project")
    proc, url = _start_ui(home)
    try:
        yield proc, url, home
    finally:  # a test failed before the Ctrl-C test
        _stop_ui(proc)


def test_mlorch_ui_prints_a_local_url_and_serves_the_ui(ui):
    proc, url, home = ui
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
    with urllib.request.urlopen(url + "/", timeout=30) as resp:
        assert resp.status == 200
        assert b"<html" in resp.read(4096).lower()
    with urllib.request.urlopen(url + "/health", timeout=30) as resp:
        assert resp.status == 200
    assert (home / "mlflow.db").exists()  # it serves the project's store


def test_flows_log_to_the_mlflow_server_over_http(ui, cluster, tmp_path, monkeypatch):
    _, url, home = ui
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLORCH_HOME", str(tmp_path / "client-project"))
    tf.concurrent(points=200, n=4)
    tf.kinds(str(tmp_path / "out"), big=1 << 16)
    tf.sklearn_model(0)
    client = MlflowClient(url)
    (run,) = client.search_runs([client.get_experiment_by_name("concurrent").experiment_id])
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 4 * 200
    kinds = client.search_runs([client.get_experiment_by_name("kinds").experiment_id])[0]
    names = {a.path for a in client.list_artifacts(kinds.info.run_id)}
    assert {"notes.txt", "plots", "data", "mlorch"} <= names
    local = client.download_artifacts(kinds.info.run_id, "notes.txt", str(tmp_path / "dl"))
    assert open(local, "rb").read() == b"hello from a worker\n"
    (version,) = client.search_model_versions("name='digits-clf'")
    assert version.tags["mlorch.run_id"] == version.run_id
    # the artifacts went through the server into the project folder, not into the client's
    assert (home / "mlartifacts").is_dir() and any((home / "mlartifacts").rglob("notes.txt"))
    assert not (tmp_path / "client-project" / "mlflow.db").exists()


def test_sweeps_track_to_the_mlflow_server_over_http(ui, cluster, tmp_path, monkeypatch):
    """Over HTTP child runs go through MLflow's public API (batched SQL writes need the database): same runs."""
    _, url, _ = ui
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLORCH_HOME", str(tmp_path / "sweep-project"))
    objective = mo.sweep(sf.objective, n_trials=6, name="http-objective", cluster=cluster, progress=False)
    flow = mo.sweep(
        sf.learning,
        space={"lr": mo.uniform(0.01, 0.5), "steps": 4},
        metric="loss",
        n_trials=3,
        name="http-flow",
        cluster=cluster,
        progress=False,
    )
    client = MlflowClient(url)
    for sweep in (objective, flow):
        assert client.get_run(sweep.parent_run_id).info.status == "FINISHED"
        runs = {
            r.info.run_id: r
            for r in client.search_runs(
                [client.get_run(sweep.parent_run_id).info.experiment_id], f"tags.mlflow.parentRunId = '{sweep.parent_run_id}'"
            )
        }
        trials = sweep.study.trials
        assert len(runs) == len(trials) and {t.user_attrs["mlflow_run_id"] for t in trials} == set(runs)
        for t in trials:
            run = runs[t.user_attrs["mlflow_run_id"]]
            assert (run.info.status, run.data.tags["optuna.state"]) == ("FINISHED", "COMPLETE")
            assert run.data.tags["optuna.trial_number"] == str(t.number)
    for t in objective.study.trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.metrics["objective"] == t.value and run.data.params["kind"] == t.params["kind"]
        assert len(client.get_metric_history(run.info.run_id, "intermediate_objective")) == 3
    for t in flow.study.trials:
        run_id = t.user_attrs["mlflow_run_id"]
        assert float(client.get_run(run_id).data.params["lr"]) == t.params["lr"]
        assert {m.step for m in client.get_metric_history(run_id, "loss")} == {0, 1, 2, 3}  # mo.report'ed, then final


def test_mlorch_ui_stops_cleanly_on_ctrl_c(ui):
    proc, url, _ = ui
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    assert "stopping" in proc.stdout.read()
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/health", timeout=5)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # no uvicorn worker left in its process group


def _mlflow_processes(processes: list) -> list:
    import psutil

    found = []
    for process in processes:
        try:
            if "mlflow" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:  # gone, or a zombie
            pass
    return found


def _gone(process) -> bool:
    """Exited (a zombie counts: whether it is reaped depends on this container's init, not on mlorch)."""
    import psutil

    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("how", ["sigkill", "terminal-closed"])
def test_no_server_is_left_listening_when_mlorch_ui_dies(tmp_path, how):
    """SIGKILL: no handler runs, the watchdog stops the server. A closed terminal: SIGHUP to the
    terminal's whole process group, which `mlorch ui` handles; the watchdog is not in that group."""
    import psutil

    proc, url = _start_ui(tmp_path / "project")
    servers = _mlflow_processes(psutil.Process(proc.pid).children())
    try:
        (server,) = servers
        group = [server, *server.children(recursive=True)]  # the server and its uvicorn worker
        if how == "sigkill":
            os.kill(proc.pid, signal.SIGKILL)
        else:
            os.killpg(proc.pid, signal.SIGHUP)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(_gone(p) for p in group):
            time.sleep(0.5)
        assert all(_gone(p) for p in group), [p.pid for p in group if not _gone(p)]
        with pytest.raises(OSError):
            urllib.request.urlopen(url + "/health", timeout=5)
    finally:  # whatever failed above, nothing is left running
        _stop_ui(proc)
        for server in servers:
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_mlorch_ui_listens_on_loopback_only(tmp_path):
    """Secure default: with no ``--host``, neither ``mlorch ui`` nor its server and workers accept
    connections from another machine (no 0.0.0.0 / :: socket)."""
    import psutil

    proc, url = _start_ui(tmp_path / "project")
    port = int(url.rsplit(":", 1)[1])
    try:
        processes = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        listening = []
        for process in processes:
            try:
                listening += [c.laddr for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
            except psutil.NoSuchProcess:  # a short-lived helper
                pass
        assert port in {a.port for a in listening}  # the server's socket was seen
        assert [a for a in listening if a.ip not in ("127.0.0.1", "::1")] == []
    finally:
        _stop_ui(proc)
    assert proc.returncode == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/health", timeout=5)
