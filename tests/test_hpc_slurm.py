"""Flows and sweeps on a real SLURM (slurmctld + slurmd + munge on localhost, 2 fake GPUs as gres).

``.ci/setup-slurm`` (called by ``python3 dev.py test``) brings it up. Where it cannot exist
(not root, no apt-get) these tests skip and say how to enable them; in CI a skip is a failure.
Every test uses its own job name, so it sees and cleans only its own jobs.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

import mlorch as mo
from tests.resources import hpc_flows
from tests.resources.sweep_flows import records
from tests.tracking_fixtures import children

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slurm


def _slurm_problem() -> str | None:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"sinfo cannot run ({exc})"
    state = out.stdout.strip()
    return None if state in ("idle", "mixed", "allocated") else f"sinfo says {state or out.stderr.strip()!r}"


@pytest.fixture(scope="module", autouse=True)
def slurm_up():
    problem = _slurm_problem()
    if problem is not None:
        message = f"no local SLURM ({problem}): run `sudo bash .ci/setup-slurm` (root + apt-get), or `python3 dev.py test`"
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the SLURM tests: " + message)
        pytest.skip(message)


def our_jobs(name: str, states: str = "PENDING,RUNNING,SUSPENDED,COMPLETING,CONFIGURING") -> list[tuple[str, str, str]]:
    """(job id, state, reason) of this test's jobs still in the queue (not yet ended)."""
    out = subprocess.run(["squeue", "-h", "-n", name, "-t", states, "-o", "%i|%T|%r"], capture_output=True, text=True, timeout=10)
    return [tuple(line.split("|")) for line in out.stdout.split()]  # type: ignore[misc]


