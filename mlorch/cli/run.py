"""``mlorch run file.py:flow --set k=v --cluster cluster.yaml``: one flow run, with progress."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from mlorch.errors import ConfigError
from mlorch.tracking import enabled as tracking_enabled
from mlorch.tracking.store import check_tracking_uri

__all__ = ["add_parser", "main"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run a flow once", description="Run a flow once on a cluster.")
    p.add_argument("target", help="path/to/file.py:flow_name")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", help="flow parameter")
    p.add_argument("--cluster", help="cluster YAML (default: a local cluster)")
    p.add_argument("--tracking-uri", help="MLflow store for this run (default: MLFLOW_TRACKING_URI, else the project's)")
    p.add_argument("--no-tracking", action="store_true", help="do not record the run in MLflow")
    p.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")


def main(args: argparse.Namespace) -> int:
    import mlorch as mo
    from mlorch.cli.targets import load_target, parse_overrides
    from mlorch.execution.runner import run_flow

    if args.tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    if args.no_tracking:
        os.environ["MLORCH_TRACKING"] = "off"
    flow = load_target(args.target)
    if not isinstance(flow, mo.Flow):
        raise ConfigError(f"target {args.target!r} is a {type(flow).__name__}, not an @mo.flow")
    params = parse_overrides(args.overrides)
    for key, value in params.items():
        problem = flow.parameter_problem(key) or flow.value_problem(key, value)
        if problem:
            raise ConfigError(f"--set {key}: {problem}")
    if tracking_enabled(getattr(flow, "tracking", True)):
        check_tracking_uri()  # a bad store fails here, before the cluster starts
    with mo.cluster(args.cluster) as handle:
        result = run_flow(flow, (), params, cluster=handle, progress=not args.no_progress)
    print(json.dumps(result, default=repr, indent=2))
    return 0
