"""Issue 3, item 7: secrets (``mo.Secret`` or names like *password*/*token*/*key*) never reach
params, tags, logs or artifacts: they show as ``***``, and the raw bytes of the store and the
artifact folder are searched for them."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

import mlorch as mo
from mlorch.tracking.params import param_items
from mlorch.tracking.secrets import set_secret_patterns
from tests.resources import tracking_flows as tf
from tests.tracking_fixtures import artifact_paths, read_artifact, runs_of

TOKEN = "tok-7f3a9c1e55d2"
PASSWORD = "hunter2-horse-battery"
CLOUD_KEY = "AKIAEXAMPLE00XYZ"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


def test_secrets_masked_in_params_tags_logs_artifacts_and_errors(cluster, store, store_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [*sys.argv, f"--token={TOKEN}"])  # even the command line tag
    collect = _Collect()
    logging.getLogger("mlorch.worker").addHandler(collect)
    try:
        out = tf.with_secrets(mo.Secret(TOKEN), PASSWORD, {"aws": {"secret_access_key": CLOUD_KEY, "region": "eu"}})
        with pytest.raises(mo.TaskFailedError):
            tf.with_secrets(mo.Secret(TOKEN), PASSWORD, {"region": "us"}, fail=True)
    finally:
        logging.getLogger("mlorch.worker").removeHandler(collect)
    assert out == "ok"
    ok, failed = sorted(runs_of(store, "secrets"), key=lambda r: r.info.status != "FINISHED")
    assert failed.info.status == "FAILED"
    params, tags = ok.data.params, ok.data.tags
    assert params["token"] == "***" and params["db_password"] == "***"
    assert params["cloud.aws.secret_access_key"] == "***" and params["cloud.aws.region"] == "eu"
    assert params["api_token"] == "***"  # logged by the task on a worker
    assert tags["note"] == "token=*** plain=***"
    assert "***" in tags["mlorch.command"]
    conn = read_artifact(store, ok.info.run_id, "conn.txt", tmp_path / "a").decode()
    assert conn == "connection: user:***@host token=***"
    config = read_artifact(store, ok.info.run_id, "mlorch/config.yaml", tmp_path / "b").decode()
    assert "token: '***'" in config and "secret_access_key: '***'" in config
    assert "***" in failed.data.tags["mlorch.error"]
    assert "mlorch/error.txt" in artifact_paths(store, failed.info.run_id)
    assert any("using token ***" in line for line in collect.lines), collect.lines
    assert any(line.endswith("raw ***") for line in collect.lines), collect.lines
    # nowhere in the store's bytes, nor in any artifact file, nor in the forwarded logs
    everything = (store_dir / "mlflow.db").read_bytes() + _all_bytes(store_dir)
    for secret in (TOKEN, PASSWORD, CLOUD_KEY):
        assert secret.encode() not in everything, secret
        assert not any(secret in line for line in collect.lines)


def test_secret_patterns_are_configurable():
    assert param_items({"mysterious": "abc-123", "password": "pw-123"}) == {"mysterious": "abc-123", "password": "***"}
    set_secret_patterns(["*myster*"])
    try:
        assert param_items({"mysterious": "abc-456", "password": "pw-456"}) == {"mysterious": "***", "password": "pw-456"}
    finally:
        set_secret_patterns(None)
    secret = mo.Secret("value-1234")
    assert str(secret) == "***" and repr(secret) == "Secret('***')" and f"{secret}" == "***"
    assert secret.get() == "value-1234"


@pytest.mark.parametrize("tracking", ["off", "on"])
def test_secrets_never_reach_the_console_of_driver_or_workers(tmp_path, tracking):
    """End to end: a driver script and its LocalCluster's worker processes (which print to the
    driver's stderr). Task logs, distributed's ``Compute Failed`` line and the driver's own
    ``log.exception`` show ``***`` for a flow parameter masked by name (reaching a task under an
    ordinary name), a literal for a secret-named task parameter, a ``mo.Secret``, and a
    ``mo.Secret`` made inside a task from the worker's environment."""
    import os
    import subprocess

    from tests.resources import secret_script as ss

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PYTHONPATH=str(root), MLORCH_TRACKING=tracking, MLORCH_HOME=str(tmp_path / "project"))
    env["WORKER_ONLY_TOKEN"] = worker_only = "wtok-5e6f7a8b9c0d"  # read by a task, wrapped in mo.Secret there
    proc = subprocess.run(
        [sys.executable, str(root / "tests" / "resources" / "secret_script.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "done" in proc.stdout, output[-3000:]
    assert output.count("Compute Failed") == 4  # the worker's report of each failure was printed
    for line in ("[call_service] calling the service with ***", "[login] logging in with ***", "[connect] cannot reach ***"):
        assert line in output  # task logs forwarded, scrubbed
    assert "auth failed for key ***" in output and "wrong password '***'" in output and "refused: ***" in output
    assert "flow by_secret failed" in output and "in connect" in output  # the driver's log.exception, worker frames
    assert "[from_env] got token ***" in output and "token *** expired" in output
    for secret in (ss.API_KEY, ss.PASSWORD, ss.DB_URL, "Pa55w0rd", worker_only):
        assert secret not in output


def test_secret_arguments_are_noted_by_name_inside_config_dicts_and_extra_kwargs():
    from mlorch.tracking.secret_logs import remember_arguments
    from mlorch.tracking.secrets import scrub

    @mo.task
    def use(cfg: dict, api_token: str, n: int = 1, **extra: str) -> None:
        pass

    remember_arguments(use, ({"db": {"password": "pw-in-config-1"}}, "tok-positional-99"), {"client_secret": "cs-extra-kwarg-7"})
    assert scrub("pw-in-config-1 / tok-positional-99 / cs-extra-kwarg-7") == "*** / *** / ***"
    remember_arguments(use, ({"user": "ordinary-user-name"}, None), {"n": 123456789})
    assert scrub("ordinary-user-name 123456789") == "ordinary-user-name 123456789"
