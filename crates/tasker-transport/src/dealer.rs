//! A worker's side: one DEALER socket connected to the orchestrator's ROUTER.
//!
//! The worker only connects, never binds. ZeroMQ queues frames sent before the connection is up
//! (up to the send high-water mark) and reconnects by itself after a connection drops, waiting
//! [`DealerOptions::reconnect_interval`] and backing off up to
//! [`DealerOptions::reconnect_interval_max`]. Each completed handshake is reported as
//! [`DealerEvent::Connected`] and each lost connection as [`DealerEvent::Disconnected`] (tcp and
//! ipc; inproc reports neither), so the worker knows when to announce itself again and re-send
//! unacknowledged results.
//!
//! Routing ids: by default the ROUTER gives every new connection a fresh id, so after a reconnect
//! the orchestrator sees a new [`PeerId`](crate::PeerId). Tasker workers must leave
//! [`DealerOptions::routing_id`] unset (protocol spec §2.1: the worker's identity is its
//! `worker_id` in `hello`, never its routing id, because two workers sharing a routing id would
//! silently take each other's connection); the option exists for tests of the transport itself. [`DealerHandle::reconnect`] opens a new connection on demand, with a fresh or
//! a chosen id.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::frame::{check_message, check_outbound};
use crate::options::{apply_heartbeat, millis};
use crate::socket_thread::{EventReceiver, Received, SocketDriver, SocketThread, context};
use crate::stats::StatsCounters;
use crate::{FrameErrorKind, FrameLimits, Heartbeat, PendingSend, TransportError, TransportStats};

/// Settings of a worker's DEALER socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealerOptions {
    /// Frame size limits, queue lengths and linger.
    pub limits: FrameLimits,
    /// ZMTP heartbeats towards the orchestrator (default: on, see [`Heartbeat::default`]), so a
    /// vanished orchestrator's connection is dropped and re-established.
    pub heartbeat: Option<Heartbeat>,
    /// Wait before the first reconnection attempt after a connection drops (`ZMQ_RECONNECT_IVL`,
    /// default 100 ms). Too low hammers an orchestrator that is restarting.
    pub reconnect_interval: Duration,
    /// Upper bound of the exponential backoff between attempts (`ZMQ_RECONNECT_IVL_MAX`, default
    /// 5 s); equal to `reconnect_interval` means no backoff.
    pub reconnect_interval_max: Duration,
    /// A routing id to present to the orchestrator (1 to 255 bytes, not starting with a zero
    /// byte), kept across reconnects. `None` (default) lets the ROUTER assign a fresh id per
    /// connection. Two live workers must never share an id: the newer one takes the connection.
    pub routing_id: Option<Vec<u8>>,
}

impl Default for DealerOptions {
    fn default() -> Self {
        Self {
            limits: FrameLimits::default(),
            heartbeat: Some(Heartbeat::default()),
            reconnect_interval: Duration::from_millis(100),
            reconnect_interval_max: Duration::from_secs(5),
            routing_id: None,
        }
    }
}

/// What a DEALER's receiver yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DealerEvent {
    /// A well-formed frame from the orchestrator.
    Message(Vec<u8>),
    /// A message that broke the framing rules; it was dropped and the connection stays up.
    Rejected(FrameErrorKind),
    /// A connection to the orchestrator completed its handshake (first connect or reconnect).
    Connected,
    /// The connection to the orchestrator was lost; ZeroMQ is reconnecting.
    Disconnected,
}

/// The receiver of a DEALER's events.
pub type DealerEvents = EventReceiver<DealerEvent>;

/// Connects a worker's DEALER socket.
#[derive(Debug)]
pub struct DealerConnection {
    _private: (),
}

impl DealerConnection {
    /// Connects a DEALER socket to the orchestrator's `endpoint` and starts its thread. Succeeds
    /// even if nothing listens there yet: ZeroMQ keeps trying, and frames sent meanwhile wait in
    /// the queue.
    pub fn connect(
        endpoint: &str,
        options: DealerOptions,
    ) -> Result<(DealerHandle, DealerEvents), TransportError> {
        let max_frame_bytes = options.limits.max_frame_bytes;
        let inbound_capacity = options.limits.inbound_capacity;
        let connection = open(endpoint, &options, options.routing_id.as_deref())?;
        let stats = Arc::new(StatsCounters::default());
        let driver = DealerDriver {
            connection,
            endpoint: endpoint.to_owned(),
            options,
            stats: Arc::clone(&stats),
        };
        let (thread, events) = SocketThread::spawn("tasker-dealer", driver, inbound_capacity)?;
        let handle = DealerHandle {
            shared: Arc::new(DealerShared {
                thread,
                endpoint: endpoint.to_owned(),
                max_frame_bytes,
                stats,
            }),
        };
        Ok((handle, events))
    }
}

