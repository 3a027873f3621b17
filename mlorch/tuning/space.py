"""Search spaces: ``mo.loguniform``, ``mo.uniform``, ``mo.intrange``, ``mo.choice``.

A space maps parameter names to these specs; the sweep driver turns each into a
``trial.suggest_*`` call, so every parameter is suggested on the driver before the
trial is submitted (TPE's constant liar only sees parameters already stored).

Specs do not check themselves when built: ``mo.uniform(1, 0)`` does not know the
name it will be given, and the error must name it. ``validate_space`` checks a whole
space at once, before any trial starts.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlorch.errors import ConfigError, preview

if TYPE_CHECKING:
    import optuna

    from mlorch.core.flow import Flow

__all__ = [
    "Choice",
    "IntRange",
    "LogUniform",
    "Param",
    "Uniform",
    "choice",
    "intrange",
    "loguniform",
    "space_from_config",
    "suggest",
    "uniform",
    "validate_space",
]


class Param:
    """One dimension of a search space."""

    def check(self, name: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


@dataclass(frozen=True)
class Uniform(Param):
    low: float
    high: float
    step: float | None = None

    def check(self, name: str) -> None:
        _numbers(name, "uniform", self.low, self.high)
        if not self.low < self.high:
            raise ConfigError(
                f"space['{name}']: uniform({self.low!r}, {self.high!r}) is an empty or inverted range; low must be < high"
            )
        if self.step is not None and not (_is_number(self.step) and self.step > 0):
            raise ConfigError(f"space['{name}']: uniform step must be a number > 0, got {self.step!r}")

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> float:
        return trial.suggest_float(name, float(self.low), float(self.high), step=self.step)

    def describe(self) -> str:
        return f"uniform({self.low:g}, {self.high:g}" + (f", step={self.step:g})" if self.step else ")")


@dataclass(frozen=True)
class LogUniform(Param):
    low: float
    high: float

    def check(self, name: str) -> None:
        _numbers(name, "loguniform", self.low, self.high)
        if not self.low > 0:
            raise ConfigError(f"space['{name}']: loguniform low must be > 0, got {self.low!r}")
        if not self.low < self.high:
            raise ConfigError(
                f"space['{name}']: loguniform({self.low!r}, {self.high!r}) is an empty or inverted range; low must be < high"
            )

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> float:
        return trial.suggest_float(name, float(self.low), float(self.high), log=True)

    def describe(self) -> str:
        return f"loguniform({self.low:g}, {self.high:g})"


@dataclass(frozen=True)
class IntRange(Param):
    low: int
    high: int
    step: int = 1
    log: bool = False

    def check(self, name: str) -> None:
        for label, v in (("low", self.low), ("high", self.high), ("step", self.step)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise ConfigError(f"space['{name}']: intrange {label} must be an integer, got {preview(v)}")
        if not isinstance(self.log, bool):
            raise ConfigError(f"space['{name}']: intrange log must be true or false, got {preview(self.log)}")
        if not self.low < self.high:
            raise ConfigError(
                f"space['{name}']: intrange({self.low!r}, {self.high!r}) is an empty or inverted range; low must be < high"
            )
        if self.step < 1:
            raise ConfigError(f"space['{name}']: intrange step must be >= 1, got {self.step!r}")
        if self.log and (self.low < 1 or self.step != 1):
            raise ConfigError(f"space['{name}']: a log intrange needs low >= 1 and step 1")

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def describe(self) -> str:
        extra = (f", step={self.step}" if self.step != 1 else "") + (", log=True" if self.log else "")
        return f"intrange({self.low}, {self.high}{extra})"


@dataclass(frozen=True)
class Choice(Param):
    options: tuple[Any, ...]

    def check(self, name: str) -> None:
        if not self.options:
            raise ConfigError(f"space['{name}']: choice() needs at least one option")
        for option in self.options:
            if not isinstance(option, (str, int, float, bool, type(None))):
                raise ConfigError(
                    f"space['{name}']: choice options must be str, int, float, bool or None "
                    f"(Optuna stores them), got {type(option).__name__}"
                )

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.options))

    def describe(self) -> str:
        return f"choice({list(self.options)!r})"


def uniform(low: float, high: float, step: float | None = None) -> Uniform:
    """A float drawn uniformly from ``[low, high]`` (on a grid of ``step`` if given)."""
    return Uniform(low, high, step)


def loguniform(low: float, high: float) -> LogUniform:
    """A float in ``[low, high]`` drawn uniformly in log space (learning rates, regularisation)."""
    return LogUniform(low, high)


def intrange(low: int, high: int, step: int = 1, log: bool = False) -> IntRange:
    """An integer in ``[low, high]``, both ends included."""
    return IntRange(low, high, step, log)


def choice(options: Iterable[Any]) -> Choice:
    """One of ``options`` (categorical)."""
    if isinstance(options, (str, bytes)):
        raise ConfigError(f"choice() takes a list of options, got the string {options!r}")
    return Choice(tuple(options))


def validate_space(space: Mapping[str, Any], flow: Flow[..., Any] | None) -> dict[str, Any]:
    """Check every entry, and (for a flow) that each name is one of its parameters.

    Entries that are not ``Param`` specs are fixed values, passed as they are.
    """
    if not isinstance(space, Mapping):
        raise ConfigError(f"space: expected a mapping of parameter names to mo.uniform/...; got {type(space).__name__}")
    for name, spec in space.items():
        if not isinstance(name, str):
            raise ConfigError(f"space: parameter names must be strings, got {name!r}")
        problem = flow.parameter_problem(name) if flow is not None else None
        if problem:
            raise ConfigError(f"space['{name}']: {problem}")
        if isinstance(spec, Param):
            spec.check(name)
        if flow is not None:
            _check_type(flow, name, spec)
    if not any(isinstance(s, Param) for s in space.values()) and flow is not None:
        raise ConfigError("space: nothing to sweep; give at least one range, e.g. space={'lr': mo.loguniform(1e-4, 1e-1)}")
    return dict(space)


def _check_type(flow: Flow[..., Any], name: str, spec: Any) -> None:
    """Every value the entry can give must fit the parameter's annotation (before any trial runs)."""
    if isinstance(spec, Choice):
        examples = list(spec.options)
    elif isinstance(spec, IntRange):
        examples = [int(spec.low)]
    elif isinstance(spec, (Uniform, LogUniform)):
        examples = [float(spec.low)]
    else:
        problem = flow.value_problem(name, spec)
        if problem:
            raise ConfigError(f"space['{name}']: flow '{flow.name}' parameter '{name}': {problem}")
        return
    for example in examples:
        problem = flow.value_problem(name, example)
        if problem:
            gives = f"{spec.describe()} gives {type(example).__name__} values"
            raise ConfigError(f"space['{name}']: {gives}; flow '{flow.name}' parameter '{name}': {problem}")


