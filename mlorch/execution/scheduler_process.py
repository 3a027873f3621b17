"""The local cluster's scheduler, in a process of its own.

``LocalCluster`` runs its scheduler inside the driver's process, so the scheduler's
work for every task (the graph, the transitions, the messages to workers and clients)
shares one GIL with everything the driver does: Optuna's sampler, the journal, MLflow.
For a sweep of short trials that GIL is the bottleneck (``benchmarks/bench_objective.py``:
a quarter more trials per second with the scheduler out of the driver). So mlorch's
local cluster is a ``LocalCluster`` whose scheduler spec is replaced, before it starts, by
:class:`SchedulerProcess`: the same ``distributed.Scheduler`` with the same options,
started in a child of the driver (``children.py``: the driver's ``sys.path``, the user's
script not run again, gone with the driver), behind distributed's public
``ProcessInterface``, with the driver's dask config (``dask.config.set`` in a script
reaches it, as it reaches nanny workers). The cluster talks to it over its address as to
any scheduler, and ends it as any (``terminate``; then a join, then a kill).
"""

from __future__ import annotations

import asyncio
import logging
from multiprocessing.connection import Connection
from typing import Any

import dask.config
from distributed import LocalCluster
from distributed.deploy.spec import ProcessInterface, SpecCluster

from mlorch.execution.children import exit_with_parent, spawn_child, stop_child

__all__ = ["LocalClusterOwnScheduler", "SchedulerProcess"]

START_TIMEOUT = 60.0  # seconds for the child to import distributed and listen


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
            await asyncio.get_running_loop().run_in_executor(None, stop_child, process)
        await super().close()

    def _spawn(self) -> str:
        config = dask.config.config  # what dask.config.set(...) changed in the driver, as Nanny gives its workers
        process, reader = spawn_child(_serve, (self.scheduler_kwargs, self.log_level, config), "scheduler process")
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


class _SchedulerInAProcess(SpecCluster):
    """Between ``LocalCluster`` and ``SpecCluster`` in the MRO: takes the scheduler spec
    ``LocalCluster`` passes to ``SpecCluster``'s (public) constructor and runs it in a child."""

    def __init__(self, *, scheduler: dict[str, Any] | None = None, silence_logs: Any = False, **kwargs: Any):
        if scheduler is not None and scheduler.get("cls") is not SchedulerProcess:
            options = {"scheduler_kwargs": dict(scheduler.get("options", {})), "log_level": silence_logs or None}
            scheduler = {"cls": SchedulerProcess, "options": options}
        super().__init__(scheduler=scheduler, silence_logs=silence_logs, **kwargs)


class LocalClusterOwnScheduler(LocalCluster, _SchedulerInAProcess):
    """A ``LocalCluster`` (its workers, options and defaults) whose scheduler is a :class:`SchedulerProcess`."""


def _serve(
    scheduler_kwargs: dict[str, Any], log_level: int | str | None, config: dict[str, Any], ready: Connection, parent: int
) -> None:
    """The child's main: run the scheduler until it is told to terminate or the driver is gone."""
    exit_with_parent(parent)
    dask.config.update(dask.config.config, config, priority="new")
    if log_level:
        logging.getLogger("distributed").setLevel(log_level)
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
