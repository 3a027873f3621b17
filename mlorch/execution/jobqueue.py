"""HPC clusters through dask-jobqueue (SLURM first; PBS, SGE, LSF, HTCondor, OAR by the same path).

dask-jobqueue writes and submits the job scripts; mlorch adds what its users otherwise do by hand:

- **GPUs.** ``gpus_per_job: N`` asks SLURM for ``--gres=gpu:N`` and runs N worker processes per
  job, each pinned by a nanny preload (:mod:`mlorch.execution.gpu_pin`) to one device SLURM
  assigned, with ``resources={"GPU": 1}``.
- **TLS by default.** ``Security.temporary()`` credentials made for this cluster; the files jobs
  must read go to a private 0700 folder under ``~/.mlorch/jobqueue`` (never the project folder),
  removed when the cluster closes. The dashboard binds 127.0.0.1 unless configured.
- **Walltime.** Workers leave gracefully ``leave_before_walltime`` before their job ends
  (distributed's worker lifetime, with stagger); the scaler submits replacement jobs.
- **Scaling by demand.** :class:`JobScaler` keeps ``scale(jobs=n)`` at what the running sweep or
  flow can use, within ``jobs.min``/``jobs.max``, releasing idle jobs first. It also reads the
  queue (``squeue``), so progress displays show running/pending jobs and SLURM's pending reason.
- **Losing a job is not a failure.** A worker lost with its job (scancel, preemption) does not
  count toward distributed's ``allowed-failures`` for the task it ran
  (:class:`BatchAwareScheduler`); a worker process that dies while its job lives (a segfault, an
  out-of-memory kill) still counts, so such a trial fails after a bounded number of attempts.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed import Client, Scheduler
from distributed.core import Status

from mlorch.environment import QUIET_ENV
from mlorch.errors import ClusterError, ConfigError
from mlorch.execution.cluster import ClusterHandle, WorkerOffer, ready
from mlorch.execution.distributed_private import apply_worker_spec_async
from mlorch.log import get_logger

__all__ = ["LOST_TOPIC", "BatchAwareScheduler", "JobScaler", "JobqueueHandle", "JobqueueSpec", "job_script", "start_jobqueue"]

log = get_logger("mlorch.cluster")

CLASSES = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster",
    "oar": "OARCluster",
}
SUBMIT_COMMANDS = {"slurm": "sbatch", "pbs": "qsub", "sge": "qsub", "lsf": "bsub", "htcondor": "condor_submit", "oar": "oarsub"}
# Fields of the mlorch config that map onto dask-jobqueue keywords of the same name.
MAPPED = ("queue", "account", "walltime", "cores", "memory", "job_name", "interface", "local_directory")
# Keywords mlorch sets itself: passing them under `jobqueue:` would silently fight with a field.
OWNED = {
    "processes": "processes",
    "job_extra_directives": "job_extra_directives",
    "scheduler_options": "scheduler_options",
    "security": "security",
    "shared_temp_directory": "security",
    "protocol": "security",
    "log_directory": "log_directory",
    "n_workers": "jobs",
    "scheduler_cls": "(set by mlorch)",
    "dashboard_address": "dashboard_address",
}
# Final states of a job the batch system ended (not the job's own processes): its workers' losses
# are not the task's fault. COMPLETED/FAILED/OUT_OF_MEMORY mean the job's processes exited or
# were killed from inside (a crash): those losses count. COMPLETING/CONFIGURING: not decided yet.
BATCH_ENDED = {
    "CANCELLED",
    "PREEMPTED",
    "TIMEOUT",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "PENDING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "SUSPENDED",
}
# States of a job that will not run (again) as it is: the scaler replaces it, whoever ended it. PENDING
# is left out: a job waiting to start is not gone.
GONE_STATES = (BATCH_ENDED - {"PENDING"}) | {"COMPLETING", "COMPLETED", "FAILED", "OUT_OF_MEMORY", "GONE"}
REQUEUED_STATES = ("REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "SUSPENDED")
RUNNING_GRACE = 4.0  # seconds a cancelled job may still show RUNNING before SLURM marks it COMPLETING
UNDECIDED = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING"}
# Pending reasons that never clear by waiting: the cluster fails with the reason instead of waiting for ever.
PERMANENT_REASONS = {
    "PartitionTimeLimit",
    "PartitionNodeLimit",
    "PartitionConfig",
    "PartitionDown",
    "PartitionInactive",
    "QOSMaxWallDurationPerJobLimit",
    "AssocMaxWallDurationPerJobLimit",
    "InvalidQOS",
    "InvalidAccount",
    "AccountNotAllowed",
    "QOSMaxCpuPerJobLimit",
    "QOSMaxGRESPerJob",
    "QOSMaxMemoryPerJob",
    "BadConstraints",
}
SCALE_INTERVAL = 0.5  # seconds between two looks at demand (distributed's adapt uses 1 s)
ENDED_INTERVAL = 2.0  # seconds between two looks for jobs the batch system ended (they are replaced)
LEAVE_SLACK = 5.0  # seconds a task must end before its worker's lifetime, so its result is fetched in time
LOST_TOPIC = "mlorch-worker-lost"  # scheduler event: a worker left with its job while running tasks
QUEUE_INTERVAL = 5.0  # seconds between two reads of the batch queue for the progress display


@dataclass(frozen=True)
class JobqueueSpec:
    """A validated jobqueue cluster config as plain values (``mlorch.app`` builds it)."""

    kind: str
    fields: dict[str, Any]  # MAPPED fields as given (None: dask-jobqueue's default)
    processes: int
    gpus_per_job: int
    jobs_min: int
    jobs_max: int
    walltime_s: int
    margin_s: float | None
    job_extra_directives: list[str] = field(default_factory=list)
    scheduler_options: dict[str, Any] = field(default_factory=dict)
    dashboard_address: str = "127.0.0.1:8787"
    security: bool = True
    log_directory: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    passthrough: dict[str, Any] = field(default_factory=dict)
    source: str = "cluster options"

    @property
    def threads_per_worker(self) -> int:
        return max(int(self.fields.get("cores") or 1) // self.processes, 1)

    @property
    def worker_resources(self) -> dict[str, float]:
        return {"GPU": 1.0} if self.gpus_per_job else {}


def cluster_class(kind: str) -> Any:
    """dask-jobqueue's cluster class for ``kind`` (a ClusterError if the extra is not installed)."""
    # NOTE: importing dask_jobqueue (0.9.0) runs ``signal.signal(SIGINT, lambda *_: sys.exit())``
    # in dask_jobqueue/runner.py, which turns Ctrl-C into a silent exit code 0 anywhere in the
    # process. The caller's handler is put back (tests/test_hpc_config.py checks it).
    previous = signal.getsignal(signal.SIGINT)
    try:
        import dask_jobqueue
    except ImportError:
        raise ClusterError(
            f"kind '{kind}' needs dask-jobqueue: pip install 'mlorch[hpc]' (or pip install dask-jobqueue)"
        ) from None
    finally:
        if threading.current_thread() is threading.main_thread() and previous is not None:
            signal.signal(signal.SIGINT, previous)
    return getattr(dask_jobqueue, CLASSES[kind])


