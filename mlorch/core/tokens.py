"""Content-addressed identities: what makes two task calls "the same".

A task's token covers its module, qualified name, source code and ``cache_version``;
a call's key adds the tokens of its arguments, where an upstream result stands for
its own key. Keys therefore form a Merkle DAG: editing one task changes its key and
every key downstream of it, and nothing else.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["function_token"]


def function_token(fn: Callable[..., Any], version: str | int | None = None) -> str:
    """A stable digest of a function's identity and code, equal across processes."""
    module = getattr(fn, "__module__", "") or ""
    qualname = getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn)))
    try:
        code = inspect.getsource(fn)
    except (OSError, TypeError):
        code_obj = getattr(fn, "__code__", None)
        code = repr((code_obj.co_code, code_obj.co_consts, code_obj.co_names)) if code_obj else repr(fn)
    digest = hashlib.sha256()
    for part in (module, qualname, code, repr(version)):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]
