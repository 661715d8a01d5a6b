//! Value types shared by several messages: directions, closed enumerations, step references,
//! step errors and result keys.

use crate::limits::{
    MAX_BACKTRACE_ENTRIES, MAX_BACKTRACE_ENTRY_BYTES, MAX_NAME_BYTES, MAX_TEXT_BYTES,
    truncate_to_bytes,
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use std::fmt;
use uuid::Uuid;

/// A JSON object as carried in `handler_config`, `task_context`, `previous_results` and
/// `details`. Key order is preserved.
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// Which way a message travels. `heartbeat` and `error` exist in both directions with
/// different (heartbeat) or identical (error) fields, so a decoder must know the direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sent by a worker's DEALER, received by the orchestrator's ROUTER.
    WorkerToOrchestrator,
    /// Sent by the orchestrator's ROUTER, received by a worker's DEALER.
    OrchestratorToWorker,
}

impl Direction {
    /// The snake_case name used in test vectors: `worker_to_orchestrator` or
    /// `orchestrator_to_worker`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::WorkerToOrchestrator => "worker_to_orchestrator",
            Direction::OrchestratorToWorker => "orchestrator_to_worker",
        }
    }

    /// The direction named by `text` (see [`Direction::as_str`]).
    pub fn parse(text: &str) -> Option<Self> {
        [
            Direction::WorkerToOrchestrator,
            Direction::OrchestratorToWorker,
        ]
        .into_iter()
        .find(|direction| direction.as_str() == text)
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::WorkerToOrchestrator => "worker-to-orchestrator",
            Direction::OrchestratorToWorker => "orchestrator-to-worker",
        })
    }
}

/// A closed set of wire strings. Decoders reject any other value with `invalid_field_value`.
pub(crate) trait WireEnum: Sized + Copy + 'static {
    /// Every value, in declaration order.
    const VALUES: &'static [Self];
    /// The wire string of this value.
    fn wire_name(self) -> &'static str;
    /// The value named by `text`.
    fn from_wire(text: &str) -> Option<Self> {
        Self::VALUES
            .iter()
            .copied()
            .find(|value| value.wire_name() == text)
    }
    /// The allowed values, quoted and comma-separated, for error messages.
    fn allowed() -> String {
        Self::VALUES
            .iter()
            .map(|value| format!("\"{}\"", value.wire_name()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// The value as it appears on the wire.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }
        }

        impl WireEnum for $name {
            const VALUES: &'static [Self] = &[$($name::$variant),+];
            fn wire_name(self) -> &'static str { self.as_str() }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// The outcome of one step attempt, reported in `partial_result` and `step_summaries`.
    StepStatus {
        /// The handler returned normally; `output` holds its result and `error` is null.
        Completed => "completed",
        /// The handler raised or the worker could not run it; `error` says why and whether a
        /// retry may help, and `output` is null.
        Failed => "failed",
    }
);

wire_enum!(
    /// Why the orchestrator asks a worker to stop steps (`cancel_steps.reason`).
    CancelReason {
        /// The step ran past its `timeout_ms`; the orchestrator has failed the attempt.
        Timeout => "timeout",
        /// The step's task was cancelled.
        TaskCancelled => "task_cancelled",
        /// The step alone was cancelled by an operator.
        StepCancelled => "step_cancelled",
        /// The attempt is fenced: the step has been re-dispatched or resolved elsewhere (for
        /// example after this worker was declared dead and came back).
        Superseded => "superseded",
    }
);

wire_enum!(
    /// A worker's own view of its health (`health_reply.status`).
    WorkerHealth {
        /// Running steps normally.
        Healthy => "healthy",
        /// Running, but something is wrong (details in `details`).
        Degraded => "degraded",
        /// Finishing its steps after `goodbye`; accepts no new work.
        Draining => "draining",
    }
);

wire_enum!(
    /// The two kinds of result message a worker holds until acknowledged.
    ResultKind {
        /// A `partial_result` (one step's final result).
        PartialResult => "partial_result",
        /// A `batch_completion`.
        BatchCompletion => "batch_completion",
    }
);

wire_enum!(
    /// What the orchestrator did with an acknowledged result (`result_ack.acks[].outcome`).
    /// Informational: the worker drops the result whatever the outcome.
    AckOutcome {
        /// First receipt; recorded and applied to the step or batch.
        Applied => "applied",
        /// Already recorded from an earlier copy; nothing changed.
        Duplicate => "duplicate",
        /// Recorded but not applied: the batch is no longer the step's current attempt
        /// (timed out, cancelled, worker declared dead, re-dispatched).
        Fenced => "fenced",
        /// Recorded but not applied: it names a batch or step the orchestrator never sent to
        /// this worker, or its `attempt` does not match the dispatch.
        Rejected => "rejected",
    }
);

/// Codes of `hello_rejected`. The wire field is an open string so that newer orchestrators can
/// add codes; [`HelloRejectionCode::parse`] recognises the v1 ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HelloRejectionCode {
    /// The worker's major protocol version is not the orchestrator's. Fatal for the worker.
    UnsupportedProtocolVersion,
    /// The `hello` failed to decode; the message starts with the decode error's code. Fatal.
    InvalidHello,
    /// The orchestrator is shutting down or not accepting workers. Retry later with backoff.
    NotAcceptingWorkers,
}

impl HelloRejectionCode {
    /// The code as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            HelloRejectionCode::UnsupportedProtocolVersion => "unsupported_protocol_version",
            HelloRejectionCode::InvalidHello => "invalid_hello",
            HelloRejectionCode::NotAcceptingWorkers => "not_accepting_workers",
        }
    }

    /// The v1 code named by `text`.
    pub fn parse(text: &str) -> Option<Self> {
        [
            HelloRejectionCode::UnsupportedProtocolVersion,
            HelloRejectionCode::InvalidHello,
            HelloRejectionCode::NotAcceptingWorkers,
        ]
        .into_iter()
        .find(|code| code.as_str() == text)
    }
}

