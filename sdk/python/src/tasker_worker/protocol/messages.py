"""The messages of protocol v1 (spec §5) as Python dataclasses.

Each message class has ``MESSAGE_TYPE`` and ``to_wire()``, which returns the message as a JSON
object (a ``dict``) in canonical form: every field of the kind present, in the order of the
spec's tables, optional fields without a value as ``null``, empty lists as ``[]``, timestamps in
the canonical ``…Z`` form. :func:`tasker_worker.protocol.encode` turns that into a frame.

Field names are exactly the wire names, so a message built here and one decoded from a frame
are the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .limits import (
    MAX_BACKTRACE_ENTRIES,
    MAX_BACKTRACE_ENTRY_BYTES,
    MAX_NAME_BYTES,
    MAX_TEXT_BYTES,
    PROTOCOL_VERSION,
    truncate_to_bytes,
)
from .timestamps import Timestamp

JsonObject = dict[str, Any]

# Closed enumerations (values on the wire).
STEP_STATUSES = ("completed", "failed")
CANCEL_REASONS = ("timeout", "task_cancelled", "step_cancelled", "superseded")
WORKER_HEALTH = ("healthy", "degraded", "draining")
RESULT_KINDS = ("partial_result", "batch_completion")
ACK_OUTCOMES = ("applied", "duplicate", "fenced", "rejected")

# Reserved ``error_class`` values for failures that are not the handler's own (spec §5.4).
UNKNOWN_HANDLER_CLASS = "tasker.unknown_handler_class"
OUTPUT_TOO_LARGE = "tasker.output_too_large"
TIMEOUT = "tasker.timeout"
CANCELLED = "tasker.cancelled"


def _envelope(message_type: str, protocol_version: str) -> JsonObject:
    return {"message_type": message_type, "protocol_version": protocol_version}


@dataclass(frozen=True)
class StepRef:
    """One step of one batch: the unit a worker runs, reports and hands back."""

    batch_id: str
    step_id: int

    def to_wire(self) -> JsonObject:
        return {"batch_id": self.batch_id, "step_id": self.step_id}


@dataclass(frozen=True)
class ResultKey:
    """``(batch_id, step_id, message kind)``: how results are deduplicated and acknowledged.
    ``step_id`` is ``None`` exactly for a batch completion."""

    batch_id: str
    step_id: int | None
    kind: str

    @classmethod
    def partial_result(cls, batch_id: str, step_id: int) -> ResultKey:
        return cls(batch_id, step_id, "partial_result")

    @classmethod
    def batch_completion(cls, batch_id: str) -> ResultKey:
        return cls(batch_id, None, "batch_completion")


# ----- worker -> orchestrator -----


@dataclass
class SdkInfo:
    """The SDK that built a worker, announced in ``hello``."""

    name: str
    version: str
    language: str

    def to_wire(self) -> JsonObject:
        return {"name": self.name, "version": self.version, "language": self.language}


@dataclass
class Hello:
    """``hello``: the first message on a connection, and again after a reconnect."""

    MESSAGE_TYPE: ClassVar[str] = "hello"
    worker_id: str
    name: str
    sdk: SdkInfo
    handler_classes: list[str]
    capacity: int
    heartbeat_interval_ms: int | None = None
    in_flight: list[StepRef] = field(default_factory=list)
    protocol_version: str = PROTOCOL_VERSION

    def to_wire(self) -> JsonObject:
        return {
            **_envelope(self.MESSAGE_TYPE, self.protocol_version),
            "worker_id": self.worker_id,
            "name": self.name,
            "sdk": self.sdk.to_wire(),
            "handler_classes": list(self.handler_classes),
            "capacity": self.capacity,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "in_flight": [step.to_wire() for step in self.in_flight],
        }


@dataclass
class WorkerHeartbeat:
    """``heartbeat`` from a worker."""

    MESSAGE_TYPE: ClassVar[str] = "heartbeat"
    worker_id: str
    in_flight: int
    free_capacity: int
    timestamp: Timestamp
    protocol_version: str = PROTOCOL_VERSION

    def to_wire(self) -> JsonObject:
        return {
            **_envelope(self.MESSAGE_TYPE, self.protocol_version),
            "worker_id": self.worker_id,
            "in_flight": self.in_flight,
            "free_capacity": self.free_capacity,
            "timestamp": self.timestamp.format(),
        }


@dataclass
class StepError:
    """Why a step attempt failed (``partial_result.error``)."""

    message: str
    error_class: str
    retryable: bool
    retry_after_ms: int | None = None
    backtrace: list[str] = field(default_factory=list)

    def fit_to_limits(self) -> StepError:
        """A copy cut to the protocol's limits at character boundaries, so that a long error
        never makes its result undeliverable (spec §3.5)."""
        return StepError(
            message=truncate_to_bytes(self.message, MAX_TEXT_BYTES),
            error_class=truncate_to_bytes(self.error_class, MAX_NAME_BYTES) or "Exception",
            retryable=self.retryable,
            retry_after_ms=self.retry_after_ms,
            backtrace=[
                truncate_to_bytes(line, MAX_BACKTRACE_ENTRY_BYTES)
                for line in self.backtrace[:MAX_BACKTRACE_ENTRIES]
            ],
        )

    def to_wire(self) -> JsonObject:
        return {
            "message": self.message,
            "error_class": self.error_class,
            "retryable": self.retryable,
            "retry_after_ms": self.retry_after_ms,
            "backtrace": list(self.backtrace),
        }


@dataclass
class PartialResult:
    """``partial_result``: the final outcome of one step of one batch."""

    MESSAGE_TYPE: ClassVar[str] = "partial_result"
    batch_id: str
    step_id: int
    attempt: int
    status: str
    output: Any
    error: StepError | None
    worker_id: str
    sequence: int
    timestamp: Timestamp
    execution_time_ms: int
    protocol_version: str = PROTOCOL_VERSION

    def key(self) -> ResultKey:
        return ResultKey.partial_result(self.batch_id, self.step_id)

    def to_wire(self) -> JsonObject:
        return {
            **_envelope(self.MESSAGE_TYPE, self.protocol_version),
            "batch_id": self.batch_id,
            "step_id": self.step_id,
            "attempt": self.attempt,
            "status": self.status,
            "output": self.output,
            "error": None if self.error is None else self.error.to_wire(),
            "worker_id": self.worker_id,
            "sequence": self.sequence,
            "timestamp": self.timestamp.format(),
            "execution_time_ms": self.execution_time_ms,
        }


@dataclass
class StepSummary:
    """One entry of ``batch_completion.step_summaries``."""

    step_id: int
    status: str

    def to_wire(self) -> JsonObject:
        return {"step_id": self.step_id, "status": self.status}


@dataclass
class BatchCompletion:
    """``batch_completion``: sent after the last ``partial_result`` of a batch."""

    MESSAGE_TYPE: ClassVar[str] = "batch_completion"
    batch_id: str
    total_steps: int
    completed_steps: int
    failed_steps: int
    step_summaries: list[StepSummary]
    completed_at: Timestamp
    worker_id: str
    protocol_version: str = PROTOCOL_VERSION

    def key(self) -> ResultKey:
        return ResultKey.batch_completion(self.batch_id)

    def to_wire(self) -> JsonObject:
        return {
            **_envelope(self.MESSAGE_TYPE, self.protocol_version),
            "batch_id": self.batch_id,
            "total_steps": self.total_steps,
            "completed_steps": self.completed_steps,
            "failed_steps": self.failed_steps,
            "step_summaries": [summary.to_wire() for summary in self.step_summaries],
            "completed_at": self.completed_at.format(),
            "worker_id": self.worker_id,
        }


@dataclass
class HealthReply:
    """``health_reply``: the answer to ``health_request``."""

    MESSAGE_TYPE: ClassVar[str] = "health_reply"
    request_id: str
    worker_id: str
    status: str
    in_flight: int
    free_capacity: int
    uptime_ms: int
    details: JsonObject | None = None
    protocol_version: str = PROTOCOL_VERSION

    def to_wire(self) -> JsonObject:
        return {
            **_envelope(self.MESSAGE_TYPE, self.protocol_version),
            "request_id": self.request_id,
            "worker_id": self.worker_id,
            "status": self.status,
            "in_flight": self.in_flight,
            "free_capacity": self.free_capacity,
            "uptime_ms": self.uptime_ms,
            "details": self.details,
        }


@dataclass
class Goodbye:
    """``goodbye``: "send me no more work", with the steps handed back unstarted."""

    MESSAGE_TYPE: ClassVar[str] = "goodbye"
    worker_id: str
    reason: str
    handed_back: list[StepRef] = field(default_factory=list)
    protocol_version: str = PROTOCOL_VERSION

    def to_wire(self) -> JsonObject:
        return {
            **_envelope(self.MESSAGE_TYPE, self.protocol_version),
            "worker_id": self.worker_id,
            "reason": self.reason,
            "handed_back": [step.to_wire() for step in self.handed_back],
        }


@dataclass
class ErrorReport:
    """``error`` (both directions): a received frame was rejected."""

    MESSAGE_TYPE: ClassVar[str] = "error"
    code: str
    message: str
    offending_message_type: str | None = None
    batch_id: str | None = None
    step_id: int | None = None
    protocol_version: str = PROTOCOL_VERSION

    def to_wire(self) -> JsonObject:
        return {
            **_envelope(self.MESSAGE_TYPE, self.protocol_version),
            "code": self.code,
            "message": self.message,
            "offending_message_type": self.offending_message_type,
            "batch_id": self.batch_id,
            "step_id": self.step_id,
        }


# ----- orchestrator -> worker -----


@dataclass
class Welcome:
    """``welcome``: the orchestrator accepted ``hello``; the session's parameters."""

    MESSAGE_TYPE: ClassVar[str] = "welcome"
    worker_id: str
    orchestrator_id: str
    heartbeat_interval_ms: int
    liveness: int
    max_frame_bytes: int
    max_steps_per_batch: int
    protocol_version: str = PROTOCOL_VERSION

    def to_wire(self) -> JsonObject:
        return {
            **_envelope(self.MESSAGE_TYPE, self.protocol_version),
            "worker_id": self.worker_id,
            "orchestrator_id": self.orchestrator_id,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "liveness": self.liveness,
            "max_frame_bytes": self.max_frame_bytes,
            "max_steps_per_batch": self.max_steps_per_batch,
        }


