"""Starting and connecting to dask clusters, GPU-aware.

A local cluster runs one worker process per GPU with ``CUDA_VISIBLE_DEVICES``
pinned to that device and ``resources={"GPU": 1}`` (the pattern dask-cuda uses and
distributed's docs recommend), plus CPU-only workers. ``gpus=N`` declares N slots
on a machine without GPUs. Each kind of cluster is a provider in ``PROVIDERS``; the
HPC kinds (``slurm``, ``pbs``...) plug in there through dask-jobqueue.
"""

from __future__ import annotations

import atexit
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from distributed import Client, Nanny

from mlorch.environment import QUIET_ENV
from mlorch.errors import ClusterError, ConfigError
from mlorch.execution.distributed_private import apply_worker_spec
from mlorch.execution.gpus import detect_gpus
from mlorch.execution.logs import subscribe_task_logs
from mlorch.execution.scheduler_process import LocalClusterOwnScheduler
from mlorch.execution.worker_main import keep_main_out_of_workers
from mlorch.log import get_logger

__all__ = [
    "ClusterHandle",
    "PROVIDERS",
    "WorkerOffer",
    "active_cluster",
    "connect",
    "default_cluster",
    "ready",
    "start_local",
]

log = get_logger("mlorch.cluster")


@dataclass(frozen=True)
class WorkerOffer:
    """What one worker brings: thread slots and declared resources (``{"GPU": 1}``)."""

    nthreads: int
    resources: dict[str, float]


@dataclass
class ClusterHandle:
    """A running cluster and its client; a context manager that closes what it opened."""

    client: Client
    kind: str
    cluster: Any = None
    gpu_ids: list[str] = field(default_factory=list)
    owns_cluster: bool = True
    workers_share_files: bool = True  # False: workers may not see the driver's files (batch jobs)

    @property
    def dashboard_link(self) -> str | None:
        try:
            return self.client.dashboard_link if self.client.scheduler_info().get("services", {}).get("dashboard") else None
        except Exception:
            return None

    @property
    def n_workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def worker_resources(self) -> list[dict[str, float]]:
        return [dict(w.get("resources") or {}) for w in self.client.scheduler_info(n_workers=-1)["workers"].values()]

    def offers(self) -> list[WorkerOffer]:
        """The workers this cluster can have: the ones running here; a batch cluster's at full size."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return [
            WorkerOffer(int(w.get("nthreads", 1)), {k: float(v) for k, v in (w.get("resources") or {}).items()}) for w in workers
        ]

    def want(self, owner: str, workers: int | None) -> None:
        """``owner`` (a sweep, a flow run) can use ``workers`` workers now (-1: all it may have;
        None: none any more). Batch clusters scale to it; fixed clusters ignore it."""

    def status_line(self) -> str | None:
        """A short state of the cluster's batch jobs for progress displays (None: nothing to say)."""
        return None

    def close(self) -> None:
        _deactivate(self)
        try:
            self.client.close()
        finally:
            if self.owns_cluster and self.cluster is not None:
                self.cluster.close()

    def __enter__(self) -> ClusterHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _free_dashboard(address: str | None) -> str | None:
    """``address``, or the same host on a free port when its port is taken (another cluster's dashboard):
    said in one INFO line instead of distributed's UserWarning."""
    if not address or ":" not in address:
        return address
    host, _, port = address.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        return address
    probe = socket.socket()
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host or "0.0.0.0", int(port)))
    except OSError:
        log.info("dashboard port %s is in use (another cluster?): using a free port on %s", port, host or "all interfaces")
        return f"{host}:0"
    finally:
        probe.close()
    return address


