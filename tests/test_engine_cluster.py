"""Cluster configs are validated; local and address kinds work; the dashboard link is printed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from distributed import LocalCluster

import mlorch as mo
from mlorch.config import load_cluster_config
from tests.resources import engine_flows as ef

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_shipped_cluster_configs_are_valid():
    for name in os.listdir(os.path.join(ROOT, "configs", "cluster")):
        cfg = load_cluster_config(os.path.join(ROOT, "configs", "cluster", name))
        assert cfg.kind in ("local", "address", "slurm")


def test_unknown_field_names_the_field_the_file_and_a_suggestion(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("kind: local\nn_wokers: 2\n")
    with pytest.raises(mo.ConfigError) as info:
        mo.cluster(path)
    assert str(info.value) == f"{path}: unknown field 'n_wokers'; did you mean 'n_workers'?"


def test_wrong_type_names_the_field_and_value(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("kind: local\nthreads_per_worker: many\n")
    with pytest.raises(mo.ConfigError, match=rf"{path}: field 'threads_per_worker': .*\(got 'many'\)"):
        load_cluster_config(path)


def test_invalid_yaml_and_unknown_kind(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("kind: [local\n")
    with pytest.raises(mo.ConfigError, match=rf"{path}: invalid YAML"):
        load_cluster_config(path)
    path.write_text("kind: lokal\n")
    with pytest.raises(mo.ConfigError, match="unknown cluster kind 'lokal'; did you mean 'local'"):
        load_cluster_config(path)
    path.write_text("kind: [local]\n")
    with pytest.raises(mo.ConfigError, match=r"field 'kind': unknown cluster kind"):
        load_cluster_config(path)
    with pytest.raises(mo.ConfigError, match="cannot read config file"):
        load_cluster_config(tmp_path / "missing.yaml")


def test_more_gpus_than_workers_is_refused():
    with pytest.raises(mo.ConfigError, match="n_workers=1 is less than gpus=2"):
        mo.cluster(n_workers=1, gpus=2)


def test_address_kind_attaches_to_a_running_scheduler(tmp_path, no_tracking):
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None, processes=True) as existing:
        config = tmp_path / "address.yaml"
        config.write_text(f"kind: address\naddress: {existing.scheduler_address}\n")
        with mo.cluster(config) as handle:
            assert handle.kind == "address" and handle.n_workers == 1
            assert ef.outer(3) == 25
        # closing the handle detaches; the scheduler we did not start keeps running
        assert existing.status.name == "running"


def test_unreachable_address_is_a_cluster_error():
    with pytest.raises(mo.ClusterError, match="could not reach the scheduler at 'tcp://127.0.0.1:9'"):
        mo.cluster(kind="address", address="tcp://127.0.0.1:9", timeout=2)


def test_dashboard_link_is_printed(tmp_path):
    code = "import mlorch as mo\nwith mo.cluster(n_workers=1, gpus=0, dashboard_address='127.0.0.1:0'):\n    pass\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "local cluster with 1 worker(s); dashboard: http://127.0.0.1:" in out.stderr


def test_gpu_detection_reads_cuda_visible_devices(monkeypatch):
    from mlorch.execution.gpus import detect_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert detect_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert detect_gpus() == []


def test_a_local_cluster_listens_on_loopback_only(no_tracking):
    import psutil

    with mo.cluster(n_workers=2, gpus=0) as handle:  # the default config, dashboard included
        assert handle.dashboard_link and "127.0.0.1" in handle.dashboard_link
        me = psutil.Process()
        processes = [me, *me.children(recursive=True)]
        listening = [c.laddr for p in processes for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert len(listening) >= 3  # scheduler, dashboard, workers and nannies
    assert [a for a in listening if a.ip not in ("127.0.0.1", "::1")] == []


def test_the_local_scheduler_runs_in_a_process_of_its_own_and_ends_with_the_cluster(no_tracking):
    import psutil

    with mo.cluster(n_workers=2, gpus=1, dashboard_address=None) as handle:
        scheduler = psutil.Process(handle.client.run_on_scheduler(os.getpid))
        assert scheduler.pid != os.getpid()  # not sharing the driver's GIL
        assert scheduler.ppid() == os.getpid()
        assert ef.outer(3) == 25  # tasks, resources and results as before
        assert sorted(o.resources.get("GPU", 0.0) for o in handle.offers()) == [0.0, 1.0]
    gone, alive = psutil.wait_procs([scheduler], timeout=15)
    assert alive == []


def test_a_killed_driver_leaves_no_scheduler_behind(tmp_path):
    import signal
    import time

    import psutil

    code = (
        "import os, time, mlorch as mo\n"
        "handle = mo.cluster(n_workers=1, gpus=0, dashboard_address=None)\n"
        "print(handle.client.run_on_scheduler(os.getpid), flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "MLORCH_TRACKING": "off", "MLORCH_HOME": str(tmp_path / "project")}
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    try:
        assert driver.stdout is not None
        scheduler = psutil.Process(int(driver.stdout.readline()))
        assert scheduler.is_running()
        driver.send_signal(signal.SIGKILL)  # no atexit, no cluster.close()
        driver.wait(10)
        deadline = time.monotonic() + 15
        while scheduler.is_running() and scheduler.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not scheduler.is_running() or scheduler.status() == psutil.STATUS_ZOMBIE
    finally:
        driver.kill()


def test_ctrl_c_to_the_process_group_leaves_the_driver_its_scheduler(tmp_path):
    """A terminal's Ctrl-C (SIGINT to the whole group) reaches the scheduler child too: it ignores it,
    so the driver, cleaning up after its KeyboardInterrupt (cancelling futures, setting events), still
    reaches its scheduler at once. (distributed's own worker processes do stop on it.)"""
    import signal

    code = (
        "import time, distributed, mlorch as mo\n"
        "handle = mo.cluster(n_workers=1, gpus=0, dashboard_address=None)\n"
        "try:\n"
        "    print('up', flush=True)\n"
        "    time.sleep(600)\n"
        "except KeyboardInterrupt:\n"
        "    t0 = time.monotonic()\n"
        "    distributed.Event('cleanup', client=handle.client).set()\n"
        "    answer = handle.client.run_on_scheduler(lambda: 6 * 7)\n"
        "    print('after ctrl-c', answer, round(time.monotonic() - t0), flush=True)\n"
        "    handle.close()\n"
    )
    env = {**os.environ, "MLORCH_TRACKING": "off", "MLORCH_HOME": str(tmp_path / "project")}
    driver = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp_path, env=env, start_new_session=True
    )
    try:
        assert driver.stdout is not None and driver.stdout.readline().strip() == "up"
        os.killpg(driver.pid, signal.SIGINT)
        out, _ = driver.communicate(timeout=60)
        assert "after ctrl-c 42 0" in out and driver.returncode == 0, out  # answered within a second
    finally:
        driver.kill()


def test_the_local_scheduler_takes_the_drivers_dask_config(no_tracking):
    """``dask.config.set`` in a script reaches the scheduler process, as it reaches nanny workers."""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 7}):
        with mo.cluster(n_workers=1, gpus=0, dashboard_address=None) as handle:
            assert handle.client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures) == 7
