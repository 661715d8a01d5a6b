//! Tasker worker protocol v1: the messages exchanged between the orchestrator and its workers,
//! how they are validated, and their limits. No I/O: the transport moves frames, this crate
//! turns frames into typed messages and back. The normative text is `docs/protocol/spec.md`;
//! the same test vectors (`docs/protocol/vectors/`) check this crate and the Python and Ruby
//! SDKs.
//!
//! - [`version`]: [`ProtocolVersion`] and [`PROTOCOL_VERSION`] (`"1.0"`).
//! - [`limits`]: per-deployment [`Limits`] (frame size, batch size) and the fixed limits.
//! - [`worker`]: [`WorkerMessage`], everything a worker sends.
//! - [`orchestrator`]: [`OrchestratorMessage`], everything the orchestrator sends.
//! - [`types`]: values shared by several messages (step references, step errors, result keys,
//!   closed enumerations).
//! - [`error`]: [`ProtocolError`] and the stable [`ErrorCode`]s.
//! - [`decode_worker_message`] / [`decode_orchestrator_message`]: frame → message, in the
//!   spec's validation order; [`encode`]: message → frame.
//! - [`reply`]: what to send back for a rejected frame.

pub mod error;
pub mod limits;
pub mod orchestrator;
pub mod reply;
pub mod types;
pub mod version;
pub mod worker;

mod decode;
mod encode;
mod fields;

pub use decode::{decode_orchestrator_message, decode_worker_message};
pub use encode::{WireMessage, encode};
pub use error::{ErrorCode, ProtocolError};
pub use limits::Limits;
pub use orchestrator::{
    AckEntry, CancelSteps, HealthRequest, HelloRejected, OrchestratorHeartbeat,
    OrchestratorMessage, ResultAck, StepBatch, StepMetadata, StepRequest, Welcome,
};
pub use reply::{
    RejectedFrame, reply_to_rejected_worker_frame, report_rejected_orchestrator_frame,
};
pub use types::{
    AckOutcome, CancelReason, Direction, ErrorReport, HelloRejectionCode, JsonObject, ResultKey,
    ResultKind, StepError, StepRef, StepStatus, WorkerHealth, reserved_error_class,
};
pub use version::{PROTOCOL_VERSION, ProtocolVersion};
pub use worker::{
    BatchCompletion, Goodbye, HealthReply, Hello, PartialResult, SdkInfo, StepSummary,
    WorkerHeartbeat, WorkerMessage,
};