def start_local(
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    gpus: int | str = "auto",
    gpu_threads: int = 2,
    memory_limit: str | float | None = "auto",
    dashboard_address: str | None = "127.0.0.1:8787",
    env: dict[str, str] | None = None,
) -> ClusterHandle:
    """A LocalCluster of worker processes: one per GPU (pinned), the rest CPU-only.

    Args:
        n_workers: total worker processes (default: max(#GPUs, min(#CPUs, 4))).
        gpus: "auto" detects devices; an integer declares that many (fake) slots.
        gpu_threads: threads of a GPU worker, so that ``{"GPU": 0.5}`` tasks can share a device.
    """
    os.environ.update(QUIET_ENV)
    keep_main_out_of_workers()  # a script without a main guard must not run again in each worker
    gpu_ids = detect_gpus() if gpus == "auto" else [str(i) for i in range(int(gpus))]
    if n_workers is None:
        n_workers = max(len(gpu_ids), min(os.cpu_count() or 1, 4))
    if n_workers < len(gpu_ids):
        raise ConfigError(
            f"n_workers={n_workers} is less than gpus={len(gpu_ids)}: a local cluster runs one worker "
            f"process per GPU; use n_workers >= {len(gpu_ids)}"
        )
    base_env = {**QUIET_ENV, **(env or {})}
    dashboard_address = _free_dashboard(dashboard_address)
    try:
        cluster = LocalClusterOwnScheduler(  # LocalCluster, its scheduler out of the driver's process
            n_workers=0,
            threads_per_worker=threads_per_worker,
            processes=True,
            memory_limit=memory_limit,
            dashboard_address=dashboard_address,
            env=base_env,
        )
    except Exception as exc:
        raise ClusterError(f"could not start a local cluster: {type(exc).__name__}: {exc}") from exc
    memory = cluster.new_worker_spec()
    template = next(iter(memory.values()))["options"] if memory else {}
    specs: dict[str, dict[str, Any]] = {}
    for device in gpu_ids:
        options = {
            **template,
            "nthreads": max(gpu_threads, 1),
            "resources": {"GPU": 1},
            "env": {**base_env, "CUDA_VISIBLE_DEVICES": device},
            "name": f"gpu-{device}",
        }
        specs[f"gpu-{device}"] = {"cls": Nanny, "options": options}
    for i in range(n_workers - len(gpu_ids)):
        options = {**template, "nthreads": threads_per_worker, "env": dict(base_env), "name": f"cpu-{i}"}
        specs[f"cpu-{i}"] = {"cls": Nanny, "options": options}
    cluster.worker_spec.update(specs)
    client: Client | None = None
    try:
        apply_worker_spec(cluster)
        client = Client(cluster, set_as_default=False)
        client.wait_for_workers(n_workers, timeout=120)
    except Exception as exc:
        if client is not None:
            client.close()
        cluster.close()
        raise ClusterError(f"local cluster workers did not start: {type(exc).__name__}: {exc}") from exc
    return ready(ClusterHandle(client=client, kind="local", cluster=cluster, gpu_ids=gpu_ids))


def connect(address: str, timeout: float = 30) -> ClusterHandle:
    """Attach to a running scheduler (``kind: address``); closing detaches, the cluster stays."""
    os.environ.update(QUIET_ENV)
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except Exception as exc:
        raise ClusterError(f"could not reach the scheduler at {address!r}: {type(exc).__name__}: {exc}") from exc
    return ready(ClusterHandle(client=client, kind="address", owns_cluster=False))


def ready(handle: ClusterHandle) -> ClusterHandle:
    try:
        subscribe_task_logs(handle.client)
    except BaseException:
        handle.close()
        raise
    link = handle.dashboard_link
    gpus = f", {len(handle.gpu_ids)} GPU slot(s)" if handle.gpu_ids else ""
    log.info("%s cluster with %d worker(s)%s; dashboard: %s", handle.kind, handle.n_workers, gpus, link or "off")
    _stack.append(handle)
    return handle


# Provider registry: kind -> factory taking the validated config's fields.
PROVIDERS: dict[str, Callable[..., ClusterHandle]] = {"local": start_local, "address": connect}

_stack: list[ClusterHandle] = []
_default: ClusterHandle | None = None
_default_lock = threading.Lock()


def _deactivate(handle: ClusterHandle) -> None:
    if handle in _stack:
        _stack.remove(handle)


def _close_default() -> None:
    if _default is not None:
        _default.close()


def active_cluster() -> ClusterHandle | None:
    """The innermost cluster opened with ``mo.cluster`` and not yet closed."""
    return _stack[-1] if _stack else None


def default_cluster() -> ClusterHandle:
    """The active cluster, or a local one started on first use and closed at exit."""
    global _default
    handle = active_cluster()
    if handle is not None:
        return handle
    with _default_lock:
        if _default is None or _default.client.status != "running":
            if _default is not None:  # its client was closed: do not leave its processes behind
                _default.close()
            else:
                atexit.register(_close_default)
            log.info("no cluster open: starting a local one (use `with mo.cluster(...)` to choose)")
            _default = start_local()
            _deactivate(_default)
        return _default
