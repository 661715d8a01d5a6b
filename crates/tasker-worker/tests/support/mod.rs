//! A scripted orchestrator for the worker's tests: a real ROUTER socket (`tasker-transport`) that
//! decodes what the worker sends with the orchestrator's own decoder
//! (`decode_worker_message`) and sends protocol messages the test chooses. Every wait is bounded
//! by [`GUARD`], which only guards against hangs: tests wait on messages, never on the clock.

#![allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#![allow(clippy::unwrap_used, reason = "a test should fail loudly on any error")]

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Map, Value};
use tasker_protocol::{
    AckEntry, AckOutcome, BatchCompletion, CancelReason, CancelSteps, ErrorReport, Goodbye,
    HealthReply, HealthRequest, Hello, HelloRejected, Limits, OrchestratorMessage,
    PROTOCOL_VERSION, PartialResult, ResultAck, ResultKey, StepBatch, StepMetadata, StepRequest,
    Welcome, WorkerMessage, decode_worker_message, encode,
};
use tasker_transport::{
    PeerId, RouterEndpoint, RouterEvent, RouterEvents, RouterHandle, RouterOptions,
};
use tasker_worker::{HandlerRegistry, Worker, WorkerError, WorkerHandle, WorkerOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Upper bound on any single wait; reaching it means the test failed.
pub const GUARD: Duration = Duration::from_secs(15);

/// Awaits `future`, failing the test if it takes longer than [`GUARD`].
pub async fn guarded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The orchestrator's side of a test: a bound ROUTER and the last worker connection seen.
pub struct ScriptedOrchestrator {
    pub router: RouterHandle,
    events: RouterEvents,
    /// The routing id of the connection the last message came from.
    pub peer: Option<PeerId>,
}

impl ScriptedOrchestrator {
    /// Binds a ROUTER on an ephemeral loopback tcp port.
    pub fn bind() -> Self {
        Self::bind_at("tcp://127.0.0.1:0")
    }

    /// Binds a ROUTER at `endpoint`.
    pub fn bind_at(endpoint: &str) -> Self {
        let (router, events) =
            RouterEndpoint::bind(endpoint, RouterOptions::default()).expect("bind router");
        Self {
            router,
            events,
            peer: None,
        }
    }

    /// Binds a ROUTER at the endpoint of an orchestrator that was just stopped, to play its
    /// restart. ZeroMQ closes a listening socket in its I/O thread after `zmq_close` returns, so
    /// the port may still be taken for a moment: try again until it is free.
    pub async fn rebind(endpoint: &str) -> Self {
        let deadline = tokio::time::Instant::now() + GUARD;
        loop {
            match RouterEndpoint::bind(endpoint, RouterOptions::default()) {
                Ok((router, events)) => {
                    return Self {
                        router,
                        events,
                        peer: None,
                    };
                }
                Err(error) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(%error, "endpoint not released yet");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(error) => panic!("could not bind {endpoint} again: {error}"),
            }
        }
    }

    /// The endpoint workers connect to.
    pub fn endpoint(&self) -> String {
        self.router.endpoint().to_owned()
    }

    /// Stops this orchestrator (its socket closes, as when the process dies).
    pub async fn stop(self) {
        self.router.shutdown().await;
    }

    /// The next message from the worker, heartbeats included.
    pub async fn next_any(&mut self) -> WorkerMessage {
        let event = guarded("a frame from the worker", self.events.recv())
            .await
            .expect("router closed");
        match event {
            RouterEvent::Message(inbound) => {
                self.peer = Some(inbound.peer);
                decode_worker_message(&inbound.payload, &Limits::default()).unwrap_or_else(
                    |error| {
                        panic!(
                            "the worker sent a frame the orchestrator rejects ({}): {}",
                            error,
                            String::from_utf8_lossy(&inbound.payload)
                        )
                    },
                )
            }
            RouterEvent::Rejected(error) => panic!("the worker sent a bad frame: {error}"),
        }
    }

    /// The next message from the worker that is not a heartbeat.
    pub async fn next(&mut self) -> WorkerMessage {
        loop {
            match self.next_any().await {
                WorkerMessage::Heartbeat(_) => {}
                other => return other,
            }
        }
    }

    pub async fn expect_hello(&mut self) -> Hello {
        match self.next().await {
            WorkerMessage::Hello(hello) => hello,
            other => panic!("expected hello, got {other:?}"),
        }
    }

    pub async fn expect_partial(&mut self) -> PartialResult {
        match self.next().await {
            WorkerMessage::PartialResult(result) => result,
            other => panic!("expected partial_result, got {other:?}"),
        }
    }

    pub async fn expect_completion(&mut self) -> BatchCompletion {
        match self.next().await {
            WorkerMessage::BatchCompletion(completion) => completion,
            other => panic!("expected batch_completion, got {other:?}"),
        }
    }

    pub async fn expect_goodbye(&mut self) -> Goodbye {
        match self.next().await {
            WorkerMessage::Goodbye(goodbye) => goodbye,
            other => panic!("expected goodbye, got {other:?}"),
        }
    }

    pub async fn expect_error(&mut self) -> ErrorReport {
        match self.next().await {
            WorkerMessage::Error(report) => report,
            other => panic!("expected error, got {other:?}"),
        }
    }

    pub async fn expect_health_reply(&mut self) -> HealthReply {
        match self.next().await {
            WorkerMessage::HealthReply(reply) => reply,
            other => panic!("expected health_reply, got {other:?}"),
        }
    }

    /// Sends `payload` as one frame to the last connection seen.
    pub async fn send_raw(&self, payload: Vec<u8>) {
        let peer = self.peer.as_ref().expect("no worker has spoken yet");
        self.router.send(peer, payload).await.expect("router send");
    }

    pub async fn send(&self, message: impl Into<OrchestratorMessage>) {
        self.send_raw(encode(&message.into())).await;
    }

    /// Answers `hello` with `welcome`.
    pub async fn welcome(&self, hello: &Hello, heartbeat_interval_ms: u64, liveness: u32) {
        self.welcome_with_frame_limit(hello, heartbeat_interval_ms, liveness, 1024 * 1024)
            .await;
    }

    pub async fn welcome_with_frame_limit(
        &self,
        hello: &Hello,
        heartbeat_interval_ms: u64,
        liveness: u32,
        max_frame_bytes: u64,
    ) {
        self.send(Welcome {
            protocol_version: PROTOCOL_VERSION,
            worker_id: hello.worker_id.clone(),
            orchestrator_id: "scripted-orchestrator".to_owned(),
            heartbeat_interval_ms,
            liveness,
            max_frame_bytes,
            max_steps_per_batch: 100,
        })
        .await;
    }

    /// Waits for `hello` and welcomes it with a 1 s heartbeat and a liveness of 100 (so the
    /// worker never gives up on this silent orchestrator during a test).
    pub async fn handshake(&mut self) -> Hello {
        let hello = self.expect_hello().await;
        self.welcome(&hello, 1000, 100).await;
        hello
    }

    pub async fn reject_hello(&self, code: &str, message: &str) {
        self.send(HelloRejected {
            protocol_version: PROTOCOL_VERSION,
            code: code.to_owned(),
            message: message.to_owned(),
        })
        .await;
    }

    pub async fn ack(&self, keys: &[ResultKey]) {
        self.send(ResultAck {
            protocol_version: PROTOCOL_VERSION,
            acks: keys
                .iter()
                .map(|key| AckEntry::new(*key, AckOutcome::Applied))
                .collect(),
        })
        .await;
    }

    pub async fn cancel(&self, batch_id: Uuid, step_ids: Vec<i64>, reason: CancelReason) {
        self.send(CancelSteps {
            protocol_version: PROTOCOL_VERSION,
            batch_id,
            step_ids,
            reason,
        })
        .await;
    }

    pub async fn health_request(&self) -> Uuid {
        let request_id = Uuid::now_v7();
        self.send(HealthRequest {
            protocol_version: PROTOCOL_VERSION,
            request_id,
            timestamp: Utc::now(),
        })
        .await;
        request_id
    }

    pub async fn send_error(&self, code: &str) {
        self.send(OrchestratorMessage::Error(ErrorReport {
            protocol_version: PROTOCOL_VERSION,
            code: code.to_owned(),
            message: format!("scripted {code}"),
            offending_message_type: Some("heartbeat".to_owned()),
            batch_id: None,
            step_id: None,
        }))
        .await;
    }
}

/// A JSON object from a `json!` value (an empty one for anything else).
pub fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected a JSON object, got {other}"),
    }
}

