"""The in-process backend: dask's synchronous scheduler, for ``Flow.graph`` without a cluster.

It is also the debugging path: the same graph, run in this thread, with plain tracebacks.
"""

from __future__ import annotations

from typing import Any

from dask.local import get_sync

from mlorch.core.dask_private import DataNode
from mlorch.core.trace import Trace

__all__ = ["SyncBackend"]


class SyncBackend:
    """Computes keys in the calling thread and remembers their values."""

    def __init__(self) -> None:
        self.done: dict[str, Any] = {}

    def compute(self, trace: Trace, keys: list[str]) -> list[Any]:
        missing = [k for k in keys if k not in self.done]
        if missing:
            needed = trace.ancestors(missing)
            graph = dict(trace.graph(needed))
            for key, value in self.done.items():
                if key in needed:
                    graph[key] = DataNode(key, value)
            values = get_sync(graph, missing)
            self.done.update(zip(missing, values))
        return [self.done[k] for k in keys]
