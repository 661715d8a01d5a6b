//! Encoding typed messages into frames.

use crate::orchestrator::{
    CancelSteps, HealthRequest, HelloRejected, OrchestratorHeartbeat, OrchestratorMessage,
    ResultAck, StepBatch, Welcome,
};
use crate::worker::{
    BatchCompletion, Goodbye, HealthReply, Hello, PartialResult, WorkerHeartbeat, WorkerMessage,
};
use serde::Serialize;

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::WorkerMessage {}
    impl Sealed for crate::OrchestratorMessage {}
}

/// A message that can be sent as one frame: [`WorkerMessage`] or [`OrchestratorMessage`].
pub trait WireMessage: Serialize + sealed::Sealed {}
impl WireMessage for WorkerMessage {}
impl WireMessage for OrchestratorMessage {}

/// Encodes a message as the payload of one frame: compact UTF-8 JSON, fields in the spec's
/// order, every field present (optional ones as `null`, lists as `[]`), timestamps in the
/// canonical `…Z` form.
///
/// The caller compares the length with the session's `max_frame_bytes` before sending.
pub fn encode<M: WireMessage>(message: &M) -> Vec<u8> {
    serde_json::to_vec(message)
        .expect("protocol messages have string keys and finite numbers, so they always encode")
}

macro_rules! into_message {
    ($enum:ident { $($variant:ident($ty:ty)),+ $(,)? }) => {
        $(impl From<$ty> for $enum {
            fn from(message: $ty) -> Self {
                $enum::$variant(message)
            }
        })+
    };
}

into_message!(WorkerMessage {
    Hello(Hello),
    Heartbeat(WorkerHeartbeat),
    PartialResult(PartialResult),
    BatchCompletion(BatchCompletion),
    HealthReply(HealthReply),
    Goodbye(Goodbye),
});

into_message!(OrchestratorMessage {
    Welcome(Welcome),
    HelloRejected(HelloRejected),
    Heartbeat(OrchestratorHeartbeat),
    StepBatch(StepBatch),
    ResultAck(ResultAck),
    CancelSteps(CancelSteps),
    HealthRequest(HealthRequest),
});
