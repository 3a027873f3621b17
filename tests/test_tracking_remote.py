"""Issue 3, items 3 and 5: workers that cannot open the SQLite file still log everything
(metrics, params, artifacts, models) because the driver is the single writer; models land in
the registry with versions, signatures, run links and aliases."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

import mlorch as mo
from experiments import digits_torch
from tests.resources import tracking_flows as tf
from tests.tracking_fixtures import artifact_paths, only_run, runs_of


@pytest.fixture(scope="module")
def sealed_cluster(cluster):
    """The module's 2 workers, with sqlite3.connect refused on them."""
    cluster.client.register_plugin(tf.NoSQLite())
    reports = cluster.client.run(tf.worker_store_report)
    assert len(reports) == 2 and not any(r["can_connect"] for r in reports.values())
    yield cluster
    cluster.client.unregister_worker_plugin(tf.NoSQLite.name)


def _assert_workers_never_touched_the_store(cluster):
    for worker, report in cluster.client.run(tf.worker_store_report).items():
        assert report["sqlite_attempts"] == [], worker
        assert not any(m.startswith("mlflow.store") for m in report["mlflow_modules"]), (worker, report)
        assert report["mlflow_modules"] == [], (worker, report["mlflow_modules"][:5])


def test_metrics_and_artifacts_from_workers_without_sqlite(sealed_cluster, store, tmp_path):
    tf.concurrent(points=300)
    tf.kinds(str(tmp_path / "out"), big=2 << 20)
    run = only_run(store, "concurrent")
    assert run.info.status == "FINISHED"
    assert len(store.client.get_metric_history(run.info.run_id, "loss")) == tf.N_TASKS * 300
    kinds = only_run(store, "kinds")
    assert kinds.data.params["task_param"] == "7"
    assert {"data/big.bin", "plots/curve.png", "docs/report/sub/b.txt"} <= set(artifact_paths(store, kinds.info.run_id))
    _assert_workers_never_touched_the_store(sealed_cluster)


def test_sklearn_models_registered_with_versions_and_alias(sealed_cluster, store, store_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scores = [tf.sklearn_model(seed) for seed in (0, 1)]
    # model files are kept with the run's experiment beside the store, not in ./mlruns
    assert not (tmp_path / "mlruns").exists()
    assert len(list((store_dir / "mlartifacts" / "registry" / "models").glob("m-*/artifacts/MLmodel"))) == 2
    assert all(s > 0.8 for s in scores)
    runs = runs_of(store, "registry")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    first_run = next(r for r in runs if r.data.params["seed"] == "0")
    versions = {int(v.version): v for v in store.client.search_model_versions("name='digits-clf'")}
    assert sorted(versions) == [1, 2]
    v1 = versions[1]
    assert v1.run_id == first_run.info.run_id and v1.tags["mlorch.run_id"] == first_run.info.run_id
    assert v1.tags["mlorch.task"] == "fit_sklearn"
    assert first_run.data.tags["mlorch.model.digits-clf.version"] == "1"

    assert mo.set_model_alias("digits-clf", "champion", 1) == 1
    assert mo.set_model_alias("digits-clf", "latest-good") == 2  # None: the newest version
    assert int(store.client.get_model_version_by_alias("digits-clf", "champion").version) == 1

    # mlflow finds the store through MLFLOW_TRACKING_URI, which mlorch must have left in place
    info = mlflow.models.get_model_info("models:/digits-clf@champion")
    assert info.signature is not None and info.signature.inputs.to_dict()[0]["type"] == "tensor"
    model = mlflow.pyfunc.load_model("models:/digits-clf@champion")
    from sklearn.datasets import load_digits

    X = load_digits().data[:20] / 16.0
    assert model.predict(X).shape == (20,)
    _assert_workers_never_touched_the_store(sealed_cluster)


def test_torch_model_registered_and_loadable(sealed_cluster, store):
    result = digits_torch.pipeline(epochs=2, hidden=32)
    assert result["val_accuracy"] > 0.7
    run = only_run(store, "digits-torch")
    rid = run.info.run_id
    assert len(store.client.get_metric_history(rid, "val_loss")) == 2
    assert len(store.client.get_metric_history(rid, "train_loss")) == 2 * len(range(0, 1437, 64))
    (version,) = store.client.search_model_versions(f"name='{digits_torch.MODEL_NAME}'")
    assert version.run_id == rid and version.tags["mlorch.run_id"] == rid
    assert digits_torch.promote() == int(version.version)
    uri = f"models:/{digits_torch.MODEL_NAME}@champion"
    info = mlflow.models.get_model_info(uri)
    assert "pytorch" in info.flavors and info.signature is not None
    model = mlflow.pytorch.load_model(uri)
    import torch

    out = model(torch.zeros(3, 64))
    assert tuple(out.shape) == (3, 10)
    _assert_workers_never_touched_the_store(sealed_cluster)


def test_flavor_detection_refuses_unknown_models():
    from sklearn.linear_model import LinearRegression
    from torch import nn

    from mlorch.tracking.models import detect_flavor

    assert detect_flavor(LinearRegression()) == "sklearn"
    assert detect_flavor(nn.Linear(2, 2)) == "pytorch"
    with pytest.raises(TypeError, match="cannot tell the MLflow flavor"):
        detect_flavor(np.zeros(3))
