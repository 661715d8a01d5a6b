//! Shared pieces of the engine's black-box tests: real stores (a fresh SQLite file; a fresh
//! PostgreSQL database when `TASKER_TEST_POSTGRES_URL` is set), a real engine on a real socket,
//! real `tasker-worker` workers in-process, and raw DEALER sockets for misbehaving peers.
//! Every wait is bounded by [`GUARD`], which only guards against hangs.

#![allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#![allow(clippy::unwrap_used, reason = "a test should fail loudly on any error")]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;
use tasker_engine::{Engine, EngineHandle, EngineOptions, TaskRequest, TemplateRegistry};
use tasker_protocol::{
    Hello, Limits, OrchestratorMessage, PROTOCOL_VERSION, SdkInfo, StepRef, WorkerMessage,
    decode_orchestrator_message, encode,
};
use tasker_store::{Store, connect};
use tasker_transport::{DealerConnection, DealerEvent, DealerEvents, DealerHandle, DealerOptions};
use tasker_worker::builtin::TestHandler;
use tasker_worker::builtin::order_fulfillment;
use tasker_worker::{HandlerRegistry, Worker, WorkerHandle, WorkerOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound on any single wait; reaching it means the test failed.
pub const GUARD: Duration = Duration::from_secs(60);

/// Awaits `future`, failing the test if it takes longer than [`GUARD`].
pub async fn guarded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// One test's database.
pub struct TestDb {
    pub url: String,
    pg_cleanup: Option<(String, String)>,
    pub dir: tempfile::TempDir,
}

impl TestDb {
    /// A fresh database, or `None` when PostgreSQL is asked for but not configured.
    pub async fn new(db: Db) -> Option<TestDb> {
        let dir = tempfile::tempdir().expect("temporary directory");
        match db {
            Db::Sqlite => Some(TestDb {
                url: format!("sqlite:{}", dir.path().join("tasker.db").display()),
                pg_cleanup: None,
                dir,
            }),
            Db::Postgres => {
                let Some(admin_url) = std::env::var("TASKER_TEST_POSTGRES_URL")
                    .ok()
                    .filter(|url| !url.is_empty())
                else {
                    if std::env::var("TASKER_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                        panic!("TASKER_REQUIRE_POSTGRES=1 but TASKER_TEST_POSTGRES_URL is not set");
                    }
                    eprintln!(
                        "SKIPPED: TASKER_TEST_POSTGRES_URL not set (PostgreSQL case not run)"
                    );
                    return None;
                };
                let database = format!("tasker_engine_{}", uuid::Uuid::new_v4().simple());
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .expect("connect to TASKER_TEST_POSTGRES_URL");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
                    .execute(&mut admin)
                    .await
                    .expect("create test database");
                admin.close().await.expect("close admin connection");
                Some(TestDb {
                    url: with_database(&admin_url, &database),
                    pg_cleanup: Some((admin_url, database)),
                    dir,
                })
            }
        }
    }

    /// Opens (another) store on the database.
    pub async fn store(&self) -> Arc<dyn Store> {
        connect(&self.url).await.expect("open store")
    }

    /// An ipc endpoint in this test's directory.
    pub fn ipc_endpoint(&self, name: &str) -> String {
        format!("ipc://{}", self.dir.path().join(name).display())
    }

    /// Drops a PostgreSQL test database.
    pub async fn cleanup(self) {
        if let Some((admin_url, database)) = self.pg_cleanup
            && let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await
        {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await;
            let _ = admin.close().await;
        }
    }
}

fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let mut out = format!("{}/{database}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The example templates.
pub fn example_templates() -> TemplateRegistry {
    TemplateRegistry::from_dir(examples_dir()).expect("example templates load")
}

pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/templates")
}

/// Engine options for tests: the given endpoint, fast heartbeats (200 ms × 5), a quick poll.
pub fn test_options(endpoint: &str) -> EngineOptions {
    let mut options = EngineOptions::with_endpoint(endpoint);
    options.orchestrator_id = "orchestrator-test".to_owned();
    options.heartbeat_interval = Duration::from_millis(200);
    options.liveness = 5;
    options.poll_interval = Duration::from_millis(500);
    options.timeout_grace = Duration::from_millis(500);
    options
}

/// Logs to the test's output when `RUST_LOG` is set.
pub fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Starts an engine on `store`.
pub async fn start_engine(options: EngineOptions, store: Arc<dyn Store>) -> EngineHandle {
    start_engine_with(options, store, example_templates()).await
}

pub async fn start_engine_with(
    options: EngineOptions,
    store: Arc<dyn Store>,
    templates: TemplateRegistry,
) -> EngineHandle {
    init_logging();
    Engine::start(options, store, templates)
        .await
        .expect("engine starts")
}

/// Options for an engine on a manual clock: heartbeats every 60 s of that clock (the longest the
/// protocol allows), so that moving the clock by seconds never makes a worker look silent and
/// workers expect the engine's heartbeats only once a minute of real time.
pub fn manual_options(endpoint: &str) -> EngineOptions {
    let mut options = test_options(endpoint);
    options.heartbeat_interval = Duration::from_secs(60);
    options
}

/// An engine on a manual clock (sequential batch ids, a fixed jitter seed) standing at the
/// current whole millisecond; the clock only moves when the test moves it.
pub async fn start_engine_manual(
    options: EngineOptions,
    store: Arc<dyn Store>,
) -> (EngineHandle, tasker_engine::ManualClock) {
    init_logging();
    let now = chrono::Utc::now();
    let start = chrono::DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
    let clock = tasker_engine::ManualClock::new(start);
    let engine = Engine::start_with_ambient(
        options,
        store,
        example_templates(),
        tasker_engine::Ambient::manual(clock.clone()),
    )
    .await
    .expect("engine starts");
    (engine, clock)
}

/// Runs a task on a manual clock to its end: keeps the retry times of the task's failed steps
/// and moves the clock to the earliest of them whenever it is behind it (one at a time, so each
/// retry is dispatched at exactly its time); returns the task's final state. Events come from
/// `events`, subscribed before the task was created. The task's end is also awaited directly,
/// and when no event came for half a second the retry times are read from the engine instead
/// (a check that the events are complete: the clock still only moves to a retry time).
pub async fn run_on_manual_clock(
    engine: &EngineHandle,
    events: &mut tokio::sync::broadcast::Receiver<tasker_engine::EngineEvent>,
    clock: &tasker_engine::ManualClock,
    task_id: i64,
) -> tasker_core::state::TaskState {
    use tasker_engine::{Clock, EngineEvent};
    guarded("the task on the manual clock", async {
        let mut retries: BTreeMap<i64, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
        let finished = engine.handle(task_id);
        tokio::pin!(finished);
        loop {
            tokio::select! {
                event = events.recv() => match event.expect("engine events") {
                    EngineEvent::StepChanged {
                        task_id: of,
                        step_id,
                        backoff_until,
                        ..
                    } if of == task_id => match backoff_until {
                        Some(until) => {
                            retries.insert(step_id, until);
                        }
                        None => {
                            retries.remove(&step_id);
                        }
                    },
                    EngineEvent::TaskFinished { task_id: of, state } if of == task_id => {
                        return state;
                    }
                    _ => {}
                },
                outcome = &mut finished => return outcome.expect("the task's outcome").state,
                () = tokio::time::sleep(Duration::from_millis(500)) => {
                    let status = engine.task_status(task_id).await.expect("the task's status");
                    retries = status
                        .steps
                        .iter()
                        .filter(|s| s.state == tasker_core::state::StepState::Error)
                        .filter_map(|s| s.backoff_until.map(|until| (s.step_id, until)))
                        .collect();
                }
            }
            if let Some(&earliest) = retries.values().min()
                && clock.now() < earliest
            {
                clock.advance_to(earliest);
            }
        }
    })
    .await
}

/// A handler registry with `tasker.test` (logging executions to `log`) and the
/// order-fulfillment handlers.
pub fn registry(log: Option<&Path>) -> HandlerRegistry {
    let mut registry = HandlerRegistry::new();
    let test = match log {
        Some(path) => TestHandler::with_execution_log(path),
        None => TestHandler::new(),
    };
    registry.register(tasker_worker::builtin::TEST_HANDLER_CLASS, Arc::new(test));
    registry.register(
        order_fulfillment::VALIDATE_ORDER_CLASS,
        Arc::new(order_fulfillment::ValidateOrder),
    );
    registry.register(
        order_fulfillment::RESERVE_INVENTORY_CLASS,
        Arc::new(order_fulfillment::ReserveInventory),
    );
    registry.register(
        order_fulfillment::PROCESS_PAYMENT_CLASS,
        Arc::new(order_fulfillment::ProcessPayment),
    );
    registry.register(
        order_fulfillment::SHIP_ORDER_CLASS,
        Arc::new(order_fulfillment::ShipOrder),
    );
    registry
}

/// A real worker running in this process.
pub struct TestWorker {
    pub handle: WorkerHandle,
    stop: Option<oneshot::Sender<()>>,
    join: JoinHandle<Result<(), tasker_worker::WorkerError>>,
}

impl TestWorker {
    /// Starts a worker connecting to `endpoint`.
    pub fn start(endpoint: &str, capacity: u32, registry: HandlerRegistry) -> TestWorker {
        Self::start_with_heartbeat(endpoint, capacity, registry, Duration::from_millis(200))
    }

    /// [`Self::start`] asking for `heartbeat` (an engine on a manual clock: 60 s).
    pub fn start_with_heartbeat(
        endpoint: &str,
        capacity: u32,
        registry: HandlerRegistry,
        heartbeat: Duration,
    ) -> TestWorker {
        let mut options = WorkerOptions::new(endpoint);
        options.capacity = capacity;
        options.heartbeat_interval = Some(heartbeat);
        options.welcome_timeout = Duration::from_millis(500);
        options.shutdown_grace = Duration::from_secs(2);
        options.shutdown_ack_timeout = Duration::from_secs(1);
        let worker = Worker::new(options).expect("valid worker options");
        let handle = worker.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let join = tokio::spawn(worker.run(registry, async move {
            let _ = stopped.await;
        }));
        TestWorker {
            handle,
            stop: Some(stop),
            join,
        }
    }

    /// Stops it gracefully.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = guarded("the worker to stop", &mut self.join).await;
    }

    /// Kills it (no goodbye): the task is aborted.
    pub fn kill(self) {
        self.join.abort();
    }
}

