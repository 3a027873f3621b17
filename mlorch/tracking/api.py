"""What tasks and flows call: ``mo.log_metric``, ``mo.log_model``... (no MLflow import here).

Each call finds its run (the task's ``mo.context().run``, or the flow run the driver
is executing), validates its arguments on the spot so mistakes fail in the task that
made them, and hands an event to :mod:`mlorch.tracking.emit`. With no run (tracking
off, or a task function called on its own) the calls do nothing, once warning.
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlorch.tracking import emit
from mlorch.tracking.params import param_items, tag_items

__all__ = [
    "log_artifact",
    "log_figure",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_param",
    "log_params",
    "set_model_alias",
    "set_tag",
]

log = logging.getLogger("mlorch.tracking")
_NAME = re.compile(r"^[\w\-./ :]+$")
_warned = False


def _target() -> emit.Target | None:
    global _warned
    target = emit.current_target()
    if target is None and not _warned:
        _warned = True
        log.info("tracking call outside a tracked flow run: ignored (tracking is off or no flow is running)")
    return target


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not name or len(name) > 250 or not _NAME.match(name):
        raise ValueError(
            f"invalid {kind} name {name!r}: use 1-250 letters, digits, '_', '-', '.', '/', ':' or spaces, "
            f"e.g. 'val_loss' or 'train/acc'"
        )
    return name


def _float(name: str, value: Any) -> float:
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        raise TypeError(f"metric {name!r}: value must be a number, got {type(value).__name__}") from None


def log_metric(key: str, value: float, step: int | None = None, timestamp: float | None = None) -> None:
    """Record one point of a metric series (buffered; written by the driver in batches).

    Args:
        key: metric name, e.g. ``"val_loss"``.
        value: a number (numpy and torch scalars are fine).
        step: x-axis position, e.g. the epoch (default 0, as in MLflow).
        timestamp: seconds since the epoch (default now).
    """
    target = _target()
    if target is None:
        return
    ts = int((time.time() if timestamp is None else timestamp) * 1000)
    emit.push_metric(target, [[_check_name("metric", key), _float(key, value), ts, int(step or 0)]])


def log_metrics(metrics: Mapping[str, float], step: int | None = None, timestamp: float | None = None) -> None:
    """Several metrics at the same step."""
    target = _target()
    if target is None:
        return
    ts = int((time.time() if timestamp is None else timestamp) * 1000)
    points = [[_check_name("metric", k), _float(k, v), ts, int(step or 0)] for k, v in metrics.items()]
    emit.push_metric(target, points)


def log_param(key: str, value: Any) -> None:
    """Record a parameter (masked if secret, truncated if long)."""
    log_params({key: value})


def log_params(params: Mapping[str, Any]) -> None:
    """Record parameters; nested mappings are flattened to ``a.b`` keys."""
    target = _target()
    if target is not None:
        emit.emit(target, "params", params=param_items(params))


def set_tag(key: str, value: Any) -> None:
    """Set a tag on the run (masked if secret)."""
    target = _target()
    if target is not None:
        emit.emit(target, "tags", tags=tag_items({key: value}))


def log_artifact(local_path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
    """Copy a file (or a folder's files) into the run's artifacts, from wherever the task runs.

    The bytes travel to the driver, so the worker needs no access to the artifact store.
    """
    target = _target()
    if target is None:
        return
    path = Path(local_path)
    if not path.exists():
        raise FileNotFoundError(f"log_artifact: {path} does not exist")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        sub = artifact_path
        if path.is_dir():
            rel = file.parent.relative_to(path).as_posix()
            parts = [p for p in (artifact_path, path.name, None if rel == "." else rel) if p]
            sub = "/".join(parts)
        emit.emit(target, "artifact", name=file.name, path=sub, **emit.stage(file.read_bytes()))


def log_text(text: str, artifact_file: str) -> None:
    """Write ``text`` as an artifact file, e.g. ``"notes/summary.md"``."""
    _log_bytes(text.encode(), artifact_file)


def log_figure(figure: Any, artifact_file: str) -> None:
    """Save a matplotlib figure as an image artifact (rendered where the task runs).

    Args:
        figure: a ``matplotlib.figure.Figure`` (or anything with ``savefig``).
        artifact_file: e.g. ``"plots/loss.png"``; the suffix picks the format.
    """
    if not hasattr(figure, "savefig"):
        raise TypeError(f"log_figure needs a matplotlib Figure (with .savefig), got {type(figure).__name__}")
    fmt = Path(artifact_file).suffix.lstrip(".") or "png"
    buf = io.BytesIO()
    figure.savefig(buf, format=fmt)
    _log_bytes(buf.getvalue(), artifact_file if Path(artifact_file).suffix else artifact_file + ".png")


def _log_bytes(data: bytes, artifact_file: str) -> None:
    target = _target()
    if target is None:
        return
    posix = Path(artifact_file).as_posix()
    parent = posix.rsplit("/", 1)[0] if "/" in posix else None
    emit.emit(target, "artifact", name=Path(posix).name, path=parent, **emit.stage(data))


def log_model(
    model: Any,
    name: str,
    *,
    register: bool = False,
    input_example: Any = None,
    flavor: str | None = None,
    **options: Any,
) -> None:
    """Log a scikit-learn or PyTorch model to the run; ``register=True`` adds a registry version.

    The flavor is picked from the model's type; the signature is inferred from
    ``input_example`` (pass one: it also documents the model). The driver does the
    MLflow work, so on a worker this returns at once; the version exists when the
    flow run has ended. ``options`` go to ``mlflow.<flavor>.log_model``.

    Args:
        model: a fitted scikit-learn estimator or a ``torch.nn.Module``.
        name: the model's name in the run and, with ``register``, in the registry.
        register: create a new version of the registered model ``name``.
        input_example: a few input rows (numpy array, DataFrame or tensor).
        flavor: ``"sklearn"`` or ``"pytorch"`` to override the detection.
    """
    from mlorch.tracking.models import detect_flavor, pack

    target = _target()
    if target is None:
        return
    _check_name("model", name)
    chosen = flavor or detect_flavor(model)
    ctx_task = _task_name()
    blob = pack(model, input_example)
    emit.emit(
        target,
        "model",
        name=name,
        flavor=chosen,
        register=bool(register),
        task=ctx_task,
        options=pack_options(options),
        **emit.stage(blob),
    )


def pack_options(options: Mapping[str, Any]) -> bytes:
    import cloudpickle

    return cloudpickle.dumps(dict(options))


def _task_name() -> str | None:
    from mlorch.core.context import current_or_none

    ctx = current_or_none()
    return ctx.task if ctx is not None else None


def set_model_alias(name: str, alias: str, version: int | str | None = None, tracking_uri: str | None = None) -> int | None:
    """Point ``alias`` (e.g. ``"champion"``) at a version of registered model ``name``.

    ``version=None`` means the newest version. Returns the version number (None when
    called on a worker: the driver sets it). Load it with
    ``mlflow.pyfunc.load_model(f"models:/{name}@{alias}")``.
    """
    target = emit.current_target()
    if target is not None and emit.on_worker():
        emit.emit(target, "alias", name=name, alias=alias, version=None if version is None else str(version))
        return None
    from mlorch.tracking.store import RunStore

    uri = tracking_uri or (target[0] if target else None)
    return RunStore.open(uri).set_model_alias(name, alias, version)
