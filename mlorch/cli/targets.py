"""Loading ``path/to/file.py:name`` targets and parsing ``--set key=value`` overrides."""

from __future__ import annotations

import difflib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import yaml

from mlorch.errors import ConfigError, preview

__all__ = ["load_target", "parse_overrides"]


def load_target(spec: str) -> Any:
    """The object named by ``file.py:name`` (or ``package.module:name``)."""
    if ":" not in spec:
        raise ConfigError(f"target {spec!r}: expected 'path/to/file.py:flow_name'")
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ConfigError(f"target {spec!r}: file {where} not found")
        module_name = f"mlorch_user_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path.resolve())
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:  # the user's file fails to import: say which and why, in one line
            sys.modules.pop(module_name, None)
            raise ConfigError(
                f"target {preview(spec)}: importing {where} failed: {type(exc).__name__}: {str(exc)[:200]}"
            ) from None
        # Workers cannot import a file by path: ship its functions by value.
        cloudpickle.register_pickle_by_value(module)
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            raise ConfigError(f"target {preview(spec)}: no module named {preview(exc.name or where)}") from None
        except Exception as exc:
            raise ConfigError(
                f"target {preview(spec)}: importing {where} failed: {type(exc).__name__}: {str(exc)[:200]}"
            ) from None
    try:
        return getattr(module, name)
    except AttributeError:
        names = [n for n in vars(module) if not n.startswith("_")]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"target {spec!r}: {where} has no '{name}'{hint}") from None


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["lr=0.01", "opt=adam"]`` -> ``{"lr": 0.01, "opt": "adam"}`` (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out
