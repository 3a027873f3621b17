"""The parts of MLflow mlorch uses that are not public API, wrapped once.

Checked against mlflow 3.17.2. Each has a public alternative that is too slow or does
not exist: batched SQL writes need MLflow's own ORM models and session maker (the public
API costs ~8 commits per run, ``bulk``), MLflow's own batch validation keeps a batched
run exactly as MLflow would have written it, and ``Model.log`` reads the *global*
tracking URI and active experiment (no argument for either). ``tests/test_private_apis.py``
fails if any of them moves.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["pinned_tracking", "sql_models", "sql_store", "validate_batch"]


def sql_store(client: Any) -> Any | None:
    """The ``SqlAlchemyStore`` behind an ``MlflowClient`` (SQLite, PostgreSQL, MySQL), else None."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = client._tracking_client.store
    except Exception:  # another MLflow layout: callers use the public API
        return None
    return store if isinstance(store, SqlAlchemyStore) else None


def sql_models() -> Any:
    """MLflow's ORM models of its tracking tables (``.SqlRun``, ``.SqlTag``, ``.SqlParam``, ``.SqlMetric``, ``.SqlLatestMetric``)."""
    from mlflow.store.tracking.dbmodels import models

    return models


def validate_batch(metrics: list[Any], params: list[Any], tags: list[Any]) -> tuple[list[Any], list[Any], list[Any]]:
    """MLflow's own checks and truncation of one ``log_batch`` (raises what MLflow would raise)."""
    from mlflow.utils.validation import _validate_batch_log_data

    result = _validate_batch_log_data(metrics, params, tags)
    return list(result[0]), list(result[1]), list(result[2])


@contextlib.contextmanager
def pinned_tracking(uri: str, experiment_id: str | None = None) -> Iterator[None]:
    """Point mlflow's global tracking URI (and active experiment) at ``uri`` for a moment.

    ``Model.log`` and ``mlflow.register_model`` read the global URI; ``Model.log`` files
    the model under the *active* experiment (default "0", whose artifacts go to
    ``./mlruns``). Both are restored afterwards, and ``MLFLOW_TRACKING_URI`` too (mlflow's
    setter unsets it). Not thread-safe: callers hold one lock around it.
    """
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils

    old_global: str | None = utils._tracking_uri
    old_env = os.environ.get("MLFLOW_TRACKING_URI")
    old_experiment = fluent._active_experiment_id
    utils.set_tracking_uri(uri)
    if experiment_id is not None:
        fluent._active_experiment_id = experiment_id  # type: ignore[assignment]
    try:
        yield
    finally:
        fluent._active_experiment_id = old_experiment
        utils.set_tracking_uri(old_global)  # type: ignore[arg-type]  # None restores MLflow's default
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env
