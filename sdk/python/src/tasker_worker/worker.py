"""The :class:`Worker`: one session with the orchestrator, from ``hello`` to ``goodbye``, and
the loop that runs the steps it receives (protocol v1, ``docs/protocol/spec.md``).

One loop
--------

:meth:`Worker.run` is a single loop on the calling thread that owns the ZeroMQ DEALER socket
(ZeroMQ sockets are not thread-safe). Each turn it polls the socket and a wake-up pipe, handles
the frames that arrived, collects the steps that finished, sends heartbeats when due, and starts
queued steps. Handlers run on a pool of at most ``capacity`` threads and hand their outcome back
to the loop; they never touch the socket. Because heartbeats come from the same loop that
collects results, a loop that is stuck looks dead to the orchestrator, which then rightly
re-dispatches this worker's steps; a handler that blocks its own thread does not stop the loop.

Session life cycle
------------------

1. Connect a DEALER (never bind, no routing id) and send ``hello``: handler classes, capacity,
   SDK, and on a re-registration every step this worker still accounts for (``in_flight``).
2. Wait for ``welcome``. ``hello_rejected`` with ``not_accepting_workers`` is retried with
   backoff; any other code ends :meth:`Worker.run` with :class:`HelloRejected`. No answer within
   ``welcome_timeout``: open a fresh socket and say ``hello`` again, backing off.
3. Registered: heartbeat every negotiated interval; run steps (at most ``capacity`` at once, the
   rest queued); send a ``partial_result`` as each step finishes and a ``batch_completion`` when a
   batch's steps are all reported; hold each until a ``result_ack`` names it, re-sending those
   that wait longer than ``liveness × heartbeat interval``. After an ``error`` ``not_registered``
   (the orchestrator restarted or forgot us) say ``hello`` again on the same socket; after
   ``liveness`` intervals without a word from the orchestrator, open a fresh socket and say
   ``hello``. After every ``welcome`` all held results are re-sent in their original order.
4. Shutdown (SIGTERM/SIGINT, or :meth:`Worker.request_shutdown`): send ``goodbye`` handing back
   the steps never started, take no new work (batches that still arrive are handed back), let
   running steps finish within ``shutdown_grace``, wait at most ``shutdown_ack_timeout`` for the
   last acknowledgements, close. A second signal skips both waits.

How an attempt is reported
--------------------------

- The handler returns a value → ``completed`` with that output.
- It raises :class:`~tasker_worker.errors.RetryableError` / :class:`PermanentError` → ``failed``,
  ``retryable`` true / false, with its ``error_class`` and ``retry_after``.
- It raises anything else → ``failed``, **retryable**, ``error_class`` the exception's class
  name (``"KeyError"``), ``backtrace`` its frames innermost first. Retryable because in Python an
  unexpected exception is as often a transient fault (a dropped connection, a timeout inside a
  client library) as a bug; the step's ``retry_limit`` bounds the cost of retrying a bug, and
  ``PermanentError`` is there for failures known to be final. (The Rust SDK reports a *panic* as
  permanent: a panic is always a bug there.)
- No handler for the step's class → ``failed`` ``tasker.unknown_handler_class``, retryable.
- The output cannot be encoded as JSON → ``failed``, not retryable, ``error_class`` the encoding
  error's class (``TypeError``/``ValueError``); larger than ``max_frame_bytes`` → ``failed``
  ``tasker.output_too_large``, not retryable.

Cancellation and timeouts (spec §10). Python cannot stop a thread, so stopping is cooperative:
the worker sets the step's cancellation flag (:attr:`Step.cancelled`, :meth:`Step.wait_cancelled`,
:meth:`Step.raise_if_cancelled`) and reports the attempt when the handler returns:

- ``cancel_steps``: a queued step is reported at once as ``failed`` ``tasker.cancelled`` (not
  retryable). For a running step the flag is set; if the handler then raises, ``tasker.cancelled``
  is reported, and if it returns, its real result is (spec: "the real result if the handler
  finished").
- ``timeout_ms``: when it passes, the flag is set; whatever the handler then does, the attempt is
  reported as ``failed`` ``tasker.timeout`` (retryable) once it returns.
- A handler that ignores the flag keeps its thread and its slot until it returns. That is what
  the orchestrator's credit count says too (a slot is released only by the step's result): the
  worker runs fewer steps at once, the orchestrator sends it fewer, and the orchestrator's own
  timeout fails the attempt and retries it elsewhere (the late result is then fenced). At shutdown
  such a step is reported as ``failed`` ``tasker.worker_shutdown`` (retryable) when the grace
  period ends, and its daemon thread dies with the process.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import platform
import secrets
import signal
import socket as stdlib_socket
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import zmq

from . import __version__
from .errors import ConfigurationError, HelloRejected, StepCancelled, StepFailure
from .execution import FinishedAttempt, StepThreadPool, Wakeup, run_attempt
from .handlers import HandlerRegistry, Sequence, Step, Task, as_registry, invoke
from .outbox import Outbox
from .protocol import (
    BatchCompletion,
    CancelSteps,
    ErrorReport,
    Goodbye,
    HealthReply,
    HealthRequest,
    Hello,
    Limits,
    PartialResult,
    ProtocolError,
    ResultAck,
    ResultKey,
    SdkInfo,
    StepBatch,
    StepError,
    StepRef,
    StepRequest,
    StepSummary,
    Timestamp,
    Welcome,
    WorkerHeartbeat,
    decode_orchestrator_message,
    encode,
    report_rejected_orchestrator_frame,
)
from .protocol import (
    HelloRejected as HelloRejectedMessage,
)
from .protocol import errors as codes
from .protocol.codec import nesting_exceeds
from .protocol.limits import (
    DEFAULT_HEARTBEAT_INTERVAL_MS,
    DEFAULT_LIVENESS,
    MAX_CAPACITY,
    MAX_HEARTBEAT_INTERVAL_MS,
    MAX_IDENTIFIER_BYTES,
    MAX_MAX_FRAME_BYTES,
    MAX_NAME_BYTES,
    MAX_NESTING_DEPTH,
    MIN_HEARTBEAT_INTERVAL_MS,
)
from .protocol.messages import CANCELLED, OUTPUT_TOO_LARGE, TIMEOUT, UNKNOWN_HANDLER_CLASS

SDK_NAME = "tasker-worker-python"
SDK_LANGUAGE = "python"

#: ``error_class`` of a step still running when a shutdown's grace period ended (retryable: the
#: handler started, so the attempt counts, but another attempt elsewhere may well succeed). Same
#: class as the Rust SDK's.
WORKER_SHUTDOWN = "tasker.worker_shutdown"

DEFAULT_CAPACITY = 10
DEFAULT_WELCOME_TIMEOUT = 5.0
DEFAULT_RETRY_BACKOFF_MAX = 30.0
DEFAULT_SHUTDOWN_GRACE = 30.0
DEFAULT_SHUTDOWN_ACK_TIMEOUT = 5.0

_RECEIVE_BURST = 1000  # frames handled per loop turn before timers get a look in
_REMEMBERED_BATCHES = 4096  # finished batch ids remembered to ignore a re-sent step_batch
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

log = logging.getLogger("tasker_worker")


@dataclass
class WorkerStats:
    """Counters of a worker since it started, for logs, metrics and tests."""

    steps_started: int = 0
    steps_completed: int = 0
    steps_failed: int = 0
    steps_handed_back: int = 0
    batches_completed: int = 0
    results_resent: int = 0
    results_acknowledged: int = 0
    results_unacknowledged: int = 0
    #: Frames from the orchestrator that were rejected, by error code.
    rejected_frames: dict[str, int] = field(default_factory=dict)
    errors_received: int = 0
    hellos_sent: int = 0
    reconnects: int = 0
    heartbeats_sent: int = 0
    registered: bool = False

    def copy(self) -> WorkerStats:
        return WorkerStats(**{**self.__dict__, "rejected_frames": dict(self.rejected_frames)})


# Link states.
_AWAITING_WELCOME = "awaiting_welcome"
_RETRY_LATER = "retry_later"
_REGISTERED = "registered"


@dataclass
class _Slot:
    """A step this worker accounts for that has no final result yet."""

    request: StepRequest
    batch_id: str
    running: bool = False
    step: Step | None = None
    deadline: float | None = None
    #: Why the worker asked the running handler to stop: "timeout", "shutdown", or a
    #: ``cancel_steps`` reason.
    interruption: str | None = None


@dataclass
class _BatchProgress:
    order: list[int]
    statuses: dict[int, str] = field(default_factory=dict)
    remaining: int = 0
    handed_back: bool = False


@dataclass
class _Drain:
    reason: str
    grace_deadline: float
    ack_deadline: float | None = None
    forced: bool = False


class Worker:
    """Connects to the orchestrator, registers its handlers and runs the steps it is sent until
    shut down. See the module documentation for the session's life cycle.

    ::

        Worker("tcp://127.0.0.1:5555", [ValidateOrder, ship_order], capacity=8).run()

    Parameters (times in seconds):

    - ``endpoint``: the orchestrator's ROUTER endpoint (``tcp://host:port``, ``ipc:///path``,
      ``inproc://name`` with a shared ``context``). The only setting a worker needs.
    - ``handlers``: a :class:`HandlerRegistry`, a mapping ``{handler_class: handler}``, or an
      iterable of handlers (:class:`StepHandler` subclasses or instances, ``@handler``
      functions).
    - ``capacity``: most steps run at once (1–10000), announced as this worker's credit.
      Default 10. Too low leaves the worker idle while steps wait; too high lets one slow
      dependency be hit by that many requests at once from one process (and that many threads).
    - ``name``: display name for dashboards (default ``tasker-worker-python (pid N)``).
    - ``worker_id``: unique per process; default ``<hostname>-<pid>-<8 random hex>``.
    - ``heartbeat_interval``: the interval to ask for (0.1–60 s); ``None`` (default) accepts the
      orchestrator's. The interval used is the one in ``welcome``.
    - ``welcome_timeout``: how long to wait for ``welcome`` before a fresh connection and a new
      ``hello`` (doubling per retry up to ``retry_backoff_max``). Default 5. Also the least time
      between two re-registrations prompted by ``not_registered`` (the first one is immediate).
    - ``retry_backoff_max``: longest wait between registration attempts. Default 30.
    - ``shutdown_grace``: on shutdown, how long running steps may take to finish. Default 30.
      Too short wastes nearly finished work; too long delays a deploy.
    - ``shutdown_ack_timeout``: on shutdown, how long to wait for the last acknowledgements.
      Default 5. Results still unacknowledged then are lost with the process; the orchestrator
      re-runs those steps after their timeout.
    - ``install_signal_handlers``: handle SIGTERM/SIGINT as a graceful shutdown while
      :meth:`run` runs (only possible on the main thread). Default True.
    - ``context``: the ``zmq.Context`` to use (default: a private one).
    """

    def __init__(
        self,
        endpoint: str,
        handlers: Any,
        *,
        capacity: int = DEFAULT_CAPACITY,
        name: str | None = None,
        worker_id: str | None = None,
        heartbeat_interval: float | None = None,
        welcome_timeout: float = DEFAULT_WELCOME_TIMEOUT,
        retry_backoff_max: float = DEFAULT_RETRY_BACKOFF_MAX,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
        shutdown_ack_timeout: float = DEFAULT_SHUTDOWN_ACK_TIMEOUT,
        install_signal_handlers: bool = True,
        context: zmq.Context | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.registry: HandlerRegistry = as_registry(handlers)
        self.capacity = capacity
        self.name = name if name is not None else f"{SDK_NAME} (pid {os.getpid()})"
        self.worker_id = worker_id if worker_id is not None else default_worker_id()
        self.heartbeat_interval = heartbeat_interval
        self.welcome_timeout = welcome_timeout
        self.retry_backoff_max = retry_backoff_max
        self.shutdown_grace = shutdown_grace
        self.shutdown_ack_timeout = shutdown_ack_timeout
        self.install_signal_handlers = install_signal_handlers
        self._validate()

        self._context = context
        self._owns_context = context is None
        self._started = time.monotonic()
        self._stats = WorkerStats()
        self._wakeup: Wakeup | None = None
        self._shutdown_reason: str | None = None
        self._shutdown_count = 0
        self._running_thread: threading.Thread | None = None
        self._ran = False

    # ----- public API -----

    def run(self) -> None:
        """Connects, registers and runs steps until shut down; then shuts down gracefully and
        returns. Runs on the calling thread.

        Raises :class:`HelloRejected` when the orchestrator refuses this worker for good, and
        :class:`ConfigurationError` for an empty registry.
        """
        if self._ran:
            raise RuntimeError("a Worker runs once; create a new one")
        self._ran = True
        if len(self.registry) == 0:
            raise ConfigurationError(
                "the handler registry is empty; register at least one handler class"
            )
        self._running_thread = threading.current_thread()
        self._wakeup = Wakeup()
        previous_handlers = self._install_signals()
        session = _Session(self)
        try:
            session.run()
        finally:
            session.close()
            self._restore_signals(previous_handlers)
            self._wakeup.close()
            self._stats.registered = False

    def request_shutdown(self, reason: str = "shutdown") -> None:
        """Asks :meth:`run` to shut down gracefully (thread-safe; signal handlers call it). A
        second request skips the grace period and the wait for acknowledgements."""
        self._shutdown_count += 1
        if self._shutdown_reason is None:
            self._shutdown_reason = reason
        if self._wakeup is not None:
            self._wakeup.wake()

    def stats(self) -> WorkerStats:
        """A snapshot of the worker's counters."""
        return self._stats.copy()

    @property
    def sdk(self) -> SdkInfo:
        return SdkInfo(name=SDK_NAME, version=__version__, language=SDK_LANGUAGE)

    # ----- setup -----

    def _validate(self) -> None:
        def invalid(reason: str) -> ConfigurationError:
            return ConfigurationError(reason)

        if not isinstance(self.endpoint, str) or not self.endpoint:
            raise invalid("endpoint must be a non-empty string such as tcp://127.0.0.1:5555")
        problem = identifier_problem(self.worker_id)
        if problem:
            raise invalid(f"worker_id {self.worker_id!r} {problem}")
        name_bytes = len(self.name.encode("utf-8", "surrogatepass"))
        if not 1 <= name_bytes <= MAX_NAME_BYTES:
            raise invalid(f"name must be 1 to {MAX_NAME_BYTES} bytes")
        if type(self.capacity) is not int or not 1 <= self.capacity <= MAX_CAPACITY:
            raise invalid(
                f"capacity must be an integer from 1 to {MAX_CAPACITY}, not {self.capacity!r}"
            )
        if self.heartbeat_interval is not None:
            millis = round(self.heartbeat_interval * 1000)
            if not MIN_HEARTBEAT_INTERVAL_MS <= millis <= MAX_HEARTBEAT_INTERVAL_MS:
                raise invalid(
                    f"heartbeat_interval must be between {MIN_HEARTBEAT_INTERVAL_MS / 1000} and "
                    f"{MAX_HEARTBEAT_INTERVAL_MS / 1000} seconds, not {self.heartbeat_interval!r}"
                )
        for setting in ("welcome_timeout", "retry_backoff_max"):
            if not getattr(self, setting) > 0:
                raise invalid(f"{setting} must be longer than zero")
        for setting in ("shutdown_grace", "shutdown_ack_timeout"):
            if not getattr(self, setting) >= 0:
                raise invalid(f"{setting} must not be negative")

    def _install_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        if (
            not self.install_signal_handlers
            or threading.current_thread() is not threading.main_thread()
        ):
            return previous
        for signum in (signal.SIGTERM, signal.SIGINT):
            name = signal.Signals(signum).name

            def on_signal(_signum: int, _frame: Any, name: str = name) -> None:
                log.info("%s received: shutting down gracefully", name)
                self.request_shutdown(name)

            previous[signum] = signal.signal(signum, on_signal)
        return previous

    def _restore_signals(self, previous: dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def default_worker_id() -> str:
    """``<hostname>-<pid>-<8 random hex>`` (spec §5.2), the host name cut to 64 characters and
    characters an identifier may not hold replaced by ``-``."""
    host = stdlib_socket.gethostname() or "host"
    host = "".join(c if c.isascii() and (c.isalnum() or c in "._:@-") else "-" for c in host[:64])
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def identifier_problem(text: Any) -> str | None:
    """Why ``text`` is not a protocol identifier, or ``None``."""
    if not isinstance(text, str):
        return "must be a string"
    if not 1 <= len(text.encode("utf-8", "surrogatepass")) <= MAX_IDENTIFIER_BYTES:
        return f"must be 1 to {MAX_IDENTIFIER_BYTES} bytes"
    bad = next((c for c in text if not (c.isascii() and (c.isalnum() or c in "._:@-"))), None)
    if bad is not None:
        return f"contains {bad!r}; only A-Z a-z 0-9 . _ : @ - are allowed"
    return None


def backoff(base: float, attempts: int, maximum: float) -> float:
    """``base`` doubled ``attempts`` times, at most ``maximum``."""
    return min(base * (2 ** min(attempts, 16)), maximum)


def _millis(seconds: float) -> int:
    return max(0, int(round(seconds * 1000)))


def exception_backtrace(error: BaseException) -> list[str]:
    """The frames of ``error``'s traceback, innermost first, without the SDK's own frames."""
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not os.path.abspath(frame.filename).startswith(_PACKAGE_DIR + os.sep)
    ]
    return [f"{frame.filename}:{frame.lineno}:in {frame.name}" for frame in reversed(frames)]


