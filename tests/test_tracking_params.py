"""How flow parameters become MLflow params (flattened, described, truncated, never rejected),
and which store a process writes to."""

from __future__ import annotations

import numpy as np

from mlorch.tracking.params import MAX_KEY, MAX_PARAM, MAX_TAG, param_items, tag_items


def test_nested_long_and_odd_values_become_valid_params():
    long_key = "k" * 300
    items = param_items(
        {
            "model": {"opt": {"lr": 0.1, "betas": (0.9, 0.99)}, "empty": {}},
            "X": np.zeros((100, 64), dtype=np.float32),
            "text": "z" * 7000,
            long_key: 1,
            "fn": len,
            "none": None,
        }
    )
    assert items["model.opt.lr"] == "0.1" and items["model.opt.betas"] == "[0.9, 0.99]"
    assert items["model.empty"] == "{}"
    assert items["X"] == "<ndarray shape=(100, 64) dtype=float32>"
    assert len(items["text"]) == MAX_PARAM and items["text"].endswith("...[truncated]")
    assert items["fn"] == "len" and items["none"] == "None"
    (cut,) = [k for k in items if k.startswith("kkk")]
    assert len(cut) == MAX_KEY and cut != long_key[:MAX_KEY]  # cut with a digest, so two long keys stay apart
    assert all(len(v) <= MAX_PARAM for v in items.values())


def test_tags_use_the_longer_tag_limit():
    tags = tag_items({"note": "n" * 9000, "mlflow.source.name": "script.py"})
    assert len(tags["note"]) == MAX_TAG and tags["mlflow.source.name"] == "script.py"


def test_store_location_precedence(tmp_path, monkeypatch):
    from mlorch.tracking.store import configure, resolve_uri

    monkeypatch.setenv("MLORCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_uri() == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    configure("http://127.0.0.1:5999")
    try:
        assert resolve_uri() == "http://127.0.0.1:5999"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/elsewhere.db")
        assert resolve_uri() == "sqlite:////tmp/elsewhere.db"  # the environment wins over configure()
        assert resolve_uri("http://127.0.0.1:6000") == "http://127.0.0.1:6000"  # an argument wins over both
        assert resolve_uri(str(tmp_path / "store")) == f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    finally:
        configure(None)
