"""Checking a sweep's arguments before any trial starts, into one frozen ``Plan``.

Every mistake a user can make in the call (an unknown flow parameter, an empty
range, an unknown sampler, a metric the flow never returns, a bad direction, a
resource no worker has) fails here with the field named, so a sweep never dies on
its 40th trial for a typo. Whether a flow returns the metric is read from its
source: the keys of the dict literals its ``return`` statements build. When a
return is not a literal the check is deferred to the first finished trial.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import inspect
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from mlorch.core.flow import Flow
from mlorch.core.resources import parse_request
from mlorch.errors import ConfigError, preview
from mlorch.tuning.options import check_directions, make_pruner, make_sampler
from mlorch.tuning.space import Param, describe_space, validate_space

__all__ = ["Plan", "make_plan", "returned_keys"]


@dataclass
class Plan:
    """A validated sweep definition (what :func:`mlorch.sweep` will run)."""

    target: Any
    kind: str  # "flow" | "objective"
    name: str
    experiment: str
    space: dict[str, Any]
    metrics: list[str]
    directions: list[str]
    n_trials: int
    max_concurrency: int | None
    sampler: optuna.samplers.BaseSampler
    pruner: optuna.pruners.BasePruner
    seed: int | None
    resources: dict[str, float] | None
    timeout: float | None  # seconds for the whole sweep (Optuna's meaning)
    storage: Any
    tracking: bool
    summary: dict[str, Any] = field(default_factory=dict)
    metric_checked: bool = False
    trial_timeout: float | None = None  # seconds one trial may run
    callbacks: tuple[Callable[[Any, Any], None], ...] = ()
    catch: tuple[type[BaseException], ...] | None = None  # None: every error is a FAIL and the sweep goes on
    load_if_exists: bool = True
    gc_after_trial: bool = False
    reuse_results: bool = True  # a flow trial with an earlier trial's parameters may reuse its results

    @property
    def multi(self) -> bool:
        return len(self.directions) > 1

    @property
    def target_name(self) -> str:
        return str(getattr(self.target, "name", None) or getattr(self.target, "__name__", "objective"))


def make_plan(
    target: Any,
    *,
    space: Mapping[str, Any] | None,
    metric: str | None,
    direction: str | None,
    metrics: Sequence[str] | None,
    directions: Sequence[str] | None,
    n_trials: Any,
    max_concurrency: Any,
    sampler: Any,
    pruner: Any,
    seed: Any,
    name: Any,
    resources: Any,
    timeout: Any,
    storage: Any,
    tracking: bool,
    trial_timeout: Any = None,
    callbacks: Any = None,
    catch: Any = None,
    load_if_exists: Any = True,
    gc_after_trial: Any = False,
    study: Any = None,
    study_name: Any = None,
    reuse_results: Any = True,
) -> Plan:
    kind = _kind(target)
    name_field = "name"
    if study_name is not None:
        if name is not None and name != study_name:
            raise ConfigError(f"study_name: {study_name!r} and name={name!r} disagree; study_name is Optuna's name for name=")
        name, name_field = study_name, "study_name"
    explicit_pruner = pruner is not None and study is None  # Optuna's default pruner is fine on any study
    if seed is not None and (study is not None or isinstance(sampler, optuna.samplers.BaseSampler)):
        source = "study=" if study is not None else "a sampler object"
        raise ConfigError(f"seed: given with {source}, whose sampler is already built; seed that sampler instead")
    if study is not None:
        name, storage, sampler, pruner, study_dirs = _from_study(
            study, name, storage, sampler, pruner, direction, directions, name_field
        )
        direction, directions = (study_dirs[0], None) if len(study_dirs) == 1 else (None, study_dirs)
    names, dirs = check_directions(metric, direction, metrics, directions, allow_unnamed=kind == "objective")
    flow = target if kind == "flow" else None
    if flow is not None and space is None:
        known = ", ".join(flow.signature.parameters)
        raise ConfigError(f"space: sweeping flow '{flow.name}' needs a space over its parameters ({known})")
    checked_space = validate_space(space or {}, flow)
    if kind == "flow":
        _check_flow_call(target, checked_space)
    else:
        fixed = [n for n, v in checked_space.items() if not isinstance(v, Param)]
        if fixed:
            raise ConfigError(
                f"space['{fixed[0]}']: an Optuna objective takes no fixed values (it only gets the trial); "
                "give ranges (mo.uniform, ...) or bind the value in the objective"
            )
    if kind == "flow" and not names and len(dirs) > 1:
        raise ConfigError(f"metrics: name the values of flow '{target.name}' to optimise, one per direction")
    if kind == "flow" and not names and len(dirs) == 1:
        raise ConfigError(f"metric: name the value of flow '{target.name}' to optimise, e.g. metric='val_loss'")
    metric_checked = _check_metrics(target, kind, names)
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise ConfigError(f"n_trials: expected an integer >= 1, got {n_trials!r}")
    if max_concurrency is not None and (
        not isinstance(max_concurrency, int) or isinstance(max_concurrency, bool) or max_concurrency < 1
    ):
        raise ConfigError(f"max_concurrency: expected None (derive from the cluster) or an integer >= 1, got {max_concurrency!r}")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ConfigError(f"seed: expected an integer, got {seed!r}")
    timeout = _seconds("timeout", timeout, "for the whole sweep")
    trial_timeout = _seconds("trial_timeout", trial_timeout, "per trial")
    res = _resources(resources)
    sampler_obj = make_sampler(sampler, seed)
    pruner_obj = make_pruner(pruner)
    if len(dirs) > 1 and explicit_pruner and not isinstance(pruner_obj, optuna.pruners.NopPruner):
        raise ConfigError("pruner: Optuna cannot prune multi-objective studies; use pruner='none' with metrics=[...]")
    if not isinstance(tracking, bool):
        raise ConfigError(f"tracking: expected True or False, got {preview(tracking)}")
    if tracking and (getattr(target, "tracking", True) if kind == "flow" else True):
        from mlorch.tracking import enabled
        from mlorch.tracking.store import check_tracking_uri

        if enabled():
            check_tracking_uri()  # a bad store fails now, not after the cluster has started
    if not isinstance(load_if_exists, bool):
        raise ConfigError(f"load_if_exists: expected True or False, got {load_if_exists!r}")
    if not isinstance(reuse_results, bool):
        raise ConfigError(f"reuse_results: expected True or False, got {reuse_results!r}")
    if not isinstance(gc_after_trial, bool):
        raise ConfigError(f"gc_after_trial: expected True or False, got {gc_after_trial!r}")
    study_name = _name(name, target, checked_space, names, dirs)
    summary = {
        "target": _label(target),
        "space": describe_space(checked_space),
        "metric": names if len(names) != 1 else names[0],
        "direction": dirs if len(dirs) > 1 else dirs[0],
        "n_trials": n_trials,
        "max_concurrency": max_concurrency if max_concurrency is not None else "auto",
        "sampler": type(sampler_obj).__name__,
        "pruner": type(pruner_obj).__name__,
        "seed": seed,
        "resources": res or {},
        "timeout": timeout,
        "trial_timeout": trial_timeout,
    }
    experiment = target.experiment if kind == "flow" else study_name
    return Plan(
        target=target,
        kind=kind,
        name=study_name,
        experiment=experiment,
        space=checked_space,
        metrics=names,
        directions=dirs,
        n_trials=n_trials,
        max_concurrency=max_concurrency,
        sampler=sampler_obj,
        pruner=pruner_obj,
        seed=seed,
        resources=res,
        timeout=timeout,
        trial_timeout=trial_timeout,
        callbacks=_callbacks(callbacks),
        catch=_catch(catch),
        load_if_exists=load_if_exists,
        gc_after_trial=gc_after_trial,
        reuse_results=reuse_results,
        storage=storage,
        tracking=bool(tracking) and (getattr(target, "tracking", True) if kind == "flow" else True),
        summary=summary,
        metric_checked=metric_checked,
    )


def _from_study(
    study: Any, name: Any, storage: Any, sampler: Any, pruner: Any, direction: Any, directions: Any, name_field: str = "name"
) -> tuple[str, Any, Any, Any, list[str]]:
    """An existing ``optuna.Study``: its name, storage, sampler, pruner and directions (as optimize uses them)."""
    from mlorch.tuning.optuna_private import storage_of

    if not isinstance(study, optuna.Study):
        raise ConfigError(f"study: expected an optuna.Study, got {type(study).__name__}")
    given = {
        name_field: name,
        "storage": storage,
        "sampler": sampler,
        "pruner": pruner,
        "direction": direction,
        "directions": directions,
    }
    for field_name, value in given.items():
        if value is not None and not (field_name == name_field and value == study.study_name):
            raise ConfigError(f"{field_name}: given with study=; the study's own {field_name} is used (drop one of the two)")
    dirs = [d.name.lower() for d in study.directions]
    return study.study_name, storage_of(study), study.sampler, study.pruner, dirs


def _seconds(field_name: str, value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{field_name}: expected seconds > 0 {what}, got {value!r}")
    return float(value)


def _callbacks(callbacks: Any) -> tuple[Callable[[Any, Any], None], ...]:
    if callbacks is None:
        return ()
    if callable(callbacks) or not isinstance(callbacks, (list, tuple)):
        raise ConfigError(f"callbacks: expected a list of callables f(study, trial), got {type(callbacks).__name__}")
    for i, cb in enumerate(callbacks):
        if not callable(cb):
            raise ConfigError(f"callbacks[{i}]: expected a callable f(study, trial), got {type(cb).__name__} {preview(cb, 60)}")
    return tuple(callbacks)


def _catch(catch: Any) -> tuple[type[BaseException], ...] | None:
    if catch is None:
        return None
    items = catch if isinstance(catch, (list, tuple)) else (catch,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ConfigError(f"catch: expected exception classes, e.g. catch=(ValueError,), got {preview(item, 60)}")
    return tuple(items)


def _kind(target: Any) -> str:
    if isinstance(target, Flow):
        return "flow"
    if callable(target):
        try:
            params = [
                p
                for p in inspect.signature(target).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
            ]
        except (TypeError, ValueError):
            return "objective"
        if len(params) != 1:
            raise ConfigError(
                f"target: {getattr(target, '__name__', target)!r} is neither an @mo.flow nor an Optuna objective "
                "taking one argument (the trial)"
            )
        return "objective"
    raise ConfigError(f"target: expected an @mo.flow or an Optuna objective function, got {type(target).__name__}")


def _label(target: Any) -> str:
    if isinstance(target, Flow):
        return f"flow '{target.name}'"
    return f"objective '{getattr(target, '__name__', 'objective')}'"


def _check_flow_call(flow: Flow[..., Any], space: Mapping[str, Any]) -> None:
    """Parameters without a default must be swept or fixed in the space."""
    missing = flow.unbound_parameters(space)
    if missing:
        raise ConfigError(
            f"space: flow '{flow.name}' parameter(s) {', '.join(missing)} have no default; "
            "sweep them or give a fixed value in the space"
        )


def _check_metrics(target: Any, kind: str, names: list[str]) -> bool:
    """True when the flow's returned keys are known and contain every metric."""
    if kind != "flow" or not names:
        return kind != "flow"
    keys = returned_keys(target.fn)
    if keys is None:
        return False
    for name in names:
        if name not in keys:
            close = difflib.get_close_matches(name, sorted(keys), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"metric: flow '{target.name}' never returns '{name}'{hint} (it returns: {', '.join(sorted(keys))})"
            )
    return True


