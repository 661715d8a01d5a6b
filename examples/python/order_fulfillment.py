"""Python handlers of the example workflow ``examples/templates/order_fulfillment.yaml``:
validate an order, reserve its inventory and take payment in parallel, then ship it.

Run a worker with them, from the repository root (after ``pip install ./sdk/python``):

    python -m tasker_worker --connect tcp://127.0.0.1:5555 --handlers examples.python.order_fulfillment

or from anywhere, by path:

    python -m tasker_worker --connect tcp://127.0.0.1:5555 --handlers path/to/examples/python/order_fulfillment.py

They behave exactly like the Rust SDK's built-in handlers
(``crates/tasker-worker/src/builtin/order_fulfillment.rs``): pure, deterministic data
transformations (no randomness, no clock), so a task run twice — or once on a Rust worker and
once on a Python one — gives the same outputs. The task context follows the template's schema:
``{"order_id": 1, "customer": {"email": "…", "name": "…"}, "items": [{"sku": "…", "quantity": 1,
"unit_price_cents": 1999}]}``. Invalid input is a permanent failure with ``error_class``
``InvalidOrder``.

Both ways of writing a handler appear: classes (``StepHandler`` subclasses) and a decorated
function (``process_payment``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasker_worker import PermanentError, Sequence, Step, StepHandler, Task, handler

INVALID_ORDER_ERROR_CLASS = "InvalidOrder"
_U64_MAX = 2**64 - 1


class InvalidOrder(PermanentError):
    """The order in the task context cannot be processed; retrying will not help."""


@dataclass
class Item:
    sku: str
    quantity: int
    unit_price_cents: int


@dataclass
class Order:
    order_id: int
    items: list[Item]


def _is_u64(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _U64_MAX


def read_order(context: dict[str, Any]) -> Order:
    """The parts of the task context the handlers use, checked."""
    order_id = context.get("order_id")
    if not _is_u64(order_id) or order_id < 1:
        raise InvalidOrder("order_id must be an integer >= 1")
    raw_items = context.get("items")
    if not isinstance(raw_items, list):
        raise InvalidOrder("items must be an array")
    items = []
    for index, raw in enumerate(raw_items):
        raw = raw if isinstance(raw, dict) else {}
        sku = raw.get("sku")
        if not isinstance(sku, str) or not sku:
            raise InvalidOrder(f"items[{index}].sku must be a non-empty string")
        quantity = raw.get("quantity")
        if not _is_u64(quantity) or quantity < 1:
            raise InvalidOrder(f"items[{index}].quantity must be an integer >= 1")
        price = raw.get("unit_price_cents")
        if price is None:
            price = 0
        elif not _is_u64(price):
            raise InvalidOrder(f"items[{index}].unit_price_cents must be an integer >= 0")
        items.append(Item(sku, quantity, price))
    return Order(order_id, items)


def order_total_cents(items: list[Item]) -> int:
    total = sum(item.quantity * item.unit_price_cents for item in items)
    if total > _U64_MAX or any(item.quantity * item.unit_price_cents > _U64_MAX for item in items):
        raise InvalidOrder("the order total does not fit in 64 bits")
    return total


def fnv1a(text: str) -> int:
    """64-bit FNV-1a: a small, stable hash for deterministic ids (as the Rust handlers use)."""
    value = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def _config_str(step: Step, key: str, default: str) -> str:
    value = step.handler_config.get(key)
    return value if isinstance(value, str) else default


def _config_bool(step: Step, key: str, default: bool) -> bool:
    value = step.handler_config.get(key)
    return value if isinstance(value, bool) else default


def _config_u64(step: Step, key: str, default: int) -> int:
    value = step.handler_config.get(key)
    return value if _is_u64(value) else default


class ValidateOrder(StepHandler):
    """Checks the order (ids, a customer email, 1 to ``handler_config.max_items`` (default 100)
    well-formed items) and returns its summary."""

    handler_class = "OrderFulfillment::ValidateOrderHandler"

    def process(self, task: Task, sequence: Sequence, step: Step) -> Any:
        order = read_order(task.context)
        if not order.items:
            raise InvalidOrder(f"order {order.order_id} has no items")
        max_items = _config_u64(step, "max_items", 100)
        if len(order.items) > max_items:
            raise InvalidOrder(
                f"order {order.order_id} has {len(order.items)} items; "
                f"at most {max_items} are allowed"
            )
        customer = task.context.get("customer")
        email = customer.get("email") if isinstance(customer, dict) else None
        if not isinstance(email, str) or "@" not in email:
            raise InvalidOrder("customer.email must be an email address")
        return {
            "order_id": order.order_id,
            "customer_email": email,
            "item_count": len(order.items),
            "total_quantity": sum(item.quantity for item in order.items),
            "total_cents": order_total_cents(order.items),
            "validated": True,
        }


class ReserveInventory(StepHandler):
    """Reserves every item in ``handler_config.warehouse`` (default ``main``) for
    ``hold_minutes`` (default 30); reservation ids are ``RSV-<order_id>-<line>-<sku>``."""

    handler_class = "OrderFulfillment::ReserveInventoryHandler"

    def process(self, task: Task, sequence: Sequence, step: Step) -> Any:
        order = read_order(task.context)
        return {
            "order_id": order.order_id,
            "warehouse": _config_str(step, "warehouse", "main"),
            "hold_minutes": _config_u64(step, "hold_minutes", 30),
            "reservations": [
                {
                    "sku": item.sku,
                    "quantity": item.quantity,
                    "reservation_id": f"RSV-{order.order_id}-{line}-{item.sku}",
                }
                for line, item in enumerate(order.items, start=1)
            ],
        }


@handler("OrderFulfillment::ProcessPaymentHandler")
def process_payment(task: Task, sequence: Sequence, step: Step) -> Any:
    """Charges the order's total through ``handler_config.gateway`` (default ``sandbox``). The
    transaction id is ``TXN-`` and 16 hex digits derived from the order id and amount, so it is
    the same on every attempt (an idempotent charge)."""
    order = read_order(task.context)
    amount_cents = order_total_cents(order.items)
    return {
        "order_id": order.order_id,
        "transaction_id": f"TXN-{fnv1a(f'{order.order_id}:{amount_cents}'):016x}",
        "amount_cents": amount_cents,
        "gateway": _config_str(step, "gateway", "sandbox"),
        "captured": _config_bool(step, "capture", True),
    }


class ShipOrder(StepHandler):
    """Ships the reserved items once paid, from ``previous_results.reserve_inventory`` and
    ``previous_results.process_payment``; the tracking number is ``TRK-`` and 12 hex digits
    derived from the order and transaction."""

    handler_class = "OrderFulfillment::ShipOrderHandler"

    def process(self, task: Task, sequence: Sequence, step: Step) -> Any:
        order = read_order(task.context)
        reserved = sequence.get("reserve_inventory")
        reservations = reserved.get("reservations") if isinstance(reserved, dict) else None
        if not isinstance(reservations, list):
            raise InvalidOrder("ship_order needs previous_results.reserve_inventory.reservations")
        paid = sequence.get("process_payment")
        transaction_id = paid.get("transaction_id") if isinstance(paid, dict) else None
        if not isinstance(transaction_id, str):
            raise InvalidOrder("ship_order needs previous_results.process_payment.transaction_id")
        reservation_ids = [
            reservation["reservation_id"]
            for reservation in reservations
            if isinstance(reservation, dict) and isinstance(reservation.get("reservation_id"), str)
        ]
        tracking = fnv1a(f"{order.order_id}:{transaction_id}") & 0xFFFFFFFFFFFF
        return {
            "order_id": order.order_id,
            "tracking_number": f"TRK-{tracking:012X}",
            "transaction_id": transaction_id,
            "reservation_ids": reservation_ids,
            "notifications_sent": _config_bool(step, "send_notifications", True),
        }
