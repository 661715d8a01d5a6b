"""The worker against a scripted orchestrator (a real ROUTER on a loopback port).

Every test waits on events — a message arriving at the ROUTER, a handler reaching a point — with
timeouts that only guard against hangs. Where a test must show that something does *not* happen,
it waits for a number of worker heartbeats, i.e. of turns of the worker's own loop.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from scripted_orchestrator import (
    GUARD,
    ScriptedOrchestrator,
    WorkerThread,
    new_batch_id,
    step_request,
)

from tasker_worker import (
    HelloRejected,
    PermanentError,
    RetryableError,
    Step,
    StepHandler,
    Worker,
    __version__,
    handler,
)
from tasker_worker.protocol import Timestamp
from tasker_worker.testing import TestHandler

WORKER_ID = "python-test@host:1-abcdef01"


def seconds_between(earlier: Any, later: Any) -> float:
    """Seconds between the worker-side timestamps of two received messages."""
    first = Timestamp.parse(earlier["timestamp"])
    second = Timestamp.parse(later["timestamp"])
    assert first is not None and second is not None
    return (second.seconds - first.seconds) + (second.nanos - first.nanos) / 1e9


class Gates:
    """Events tests use to hold handlers at a point; all opened at teardown."""

    def __init__(self) -> None:
        self._events: dict[Any, threading.Event] = {}
        self._lock = threading.Lock()
        self.started: list[int] = []
        self.started_changed = threading.Condition(self._lock)
        self.running = 0
        self.max_running = 0
        self.steps: dict[int, Step] = {}

    def event(self, key: Any) -> threading.Event:
        with self._lock:
            return self._events.setdefault(key, threading.Event())

    def open(self, key: Any) -> None:
        self.event(key).set()

    def open_all(self) -> None:
        with self._lock:
            events = list(self._events.values())
        for event in events:
            event.set()

    def enter(self, step: Step) -> None:
        with self.started_changed:
            self.started.append(step.step_id)
            self.steps[step.step_id] = step
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.started_changed.notify_all()

    def leave(self) -> None:
        with self._lock:
            self.running -= 1

    def wait_started(self, count: int, timeout: float = GUARD) -> list[int]:
        with self.started_changed:
            ok = self.started_changed.wait_for(lambda: len(self.started) >= count, timeout)
        assert ok, f"only {self.started} started"
        return list(self.started)


@pytest.fixture
def orchestrator() -> Iterator[ScriptedOrchestrator]:
    scripted = ScriptedOrchestrator()
    yield scripted
    scripted.close()


@pytest.fixture
def gates() -> Iterator[Gates]:
    gates = Gates()
    yield gates
    gates.open_all()


@pytest.fixture
def start(orchestrator: ScriptedOrchestrator, gates: Gates) -> Iterator[Any]:
    """Starts a worker connected to the scripted orchestrator; stops it at teardown."""
    threads: list[WorkerThread] = []

    def start_worker(handlers: Any, **options: Any) -> WorkerThread:
        settings: dict[str, Any] = {
            "capacity": 4,
            "worker_id": WORKER_ID,
            "install_signal_handlers": False,
            "shutdown_grace": 2.0,
            "shutdown_ack_timeout": 0.3,
        }
        settings.update(options)
        thread = WorkerThread(Worker(orchestrator.endpoint, handlers, **settings))
        threads.append(thread)
        return thread

    yield start_worker
    gates.open_all()
    for thread in threads:
        thread.worker.request_shutdown("test over")
    for thread in threads:
        thread.join()


def gated_handler(gates: Gates, handler_class: str = "Gated") -> Any:
    """A handler that records its start, waits for ``gates.event(step_id)`` and returns
    ``{"step": id}``."""

    @handler(handler_class)
    def gated(task: Any, sequence: Any, step: Step) -> Any:
        gates.enter(step)
        try:
            assert gates.event(step.step_id).wait(GUARD), "gate never opened"
            return {"step": step.step_id}
        finally:
            gates.leave()

    return gated


# ----- registration and heartbeats -----


def test_hello_announces_the_worker_without_a_routing_identity(
    start: Any, orchestrator: ScriptedOrchestrator
) -> None:
    start(
        [TestHandler, gated_handler(Gates())], capacity=7, heartbeat_interval=0.25, name="payments"
    )
    hello = orchestrator.expect("hello", ignore=())
    assert hello.message == {
        "message_type": "hello",
        "protocol_version": "1.0",
        "worker_id": WORKER_ID,
        "name": "payments",
        "sdk": {"name": "tasker-worker-python", "version": __version__, "language": "python"},
        "handler_classes": ["Gated", "tasker.test"],
        "capacity": 7,
        "heartbeat_interval_ms": 250,
        "in_flight": [],
    }
    # The ROUTER gave the connection its own identity: 5 bytes starting with 0. A worker that
    # set ZMQ_ROUTING_ID would show up with its chosen bytes instead.
    assert len(hello.identity) == 5 and hello.identity[0] == 0


def test_default_worker_id_and_no_heartbeat_request(
    start: Any, orchestrator: ScriptedOrchestrator
) -> None:
    start([TestHandler], worker_id=None)
    hello = orchestrator.expect("hello", ignore=())
    worker_id = hello["worker_id"]
    host_pid, _, random_part = worker_id.rpartition("-")
    assert len(random_part) == 8 and int(random_part, 16) >= 0
    assert host_pid.endswith(f"-{__import__('os').getpid()}")
    assert hello["heartbeat_interval_ms"] is None


def test_nothing_but_hello_before_welcome_then_heartbeats_every_interval(
    start: Any, orchestrator: ScriptedOrchestrator
) -> None:
    start([TestHandler], welcome_timeout=0.3)
    first = orchestrator.expect("hello", ignore=())
    # No answer: after the welcome timeout the worker opens a fresh connection and says hello
    # again. Nothing else may arrive in between (ignore=() fails on anything else).
    second = orchestrator.expect("hello", ignore=())
    assert second.identity != first.identity
    orchestrator.welcome(second.identity, WORKER_ID, heartbeat_interval_ms=100)
    beats = [orchestrator.expect("heartbeat", ignore=()) for _ in range(4)]
    for beat in beats:
        assert beat.identity == second.identity
        assert beat.message["worker_id"] == WORKER_ID
        assert beat.message["in_flight"] == 0
        assert beat.message["free_capacity"] == 4
    # Spacing by the worker's own timestamps (the test thread may read late, the worker may
    # not send early): at least the interval, less the millisecond truncation.
    gaps = [
        seconds_between(earlier, later) for earlier, later in zip(beats, beats[1:], strict=False)
    ]
    assert min(gaps) >= 0.099, gaps


def test_heartbeats_continue_while_every_handler_thread_is_busy(
    start: Any, orchestrator: ScriptedOrchestrator, gates: Gates
) -> None:
    start([gated_handler(gates)], capacity=2)
    identity, _ = orchestrator.handshake()
    orchestrator.step_batch(identity, [step_request(1, "Gated"), step_request(2, "Gated")])
    gates.wait_started(2)
    # Skip heartbeats sent before the batch arrived; then three more while both threads block.
    orchestrator.expect("heartbeat", ignore=(), where=lambda beat: beat["in_flight"] == 2)
    beats = [orchestrator.expect("heartbeat", ignore=()) for _ in range(3)]
    assert [beat["in_flight"] for beat in beats] == [2, 2, 2]
    assert [beat["free_capacity"] for beat in beats] == [0, 0, 0]


# ----- results -----


def test_a_batch_of_three_gives_three_partial_results_and_one_completion(
    start: Any, orchestrator: ScriptedOrchestrator
) -> None:
    start([TestHandler])
    identity, _ = orchestrator.handshake()
    steps = [
        step_request(11, handler_config={"output": {"n": 1}}, task_id=5),
        step_request(
            12, handler_config={"fail_permanently": True, "error_class": "CardDeclined"}, task_id=5
        ),
        step_request(
            13,
            attempt=2,
            handler_config={"fail_retryable_attempts": 2, "retry_after_ms": 1500},
            task_id=5,
        ),
    ]
    batch_id = orchestrator.step_batch(identity, steps)
    results = {}
    for _ in range(3):
        result = orchestrator.expect("partial_result")
        results[result["step_id"]] = result
    completion = orchestrator.expect("batch_completion")

    assert sorted(result["sequence"] for result in results.values()) == [1, 2, 3]
    assert all(
        result["batch_id"] == batch_id and result["worker_id"] == WORKER_ID
        for result in results.values()
    )
    assert results[11]["status"] == "completed" and results[11]["output"] == {"n": 1}
    assert results[11]["error"] is None and results[11]["attempt"] == 1
    assert results[12]["status"] == "failed" and results[12]["output"] is None
    assert results[12]["error"]["error_class"] == "CardDeclined"
    assert results[12]["error"]["retryable"] is False
    assert results[13]["attempt"] == 2
    assert results[13]["error"] == {
        "message": "tasker.test: step step_13 fails attempt 2 of the first 2 (retryable)",
        "error_class": "TestRetryableFailure",
        "retryable": True,
        "retry_after_ms": 1500,
        "backtrace": results[13]["error"]["backtrace"],
    }
    assert completion.message["batch_id"] == batch_id
    assert completion["total_steps"] == 3
    assert completion["completed_steps"] == 1
    assert completion["failed_steps"] == 2
    assert completion["step_summaries"] == [
        {"step_id": 11, "status": "completed"},
        {"step_id": 12, "status": "failed"},
        {"step_id": 13, "status": "failed"},
    ]
    assert completion.at >= max(result.at for result in results.values())


def test_handlers_see_task_sequence_and_step(
    start: Any, orchestrator: ScriptedOrchestrator
) -> None:
    seen: dict[str, Any] = {}

    class Inspect(StepHandler):
        handler_class = "Inspect"

        def process(self, task: Any, sequence: Any, step: Step) -> Any:
            seen.update(
                task_id=task.id,
                context=task.context,
                parents=sorted(sequence),
                payment=sequence["process_payment"],
                name=step.name,
                step_id=step.id,
                config=step.handler_config,
                attempt=step.attempt,
                retry_limit=step.retry_limit,
                key=step.idempotency_key,
                timeout=step.timeout,
                cancelled=step.cancelled,
                worker=step.worker_id,
            )
            return None

    start([Inspect])
    identity, _ = orchestrator.handshake()
    orchestrator.step_batch(
        identity,
        [
            step_request(
                8127,
                "Inspect",
                task_id=6591,
                step_name="ship_order",
                handler_config={"send_notifications": True},
                task_context={"order_id": 12345},
                previous_results={
                    "process_payment": {"transaction_id": "txn_789"},
                    "validate_order": {},
                },
                attempt=3,
                retry_limit=5,
                timeout_ms=30000,
            )
        ],
    )
    result = orchestrator.expect("partial_result")
    assert result["status"] == "completed" and result["output"] is None
    assert seen == {
        "task_id": 6591,
        "context": {"order_id": 12345},
        "parents": ["process_payment", "validate_order"],
        "payment": {"transaction_id": "txn_789"},
        "name": "ship_order",
        "step_id": 8127,
        "config": {"send_notifications": True},
        "attempt": 3,
        "retry_limit": 5,
        "key": "8127:3",
        "timeout": 30.0,
        "cancelled": False,
        "worker": WORKER_ID,
    }


def test_exceptions_become_failures_with_class_retryability_and_backtrace(
    start: Any, orchestrator: ScriptedOrchestrator
) -> None:
    class CardDeclined(PermanentError):
        pass

    def lookup_price(items: dict[str, int]) -> int:
        return items["missing-sku"]

    @handler("Raise")
    def raising(task: Any, sequence: Any, step: Step) -> Any:
        kind = step.handler_config["kind"]
        if kind == "retryable":
            raise RetryableError("rate limited", retry_after=1.5)
        if kind == "permanent":
            raise CardDeclined("card declined")
        return lookup_price({})

    start([raising])
    identity, _ = orchestrator.handshake()
    orchestrator.step_batch(
        identity,
        [
            step_request(index, "Raise", handler_config={"kind": kind})
            for index, kind in enumerate(["retryable", "permanent", "bug"], start=1)
        ],
    )
    errors = {}
    for _ in range(3):
        result = orchestrator.expect("partial_result")
        assert result["status"] == "failed"
        errors[result["step_id"]] = result["error"]
    assert errors[1]["error_class"] == "RetryableError"
    assert errors[1]["retryable"] is True and errors[1]["retry_after_ms"] == 1500
    assert errors[2]["error_class"] == "CardDeclined" and errors[2]["retryable"] is False
    assert errors[2]["message"] == "card declined" and errors[2]["retry_after_ms"] is None
    # An unexpected exception is a retryable failure named by its class, innermost frame first.
    assert errors[3]["error_class"] == "KeyError"
    assert errors[3]["retryable"] is True
    assert errors[3]["message"] == "'missing-sku'"
    assert "in lookup_price" in errors[3]["backtrace"][0]
    assert "in raising" in errors[3]["backtrace"][1]
    assert all("tasker_worker" not in line for line in errors[3]["backtrace"])


def test_unknown_handler_class_is_a_retryable_reserved_failure(
    start: Any, orchestrator: ScriptedOrchestrator
) -> None:
    start([TestHandler])
    identity, _ = orchestrator.handshake()
    orchestrator.step_batch(identity, [step_request(1, "Nobody::Handles"), step_request(2)])
    first = orchestrator.expect("partial_result")
    assert first["step_id"] == 1
    assert first["error"]["error_class"] == "tasker.unknown_handler_class"
    assert first["error"]["retryable"] is True
    assert "Nobody::Handles" in first["error"]["message"]
    assert orchestrator.expect("partial_result")["status"] == "completed"
    assert orchestrator.expect("batch_completion")["failed_steps"] == 1


def test_outputs_that_cannot_travel_fail_permanently(
    start: Any, orchestrator: ScriptedOrchestrator
) -> None:
    @handler("Output")
    def output(task: Any, sequence: Any, step: Step) -> Any:
        kind = step.handler_config["kind"]
        if kind == "large":
            return "x" * 70_000
        if kind == "set":
            return {1, 2}
        if kind == "nan":
            return float("nan")
        nested: Any = "bottom"
        for _ in range(70):
            nested = [nested]
        return nested

    start([output])
    identity, _ = orchestrator.handshake(max_frame_bytes=65536)
    kinds = ["large", "set", "nan", "deep"]
    orchestrator.step_batch(
        identity,
        [
            step_request(index, "Output", handler_config={"kind": kind})
            for index, kind in enumerate(kinds, 1)
        ],
    )
    errors = {}
    for _ in kinds:
        result = orchestrator.expect("partial_result")
        assert result["status"] == "failed" and result["output"] is None
        assert result["error"]["retryable"] is False
        errors[kinds[result["step_id"] - 1]] = result["error"]
    assert errors["large"]["error_class"] == "tasker.output_too_large"
    assert "65536" in errors["large"]["message"]
    assert errors["set"]["error_class"] == "TypeError"
    assert errors["nan"]["error_class"] == "ValueError"
    assert errors["deep"]["error_class"] == "ValueError" and "64" in errors["deep"]["message"]


def test_a_long_error_message_is_cut_to_the_limit_not_rejected(
    start: Any, orchestrator: ScriptedOrchestrator
) -> None:
    @handler("Long")
    def long_error(task: Any, sequence: Any, step: Step) -> Any:
        raise PermanentError("é" * 10_000, error_class="E" * 300)

    start([long_error])
    identity, _ = orchestrator.handshake()
    orchestrator.step_batch(identity, [step_request(1, "Long")])
    error = orchestrator.expect("partial_result")["error"]
    assert len(error["message"].encode()) == 16384
    assert error["error_class"] == "E" * 255


def test_results_are_resent_until_acknowledged(
    start: Any, orchestrator: ScriptedOrchestrator
) -> None:
    start([TestHandler])
    identity, _ = orchestrator.handshake(heartbeat_interval_ms=100, liveness=4)
    orchestrator.step_batch(identity, [step_request(1)])
    result = orchestrator.expect("partial_result")
    completion = orchestrator.expect("batch_completion")
    # Not acknowledged: after liveness x interval (400 ms) both are sent again, byte for byte,
    # right after a heartbeat (re-sends are checked when a heartbeat is due).
    again = orchestrator.expect("partial_result")
    assert again.frame == result.frame
    before = [
        received
        for received in orchestrator.log
        if received.type == "heartbeat" and received.at <= again.at
    ]
    assert seconds_between(result, before[-1]) >= 0.399
    assert orchestrator.expect("batch_completion").frame == completion.frame
    orchestrator.ack(identity, result, completion)
    # Ten heartbeats (a second, two re-send periods) with nothing else: the acks dropped them.
    orchestrator.expect_nothing_but((), heartbeats=10)


def test_after_silence_the_worker_reconnects_rehellos_and_resends_held_results(
    start: Any, orchestrator: ScriptedOrchestrator, gates: Gates
) -> None:
    orchestrator.auto_heartbeat = False
    worker = start([TestHandler, gated_handler(gates)]).worker
    identity, _ = orchestrator.handshake(heartbeat_interval_ms=100, liveness=3)
    batch_id = orchestrator.step_batch(identity, [step_request(1, handler_config={"output": 1})])
    running_batch = orchestrator.step_batch(identity, [step_request(2, "Gated")])
    result = orchestrator.expect("partial_result")
    completion = orchestrator.expect("batch_completion")
    gates.wait_started(1)
    # The orchestrator stays silent: after 3 intervals the worker opens a new connection and
    # says hello, listing the step it runs and the step whose result it holds.
    rehello = orchestrator.expect("hello")
    assert rehello.identity != identity
    assert {(ref["batch_id"], ref["step_id"]) for ref in rehello["in_flight"]} == {
        (batch_id, 1),
        (running_batch, 2),
    }
    orchestrator.welcome(rehello.identity, WORKER_ID, liveness=100)
    resent = [orchestrator.expect("partial_result"), orchestrator.expect("batch_completion")]
    assert [received.frame for received in resent] == [result.frame, completion.frame]
    assert all(received.identity == rehello.identity for received in resent)
    orchestrator.ack(rehello.identity, *resent, outcome="duplicate")
    gates.open(2)
    late = orchestrator.expect("partial_result")
    assert late["step_id"] == 2 and late["sequence"] == 2
    assert worker.stats().reconnects == 1
    assert worker.stats().results_resent == 2


def test_not_registered_makes_the_worker_say_hello_again_on_the_same_socket(
    start: Any, orchestrator: ScriptedOrchestrator
) -> None:
    orchestrator.auto_heartbeat = False
    start([TestHandler], welcome_timeout=0.2)
    identity, _ = orchestrator.handshake()
    while True:  # answer heartbeats as a restarted orchestrator would, until hello comes
        received = orchestrator.recv()
        assert received is not None, "no hello after not_registered"
        if received.type == "hello":
            break
        assert received.type == "heartbeat"
        orchestrator.send(
            identity,
            orchestrator.envelope(
                "error",
                code="not_registered",
                message='message_type "heartbeat" received before hello; send hello',
                offending_message_type="heartbeat",
                batch_id=None,
                step_id=None,
            ),
        )
    assert received.identity == identity
    orchestrator.welcome(identity, WORKER_ID)
    assert orchestrator.expect("heartbeat", ignore=()).identity == identity


def test_the_first_not_registered_of_a_session_gets_a_hello_at_once(
    start: Any, orchestrator: ScriptedOrchestrator
) -> None:
    # A restarted orchestrator gives workers a few liveness windows to claim their steps; a
    # worker registered moments before the restart must not wait out its welcome timeout.
    start([TestHandler], welcome_timeout=60)
    identity, _ = orchestrator.handshake(heartbeat_interval_ms=100, liveness=100)
    orchestrator.send(
        identity,
        orchestrator.envelope(
            "error",
            code="not_registered",
            message="`heartbeat` from a connection without a session: send hello first",
            offending_message_type="heartbeat",
            batch_id=None,
            step_id=None,
        ),
    )
    rehello = orchestrator.expect("hello", timeout=5)
    assert rehello.identity == identity
    orchestrator.welcome(identity, WORKER_ID, heartbeat_interval_ms=100, liveness=100)
    # A second not_registered within the welcome timeout is not answered with another hello.
    orchestrator.send(
        identity,
        orchestrator.envelope(
            "error",
            code="not_registered",
            message="`heartbeat` from a connection without a session: send hello first",
            offending_message_type="heartbeat",
            batch_id=None,
            step_id=None,
        ),
    )
    orchestrator.expect_nothing_but(("heartbeat",), heartbeats=5)


def test_an_error_naming_a_held_result_drops_it(
    start: Any, orchestrator: ScriptedOrchestrator
) -> None:
    start([TestHandler])
    identity, _ = orchestrator.handshake(heartbeat_interval_ms=100, liveness=4)
    batch_id = orchestrator.step_batch(identity, [step_request(4)])
    orchestrator.expect("partial_result")
    completion = orchestrator.expect("batch_completion")
    orchestrator.ack(identity, completion)
    orchestrator.send(
        identity,
        orchestrator.envelope(
            "error",
            code="worker_id_mismatch",
            message="partial_result from the wrong worker",
            offending_message_type="partial_result",
            batch_id=batch_id,
            step_id=4,
        ),
    )
    # Re-sends would come every 400 ms; ten heartbeats pass without one.
    orchestrator.expect_nothing_but((), heartbeats=10)


# ----- capacity -----


def test_steps_run_concurrently_up_to_capacity(
    start: Any, orchestrator: ScriptedOrchestrator, gates: Gates
) -> None:
    start([gated_handler(gates)], capacity=3)
    identity, _ = orchestrator.handshake()
    orchestrator.step_batch(identity, [step_request(1, "Gated"), step_request(2, "Gated")])
    orchestrator.step_batch(identity, [step_request(3, "Gated")])
    assert sorted(gates.wait_started(3)) == [1, 2, 3]
    assert gates.running == 3
    for step_id in (1, 2, 3):
        gates.open(step_id)
    assert orchestrator.expect("partial_result")["status"] == "completed"


def test_capacity_is_never_exceeded_and_excess_steps_wait(
    start: Any, orchestrator: ScriptedOrchestrator, gates: Gates
) -> None:
    worker = start([gated_handler(gates)], capacity=2).worker
    identity, _ = orchestrator.handshake()
    batch_id = orchestrator.step_batch(
        identity, [step_request(step_id, "Gated") for step_id in (1, 2, 3, 4)]
    )
    # The orchestrator broke its credit: the worker says so, and queues the excess.
    error = orchestrator.expect("error")
    assert error["code"] == "capacity_exceeded" and error["batch_id"] == batch_id
    assert gates.wait_started(2) == [1, 2]
    beats = orchestrator.expect_nothing_but((), heartbeats=3)
    assert [beat["in_flight"] for beat in beats] == [4, 4, 4]
    assert gates.started == [1, 2], "a third step started beyond capacity"
    gates.open(1)
    assert orchestrator.expect("partial_result")["step_id"] == 1
    assert gates.wait_started(3) == [1, 2, 3]
    for step_id in (2, 3, 4):
        gates.open(step_id)
    done = {orchestrator.expect("partial_result")["step_id"] for _ in range(3)}
    assert done == {2, 3, 4}
    assert orchestrator.expect("batch_completion")["completed_steps"] == 4
    assert gates.max_running == 2
    assert worker.stats().steps_started == 4


def test_a_duplicate_step_batch_is_ignored(start: Any, orchestrator: ScriptedOrchestrator) -> None:
    runs: list[int] = []

    @handler("Count")
    def count(task: Any, sequence: Any, step: Step) -> Any:
        runs.append(step.step_id)
        return len(runs)

    start([count])
    identity, _ = orchestrator.handshake()
    steps = [step_request(1, "Count")]
    batch_id = orchestrator.step_batch(identity, steps)
    result = orchestrator.expect("partial_result")
    completion = orchestrator.expect("batch_completion")
    orchestrator.step_batch(identity, steps, batch_id)  # while held
    orchestrator.ack(identity, result, completion)
    orchestrator.step_batch(identity, steps, batch_id)  # after the acks
    orchestrator.expect_nothing_but((), heartbeats=4)
    assert runs == [1]


# ----- cancellation and timeouts -----


def cooperative_handler(gates: Gates) -> Any:
    @handler("Cooperative")
    def cooperative(task: Any, sequence: Any, step: Step) -> Any:
        gates.enter(step)
        try:
            if step.wait_cancelled(GUARD):
                step.raise_if_cancelled()
            return "never cancelled"
        finally:
            gates.leave()

    return cooperative


def test_cancel_steps_stops_a_running_step_and_reports_it_cancelled(
    start: Any, orchestrator: ScriptedOrchestrator, gates: Gates
) -> None:
    start([cooperative_handler(gates)])
    identity, _ = orchestrator.handshake()
    batch_id = orchestrator.step_batch(identity, [step_request(7, "Cooperative")])
    gates.wait_started(1)
    orchestrator.cancel(identity, batch_id, [7, 99], reason="task_cancelled")
    result = orchestrator.expect("partial_result")
    assert result["status"] == "failed"
    assert result["error"]["error_class"] == "tasker.cancelled"
    assert result["error"]["retryable"] is False
    assert "task_cancelled" in result["error"]["message"]
    assert orchestrator.expect("batch_completion")["failed_steps"] == 1


def test_cancelling_a_queued_step_reports_it_at_once(
    start: Any, orchestrator: ScriptedOrchestrator, gates: Gates
) -> None:
    start([gated_handler(gates)], capacity=1)
    identity, _ = orchestrator.handshake()
    batch_id = orchestrator.step_batch(
        identity, [step_request(1, "Gated"), step_request(2, "Gated")]
    )
    orchestrator.expect("error")  # capacity_exceeded
    gates.wait_started(1)
    orchestrator.cancel(identity, batch_id, [2], reason="superseded")
    result = orchestrator.expect("partial_result")
    assert result["step_id"] == 2 and result["error"]["error_class"] == "tasker.cancelled"
    assert result["execution_time_ms"] == 0
    gates.open(1)
    assert orchestrator.expect("partial_result")["status"] == "completed"
    completion = orchestrator.expect("batch_completion")
    assert completion["step_summaries"] == [
        {"step_id": 1, "status": "completed"},
        {"step_id": 2, "status": "failed"},
    ]
    assert gates.started == [1]


def test_a_handler_that_finishes_despite_cancel_reports_its_real_result(
    start: Any, orchestrator: ScriptedOrchestrator, gates: Gates
) -> None:
    start([gated_handler(gates)])
    identity, _ = orchestrator.handshake()
    batch_id = orchestrator.step_batch(identity, [step_request(3, "Gated")])
    gates.wait_started(1)
    orchestrator.cancel(identity, batch_id, [3])
    assert gates.steps[3].cancellation.wait(GUARD)
    gates.open(3)
    result = orchestrator.expect("partial_result")
    assert result["status"] == "completed" and result["output"] == {"step": 3}


def test_a_step_past_its_timeout_is_asked_to_stop_and_reported_as_timed_out(
    start: Any, orchestrator: ScriptedOrchestrator, gates: Gates
) -> None:
    start([cooperative_handler(gates)])
    identity, _ = orchestrator.handshake()
    orchestrator.step_batch(identity, [step_request(5, "Cooperative", timeout_ms=200)])
    result = orchestrator.expect("partial_result")
    assert result["status"] == "failed"
    assert result["error"]["error_class"] == "tasker.timeout"
    assert result["error"]["retryable"] is True
    assert "200 ms" in result["error"]["message"]
    assert result["execution_time_ms"] >= 100  # it ran until the flag was set (timed on its thread)


def test_a_handler_ignoring_its_timeout_keeps_its_slot_until_it_returns(
    start: Any, orchestrator: ScriptedOrchestrator, gates: Gates
) -> None:
    start([gated_handler(gates)], capacity=1)
    identity, _ = orchestrator.handshake()
    orchestrator.step_batch(identity, [step_request(9, "Gated", timeout_ms=100)])
    gates.wait_started(1)
    assert gates.steps[9].cancellation.wait(GUARD), "the timeout never set the flag"
    # Python cannot stop the thread: no result yet, the slot stays taken, heartbeats go on.
    orchestrator.expect("heartbeat", ignore=(), where=lambda beat: beat["in_flight"] == 1)
    beats = orchestrator.expect_nothing_but((), heartbeats=3)
    assert [beat["in_flight"] for beat in beats] == [1, 1, 1]
    gates.open(9)
    result = orchestrator.expect("partial_result")
    assert result["error"]["error_class"] == "tasker.timeout"
    assert result["execution_time_ms"] >= 50


# ----- health, garbage, rejection -----


def test_health_request_is_answered(
    start: Any, orchestrator: ScriptedOrchestrator, gates: Gates
) -> None:
    start([gated_handler(gates)], capacity=3)
    identity, _ = orchestrator.handshake()
    orchestrator.step_batch(identity, [step_request(1, "Gated")])
    gates.wait_started(1)
    request_id = new_batch_id()
    orchestrator.send(
        identity,
        orchestrator.envelope(
            "health_request", request_id=request_id, timestamp="2025-01-23T19:57:52.123Z"
        ),
    )
    reply = orchestrator.expect("health_reply")
    assert reply["request_id"] == request_id
    assert reply["worker_id"] == WORKER_ID
    assert reply["status"] == "healthy"
    assert reply["in_flight"] == 1 and reply["free_capacity"] == 2
    assert reply["uptime_ms"] >= 0
    assert reply["details"]["running"] == 1


def test_garbage_from_the_orchestrator_is_answered_counted_and_survived(
    start: Any, orchestrator: ScriptedOrchestrator
) -> None:
    worker = start([TestHandler]).worker
    identity, _ = orchestrator.handshake()
    batch_id = new_batch_id()
    garbage = [
        (b"hello worker", "invalid_json"),
        (b"", "invalid_json"),
        (b"[1,2]", "not_an_object"),
        ([b'{"message_type":"heartbeat"}', b"second"], "multipart_message"),
        (b'{"message_type":"step_batch","protocol_version":"2.0"}', "unsupported_protocol_version"),
        (b'{"message_type":"hello","protocol_version":"1.0"}', "unknown_message_type"),
        (b"[" * 100, "limit_exceeded"),
        (
            json.dumps(
                {
                    "message_type": "step_batch",
                    "protocol_version": "1.0",
                    "batch_id": batch_id,
                    "steps": [],
                }
            ).encode(),
            "invalid_field_value",
        ),
    ]
    for frame, code in garbage:
        orchestrator.send(identity, frame)
        error = orchestrator.expect("error")
        assert error["code"] == code, error.message
    assert error["offending_message_type"] == "step_batch" and error["batch_id"] == batch_id
    # A malformed error is never answered with an error: the health reply comes first.
    orchestrator.send(
        identity, b'{"message_type":"error","protocol_version":"1.0","code":"Bad Code"}'
    )
    orchestrator.send(
        identity,
        orchestrator.envelope(
            "health_request", request_id=new_batch_id(), timestamp="2025-01-23T19:57:52Z"
        ),
    )
    orchestrator.expect("health_reply")
    # And the worker still works.
    orchestrator.step_batch(identity, [step_request(1)])
    assert orchestrator.expect("partial_result")["status"] == "completed"
    assert worker.stats().rejected_frames == {
        "invalid_json": 2,
        "not_an_object": 1,
        "multipart_message": 1,
        "unsupported_protocol_version": 1,
        "unknown_message_type": 1,
        "limit_exceeded": 1,
        "invalid_field_value": 2,
    }


@pytest.mark.parametrize(
    "code", ["invalid_hello", "unsupported_protocol_version", "maintenance_window"]
)
def test_a_fatal_hello_rejected_ends_run_with_hello_rejected(
    start: Any, orchestrator: ScriptedOrchestrator, code: str
) -> None:
    thread = start([TestHandler])
    hello = orchestrator.expect("hello", ignore=())
    orchestrator.send(
        hello.identity, orchestrator.envelope("hello_rejected", code=code, message="go away")
    )
    thread.join()
    assert isinstance(thread.error, HelloRejected)
    assert thread.error.code == code and thread.error.message == "go away"
    assert code in str(thread.error) and "go away" in str(thread.error)


def test_not_accepting_workers_is_retried(start: Any, orchestrator: ScriptedOrchestrator) -> None:
    thread = start([TestHandler])
    hello = orchestrator.expect("hello", ignore=())
    orchestrator.send(
        hello.identity,
        orchestrator.envelope("hello_rejected", code="not_accepting_workers", message="draining"),
    )
    again = orchestrator.expect("hello", ignore=())
    assert again.at - hello.at >= 1.0
    orchestrator.welcome(again.identity, WORKER_ID)
    orchestrator.expect("heartbeat", ignore=())
    assert thread.error is None and thread.thread.is_alive()


# ----- shutdown -----


def test_graceful_shutdown_says_goodbye_hands_back_queued_steps_and_finishes_running_ones(
    start: Any, orchestrator: ScriptedOrchestrator, gates: Gates
) -> None:
    thread = start([gated_handler(gates)], capacity=1)
    identity, _ = orchestrator.handshake()
    running = orchestrator.step_batch(identity, [step_request(1, "Gated")])
    queued = orchestrator.step_batch(identity, [step_request(2, "Gated")])
    orchestrator.expect("error")  # capacity_exceeded
    gates.wait_started(1)
    thread.worker.request_shutdown("SIGTERM")
    goodbye = orchestrator.expect("goodbye")
    assert goodbye.message == {
        "message_type": "goodbye",
        "protocol_version": "1.0",
        "worker_id": WORKER_ID,
        "reason": "SIGTERM",
        "handed_back": [{"batch_id": queued, "step_id": 2}],
    }
    # No new work while draining: a batch that still arrives is handed back too.
    late = orchestrator.step_batch(identity, [step_request(3, "Gated")])
    assert orchestrator.expect("goodbye")["handed_back"] == [{"batch_id": late, "step_id": 3}]
    request_id = new_batch_id()
    orchestrator.send(
        identity,
        orchestrator.envelope(
            "health_request", request_id=request_id, timestamp="2025-01-23T19:57:52Z"
        ),
    )
    assert orchestrator.expect("health_reply")["status"] == "draining"
    gates.open(1)
    result = orchestrator.expect("partial_result")
    assert result["batch_id"] == running and result["status"] == "completed"
    completion = orchestrator.expect("batch_completion")
    assert completion["batch_id"] == running
    assert thread.thread.is_alive(), "the worker left before its results were acknowledged"
    orchestrator.ack(identity, result, completion)
    thread.join()
    assert thread.error is None
    assert gates.started == [1]
    assert thread.worker.stats().steps_handed_back == 2


def test_shutdown_waits_for_acknowledgements_only_a_bounded_time(
    start: Any, orchestrator: ScriptedOrchestrator
) -> None:
    thread = start([TestHandler], shutdown_ack_timeout=0.3)
    identity, _ = orchestrator.handshake()
    orchestrator.step_batch(identity, [step_request(1)])
    orchestrator.expect("partial_result")
    orchestrator.expect("batch_completion")
    thread.worker.request_shutdown()
    goodbye = orchestrator.expect("goodbye")
    assert goodbye["reason"] == "shutdown" and goodbye["handed_back"] == []
    thread.join()  # no acks ever come; the worker still stops
    assert thread.worker.stats().results_unacknowledged == 2


def test_a_step_still_running_when_the_grace_period_ends_is_reported_as_shutdown(
    start: Any, orchestrator: ScriptedOrchestrator, gates: Gates
) -> None:
    thread = start([gated_handler(gates)], shutdown_grace=0.2)
    identity, _ = orchestrator.handshake()
    orchestrator.step_batch(identity, [step_request(1, "Gated")])
    gates.wait_started(1)
    thread.worker.request_shutdown()
    orchestrator.expect("goodbye")
    result = orchestrator.expect("partial_result")
    assert result["error"]["error_class"] == "tasker.worker_shutdown"
    assert result["error"]["retryable"] is True
    assert gates.steps[1].cancelled
    completion = orchestrator.expect("batch_completion")
    orchestrator.ack(identity, result, completion)
    thread.join()


def test_a_second_shutdown_request_stops_at_once(
    start: Any, orchestrator: ScriptedOrchestrator, gates: Gates
) -> None:
    thread = start([gated_handler(gates)], shutdown_grace=60, shutdown_ack_timeout=60)
    identity, _ = orchestrator.handshake()
    orchestrator.step_batch(identity, [step_request(1, "Gated")])
    gates.wait_started(1)
    thread.worker.request_shutdown("SIGINT")
    orchestrator.expect("goodbye")
    thread.worker.request_shutdown("SIGINT")
    assert orchestrator.expect("partial_result")["error"]["error_class"] == "tasker.worker_shutdown"
    thread.join()
