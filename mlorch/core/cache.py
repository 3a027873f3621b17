"""On-disk results of ``@task(cache=True)``, keyed by the task's content-addressed key.

The key already covers code, inputs and ``cache_version`` (see ``tokens``), so a
lookup is one ``open``: no index, no locking. Writes go to a temporary file and are
renamed into place, so a crash never leaves a half-written entry and two workers
writing the same key race harmlessly.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import cloudpickle

__all__ = ["ResultCache", "MISSING"]

MISSING = object()


class ResultCache:
    """Pickled task results under ``<root>/<key>.pkl``."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pkl"

    def get(self, key: str) -> Any:
        """The cached value, or ``MISSING``."""
        try:
            with open(self.path(key), "rb") as fh:
                return pickle.load(fh)
        except FileNotFoundError:
            return MISSING
        except Exception:  # a corrupt or unreadable entry is a miss, recomputed and rewritten
            return MISSING

    def put(self, key: str, value: Any) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".pkl")
        try:
            with os.fdopen(fd, "wb") as fh:
                cloudpickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __contains__(self, key: str) -> bool:
        return self.path(key).exists()