/// Initializes a task of an example template with `context`.
pub async fn create_task(
    engine: &EngineHandle,
    namespace: &str,
    name: &str,
    context: Value,
) -> i64 {
    engine
        .initialize_task(TaskRequest {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            context,
            ..TaskRequest::default()
        })
        .await
        .expect("task created")
        .task_id
}

/// Checks that every step of a completed `tasker.test` task received exactly its ancestors'
/// results (the test handler's default output lists the sorted `previous_results` keys).
pub async fn assert_previous_results_match_ancestors(engine: &EngineHandle, task_id: i64) {
    let status = engine.task_status(task_id).await.expect("status");
    let template = engine
        .templates()
        .get(
            &status.task.namespace,
            &status.task.name,
            Some(&status.task.version),
        )
        .expect("template");
    let names: Vec<String> = template.steps().iter().map(|s| s.name.clone()).collect();
    for (index, step) in status.steps.iter().enumerate() {
        let expected: Vec<String> = {
            let mut v: Vec<String> = template
                .dag()
                .ancestors(index)
                .into_iter()
                .map(|a| names[a].clone())
                .collect();
            v.sort();
            v
        };
        let results = step.results.as_ref().expect("a completed step has results");
        let got: Vec<String> = results["previous_results"]
            .as_array()
            .unwrap_or_else(|| panic!("step {} output has previous_results: {results}", step.name))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(got, expected, "previous_results of step {}", step.name);
        assert_eq!(results["step"], json!(step.name));
    }
}

