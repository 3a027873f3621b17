"""Batched run writes (``mlorch.tracking.bulk``): what they put in a real SQLite store reads back
through ``MlflowClient`` exactly as runs written through MLflow's public API do."""

from __future__ import annotations

import logging
import math

import pytest
from mlflow.entities import Metric, Param, RunTag

from mlorch.tracking.bulk import open_bulk


@pytest.fixture
def bulk(store):
    writer = open_bulk(store.client)
    assert writer is not None, "a SQLite store must get batched writes"
    yield writer
    writer.close()


def _view(run):
    """What a user sees of a run, without what differs between any two runs (ids, times)."""
    tags = {k: v for k, v in run.data.tags.items() if k not in ("mlflow.runName",)}
    return {
        "status": run.info.status,
        "lifecycle": run.info.lifecycle_stage,
        "tags": tags,
        "params": run.data.params,
        "metrics": run.data.metrics,
        "ended": run.info.end_time is not None,
        "artifacts": run.info.artifact_uri.replace(run.info.run_id, "<id>"),
        "user": run.info.user_id,
    }


def _history(client, run_id, key):
    return sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key))


def test_a_batched_run_reads_back_like_one_written_through_mlflow(store, bulk):
    client = store.client
    exp = store.experiment_id("bulk-same")
    points = [("loss", 0.5, 1000, 0), ("loss", 0.25, 1001, 1), ("loss", 0.75, 900, 1), ("acc", 0.9, 1000, 3)]
    tags = {"optuna.trial_number": "3", "kind": "trial"}
    params = {"lr": "0.01", "depth": "4"}

    public = client.create_run(exp, run_name="same", tags=tags).info.run_id
    client.log_batch(
        public,
        metrics=[Metric(*p) for p in points],
        params=[Param(k, v) for k, v in params.items()],
        tags=[RunTag("optuna.state", "COMPLETE")],
    )
    client.set_terminated(public, "FINISHED")

    batched = bulk.start_run(exp, "same", tags)
    bulk.end_run(batched, "FINISHED", metrics=points, params=params, tags={"optuna.state": "COMPLETE"})
    assert bulk.wait()

    a, b = client.get_run(public), client.get_run(batched)
    assert b.info.run_name == "same" and b.data.tags["mlflow.runName"] == "same"
    assert _view(a) == _view(b)
    assert b.data.metrics == {"loss": 0.25, "acc": 0.9}  # the latest point: highest step, then timestamp
    for key in ("loss", "acc"):
        assert _history(client, public, key) == _history(client, batched, key)
    found = client.search_runs([exp], "metrics.loss < 0.3 and params.lr = '0.01' and tags.kind = 'trial'")
    assert {r.info.run_id for r in found} == {public, batched}


def test_a_run_written_across_batches_keeps_one_value_per_tag_and_the_first_param(store, bulk):
    client = store.client
    exp = store.experiment_id("bulk-batches")
    run_id = bulk.start_run(exp, "across", {"optuna.state": "RUNNING"})
    assert bulk.wait()
    assert client.get_run(run_id).info.status == "RUNNING"  # visible while it runs

    bulk.log(run_id, metrics=[("loss", 1.0, 10, 0), ("loss", 0.5, 11, 1)], params={"lr": "0.1"})
    assert bulk.wait()
    bulk.log(run_id, metrics=[("loss", 9.0, 5, 0)])  # an older step: history grows, latest stays
    bulk.end_run(
        run_id,
        "FAILED",
        metrics=[("loss", 0.25, 12, 2)],
        params={"lr": "0.1"},
        tags={"optuna.state": "FAIL", "mlorch.error": "boom"},
    )
    assert bulk.wait()

    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.info.end_time >= run.info.start_time
    assert run.data.tags["optuna.state"] == "FAIL" and run.data.tags["mlorch.error"] == "boom"
    assert run.data.params == {"lr": "0.1"}
    assert run.data.metrics == {"loss": 0.25}
    assert [v for _, _, v in _history(client, run_id, "loss")] == [9.0, 1.0, 0.5, 0.25]  # by step, then time


def test_nan_and_infinite_values_are_stored_as_mlflow_stores_them(store, bulk):
    client = store.client
    exp = store.experiment_id("bulk-special")
    run_id = bulk.start_run(exp, "special", {})
    bulk.end_run(
        run_id, "FINISHED", metrics=[("nan", float("nan"), 1, 0), ("inf", float("inf"), 1, 0), ("ninf", float("-inf"), 1, 0)]
    )
    assert bulk.wait()
    metrics = client.get_run(run_id).data.metrics
    assert math.isnan(metrics["nan"])
    assert metrics["inf"] == 1.7976931348623157e308 and metrics["ninf"] == -1.7976931348623157e308


