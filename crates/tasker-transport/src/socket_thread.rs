//! The OS thread that owns one ZeroMQ socket, and the channels between it and async code.
//!
//! ZeroMQ sockets must only be used from one thread at a time. Each socket therefore lives on its
//! own thread, which blocks in `zmq::poll` on two things: the socket itself, and the read end of an
//! OS pipe that the async side writes one byte into to say "there are commands for you". Commands
//! (send a frame, shut down, …) travel over a std channel; each send carries a oneshot that the
//! thread answers with ZeroMQ's verdict. Received frames go the other way over a bounded tokio
//! channel.
//!
//! Backpressure: when that channel is full the thread keeps the one event it could not deliver,
//! stops reading the socket (so ZeroMQ's receive high-water mark, and below it TCP, push back on
//! the peer) and carries on executing commands, so a consumer that awaits a send before reading
//! cannot deadlock. The receiving side wakes the thread through the same pipe once it has made
//! room. Nothing here spins or sleeps.

use std::fmt;
use std::io::{PipeReader, PipeWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread::JoinHandle;

use tokio::sync::{mpsc as async_mpsc, oneshot};

use crate::TransportError;

/// How many messages the thread reads in a row before it looks at its commands again.
const READ_BATCH: usize = 256;

/// The process-wide ZeroMQ context. One context is what lets `inproc://` endpoints meet; it is
/// never terminated, so a socket's linger period runs in the background after it is closed.
pub(crate) fn context() -> &'static zmq::Context {
    static CONTEXT: OnceLock<zmq::Context> = OnceLock::new();
    CONTEXT.get_or_init(zmq::Context::new)
}

/// What a socket's thread does with the socket. One implementation per socket role.
pub(crate) trait SocketDriver: Send + 'static {
    /// Commands from the handle (sends and the like).
    type Command: Send + 'static;
    /// What the thread delivers to the receiver.
    type Event: Send + 'static;

    /// The socket to read messages from.
    fn socket(&self) -> &zmq::Socket;

    /// A second socket to read from, if any (a connection monitor).
    fn monitor(&self) -> Option<&zmq::Socket> {
        None
    }

    /// Reads one message from [`Self::socket`] without blocking.
    fn receive(&mut self) -> Result<Received<Self::Event>, zmq::Error>;

    /// Reads one event from [`Self::monitor`] without blocking.
    fn receive_monitor(&mut self) -> Result<Received<Self::Event>, zmq::Error> {
        Ok(Received::Nothing)
    }

    /// Carries out one command, answering its caller if it has one.
    fn execute(&mut self, command: Self::Command);
}

/// The outcome of one non-blocking read.
pub(crate) enum Received<E> {
    /// Nothing was waiting.
    Nothing,
    /// Something was read that the receiver does not need to see.
    Ignored,
    /// An event for the receiver.
    Event(E),
}

/// What the async side asks of the thread.
enum Control<C> {
    Run(C),
    Shutdown(Option<oneshot::Sender<()>>),
}

/// The pipe that wakes the thread out of `zmq::poll`.
///
/// `armed` is true while a byte is (or is about to be) in the pipe, so at most one byte is ever
/// waiting and writers never block.
struct WakeSignal {
    armed: AtomicBool,
    reader: PipeReader,
    writer: PipeWriter,
}

impl WakeSignal {
    fn new() -> Result<Self, TransportError> {
        let (reader, writer) = std::io::pipe().map_err(|source| TransportError::Io {
            operation: "creating the wake-up pipe",
            source,
        })?;
        Ok(Self {
            armed: AtomicBool::new(false),
            reader,
            writer,
        })
    }

    fn wake(&self) {
        if !self.armed.swap(true, Ordering::AcqRel) {
            // The reader lives as long as this struct, so the write cannot fail with EPIPE; a
            // full pipe is impossible (one byte at most).
            if let Err(error) = (&self.writer).write(&[1]) {
                tracing::error!(%error, "could not wake a transport socket thread");
            }
        }
    }

    /// Called by the thread when `poll` says the pipe is readable: consumes the byte and disarms,
    /// after which every command queued before the next `wake` is visible to the thread.
    fn acknowledge(&self) {
        let mut buffer = [0_u8; 16];
        if let Err(error) = (&self.reader).read(&mut buffer) {
            tracing::error!(%error, "could not read a transport wake-up pipe");
        }
        self.armed.swap(false, Ordering::AcqRel);
    }
}

