"""What a handler is and what it receives.

A handler runs one kind of step: the business logic behind a ``handler_class``. Write it as a
:class:`StepHandler` subclass::

    class ValidateOrder(StepHandler):
        handler_class = "OrderFulfillment::ValidateOrderHandler"

        def process(self, task, sequence, step):
            ...
            return {"validated": True}

or as a plain function with the :func:`handler` decorator::

    @handler("OrderFulfillment::ValidateOrderHandler")
    def validate(task, sequence, step):
        return {"validated": True}

Both get the same three arguments, as the seed's handler interface did:

- ``task`` (:class:`Task`): the task's id and its context (the JSON object it was created with);
- ``sequence`` (:class:`Sequence`): the outputs of the step's ancestors, keyed by step name
  (``previous_results``);
- ``step`` (:class:`Step`): the step's name, id, ``handler_config``, attempt, retry limit,
  idempotency key, timeout and cancellation flag.

Return any JSON value (it becomes the step's result, passed to its descendants); raise
:class:`~tasker_worker.errors.RetryableError` or :class:`~tasker_worker.errors.PermanentError`
to fail the attempt on purpose. Any other exception also fails the attempt, as **retryable**
(see :mod:`tasker_worker.worker`).

Handlers run on worker threads, several at once: they must be thread-safe, and idempotent (a
step can run more than once; :attr:`Step.idempotency_key` tells attempts apart).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Union

from .errors import ConfigurationError, StepCancelled
from .protocol.limits import MAX_HANDLER_CLASSES, MAX_NAME_BYTES

#: The attribute :func:`handler` sets on a decorated function.
HANDLER_CLASS_ATTRIBUTE = "__tasker_handler_class__"


class Task:
    """The task a step belongs to: its id and its context."""

    __slots__ = ("task_id", "context")

    def __init__(self, task_id: int, context: dict[str, Any]) -> None:
        #: The task's id.
        self.task_id = task_id
        #: The task's context: the JSON object the task was created with.
        self.context = context

    @property
    def id(self) -> int:
        """The task's id (same as :attr:`task_id`)."""
        return self.task_id

    def __repr__(self) -> str:
        return f"Task(task_id={self.task_id!r})"


