//! The orchestrator's side: one bound ROUTER socket that every worker connects to.
//!
//! A worker's DEALER sends one frame per message; the ROUTER receives it as
//! `[routing id, payload]` and we hand it on as an [`Inbound`] naming the [`PeerId`]. Replies go
//! to one peer by its routing id. The socket runs with `ZMQ_ROUTER_MANDATORY`, so a frame for a
//! peer that is not connected is an error ([`TransportError::PeerUnreachable`]) rather than
//! ZeroMQ's default silent drop, and every send is non-blocking, so a peer whose queue is full
//! makes the send fail ([`TransportError::PeerBusy`]) instead of stalling the orchestrator.

use std::fmt;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::frame::{check_message, check_outbound};
use crate::options::apply_heartbeat;
use crate::socket_thread::{EventReceiver, Received, SocketDriver, SocketThread, context};
use crate::stats::StatsCounters;
use crate::{
    FrameError, FrameLimits, Heartbeat, PeerId, PendingSend, TransportError, TransportStats,
};

/// Settings of the orchestrator's ROUTER socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterOptions {
    /// Frame size limits, queue lengths and linger.
    pub limits: FrameLimits,
    /// ZMTP heartbeats towards every connected worker (default: on, see [`Heartbeat::default`]),
    /// so a vanished worker's connection is dropped and sends to it fail.
    pub heartbeat: Option<Heartbeat>,
}

impl Default for RouterOptions {
    fn default() -> Self {
        Self {
            limits: FrameLimits::default(),
            heartbeat: Some(Heartbeat::default()),
        }
    }
}

/// A frame received from a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The worker's routing id; send the reply to it.
    pub peer: PeerId,
    /// The frame's bytes.
    pub payload: Vec<u8>,
}

/// What the ROUTER's receiver yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterEvent {
    /// A well-formed frame.
    Message(Inbound),
    /// A message that broke the framing rules; it was dropped and the connection stays up.
    Rejected(FrameError),
}

/// The receiver of the ROUTER's events.
pub type RouterEvents = EventReceiver<RouterEvent>;

/// Binds the orchestrator's ROUTER endpoint.
#[derive(Debug)]
pub struct RouterEndpoint {
    _private: (),
}

impl RouterEndpoint {
    /// Binds a ROUTER socket to `endpoint` (`tcp://HOST:PORT`, `ipc:///path` or `inproc://name`)
    /// and starts its thread. A tcp port of `0` (or `*`) picks a free port: read the real one from
    /// [`RouterHandle::endpoint`].
    ///
    /// Refuses an `ipc://` path another live socket is already bound to (ZeroMQ would silently
    /// take it over) with [`TransportError::AddressInUse`]; a stale socket file left by a dead
    /// process is replaced.
    pub fn bind(
        endpoint: &str,
        options: RouterOptions,
    ) -> Result<(RouterHandle, RouterEvents), TransportError> {
        let max_frame_bytes = options.limits.max_frame_bytes;
        options.limits.hard_limit()?;
        let socket = context()
            .socket(zmq::ROUTER)
            .map_err(TransportError::socket("create socket"))?;
        let option = TransportError::socket("set socket option");
        socket.set_router_mandatory(true).map_err(option)?;
        // A worker that reconnects with the routing id it chose takes over its old connection
        // instead of being ignored while ZeroMQ still holds the old one.
        socket.set_router_handover(true).map_err(option)?;
        options.limits.apply(&socket)?;
        apply_heartbeat(&socket, options.heartbeat)?;
        refuse_live_ipc_path(endpoint)?;
        socket
            .bind(endpoint)
            .map_err(|error| TransportError::from_endpoint("bind", endpoint, error))?;
        let bound = match socket
            .get_last_endpoint()
            .map_err(TransportError::socket("read the bound endpoint"))?
        {
            Ok(bound) if !bound.is_empty() => bound,
            _ => endpoint.to_owned(),
        };
        let stats = Arc::new(StatsCounters::default());
        let driver = RouterDriver {
            socket,
            max_frame_bytes,
            stats: Arc::clone(&stats),
        };
        let (thread, events) =
            SocketThread::spawn("tasker-router", driver, options.limits.inbound_capacity)?;
        tracing::debug!(endpoint = %bound, "router bound");
        let handle = RouterHandle {
            shared: Arc::new(RouterShared {
                thread,
                endpoint: bound,
                max_frame_bytes,
                stats,
            }),
        };
        Ok((handle, events))
    }
}

/// ZeroMQ replaces an existing ipc socket file on bind, even one a live process is listening on.
/// Refuse that case; a file nobody answers on is stale and may be replaced.
fn refuse_live_ipc_path(endpoint: &str) -> Result<(), TransportError> {
    let Some(path) = endpoint.strip_prefix("ipc://") else {
        return Ok(());
    };
    if path.starts_with('@') || !std::path::Path::new(path).exists() {
        return Ok(());
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(TransportError::AddressInUse {
            endpoint: endpoint.to_owned(),
        }),
        Err(_) => Ok(()),
    }
}

/// Sends frames to workers through the bound ROUTER socket. Cheap to clone; the socket is closed
/// when [`RouterHandle::shutdown`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct RouterHandle {
    shared: Arc<RouterShared>,
}

