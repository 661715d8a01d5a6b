"""The Python half of the mixed-fleet workflow (``examples/mixed_fleet/template.yaml``): steps
that only Python workers register, between steps run by Rust and Ruby workers.

Run a worker with them, from the repository root (after ``pip install ./sdk/python``)::

    python -m tasker_worker --connect tcp://127.0.0.1:5555 --handlers examples/python/mixed_fleet.py

Each output names the language and the worker that produced it and carries values computed from
the outputs of the step's parents, whichever language produced those.
"""

from __future__ import annotations

from typing import Any

from tasker_worker import PermanentError, Sequence, Step, StepHandler, Task


class MissingInput(PermanentError):
    """A parent's output or the context lacks what the step needs; a retry will not add it."""


def _integer(source: Any, key: str, where: str) -> int:
    value = source.get(key) if isinstance(source, dict) else None
    if type(value) is not int:
        raise MissingInput(f"{where}.{key} must be an integer, not {value!r}")
    return value


def _text(source: Any, key: str, where: str) -> str:
    value = source.get(key) if isinstance(source, dict) else None
    if not isinstance(value, str):
        raise MissingInput(f"{where}.{key} must be a string, not {value!r}")
    return value


class PythonPrice(StepHandler):
    """The order's subtotal, after the Rust ``rust_start`` step (whose worker it records)."""

    handler_class = "MixedFleet::PythonPrice"

    def process(self, task: Task, sequence: Sequence, step: Step) -> Any:
        started = sequence.get("rust_start")
        return {
            "language": "python",
            "worker": step.worker_id,
            "order_id": _integer(task.context, "order_id", "context"),
            "subtotal_cents": _integer(task.context, "quantity", "context")
            * _integer(task.context, "unit_price_cents", "context"),
            "started_by": _text(started, "worker", "rust_start"),
        }


class PythonLabel(StepHandler):
    """A line describing the order, from the Python subtotal and the Ruby discount."""

    handler_class = "MixedFleet::PythonLabel"

    def process(self, task: Task, sequence: Sequence, step: Step) -> Any:
        price = sequence.get("python_price")
        discount = sequence.get("ruby_discount")
        subtotal = _integer(price, "subtotal_cents", "python_price")
        percent = _integer(discount, "discount_percent", "ruby_discount")
        order_id = _integer(price, "order_id", "python_price")
        return {
            "language": "python",
            "worker": step.worker_id,
            "label": f"order {order_id}: {subtotal} cents, {percent}% off",
            "priced_by": _text(price, "worker", "python_price"),
            "discounted_by": _text(discount, "worker", "ruby_discount"),
        }
