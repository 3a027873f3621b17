"""Processes mlorch starts beside the driver (the local scheduler, the MLflow run writer).

They take work off the driver's one GIL. Each is a ``spawn`` child (the driver's
``sys.path``, no fork of a process full of threads) named with :data:`CHILD_PREFIX`, so
the user's script is not run again in it (``worker_main.py``), and each ends on its own
when the driver's process is gone: a driver killed with SIGKILL leaves none behind. They
ignore SIGINT and SIGTERM, which a terminal or a batch system sends to the whole group:
the driver decides when they end.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from mlorch.execution.worker_main import CHILD_PREFIX, keep_main_out_of_workers

__all__ = ["CHILD_PREFIX", "exit_with_parent", "spawn_child", "stop_child"]

PARENT_CHECK = 1.0  # seconds between a child's checks that the driver still lives


def spawn_child(target: Callable[..., None], args: tuple[Any, ...], name: str) -> tuple[Any, Connection]:
    """Start ``target(*args, conn, parent_pid)`` in a daemonic spawn child named ``mlorch <name>``;
    returns the process and the driver's end of the pipe whose other end is ``conn``."""
    keep_main_out_of_workers()
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=target, args=(*args, theirs, os.getpid()), name=f"{CHILD_PREFIX}{name}", daemon=True)
    try:
        process.start()
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()  # the child has its own copy
    return process, ours


def exit_with_parent(parent: int) -> None:
    """In a child, first thing: end this process as soon as ``parent`` is no longer its parent,
    and only then. Ctrl-C in a terminal (SIGINT to the whole process group) and ``scancel``
    (SIGTERM to every process of the job) also reach the children; they ignore both, so the
    driver, which handles them, still has its scheduler and writers while it cleans up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK)
        os._exit(0)  # the driver died without closing us

    threading.Thread(target=watch, name="mlorch-watch-driver", daemon=True).start()


def stop_child(process: Any, grace: float = 10.0) -> None:
    """Wait ``grace`` seconds for a child that was asked to end, then kill it (it ignores SIGTERM)."""
    process.join(grace)
    if process.is_alive():
        process.kill()
        process.join(5)