/// A DEALER socket and the PAIR socket that receives its connection events.
struct Connection {
    socket: zmq::Socket,
    monitor: zmq::Socket,
}

/// Numbers the inproc endpoints of connection monitors, which must be unique per process.
static MONITORS: AtomicU64 = AtomicU64::new(0);

fn fresh_monitor_endpoint() -> String {
    format!(
        "inproc://tasker-transport-dealer-monitor-{}",
        MONITORS.fetch_add(1, Ordering::Relaxed)
    )
}

impl Drop for Connection {
    /// Detaches the monitor before the sockets close. libzmq's I/O thread delivers connection
    /// events to the monitor with a blocking send; if our reading end is already closed when a
    /// peer disconnects, that send never returns and every socket of the process freezes. A
    /// replacement monitor that watches no events is never sent anything.
    fn drop(&mut self) {
        if let Err(error) = self.socket.monitor(&fresh_monitor_endpoint(), 0) {
            tracing::debug!(%error, "could not detach the connection monitor");
        }
    }
}

/// Creates, configures and connects a DEALER socket.
fn open(
    endpoint: &str,
    options: &DealerOptions,
    routing_id: Option<&[u8]>,
) -> Result<Connection, TransportError> {
    let option = TransportError::socket("set socket option");
    let socket = context()
        .socket(zmq::DEALER)
        .map_err(TransportError::socket("create socket"))?;
    options.limits.apply(&socket)?;
    apply_heartbeat(&socket, options.heartbeat)?;
    socket
        .set_reconnect_ivl(millis(options.reconnect_interval))
        .map_err(option)?;
    socket
        .set_reconnect_ivl_max(millis(options.reconnect_interval_max))
        .map_err(option)?;
    if let Some(id) = routing_id {
        if id.is_empty() || id.len() > 255 || id[0] == 0 {
            return Err(TransportError::InvalidOptions(
                "routing_id must be 1 to 255 bytes and must not start with a zero byte".to_owned(),
            ));
        }
        socket.set_identity(id).map_err(option)?;
    }
    let monitor_endpoint = fresh_monitor_endpoint();
    let watched = i32::from(zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw())
        | i32::from(zmq::SocketEvent::DISCONNECTED.to_raw());
    socket
        .monitor(&monitor_endpoint, watched)
        .map_err(TransportError::socket("monitor"))?;
    let monitor = context()
        .socket(zmq::PAIR)
        .map_err(TransportError::socket("create socket"))?;
    monitor
        .connect(&monitor_endpoint)
        .map_err(TransportError::socket("connect monitor"))?;
    socket
        .connect(endpoint)
        .map_err(|error| TransportError::from_endpoint("connect", endpoint, error))?;
    Ok(Connection { socket, monitor })
}

/// Sends frames to the orchestrator. Cheap to clone; the socket is closed when
/// [`DealerHandle::shutdown`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct DealerHandle {
    shared: Arc<DealerShared>,
}

struct DealerShared {
    thread: SocketThread<DealerCommand>,
    endpoint: String,
    max_frame_bytes: usize,
    stats: Arc<StatsCounters>,
}

impl DealerHandle {
    /// Sends one frame to the orchestrator. The frame is queued for the socket thread before this
    /// returns; await the result to learn whether ZeroMQ took it: [`TransportError::PeerBusy`]
    /// when the queue is at its high-water mark (the orchestrator is unreachable or not reading),
    /// [`TransportError::FrameTooLarge`]/[`TransportError::EmptyFrame`] for a frame the
    /// orchestrator would reject, [`TransportError::Closed`] after shutdown. Success means queued,
    /// not delivered.
    pub fn send(&self, payload: Vec<u8>) -> PendingSend {
        let shared = &self.shared;
        if let Err(error) = check_outbound(payload.len(), shared.max_frame_bytes) {
            shared.stats.send_failed(&error);
            return PendingSend::refused(error);
        }
        let (reply, answer) = oneshot::channel();
        match shared.thread.submit(DealerCommand::Send { payload, reply }) {
            Ok(()) => PendingSend::waiting(answer),
            Err(error) => {
                shared.stats.send_failed(&error);
                PendingSend::refused(error)
            }
        }
    }

