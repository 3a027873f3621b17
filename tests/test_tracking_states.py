"""Issue 3, item 6: terminal states are always right, and nothing stays RUNNING.

A failing task ends the run FAILED with the error and the task; a dying worker is recorded
as such; SIGTERM or Ctrl-C of a real driver process ends the run KILLED; after SIGKILL the
next mlorch start marks the orphan KILLED (pid gone on this host, or stale heartbeat)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mlorch as mo
from mlorch.tracking.liveness import HEARTBEAT, reap_orphans
from tests.resources import tracking_flows as tf
from tests.tracking_fixtures import artifact_paths, read_artifact, runs_of

DRIVER = Path(__file__).parent / "resources" / "tracking_driver.py"


def test_failing_task_ends_run_failed_with_error_and_task(cluster, store, tmp_path):
    with pytest.raises(mo.TaskFailedError, match="bad input 3"):
        tf.failing(3)
    (run,) = runs_of(store, "failures")
    tags = run.data.tags
    assert run.info.status == "FAILED"
    assert tags["mlorch.failed_task"] == "boom"
    assert "bad input 3" in tags["mlorch.error"] and "TaskFailedError" in tags["mlorch.error"]
    assert "mlorch.worker_died" not in tags
    assert "mlorch/error.txt" in artifact_paths(store, run.info.run_id)
    assert b"ValueError: bad input 3" in read_artifact(store, run.info.run_id, "mlorch/error.txt", tmp_path)
    # what the healthy task logged before the failure still landed
    assert len(store.client.get_metric_history(run.info.run_id, "fine")) == 1


def test_worker_death_is_recorded(cluster, store):
    client = cluster.client
    before = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)
    client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", 0))
    try:
        with pytest.raises(Exception) as info:
            tf.dying()
        assert type(info.value).__name__ == "KilledWorker"
    finally:
        client.run_on_scheduler(lambda dask_scheduler, n=before: setattr(dask_scheduler, "allowed_failures", n))
        client.wait_for_workers(2, timeout=60)
    run = next(r for r in runs_of(store, "failures") if r.data.tags.get("mlorch.flow") == "dying")
    assert run.info.status == "FAILED"
    assert run.data.tags["mlorch.worker_died"] == "true"
    assert run.data.tags["mlorch.failed_task"] == "die"
    assert "worker died" in run.data.tags["mlorch.error"]


def _start_driver(tmp_path: Path, store) -> tuple[subprocess.Popen, Path]:
    marker = tmp_path / "started"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": store.tracking_uri,
        "MLORCH_HEARTBEAT_SECONDS": "1",
        "MLORCH_HOME": str(tmp_path / "home"),
    }
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), str(marker)],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"driver exited early:\n{proc.stdout.read().decode()[-3000:]}")
        assert time.monotonic() < deadline, "driver did not start its task"
        time.sleep(0.2)
    return proc, marker


def _driver_run(store, pid: int):
    runs = [r for r in runs_of(store, "signals") if r.data.tags.get("mlorch.pid") == str(pid)]
    assert len(runs) == 1
    return store.client.get_run(runs[0].info.run_id)


def _cleanup(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("sig, reason", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "KeyboardInterrupt (Ctrl-C)")])
def test_sigterm_or_ctrl_c_of_the_driver_ends_run_killed(store, tmp_path, sig, reason):
    proc, _ = _start_driver(tmp_path, store)
    try:
        run = _driver_run(store, proc.pid)
        assert run.info.status == "RUNNING"
        first_beat = float(run.data.tags[HEARTBEAT])
        time.sleep(2.5)
        assert float(store.client.get_run(run.info.run_id).data.tags[HEARTBEAT]) > first_beat
        os.kill(proc.pid, sig)
        out = proc.communicate(timeout=90)[0].decode()
        assert proc.returncode != 0, out[-2000:]
        done = store.client.get_run(run.info.run_id)
        assert done.info.status == "KILLED", out[-2000:]
        assert done.data.tags["mlorch.killed_reason"] == reason
        assert len(store.client.get_metric_history(run.info.run_id, "started")) == 1
    finally:
        _cleanup(proc)


@pytest.mark.slow
def test_sigkill_orphan_is_marked_killed_at_next_start(store, tmp_path):
    proc, _ = _start_driver(tmp_path, store)
    try:
        run_id = _driver_run(store, proc.pid).info.run_id
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, no chance to clean up
        proc.wait(timeout=30)
    finally:
        _cleanup(proc)
    assert store.client.get_run(run_id).info.status == "RUNNING"  # what SIGKILL leaves behind
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.tracking_uri}
    code = "from mlorch.tracking.store import RunStore; RunStore.open()"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)  # the next mlorch start
    done = store.client.get_run(run_id)
    assert done.info.status == "KILLED"
    assert done.data.tags["mlorch.killed_reason"] == "driver process is gone"


def test_stale_heartbeat_from_another_host_is_killed_fresh_one_is_not(store, monkeypatch):
    monkeypatch.setenv("MLORCH_HEARTBEAT_STALE_SECONDS", "60")
    stale = store.create_run("orphans", "stale")
    fresh = store.create_run("orphans", "fresh")
    mine = store.create_run("orphans", "mine")
    for run_id, age in ((stale, 600), (fresh, 5)):
        store.heartbeat.remove(run_id)
        store.client.set_tag(run_id, "mlorch.host", "some-other-node")
        store.client.set_tag(run_id, HEARTBEAT, f"{time.time() - age:.0f}")
    killed = reap_orphans(store)
    assert stale in killed and fresh not in killed and mine not in killed
    assert store.client.get_run(stale).info.status == "KILLED"
    assert "no heartbeat" in store.client.get_run(stale).data.tags["mlorch.killed_reason"]
    assert store.client.get_run(fresh).info.status == "RUNNING"
    for run_id in (fresh, mine):
        store.end_run(run_id, "FINISHED")
