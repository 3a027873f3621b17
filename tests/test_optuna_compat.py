"""Optuna programs moved to mlorch by changing one call: each runs with ``study.optimize`` and with
``mo.sweep`` on a real 2-worker cluster and real storages, and the two studies must agree.

Where sampling would differ between the two (a worker samples with its own copy of the
sampler), the trials' parameters are enqueued, so states, values and pruning decisions
can be compared exactly.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time

import optuna
import pytest
from optuna.trial import TrialState

import mlorch as mo
from tests.conftest import ROOT
from tests.resources import optuna_programs as op
from tests.tracking_fixtures import children

XS = [3.0, -4.0, 2.5, 9.0, 0.5, 7.0, 2.0, -1.0]


def journal(tmp_path, name: str = "journal.log") -> optuna.storages.JournalStorage:
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / name)))


def enqueued(study: optuna.Study, xs: list[float]) -> optuna.Study:
    for x in xs:
        study.enqueue_trial({"x": x})
    return study


def states(study: optuna.Study) -> list[tuple[str, float | None, dict]]:
    return [(t.state.name, t.value, t.params) for t in study.get_trials(deepcopy=False)]


def test_a_sweep_is_an_optuna_study_with_mlorchs_extras(cluster, store, project):
    sweep = mo.sweep(op.quadratic, n_trials=4, seed=1, cluster=cluster, progress=False)
    assert isinstance(sweep, optuna.Study)
    assert len(sweep.trials) == 4 and len(sweep.get_trials(states=(TrialState.COMPLETE,))) == 4
    assert sweep.best_trial.value == min(t.value for t in sweep.trials)
    assert sweep.best_params == sweep.best_trial.params and sweep.direction == optuna.study.StudyDirection.MINIMIZE
    assert sweep.trials_dataframe().shape[0] == 4
    run = store.client.get_run(sweep.best_run_id)
    assert run.data.tags["optuna.trial_number"] == str(sweep.best_trial.number)
    assert store.client.get_run(sweep.parent_run_id).info.status == "FINISHED"
    import pickle

    copy = pickle.loads(pickle.dumps(sweep))  # joblib.dump(study, ...) as with Optuna: a plain study comes back
    assert type(copy) is optuna.Study and [t.value for t in copy.trials] == [t.value for t in sweep.trials]

    started = time.monotonic()
    later = mo.sweep(op.quadratic, n_trials=3, cluster=cluster, progress=False, wait=False, study_name="later")
    assert time.monotonic() - started < 5 and isinstance(later, optuna.Study)
    assert later.result(timeout=120) is later and len(later.trials) == 3


def test_enqueued_trials_and_the_default_pruner_give_what_study_optimize_gives(cluster, project, tmp_path):
    plain = enqueued(optuna.create_study(), XS)
    plain.optimize(op.curve, n_trials=len(XS))

    study = enqueued(optuna.create_study(study_name="curve", storage=journal(tmp_path)), XS)
    swept = mo.sweep(op.curve, study=study, n_trials=len(XS), max_concurrency=1, cluster=cluster, progress=False)
    assert isinstance(swept.pruner, optuna.pruners.MedianPruner)  # Optuna's default, as create_study has it
    assert states(swept) == states(plain)
    assert [t.params["x"] for t in swept.trials] == XS  # the enqueued parameters, in order
    assert {t.state for t in swept.trials} == {TrialState.COMPLETE, TrialState.PRUNED}
    assert [t.intermediate_values for t in swept.trials] == [t.intermediate_values for t in plain.trials]


def test_callbacks_are_called_as_optuna_calls_them_and_can_stop_the_sweep(cluster, project, tmp_path):
    seen: list[tuple[bool, int, str]] = []

    def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        seen.append((isinstance(study, optuna.Study), trial.number, trial.state.name))

    stop_at_3 = optuna.study.MaxTrialsCallback(3, states=(TrialState.COMPLETE,))
    plain = enqueued(optuna.create_study(), XS)
    plain_seen: list[tuple[bool, int, str]] = []
    plain.optimize(
        op.quadratic, n_trials=8, callbacks=[stop_at_3, lambda s, t: plain_seen.append((True, t.number, t.state.name))]
    )

    study = enqueued(optuna.create_study(study_name="cb", storage=journal(tmp_path)), XS)
    swept = mo.sweep(
        op.quadratic, study=study, n_trials=8, max_concurrency=1, callbacks=[stop_at_3, record], cluster=cluster, progress=False
    )
    assert seen == plain_seen and len(seen) == 3
    # Three ran, the other enqueued trials are still WAITING in both (y is sampled: compare x).
    assert [(t.state, t.params.get("x")) for t in swept.trials] == [(t.state, t.params.get("x")) for t in plain.trials]


def test_a_failing_callback_stops_the_sweep_with_its_error(cluster, project):
    def broken(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        raise RuntimeError("callback broke")

    with pytest.raises(RuntimeError, match="callback broke"):
        mo.sweep(op.quadratic, n_trials=5, max_concurrency=1, callbacks=[broken], cluster=cluster, progress=False)


def test_multi_objective_plain_objective_with_directions_only(cluster, project, tmp_path):
    xs = [0.5, 1.5, 2.5, 4.0]  # inside the objective's range [0, 5]
    plain = enqueued(optuna.create_study(directions=["minimize", "minimize"]), xs)
    plain.optimize(op.two_goals, n_trials=4)
    study = enqueued(optuna.create_study(study_name="two", storage=journal(tmp_path), directions=["minimize", "minimize"]), xs)
    swept = mo.sweep(op.two_goals, study=study, n_trials=4, cluster=cluster, progress=False)
    assert sorted(t.values for t in swept.trials) == sorted(t.values for t in plain.trials)
    assert {t.number for t in swept.best_trials} == {t.number for t in plain.best_trials}
    fresh = mo.sweep(op.two_goals, directions=["minimize", "maximize"], n_trials=2, cluster=cluster, progress=False)
    assert [d.name for d in fresh.directions] == ["MINIMIZE", "MAXIMIZE"]


def test_catch_keeps_going_on_listed_errors_and_stops_on_others(cluster, project, tmp_path):
    xs = [1.0, -2.0, 3.0, 9.0, 4.0]
    plain = enqueued(optuna.create_study(), xs)
    with pytest.raises(KeyError):
        plain.optimize(op.picky, n_trials=5, catch=(ValueError,))
    study = enqueued(optuna.create_study(study_name="picky", storage=journal(tmp_path)), xs)
    with pytest.raises(KeyError):
        mo.sweep(op.picky, study=study, n_trials=5, max_concurrency=1, catch=(ValueError,), cluster=cluster, progress=False)
    assert [t.state for t in study.trials] == [t.state for t in plain.trials]  # the failing trial is FAIL in both
    # Without catch=, mlorch keeps going on every error (a cluster sweep should not die on one trial).
    study2 = enqueued(optuna.create_study(study_name="picky2", storage=journal(tmp_path)), xs)
    swept = mo.sweep(op.picky, study=study2, n_trials=5, max_concurrency=1, cluster=cluster, progress=False)
    assert [t.state.name for t in swept.trials] == ["COMPLETE", "FAIL", "COMPLETE", "FAIL", "COMPLETE"]


def test_timeout_is_for_the_whole_sweep_and_trial_timeout_for_one_trial(cluster, project, tmp_path):
    started = time.monotonic()
    study = optuna.create_study(study_name="clock", storage=journal(tmp_path))
    for _ in range(40):
        study.enqueue_trial({"seconds": 0.5})
    swept = mo.sweep(op.sleeper, study=study, n_trials=40, timeout=2.0, cluster=cluster, progress=False)
    finished = [t for t in swept.trials if t.state.is_finished()]
    assert 2 <= len(finished) < 40 and time.monotonic() - started < 30  # stopped starting trials after 2 s
    assert all(t.state == TrialState.COMPLETE for t in finished)  # running trials were let finish

    study = optuna.create_study(study_name="one-slow", storage=journal(tmp_path))
    study.enqueue_trial({"seconds": 0.1})
    study.enqueue_trial({"seconds": 8.0})
    swept = mo.sweep(op.sleeper, study=study, n_trials=2, trial_timeout=2.0, max_concurrency=1, cluster=cluster, progress=False)
    assert [t.state.name for t in swept.trials] == ["COMPLETE", "FAIL"]
    assert "timeout" in swept.trials[1].user_attrs["mlorch.error"]


def test_optuna_arguments_mlorch_cannot_honour_are_refused_by_name(cluster, project):
    with pytest.raises(mo.ConfigError, match="study_name.*name"):
        mo.sweep(op.quadratic, n_trials=1, name="a", study_name="b", cluster=cluster, progress=False)
    with pytest.raises(mo.ConfigError, match="sampler: .*study="):
        mo.sweep(op.quadratic, study=optuna.create_study(), sampler="random", n_trials=1, cluster=cluster, progress=False)
    with pytest.raises(mo.ConfigError, match="seed: given with study="):
        mo.sweep(op.quadratic, study=optuna.create_study(), seed=3, n_trials=1, cluster=cluster, progress=False)
    with pytest.raises(mo.ConfigError, match="^study_name: given with study="):
        mo.sweep(op.quadratic, study=optuna.create_study(study_name="a"), study_name="b", n_trials=1, cluster=cluster)
    with pytest.raises(mo.ConfigError, match="catch: "):
        mo.sweep(op.quadratic, catch=("ValueError",), n_trials=1, cluster=cluster, progress=False)
    with pytest.raises(mo.ConfigError, match=r"callbacks\[0\]: expected a callable"):
        mo.sweep(op.quadratic, callbacks=[1], n_trials=1, cluster=cluster, progress=False)
    mo.sweep(op.quadratic, n_trials=1, study_name="exists", cluster=cluster, progress=False)
    with pytest.raises(mo.ConfigError, match="load_if_exists"):
        mo.sweep(op.quadratic, n_trials=2, study_name="exists", load_if_exists=False, cluster=cluster, progress=False)


def test_default_study_names_are_unique_to_the_target(cluster, project, tmp_path):
    import io
    import logging

    from tests.resources import sweep_flows as sf

    console = io.StringIO()
    handler = logging.StreamHandler(console)
    logging.getLogger("mlorch.sweep").addHandler(handler)

    first = mo.sweep(sf.objective, n_trials=2, cluster=cluster, progress=False)
    # Another function, also called "objective", in another module: its own study.
    second = mo.sweep(op.__dict__["quadratic"], n_trials=2, cluster=cluster, progress=False)
    assert first.study_name != second.study_name
    assert "sweep_flows" in first.study_name or first.study_name.startswith("objective-")
    try:
        again = mo.sweep(sf.objective, n_trials=3, cluster=cluster, progress=False)
    finally:
        logging.getLogger("mlorch.sweep").removeHandler(handler)
    assert again.study_name == first.study_name and len(again.trials) == 3
    assert f"reusing study '{first.study_name}': 2 trials (2 complete)" in console.getvalue()


def test_resuming_refreshes_the_parent_runs_summary(cluster, store, project, tmp_path):
    storage = journal(tmp_path)
    study = enqueued(optuna.create_study(study_name="resume", storage=storage), [5.0, 6.0])
    first = mo.sweep(op.quadratic, study=study, n_trials=2, cluster=cluster, progress=False)
    parent = first.parent_run_id
    first_best = store.client.get_run(parent).data.metrics["best_objective"]
    enqueued(study, [2.0])
    again = mo.sweep(op.quadratic, study=study, n_trials=3, cluster=cluster, progress=False)
    assert again.parent_run_id == parent
    run = store.client.get_run(parent)
    assert run.data.metrics["best_objective"] == again.best_value < first_best
    assert float(run.data.tags["best.x"]) == 2.0 and run.data.tags["best_trial"] == str(again.best_trial.number)
    assert run.data.metrics["trials_complete"] == 3


def test_user_attributes_and_constraints_reach_the_trials_runs(cluster, store, project, tmp_path):
    study = optuna.create_study(
        study_name="constrained",
        storage=journal(tmp_path),
        sampler=optuna.samplers.TPESampler(constraints_func=op.constraints_of, seed=0),
    )
    swept = mo.sweep(op.constrained, study=study, n_trials=3, cluster=cluster, progress=False)
    runs = {r.info.run_id: r for r in children(store, swept.parent_run_id)}
    for trial in swept.trials:
        tags = runs[trial.user_attrs["mlflow_run_id"]].data.tags
        assert tags["optuna.user_attr.note"] == f'{{"kind": "quadratic", "x": {round(trial.params["x"], 3)}}}'
        assert math.isclose(float(tags["optuna.user_attr.constraint"].strip("[]")), trial.user_attrs["constraint"][0])
        assert tags["optuna.feasible"] == str(trial.user_attrs["constraint"][0] <= 0).lower()


QUICK_START = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    import optuna
    import mlorch as mo

    def objective(trial):
        x = trial.suggest_float("x", -10, 10)
        for step in range(4):
            trial.report((x - 2) ** 2 + 1.0 / (step + 1), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return (x - 2) ** 2

    study = mo.sweep(objective, n_trials=12, cluster={{"n_workers": 2, "dashboard_address": None}}, progress=False)
    print("BEST", study.best_params["x"], len(study.trials))
    print("PRUNED", len([t for t in study.trials if t.state.name == "PRUNED"]))
    """
)


