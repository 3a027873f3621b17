"""Composition root: turns configuration into running parts (clusters now; tracking, sweeps later)."""

from __future__ import annotations

import os
from typing import Any, Mapping

from mlorch.config import load_cluster_config
from mlorch.execution.cluster import PROVIDERS, ClusterHandle

__all__ = ["cluster"]


def cluster(config: str | os.PathLike[str] | Mapping[str, Any] | None = None, **options: Any) -> ClusterHandle:
    """Start (or connect to) a cluster and make it the one flows run on until closed.

    ``config`` is a YAML path (``configs/cluster/local.yaml``) or a mapping; keyword
    options override its fields (``mo.cluster(n_workers=2, gpus=2)``). Use it as a
    context manager, or call ``.close()``.
    """
    cfg = load_cluster_config(config, **options)
    fields = cfg.model_dump(exclude={"kind"})
    return PROVIDERS[cfg.kind](**fields)
