"""dask's task-spec classes, which the trace builds graphs from, wrapped once.

Checked against dask 2026.8.0. dask's graphs are made of ``dask._task_spec`` nodes
(``Task``, ``TaskRef``, ``Alias``, ``DataNode``, their base ``GraphNode``); the module is private in name but it is
what ``dask.delayed`` and distributed build and accept, and no public module exports it.
``tests/test_private_apis.py`` fails if it moves.
"""

from __future__ import annotations

from dask._task_spec import Alias, DataNode, GraphNode, Task, TaskRef, parse_input

__all__ = ["Alias", "DataNode", "GraphNode", "Task", "TaskRef", "parse_input"]
