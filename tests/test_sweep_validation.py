"""Bad sweep input fails before any trial starts, naming the offending field."""

from __future__ import annotations

import optuna
import pytest

import mlorch as mo
from mlorch.tuning.plan import returned_keys
from mlorch.tuning.space import space_from_config
from tests.resources import sweep_flows as sf

GOOD = {"lr": mo.loguniform(1e-4, 1e-1), "depth": mo.intrange(2, 8)}


def sweep_now(**overrides):
    """Call mo.sweep with overrides; no cluster exists, so reaching the trials would start one (and fail the test)."""
    kwargs = dict(
        space=GOOD, metric="val_loss", direction="minimize", n_trials=2, progress=False, cluster="/nonexistent/cluster.yaml"
    )
    kwargs.update(overrides)
    return mo.sweep(overrides.pop("target", sf.pipeline), **{k: v for k, v in kwargs.items() if k != "target"})


@pytest.mark.parametrize(
    "space, message",
    [
        ({"lr": mo.loguniform(1e-1, 1e-4)}, r"space\['lr'\]: loguniform\(0.1, 0.0001\) is an empty or inverted range"),
        ({"lr": mo.uniform(0.5, 0.5)}, r"space\['lr'\]: uniform\(0.5, 0.5\) is an empty or inverted range"),
        ({"depth": mo.intrange(8, 2)}, r"space\['depth'\]: intrange\(8, 2\) is an empty or inverted range"),
        ({"depth": mo.intrange(2.5, 8)}, r"space\['depth'\]: intrange low must be an integer"),
        ({"lr": mo.loguniform(0, 1)}, r"space\['lr'\]: loguniform low must be > 0"),
        ({"mode": mo.choice([])}, r"space\['mode'\]: choice\(\) needs at least one option"),
        ({"lrr": mo.uniform(0, 1)}, r"space\['lrr'\]: flow 'pipeline' has no parameter 'lrr'; did you mean 'lr'\?"),
        ({"n": 10}, r"space: nothing to sweep"),
    ],
)
def test_bad_space_names_the_parameter(space, message, project):
    with pytest.raises(mo.ConfigError, match=message):
        sweep_now(space=space)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"sampler": "tpee"}, r"sampler: unknown sampler 'tpee'; did you mean 'tpe'\?"),
        ({"pruner": "medain"}, r"pruner: unknown pruner 'medain'; did you mean 'median'\?"),
        ({"pruner": {"name": "median", "n_startup": 2}}, r"pruner: cannot build MedianPruner"),
        ({"direction": "minimise"}, r"direction: 'minimise' is neither 'minimize' nor 'maximize'; did you mean 'minimize'\?"),
        (
            {"metric": "val_los"},
            r"metric: flow 'pipeline' never returns 'val_los'; did you mean 'val_loss'\? \(it returns: accuracy, val_loss\)",
        ),
        ({"metric": None}, r"metric: name the value of flow 'pipeline' to optimise"),
        ({"n_trials": 0}, r"n_trials: expected an integer >= 1"),
        ({"max_concurrency": 0}, r"max_concurrency: expected None"),
        ({"timeout": -1}, r"timeout: expected seconds > 0 for the whole sweep"),
        ({"trial_timeout": 0}, r"trial_timeout: expected seconds > 0 per trial"),
        ({"resources": {"GPU": 0}}, r"resources\['GPU'\]: expected a positive number"),
        (
            {"metric": None, "metrics": ["val_loss", "accuracy"], "directions": ["minimize"]},
            r"directions: 1 direction\(s\) for 2 metric\(s\)",
        ),
        (
            {"metric": None, "metrics": ["val_loss", "accuracy"], "directions": ["minimize", "maximize"], "pruner": "median"},
            r"pruner: Optuna cannot prune multi-objective studies",
        ),
        ({"storage": 42}, r"storage: expected None, a journal file path"),
    ],
)
def test_bad_option_names_the_field(overrides, message, project):
    with pytest.raises(mo.ConfigError, match=message):
        sweep_now(**overrides)


