"""A mixed fleet: one workflow whose steps run on Rust, Python and Ruby workers at once.

``tasker serve`` (the binary in ``$TASKER_BIN``, else ``target/debug/tasker``) loads
``examples/mixed_fleet/template.yaml``; one ``tasker worker`` offers only ``tasker.test``, one
Python worker only ``examples/python/mixed_fleet.py``'s classes, one Ruby worker only
``examples/ruby/mixed_fleet.rb``'s. Every step can therefore run in one language only. The tests
check that every task completes, that each step ran on the worker of its language, and that the
values each step derived from its parents' outputs are right — so the data crossed languages,
not just the step names.

Run with ``tests/mixed_fleet/run.sh`` (the Python SDK's virtualenv). Without the binary, Python
or Ruby the tests skip loudly, and fail under ``TASKER_REQUIRE_SDKS=1``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_DIR = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_DIR / "sdk" / "python" / "tests"))

from live_tasker import LiveTasker, Worker, skip_or_fail, steps_by_name  # noqa: E402

TEMPLATE = REPO_DIR / "examples" / "mixed_fleet" / "template.yaml"
STEP_LANGUAGE = {
    "rust_start": "rust",
    "python_price": "python",
    "ruby_discount": "ruby",
    "ruby_total": "ruby",
    "python_label": "python",
    "rust_finish": "rust",
}
ORDERS = [
    {"order_id": 1, "quantity": 1, "unit_price_cents": 999},
    {"order_id": 2, "quantity": 3, "unit_price_cents": 1250},
    {"order_id": 3, "quantity": 7, "unit_price_cents": 333},
    {"order_id": 4, "quantity": 10, "unit_price_cents": 100},
    {"order_id": 5, "quantity": 25, "unit_price_cents": 4},
    {"order_id": 6, "quantity": 2, "unit_price_cents": 0},
]


def ruby_can_run_workers() -> str | None:
    """Why Ruby workers cannot run here, or ``None``."""
    if shutil.which("ruby") is None:
        return "ruby is not installed"
    probe = subprocess.run(
        ["ruby", "-e", 'require "ffi-rzmq"; ZMQ::Context.new.terminate'],
        capture_output=True,
        timeout=60,
    )
    if probe.returncode != 0:
        return "the ffi-rzmq gem or libzmq is missing (apt-get install ruby-ffi-rzmq libzmq5)"
    return None


class Fleet:
    def __init__(self, directory: Path) -> None:
        self.tasker = LiveTasker(directory, templates=[TEMPLATE])
        try:
            self.workers: dict[str, Worker] = {
                "rust": self.tasker.start_rust_worker("fleet", ["tasker.test"]),
                "python": self.tasker.start_python_worker(
                    "fleet", ["examples/python/mixed_fleet.py"]
                ),
                "ruby": self.tasker.start_ruby_worker("fleet", ["examples/ruby/mixed_fleet.rb"]),
            }
        except BaseException:
            self.tasker.close()
            raise


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    reason = ruby_can_run_workers()
    if reason is not None:
        skip_or_fail(f"mixed fleet: {reason}")
    running = Fleet(tmp_path_factory.mktemp("mixed-fleet"))
    try:
        yield running
    finally:
        running.tasker.close()


def expected_outputs(order: dict[str, int], workers: dict[str, str]) -> dict[str, Any]:
    """What each non-Rust step must output for ``order``, computed here independently."""
    subtotal = order["quantity"] * order["unit_price_cents"]
    percent = min(order["quantity"] * 2, 20)
    return {
        "python_price": {
            "language": "python",
            "worker": workers["python"],
            "order_id": order["order_id"],
            "subtotal_cents": subtotal,
            "started_by": workers["rust"],
        },
        "ruby_discount": {
            "language": "ruby",
            "worker": workers["ruby"],
            "discount_percent": percent,
            "started_by": workers["rust"],
        },
        "ruby_total": {
            "language": "ruby",
            "worker": workers["ruby"],
            "total_cents": subtotal * (100 - percent) // 100,
            "priced_by": workers["python"],
        },
        "python_label": {
            "language": "python",
            "worker": workers["python"],
            "label": f"order {order['order_id']}: {subtotal} cents, {percent}% off",
            "priced_by": workers["python"],
            "discounted_by": workers["ruby"],
        },
    }


def test_one_workflow_runs_on_rust_python_and_ruby_workers_with_results_crossing_languages(
    fleet: Fleet,
) -> None:
    client = fleet.tasker.client
    task_ids = [client.initialize_task("examples", "mixed_fleet", order) for order in ORDERS]
    tasks = fleet.tasker.wait_finished(task_ids)
    workers = {language: worker.worker_id for language, worker in fleet.workers.items()}

    for order, task in zip(ORDERS, tasks, strict=True):
        assert task["state"] == "complete", f"{task}\n{fleet.tasker.diagnostics()}"
        steps = steps_by_name(task)
        assert set(steps) == set(STEP_LANGUAGE)
        for name, step in steps.items():
            assert step["state"] == "complete" and step["attempts"] == 1, step
            assert step["results"]["worker"] == workers[STEP_LANGUAGE[name]], (
                f"{name} should have run on the {STEP_LANGUAGE[name]} worker: {step}"
            )
        for name, output in expected_outputs(order, workers).items():
            assert steps[name]["results"] == output, f"{name} of order {order}"
        assert steps["rust_start"]["results"]["previous_results"] == []
        assert steps["rust_finish"]["results"]["previous_results"] == sorted(
            set(STEP_LANGUAGE) - {"rust_finish"}
        ), "the Rust step received the results of its Python and Ruby ancestors"

    # The Rust worker's own record of what it ran: exactly the two Rust steps of every task.
    rust_runs = sorted((e.task_id, e.step_name, e.worker_id) for e in fleet.tasker.executions())
    assert rust_runs == sorted(
        (task_id, name, workers["rust"])
        for task_id in task_ids
        for name in ("rust_start", "rust_finish")
    )


def test_a_context_the_template_refuses_creates_no_task(fleet: Fleet) -> None:
    from tasker_worker import TaskerApiError

    with pytest.raises(TaskerApiError) as refused:
        fleet.tasker.client.initialize_task("examples", "mixed_fleet", {"order_id": 1})
    assert refused.value.code == "invalid_context"
    assert sorted(d["pointer"] for d in refused.value.details) == [
        "/context/quantity",
        "/context/unit_price_cents",
    ]
