//! [`Worker`]: one session with the orchestrator, from `hello` to `goodbye`, and the loop that
//! runs the steps it receives.
//!
//! # One loop
//!
//! Everything happens on the task that awaits [`Worker::run`]: inbound frames, heartbeats,
//! timers, and the handlers' futures, which live in a `FuturesUnordered` polled by the same
//! `select!`. So when that loop is stuck (a handler blocking its thread), heartbeats stop too and
//! the orchestrator rightly declares the worker dead. CPU-bound or blocking handlers must use
//! `tokio::task::spawn_blocking`.
//!
//! # Session life cycle
//!
//! 1. Connect the DEALER and send `hello` (handler classes, capacity, SDK info, and on a
//!    re-registration every step this worker still accounts for).
//! 2. Wait for `welcome`, sending nothing else meanwhile (steps keep running; their results are
//!    held). `hello_rejected` with `not_accepting_workers` is retried with backoff; any other
//!    code ends [`Worker::run`] with [`WorkerError::HelloRejected`]. No answer within the hello
//!    timeout ([`WorkerOptions::welcome_timeout`]): open a fresh connection and say `hello` again,
//!    waiting twice as long each time up to [`WorkerOptions::retry_backoff_max`]. (The spec
//!    allows re-sending on the same socket; a fresh socket with linger 0 also discards the
//!    `hello`s that pile up in ZeroMQ's queue while no orchestrator listens.)
//! 3. Registered: heartbeat every negotiated interval; run steps (at most `capacity` at once, the
//!    rest queued); send a `partial_result` per finished step and a `batch_completion` per
//!    finished batch; hold each until a `result_ack` names it, re-sending it when it waited
//!    `liveness` intervals. After a transport reconnect, an orchestrator `not_registered` error
//!    (at most once per hello timeout), or `liveness` intervals without a word from the
//!    orchestrator (then on a fresh socket): back to 1 with `in_flight` listing every step still
//!    accounted for, then re-send every held result in the order first sent.
//! 4. Shutdown: send `goodbye` handing back the steps not started, let running steps finish
//!    within the grace period (then stop them and report retryable failures), wait a bounded
//!    time for the last acknowledgements, close.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::{Value, json};
use tasker_protocol::limits::{DEFAULT_HEARTBEAT_INTERVAL_MS, DEFAULT_LIVENESS};
use tasker_protocol::{
    BatchCompletion, CancelReason, CancelSteps, ErrorCode, ErrorReport, Goodbye, HealthReply,
    HealthRequest, Hello, HelloRejected, HelloRejectionCode, Limits, OrchestratorMessage,
    PROTOCOL_VERSION, PartialResult, ResultAck, ResultKey, SdkInfo, StepBatch, StepError, StepRef,
    StepRequest, StepStatus, StepSummary, Welcome, WorkerHealth, WorkerHeartbeat, WorkerMessage,
    decode_orchestrator_message, encode, report_rejected_orchestrator_frame, reserved_error_class,
};
use tasker_transport::{
    DealerConnection, DealerEvent, DealerEvents, DealerHandle, FrameErrorKind, TransportError,
};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::WorkerError;
use crate::execution::{FinishedStep, StepEnd, StepFuture, execute};
use crate::handler::{PANIC_ERROR_CLASS, StepContext};
use crate::options::WorkerOptions;
use crate::outbox::Outbox;
use crate::registry::HandlerRegistry;

/// The SDK name announced in `hello`.
pub const SDK_NAME: &str = "tasker-worker-rust";
/// The SDK language announced in `hello`.
pub const SDK_LANGUAGE: &str = "rust";
/// The SDK version announced in `hello` (this crate's version).
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The `error_class` of a step that was still running when a shutdown's grace period ended. It is
/// reported as a retryable failure: the handler started (it may have had effects), so the attempt
/// counts, but another attempt elsewhere may well succeed.
pub const WORKER_SHUTDOWN_ERROR_CLASS: &str = "tasker.worker_shutdown";

/// The `reason` of the `goodbye` sent on shutdown.
const GOODBYE_REASON: &str = "shutdown";

/// A worker: connects to the orchestrator, registers its handlers and runs the steps it is sent
/// until told to shut down. See the [module documentation](self) for the session's life cycle.
///
/// ```no_run
/// # async fn example() -> Result<(), tasker_worker::WorkerError> {
/// use tasker_worker::{Worker, WorkerOptions, builtin};
///
/// let worker = Worker::new(WorkerOptions::new("tcp://127.0.0.1:5555"))?;
/// worker
///     .run(builtin::registry(), async {
///         let _ = tokio::signal::ctrl_c().await;
///     })
///     .await
/// # }
/// ```
#[derive(Debug)]
pub struct Worker {
    options: WorkerOptions,
    counters: Arc<Counters>,
    started: Instant,
}

impl Worker {
    /// A worker with `options`, checked against the protocol's rules. Nothing is connected until
    /// [`run`](Self::run).
    ///
    /// # Errors
    ///
    /// [`WorkerError::InvalidOptions`] naming the first field that breaks a rule.
    pub fn new(options: WorkerOptions) -> Result<Self, WorkerError> {
        options.validate()?;
        Ok(Self {
            options,
            counters: Arc::new(Counters::default()),
            started: Instant::now(),
        })
    }

    /// The id this worker registers with.
    pub fn worker_id(&self) -> &str {
        &self.options.worker_id
    }

    /// A cheap, clonable view of the running worker: its id and counters.
    pub fn handle(&self) -> WorkerHandle {
        WorkerHandle {
            worker_id: Arc::from(self.options.worker_id.as_str()),
            counters: Arc::clone(&self.counters),
        }
    }

