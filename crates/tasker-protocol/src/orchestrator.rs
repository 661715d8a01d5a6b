//! Messages the orchestrator sends to a worker.

use crate::types::{
    AckOutcome, CancelReason, ErrorReport, JsonObject, ResultKey, ResultKind, serialize_timestamp,
};
use crate::version::ProtocolVersion;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// Every message the orchestrator may send, tagged on the wire by `message_type`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "message_type", rename_all = "snake_case")]
pub enum OrchestratorMessage {
    /// `welcome`: the worker is registered; here are the session parameters.
    Welcome(Welcome),
    /// `hello_rejected`: the worker may not register.
    HelloRejected(HelloRejected),
    /// `heartbeat`: the orchestrator is alive.
    Heartbeat(OrchestratorHeartbeat),
    /// `step_batch`: steps to run.
    StepBatch(StepBatch),
    /// `result_ack`: these results are committed; drop them.
    ResultAck(ResultAck),
    /// `cancel_steps`: stop these steps.
    CancelSteps(CancelSteps),
    /// `health_request`: reply with `health_reply`.
    HealthRequest(HealthRequest),
    /// `error`: a frame from the worker was rejected.
    Error(ErrorReport),
}

impl OrchestratorMessage {
    /// The wire `message_type` of every orchestrator message, in declaration order.
    pub const MESSAGE_TYPES: &'static [&'static str] = &[
        "welcome",
        "hello_rejected",
        "heartbeat",
        "step_batch",
        "result_ack",
        "cancel_steps",
        "health_request",
        "error",
    ];

    /// This message's wire `message_type`.
    pub const fn message_type(&self) -> &'static str {
        match self {
            OrchestratorMessage::Welcome(_) => "welcome",
            OrchestratorMessage::HelloRejected(_) => "hello_rejected",
            OrchestratorMessage::Heartbeat(_) => "heartbeat",
            OrchestratorMessage::StepBatch(_) => "step_batch",
            OrchestratorMessage::ResultAck(_) => "result_ack",
            OrchestratorMessage::CancelSteps(_) => "cancel_steps",
            OrchestratorMessage::HealthRequest(_) => "health_request",
            OrchestratorMessage::Error(_) => "error",
        }
    }

    /// The `protocol_version` the message carries.
    pub const fn protocol_version(&self) -> ProtocolVersion {
        match self {
            OrchestratorMessage::Welcome(m) => m.protocol_version,
            OrchestratorMessage::HelloRejected(m) => m.protocol_version,
            OrchestratorMessage::Heartbeat(m) => m.protocol_version,
            OrchestratorMessage::StepBatch(m) => m.protocol_version,
            OrchestratorMessage::ResultAck(m) => m.protocol_version,
            OrchestratorMessage::CancelSteps(m) => m.protocol_version,
            OrchestratorMessage::HealthRequest(m) => m.protocol_version,
            OrchestratorMessage::Error(m) => m.protocol_version,
        }
    }
}

/// `welcome`: the answer to an accepted `hello`, fixing the session's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Welcome {
    /// The version the orchestrator speaks. The session uses the lower of the two minors.
    pub protocol_version: ProtocolVersion,
    /// Echo of the worker's `worker_id`, confirming the registration.
    pub worker_id: String,
    /// The orchestrator instance; same rules as a worker id.
    pub orchestrator_id: String,
    /// Interval at which both sides send heartbeats, in milliseconds (100–60000).
    pub heartbeat_interval_ms: u64,
    /// Intervals of silence after which either side declares the other dead (1–100).
    pub liveness: u32,
    /// Largest frame either side may send on this session (65536–67108864).
    pub max_frame_bytes: u64,
    /// Most steps the orchestrator puts in one batch (1–1000).
    pub max_steps_per_batch: u32,
}

/// `hello_rejected`: the worker may not register. Its fields are stable across major versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HelloRejected {
    /// The version the orchestrator speaks.
    pub protocol_version: ProtocolVersion,
    /// Why (see [`HelloRejectionCode`](crate::HelloRejectionCode)); an open set.
    pub code: String,
    /// Human-readable explanation; for a version mismatch it names both versions.
    pub message: String,
}

