"""The parts of Optuna mlorch uses that are not public API, wrapped once.

Checked against optuna 5.0.0. The driver writes a trial's user attributes and reads its
id where it holds no ``optuna.Trial`` (a trial a dead driver left RUNNING, one that
timed out), and workers reopen the study's storage from where it lives (a journal
file). The driver-side trial (``remote_trial``) samples through ``Trial._suggest`` (the one
funnel of every ``suggest_*``; its worker-side ``RemoteTrial`` overrides it), keeps the
trial's cached frozen copy current, and drops the study's per-thread trial cache before
sampling for another trial; the journal's operation codes tell mlorch's journal backend
which lines to fsync. Optuna has no public accessor for these. ``tests/test_private_apis.py`` fails if
any of them moves.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.storages.journal._storage import JournalOperation
from optuna.study._frozen import FrozenStudy  # what storages return from get_all_studies
from optuna.trial import FrozenTrial

__all__ = [
    "DURABLE_JOURNAL_OPS",
    "FrozenStudy",
    "cached_trial",
    "drop_thread_cache",
    "journal_file",
    "set_trial_attr",
    "storage_of",
    "suggest_on",
    "trial_id",
]


# Journal lines after which mlorch's journal backend fsyncs (a study made or deleted, a trial's state set).
DURABLE_JOURNAL_OPS = frozenset(
    {JournalOperation.CREATE_STUDY, JournalOperation.DELETE_STUDY, JournalOperation.SET_TRIAL_STATE_VALUES}
)


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage object a study reads and writes."""
    return study._storage


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's id of a trial (unique across studies; ``number`` is unique within one)."""
    return int(trial._trial_id)


def set_trial_attr(study: optuna.Study, trial: optuna.Trial | optuna.trial.FrozenTrial, key: str, value: Any) -> None:
    """A user attribute on a trial that is still RUNNING, without an ``optuna.Trial`` in hand."""
    storage_of(study).set_trial_user_attr(trial_id(trial), key, value)


def journal_file(storage: BaseStorage) -> str | None:
    """The file of a journal storage on a local file, else None."""
    backend = getattr(storage, "_backend", None)
    if isinstance(storage, JournalStorage) and isinstance(backend, JournalFileBackend):
        return str(backend._file_path)
    return None


def suggest_on(trial: optuna.Trial, name: str, distribution: Any) -> Any:
    """``trial.suggest_*`` for any distribution object (the funnel every ``suggest_*`` goes through)."""
    return trial._suggest(name, distribution)


def cached_trial(trial: optuna.Trial) -> FrozenTrial:
    """The trial's own frozen copy, which its ``suggest_*`` read before the storage."""
    return trial._cached_frozen_trial


def drop_thread_cache(study: optuna.Study) -> None:
    """Forget the trials a study cached for this thread (Optuna keeps them from a trial's first
    sample to the next ask/tell of the thread)."""
    study._thread_local.cached_all_trials = None
