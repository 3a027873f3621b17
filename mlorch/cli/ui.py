"""``mlorch ui``: the MLflow web UI on this project's store, on 127.0.0.1.

Runs ``python -m mlflow server`` in its own process group (it forks uvicorn
workers) with one worker, no job runner and telemetry off, prints the URL once the
server answers, and on Ctrl-C (or SIGTERM) stops the whole group. A small watchdog
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
from pathlib import Path
from typing import Any

from mlorch.errors import MlorchError

__all__ = ["add_parser", "main", "server_command"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("ui", help="open the MLflow UI on this project's runs",
                       description="Start the MLflow UI on the project's tracking store (127.0.0.1 by default).")
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
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", "1",
           "--backend-store-uri", uri]
    if uri.startswith("sqlite:///"):
        root = Path(uri[len("sqlite:///"):]).parent / "mlartifacts"
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


# The watchdog: waits for its parent (``mlorch ui``) to go, however it goes, then stops the
# server's process group (SIGTERM, SIGKILL after 10 s). It ignores Ctrl-C, which a terminal
# sends to ``mlorch ui``'s whole group: ``mlorch ui`` stops the server itself then.
_WATCHDOG = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
parent, group = int(sys.argv[1]), int(sys.argv[2])
while os.getppid() == parent:
    time.sleep(0.5)
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
    return subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(server.pid)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def main(args: argparse.Namespace) -> int:
    from mlorch.tracking.store import RunStore

    store = RunStore.open(args.tracking_uri)  # creates the database once, here, not in the server
    uri = store.tracking_uri
    if uri.startswith(("http://", "https://")):
        raise MlorchError(f"the tracking store is already a server ({uri}); open that URL instead")
    port = args.port or _free_port(args.host)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(server_command(uri, args.host, port), env=env, start_new_session=True)
    watchdog = _watchdog(proc)
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        url = f"http://{args.host}:{port}"
        _wait_ready(url, proc, args.timeout)
        print(f"MLflow UI for {uri}: {url}  (Ctrl-C to stop)", flush=True)
        proc.wait()
        return int(proc.returncode or 0)
    except KeyboardInterrupt:
        print("mlorch ui: stopping", flush=True)
        return 0
    finally:
        _stop(proc)
        watchdog.terminate()
        watchdog.wait()
        signal.signal(signal.SIGTERM, previous)
