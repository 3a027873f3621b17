"""Progress of a sweep for a log file: plain lines a few times a minute instead of a redrawn bar.

A driver running in a batch job (or with its output piped to a file) would otherwise write
one carriage-return-separated update per trial into the job's log. ``PlainProgress`` has
the part of tqdm's interface the sweep uses (``n``, ``postfix``, ``update``,
``set_postfix``, ``close``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import IO, Any

__all__ = ["PlainProgress", "make_progress", "wants_plain_lines"]

INTERVAL = 20.0  # seconds between two lines: three a minute


def wants_plain_lines(stream: IO[str] | None = None) -> bool:
    """True when nobody watches a terminal: output to a file or pipe, or the driver is a batch job."""
    if "ipykernel" in sys.modules:  # Jupyter: tqdm.auto draws a widget
        return False
    stream = stream or sys.stderr
    in_batch_job = bool(os.environ.get("SLURM_JOB_ID") or os.environ.get("PBS_JOBID"))
    return in_batch_job or not (hasattr(stream, "isatty") and stream.isatty())


class PlainProgress:
    def __init__(self, total: int, initial: int, desc: str, stream: IO[str] | None = None, interval: float = INTERVAL):
        self.total, self.n, self.desc = total, initial, desc
        self.postfix = ""
        self._stream = stream or sys.stderr
        self._interval = interval
        self._last = 0.0
        self._lock = threading.Lock()
        self._printed = ""

    def update(self, n: int = 1) -> None:
        self.n += n
        self._maybe_print()

    def set_postfix(self, values: dict[str, Any], refresh: bool = True) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        self._maybe_print()

    def _line(self) -> str:
        return f"{self.desc}: {self.n}/{self.total} trials" + (f", {self.postfix}" if self.postfix else "")

    def _maybe_print(self, force: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last < self._interval:
                return
            line = self._line()
            if line != self._printed:
                print(line, file=self._stream, flush=True)
                self._printed = line
            self._last = now

    def close(self) -> None:
        self._maybe_print(force=True)


def make_progress(total: int, initial: int, desc: str) -> Any:
    """A tqdm bar where someone watches (a terminal, Jupyter), plain lines elsewhere."""
    if wants_plain_lines():
        return PlainProgress(total=total, initial=initial, desc=desc)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="trial")
