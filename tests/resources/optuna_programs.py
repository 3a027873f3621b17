"""Objectives written for plain Optuna, unchanged: the compatibility tests run each with
``study.optimize`` and with ``mo.sweep`` and compare what the two studies hold."""

from __future__ import annotations

import time

import optuna


def quadratic(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10, 10)
    y = trial.suggest_int("y", 0, 5)
    return (x - 2) ** 2 + y


def curve(trial: optuna.Trial) -> float:
    """Reports a learning curve; the pruner (Optuna's default, the median pruner) stops bad ones."""
    x = trial.suggest_float("x", -10, 10)
    value = 0.0
    for step in range(5):
        value = (x - 2) ** 2 + 10.0 / (step + 1)
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return value


def two_goals(trial: optuna.Trial) -> tuple[float, float]:
    x = trial.suggest_float("x", 0, 5)
    return x**2, (x - 2) ** 2


def constrained(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10, 10)
    trial.set_user_attr("constraint", [x - 1.0])  # feasible when x <= 1
    trial.set_user_attr("note", {"kind": "quadratic", "x": round(x, 3)})
    return (x - 2) ** 2


def constraints_of(trial: optuna.trial.FrozenTrial) -> list[float]:
    return list(trial.user_attrs["constraint"])


def picky(trial: optuna.Trial) -> float:
    """Fails with ValueError for negative x, with KeyError for x > 8."""
    x = trial.suggest_float("x", -10, 10)
    if x < 0:
        raise ValueError(f"negative x {x}")
    if x > 8:
        raise KeyError("too large")
    return x


def slow(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0, 1)
    time.sleep(trial.user_attrs.get("sleep", 0.4) if hasattr(trial, "user_attrs") else 0.4)
    return x


def sleeper(trial: optuna.Trial) -> float:
    seconds = trial.suggest_float("seconds", 0, 10)
    time.sleep(seconds)
    return seconds