    /// Connects, registers `registry`'s handler classes and runs steps until `shutdown`
    /// completes; then shuts down gracefully (see [`WorkerOptions::shutdown_grace`] and
    /// [`WorkerOptions::shutdown_ack_timeout`]) and returns `Ok(())`.
    ///
    /// # Errors
    ///
    /// - [`WorkerError::InvalidOptions`]: the registry is empty or has a class name the protocol
    ///   does not allow.
    /// - [`WorkerError::HelloRejected`]: the orchestrator refused this worker for good (for
    ///   example a protocol version mismatch).
    /// - [`WorkerError::Transport`] / [`WorkerError::ConnectionClosed`]: the socket could not be
    ///   opened or stopped working.
    pub async fn run<S>(self, registry: HandlerRegistry, shutdown: S) -> Result<(), WorkerError>
    where
        S: Future<Output = ()>,
    {
        check_registry(&registry)?;
        let (dealer, mut events) =
            DealerConnection::connect(&self.options.endpoint, self.options.dealer.clone())?;
        tracing::info!(
            worker_id = %self.options.worker_id,
            endpoint = %self.options.endpoint,
            handler_classes = ?registry.handler_classes(),
            capacity = self.options.capacity,
            "worker starting"
        );
        let mut session = Session::new(self, registry, dealer);
        let outcome = session.run_loop(&mut events, shutdown).await;
        session.dealer.shutdown().await;
        session.counters.registered.store(false, Ordering::Relaxed);
        match &outcome {
            Ok(()) => tracing::info!(worker_id = %session.worker_id(), "worker stopped"),
            Err(error) => {
                tracing::error!(worker_id = %session.worker_id(), %error, "worker failed")
            }
        }
        outcome
    }
}

