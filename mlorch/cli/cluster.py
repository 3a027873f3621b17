"""``mlorch cluster script configs/cluster/slurm.yaml``: the job script a batch cluster would submit."""

from __future__ import annotations

import argparse
from typing import Any

from mlorch.errors import ConfigError

__all__ = ["add_parser", "main"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("cluster", help="inspect a cluster config", description="Inspect a cluster config.")
    actions = p.add_subparsers(dest="action", required=True)
    script = actions.add_parser("script", help="print the job script a batch cluster (slurm, pbs, ...) would submit")
    script.add_argument("config", help="cluster YAML, e.g. configs/cluster/slurm.yaml")


def main(args: argparse.Namespace) -> int:
    from mlorch.app import jobqueue_spec
    from mlorch.config import load_cluster_config
    from mlorch.config.schema import JobqueueClusterConfig
    from mlorch.execution.jobqueue import job_script

    cfg = load_cluster_config(args.config)
    if not isinstance(cfg, JobqueueClusterConfig):
        raise ConfigError(
            f"{args.config}: kind '{cfg.kind}' submits no job script (batch kinds: slurm, pbs, sge, lsf, htcondor, oar)"
        )
    print(job_script(jobqueue_spec(cfg, args.config)), end="")
    return 0
