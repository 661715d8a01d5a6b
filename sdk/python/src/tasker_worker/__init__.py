"""The Python worker SDK for Tasker.

Write step handlers, then run a :class:`Worker` that connects to the orchestrator over ZeroMQ
(protocol v1, ``docs/protocol/spec.md``), receives batches of ready steps, runs them on a pool of
threads and reports their results::

    from tasker_worker import PermanentError, StepHandler, Worker, handler

    class ValidateOrder(StepHandler):
        handler_class = "OrderFulfillment::ValidateOrderHandler"

        def process(self, task, sequence, step):
            if not task.context.get("items"):
                raise PermanentError("the order has no items")
            return {"validated": True}

    @handler("OrderFulfillment::ShipOrderHandler")
    def ship(task, sequence, step):
        payment = sequence["process_payment"]
        return {"tracking_number": "...", "transaction_id": payment["transaction_id"]}

    Worker("tcp://127.0.0.1:5555", [ValidateOrder, ship], capacity=8).run()

or, without writing the last line: ``python -m tasker_worker --connect tcp://127.0.0.1:5555
--handlers my_handlers``.

Modules: :mod:`.handlers` (the handler interface), :mod:`.errors`, :mod:`.worker` (the worker
and how it reports each outcome), :mod:`.protocol` (messages, validation, limits),
:mod:`.client` (a small HTTP client for the orchestrator's API: create tasks, read them, wait
for them to finish), :mod:`.testing` (the ``tasker.test`` handler), :mod:`.loading` (finding
handlers in modules).
"""

__version__ = "0.1.0"

from .client import TaskerApiError, TaskerClient, TaskerWaitTimeout  # noqa: E402
from .errors import (  # noqa: E402
    ConfigurationError,
    HelloRejected,
    PermanentError,
    RetryableError,
    StepCancelled,
    StepFailure,
    WorkerError,
)
from .handlers import HandlerRegistry, Sequence, Step, StepHandler, Task, handler  # noqa: E402
from .worker import Worker, WorkerStats  # noqa: E402

__all__ = [
    "ConfigurationError",
    "HandlerRegistry",
    "HelloRejected",
    "PermanentError",
    "RetryableError",
    "Sequence",
    "Step",
    "StepCancelled",
    "StepFailure",
    "StepHandler",
    "TaskerApiError",
    "TaskerClient",
    "TaskerWaitTimeout",
    "Task",
    "Worker",
    "WorkerError",
    "WorkerStats",
    "__version__",
    "handler",
]
