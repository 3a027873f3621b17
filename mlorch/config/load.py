"""Reading YAML into the typed models, and turning pydantic's errors into ours.

Every error names the file and the dotted field, and suggests the closest known
field for a typo (``n_wokers`` -> ``n_workers``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from mlorch.config.schema import (
    JOBQUEUE_KINDS,
    AddressClusterConfig,
    ClusterConfig,
    JobqueueClusterConfig,
    LocalClusterConfig,
)
from mlorch.errors import ConfigError

__all__ = ["load_cluster_config", "load_yaml", "validate"]

M = TypeVar("M", bound=BaseModel)

CLUSTER_KINDS: dict[str, type[BaseModel]] = {
    "local": LocalClusterConfig,
    "address": AddressClusterConfig,
    **{kind: JobqueueClusterConfig for kind in JOBQUEUE_KINDS},
}


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML file's top-level mapping; a missing file or bad syntax is a ConfigError naming it."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of fields at the top level, got {type(data).__name__}")
    return data


def validate(model: type[M], data: Mapping[str, Any], source: str) -> M:
    """``model(**data)``, or a ConfigError listing every bad field of ``source``."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, model, source)) from None


def _describe(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            known = _known_fields(model, err["loc"][:-1])
            close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known fields: {', '.join(sorted(known))}"
            lines.append(f"{source}: unknown field '{field}'{hint}")
        else:
            got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
            lines.append(f"{source}: field '{field}': {err['msg']}{got}")
    return "\n".join(lines)


def _known_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        annotation = getattr(field, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            current = annotation
        else:
            return []
    return list(getattr(current, "model_fields", {}))


def load_cluster_config(source: str | os.PathLike[str] | Mapping[str, Any] | None = None, **overrides: Any) -> ClusterConfig:
    """A validated cluster config from a YAML path, a mapping, or nothing (local defaults)."""
    if source is None:
        data: dict[str, Any] = {}
        label = "cluster options"
    elif isinstance(source, Mapping):
        data, label = dict(source), "cluster options"
    else:
        data, label = load_yaml(source), str(source)
    data.update({k: v for k, v in overrides.items() if v is not None})
    kind = data.get("kind", "local")
    if not isinstance(kind, str) or kind not in CLUSTER_KINDS:
        close = difflib.get_close_matches(str(kind), list(CLUSTER_KINDS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"{label}: field 'kind': unknown cluster kind {str(kind)[:60]!r}{hint} (known: {', '.join(CLUSTER_KINDS)})"
        )
    return validate(CLUSTER_KINDS[kind], data, label)  # type: ignore[return-value]
