"""Frames to messages and back (spec §3, §6, §11).

:func:`decode_orchestrator_message` is what a worker uses on every frame it receives;
:func:`decode_worker_message` is the orchestrator's decoder, used here by tests and tools to
check what a worker sends. Both validate in the spec's order — frame size, UTF-8, nesting depth,
JSON syntax, object, ``protocol_version``, ``message_type``, the message's fields in the order
of its table, then cross-field consistency — and raise :class:`ProtocolError` with the first
violation's stable code.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import ProtocolError
from .fields import Field, Fields, Text, distinct, is_canonical_uuid, json_type_name
from .limits import (
    I64_MAX,
    MAX_BACKTRACE_ENTRIES,
    MAX_CAPACITY,
    MAX_HANDLER_CLASSES,
    MAX_HEARTBEAT_INTERVAL_MS,
    MAX_LIVENESS,
    MAX_MAX_FRAME_BYTES,
    MAX_NAME_BYTES,
    MAX_NESTING_DEPTH,
    MAX_STEPS_PER_BATCH_CEILING,
    MAX_TEXT_BYTES,
    MIN_HEARTBEAT_INTERVAL_MS,
    MIN_MAX_FRAME_BYTES,
    PROTOCOL_MAJOR,
    PROTOCOL_VERSION,
    U32_MAX,
    Limits,
    truncate_to_bytes,
)
from .messages import (
    ACK_OUTCOMES,
    CANCEL_REASONS,
    RESULT_KINDS,
    STEP_STATUSES,
    WORKER_HEALTH,
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
    OrchestratorMessage,
    PartialResult,
    ResultAck,
    SdkInfo,
    StepBatch,
    StepError,
    StepMetadata,
    StepRef,
    StepRequest,
    StepSummary,
    Welcome,
    WorkerHeartbeat,
    WorkerMessage,
)

WORKER_TO_ORCHESTRATOR = "worker_to_orchestrator"
ORCHESTRATOR_TO_WORKER = "orchestrator_to_worker"
_DIRECTION_TEXT = {
    WORKER_TO_ORCHESTRATOR: "worker-to-orchestrator",
    ORCHESTRATOR_TO_WORKER: "orchestrator-to-worker",
}

# ----- steps 1-5: bytes to a JSON object -----

_NESTING_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_VERSION_COMPONENT = re.compile(r"0|[1-9][0-9]*")


def nesting_exceeds(data: bytes, maximum: int) -> bool:
    """Whether arrays and objects nest deeper than ``maximum`` (the top-level value is depth
    1), counting brackets outside strings on the raw bytes, before any parsing (spec §3.8)."""
    if data.count(b"[") + data.count(b"{") <= maximum:
        return False
    depth = 0
    for match in _NESTING_TOKEN.finditer(data):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > maximum:
                return True
        elif token in (b"]", b"}"):
            depth = max(depth - 1, 0)
    return False


class _NotJson(ValueError):
    """A literal or number that JSON does not allow (raised from the parser's hooks)."""


def _reject_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON value")


def _parse_float(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise _NotJson(f"number {truncate_to_bytes(text, 64)} is out of range")
    return number


def _parse_int(text: str) -> int | float:
    # `-0` is read as the float -0.0, as serde_json reads it, so that an integer field written
    # `-0` is a type error in every implementation.
    return -0.0 if text == "-0" else int(text)


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
    return False


def parse_object(frame: bytes, limits: Limits) -> dict[str, Any]:
    """Steps 1–5 of the validation order: size, UTF-8, nesting depth, JSON syntax, object."""
    if len(frame) > limits.max_frame_bytes:
        raise ProtocolError.frame_too_large(len(frame), limits.max_frame_bytes)
    try:
        text = bytes(frame).decode("utf-8")
    except UnicodeDecodeError as error:
        raise ProtocolError.invalid_json(f"not valid UTF-8 ({error})") from None
    if nesting_exceeds(bytes(frame), MAX_NESTING_DEPTH):
        raise ProtocolError.nesting_too_deep(MAX_NESTING_DEPTH)
    try:
        value = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_parse_float,
            parse_int=_parse_int,
        )
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        raise ProtocolError.invalid_json(str(error)) from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise ProtocolError.invalid_json(
            "a \\u escape names an unpaired UTF-16 surrogate, which UTF-8 cannot carry"
        )
    if not isinstance(value, dict):
        raise ProtocolError.not_an_object(json_type_name(value))
    return value


# ----- steps 6-7: the envelope -----


def _parse_version(text: str) -> tuple[int, int] | None:
    major, dot, minor = text.partition(".")
    if (
        not dot
        or not _VERSION_COMPONENT.fullmatch(major)
        or not _VERSION_COMPONENT.fullmatch(minor)
    ):
        return None
    if int(major) > U32_MAX or int(minor) > U32_MAX:
        return None
    return int(major), int(minor)


def _read_envelope(fields: Fields) -> tuple[str, str]:
    version_field = fields.required("protocol_version")
    version_text = version_field.text(Text.LABEL)
    version = _parse_version(version_text)
    if version is None:
        raise version_field.invalid(
            f'"{version_text}" is not of the form <major>.<minor>, e.g. "1.0"'
        )
    if version[0] != PROTOCOL_MAJOR:
        raise ProtocolError.unsupported_version(version_text, PROTOCOL_VERSION, PROTOCOL_MAJOR)
    message_type = fields.required("message_type").text(Text.LABEL)
    return version_text, message_type


# ----- step 8-9: the messages a worker sends -----


def _read_step_refs(fields: Fields, name: str) -> list[StepRef]:
    field = fields.optional(name)
    if field is None:
        return []
    return distinct(
        field.array(None, False), Field.step_ref, lambda ref: ref, lambda item: item.path
    )


def _read_hello(fields: Fields, version: str) -> Hello:
    worker_id = fields.required("worker_id").text(Text.IDENTIFIER)
    name = fields.required("name").text(Text.NAME)
    sdk_fields = fields.required("sdk").object()
    sdk = SdkInfo(
        name=sdk_fields.required("name").text(Text.NAME),
        version=sdk_fields.required("version").text(Text.NAME),
        language=sdk_fields.required("language").text(Text.NAME),
    )
    handler_classes = distinct(
        fields.required("handler_classes").array(MAX_HANDLER_CLASSES, True),
        lambda item: item.text(Text.NAME),
        lambda text: text,
        lambda item: item.path,
    )
    capacity = fields.required("capacity").integer(1, MAX_CAPACITY)
    interval = fields.optional("heartbeat_interval_ms")
    heartbeat_interval_ms = (
        None
        if interval is None
        else interval.integer(MIN_HEARTBEAT_INTERVAL_MS, MAX_HEARTBEAT_INTERVAL_MS)
    )
    in_flight = _read_step_refs(fields, "in_flight")
    return Hello(
        worker_id=worker_id,
        name=name,
        sdk=sdk,
        handler_classes=handler_classes,
        capacity=capacity,
        heartbeat_interval_ms=heartbeat_interval_ms,
        in_flight=in_flight,
        protocol_version=version,
    )


def _read_worker_heartbeat(fields: Fields, version: str) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id=fields.required("worker_id").text(Text.IDENTIFIER),
        in_flight=fields.required("in_flight").integer(0, U32_MAX),
        free_capacity=fields.required("free_capacity").integer(0, U32_MAX),
        timestamp=fields.required("timestamp").timestamp(),
        protocol_version=version,
    )


