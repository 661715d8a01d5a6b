"""The order-fulfillment example handlers (examples/python/order_fulfillment.py): the same
outputs as the Rust SDK's built-ins for the same inputs."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import pytest
from conftest import REPO_DIR

from tasker_worker import PermanentError, Sequence, Step, Task
from tasker_worker.handlers import invoke
from tasker_worker.loading import load_handlers

EXAMPLE = REPO_DIR / "examples" / "python" / "order_fulfillment.py"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("order_fulfillment_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


example = load_example()
REGISTRY = load_handlers([str(EXAMPLE)])


def order() -> dict[str, Any]:
    return {
        "order_id": 42,
        "customer": {"email": "ada@example.com", "name": "Ada"},
        "items": [
            {"sku": "BOOK-1", "quantity": 2, "unit_price_cents": 1500},
            {"sku": "PEN-9", "quantity": 1, "unit_price_cents": 250},
        ],
    }


def run(
    handler_class: str, config: dict[str, Any], context: dict[str, Any], previous: dict[str, Any]
) -> Any:
    step = Step(
        name=handler_class,
        step_id=1,
        task_id=1,
        batch_id="0195b4ba-8d3a-7f12-9c4e-6a1d2b3c4d5e",
        handler_class=handler_class,
        handler_config=config,
        attempt=1,
        retry_limit=3,
        idempotency_key="1:1",
        timeout_ms=None,
        worker_id="w",
    )
    handler = REGISTRY.get(handler_class)
    assert handler is not None, handler_class
    return invoke(handler, Task(1, context), Sequence(previous), step)


VALIDATE = "OrderFulfillment::ValidateOrderHandler"
RESERVE = "OrderFulfillment::ReserveInventoryHandler"
PAY = "OrderFulfillment::ProcessPaymentHandler"
SHIP = "OrderFulfillment::ShipOrderHandler"


def test_the_example_offers_the_templates_handler_classes() -> None:
    template = (REPO_DIR / "examples" / "templates" / "order_fulfillment.yaml").read_text()
    for handler_class in REGISTRY.handler_classes():
        assert f"handler_class: {handler_class}" in template
    assert REGISTRY.handler_classes() == sorted([VALIDATE, RESERVE, PAY, SHIP])


def test_fnv1a_matches_the_reference_values() -> None:
    assert example.fnv1a("") == 0xCBF29CE484222325
    assert example.fnv1a("a") == 0xAF63DC4C8601EC8C


def test_the_whole_workflow_runs_on_its_own_outputs() -> None:
    validated = run(VALIDATE, {"max_items": 100}, order(), {})
    assert validated == {
        "order_id": 42,
        "customer_email": "ada@example.com",
        "item_count": 2,
        "total_quantity": 3,
        "total_cents": 3250,
        "validated": True,
    }
    previous = {"validate_order": validated}
    reserved = run(RESERVE, {"warehouse": "east"}, order(), previous)
    assert reserved == {
        "order_id": 42,
        "warehouse": "east",
        "hold_minutes": 30,
        "reservations": [
            {"sku": "BOOK-1", "quantity": 2, "reservation_id": "RSV-42-1-BOOK-1"},
            {"sku": "PEN-9", "quantity": 1, "reservation_id": "RSV-42-2-PEN-9"},
        ],
    }
    paid = run(PAY, {}, order(), previous)
    transaction_id = f"TXN-{example.fnv1a('42:3250'):016x}"
    assert paid == {
        "order_id": 42,
        "transaction_id": transaction_id,
        "amount_cents": 3250,
        "gateway": "sandbox",
        "captured": True,
    }
    assert len(transaction_id) == 20
    assert run(PAY, {}, order(), previous) == paid, "deterministic"
    shipped = run(
        SHIP,
        {"send_notifications": False},
        order(),
        {"reserve_inventory": reserved, "process_payment": paid},
    )
    tracking = f"TRK-{example.fnv1a('42:' + transaction_id) & 0xFFFFFFFFFFFF:012X}"
    assert shipped == {
        "order_id": 42,
        "tracking_number": tracking,
        "transaction_id": transaction_id,
        "reservation_ids": ["RSV-42-1-BOOK-1", "RSV-42-2-PEN-9"],
        "notifications_sent": False,
    }
    assert len(tracking) == 16 and tracking[4:].upper() == tracking[4:]


@pytest.mark.parametrize(
    ("handler_class", "config", "change", "message"),
    [
        (VALIDATE, {}, {"items": []}, "no items"),
        (VALIDATE, {"max_items": 1}, {}, "at most 1"),
        (VALIDATE, {}, {"customer": {"email": "nobody"}}, "customer.email"),
        (RESERVE, {}, {"order_id": 0}, "order_id"),
        (PAY, {}, {"items": [{"sku": "A", "quantity": 0}]}, "items[0].quantity"),
        (PAY, {}, {"items": [{"sku": "", "quantity": 1}]}, "items[0].sku"),
        (
            PAY,
            {},
            {"items": [{"sku": "A", "quantity": 2**63, "unit_price_cents": 2**63}]},
            "64 bits",
        ),
        (SHIP, {}, {}, "reserve_inventory"),
    ],
)
def test_bad_orders_fail_permanently_naming_the_problem(
    handler_class: str, config: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    context = {**order(), **change}
    with pytest.raises(PermanentError) as failure:
        run(handler_class, config, context, {})
    assert failure.value.error_class == "InvalidOrder"
    assert not failure.value.retryable
    assert message in failure.value.message


def test_an_item_without_a_price_costs_nothing() -> None:
    context = {**order(), "items": [{"sku": "FREE", "quantity": 3}]}
    assert run(VALIDATE, {}, context, {})["total_cents"] == 0
