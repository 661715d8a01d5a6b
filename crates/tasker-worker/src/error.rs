//! The crate's one error type.

use tasker_transport::TransportError;

/// Why a [`Worker`](crate::Worker) could not start or stopped without being asked to.
///
/// A worker survives everything a session can throw at it (lost connections, a silent
/// orchestrator, malformed frames, panicking handlers); it stops with an error only when going on
/// cannot help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The options or the registry break a rule of the protocol (an empty registry, a worker id
    /// with characters the protocol forbids, a capacity of 0, …). Nothing was connected.
    #[error("invalid worker options: {0}")]
    InvalidOptions(String),
    /// The orchestrator refused to register the worker with a code that retrying cannot fix
    /// (`unsupported_protocol_version`, `invalid_hello`, or a code this SDK does not know).
    #[error("the orchestrator rejected this worker's hello ({code}): {message}")]
    HelloRejected {
        /// The `hello_rejected` code, e.g. `unsupported_protocol_version`.
        code: String,
        /// The orchestrator's explanation.
        message: String,
    },
    /// The DEALER socket could not be created or connected, or stopped unexpectedly.
    #[error("transport failure: {0}")]
    Transport(#[from] TransportError),
    /// The socket's event stream ended although nobody shut the worker down.
    #[error("the connection to the orchestrator closed unexpectedly")]
    ConnectionClosed,
}