/// Reads the test handler's execution log: `(task_id, step_name) → [(attempt, worker)]`.
pub fn read_execution_log(path: &Path) -> BTreeMap<(i64, String), Vec<(u32, String)>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut map: BTreeMap<(i64, String), Vec<(u32, String)>> = BTreeMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 5, "log line {line:?}");
        map.entry((parts[0].parse().unwrap(), parts[1].to_owned()))
            .or_default()
            .push((parts[3].parse().unwrap(), parts[4].to_owned()));
    }
    map
}

/// A raw DEALER playing a worker by hand.
pub struct RawWorker {
    pub dealer: DealerHandle,
    events: DealerEvents,
    pub worker_id: String,
    stash: std::collections::VecDeque<OrchestratorMessage>,
    sequence: u64,
}

impl RawWorker {
    /// Connects to `endpoint`.
    pub fn connect(endpoint: &str, worker_id: &str) -> RawWorker {
        let (dealer, events) =
            DealerConnection::connect(endpoint, DealerOptions::default()).expect("connect dealer");
        RawWorker {
            dealer,
            events,
            worker_id: worker_id.to_owned(),
            stash: std::collections::VecDeque::new(),
            sequence: 0,
        }
    }

    /// Sends raw bytes.
    pub async fn send_raw(&self, bytes: Vec<u8>) {
        self.dealer.send(bytes).await.expect("send");
    }

