"""Worker processes never run the user's script again.

multiprocessing's ``spawn`` start method (distributed's default for nanny workers)
re-runs the parent's ``__main__`` in every child, as ``__mp_main__``. A script shaped
like Optuna's quick start (``mo.sweep`` at module level, no ``if __name__ ==
"__main__":`` guard) would then start a sweep inside each worker process while it boots
("Nanny failed to start"), and any module-level code would run once per worker.

Workers never need the user's ``__main__``: cloudpickle sends functions and classes
defined there by value. So for the processes distributed starts as workers, the
preparation data leaves the main module out (and for the processes mlorch spawns
itself, ``children.py``). Checked against CPython 3.11's
``multiprocessing.spawn.get_preparation_data`` (keys ``init_main_from_path`` and
``init_main_from_name``, also used by the forkserver method) and distributed 2026.8.0's
process name for nanny workers; ``tests/test_private_apis.py`` fails if either moves.
"""

from __future__ import annotations

import multiprocessing.spawn
import threading
from typing import Any

__all__ = ["CHILD_PREFIX", "WORKER_PROCESS_PREFIX", "keep_main_out_of_workers"]

WORKER_PROCESS_PREFIX = "Dask Worker process"  # distributed.nanny names its child processes so
CHILD_PREFIX = "mlorch "  # the processes mlorch spawns itself (children.py): the local scheduler, the run writer
MAIN_KEYS = ("init_main_from_path", "init_main_from_name")
_lock = threading.Lock()


def keep_main_out_of_workers() -> None:
    """Install (once per process) the preparation-data filter described in the module docstring."""
    with _lock:
        original = multiprocessing.spawn.get_preparation_data
        if getattr(original, "mlorch_filter", False):
            return

        def get_preparation_data(name: str) -> dict[str, Any]:
            data: dict[str, Any] = original(name)
            if str(name).startswith((WORKER_PROCESS_PREFIX, CHILD_PREFIX)):
                for key in MAIN_KEYS:
                    data.pop(key, None)
            return data

        get_preparation_data.mlorch_filter = True  # type: ignore[attr-defined]
        multiprocessing.spawn.get_preparation_data = get_preparation_data