class Sequence(Mapping[str, Any]):
    """The step's view of the workflow so far: the outputs of its ancestors, keyed by ancestor
    step name (the step request's ``previous_results``). A read-only mapping::

        payment = sequence["process_payment"]          # KeyError naming what is there
        reservation = sequence.get("reserve_inventory")
        if "validate_order" in sequence: ...
    """

    __slots__ = ("_results",)

    def __init__(self, previous_results: dict[str, Any]) -> None:
        self._results = previous_results

    @property
    def previous_results(self) -> dict[str, Any]:
        """The outputs of the step's ancestors, keyed by step name."""
        return self._results

    @property
    def step_names(self) -> list[str]:
        """The names of the ancestors whose outputs are here, sorted."""
        return sorted(self._results)

    def result_of(self, step_name: str) -> Any:
        """The output of the ancestor ``step_name``; ``KeyError`` naming the available ones if
        there is none."""
        return self[step_name]

    def __getitem__(self, step_name: str) -> Any:
        try:
            return self._results[step_name]
        except KeyError:
            raise KeyError(
                f"no result of step {step_name!r} in previous_results "
                f"(available: {', '.join(self.step_names) or 'none'})"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    def __repr__(self) -> str:
        return f"Sequence({self.step_names!r})"


class Step:
    """One attempt of one step, as the handler sees it."""

    __slots__ = (
        "name",
        "step_id",
        "task_id",
        "batch_id",
        "handler_class",
        "handler_config",
        "attempt",
        "retry_limit",
        "idempotency_key",
        "timeout_ms",
        "worker_id",
        "_cancellation",
    )

    def __init__(
        self,
        *,
        name: str,
        step_id: int,
        task_id: int,
        batch_id: str,
        handler_class: str,
        handler_config: dict[str, Any],
        attempt: int,
        retry_limit: int,
        idempotency_key: str,
        timeout_ms: int | None,
        worker_id: str,
        cancellation: threading.Event | None = None,
    ) -> None:
        #: The step's name in its task template.
        self.name = name
        #: The step's id.
        self.step_id = step_id
        #: The id of the step's task.
        self.task_id = task_id
        #: The batch (dispatch) this attempt belongs to.
        self.batch_id = batch_id
        #: The handler class the step names.
        self.handler_class = handler_class
        #: The step's ``handler_config`` from the template (possibly empty).
        self.handler_config = handler_config
        #: Which attempt this is: 1 for the first dispatch, +1 for every re-dispatch.
        self.attempt = attempt
        #: The step's configured retry limit (informational: the orchestrator decides retries).
        self.retry_limit = retry_limit
        #: ``"<step_id>:<attempt>"``: stable for this attempt, different for the next. Pass it
        #: to external systems that deduplicate requests.
        self.idempotency_key = idempotency_key
        #: How long the handler may run, in milliseconds; ``None`` for no limit.
        self.timeout_ms = timeout_ms
        #: The id of the worker running the step.
        self.worker_id = worker_id
        self._cancellation = cancellation or threading.Event()

    @property
    def id(self) -> int:
        """The step's id (same as :attr:`step_id`)."""
        return self.step_id

    @property
    def timeout(self) -> float | None:
        """How long the handler may run, in seconds; ``None`` for no limit."""
        return None if self.timeout_ms is None else self.timeout_ms / 1000

    @property
    def cancelled(self) -> bool:
        """Whether the worker has asked this attempt to stop: the orchestrator cancelled it,
        its timeout passed, or the worker is shutting down. Long handlers should check it (or
        wait with :meth:`wait_cancelled`) and stop, e.g. with :meth:`raise_if_cancelled`."""
        return self._cancellation.is_set()

    @property
    def cancellation(self) -> threading.Event:
        """The event behind :attr:`cancelled`, to wait on or hand to other code."""
        return self._cancellation

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Sleeps up to ``timeout`` seconds (forever with ``None``), waking early when the step
        is cancelled; returns whether it was. Use it instead of ``time.sleep``."""
        return self._cancellation.wait(timeout)

    def raise_if_cancelled(self) -> None:
        """Raises :class:`~tasker_worker.errors.StepCancelled` if the step was asked to
        stop."""
        if self._cancellation.is_set():
            raise StepCancelled(f"step {self.name} ({self.step_id}) was asked to stop")

    def __repr__(self) -> str:
        return (
            f"Step(name={self.name!r}, step_id={self.step_id!r}, attempt={self.attempt!r}, "
            f"handler_class={self.handler_class!r})"
        )


class StepHandler:
    """Base class of class-based handlers. Subclasses set :attr:`handler_class` and implement
    :meth:`process`.

    When a class is registered, the worker creates a fresh instance for every step attempt
    (so instance attributes are never shared between steps running at once); the constructor
    must take no arguments. When an *instance* is registered, that one instance serves every
    step, on several threads at once.
    """

    #: The ``handler_class`` this handler runs, exactly as templates name it
    #: (``"OrderFulfillment::ValidateOrderHandler"``). Default: the class's qualified name.
    handler_class: str | None = None

    def process(self, task: Task, sequence: Sequence, step: Step) -> Any:
        """Runs the step; returns its output (any JSON value, including ``None``)."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement process()")

    @classmethod
    def handler_class_name(cls) -> str:
        """The handler class this handler registers under."""
        return cls.handler_class or cls.__qualname__


HandlerFunction = Callable[[Task, Sequence, Step], Any]
HandlerLike = Union[type[StepHandler], StepHandler, HandlerFunction]  # noqa: UP007 (runtime alias)


def handler(handler_class: str) -> Callable[[HandlerFunction], HandlerFunction]:
    """Marks a function ``(task, sequence, step) -> output`` as the handler of
    ``handler_class``. The function is returned unchanged (still callable in tests); module
    discovery (``python -m tasker_worker --handlers module``) and :class:`HandlerRegistry` find
    it by the mark."""
    _check_class_name(handler_class)

    def mark(function: HandlerFunction) -> HandlerFunction:
        if not callable(function):
            raise ConfigurationError(f"@handler({handler_class!r}) must decorate a function")
        setattr(function, HANDLER_CLASS_ATTRIBUTE, handler_class)
        return function

    return mark


def handler_class_of(candidate: Any) -> str | None:
    """The handler class ``candidate`` runs, if it is a handler (a :class:`StepHandler`
    subclass or instance, or a function marked with :func:`handler`); else ``None``."""
    if isinstance(candidate, type):
        if issubclass(candidate, StepHandler) and candidate is not StepHandler:
            return candidate.handler_class_name()
        return None
    if isinstance(candidate, StepHandler):
        return type(candidate).handler_class_name()
    marked = getattr(candidate, HANDLER_CLASS_ATTRIBUTE, None)
    if callable(candidate) and isinstance(marked, str):
        return marked
    return None


