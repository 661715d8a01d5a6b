"""``tasker.test``: the configurable handler tests, examples and benchmarks use, compatible with
the Rust SDK's (``crates/tasker-worker/src/builtin/test_handler.rs``): same keys, same outputs,
same execution log.

Run a worker with it: ``python -m tasker_worker --connect ENDPOINT --handlers
tasker_worker.testing``.

Its behaviour comes from the step's ``handler_config``, overridden key by key for one task by
``task_context.test_behaviour.<step_name>`` (an object with the same keys). Keys (all optional;
unknown keys are ignored; a known key with the wrong type fails the step permanently with
``error_class`` ``InvalidTestBehaviour``):

================================  ===========================================================
``sleep_ms`` (integer ≥ 0)        sleep this long first (wakes at once when the step is asked
                                  to stop; it then raises ``StepCancelled``)
``panic`` (boolean)               fail permanently with ``error_class`` ``panic``, as the Rust
                                  handler's panic is reported
``fail_permanently`` (boolean)    fail permanently (not retryable)
``fail_retryable_attempts`` (K)   fail retryably while ``attempt <= K`` (attempts count from 1)
``retry_after_ms`` (integer ≥ 0)  with ``fail_retryable_attempts``: the retry delay asked for
``error_class`` (string)          the class of the failures above (default
                                  ``TestPermanentFailure`` / ``TestRetryableFailure``)
``output`` (any JSON)             the step's output, returned as is (also ``null``)
================================  ===========================================================

They apply in this order: sleep, panic, permanent failure, retryable failure, output. Without
``output`` the step returns ``{"step": <step_name>, "attempt": <n>, "previous_results": [<sorted
keys>], "worker": <worker_id>}``.

Every execution (before any of the above) appends one line ``<task_id> <step_name> <step_id>
<attempt> <worker_id>\\n`` to the file named by ``TASKER_TEST_EXECUTION_LOG`` (read when the
handler is created), with one ``write`` in append mode so that several processes can share it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .errors import PermanentError, RetryableError
from .handlers import Sequence, Step, StepHandler, Task

TEST_HANDLER_CLASS = "tasker.test"
EXECUTION_LOG_ENV = "TASKER_TEST_EXECUTION_LOG"
INVALID_BEHAVIOUR_ERROR_CLASS = "InvalidTestBehaviour"
_U64_MAX = 2**64 - 1
_MISSING = object()


def _invalid(message: str) -> PermanentError:
    return PermanentError(f"tasker.test: {message}", error_class=INVALID_BEHAVIOUR_ERROR_CLASS)


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _read_u64(keys: dict[str, Any], key: str) -> int | None:
    value = keys.get(key)
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= _U64_MAX:
        raise _invalid(f"{key} must be an integer >= 0, not {_json_text(value)}")
    return value


def _read_bool(keys: dict[str, Any], key: str) -> bool | None:
    value = keys.get(key)
    if value is None:
        return None
    if type(value) is not bool:
        raise _invalid(f"{key} must be true or false, not {_json_text(value)}")
    return value


class TestBehaviour:
    """The behaviour of one ``tasker.test`` execution, read from the step."""

    __test__ = False  # not a pytest test class

    def __init__(self, keys: dict[str, Any]) -> None:
        self.sleep_ms = _read_u64(keys, "sleep_ms")
        self.panic = _read_bool(keys, "panic") or False
        self.fail_permanently = _read_bool(keys, "fail_permanently") or False
        self.fail_retryable_attempts = _read_u64(keys, "fail_retryable_attempts") or 0
        self.retry_after_ms = _read_u64(keys, "retry_after_ms")
        error_class = keys.get("error_class")
        if error_class is not None and (not isinstance(error_class, str) or not error_class):
            raise _invalid(f"error_class must be a non-empty string, not {_json_text(error_class)}")
        self.error_class: str | None = error_class
        self.output = keys.get("output", _MISSING)

    @classmethod
    def for_step(cls, task: Task, step: Step) -> TestBehaviour:
        """The step's ``handler_config``, overridden by ``task_context.test_behaviour.<step>``."""
        keys = dict(step.handler_config)
        all_overrides = task.context.get("test_behaviour")
        overrides = all_overrides.get(step.name) if isinstance(all_overrides, dict) else None
        if isinstance(overrides, dict):
            keys.update(overrides)
        elif overrides is not None:
            raise _invalid(
                f"task_context.test_behaviour.{step.name} must be an object, "
                f"not {_json_text(overrides)}"
            )
        return cls(keys)


class TestHandler(StepHandler):
    """The ``tasker.test`` handler (see the module documentation)."""

    __test__ = False  # not a pytest test class
    handler_class = TEST_HANDLER_CLASS

    def __init__(self, execution_log: str | None = None) -> None:
        if execution_log is None:
            execution_log = os.environ.get(EXECUTION_LOG_ENV) or None
        self.execution_log = execution_log

    def record_execution(self, task: Task, step: Step) -> None:
        if self.execution_log is None:
            return
        line = f"{task.task_id} {step.name} {step.step_id} {step.attempt} {step.worker_id}\n"
        try:
            descriptor = os.open(self.execution_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(descriptor, line.encode("utf-8"))
            finally:
                os.close(descriptor)
        except OSError as error:
            raise PermanentError(
                f"tasker.test cannot append to the execution log {self.execution_log}: {error}",
                error_class="TestExecutionLogError",
            ) from None

    def process(self, task: Task, sequence: Sequence, step: Step) -> Any:
        self.record_execution(task, step)
        behaviour = TestBehaviour.for_step(task, step)
        if behaviour.sleep_ms is not None and step.wait_cancelled(behaviour.sleep_ms / 1000):
            step.raise_if_cancelled()
        if behaviour.panic:
            raise PermanentError(
                f"tasker.test: step {step.name} asked to panic (attempt {step.attempt})",
                error_class="panic",
            )
        if behaviour.fail_permanently:
            raise PermanentError(
                f"tasker.test: step {step.name} is configured to fail permanently",
                error_class=behaviour.error_class or "TestPermanentFailure",
            )
        if step.attempt <= behaviour.fail_retryable_attempts:
            raise RetryableError(
                f"tasker.test: step {step.name} fails attempt {step.attempt} of the first "
                f"{behaviour.fail_retryable_attempts} (retryable)",
                retry_after_ms=behaviour.retry_after_ms,
                error_class=behaviour.error_class or "TestRetryableFailure",
            )
        if behaviour.output is not _MISSING:
            return behaviour.output
        return {
            "step": step.name,
            "attempt": step.attempt,
            "previous_results": sorted(sequence.previous_results),
            "worker": step.worker_id,
        }
