"""Retries back off exponentially with jitter, respect retry_on, and time out per attempt."""

from __future__ import annotations

import random

import pytest

import mlorch as mo
from mlorch.core.runtime import backoff_delay
from tests.resources import retry_flows as rf

pytestmark = pytest.mark.usefixtures("no_tracking")


@pytest.fixture
def attempt_log(log):
    log.touch()
    return log


def _attempts(path, name):
    return [(int(a), float(t)) for n, a, t in (line.split() for line in path.read_text().splitlines()) if n == name]


def test_backoff_grows_exponentially_within_jitter():
    rng = random.Random(0)
    for attempt, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0)]:
        delays = [backoff_delay(attempt, 0.5, 2.0, 0.2, rng) for _ in range(200)]
        assert min(delays) >= base * 0.8 and max(delays) <= base * 1.2
        assert max(delays) - min(delays) > base * 0.2  # jitter really varies the delay
    assert backoff_delay(3, 1.0, 2.0, 0.0) == 4.0


def test_flaky_task_succeeds_after_backed_off_retries(attempt_log):
    assert rf.run_flaky(3) == "ok after 3"
    attempts = _attempts(attempt_log, "flaky")
    assert [a for a, _ in attempts] == [1, 2, 3]
    gaps = [t2 - t1 for (_, t1), (_, t2) in zip(attempts, attempts[1:])]
    # delay 0.2 s then 0.4 s, each +/-20 %: distributed's own retries would re-run at once (~0.01 s)
    assert gaps[0] >= 0.16 and gaps[1] >= 0.32


def test_final_error_names_the_task_and_attempt_count(attempt_log):
    with pytest.raises(mo.TaskFailedError) as info:
        rf.run_always_fails()
    err = info.value
    assert err.task == "always_fails" and err.attempts == 2
    assert "task 'always_fails' failed after 2 attempts" in str(err) and "KeyError" in str(err)
    assert isinstance(err.cause, KeyError)
    assert [a for a, _ in _attempts(attempt_log, "always_fails")] == [1, 2]


def test_exceptions_outside_retry_on_fail_at_once(attempt_log):
    with pytest.raises(mo.TaskFailedError, match="failed after 1 attempt: ValueError"):
        rf.run_wrong_kind()
    assert len(_attempts(attempt_log, "wrong_kind")) == 1


def test_timeout_stops_waiting_and_is_retried(attempt_log):
    with pytest.raises(mo.TaskTimeoutError) as info:
        rf.run_too_slow()
    assert "task 'too_slow' timed out after 0.5 s (2 attempts)" in str(info.value)
    assert isinstance(info.value, TimeoutError)
    assert len(_attempts(attempt_log, "too_slow")) == 2


def test_bad_retry_options_fail_at_definition():
    with pytest.raises(mo.FlowDefinitionError, match="retries must be an integer"):
        mo.task(retries=-1)(lambda: None)
    with pytest.raises(mo.FlowDefinitionError, match="timeout must be > 0"):
        mo.task(timeout=0)(lambda: None)
    with pytest.raises(mo.FlowDefinitionError, match="retry_on must be exception types"):
        mo.task(retry_on=("nope",))(lambda: None)


def test_a_pruned_trial_is_not_retried(attempt_log):
    with pytest.raises(mo.TaskFailedError, match="failed after 1 attempt: TrialPruned"):
        rf.run_pruned()
    assert len(_attempts(attempt_log, "pruned")) == 1
