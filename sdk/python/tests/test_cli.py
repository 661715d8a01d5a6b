"""``python -m tasker_worker`` as a user runs it: a real process, the example handlers, and
SIGTERM for a graceful shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from conftest import REPO_DIR
from scripted_orchestrator import GUARD, ScriptedOrchestrator, step_request

ORDER = {
    "order_id": 42,
    "customer": {"email": "ada@example.com"},
    "items": [{"sku": "BOOK-1", "quantity": 2, "unit_price_cents": 1500}],
}


@pytest.fixture
def orchestrator() -> Iterator[ScriptedOrchestrator]:
    scripted = ScriptedOrchestrator()
    yield scripted
    scripted.close()


def start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tasker_worker", *args],
        cwd=REPO_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize(
    "handlers", ["examples.python.order_fulfillment", "examples/python/order_fulfillment.py"]
)
def test_the_cli_runs_the_example_handlers_and_stops_gracefully_on_sigterm(
    orchestrator: ScriptedOrchestrator, handlers: str
) -> None:
    process = start_cli(
        "--connect",
        orchestrator.endpoint,
        "--handlers",
        handlers,
        "--worker-id",
        "cli-worker-1",
        "--capacity",
        "3",
    )
    try:
        hello = orchestrator.expect("hello", ignore=())
        assert hello["worker_id"] == "cli-worker-1" and hello["capacity"] == 3
        assert hello["handler_classes"] == [
            "OrderFulfillment::ProcessPaymentHandler",
            "OrderFulfillment::ReserveInventoryHandler",
            "OrderFulfillment::ShipOrderHandler",
            "OrderFulfillment::ValidateOrderHandler",
        ]
        orchestrator.welcome(hello.identity, "cli-worker-1")
        orchestrator.step_batch(
            hello.identity,
            [
                step_request(
                    1,
                    "OrderFulfillment::ValidateOrderHandler",
                    step_name="validate_order",
                    task_context=ORDER,
                )
            ],
        )
        result = orchestrator.expect("partial_result")
        assert result["status"] == "completed"
        assert result["output"]["total_cents"] == 3000
        completion = orchestrator.expect("batch_completion")
        process.send_signal(signal.SIGTERM)
        goodbye = orchestrator.expect("goodbye")
        assert goodbye["reason"] == "SIGTERM" and goodbye["handed_back"] == []
        orchestrator.ack(hello.identity, result, completion)
        output, _ = process.communicate(timeout=GUARD)
        assert process.returncode == 0, output
        assert "SIGTERM received" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_the_cli_explains_handlers_it_cannot_load() -> None:
    process = start_cli("--connect", "tcp://127.0.0.1:1", "--handlers", "no_such_module_anywhere")
    output, _ = process.communicate(timeout=GUARD)
    assert process.returncode == 2
    assert "cannot import 'no_such_module_anywhere'" in output


def test_the_cli_exits_3_when_the_orchestrator_rejects_the_worker(
    orchestrator: ScriptedOrchestrator,
) -> None:
    process = start_cli("--connect", orchestrator.endpoint, "--handlers", "tasker_worker.testing")
    try:
        hello = orchestrator.expect("hello", ignore=())
        assert hello["handler_classes"] == ["tasker.test"]
        orchestrator.send(
            hello.identity,
            orchestrator.envelope(
                "hello_rejected", code="unsupported_protocol_version", message="speak 2.0"
            ),
        )
        output, _ = process.communicate(timeout=GUARD)
        assert process.returncode == 3
        assert "unsupported_protocol_version" in output and "speak 2.0" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