    /// Sends a message.
    pub async fn send(&self, message: WorkerMessage) {
        self.send_raw(encode(&message)).await;
    }

    /// Says hello with `classes` and `capacity`, and waits for `welcome`.
    pub async fn hello(&mut self, classes: &[&str], capacity: u32, in_flight: Vec<StepRef>) {
        self.hello_every(classes, capacity, in_flight, 200).await;
    }

    /// [`Self::hello`] asking for heartbeats every `heartbeat_ms`.
    pub async fn hello_every(
        &mut self,
        classes: &[&str],
        capacity: u32,
        in_flight: Vec<StepRef>,
        heartbeat_ms: u64,
    ) {
        self.send(WorkerMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            worker_id: self.worker_id.clone(),
            name: "raw test worker".to_owned(),
            sdk: SdkInfo {
                name: "raw".to_owned(),
                version: "0".to_owned(),
                language: "rust".to_owned(),
            },
            handler_classes: classes.iter().map(|c| (*c).to_owned()).collect(),
            capacity,
            heartbeat_interval_ms: Some(heartbeat_ms),
            in_flight,
        }))
        .await;
        self.wait_for("welcome", |m| matches!(m, OrchestratorMessage::Welcome(_)))
            .await;
    }

    /// The first message (heartbeats aside) matching `wanted`; others are kept for later calls.
    pub async fn wait_for(
        &mut self,
        what: &str,
        wanted: impl Fn(&OrchestratorMessage) -> bool,
    ) -> OrchestratorMessage {
        if let Some(i) = self.stash.iter().position(&wanted) {
            return self.stash.remove(i).unwrap();
        }
        loop {
            let message = guarded(what, self.next_non_heartbeat()).await;
            if wanted(&message) {
                return message;
            }
            self.stash.push_back(message);
        }
    }

    /// Waits for a `step_batch`.
    pub async fn batch(&mut self) -> tasker_protocol::StepBatch {
        match self
            .wait_for("a step batch", |m| {
                matches!(m, OrchestratorMessage::StepBatch(_))
            })
            .await
        {
            OrchestratorMessage::StepBatch(batch) => batch,
            _ => unreachable!(),
        }
    }

    /// Waits for the acknowledgement of `key` and returns its outcome.
    pub async fn ack_of(&mut self, key: tasker_protocol::ResultKey) -> tasker_protocol::AckOutcome {
        let message = self
            .wait_for("an acknowledgement", |m| match m {
                OrchestratorMessage::ResultAck(ack) => ack.acks.iter().any(|a| a.key() == key),
                _ => false,
            })
            .await;
        match message {
            OrchestratorMessage::ResultAck(ack) => {
                ack.acks.iter().find(|a| a.key() == key).unwrap().outcome
            }
            _ => unreachable!(),
        }
    }

    /// Waits for an `error` (or `hello_rejected`) and returns its code.
    pub async fn error_code(&mut self) -> String {
        match self
            .wait_for("an error", |m| {
                matches!(
                    m,
                    OrchestratorMessage::Error(_) | OrchestratorMessage::HelloRejected(_)
                )
            })
            .await
        {
            OrchestratorMessage::Error(e) => e.code,
            OrchestratorMessage::HelloRejected(r) => format!("hello_rejected:{}", r.code),
            _ => unreachable!(),
        }
    }

    /// A `completed` partial result for one step of a batch.
    pub fn completed(
        &mut self,
        batch_id: uuid::Uuid,
        step_id: i64,
        attempt: u32,
        output: Value,
    ) -> WorkerMessage {
        self.sequence += 1;
        WorkerMessage::PartialResult(tasker_protocol::PartialResult {
            protocol_version: PROTOCOL_VERSION,
            batch_id,
            step_id,
            attempt,
            status: tasker_protocol::StepStatus::Completed,
            output,
            error: None,
            worker_id: self.worker_id.clone(),
            sequence: self.sequence,
            timestamp: chrono::Utc::now(),
            execution_time_ms: 1,
        })
    }

    /// A batch completion saying every listed step completed.
    pub fn batch_done(&self, batch_id: uuid::Uuid, step_ids: &[i64]) -> WorkerMessage {
        let n = u32::try_from(step_ids.len()).unwrap();
        WorkerMessage::BatchCompletion(tasker_protocol::BatchCompletion {
            protocol_version: PROTOCOL_VERSION,
            batch_id,
            total_steps: n,
            completed_steps: n,
            failed_steps: 0,
            step_summaries: step_ids
                .iter()
                .map(|&step_id| tasker_protocol::StepSummary {
                    step_id,
                    status: tasker_protocol::StepStatus::Completed,
                })
                .collect(),
            completed_at: chrono::Utc::now(),
            worker_id: self.worker_id.clone(),
        })
    }

    /// Sends heartbeats every 100 ms from a background task until the returned handle is
    /// aborted (or dropped with the runtime).
    pub fn keep_heartbeating(&self) -> JoinHandle<()> {
        let dealer = self.dealer.clone();
        let worker_id = self.worker_id.clone();
        tokio::spawn(async move {
            loop {
                let beat = WorkerMessage::Heartbeat(tasker_protocol::WorkerHeartbeat {
                    protocol_version: PROTOCOL_VERSION,
                    worker_id: worker_id.clone(),
                    in_flight: 1,
                    free_capacity: 0,
                    timestamp: chrono::Utc::now(),
                });
                if dealer.send(encode(&beat)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    /// The next message from the orchestrator (heartbeats included).
    pub async fn next(&mut self) -> OrchestratorMessage {
        loop {
            let event = guarded("a frame from the orchestrator", self.events.recv())
                .await
                .expect("dealer closed");
            match event {
                DealerEvent::Message(bytes) => {
                    return decode_orchestrator_message(&bytes, &Limits::default())
                        .expect("the orchestrator sends valid frames");
                }
                DealerEvent::Rejected(kind) => panic!("orchestrator sent a bad frame: {kind}"),
                DealerEvent::Connected | DealerEvent::Disconnected => {}
            }
        }
    }

    /// The next message that is not a heartbeat.
    pub async fn next_non_heartbeat(&mut self) -> OrchestratorMessage {
        loop {
            match self.next().await {
                OrchestratorMessage::Heartbeat(_) => {}
                other => return other,
            }
        }
    }

    /// Sends a heartbeat.
    pub async fn heartbeat(&self) {
        self.send(WorkerMessage::Heartbeat(tasker_protocol::WorkerHeartbeat {
            protocol_version: PROTOCOL_VERSION,
            worker_id: self.worker_id.clone(),
            in_flight: 0,
            free_capacity: 1,
            timestamp: chrono::Utc::now(),
        }))
        .await;
    }

    pub async fn close(self) {
        self.dealer.shutdown().await;
    }
}

/// Runs `test` against SQLite, then PostgreSQL when configured.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident => $body:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::support::TestDb::new($crate::support::Db::Sqlite).await.unwrap();
                    super::$body(&db).await;
                    db.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::support::TestDb::new($crate::support::Db::Postgres).await else {
                        return;
                    };
                    super::$body(&db).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}
