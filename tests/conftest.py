"""Shared fixtures: a real 2-process LocalCluster with 2 declared GPU slots, and an isolated project folder.

Worker processes are spawned with the parent's ``sys.path``, so task functions
defined in test modules are importable on the workers, as in a user's project.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The MLflow store fixtures (``store``, ``store_dir``) for every test module that asks for them.
pytest_plugins = ["tests.tracking_fixtures"]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes, each pinned to one fake GPU slot (CUDA_VISIBLE_DEVICES=0 / 1)."""
    import mlorch as mo

    with mo.cluster(n_workers=2, gpus=2, dashboard_address=None) as handle:
        yield handle


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """An empty project folder (``MLORCH_HOME``) for this test."""
    home = tmp_path / "project"
    monkeypatch.setenv("MLORCH_HOME", str(home))
    return home


@pytest.fixture
def log(tmp_path, monkeypatch, cluster) -> Path:
    """A file tasks append lines to (``MLORCH_TEST_LOG``), set here and on every worker of ``cluster``."""
    path = tmp_path / "records.jsonl"
    monkeypatch.setenv("MLORCH_TEST_LOG", str(path))
    cluster.client.run(lambda: os.environ.__setitem__("MLORCH_TEST_LOG", str(path)))
    return path


@pytest.fixture
def no_tracking(monkeypatch) -> None:
    """Engine tests that do not look at MLflow skip it (it is tested on its own)."""
    monkeypatch.setenv("MLORCH_TRACKING", "off")


@pytest.fixture
def python() -> str:
    return sys.executable


def pytest_terminal_summary(terminalreporter) -> None:
    """What the property tests tried (tests/test_bad_input.py), in the test output."""
    module = sys.modules.get("tests.test_bad_input")
    for kind, counts in getattr(module, "COUNTS", {}).items():
        line = f"bad input, {kind}: tried {sum(counts.values())} ({counts['accepted']} accepted, {counts['refused']} refused)"
        terminalreporter.write_line(line)
