"""Flows the first-hour tests run: one returning several kinds of values."""

from __future__ import annotations

import mlorch as mo


@mo.task
def evaluate(lr: float) -> dict:
    return {"val_loss": round(abs(lr - 0.01) * 10, 6), "accuracy": 0.9, "detail": {"f1": 0.8}, "name": "mlp", "ok": True}


@mo.flow(experiment="first-hour")
def scored(lr: float = 0.01):
    return evaluate(lr)