/// `heartbeat` from the orchestrator: sent every `heartbeat_interval_ms` to each registered
/// worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrchestratorHeartbeat {
    /// The version the orchestrator speaks.
    pub protocol_version: ProtocolVersion,
    /// The sender.
    pub orchestrator_id: String,
    /// When the heartbeat was sent.
    #[serde(serialize_with = "serialize_timestamp")]
    pub timestamp: DateTime<Utc>,
}

/// `step_batch`: one dispatch of one or more steps to one worker. Every dispatch of a step is a
/// new batch with a new `batch_id` and a new attempt number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepBatch {
    /// The version the orchestrator speaks.
    pub protocol_version: ProtocolVersion,
    /// Unique id of this dispatch: a UUID in lowercase hyphenated form (v7 recommended).
    pub batch_id: Uuid,
    /// The steps; 1 to `max_steps_per_batch`, distinct `step_id`s.
    pub steps: Vec<StepRequest>,
}

/// `step_batch.steps[]`: everything a handler needs to run one step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRequest {
    /// The step (≥ 1).
    pub step_id: i64,
    /// Its task (≥ 1).
    pub task_id: i64,
    /// The step's name in the task template; 1–255 bytes.
    pub step_name: String,
    /// The handler to run; one of the worker's `handler_classes`; 1–255 bytes.
    pub handler_class: String,
    /// The step's `handler_config` from the template (an object, possibly empty).
    pub handler_config: JsonObject,
    /// The task's context (an object).
    pub task_context: JsonObject,
    /// Outputs of the step's ancestors, keyed by step name (an object, possibly empty).
    pub previous_results: JsonObject,
    /// Attempt, retry and timeout information.
    pub metadata: StepMetadata,
}

/// `step_batch.steps[].metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepMetadata {
    /// Which dispatch of the step this is: 1 for the first, +1 for every new batch.
    pub attempt: u32,
    /// The step's configured retry limit (informational; only the orchestrator decides retries).
    pub retry_limit: u32,
    /// How long the handler may run, in milliseconds (≥ 1), or `null` for no limit.
    pub timeout_ms: Option<u64>,
    /// Exactly `"<step_id>:<attempt>"`: stable for this attempt, different for the next.
    pub idempotency_key: String,
}

impl StepMetadata {
    /// The idempotency key the protocol requires for `step_id` and `attempt`.
    pub fn idempotency_key_for(step_id: i64, attempt: u32) -> String {
        format!("{step_id}:{attempt}")
    }
}

/// `result_ack`: results committed by the orchestrator; the worker drops each one named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResultAck {
    /// The version the orchestrator speaks.
    pub protocol_version: ProtocolVersion,
    /// The acknowledged results; non-empty.
    pub acks: Vec<AckEntry>,
}

/// `result_ack.acks[]`: one acknowledged result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AckEntry {
    /// The result's batch.
    pub batch_id: Uuid,
    /// `partial_result` or `batch_completion`.
    pub message_kind: ResultKind,
    /// The step, for a partial result; `null` for a batch completion.
    pub step_id: Option<i64>,
    /// What the orchestrator did with it.
    pub outcome: AckOutcome,
}

impl AckEntry {
    /// The acknowledgement of the result with `key`.
    pub const fn new(key: ResultKey, outcome: AckOutcome) -> Self {
        Self {
            batch_id: key.batch_id,
            message_kind: key.kind,
            step_id: key.step_id,
            outcome,
        }
    }

    /// The key of the acknowledged result.
    pub const fn key(&self) -> ResultKey {
        ResultKey {
            batch_id: self.batch_id,
            step_id: self.step_id,
            kind: self.message_kind,
        }
    }
}

/// `cancel_steps`: stop these steps of one batch. The worker still sends a final partial
/// result for each of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CancelSteps {
    /// The version the orchestrator speaks.
    pub protocol_version: ProtocolVersion,
    /// The batch.
    pub batch_id: Uuid,
    /// Steps of that batch; non-empty, distinct.
    pub step_ids: Vec<i64>,
    /// Why.
    pub reason: CancelReason,
}

/// `health_request`: the worker answers with `health_reply` from its I/O loop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthRequest {
    /// The version the orchestrator speaks.
    pub protocol_version: ProtocolVersion,
    /// Correlates the reply.
    pub request_id: Uuid,
    /// When the request was sent.
    #[serde(serialize_with = "serialize_timestamp")]
    pub timestamp: DateTime<Utc>,
}
