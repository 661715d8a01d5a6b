"""The handler interface: classes, decorated functions, the registry, errors, and finding
handlers in modules."""

from __future__ import annotations

import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tasker_worker import (
    ConfigurationError,
    HandlerRegistry,
    PermanentError,
    RetryableError,
    Sequence,
    StepHandler,
    Worker,
    handler,
)
from tasker_worker.handlers import as_registry, handler_class_of
from tasker_worker.loading import load_handlers
from tasker_worker.worker import step_error_from_exception


class Validate(StepHandler):
    handler_class = "Orders::Validate"

    def process(self, task: Any, sequence: Any, step: Any) -> Any:
        return {"ok": True}


class Unnamed(StepHandler):
    def process(self, task: Any, sequence: Any, step: Any) -> Any:
        return None


@handler("Orders::Ship")
def ship(task: Any, sequence: Any, step: Any) -> Any:
    return "shipped"


def test_handler_classes_come_from_the_class_the_decorator_or_the_registration() -> None:
    assert handler_class_of(Validate) == "Orders::Validate"
    assert handler_class_of(Validate()) == "Orders::Validate"
    assert handler_class_of(Unnamed) == "Unnamed"
    assert handler_class_of(ship) == "Orders::Ship"
    assert ship(None, None, None) == "shipped", "the decorator returns the function unchanged"
    assert handler_class_of(StepHandler) is None
    assert handler_class_of(len) is None
    registry = HandlerRegistry([Validate, ship])
    registry.register(lambda task, sequence, step: 1, "Lambda")
    assert registry.handler_classes() == ["Lambda", "Orders::Ship", "Orders::Validate"]
    assert "Orders::Ship" in registry and len(registry) == 3


def test_the_registry_decorator_and_mappings() -> None:
    registry = HandlerRegistry({"Renamed::Validate": Validate})

    @registry.handler("Billing::Charge")
    def charge(task: Any, sequence: Any, step: Any) -> Any:
        return 1

    assert registry.handler_classes() == ["Billing::Charge", "Renamed::Validate"]
    assert registry.get("Billing::Charge") is charge
    assert as_registry(registry) is registry
    assert as_registry(ship).handler_classes() == ["Orders::Ship"]
    assert as_registry({"X": ship}).handler_classes() == ["X"]


def test_conflicting_or_unusable_registrations_are_refused() -> None:
    registry = HandlerRegistry([Validate])
    registry.register(Validate)  # the same handler again is harmless

    class Other(StepHandler):
        handler_class = "Orders::Validate"

    with pytest.raises(ConfigurationError, match="two different handlers"):
        registry.register(Other)
    with pytest.raises(ConfigurationError, match="declares no handler class"):
        registry.register(lambda task, sequence, step: None)
    with pytest.raises(ConfigurationError, match="not a handler"):
        registry.register(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="non-empty"):
        handler("")
    with pytest.raises(ConfigurationError, match="255 bytes"):
        handler("é" * 128)
    with pytest.raises(ConfigurationError):
        as_registry("Orders::Validate")


def test_sequence_is_a_read_only_view_of_previous_results() -> None:
    sequence = Sequence({"b": 2, "a": {"x": 1}})
    assert sequence["a"] == {"x": 1}
    assert sequence.result_of("b") == 2
    assert sequence.get("c") is None
    assert sorted(sequence) == ["a", "b"] and len(sequence) == 2
    assert sequence.step_names == ["a", "b"]
    with pytest.raises(KeyError, match="available: a, b"):
        sequence["c"]


