"""Where a sweep's Optuna study lives, and how a crashed sweep is picked up again.

Default: ``JournalStorage(JournalFile(<project home>/optuna/journal.log))``, an
append-only log that survives a killed driver and that ``optuna-dashboard`` opens
as it is (``JournalFile`` is Optuna's file backend that does not reread the file when
only this process wrote it; ``journal.py``). Only the driver reads and writes it: a plain
Optuna objective's trial calls are answered by the driver (``remote_trial.py``), except on a
cluster mlorch did not start (``kind: address``); there the objective runs on a worker with
a real ``optuna.Trial`` on the same journal (one machine or a shared file system).

Workers reopen a storage from a small picklable *spec* (a path or a URL), and keep
one storage object per spec per process: a journal is replayed incrementally, not
from scratch for every trial.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage

from mlorch.errors import ConfigError, preview
from mlorch.tuning.journal import JournalFile
from mlorch.tuning.optuna_private import journal_file

__all__ = ["StorageSpec", "default_journal_path", "open_storage", "serve_from_scheduler", "storage_from_spec"]

# ("journal", path) | ("rdb", url) | ("dask", name) | ("object", None) -- the last cannot be reopened
# elsewhere; "dask" is the driver's storage served by the scheduler (see serve_from_scheduler).
StorageSpec = tuple[str, str | None]

_cache: dict[StorageSpec, optuna.storages.BaseStorage] = {}
_lock = threading.Lock()


def default_journal_path() -> Path:
    from mlorch.project import home

    path = home() / "optuna" / "journal.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def open_storage(storage: Any) -> tuple[optuna.storages.BaseStorage, StorageSpec]:
    """The storage to use and the spec workers reopen it from.

    ``storage`` is None (the project journal), a ``*.log``/``*.jsonl`` path (a journal),
    a database URL (``sqlite:///...``, ``postgresql://...``), or an Optuna storage object.
    """
    if storage is None:
        spec: StorageSpec = ("journal", str(default_journal_path()))
    elif isinstance(storage, optuna.storages.BaseStorage):
        return storage, _spec_of(storage)
    elif isinstance(storage, (str, Path)):
        text = str(storage)
        if "://" in text:
            _check_database_url(text)
            spec = ("rdb", text)
        else:
            if not text.strip():
                raise ConfigError("storage: expected a journal file path or a database URL, got ''")
            path = Path(text).expanduser().resolve()
            if path.is_dir():
                raise ConfigError(
                    f"storage: {preview(text)} is a folder; give a file in it, e.g. {preview(str(path / 'journal.log'))}"
                )
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"storage: cannot create the folder of {preview(text)} ({exc.strerror or exc})") from None
            spec = ("journal", str(path))
    else:
        raise ConfigError(
            f"storage: expected None, a journal file path, a database URL or an Optuna storage; got {type(storage).__name__}"
        )
    return storage_from_spec(spec), spec


def _check_database_url(url: str) -> None:
    """A database URL SQLAlchemy can open (a known dialect; for SQLite, an existing folder), before any process starts."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ConfigError(f"storage: {preview(url)} is not a database URL SQLAlchemy knows ({str(exc)[:120]})") from None
    except ImportError as exc:
        raise ConfigError(f"storage: {preview(url)} needs a database driver that is not installed ({exc})") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).expanduser().resolve().parent
        if not folder.is_dir():
            raise ConfigError(f"storage: folder {preview(str(folder))} of the SQLite file does not exist")


def storage_from_spec(spec: StorageSpec) -> optuna.storages.BaseStorage:
    """One storage object per spec in this process (workers call this for every trial)."""
    with _lock:
        found = _cache.get(spec)
        if found is None:
            kind, where = spec
            if kind == "journal":
                found = JournalStorage(JournalFile(str(where)))
            elif kind == "rdb":
                found = optuna.storages.RDBStorage(str(where))
            elif kind == "dask":
                from optuna_integration.dask import DaskStorage

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    found = DaskStorage(name=str(where), register=False)
            else:
                raise ConfigError("storage: this Optuna storage object cannot be reopened on a worker")
            _cache[spec] = found
        return found


def serve_from_scheduler(storage: optuna.storages.BaseStorage, client: Any, name: str) -> StorageSpec:
    """Let workers reach ``storage`` through the scheduler instead of a shared file.

    optuna-integration's ``DaskStorage`` keeps a copy of the storage in a scheduler
    extension and answers workers' storage calls there; with the scheduler in the driver's
    process (LocalCluster, dask-jobqueue), the journal never leaves the driver's machine, so
    batch jobs need no file system shared with it.
    """
    try:
        from optuna_integration.dask import DaskStorage
    except ImportError:
        raise ConfigError(
            "a plain Optuna objective on a batch cluster needs optuna-integration: pip install 'mlorch[hpc]'"
        ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        DaskStorage(storage=storage, name=name, client=client)
    return ("dask", name)


def _spec_of(storage: optuna.storages.BaseStorage) -> StorageSpec:
    path = journal_file(storage)
    if path is not None:
        return ("journal", path)
    url = getattr(storage, "url", None)
    if isinstance(url, str):
        return ("rdb", url)
    return ("object", None)