    /// Replaces the connection with a new one to the same endpoint. With `routing_id: None` the
    /// orchestrator sees the new connection under a fresh id; with `Some(id)` under that id.
    /// Frames still queued on the old connection are dropped after the linger period.
    pub async fn reconnect(&self, routing_id: Option<Vec<u8>>) -> Result<(), TransportError> {
        let (reply, answer) = oneshot::channel();
        self.shared
            .thread
            .submit(DealerCommand::Reconnect { routing_id, reply })?;
        answer.await.unwrap_or(Err(TransportError::Closed))
    }

    /// The endpoint this socket connects to.
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

impl fmt::Debug for DealerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DealerHandle")
            .field("endpoint", &self.shared.endpoint)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

enum DealerCommand {
    Send {
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<(), TransportError>>,
    },
    Reconnect {
        routing_id: Option<Vec<u8>>,
        reply: oneshot::Sender<Result<(), TransportError>>,
    },
}

struct DealerDriver {
    connection: Connection,
    endpoint: String,
    options: DealerOptions,
    stats: Arc<StatsCounters>,
}

impl DealerDriver {
    fn send(&self, payload: Vec<u8>) -> Result<(), TransportError> {
        let len = payload.len();
        self.connection
            .socket
            .send(payload, zmq::DONTWAIT)
            .map_err(|error| match error {
                zmq::Error::EAGAIN => TransportError::PeerBusy { peer: None },
                source => TransportError::Socket {
                    operation: "send",
                    source,
                },
            })?;
        self.stats.sent(len);
        Ok(())
    }
}

impl SocketDriver for DealerDriver {
    type Command = DealerCommand;
    type Event = DealerEvent;

    fn socket(&self) -> &zmq::Socket {
        &self.connection.socket
    }

    fn monitor(&self) -> Option<&zmq::Socket> {
        Some(&self.connection.monitor)
    }

    fn receive(&mut self) -> Result<Received<DealerEvent>, zmq::Error> {
        let socket = &self.connection.socket;
        let mut first = zmq::Message::new();
        match socket.recv(&mut first, zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => return Ok(Received::Nothing),
            Err(error) => return Err(error),
        }
        // ZeroMQ delivers a message's frames together, so the rest is already here.
        let mut more = first.get_more();
        let mut frames = 1_usize;
        while more {
            let mut part = zmq::Message::new();
            socket.recv(&mut part, zmq::DONTWAIT)?;
            more = part.get_more();
            frames += 1;
        }
        let max = self.options.limits.max_frame_bytes;
        if let Some(kind) = check_message(frames, first.len(), max) {
            self.stats.rejected(kind);
            tracing::debug!(%kind, "rejected inbound message");
            return Ok(Received::Event(DealerEvent::Rejected(kind)));
        }
        self.stats.received(first.len());
        Ok(Received::Event(DealerEvent::Message(first.to_vec())))
    }

    fn receive_monitor(&mut self) -> Result<Received<DealerEvent>, zmq::Error> {
        let monitor = &self.connection.monitor;
        let mut header = zmq::Message::new();
        match monitor.recv(&mut header, zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => return Ok(Received::Nothing),
            Err(error) => return Err(error),
        }
        let mut more = header.get_more();
        while more {
            let mut part = zmq::Message::new();
            monitor.recv(&mut part, zmq::DONTWAIT)?;
            more = part.get_more();
        }
        // The first frame starts with the event number as a native-endian u16.
        let event = match header.get(..2) {
            Some(&[low, high]) => u16::from_ne_bytes([low, high]),
            _ => return Ok(Received::Ignored),
        };
        if event == zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw() {
            Ok(Received::Event(DealerEvent::Connected))
        } else if event == zmq::SocketEvent::DISCONNECTED.to_raw() {
            Ok(Received::Event(DealerEvent::Disconnected))
        } else {
            Ok(Received::Ignored)
        }
    }

    fn execute(&mut self, command: DealerCommand) {
        match command {
            DealerCommand::Send { payload, reply } => {
                let result = self.send(payload);
                if let Err(error) = &result {
                    self.stats.send_failed(error);
                }
                let _ = reply.send(result);
            }
            DealerCommand::Reconnect { routing_id, reply } => {
                let result = open(&self.endpoint, &self.options, routing_id.as_deref())
                    .map(|connection| self.connection = connection);
                let _ = reply.send(result);
            }
        }
    }
}