@dataclass
class HelloRejected:
    """``hello_rejected``: the orchestrator refused ``hello``."""

    MESSAGE_TYPE: ClassVar[str] = "hello_rejected"
    code: str
    message: str
    protocol_version: str = PROTOCOL_VERSION

    def to_wire(self) -> JsonObject:
        return {
            **_envelope(self.MESSAGE_TYPE, self.protocol_version),
            "code": self.code,
            "message": self.message,
        }


@dataclass
class OrchestratorHeartbeat:
    """``heartbeat`` from the orchestrator."""

    MESSAGE_TYPE: ClassVar[str] = "heartbeat"
    orchestrator_id: str
    timestamp: Timestamp
    protocol_version: str = PROTOCOL_VERSION

    def to_wire(self) -> JsonObject:
        return {
            **_envelope(self.MESSAGE_TYPE, self.protocol_version),
            "orchestrator_id": self.orchestrator_id,
            "timestamp": self.timestamp.format(),
        }


@dataclass
class StepMetadata:
    """``steps[i].metadata``: attempt, retry and timeout information."""

    attempt: int
    retry_limit: int
    timeout_ms: int | None
    idempotency_key: str

    def to_wire(self) -> JsonObject:
        return {
            "attempt": self.attempt,
            "retry_limit": self.retry_limit,
            "timeout_ms": self.timeout_ms,
            "idempotency_key": self.idempotency_key,
        }


