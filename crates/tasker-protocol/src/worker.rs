//! Messages a worker sends to the orchestrator.

use crate::types::{
    ErrorReport, JsonObject, ResultKey, StepError, StepRef, StepStatus, WorkerHealth,
    serialize_timestamp,
};
use crate::version::ProtocolVersion;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// Every message a worker may send, tagged on the wire by `message_type`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "message_type", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// `hello`: register (or re-register after a reconnect).
    Hello(Hello),
    /// `heartbeat`: liveness and load.
    Heartbeat(WorkerHeartbeat),
    /// `partial_result`: the final result of one step of a batch.
    PartialResult(PartialResult),
    /// `batch_completion`: every step of a batch has a partial result.
    BatchCompletion(BatchCompletion),
    /// `health_reply`: answer to `health_request`.
    HealthReply(HealthReply),
    /// `goodbye`: stop sending me work.
    Goodbye(Goodbye),
    /// `error`: a frame from the orchestrator was rejected.
    Error(ErrorReport),
}

impl WorkerMessage {
    /// The wire `message_type` of every worker message, in declaration order.
    pub const MESSAGE_TYPES: &'static [&'static str] = &[
        "hello",
        "heartbeat",
        "partial_result",
        "batch_completion",
        "health_reply",
        "goodbye",
        "error",
    ];

    /// This message's wire `message_type`.
    pub const fn message_type(&self) -> &'static str {
        match self {
            WorkerMessage::Hello(_) => "hello",
            WorkerMessage::Heartbeat(_) => "heartbeat",
            WorkerMessage::PartialResult(_) => "partial_result",
            WorkerMessage::BatchCompletion(_) => "batch_completion",
            WorkerMessage::HealthReply(_) => "health_reply",
            WorkerMessage::Goodbye(_) => "goodbye",
            WorkerMessage::Error(_) => "error",
        }
    }

    /// The `protocol_version` the message carries.
    pub const fn protocol_version(&self) -> ProtocolVersion {
        match self {
            WorkerMessage::Hello(m) => m.protocol_version,
            WorkerMessage::Heartbeat(m) => m.protocol_version,
            WorkerMessage::PartialResult(m) => m.protocol_version,
            WorkerMessage::BatchCompletion(m) => m.protocol_version,
            WorkerMessage::HealthReply(m) => m.protocol_version,
            WorkerMessage::Goodbye(m) => m.protocol_version,
            WorkerMessage::Error(m) => m.protocol_version,
        }
    }

    /// The dedup/ack key, for the two result kinds a worker holds until acknowledged.
    pub const fn result_key(&self) -> Option<ResultKey> {
        match self {
            WorkerMessage::PartialResult(m) => Some(m.key()),
            WorkerMessage::BatchCompletion(m) => Some(m.key()),
            _ => None,
        }
    }
}

/// `hello`: the first message on every connection, and the re-registration after a reconnect.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hello {
    /// The version the worker speaks.
    pub protocol_version: ProtocolVersion,
    /// Chosen by the worker, unique per worker process (a restarted process uses a new id);
    /// 1–128 bytes of `A–Z a–z 0–9 . _ : @ -`.
    pub worker_id: String,
    /// Display name for dashboards and logs; any text, 1–255 bytes.
    pub name: String,
    /// The SDK and language the worker is built with.
    pub sdk: SdkInfo,
    /// The handler classes this worker can run (exact, case-sensitive names); non-empty,
    /// unique, at most 1000.
    pub handler_classes: Vec<String>,
    /// Most steps the worker runs at once (1–10000): the orchestrator's credit limit.
    pub capacity: u32,
    /// The heartbeat interval the worker would like, in milliseconds (100–60000); `null`
    /// accepts the orchestrator's default. The orchestrator's choice is in `welcome`.
    pub heartbeat_interval_ms: Option<u64>,
    /// On a re-hello: the steps this worker still accounts for — running, queued, or holding
    /// an unacknowledged final result. Empty on a first hello.
    pub in_flight: Vec<StepRef>,
}

/// `hello.sdk`: what the worker is built with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SdkInfo {
    /// SDK name, e.g. `"tasker-worker-ruby"`; 1–255 bytes.
    pub name: String,
    /// SDK version, e.g. `"0.1.0"`; 1–255 bytes.
    pub version: String,
    /// Implementation language, e.g. `"ruby"`; 1–255 bytes.
    pub language: String,
}

