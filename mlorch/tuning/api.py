"""``mo.sweep``: an Optuna study whose trials are flow runs (or objective calls) on the cluster."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlorch.errors import ConfigError
from mlorch.execution.cluster import ClusterHandle, active_cluster, default_cluster
from mlorch.log import get_logger, quieted

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from mlorch.tuning.handle import Sweep
    from mlorch.tuning.plan import Plan

__all__ = ["sweep"]

log = get_logger("mlorch.sweep")


def sweep(
    target: Any,
    *,
    space: Mapping[str, Any] | None = None,
    metric: str | None = None,
    direction: str | None = None,
    metrics: Sequence[str] | None = None,
    directions: Sequence[str] | None = None,
    n_trials: int = 20,
    max_concurrency: int | None = None,
    sampler: Any = None,
    pruner: Any = None,
    seed: int | None = None,
    name: str | None = None,
    resources: Mapping[str, float] | None = None,
    timeout: float | None = None,
    trial_timeout: float | None = None,
    storage: Any = None,
    study: optuna.Study | None = None,
    study_name: str | None = None,
    load_if_exists: bool = True,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] | None = None,
    catch: type[Exception] | Sequence[type[Exception]] | None = None,
    gc_after_trial: bool = False,
    reuse_results: bool = True,
    cluster: ClusterHandle | str | os.PathLike[str] | Mapping[str, Any] | Callable[[], ClusterHandle] | None = None,
    tracking: bool = True,
    wait: bool = True,
    progress: bool = True,
) -> Sweep:
    """Tune ``target`` with Optuna, one trial per free slot of the cluster.

    Args:
        target: an ``@mo.flow`` (the space maps onto its parameters and ``metric`` names
            a key of the dict it returns), or a plain Optuna objective ``f(trial)``
            (its ``trial.suggest_*`` calls work unchanged; it runs on a worker).
        space: ``{"lr": mo.loguniform(1e-4, 1e-1), "depth": mo.intrange(2, 12), ...}``;
            plain values are fixed parameters.
        metric, direction: the value to optimise and ``"minimize"``/``"maximize"``.
        metrics, directions: several values (multi-objective; no pruning).
        n_trials: finished trials (COMPLETE, PRUNED or FAIL) the study should end with,
            counting those of earlier runs of the same sweep.
        max_concurrency: trials in flight; None derives it from the cluster (thread
            slots, and ``resources`` or the flow's task resources over the workers' totals).
        sampler: None or ``"tpe"`` (TPE with constant liar on), ``"random"``, ``"cmaes"``, ``"qmc"``, ``"gp"``,
            ``"nsga2"``, ``"nsga3"``; ``{"name": ..., **options}``; or an Optuna sampler.
        pruner: None (Optuna's default: the median pruner), ``"median"``, ``"successive_halving"``, ``"hyperband"``, ``"percentile"``,
            ``"threshold"``, ``"none"``; a dict with options; or an Optuna pruner. Tasks feed
            it with ``mo.report(value, step)``.
        seed: sampler seed.
        name, study_name: the study name (``study_name`` is Optuna's word for it); the
            same name again resumes the study (``load_if_exists=False`` refuses to).
            Default: the target's qualified name plus a digest of where it is defined,
            the space and the metric, so two targets never share a study.
        resources: what one trial holds, e.g. ``{"GPU": 0.5}`` (an objective's task gets
            it; for flows it sizes concurrency, the tasks' own resources place them).
        timeout: seconds for the whole sweep, as in ``study.optimize``: no trial starts
            after it; running trials finish.
        trial_timeout: seconds one trial may run before it is FAIL.
        storage: None (the project's journal, ``<MLORCH_HOME>/optuna/journal.log``), a
            journal path, a database URL, or an Optuna storage.
        study: an existing ``optuna.Study`` (in memory or in any storage) to optimise: its
            name, storage, sampler, pruner, directions and enqueued trials are used.
        callbacks: ``f(study, frozen_trial)`` after each finished trial, in the driver, as
            ``study.optimize`` calls them (``MaxTrialsCallback``, the Terminator's callback);
            ``study`` is this sweep, so ``study.stop()`` works. A raising callback stops the sweep.
        catch: exception classes that fail a trial and let the sweep go on; any other
            error fails the trial and stops the sweep with that error. None (mlorch's
            default, unlike Optuna's ``()``): every error fails its trial only.
        gc_after_trial: run ``gc.collect()`` in the worker after each objective trial.
        reuse_results: a flow trial with exactly an earlier trial's parameters has the same
            task keys, so results still held are reused (its MLflow run is tagged
            ``mlorch.duplicate_of``); False gives every trial keys of its own (noisy objectives).
        cluster: a cluster handle, a cluster YAML path or mapping (started and closed
            by the sweep; ``mo.sweep`` turns it into a starter, see ``mlorch.app``), or
            None (the active cluster, or a local one).
        tracking: one MLflow parent run for the sweep and a child run per trial.
        wait: False returns a live :class:`Sweep` handle at once.
        progress: draw a ``tqdm.auto`` progress bar.

    Raises:
        ConfigError: a bad argument, before any trial starts (the message names it).
        SweepRunningError: the same sweep (name and storage) is already running in another
            driver; resuming it under that driver's feet would close its running trials.
    """

    from mlorch.tuning.driver import SweepDriver, finished_trials, resume
    from mlorch.tuning.handle import Sweep
    from mlorch.tuning.hooks import open_hooks
    from mlorch.tuning.lease import acquire
    from mlorch.tuning.plan import make_plan
    from mlorch.tuning.storage import open_storage

    plan = make_plan(
        target,
        space=space,
        metric=metric,
        direction=direction,
        metrics=metrics,
        directions=directions,
        n_trials=n_trials,
        max_concurrency=max_concurrency,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        name=name,
        resources=resources,
        timeout=timeout,
        storage=storage,
        tracking=tracking,
        trial_timeout=trial_timeout,
        callbacks=callbacks,
        catch=catch,
        load_if_exists=load_if_exists,
        gc_after_trial=gc_after_trial,
        study=study,
        study_name=study_name,
        reuse_results=reuse_results,
    )
    storage_obj, spec = open_storage(plan.storage)
    lease = acquire(spec, plan.name)  # before anything else: a second driver must not touch the study
    try:
        handle, owned = _cluster(cluster)
    except BaseException:
        _release(lease)
        raise
    try:
        study = _open_study(plan, storage_obj)
        stored = [d.name.lower() for d in study.directions]
        if stored != plan.directions:
            raise ConfigError(
                f"direction: study '{plan.name}' already exists with direction(s) {stored}, not {plan.directions}; "
                "use another name= for a different sweep"
            )
        hooks = open_hooks(plan.tracking)
        driver = SweepDriver(plan, handle, study, spec, hooks)
        hooks.sweep_started(
            study=study, experiment=plan.experiment, summary=plan.summary, metrics=plan.metrics, kind=plan.kind, cluster=handle
        )
        resume(study, hooks)
    except BaseException:
        _release(lease)
        if owned:
            handle.close()
        raise

    def finish(error: BaseException | None) -> None:
        try:
            status = "FINISHED" if error is None else ("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
            hooks.sweep_finished(study=study, status=status)
        finally:
            _release(lease)
            if owned:
                handle.close()

    result = Sweep(plan, study, driver, finish)
    driver.on_finish = result._on_trial
    try:
        initial = len(finished_trials(study))
    except BaseException as exc:
        finish(exc)  # releases the lock and an owned cluster
        raise
    return result._start(wait, progress, initial)


def _open_study(plan: Plan, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Create the study, or load it and say so (with what it holds): resuming is the default."""
    import optuna

    names = optuna.get_all_study_names(storage) if not plan.load_if_exists else []
    if plan.name in names:
        raise ConfigError(
            f"load_if_exists: study '{plan.name}' already exists in this storage and load_if_exists=False; "
            "give another name= or load_if_exists=True to resume it"
        )
    with quieted("optuna"):  # mlorch says itself whether the study is new or reused
        study = optuna.create_study(
            study_name=plan.name,
            storage=storage,
            sampler=plan.sampler,
            pruner=plan.pruner,
            directions=[optuna.study.StudyDirection[d.upper()] for d in plan.directions],
            load_if_exists=True,
        )
    trials = study.get_trials(deepcopy=False)
    if trials:
        counts = Counter(t.state.name.lower() for t in trials)
        detail = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        log.info("reusing study '%s': %d trials (%s); n_trials=%d counts them", plan.name, len(trials), detail, plan.n_trials)
        if len([t for t in trials if t.state.is_finished()]) >= plan.n_trials:
            log.warning(
                "sweep '%s': the study already has %d finished trials >= n_trials=%d: no trial will run "
                "(mlorch's n_trials is the study's total, so a rerun resumes; raise n_trials to run more)",
                plan.name,
                len([t for t in trials if t.state.is_finished()]),
                plan.n_trials,
            )
    return study


def _release(lease: Any) -> None:
    if lease is not None:
        lease.release()


def _cluster(cluster: Any) -> tuple[ClusterHandle, bool]:
    """The sweep's cluster and whether the sweep owns it (a starter's cluster is closed with the sweep)."""
    if isinstance(cluster, ClusterHandle):
        return cluster, False
    if cluster is None:
        handle = active_cluster()
        return (handle, False) if handle is not None else (default_cluster(), False)
    if callable(cluster):
        return cluster(), True
    raise ConfigError(
        f"cluster: expected a cluster handle, a cluster YAML path or mapping (through mo.sweep), got {type(cluster).__name__}"
    )