def test_bad_target_and_missing_space(project):
    with pytest.raises(mo.ConfigError, match=r"target: expected an @mo.flow or an Optuna objective"):
        mo.sweep(42, n_trials=1, progress=False)
    with pytest.raises(mo.ConfigError, match=r"target: 'f' is neither an @mo.flow nor an Optuna objective"):

        def f(a, b):
            return a

        mo.sweep(f, n_trials=1, progress=False)
    with pytest.raises(mo.ConfigError, match=r"space: sweeping flow 'pipeline' needs a space"):
        mo.sweep(sf.pipeline, metric="val_loss", n_trials=1, progress=False)


def test_nothing_was_written_for_rejected_sweeps(project):
    with pytest.raises(mo.ConfigError):
        sweep_now(sampler="nope", name="rejected")
    journal = project / "optuna" / "journal.log"
    if journal.exists():  # the storage may exist, the study must not
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
        assert "rejected" not in [s.study_name for s in optuna.get_all_study_summaries(storage)]


def test_returned_keys_reads_dict_literals_only():
    def literal():
        return {"a": 1, "b": 2}

    def by_call(flag):
        if flag:
            return dict(a=1)
        return {"c": 3}

    def opaque():
        out = {"a": 1}
        return out

    assert returned_keys(literal) == {"a", "b"}
    assert returned_keys(by_call) == {"a", "c"}
    assert returned_keys(opaque) is None


def test_space_from_yaml_mapping():
    space = space_from_config(
        {
            "lr": {"loguniform": ["1e-4", 0.1]},
            "depth": {"intrange": [2, 12], "step": 2},
            "opt": {"choice": ["adam", "sgd"]},
            "x": {"uniform": [0, 1], "step": 0.25},
            "n": 100,
        },
        "sweep.yaml",
    )
    assert space == {
        "lr": mo.loguniform(1e-4, 0.1),
        "depth": mo.intrange(2, 12, step=2),
        "opt": mo.choice(["adam", "sgd"]),
        "x": mo.uniform(0.0, 1.0, 0.25),
        "n": 100,
    }
    with pytest.raises(
        mo.ConfigError, match=r"sweep.yaml: field 'space.lr': expected exactly one of .*did you mean 'loguniform'\?"
    ):
        space_from_config({"lr": {"logunifrom": [1, 2]}}, "sweep.yaml")
    with pytest.raises(mo.ConfigError, match=r"sweep.yaml: field 'space.lr': space\['lr'\]: loguniform\(1.0, 0.1\) is an empty"):
        space_from_config({"lr": {"loguniform": [1, 0.1]}}, "sweep.yaml")


def test_unmet_resources_fail_before_any_trial(cluster, project, monkeypatch):
    monkeypatch.setenv("MLORCH_TRACKING", "off")
    with pytest.raises(mo.ResourceUnavailableError, match=r"resources: a trial asks for TPU=1"):
        mo.sweep(sf.objective, n_trials=1, resources={"TPU": 1}, cluster=cluster, progress=False, name="tpu")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(project / "optuna" / "journal.log")))
    study = optuna.load_study(study_name="tpu", storage=storage)
    assert study.trials == []


@mo.task(resources={"TPU": 1})
def _needs_tpu(x: float) -> float:
    return x


@mo.flow
def _tpu_flow(x: float = 0.0):
    return {"loss": _needs_tpu(x)}


def test_flow_tasks_asking_for_missing_resources_stop_the_sweep(cluster, project, monkeypatch):
    """A flow's task resources are only known once traced: the first trial fails fast and the sweep stops."""
    monkeypatch.setenv("MLORCH_TRACKING", "off")
    with pytest.raises(mo.ResourceUnavailableError, match=r"task '_needs_tpu' asks for resources \{'TPU': 1.0\}"):
        mo.sweep(
            _tpu_flow, space={"x": mo.uniform(0, 1)}, metric="loss", n_trials=10, cluster=cluster, progress=False, name="tpu-flow"
        )
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(project / "optuna" / "journal.log")))
    assert len(optuna.load_study(study_name="tpu-flow", storage=storage).trials) == 1
