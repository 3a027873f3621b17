"""Bad input gets a clear mlorch error naming what is wrong, before anything runs."""

from __future__ import annotations

import threading

import pytest

import mlorch as mo
from tests.resources import engine_flows as ef

pytestmark = pytest.mark.usefixtures("no_tracking")


@mo.task
def takes_lock(lock: object) -> int:
    return 1


@mo.flow
def lock_flow() -> int:
    return takes_lock(threading.Lock())


@mo.flow
def wrong_call() -> int:
    return ef.add(1, 2, 3)


def test_non_serializable_argument_names_task_and_argument():
    with pytest.raises(mo.SerializationError, match=r"task 'takes_lock': positional argument 0 of type lock cannot be pickled"):
        lock_flow.graph()


def test_wrong_arguments_name_the_task_and_its_signature():
    with pytest.raises(
        mo.TaskArgumentError, match=r"task 'add\(x: int, y: int\) -> int' cannot be called with \(int, int, int\)"
    ):
        wrong_call.graph()
    with pytest.raises(mo.TaskArgumentError, match="flow 'outer"):
        ef.outer.graph(1, 2)


def test_flow_cycle_is_reported_with_its_path():
    with pytest.raises(mo.FlowCycleError, match="flow cycle: ping -> pong -> ping"):
        ef.ping.graph()


def test_branching_on_a_ref_without_result_is_explained():
    @mo.flow
    def bad() -> int:
        value = ef.square(2)
        if value:  # forgot .result()
            return 1
        return 0

    with pytest.raises(TypeError, match=r"use `square_result.result\(\)` to branch"):
        bad.graph()


def test_map_over_iterables_of_different_lengths():
    @mo.flow
    def bad() -> list:
        return ef.add.map([1, 2], [1, 2, 3])

    with pytest.raises(mo.FlowDefinitionError, match=r"add.map\(\): the iterables have different lengths \[2, 3\]"):
        bad.graph()


def test_invalid_resource_request_fails_at_definition():
    with pytest.raises(mo.FlowDefinitionError, match="resources must map names to positive numbers"):
        mo.task(resources={"GPU": -1})(lambda: None)


def test_cache_version_changes_the_task_identity():
    def f() -> int:
        return 1

    assert mo.task(cache_version=1)(f).token != mo.task(cache_version=2)(f).token
    assert mo.task(cache_version=1)(f).token == mo.task(cache_version=1)(f).token


def test_results_hidden_in_other_containers_are_refused_clearly():
    from collections import OrderedDict

    @mo.flow
    def bad() -> int:
        return ef.total(OrderedDict(a=ef.square(2)))

    with pytest.raises(mo.FlowDefinitionError, match="argument 0 is a OrderedDict holding task results"):
        bad.graph()


@mo.task
def make_lock() -> object:
    return threading.Lock()


@mo.flow
def returns_lock() -> object:
    return make_lock()


def test_an_unpicklable_result_names_the_task_and_its_type(cluster):
    with pytest.raises(mo.SerializationError, match=r"task 'make_lock' returned a lock, which cannot be pickled"):
        returns_lock()


def test_task_errors_from_the_users_script_keep_their_class(tmp_path):
    """``python script.py``: classes of the script's ``__main__`` come back as themselves."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "MLORCH_TRACKING": "off", "MLORCH_HOME": str(tmp_path)}
    script = root / "tests" / "resources" / "error_script.py"
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = {r["case"]: r for r in map(json.loads, proc.stdout.splitlines())}

    mine = got["mine"]  # a plain class of the script: the caller's own class, chained, with the worker's traceback
    assert mine["error"] == "TaskFailedError" and mine["is_my_error"] and mine["cause_str"] == "bad input 3"
    assert mine["chained"] and "in raise_mine" in mine["traceback"] and "MyError: bad input 3" in mine["traceback"]

    pair = got["pair"]  # its __init__ cannot take its own args back: rebuilt by name in the caller
    assert pair["is_pair_error"] and pair["cause_str"] == "left/right"

    ghost = got["unimportable"]  # neither picklable nor importable here: a stand-in keeping name and message
    assert ghost["cause_class"] == "mlorch.errors.RemoteTaskError"
    assert ghost["type_name"] == "no_such_module_xyz.GhostError"
    assert ghost["cause_str"].startswith("GhostError: boo") and "in raise_unimportable" in ghost["traceback"]
