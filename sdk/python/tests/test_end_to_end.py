"""End to end against a real ``tasker serve``: the Rust orchestrator on free ports with a
temporary SQLite database, Python workers as real processes (``python -m tasker_worker``), and
tasks created and read through the SDK's :class:`~tasker_worker.TaskerClient` over the real HTTP
API.

The ``tasker`` binary is ``$TASKER_BIN`` (``scripts/test.sh`` builds it and sets it), else
``target/debug/tasker`` of this checkout. Without one the tests skip loudly — or fail under
``TASKER_REQUIRE_SDKS=1``.

The example shapes use ``tasker.test``, which the Python SDK implements too
(``tasker_worker.testing``, same keys and outputs as the Rust one), so the templates are copied
unchanged. Its execution log (``TASKER_TEST_EXECUTION_LOG``, one line per execution, shared by
the worker processes) tells what ran where.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_tasker import (
    GUARD_SECONDS,
    REPO_DIR,
    LiveTasker,
    Worker,
    ancestors_by_step,
    steps_by_name,
    wait_until,
)

from tasker_worker import TaskerApiError, TaskerWaitTimeout

PYTHON_HANDLERS = ["tasker_worker.testing", "examples.python.order_fulfillment"]
SHAPES = ["linear", "diamond", "parallel_merge", "tree", "mixed_dag"]
ORDER = {
    "order_id": 42,
    "customer": {"email": "ada@example.com", "name": "Ada"},
    "items": [
        {"sku": "BOOK-1", "quantity": 2, "unit_price_cents": 1500},
        {"sku": "PEN-9", "quantity": 1, "unit_price_cents": 250},
    ],
}


class System:
    """One orchestrator and two Python workers, each with ``tasker.test`` and the
    order-fulfillment example handlers."""

    def __init__(self, directory: Path) -> None:
        self.tasker = LiveTasker(directory)
        try:
            self.workers: list[Worker] = [
                self.tasker.start_python_worker(label, PYTHON_HANDLERS) for label in ("a", "b")
            ]
        except BaseException:
            self.tasker.close()
            raise
        self.client = self.tasker.client

    def worker_ids(self) -> set[str]:
        return {worker.worker_id for worker in self.workers}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = System(tmp_path_factory.mktemp("python-e2e"))
    try:
        yield running
    finally:
        running.tasker.close()


def assert_previous_results_are_the_ancestors(task: dict[str, Any]) -> None:
    expected = ancestors_by_step(task)
    for step in task["steps"]:
        output = step["results"]
        assert output is not None, step
        assert output["step"] == step["name"], step
        assert output["previous_results"] == expected[step["name"]], (
            f"step {step['name']} of {task['name']} saw {output['previous_results']}, "
            f"its ancestors are {expected[step['name']]}"
        )


def test_every_example_shape_completes_with_its_ancestors_results(system: System) -> None:
    task_ids = [
        system.client.initialize_task("examples", shape, {"shape": shape, "round": n})
        for n in range(2)
        for shape in SHAPES
    ]
    tasks = system.tasker.wait_finished(task_ids)

    assert sorted({task["name"] for task in tasks}) == sorted(SHAPES)
    for task in tasks:
        assert task["state"] == "complete", task
        for step in task["steps"]:
            assert step["state"] == "complete", step
            assert step["attempts"] == 1, step
            assert step["results"]["worker"] in system.worker_ids(), step
        assert_previous_results_are_the_ancestors(task)
    executed = {
        (execution.task_id, execution.step_name) for execution in system.tasker.executions()
    }
    for task in tasks:
        for step in task["steps"]:
            assert (task["task_id"], step["name"]) in executed, step


def load_order_example() -> Any:
    path = REPO_DIR / "examples" / "python" / "order_fulfillment.py"
    spec = importlib.util.spec_from_file_location("order_fulfillment_e2e", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_order_fulfillment_completes_on_the_python_example_handlers(system: System) -> None:
    example = load_order_example()
    task_id = system.client.initialize_task(
        "order_fulfillment", "order_fulfillment", ORDER, idempotency_key="python-e2e-order-42"
    )
    [task] = system.tasker.wait_finished([task_id])
    assert task["state"] == "complete", task
    steps = steps_by_name(task)
    assert steps["validate_order"]["results"]["total_cents"] == 3250
    transaction_id = f"TXN-{example.fnv1a('42:3250'):016x}"
    assert steps["process_payment"]["results"] == {
        "order_id": 42,
        "transaction_id": transaction_id,
        "amount_cents": 3250,
        "gateway": "sandbox",
        "captured": True,
    }
    shipped = steps["ship_order"]["results"]
    assert shipped["transaction_id"] == transaction_id, "ship_order read process_payment's output"
    assert shipped["reservation_ids"] == ["RSV-42-1-BOOK-1", "RSV-42-2-PEN-9"]
    assert shipped["tracking_number"] == (
        f"TRK-{example.fnv1a(f'42:{transaction_id}') & 0xFFFFFFFFFFFF:012X}"
    )

    again = system.client.initialize_task(
        "order_fulfillment", "order_fulfillment", ORDER, idempotency_key="python-e2e-order-42"
    )
    assert again == task_id, "a repeated idempotency key returns the existing task"


def test_the_client_reports_the_apis_refusals(system: System) -> None:
    with pytest.raises(TaskerApiError) as unknown:
        system.client.initialize_task("examples", "no_such_template", {})
    assert (unknown.value.status, unknown.value.code) == (404, "unknown_template")
    assert "examples/no_such_template" in unknown.value.message

    with pytest.raises(TaskerApiError) as invalid:
        system.client.initialize_task("order_fulfillment", "order_fulfillment", {"order_id": 1})
    assert (invalid.value.status, invalid.value.code) == (422, "invalid_context")
    pointers = sorted(detail["pointer"] for detail in invalid.value.details)
    assert pointers == ["/context/customer", "/context/items"], invalid.value.body
    assert "/context/customer: is required but missing" in str(invalid.value)

    with pytest.raises(TaskerApiError) as missing:
        system.client.get_task(987654321)
    assert (missing.value.status, missing.value.code) == (404, "task_not_found")


def test_create_and_wait_returns_the_finished_diamond(system: System) -> None:
    # The timeout only bounds a hang; the long poll answers when the task finishes.
    task = system.client.create_and_wait("examples", "diamond", {}, timeout=GUARD_SECONDS)
    assert task["state"] == "complete", f"{task}\n{system.tasker.diagnostics()}"
    assert task["name"] == "diamond"
    assert sorted(step["name"] for step in task["steps"]) == ["a", "b", "c", "d"]
    for step in task["steps"]:
        assert step["state"] == "complete", step
        assert step["results"]["worker"] in system.worker_ids(), step
    again = system.client.get_task(task["task_id"])
    assert (again["state"], again["steps"]) == (task["state"], task["steps"])


def test_wait_task_times_out_on_a_slow_task_then_sees_it_finish(system: System) -> None:
    # Step a sleeps 3 s: the task cannot finish within the 0.5 s wait.
    task_id = system.client.initialize_task(
        "examples", "diamond", {"test_behaviour": {"a": {"sleep_ms": 3000}}}
    )
    started = time.monotonic()
    with pytest.raises(TaskerWaitTimeout) as timed_out:
        system.client.wait_task(task_id, timeout=0.5)
    assert time.monotonic() - started >= 0.5
    assert timed_out.value.task_id == task_id
    assert timed_out.value.state in {"pending", "in_progress"}, timed_out.value.task
    assert timed_out.value.task["task_id"] == task_id

    task = system.client.wait_task(task_id, timeout=GUARD_SECONDS)
    assert task["state"] == "complete", f"{task}\n{system.tasker.diagnostics()}"
    assert {step["state"] for step in task["steps"]} == {"complete"}


def test_the_server_refuses_a_wait_beyond_its_limit(system: System) -> None:
    task_id = system.client.initialize_task("examples", "linear", {})
    with pytest.raises(TaskerApiError) as refused:
        system.client._get_task(task_id, 60_001)  # the client never asks more than 30 000
    assert (refused.value.status, refused.value.code) == (400, "invalid_query")
    assert [detail["pointer"] for detail in refused.value.details] == ["wait_ms"]
    with pytest.raises(TaskerApiError) as missing:
        system.client.wait_task(987654321, timeout=1)
    assert (missing.value.status, missing.value.code) == (404, "task_not_found")


def test_a_retryable_failure_is_retried_until_it_succeeds(system: System) -> None:
    task_id = system.client.initialize_task(
        "examples",
        "linear",
        {"test_behaviour": {"step_2": {"fail_retryable_attempts": 2, "retry_after_ms": 20}}},
    )
    [task] = system.tasker.wait_finished([task_id])
    assert task["state"] == "complete", task
    step_2 = steps_by_name(task)["step_2"]
    assert step_2["attempts"] == 3, step_2
    assert step_2["results"]["attempt"] == 3, step_2
    runs = [
        execution.attempt
        for execution in system.tasker.executions()
        if execution.task_id == task_id and execution.step_name == "step_2"
    ]
    assert sorted(runs) == [1, 2, 3]
    assert steps_by_name(task)["step_3"]["results"]["previous_results"] == ["step_1", "step_2"]


def test_a_permanent_failure_fails_the_task_naming_the_step(system: System) -> None:
    task_id = system.client.initialize_task(
        "examples", "linear", {"test_behaviour": {"step_3": {"fail_permanently": True}}}
    )
    [task] = system.tasker.wait_finished([task_id])
    assert task["state"] == "error", task
    steps = steps_by_name(task)
    failed = [step["name"] for step in task["steps"] if step["state"] == "error"]
    assert failed == ["step_3"], task
    error = steps["step_3"]["last_error"]
    assert error["error_class"] == "TestPermanentFailure", error
    assert error["retryable"] is False, error
    assert "step_3" in error["message"], error
    assert steps["step_3"]["attempts"] == 1, "a permanent failure is not retried"
    assert [steps[name]["state"] for name in ("step_1", "step_2", "step_4")] == [
        "complete",
        "complete",
        "pending",
    ]
    ran = [e.step_name for e in system.tasker.executions() if e.task_id == task_id]
    assert sorted(ran) == ["step_1", "step_2", "step_3"], "step_4 never ran"


def test_a_worker_killed_mid_step_has_the_step_finished_by_the_other(tmp_path: Path) -> None:
    tasker = LiveTasker(tmp_path)
    try:
        workers = {
            worker.worker_id: worker
            for worker in (
                tasker.start_python_worker(label, ["tasker_worker.testing"]) for label in "ab"
            )
        }
        task_id = tasker.client.initialize_task(
            "examples", "linear", {"test_behaviour": {"step_2": {"sleep_ms": 3000}}}
        )

        # Whichever worker starts step_2 is killed while it sleeps.
        first = wait_until(
            lambda: next((e for e in tasker.executions() if e.step_name == "step_2"), None),
            "a worker to start step_2",
        )
        victim = workers[first.worker_id]
        [survivor] = [w for w in workers.values() if w is not victim]
        victim.process.kill()

        [task] = tasker.wait_finished([task_id])
        assert task["state"] == "complete", f"{task}\n{tasker.diagnostics()}"
        runs = [e for e in tasker.executions() if e.step_name == "step_2"]
        assert len(runs) <= 2, f"step_2 ran more than twice: {runs}"
        assert [(r.attempt, r.worker_id) for r in runs] == [
            (1, victim.worker_id),
            (2, survivor.worker_id),
        ], runs
        step_2 = steps_by_name(task)["step_2"]
        assert step_2["attempts"] == 2, step_2
        assert (step_2["results"]["attempt"], step_2["results"]["worker"]) == (
            2,
            survivor.worker_id,
        ), "the result applied is the surviving attempt's, once"
        for name in ("step_1", "step_3", "step_4"):
            assert [e.step_name for e in tasker.executions()].count(name) == 1, name
            assert steps_by_name(task)[name]["attempts"] == 1
    finally:
        tasker.close()


def test_the_orchestrator_killed_mid_run_gets_every_result_without_rerunning_a_step(
    tmp_path: Path,
) -> None:
    tasker = LiveTasker(tmp_path)
    try:
        for label in "ab":
            tasker.start_python_worker(label, ["tasker_worker.testing"])
        slow = {name: {"sleep_ms": 300} for name in ("step_1", "step_2", "step_3", "step_4")}
        task_ids = [
            tasker.client.initialize_task("examples", "linear", {"n": n, "test_behaviour": slow})
            for n in range(6)
        ]
        # Kill it while steps run: their results are then held by the workers, re-sent after
        # the workers register with the new process, and applied.
        wait_until(lambda: len(tasker.executions()) >= 8, "eight steps to start")
        tasker.restart()

        tasks = tasker.wait_finished(task_ids)
        assert {task["state"] for task in tasks} == {"complete"}, tasker.diagnostics()
        runs: dict[int, list[Any]] = {}
        for execution in tasker.executions():
            runs.setdefault(execution.step_id, []).append(execution)
        for task in tasks:
            for step in task["steps"]:
                ran = runs.get(step["step_id"], [])
                assert len(ran) == 1, (
                    f"step {step['step_id']} ran {len(ran)} times: {ran}\n{tasker.diagnostics()}"
                )
                output = step["results"]
                assert (output["attempt"], output["worker"]) == (ran[0].attempt, ran[0].worker_id)
    finally:
        tasker.close()
