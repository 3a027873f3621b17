"""Where a project keeps its state: one folder (default ``.mlorch/`` in the working directory).

Everything mlorch writes by default lives here: the task cache, the MLflow SQLite
store and artifacts, the Optuna journal. ``MLORCH_HOME`` moves it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["home", "cache_dir"]


def home() -> Path:
    """The project folder, created on first use."""
    path = Path(os.environ.get("MLORCH_HOME", ".mlorch")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    return home() / "cache"
