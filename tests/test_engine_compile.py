"""Flows compile to genuine Dask graphs with content-addressed keys, and run on a real cluster."""

from __future__ import annotations

import json
import subprocess
import sys

import dask
import pytest
from dask.highlevelgraph import HighLevelGraph

from tests.resources import engine_flows as ef

pytestmark = pytest.mark.usefixtures("no_tracking")


def test_outside_a_flow_a_task_is_the_plain_function():
    assert ef.square(5) == 25
    assert ef.square.map([1, 2, 3]) == [1, 4, 9]


def test_graph_is_a_dask_highlevelgraph_with_readable_content_addressed_keys():
    graph = ef.outer.graph(3)
    assert isinstance(graph, HighLevelGraph)
    names = sorted(key.rsplit("-", 1)[0] for key in graph)
    assert names == ["add", "square", "square"]
    # The graph is runnable by dask itself, without mlorch's runner.
    assert dask.compute(*graph.to_delayed(), scheduler="sync") == (9 + 16,)


def test_keys_are_equal_across_calls_and_processes_and_change_with_inputs():
    here = sorted(ef.outer.graph(3))
    assert here == sorted(ef.outer.graph(3))
    assert set(here) != set(ef.outer.graph(4))
    code = "import json, mlorch; from tests.resources import engine_flows as ef; print(json.dumps(sorted(ef.outer.graph(3))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == here


def test_same_task_same_inputs_share_one_key_and_node():
    graph = ef.dynamic_fanout.graph(4)  # branches: runs make_list/square/total in-process to learn the shape
    square_keys = [k for k in graph if k.startswith("square-")]
    assert len(square_keys) == 4
    again = ef.dynamic_fanout.graph(4)
    assert set(graph) == set(again)


def test_flow_runs_on_cluster_and_returns_concrete_values(cluster):
    assert ef.outer(3) == 25
    assert ef.outer(x=1) == 1 + 4


def test_intermediate_results_stay_on_the_workers(cluster):
    # big_intermediate returns an object that cannot be unpickled outside a worker:
    # the run only succeeds if it never travels to the caller.
    assert ef.stays_on_workers(11) == 11
    with pytest.raises(ValueError):
        ef.WorkerOnly(1).__reduce__()[0](1)  # the guard is real: it fails here, in the caller


def test_dynamic_fanout_over_runtime_output_then_branch(cluster, log):
    big = ef.dynamic_fanout(4)
    assert big == {"branch": "big", "sum": 14, "double": 28}
    small = ef.dynamic_fanout(2)
    assert small == {"branch": "small", "sum": 1}
    runs = log.read_text().splitlines()
    # make_list ran once per run although .result() and the final submission both needed it.
    assert runs.count("make_list 4") == 1 and runs.count("make_list 2") == 1
    assert sorted(r for r in runs if r.startswith("square")) == sorted(
        ["square 0", "square 1", "square 2", "square 3", "square 0", "square 1"]
    )


def test_nested_flows_are_inlined_into_one_graph(cluster):
    assert ef.outer(2) == 4 + 9
    assert len(ef.outer.graph(2)) == 3  # inner's tasks joined outer's graph


def test_tasks_whose_result_is_unused_still_run(cluster, log):
    assert ef.with_side_effect() == 4
    assert "side_effect ran" in log.read_text().splitlines()


def test_results_inside_a_namedtuple_become_graph_edges(cluster):
    assert ef.namedtuple_flow(2) == 4 + 9
    keys = sorted(ef.namedtuple_flow.graph(2))
    assert [k.rsplit("-", 1)[0] for k in keys] == ["pair_sum", "square", "square"]
    assert keys == sorted(ef.namedtuple_flow.graph(2))  # deterministic, Refs inside hashed by key