def _read_step_error(field: Field) -> StepError:
    fields = field.object()
    message = fields.required("message").text(Text.PROSE)
    error_class = fields.required("error_class").text(Text.NAME)
    retryable = fields.required("retryable").boolean()
    retry_after = fields.optional("retry_after_ms")
    retry_after_ms = None if retry_after is None else retry_after.integer(0, I64_MAX)
    backtrace_field = fields.optional("backtrace")
    backtrace = (
        []
        if backtrace_field is None
        else [
            item.text(Text.BACKTRACE_ENTRY)
            for item in backtrace_field.array(MAX_BACKTRACE_ENTRIES, False)
        ]
    )
    return StepError(
        message=message,
        error_class=error_class,
        retryable=retryable,
        retry_after_ms=retry_after_ms,
        backtrace=backtrace,
    )


def _read_partial_result(fields: Fields, version: str) -> PartialResult:
    batch_id = fields.required("batch_id").uuid()
    step_id = fields.required("step_id").id()
    attempt = fields.required("attempt").integer(1, U32_MAX)
    status = fields.required("status").one_of(STEP_STATUSES)
    output_field = fields.optional("output")
    output = None if output_field is None else output_field.any()
    error_field = fields.optional("error")
    error = None if error_field is None else _read_step_error(error_field)
    worker_id = fields.required("worker_id").text(Text.IDENTIFIER)
    sequence = fields.required("sequence").integer(1, I64_MAX)
    timestamp = fields.required("timestamp").timestamp()
    execution_time_ms = fields.required("execution_time_ms").integer(0, I64_MAX)
    if status == "completed" and error is not None:
        raise ProtocolError.inconsistent("error", 'must be null when status is "completed"')
    if status == "failed" and error is None:
        raise ProtocolError.inconsistent("error", 'is required when status is "failed"')
    if status == "failed" and output is not None:
        raise ProtocolError.inconsistent("output", 'must be null when status is "failed"')
    return PartialResult(
        batch_id=batch_id,
        step_id=step_id,
        attempt=attempt,
        status=status,
        output=output,
        error=error,
        worker_id=worker_id,
        sequence=sequence,
        timestamp=timestamp,
        execution_time_ms=execution_time_ms,
        protocol_version=version,
    )


