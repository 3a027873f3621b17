"""``mo.sweep``: an Optuna study whose trials are flow runs (or objective calls) on the cluster."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlorch.errors import ConfigError
from mlorch.execution.cluster import ClusterHandle, active_cluster, default_cluster

if TYPE_CHECKING:
    from mlorch.tuning.handle import Sweep

__all__ = ["sweep"]


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
    sampler: Any = "tpe",
    pruner: Any = "none",
    seed: int | None = None,
    name: str | None = None,
    resources: Mapping[str, float] | None = None,
    timeout: float | None = None,
    storage: Any = None,
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
        sampler: ``"tpe"`` (constant liar on), ``"random"``, ``"cmaes"``, ``"qmc"``, ``"gp"``,
            ``"nsga2"``, ``"nsga3"``; ``{"name": ..., **options}``; or an Optuna sampler.
        pruner: ``"median"``, ``"successive_halving"``, ``"hyperband"``, ``"percentile"``,
            ``"threshold"``, ``"none"``; a dict with options; or an Optuna pruner. Tasks feed
            it with ``mo.report(value, step)``.
        seed: sampler seed.
        name: the study name; the same name again resumes the study. Default: the
            target's name plus a digest of the space and metric.
        resources: what one trial holds, e.g. ``{"GPU": 0.5}`` (an objective's task gets
            it; for flows it sizes concurrency, the tasks' own resources place them).
        timeout: seconds a trial may run before it is FAIL.
        storage: None (the project's journal, ``<MLORCH_HOME>/optuna/journal.log``), a
            journal path, a database URL, or an Optuna storage.
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
    import optuna  # here, not at module level: ``import mlorch`` stays light

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
    )
    storage_obj, spec = open_storage(plan.storage)
    if plan.kind == "objective" and spec[0] == "object":
        raise ConfigError(
            "storage: a plain Optuna objective runs on the workers, which reopen the study; "
            "give a journal file path or a database URL (or None for the project journal)"
        )
    lease = acquire(spec, plan.name)  # before anything else: a second driver must not touch the study
    try:
        handle, owned = _cluster(cluster)
    except BaseException:
        _release(lease)
        raise
    try:
        study = optuna.create_study(
            study_name=plan.name,
            storage=storage_obj,
            sampler=plan.sampler,
            pruner=plan.pruner,
            directions=[optuna.study.StudyDirection[d.upper()] for d in plan.directions],
            load_if_exists=True,
        )
        stored = [d.name.lower() for d in study.directions]
        if stored != plan.directions:
            raise ConfigError(
                f"direction: study '{plan.name}' already exists with direction(s) {stored}, not {plan.directions}; "
                "use another name= for a different sweep"
            )
        hooks = open_hooks(plan.tracking)
        driver = SweepDriver(plan, handle, study, spec, hooks)
        hooks.sweep_started(study=study, experiment=plan.experiment, summary=plan.summary, metrics=plan.metrics, kind=plan.kind)
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
