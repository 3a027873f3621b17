"""Run as ``python secret_script.py``: tasks that leak secrets into errors and logs.

The test reads everything this driver and its workers print (worker processes share
the driver's stderr) and looks for the plain values.
"""

from __future__ import annotations

import logging
import os

import mlorch as mo

API_KEY = "sk-live-4f9a8b7c6d5e"  # a flow parameter, masked by its name
PASSWORD = "hunter2-literal-pw"  # a literal given to a secret-named task parameter
DB_URL = "postgres://admin:Pa55w0rd@db"  # a mo.Secret
log = logging.getLogger("myapp")


@mo.task
def call_service(k: str) -> int:  # an ordinary name: only the flow knows it is secret
    log.warning("calling the service with %s", k)
    raise ValueError(f"auth failed for key {k}")


@mo.task
def login(password: str) -> int:
    log.warning("logging in with %s", password)
    raise PermissionError(f"wrong password {password!r}")


@mo.task
def connect(db: mo.Secret) -> int:
    log.error("cannot reach %s", db.get())
    raise ConnectionError(f"refused: {db.get()}")


@mo.task
def from_env() -> int:  # a secret only the worker ever sees
    token = mo.Secret(os.environ["WORKER_ONLY_TOKEN"])
    log.warning("got token %s", token.get())
    raise RuntimeError(f"token {token.get()} expired")


@mo.flow
def worker_only() -> int:
    return from_env()


@mo.flow
def by_flow_name(api_key: str) -> int:
    return call_service(api_key)


@mo.flow
def by_task_name() -> int:
    return login(password=PASSWORD)


@mo.flow
def by_secret(db: mo.Secret) -> int:
    return connect(db)


if __name__ == "__main__":
    logging.basicConfig(format="driver-log %(levelname)s %(message)s")  # the user's own console logging
    with mo.cluster(n_workers=2, gpus=0, dashboard_address=None):
        for flow, args in ((by_flow_name, (API_KEY,)), (by_task_name, ()), (by_secret, (mo.Secret(DB_URL),)), (worker_only, ())):
            try:
                flow(*args)
            except mo.TaskFailedError:
                logging.getLogger("driver").exception("flow %s failed", flow.name)
    print("done", flush=True)
