"""``mlorch ui``: the MLflow web UI on this project's store, on 127.0.0.1.

Runs ``python -m mlflow server`` in its own process group (it forks uvicorn
workers) with one worker, no job runner and telemetry off, prints the URL once the
server answers, and on Ctrl-C (SIGTERM, SIGHUP) stops the whole group. A small watchdog
process stops the group too if ``mlorch ui`` itself is SIGKILLed, so no server is
left listening on the port.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

from mlorch.environment import QUIET_ENV
from mlorch.errors import MlorchError
from mlorch.uris import sqlite_path

__all__ = ["add_parser", "main", "server_command"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "ui",
        help="open the MLflow UI on this project's runs",
        description="Start the MLflow UI on the project's tracking store (127.0.0.1 by default).",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000; 0 picks a free one)")
    p.add_argument("--tracking-uri", help="store to show (default: MLFLOW_TRACKING_URI, else the project's)")
    p.add_argument("--timeout", type=float, default=90, help="seconds to wait for the server to answer")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def server_command(uri: str, host: str, port: int) -> list[str]:
    """The ``mlflow server`` command line for store ``uri``."""
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        uri,
    ]
    database = sqlite_path(uri)
    if database is not None:
        root = database.parent / "mlartifacts"
        cmd += ["--artifacts-destination", str(root)]
    return cmd


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MlorchError(f"mlflow server exited with code {proc.returncode} before it answered")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise MlorchError(f"mlflow server did not answer at {url} within {timeout:.0f} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


# The watchdog: in a session of its own (no terminal signal reaches it), it blocks on
# reading a pipe only ``mlorch ui`` writes to. End of input means ``mlorch ui`` is gone,
# however it went (SIGKILL, a closed terminal), and it stops the server's process group:
# SIGTERM, then SIGKILL after 10 s.
_WATCHDOG = """
import os, signal, sys, time
group = int(sys.argv[1])
sys.stdin.read()
for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 0.0)):
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        break
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            sys.exit(0)
        time.sleep(0.2)
"""


def _watchdog(server: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(server.pid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )


def main(args: argparse.Namespace) -> int:
    from mlorch.tracking.store import RunStore
    from mlorch.tracking.ui_view import runs_url

    store = RunStore.open(args.tracking_uri)  # creates the database once, here, not in the server
    uri = store.tracking_uri
    if uri.startswith(("http://", "https://")):
        raise MlorchError(f"the tracking store is already a server ({uri}); open that URL instead")
    port = args.port or _free_port(args.host)
    env = {
        **os.environ,
        **QUIET_ENV,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    proc = subprocess.Popen(server_command(uri, args.host, port), env=env, start_new_session=True)
    watchdog = _watchdog(proc)
    stop = lambda *_: (_ for _ in ()).throw(KeyboardInterrupt())  # noqa: E731
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        url = f"http://{args.host}:{port}"
        _wait_ready(url, proc, args.timeout)
        print(f"MLflow UI for {uri}: {url}  (Ctrl-C to stop)", flush=True)
        print(f"  runs of the latest experiment, training view: {runs_url(url, store.client)}", flush=True)
        proc.wait()
        return int(proc.returncode or 0)
    except KeyboardInterrupt:
        print("mlorch ui: stopping", flush=True)
        return 0
    finally:
        _stop(proc)
        watchdog.terminate()
        watchdog.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
