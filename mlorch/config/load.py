"""Reading YAML into the typed models, and turning pydantic's errors into ours.

Every error names the file and the dotted field, and suggests the closest known
field for a typo (``n_wokers`` -> ``n_workers``).
"""

from __future__ import annotations

import difflib
import os
import re
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
from mlorch.errors import ConfigError, preview

__all__ = ["load_cluster_config", "load_yaml", "validate"]

M = TypeVar("M", bound=BaseModel)

CLUSTER_KINDS: dict[str, type[BaseModel]] = {
    "local": LocalClusterConfig,
    "address": AddressClusterConfig,
    **{kind: JobqueueClusterConfig for kind in JOBQUEUE_KINDS},
}


MAX_BYTES = 1 << 20  # a config file is a few kB; more is a mistake (a data file named .yaml)
MAX_NODES = 100_000  # values after expanding YAML aliases (a 10-line "billion laughs" has 10^9)
MAX_DEPTH = 50  # nesting levels


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML file's top-level mapping, read within bounds of size, encoding, aliases and nesting;
    a missing file, bad syntax or bytes out of bounds is a ConfigError naming the file."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file ({exc.strerror or exc})") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{p}: larger than {MAX_BYTES >> 10} KiB; a config file is a few lines of YAML")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: not UTF-8 text (byte {exc.start}: {raw[exc.start : exc.start + 1]!r}); save it as UTF-8"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {str(exc)[:300]}") from None
    except RecursionError:
        raise ConfigError(f"{p}: nested more than Python can read; a config has a few levels") from None
    _check_bounds(data, str(p))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of fields at the top level, got {type(data).__name__}")
    return data


def _check_bounds(data: Any, source: str) -> None:
    """At most MAX_NODES values once aliases are expanded, at most MAX_DEPTH levels (checked without expanding)."""
    seen = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise ConfigError(f"{source}: more than {MAX_NODES} values once YAML aliases are expanded (an alias bomb?)")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{source}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for item in value.items() for v in item)
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def validate(model: type[M], data: Mapping[str, Any], source: str) -> M:
    """``model(**data)``, or a ConfigError listing every bad field of ``source``."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, model, source)) from None


# Parts of a pydantic error location that name a member of a union, not a field ("gpus.constrained-int").
_UNION_MEMBER = re.compile(r"^(literal\[.*\]|constrained-\w+|int|str|float|bool|none|list\[.*\]|dict\[.*\]|function-\w+\[.*\])$")


def _describe(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    lines: list[str] = []
    by_field: dict[str, list[str]] = {}
    got_of: dict[str, str] = {}
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and _UNION_MEMBER.match(p)))
        field = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            known = _known_fields(model, err["loc"][:-1])
            close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known fields: {', '.join(sorted(known))}"
            lines.append(f"{source}: unknown field '{field}'{hint}")
        elif not loc:  # a check across fields: its message names them
            lines.append(f"{source}: {str(err['msg']).removeprefix('Value error, ')[:200]}")
        else:
            by_field.setdefault(field, []).append(str(err["msg"]).removeprefix("Value error, ")[:160])
            if "input" in err and not isinstance(err["input"], dict):
                got_of[field] = f" (got {preview(err['input'])})"
    for field, messages in by_field.items():  # a union's members each said no: one line, their reasons joined
        lines.append(f"{source}: field '{field}': {'; or '.join(dict.fromkeys(messages))}{got_of.get(field, '')}")
    if len(lines) > 5:
        lines = [*lines[:5], f"{source}: ... and {len(lines) - 5} more"]
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
            f"{label}: field 'kind': unknown cluster kind {preview(kind, 60)}{hint} (known: {', '.join(CLUSTER_KINDS)})"
        )
    return validate(CLUSTER_KINDS[kind], data, label)  # type: ignore[return-value]
