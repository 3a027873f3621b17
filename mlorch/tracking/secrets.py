"""Keeping secrets out of the store: ``mo.Secret`` and name patterns.

A value is secret when it is wrapped in :class:`Secret` or when its parameter name
matches one of ``secret_patterns()`` (``*password*``, ``*token*``, ``*key*``,
``*secret*``...; ``MLORCH_SECRET_PATTERNS`` or :func:`set_secret_patterns` change
them). Secrets are written as ``***``. Their plain text is also remembered per
process so it can be scrubbed from free text (tags, error messages, the config
artifact, the command line) where it might leak by accident.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import logging
import os
import threading
from collections.abc import Iterable
from typing import Any

__all__ = [
    "MASK",
    "ScrubFilter",
    "Secret",
    "is_secret_name",
    "known",
    "remember",
    "reveal",
    "scrub",
    "scrub_handlers",
    "scrub_logs",
    "secret_patterns",
    "set_secret_patterns",
]

MASK = "***"
DEFAULT_PATTERNS = ("*password*", "*passwd*", "*token*", "*key*", "*secret*", "*credential*")

# Loggers whose handlers get a ScrubFilter: the root, mlorch's console, distributed's stderr.
HANDLER_LOGGERS = ("", "mlorch", "distributed")

_patterns: tuple[str, ...] | None = None
_known: set[str] = set()  # plain texts seen, to scrub from free text
_lock = threading.Lock()


class Secret:
    """A value that must never be written to tracking: params, tags and artifacts show ``***``.

    >>> s = Secret("hunter2")
    >>> str(s), repr(s), s.get()
    ('***', "Secret('***')", 'hunter2')
    """

    __slots__ = ("_value",)

    def __init__(self, value: Any):
        self._value = value.get() if isinstance(value, Secret) else value
        remember(self._value)

    def get(self) -> Any:
        """The real value, for the code that needs it (a client, a connection)."""
        return self._value

    @property
    def value(self) -> Any:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("mlorch.Secret", self._value))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Secret, (self._value,))

    def __dask_tokenize__(self) -> str:
        # A digest, so graph keys and dashboards never carry the plain value.
        return "mlorch.Secret-" + hashlib.sha256(repr(self._value).encode()).hexdigest()


def secret_patterns() -> tuple[str, ...]:
    """Name patterns (fnmatch, case-insensitive) whose values are masked."""
    if _patterns is not None:
        return _patterns
    env = os.environ.get("MLORCH_SECRET_PATTERNS")
    if env:
        return _parse_patterns(env)
    return DEFAULT_PATTERNS


@functools.lru_cache(maxsize=16)
def _parse_patterns(env: str) -> tuple[str, ...]:
    return tuple(p.strip().lower() for p in env.split(",") if p.strip())


def set_secret_patterns(patterns: Iterable[str] | None) -> None:
    """Replace the name patterns for this process (None restores the default / environment)."""
    global _patterns
    _patterns = None if patterns is None else tuple(p.lower() for p in patterns)


def is_secret_name(name: str) -> bool:
    """True when any part of a dotted name matches a secret pattern."""
    return _matches(name, secret_patterns())


@functools.lru_cache(maxsize=4096)  # tracing asks about every key of every config dict a task gets
def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    lowered = name.lower()
    candidates = [lowered, *lowered.split(".")]
    return any(fnmatch.fnmatchcase(c, p) for p in patterns for c in candidates)


def remember(value: Any, min_length: int = 4) -> None:
    """Record a secret's text so :func:`scrub` removes it from free text.

    Only strings are remembered, and only from ``min_length`` characters on: scrubbing
    ``"true"`` or ``"8"`` everywhere would mangle ordinary text. Its escaped forms are
    remembered too, as log lines quote it with ``%r`` (distributed's, twice over).
    """
    if isinstance(value, str) and len(value) >= min_length:
        forms = {value}
        escaped = value
        for _ in range(2):
            escaped = repr(escaped)[1:-1]
            forms.add(escaped)
        with _lock:
            new = not forms <= _known
            _known.update(forms)
        if new:  # this process now has something to hide: make sure its console handlers scrub
            scrub_handlers(*HANDLER_LOGGERS)


def known() -> tuple[str, ...]:
    """Every remembered secret text of this process (to hand to the workers)."""
    with _lock:
        return tuple(sorted(_known))


def reveal(value: Any) -> Any:
    """The plain value of a Secret; anything else unchanged."""
    return value.get() if isinstance(value, Secret) else value


def scrub(text: str) -> str:
    """``text`` with every remembered secret replaced by ``***``."""
    if not _known or not text:
        return text
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def mask(name: str, value: Any) -> Any:
    """``***`` when the name or the value is secret (remembering it), else the value."""
    if isinstance(value, Secret):
        return MASK
    if is_secret_name(name) and value is not None:
        for item in value if isinstance(value, (list, tuple, set)) else [value]:
            # matched by name only: a name like "sort_key" may hold ordinary words, so be stricter
            remember(reveal(item), 4 if isinstance(item, Secret) else 8)
        return MASK
    if isinstance(value, (list, tuple)) and any(isinstance(v, Secret) for v in value):
        return type(value)(MASK if isinstance(v, Secret) else v for v in value)
    return value


class ScrubFilter(logging.Filter):
    """Masks remembered secrets in log records (e.g. an error message that quotes a token).

    The message, and the traceback of ``log.exception(...)`` (formatted here, once, so the
    handler prints the scrubbed text).
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if _known:
            try:
                message = record.getMessage()
            except Exception:
                return True
            clean = scrub(message)
            if clean != message:
                record.msg, record.args = clean, None
            if record.exc_info and not record.exc_text:
                record.exc_text = self._formatter.formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = scrub(record.exc_text)
            if record.stack_info:
                record.stack_info = scrub(record.stack_info)
        return True


def scrub_logs(*names: str) -> None:
    """Add a :class:`ScrubFilter` to the named loggers (idempotent).

    A logger's filters see only records logged on that very logger; see
    :func:`scrub_handlers` for records that propagate to it.
    """
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ScrubFilter) for f in logger.filters):
            logger.addFilter(ScrubFilter())


def scrub_handlers(*names: str) -> None:
    """Add a :class:`ScrubFilter` to every handler of the named loggers ("" is the root; idempotent).

    A handler's filters see every record it writes, whichever logger it came from.
    """
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, ScrubFilter) for f in handler.filters):
                handler.addFilter(ScrubFilter())
