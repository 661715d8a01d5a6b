//! Decoding frames into typed messages, in the order the spec fixes (spec §6, "Validation
//! order"): frame size, UTF-8, nesting depth, JSON syntax, object, `protocol_version`,
//! `message_type`, the message's fields in document order, then cross-field consistency.

use crate::error::ProtocolError;
use crate::fields::{Fields, Text, distinct, json_type_name};
use crate::limits::{
    Limits, MAX_BACKTRACE_ENTRIES, MAX_CAPACITY, MAX_HANDLER_CLASSES, MAX_HEARTBEAT_INTERVAL_MS,
    MAX_LIVENESS, MAX_MAX_FRAME_BYTES, MAX_NESTING_DEPTH, MAX_STEPS_PER_BATCH_CEILING,
    MIN_HEARTBEAT_INTERVAL_MS, MIN_MAX_FRAME_BYTES,
};
use crate::orchestrator::{
    AckEntry, CancelSteps, HealthRequest, HelloRejected, OrchestratorHeartbeat,
    OrchestratorMessage, ResultAck, StepBatch, StepMetadata, StepRequest, Welcome,
};
use crate::types::{
    Direction, ErrorReport, JsonObject, ResultKind, StepError, StepRef, StepStatus,
};
use crate::version::{PROTOCOL_VERSION, ProtocolVersion};
use crate::worker::{
    BatchCompletion, Goodbye, HealthReply, Hello, PartialResult, SdkInfo, StepSummary,
    WorkerHeartbeat, WorkerMessage,
};
use serde_json::Value;

/// Decodes one frame received from a worker.
///
/// # Errors
///
/// The first violation found, in the spec's validation order; see [`ProtocolError::code`].
pub fn decode_worker_message(
    frame: &[u8],
    limits: &Limits,
) -> Result<WorkerMessage, ProtocolError> {
    let object = parse_object(frame, limits)?;
    let fields = Fields::root(&object);
    let (version, message_type) = read_envelope(&fields)?;
    match message_type.as_str() {
        "hello" => read_hello(&fields, version).map(WorkerMessage::Hello),
        "heartbeat" => read_worker_heartbeat(&fields, version).map(WorkerMessage::Heartbeat),
        "partial_result" => read_partial_result(&fields, version).map(WorkerMessage::PartialResult),
        "batch_completion" => {
            read_batch_completion(&fields, version, limits).map(WorkerMessage::BatchCompletion)
        }
        "health_reply" => read_health_reply(&fields, version).map(WorkerMessage::HealthReply),
        "goodbye" => read_goodbye(&fields, version).map(WorkerMessage::Goodbye),
        "error" => read_error_report(&fields, version).map(WorkerMessage::Error),
        _ => Err(unknown_type(message_type, Direction::WorkerToOrchestrator)),
    }
}

/// Decodes one frame received from the orchestrator.
///
/// # Errors
///
/// The first violation found, in the spec's validation order; see [`ProtocolError::code`].
pub fn decode_orchestrator_message(
    frame: &[u8],
    limits: &Limits,
) -> Result<OrchestratorMessage, ProtocolError> {
    let object = parse_object(frame, limits)?;
    let fields = Fields::root(&object);
    let (version, message_type) = read_envelope(&fields)?;
    match message_type.as_str() {
        "welcome" => read_welcome(&fields, version).map(OrchestratorMessage::Welcome),
        "hello_rejected" => {
            read_hello_rejected(&fields, version).map(OrchestratorMessage::HelloRejected)
        }
        "heartbeat" => {
            read_orchestrator_heartbeat(&fields, version).map(OrchestratorMessage::Heartbeat)
        }
        "step_batch" => {
            read_step_batch(&fields, version, limits).map(OrchestratorMessage::StepBatch)
        }
        "result_ack" => read_result_ack(&fields, version).map(OrchestratorMessage::ResultAck),
        "cancel_steps" => {
            read_cancel_steps(&fields, version, limits).map(OrchestratorMessage::CancelSteps)
        }
        "health_request" => {
            read_health_request(&fields, version).map(OrchestratorMessage::HealthRequest)
        }
        "error" => read_error_report(&fields, version).map(OrchestratorMessage::Error),
        _ => Err(unknown_type(message_type, Direction::OrchestratorToWorker)),
    }
}