@dataclass
class StepRequest:
    """One step of a ``step_batch``."""

    step_id: int
    task_id: int
    step_name: str
    handler_class: str
    handler_config: JsonObject
    task_context: JsonObject
    previous_results: JsonObject
    metadata: StepMetadata

    def to_wire(self) -> JsonObject:
        return {
            "step_id": self.step_id,
            "task_id": self.task_id,
            "step_name": self.step_name,
            "handler_class": self.handler_class,
            "handler_config": self.handler_config,
            "task_context": self.task_context,
            "previous_results": self.previous_results,
            "metadata": self.metadata.to_wire(),
        }


@dataclass
class StepBatch:
    """``step_batch``: one dispatch of one or more steps to this worker."""

    MESSAGE_TYPE: ClassVar[str] = "step_batch"
    batch_id: str
    steps: list[StepRequest]
    protocol_version: str = PROTOCOL_VERSION

    def to_wire(self) -> JsonObject:
        return {
            **_envelope(self.MESSAGE_TYPE, self.protocol_version),
            "batch_id": self.batch_id,
            "steps": [step.to_wire() for step in self.steps],
        }


@dataclass
class AckEntry:
    """One entry of ``result_ack.acks``."""

    batch_id: str
    message_kind: str
    step_id: int | None
    outcome: str

    def key(self) -> ResultKey:
        return ResultKey(self.batch_id, self.step_id, self.message_kind)

    def to_wire(self) -> JsonObject:
        return {
            "batch_id": self.batch_id,
            "message_kind": self.message_kind,
            "step_id": self.step_id,
            "outcome": self.outcome,
        }


@dataclass
class ResultAck:
    """``result_ack``: results the orchestrator has durably committed."""

    MESSAGE_TYPE: ClassVar[str] = "result_ack"
    acks: list[AckEntry]
    protocol_version: str = PROTOCOL_VERSION

    def to_wire(self) -> JsonObject:
        return {
            **_envelope(self.MESSAGE_TYPE, self.protocol_version),
            "acks": [ack.to_wire() for ack in self.acks],
        }


@dataclass
class CancelSteps:
    """``cancel_steps``: stop these steps of this batch."""

    MESSAGE_TYPE: ClassVar[str] = "cancel_steps"
    batch_id: str
    step_ids: list[int]
    reason: str
    protocol_version: str = PROTOCOL_VERSION

    def to_wire(self) -> JsonObject:
        return {
            **_envelope(self.MESSAGE_TYPE, self.protocol_version),
            "batch_id": self.batch_id,
            "step_ids": list(self.step_ids),
            "reason": self.reason,
        }


@dataclass
class HealthRequest:
    """``health_request``: the orchestrator asks how the worker is."""

    MESSAGE_TYPE: ClassVar[str] = "health_request"
    request_id: str
    timestamp: Timestamp
    protocol_version: str = PROTOCOL_VERSION

    def to_wire(self) -> JsonObject:
        return {
            **_envelope(self.MESSAGE_TYPE, self.protocol_version),
            "request_id": self.request_id,
            "timestamp": self.timestamp.format(),
        }


WorkerMessage = (
    Hello | WorkerHeartbeat | PartialResult | BatchCompletion | HealthReply | Goodbye | ErrorReport
)
OrchestratorMessage = (
    Welcome
    | HelloRejected
    | OrchestratorHeartbeat
    | StepBatch
    | ResultAck
    | CancelSteps
    | HealthRequest
    | ErrorReport
)
