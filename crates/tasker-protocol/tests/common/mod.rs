//! Shared by the integration tests: the vector and schema directories, vector loading, and one
//! hand-built message of every kind.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use tasker_protocol::{
    AckEntry, AckOutcome, BatchCompletion, CancelReason, CancelSteps, Direction, ErrorReport,
    Goodbye, HealthReply, HealthRequest, Hello, HelloRejected, Limits, OrchestratorHeartbeat,
    OrchestratorMessage, PROTOCOL_VERSION, PartialResult, ProtocolError, ResultAck, ResultKey,
    SdkInfo, StepBatch, StepError, StepMetadata, StepRef, StepRequest, StepStatus, StepSummary,
    Welcome, WorkerHealth, WorkerHeartbeat, WorkerMessage, decode_orchestrator_message,
    decode_worker_message, encode,
};
use uuid::Uuid;

/// `docs/protocol` in the repository.
pub fn protocol_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol")
}

/// A test vector file: its name (file stem) and parsed content.
#[derive(Debug)]
pub struct Vector {
    pub name: String,
    pub body: Value,
}

impl Vector {
    pub fn direction(&self) -> Direction {
        let text = self.body["direction"]
            .as_str()
            .expect("vectors name a direction");
        Direction::parse(text)
            .expect("direction is worker_to_orchestrator or orchestrator_to_worker")
    }

    /// The decode limits: defaults, overridden by the vector's `limits` object.
    pub fn limits(&self) -> Limits {
        let mut limits = Limits::default();
        if let Some(overrides) = self.body.get("limits") {
            if let Some(max) = overrides.get("max_frame_bytes").and_then(Value::as_u64) {
                limits.max_frame_bytes = usize::try_from(max).expect("fits usize");
            }
            if let Some(max) = overrides.get("max_steps_per_batch").and_then(Value::as_u64) {
                limits.max_steps_per_batch = usize::try_from(max).expect("fits usize");
            }
        }
        limits
    }

    /// The frame bytes of an invalid vector (`raw` text or `raw_hex`).
    pub fn raw_frame(&self) -> Vec<u8> {
        if let Some(raw) = self.body.get("raw").and_then(Value::as_str) {
            return raw.as_bytes().to_vec();
        }
        let hex = self.body["raw_hex"]
            .as_str()
            .expect("an invalid vector has raw or raw_hex");
        (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("raw_hex is hex"))
            .collect()
    }
}

/// Every `*.json` vector under `vectors/<kind>`, sorted by name.
pub fn load_vectors(kind: &str) -> Vec<Vector> {
    let dir = protocol_dir().join("vectors").join(kind);
    let mut vectors: Vec<Vector> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("vector is readable UTF-8");
            Vector {
                name: path
                    .file_stem()
                    .expect("file has a name")
                    .to_string_lossy()
                    .into_owned(),
                body: serde_json::from_str(&text)
                    .unwrap_or_else(|error| panic!("{} is not JSON: {error}", path.display())),
            }
        })
        .collect();
    vectors.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!vectors.is_empty(), "no vectors in {}", dir.display());
    vectors
}

/// A decoded message of either direction.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Worker(WorkerMessage),
    Orchestrator(OrchestratorMessage),
}

impl Decoded {
    pub fn message_type(&self) -> &'static str {
        match self {
            Decoded::Worker(message) => message.message_type(),
            Decoded::Orchestrator(message) => message.message_type(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Decoded::Worker(message) => encode(message),
            Decoded::Orchestrator(message) => encode(message),
        }
    }
}

pub fn decode(
    direction: Direction,
    frame: &[u8],
    limits: &Limits,
) -> Result<Decoded, ProtocolError> {
    match direction {
        Direction::WorkerToOrchestrator => {
            decode_worker_message(frame, limits).map(Decoded::Worker)
        }
        Direction::OrchestratorToWorker => {
            decode_orchestrator_message(frame, limits).map(Decoded::Orchestrator)
        }
    }
}

pub fn to_value(frame: &[u8]) -> Value {
    serde_json::from_slice(frame).expect("encoded frames are JSON")
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("sample timestamps are valid")
        .with_timezone(&Utc)
}

fn uuid(text: &str) -> Uuid {
    Uuid::parse_str(text).expect("sample UUIDs are valid")
}

fn object(value: Value) -> tasker_protocol::JsonObject {
    match value {
        Value::Object(map) => map,
        _ => panic!("sample payloads are objects"),
    }
}

const BATCH: &str = "0195b4ba-8d3a-7f12-9c4e-6a1d2b3c4d5e";
const WORKER: &str = "python-worker@host-b:977-0a1b2c3d";