impl fmt::Display for HelloRejectionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of one batch: the unit a worker runs, results and hands back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct StepRef {
    /// The batch the step was dispatched in.
    pub batch_id: Uuid,
    /// The step.
    pub step_id: i64,
}

/// Why a step attempt failed (`partial_result.error`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepError {
    /// Human-readable description; at most [`MAX_TEXT_BYTES`] bytes.
    pub message: String,
    /// The error's class or kind in the handler's language (`"Net::ReadTimeout"`,
    /// `"ValueError"`), or one of the reserved `tasker.*` classes; 1 to [`MAX_NAME_BYTES`] bytes.
    pub error_class: String,
    /// Whether another attempt may succeed. The orchestrator retries only retryable failures,
    /// and only within the step's retry limit.
    pub retryable: bool,
    /// The handler's wish for the delay before the next attempt, overriding the backoff
    /// policy's computed delay. `null` lets the policy decide.
    pub retry_after_ms: Option<u64>,
    /// Stack frames, innermost first; at most [`MAX_BACKTRACE_ENTRIES`] entries of at most
    /// [`MAX_BACKTRACE_ENTRY_BYTES`] bytes each. May be empty.
    pub backtrace: Vec<String>,
}

impl StepError {
    /// Cuts `message`, `error_class` and `backtrace` down to the protocol limits, at character
    /// boundaries. Senders call this before encoding so that a long error never makes its
    /// result undeliverable.
    pub fn fit_to_limits(mut self) -> Self {
        self.message = truncate_to_bytes(&self.message, MAX_TEXT_BYTES).to_owned();
        self.error_class = truncate_to_bytes(&self.error_class, MAX_NAME_BYTES).to_owned();
        self.backtrace.truncate(MAX_BACKTRACE_ENTRIES);
        for frame in &mut self.backtrace {
            if frame.len() > MAX_BACKTRACE_ENTRY_BYTES {
                *frame = truncate_to_bytes(frame, MAX_BACKTRACE_ENTRY_BYTES).to_owned();
            }
        }
        self
    }
}

/// Reserved `error_class` values a worker reports for failures that are not the handler's own.
pub mod reserved_error_class {
    /// The handler's output made the result frame larger than `max_frame_bytes`. Not retryable.
    pub const OUTPUT_TOO_LARGE: &str = "tasker.output_too_large";
    /// The worker has no handler for the step's `handler_class`. Retryable (another worker may).
    pub const UNKNOWN_HANDLER_CLASS: &str = "tasker.unknown_handler_class";
    /// The worker stopped the handler after `timeout_ms`. Retryable.
    pub const TIMEOUT: &str = "tasker.timeout";
    /// The worker stopped the handler because of `cancel_steps`. Not retryable.
    pub const CANCELLED: &str = "tasker.cancelled";
}