/// The thread's side of a socket.
struct ThreadSide<D: SocketDriver> {
    driver: D,
    commands: mpsc::Receiver<Control<D::Command>>,
    wake: Arc<WakeSignal>,
    events: async_mpsc::Sender<D::Event>,
    /// Set while the thread holds an event the full channel would not take.
    stalled: Arc<AtomicBool>,
    consumer_gone: bool,
}

impl<D: SocketDriver> ThreadSide<D> {
    fn run(mut self) {
        let mut pending: Option<D::Event> = None;
        loop {
            let interest = if pending.is_none() {
                zmq::POLLIN
            } else {
                zmq::PollEvents::empty()
            };
            let readiness = match self.poll(interest) {
                Ok(readiness) => readiness,
                Err(zmq::Error::EINTR) => continue,
                Err(error) => {
                    tracing::error!(%error, "transport socket poll failed; closing the socket");
                    return;
                }
            };
            if readiness.woken {
                self.wake.acknowledge();
            }
            loop {
                match self.commands.try_recv() {
                    Ok(Control::Run(command)) => self.driver.execute(command),
                    Ok(Control::Shutdown(done)) => {
                        drop(self);
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                        return;
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
            if let Some(event) = pending.take() {
                pending = self.deliver(event);
                if pending.is_some() {
                    continue;
                }
            }
            if readiness.socket {
                pending = self.read_batch(D::receive);
            }
            if readiness.monitor && pending.is_none() {
                pending = self.read_batch(D::receive_monitor);
            }
        }
    }

    fn poll(&self, interest: zmq::PollEvents) -> Result<Readiness, zmq::Error> {
        let wake = zmq::PollItem::from_fd(self.wake.reader.as_raw_fd(), zmq::POLLIN);
        let socket = self.driver.socket().as_poll_item(interest);
        match self.driver.monitor() {
            Some(monitor) => {
                let mut items = [wake, socket, monitor.as_poll_item(interest)];
                zmq::poll(&mut items, -1)?;
                Ok(Readiness {
                    woken: items[0].is_readable(),
                    socket: items[1].is_readable(),
                    monitor: items[2].is_readable(),
                })
            }
            None => {
                let mut items = [wake, socket];
                zmq::poll(&mut items, -1)?;
                Ok(Readiness {
                    woken: items[0].is_readable(),
                    socket: items[1].is_readable(),
                    monitor: false,
                })
            }
        }
    }

    /// Reads and delivers up to [`READ_BATCH`] events; returns the one the channel refused, if any.
    fn read_batch(
        &mut self,
        read: fn(&mut D) -> Result<Received<D::Event>, zmq::Error>,
    ) -> Option<D::Event> {
        for _ in 0..READ_BATCH {
            match read(&mut self.driver) {
                Ok(Received::Event(event)) => {
                    if let Some(refused) = self.deliver(event) {
                        return Some(refused);
                    }
                }
                Ok(Received::Ignored) => {}
                Ok(Received::Nothing) => return None,
                Err(error) => {
                    tracing::warn!(%error, "transport socket receive failed");
                    return None;
                }
            }
        }
        None
    }

    /// Hands an event to the receiver; gives it back if the channel is full.
    fn deliver(&mut self, event: D::Event) -> Option<D::Event> {
        if self.consumer_gone {
            return None;
        }
        let event = match self.events.try_send(event) {
            Ok(()) => return None,
            Err(async_mpsc::error::TrySendError::Closed(_)) => {
                self.note_consumer_gone();
                return None;
            }
            Err(async_mpsc::error::TrySendError::Full(event)) => event,
        };
        // Announce the stall, then try once more: either this retry sees the room the receiver
        // just made, or the receiver sees the flag and wakes us (both sides fence).
        self.stalled.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        match self.events.try_send(event) {
            Ok(()) => {
                self.stalled.store(false, Ordering::SeqCst);
                None
            }
            Err(async_mpsc::error::TrySendError::Closed(_)) => {
                self.note_consumer_gone();
                None
            }
            Err(async_mpsc::error::TrySendError::Full(event)) => Some(event),
        }
    }

    fn note_consumer_gone(&mut self) {
        self.consumer_gone = true;
        tracing::debug!("transport receiver dropped; discarding further inbound frames");
    }
}

struct Readiness {
    woken: bool,
    socket: bool,
    monitor: bool,
}

/// The async side's hold on a socket thread: queues commands and wakes the thread. Dropping it
/// shuts the thread down and joins it.
pub(crate) struct SocketThread<C> {
    commands: mpsc::Sender<Control<C>>,
    wake: Arc<WakeSignal>,
    closed: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<C: Send + 'static> SocketThread<C> {
    /// Starts a thread named `name` running `driver`; returns the handle side and the receiver of
    /// its events (a channel of `capacity` events).
    pub(crate) fn spawn<D>(
        name: &str,
        driver: D,
        capacity: usize,
    ) -> Result<(Self, EventReceiver<D::Event>), TransportError>
    where
        D: SocketDriver<Command = C>,
    {
        let wake = Arc::new(WakeSignal::new()?);
        let (command_tx, command_rx) = mpsc::channel();
        let (event_tx, event_rx) = async_mpsc::channel(capacity.max(1));
        let stalled = Arc::new(AtomicBool::new(false));
        let side = ThreadSide {
            driver,
            commands: command_rx,
            wake: Arc::clone(&wake),
            events: event_tx,
            stalled: Arc::clone(&stalled),
            consumer_gone: false,
        };
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || side.run())
            .map_err(|source| TransportError::Io {
                operation: "spawning the socket thread",
                source,
            })?;
        let receiver = EventReceiver {
            inner: event_rx,
            stalled,
            wake: Arc::clone(&wake),
        };
        Ok((
            Self {
                commands: command_tx,
                wake,
                closed: AtomicBool::new(false),
                thread: Mutex::new(Some(thread)),
            },
            receiver,
        ))
    }

    /// Queues a command for the thread. Fails when the socket is closed.
    pub(crate) fn submit(&self, command: C) -> Result<(), TransportError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(TransportError::Closed);
        }
        self.commands
            .send(Control::Run(command))
            .map_err(|_| TransportError::Closed)?;
        self.wake.wake();
        Ok(())
    }

