"""Turning flow parameters into MLflow params and tags that are always accepted.

MLflow rejects keys over 250 characters and param values over 6000 (tags 8000),
and only takes strings. Nested mappings become dotted keys (``model.lr``), large
array-likes become a short description instead of their repr, secrets are masked,
and anything too long is cut with a marker rather than failing the run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from mlorch.tracking.limits import MAX_KEY, MAX_PARAM, MAX_TAG
from mlorch.tracking.secrets import MASK, Secret, mask, scrub

__all__ = ["MAX_KEY", "MAX_PARAM", "MAX_TAG", "flatten", "param_items", "tag_items", "to_text", "truncate"]

_CUT = "...[truncated]"


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; other values kept as they are."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def to_text(value: Any) -> str:
    """A short, stable text for a param value (arrays and frames are described, not dumped)."""
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return str(value)
    shape = getattr(value, "shape", None)
    if shape is not None and not isinstance(value, (list, tuple)):
        dtype = getattr(value, "dtype", None)
        dtypes = f" dtype={dtype}" if dtype is not None and not isinstance(dtype, (list, dict)) else ""
        return f"<{type(value).__name__} shape={tuple(shape)}{dtypes}>"
    if isinstance(value, (list, tuple)):
        try:
            return json.dumps(value, default=str)
        except (TypeError, ValueError):
            return str(value)
    if callable(value):
        return getattr(value, "__qualname__", None) or repr(value)
    return str(value)


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(_CUT)] + _CUT


def _key(name: str) -> str:
    if len(name) <= MAX_KEY:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return name[: MAX_KEY - 9] + "~" + digest


def param_items(values: Mapping[str, Any]) -> dict[str, str]:
    """Flattened, masked, stringified and truncated params, ready for ``log_batch``."""
    out = {}
    for name, value in flatten(values).items():
        safe = mask(name, value)
        out[_key(name)] = truncate(scrub(to_text(safe)), MAX_PARAM)
    return out


def tag_items(values: Mapping[str, Any]) -> dict[str, str]:
    """Tags get the same treatment, with MLflow's longer tag limit."""
    out = {}
    for name, value in values.items():
        safe = mask(name, value) if not str(name).startswith("mlflow.") else value
        out[_key(str(name))] = truncate(scrub(to_text(safe)), MAX_TAG)
    return out
