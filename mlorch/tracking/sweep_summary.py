"""The summary of a sweep on its parent run: counts, the best trial, Optuna's plots, the trials table,
and the registry alias ``best`` on the best trial's model.

Plots are drawn with matplotlib (no browser, no plotly) while the child runs are still
being written, by a :func:`plotter` chosen when the sweep starts: a short sweep's in this
process, its imports warmed by a thread while trials run; a long sweep's in a child process
(:class:`PlotsInChild`), so the imports (about a second of CPU: scikit-learn comes with
``optuna.importance``) and the drawing do not take the driver's GIL from its trials.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
import warnings
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from mlorch.execution.children import exit_with_parent, spawn_child, stop_child
from mlorch.names import BEST_MODEL_TAG, BEST_TAG_PREFIX, RUN_ATTR
from mlorch.tracking.models import register_version
from mlorch.tracking.store import RunStore

__all__ = ["PlotsHere", "PlotsInChild", "import_plotting", "plotter", "sweep_alias", "write_summary"]

log = logging.getLogger("mlorch.sweep")
BEST_ALIAS = "best"
CHILD_PLOTS_FROM = 100  # trials: a sweep this long draws its plots in a child process
DRAW_TIMEOUT = 600.0  # seconds the driver waits for the child's plots before drawing them itself


class Plotter(Protocol):
    def draw(self, study: optuna.Study, folder: Path, multi: bool) -> list[Path]: ...
    def close(self) -> None: ...


def plotter(n_trials: int) -> Plotter:
    """Where a sweep of ``n_trials`` draws its plots (see the module docstring); started now."""
    return PlotsInChild() if n_trials >= CHILD_PLOTS_FROM else PlotsHere()


class PlotsHere:
    """Plots drawn in this process; a thread imports what they need while trials run."""

    def __init__(self) -> None:
        self._importing = threading.Thread(target=import_plotting, name="mlorch-import-plotting", daemon=True)
        self._importing.start()

    def draw(self, study: optuna.Study, folder: Path, multi: bool) -> list[Path]:
        self._importing.join()  # one thread importing a package at a time
        return _plots(study, folder, multi)

    def close(self) -> None:
        """Nothing to end (the import thread is a daemon)."""


class PlotsInChild:
    """Plots drawn in a child process (``execution/children.py``) that imports what they need at once
    and then waits for the study's finished trials. If it cannot, they are drawn here."""

    def __init__(self) -> None:
        self._conn: Connection | None = None
        self._process: Any = None
        try:
            self._process, self._conn = spawn_child(_draw_in_child, (), "plots process")
        except Exception as exc:  # noqa: BLE001 - drawn here instead
            log.debug("sweep tracking: no plots process (%s): plots are drawn in the driver", exc)
        # A sweep that fails before its summary drops its tracker: the child goes with it.
        self._finalizer = weakref.finalize(self, _end_child, self._conn, self._process)

    def draw(self, study: optuna.Study, folder: Path, multi: bool) -> list[Path]:
        conn = self._conn
        if conn is not None:
            try:
                trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
                conn.send((trials, list(study.directions), study.study_name, str(folder), multi))
                if conn.poll(DRAW_TIMEOUT):
                    ok, value = conn.recv()
                    if ok:
                        return [Path(p) for p in value]
                    log.warning("sweep tracking: the plots process failed (%s); drawing the plots here", value)
                else:
                    log.warning("sweep tracking: no plots after %g s; drawing them here", DRAW_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - stopped, or the trials cannot be sent: drawn here
                log.warning("sweep tracking: the plots process stopped (%s); drawing the plots here", exc)
            finally:
                self.close()
        return _plots(study, folder, multi)

    def close(self) -> None:
        self._conn = self._process = None
        self._finalizer()


def _end_child(conn: Connection | None, process: Any) -> None:
    if conn is not None:
        try:
            conn.send(None)
        except OSError:
            pass
        conn.close()
    if process is not None:
        stop_child(process)


def _draw_in_child(conn: Connection, parent: int) -> None:
    """The plots process: import, then draw each study it is sent into its folder; ``None`` ends it."""
    exit_with_parent(parent)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import_plotting()
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        trials, directions, name, folder, multi = request
        try:
            study = optuna.create_study(directions=directions, study_name=name)  # in memory: a copy to draw
            study.add_trials(trials)
            conn.send((True, [str(p) for p in _plots(study, Path(folder), multi)]))
        except Exception as exc:  # noqa: BLE001 - the driver draws them then
            conn.send((False, f"{type(exc).__name__}: {exc}"))


def write_summary(
    store: RunStore,
    study: optuna.Study,
    parent: str,
    metrics: list[str],
    plots: Plotter,
    before: Callable[[], None],
) -> None:
    """Draw the plots while ``before()`` (the child runs' writers finishing) runs, then write the summary."""
    with tempfile.TemporaryDirectory(prefix="mlorch-sweep-") as tmp:
        files: list[Path] = []
        multi = len(study.directions) > 1

        def draw() -> None:
            files.extend(plots.draw(study, Path(tmp), multi))

        drawer = threading.Thread(target=draw, daemon=True)
        drawer.start()
        before()  # every child run is ended before the summary reads them
        drawer.join()
        try:
            _summarise(store, study, metrics, parent, Path(tmp), files)
        except Exception:
            log.exception("sweep tracking: could not write the sweep summary")


def _summarise(store: RunStore, study: optuna.Study, metrics: list[str], parent: str, folder: Path, plots: list[Path]) -> None:
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(1 for t in trials if t.state == s) for s in TrialState}
    store.log_metrics(parent, {f"trials_{k}": float(v) for k, v in counts.items() if v})
    multi = len(study.directions) > 1
    best: list[FrozenTrial] = []
    try:
        best = list(study.best_trials) if multi else [study.best_trial]
    except ValueError:
        best = []
    if best and not multi:
        b = best[0]
        name = metrics[0] if metrics else "objective"
        # Metrics and tags, not params: a resumed sweep's best replaces the earlier one (params are write-once).
        store.log_metrics(parent, {f"best_{name}": float(b.value)})  # type: ignore[arg-type]
        tags = {f"{BEST_TAG_PREFIX}{k}": v for k, v in b.params.items()}
        store.set_tags(parent, {**tags, "best_trial": b.number, "best_run_id": b.user_attrs.get(RUN_ATTR, "")})
    table = folder / "trials.csv"
    study.trials_dataframe().to_csv(table, index=False)
    store.log_artifact(parent, str(table))
    for file in plots:
        store.log_artifact(parent, str(file), "plots")
    if best and not multi:
        _register_best(store, best[0], study.study_name)


