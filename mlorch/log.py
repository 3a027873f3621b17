"""The ``mlorch`` logger namespace; one stderr handler, added on first use (as Optuna does)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

__all__ = ["get_logger", "quieted", "set_verbosity"]

_configured = False


def get_logger(name: str) -> logging.Logger:
    """A logger under ``mlorch``, with a console handler on the root ``mlorch`` logger."""
    global _configured
    if not _configured:
        root = logging.getLogger("mlorch")
        if not root.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("[mlorch] %(message)s"))
            root.addHandler(handler)
            root.setLevel(logging.INFO)
            root.propagate = False
        _configured = True
    return logging.getLogger(name if name.startswith("mlorch") else f"mlorch.{name}")


def set_verbosity(level: int | str) -> None:
    """Set the level of every mlorch logger, e.g. ``set_verbosity("WARNING")`` in a notebook."""
    get_logger("mlorch").setLevel(level)


@contextlib.contextmanager
def quieted(*names: str, level: int = logging.WARNING) -> Iterator[None]:
    """Raise these libraries' loggers to ``level`` for a moment: their start-up chatter ("Creating
    initial MLflow database tables...", "A new study created in Journal") says nothing to a user
    who asked for a sweep; warnings and errors still show."""
    loggers = [logging.getLogger(name) for name in names]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        if logger.getEffectiveLevel() < level:
            logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, previous):
            logger.setLevel(old)