    /// Closes the socket and waits for its thread to finish. Idempotent.
    pub(crate) async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let (done_tx, done_rx) = oneshot::channel();
        if self.commands.send(Control::Shutdown(Some(done_tx))).is_ok() {
            self.wake.wake();
            // An error only means the thread was already gone.
            let _ = done_rx.await;
        }
        self.join();
    }

    /// Whether [`Self::shutdown`] has been called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn join(&self) {
        let thread = match self.thread.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("a transport socket thread panicked");
        }
    }
}

impl<C> Drop for SocketThread<C> {
    fn drop(&mut self) {
        let thread = match self.thread.get_mut() {
            Ok(thread) => thread.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(thread) = thread {
            // Closing a ZeroMQ socket does not block (its linger runs in the context's I/O
            // thread), so this join is short.
            if self.commands.send(Control::Shutdown(None)).is_ok() {
                self.wake.wake();
            }
            if thread.join().is_err() {
                tracing::error!("a transport socket thread panicked");
            }
        }
    }
}

impl<C> fmt::Debug for SocketThread<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketThread")
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Receives what a socket's thread delivers: frames, rejected frames, connection events.
///
/// Bounded: while it is full the socket stops reading and ZeroMQ's receive high-water mark pushes
/// back on the peer. Yields `None` once the socket is shut down and everything delivered before
/// has been received.
pub struct EventReceiver<E> {
    inner: async_mpsc::Receiver<E>,
    stalled: Arc<AtomicBool>,
    wake: Arc<WakeSignal>,
}

impl<E> EventReceiver<E> {
    /// Waits for the next event. `None` when the socket is closed and drained.
    pub async fn recv(&mut self) -> Option<E> {
        let event = self.inner.recv().await;
        self.made_room();
        event
    }

    /// Takes the next event if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<E> {
        let event = self.inner.try_recv().ok();
        if event.is_some() {
            self.made_room();
        }
        event
    }

    /// Waits for the next event from synchronous code. Panics if called inside an async runtime
    /// (as tokio's `blocking_recv` does).
    pub fn blocking_recv(&mut self) -> Option<E> {
        let event = self.inner.blocking_recv();
        self.made_room();
        event
    }

    /// Wakes the socket thread if it stopped reading because this channel was full.
    fn made_room(&self) {
        fence(Ordering::SeqCst);
        if self.stalled.load(Ordering::SeqCst) && self.stalled.swap(false, Ordering::SeqCst) {
            self.wake.wake();
        }
    }
}

impl<E> Drop for EventReceiver<E> {
    /// A thread stalled on this (full) receiver would otherwise wait for room that never comes:
    /// close the channel first so its retry fails, then wake it to discard from now on.
    fn drop(&mut self) {
        self.inner.close();
        if self.stalled.swap(false, Ordering::SeqCst) {
            self.wake.wake();
        }
    }
}

impl<E> fmt::Debug for EventReceiver<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventReceiver")
            .field("waiting", &self.inner.len())
            .field("stalled", &self.stalled.load(Ordering::Relaxed))
            .finish()
    }
}