def wait_until(predicate, timeout: float, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return predicate()


class JobCounter:
    """Counts this test's jobs in the queue every ``every`` seconds while it is open (a context manager)."""

    def __init__(self, name: str, states: str = "PENDING,RUNNING,SUSPENDED,COMPLETING,CONFIGURING", every: float = 0.3):
        self.name, self.states, self.every = name, states, every
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.seen.append(len(our_jobs(self.name, self.states)))
            time.sleep(self.every)

    def __enter__(self) -> JobCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def job_name() -> str:
    name = f"mlt-{uuid.uuid4().hex[:6]}"
    yield name
    subprocess.run(["scancel", "-n", name], check=False)  # whatever happened, leave the queue clean


@pytest.fixture
def test_log(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "records.jsonl"
    monkeypatch.setenv("MLORCH_TEST_LOG", str(path))
    return path


def slurm(tmp_path, job_name, test_log, **fields) -> dict:
    """A small SLURM cluster config for this machine's single-node SLURM."""
    cfg = {
        "kind": "slurm",
        "queue": "gpu",
        "walltime": "00:10:00",
        "cores": 1,
        "memory": "1GB",
        "interface": "lo",
        "dashboard_address": "127.0.0.1:0",
        "job_name": job_name,
        "jobs": {"min": 0, "max": 2},
        "log_directory": str(tmp_path / "jobs"),
        "env": {"MLORCH_TEST_LOG": str(test_log), "PYTHONPATH": str(ROOT)},
    }
    cfg.update(fields)
    return cfg


def overlapping(rows: list[dict]) -> list[tuple[dict, dict]]:
    return [(a, b) for i, a in enumerate(rows) for b in rows[i + 1 :] if a["start"] < b["end"] and b["start"] < a["end"]]


def test_gpu_tasks_never_share_a_device_and_jobs_see_different_devices(tmp_path, job_name, test_log, no_tracking):
    with mo.cluster(slurm(tmp_path, job_name, test_log, gpus_per_job=1)) as handle:
        assert handle.n_workers == 0  # no job until there is work
        assert hpc_flows.gpu_fanout(n=6, seconds=1.5) == list(range(6))
        resources = handle.worker_resources()
    assert resources and all(r == {"GPU": 1.0} for r in resources)
    rows = records(test_log, "where")
    assert len(rows) == 6
    assert all(r["visible"] in ("0", "1") and r["ids"] == [int(r["visible"])] for r in rows)  # mo.context() agrees
    by_job = {r["job"]: r["visible"] for r in rows}
    assert len(by_job) == 2 and sorted(by_job.values()) == ["0", "1"]  # two jobs, one device each
    assert all(len({r["visible"] for r in rows if r["job"] == job}) == 1 for job in by_job)
    shared = [(a, b) for a, b in overlapping(rows) if a["visible"] == b["visible"]]
    assert overlapping(rows) and shared == []  # ran at once, never on one device at once
    assert wait_until(lambda: our_jobs(job_name) == [], 15) is True


def test_two_gpus_in_one_job_are_split_between_its_workers(tmp_path, job_name, test_log, no_tracking):
    with mo.cluster(slurm(tmp_path, job_name, test_log, gpus_per_job=2, cores=2, jobs={"max": 1})) as handle:
        hpc_flows.gpu_fanout(n=4, seconds=1.0)
        names = sorted(w["name"] for w in handle.client.scheduler_info(n_workers=-1)["workers"].values())
    rows = records(test_log, "where")
    assert len({r["job"] for r in rows}) == 1 and names == [f"{job_name}-0-0", f"{job_name}-0-1"]
    assert sorted({r["visible"] for r in rows}) == ["0", "1"]  # each worker process pinned to one device
    assert len({(r["pid"], r["visible"]) for r in rows}) == 2


def test_half_gpu_trials_pack_two_per_device(tmp_path, job_name, test_log, store):
    cfg = slurm(tmp_path, job_name, test_log, gpus_per_job=1, cores=2, jobs={"max": 1})
    with mo.cluster(cfg):
        study = mo.sweep(
            hpc_flows.half,
            space={"x": mo.uniform(0, 1)},
            metric="loss",
            n_trials=4,
            seed=1,
            name=f"half-{job_name}",
            progress=False,
        )
    assert study.n_finished == 4
    rows = records(test_log, "where")
    assert len({r["job"] for r in rows}) == 1
    pairs = overlapping(rows)
    assert pairs and all(a["visible"] == b["visible"] == "0" for a, b in pairs)  # two trials share the one device


def test_sweep_asks_for_jobs_it_can_use_and_releases_them(tmp_path, job_name, test_log, store):
    with mo.cluster(slurm(tmp_path, job_name, test_log, jobs={"min": 0, "max": 2})) as handle:
        with JobCounter(job_name, "running") as counter:
            study = mo.sweep(
                hpc_flows.steady,
                space={"x": mo.uniform(0, 1), "seconds": 1.5},
                metric="loss",
                n_trials=8,
                name=f"steady-{job_name}",
                progress=False,
            )
            assert study.n_finished == 8
            # Work ran out: the jobs go while the cluster stays open.
            assert wait_until(lambda: our_jobs(job_name) == [], 20) is True
            assert handle.n_workers == 0
    assert max(counter.seen) == 2  # as many as allowed, not more
    assert len({r["job"] for r in records(test_log, "where")}) >= 2


def test_pending_jobs_show_slurm_s_reason(tmp_path, job_name, test_log, no_tracking):
    # Three 1-GPU jobs on a node with two GPUs: one must wait, and SLURM says why.
    with mo.cluster(slurm(tmp_path, job_name, test_log, gpus_per_job=1, jobs={"max": 3})) as handle:
        handle.want("test", -1)

        def two_running_one_waiting():
            jobs = our_jobs(job_name)
            running = [j for j in jobs if j[1] == "RUNNING"]
            waiting = [j for j in jobs if j[1] == "PENDING" and j[2] not in ("None", "")]
            return waiting[0][2] if len(running) == 2 and len(waiting) == 1 else None

        reason = wait_until(two_running_one_waiting, 60)
        assert reason in ("Resources", "Priority")  # no GPU left for it (or it queues behind one that waits)
        expected = f"jobs 2 running, 1 pending ({reason})"
        assert wait_until(lambda: handle.status_line() == expected, 20), handle.status_line()
    assert wait_until(lambda: our_jobs(job_name) == [], 15) is True  # closing cancels pending jobs too


def test_tls_by_default_with_private_credentials(tmp_path, job_name, test_log, project, no_tracking):
    with mo.cluster(slurm(tmp_path, job_name, test_log, jobs={"min": 1, "max": 1})) as handle:
        address = handle.client.scheduler.address
        assert address.startswith("tls://")
        handle.client.wait_for_workers(1, timeout=60)
        for plain in (address, address.replace("tls://", "tcp://")):  # another user, no credentials: refused
            code = f"from distributed import Client\nc = Client({plain!r}, timeout=5)\nprint('CONNECTED', c.scheduler_info()['workers'])"
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
            assert out.returncode != 0 and "CONNECTED" not in out.stdout
        assert handle.client.submit(sum, [1, 2]).result() == 3  # while the cluster's own client works
        folder = handle.credentials_dir
        assert folder is not None and folder.is_dir()
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
        assert not folder.resolve().is_relative_to(project.resolve()) and any(folder.iterdir())
        assert handle.dashboard_link.startswith("http://127.0.0.1:")
    assert not folder.exists()  # removed with the cluster


def test_gres_no_node_has_fails_at_once_naming_the_field(tmp_path, job_name, test_log, no_tracking):
    with pytest.raises(mo.ConfigError, match=r"gpus_per_job.*Requested node configuration is not available"):
        mo.cluster(slurm(tmp_path, job_name, test_log, gpus_per_job=3, cores=3))
    assert our_jobs(job_name) == []


def test_cancelled_jobs_cost_only_the_trial_s_progress(tmp_path, job_name, test_log, store):
    # Trial 0 loses its job four times (more than distributed's allowed-failures of 3).
    marker = tmp_path / "cancelled"
    with mo.cluster(slurm(tmp_path, job_name, test_log)):
        study = mo.sweep(
            hpc_flows.preempted,
            space={"x": mo.uniform(0, 1), "marker": str(marker), "times": 4},
            metric="loss",
            n_trials=3,
            name=f"preempt-{job_name}",
            progress=False,
        )
    assert len(os.listdir(marker)) == 4
    trials = study.study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    attempts = [r for r in records(test_log, "where") if r["trial"] == 0]
    assert len(attempts) == 5 and len({r["job"] for r in attempts}) == 5  # same trial, a new job each time
    assert trials[0].user_attrs["mlorch.lost_attempts"] == 4
    runs = children(store, study.parent_run_id)
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)  # no orphan run per lost attempt
    first = next(r for r in runs if r.data.tags.get("optuna.trial_number") == "0")
    assert first.data.tags["mlorch.lost_attempts"] == "4"
    assert float(first.data.params["x"]) == trials[0].params["x"]


def test_a_trial_that_crashes_its_worker_fails_after_bounded_attempts(tmp_path, job_name, test_log, store):
    with mo.cluster(slurm(tmp_path, job_name, test_log, jobs={"max": 1})):
        study = mo.sweep(
            hpc_flows.crashing,
            space={"x": mo.uniform(0, 1)},
            metric="loss",
            n_trials=2,
            max_concurrency=1,
            name=f"crash-{job_name}",
            progress=False,
        )
    trials = study.study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert "workers died" in trials[0].user_attrs["mlorch.error"]
    crashes = [r for r in records(test_log, "where") if r["trial"] == 0]
    # distributed's allowed-failures (3) + 1, then it gives up. A worker that crashes while its
    # job is still starting can take the job down with it; if SLURM then reports a final state
    # the queue's, that loss is forgiven (at most MAX_LOST_ATTEMPTS - 1 times): still bounded.
    from mlorch.tuning.driver import MAX_LOST_ATTEMPTS

    assert 4 <= len(crashes) < 4 + MAX_LOST_ATTEMPTS, len(crashes)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_driver_leaves_no_job_behind(tmp_path, job_name, test_log, signum):
    import yaml

    cluster = tmp_path / "slurm.yaml"
    cluster.write_text(yaml.safe_dump(slurm(tmp_path, job_name, test_log)))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "target": "tests.resources.hpc_flows:steady",
                "space": {"x": {"uniform": [0, 1]}, "seconds": 20},
                "metric": "loss",
                "n_trials": 10,
                "name": f"interrupt-{job_name}",
                "cluster": str(cluster),
            }
        )
    )
    env = {**os.environ, "MLORCH_HOME": str(tmp_path / "project"), "PYTHONPATH": str(ROOT), "MLORCH_TRACKING": "off"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlorch", "sweep", str(sweep), "--no-progress"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_until(lambda: len(our_jobs(job_name, "running")) == 2, 90), proc.stdout
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert wait_until(lambda: our_jobs(job_name) == [], 10) is True, out


@pytest.mark.slow
def test_a_sweep_outlives_the_job_walltime(tmp_path, job_name, test_log, store):
    # One-minute jobs (SLURM counts whole minutes); workers leave 20 s before the end and are replaced.
    cfg = slurm(tmp_path, job_name, test_log, walltime="00:01:00", jobs={"max": 2})
    started = time.monotonic()
    with mo.cluster(cfg):
        study = mo.sweep(
            hpc_flows.steady,
            space={"x": mo.uniform(0, 1), "seconds": 3.0},
            metric="loss",
            n_trials=80,
            name=f"walltime-{job_name}",
            progress=False,
        )
    elapsed = time.monotonic() - started
    trials = study.study.get_trials()
    assert elapsed > 2 * 60  # the sweep lasted several walltimes
    assert len(trials) == 80 and {t.state.name for t in trials} == {"COMPLETE"}
    jobs = {r["job"] for r in records(test_log, "where")}
    assert len(jobs) >= 4  # jobs came and went, replaced automatically
    # Once a task's duration is known, none starts on a worker that would leave before it ends:
    # an attempt that began on a job and never ended there was cut by its worker leaving.
    ended = {(r["trial"], r["job"]) for r in records(test_log, "where")}
    cut = [r["trial"] for r in records(test_log, "begin") if (r["trial"], r["job"]) not in ended]
    assert len(cut) <= 2, cut  # at most trials that started before any duration was known


def isolated(tmp_path, job_name, test_log, store_dir) -> tuple[dict, list[str]]:
    """A cluster config whose jobs' Python runs in its own mount namespace, with empty tmpfs over the
    driver's project folder and MLflow store: what a compute node without a shared file system sees."""
    project = Path(os.environ["MLORCH_HOME"])
    project.mkdir(parents=True, exist_ok=True)
    hidden = [str(project), str(store_dir)]
    wrapper = tmp_path / "isolated-python"
    mounts = " && ".join(f"mount -t tmpfs -o size=1m tmpfs {folder}" for folder in hidden)
    wrapper.write_text(f'#!/bin/bash\nexec unshare -m -- bash -c \'{mounts} && exec "$0" "$@"\' {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    cfg = slurm(tmp_path, job_name, test_log, jobqueue={"python": str(wrapper)})
    cfg["env"]["MLORCH_TEST_HIDDEN"] = ":".join(hidden)
    return cfg, hidden


def test_worker_jobs_need_nothing_from_the_project_folder(tmp_path, job_name, test_log, store, store_dir):
    cfg, hidden = isolated(tmp_path, job_name, test_log, store_dir)
    project = Path(hidden[0])
    with mo.cluster(cfg):
        study = mo.sweep(
            hpc_flows.private,
            space={"x": mo.uniform(0, 1), "folders": hidden},
            metric="loss",
            n_trials=4,
            name=f"private-{job_name}",
            progress=False,
        )
    assert [t.state.name for t in study.study.get_trials()] == ["COMPLETE"] * 4
    peeks = records(test_log, "peek")
    assert len(peeks) == 4 and all(p["job"] for p in peeks)
    assert all(p["seen"] == {folder: [] for folder in hidden} for p in peeks)  # the jobs saw empty folders
    assert any(project.iterdir())  # while the driver's project folder holds the Optuna journal
    runs = children(store, study.parent_run_id)
    assert len(runs) == 4 and all("peeked" in r.data.metrics and r.info.status == "FINISHED" for r in runs)


def test_plain_objectives_need_no_shared_storage_either(tmp_path, job_name, test_log, store, store_dir):
    cfg, hidden = isolated(tmp_path, job_name, test_log, store_dir)
    with mo.cluster(cfg):
        study = mo.sweep(hpc_flows.peeking_objective, n_trials=4, name=f"private-objective-{job_name}", progress=False)
    trials = study.study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert all(set(t.params) == {"x", "kind"} and t.user_attrs["kind_seen"] == t.params["kind"] for t in trials)
    assert all(len(t.intermediate_values) == 2 for t in trials)  # trial.report reached the driver's study
    peeks = records(test_log, "peek")
    assert len(peeks) == 4 and all(p["seen"] == {folder: [] for folder in hidden} for p in peeks)
    runs = children(store, study.parent_run_id)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" and "objective" in r.data.metrics for r in runs)


def test_jobs_that_can_never_start_stop_the_sweep_with_slurm_s_reason(tmp_path, job_name, test_log, store):
    # Partition 'short' allows 1 minute; 5-minute jobs pend for ever with PartitionTimeLimit.
    cfg = slurm(tmp_path, job_name, test_log, queue="short", walltime="00:05:00")
    with pytest.raises(mo.ClusterError, match="never clears: PartitionTimeLimit"):
        with mo.cluster(cfg):
            mo.sweep(
                hpc_flows.steady,
                space={"x": mo.uniform(0, 1), "seconds": 0.1},
                metric="loss",
                n_trials=2,
                name=f"never-{job_name}",
                progress=False,
            )
    assert wait_until(lambda: our_jobs(job_name) == [], 15) is True


@pytest.mark.parametrize(("options", "most"), [({"max_concurrency": 1, "n_trials": 4}, 1), ({"n_trials": 1}, 1)])
def test_demand_is_bounded_by_concurrency_and_trials_left(tmp_path, job_name, test_log, project, no_tracking, options, most):
    # No log_directory: job logs go to the project folder, not the current directory.
    cfg = slurm(tmp_path, job_name, test_log, jobs={"max": 3})
    del cfg["log_directory"]
    with mo.cluster(cfg), JobCounter(job_name) as counter:
        study = mo.sweep(
            hpc_flows.steady,
            space={"x": mo.uniform(0, 1), "seconds": 1.0},
            metric="loss",
            name=f"bounded-{job_name}",
            progress=False,
            **options,
        )
    assert study.n_finished == options["n_trials"]
    assert max(counter.seen) == most  # never more jobs than trials can run at once
    logs = sorted(p.name for p in (project / "jobs").iterdir())
    assert logs and all(name.startswith(job_name) for name in logs)
    assert not list(ROOT.glob(f"{job_name}*")) and not list(Path.cwd().glob("slurm-*.out"))