def _accepted(cls: Any) -> set[str]:
    """Keywords a jobqueue cluster accepts: its own, its job class's, and the shared Job ones."""
    from dask_jobqueue.core import Job, JobQueueCluster

    names: set[str] = set()
    for fn in (cls.__init__, cls.job_cls.__init__, Job.__init__, JobQueueCluster.__init__):
        names.update(
            p
            for p, v in inspect.signature(fn).parameters.items()
            if v.kind is v.KEYWORD_ONLY or v.kind is v.POSITIONAL_OR_KEYWORD
        )
    return names - {"self", "args", "kwargs", "loop", "asynchronous", "scheduler", "name"}


def cluster_kwargs(spec: JobqueueSpec, cls: Any, *, credentials_dir: str | None) -> dict[str, Any]:
    """Keyword arguments for dask-jobqueue's cluster class; every field checked against it first."""
    import difflib

    accepted = _accepted(cls)
    kwargs: dict[str, Any] = {}
    for name in MAPPED:
        value = spec.fields.get(name)
        if value is None:
            continue
        if name not in accepted:
            raise ConfigError(f"{spec.source}: field '{name}' is not supported by kind '{spec.kind}' ({cls.__name__})")
        kwargs[name] = value
    for name, value in spec.passthrough.items():
        if name in OWNED:
            raise ConfigError(f"{spec.source}: field 'jobqueue.{name}': set it with mlorch's field '{OWNED[name]}' instead")
        if name in MAPPED:
            raise ConfigError(f"{spec.source}: field 'jobqueue.{name}': set it with mlorch's field '{name}' instead")
        if name not in accepted:
            close = difflib.get_close_matches(name, sorted(accepted - set(OWNED)), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{spec.source}: field 'jobqueue.{name}' is not a keyword of {cls.__name__}{hint}")
        kwargs[name] = value
    directives = list(spec.job_extra_directives)
    worker_args = list(kwargs.pop("worker_extra_args", []) or [])
    prologue = [f"export {k}={shlex.quote(v)}" for k, v in {**QUIET_ENV, **spec.env}.items()]
    prologue += list(kwargs.pop("job_script_prologue", []) or [])  # the user's lines run after mlorch's
    if spec.gpus_per_job:
        directives.append(f"--gres=gpu:{spec.gpus_per_job}")
        worker_args += ["--resources", "GPU=1", "--preload-nanny", "mlorch.execution.gpu_pin"]
        prologue.append(f"export MLORCH_WORKERS_PER_JOB={spec.processes}")
    if spec.margin_s is not None:
        lifetime = max(spec.walltime_s - spec.margin_s, 1.0)
        stagger = min(spec.margin_s / 4, lifetime / 4)
        worker_args += ["--lifetime", f"{lifetime:.0f}s", "--lifetime-stagger", f"{stagger:.0f}s"]
    kwargs.update(
        processes=spec.processes,
        job_extra_directives=directives,
        worker_extra_args=worker_args,
        job_script_prologue=prologue,
        log_directory=spec.log_directory,
        scheduler_options={"dashboard_address": spec.dashboard_address, **spec.scheduler_options},
        scheduler_cls=BatchAwareScheduler,
        name=spec.fields.get("job_name") or "mlorch",  # worker names: <job_name>-<n>[-<i>]
    )
    if spec.security:
        from distributed import Security

        kwargs["security"] = Security.temporary()
        kwargs["shared_temp_directory"] = credentials_dir
    return kwargs


def job_script(spec: JobqueueSpec) -> str:
    """The job script a cluster of ``spec`` would submit (no scheduler is started)."""
    cls = cluster_class(spec.kind)
    kwargs = cluster_kwargs(spec, cls, credentials_dir=None)
    for name in ("scheduler_options", "scheduler_cls", "shared_temp_directory", "dashboard_address", "name"):
        kwargs.pop(name, None)
    protocol = "tcp://"
    if kwargs.pop("security", None) is not None:
        from distributed import Security

        folder = "~/.mlorch/jobqueue/<cluster-id>"
        kwargs["security"] = Security(
            tls_ca_file=f"{folder}/ca.pem",
            tls_worker_cert=f"{folder}/worker.pem",
            tls_worker_key=f"{folder}/worker.key",
            require_encryption=True,
        )
        protocol = kwargs["protocol"] = "tls://"
    if kwargs.get("log_directory"):
        kwargs["log_directory"] = None  # a preview creates nothing; the real cluster adds the -e/-o lines
    try:
        job = cls.job_cls(
            f"{protocol}<scheduler-address>:<port>", name=f"{spec.fields.get('job_name') or 'mlorch'}-<n>", **kwargs
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{spec.source}: dask-jobqueue refused these settings: {exc}") from None
    script = job.job_script()
    if spec.log_directory:
        script = script.rstrip("\n") + f"\n# job logs: {spec.log_directory}\n"
    return script


def _private_dir() -> Path:
    """A fresh 0700 folder for this cluster's TLS files, outside the project folder.

    It holds the pid of its driver; folders whose driver is gone (a SIGKILLed driver cannot
    clean up) are removed here, so worker keys do not pile up.
    """
    root = Path.home() / ".mlorch" / "jobqueue"
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root.parent, 0o700)
    os.chmod(root, 0o700)
    host = socket.gethostname()
    for old in root.glob("cluster-*"):
        try:
            owner_host, pid = (old / "driver").read_text().split()
            if owner_host == host:
                os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except (OSError, ValueError):
            continue
    folder = Path(tempfile.mkdtemp(prefix="cluster-", dir=root))
    (folder / "driver").write_text(f"{host} {os.getpid()}")
    return folder


def _leave_time(dask_worker: Any) -> float | None:
    """When a worker will leave by its lifetime (wall clock), read on the worker.

    Its lifetime timer starts in ``Worker.__init__``, a little after the process started:
    counting from the process start errs on the early, safe side.
    """
    import psutil

    lifetime = getattr(dask_worker, "lifetime", None)
    return psutil.Process().create_time() + float(lifetime) if lifetime else None


class BatchAwareScheduler(Scheduler):
    """distributed's scheduler, told about batch jobs: which losses are the queue's, who leaves when.

    - distributed counts every unexpected worker loss against the task it ran and fails the
      task after ``allowed-failures`` losses (``KilledWorker``). On a batch system most losses
      are the queue's doing (scancel, preemption, walltime): after a loss, ``job_ending(name)``
      is asked (until SLURM has a final state for the job) and, if the queue ended it, the
      count is taken back. A worker process that dies while its job lives, or a job whose
      processes died by themselves (a segfault, an out-of-memory kill) keeps its count.
    - Workers leave at their lifetime (before the walltime). Once a task's kind has a known
      duration (distributed's ``TaskPrefix.duration_average``), it does not start on a worker
      that leaves before it could end: it would be cut and run again.
    """

    job_ending: Callable[[str, float], bool | None] | None = None
    max_lifetime: float | None = None  # seconds a worker lives at most; None: no lifetimes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.leave_at: dict[str, float] = {}  # worker address -> wall-clock time it leaves by its lifetime

    async def add_worker(self, comm: Any, **kwargs: Any) -> Any:
        # NOTE: distributed passes ``comm`` only to handlers that name it, and this handler
        # runs for as long as the worker stays connected: learn its leave time alongside.
        address = kwargs.get("address")
        if address and self.max_lifetime:
            asyncio.ensure_future(self._learn_leave_time(self.coerce_address(address)))
        return await super().add_worker(comm, **kwargs)

    async def _learn_leave_time(self, address: str) -> None:
        from distributed.protocol import deserialize
        from distributed.protocol.pickle import dumps
        from distributed.protocol.serialize import Serialized

        for _ in range(100):  # until the worker is registered (up to 10 s)
            if address in self.workers:
                break
            await asyncio.sleep(0.1)
        if address not in self.workers:
            return  # gone already (distributed would log a broadcast error)
        try:
            answer = await self.broadcast(msg={"op": "run", "function": dumps(_leave_time)}, workers=[address], on_error="ignore")
        except Exception:
            return
        reply = answer.get(address) or {}
        value = reply.get("result") if reply.get("status") == "OK" else None
        if isinstance(value, Serialized):  # a worker's run() answer comes back serialized
            value = deserialize(value.header, value.frames)
        if value and address in self.workers:
            self.leave_at[address] = float(value)

    def is_rootish(self, ts: Any) -> bool:
        # Root-ish tasks are queued and handed to any free thread without asking valid_workers.
        return False if self.max_lifetime else super().is_rootish(ts)

    def valid_workers(self, ts: Any) -> Any:
        valid = super().valid_workers(ts)
        if not self.max_lifetime or not self.leave_at:
            return valid
        duration = ts.prefix.duration_average
        if duration is None or duration <= 0 or 1.25 * duration >= self.max_lifetime:
            return valid  # unknown yet, or longer than any worker lives: it may run anywhere
        # The task must end, and its result be fetched, before the worker leaves: a result left
        # on a worker that leaves with no peer to take it is computed again.
        soonest = time.time() + 1.25 * duration + LEAVE_SLACK
        pool = valid if valid is not None else self.running
        staying = {ws for ws in pool if self.leave_at.get(ws.address, math.inf) > soonest + ws.occupancy / max(ws.nthreads, 1)}
        return staying if len(staying) < len(pool) else valid

    async def remove_worker(self, address: str, *, stimulus_id: str, expected: bool = False, close: bool = True) -> Any:
        address = self.coerce_address(address)
        ws = self.workers.get(address) if self.status not in (Status.closing, Status.closed) else None
        keys = [ts.key for ts in ws.processing] if ws is not None and not expected and self.job_ending else []
        name = str(ws.name) if ws is not None else ""
        self.leave_at.pop(address, None)
        result = await super().remove_worker(address, stimulus_id=stimulus_id, expected=expected, close=close)
        if keys:
            asyncio.ensure_future(self._forgive_if_the_queue_ended_it(name, keys))
        return result

    async def _forgive_if_the_queue_ended_it(self, name: str, keys: list[Any]) -> None:
        lost = time.monotonic()
        deadline = lost + 10.0  # KillWait and job epilogues can keep a job COMPLETING
        while True:
            since = time.monotonic() - lost
            ending = await asyncio.to_thread(self.job_ending, name, since) if self.job_ending else False
            if ending is not None or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        if not ending:
            return
        for key in keys:
            ts = self.tasks.get(key)
            if ts is not None and ts.suspicious > 0:
                ts.suspicious -= 1
                ts.prefix.suspicious = max(ts.prefix.suspicious - 1, 0)
        texts = [str(k) for k in keys]
        log.info("worker %s left with its batch job; its task(s) run again elsewhere: %s", name, ", ".join(texts))
        self.log_event(LOST_TOPIC, {"worker": name, "keys": texts})


@dataclass
class QueueState:
    """What the batch system says about this cluster's jobs."""

    running: int = 0
    pending: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        text = f"jobs {self.running} running, {self.pending} pending"
        if self.reasons:
            text += " (" + ", ".join(f"{r}" if n == 1 else f"{r} x{n}" for r, n in sorted(self.reasons.items())) + ")"
        return text


def read_queue(kind: str, job_ids: list[str]) -> dict[str, tuple[str, str]] | None:
    """``{job_id: (state, reason)}`` from the batch system, or None if it cannot be read."""
    if kind != "slurm" or not job_ids:
        return {} if job_ids == [] else None
    try:
        out = subprocess.run(  # -t all: ended jobs stay listed (MinJobAge, 300 s by default) with their final state
            ["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T|%r"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    states: dict[str, tuple[str, str]] = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = (parts[1], parts[2])
    if out.returncode != 0 and not states and "Invalid job id" not in out.stderr:
        return None
    return states


class JobScaler:
    """Keeps the number of jobs at what the current work can use (see the module docstring).

    Demands are named (``want("sweep", workers)``), so a sweep and a flow run outside it do not
    overwrite each other; the target is the largest, in jobs, within the bounds. Callers only
    record demand; the cluster's ``worker_spec`` is changed on the cluster's event loop alone.
    """

    def __init__(self, handle: JobqueueHandle):
        self.handle = handle
        self._demands: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._queue = QueueState()
        self._queue_read = 0.0
        self._ended_read = 0.0
        self._no_id_since: dict[str, float] = {}
        self.job_ids: dict[str, str] = {}  # job name -> batch job id, kept after the job is gone
        self._listeners: list[Callable[[str], None]] = []
        self._thread = threading.Thread(target=self._loop, name="mlorch-job-scaler", daemon=True)
        self._thread.start()

    def want(self, owner: str, workers: int | None) -> None:
        """``owner`` can use ``workers`` workers now (-1: as many as allowed; None or 0: none any more)."""
        spec = self.handle.spec
        assert spec is not None
        if workers is not None and workers < 0:
            workers = spec.jobs_max * spec.processes
        before = self.target_jobs()
        with self._lock:
            if workers:
                self._demands[owner] = workers
            else:
                self._demands.pop(owner, None)
        if self.target_jobs() != before:
            self._wake.set()

    def target_jobs(self) -> int:
        spec = self.handle.spec
        assert spec is not None
        with self._lock:
            workers = max(self._demands.values(), default=0)
        return min(max(math.ceil(workers / spec.processes), spec.jobs_min), spec.jobs_max)

    def apply(self) -> None:
        """Scale to the target (from any thread: the change itself runs on the cluster's loop)."""
        cluster = self.handle.cluster
        if cluster is not None and cluster.status.name not in ("closing", "closed"):
            cluster.loop.add_callback(self._apply_on_loop)

    async def _apply_on_loop(self) -> None:
        cluster = self.handle.cluster
        if cluster is None or cluster.status.name in ("closing", "closed"):
            return
        target = self.target_jobs()
        specs = cluster.worker_spec
        if len(specs) > target:
            busy = self._busy_jobs()
            idle = [name for name in specs if name not in busy]
            # Busy jobs are kept until their work is done: releasing one would cost a trial.
            for name in list(reversed(idle))[: len(specs) - target]:
                specs.pop(name, None)
        while len(specs) < target:
            specs.update(cluster.new_worker_spec())
        await apply_worker_spec_async(cluster)  # also resubmits a job dropped as ended (see _forget_ended)

    def _busy_jobs(self) -> set[str]:
        """Jobs whose workers run tasks or hold results now (read on the loop, from the in-process scheduler)."""
        scheduler = getattr(self.handle.cluster, "scheduler", None)
        workers = getattr(scheduler, "workers", None)
        if workers is None:
            return set(self.handle.cluster.worker_spec)  # unknown: keep everything
        # Results held on a worker (a trial's output not yet fetched, keys shared across trials)
        # would be lost with its job and computed again: such a job is busy too.
        return {self.handle.job_of(str(ws.name)) for ws in workers.values() if ws.processing or ws.has_what}

    def on_queue(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    @property
    def queue(self) -> QueueState:
        return self._queue

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(SCALE_INTERVAL)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.apply()
                if time.monotonic() - self._ended_read >= ENDED_INTERVAL:
                    self._forget_ended()
                if time.monotonic() - self._queue_read >= QUEUE_INTERVAL:
                    self._read_queue()
            except Exception as exc:  # a scaler that dies would leave the sweep without workers
                log.debug("job scaler: %s", exc)

    def _forget_ended(self) -> None:
        """Replace jobs the batch system has ended (scancel, preemption, walltime) now, under new names.

        distributed forgets a lost job only after ``lost-worker-timeout`` (15 s) without a
        worker of that name, and a worker restarted by its nanny must keep its job; the queue
        knows which jobs are gone. A job that never got an id (its ``sbatch`` failed) is
        replaced after a minute, with a warning.
        """
        self._ended_read = now = time.monotonic()
        cluster = self.handle.cluster
        jobs = dict(getattr(cluster, "workers", {}) or {})
        stuck: list[str] = []
        for name, job in jobs.items():
            if getattr(job, "job_id", None):
                self.job_ids[name] = str(job.job_id)
                self._no_id_since.pop(name, None)
            elif now - self._no_id_since.setdefault(name, now) > 60:
                stuck.append(name)
        if stuck:
            log.warning(
                "%s: job(s) %s were never accepted by the batch system (see the log above); submitting again",
                self.handle.kind,
                ", ".join(stuck),
            )
            for name in stuck:
                self._no_id_since.pop(name, None)
        known = {name: self.job_ids[name] for name in jobs if name in self.job_ids}
        states = read_queue(self.handle.spec.kind, list(known.values())) if known and self.handle.spec else {}
        ended: dict[str, str] = dict.fromkeys(stuck, "NO_ID")
        if states is not None:
            for name, job_id in known.items():
                state = states.get(job_id, ("GONE", ""))[0]
                if state in GONE_STATES:
                    ended[name] = state
        if ended:
            cluster.loop.add_callback(self._drop_jobs, ended)

    async def _drop_jobs(self, ended: dict[str, str]) -> None:
        cluster = self.handle.cluster
        for name, state in ended.items():
            job = cluster.workers.pop(name, None)
            # A fresh name for the replacement: distributed's lost-worker timer for the old
            # name would otherwise cancel a replacement that waits in the queue.
            if cluster.worker_spec.pop(name, None) is not None:
                cluster.worker_spec.update(cluster.new_worker_spec())
            if job is not None:
                log.info("%s job %s ended in the batch queue; a new one is submitted if work needs it", self.handle.kind, name)
                if state not in ("NO_ID", *REQUEUED_STATES):
                    continue  # already over: a scancel now could turn its final state into CANCELLED
                try:
                    await job.close()  # a requeued job would come back with the old name
                except Exception as exc:
                    log.debug("closing ended job %s: %s", name, exc)
        await apply_worker_spec_async(cluster)

    def _read_queue(self) -> None:
        self._queue_read = time.monotonic()
        states = read_queue(self.handle.spec.kind, self.handle.job_ids()) if self.handle.spec else None
        if states is None:
            return
        queue = QueueState()
        for state, reason in states.values():
            if state == "RUNNING":
                queue.running += 1
            elif state == "PENDING":
                queue.pending += 1
                if reason and reason != "None":
                    queue.reasons[reason] = queue.reasons.get(reason, 0) + 1
        permanent = sorted(set(queue.reasons) & PERMANENT_REASONS)
        if permanent and self.handle.fatal is None:
            self.handle.fail(
                ClusterError(
                    f"{self.handle.kind}: jobs wait in the queue for a reason that never clears: {permanent[0]} "
                    f"(check walltime, queue, account and resources against the partition's limits: scontrol show partition)"
                )
            )
        changed = queue.describe() != self._queue.describe()
        self._queue = queue
        if changed:
            if queue.pending and queue.reasons:
                log.info("%s cluster: %s", self.handle.kind, queue.describe())
            for listener in list(self._listeners):
                listener(queue.describe())

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


@dataclass
class JobqueueHandle(ClusterHandle):
    """A dask-jobqueue cluster: capacity comes from the config, jobs come and go with demand."""

    spec: JobqueueSpec | None = None
    workers_share_files: bool = False  # compute nodes need not mount the driver's project folder
    scaler: JobScaler | None = None
    credentials_dir: Path | None = None
    fatal: ClusterError | None = None  # the batch system will never run our jobs (see fail())
    _fatal_listeners: list[Callable[[], None]] = field(default_factory=list)

    def offers(self) -> list[WorkerOffer]:
        assert self.spec is not None
        one = WorkerOffer(nthreads=self.spec.threads_per_worker, resources=self.spec.worker_resources)
        return [one] * (self.spec.jobs_max * self.spec.processes)

    def want(self, owner: str, workers: int | None) -> None:
        if self.scaler is not None:
            self.scaler.want(owner, workers)

    def status_line(self) -> str | None:
        return self.scaler.queue.describe() if self.scaler is not None else None

    def fail(self, error: ClusterError) -> None:
        """The queue says our jobs can never run: whoever waits for workers must stop waiting."""
        self.fatal = error
        log.error("%s", error)
        for listener in list(self._fatal_listeners):
            listener()

    def on_fatal(self, listener: Callable[[], None]) -> None:
        self._fatal_listeners.append(listener)

    def job_ids(self) -> list[str]:
        jobs = getattr(self.cluster, "workers", {}) or {}
        return [str(j.job_id) for j in list(jobs.values()) if getattr(j, "job_id", None)]

    def job_of(self, worker_name: str) -> str:
        """The job a worker belongs to (``mlorch-3-1`` is worker 1 of job ``mlorch-3``)."""
        assert self.spec is not None
        return worker_name.rsplit("-", 1)[0] if self.spec.processes > 1 else worker_name

    def job_ending(self, worker_name: str, since_loss: float = 0.0) -> bool | None:
        """True when the batch system ended the job of ``worker_name`` (scancel, preemption, walltime),
        False when the job lives on or ended by itself (a crash), None while SLURM has not decided.

        A job still RUNNING ``RUNNING_GRACE`` seconds after its worker was lost lives on (its
        nanny restarts the worker): whatever happens to the job later is not this loss's cause.
        """
        name = self.job_of(worker_name)
        job = (getattr(self.cluster, "workers", {}) or {}).get(name)
        job_id = getattr(job, "job_id", None) or (self.scaler.job_ids.get(name) if self.scaler else None)
        if job_id is None:
            return False  # cannot tell: count it, as distributed would
        states = read_queue(self.spec.kind if self.spec else "", [str(job_id)])
        if states is None:
            return False  # cannot tell: count it, as distributed would
        state = states.get(str(job_id), ("GONE", ""))[0]
        if state == "RUNNING":
            return None if since_loss < RUNNING_GRACE else False
        if state in UNDECIDED:
            return None
        return state in BATCH_ENDED

    def close(self) -> None:
        try:
            if self.scaler is not None:
                self.scaler.close()
        finally:
            try:
                super().close()  # cancels every job of the cluster
            finally:
                if self.credentials_dir is not None:
                    shutil.rmtree(self.credentials_dir, ignore_errors=True)


def start_jobqueue(spec: JobqueueSpec) -> JobqueueHandle:
    """Start a dask-jobqueue cluster with no jobs; demand (sweeps, flows) brings them."""
    cls = cluster_class(spec.kind)
    submit = SUBMIT_COMMANDS[spec.kind]
    if shutil.which(submit) is None:
        raise ClusterError(
            f"kind '{spec.kind}': the command '{submit}' is not on PATH; run mlorch on a login node of the cluster"
        )
    os.environ.update(QUIET_ENV)
    if spec.log_directory:
        Path(spec.log_directory).mkdir(parents=True, exist_ok=True)
    credentials = _private_dir() if spec.security else None
    try:
        kwargs = cluster_kwargs(spec, cls, credentials_dir=str(credentials) if credentials else None)
        _preflight(spec, cls, kwargs)
        cluster = cls(**kwargs)
    except Exception as exc:
        if credentials is not None:
            shutil.rmtree(credentials, ignore_errors=True)
        if isinstance(exc, (ConfigError, ClusterError)):
            raise
        raise ClusterError(f"could not start a {spec.kind} cluster: {type(exc).__name__}: {exc}") from exc
    client: Client | None = None
    try:
        client = Client(cluster, set_as_default=False)
        handle = JobqueueHandle(client=client, kind=spec.kind, cluster=cluster, spec=spec, credentials_dir=credentials)
        scheduler = cluster.scheduler
        scheduler.job_ending = handle.job_ending
        if spec.margin_s is not None:
            scheduler.max_lifetime = max(spec.walltime_s - spec.margin_s, 1.0)
        handle.scaler = JobScaler(handle)
        if spec.jobs_min:
            handle.scaler.apply()
        ready(handle)
        return handle
    except BaseException:
        if client is not None:
            client.close()
        cluster.close()
        if credentials is not None:
            shutil.rmtree(credentials, ignore_errors=True)
        raise


def _preflight(spec: JobqueueSpec, cls: Any, kwargs: dict[str, Any]) -> None:
    """Ask SLURM whether one job could ever run (``sbatch --test-only``): a bad request fails now, not never."""
    if spec.kind != "slurm":
        return
    skip = ("scheduler_options", "scheduler_cls", "security", "shared_temp_directory", "name")
    probe = {k: v for k, v in kwargs.items() if k not in skip}
    probe["log_directory"] = None
    try:
        script = cls.job_cls("tcp://127.0.0.1:1", name=f"mlorch-preflight-{uuid.uuid4().hex[:6]}", **probe).job_script()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{spec.source}: dask-jobqueue refused these settings: {exc}") from None
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as fh:
        fh.write(script)
    try:
        out = subprocess.run(["sbatch", "--test-only", fh.name], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ClusterError(f"kind 'slurm': sbatch --test-only failed to run: {exc}") from None
    finally:
        os.unlink(fh.name)
    if out.returncode != 0:
        message = (out.stderr or out.stdout).strip().splitlines()
        reason = message[-1] if message else f"exit code {out.returncode}"
        field = "gpus_per_job" if "gres" in reason.lower() or ("node configuration" in reason and spec.gpus_per_job) else None
        named = (
            f"field '{field}' ({spec.gpus_per_job}) or the job's size"
            if field
            else "the job's settings (queue, account, walltime, cores, memory)"
        )
        raise ConfigError(f"{spec.source}: SLURM would never run a job with {named}: {reason}")