def test_a_script_shaped_like_optunas_quick_start_runs_without_a_main_guard(tmp_path, project):
    """No ``if __name__ == "__main__":``; pruned trials log no ERROR and no traceback."""
    script = tmp_path / "quick.py"
    script.write_text(QUICK_START.format(root=str(ROOT)))
    env = {"MLORCH_HOME": str(project), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MLORCH_TRACKING": "off"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("BEST") == 1  # the script's body ran once, not again in the workers
    assert " 12" in proc.stdout.split("BEST")[1]
    assert "ERROR" not in proc.stderr and "Traceback" not in proc.stderr and "Compute Failed" not in proc.stderr
    pruned = int(proc.stdout.split("PRUNED")[1].split()[0])
    assert proc.stderr.count(" pruned at step ") == pruned  # one INFO line per pruned trial


@pytest.mark.parametrize("reuse", [True, False])
def test_a_trial_repeating_an_earlier_ones_parameters_says_so_and_reuse_can_be_off(reuse, cluster, store, log, project, tmp_path):
    from tests.resources import sweep_flows as sf

    study = optuna.create_study(study_name=f"dup-{reuse}", storage=journal(tmp_path))
    for _ in range(2):
        study.enqueue_trial({"lr": 0.01, "depth": 3})
    swept = mo.sweep(
        sf.pipeline,
        study=study,
        space={"lr": mo.loguniform(1e-4, 1e-1), "depth": mo.intrange(2, 12)},
        metric="val_loss",
        n_trials=2,
        max_concurrency=1,
        reuse_results=reuse,
        cluster=cluster,
        progress=False,
    )
    first, second = swept.trials
    assert second.user_attrs["mlorch.duplicate_of"] == first.number and "mlorch.duplicate_of" not in first.user_attrs
    run = store.client.get_run(second.user_attrs["mlflow_run_id"])
    assert run.data.tags["mlorch.duplicate_of"] == str(first.number)
    assert len(sf.records(log, "train")) == (1 if reuse else 2)  # the same keys reuse the result; a salt runs it again
    assert second.value == first.value


def test_gc_after_trial_collects_on_the_worker_after_each_objective(cluster, project, tmp_path):
    import gc

    def full_collections() -> int:
        return gc.get_stats()[2]["collections"]  # gc.collect() is a generation-2 collection

    def delta(**options) -> int:
        before = sum(cluster.client.run(full_collections).values())
        mo.sweep(op.quadratic, n_trials=4, max_concurrency=1, cluster=cluster, progress=False, **options)
        return sum(cluster.client.run(full_collections).values()) - before

    without = delta(study_name="no-gc")
    assert delta(study_name="gc", gc_after_trial=True) >= without + 4  # one more per trial


def test_a_plain_objective_sweeps_an_in_memory_study(cluster, project):
    """The driver answers the trials, so a study the workers could never reopen works (as in Optuna)."""
    study = enqueued(optuna.create_study(), XS[:3])
    swept = mo.sweep(op.quadratic, study=study, n_trials=3, cluster=cluster, progress=False)
    assert [t.params["x"] for t in study.trials] == XS[:3] and all(t.state == TrialState.COMPLETE for t in study.trials)
    assert swept.best_value == study.best_value


def test_the_terminators_callback_stops_the_sweep_where_it_stops_optimize(cluster, project, tmp_path):
    import warnings

    from optuna.terminator import BestValueStagnationEvaluator, StaticErrorEvaluator, Terminator, TerminatorCallback

    def callback() -> TerminatorCallback:
        terminator = Terminator(
            improvement_evaluator=BestValueStagnationEvaluator(max_stagnation_trials=2),
            error_evaluator=StaticErrorEvaluator(0),
            min_n_trials=2,
        )
        return TerminatorCallback(terminator)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        plain, study = optuna.create_study(), optuna.create_study(study_name="terminated", storage=journal(tmp_path))
        for x in XS:  # every parameter enqueued: both studies see the same values, so the same stagnation
            plain.enqueue_trial({"x": x, "y": 1})
            study.enqueue_trial({"x": x, "y": 1})
        plain.optimize(op.quadratic, n_trials=len(XS), callbacks=[callback()])
        swept = mo.sweep(
            op.quadratic,
            study=study,
            n_trials=len(XS),
            max_concurrency=1,
            callbacks=[callback()],
            cluster=cluster,
            progress=False,
        )
    finished = [t.number for t in swept.trials if t.state.is_finished()]
    assert finished == [t.number for t in plain.trials if t.state.is_finished()] and len(finished) < len(XS)
