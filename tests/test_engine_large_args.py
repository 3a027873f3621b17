"""A large argument used by several tasks travels to the cluster once and is reused there."""

from __future__ import annotations

import pytest

from mlorch.core.trace import LARGE_ARGUMENT_BYTES
from tests.resources import large_flows as lf

pytestmark = pytest.mark.usefixtures("no_tracking")

SIZE = 8 * LARGE_ARGUMENT_BYTES


def _loads_per_worker(cluster) -> dict[str, int]:
    return cluster.client.run(lf.loads)


def test_a_large_argument_is_unpickled_at_most_once_per_worker(cluster):
    cluster.client.run(lf.reset)
    lf.reset()
    payload = lf.Payload(b"x" * SIZE)
    assert lf.use_many(payload, 6) == [SIZE + i for i in range(6)]
    loads = _loads_per_worker(cluster)
    # Six tasks on two workers: one copy scattered to a worker, at most one fetch by the other.
    # (Embedded in every task, it was unpickled once per task.)
    assert 1 <= sum(loads.values()) <= 2 and max(loads.values()) == 1, loads
    # Nor did it reach the scheduler (this process) inside the graph: the only loads here are
    # dask.tokenize's determinism check (two, once per run: the token is reused for every key).
    assert lf.loads() <= 2


def test_one_argument_nested_twice_is_still_one_node(cluster):
    cluster.client.run(lf.reset)
    payload = lf.Payload(b"y" * SIZE)
    assert lf.use_nested(payload, 3) == [2 * SIZE + i for i in range(3)]
    loads = _loads_per_worker(cluster)
    assert 1 <= sum(loads.values()) <= 2 and max(loads.values()) == 1, loads


def test_the_graph_holds_a_large_argument_once():
    graph = lf.use_many.graph(lf.Payload(b"z" * SIZE), 3)
    arguments = [k for k in graph if str(k).startswith("argument-")]
    assert len(arguments) == 1
    tasks = [k for k in graph if str(k).startswith("measure-")]
    assert len(tasks) == 3 and all(arguments[0] in graph[k].dependencies for k in tasks)


def test_small_arguments_stay_inline():
    graph = lf.use_many.graph(lf.Payload(b"s" * 100), 2)
    assert [k for k in graph if str(k).startswith("argument-")] == []


def test_a_sweep_passes_a_large_fixed_parameter_to_every_trial(cluster, project):
    import mlorch as mo

    data = b"d" * SIZE
    study = mo.sweep(
        lf.fit,
        space={"data": data, "x": mo.uniform(0.0, 1.0)},
        metric="loss",
        direction="minimize",
        n_trials=4,
        seed=0,
        name="large-fixed",
        cluster=cluster,
        tracking=False,
        progress=False,
    )
    values = [t.value for t in study.study.trials]
    assert len(values) == 4 and all(v is not None for v in values)
    assert study.best_value == min(values)


def test_a_sweeps_large_fixed_parameter_travels_once_for_all_its_trials(cluster, project):
    import mlorch as mo

    cluster.client.run(lf.reset)
    lf.reset()
    payload = lf.Payload(b"p" * SIZE)
    study = mo.sweep(
        lf.fit_payload,
        space={"payload": payload, "x": mo.uniform(0.0, 1.0)},
        metric="loss",
        n_trials=6,
        max_concurrency=2,
        name="large-once",
        cluster=cluster,
        tracking=False,
        progress=False,
    )
    assert len([t for t in study.trials if t.value is not None]) == 6
    loads = _loads_per_worker(cluster)
    # Six trials on two workers: scattered once, held in the sweep's pool, at most one copy per worker.
    assert 1 <= sum(loads.values()) <= 2 and max(loads.values()) == 1, loads
    # Nor did any trial's graph carry it to the scheduler (this process): the only loads here are
    # dask.tokenize's determinism check, two per trial (each trial traces its own run).
    assert lf.loads() <= 2 * 6, lf.loads()
