"""Secrets never leave in logs: not the driver's, not the workers', not distributed's.

A line can only be scrubbed in the process that writes it, and only of texts that
process knows to be secret. Workers learn them three ways:

- a ``mo.Secret`` remembers its text wherever it is made or unpickled (and a process that
  learns a new secret puts the filter on its console handlers at once);
- a task's arguments with secret names (``api_key=...``) are remembered when the call is
  traced (driver) and again before it runs (worker), through the core's argument observers;
- a flow's secret parameters, which may reach a task under an ordinary name, are sent to
  every worker (present and future) in a worker plugin when a run starts, only when the
  driver's set of secrets has grown.

In each process a :class:`ScrubFilter` sits on every handler of the root, ``mlorch`` and
``distributed`` loggers (records propagated from any logger pass through them) and on
the ``distributed.worker`` logger (its ``Compute Failed`` line quotes the task's error).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from distributed import Client, WorkerPlugin

from mlorch.tracking.params import flatten
from mlorch.tracking.secrets import HANDLER_LOGGERS, is_secret_name, known, mask, remember, scrub_handlers, scrub_logs

if TYPE_CHECKING:
    from mlorch.core.task import Task
    from mlorch.execution.runner import FlowRun

__all__ = ["SecretsHook", "ShareSecrets", "install_scrubbers", "remember_arguments"]

RECORD_LOGGERS = ("mlorch.worker", "distributed.worker")


def install_scrubbers() -> None:
    """Scrub this process's log output (idempotent; handlers added later need another call)."""
    scrub_logs(*RECORD_LOGGERS)
    scrub_handlers(*HANDLER_LOGGERS)


# Task -> (its positional parameter names, the secret ones among all, whether it takes **kwargs).
_shapes: weakref.WeakKeyDictionary[Any, tuple[tuple[str, ...], frozenset[str], bool]] = weakref.WeakKeyDictionary()


def _shape(task: Task[..., Any]) -> tuple[tuple[str, ...], frozenset[str], bool]:
    shape = _shapes.get(task)
    if shape is None:
        params = task.signature.parameters.values()
        positional = tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
        secret = frozenset(p.name for p in params if is_secret_name(p.name))
        shape = (positional, secret, any(p.kind is p.VAR_KEYWORD for p in params))
        _shapes[task] = shape
    return shape


def remember_arguments(task: Task[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Argument observer: remember the secret-named arguments of one task call in this process.

    On the tracing hot path: a call with no secret-named parameter and no dict argument
    costs a lookup and a loop over its arguments.
    """
    positional, secret, var_keyword = _shape(task)
    found = False
    for i, value in enumerate(args):
        found |= _observe(positional[i] if i < len(positional) else None, value, secret)
    for name, value in kwargs.items():
        found |= _observe(name, value, secret, var_keyword and name not in task.signature.parameters)
    if found:  # the process now knows a secret: make sure its handlers scrub
        install_scrubbers()


def _observe(name: str | None, value: Any, secret: frozenset[str], extra: bool = False) -> bool:
    if name is not None and (name in secret or (extra and is_secret_name(name))):
        mask(name, value)
        return True
    if type(value) is dict:  # a config dict: its own keys may be secret ("db.password")
        found = False
        for key, item in flatten(value).items():
            if is_secret_name(key):
                mask(key, item)
                found = True
        return found
    return False


class ShareSecrets(WorkerPlugin):
    """Hands the driver's secret texts to a worker so its own log lines can be scrubbed."""

    name = "mlorch-secrets"

    def __init__(self, texts: tuple[str, ...]):
        self.texts = texts

    def setup(self, worker: Any) -> None:
        for text in self.texts:
            remember(text, 1)
        install_scrubbers()


# Client -> how many secret texts its workers were given (the set only grows).
_shared: weakref.WeakKeyDictionary[Client, int] = weakref.WeakKeyDictionary()


def share(client: Client) -> None:
    """Send this process's secret texts to the workers of ``client`` if they have not got them all."""
    texts = known()
    if not texts or _shared.get(client) == len(texts):
        return
    client.register_plugin(ShareSecrets(texts), name=ShareSecrets.name)
    _shared[client] = len(texts)


class SecretsHook:
    """Run hook: a flow's secret parameters are remembered here and on the workers before tasks run.

    It runs whether or not MLflow tracking is on: logs need scrubbing either way.
    """

    def on_run_start(self, run: FlowRun) -> None:
        for name, value in flatten(run.params).items():
            mask(name, value)
        install_scrubbers()
        share(run.cluster.client)

    def on_run_end(self, run: FlowRun, result: Any, error: BaseException | None) -> None:
        pass
