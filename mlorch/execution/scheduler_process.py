"""The local cluster's scheduler, in a process of its own.

``LocalCluster`` runs its scheduler inside the driver's process, so the scheduler's
work for every task (the graph, the transitions, the messages to workers and clients)
shares one GIL with everything the driver does: Optuna's sampler, the journal, MLflow.
For a sweep of short trials that GIL is the bottleneck (``benchmarks/bench_objective.py``:
a quarter more trials per second with the scheduler out of the driver). So mlorch's
local cluster is a ``LocalCluster`` whose scheduler spec is replaced, before it starts, by
:class:`SchedulerProcess`: the same ``distributed.Scheduler`` with the same options,
started in a ``spawn`` child (like distributed's nanny workers: the driver's ``sys.path``,
the user's script not run again; ``worker_main.py``), behind distributed's public
``ProcessInterface``. The cluster talks to it over its address as to any scheduler.

The child ends with the cluster (``terminate`` from the cluster, then a join, then a
kill), and on its own when the driver's process is gone (it watches its parent), so a
killed driver leaves no scheduler behind.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from distributed import LocalCluster
from distributed.deploy.spec import ProcessInterface

from mlorch.execution.worker_main import SCHEDULER_PROCESS_NAME

__all__ = ["LocalClusterOwnScheduler", "SchedulerProcess"]

START_TIMEOUT = 60.0  # seconds for the child to import distributed and listen
PARENT_CHECK = 1.0  # seconds between the child's checks that the driver still lives


class SchedulerProcess(ProcessInterface):
    """A ``distributed.Scheduler(**scheduler_kwargs)`` in a spawned child process."""

    def __init__(
        self, scheduler_kwargs: dict[str, Any] | None = None, log_level: int | str | None = None, timeout: float = START_TIMEOUT
    ):
        super().__init__()
        self.scheduler_kwargs = dict(scheduler_kwargs or {})
        self.log_level = log_level  # distributed's loggers in the child (LocalCluster's silence_logs)
        self.timeout = timeout
        self.process: Any = None

    async def start(self) -> None:
        self.address = await asyncio.get_running_loop().run_in_executor(None, self._spawn)
        await super().start()

    async def close(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            await asyncio.get_running_loop().run_in_executor(None, _stop, process)
        await super().close()

    def _spawn(self) -> str:
        context = multiprocessing.get_context("spawn")
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(
            target=_serve,
            args=(self.scheduler_kwargs, self.log_level, writer, os.getpid()),
            name=SCHEDULER_PROCESS_NAME,
            daemon=True,
        )
        process.start()
        writer.close()
        self.process = process
        try:
            if not reader.poll(self.timeout):
                raise RuntimeError(f"the scheduler process did not start within {self.timeout:g} s")
            kind, value = reader.recv()
        except EOFError:
            process.join(5)
            raise RuntimeError(f"the scheduler process exited with code {process.exitcode} before it listened") from None
        finally:
            reader.close()
        if kind != "ready":
            raise RuntimeError(f"the scheduler process could not start: {value}")
        return str(value)


class LocalClusterOwnScheduler(LocalCluster):
    """A ``LocalCluster`` (its workers, options and defaults) whose scheduler is a :class:`SchedulerProcess`."""

    async def _start(self) -> None:
        spec = self.scheduler_spec
        if spec is not None and spec.get("cls") is not SchedulerProcess:
            quiet = ((self.new_spec or {}).get("options") or {}).get("silence_logs")  # as LocalCluster quiets its workers
            options = {"scheduler_kwargs": dict(spec.get("options", {})), "log_level": quiet or None}
            self.scheduler_spec = {"cls": SchedulerProcess, "options": options}
        await super()._start()


def _stop(process: Any) -> None:
    """The cluster has asked the scheduler to terminate: wait for it, then insist."""
    process.join(10)
    if process.is_alive():
        process.terminate()
        process.join(5)
    if process.is_alive():
        process.kill()
        process.join(5)


def _serve(scheduler_kwargs: dict[str, Any], log_level: int | str | None, ready: Connection, parent: int) -> None:
    """The child's main: run the scheduler until it is told to terminate or the driver is gone."""
    if log_level:
        logging.getLogger("distributed").setLevel(log_level)
    threading.Thread(target=_watch_parent, args=(parent,), name="mlorch-watch-driver", daemon=True).start()
    asyncio.run(_run(scheduler_kwargs, ready))


async def _run(scheduler_kwargs: dict[str, Any], ready: Connection) -> None:
    from distributed import Scheduler

    try:
        scheduler = await Scheduler(**scheduler_kwargs)
    except BaseException as exc:
        ready.send(("error", f"{type(exc).__name__}: {exc}"))
        ready.close()
        raise
    ready.send(("ready", scheduler.address))
    ready.close()
    await scheduler.finished()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK)
    os._exit(0)  # the driver died without closing its cluster
