//! Shared pieces of the process-level tests: the built `tasker` binary run as real `serve` and
//! `worker` processes on free loopback ports, a fresh database per test (an SQLite file; a fresh
//! PostgreSQL database when `TASKER_TEST_POSTGRES_URL` is set), the HTTP API as the only way in,
//! and the `tasker.test` handler's execution log to count what ran where.
//!
//! Every wait polls an observable state (the HTTP API, the execution log, a process's exit) a
//! bounded number of times; reaching the bound fails the test.

#![allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#![allow(clippy::unwrap_used, reason = "a test should fail loudly on any error")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use sqlx::Connection;

/// Upper bound on any single wait; reaching it means the test failed.
pub const GUARD: Duration = Duration::from_secs(120);
/// Interval between two polls of an observable state.
pub const POLL: Duration = Duration::from_millis(50);

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// One test's directory and database.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub database_url: String,
    pg_cleanup: Option<(String, String)>,
}

impl TestEnv {
    /// A fresh environment, or `None` when PostgreSQL is asked for but not configured (the test
    /// then prints SKIPPED, or fails when `TASKER_REQUIRE_POSTGRES=1`).
    pub async fn new(db: Db) -> Option<TestEnv> {
        let dir = tempfile::tempdir().unwrap();
        match db {
            Db::Sqlite => Some(TestEnv {
                database_url: format!("sqlite:{}", dir.path().join("tasker.db").display()),
                dir,
                pg_cleanup: None,
            }),
            Db::Postgres => {
                let Ok(admin_url) = std::env::var("TASKER_TEST_POSTGRES_URL") else {
                    if std::env::var("TASKER_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                        panic!("TASKER_REQUIRE_POSTGRES=1 but TASKER_TEST_POSTGRES_URL is not set");
                    }
                    eprintln!(
                        "SKIPPED: TASKER_TEST_POSTGRES_URL not set (PostgreSQL case not run)"
                    );
                    return None;
                };
                let database = format!("tasker_cli_{}", uuid::Uuid::new_v4().simple());
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                admin.close().await.unwrap();
                Some(TestEnv {
                    database_url: with_database(&admin_url, &database),
                    dir,
                    pg_cleanup: Some((admin_url, database)),
                })
            }
        }
    }

    /// The execution log the workers of this test append to.
    pub fn execution_log(&self) -> PathBuf {
        self.dir.path().join("executions.log")
    }

    /// An ipc endpoint in this test's directory.
    pub fn ipc_endpoint(&self) -> String {
        format!("ipc://{}", self.dir.path().join("workers.sock").display())
    }

    /// Drops a PostgreSQL test database.
    pub async fn cleanup(self) {
        if let Some((admin_url, database)) = &self.pg_cleanup
            && let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await
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

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The example templates directory.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/templates")
}

/// `tasker ARGS…` with no `TASKER_*` variables inherited from the caller's environment.
pub fn tasker(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tasker"));
    command.args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TASKER_") {
            command.env_remove(key);
        }
    }
    command.env_remove("RUST_LOG");
    command
}

/// Sends `signal` to `child`.
pub fn signal(child: &Child, signal: Signal) {
    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), signal).unwrap();
}

