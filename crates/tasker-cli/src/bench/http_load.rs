//! `tasker bench --http`: Tasker as a user meets it — the engine behind the HTTP API of `tasker
//! serve` on a loopback port, tasks created with `POST /v1/tasks` and awaited with the long poll
//! `GET /v1/tasks/{id}?wait_ms=N`, by HTTP clients with keep-alive connections.
//!
//! Three phases, one after the other, on one engine and one set of workers:
//! 1. **latency**: one client creates a task and waits for its end, in turn (after a warm-up);
//!    the time from sending the create request to reading the finished task.
//! 2. **throughput**: C clients at once, each creating a task and waiting for it, in turn,
//!    until N tasks finished: tasks/s and steps/s as clients see them.
//! 3. **creation**: C clients at once creating N tasks without waiting: creations/s (every
//!    task is then awaited and checked before the report).
//!
//! Every task of every phase must end `complete`, or the run fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};
use tasker_core::template::TaskTemplate;
use tasker_engine::{Engine, EngineHandle, EngineOptions, TemplateRegistry};
use tokio::task::JoinSet;

use super::fleet::{Fleet, WorkerMode};
use super::report::{LatencySummary, micros, peak_rss_kib, per_second};

/// The longest a client holds one long poll, in milliseconds.
const WAIT_MS: u64 = 30_000;

/// What the HTTP benchmark runs.
#[derive(Debug, Clone)]
pub(crate) struct HttpLoadSettings {
    pub(crate) engine_options: EngineOptions,
    pub(crate) templates: TemplateRegistry,
    pub(crate) template: Arc<TaskTemplate>,
    /// Tasks of the latency phase (after `warmup` more).
    pub(crate) latency_tasks: u32,
    pub(crate) warmup: u32,
    /// Tasks of the throughput phase, and of the creation phase.
    pub(crate) tasks: u32,
    /// Concurrent clients of the throughput and creation phases.
    pub(crate) clients: u32,
    pub(crate) workers: u32,
    pub(crate) capacity: u32,
    pub(crate) worker_mode: WorkerMode,
    pub(crate) dir: std::path::PathBuf,
    pub(crate) timeout: Duration,
}

/// The figures of `tasker bench --http`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HttpLoadReport {
    /// `namespace/name` of the template.
    pub(crate) template: String,
    pub(crate) steps_per_task: usize,
    pub(crate) workers: u32,
    pub(crate) capacity: u32,
    pub(crate) worker_mode: &'static str,
    pub(crate) database: String,
    pub(crate) cpus: usize,
    /// One client creating and waiting in turn: create request sent → finished task read.
    pub(crate) sequential: PhaseReport,
    /// `clients` clients creating and waiting in turn.
    pub(crate) concurrent: PhaseReport,
    /// `clients` clients creating without waiting.
    pub(crate) creation: PhaseReport,
    /// Peak resident memory of this process (engine, API, in-process workers), KiB.
    pub(crate) peak_rss_kib: Option<u64>,
    /// Every task of every phase ended `complete`.
    pub(crate) all_complete: bool,
}

/// One phase's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PhaseReport {
    pub(crate) clients: u32,
    pub(crate) tasks: u32,
    pub(crate) seconds: f64,
    pub(crate) tasks_per_s: f64,
    pub(crate) steps_per_s: f64,
    /// Per task: create request sent → finished task read (creation phase: → 201 read).
    pub(crate) latency: Option<LatencySummary>,
}

impl HttpLoadReport {
    /// The report for people.
    pub(crate) fn render_text(&self) -> String {
        let line = |name: &str, phase: &PhaseReport, what: &str| {
            let latency = phase.latency.as_ref().map_or_else(
                || "no samples".to_owned(),
                |l| {
                    format!(
                        "p50 {:.2} ms · p95 {:.2} ms · p99 {:.2} ms · max {:.2} ms",
                        l.p50_us as f64 / 1000.0,
                        l.p95_us as f64 / 1000.0,
                        l.p99_us as f64 / 1000.0,
                        l.max_us as f64 / 1000.0
                    )
                },
            );
            format!(
                "  {name:<12} {} client(s), {} tasks in {:.2} s: {:.0} tasks/s, {:.0} steps/s; {what} {latency}\n",
                phase.clients, phase.tasks, phase.seconds, phase.tasks_per_s, phase.steps_per_s
            )
        };
        let mut out = format!(
            "tasker bench --http: {} ({} steps), {} {} workers × {}, {}, {} CPUs\n",
            self.template,
            self.steps_per_task,
            self.workers,
            self.worker_mode.replace('_', "-"),
            self.capacity,
            self.database,
            self.cpus
        );
        out.push_str(&line(
            "sequential",
            &self.sequential,
            "create → finished seen",
        ));
        out.push_str(&line(
            "concurrent",
            &self.concurrent,
            "create → finished seen",
        ));
        out.push_str(&line("creation", &self.creation, "create → 201"));
        if let Some(rss) = self.peak_rss_kib {
            out.push_str(&format!("  peak rss     {} MiB\n", rss / 1024));
        }
        out.push_str(&format!(
            "  verified     {}\n",
            if self.all_complete {
                "OK: every task complete"
            } else {
                "FAILED: some task did not complete"
            }
        ));
        out
    }
}

