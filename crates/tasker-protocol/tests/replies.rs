//! What a peer sends back for a rejected frame (`reply_to_rejected_worker_frame`,
//! `report_rejected_orchestrator_frame`).

use tasker_protocol::{
    ErrorCode, HelloRejectionCode, Limits, OrchestratorMessage, decode_orchestrator_message,
    decode_worker_message, encode, reply_to_rejected_worker_frame,
    report_rejected_orchestrator_frame,
};

const HELLO_V2: &[u8] = br#"{"message_type":"hello","protocol_version":"2.0","node":"x"}"#;

fn worker_reply(frame: &[u8]) -> Option<OrchestratorMessage> {
    let error = decode_worker_message(frame, &Limits::default()).expect_err("the frame is invalid");
    reply_to_rejected_worker_frame(frame, &error)
}

#[test]
fn a_hello_of_another_major_version_gets_hello_rejected_naming_both_versions() {
    let Some(OrchestratorMessage::HelloRejected(rejected)) = worker_reply(HELLO_V2) else {
        panic!("a rejected hello is answered with hello_rejected");
    };
    assert_eq!(
        HelloRejectionCode::parse(&rejected.code),
        Some(HelloRejectionCode::UnsupportedProtocolVersion)
    );
    assert!(rejected.message.contains("\"2.0\""), "{}", rejected.message);
    assert!(rejected.message.contains("1.0"), "{}", rejected.message);
    // The reply itself is a valid v1 message.
    let reply = encode(&OrchestratorMessage::HelloRejected(rejected));
    decode_orchestrator_message(&reply, &Limits::default()).expect("the reply decodes");
}

#[test]
fn a_malformed_hello_gets_invalid_hello_led_by_the_decode_code() {
    let frame = br#"{"message_type":"hello","protocol_version":"1.0","worker_id":"w1","name":"n",
        "sdk":{"name":"s","version":"1","language":"go"},"handler_classes":["h"]}"#;
    let Some(OrchestratorMessage::HelloRejected(rejected)) = worker_reply(frame) else {
        panic!("a rejected hello is answered with hello_rejected");
    };
    assert_eq!(rejected.code, "invalid_hello");
    assert!(
        rejected.message.starts_with("missing_field: ") && rejected.message.contains("capacity"),
        "{}",
        rejected.message
    );
}

#[test]
fn a_rejected_result_is_answered_with_an_error_naming_its_batch_and_step() {
    let frame = br#"{"message_type":"partial_result","protocol_version":"1.0",
        "batch_id":"0195b4ba-8d3a-7f12-9c4e-6a1d2b3c4d5e","step_id":8127,"attempt":1,
        "status":"done","worker_id":"w1","sequence":1,"timestamp":"2025-01-23T19:57:52Z",
        "execution_time_ms":3}"#;
    let Some(OrchestratorMessage::Error(report)) = worker_reply(frame) else {
        panic!("a rejected non-hello frame is answered with error");
    };
    assert_eq!(
        ErrorCode::parse(&report.code),
        Some(ErrorCode::InvalidFieldValue)
    );
    assert!(report.message.contains("status"), "{}", report.message);
    assert_eq!(
        report.offending_message_type.as_deref(),
        Some("partial_result")
    );
    assert_eq!(
        report.batch_id.map(|id| id.to_string()).as_deref(),
        Some("0195b4ba-8d3a-7f12-9c4e-6a1d2b3c4d5e")
    );
    assert_eq!(report.step_id, Some(8127));
}

#[test]
fn garbage_is_answered_with_an_error_without_references() {
    let Some(OrchestratorMessage::Error(report)) = worker_reply(b"\x00\x01garbage") else {
        panic!("garbage is answered with error");
    };
    assert_eq!(report.code, "invalid_json");
    assert_eq!(report.offending_message_type, None);
    assert_eq!(report.batch_id, None);
    assert_eq!(report.step_id, None);
}

#[test]
fn an_oversized_frame_is_answered_without_being_parsed() {
    let frame = br#"{"message_type":"partial_result","protocol_version":"1.0","batch_id":"0195b4ba-8d3a-7f12-9c4e-6a1d2b3c4d5e"}"#;
    let limits = Limits {
        max_frame_bytes: 16,
        ..Limits::default()
    };
    let error = decode_worker_message(frame, &limits).expect_err("too large");
    let Some(OrchestratorMessage::Error(report)) = reply_to_rejected_worker_frame(frame, &error)
    else {
        panic!("an oversized frame is answered with error");
    };
    assert_eq!(report.code, "frame_too_large");
    assert_eq!(report.offending_message_type, None);
}

#[test]
fn a_rejected_error_is_never_answered() {
    let frame =
        br#"{"message_type":"error","protocol_version":"1.0","code":"Bad Code","message":"x"}"#;
    assert_eq!(worker_reply(frame), None);
    let error = decode_orchestrator_message(frame, &Limits::default()).expect_err("invalid code");
    assert_eq!(report_rejected_orchestrator_frame(frame, &error), None);
}

#[test]
fn a_worker_reports_a_rejected_orchestrator_frame() {
    let frame = br#"{"message_type":"step_batch","protocol_version":"1.0",
        "batch_id":"0195b4ba-8d3a-7f12-9c4e-6a1d2b3c4d5e","steps":[]}"#;
    let error = decode_orchestrator_message(frame, &Limits::default()).expect_err("empty batch");
    let report = report_rejected_orchestrator_frame(frame, &error).expect("reported");
    assert_eq!(report.code, "invalid_field_value");
    assert_eq!(report.offending_message_type.as_deref(), Some("step_batch"));
    assert!(report.batch_id.is_some());
    let reply = encode(&tasker_protocol::WorkerMessage::Error(report));
    decode_worker_message(&reply, &Limits::default()).expect("the report decodes");
}
