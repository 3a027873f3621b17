"""The project journal's backend: Optuna's file format and lock, shared with plain Optuna processes."""

from __future__ import annotations

import subprocess
import sys

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from mlorch.tuning.journal import JournalFile

WRITER = """
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
optuna.logging.set_verbosity(optuna.logging.WARNING)
storage = JournalStorage(JournalFileBackend({path!r}))
study = optuna.load_study(study_name="shared", storage=storage, sampler=optuna.samplers.RandomSampler(seed=1))
print("ready", flush=True)
study.optimize(objective, n_trials=200)
"""
OBJECTIVE = """
import time
def objective(trial):
    time.sleep(0.002)
    return trial.suggest_float("x", 0, 1) + trial.suggest_int("n", 0, 9)
"""


def _summary(study: optuna.Study) -> list[tuple[int, int, str, dict]]:
    return [(t._trial_id, t.number, t.state.name, t.params) for t in study.get_trials(deepcopy=False)]


def test_mlorch_and_plain_optuna_write_one_journal_at_once(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = str(tmp_path / "journal.log")
    ours = optuna.create_study(study_name="shared", storage=JournalStorage(JournalFile(path)))
    scope: dict = {}
    exec(OBJECTIVE, scope)
    other = subprocess.Popen([sys.executable, "-c", OBJECTIVE + WRITER.format(path=path)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "ready"
        ours.optimize(scope["objective"], n_trials=200)
    finally:
        assert other.wait(120) == 0
    fresh = optuna.load_study(study_name="shared", storage=JournalStorage(JournalFileBackend(path)))
    assert len(fresh.trials) == 400
    assert sorted(t.number for t in fresh.trials) == list(range(400))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in fresh.trials)
    writers = [line.split(b'"worker_id":"', 1)[1][:8] for line in open(path, "rb") if b'"op_code":4' in line]
    assert sum(a != b for a, b in zip(writers, writers[1:])) > 10  # the two processes' trials interleave
    # this process's view, kept up to date without rereading what it wrote, is the file's
    assert _summary(ours) == _summary(fresh)
    reread = optuna.load_study(study_name="shared", storage=JournalStorage(JournalFile(path)))
    assert _summary(reread) == _summary(fresh)


def test_a_line_still_being_written_is_read_once_it_is_complete(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = tmp_path / "journal.log"
    study = optuna.create_study(study_name="s", storage=JournalStorage(JournalFile(str(path))))
    writer = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    writer.enqueue_trial({"x": 0.5})
    line = path.read_bytes().splitlines(keepends=True)[-1]
    path.write_bytes(path.read_bytes()[: -len(line)] + line[:10])  # another process halfway through its write
    assert study.get_trials(deepcopy=False) == []
    with open(path, "ab") as f:
        f.write(line[10:])
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["WAITING"] and trials[0].system_attrs["fixed_params"] == {"x": 0.5}


def test_the_file_is_fsynced_when_a_study_is_made_and_a_trial_ends_not_after_every_line(tmp_path, monkeypatch):
    import os

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    path = tmp_path / "journal.log"
    study = optuna.create_study(study_name="durable", storage=JournalStorage(JournalFile(str(path))))
    assert len(synced) == 1  # the study
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.suggest_int("n", 0, 3)
    trial.set_user_attr("k", "v")
    assert len(synced) == 1  # asked, two parameters, an attribute: written, not fsynced
    assert len(path.read_text().splitlines()) == 5  # ... but on the file for other readers at once
    study.tell(trial, 1.0)
    assert len(synced) == 2  # the trial's end is on disk