/// `heartbeat` from a worker: sent every `heartbeat_interval_ms` after `welcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerHeartbeat {
    /// The version the worker speaks.
    pub protocol_version: ProtocolVersion,
    /// The sender.
    pub worker_id: String,
    /// Steps dispatched to this worker that have no final result yet (running or queued).
    pub in_flight: u32,
    /// The worker's own count of free slots (capacity − in_flight). Informational: the
    /// orchestrator computes credit from its own records.
    pub free_capacity: u32,
    /// When the heartbeat was sent.
    #[serde(serialize_with = "serialize_timestamp")]
    pub timestamp: DateTime<Utc>,
}

/// `partial_result`: the final result of one step attempt. Exactly one per step of a batch,
/// unless the step is handed back in `goodbye`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartialResult {
    /// The version the worker speaks.
    pub protocol_version: ProtocolVersion,
    /// The batch the step was dispatched in.
    pub batch_id: Uuid,
    /// The step.
    pub step_id: i64,
    /// Echo of the step's `metadata.attempt`.
    pub attempt: u32,
    /// `completed` or `failed`.
    pub status: StepStatus,
    /// The handler's result (any JSON, including `null`) when completed; `null` when failed.
    pub output: serde_json::Value,
    /// Why the attempt failed; `null` when completed, required when failed.
    pub error: Option<StepError>,
    /// The sender.
    pub worker_id: String,
    /// Per-worker counter of partial results, starting at 1 and increasing by 1 for each new
    /// result; a re-sent result keeps its number. For gap detection and forensics only.
    pub sequence: u64,
    /// When the result was produced.
    #[serde(serialize_with = "serialize_timestamp")]
    pub timestamp: DateTime<Utc>,
    /// How long the handler ran, in milliseconds.
    pub execution_time_ms: u64,
}

impl PartialResult {
    /// The key under which this result is deduplicated and acknowledged.
    pub const fn key(&self) -> ResultKey {
        ResultKey::partial_result(self.batch_id, self.step_id)
    }
}

/// `batch_completion`: sent once every step of a batch has a partial result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchCompletion {
    /// The version the worker speaks.
    pub protocol_version: ProtocolVersion,
    /// The batch.
    pub batch_id: Uuid,
    /// Number of steps in the batch.
    pub total_steps: u32,
    /// Steps whose partial result was `completed`.
    pub completed_steps: u32,
    /// Steps whose partial result was `failed`.
    pub failed_steps: u32,
    /// One entry per step of the batch, in batch order.
    pub step_summaries: Vec<StepSummary>,
    /// When the last step finished.
    #[serde(serialize_with = "serialize_timestamp")]
    pub completed_at: DateTime<Utc>,
    /// The sender.
    pub worker_id: String,
}

impl BatchCompletion {
    /// The key under which this completion is deduplicated and acknowledged.
    pub const fn key(&self) -> ResultKey {
        ResultKey::batch_completion(self.batch_id)
    }
}

/// `batch_completion.step_summaries[]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StepSummary {
    /// The step.
    pub step_id: i64,
    /// The status of its partial result.
    pub status: StepStatus,
}

/// `health_reply`: answer to a `health_request`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReply {
    /// The version the worker speaks.
    pub protocol_version: ProtocolVersion,
    /// Echo of the request's `request_id`.
    pub request_id: Uuid,
    /// The sender.
    pub worker_id: String,
    /// The worker's view of its health.
    pub status: WorkerHealth,
    /// Steps without a final result.
    pub in_flight: u32,
    /// Free slots.
    pub free_capacity: u32,
    /// Milliseconds since the worker process started.
    pub uptime_ms: u64,
    /// Free-form diagnostics (an object), or `null`.
    pub details: Option<JsonObject>,
}

/// `goodbye`: the worker takes no more work. May be sent more than once; each adds hand-backs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Goodbye {
    /// The version the worker speaks.
    pub protocol_version: ProtocolVersion,
    /// The sender.
    pub worker_id: String,
    /// Why, for logs (`"shutdown"`, `"SIGTERM"`); 0–16384 bytes.
    pub reason: String,
    /// Steps the worker will not run and never started: the orchestrator re-dispatches them.
    pub handed_back: Vec<StepRef>,
}
