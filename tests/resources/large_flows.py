"""A payload that counts how often it is unpickled in each process, to see what travels where."""

from __future__ import annotations

import mlorch as mo

LOADS = 0  # per process: how many times a Payload was rebuilt from bytes here


class Payload:
    """``size`` bytes; dask.sizeof sees its size, pickling goes through ``_load``."""

    def __init__(self, data: bytes):
        self.data = data

    def __reduce__(self) -> tuple:
        return (_load, (self.data,))

    def __sizeof__(self) -> int:
        return len(self.data) + 64


def _load(data: bytes) -> Payload:
    global LOADS
    LOADS += 1
    return Payload(data)


def loads() -> int:
    return LOADS


def reset() -> None:
    global LOADS
    LOADS = 0


@mo.task
def measure(payload: Payload, i: int) -> int:
    return len(payload.data) + i


@mo.task
def measure_all(parts: dict, i: int) -> int:
    return sum(len(p.data) for p in parts.values()) + i


@mo.flow
def use_many(payload: Payload, n: int = 4) -> list:
    return [measure(payload, i) for i in range(n)]


@mo.flow
def use_nested(payload: Payload, n: int = 3) -> list:
    return [measure_all({"a": payload, "b": payload}, i) for i in range(n)]


@mo.task
def score(data: bytes, x: float) -> float:
    return (x - 0.5) ** 2 + len(data) % 7


@mo.flow
def fit(data: bytes, x: float) -> dict:
    return {"loss": score(data, x)}


@mo.task
def score_payload(payload: Payload, x: float) -> float:
    return (x - 0.5) ** 2 + len(payload.data) * 0.0


@mo.flow
def fit_payload(payload: Payload, x: float) -> dict:
    return {"loss": score_payload(payload, x)}