fn unknown_type(message_type: String, direction: Direction) -> ProtocolError {
    ProtocolError::UnknownMessageType {
        message_type,
        direction,
    }
}

/// Steps 1–5: size, UTF-8, nesting depth, JSON syntax, object.
pub(crate) fn parse_object(frame: &[u8], limits: &Limits) -> Result<JsonObject, ProtocolError> {
    if frame.len() > limits.max_frame_bytes {
        return Err(ProtocolError::FrameTooLarge {
            size: frame.len(),
            max: limits.max_frame_bytes,
        });
    }
    let text = std::str::from_utf8(frame).map_err(|error| ProtocolError::InvalidJson {
        reason: format!("not valid UTF-8 ({error})"),
    })?;
    if nesting_exceeds(text.as_bytes(), MAX_NESTING_DEPTH) {
        return Err(ProtocolError::NestingTooDeep {
            max: MAX_NESTING_DEPTH,
        });
    }
    let value: Value = serde_json::from_str(text).map_err(|error| ProtocolError::InvalidJson {
        reason: error.to_string(),
    })?;
    match value {
        Value::Object(object) => Ok(object),
        other => Err(ProtocolError::NotAnObject {
            found: json_type_name(&other),
        }),
    }
}

/// Whether arrays and objects nest deeper than `max` (the top-level value is depth 1).
/// Brackets inside strings do not count. Runs before parsing, so that every implementation
/// reports `limit_exceeded` for deep input whatever its parser's own recursion limit.
fn nesting_exceeds(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Steps 6–7: `protocol_version` (present, string, well-formed, same major), then
/// `message_type` (present, string). Whether the type is known is the caller's step.
fn read_envelope(fields: &Fields<'_>) -> Result<(ProtocolVersion, String), ProtocolError> {
    let version_field = fields.required("protocol_version")?;
    let version_text = version_field.text(Text::Label)?;
    let version = ProtocolVersion::parse(&version_text).ok_or_else(|| {
        version_field.invalid(format!(
            "\"{version_text}\" is not of the form <major>.<minor>, e.g. \"1.0\""
        ))
    })?;
    if !version.is_compatible_with(PROTOCOL_VERSION) {
        return Err(ProtocolError::UnsupportedProtocolVersion {
            received: version_text,
            supported: PROTOCOL_VERSION,
        });
    }
    let message_type = fields.required("message_type")?.text(Text::Label)?;
    Ok((version, message_type))
}

fn read_hello(
    fields: &Fields<'_>,
    protocol_version: ProtocolVersion,
) -> Result<Hello, ProtocolError> {
    let worker_id = fields.required("worker_id")?.text(Text::Identifier)?;
    let name = fields.required("name")?.text(Text::Name)?;
    let sdk_fields = fields.required("sdk")?.object()?;
    let sdk = SdkInfo {
        name: sdk_fields.required("name")?.text(Text::Name)?,
        version: sdk_fields.required("version")?.text(Text::Name)?,
        language: sdk_fields.required("language")?.text(Text::Name)?,
    };
    let handler_classes = distinct(
        fields
            .required("handler_classes")?
            .array(MAX_HANDLER_CLASSES, true)?,
        |item| item.text(Text::Name),
        String::clone,
        |item| item.path().to_owned(),
    )?;
    let capacity = fields.required("capacity")?.u32_in(1, MAX_CAPACITY)?;
    let heartbeat_interval_ms = fields
        .optional("heartbeat_interval_ms")
        .map(|field| field.u64_in(MIN_HEARTBEAT_INTERVAL_MS, MAX_HEARTBEAT_INTERVAL_MS))
        .transpose()?;
    let in_flight = read_step_refs(fields, "in_flight")?;
    Ok(Hello {
        protocol_version,
        worker_id,
        name,
        sdk,
        handler_classes,
        capacity,
        heartbeat_interval_ms,
        in_flight,
    })
}

/// An optional array of distinct step references (absent or null = empty).
fn read_step_refs(fields: &Fields<'_>, name: &str) -> Result<Vec<StepRef>, ProtocolError> {
    let Some(field) = fields.optional(name) else {
        return Ok(Vec::new());
    };
    distinct(
        field.array(usize::MAX, false)?,
        |item| item.step_ref(),
        |step| *step,
        |item| item.path().to_owned(),
    )
}

fn read_worker_heartbeat(
    fields: &Fields<'_>,
    protocol_version: ProtocolVersion,
) -> Result<WorkerHeartbeat, ProtocolError> {
    Ok(WorkerHeartbeat {
        protocol_version,
        worker_id: fields.required("worker_id")?.text(Text::Identifier)?,
        in_flight: fields.required("in_flight")?.u32_in(0, u32::MAX)?,
        free_capacity: fields.required("free_capacity")?.u32_in(0, u32::MAX)?,
        timestamp: fields.required("timestamp")?.timestamp()?,
    })
}

fn read_partial_result(
    fields: &Fields<'_>,
    protocol_version: ProtocolVersion,
) -> Result<PartialResult, ProtocolError> {
    let batch_id = fields.required("batch_id")?.uuid()?;
    let step_id = fields.required("step_id")?.id()?;
    let attempt = fields.required("attempt")?.u32_in(1, u32::MAX)?;
    let status: StepStatus = fields.required("status")?.one_of()?;
    let output = fields
        .optional("output")
        .map_or(Value::Null, |field| field.any());
    let error = fields
        .optional("error")
        .map(|field| read_step_error(&field))
        .transpose()?;
    let worker_id = fields.required("worker_id")?.text(Text::Identifier)?;
    let sequence = fields.required("sequence")?.u64_in(1, u64::MAX)?;
    let timestamp = fields.required("timestamp")?.timestamp()?;
    let execution_time_ms = fields.required("execution_time_ms")?.u64_in(0, u64::MAX)?;

    match status {
        StepStatus::Completed if error.is_some() => {
            return Err(inconsistent(
                "error",
                "must be null when status is \"completed\"",
            ));
        }
        StepStatus::Failed if error.is_none() => {
            return Err(inconsistent(
                "error",
                "is required when status is \"failed\"",
            ));
        }
        StepStatus::Failed if !output.is_null() => {
            return Err(inconsistent(
                "output",
                "must be null when status is \"failed\"",
            ));
        }
        _ => {}
    }
    Ok(PartialResult {
        protocol_version,
        batch_id,
        step_id,
        attempt,
        status,
        output,
        error,
        worker_id,
        sequence,
        timestamp,
        execution_time_ms,
    })
}

fn read_step_error(field: &crate::fields::Field<'_>) -> Result<StepError, ProtocolError> {
    let fields = field.object()?;
    let message = fields.required("message")?.text(Text::Prose)?;
    let error_class = fields.required("error_class")?.text(Text::Name)?;
    let retryable = fields.required("retryable")?.boolean()?;
    let retry_after_ms = fields
        .optional("retry_after_ms")
        .map(|field| field.u64_in(0, u64::MAX))
        .transpose()?;
    let backtrace = match fields.optional("backtrace") {
        None => Vec::new(),
        Some(field) => field
            .array(MAX_BACKTRACE_ENTRIES, false)?
            .iter()
            .map(|item| item.text(Text::BacktraceEntry))
            .collect::<Result<_, _>>()?,
    };
    Ok(StepError {
        message,
        error_class,
        retryable,
        retry_after_ms,
        backtrace,
    })
}

fn inconsistent(field: impl Into<String>, reason: impl Into<String>) -> ProtocolError {
    ProtocolError::InconsistentMessage {
        field: field.into(),
        reason: reason.into(),
    }
}

fn read_batch_completion(
    fields: &Fields<'_>,
    protocol_version: ProtocolVersion,
    limits: &Limits,
) -> Result<BatchCompletion, ProtocolError> {
    let batch_id = fields.required("batch_id")?.uuid()?;
    let total_steps = fields.required("total_steps")?.u32_in(1, u32::MAX)?;
    let completed_steps = fields.required("completed_steps")?.u32_in(0, u32::MAX)?;
    let failed_steps = fields.required("failed_steps")?.u32_in(0, u32::MAX)?;
    let step_summaries = distinct(
        fields
            .required("step_summaries")?
            .array(limits.max_steps_per_batch, false)?,
        |item| {
            let summary = item.object()?;
            Ok(StepSummary {
                step_id: summary.required("step_id")?.id()?,
                status: summary.required("status")?.one_of()?,
            })
        },
        |summary| summary.step_id,
        |item| format!("{}.step_id", item.path()),
    )?;
    let completed_at = fields.required("completed_at")?.timestamp()?;
    let worker_id = fields.required("worker_id")?.text(Text::Identifier)?;

    if u64::from(completed_steps) + u64::from(failed_steps) != u64::from(total_steps) {
        return Err(inconsistent(
            "total_steps",
            format!(
                "is {total_steps} but completed_steps + failed_steps is {}",
                u64::from(completed_steps) + u64::from(failed_steps)
            ),
        ));
    }
    if step_summaries.len() != total_steps as usize {
        return Err(inconsistent(
            "step_summaries",
            format!(
                "has {} entries but total_steps is {total_steps}",
                step_summaries.len()
            ),
        ));
    }
    let summarized_completed = step_summaries
        .iter()
        .filter(|summary| summary.status == StepStatus::Completed)
        .count();
    if summarized_completed != completed_steps as usize {
        return Err(inconsistent(
            "completed_steps",
            format!(
                "is {completed_steps} but step_summaries has {summarized_completed} completed entries"
            ),
        ));
    }
    Ok(BatchCompletion {
        protocol_version,
        batch_id,
        total_steps,
        completed_steps,
        failed_steps,
        step_summaries,
        completed_at,
        worker_id,
    })
}

fn read_health_reply(
    fields: &Fields<'_>,
    protocol_version: ProtocolVersion,
) -> Result<HealthReply, ProtocolError> {
    Ok(HealthReply {
        protocol_version,
        request_id: fields.required("request_id")?.uuid()?,
        worker_id: fields.required("worker_id")?.text(Text::Identifier)?,
        status: fields.required("status")?.one_of()?,
        in_flight: fields.required("in_flight")?.u32_in(0, u32::MAX)?,
        free_capacity: fields.required("free_capacity")?.u32_in(0, u32::MAX)?,
        uptime_ms: fields.required("uptime_ms")?.u64_in(0, u64::MAX)?,
        details: fields
            .optional("details")
            .map(|field| field.json_object())
            .transpose()?,
    })
}

fn read_goodbye(
    fields: &Fields<'_>,
    protocol_version: ProtocolVersion,
) -> Result<Goodbye, ProtocolError> {
    Ok(Goodbye {
        protocol_version,
        worker_id: fields.required("worker_id")?.text(Text::Identifier)?,
        reason: fields.required("reason")?.text(Text::Prose)?,
        handed_back: read_step_refs(fields, "handed_back")?,
    })
}

fn read_error_report(
    fields: &Fields<'_>,
    protocol_version: ProtocolVersion,
) -> Result<ErrorReport, ProtocolError> {
    Ok(ErrorReport {
        protocol_version,
        code: fields.required("code")?.text(Text::Code)?,
        message: fields.required("message")?.text(Text::Prose)?,
        offending_message_type: fields
            .optional("offending_message_type")
            .map(|field| field.text(Text::Label))
            .transpose()?,
        batch_id: fields
            .optional("batch_id")
            .map(|field| field.uuid())
            .transpose()?,
        step_id: fields
            .optional("step_id")
            .map(|field| field.id())
            .transpose()?,
    })
}

fn read_welcome(
    fields: &Fields<'_>,
    protocol_version: ProtocolVersion,
) -> Result<Welcome, ProtocolError> {
    Ok(Welcome {
        protocol_version,
        worker_id: fields.required("worker_id")?.text(Text::Identifier)?,
        orchestrator_id: fields.required("orchestrator_id")?.text(Text::Identifier)?,
        heartbeat_interval_ms: fields
            .required("heartbeat_interval_ms")?
            .u64_in(MIN_HEARTBEAT_INTERVAL_MS, MAX_HEARTBEAT_INTERVAL_MS)?,
        liveness: fields.required("liveness")?.u32_in(1, MAX_LIVENESS)?,
        max_frame_bytes: fields
            .required("max_frame_bytes")?
            .u64_in(MIN_MAX_FRAME_BYTES as u64, MAX_MAX_FRAME_BYTES as u64)?,
        max_steps_per_batch: fields
            .required("max_steps_per_batch")?
            .u32_in(1, MAX_STEPS_PER_BATCH_CEILING as u32)?,
    })
}

fn read_hello_rejected(
    fields: &Fields<'_>,
    protocol_version: ProtocolVersion,
) -> Result<HelloRejected, ProtocolError> {
    Ok(HelloRejected {
        protocol_version,
        code: fields.required("code")?.text(Text::Code)?,
        message: fields.required("message")?.text(Text::Prose)?,
    })
}

fn read_orchestrator_heartbeat(
    fields: &Fields<'_>,
    protocol_version: ProtocolVersion,
) -> Result<OrchestratorHeartbeat, ProtocolError> {
    Ok(OrchestratorHeartbeat {
        protocol_version,
        orchestrator_id: fields.required("orchestrator_id")?.text(Text::Identifier)?,
        timestamp: fields.required("timestamp")?.timestamp()?,
    })
}

fn read_step_batch(
    fields: &Fields<'_>,
    protocol_version: ProtocolVersion,
    limits: &Limits,
) -> Result<StepBatch, ProtocolError> {
    let batch_id = fields.required("batch_id")?.uuid()?;
    let steps = distinct(
        fields
            .required("steps")?
            .array(limits.max_steps_per_batch, true)?,
        read_step_request,
        |step| step.step_id,
        |item| format!("{}.step_id", item.path()),
    )?;
    for (index, step) in steps.iter().enumerate() {
        let expected = StepMetadata::idempotency_key_for(step.step_id, step.metadata.attempt);
        if step.metadata.idempotency_key != expected {
            return Err(inconsistent(
                format!("steps[{index}].metadata.idempotency_key"),
                format!(
                    "is \"{}\" but must be \"<step_id>:<attempt>\" = \"{expected}\"",
                    crate::limits::truncate_to_bytes(&step.metadata.idempotency_key, 64)
                ),
            ));
        }
    }
    Ok(StepBatch {
        protocol_version,
        batch_id,
        steps,
    })
}

fn read_step_request(field: &crate::fields::Field<'_>) -> Result<StepRequest, ProtocolError> {
    let fields = field.object()?;
    let step_id = fields.required("step_id")?.id()?;
    let task_id = fields.required("task_id")?.id()?;
    let step_name = fields.required("step_name")?.text(Text::Name)?;
    let handler_class = fields.required("handler_class")?.text(Text::Name)?;
    let handler_config = fields.required("handler_config")?.json_object()?;
    let task_context = fields.required("task_context")?.json_object()?;
    let previous_results = fields.required("previous_results")?.json_object()?;
    let metadata_fields = fields.required("metadata")?.object()?;
    let metadata = StepMetadata {
        attempt: metadata_fields.required("attempt")?.u32_in(1, u32::MAX)?,
        retry_limit: metadata_fields
            .required("retry_limit")?
            .u32_in(0, u32::MAX)?,
        timeout_ms: metadata_fields
            .optional("timeout_ms")
            .map(|field| field.u64_in(1, u64::MAX))
            .transpose()?,
        idempotency_key: metadata_fields
            .required("idempotency_key")?
            .text(Text::Name)?,
    };
    Ok(StepRequest {
        step_id,
        task_id,
        step_name,
        handler_class,
        handler_config,
        task_context,
        previous_results,
        metadata,
    })
}

fn read_result_ack(
    fields: &Fields<'_>,
    protocol_version: ProtocolVersion,
) -> Result<ResultAck, ProtocolError> {
    let acks = fields
        .required("acks")?
        .array(usize::MAX, true)?
        .iter()
        .map(|item| {
            let entry = item.object()?;
            Ok(AckEntry {
                batch_id: entry.required("batch_id")?.uuid()?,
                message_kind: entry.required("message_kind")?.one_of()?,
                step_id: entry
                    .optional("step_id")
                    .map(|field| field.id())
                    .transpose()?,
                outcome: entry.required("outcome")?.one_of()?,
            })
        })
        .collect::<Result<Vec<_>, ProtocolError>>()?;
    for (index, ack) in acks.iter().enumerate() {
        match (ack.message_kind, ack.step_id) {
            (ResultKind::PartialResult, None) => {
                return Err(inconsistent(
                    format!("acks[{index}].step_id"),
                    "is required when message_kind is \"partial_result\"",
                ));
            }
            (ResultKind::BatchCompletion, Some(_)) => {
                return Err(inconsistent(
                    format!("acks[{index}].step_id"),
                    "must be null when message_kind is \"batch_completion\"",
                ));
            }
            _ => {}
        }
    }
    Ok(ResultAck {
        protocol_version,
        acks,
    })
}

fn read_cancel_steps(
    fields: &Fields<'_>,
    protocol_version: ProtocolVersion,
    limits: &Limits,
) -> Result<CancelSteps, ProtocolError> {
    Ok(CancelSteps {
        protocol_version,
        batch_id: fields.required("batch_id")?.uuid()?,
        step_ids: distinct(
            fields
                .required("step_ids")?
                .array(limits.max_steps_per_batch, true)?,
            |item| item.id(),
            |step_id| *step_id,
            |item| item.path().to_owned(),
        )?,
        reason: fields.required("reason")?.one_of()?,
    })
}

fn read_health_request(
    fields: &Fields<'_>,
    protocol_version: ProtocolVersion,
) -> Result<HealthRequest, ProtocolError> {
    Ok(HealthRequest {
        protocol_version,
        request_id: fields.required("request_id")?.uuid()?,
        timestamp: fields.required("timestamp")?.timestamp()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_counts_brackets_outside_strings_only() {
        assert!(!nesting_exceeds(b"{}", 1));
        assert!(nesting_exceeds(b"{\"a\":[]}", 1));
        assert!(!nesting_exceeds(b"{\"a\":\"[[[[\"}", 1));
        assert!(!nesting_exceeds(br#"{"a":"\"[[["}"#, 1));
        assert!(!nesting_exceeds(br#"{"a":"\\"}"#, 1));
        assert!(nesting_exceeds(br#"{"a":"\\","b":[]}"#, 1));
    }

    #[test]
    fn field_checks_run_before_consistency_checks() {
        // Completed with an error (inconsistent) AND a bad worker_id (field error): the field
        // error wins because consistency is checked last.
        let frame = br#"{"message_type":"partial_result","protocol_version":"1.0",
            "batch_id":"0195b4ba-8d3a-7f12-9c4e-6a1d2b3c4d5e","step_id":1,"attempt":1,
            "status":"completed","output":null,
            "error":{"message":"x","error_class":"E","retryable":false},
            "worker_id":"bad id","sequence":1,"timestamp":"2025-01-23T19:57:52Z",
            "execution_time_ms":1}"#;
        let error = decode_worker_message(frame, &Limits::default())
            .expect_err("the frame has two violations");
        assert_eq!(error.field(), Some("worker_id"));
    }

    #[test]
    fn version_is_checked_before_message_type() {
        let error = decode_worker_message(
            br#"{"protocol_version":"2.0","message_type":"no_such_type"}"#,
            &Limits::default(),
        )
        .expect_err("major version 2 is unsupported");
        assert_eq!(error.code(), crate::ErrorCode::UnsupportedProtocolVersion);
    }
}