/// One message of every kind a worker sends, named by kind.
pub fn sample_worker_messages() -> Vec<(&'static str, WorkerMessage)> {
    let batch_id = uuid(BATCH);
    vec![
        (
            "hello",
            Hello {
                protocol_version: PROTOCOL_VERSION,
                worker_id: WORKER.to_owned(),
                name: "inventory workers".to_owned(),
                sdk: SdkInfo {
                    name: "tasker-worker-python".to_owned(),
                    version: "0.1.0".to_owned(),
                    language: "python".to_owned(),
                },
                handler_classes: vec![
                    "inventory.reserve".to_owned(),
                    "inventory.release".to_owned(),
                ],
                capacity: 16,
                heartbeat_interval_ms: Some(500),
                in_flight: vec![StepRef {
                    batch_id,
                    step_id: 42,
                }],
            }
            .into(),
        ),
        (
            "worker_heartbeat",
            WorkerHeartbeat {
                protocol_version: PROTOCOL_VERSION,
                worker_id: WORKER.to_owned(),
                in_flight: 2,
                free_capacity: 14,
                timestamp: at("2025-01-23T19:57:52.123Z"),
            }
            .into(),
        ),
        (
            "partial_result",
            PartialResult {
                protocol_version: PROTOCOL_VERSION,
                batch_id,
                step_id: 42,
                attempt: 2,
                status: StepStatus::Failed,
                output: Value::Null,
                error: Some(StepError {
                    message: "warehouse API returned 503".to_owned(),
                    error_class: "requests.HTTPError".to_owned(),
                    retryable: true,
                    retry_after_ms: Some(2000),
                    backtrace: vec!["inventory/reserve.py:31 in call".to_owned()],
                }),
                worker_id: WORKER.to_owned(),
                sequence: 7,
                timestamp: at("2025-01-23T19:57:53.5Z"),
                execution_time_ms: 412,
            }
            .into(),
        ),
        (
            "batch_completion",
            BatchCompletion {
                protocol_version: PROTOCOL_VERSION,
                batch_id,
                total_steps: 2,
                completed_steps: 1,
                failed_steps: 1,
                step_summaries: vec![
                    StepSummary {
                        step_id: 41,
                        status: StepStatus::Completed,
                    },
                    StepSummary {
                        step_id: 42,
                        status: StepStatus::Failed,
                    },
                ],
                completed_at: at("2025-01-23T19:57:53.5Z"),
                worker_id: WORKER.to_owned(),
            }
            .into(),
        ),
        (
            "health_reply",
            HealthReply {
                protocol_version: PROTOCOL_VERSION,
                request_id: uuid("0195b4bc-2a3b-7c4d-9e5f-60718293a4b5"),
                worker_id: WORKER.to_owned(),
                status: WorkerHealth::Degraded,
                in_flight: 16,
                free_capacity: 0,
                uptime_ms: 3_600_000,
                details: Some(object(json!({"reason": "event loop lag 800 ms"}))),
            }
            .into(),
        ),
        (
            "goodbye",
            Goodbye {
                protocol_version: PROTOCOL_VERSION,
                worker_id: WORKER.to_owned(),
                reason: "deploy".to_owned(),
                handed_back: vec![StepRef {
                    batch_id,
                    step_id: 43,
                }],
            }
            .into(),
        ),
        (
            "worker_error",
            WorkerMessage::Error(ErrorReport {
                protocol_version: PROTOCOL_VERSION,
                code: "invalid_json".to_owned(),
                message: "frame is not valid JSON: EOF while parsing an object".to_owned(),
                offending_message_type: None,
                batch_id: None,
                step_id: None,
            }),
        ),
    ]
}

/// One message of every kind the orchestrator sends, named by kind.
pub fn sample_orchestrator_messages() -> Vec<(&'static str, OrchestratorMessage)> {
    let batch_id = uuid(BATCH);
    vec![
        (
            "welcome",
            Welcome {
                protocol_version: PROTOCOL_VERSION,
                worker_id: WORKER.to_owned(),
                orchestrator_id: "orchestrator-1".to_owned(),
                heartbeat_interval_ms: 500,
                liveness: 5,
                max_frame_bytes: 1_048_576,
                max_steps_per_batch: 100,
            }
            .into(),
        ),
        (
            "hello_rejected",
            HelloRejected {
                protocol_version: PROTOCOL_VERSION,
                code: "not_accepting_workers".to_owned(),
                message: "orchestrator is shutting down".to_owned(),
            }
            .into(),
        ),
        (
            "orchestrator_heartbeat",
            OrchestratorHeartbeat {
                protocol_version: PROTOCOL_VERSION,
                orchestrator_id: "orchestrator-1".to_owned(),
                timestamp: at("2025-01-23T19:57:52Z"),
            }
            .into(),
        ),
        (
            "step_batch",
            StepBatch {
                protocol_version: PROTOCOL_VERSION,
                batch_id,
                steps: vec![StepRequest {
                    step_id: 42,
                    task_id: 7,
                    step_name: "reserve_stock".to_owned(),
                    handler_class: "inventory.reserve".to_owned(),
                    handler_config: object(json!({"warehouse": "east"})),
                    task_context: object(
                        json!({"order_id": 12345, "items": [{"sku": "A-1", "qty": 2}]}),
                    ),
                    previous_results: object(json!({"validate_order": {"status": "approved"}})),
                    metadata: StepMetadata {
                        attempt: 2,
                        retry_limit: 3,
                        timeout_ms: Some(30_000),
                        idempotency_key: StepMetadata::idempotency_key_for(42, 2),
                    },
                }],
            }
            .into(),
        ),
        (
            "result_ack",
            ResultAck {
                protocol_version: PROTOCOL_VERSION,
                acks: vec![
                    AckEntry::new(ResultKey::partial_result(batch_id, 42), AckOutcome::Applied),
                    AckEntry::new(ResultKey::batch_completion(batch_id), AckOutcome::Fenced),
                ],
            }
            .into(),
        ),
        (
            "cancel_steps",
            CancelSteps {
                protocol_version: PROTOCOL_VERSION,
                batch_id,
                step_ids: vec![42],
                reason: CancelReason::Superseded,
            }
            .into(),
        ),
        (
            "health_request",
            HealthRequest {
                protocol_version: PROTOCOL_VERSION,
                request_id: uuid("0195b4bc-2a3b-7c4d-9e5f-60718293a4b5"),
                timestamp: at("2025-01-23T19:57:52.123Z"),
            }
            .into(),
        ),
        (
            "orchestrator_error",
            OrchestratorMessage::Error(ErrorReport {
                protocol_version: PROTOCOL_VERSION,
                code: "not_registered".to_owned(),
                message: "send hello first".to_owned(),
                offending_message_type: Some("partial_result".to_owned()),
                batch_id: Some(batch_id),
                step_id: Some(42),
            }),
        ),
    ]
}