/// A step request for attempt 1 with no timeout, empty context and no parents.
pub fn step(step_id: i64, step_name: &str, handler_class: &str, config: Value) -> StepRequest {
    StepRequest {
        step_id,
        task_id: 1,
        step_name: step_name.to_owned(),
        handler_class: handler_class.to_owned(),
        handler_config: object(config),
        task_context: Map::new(),
        previous_results: Map::new(),
        metadata: StepMetadata {
            attempt: 1,
            retry_limit: 3,
            timeout_ms: None,
            idempotency_key: StepMetadata::idempotency_key_for(step_id, 1),
        },
    }
}

/// A batch with a fresh id.
pub fn batch(steps: Vec<StepRequest>) -> StepBatch {
    StepBatch {
        protocol_version: PROTOCOL_VERSION,
        batch_id: Uuid::now_v7(),
        steps,
    }
}

/// Options for a worker connecting to `endpoint`, with a fixed id and a long hello timeout (so
/// that a slow test machine never makes the worker re-register on its own).
pub fn options(endpoint: &str, worker_id: &str, capacity: u32) -> WorkerOptions {
    let mut options = WorkerOptions::new(endpoint);
    options.worker_id = worker_id.to_owned();
    options.name = format!("{worker_id} (tests)");
    options.capacity = capacity;
    options.welcome_timeout = Duration::from_secs(60);
    options
}

