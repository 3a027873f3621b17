"""The private APIs of dependencies mlorch wraps (one adapter module each) still behave as mlorch needs.

Each test fails when an upgrade of MLflow, Optuna or distributed moves what an adapter
reaches into; the adapter's docstring names the version it was checked against.
"""

from __future__ import annotations

import json
import os

import mlflow
import optuna
import pytest

from mlorch.tracking import limits, mlflow_private
from mlorch.tuning import optuna_private


def test_mlorch_limits_are_mlflows_own():
    from mlflow.utils import validation

    assert limits.METRICS_PER_REQUEST == validation.MAX_METRICS_PER_BATCH
    assert limits.PARAMS_TAGS_PER_REQUEST == validation.MAX_PARAMS_TAGS_PER_BATCH
    assert limits.MAX_PARAM == validation.MAX_PARAM_VAL_LENGTH
    assert limits.MAX_TAG == validation.MAX_TAG_VAL_LENGTH
    assert limits.MAX_KEY == validation.MAX_ENTITY_KEY_LENGTH


def test_the_sql_store_and_its_tables_are_reachable(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    store = mlflow_private.sql_store(client)
    assert store is not None and callable(store.ManagedSessionMaker)
    models = mlflow_private.sql_models()
    for table in ("SqlRun", "SqlTag", "SqlParam", "SqlMetric", "SqlLatestMetric"):
        assert hasattr(models, table), table
    assert {"run_uuid", "status", "experiment_id", "artifact_uri"} <= set(models.SqlRun.__table__.columns.keys())
    assert mlflow_private.sql_store(mlflow.MlflowClient("http://127.0.0.1:9")) is None  # a server: public API only


def test_mlflows_batch_validation_truncates_and_rejects_as_mlflow_does():
    from mlflow.entities import Metric, Param, RunTag

    _, params, tags = mlflow_private.validate_batch(
        [Metric("loss", 1.0, 0, 0)], [Param("p", "x" * 7000)], [RunTag("t", "y" * 9000)]
    )
    assert len(params[0].value) <= limits.MAX_PARAM and len(tags[0].value) <= limits.MAX_TAG
    with pytest.raises(Exception, match="(?i)invalid|name"):
        mlflow_private.validate_batch([Metric("bad\x00key", 1.0, 0, 0)], [], [])


def test_pinned_tracking_points_mlflow_at_a_store_and_restores_everything(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    before = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'pinned.db'}"
    with mlflow_private.pinned_tracking(uri, "0"):
        assert mlflow.get_tracking_uri() == uri
    assert mlflow.get_tracking_uri() == before and os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///elsewhere.db"


def test_optuna_storage_trial_ids_and_journal_files(tmp_path):
    journal = tmp_path / "journal.log"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    assert optuna_private.storage_of(study) is storage
    tid = optuna_private.trial_id(trial)
    assert storage.get_trial(tid).number == trial.number
    optuna_private.set_trial_attr(study, trial, "k", 3)
    assert study.trials[0].user_attrs["k"] == 3 and optuna_private.trial_id(study.trials[0]) == tid
    assert optuna_private.journal_file(storage) == str(journal)
    assert optuna_private.journal_file(optuna.storages.InMemoryStorage()) is None
    # the operation codes mlorch's journal backend fsyncs after: study creation and trial states
    study.tell(trial, 1.0)
    codes = [json.loads(line)["op_code"] for line in journal.read_text().splitlines()]
    assert codes[0] in optuna_private.DURABLE_JOURNAL_OPS and codes[-1] in optuna_private.DURABLE_JOURNAL_OPS
    assert sum(code in optuna_private.DURABLE_JOURNAL_OPS for code in codes) == 2  # not the ask, not the attribute


def test_a_cluster_starts_the_workers_its_edited_spec_names():
    from distributed import Client, LocalCluster, Nanny

    from mlorch.execution.distributed_private import apply_worker_spec

    with LocalCluster(n_workers=0, processes=True, dashboard_address="127.0.0.1:0", host="127.0.0.1") as cluster:
        cluster.worker_spec["edited"] = {"cls": Nanny, "options": {"nthreads": 1, "name": "edited"}}
        apply_worker_spec(cluster)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=60)
            assert [w["name"] for w in client.scheduler_info()["workers"].values()] == ["edited"]
        cluster.worker_spec.pop("edited")
        apply_worker_spec(cluster)
        assert not cluster.workers


def test_dask_task_specs_build_a_graph_dask_runs():
    from dask.local import get_sync

    from mlorch.core.dask_private import Alias, DataNode, Task, TaskRef, parse_input

    graph = {
        "a": DataNode("a", 2),
        "b": Task("b", sum, parse_input([TaskRef("a"), 1])),  # a list node resolves its members
        "c": Alias("c", "b"),
    }
    assert get_sync(graph, "c") == 3


def test_spawned_workers_are_prepared_without_the_users_main_module():
    import multiprocessing.spawn

    import distributed.nanny

    from mlorch.execution.worker_main import CHILD_PREFIX, MAIN_KEYS, WORKER_PROCESS_PREFIX, keep_main_out_of_workers

    keep_main_out_of_workers()
    assert f'name="{WORKER_PROCESS_PREFIX}' in open(distributed.nanny.__file__).read()
    assert "sys_path" in multiprocessing.spawn.get_preparation_data(f"{WORKER_PROCESS_PREFIX} (from Nanny)")
    worker = multiprocessing.spawn.get_preparation_data(f"{WORKER_PROCESS_PREFIX} (from Nanny)")
    assert not set(MAIN_KEYS) & set(worker)
    assert not set(MAIN_KEYS) & set(multiprocessing.spawn.get_preparation_data(f"{CHILD_PREFIX}scheduler process"))
    import inspect

    source = inspect.getsource(multiprocessing.spawn.prepare)
    assert all(key in source for key in MAIN_KEYS)


def test_the_optuna_internals_remote_trial_relies_on_are_still_there():
    """``remote_trial.py`` overrides and calls ``Trial._suggest`` and drops ``Study``'s per-thread trial
    cache (checked against optuna 5.0.0); an Optuna upgrade that moves either fails here first."""
    import inspect

    assert list(inspect.signature(optuna.Trial._suggest).parameters) == ["self", "name", "distribution"]
    for method in ("suggest_float", "suggest_int", "suggest_categorical"):
        assert "self._suggest(" in inspect.getsource(getattr(optuna.Trial, method)), method
    study = optuna.create_study()
    assert study._thread_local.cached_all_trials is None
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    study._get_trials(deepcopy=False, use_cache=True)
    assert study._thread_local.cached_all_trials is not None