def sweep_alias(study_name: str) -> str:
    """The registry alias of one sweep's best model (letters, digits, ``-`` and ``_`` only)."""
    return "best-" + re.sub(r"[^A-Za-z0-9_-]", "-", study_name)[:200]


def _register_best(store: RunStore, best: FrozenTrial, study_name: str) -> None:
    """The best trial's logged models get two registry aliases: ``best-<sweep>`` (this sweep's own,
    kept when another sweep registers the same model name) and ``best`` (the best of whichever
    sweep set it last). The run holding them is tagged ``mlorch.best_model``; a run that held this
    sweep's alias before (a resumed sweep found better) loses the tag."""
    run_id = best.user_attrs.get(RUN_ATTR)
    if not run_id:
        return
    client = store.client
    mine = sweep_alias(study_name)
    outputs = getattr(client.get_run(run_id), "outputs", None)
    model_ids = [o.model_id for o in (getattr(outputs, "model_outputs", None) or [])]
    for model in [client.get_logged_model(m) for m in dict.fromkeys(model_ids)]:
        versions = [v for v in client.search_model_versions(f"name='{model.name}'") if v.run_id == run_id]
        if versions:
            version = max(int(v.version) for v in versions)
        else:
            version = register_version(store.tracking_uri, model.model_uri, model.name)
        previous = _alias_run(client, model.name, mine)
        if previous is not None and previous != run_id:
            try:
                client.delete_tag(previous, BEST_MODEL_TAG)
            except Exception:  # already gone
                pass
        for alias in (mine, BEST_ALIAS):
            client.set_registered_model_alias(model.name, alias, str(version))
        client.set_tag(run_id, BEST_MODEL_TAG, f"models:/{model.name}@{mine}")


def _alias_run(client: Any, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).run_id)
    except Exception:  # no such alias yet
        return None


def import_plotting() -> None:
    """Import what the summary plots need while trials run: a cold import of
    ``optuna.importance`` (which loads scikit-learn) costs seconds at the sweep's end."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import optuna.importance  # noqa: F401
        import optuna.visualization.matplotlib  # noqa: F401
    except Exception as exc:  # the summary reports what it cannot draw
        log.debug("could not import the plotting libraries: %s", exc)


def _plots(study: optuna.Study, folder: Path, multi: bool) -> list[Path]:
    """Optuna's own plots as PNGs."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    out: list[Path] = []
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    plots: list[tuple[str, Callable[[], Any]]] = []
    if multi:
        plots.append(("pareto_front.png", lambda: ovm.plot_pareto_front(study)))
    else:
        plots.append(("optimization_history.png", lambda: ovm.plot_optimization_history(study)))
        if len(complete) >= 2 and len({k for t in complete for k in t.params}) >= 1:
            plots.append(("param_importances.png", lambda: _importances(study, ovm)))
        if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
            plots.append(("intermediate_values.png", lambda: ovm.plot_intermediate_values(study)))
    for name, make in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = make()
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                path = folder / name
                fig.savefig(path, dpi=80, bbox_inches="tight")
            plt.close(fig)
            out.append(path)
        except Exception as exc:  # e.g. importances need >1 distinct value per parameter
            log.info("sweep plot %s skipped: %s: %s", name, type(exc).__name__, exc)
    return out


def _importances(study: optuna.Study, ovm: Any) -> Any:
    """Parameter importances; PED-ANOVA (milliseconds) before fANOVA (seconds with 64 trees)."""
    try:
        return ovm.plot_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    except Exception:
        return ovm.plot_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(n_trees=16))
