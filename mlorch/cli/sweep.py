"""``mlorch sweep configs/sweeps/<name>.yaml``: an Optuna sweep from a validated YAML file."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from mlorch.errors import ConfigError
from mlorch.names import ERROR_ATTR

__all__ = ["add_parser", "main"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("sweep", help="run (or resume) an Optuna sweep", description="Run or resume a sweep from YAML.")
    p.add_argument("config", help="sweep YAML, e.g. configs/sweeps/digits.yaml")
    p.add_argument("--n-trials", type=int, help="override n_trials")
    p.add_argument("--cluster", help="override the cluster YAML")
    p.add_argument("--name", help="override the study name")
    p.add_argument("--tracking-uri", help="MLflow store (overrides the YAML's tracking_uri and MLFLOW_TRACKING_URI)")
    p.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")


def load_sweep(path: str) -> tuple[Any, dict[str, Any]]:
    """The target and ``mo.sweep`` keyword arguments described by the YAML file at ``path``."""
    from mlorch.cli.targets import load_target
    from mlorch.config.load import load_yaml, validate
    from mlorch.config.sweep import SweepConfig
    from mlorch.tuning.space import space_from_config

    cfg = validate(SweepConfig, load_yaml(path), path)
    space = space_from_config(cfg.space, path)
    target = load_target(cfg.target)
    options = cfg.model_dump(exclude={"target", "space", "cluster", "tracking_uri"})
    options["tracking_uri"] = cfg.tracking_uri
    options["space"] = space or None
    options["cluster"] = _cluster(cfg.cluster, Path(path))
    return target, options


def _cluster(value: Any, config: Path) -> Any:
    """A cluster YAML path relative to the working directory, else to the sweep file."""
    if isinstance(value, str) and not Path(value).exists() and (config.parent / value).exists():
        return str(config.parent / value)
    return value


def main(args: argparse.Namespace) -> int:
    from optuna.trial import TrialState

    import mlorch as mo

    target, options = load_sweep(args.config)
    tracking_uri = options.pop("tracking_uri")
    tracking_uri = args.tracking_uri or tracking_uri
    if tracking_uri:  # this process is the sweep's only MLflow writer: pointing it is enough
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    if args.n_trials is not None:
        options["n_trials"] = args.n_trials
    if args.cluster:
        options["cluster"] = args.cluster
    if args.name:
        options["name"] = args.name
    try:  # mo.sweep checks everything before it starts the cluster
        study = mo.sweep(target, progress=not args.no_progress, **options)
    except ConfigError as exc:
        if str(exc).startswith(args.config):
            raise
        raise ConfigError(f"{args.config}: {exc}") from None
    summary: dict[str, Any] = {"study": study.name, "finished_trials": study.n_finished}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete and len(study.plan.directions) == 1:
        summary.update(best_value=study.best_value, best_params=study.best_params, best_run_id=study.best_run_id)
    elif complete:
        summary["pareto_front"] = [{"values": t.values, "params": t.params} for t in study.best_trials]
    print(json.dumps(summary, default=repr, indent=2))
    if not complete:
        failed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.FAIL]
        reason = failed[-1].user_attrs.get(ERROR_ATTR, "") if failed else ""
        print(
            f"mlorch: sweep '{study.name}' has no successful trial" + (f"; last error: {reason}" if reason else ""),
            file=sys.stderr,
        )
        return 1
    return 0
