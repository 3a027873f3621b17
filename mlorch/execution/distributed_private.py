"""The parts of distributed mlorch uses that are not public API, wrapped once.

Checked against distributed 2026.8.0 (and dask-jobqueue 0.9.0, whose clusters are
``SpecCluster`` subclasses). ``SpecCluster.scale(n)`` rewrites ``worker_spec`` from one
template; mlorch needs workers of several specs (one per GPU device) and jobs replaced
under fresh names, so it edits ``worker_spec`` itself (a public attribute) and then asks
the cluster to make the running workers match it, which only ``_correct_state`` does.
``tests/test_private_apis.py`` fails if it moves.
"""

from __future__ import annotations

from typing import Any

from distributed.deploy.spec import SpecCluster

__all__ = ["apply_worker_spec", "apply_worker_spec_async"]


def apply_worker_spec(cluster: SpecCluster) -> None:
    """Start and stop workers until they match ``cluster.worker_spec`` (from outside the cluster's loop)."""
    cluster.sync(cluster._correct_state)


async def apply_worker_spec_async(cluster: SpecCluster | Any) -> None:
    """The same, on the cluster's own event loop."""
    await cluster._correct_state()
