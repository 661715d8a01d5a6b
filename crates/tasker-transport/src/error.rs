//! The transport's one error type.

use crate::frame::PeerId;

/// Everything that can go wrong when binding, connecting or sending.
///
/// Problems with frames *received* from a peer are not errors of ours: they arrive as
/// [`FrameError`](crate::FrameError) events beside the good frames, so the layer above can answer
/// the peer and count them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The endpoint string cannot be bound or connected: malformed, unknown transport, an address
    /// that is not local, a path that cannot be used.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What ZeroMQ (or our own check) said about it.
        reason: String,
    },
    /// Another socket (or process) is already bound to the endpoint.
    #[error("address already in use: {endpoint:?}")]
    AddressInUse {
        /// The endpoint as given.
        endpoint: String,
    },
    /// The peer is not connected (never was, or has gone): ZeroMQ's `ROUTER_MANDATORY` answered
    /// `EHOSTUNREACH`. The frame was not queued.
    #[error("peer {peer} is not connected")]
    PeerUnreachable {
        /// The routing id the frame was addressed to.
        peer: PeerId,
    },
    /// The peer's outbound queue is at its high-water mark; the frame was not queued. `peer` is
    /// `None` on the worker side, where the only peer is the orchestrator.
    #[error("send queue to {} is full (high-water mark reached)", busy_target(.peer))]
    PeerBusy {
        /// The routing id the frame was addressed to (orchestrator side only).
        peer: Option<PeerId>,
    },
    /// The frame to send is larger than the configured maximum; it was not sent.
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Size of the refused frame in bytes.
        size: usize,
        /// The configured maximum in bytes.
        max: usize,
    },
    /// The frame to send is empty; the protocol has no use for empty frames and peers reject them.
    #[error("refusing to send an empty frame")]
    EmptyFrame,
    /// The options are inconsistent (for example a hard limit below the frame limit).
    #[error("invalid transport options: {0}")]
    InvalidOptions(String),
    /// The socket has been shut down (or its thread has stopped); nothing more can be sent.
    #[error("the transport socket is closed")]
    Closed,
    /// Any other ZeroMQ failure, naming the operation that failed.
    #[error("zeromq {operation} failed: {source}")]
    Socket {
        /// What we were doing (`"bind"`, `"send"`, `"set option"`, …).
        operation: &'static str,
        /// ZeroMQ's error.
        #[source]
        source: zmq::Error,
    },
    /// The OS refused something around the socket (spawning its thread, its wake-up pipe).
    #[error("{operation} failed: {source}")]
    Io {
        /// What we were doing.
        operation: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn busy_target(peer: &Option<PeerId>) -> String {
    match peer {
        Some(peer) => format!("peer {peer}"),
        None => "the orchestrator".to_owned(),
    }
}

impl TransportError {
    /// Wraps a ZeroMQ error of an operation that has no more specific variant.
    pub(crate) fn socket(operation: &'static str) -> impl Fn(zmq::Error) -> Self + Copy {
        move |source| Self::Socket { operation, source }
    }

    /// Maps an error of `bind`/`connect` on `endpoint` to the variant naming its cause.
    pub(crate) fn from_endpoint(
        operation: &'static str,
        endpoint: &str,
        error: zmq::Error,
    ) -> Self {
        match error {
            zmq::Error::EADDRINUSE => Self::AddressInUse {
                endpoint: endpoint.to_owned(),
            },
            zmq::Error::EINVAL
            | zmq::Error::EPROTONOSUPPORT
            | zmq::Error::ENOCOMPATPROTO
            | zmq::Error::ENODEV
            | zmq::Error::EADDRNOTAVAIL
            | zmq::Error::ENAMETOOLONG
            | zmq::Error::ENOENT
            | zmq::Error::EACCES => Self::InvalidEndpoint {
                endpoint: endpoint.to_owned(),
                reason: endpoint_reason(error),
            },
            source => Self::Socket { operation, source },
        }
    }
}

fn endpoint_reason(error: zmq::Error) -> String {
    let hint = match error {
        zmq::Error::EINVAL => {
            "expected tcp://HOST:PORT, ipc:///path or inproc://name (tcp ports may be 0 or *)"
        }
        zmq::Error::EPROTONOSUPPORT => "unknown transport; use tcp://, ipc:// or inproc://",
        zmq::Error::ENOCOMPATPROTO => "transport not usable with this socket type",
        zmq::Error::ENODEV => "no such network interface",
        zmq::Error::EADDRNOTAVAIL => "address is not local to this machine",
        zmq::Error::ENAMETOOLONG => "ipc path too long",
        zmq::Error::ENOENT => "ipc path's directory does not exist",
        zmq::Error::EACCES => "permission denied",
        _ => "",
    };
    if hint.is_empty() {
        error.message().to_owned()
    } else {
        format!("{} ({hint})", error.message())
    }
}
