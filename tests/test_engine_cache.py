"""cache=True persists results under the project folder; code edits invalidate only what they touch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

PIPELINE = """
import os
import mlorch as mo

def record(name):
    with open(os.environ["MLORCH_TEST_LOG"], "a") as fh:
        fh.write(name + "\\n")

@mo.task(cache=True)
def load(n: int) -> list:
    record("load")
    return list(range(n))

@mo.task(cache=True{prep_version})
def prepare(xs: list) -> list:
    record("prepare")
    return [x * {factor} for x in xs]

@mo.task(cache=True)
def score(xs: list) -> int:
    record("score")
    return sum(xs)

@mo.task
def report(value: int) -> str:
    record("report")
    return f"score={{value}}"

@mo.flow
def pipeline(n: int = 5) -> str:
    return report(score(prepare(load(n))))
"""


@pytest.fixture
def workspace(tmp_path):
    (tmp_path / "cluster.yaml").write_text("kind: local\nn_workers: 2\ngpus: 0\ndashboard_address: null\n")
    return tmp_path


def _write(workspace, factor=2, prep_version=""):
    (workspace / "pipe.py").write_text(textwrap.dedent(PIPELINE.format(factor=factor, prep_version=prep_version)))


def _run(workspace, n=5):
    log = workspace / "log.txt"
    log.write_text("")
    env = {**os.environ, "MLORCH_HOME": str(workspace / "project"), "MLORCH_TEST_LOG": str(log), "MLORCH_TRACKING": "off"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlorch",
            "run",
            "pipe.py:pipeline",
            "--set",
            f"n={n}",
            "--no-progress",
            "--cluster",
            "cluster.yaml",
        ],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout, sorted(log.read_text().split())


@pytest.mark.slow
def test_cache_survives_processes_and_code_edits_invalidate_downstream_only(workspace):
    _write(workspace)
    stdout, ran = _run(workspace)
    assert '"score=20"' in stdout
    assert ran == ["load", "prepare", "report", "score"]

    stdout, ran = _run(workspace)  # a new process: cached tasks are skipped, uncached ones run
    assert '"score=20"' in stdout
    assert ran == ["report"]

    _write(workspace, factor=3)  # edit prepare's code: prepare and everything after it re-run
    stdout, ran = _run(workspace)
    assert '"score=30"' in stdout
    assert ran == ["prepare", "report", "score"]

    stdout, ran = _run(workspace, n=4)  # new inputs: new keys all the way down
    assert '"score=18"' in stdout
    assert ran == ["load", "prepare", "report", "score"]

    _write(workspace, factor=3, prep_version=", cache_version=2")  # bump the version: same code, new key
    stdout, ran = _run(workspace)
    assert ran == ["prepare", "report", "score"]
    assert list((workspace / "project" / "cache").glob("*.pkl"))  # results live under the project folder