/// A worker running on its own task, and the means to stop it.
pub struct RunningWorker {
    pub handle: WorkerHandle,
    shutdown: Option<oneshot::Sender<()>>,
    join: JoinHandle<Result<(), WorkerError>>,
}

/// Sends the worker's logs to the test output when `RUST_LOG` is set.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

impl RunningWorker {
    pub fn start(options: WorkerOptions, registry: HandlerRegistry) -> Self {
        init_logging();
        let worker = Worker::new(options).expect("valid options");
        let handle = worker.handle();
        let (shutdown, stop) = oneshot::channel::<()>();
        let join = tokio::spawn(worker.run(registry, async move {
            let _ = stop.await;
        }));
        Self {
            handle,
            shutdown: Some(shutdown),
            join,
        }
    }

    /// Asks the worker to shut down gracefully.
    pub fn shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Whether `run` has returned.
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// Stops the worker abruptly (as if its process died) and waits until its task, and with it
    /// its socket, is gone.
    ///
    /// Every test that leaves its worker running calls this before its orchestrator is dropped.
    /// Otherwise the orchestrator's socket would close first, and a DEALER that is dropped while
    /// its connection reports that disconnection can block ZeroMQ's I/O thread for the whole
    /// process (libzmq sends the monitor event with a blocking send to a monitor socket whose
    /// reader is already closed; see the report on `tasker-transport`), hanging later tests.
    pub async fn kill(self) {
        self.join.abort();
        let _ = guarded("the worker task to end", self.join).await;
    }

    /// Waits for `run` to return.
    pub async fn join(self) -> Result<(), WorkerError> {
        guarded("the worker to stop", self.join)
            .await
            .expect("the worker task panicked")
    }
}