struct RouterShared {
    thread: SocketThread<RouterCommand>,
    endpoint: String,
    max_frame_bytes: usize,
    stats: Arc<StatsCounters>,
}

impl RouterHandle {
    /// Sends one frame to `peer`. The frame is queued for the socket thread before this returns;
    /// await the result to learn whether ZeroMQ took it: [`TransportError::PeerUnreachable`] if the
    /// peer is not connected, [`TransportError::PeerBusy`] if its queue is full,
    /// [`TransportError::FrameTooLarge`]/[`TransportError::EmptyFrame`] for a frame the peer would
    /// reject, [`TransportError::Closed`] after shutdown. Success means queued, not delivered.
    pub fn send(&self, peer: &PeerId, payload: Vec<u8>) -> PendingSend {
        let shared = &self.shared;
        if let Err(error) = check_outbound(payload.len(), shared.max_frame_bytes) {
            shared.stats.send_failed(&error);
            return PendingSend::refused(error);
        }
        let (reply, answer) = oneshot::channel();
        let command = RouterCommand {
            peer: peer.clone(),
            payload,
            reply,
        };
        match shared.thread.submit(command) {
            Ok(()) => PendingSend::waiting(answer),
            Err(error) => {
                shared.stats.send_failed(&error);
                PendingSend::refused(error)
            }
        }
    }

    /// The endpoint actually bound (with the real port when port 0 was asked for), in the form
    /// workers connect to.
    pub fn endpoint(&self) -> &str {
        &self.shared.endpoint
    }

    /// A snapshot of the socket's counters.
    pub fn stats(&self) -> TransportStats {
        self.shared.stats.snapshot()
    }

    /// Whether [`Self::shutdown`] has been called (on any clone).
    pub fn is_closed(&self) -> bool {
        self.shared.thread.is_closed()
    }

    /// Closes the socket and waits for its thread to stop. Later sends fail with
    /// [`TransportError::Closed`]; the receiver yields what was already delivered, then `None`.
    pub async fn shutdown(&self) {
        self.shared.thread.shutdown().await;
    }
}

impl fmt::Debug for RouterHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterHandle")
            .field("endpoint", &self.shared.endpoint)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

struct RouterCommand {
    peer: PeerId,
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<(), TransportError>>,
}

struct RouterDriver {
    socket: zmq::Socket,
    max_frame_bytes: usize,
    stats: Arc<StatsCounters>,
}

impl RouterDriver {
    fn send(&self, peer: PeerId, payload: Vec<u8>) -> Result<(), TransportError> {
        let len = payload.len();
        let refused = |error: zmq::Error, peer: PeerId| match error {
            zmq::Error::EHOSTUNREACH => TransportError::PeerUnreachable { peer },
            zmq::Error::EAGAIN => TransportError::PeerBusy { peer: Some(peer) },
            source => TransportError::Socket {
                operation: "send",
                source,
            },
        };
        // With ROUTER_MANDATORY the routing-id frame is where ZeroMQ checks the peer.
        if let Err(error) = self
            .socket
            .send(peer.as_bytes(), zmq::SNDMORE | zmq::DONTWAIT)
        {
            return Err(refused(error, peer));
        }
        if let Err(error) = self.socket.send(payload, zmq::DONTWAIT) {
            return Err(refused(error, peer));
        }
        self.stats.sent(len);
        Ok(())
    }
}

impl SocketDriver for RouterDriver {
    type Command = RouterCommand;
    type Event = RouterEvent;

    fn socket(&self) -> &zmq::Socket {
        &self.socket
    }

    fn receive(&mut self) -> Result<Received<RouterEvent>, zmq::Error> {
        let mut routing_id = zmq::Message::new();
        match self.socket.recv(&mut routing_id, zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => return Ok(Received::Nothing),
            Err(error) => return Err(error),
        }
        let peer = PeerId::from_bytes(&routing_id);
        // ZeroMQ delivers a message's frames together, so the rest is already here.
        let mut more = routing_id.get_more();
        let mut frames = 0_usize;
        let mut first: Option<zmq::Message> = None;
        while more {
            let mut part = zmq::Message::new();
            self.socket.recv(&mut part, zmq::DONTWAIT)?;
            more = part.get_more();
            frames += 1;
            if first.is_none() {
                first = Some(part);
            }
        }
        let first_len = first.as_ref().map_or(0, |frame| frame.len());
        if let Some(kind) = check_message(frames, first_len, self.max_frame_bytes) {
            self.stats.rejected(kind);
            tracing::debug!(%peer, %kind, "rejected inbound message");
            return Ok(Received::Event(RouterEvent::Rejected(FrameError {
                peer,
                kind,
            })));
        }
        let payload = first.map(|frame| frame.to_vec()).unwrap_or_default();
        self.stats.received(payload.len());
        Ok(Received::Event(RouterEvent::Message(Inbound {
            peer,
            payload,
        })))
    }

    fn execute(&mut self, command: RouterCommand) {
        let RouterCommand {
            peer,
            payload,
            reply,
        } = command;
        let result = self.send(peer, payload);
        if let Err(error) = &result {
            self.stats.send_failed(error);
        }
        // The caller may have stopped waiting; the outcome is counted either way.
        let _ = reply.send(result);
    }
}
