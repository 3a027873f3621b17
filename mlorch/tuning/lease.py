"""One live driver per sweep: an exclusive lock held while a sweep runs.

Two drivers on one study would fight: the second one's resume closes the first one's
running trials as interrupted and enqueues them again, while the first one still runs
them. A sweep therefore holds an exclusive ``flock`` on a lock file beside its journal
or SQLite file from its start to its end. For a database server (PostgreSQL, MySQL) the
lock file is in the project folder: it stops a second driver of the same project on the
same host, not one elsewhere. The kernel drops the lock when the process dies, however
it dies, so a SIGKILLed driver's sweep can be resumed at once. The file says who holds
it, for the error message.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import IO

from mlorch.errors import SweepRunningError
from mlorch.tuning.storage import StorageSpec
from mlorch.uris import sqlite_path

__all__ = ["Lease", "acquire"]


class Lease:
    """The held lock; :meth:`release` frees it (once)."""

    def __init__(self, handle: IO[str]):
        self._handle: IO[str] | None = handle

    def release(self) -> None:
        import fcntl

        handle, self._handle = self._handle, None
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


def lock_path(spec: StorageSpec, name: str) -> Path | None:
    """Where the lock of sweep ``name`` lives; None for a storage object only this process can see."""
    kind, where = spec
    if kind == "journal" and where:
        return _beside(Path(where).resolve(), name)
    if kind == "rdb" and where:
        database = sqlite_path(where)
        if database is not None:  # beside the database file, whoever opens it
            return _beside(database.resolve(), name)
        from mlorch.project import home  # a database server: drivers of this project on this host

        return home() / "optuna" / "leases" / _file_name(where, name)
    return None


def _beside(storage_file: Path, name: str) -> Path:
    return storage_file.parent / f"{storage_file.name}.{_file_name(str(storage_file), name)}"


def _file_name(where: str, name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
    digest = hashlib.blake2b(f"{where}\0{name}".encode(), digest_size=6).hexdigest()
    return f"{safe}-{digest}.lock"


def acquire(spec: StorageSpec, name: str) -> Lease | None:
    """Hold sweep ``name``'s lock, or raise :class:`SweepRunningError` naming the driver that holds it."""
    import fcntl

    path = lock_path(spec, name)
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = _holder(handle.read())
        handle.close()
        raise SweepRunningError(
            f"sweep '{name}' is already running ({holder}); wait for it to end, stop it, or use another name="
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
    handle.flush()
    return Lease(handle)


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"pid {info['pid']} on {info['host']}, since {since}"
    except (ValueError, KeyError, TypeError):
        return "by another process"
