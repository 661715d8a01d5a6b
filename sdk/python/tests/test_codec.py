"""The codec beyond the vectors: number spellings, surrogates, duplicate keys, nesting counted
outside strings, rejected-frame reports, and the message builders the worker uses reproducing
the valid vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import VECTORS_DIR, assert_matches_schema, json_equal

from tasker_worker.protocol import (
    BatchCompletion,
    ErrorReport,
    Goodbye,
    HealthReply,
    Hello,
    PartialResult,
    ProtocolError,
    SdkInfo,
    StepError,
    StepRef,
    StepSummary,
    Timestamp,
    WorkerHeartbeat,
    decode_orchestrator_message,
    decode_worker_message,
    encode,
    report_rejected_orchestrator_frame,
    truncate_to_bytes,
)

HEARTBEAT = (
    '{"message_type":"heartbeat","protocol_version":"1.0","orchestrator_id":"o-1",'
    '"timestamp":"2025-01-23T19:57:52Z"%s}'
)
BATCH_ID = "0195b4ba-8d3a-7f12-9c4e-6a1d2b3c4d5e"


def rejected(frame: str | bytes) -> ProtocolError:
    data = frame.encode() if isinstance(frame, str) else frame
    with pytest.raises(ProtocolError) as error:
        decode_orchestrator_message(data)
    return error.value


def step_batch(**metadata: Any) -> str:
    meta = {"attempt": 1, "retry_limit": 3, "idempotency_key": "1:1", **metadata}
    return json.dumps(
        {
            "message_type": "step_batch",
            "protocol_version": "1.0",
            "batch_id": BATCH_ID,
            "steps": [
                {
                    "step_id": 1,
                    "task_id": 1,
                    "step_name": "s",
                    "handler_class": "h",
                    "handler_config": {},
                    "task_context": {"big": 18446744073709551615, "neg": -9223372036854775808},
                    "previous_results": {},
                    "metadata": meta,
                }
            ],
        }
    )


def test_integer_fields_reject_minus_zero_and_floats_but_payload_numbers_survive() -> None:
    assert (
        rejected(step_batch().replace('"retry_limit": 3', '"retry_limit": -0')).code
        == "invalid_field_type"
    )
    assert (
        rejected(step_batch().replace('"retry_limit": 3', '"retry_limit": 3.0')).code
        == "invalid_field_type"
    )
    assert (
        rejected(step_batch().replace('"retry_limit": 3', '"retry_limit": true')).code
        == "invalid_field_type"
    )
    batch = decode_orchestrator_message(step_batch().encode())
    assert batch.steps[0].task_context == {"big": 18446744073709551615, "neg": -9223372036854775808}
    assert json.loads(encode(batch))["steps"][0]["task_context"]["big"] == 18446744073709551615


def test_out_of_range_floats_and_non_json_literals_are_invalid_json() -> None:
    assert rejected(HEARTBEAT % ',"x":1e400').code == "invalid_json"
    assert rejected(HEARTBEAT % ',"x":-Infinity').code == "invalid_json"
    assert rejected(HEARTBEAT % ',"x":"\\udfff"').code == "invalid_json"
    assert rejected(HEARTBEAT % ',"\\ud800x":1').code == "invalid_json"
    # A paired surrogate escape is a real character, and an escaped backslash before "ud800"
    # is just text.
    decode_orchestrator_message((HEARTBEAT % ',"x":"\\ud83d\\ude80 \\\\ud800"').encode())


def test_duplicate_keys_take_the_last_and_whitespace_around_is_fine() -> None:
    frame = " \n\t" + HEARTBEAT % ',"orchestrator_id":"o-2"' + "\r\n "
    assert decode_orchestrator_message(frame.encode()).orchestrator_id == "o-2"


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    deep_text = "[" * 200 + "{" * 200
    frame = HEARTBEAT % f',"note":"{deep_text}\\"[[[["'
    decode_orchestrator_message(frame.encode())


def test_versions_and_messages_from_newer_minors_are_accepted() -> None:
    heartbeat = decode_orchestrator_message(
        (HEARTBEAT % ',"future":{"a":[1]}').replace('"1.0"', '"1.12"').encode()
    )
    assert heartbeat.protocol_version == "1.12"
    assert rejected(HEARTBEAT.replace('"1.0"', '"1.00"') % "").code == "invalid_field_value"
    assert rejected(HEARTBEAT.replace('"1.0"', '"1.4294967296"') % "").code == "invalid_field_value"


def test_byte_lengths_not_characters_are_limited() -> None:
    name = "é" * 127 + "e"  # 255 bytes
    ok = step_batch().replace('"step_name": "s"', f'"step_name": "{name}"')
    assert decode_orchestrator_message(ok.encode()).steps[0].step_name == name
    too_long = step_batch().replace('"step_name": "s"', f'"step_name": "{name}e"')
    error = rejected(too_long)
    assert error.code == "limit_exceeded" and "steps[0].step_name" in error.message


def test_rejected_frames_are_reported_with_what_could_be_read() -> None:
    frame = step_batch().replace('"retry_limit": 3', '"retry_limit": "3"').encode()
    error = rejected(frame)
    report = report_rejected_orchestrator_frame(frame, error)
    assert report is not None
    assert (report.code, report.offending_message_type, report.batch_id, report.step_id) == (
        "invalid_field_type",
        "step_batch",
        BATCH_ID,
        None,
    )
    assert "steps[0].metadata.retry_limit" in report.message
    garbage = b"{not json"
    report = report_rejected_orchestrator_frame(garbage, rejected(garbage))
    assert report is not None and report.offending_message_type is None
    bad_error = b'{"message_type":"error","protocol_version":"1.0","code":"X"}'
    assert report_rejected_orchestrator_frame(bad_error, rejected(bad_error)) is None


def test_truncation_cuts_at_character_boundaries() -> None:
    assert truncate_to_bytes("abc", 5) == "abc"
    assert truncate_to_bytes("aé", 2) == "a"
    assert truncate_to_bytes("🚀🚀", 7) == "🚀"
    assert truncate_to_bytes("a\udc80b", 10) == "a?b"
    fitted = StepError("é" * 16384, "x" * 300, True, backtrace=["f" * 3000] * 105).fit_to_limits()
    assert len(fitted.message.encode()) == 16384
    assert len(fitted.error_class) == 255
    assert len(fitted.backtrace) == 100 and all(len(line) == 2048 for line in fitted.backtrace)


def test_timestamps_keep_nanoseconds_and_use_the_canonical_form() -> None:
    assert Timestamp.parse("2025-01-23T21:57:52.1+02:00").format() == "2025-01-23T19:57:52.100Z"
    assert (
        Timestamp.parse("2025-01-23T19:57:52.123456789Z").format()
        == "2025-01-23T19:57:52.123456789Z"
    )
    assert Timestamp.parse("2024-02-29T23:59:59-00:30").format() == "2024-03-01T00:29:59Z"
    now = Timestamp.now()
    assert now.nanos % 1_000_000 == 0
    assert Timestamp.from_datetime(now.to_datetime()) == now
    for bad in (
        "2023-02-29T00:00:00Z",
        "2025-01-23T19:57:52+24:00",
        "2025-01-23T19:57:52.Z",
        "０２025-01-23T19:57:52Z",
    ):
        assert Timestamp.parse(bad) is None, bad


# ----- the builders the worker uses reproduce the vectors -----

SDK = SdkInfo(name="tasker-worker-ruby", version="0.1.0", language="ruby")
WORKER = "ruby-worker@host-a:4242-7f3a9c1e"
CLASSES = [
    "OrderFulfillment::StepHandlers::ValidateOrderHandler",
    "OrderFulfillment::StepHandlers::ShipOrderHandler",
]


def vector(name: str) -> dict[str, Any]:
    data = json.loads((VECTORS_DIR / "valid" / f"{name}.json").read_text(encoding="utf-8"))
    return data.get("canonical", data["message"])


def at(text: str) -> Timestamp:
    parsed = Timestamp.parse(text)
    assert parsed is not None
    return parsed


BUILT: dict[str, Any] = {
    "hello.first": Hello(WORKER, "order-fulfillment workers (ruby)", SDK, CLASSES, 8, 1000, []),
    "hello.minimal": Hello(WORKER, "order-fulfillment workers (ruby)", SDK, CLASSES, 8),
    "hello.rehello_in_flight": Hello(
        WORKER,
        "order-fulfillment workers (ruby)",
        SDK,
        CLASSES,
        8,
        1000,
        [StepRef(BATCH_ID, 8127), StepRef(BATCH_ID, 8128)],
    ),
    "heartbeat.worker": WorkerHeartbeat(WORKER, 3, 5, at("2025-01-23T19:57:52.123Z")),
    "heartbeat.worker_idle": WorkerHeartbeat(WORKER, 0, 8, at("2025-01-23T19:57:52Z")),
    "partial_result.completed": PartialResult(
        BATCH_ID,
        8127,
        1,
        "completed",
        {"tracking_number": "1234567890", "carrier": "UPS", "estimated_delivery": "2025-01-25"},
        None,
        WORKER,
        1,
        at("2025-01-23T19:57:53.357Z"),
        1234,
    ),
    "partial_result.failed_retryable": PartialResult(
        BATCH_ID,
        8128,
        2,
        "failed",
        None,
        StepError(
            "carrier API timed out after 30s",
            "Net::ReadTimeout",
            True,
            5000,
            [
                "app/handlers/ship_order_handler.rb:42:in `call_carrier'",
                "app/handlers/ship_order_handler.rb:17:in `process'",
            ],
        ),
        WORKER,
        2,
        at("2025-01-23T19:58:23.500Z"),
        30012,
    ),
    "partial_result.failed_minimal": PartialResult(
        BATCH_ID,
        8128,
        2,
        "failed",
        None,
        StepError("order has no line items", "ArgumentError", False),
        WORKER,
        2,
        at("2025-01-23T19:58:23.500Z"),
        30012,
    ),
    "batch_completion.mixed": BatchCompletion(
        BATCH_ID,
        2,
        1,
        1,
        [StepSummary(8127, "completed"), StepSummary(8128, "failed")],
        at("2025-01-23T19:58:23.500Z"),
        WORKER,
    ),
    "health_reply.healthy": HealthReply(
        "0195b4bc-2a3b-7c4d-9e5f-60718293a4b5",
        WORKER,
        "healthy",
        3,
        5,
        86400000,
        {"ruby_version": "3.3.0", "threads": 8},
    ),
    "health_reply.draining_no_details": HealthReply(
        "0195b4bc-2a3b-7c4d-9e5f-60718293a4b5", WORKER, "draining", 3, 5, 86400000
    ),
    "goodbye.handed_back": Goodbye(
        WORKER,
        "SIGTERM received; draining",
        [
            StepRef("0195b4bb-01c2-7a4e-8f00-3b9d6e1a2c7f", 9001),
            StepRef("0195b4bb-01c2-7a4e-8f00-3b9d6e1a2c7f", 9002),
        ],
    ),
    "goodbye.minimal": Goodbye(WORKER, ""),
    "error.from_worker": ErrorReport(
        "invalid_field_value", "field `steps[0].batch_id` has an invalid value", "step_batch"
    ),
}


@pytest.mark.parametrize("name", sorted(BUILT))
def test_worker_messages_built_by_the_sdk_match_the_vectors(name: str) -> None:
    encoded = encode(BUILT[name])
    message = json.loads(encoded)
    assert json_equal(message, vector(name)), encoded
    assert list(message) == list(vector(name)), "fields in canonical order"
    assert_matches_schema(message)
    decode_worker_message(encoded)


def test_every_worker_message_kind_has_a_built_example() -> None:
    kinds = {type(message).MESSAGE_TYPE for message in BUILT.values()}
    assert kinds == {
        "hello",
        "heartbeat",
        "partial_result",
        "batch_completion",
        "health_reply",
        "goodbye",
        "error",
    }
    assert all((VECTORS_DIR / "valid" / f"{name}.json").is_file() for name in BUILT)
    assert Path(VECTORS_DIR).is_dir()
