"""Fixtures shared by the tracking tests: one SQLite store per test module, helpers to read it back."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlorch.tracking.store import RunStore


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mlflow-store")


@pytest.fixture
def store(store_dir, tmp_path, monkeypatch) -> RunStore:
    """An isolated project folder per test; the MLflow store (SQLite, created once) per module."""
    monkeypatch.setenv("MLORCH_HOME", str(tmp_path / "project"))
    uri = f"sqlite:///{store_dir / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return RunStore.open(uri)


def runs_of(store: RunStore, experiment: str) -> list:
    exp = store.client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return store.client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])


def only_run(store: RunStore, experiment: str):
    runs = runs_of(store, experiment)
    assert len(runs) == 1, f"expected one run in {experiment!r}, found {len(runs)}"
    return runs[0]


def artifact_paths(store: RunStore, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for item in store.client.list_artifacts(run_id, path):
        out.extend(artifact_paths(store, run_id, item.path) if item.is_dir else [item.path])
    return out


def read_artifact(store: RunStore, run_id: str, path: str, dst: Path) -> bytes:
    local = store.client.download_artifacts(run_id, path, str(dst))
    return Path(local).read_bytes()


def children(store, parent_id):
    exp_ids = [e.experiment_id for e in store.client.search_experiments()]
    return store.client.search_runs(exp_ids, f"tags.mlflow.parentRunId = '{parent_id}'", max_results=1000)
