"""Reading a local path out of a database URL (``sqlite:///...``), for MLflow and Optuna alike.

A leaf module: it imports nothing from mlorch.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["sqlite_path"]

SQLITE_PREFIX = "sqlite:///"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (absolute or relative to the working directory), else None."""
    if uri.startswith(SQLITE_PREFIX):
        return Path(uri[len(SQLITE_PREFIX) :])
    return None