/// Waits (bounded) for `child` to exit.
pub async fn wait_exit(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + GUARD;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("{what} did not exit within {GUARD:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A `tasker serve` process.
pub struct Serve {
    pub child: Child,
    pub base: String,
    pub endpoint: String,
    pub args: Vec<String>,
    pub log: PathBuf,
}

/// How to start `tasker serve`.
pub struct ServeConfig {
    pub endpoint: String,
    pub http_port: u16,
    pub heartbeat_interval_ms: u64,
    pub liveness: u32,
}

impl ServeConfig {
    /// tcp on a free port, HTTP on a free port, heartbeats every 200 ms and a worker declared
    /// dead after 5 silent intervals (1 s).
    pub fn tcp() -> Self {
        Self {
            endpoint: format!("tcp://127.0.0.1:{}", free_port()),
            http_port: free_port(),
            heartbeat_interval_ms: 200,
            liveness: 5,
        }
    }

    /// As [`Self::tcp`] with workers on an ipc endpoint.
    pub fn ipc(env: &TestEnv) -> Self {
        Self {
            endpoint: env.ipc_endpoint(),
            ..Self::tcp()
        }
    }
}

impl Serve {
    /// Starts `tasker serve` for `env` and waits until `/health` answers.
    pub async fn start(env: &TestEnv, config: &ServeConfig) -> Serve {
        let args = vec![
            "serve".to_owned(),
            "--database-url".to_owned(),
            env.database_url.clone(),
            "--endpoint".to_owned(),
            config.endpoint.clone(),
            "--http-addr".to_owned(),
            format!("127.0.0.1:{}", config.http_port),
            "--templates".to_owned(),
            examples_dir().display().to_string(),
            "--heartbeat-interval-ms".to_owned(),
            config.heartbeat_interval_ms.to_string(),
            "--liveness".to_owned(),
            config.liveness.to_string(),
            "--poll-interval-ms".to_owned(),
            "500".to_owned(),
            "--orchestrator-id".to_owned(),
            "orchestrator-cli-test".to_owned(),
        ];
        let mut serve = Serve {
            child: Self::spawn(env, &args, 1),
            base: format!("http://127.0.0.1:{}", config.http_port),
            endpoint: config.endpoint.clone(),
            args,
            log: env.dir.path().join("serve-1.log"),
        };
        serve.wait_healthy().await;
        serve
    }

    fn spawn(env: &TestEnv, args: &[String], generation: u32) -> Child {
        let log =
            std::fs::File::create(env.dir.path().join(format!("serve-{generation}.log"))).unwrap();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tasker(&args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Polls `/health` until it answers 200 (bounded), failing early if the process exits.
    pub async fn wait_healthy(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + GUARD;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "tasker serve exited ({status}) before it was healthy:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let Ok(response) = client.get(format!("{}/health", self.base)).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tasker serve never became healthy"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILLs the process and waits for it to be gone.
    pub async fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts the same command again (same database, same ports) and waits until healthy.
    pub async fn restart(&mut self, env: &TestEnv) {
        self.child = Self::spawn(env, &self.args, 2);
        self.log = env.dir.path().join("serve-2.log");
        self.wait_healthy().await;
    }

    /// SIGTERM, and the exit status.
    pub async fn stop(mut self) -> ExitStatus {
        signal(&self.child, Signal::SIGTERM);
        wait_exit(&mut self.child, "tasker serve").await
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `tasker worker` process.
pub struct Worker {
    pub child: Child,
    pub worker_id: String,
}

impl Worker {
    /// Starts a worker with the built-in handlers, connecting to `endpoint`, logging executions
    /// to the test's execution log, named `worker-<label>-<random>`.
    pub fn start(env: &TestEnv, endpoint: &str, label: &str) -> Worker {
        let worker_id = format!(
            "worker-{label}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let log = std::fs::File::create(env.dir.path().join(format!("{worker_id}.log"))).unwrap();
        let child = tasker(&[
            "worker",
            "--connect",
            endpoint,
            "--worker-id",
            &worker_id,
            "--shutdown-grace-ms",
            "2000",
        ])
        .env("TASKER_TEST_EXECUTION_LOG", env.execution_log())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
        Worker { child, worker_id }
    }

    /// SIGTERM and wait.
    pub async fn stop(mut self) -> ExitStatus {
        signal(&self.child, Signal::SIGTERM);
        wait_exit(&mut self.child, "tasker worker").await
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The HTTP API of a running server.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// `POST /v1/tasks`; panics unless 201; the new task's id.
    pub async fn create(&self, body: Value) -> i64 {
        let response = self
            .http
            .post(format!("{}/v1/tasks", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status.as_u16(), 201, "{answer}");
        answer["task_id"].as_i64().unwrap()
    }

    /// Creates every body, `parallel` requests at a time; the ids in order.
    pub async fn create_many(&self, bodies: Vec<Value>, parallel: usize) -> Vec<i64> {
        let mut ids = Vec::with_capacity(bodies.len());
        for chunk in bodies.chunks(parallel.max(1)) {
            let mut set = tokio::task::JoinSet::new();
            for (i, body) in chunk.iter().cloned().enumerate() {
                let api = self.clone();
                set.spawn(async move { (i, api.create(body).await) });
            }
            let mut chunk_ids = vec![0; chunk.len()];
            while let Some(done) = set.join_next().await {
                let (i, id) = done.unwrap();
                chunk_ids[i] = id;
            }
            ids.extend(chunk_ids);
        }
        ids
    }

    /// `GET /v1/tasks/{id}`, or `None` while the server does not answer.
    pub async fn task(&self, task_id: i64) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}/v1/tasks/{task_id}", self.base))
            .send()
            .await
            .ok()?;
        assert!(
            response.status().is_success(),
            "GET task {task_id}: {}",
            response.status()
        );
        response.json().await.ok()
    }

    /// Waits (bounded) until every task is finished; returns them. Fails on a task in `error`.
    pub async fn wait_complete(&self, task_ids: &[i64]) -> Vec<Value> {
        let deadline = Instant::now() + GUARD;
        let mut done = Vec::with_capacity(task_ids.len());
        for &task_id in task_ids {
            loop {
                if let Some(task) = self.task(task_id).await {
                    match task["state"].as_str().unwrap() {
                        "complete" => {
                            done.push(task);
                            break;
                        }
                        "error" | "cancelled" => panic!("task {task_id} failed: {task:#}"),
                        _ => {}
                    }
                    assert!(
                        Instant::now() < deadline,
                        "task {task_id} not complete within {GUARD:?}: {task:#}"
                    );
                } else {
                    assert!(Instant::now() < deadline, "the server stopped answering");
                }
                tokio::time::sleep(POLL).await;
            }
        }
        done
    }
}

/// One line of the execution log: `<task_id> <step_name> <step_id> <attempt> <worker_id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    pub task_id: i64,
    pub step_name: String,
    pub step_id: i64,
    pub attempt: u32,
    pub worker_id: String,
}

/// Every execution logged so far.
pub fn executions(env: &TestEnv) -> Vec<Execution> {
    let text = std::fs::read_to_string(env.execution_log()).unwrap_or_default();
    text.lines()
        .map(|line| {
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts.len(), 5, "bad execution log line {line:?}");
            Execution {
                task_id: parts[0].parse().unwrap(),
                step_name: parts[1].to_owned(),
                step_id: parts[2].parse().unwrap(),
                attempt: parts[3].parse().unwrap(),
                worker_id: parts[4].to_owned(),
            }
        })
        .collect()
}

/// Executions grouped by step id.
pub fn executions_by_step(executions: &[Execution]) -> BTreeMap<i64, Vec<Execution>> {
    let mut by_step: BTreeMap<i64, Vec<Execution>> = BTreeMap::new();
    for execution in executions {
        by_step
            .entry(execution.step_id)
            .or_default()
            .push(execution.clone());
    }
    by_step
}

/// Whether every dispatched attempt must have reached a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Faults {
    /// Nothing was killed: every stored attempt ran exactly once.
    None,
    /// A process was killed: an attempt dispatched just before may never have reached a worker
    /// (it is stored but not logged); it must then have been retried.
    Injected,
}

/// Checks that no step attempt ran twice and that each step's stored state agrees with the
/// log: the attempts stored cover the attempts logged (equal without faults), and the result is
/// the last logged attempt's, from the worker that ran it.
pub fn assert_each_attempt_ran_once_and_was_applied_once(
    tasks: &[Value],
    env: &TestEnv,
    faults: Faults,
) {
    let log = executions(env);
    let by_step = executions_by_step(&log);
    for task in tasks {
        for step in task["steps"].as_array().unwrap() {
            if step["handler_class"] != json!("tasker.test") {
                continue;
            }
            let step_id = step["step_id"].as_i64().unwrap();
            let runs = by_step.get(&step_id).cloned().unwrap_or_default();
            let mut attempts: Vec<u32> = runs.iter().map(|r| r.attempt).collect();
            attempts.sort_unstable();
            let mut distinct = attempts.clone();
            distinct.dedup();
            assert_eq!(
                attempts, distinct,
                "an attempt of step {step_id} ran twice: {runs:?}"
            );
            let stored = step["attempts"].as_u64().unwrap();
            if faults == Faults::None {
                assert_eq!(
                    stored,
                    runs.len() as u64,
                    "step {step_id}: stored attempts differ from executions {runs:?}: {step}"
                );
            } else {
                assert!(
                    stored >= runs.len() as u64,
                    "step {step_id}: fewer attempts stored than executed {runs:?}: {step}"
                );
            }
            assert!(
                !runs.is_empty(),
                "step {step_id} is complete but never ran: {step}"
            );
            let last = runs.iter().max_by_key(|r| r.attempt).unwrap();
            assert_eq!(
                step["results"]["attempt"].as_u64().unwrap(),
                u64::from(last.attempt),
                "step {step_id}'s result is not its last attempt's: {step}"
            );
            assert_eq!(
                step["results"]["worker"].as_str().unwrap(),
                last.worker_id,
                "step {step_id}'s result is not from the worker that ran it last: {step}"
            );
        }
    }
}

/// A context for the order-fulfillment example.
pub fn order_context(order_id: u64) -> Value {
    json!({
        "order_id": order_id,
        "customer": {"email": format!("c{order_id}@example.com"), "name": "Test"},
        "items": [{"sku": "SKU-1", "quantity": 2, "unit_price_cents": 500}]
    })
}

/// One request per example template (six shapes), with valid contexts.
pub fn one_of_each_example(n: u64) -> Vec<Value> {
    let mut bodies: Vec<Value> = ["diamond", "linear", "mixed_dag", "parallel_merge", "tree"]
        .iter()
        .map(|name| json!({"namespace": "examples", "name": name, "context": {"n": n}}))
        .collect();
    bodies.push(json!({
        "namespace": "order_fulfillment", "name": "order_fulfillment",
        "context": order_context(n + 1)
    }));
    bodies
}
