//! Why a frame was rejected: [`ProtocolError`] and the stable [`ErrorCode`]s of protocol v1.

use crate::types::Direction;
use crate::version::ProtocolVersion;
use std::fmt;

/// The stable, snake_case error codes of protocol v1.
///
/// The first group is produced by decoding a frame ([`ProtocolError::code`]) and is what the
/// test vectors' `expected_error` names. The second group is produced by an orchestrator's or a
/// worker's session logic and only travels in `error` messages. A receiver of an `error` message
/// must accept codes it does not know (they come from newer peers) and treat them as generic
/// errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The frame is larger than the receiver's `max_frame_bytes`.
    FrameTooLarge,
    /// The ZeroMQ message has more than one frame (after the ROUTER's identity frame).
    MultipartMessage,
    /// The frame is not UTF-8, not JSON, or JSON followed by other data.
    InvalidJson,
    /// The frame is JSON but not an object.
    NotAnObject,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong JSON type (including `null` for a required field, and integers
    /// written with a fraction or exponent, or outside the 64-bit range).
    InvalidFieldType,
    /// A field has the right type but a value the protocol does not allow.
    InvalidFieldValue,
    /// A length, count or nesting limit is exceeded.
    LimitExceeded,
    /// Every field is valid alone but two of them contradict each other.
    InconsistentMessage,
    /// `protocol_version` has a major version the receiver does not speak.
    UnsupportedProtocolVersion,
    /// `message_type` is not a message the sender's side may send in this major version.
    UnknownMessageType,
    /// (Session) A message other than `hello` arrived on a connection that has not completed
    /// the handshake. The worker must send `hello` again.
    NotRegistered,
    /// (Session) A message's `worker_id` differs from the one its connection registered with.
    WorkerIdMismatch,
    /// (Session) The orchestrator dispatched more steps than the worker's free capacity.
    CapacityExceeded,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::FrameTooLarge,
        ErrorCode::MultipartMessage,
        ErrorCode::InvalidJson,
        ErrorCode::NotAnObject,
        ErrorCode::MissingField,
        ErrorCode::InvalidFieldType,
        ErrorCode::InvalidFieldValue,
        ErrorCode::LimitExceeded,
        ErrorCode::InconsistentMessage,
        ErrorCode::UnsupportedProtocolVersion,
        ErrorCode::UnknownMessageType,
        ErrorCode::NotRegistered,
        ErrorCode::WorkerIdMismatch,
        ErrorCode::CapacityExceeded,
    ];

    /// The code as it appears on the wire and in the test vectors.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::MultipartMessage => "multipart_message",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::NotAnObject => "not_an_object",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidFieldType => "invalid_field_type",
            ErrorCode::InvalidFieldValue => "invalid_field_value",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::InconsistentMessage => "inconsistent_message",
            ErrorCode::UnsupportedProtocolVersion => "unsupported_protocol_version",
            ErrorCode::UnknownMessageType => "unknown_message_type",
            ErrorCode::NotRegistered => "not_registered",
            ErrorCode::WorkerIdMismatch => "worker_id_mismatch",
            ErrorCode::CapacityExceeded => "capacity_exceeded",
        }
    }

    /// The code named by `text`, if it is one of this version's codes.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|code| code.as_str() == text)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a received frame was rejected. [`code`](ProtocolError::code) is stable; the message