def _check_class_name(handler_class: Any) -> None:
    if not isinstance(handler_class, str) or not handler_class:
        raise ConfigurationError(
            f"a handler class must be a non-empty string, not {handler_class!r}"
        )
    if len(handler_class.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise ConfigurationError(
            f"handler class {handler_class[:40]!r}… is longer than {MAX_NAME_BYTES} bytes"
        )


class HandlerRegistry:
    """Handlers keyed by ``handler_class``: what a worker announces in ``hello`` and runs.

    ::

        registry = HandlerRegistry()
        registry.register(ValidateOrder)                      # a StepHandler subclass
        registry.register(ShipOrder(), "Shipping::Ship")      # an instance, under another name

        @registry.handler("Billing::Charge")                  # a function
        def charge(task, sequence, step): ...
    """

    def __init__(self, handlers: Iterable[HandlerLike] | Mapping[str, HandlerLike] = ()) -> None:
        self._handlers: dict[str, HandlerLike] = {}
        if isinstance(handlers, Mapping):
            for handler_class, candidate in handlers.items():
                self.register(candidate, handler_class)
        else:
            for candidate in handlers:
                self.register(candidate)

    def register(self, candidate: HandlerLike, handler_class: str | None = None) -> HandlerLike:
        """Registers ``candidate`` under ``handler_class`` (default: the one it declares).
        Registering the same handler twice is harmless; two different handlers for one class
        is a :class:`~tasker_worker.errors.ConfigurationError`. Returns ``candidate``."""
        declared = handler_class_of(candidate)
        if declared is None and not callable(candidate):
            raise ConfigurationError(
                f"{candidate!r} is not a handler: expected a StepHandler subclass or instance, or "
                "a function (task, sequence, step)"
            )
        name = handler_class or declared
        if name is None:
            raise ConfigurationError(
                f"{candidate!r} declares no handler class: decorate it with @handler(...) or pass "
                "handler_class"
            )
        _check_class_name(name)
        existing = self._handlers.get(name)
        if existing is not None and existing is not candidate:
            raise ConfigurationError(
                f"two different handlers are registered for handler class {name!r}: "
                f"{existing!r} and {candidate!r}"
            )
        if existing is None and len(self._handlers) >= MAX_HANDLER_CLASSES:
            raise ConfigurationError(
                f"at most {MAX_HANDLER_CLASSES} handler classes can be registered (protocol limit)"
            )
        self._handlers[name] = candidate
        return candidate

    def handler(self, handler_class: str) -> Callable[[HandlerFunction], HandlerFunction]:
        """Decorator: marks the function like :func:`handler` and registers it here."""

        def register(function: HandlerFunction) -> HandlerFunction:
            marked = handler(handler_class)(function)
            self.register(marked, handler_class)
            return marked

        return register

    def update(self, other: HandlerRegistry) -> None:
        """Registers every handler of ``other`` here."""
        for name, candidate in other.items():
            self.register(candidate, name)

    def handler_classes(self) -> list[str]:
        """The registered handler classes, sorted."""
        return sorted(self._handlers)

    def get(self, handler_class: str) -> HandlerLike | None:
        return self._handlers.get(handler_class)

    def items(self) -> list[tuple[str, HandlerLike]]:
        return sorted(self._handlers.items(), key=lambda item: item[0])

    def __contains__(self, handler_class: object) -> bool:
        return handler_class in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)

    def __repr__(self) -> str:
        return f"HandlerRegistry({self.handler_classes()!r})"


def as_registry(handlers: Any) -> HandlerRegistry:
    """A registry from what :class:`~tasker_worker.Worker` accepts: a registry, a mapping
    ``{handler_class: handler}``, one handler, or an iterable of handlers."""
    if isinstance(handlers, HandlerRegistry):
        return handlers
    if isinstance(handlers, Mapping):
        return HandlerRegistry(handlers)
    if handler_class_of(handlers) is not None:
        return HandlerRegistry([handlers])
    if isinstance(handlers, Iterable) and not isinstance(handlers, (str, bytes)):
        return HandlerRegistry(list(handlers))
    raise ConfigurationError(
        f"cannot make a handler registry from {handlers!r}: pass a HandlerRegistry, a mapping "
        "{handler_class: handler}, or handlers"
    )


def invoke(candidate: HandlerLike, task: Task, sequence: Sequence, step: Step) -> Any:
    """Runs one step with a registered handler (a fresh instance for a class)."""
    if isinstance(candidate, type):
        return candidate().process(task, sequence, step)
    if isinstance(candidate, StepHandler):
        return candidate.process(task, sequence, step)
    return candidate(task, sequence, step)