def _read_step_summary(item: Field) -> StepSummary:
    summary = item.object()
    return StepSummary(
        step_id=summary.required("step_id").id(),
        status=summary.required("status").one_of(STEP_STATUSES),
    )


def _read_batch_completion(fields: Fields, version: str, limits: Limits) -> BatchCompletion:
    batch_id = fields.required("batch_id").uuid()
    total_steps = fields.required("total_steps").integer(1, U32_MAX)
    completed_steps = fields.required("completed_steps").integer(0, U32_MAX)
    failed_steps = fields.required("failed_steps").integer(0, U32_MAX)
    step_summaries = distinct(
        fields.required("step_summaries").array(limits.max_steps_per_batch, False),
        _read_step_summary,
        lambda summary: summary.step_id,
        lambda item: f"{item.path}.step_id",
    )
    completed_at = fields.required("completed_at").timestamp()
    worker_id = fields.required("worker_id").text(Text.IDENTIFIER)
    if completed_steps + failed_steps != total_steps:
        raise ProtocolError.inconsistent(
            "total_steps",
            f"is {total_steps} but completed_steps + failed_steps is "
            f"{completed_steps + failed_steps}",
        )
    if len(step_summaries) != total_steps:
        raise ProtocolError.inconsistent(
            "step_summaries",
            f"has {len(step_summaries)} entries but total_steps is {total_steps}",
        )
    summarized = sum(1 for summary in step_summaries if summary.status == "completed")
    if summarized != completed_steps:
        raise ProtocolError.inconsistent(
            "completed_steps",
            f"is {completed_steps} but step_summaries has {summarized} completed entries",
        )
    return BatchCompletion(
        batch_id=batch_id,
        total_steps=total_steps,
        completed_steps=completed_steps,
        failed_steps=failed_steps,
        step_summaries=step_summaries,
        completed_at=completed_at,
        worker_id=worker_id,
        protocol_version=version,
    )


def _read_health_reply(fields: Fields, version: str) -> HealthReply:
    request_id = fields.required("request_id").uuid()
    worker_id = fields.required("worker_id").text(Text.IDENTIFIER)
    status = fields.required("status").one_of(WORKER_HEALTH)
    in_flight = fields.required("in_flight").integer(0, U32_MAX)
    free_capacity = fields.required("free_capacity").integer(0, U32_MAX)
    uptime_ms = fields.required("uptime_ms").integer(0, I64_MAX)
    details_field = fields.optional("details")
    details = None if details_field is None else details_field.json_object()
    return HealthReply(
        request_id=request_id,
        worker_id=worker_id,
        status=status,
        in_flight=in_flight,
        free_capacity=free_capacity,
        uptime_ms=uptime_ms,
        details=details,
        protocol_version=version,
    )


