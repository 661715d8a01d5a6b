//! Tasker's ZeroMQ transport: moves raw byte frames between the orchestrator and its workers.
//!
//! It knows nothing about the database or about what the frames mean; the layer above turns
//! frames into protocol messages (`tasker-protocol`) and feeds them to the engine. Layers, from
//! the wire inward: ZeroMQ frames (here) → typed messages → engine.
//!
//! The pattern (DESIGN §2): the orchestrator binds **one ROUTER** endpoint; every worker connects
//! a **DEALER**. Only the orchestrator binds. Every message is exactly one frame: a worker sends
//! `[payload]`, the ROUTER receives `[routing id, payload]`, the orchestrator replies
//! `[routing id, payload]` and the worker receives `[payload]`. Messages with more frames, empty
//! frames and frames above the size limit are reported as events, never crash anything.
//!
//! Modules:
//! - [`router`]: the orchestrator's bound ROUTER socket ([`RouterEndpoint::bind`]).
//! - [`dealer`]: a worker's connected DEALER socket ([`DealerConnection::connect`]).
//! - [`frame`]: routing ids ([`PeerId`]) and the framing rules and their errors.
//! - [`options`]: limits, queue lengths, heartbeats shared by both roles.
//! - [`stats`]: counters for metrics ([`TransportStats`]).
//! - [`error`]: [`TransportError`], the crate's one error type.
//!
//! # Threads, not `tmq`
//!
//! ZeroMQ sockets are not thread-safe. Each socket is owned by one dedicated OS thread that blocks
//! in `zmq::poll` over the socket and the read end of an OS pipe; async code queues commands on a
//! channel and writes one byte to the pipe to wake the thread (at most one byte is ever pending).
//! A pipe rather than an inproc PAIR socket, because the writing end is shared by every task that
//! sends, and a PAIR socket could not be. Received frames go to a bounded tokio channel; each send
//! gets ZeroMQ's verdict back through a oneshot (see the `socket_thread` module). We chose this over `tmq` because every send must report ZeroMQ's
//! verdict (`EHOSTUNREACH` from `ROUTER_MANDATORY`, `EAGAIN` at the high-water mark) to *its*
//! caller, and a `Sink` of multipart messages reports errors only to whoever flushes next; owning
//! the socket on one thread also makes the poll loop, backpressure and shutdown explicit. The cost
//! is one thread per socket (a process has one or two) and a channel hop per frame.
//!
//! # Frame size: checked by us, with ZeroMQ's limit as a backstop
//!
//! `ZMQ_MAXMSGSIZE` alone would disconnect an offending peer without telling anyone, so the
//! orchestrator could neither answer nor count it. We read frames up to
//! [`FrameLimits::hard_max_frame_bytes`] (default four times the limit) and report those above
//! [`FrameLimits::max_frame_bytes`] as [`FrameErrorKind::TooLarge`]; only frames above the hard
//! limit hit `ZMQ_MAXMSGSIZE` and cost the peer its connection, which bounds memory per frame.
//!
//! # Limits
//!
//! Unix only (the wake-up uses an OS pipe). No CURVE encryption yet: the vendored libzmq is built
//! without it, so tcp endpoints should stay on trusted networks. All sockets share one process-wide
//! ZeroMQ context, which is what lets `inproc://` endpoints reach each other.

pub mod dealer;
pub mod error;
pub mod frame;
pub mod options;
mod pending_send;
pub mod router;
mod socket_thread;
pub mod stats;

pub use dealer::{DealerConnection, DealerEvent, DealerEvents, DealerHandle, DealerOptions};
pub use error::TransportError;
pub use frame::{FrameError, FrameErrorKind, PeerId};
pub use options::{DEFAULT_MAX_FRAME_BYTES, FrameLimits, Heartbeat};
pub use pending_send::PendingSend;
pub use router::{Inbound, RouterEndpoint, RouterEvent, RouterEvents, RouterHandle, RouterOptions};
pub use socket_thread::EventReceiver;
pub use stats::TransportStats;
