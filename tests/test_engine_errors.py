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