/// Runs the three phases against an engine on `store`, behind the HTTP API on a loopback port.
pub(crate) async fn run(
    settings: HttpLoadSettings,
    store: Arc<dyn tasker_store::Store>,
    database: String,
) -> anyhow::Result<HttpLoadReport> {
    let engine = Engine::start(
        settings.engine_options.clone(),
        store,
        settings.templates.clone(),
    )
    .await
    .context("cannot start the engine")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the HTTP API")?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(tasker_api::serve(listener, engine.clone(), async move {
        let _ = api_stopped.await;
    }));
    let outcome = phases(&settings, &engine, &base, database).await;
    let _ = stop_api.send(());
    let _ = api.await;
    engine.shutdown().await;
    outcome
}

async fn phases(
    settings: &HttpLoadSettings,
    engine: &EngineHandle,
    base: &str,
    database: String,
) -> anyhow::Result<HttpLoadReport> {
    let mut fleet = Fleet::start(
        settings.worker_mode,
        settings.workers,
        settings.capacity,
        engine.endpoint(),
        &settings.dir,
    )
    .await?;
    let connected = fleet.wait_connected(engine, settings.workers).await;
    let outcome = async {
        connected?;
        let client = Client::new(base, &settings.template, settings.timeout)?;
        let steps = settings.template.steps().len();
        eprintln!(
            "tasker bench --http: sequential, {} tasks after {} warm-up",
            settings.latency_tasks, settings.warmup
        );
        let mut all_complete = true;
        for _ in 0..settings.warmup {
            let (_, complete) = client.create_and_wait().await?;
            all_complete &= complete;
        }
        let started = Instant::now();
        let mut samples = Vec::with_capacity(settings.latency_tasks as usize);
        for _ in 0..settings.latency_tasks {
            let (latency, complete) = client.create_and_wait().await?;
            all_complete &= complete;
            samples.push(latency);
        }
        let sequential = phase(1, settings.latency_tasks, started.elapsed(), steps, samples);

        eprintln!(
            "tasker bench --http: concurrent, {} clients, {} tasks",
            settings.clients, settings.tasks
        );
        let (concurrent, complete) = concurrently(&client, settings, steps, true).await?;
        all_complete &= complete;
        eprintln!(
            "tasker bench --http: creation, {} clients, {} tasks",
            settings.clients, settings.tasks
        );
        let (creation, complete) = concurrently(&client, settings, steps, false).await?;
        all_complete &= complete;
        if let Some(why) = fleet.stopped_early() {
            bail!("workers stopped during the run: {why}");
        }
        anyhow::Ok(HttpLoadReport {
            template: format!(
                "{}/{}",
                settings.template.namespace(),
                settings.template.name()
            ),
            steps_per_task: steps,
            workers: settings.workers,
            capacity: settings.capacity,
            worker_mode: settings.worker_mode.as_str(),
            database,
            cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            sequential,
            concurrent,
            creation,
            peak_rss_kib: peak_rss_kib(None),
            all_complete,
        })
    }
    .await;
    fleet.stop().await?;
    outcome
}

fn phase(
    clients: u32,
    tasks: u32,
    elapsed: Duration,
    steps: usize,
    samples: Vec<u64>,
) -> PhaseReport {
    let seconds = elapsed.as_secs_f64();
    PhaseReport {
        clients,
        tasks,
        seconds,
        tasks_per_s: per_second(f64::from(tasks), seconds),
        steps_per_s: per_second(f64::from(tasks) * steps as f64, seconds),
        latency: LatencySummary::of_micros(samples),
    }
}