def test_one_bad_run_does_not_cost_the_others_of_its_batch(store, bulk, caplog):
    client = store.client
    exp = store.experiment_id("bulk-bad")
    good = bulk.start_run(exp, "good", {})
    bad = bulk.start_run(exp, "bad", {})
    bulk.end_run(good, "FINISHED", metrics=[("loss", 1.0, 1, 0)], params={"x": "1"})
    with caplog.at_level(logging.ERROR, logger="mlorch.tracking"):
        bulk.end_run(bad, "FINISHED", metrics=[("loss!", 2.0, 1, 0)], params={"x": "2"})  # a name MLflow refuses
        assert bulk.wait()
    assert client.get_run(good).data.params == {"x": "1"} and client.get_run(good).info.status == "FINISHED"
    run = client.get_run(bad)  # it exists and ended; MLflow's own error says what was refused
    assert (run.info.run_name, run.info.status, run.data.params) == ("bad", "FINISHED", {"x": "2"})
    assert any(bad in r.getMessage() and "loss!" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_long_values_are_truncated_as_mlflow_truncates_them(store, bulk):
    run_id = bulk.start_run(store.experiment_id("bulk-long"), "long", {"note": "n" * 9000})
    bulk.end_run(run_id, "FINISHED", params={"x": "y" * 9000})
    assert bulk.wait()
    run = store.client.get_run(run_id)
    assert run.data.params["x"] == "y" * 6000 and run.data.tags["note"] == "n" * 8000


def test_a_failed_batch_is_written_run_by_run(store, bulk, caplog):
    """The same point logged twice (a primary-key clash in SQL) fails the batch; every run still lands."""
    client = store.client
    exp = store.experiment_id("bulk-clash")
    first = bulk.start_run(exp, "first", {})
    bulk.log(first, metrics=[("loss", 1.0, 7, 0)])
    assert bulk.wait()
    other = bulk.start_run(exp, "other", {"k": "v"})
    bulk.end_run(other, "FINISHED", metrics=[("loss", 3.0, 7, 0)], params={"p": "1"})
    with caplog.at_level(logging.WARNING, logger="mlorch.tracking"):
        bulk.end_run(first, "FINISHED", metrics=[("loss", 1.0, 7, 0), ("loss", 0.5, 8, 1)])
        assert bulk.wait()
    assert any("one by one" in r.getMessage() for r in caplog.records)
    assert [v for _, _, v in _history(client, first, "loss")] == [1.0, 0.5]
    assert client.get_run(first).info.status == "FINISHED"
    run = client.get_run(other)
    assert (run.info.status, run.data.params, run.data.tags["k"], run.data.metrics) == (
        "FINISHED",
        {"p": "1"},
        "v",
        {"loss": 3.0},
    )


def test_a_store_behind_a_server_is_not_written_in_bulk():
    from mlflow import MlflowClient

    assert open_bulk(MlflowClient("http://127.0.0.1:9")) is None  # nothing is contacted to decide


def test_params_keep_their_first_value_with_a_warning(store, bulk, caplog):
    run_id = bulk.start_run(store.experiment_id("bulk-params"), "params", {})
    with caplog.at_level(logging.WARNING, logger="mlorch.tracking"):
        bulk.log(run_id, params={"lr": "1"})
        bulk.log(run_id, params={"lr": "2"})  # same batch
        assert bulk.wait()
        bulk.end_run(run_id, "FINISHED", params={"lr": "3", "depth": "4"})  # a later batch
        assert bulk.wait()
    assert store.client.get_run(run_id).data.params == {"lr": "1", "depth": "4"}
    refused = [r.getMessage() for r in caplog.records if "param 'lr' is already '1'" in r.getMessage()]
    assert len(refused) == 2 and "'2'" in refused[0] and "'3'" in refused[1]


def test_an_end_for_a_run_missing_from_the_store_does_not_fail_the_others(store, bulk, caplog):
    exp = store.experiment_id("bulk-missing")
    ended = bulk.start_run(exp, "ended-later", {})
    assert bulk.wait()
    store.client.delete_run(ended)
    bulk._batches.sql._hard_delete_run(ended)  # gone from the database, as after a manual clean-up
    other = bulk.start_run(exp, "other", {})
    assert bulk.wait()
    with caplog.at_level(logging.WARNING, logger="mlorch.tracking"):
        bulk.end_run(ended, "FINISHED")
        bulk.end_run(other, "FAILED")
        assert bulk.wait()
    assert store.client.get_run(other).info.status == "FAILED"
    assert not [r for r in caplog.records if "one by one" in r.getMessage()]  # the batch itself went through


def test_writes_after_close_are_made_by_their_caller(store, bulk):
    """At interpreter exit the writer thread is closed while a ``wait=False`` sweep may still end runs."""
    exp = store.experiment_id("bulk-closed")
    run_id = bulk.start_run(exp, "late", {})
    bulk.close()
    bulk.end_run(run_id, "KILLED", metrics=[("loss", 1.0, 1, 0)])
    assert store.client.get_run(run_id).info.status == "KILLED"  # written by end_run itself, no wait()
    assert store.client.get_run(run_id).data.metrics == {"loss": 1.0}
    late = bulk.start_run(exp, "later", {})
    assert store.client.get_run(late).info.status == "RUNNING"
    assert bulk.wait()


def test_writes_from_many_threads_land_in_order(store, bulk):
    """Each thread starts a run, waits for it, logs and ends it: every run ends with every point."""
    import threading

    exp = store.experiment_id("bulk-threads")
    ids: list[str] = []
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            write(i)
        except BaseException as exc:  # an assertion in a thread must fail the test
            errors.append(exc)

    def write(i: int) -> None:
        run_id = bulk.start_run(exp, f"t{i}", {})
        ids.append(run_id)
        assert bulk.wait()
        assert store.client.get_run(run_id).info.status == "RUNNING"  # wait() means written
        for step in range(20):
            bulk.log(run_id, metrics=[("loss", float(step), 1000 + step, step)])
        bulk.end_run(run_id, "FINISHED", params={"i": str(i)})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads[:4]:
        t.start()
    bulk.close()  # half the threads queue into the running writer, half write inline after close
    for t in threads[4:]:
        t.start()
    for t in threads:
        t.join()
    assert not errors and bulk.wait() and len(ids) == 8
    for run_id in ids:
        run = store.client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.metrics == {"loss": 19.0}
        assert len(store.client.get_metric_history(run_id, "loss")) == 20


def test_a_long_sweeps_runs_are_committed_by_the_writer_process_and_by_the_driver_when_it_stops(store, monkeypatch, caplog):
    """Past PROCESS_AFTER_RUNS the SQL work moves to a child; killed, the driver writes again; no run is lost."""
    import os
    import signal
    import time

    import psutil

    from mlorch.tracking import bulk as bulk_module

    monkeypatch.setattr(bulk_module, "PROCESS_AFTER_RUNS", 5)
    writer = open_bulk(store.client, store.tracking_uri)
    assert writer is not None and writer._process is not None
    exp = store.experiment_id("bulk-process")
    ids = []
    try:

        def batch(n: int) -> None:
            for _ in range(n):
                run_id = writer.start_run(exp, f"r{len(ids)}", {"k": str(len(ids))})
                writer.end_run(run_id, "FINISHED", metrics=[("loss", float(len(ids)), 1000, 0)], params={"i": str(len(ids))})
                ids.append(run_id)
            assert writer.wait()

        batch(8)  # past the threshold: the child starts (the batch itself is written here meanwhile)
        deadline = time.monotonic() + 60
        while writer._process.state != "ready" and time.monotonic() < deadline:
            batch(1)
            time.sleep(0.2)
        assert writer._process.state == "ready"
        child = psutil.Process(writer._process._process.pid)
        assert child.ppid() == os.getpid()
        in_driver = []
        driver_write = writer._batches.write
        monkeypatch.setattr(writer._batches, "write", lambda b: (in_driver.append(len(b)), driver_write(b)))
        batch(10)
        assert in_driver == []  # committed by the child; the driver's writer thread only waited for it
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        with caplog.at_level(logging.WARNING, logger="mlorch.tracking"):
            batch(10)
        assert writer._process.state == "broken" and sum(in_driver) == 10
        assert any("run writer process stopped" in r.getMessage() for r in caplog.records)
    finally:
        writer.close()
    runs = {r.info.run_id: r for r in store.client.search_runs([exp], max_results=1000)}
    assert set(runs) == set(ids)
    for i, run_id in enumerate(ids):
        run = runs[run_id]
        assert (run.info.status, run.data.params, run.data.tags["k"], run.data.metrics) == (
            "FINISHED",
            {"i": str(i)},
            str(i),
            {"loss": float(i)},
        )
