"""What an MLflow store imposes on a writer: sizes per value and per request, SQLite's busy lock.

Checked against mlflow 3.x (``mlflow.utils.validation``: ``MAX_METRICS_PER_BATCH``,
``MAX_PARAMS_TAGS_PER_BATCH``, ``MAX_PARAM_VAL_LENGTH``, ``MAX_TAG_VAL_LENGTH``,
``MAX_ENTITY_KEY_LENGTH``); ``tests/test_tracking_params.py`` fails if they move.
Stdlib only, so every tracking module can use it without importing MLflow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

__all__ = ["MAX_KEY", "MAX_PARAM", "MAX_TAG", "METRICS_PER_REQUEST", "PARAMS_TAGS_PER_REQUEST", "chunks", "retry_busy"]

MAX_KEY = 250  # characters of a param, tag or metric key
MAX_PARAM = 6000  # characters of a param value
MAX_TAG = 8000  # characters of a tag value
METRICS_PER_REQUEST = 1000  # points in one log_batch
PARAMS_TAGS_PER_REQUEST = 100  # params plus tags in one log_batch

log = logging.getLogger("mlorch.tracking")
T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most ``size`` (one request each)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def retry_busy(fn: Callable[[], Any], what: str) -> Any:
    """Call ``fn``; while SQLite is busy with another process's writes, try again (4 times, backing off)."""
    for attempt in range(4):
        try:
            return fn()
        except Exception as exc:
            if "locked" not in str(exc) or attempt == 3:
                raise
            log.debug("%s: database busy, retrying", what)
            time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")
