"""Checking a value against a flow parameter's annotation before anything is submitted.

``--set hidden=abc``, a sweep space ``epochs: ten`` or ``mo.sweep(space={"depth": "3"})``
would otherwise fail inside every task on a worker. The plain annotations a pipeline's
parameters use are checked: ``int``, ``float`` (ints accepted), ``bool``, ``str``,
``pathlib.Path`` (strings accepted), ``Literal[...]``, ``Optional[...]`` and unions of
those. Anything else (``Any``, containers, classes of the user's) is accepted as it is.
"""

from __future__ import annotations

import os
import pathlib
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union

__all__ = ["annotation_of", "describe_annotation", "type_problem"]

_UNCHECKED = object()


def annotation_of(fn: Callable[..., Any], name: str) -> Any:
    """The resolved annotation of parameter ``name`` (string annotations included), or ``_UNCHECKED``."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation naming something not importable here: do not guess
        return _UNCHECKED
    return hints.get(name, _UNCHECKED)


def type_problem(annotation: Any, value: Any) -> str | None:
    """Why ``value`` does not fit ``annotation`` (``"expected int"``), or None if it does or cannot be told."""
    if annotation is _UNCHECKED or annotation is Any:
        return None
    return None if _fits(annotation, value) else f"expected {describe_annotation(annotation)}"


def _fits(annotation: Any, value: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return any(value == option and type(value) is type(option) for option in typing.get_args(annotation))
    if origin is Union or origin is types.UnionType:
        args = typing.get_args(annotation)
        checked = [a for a in args if _checkable(a)]
        if len(checked) < len(args):  # a member we do not check: accept
            return True
        return any(_fits(a, value) for a in args)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation in (pathlib.Path, pathlib.PurePath, os.PathLike):
        return isinstance(value, (str, os.PathLike))
    return True


def _checkable(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (Literal, Union, types.UnionType):
        return True
    return annotation in (type(None), bool, int, float, str, pathlib.Path, pathlib.PurePath, os.PathLike)


def describe_annotation(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin is Union or origin is types.UnionType:
        return " or ".join(describe_annotation(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))
