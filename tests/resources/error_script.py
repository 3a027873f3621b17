"""Run as ``python error_script.py``: exceptions from this script's ``__main__`` raised in tasks.

Prints one JSON line per case, so the test sees what the caller of the flow got.
"""

from __future__ import annotations

import json
import threading

import mlorch as mo


class MyError(Exception):
    """Defined in the user's script: on a worker, ``__main__`` is not this file."""


class PairError(Exception):
    """Its __init__ rejects its own ``args``, so plain unpickling fails."""

    def __init__(self, a: str, b: str):
        super().__init__(f"{a}/{b}")


@mo.task
def raise_mine(x: int) -> int:
    raise MyError(f"bad input {x}")


@mo.task
def raise_pair() -> int:
    raise PairError("left", "right")


@mo.task
def raise_unimportable() -> int:
    # A class no caller can import (its module does not exist) that cannot be pickled by value.
    cls = type("GhostError", (Exception,), {"__module__": "no_such_module_xyz"})
    err = cls("boo")
    err.lock = threading.Lock()
    raise err


@mo.flow
def mine() -> int:
    return raise_mine(3)


@mo.flow
def pair() -> int:
    return raise_pair()


@mo.flow
def unimportable() -> int:
    return raise_unimportable()


def report(name: str, flow: mo.Flow) -> None:
    try:
        flow()
    except mo.TaskFailedError as err:
        cause = err.cause
        print(
            json.dumps(
                {
                    "case": name,
                    "error": type(err).__name__,
                    "cause_class": f"{type(cause).__module__}.{type(cause).__qualname__}",
                    "is_my_error": isinstance(cause, MyError),
                    "is_pair_error": isinstance(cause, PairError),
                    "cause_str": str(cause),
                    "type_name": getattr(cause, "type_name", None),
                    "chained": err.__cause__ is cause,
                    "traceback": err.traceback,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    with mo.cluster(n_workers=2, gpus=0, dashboard_address=None):
        report("mine", mine)
        report("pair", pair)
        report("unimportable", unimportable)