/// Checks the registry against the protocol's limits for `hello.handler_classes`.
fn check_registry(registry: &HandlerRegistry) -> Result<(), WorkerError> {
    use tasker_protocol::limits::{MAX_HANDLER_CLASSES, MAX_NAME_BYTES};
    if registry.is_empty() {
        return Err(WorkerError::InvalidOptions(
            "the handler registry is empty; register at least one handler class".to_owned(),
        ));
    }
    if registry.len() > MAX_HANDLER_CLASSES {
        return Err(WorkerError::InvalidOptions(format!(
            "{} handler classes registered; the protocol allows at most {MAX_HANDLER_CLASSES}",
            registry.len()
        )));
    }
    if let Some(bad) = registry
        .handler_classes()
        .into_iter()
        .find(|class| class.is_empty() || class.len() > MAX_NAME_BYTES)
    {
        return Err(WorkerError::InvalidOptions(format!(
            "handler class {bad:?} must be 1 to {MAX_NAME_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A cheap-to-clone view of a [`Worker`]: its id, whether it is registered, and its counters.
#[derive(Clone)]
pub struct WorkerHandle {
    worker_id: Arc<str>,
    counters: Arc<Counters>,
}

impl WorkerHandle {
    /// The worker's id.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Whether the worker currently has a session (`welcome` received and not lost since).
    pub fn is_registered(&self) -> bool {
        self.counters.registered.load(Ordering::Relaxed)
    }

    /// A snapshot of the worker's counters.
    pub fn stats(&self) -> WorkerStats {
        self.counters.snapshot()
    }
}

impl fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("worker_id", &self.worker_id)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Counters of a worker since it started, for logs, metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Step attempts whose handler was started.
    pub steps_started: u64,
    /// Partial results sent with status `completed`.
    pub steps_completed: u64,
    /// Partial results sent with status `failed` (handler failures, panics, timeouts,
    /// cancellations, unknown handler classes, shutdown).
    pub steps_failed: u64,
    /// Steps handed back in a `goodbye` without being started.
    pub steps_handed_back: u64,
    /// Batch completions sent.
    pub batches_completed: u64,
    /// Held results sent again after a (re)registration or a failed send.
    pub results_resent: u64,
    /// Results acknowledged by the orchestrator.
    pub results_acknowledged: u64,
    /// Results currently held, awaiting acknowledgement.
    pub results_unacknowledged: u64,
    /// Frames from the orchestrator that were rejected: malformed JSON, unknown message types,
    /// invalid fields, bad framing. Each is logged and answered with an `error`.
    pub rejected_frames: u64,
    /// `error` messages received from the orchestrator.
    pub errors_received: u64,
    /// `hello`s sent (the first one and every re-registration).
    pub hellos_sent: u64,
    /// Fresh connections opened by the worker (silent orchestrator, missing welcome).
    pub reconnects: u64,
    /// Heartbeats sent.
    pub heartbeats_sent: u64,
}

#[derive(Debug, Default)]
struct Counters {
    registered: AtomicBool,
    steps_started: AtomicU64,
    steps_completed: AtomicU64,
    steps_failed: AtomicU64,
    steps_handed_back: AtomicU64,
    batches_completed: AtomicU64,
    results_resent: AtomicU64,
    results_acknowledged: AtomicU64,
    results_unacknowledged: AtomicU64,
    rejected_frames: AtomicU64,
    errors_received: AtomicU64,
    hellos_sent: AtomicU64,
    reconnects: AtomicU64,
    heartbeats_sent: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WorkerStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WorkerStats {
            steps_started: read(&self.steps_started),
            steps_completed: read(&self.steps_completed),
            steps_failed: read(&self.steps_failed),
            steps_handed_back: read(&self.steps_handed_back),
            batches_completed: read(&self.batches_completed),
            results_resent: read(&self.results_resent),
            results_acknowledged: read(&self.results_acknowledged),
            results_unacknowledged: read(&self.results_unacknowledged),
            rejected_frames: read(&self.rejected_frames),
            errors_received: read(&self.errors_received),
            hellos_sent: read(&self.hellos_sent),
            reconnects: read(&self.reconnects),
            heartbeats_sent: read(&self.heartbeats_sent),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Where the worker stands with the orchestrator.
#[derive(Debug, Clone, Copy)]
enum Link {
    /// `hello` sent; waiting for `welcome` until `deadline`.
    AwaitingWelcome { deadline: Instant },
    /// The transport lost its connection; `hello` goes out when it is back.
    Disconnected,
    /// The orchestrator is not accepting workers; try again at `at`.
    RetryAt { at: Instant },
    /// `welcome` received: the session is up.
    Registered,
}

/// A step this worker accounts for that has no final result yet.
#[derive(Debug)]
struct StepSlot {
    attempt: u32,
    state: SlotState,
}

#[derive(Debug)]
enum SlotState {
    /// Waiting for a free slot; never started.
    Queued(Box<StepRequest>),
    /// The handler's future is in the loop.
    Running {
        token: CancellationToken,
        interruption: Option<Interruption>,
    },
}

/// Why the worker stopped a running step.
#[derive(Debug, Clone, Copy)]
enum Interruption {
    /// The orchestrator's `cancel_steps`.
    Cancelled(CancelReason),
    /// The shutdown grace period ended.
    Shutdown,
}

/// One batch whose steps are not all accounted for yet.
#[derive(Debug)]
struct BatchProgress {
    /// Step ids in batch order.
    order: Vec<i64>,
    /// Statuses of the steps that have a final result.
    statuses: HashMap<i64, StepStatus>,
    /// Steps neither finished nor handed back.
    remaining: usize,
    /// Some step was handed back: the batch gets no completion (it cannot account for every
    /// step).
    handed_back: bool,
}

/// The graceful shutdown in progress.
#[derive(Debug)]
struct Drain {
    grace_deadline: Instant,
    grace_expired: bool,
    ack_deadline: Option<Instant>,
    ack_expired: bool,
}

/// The outcome of one step attempt, ready to be reported.
enum Outcome {
    Completed(Value),
    Failed(StepError),
}

type ResultSend = Pin<Box<dyn Future<Output = (ResultKey, Result<(), TransportError>)> + Send>>;

struct Session {
    options: WorkerOptions,
    counters: Arc<Counters>,
    started: Instant,
    registry: HandlerRegistry,
    dealer: DealerHandle,
    link: Link,
    registration_attempts: u32,
    limits: Limits,
    heartbeat_period: Duration,
    liveness: u32,
    last_contact: Instant,
    heartbeat: Interval,
    steps: HashMap<StepRef, StepSlot>,
    queue: VecDeque<StepRef>,
    running: FuturesUnordered<StepFuture>,
    batches: HashMap<Uuid, BatchProgress>,
    outbox: Outbox,
    result_sends: FuturesUnordered<ResultSend>,
    next_sequence: u64,
    drain: Option<Drain>,
    /// Hand-backs decided while unregistered, sent in the `goodbye` after the next `welcome`.
    pending_hand_backs: Vec<StepRef>,
    last_hello_at: Instant,
}

impl Session {
    fn new(worker: Worker, registry: HandlerRegistry, dealer: DealerHandle) -> Self {
        let heartbeat_period = worker
            .options
            .heartbeat_interval
            .unwrap_or(Duration::from_millis(DEFAULT_HEARTBEAT_INTERVAL_MS));
        let now = Instant::now();
        Self {
            link: Link::AwaitingWelcome {
                deadline: now + worker.options.welcome_timeout,
            },
            options: worker.options,
            counters: worker.counters,
            started: worker.started,
            registry,
            dealer,
            registration_attempts: 0,
            limits: Limits::default(),
            heartbeat_period,
            liveness: DEFAULT_LIVENESS,
            last_contact: now,
            heartbeat: new_heartbeat(heartbeat_period),
            steps: HashMap::new(),
            queue: VecDeque::new(),
            running: FuturesUnordered::new(),
            batches: HashMap::new(),
            outbox: Outbox::default(),
            result_sends: FuturesUnordered::new(),
            next_sequence: 1,
            drain: None,
            pending_hand_backs: Vec::new(),
            last_hello_at: now,
        }
    }

    fn worker_id(&self) -> &str {
        &self.options.worker_id
    }

    async fn run_loop<S: Future<Output = ()>>(
        &mut self,
        events: &mut DealerEvents,
        shutdown: S,
    ) -> Result<(), WorkerError> {
        let mut shutdown = std::pin::pin!(shutdown);
        // One timer for every deadline (welcome, retry, shutdown grace, acknowledgement wait),
        // re-armed for the nearest one each turn.
        let mut timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        self.send_hello();
        loop {
            let deadline = self.next_deadline();
            if let Some(deadline) = deadline
                && timer.deadline() != deadline
            {
                timer.as_mut().reset(deadline);
            }
            let draining = self.drain.is_some();
            let registered = matches!(self.link, Link::Registered);
            tokio::select! {
                () = &mut shutdown, if !draining => self.begin_drain(),
                event = events.recv() => match event {
                    Some(event) => self.on_transport_event(event).await?,
                    None => return Err(WorkerError::ConnectionClosed),
                },
                Some(finished) = self.running.next(), if !self.running.is_empty() => {
                    self.on_step_finished(finished);
                }
                Some((key, result)) = self.result_sends.next(), if !self.result_sends.is_empty() => {
                    self.on_result_send(key, result);
                }
                _ = self.heartbeat.tick(), if registered => self.on_heartbeat_tick().await?,
                () = &mut timer, if deadline.is_some() => self.on_deadline().await?,
            }
            self.start_queued_steps();
            if self.drain_finished() {
                return Ok(());
            }
        }
    }

    // ----- the link to the orchestrator -----

    fn send(&self, message: impl Into<WorkerMessage>) {
        let message = message.into();
        // The outcome is counted in the transport's stats; results, which matter, are tracked
        // separately (see `track_send`).
        drop(self.dealer.send(encode(&message)));
    }

    /// Sends `message` only on a live session: while awaiting `welcome` a worker sends nothing
    /// but `hello` (spec §7.1).
    fn send_if_registered(&self, message: impl Into<WorkerMessage>) {
        if matches!(self.link, Link::Registered) {
            self.send(message);
        }
    }

    fn in_flight_refs(&self) -> Vec<StepRef> {
        let mut refs: Vec<StepRef> = self
            .steps
            .keys()
            .copied()
            .chain(self.outbox.held_steps())
            .collect();
        refs.sort_by_key(|step| (step.batch_id, step.step_id));
        refs.dedup();
        refs
    }

    fn send_hello(&mut self) {
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            worker_id: self.options.worker_id.clone(),
            name: self.options.name.clone(),
            sdk: SdkInfo {
                name: SDK_NAME.to_owned(),
                version: SDK_VERSION.to_owned(),
                language: SDK_LANGUAGE.to_owned(),
            },
            handler_classes: self.registry.handler_classes(),
            capacity: self.options.capacity,
            heartbeat_interval_ms: self.options.heartbeat_interval.map(duration_ms),
            in_flight: self.in_flight_refs(),
        };
        tracing::debug!(in_flight = hello.in_flight.len(), "sending hello");
        self.send(hello);
        bump(&self.counters.hellos_sent);
        self.last_hello_at = Instant::now();
        self.set_unregistered(Link::AwaitingWelcome {
            deadline: Instant::now() + self.welcome_wait(),
        });
    }

    /// How long to wait for `welcome`: the welcome timeout, doubled for every failed attempt, up
    /// to the retry backoff maximum.
    fn welcome_wait(&self) -> Duration {
        backoff(
            self.options.welcome_timeout,
            self.registration_attempts,
            self.options
                .retry_backoff_max
                .max(self.options.welcome_timeout),
        )
    }

    fn set_unregistered(&mut self, link: Link) {
        if matches!(self.link, Link::Registered) {
            self.outbox.mark_all_unsent();
        }
        self.link = link;
        self.counters.registered.store(false, Ordering::Relaxed);
    }

    /// Opens a fresh connection and says `hello` on it.
    async fn reconnect(&mut self) -> Result<(), WorkerError> {
        self.registration_attempts = self.registration_attempts.saturating_add(1);
        bump(&self.counters.reconnects);
        // A fresh socket (linger 0) and a fresh routing identity, as spec §7.4 asks.
        self.dealer.reconnect(None).await?;
        self.send_hello();
        Ok(())
    }

    async fn on_transport_event(&mut self, event: DealerEvent) -> Result<(), WorkerError> {
        match event {
            DealerEvent::Message(frame) => self.on_frame(&frame).await,
            DealerEvent::Rejected(kind) => {
                bump(&self.counters.rejected_frames);
                tracing::warn!(%kind, "rejected a frame from the orchestrator");
                let code = match kind {
                    FrameErrorKind::TooLarge { .. } => ErrorCode::FrameTooLarge,
                    FrameErrorKind::Multipart { .. } => ErrorCode::MultipartMessage,
                    FrameErrorKind::Empty => ErrorCode::InvalidJson,
                };
                self.send_if_registered(WorkerMessage::Error(ErrorReport {
                    protocol_version: PROTOCOL_VERSION,
                    code: code.as_str().to_owned(),
                    message: kind.to_string(),
                    offending_message_type: None,
                    batch_id: None,
                    step_id: None,
                }));
                Ok(())
            }
            DealerEvent::Connected => {
                tracing::debug!("connected to the orchestrator");
                if matches!(self.link, Link::Disconnected) {
                    self.send_hello();
                }
                Ok(())
            }
            DealerEvent::Disconnected => {
                tracing::info!("lost the connection to the orchestrator; ZeroMQ is reconnecting");
                if matches!(self.link, Link::Registered | Link::AwaitingWelcome { .. }) {
                    self.set_unregistered(Link::Disconnected);
                }
                Ok(())
            }
        }
    }

    async fn on_frame(&mut self, frame: &[u8]) -> Result<(), WorkerError> {
        let message = match decode_orchestrator_message(frame, &self.limits) {
            Ok(message) => message,
            Err(error) => {
                bump(&self.counters.rejected_frames);
                tracing::warn!(code = %error.code(), %error, "rejected a frame from the orchestrator");
                if let Some(report) = report_rejected_orchestrator_frame(frame, &error) {
                    self.send_if_registered(WorkerMessage::Error(report));
                }
                return Ok(());
            }
        };
        self.last_contact = Instant::now();
        match message {
            OrchestratorMessage::Welcome(welcome) => self.on_welcome(welcome),
            OrchestratorMessage::HelloRejected(rejected) => {
                return self.on_hello_rejected(rejected);
            }
            OrchestratorMessage::Heartbeat(_) => {}
            OrchestratorMessage::StepBatch(batch) => self.on_step_batch(batch),
            OrchestratorMessage::ResultAck(ack) => self.on_result_ack(&ack),
            OrchestratorMessage::CancelSteps(cancel) => self.on_cancel_steps(&cancel),
            OrchestratorMessage::HealthRequest(request) => self.on_health_request(&request),
            OrchestratorMessage::Error(report) => self.on_error_report(&report),
        }
        Ok(())
    }

    fn on_welcome(&mut self, welcome: Welcome) {
        if welcome.worker_id != self.options.worker_id {
            tracing::warn!(
                echoed = %welcome.worker_id,
                "welcome names another worker id; ignoring it"
            );
            return;
        }
        self.limits = Limits::from_welcome(&welcome);
        self.liveness = welcome.liveness;
        let period = Duration::from_millis(welcome.heartbeat_interval_ms);
        let was_registered = matches!(self.link, Link::Registered);
        if period != self.heartbeat_period || !was_registered {
            self.heartbeat_period = period;
            self.heartbeat = new_heartbeat(period);
        }
        if was_registered {
            tracing::debug!("repeated welcome; session parameters refreshed");
            return;
        }
        tracing::info!(
            orchestrator_id = %welcome.orchestrator_id,
            heartbeat_interval_ms = welcome.heartbeat_interval_ms,
            liveness = welcome.liveness,
            held_results = self.outbox.len(),
            "registered with the orchestrator"
        );
        self.link = Link::Registered;
        self.registration_attempts = 0;
        self.counters.registered.store(true, Ordering::Relaxed);
        if self.drain.is_some() {
            // A new session does not know we are leaving: say it again. Steps handed back
            // earlier are no longer in `in_flight`, so the orchestrator re-dispatches them
            // whether or not the first goodbye arrived.
            let handed_back = std::mem::take(&mut self.pending_hand_backs);
            self.send_goodbye(handed_back);
        }
        self.flush_outbox(None);
    }

    /// Sends, oldest first, every held result not yet sent on this session and, with
    /// `stale_before`, every one last sent before it (spec §9.3).
    fn flush_outbox(&mut self, stale_before: Option<Instant>) {
        let now = Instant::now();
        let mut sends = Vec::new();
        for held in self.outbox.iter_mut() {
            let due = match (held.last_sent, stale_before) {
                (None, _) => true,
                (Some(sent), Some(limit)) => sent < limit,
                (Some(_), None) => false,
            };
            if due {
                if held.ever_sent {
                    bump(&self.counters.results_resent);
                }
                held.last_sent = Some(now);
                held.ever_sent = true;
                sends.push((held.key, held.frame.clone()));
            }
        }
        for (key, frame) in sends {
            self.track_send(key, frame);
        }
    }

    fn track_send(&mut self, key: ResultKey, frame: Vec<u8>) {
        let pending = self.dealer.send(frame);
        self.result_sends
            .push(Box::pin(async move { (key, pending.await) }));
    }

    fn on_result_send(&mut self, key: ResultKey, result: Result<(), TransportError>) {
        if let Err(error) = result {
            tracing::warn!(%error, batch_id = %key.batch_id, step_id = ?key.step_id, "sending a result failed; it will be sent again");
            if let Some(held) = self.outbox.get_mut(&key) {
                held.last_sent = None;
            }
        }
    }

    fn on_hello_rejected(&mut self, rejected: HelloRejected) -> Result<(), WorkerError> {
        if HelloRejectionCode::parse(&rejected.code)
            == Some(HelloRejectionCode::NotAcceptingWorkers)
        {
            // The first retry waits one hello timeout, later ones twice as long each time.
            let wait = backoff(
                self.options.welcome_timeout,
                self.registration_attempts,
                self.options.retry_backoff_max,
            );
            tracing::warn!(
                message = %rejected.message,
                retry_in_ms = duration_ms(wait),
                "the orchestrator is not accepting workers; will try again"
            );
            self.set_unregistered(Link::RetryAt {
                at: Instant::now() + wait,
            });
            return Ok(());
        }
        Err(WorkerError::HelloRejected {
            code: rejected.code,
            message: rejected.message,
        })
    }

    fn on_error_report(&mut self, report: &ErrorReport) {
        bump(&self.counters.errors_received);
        if ErrorCode::parse(&report.code) == Some(ErrorCode::NotRegistered) {
            // At most one re-registration per hello timeout (spec §7.5); the heartbeats keep
            // drawing `not_registered` until one gets through.
            if matches!(self.link, Link::Registered)
                && self.last_hello_at.elapsed() >= self.options.welcome_timeout
            {
                tracing::warn!(message = %report.message, "the orchestrator does not know this worker; registering again");
                self.send_hello();
            }
            return;
        }
        if let Some(key) = rejected_result_key(report)
            && self.outbox.release(&key)
        {
            self.counters
                .results_unacknowledged
                .store(self.outbox.len() as u64, Ordering::Relaxed);
            tracing::error!(
                code = %report.code,
                message = %report.message,
                batch_id = %key.batch_id,
                step_id = ?key.step_id,
                kind = %key.kind,
                "the orchestrator rejected a result; dropping it (the step will time out and be retried)"
            );
            return;
        }
        tracing::warn!(
            code = %report.code,
            message = %report.message,
            offending_message_type = ?report.offending_message_type,
            batch_id = ?report.batch_id,
            step_id = ?report.step_id,
            "the orchestrator rejected a message from this worker"
        );
    }

    async fn on_heartbeat_tick(&mut self) -> Result<(), WorkerError> {
        let silence = self.last_contact.elapsed();
        let allowed = self.heartbeat_period * self.liveness;
        if silence > allowed {
            tracing::warn!(
                silent_ms = duration_ms(silence),
                "no message from the orchestrator for {} heartbeat intervals; reconnecting",
                self.liveness
            );
            self.set_unregistered(Link::Disconnected);
            return self.reconnect().await;
        }
        let in_flight = self.in_flight_count();
        self.send(WorkerHeartbeat {
            protocol_version: PROTOCOL_VERSION,
            worker_id: self.options.worker_id.clone(),
            in_flight,
            free_capacity: self.options.capacity.saturating_sub(in_flight),
            timestamp: now_millis(),
        });
        bump(&self.counters.heartbeats_sent);
        // Results whose send failed, or that have waited too long for their ack, go out again.
        self.flush_outbox(Instant::now().checked_sub(allowed));
        Ok(())
    }

    fn in_flight_count(&self) -> u32 {
        u32::try_from(self.steps.len()).unwrap_or(u32::MAX)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let link = match self.link {
            Link::AwaitingWelcome { deadline } => Some(deadline),
            Link::RetryAt { at } => Some(at),
            Link::Disconnected | Link::Registered => None,
        };
        let drain = self.drain.as_ref().and_then(|drain| {
            if !drain.grace_expired && !self.running.is_empty() {
                Some(drain.grace_deadline)
            } else if !drain.ack_expired {
                drain.ack_deadline
            } else {
                None
            }
        });
        [link, drain].into_iter().flatten().min()
    }

    async fn on_deadline(&mut self) -> Result<(), WorkerError> {
        let now = Instant::now();
        if let Some(drain) = &mut self.drain {
            if !drain.grace_expired && drain.grace_deadline <= now && !self.running.is_empty() {
                drain.grace_expired = true;
                tracing::warn!(
                    running = self.running.len(),
                    "shutdown grace period over; stopping the steps still running"
                );
                for slot in self.steps.values_mut() {
                    if let SlotState::Running {
                        token,
                        interruption,
                    } = &mut slot.state
                    {
                        interruption.get_or_insert(Interruption::Shutdown);
                        token.cancel();
                    }
                }
            }
            if drain.ack_deadline.is_some_and(|deadline| deadline <= now) {
                drain.ack_expired = true;
            }
        }
        match self.link {
            Link::AwaitingWelcome { deadline } if deadline <= now => {
                tracing::warn!(
                    endpoint = %self.options.endpoint,
                    "no welcome from the orchestrator in time; opening a fresh connection"
                );
                self.reconnect().await?;
            }
            Link::RetryAt { at } if at <= now => self.reconnect().await?,
            _ => {}
        }
        Ok(())
    }

    fn on_health_request(&self, request: &HealthRequest) {
        let in_flight = self.in_flight_count();
        let mut details = serde_json::Map::new();
        details.insert("running".to_owned(), json!(self.running.len()));
        details.insert("queued".to_owned(), json!(self.queue.len()));
        details.insert(
            "unacknowledged_results".to_owned(),
            json!(self.outbox.len()),
        );
        details.insert(
            "rejected_frames".to_owned(),
            json!(self.counters.rejected_frames.load(Ordering::Relaxed)),
        );
        self.send_if_registered(HealthReply {
            protocol_version: PROTOCOL_VERSION,
            request_id: request.request_id,
            worker_id: self.options.worker_id.clone(),
            status: if self.drain.is_some() {
                WorkerHealth::Draining
            } else {
                WorkerHealth::Healthy
            },
            in_flight,
            free_capacity: self.options.capacity.saturating_sub(in_flight),
            uptime_ms: duration_ms(self.started.elapsed()),
            details: Some(details),
        });
    }

    // ----- steps -----

    fn on_step_batch(&mut self, batch: StepBatch) {
        let batch_id = batch.batch_id;
        if self.batches.contains_key(&batch_id) || self.outbox.holds_batch(batch_id) {
            tracing::warn!(%batch_id, "batch received twice; ignoring the copy");
            return;
        }
        if self.drain.is_some() {
            let handed_back: Vec<StepRef> = batch
                .steps
                .iter()
                .map(|step| StepRef {
                    batch_id,
                    step_id: step.step_id,
                })
                .collect();
            tracing::info!(%batch_id, steps = handed_back.len(), "shutting down: handing the batch back");
            self.counters
                .steps_handed_back
                .fetch_add(handed_back.len() as u64, Ordering::Relaxed);
            self.send_goodbye(handed_back);
            return;
        }
        tracing::debug!(%batch_id, steps = batch.steps.len(), "batch received");
        let before = self.steps.len();
        self.batches.insert(
            batch_id,
            BatchProgress {
                order: batch.steps.iter().map(|step| step.step_id).collect(),
                statuses: HashMap::new(),
                remaining: batch.steps.len(),
                handed_back: false,
            },
        );
        for request in batch.steps {
            let step = StepRef {
                batch_id,
                step_id: request.step_id,
            };
            let attempt = request.metadata.attempt;
            if !self.registry.contains(&request.handler_class) {
                tracing::warn!(handler_class = %request.handler_class, step_id = step.step_id, "no handler registered for the step's class");
                let error = StepError {
                    message: format!(
                        "worker {} has no handler registered for handler_class {:?}",
                        self.options.worker_id, request.handler_class
                    ),
                    error_class: reserved_error_class::UNKNOWN_HANDLER_CLASS.to_owned(),
                    retryable: true,
                    retry_after_ms: None,
                    backtrace: Vec::new(),
                };
                self.report(step, attempt, Outcome::Failed(error), Duration::ZERO);
                continue;
            }
            self.steps.insert(
                step,
                StepSlot {
                    attempt,
                    state: SlotState::Queued(Box::new(request)),
                },
            );
            self.queue.push_back(step);
        }
        let capacity = self.options.capacity as usize;
        if self.steps.len() > capacity && self.steps.len() > before {
            // An orchestrator bug (its credit should prevent it): say so, and still queue and run
            // the steps (spec §8.4).
            tracing::warn!(
                %batch_id,
                outstanding = self.steps.len(),
                capacity,
                "batch exceeds this worker's capacity; queueing the excess"
            );
            self.send_if_registered(WorkerMessage::Error(ErrorReport {
                protocol_version: PROTOCOL_VERSION,
                code: ErrorCode::CapacityExceeded.as_str().to_owned(),
                message: format!(
                    "step_batch {batch_id} brings worker {} to {} steps without a result, above its capacity of {capacity}; the excess is queued",
                    self.options.worker_id,
                    self.steps.len()
                ),
                offending_message_type: Some("step_batch".to_owned()),
                batch_id: Some(batch_id),
                step_id: None,
            }));
        }
    }

    /// Starts queued steps while there is a free slot (none while shutting down).
    fn start_queued_steps(&mut self) {
        if self.drain.is_some() {
            return;
        }
        while self.running.len() < self.options.capacity as usize {
            let Some(step) = self.queue.pop_front() else {
                return;
            };
            let Some(slot) = self.steps.get_mut(&step) else {
                continue;
            };
            let token = CancellationToken::new();
            let SlotState::Queued(request) = std::mem::replace(
                &mut slot.state,
                SlotState::Running {
                    token: token.clone(),
                    interruption: None,
                },
            ) else {
                continue;
            };
            let Some(handler) = self.registry.get(&request.handler_class).cloned() else {
                continue;
            };
            let context = StepContext::new(step.batch_id, *request, &self.options.worker_id)
                .with_cancellation(token);
            bump(&self.counters.steps_started);
            self.running.push(execute(handler, context));
        }
    }

    fn on_step_finished(&mut self, finished: FinishedStep) {
        let FinishedStep { step, end, elapsed } = finished;
        let Some(slot) = self.steps.get(&step) else {
            return;
        };
        let attempt = slot.attempt;
        let interruption = match &slot.state {
            SlotState::Running { interruption, .. } => *interruption,
            SlotState::Queued(_) => None,
        };
        let outcome = match end {
            StepEnd::Returned(Ok(output)) => Outcome::Completed(output),
            StepEnd::Returned(Err(failure)) => Outcome::Failed(StepError {
                message: failure.message().to_owned(),
                error_class: failure.error_class().to_owned(),
                retryable: failure.is_retryable(),
                retry_after_ms: failure.retry_after().map(duration_ms),
                backtrace: failure.backtrace().to_vec(),
            }),
            StepEnd::Panicked(message) => {
                tracing::error!(step_id = step.step_id, %message, "step handler panicked");
                Outcome::Failed(StepError {
                    message: format!("the handler panicked: {message}"),
                    error_class: PANIC_ERROR_CLASS.to_owned(),
                    retryable: false,
                    retry_after_ms: None,
                    backtrace: Vec::new(),
                })
            }
            StepEnd::TimedOut(limit) => Outcome::Failed(StepError {
                message: format!(
                    "the step ran past its timeout of {} ms and was stopped by the worker",
                    duration_ms(limit)
                ),
                error_class: reserved_error_class::TIMEOUT.to_owned(),
                retryable: true,
                retry_after_ms: None,
                backtrace: Vec::new(),
            }),
            StepEnd::Interrupted => Outcome::Failed(match interruption {
                Some(Interruption::Cancelled(reason)) => cancelled_error(reason),
                Some(Interruption::Shutdown) | None => StepError {
                    message: format!(
                        "the worker shut down and its grace period of {} ms ended before the step finished",
                        duration_ms(self.options.shutdown_grace)
                    ),
                    error_class: WORKER_SHUTDOWN_ERROR_CLASS.to_owned(),
                    retryable: true,
                    retry_after_ms: None,
                    backtrace: Vec::new(),
                },
            }),
        };
        self.report(step, attempt, outcome, elapsed);
    }

    fn on_cancel_steps(&mut self, cancel: &CancelSteps) {
        for &step_id in &cancel.step_ids {
            let step = StepRef {
                batch_id: cancel.batch_id,
                step_id,
            };
            let Some(slot) = self.steps.get_mut(&step) else {
                tracing::debug!(step_id, batch_id = %cancel.batch_id, "cancel for a step with no pending result; nothing to do");
                continue;
            };
            tracing::info!(step_id, batch_id = %cancel.batch_id, reason = %cancel.reason, "cancelling step");
            match &mut slot.state {
                SlotState::Running {
                    token,
                    interruption,
                } => {
                    interruption.get_or_insert(Interruption::Cancelled(cancel.reason));
                    token.cancel();
                }
                SlotState::Queued(_) => {
                    let attempt = slot.attempt;
                    self.queue.retain(|queued| *queued != step);
                    self.report(
                        step,
                        attempt,
                        Outcome::Failed(cancelled_error(cancel.reason)),
                        Duration::ZERO,
                    );
                }
            }
        }
    }

    /// Sends the final result of `step` (and its batch's completion when it was the last one),
    /// holding both until acknowledged.
    fn report(&mut self, step: StepRef, attempt: u32, outcome: Outcome, elapsed: Duration) {
        self.steps.remove(&step);
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let mut result = PartialResult {
            protocol_version: PROTOCOL_VERSION,
            batch_id: step.batch_id,
            step_id: step.step_id,
            attempt,
            status: StepStatus::Completed,
            output: Value::Null,
            error: None,
            worker_id: self.options.worker_id.clone(),
            sequence,
            timestamp: now_millis(),
            execution_time_ms: duration_ms(elapsed),
        };
        match outcome {
            Outcome::Completed(output) => result.output = output,
            Outcome::Failed(error) => {
                result.status = StepStatus::Failed;
                result.error = Some(error.fit_to_limits());
            }
        }
        let mut message = WorkerMessage::PartialResult(result);
        let mut frame = encode(&message);
        if frame.len() > self.limits.max_frame_bytes {
            let size = frame.len();
            tracing::warn!(
                step_id = step.step_id,
                size,
                max = self.limits.max_frame_bytes,
                "result too large for a frame"
            );
            if let WorkerMessage::PartialResult(result) = &mut message {
                result.status = StepStatus::Failed;
                result.output = Value::Null;
                result.error = Some(StepError {
                    message: format!(
                        "the step's result encodes to {size} bytes, more than the session's max_frame_bytes of {}",
                        self.limits.max_frame_bytes
                    ),
                    error_class: reserved_error_class::OUTPUT_TOO_LARGE.to_owned(),
                    retryable: false,
                    retry_after_ms: None,
                    backtrace: Vec::new(),
                });
            }
            frame = encode(&message);
        }
        let status = match &message {
            WorkerMessage::PartialResult(result) => result.status,
            _ => StepStatus::Failed,
        };
        match status {
            StepStatus::Completed => bump(&self.counters.steps_completed),
            StepStatus::Failed => bump(&self.counters.steps_failed),
        }
        self.hold_and_send(
            ResultKey::partial_result(step.batch_id, step.step_id),
            frame,
        );

        let Some(progress) = self.batches.get_mut(&step.batch_id) else {
            return;
        };
        progress.statuses.insert(step.step_id, status);
        progress.remaining = progress.remaining.saturating_sub(1);
        if progress.remaining > 0 {
            return;
        }
        let Some(progress) = self.batches.remove(&step.batch_id) else {
            return;
        };
        if progress.handed_back {
            return;
        }
        let summaries: Vec<StepSummary> = progress
            .order
            .iter()
            .map(|step_id| StepSummary {
                step_id: *step_id,
                status: progress
                    .statuses
                    .get(step_id)
                    .copied()
                    .unwrap_or(StepStatus::Failed),
            })
            .collect();
        let completed = summaries
            .iter()
            .filter(|summary| summary.status == StepStatus::Completed)
            .count();
        let total = summaries.len();
        let completion = BatchCompletion {
            protocol_version: PROTOCOL_VERSION,
            batch_id: step.batch_id,
            total_steps: u32::try_from(total).unwrap_or(u32::MAX),
            completed_steps: u32::try_from(completed).unwrap_or(u32::MAX),
            failed_steps: u32::try_from(total - completed).unwrap_or(u32::MAX),
            step_summaries: summaries,
            completed_at: now_millis(),
            worker_id: self.options.worker_id.clone(),
        };
        bump(&self.counters.batches_completed);
        self.hold_and_send(
            ResultKey::batch_completion(step.batch_id),
            encode(&WorkerMessage::BatchCompletion(completion)),
        );
    }

    fn hold_and_send(&mut self, key: ResultKey, frame: Vec<u8>) {
        self.outbox.hold(key, frame.clone());
        self.counters
            .results_unacknowledged
            .store(self.outbox.len() as u64, Ordering::Relaxed);
        if matches!(self.link, Link::Registered) {
            if let Some(held) = self.outbox.get_mut(&key) {
                held.last_sent = Some(Instant::now());
                held.ever_sent = true;
            }
            self.track_send(key, frame);
        }
    }

    fn on_result_ack(&mut self, ack: &ResultAck) {
        for entry in &ack.acks {
            if self.outbox.release(&entry.key()) {
                bump(&self.counters.results_acknowledged);
            }
        }
        self.counters
            .results_unacknowledged
            .store(self.outbox.len() as u64, Ordering::Relaxed);
    }

    // ----- shutdown -----

    fn begin_drain(&mut self) {
        let handed_back: Vec<StepRef> = self.queue.drain(..).collect();
        for step in &handed_back {
            self.steps.remove(step);
            if let Some(progress) = self.batches.get_mut(&step.batch_id) {
                progress.handed_back = true;
                progress.remaining = progress.remaining.saturating_sub(1);
                if progress.remaining == 0 {
                    self.batches.remove(&step.batch_id);
                }
            }
        }
        tracing::info!(
            running = self.running.len(),
            handed_back = handed_back.len(),
            grace_ms = duration_ms(self.options.shutdown_grace),
            "shutting down: saying goodbye"
        );
        self.counters
            .steps_handed_back
            .fetch_add(handed_back.len() as u64, Ordering::Relaxed);
        self.drain = Some(Drain {
            grace_deadline: Instant::now() + self.options.shutdown_grace,
            grace_expired: false,
            ack_deadline: None,
            ack_expired: false,
        });
        self.send_goodbye(handed_back);
    }

    /// Says `goodbye` with `handed_back` now, or after the next `welcome` when unregistered.
    fn send_goodbye(&mut self, handed_back: Vec<StepRef>) {
        if !matches!(self.link, Link::Registered) {
            self.pending_hand_backs.extend(handed_back);
            return;
        }
        self.send(Goodbye {
            protocol_version: PROTOCOL_VERSION,
            worker_id: self.options.worker_id.clone(),
            reason: GOODBYE_REASON.to_owned(),
            handed_back,
        });
    }

    /// Whether the shutdown is complete: nothing running, and every result acknowledged or the
    /// acknowledgement wait over.
    fn drain_finished(&mut self) -> bool {
        let Some(drain) = &mut self.drain else {
            return false;
        };
        if !self.steps.is_empty() || !self.running.is_empty() {
            return false;
        }
        if self.outbox.is_empty() {
            return true;
        }
        if drain.ack_expired {
            tracing::warn!(
                unacknowledged = self.outbox.len(),
                "shutting down with results the orchestrator has not acknowledged"
            );
            return true;
        }
        if drain.ack_deadline.is_none() {
            drain.ack_deadline = Some(Instant::now() + self.options.shutdown_ack_timeout);
        }
        false
    }
}

/// The held result an orchestrator `error` names, if it names one (spec §9.3).
fn rejected_result_key(report: &ErrorReport) -> Option<ResultKey> {
    let batch_id = report.batch_id?;
    match (report.offending_message_type.as_deref(), report.step_id) {
        (Some("batch_completion"), _) | (None, None) => Some(ResultKey::batch_completion(batch_id)),
        (Some("partial_result") | None, Some(step_id)) => {
            Some(ResultKey::partial_result(batch_id, step_id))
        }
        _ => None,
    }
}

/// Now, to the millisecond (spec §3.7: senders SHOULD send millisecond precision).
fn now_millis() -> chrono::DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

fn cancelled_error(reason: CancelReason) -> StepError {
    StepError {
        message: format!("the orchestrator cancelled the step ({reason})"),
        error_class: reserved_error_class::CANCELLED.to_owned(),
        retryable: false,
        retry_after_ms: None,
        backtrace: Vec::new(),
    }
}

fn new_heartbeat(period: Duration) -> Interval {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

/// `base` doubled `attempts` times, at most `max`.
fn backoff(base: Duration, attempts: u32, max: Duration) -> Duration {
    base.saturating_mul(2_u32.saturating_pow(attempts.min(16)))
        .min(max)
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        assert_eq!(backoff(base, 0, max), base);
        assert_eq!(backoff(base, 1, max), Duration::from_millis(200));
        assert_eq!(backoff(base, 3, max), Duration::from_millis(800));
        assert_eq!(backoff(base, 4, max), max);
        assert_eq!(backoff(base, u32::MAX, max), max);
    }

    #[test]
    fn an_empty_registry_is_refused() {
        let error = check_registry(&HandlerRegistry::new()).expect_err("empty");
        assert!(error.to_string().contains("empty"), "{error}");
    }
}