def suggest(trial: optuna.trial.BaseTrial, space: Mapping[str, Any]) -> dict[str, Any]:
    """The trial's value for every entry of ``space`` (fixed entries as they are)."""
    return {name: spec.suggest(trial, name) if isinstance(spec, Param) else spec for name, spec in space.items()}


def describe_space(space: Mapping[str, Any]) -> dict[str, str]:
    return {name: spec.describe() if isinstance(spec, Param) else repr(spec) for name, spec in space.items()}


_KINDS = {"uniform": 2, "loguniform": 2, "intrange": 2, "int": 2, "choice": 1}


def space_from_config(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A space from YAML, where each entry is ``{loguniform: [1e-4, 0.1]}``, ``{intrange: [2, 12]}``,
    ``{uniform: [0, 1], step: 0.1}``, ``{choice: [adam, sgd]}``, or a plain value (fixed).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: field 'space': expected a mapping of parameter names, got {type(data).__name__}")
    out: dict[str, Any] = {}
    for name, entry in data.items():
        where = f"{source}: field 'space.{name}'"
        if not isinstance(entry, Mapping):
            out[name] = entry
            continue
        kinds = [k for k in entry if k in _KINDS]
        if len(kinds) != 1:
            unknown = [k for k in entry if k not in _KINDS and k not in ("step", "log")]
            close = difflib.get_close_matches(str(unknown[0]), list(_KINDS), n=1) if unknown else []
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{where}: expected exactly one of {', '.join(_KINDS)}{hint}, got {preview(dict(entry))}")
        kind = kinds[0]
        extra = {k: v for k, v in entry.items() if k != kind}
        allowed = {"uniform": {"step"}, "intrange": {"step", "log"}, "int": {"step", "log"}}.get(kind, set())
        bad = set(extra) - allowed
        if bad:
            raise ConfigError(f"{where}: unknown option(s) {sorted(bad)} for {kind}")
        args = entry[kind]
        if not isinstance(args, list) or (kind != "choice" and len(args) != 2):
            shape = "a list of options" if kind == "choice" else "[low, high]"
            raise ConfigError(f"{where}: {kind} expects {shape}, got {preview(args)}")
        if kind == "choice":
            out[name] = Choice(tuple(args))
        elif kind == "loguniform":
            out[name] = LogUniform(_float(args[0], where), _float(args[1], where))
        elif kind == "uniform":
            step = extra.get("step")
            out[name] = Uniform(_float(args[0], where), _float(args[1], where), None if step is None else _float(step, where))
        else:
            out[name] = IntRange(args[0], args[1], extra.get("step", 1), extra.get("log", False))
        if isinstance(out[name], Param):
            try:
                out[name].check(name)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
    return out


def _float(value: Any, where: str) -> float:
    # YAML 1.1 reads ``1e-4`` (no dot) as a string; accept it as the number it means.
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number, got {preview(value)}") from None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(name: str, kind: str, *values: Any) -> None:
    for v in values:
        if not _is_number(v):
            raise ConfigError(f"space['{name}']: {kind} bounds must be finite numbers, got {v!r}")