def step_error_from_exception(error: BaseException) -> StepError:
    """The ``partial_result.error`` for an exception a handler raised."""
    if isinstance(error, StepFailure):
        return StepError(
            message=error.message,
            error_class=error.error_class,
            retryable=error.retryable,
            retry_after_ms=getattr(error, "retry_after_ms", None),
            backtrace=exception_backtrace(error),
        )
    message = str(error) or type(error).__name__
    return StepError(
        message=message,
        error_class=type(error).__name__,
        retryable=True,
        backtrace=exception_backtrace(error),
    )


class _Session:
    """The state of one :meth:`Worker.run`: the socket, the link, the steps, the held results.
    Only the loop thread touches it."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.stats = worker._stats
        assert worker._wakeup is not None
        self.wakeup = worker._wakeup
        self.context = worker._context or zmq.Context()
        self.socket: zmq.Socket | None = None
        self.poller = zmq.Poller()
        self.poller.register(self.wakeup.fileno(), zmq.POLLIN)
        self.pool = StepThreadPool(worker.capacity, f"tasker-step-{worker.worker_id[-8:]}")
        self.finished: deque[FinishedAttempt] = deque()
        self.finished_lock = threading.Lock()

        self.link = _AWAITING_WELCOME
        self.link_deadline = 0.0
        self.registration_attempts = 0
        self.last_hello_at = 0.0
        # When not_registered last made us say hello; None until it first does.
        self.last_rehello_at: float | None = None
        self.limits = Limits()
        self.heartbeat_period = worker.heartbeat_interval or DEFAULT_HEARTBEAT_INTERVAL_MS / 1000
        self.liveness = DEFAULT_LIVENESS
        self.last_contact = time.monotonic()
        self.next_heartbeat = 0.0

        self.slots: dict[StepRef, _Slot] = {}
        self.queue: deque[StepRef] = deque()
        self.running = 0
        self.deadlines: list[tuple[float, str, int]] = []
        self.batches: dict[str, _BatchProgress] = {}
        self.finished_batches: deque[str] = deque(maxlen=_REMEMBERED_BATCHES)
        self.finished_batch_set: set[str] = set()
        self.outbox = Outbox()
        self.next_sequence = 1
        self.drain: _Drain | None = None
        self.pending_hand_backs: list[StepRef] = []

    # ----- the loop -----

    def run(self) -> None:
        self.open_socket()
        self.send_hello()
        while True:
            self.turn()
            if self.drain_finished():
                return

    def turn(self) -> None:
        now = time.monotonic()
        wait = max(0.0, self.next_wakeup(now) - now)
        events = dict(self.poller.poll(timeout=math.ceil(min(wait, 1.0) * 1000)))
        if self.wakeup.fileno() in events:
            self.wakeup.drain()
        if self.socket is not None and self.socket in events:
            self.receive_burst()
        self.collect_finished()
        self.check_shutdown_request()
        self.on_timers(time.monotonic())
        self.start_queued_steps()

    def next_wakeup(self, now: float) -> float:
        candidates = [now + 1.0]
        if self.link == _REGISTERED:
            candidates.append(self.next_heartbeat)
        else:
            candidates.append(self.link_deadline)
        while self.deadlines and not self._deadline_live(self.deadlines[0]):
            heapq.heappop(self.deadlines)
        if self.deadlines:
            candidates.append(self.deadlines[0][0])
        if self.drain is not None:
            if self.running:
                candidates.append(self.drain.grace_deadline)
            if self.drain.ack_deadline is not None:
                candidates.append(self.drain.ack_deadline)
        return min(candidates)

    def _deadline_live(self, entry: tuple[float, str, int]) -> bool:
        deadline, batch_id, step_id = entry
        slot = self.slots.get(StepRef(batch_id, step_id))
        return (
            slot is not None
            and slot.running
            and slot.interruption is None
            and slot.deadline == deadline
        )

    def on_timers(self, now: float) -> None:
        while self.deadlines and self.deadlines[0][0] <= now:
            entry = heapq.heappop(self.deadlines)
            if self._deadline_live(entry):
                self.interrupt(StepRef(entry[1], entry[2]), "timeout")
        if self.drain is not None:
            if self.running and now >= self.drain.grace_deadline:
                self.end_grace_period()
        if self.link == _REGISTERED:
            if now >= self.next_heartbeat:
                self.on_heartbeat_due(now)
        elif now >= self.link_deadline:
            if self.link == _AWAITING_WELCOME:
                log.warning(
                    "no welcome from the orchestrator at %s in time; opening a fresh connection",
                    self.worker.endpoint,
                )
            self.reconnect()

    # ----- the socket -----

    def open_socket(self) -> None:
        socket = self.context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        # A memory guard well above any session's max_frame_bytes (spec §2.1); frames above the
        # session's limit but below this are rejected by the decoder with frame_too_large.
        socket.setsockopt(zmq.MAXMSGSIZE, MAX_MAX_FRAME_BYTES)
        try:
            socket.connect(self.worker.endpoint)
        except zmq.ZMQError as error:
            socket.close(linger=0)
            raise ConfigurationError(
                f"cannot connect to {self.worker.endpoint!r}: {error} (expected an endpoint such "
                "as tcp://127.0.0.1:5555, ipc:///path or inproc://name)"
            ) from None
        self.socket = socket
        self.poller.register(socket, zmq.POLLIN)

    def close_socket(self) -> None:
        if self.socket is not None:
            self.poller.unregister(self.socket)
            self.socket.close(linger=0)
            self.socket = None

    def close(self) -> None:
        self.close_socket()
        self.pool.shutdown()
        if self.worker._owns_context:
            self.context.term()

    def reconnect(self) -> None:
        """A fresh socket (linger 0: queued frames are dropped, held results live here) and a
        fresh routing identity, then ``hello`` (spec §7.4)."""
        self.registration_attempts += 1
        self.stats.reconnects += 1
        self.close_socket()
        self.open_socket()
        self.send_hello()

    def send(self, message: Any) -> bool:
        return self.send_frame(encode(message))

    def send_frame(self, frame: bytes) -> bool:
        """Sends without blocking; ``False`` when ZeroMQ cannot take the frame now (no
        connection and a full queue). Results are held, so they go out again later."""
        if self.socket is None:
            return False
        try:
            self.socket.send(frame, zmq.NOBLOCK)
            return True
        except zmq.Again:
            log.debug("the socket's queue is full; frame not sent")
            return False

    def send_if_registered(self, message: Any) -> None:
        """While awaiting ``welcome`` a worker sends nothing but ``hello`` (spec §7.1)."""
        if self.link == _REGISTERED:
            self.send(message)

    # ----- registration -----

    def in_flight_refs(self) -> list[StepRef]:
        refs = set(self.slots) | set(self.outbox.held_steps())
        return sorted(refs, key=lambda ref: (ref.batch_id, ref.step_id))

    def send_hello(self) -> None:
        interval = self.worker.heartbeat_interval
        hello = Hello(
            worker_id=self.worker.worker_id,
            name=self.worker.name,
            sdk=self.worker.sdk,
            handler_classes=self.worker.registry.handler_classes(),
            capacity=self.worker.capacity,
            heartbeat_interval_ms=None if interval is None else _millis(interval),
            in_flight=self.in_flight_refs(),
        )
        log.debug("sending hello (%d in flight)", len(hello.in_flight))
        self.send(hello)
        self.stats.hellos_sent += 1
        now = time.monotonic()
        self.last_hello_at = now
        wait = backoff(
            self.worker.welcome_timeout,
            self.registration_attempts,
            max(self.worker.retry_backoff_max, self.worker.welcome_timeout),
        )
        self.set_unregistered(_AWAITING_WELCOME, now + wait)

    def set_unregistered(self, link: str, deadline: float) -> None:
        if self.link == _REGISTERED:
            self.outbox.mark_all_unsent()
        self.link = link
        self.link_deadline = deadline
        self.stats.registered = False

    def on_welcome(self, welcome: Welcome) -> None:
        if welcome.worker_id != self.worker.worker_id:
            log.warning(
                "welcome names worker id %r, not this worker's; ignoring it", welcome.worker_id
            )
            return
        self.limits = Limits(welcome.max_frame_bytes, welcome.max_steps_per_batch)
        self.liveness = welcome.liveness
        period = welcome.heartbeat_interval_ms / 1000
        was_registered = self.link == _REGISTERED
        now = time.monotonic()
        if period != self.heartbeat_period or not was_registered:
            self.heartbeat_period = period
            self.next_heartbeat = now + period
        if was_registered:
            log.debug("repeated welcome; session parameters refreshed")
            return
        log.info(
            "registered with orchestrator %s (heartbeat %d ms, liveness %d, %d held results)",
            welcome.orchestrator_id,
            welcome.heartbeat_interval_ms,
            welcome.liveness,
            len(self.outbox),
        )
        self.link = _REGISTERED
        self.registration_attempts = 0
        self.stats.registered = True
        if self.drain is not None:
            # A new session does not know we are leaving: say it again, with the hand-backs
            # decided while unregistered.
            handed_back, self.pending_hand_backs = self.pending_hand_backs, []
            self.send_goodbye(handed_back)
        self.flush_outbox(now, stale_before=None)

    def on_hello_rejected(self, rejected: HelloRejectedMessage) -> None:
        if rejected.code == codes.HELLO_REJECTED_NOT_ACCEPTING_WORKERS:
            self.registration_attempts += 1
            wait = backoff(1.0, self.registration_attempts, self.worker.retry_backoff_max)
            log.warning(
                "the orchestrator is not accepting workers (%s); trying again in %.1f s",
                rejected.message,
                wait,
            )
            self.set_unregistered(_RETRY_LATER, time.monotonic() + wait)
            return
        raise HelloRejected(rejected.code, rejected.message)

    def on_heartbeat_due(self, now: float) -> None:
        allowed = self.heartbeat_period * self.liveness
        silence = now - self.last_contact
        if silence > allowed:
            log.warning(
                "no message from the orchestrator for %.1f s (%d heartbeat intervals); "
                "reconnecting",
                silence,
                self.liveness,
            )
            self.set_unregistered(_AWAITING_WELCOME, now)
            self.reconnect()
            return
        in_flight = len(self.slots)
        self.send(
            WorkerHeartbeat(
                worker_id=self.worker.worker_id,
                in_flight=in_flight,
                free_capacity=max(self.worker.capacity - in_flight, 0),
                timestamp=Timestamp.now(),
            )
        )
        self.stats.heartbeats_sent += 1
        self.next_heartbeat = now + self.heartbeat_period
        # Results whose send failed, or that waited too long for their ack, go out again.
        self.flush_outbox(now, stale_before=now - allowed)

    # ----- inbound frames -----

    def receive_burst(self) -> None:
        assert self.socket is not None
        socket = self.socket
        for _ in range(_RECEIVE_BURST):
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 1:
                self.reject(ProtocolError.multipart(len(frames)), None)
            else:
                self.on_frame(frames[0])
            if self.socket is not socket:
                return  # the frame made us reconnect

    def reject(self, error: ProtocolError, frame: bytes | None) -> None:
        """Counts and logs a rejected frame and reports it to the orchestrator (spec §11);
        never answers an ``error`` with an ``error``."""
        rejected = self.stats.rejected_frames
        rejected[error.code] = rejected.get(error.code, 0) + 1
        log.warning("rejected a frame from the orchestrator (%s): %s", error.code, error.message)
        if frame is None:
            report: ErrorReport | None = ErrorReport(code=error.code, message=error.message)
        else:
            report = report_rejected_orchestrator_frame(frame, error)
        if report is not None:
            self.send_if_registered(report)

    def on_frame(self, frame: bytes) -> None:
        try:
            message = decode_orchestrator_message(frame, self.limits)
        except ProtocolError as error:
            self.reject(error, frame)
            return
        self.last_contact = time.monotonic()
        if isinstance(message, Welcome):
            self.on_welcome(message)
        elif isinstance(message, HelloRejectedMessage):
            self.on_hello_rejected(message)
        elif isinstance(message, StepBatch):
            self.on_step_batch(message)
        elif isinstance(message, ResultAck):
            self.on_result_ack(message)
        elif isinstance(message, CancelSteps):
            self.on_cancel_steps(message)
        elif isinstance(message, HealthRequest):
            self.on_health_request(message)
        elif isinstance(message, ErrorReport):
            self.on_error_report(message)
        # An orchestrator heartbeat only refreshes liveness, done above.

    def on_error_report(self, report: ErrorReport) -> None:
        self.stats.errors_received += 1
        if report.code == codes.NOT_REGISTERED:
            # Say hello at once: a restarted orchestrator waits only a few liveness windows
            # for workers to claim the steps they run before it re-dispatches them. While
            # awaiting welcome the replies to what we sent before the hello are ignored, and
            # re-registrations prompted by not_registered are at most one per welcome timeout
            # (spec §7.5) — counted from the last such one, not from the hello that opened the
            # session, which may be moments old.
            now = time.monotonic()
            if self.link == _REGISTERED and (
                self.last_rehello_at is None
                or now - self.last_rehello_at >= self.worker.welcome_timeout
            ):
                log.warning(
                    "the orchestrator does not know this worker (%s); registering again",
                    report.message,
                )
                self.last_rehello_at = now
                self.send_hello()
            return
        key = rejected_result_key(report)
        if key is not None and self.outbox.release(key):
            self.stats.results_unacknowledged = len(self.outbox)
            log.error(
                "the orchestrator rejected result %s (%s: %s); dropping it, the step will time out "
                "and be retried",
                key,
                report.code,
                report.message,
            )
            return
        log.warning(
            "the orchestrator rejected a message from this worker (%s: %s; message_type %s)",
            report.code,
            report.message,
            report.offending_message_type,
        )

    def on_health_request(self, request: HealthRequest) -> None:
        in_flight = len(self.slots)
        self.send_if_registered(
            HealthReply(
                request_id=request.request_id,
                worker_id=self.worker.worker_id,
                status="draining" if self.drain is not None else "healthy",
                in_flight=in_flight,
                free_capacity=max(self.worker.capacity - in_flight, 0),
                uptime_ms=_millis(time.monotonic() - self.worker._started),
                details={
                    "running": self.running,
                    "queued": len(self.queue),
                    "unacknowledged_results": len(self.outbox),
                    "rejected_frames": sum(self.stats.rejected_frames.values()),
                    "python_version": platform.python_version(),
                },
            )
        )

    # ----- steps -----

    def on_step_batch(self, batch: StepBatch) -> None:
        batch_id = batch.batch_id
        if (
            batch_id in self.batches
            or self.outbox.holds_batch(batch_id)
            or batch_id in self.finished_batch_set
        ):
            log.warning("batch %s received twice; ignoring the copy", batch_id)
            return
        if self.drain is not None:
            handed_back = [StepRef(batch_id, step.step_id) for step in batch.steps]
            log.info("shutting down: handing batch %s (%d steps) back", batch_id, len(handed_back))
            self.stats.steps_handed_back += len(handed_back)
            self.send_goodbye(handed_back)
            return
        log.debug("batch %s received (%d steps)", batch_id, len(batch.steps))
        before = len(self.slots)
        self.batches[batch_id] = _BatchProgress(
            order=[step.step_id for step in batch.steps], remaining=len(batch.steps)
        )
        for request in batch.steps:
            ref = StepRef(batch_id, request.step_id)
            if request.handler_class not in self.worker.registry:
                log.warning(
                    "no handler registered for %r (step %d)", request.handler_class, request.step_id
                )
                error = StepError(
                    message=(
                        f"worker {self.worker.worker_id} has no handler registered for "
                        f"handler_class {request.handler_class!r}"
                    ),
                    error_class=UNKNOWN_HANDLER_CLASS,
                    retryable=True,
                )
                self.report(ref, request.metadata.attempt, None, error, 0.0)
                continue
            self.slots[ref] = _Slot(request=request, batch_id=batch_id)
            self.queue.append(ref)
        capacity = self.worker.capacity
        if len(self.slots) > capacity and len(self.slots) > before:
            # An orchestrator bug (its credit should prevent it): say so, and still queue and
            # run the steps (spec §8.4).
            log.warning(
                "batch %s brings this worker to %d steps, above its capacity of %d; "
                "queueing the excess",
                batch_id,
                len(self.slots),
                capacity,
            )
            self.send_if_registered(
                ErrorReport(
                    code=codes.CAPACITY_EXCEEDED,
                    message=(
                        f"step_batch {batch_id} brings worker {self.worker.worker_id} to "
                        f"{len(self.slots)} steps without a result, above its capacity of "
                        f"{capacity}; the excess is queued"
                    ),
                    offending_message_type="step_batch",
                    batch_id=batch_id,
                )
            )

    def start_queued_steps(self) -> None:
        if self.drain is not None:
            return
        while self.running < self.worker.capacity and self.queue:
            ref = self.queue.popleft()
            slot = self.slots.get(ref)
            if slot is None or slot.running:
                continue
            handler = self.worker.registry.get(slot.request.handler_class)
            if handler is None:  # registry checked on arrival; cannot change since
                continue
            request = slot.request
            step = Step(
                name=request.step_name,
                step_id=request.step_id,
                task_id=request.task_id,
                batch_id=ref.batch_id,
                handler_class=request.handler_class,
                handler_config=request.handler_config,
                attempt=request.metadata.attempt,
                retry_limit=request.metadata.retry_limit,
                idempotency_key=request.metadata.idempotency_key,
                timeout_ms=request.metadata.timeout_ms,
                worker_id=self.worker.worker_id,
            )
            task = Task(request.task_id, request.task_context)
            sequence = Sequence(request.previous_results)
            slot.running = True
            slot.step = step
            self.running += 1
            self.stats.steps_started += 1
            if request.metadata.timeout_ms is not None:
                slot.deadline = time.monotonic() + request.metadata.timeout_ms / 1000
                heapq.heappush(self.deadlines, (slot.deadline, ref.batch_id, ref.step_id))

            def call(
                handler: Any = handler,
                task: Task = task,
                sequence: Sequence = sequence,
                step: Step = step,
            ) -> Any:
                return invoke(handler, task, sequence, step)

            self.pool.submit(run_attempt(ref, call, self.deliver))

    def deliver(self, finished: FinishedAttempt) -> None:
        """Called on a pool thread when a handler call ends."""
        with self.finished_lock:
            self.finished.append(finished)
        self.wakeup.wake()

    def collect_finished(self) -> None:
        while True:
            with self.finished_lock:
                if not self.finished:
                    return
                finished = self.finished.popleft()
            self.on_attempt_finished(finished)

    def on_attempt_finished(self, finished: FinishedAttempt) -> None:
        slot = self.slots.get(finished.step)
        if slot is None or not slot.running:
            return  # already reported (abandoned at the end of a shutdown's grace period)
        self.running -= 1
        attempt = slot.request.metadata.attempt
        raised = finished.raised
        if slot.interruption == "timeout":
            error: StepError | None = self.timeout_error(slot, finished.elapsed)
            self.report(finished.step, attempt, None, error, finished.elapsed)
        elif slot.interruption is not None and raised is not None:
            self.report(
                finished.step, attempt, None, self.interruption_error(slot), finished.elapsed
            )
        elif raised is not None:
            if not isinstance(raised, (StepFailure, StepCancelled)):
                log.info(
                    "step %s (%d) raised %s: %s",
                    slot.request.step_name,
                    slot.request.step_id,
                    type(raised).__name__,
                    raised,
                )
            self.report(
                finished.step, attempt, None, step_error_from_exception(raised), finished.elapsed
            )
        else:
            self.report(finished.step, attempt, finished.returned, None, finished.elapsed)

    def timeout_error(self, slot: _Slot, elapsed: float) -> StepError:
        return StepError(
            message=(
                f"the step ran past its timeout of {slot.request.metadata.timeout_ms} ms; the "
                f"worker asked it to stop and it returned after {_millis(elapsed)} ms"
            ),
            error_class=TIMEOUT,
            retryable=True,
        )

    def interruption_error(self, slot: _Slot) -> StepError:
        if slot.interruption == "timeout":
            return self.timeout_error(slot, 0.0)
        if slot.interruption == "shutdown":
            return StepError(
                message=(
                    f"the worker shut down and its grace period of {self.worker.shutdown_grace} s "
                    "ended before the step finished"
                ),
                error_class=WORKER_SHUTDOWN,
                retryable=True,
            )
        return StepError(
            message=f"the orchestrator cancelled the step ({slot.interruption})",
            error_class=CANCELLED,
            retryable=False,
        )

    def interrupt(self, ref: StepRef, why: str) -> None:
        """Asks a running step to stop (sets its cancellation flag)."""
        slot = self.slots.get(ref)
        if slot is None or not slot.running or slot.step is None:
            return
        if slot.interruption is None:
            slot.interruption = why
        log.info("asking step %s (%d) to stop: %s", slot.request.step_name, ref.step_id, why)
        slot.step.cancellation.set()

    def on_cancel_steps(self, cancel: CancelSteps) -> None:
        for step_id in cancel.step_ids:
            ref = StepRef(cancel.batch_id, step_id)
            slot = self.slots.get(ref)
            if slot is None:
                log.debug(
                    "cancel for step %d of batch %s, which has no pending result",
                    step_id,
                    cancel.batch_id,
                )
                continue
            if slot.running:
                self.interrupt(ref, cancel.reason)
            else:
                try:
                    self.queue.remove(ref)
                except ValueError:
                    pass
                slot.interruption = cancel.reason
                self.report(
                    ref, slot.request.metadata.attempt, None, self.interruption_error(slot), 0.0
                )

    # ----- results -----

    def report(
        self,
        ref: StepRef,
        attempt: int,
        output: Any,
        error: StepError | None,
        elapsed: float,
    ) -> None:
        """Sends the final result of ``ref`` (and its batch's completion when it was the last
        one), holding both until acknowledged."""
        self.slots.pop(ref, None)
        sequence = self.next_sequence
        self.next_sequence += 1
        result = PartialResult(
            batch_id=ref.batch_id,
            step_id=ref.step_id,
            attempt=attempt,
            status="completed" if error is None else "failed",
            output=output if error is None else None,
            error=None if error is None else error.fit_to_limits(),
            worker_id=self.worker.worker_id,
            sequence=sequence,
            timestamp=Timestamp.now(),
            execution_time_ms=_millis(elapsed),
        )
        frame = self.encode_result(result)
        if result.status == "completed":
            self.stats.steps_completed += 1
        else:
            self.stats.steps_failed += 1
        self.hold_and_send(result.key(), frame)

        progress = self.batches.get(ref.batch_id)
        if progress is None:
            return
        progress.statuses[ref.step_id] = result.status
        progress.remaining -= 1
        if progress.remaining > 0:
            return
        del self.batches[ref.batch_id]
        self.remember_finished_batch(ref.batch_id)
        if progress.handed_back:
            return  # a batch with hand-backs cannot account for every step: no completion
        summaries = [
            StepSummary(step_id, progress.statuses.get(step_id, "failed"))
            for step_id in progress.order
        ]
        completed = sum(1 for summary in summaries if summary.status == "completed")
        completion = BatchCompletion(
            batch_id=ref.batch_id,
            total_steps=len(summaries),
            completed_steps=completed,
            failed_steps=len(summaries) - completed,
            step_summaries=summaries,
            completed_at=Timestamp.now(),
            worker_id=self.worker.worker_id,
        )
        self.stats.batches_completed += 1
        self.hold_and_send(completion.key(), encode(completion))

    def encode_result(self, result: PartialResult) -> bytes:
        """Encodes a partial result; a completed one whose output cannot travel becomes a
        failure saying why (spec §9.1)."""
        try:
            frame = encode(result)
        except (TypeError, ValueError) as problem:
            return self.encode_output_failure(
                result,
                StepError(
                    message=f"the handler's output cannot be sent as JSON: {problem}",
                    error_class=type(problem).__name__,
                    retryable=False,
                ),
            )
        if nesting_exceeds(frame, MAX_NESTING_DEPTH):
            return self.encode_output_failure(
                result,
                StepError(
                    message=(
                        "the handler's output nests deeper than the protocol's "
                        f"{MAX_NESTING_DEPTH} levels"
                    ),
                    error_class="ValueError",
                    retryable=False,
                ),
            )
        if len(frame) > self.limits.max_frame_bytes:
            return self.encode_output_failure(
                result,
                StepError(
                    message=(
                        f"the step's result encodes to {len(frame)} bytes, more than the session's "
                        f"max_frame_bytes of {self.limits.max_frame_bytes}"
                    ),
                    error_class=OUTPUT_TOO_LARGE,
                    retryable=False,
                ),
            )
        return frame

    def encode_output_failure(self, result: PartialResult, error: StepError) -> bytes:
        log.warning("step %d: %s", result.step_id, error.message)
        result.status = "failed"
        result.output = None
        result.error = error.fit_to_limits()
        return encode(result)

    def remember_finished_batch(self, batch_id: str) -> None:
        if len(self.finished_batches) == self.finished_batches.maxlen:
            self.finished_batch_set.discard(self.finished_batches[0])
        self.finished_batches.append(batch_id)
        self.finished_batch_set.add(batch_id)

    def hold_and_send(self, key: ResultKey, frame: bytes) -> None:
        held = self.outbox.hold(key, frame)
        self.stats.results_unacknowledged = len(self.outbox)
        if self.link == _REGISTERED and self.send_frame(frame):
            held.last_sent = time.monotonic()
            held.ever_sent = True

    def flush_outbox(self, now: float, stale_before: float | None) -> None:
        """Sends, oldest first, every held result not yet sent on this session and, with
        ``stale_before``, every one last sent before it (spec §9.3)."""
        for _key, held in self.outbox.due(now, stale_before):
            if held.ever_sent:
                self.stats.results_resent += 1
            if self.send_frame(held.frame):
                held.ever_sent = True
            else:
                held.last_sent = None

    def on_result_ack(self, ack: ResultAck) -> None:
        for entry in ack.acks:
            if self.outbox.release(entry.key()):
                self.stats.results_acknowledged += 1
        self.stats.results_unacknowledged = len(self.outbox)

    # ----- shutdown -----

    def check_shutdown_request(self) -> None:
        reason = self.worker._shutdown_reason
        if reason is None:
            return
        if self.drain is None:
            self.begin_drain(reason)
        if self.worker._shutdown_count > 1 and not self.drain.forced:
            log.warning("second shutdown request: stopping now")
            self.drain.forced = True
            now = time.monotonic()
            self.drain.grace_deadline = now
            self.drain.ack_deadline = now
            if self.running:
                self.end_grace_period()

    def begin_drain(self, reason: str) -> None:
        handed_back = list(self.queue)
        self.queue.clear()
        for ref in handed_back:
            self.slots.pop(ref, None)
            progress = self.batches.get(ref.batch_id)
            if progress is not None:
                progress.handed_back = True
                progress.remaining -= 1
                if progress.remaining <= 0:
                    del self.batches[ref.batch_id]
                    self.remember_finished_batch(ref.batch_id)
        log.info(
            "shutting down (%s): saying goodbye, %d steps running, %d handed back, grace %.1f s",
            reason,
            self.running,
            len(handed_back),
            self.worker.shutdown_grace,
        )
        self.stats.steps_handed_back += len(handed_back)
        self.drain = _Drain(
            reason=reason, grace_deadline=time.monotonic() + self.worker.shutdown_grace
        )
        self.send_goodbye(handed_back)

    def send_goodbye(self, handed_back: list[StepRef]) -> None:
        """Says ``goodbye`` with ``handed_back`` now, or after the next ``welcome`` when
        unregistered."""
        if self.link != _REGISTERED:
            self.pending_hand_backs.extend(handed_back)
            return
        assert self.drain is not None
        self.send(
            Goodbye(
                worker_id=self.worker.worker_id, reason=self.drain.reason, handed_back=handed_back
            )
        )

    def end_grace_period(self) -> None:
        """Reports the steps still running as stopped, abandoning their threads."""
        still_running = [ref for ref, slot in self.slots.items() if slot.running]
        log.warning("shutdown grace period over; giving up on %d running steps", len(still_running))
        for ref in still_running:
            self.interrupt(ref, "shutdown")
            slot = self.slots[ref]
            self.running -= 1
            self.report(
                ref, slot.request.metadata.attempt, None, self.interruption_error(slot), 0.0
            )

    def drain_finished(self) -> bool:
        """Whether the shutdown is complete: nothing left to run, and every result acknowledged
        or the wait for acknowledgements over."""
        drain = self.drain
        if drain is None or self.slots or self.running:
            return False
        if len(self.outbox) == 0:
            return True
        now = time.monotonic()
        if drain.ack_deadline is None:
            drain.ack_deadline = now + self.worker.shutdown_ack_timeout
        if now >= drain.ack_deadline:
            log.warning(
                "shutting down with %d results the orchestrator has not acknowledged",
                len(self.outbox),
            )
            return True
        return False


def rejected_result_key(report: ErrorReport) -> ResultKey | None:
    """The held result an orchestrator ``error`` names, if it names one (spec §9.3)."""
    if report.batch_id is None:
        return None
    if report.offending_message_type == "batch_completion" or (
        report.offending_message_type is None and report.step_id is None
    ):
        return ResultKey.batch_completion(report.batch_id)
    if report.offending_message_type in ("partial_result", None) and report.step_id is not None:
        return ResultKey.partial_result(report.batch_id, report.step_id)
    return None


__all__ = [
    "SDK_LANGUAGE",
    "SDK_NAME",
    "WORKER_SHUTDOWN",
    "Worker",
    "WorkerStats",
    "default_worker_id",
    "step_error_from_exception",
]