def returned_keys(fn: Callable[..., Any]) -> set[str] | None:
    """Keys of the dicts ``fn`` returns, when every ``return`` builds a literal dict; else None."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return None
    func = next((n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    if func is None:
        return None
    returns: list[ast.Return] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                continue  # returns of nested functions are not the flow's
            if isinstance(child, ast.Return):
                returns.append(child)
            visit(child)

    visit(func)
    if not returns:
        return None
    keys: set[str] = set()
    for ret in returns:
        value = ret.value
        if isinstance(value, ast.Dict) and all(isinstance(k, ast.Constant) and isinstance(k.value, str) for k in value.keys):
            keys.update(k.value for k in value.keys)  # type: ignore[union-attr]
        elif (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id == "dict"
            and not value.args
            and all(k.arg for k in value.keywords)
        ):
            keys.update(str(k.arg) for k in value.keywords)
        else:
            return None
    return keys


def _resources(resources: Any) -> dict[str, float] | None:
    if resources is None:
        return None
    try:
        request = parse_request(resources)
    except ValueError as exc:
        text = str(exc)
        raise ConfigError(f"resources{text}" if text.startswith("[") else f"resources: {text}") from None
    if not request:
        raise ConfigError("resources: expected a mapping like {'GPU': 1}, got {}")
    return request


def _name(name: Any, target: Any, space: Mapping[str, Any], metrics: list[str], directions: list[str]) -> str:
    """The study name: given, or the target's qualified name plus a digest of where it is defined
    (file or module) and what is swept, so two targets (two ``objective`` functions in two
    scripts) never share a study, and the same sweep run again resumes its own."""
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"name: expected a non-empty string, got {name!r}")
        return name
    fn = getattr(target, "fn", target)
    base = str(getattr(target, "name", None) or getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "objective"))
    home = getattr(inspect.getmodule(fn), "__file__", None) or getattr(fn, "__module__", "")
    text = repr((str(home), getattr(fn, "__qualname__", base), sorted(describe_space(space).items()), metrics, directions))
    return f"{base}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def is_param(value: Any) -> bool:
    return isinstance(value, Param)
