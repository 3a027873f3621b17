"""The project journal's file backend: Optuna's file format and lock, without rereading the file.

``JournalStorage`` syncs with its backend before every read and after every write
(``read_logs`` from the last line it applied). Optuna's ``JournalFileBackend`` answers each
sync by opening and reading the file, and each of its own writes by reading back the line
it just appended: on a sweep's driver that is most of what the journal costs (about a dozen
syncs per trial). This backend answers a sync with one ``stat`` when the file ends where
the last read or write of this process left it, and gives back its own appended lines
without reading them, when no other process wrote in between (checked under the lock).
Everything else is Optuna's: the same lines (``optuna.storages.journal.JournalFileBackend``
opens this file, and the other way round, also while both write; ``tests/test_journal.py``)
and the same symlink lock.

Durability: every line is written at once (so another process, or this one after its
driver crashed, reads it); the file is ``fsync``-ed after a line that creates or deletes a
study or sets a trial's state (``tell``; an enqueued trial made RUNNING). Optuna's backend
fsyncs every line: 4-5 fsyncs per trial, on the driver's critical path. A machine that loses
power can so lose what was written since the last such line: trials asked since (their
creation, parameters, attributes) and study attributes, which a resumed sweep runs or
writes again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from typing import Any

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from mlorch.tuning.optuna_private import DURABLE_JOURNAL_OPS

__all__ = ["JournalFile"]


class JournalFile(JournalFileBackend):
    """A ``JournalFileBackend`` that knows where its file ends (see the module docstring)."""

    def __init__(self, file_path: str):
        self._file_lock = JournalFileSymlinkLock(file_path)
        super().__init__(file_path, lock_obj=self._file_lock)
        self._path = file_path
        self._end_number = 0  # lines read (or written by this process and known) so far
        self._end_offset = 0  # their bytes: the file's size when nobody else wrote
        self._pending: list[bytes] = []  # lines this process appended past _end_offset, not yet read

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        yield from self._logs_from(log_number_from)

    def _logs_from(self, log_number_from: int) -> list[dict[str, Any]]:
        size = os.stat(self._path).st_size
        if log_number_from == self._end_number:
            pending = b"".join(self._pending)
            if size == self._end_offset + len(pending):  # nothing but our own lines since
                return self._take_pending(pending)
        return self._read_file(log_number_from, size)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode("utf-8")
        self._file_lock.acquire()
        try:
            before = os.stat(self._path).st_size
            with open(self._path, "ab") as f:
                f.write(text)
                f.flush()
                if any(log.get("op_code") in DURABLE_JOURNAL_OPS for log in logs):
                    os.fsync(f.fileno())
        finally:
            self._file_lock.release()
        if before == self._end_offset + sum(map(len, self._pending)):
            self._pending.extend(text.splitlines(keepends=True))
        else:  # another process wrote first: the next sync reads the file
            self._pending = []

    def _take_pending(self, pending: bytes) -> list[dict[str, Any]]:
        logs = [json.loads(line) for line in self._pending]
        self._end_number += len(self._pending)
        self._end_offset += len(pending)
        self._pending = []
        return logs

    def _read_file(self, log_number_from: int, size: int) -> list[dict[str, Any]]:
        """Complete lines from ``log_number_from`` on (a line still being written stays for later)."""
        self._pending = []
        start_number, start_offset = (self._end_number, self._end_offset) if log_number_from >= self._end_number else (0, 0)
        logs: list[dict[str, Any]] = []
        with open(self._path, "rb") as f:
            f.seek(start_offset)
            data = f.read(max(0, size - start_offset))
        number, offset = start_number, start_offset
        lines = data.splitlines(keepends=True)
        for index, line in enumerate(lines):
            if not line.endswith(b"\n"):
                break  # another process is still writing it
            if number >= log_number_from:
                try:
                    logs.append(json.loads(line))
                except json.JSONDecodeError:
                    if index + 1 < len(lines):  # as Optuna's backend: a bad line before others is an error
                        raise
                    break
            number += 1
            offset += len(line)
        if number >= self._end_number:
            self._end_number, self._end_offset = number, offset
        return logs
