"""Errors of the SDK.

Handlers raise :class:`RetryableError` or :class:`PermanentError` to fail a step attempt with a
known retryability; the worker raises :class:`HelloRejected` when the orchestrator refuses it
for good, and :class:`ConfigurationError` for settings or handlers the protocol cannot carry.
"""

from __future__ import annotations

from datetime import timedelta


class StepFailure(Exception):
    """Base of the failures a handler raises on purpose. Use a subclass:
    :class:`RetryableError` or :class:`PermanentError`.

    ``error_class`` is what operators see (and the DLQ groups by); it defaults to the
    exception's class name, so ``class CardDeclined(PermanentError)`` reports
    ``"CardDeclined"``. Classes starting with ``tasker.`` are reserved for the worker's own
    failures.
    """

    retryable: bool = True

    def __init__(self, message: str, *, error_class: str | None = None) -> None:
        super().__init__(message)
        self.message = str(message)
        self.error_class = error_class or type(self).__name__


class RetryableError(StepFailure):
    """A failure another attempt may fix (a remote service timing out, a lock conflict). The
    orchestrator retries it after the step's backoff, within its retry limit.

    ``retry_after``: seconds (``int``/``float``) or a ``timedelta`` to wait before the next
    attempt, replacing the backoff policy's delay (a rate limit's ``Retry-After``); ``None`` lets
    the policy decide. ``retry_after_ms`` gives the same in whole milliseconds instead.
    """

    retryable = True

    def __init__(
        self,
        message: str,
        retry_after: float | timedelta | None = None,
        *,
        error_class: str | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(message, error_class=error_class)
        if retry_after is not None and retry_after_ms is not None:
            raise TypeError("give retry_after or retry_after_ms, not both")
        if retry_after_ms is not None and (type(retry_after_ms) is not int or retry_after_ms < 0):
            raise ValueError(f"retry_after_ms must be an integer >= 0, not {retry_after_ms!r}")
        self.retry_after_ms = (
            _to_millis(retry_after) if retry_after_ms is None else min(retry_after_ms, 2**63 - 1)
        )

    @property
    def retry_after(self) -> float | None:
        """The wished delay in seconds, or ``None``."""
        return None if self.retry_after_ms is None else self.retry_after_ms / 1000


class PermanentError(StepFailure):
    """A failure no retry can fix (invalid input, a declined payment). The step fails for
    good."""

    retryable = False


class StepCancelled(Exception):
    """Raised by :meth:`Step.raise_if_cancelled` when the worker has asked the step to stop
    (the orchestrator cancelled it, its timeout passed, or the worker is shutting down). Let it
    propagate: the worker reports the reason (``tasker.cancelled``, ``tasker.timeout`` or
    ``tasker.worker_shutdown``)."""


class WorkerError(Exception):
    """Base of the errors :meth:`Worker.run` raises."""


class ConfigurationError(WorkerError, ValueError):
    """A worker setting or handler registration the protocol cannot carry (an empty registry,
    a ``worker_id`` with a space, a capacity of 0, …)."""


class HelloRejected(WorkerError):
    """The orchestrator refused this worker's ``hello`` for good (``hello_rejected`` with code
    ``unsupported_protocol_version``, ``invalid_hello`` or a code this SDK does not know).
    ``not_accepting_workers`` is not raised: the worker retries it with backoff."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"the orchestrator rejected this worker's hello ({code}): {message}")
        self.code = code
        self.message = message


def _to_millis(delay: float | timedelta | None) -> int | None:
    if delay is None:
        return None
    if isinstance(delay, timedelta):
        millis = delay // timedelta(milliseconds=1)
    elif isinstance(delay, bool) or not isinstance(delay, (int, float)):
        raise TypeError(f"retry_after must be seconds or a timedelta, not {delay!r}")
    else:
        if delay != delay or delay in (float("inf"), float("-inf")):
            raise ValueError(f"retry_after must be a finite number of seconds, not {delay!r}")
        millis = round(delay * 1000)
    if millis < 0:
        raise ValueError(f"retry_after must not be negative, got {delay!r}")
    return int(min(millis, 2**63 - 1))