def test_errors_carry_class_retryability_and_delay() -> None:
    assert RetryableError("x", retry_after=1.5).retry_after_ms == 1500
    assert RetryableError("x", retry_after=timedelta(minutes=2)).retry_after_ms == 120_000
    assert RetryableError("x", retry_after_ms=7).retry_after == 0.007
    assert RetryableError("x").retry_after is None
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            RetryableError("x", retry_after=bad)
    with pytest.raises(TypeError):
        RetryableError("x", retry_after="soon")  # type: ignore[arg-type]

    class CardDeclined(PermanentError):
        pass

    declined = step_error_from_exception(CardDeclined("no"))
    assert (declined.error_class, declined.retryable, declined.message) == (
        "CardDeclined",
        False,
        "no",
    )
    named = step_error_from_exception(PermanentError("no", error_class="Billing::Declined"))
    assert named.error_class == "Billing::Declined"
    unexpected = step_error_from_exception(ValueError())
    assert (unexpected.error_class, unexpected.retryable, unexpected.message) == (
        "ValueError",
        True,
        "ValueError",
    )


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("worker_id", "has space", "worker_id"),
        ("worker_id", "w" * 129, "worker_id"),
        ("capacity", 0, "capacity"),
        ("capacity", 10_001, "capacity"),
        ("capacity", True, "capacity"),
        ("heartbeat_interval", 0.01, "heartbeat_interval"),
        ("name", "", "name"),
        ("welcome_timeout", 0, "welcome_timeout"),
        ("shutdown_grace", -1, "shutdown_grace"),
    ],
)
def test_worker_options_the_protocol_cannot_carry_are_refused(
    option: str, value: Any, named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named):
        Worker("tcp://127.0.0.1:1", [Validate], **{option: value})


def test_an_endpoint_zeromq_cannot_connect_to_is_a_configuration_error() -> None:
    worker = Worker("carrier-pigeon://coop", [Validate], install_signal_handlers=False)
    with pytest.raises(ConfigurationError, match="cannot connect to 'carrier-pigeon://coop'"):
        worker.run()


def test_an_empty_registry_is_refused_when_run() -> None:
    with pytest.raises(ConfigurationError, match="empty"):
        Worker("tcp://127.0.0.1:1", HandlerRegistry()).run()


def write_module(directory: Path, name: str, source: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


HANDLERS_SOURCE = """
    from tasker_worker import StepHandler, handler
    from tasker_worker.testing import TestHandler  # imported handlers count too


    class Base(StepHandler):
        '''An abstract base: no process(), so not a handler.'''


    class Charge(Base):
        handler_class = "Billing::Charge"

        def process(self, task, sequence, step):
            return 1


    class _Private(StepHandler):
        def process(self, task, sequence, step):
            return 2


    @handler("Billing::Refund")
    def refund(task, sequence, step):
        return 3


    def not_a_handler(task, sequence, step):
        return 4
"""


def test_modules_are_searched_for_handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(tmp_path, "billing_handlers", HANDLERS_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_handlers(["billing_handlers"])
    assert registry.handler_classes() == ["Billing::Charge", "Billing::Refund", "tasker.test"]
    by_path = load_handlers([str(tmp_path / "billing_handlers.py")])
    assert by_path.handler_classes() == registry.handler_classes()
    assert load_handlers(["billing_handlers:refund"]).handler_classes() == ["Billing::Refund"]
    sys.modules.pop("billing_handlers", None)


def test_a_module_registry_is_used_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(
        tmp_path,
        "registered_handlers",
        """
        from tasker_worker import HandlerRegistry, StepHandler

        registry = HandlerRegistry()

        @registry.handler("Only::This")
        def this(task, sequence, step):
            return 1

        class NotRegistered(StepHandler):
            def process(self, task, sequence, step):
                return 2
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_handlers(["registered_handlers"]).handler_classes() == ["Only::This"]
    assert load_handlers([f"{tmp_path / 'registered_handlers.py'}:registry"]).handler_classes() == [
        "Only::This"
    ]
    sys.modules.pop("registered_handlers", None)


def test_bad_handler_specs_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot import 'no_such_module_here'"):
        load_handlers(["no_such_module_here"])
    with pytest.raises(ConfigurationError, match="no such handler file"):
        load_handlers([str(tmp_path / "missing.py")])
    empty = write_module(tmp_path, "empty_module", "X = 1\n")
    with pytest.raises(ConfigurationError, match="no handlers found"):
        load_handlers([str(empty)])
    with pytest.raises(ConfigurationError, match="no attribute 'nothing'"):
        load_handlers([f"{empty}:nothing"])
