//! What a peer sends back for a frame it rejected, so that every implementation answers the
//! same way (spec §10, "Answering a rejected frame").

use crate::decode::parse_object;
use crate::error::{ErrorCode, ProtocolError};
use crate::fields::parse_canonical_uuid;
use crate::limits::{Limits, MAX_NAME_BYTES, MAX_TEXT_BYTES, truncate_to_bytes};
use crate::orchestrator::{HelloRejected, OrchestratorMessage};
use crate::types::{ErrorReport, HelloRejectionCode};
use crate::version::PROTOCOL_VERSION;
use serde_json::Value;
use uuid::Uuid;

/// What could be read from a rejected frame to tell its sender which message was refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RejectedFrame {
    /// Its `message_type`, if it was a string (cut to 255 bytes).
    pub message_type: Option<String>,
    /// Its top-level `batch_id`, if it was a canonical UUID.
    pub batch_id: Option<Uuid>,
    /// Its top-level `step_id`, if it was an integer ≥ 1.
    pub step_id: Option<i64>,
}

impl RejectedFrame {
    /// Reads what it can from `frame`. Frames rejected before parsing (too large, not JSON,
    /// too deep, not an object) yield nothing.
    pub fn peek(frame: &[u8], error: &ProtocolError) -> Self {
        let unparsed = matches!(
            error.code(),
            ErrorCode::FrameTooLarge
                | ErrorCode::MultipartMessage
                | ErrorCode::InvalidJson
                | ErrorCode::NotAnObject
        ) || matches!(error, ProtocolError::NestingTooDeep { .. });
        if unparsed {
            return Self::default();
        }
        let limits = Limits {
            max_frame_bytes: usize::MAX,
            ..Limits::default()
        };
        let Ok(object) = parse_object(frame, &limits) else {
            return Self::default();
        };
        Self {
            message_type: match object.get("message_type") {
                Some(Value::String(text)) => {
                    Some(truncate_to_bytes(text, MAX_NAME_BYTES).to_owned())
                }
                _ => None,
            },
            batch_id: match object.get("batch_id") {
                Some(Value::String(text)) => parse_canonical_uuid(text),
                _ => None,
            },
            step_id: object
                .get("step_id")
                .and_then(Value::as_i64)
                .filter(|step_id| *step_id >= 1),
        }
    }

    fn is_error_report(&self) -> bool {
        self.message_type.as_deref() == Some("error")
    }
}

fn error_report(error: &ProtocolError, rejected: RejectedFrame) -> ErrorReport {
    ErrorReport {
        protocol_version: PROTOCOL_VERSION,
        code: error.code().as_str().to_owned(),
        message: truncate_to_bytes(&error.to_string(), MAX_TEXT_BYTES).to_owned(),
        offending_message_type: rejected.message_type,
        batch_id: rejected.batch_id,
        step_id: rejected.step_id,
    }
}

/// The orchestrator's answer to a worker frame that failed to decode with `error`:
/// `hello_rejected` if the frame was a `hello` (code `unsupported_protocol_version`, or
/// `invalid_hello` with the decode error's code leading the message), otherwise `error`.
/// `None` if the rejected frame was itself an `error`: errors are never answered, so two peers
/// can never bounce errors at each other.
pub fn reply_to_rejected_worker_frame(
    frame: &[u8],
    error: &ProtocolError,
) -> Option<OrchestratorMessage> {
    let rejected = RejectedFrame::peek(frame, error);
    if rejected.is_error_report() {
        return None;
    }
    if rejected.message_type.as_deref() == Some("hello") {
        let (code, message) = match error.code() {
            ErrorCode::UnsupportedProtocolVersion => (
                HelloRejectionCode::UnsupportedProtocolVersion,
                error.to_string(),
            ),
            code => (HelloRejectionCode::InvalidHello, format!("{code}: {error}")),
        };
        return Some(OrchestratorMessage::HelloRejected(HelloRejected {
            protocol_version: PROTOCOL_VERSION,
            code: code.as_str().to_owned(),
            message: truncate_to_bytes(&message, MAX_TEXT_BYTES).to_owned(),
        }));
    }
    Some(OrchestratorMessage::Error(error_report(error, rejected)))
}

/// The worker's `error` report for an orchestrator frame that failed to decode with `error`.
/// `None` if the rejected frame was itself an `error` (errors are never answered).
pub fn report_rejected_orchestrator_frame(
    frame: &[u8],
    error: &ProtocolError,
) -> Option<ErrorReport> {
    let rejected = RejectedFrame::peek(frame, error);
    (!rejected.is_error_report()).then(|| error_report(error, rejected))
}