def _read_goodbye(fields: Fields, version: str) -> Goodbye:
    return Goodbye(
        worker_id=fields.required("worker_id").text(Text.IDENTIFIER),
        reason=fields.required("reason").text(Text.PROSE),
        handed_back=_read_step_refs(fields, "handed_back"),
        protocol_version=version,
    )


def _read_error_report(fields: Fields, version: str) -> ErrorReport:
    code = fields.required("code").text(Text.CODE)
    message = fields.required("message").text(Text.PROSE)
    offending = fields.optional("offending_message_type")
    batch_id = fields.optional("batch_id")
    step_id = fields.optional("step_id")
    return ErrorReport(
        code=code,
        message=message,
        offending_message_type=None if offending is None else offending.text(Text.LABEL),
        batch_id=None if batch_id is None else batch_id.uuid(),
        step_id=None if step_id is None else step_id.id(),
        protocol_version=version,
    )


# ----- step 8-9: the messages the orchestrator sends -----


def _read_welcome(fields: Fields, version: str) -> Welcome:
    return Welcome(
        worker_id=fields.required("worker_id").text(Text.IDENTIFIER),
        orchestrator_id=fields.required("orchestrator_id").text(Text.IDENTIFIER),
        heartbeat_interval_ms=fields.required("heartbeat_interval_ms").integer(
            MIN_HEARTBEAT_INTERVAL_MS, MAX_HEARTBEAT_INTERVAL_MS
        ),
        liveness=fields.required("liveness").integer(1, MAX_LIVENESS),
        max_frame_bytes=fields.required("max_frame_bytes").integer(
            MIN_MAX_FRAME_BYTES, MAX_MAX_FRAME_BYTES
        ),
        max_steps_per_batch=fields.required("max_steps_per_batch").integer(
            1, MAX_STEPS_PER_BATCH_CEILING
        ),
        protocol_version=version,
    )


def _read_hello_rejected(fields: Fields, version: str) -> HelloRejected:
    return HelloRejected(
        code=fields.required("code").text(Text.CODE),
        message=fields.required("message").text(Text.PROSE),
        protocol_version=version,
    )


def _read_orchestrator_heartbeat(fields: Fields, version: str) -> OrchestratorHeartbeat:
    return OrchestratorHeartbeat(
        orchestrator_id=fields.required("orchestrator_id").text(Text.IDENTIFIER),
        timestamp=fields.required("timestamp").timestamp(),
        protocol_version=version,
    )


def _read_step_request(field: Field) -> StepRequest:
    fields = field.object()
    step_id = fields.required("step_id").id()
    task_id = fields.required("task_id").id()
    step_name = fields.required("step_name").text(Text.NAME)
    handler_class = fields.required("handler_class").text(Text.NAME)
    handler_config = fields.required("handler_config").json_object()
    task_context = fields.required("task_context").json_object()
    previous_results = fields.required("previous_results").json_object()
    metadata_fields = fields.required("metadata").object()
    attempt = metadata_fields.required("attempt").integer(1, U32_MAX)
    retry_limit = metadata_fields.required("retry_limit").integer(0, U32_MAX)
    timeout = metadata_fields.optional("timeout_ms")
    timeout_ms = None if timeout is None else timeout.integer(1, I64_MAX)
    idempotency_key = metadata_fields.required("idempotency_key").text(Text.NAME)
    return StepRequest(
        step_id=step_id,
        task_id=task_id,
        step_name=step_name,
        handler_class=handler_class,
        handler_config=handler_config,
        task_context=task_context,
        previous_results=previous_results,
        metadata=StepMetadata(
            attempt=attempt,
            retry_limit=retry_limit,
            timeout_ms=timeout_ms,
            idempotency_key=idempotency_key,
        ),
    )