/// (`Display`) names the offending field (as a path such as `steps[0].metadata.attempt`) or the
/// reason, and may be reworded between releases.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame is larger than `max_frame_bytes`; it was not parsed.
    #[error("frame of {size} bytes exceeds max_frame_bytes {max}")]
    FrameTooLarge {
        /// Size of the rejected frame in bytes.
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// The ZeroMQ message had more than one payload frame. Raised by the transport, which sees
    /// frames; [`decode_worker_message`](crate::decode_worker_message) only sees one.
    #[error(
        "message has {frames} frames; a message must be exactly one frame holding a JSON object"
    )]
    MultipartMessage {
        /// Number of payload frames received (identity frame excluded).
        frames: usize,
    },
    /// The frame is not UTF-8, not JSON, or has data after the JSON value.
    #[error("frame is not valid JSON: {reason}")]
    InvalidJson {
        /// What the parser reported.
        reason: String,
    },
    /// The nesting of arrays and objects is deeper than [`MAX_NESTING_DEPTH`](crate::limits::MAX_NESTING_DEPTH).
    #[error("message nesting depth exceeds the maximum of {max} levels")]
    NestingTooDeep {
        /// The limit in force.
        max: usize,
    },
    /// The frame is JSON but not an object.
    #[error("message must be a JSON object, found {found}")]
    NotAnObject {
        /// The JSON type found (`array`, `string`, …).
        found: &'static str,
    },
    /// A required field is absent.
    #[error("missing required field `{field}`")]
    MissingField {
        /// Path of the field, e.g. `steps[0].handler_class`.
        field: String,
    },
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}, found {found}")]
    InvalidFieldType {
        /// Path of the field.
        field: String,
        /// The type the protocol requires.
        expected: &'static str,
        /// The type that arrived.
        found: &'static str,
    },
    /// A field has a value the protocol does not allow.
    #[error("field `{field}` has an invalid value: {reason}")]
    InvalidFieldValue {
        /// Path of the field.
        field: String,
        /// The rule the value broke.
        reason: String,
    },
    /// A field is longer or has more entries than a protocol limit allows.
    #[error("field `{field}` exceeds a protocol limit: {reason}")]
    LimitExceeded {
        /// Path of the field.
        field: String,
        /// The limit and the actual size.
        reason: String,
    },
    /// Two fields contradict each other.
    #[error("inconsistent message: field `{field}` {reason}")]
    InconsistentMessage {
        /// Path of the field found to contradict an earlier one.
        field: String,
        /// The rule that ties them together.
        reason: String,
    },
    /// The sender speaks another major version.
    #[error(
        "unsupported protocol_version \"{received}\": this peer speaks protocol {supported} and accepts only major version {}",
        supported.major
    )]
    UnsupportedProtocolVersion {
        /// The version the sender announced.
        received: String,
        /// The version this peer speaks.
        supported: ProtocolVersion,
    },
    /// The message type is not one the sender's side may send.
    #[error("unknown message_type \"{message_type}\" for {direction} messages")]
    UnknownMessageType {
        /// The message type received.
        message_type: String,
        /// The direction it was received in.
        direction: Direction,
    },
}

impl ProtocolError {
    /// The stable code for this error, as used in `error` messages and the test vectors.
    pub const fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            ProtocolError::MultipartMessage { .. } => ErrorCode::MultipartMessage,
            ProtocolError::InvalidJson { .. } => ErrorCode::InvalidJson,
            ProtocolError::NestingTooDeep { .. } => ErrorCode::LimitExceeded,
            ProtocolError::NotAnObject { .. } => ErrorCode::NotAnObject,
            ProtocolError::MissingField { .. } => ErrorCode::MissingField,
            ProtocolError::InvalidFieldType { .. } => ErrorCode::InvalidFieldType,
            ProtocolError::InvalidFieldValue { .. } => ErrorCode::InvalidFieldValue,
            ProtocolError::LimitExceeded { .. } => ErrorCode::LimitExceeded,
            ProtocolError::InconsistentMessage { .. } => ErrorCode::InconsistentMessage,
            ProtocolError::UnsupportedProtocolVersion { .. } => {
                ErrorCode::UnsupportedProtocolVersion
            }
            ProtocolError::UnknownMessageType { .. } => ErrorCode::UnknownMessageType,
        }
    }

    /// The path of the offending field, for errors about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            ProtocolError::MissingField { field }
            | ProtocolError::InvalidFieldType { field, .. }
            | ProtocolError::InvalidFieldValue { field, .. }
            | ProtocolError::LimitExceeded { field, .. }
            | ProtocolError::InconsistentMessage { field, .. } => Some(field),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_wire_names() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
    }

    #[test]
    fn version_error_names_both_versions() {
        let error = ProtocolError::UnsupportedProtocolVersion {
            received: "2.0".to_owned(),
            supported: crate::PROTOCOL_VERSION,
        };
        let text = error.to_string();
        assert!(text.contains("\"2.0\""), "{text}");
        assert!(text.contains("1.0"), "{text}");
        assert_eq!(error.code().as_str(), "unsupported_protocol_version");
    }
}
