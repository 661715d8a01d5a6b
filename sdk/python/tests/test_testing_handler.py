"""The Python ``tasker.test`` handler: the same keys and outputs as the Rust one."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tasker_worker import PermanentError, RetryableError, Sequence, Step, StepCancelled, Task
from tasker_worker.testing import INVALID_BEHAVIOUR_ERROR_CLASS, TEST_HANDLER_CLASS, TestHandler


def step(
    config: dict[str, Any], attempt: int = 1, cancellation: threading.Event | None = None
) -> Step:
    return Step(
        name="charge",
        step_id=11,
        task_id=5,
        batch_id="0195b4ba-8d3a-7f12-9c4e-6a1d2b3c4d5e",
        handler_class=TEST_HANDLER_CLASS,
        handler_config=config,
        attempt=attempt,
        retry_limit=3,
        idempotency_key=f"11:{attempt}",
        timeout_ms=None,
        worker_id="worker-a",
        cancellation=cancellation,
    )


PREVIOUS = Sequence({"validate": 1, "reserve": {"ok": True}})


def run(
    config: dict[str, Any], context: dict[str, Any] | None = None, attempt: int = 1, **kwargs: Any
) -> Any:
    handler = kwargs.pop("handler", None) or TestHandler(execution_log=None)
    return handler.process(Task(5, context or {}), PREVIOUS, step(config, attempt, **kwargs))


def test_default_output_names_step_attempt_parents_and_worker() -> None:
    assert run({}, attempt=2) == {
        "step": "charge",
        "attempt": 2,
        "previous_results": ["reserve", "validate"],
        "worker": "worker-a",
    }


def test_output_is_returned_as_is() -> None:
    assert run({"output": {"total": 42}}) == {"total": 42}
    assert run({"output": None}) is None


def test_fails_retryably_for_the_first_k_attempts_then_succeeds() -> None:
    config = {"fail_retryable_attempts": 2, "retry_after_ms": 1500}
    for attempt in (1, 2):
        with pytest.raises(RetryableError) as failure:
            run(config, attempt=attempt)
        assert failure.value.retry_after_ms == 1500
        assert failure.value.error_class == "TestRetryableFailure"
        assert f"attempt {attempt}" in failure.value.message
    assert run(config, attempt=3)["attempt"] == 3
    with pytest.raises(RetryableError) as failure:
        run({"fail_retryable_attempts": 1})
    assert failure.value.retry_after_ms is None


def test_fails_permanently_with_the_configured_class() -> None:
    with pytest.raises(PermanentError) as failure:
        run({"fail_permanently": True, "error_class": "CardDeclined"})
    assert failure.value.error_class == "CardDeclined"
    with pytest.raises(PermanentError) as panic:
        run({"panic": True, "fail_permanently": True})
    assert panic.value.error_class == "panic"


def test_task_context_overrides_the_handler_config_per_step() -> None:
    config = {"fail_permanently": True, "output": "config"}
    context = {
        "test_behaviour": {
            "charge": {"fail_permanently": False},
            "other_step": {"output": "not mine"},
        }
    }
    assert run(config, context) == "config"


@pytest.mark.parametrize(
    ("config", "context", "named"),
    [
        ({"sleep_ms": "ten"}, {}, "sleep_ms"),
        ({"sleep_ms": 1.0}, {}, "sleep_ms"),
        ({"fail_retryable_attempts": -1}, {}, "fail_retryable_attempts"),
        ({"panic": 1}, {}, "panic"),
        ({"error_class": ""}, {}, "error_class"),
        ({}, {"test_behaviour": {"charge": 3}}, "test_behaviour.charge"),
    ],
)
def test_wrong_types_fail_permanently_naming_the_key(
    config: dict[str, Any], context: dict[str, Any], named: str
) -> None:
    with pytest.raises(PermanentError) as failure:
        run(config, context)
    assert failure.value.error_class == INVALID_BEHAVIOUR_ERROR_CLASS
    assert named in failure.value.message


def test_sleeps_and_stops_sleeping_when_cancelled() -> None:
    started = time.monotonic()
    assert run({"sleep_ms": 100})["step"] == "charge"
    assert time.monotonic() - started >= 0.09
    cancelled = threading.Event()
    cancelled.set()
    started = time.monotonic()
    with pytest.raises(StepCancelled):
        run({"sleep_ms": 3_600_000}, cancellation=cancelled)
    assert time.monotonic() - started < 60


def test_records_every_execution_as_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "executions.log"
    monkeypatch.setenv("TASKER_TEST_EXECUTION_LOG", str(log))
    handler = TestHandler()
    run({}, handler=handler)
    with pytest.raises(PermanentError):
        run({"fail_permanently": True}, attempt=2, handler=handler)
    assert log.read_text() == "5 charge 11 1 worker-a\n5 charge 11 2 worker-a\n"


def test_an_unwritable_execution_log_fails_the_step(tmp_path: Path) -> None:
    handler = TestHandler(execution_log=str(tmp_path / "missing-dir" / "log"))
    with pytest.raises(PermanentError) as failure:
        run({}, handler=handler)
    assert failure.value.error_class == "TestExecutionLogError"