def idempotency_key_for(step_id: int, attempt: int) -> str:
    """The idempotency key of one attempt of one step: ``"<step_id>:<attempt>"``."""
    return f"{step_id}:{attempt}"


def _read_step_batch(fields: Fields, version: str, limits: Limits) -> StepBatch:
    batch_id = fields.required("batch_id").uuid()
    steps = distinct(
        fields.required("steps").array(limits.max_steps_per_batch, True),
        _read_step_request,
        lambda step: step.step_id,
        lambda item: f"{item.path}.step_id",
    )
    for index, step in enumerate(steps):
        expected = idempotency_key_for(step.step_id, step.metadata.attempt)
        if step.metadata.idempotency_key != expected:
            raise ProtocolError.inconsistent(
                f"steps[{index}].metadata.idempotency_key",
                f'is "{truncate_to_bytes(step.metadata.idempotency_key, 64)}" but must be '
                f'"<step_id>:<attempt>" = "{expected}"',
            )
    return StepBatch(batch_id=batch_id, steps=steps, protocol_version=version)


def _read_ack_entry(item: Field) -> AckEntry:
    entry = item.object()
    batch_id = entry.required("batch_id").uuid()
    message_kind = entry.required("message_kind").one_of(RESULT_KINDS)
    step_id_field = entry.optional("step_id")
    step_id = None if step_id_field is None else step_id_field.id()
    outcome = entry.required("outcome").one_of(ACK_OUTCOMES)
    return AckEntry(batch_id=batch_id, message_kind=message_kind, step_id=step_id, outcome=outcome)


def _read_result_ack(fields: Fields, version: str) -> ResultAck:
    acks = [_read_ack_entry(item) for item in fields.required("acks").array(None, True)]
    for index, ack in enumerate(acks):
        if ack.message_kind == "partial_result" and ack.step_id is None:
            raise ProtocolError.inconsistent(
                f"acks[{index}].step_id", 'is required when message_kind is "partial_result"'
            )
        if ack.message_kind == "batch_completion" and ack.step_id is not None:
            raise ProtocolError.inconsistent(
                f"acks[{index}].step_id", 'must be null when message_kind is "batch_completion"'
            )
    return ResultAck(acks=acks, protocol_version=version)


def _read_cancel_steps(fields: Fields, version: str, limits: Limits) -> CancelSteps:
    batch_id = fields.required("batch_id").uuid()
    step_ids = distinct(
        fields.required("step_ids").array(limits.max_steps_per_batch, True),
        Field.id,
        lambda step_id: step_id,
        lambda item: item.path,
    )
    reason = fields.required("reason").one_of(CANCEL_REASONS)
    return CancelSteps(
        batch_id=batch_id, step_ids=step_ids, reason=reason, protocol_version=version
    )


def _read_health_request(fields: Fields, version: str) -> HealthRequest:
    return HealthRequest(
        request_id=fields.required("request_id").uuid(),
        timestamp=fields.required("timestamp").timestamp(),
        protocol_version=version,
    )


# ----- public decoders and encoder -----


def decode_orchestrator_message(frame: bytes, limits: Limits | None = None) -> OrchestratorMessage:
    """Decodes one frame received from the orchestrator (what a worker does with every frame).

    Raises :class:`ProtocolError` with the first violation, in the spec's validation order.
    """
    limits = limits or Limits()
    fields = Fields(parse_object(frame, limits))
    version, message_type = _read_envelope(fields)
    if message_type == "welcome":
        return _read_welcome(fields, version)
    if message_type == "hello_rejected":
        return _read_hello_rejected(fields, version)
    if message_type == "heartbeat":
        return _read_orchestrator_heartbeat(fields, version)
    if message_type == "step_batch":
        return _read_step_batch(fields, version, limits)
    if message_type == "result_ack":
        return _read_result_ack(fields, version)
    if message_type == "cancel_steps":
        return _read_cancel_steps(fields, version, limits)
    if message_type == "health_request":
        return _read_health_request(fields, version)
    if message_type == "error":
        return _read_error_report(fields, version)
    raise ProtocolError.unknown_message_type(message_type, _DIRECTION_TEXT[ORCHESTRATOR_TO_WORKER])


