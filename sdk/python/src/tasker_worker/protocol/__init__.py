"""Tasker worker protocol v1 in Python: the messages, their validation and their limits.

The normative text is ``docs/protocol/spec.md``; the same test vectors
(``docs/protocol/vectors/``) check this package, the Rust crate ``tasker-protocol`` and the Ruby
SDK. Modules:

- :mod:`.messages`: one dataclass per message kind, with ``to_wire()`` in canonical form.
- :mod:`.codec`: :func:`decode_orchestrator_message` / :func:`decode_worker_message` (frame →
  message, in the spec's validation order) and :func:`encode` (message → frame).
- :mod:`.errors`: :class:`ProtocolError` and the stable error codes.
- :mod:`.limits`: the protocol's limits and :class:`Limits`.
- :mod:`.timestamps`: :class:`Timestamp`, exact to the nanosecond.
"""

from .codec import (
    ORCHESTRATOR_TO_WORKER,
    WORKER_TO_ORCHESTRATOR,
    decode_message,
    decode_orchestrator_message,
    decode_worker_message,
    encode,
    idempotency_key_for,
    parse_object,
    report_rejected_orchestrator_frame,
)
from .errors import ProtocolError
from .limits import PROTOCOL_VERSION, Limits, truncate_to_bytes
from .messages import (
    AckEntry,
    BatchCompletion,
    CancelSteps,
    ErrorReport,
    Goodbye,
    HealthReply,
    HealthRequest,
    Hello,
    HelloRejected,
    OrchestratorHeartbeat,
    PartialResult,
    ResultAck,
    ResultKey,
    SdkInfo,
    StepBatch,
    StepError,
    StepMetadata,
    StepRef,
    StepRequest,
    StepSummary,
    Welcome,
    WorkerHeartbeat,
)
from .timestamps import Timestamp

__all__ = [
    "ORCHESTRATOR_TO_WORKER",
    "PROTOCOL_VERSION",
    "WORKER_TO_ORCHESTRATOR",
    "AckEntry",
    "BatchCompletion",
    "CancelSteps",
    "ErrorReport",
    "Goodbye",
    "HealthReply",
    "HealthRequest",
    "Hello",
    "HelloRejected",
    "Limits",
    "OrchestratorHeartbeat",
    "PartialResult",
    "ProtocolError",
    "ResultAck",
    "ResultKey",
    "SdkInfo",
    "StepBatch",
    "StepError",
    "StepMetadata",
    "StepRef",
    "StepRequest",
    "StepSummary",
    "Timestamp",
    "Welcome",
    "WorkerHeartbeat",
    "decode_message",
    "decode_orchestrator_message",
    "decode_worker_message",
    "encode",
    "idempotency_key_for",
    "parse_object",
    "report_rejected_orchestrator_frame",
    "truncate_to_bytes",
]