/// `settings.clients` clients share `settings.tasks` tasks; each creates one and (with `wait`)
/// waits for it, in turn. Without `wait`, the tasks are awaited after the clock stops.
async fn concurrently(
    client: &Client,
    settings: &HttpLoadSettings,
    steps: usize,
    wait: bool,
) -> anyhow::Result<(PhaseReport, bool)> {
    let next = Arc::new(AtomicU32::new(0));
    let mut set = JoinSet::new();
    let started = Instant::now();
    for _ in 0..settings.clients {
        let client = client.clone();
        let next = Arc::clone(&next);
        let total = settings.tasks;
        set.spawn(async move {
            let mut samples = Vec::new();
            let mut created = Vec::new();
            let mut complete = true;
            while next.fetch_add(1, Ordering::Relaxed) < total {
                if wait {
                    let (latency, done) = client.create_and_wait().await?;
                    samples.push(latency);
                    complete &= done;
                } else {
                    let sent = Instant::now();
                    created.push(client.create().await?);
                    samples.push(micros(sent.elapsed()));
                }
            }
            anyhow::Ok((samples, created, complete))
        });
    }
    let mut samples = Vec::new();
    let mut created = Vec::new();
    let mut complete = true;
    while let Some(joined) = set.join_next().await {
        let (mine, ids, done) = joined.context("a client task failed")??;
        samples.extend(mine);
        created.extend(ids);
        complete &= done;
    }
    let elapsed = started.elapsed();
    for task_id in created {
        complete &= client.wait(task_id).await?;
    }
    Ok((
        phase(settings.clients, settings.tasks, elapsed, steps, samples),
        complete,
    ))
}

/// An HTTP client of the API (one keep-alive connection pool shared by every clone).
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    create_body: Arc<Value>,
}

impl Client {
    pub(crate) fn new(
        base: &str,
        template: &TaskTemplate,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout.min(Duration::from_millis(WAIT_MS)) + Duration::from_secs(10))
            .pool_max_idle_per_host(256)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            http,
            base: base.to_owned(),
            create_body: Arc::new(json!({
                "namespace": template.namespace(),
                "name": template.name(),
                "version": template.version().to_string(),
                "context": {},
            })),
        })
    }

    /// Creates a task; returns its id.
    async fn create(&self) -> anyhow::Result<i64> {
        let response = self
            .http
            .post(format!("{}/v1/tasks", self.base))
            .json(&*self.create_body)
            .send()
            .await
            .context("POST /v1/tasks")?;
        let status = response.status();
        let body: Value = response.json().await.context("reading the create answer")?;
        if status.as_u16() != 201 {
            bail!("POST /v1/tasks answered {status}: {body}");
        }
        body["task_id"]
            .as_i64()
            .with_context(|| format!("no task_id in the create answer: {body}"))
    }

    /// Waits (long polls) until the task finished; returns whether it is `complete`.
    async fn wait(&self, task_id: i64) -> anyhow::Result<bool> {
        loop {
            let response = self
                .http
                .get(format!(
                    "{}/v1/tasks/{task_id}?wait_ms={WAIT_MS}",
                    self.base
                ))
                .send()
                .await
                .context("GET /v1/tasks/{id}?wait_ms")?;
            let status = response.status();
            let body: Value = response.json().await.context("reading the task")?;
            if !status.is_success() {
                bail!("GET /v1/tasks/{task_id} answered {status}: {body}");
            }
            match body["state"].as_str() {
                Some("pending" | "in_progress") => continue,
                Some(state) => return Ok(state == "complete"),
                None => bail!("no state in the task answer: {body}"),
            }
        }
    }

    /// Waits (bounded) until the server answers `GET /health/ready` with 200.
    pub(crate) async fn wait_healthy(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let ready = self
                .http
                .get(format!("{}/health/ready", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the server at {} was not ready within {} s",
                    self.base,
                    within.as_secs()
                );
            }
            // Polling a server that is starting: nothing to wait on but its port.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a task and waits for it: the latency in µs and whether it completed.
    pub(crate) async fn create_and_wait(&self) -> anyhow::Result<(u64, bool)> {
        let sent = Instant::now();
        let task_id = self.create().await?;
        let complete = self.wait(task_id).await?;
        Ok((micros(sent.elapsed()), complete))
    }
}