/// The key by which results are deduplicated and acknowledged: (batch id, step id, kind).
/// `step_id` is `None` exactly for batch completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResultKey {
    /// The batch the result belongs to.
    pub batch_id: Uuid,
    /// The step, for a partial result.
    pub step_id: Option<i64>,
    /// Which kind of result message.
    pub kind: ResultKind,
}

impl ResultKey {
    /// The key of one step's partial result.
    pub const fn partial_result(batch_id: Uuid, step_id: i64) -> Self {
        Self {
            batch_id,
            step_id: Some(step_id),
            kind: ResultKind::PartialResult,
        }
    }

    /// The key of a batch's completion.
    pub const fn batch_completion(batch_id: Uuid) -> Self {
        Self {
            batch_id,
            step_id: None,
            kind: ResultKind::BatchCompletion,
        }
    }
}

/// Serializes a timestamp in the canonical wire form: RFC 3339, UTC, `Z` suffix, with 0, 3, 6
/// or 9 fractional digits as needed (`2025-01-23T19:57:52.123Z`).
pub(crate) fn serialize_timestamp<S: Serializer>(
    timestamp: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_timestamp(timestamp))
}

/// The canonical wire text of a timestamp (see the spec, "Timestamps").
pub fn format_timestamp(timestamp: &DateTime<Utc>) -> String {
    timestamp.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// `error`: a peer rejected a frame. Same shape in both directions; its four envelope-stable
/// fields (`message_type`, `protocol_version`, `code`, `message`) are readable by any version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorReport {
    /// The version the sender speaks.
    pub protocol_version: crate::ProtocolVersion,
    /// A stable error code (see [`ErrorCode`](crate::ErrorCode)); receivers accept unknown
    /// codes. `[a-z][a-z0-9_]*`, 1–64 bytes.
    pub code: String,
    /// Human-readable description naming the field or reason; 0–16384 bytes.
    pub message: String,
    /// The rejected frame's `message_type`, when it could be read; at most 255 bytes.
    pub offending_message_type: Option<String>,
    /// The rejected frame's `batch_id`, when it could be read as a UUID.
    pub batch_id: Option<Uuid>,
    /// The rejected frame's `step_id`, when it could be read as a step id.
    pub step_id: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_parse_only_their_wire_names() {
        assert_eq!(
            StepStatus::from_wire("completed"),
            Some(StepStatus::Completed)
        );
        assert_eq!(StepStatus::from_wire("Completed"), None);
        assert_eq!(StepStatus::from_wire("error"), None);
        assert_eq!(StepStatus::allowed(), "\"completed\", \"failed\"");
        assert_eq!(
            CancelReason::from_wire("task_cancelled"),
            Some(CancelReason::TaskCancelled)
        );
    }

    #[test]
    fn step_error_is_fitted_to_limits() {
        let error = StepError {
            message: "é".repeat(MAX_TEXT_BYTES),
            error_class: "x".repeat(MAX_NAME_BYTES + 1),
            retryable: true,
            retry_after_ms: None,
            backtrace: vec!["f".repeat(MAX_BACKTRACE_ENTRY_BYTES + 3); MAX_BACKTRACE_ENTRIES + 5],
        }
        .fit_to_limits();
        assert_eq!(error.message.len(), MAX_TEXT_BYTES);
        assert_eq!(error.error_class.len(), MAX_NAME_BYTES);
        assert_eq!(error.backtrace.len(), MAX_BACKTRACE_ENTRIES);
        assert!(
            error
                .backtrace
                .iter()
                .all(|frame| frame.len() == MAX_BACKTRACE_ENTRY_BYTES)
        );
    }

    #[test]
    fn timestamps_use_z_and_minimal_fraction_groups() {
        let parsed = DateTime::parse_from_rfc3339("2025-01-23T21:57:52.1+02:00")
            .expect("valid timestamp")
            .with_timezone(&Utc);
        assert_eq!(format_timestamp(&parsed), "2025-01-23T19:57:52.100Z");
        let whole = DateTime::parse_from_rfc3339("2025-01-23T19:57:52Z")
            .expect("valid timestamp")
            .with_timezone(&Utc);
        assert_eq!(format_timestamp(&whole), "2025-01-23T19:57:52Z");
    }
}