def decode_worker_message(frame: bytes, limits: Limits | None = None) -> WorkerMessage:
    """Decodes one frame sent by a worker (the orchestrator's decoder; tests use it to check
    what this SDK sends).

    Raises :class:`ProtocolError` with the first violation, in the spec's validation order.
    """
    limits = limits or Limits()
    fields = Fields(parse_object(frame, limits))
    version, message_type = _read_envelope(fields)
    if message_type == "hello":
        return _read_hello(fields, version)
    if message_type == "heartbeat":
        return _read_worker_heartbeat(fields, version)
    if message_type == "partial_result":
        return _read_partial_result(fields, version)
    if message_type == "batch_completion":
        return _read_batch_completion(fields, version, limits)
    if message_type == "health_reply":
        return _read_health_reply(fields, version)
    if message_type == "goodbye":
        return _read_goodbye(fields, version)
    if message_type == "error":
        return _read_error_report(fields, version)
    raise ProtocolError.unknown_message_type(message_type, _DIRECTION_TEXT[WORKER_TO_ORCHESTRATOR])


def decode_message(frame: bytes, direction: str, limits: Limits | None = None) -> Any:
    """Decodes ``frame`` as a message travelling in ``direction`` (``"worker_to_orchestrator"``
    or ``"orchestrator_to_worker"``, as in the test vectors)."""
    if direction == WORKER_TO_ORCHESTRATOR:
        return decode_worker_message(frame, limits)
    if direction == ORCHESTRATOR_TO_WORKER:
        return decode_orchestrator_message(frame, limits)
    raise ValueError(f"unknown direction {direction!r}")


def encode(message: Any) -> bytes:
    """Encodes a message as the payload of one frame: compact UTF-8 JSON, fields in the spec's
    order, every field present.

    Raises ``TypeError``/``ValueError`` when an opaque payload (a step's output, health
    details) is not JSON: a non-JSON type, NaN or infinity, or text UTF-8 cannot carry.
    """
    text = json.dumps(message.to_wire(), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"the message contains text UTF-8 cannot carry: {error}") from None


# ----- answering a rejected frame (spec §11) -----

_UNPARSED_CODES = frozenset(
    {"frame_too_large", "multipart_message", "invalid_json", "not_an_object"}
)


def peek_rejected_frame(
    frame: bytes, error: ProtocolError
) -> tuple[str | None, str | None, int | None]:
    """``(message_type, batch_id, step_id)`` as far as they can be read from a rejected
    frame's top level; nothing for frames rejected before parsing."""
    if error.code in _UNPARSED_CODES or "nesting depth" in error.message:
        return None, None, None
    try:
        value = parse_object(frame, Limits(max_frame_bytes=len(frame)))
    except ProtocolError:
        return None, None, None
    message_type = value.get("message_type")
    batch_id = value.get("batch_id")
    step_id = value.get("step_id")
    return (
        truncate_to_bytes(message_type, MAX_NAME_BYTES) if isinstance(message_type, str) else None,
        batch_id if isinstance(batch_id, str) and is_canonical_uuid(batch_id) else None,
        step_id if type(step_id) is int and 1 <= step_id <= I64_MAX else None,
    )


def report_rejected_orchestrator_frame(frame: bytes, error: ProtocolError) -> ErrorReport | None:
    """The worker's ``error`` report for an orchestrator frame that failed to decode, or
    ``None`` when the rejected frame was itself an ``error`` (errors are never answered)."""
    message_type, batch_id, step_id = peek_rejected_frame(frame, error)
    if message_type == "error":
        return None
    return ErrorReport(
        code=error.code,
        message=truncate_to_bytes(error.message, MAX_TEXT_BYTES),
        offending_message_type=message_type,
        batch_id=batch_id,
        step_id=step_id,
    )
