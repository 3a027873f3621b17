"""Objectives and a stateful sampler for tests/test_sweep_remote_trial.py (importable on workers)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

OPENED: list[str] = []  # on a worker: files under the watched folder the process opened


class CountingSampler(optuna.samplers.BaseSampler):
    """Stateful: the n-th value it is asked for is derived from n, whatever trial asks."""

    def __init__(self) -> None:
        self.calls = 0

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: Any, trial: Any, param_name: str, distribution: BaseDistribution) -> Any:
        self.calls += 1
        n = self.calls
        if isinstance(distribution, CategoricalDistribution):
            return distribution.choices[n % len(distribution.choices)]
        if isinstance(distribution, IntDistribution):
            return distribution.low + n % (distribution.high - distribution.low + 1)
        assert isinstance(distribution, FloatDistribution)
        return distribution.low + (n * 0.137) % 1.0 * (distribution.high - distribution.low)


def two_params(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10, 10)
    k = trial.suggest_int("k", 0, 5)
    c = trial.suggest_categorical("c", ["a", "b", "c"])
    return (x - 2) ** 2 + k + (0.5 if c == "b" else 0.0)


def conditional(trial: optuna.Trial) -> float:
    """``y`` only on odd trials: pre-suggestion must stop for it after the first even trial completes."""
    x = trial.suggest_float("x", 0, 1)
    if trial.number % 2:
        x += trial.suggest_float("y", 0, 1)
    return x


def helpers(trial: optuna.Trial) -> float:
    """Optuna helpers that take a trial, run on the worker."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact
    from optuna.terminator import report_cross_validation_scores

    assert isinstance(trial, optuna.Trial) and type(trial).__name__ == "RemoteTrial"
    x = trial.suggest_float("x", 0, 1)
    trial.set_user_attr("arr", np.arange(3) * x)
    trial.set_user_attr("scalar", np.float64(x))
    trial.set_user_attr("pid", os.getpid())
    folder = os.environ["MLORCH_TEST_ARTIFACTS"]
    path = os.path.join(folder, f"note-{trial.number}.txt")
    with open(path, "w") as fh:
        fh.write(f"x={x}")
    artifact_id = upload_artifact(artifact_store=FileSystemArtifactStore(folder), file_path=path, study_or_trial=trial)
    trial.set_user_attr("artifact", artifact_id)
    report_cross_validation_scores(trial, list(np.array([x, x / 2, x / 3])))
    assert trial.study.study_name and len(trial.study.trials) >= trial.number + 1
    assert trial.user_attrs["scalar"] == x
    return x


def pruned(trial: optuna.Trial) -> float:
    """Learning curves whose level is set by x; the median pruner stops the bad ones."""
    x = trial.suggest_float("x", 0, 1)
    for step in range(5):
        trial.report(x + 0.1 * step, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return x


def watch_opens(folder: str) -> None:
    """On a worker: record every file under ``folder`` this process opens from now on."""
    import sys

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.fsdecode(args[0])
            if path.startswith(folder):
                OPENED.append(path)

    sys.addaudithook(hook)


def opened() -> list[str]:
    return list(OPENED)


def which_trial(trial: optuna.Trial) -> float:
    """Records the class of the trial it got (RemoteTrial, or the storage-based optuna.Trial)."""
    x = trial.suggest_float("x", 0, 1)
    trial.set_user_attr("trial_class", type(trial).__name__)
    return x


class LiarWatchingSampler(CountingSampler):
    """Records, at each sample, the other RUNNING trials and the parameters they already hold."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, list[list[str]]]] = []

    def sample_independent(self, study: Any, trial: Any, param_name: str, distribution: BaseDistribution) -> Any:
        if param_name == "x":
            running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            self.seen.append((trial.number, [sorted(t.params) for t in running if t.number != trial.number]))
        return super().sample_independent(study, trial, param_name, distribution)


def slow_two_params(trial: optuna.Trial) -> float:
    import time

    value = two_params(trial)
    time.sleep(0.3)
    return value


def conditional_first(trial: optuna.Trial) -> float:
    """``y`` only on even trials, so the first trial asks for it and the driver pre-suggests it once."""
    x = trial.suggest_float("x", 0, 1)
    if trial.number % 2 == 0:
        x += trial.suggest_float("y", 0, 1)
    return x


def first_overstays(trial: optuna.Trial) -> float:
    """Trial 0 is still running (and reporting) after the sweep's timeout closed it."""
    import time

    x = trial.suggest_float("x", 0, 1)
    if trial.number == 0:
        time.sleep(2.5)
        trial.report(x, 0)  # the driver no longer serves this trial: raises here
    return x


def where_the_driver_listens(trial: optuna.Trial) -> float:
    """Records the address this trial's calls go to (None: through the scheduler)."""
    trial.set_user_attr("driver_address", getattr(trial._driver, "address", "?"))
    return trial.suggest_float("x", 0, 1)
