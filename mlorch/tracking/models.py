"""Models: packed where the task runs, logged and registered by the driver.

The worker only cloudpickles ``(model, input_example)``; the driver unpacks it,
picks the MLflow flavor, infers the signature from the example, calls
``mlflow.<flavor>.log_model`` with explicit ``pip_requirements`` (inference of
requirements costs ~7 s a model) and, when asked, registers a new version tagged
with the run, flow and task it came from.

Formats: scikit-learn uses MLflow's default (skops) and falls back to cloudpickle
for estimators skops cannot save; PyTorch uses ``"pickle"`` unless the caller passes
``serialization_format="pt2"`` (pt2 needs ``torch.export`` to succeed on the model).
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from collections.abc import Iterator
from importlib import metadata
from typing import TYPE_CHECKING, Any

from mlorch.tracking.mlflow_private import pinned_tracking

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["FLAVORS", "detect_flavor", "pack", "log_packed_model"]

log = logging.getLogger("mlorch.tracking")
FLAVORS = ("sklearn", "pytorch")
_uri_lock = threading.Lock()  # mlflow's model logging reads the process-global tracking URI


def detect_flavor(model: Any) -> str:
    """``"pytorch"`` for ``torch.nn.Module``, ``"sklearn"`` for estimators; without importing torch."""
    modules = [c.__module__ or "" for c in type(model).__mro__]
    if any(m.startswith("torch.nn") for m in modules):
        return "pytorch"
    if any(m.startswith("sklearn") for m in modules) or (hasattr(model, "fit") and hasattr(model, "predict")):
        return "sklearn"
    raise TypeError(
        f"log_model: cannot tell the MLflow flavor of a {type(model).__module__}.{type(model).__name__}; "
        f"mlorch logs scikit-learn estimators and torch.nn.Module models (pass flavor='sklearn'|'pytorch')"
    )


def pack(model: Any, input_example: Any) -> bytes:
    import cloudpickle

    return cloudpickle.dumps((model, input_example))


def _requirements(*dists: str) -> list[str]:
    out = []
    for dist in dists:
        try:
            out.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return out


def _numpy_example(example: Any) -> Any:
    if example is None:
        return None
    if type(example).__module__.startswith("torch"):
        return example.detach().cpu().numpy()
    return example


def _signature(flavor: str, model: Any, example: Any) -> Any:
    from mlflow.models import infer_signature

    if example is None:
        return None
    try:
        if flavor == "pytorch":
            import torch

            was_training = model.training
            model.eval()
            with torch.no_grad():
                out = model(torch.as_tensor(example))
            model.train(was_training)
            return infer_signature(example, out.detach().cpu().numpy())
        predict = getattr(model, "predict", None)
        return infer_signature(example, predict(example) if predict is not None else None)
    except Exception as exc:  # a signature is a nicety; the model still gets logged
        log.warning("could not infer a signature for the model: %s: %s", type(exc).__name__, exc)
        return infer_signature(example)


def log_packed_model(
    client: MlflowClient,
    tracking_uri: str,
    run_id: str,
    blob: bytes,
    *,
    name: str,
    flavor: str,
    register: bool,
    options: dict[str, Any],
    tags: dict[str, str],
) -> int | None:
    """Unpack, log to ``run_id`` and maybe register; returns the new version number."""
    import cloudpickle
    import mlflow

    model, example = cloudpickle.loads(blob)
    if flavor not in FLAVORS:
        raise ValueError(f"log_model: unknown flavor {flavor!r}; known: {', '.join(FLAVORS)}")
    example = _numpy_example(example)
    kwargs: dict[str, Any] = {
        "name": name,
        "signature": _signature(flavor, model, example),
        "input_example": example,
        "run_id": run_id,
        **options,
    }
    experiment_id = client.get_run(run_id).info.experiment_id
    with _uri_lock, pinned_tracking(tracking_uri, experiment_id):
        if flavor == "pytorch":
            kwargs.setdefault("serialization_format", "pickle")
            kwargs.setdefault("pip_requirements", _requirements("torch", "mlflow", "cloudpickle", "numpy"))
            info = mlflow.pytorch.log_model(model, **kwargs)
        else:
            kwargs.setdefault("pip_requirements", _requirements("scikit-learn", "mlflow", "cloudpickle", "skops"))
            try:
                info = mlflow.sklearn.log_model(model, **kwargs)
            except Exception as exc:
                if "serialization_format" in options:
                    raise
                log.info("skops could not save %s (%s); using cloudpickle", type(model).__name__, exc)
                info = mlflow.sklearn.log_model(model, serialization_format="cloudpickle", **kwargs)
        if not register:
            return None
        with _registry_prints_to_debug():
            version = mlflow.register_model(info.model_uri, name, await_registration_for=60, tags=tags)
    return int(version.version)


@contextlib.contextmanager
def _registry_prints_to_debug() -> Iterator[None]:
    """``mlflow.register_model`` prints "Successfully registered model ..." to stderr; a sweep's console
    shows its bar and summary instead, and the lines go to the log at DEBUG."""
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        yield
    for line in buffer.getvalue().splitlines():
        log.debug("mlflow: %s", line)


def register_version(tracking_uri: str, model_uri: str, name: str) -> int:
    """Register ``model_uri`` as a new version of ``name`` in ``tracking_uri``'s registry; its number."""
    import mlflow

    with _uri_lock, pinned_tracking(tracking_uri):
        with _registry_prints_to_debug():
            return int(mlflow.register_model(model_uri, name, await_registration_for=60).version)
