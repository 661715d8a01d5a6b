//! `tasker demo`: a complete system in one command — the orchestrator (engine + HTTP API) on a
//! fresh SQLite database, worker processes (`tasker worker`, started from this same binary),
//! a batch of example tasks, a progress bar, a summary, and a clean shutdown. Exits 0 only when
//! every task completed.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Map, Value, json};
use tasker_engine::{EngineHandle, EngineOptions, TaskOutcome, TaskRequest, TemplateRegistry};
use tokio::sync::mpsc;

use crate::orchestrator::Orchestrator;
use crate::shutdown_signal::shutdown_signal;

/// The example templates, built in so the demo (and `tasker bench`) runs from any directory.
pub(crate) const EXAMPLE_TEMPLATES: [&str; 6] = [
    include_str!("../../../examples/templates/order_fulfillment.yaml"),
    include_str!("../../../examples/templates/diamond.yaml"),
    include_str!("../../../examples/templates/linear.yaml"),
    include_str!("../../../examples/templates/mixed_dag.yaml"),
    include_str!("../../../examples/templates/parallel_merge.yaml"),
    include_str!("../../../examples/templates/tree.yaml"),
];

/// How long workers may take to connect before the demo gives up.
const WORKER_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a worker may take to exit after SIGTERM before it is killed.
const WORKER_EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// Arguments of `tasker demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Worker processes to start.
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(crate) workers: u32,
    /// Tasks to run: a mix of every example template (order fulfillment, diamond, linear,
    /// mixed DAG, parallel merge, tree).
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) tasks: u32,
    /// Keep the database in this directory [default: a temporary directory, deleted at the end
    /// unless the demo fails].
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Where the HTTP API listens during the demo [default: a free port on 127.0.0.1].
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0")]
    pub(crate) http_addr: String,
    /// The endpoint workers connect to [default: a free port on 127.0.0.1].
    #[arg(long, value_name = "ENDPOINT", default_value = "tcp://127.0.0.1:0")]
    pub(crate) endpoint: String,
    /// Every `tasker.test` step sleeps this long, in milliseconds (0: measure the system itself).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub(crate) step_sleep_ms: u64,
    /// Steps each worker runs at once.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub(crate) capacity: u32,
    /// Give up when the tasks have not finished after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub(crate) timeout_secs: u64,
}

/// Runs the demo.
pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let mut templates = TemplateRegistry::new();
    for yaml in EXAMPLE_TEMPLATES {
        templates
            .add_yaml_str(yaml)
            .context("a built-in example template is invalid")?;
    }
    let (data_dir, temporary) = match &args.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
            (dir.clone(), None)
        }
        None => {
            let temporary = tempfile::Builder::new()
                .prefix("tasker-demo-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            (temporary.path().to_path_buf(), Some(temporary))
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(run_demo(args, templates, &data_dir));
    match (&outcome, temporary) {
        (Ok(ExitCode::SUCCESS), Some(temporary)) => drop(temporary),
        (_, Some(temporary)) => {
            let kept = temporary.keep();
            let _ = writeln!(
                io::stderr(),
                "tasker demo: kept the database and worker logs in {} for inspection",
                kept.display()
            );
        }
        (_, None) => {}
    }
    outcome
}

async fn run_demo(
    args: &DemoArgs,
    templates: TemplateRegistry,
    data_dir: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let interrupted = shutdown_signal("tasker demo")?;
    let database_url = format!("sqlite:{}", data_dir.join("tasker.db").display());
    let mut options = EngineOptions::with_endpoint(&args.endpoint);
    options.orchestrator_id = "orchestrator-demo".to_owned();
    let orchestrator =
        Orchestrator::start(options, &database_url, templates.clone(), &args.http_addr).await?;
    let engine = orchestrator.engine().clone();
    let mut err = io::stderr();
    writeln!(
        err,
        "tasker demo: orchestrator up — HTTP API on http://{} (try: curl http://{}/v1/tasks/1), \
         workers connect to {}, database {}",
        orchestrator.http_addr(),
        orchestrator.http_addr(),
        engine.endpoint(),
        database_url
    )?;

    let mut workers = WorkerProcesses::default();
    let result = async {
        for n in 1..=args.workers {
            workers.start(n, engine.endpoint(), args.capacity, data_dir)?;
        }
        wait_for_workers(&engine, args.workers, &mut workers).await?;
        writeln!(
            io::stderr(),
            "tasker demo: {} worker process{} connected (pids {}); submitting {} tasks",
            args.workers,
            if args.workers == 1 { "" } else { "es" },
            workers.pids().join(", "),
            args.tasks
        )?;
        drive_tasks(args, &engine, &templates, &mut workers, interrupted).await
    }
    .await;

    workers.stop().await;
    orchestrator.stop().await;
    let _ = writeln!(io::stderr(), "tasker demo: stopped");
    result
}

/// The worker child processes.
#[derive(Debug, Default)]
pub(crate) struct WorkerProcesses {
    children: Vec<Child>,
}

impl WorkerProcesses {
    fn start(
        &mut self,
        n: u32,
        endpoint: &str,
        capacity: u32,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<()> {
        self.start_named(
            &format!("demo-worker-{n}"),
            &data_dir.join(format!("worker-{n}.log")),
            endpoint,
            capacity,
            &[],
        )
    }

    /// Starts `tasker worker --name NAME` with its stderr in `log_path` and `env` added to its
    /// environment.
    pub(crate) fn start_named(
        &mut self,
        name: &str,
        log_path: &std::path::Path,
        endpoint: &str,
        capacity: u32,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the tasker executable")?;
        let log = std::fs::File::create(log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let child = Command::new(exe)
            .arg("worker")
            .arg("--connect")
            .arg(endpoint)
            .arg("--name")
            .arg(name)
            .arg("--capacity")
            .arg(capacity.to_string())
            .env_remove("TASKER_WORKER_HANDLERS")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start a worker process")?;
        self.children.push(child);
        Ok(())
    }

    pub(crate) fn pids(&self) -> Vec<String> {
        self.children.iter().map(|c| c.id().to_string()).collect()
    }

    /// The workers that have exited, with their status.
    pub(crate) fn exited(&mut self) -> Vec<String> {
        self.children
            .iter_mut()
            .filter_map(|child| match child.try_wait() {
                Ok(Some(status)) => Some(format!("worker pid {} exited ({status})", child.id())),
                _ => None,
            })
            .collect()
    }

    /// SIGTERM to every worker (they finish their steps and leave), then waits; a worker still
    /// running after [`WORKER_EXIT_TIMEOUT`] is killed.
    pub(crate) async fn stop(&mut self) {
        for child in &self.children {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + WORKER_EXIT_TIMEOUT;
        for child in &mut self.children {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        tracing::warn!(pid = child.id(), "worker did not stop; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
        self.children.clear();
    }
}

/// Waits (bounded) until `expected` workers have a session with the engine.
pub(crate) async fn wait_for_workers(
    engine: &EngineHandle,
    expected: u32,
    workers: &mut WorkerProcesses,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WORKER_CONNECT_TIMEOUT;
    loop {
        if engine.stats().workers_connected >= u64::from(expected) {
            return Ok(());
        }
        let exited = workers.exited();
        if !exited.is_empty() {
            bail!("{} before connecting", exited.join("; "));
        }
        if Instant::now() >= deadline {
            bail!(
                "only {} of {expected} workers connected within {} s",
                engine.stats().workers_connected,
                WORKER_CONNECT_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The request for task number `n` (0-based): templates in turn, each with a context that
/// satisfies its schema.
fn demo_request(n: u32, templates: &TemplateRegistry, step_sleep_ms: u64) -> TaskRequest {
    let all = templates.templates();
    let template = &all[n as usize % all.len()];
    let mut context = Map::new();
    context.insert("demo_task".to_owned(), json!(n + 1));
    if template.name() == "order_fulfillment" {
        context.insert("order_id".to_owned(), json!(n + 1));
        context.insert(
            "customer".to_owned(),
            json!({"email": format!("customer{}@example.com", n + 1), "name": "Demo Customer"}),
        );
        context.insert(
            "items".to_owned(),
            json!([
                {"sku": "BOOK-1", "quantity": 1 + n % 3, "unit_price_cents": 1999},
                {"sku": "MUG-2", "quantity": 1, "unit_price_cents": 899}
            ]),
        );
    }
    if step_sleep_ms > 0 {
        let behaviour: Map<String, Value> = template
            .steps()
            .iter()
            .filter(|step| step.handler_class == tasker_worker::builtin::TEST_HANDLER_CLASS)
            .map(|step| (step.name.clone(), json!({"sleep_ms": step_sleep_ms})))
            .collect();
        context.insert("test_behaviour".to_owned(), Value::Object(behaviour));
    }
    TaskRequest {
        namespace: template.namespace().to_owned(),
        name: template.name().to_owned(),
        version: Some(template.version().to_string()),
        context: Value::Object(context),
        initiator: Some("tasker demo".to_owned()),
        source_system: Some("tasker-cli".to_owned()),
        reason: Some("demo".to_owned()),
        tags: vec!["demo".to_owned()],
        ..TaskRequest::default()
    }
}

/// Submits the tasks, shows progress until every one finished, prints the summary.
async fn drive_tasks(
    args: &DemoArgs,
    engine: &EngineHandle,
    templates: &TemplateRegistry,
    workers: &mut WorkerProcesses,
    interrupted: impl std::future::Future<Output = ()>,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let stats_before = engine.stats();
    let (finished_tx, mut finished) = mpsc::unbounded_channel::<anyhow::Result<TaskOutcome>>();
    let mut task_ids = Vec::with_capacity(args.tasks as usize);
    let mut per_template: BTreeMap<String, u32> = BTreeMap::new();
    for n in 0..args.tasks {
        let request = demo_request(n, templates, args.step_sleep_ms);
        *per_template
            .entry(format!("{}/{}", request.namespace, request.name))
            .or_default() += 1;
        let created = engine
            .initialize_task(request)
            .await
            .context("submitting a demo task")?;
        task_ids.push(created.task_id);
        let engine = engine.clone();
        let finished_tx = finished_tx.clone();
        tokio::spawn(async move {
            let outcome = engine
                .handle(created.task_id)
                .await
                .with_context(|| format!("waiting for task {}", created.task_id));
            let _ = finished_tx.send(outcome);
        });
    }
    drop(finished_tx);

    let mut progress = Progress::new(args.tasks);
    let mut outcomes = Vec::with_capacity(args.tasks as usize);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    tokio::pin!(interrupted);
    let stopped_early = loop {
        tokio::select! {
            outcome = finished.recv() => match outcome {
                Some(outcome) => {
                    let outcome = outcome?;
                    progress.record(outcome.state.as_str() == "complete");
                    outcomes.push(outcome);
                }
                None => break None,
            },
            _ = ticker.tick() => {
                progress.draw(engine.stats().steps_dispatched - stats_before.steps_dispatched, started.elapsed());
                let exited = workers.exited();
                if exited.len() == workers.children.len() {
                    break Some(format!("every worker exited: {}", exited.join("; ")));
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                break Some(format!("the tasks did not finish within {} s", args.timeout_secs));
            }
            () = &mut interrupted => break Some("interrupted".to_owned()),
        }
    };
    let elapsed = started.elapsed();
    let stats = engine.stats();
    progress.draw(
        stats.steps_dispatched - stats_before.steps_dispatched,
        elapsed,
    );
    progress.finish();

    let mut steps_complete = 0usize;
    let mut steps_total = 0usize;
    for task_id in &task_ids {
        if let Ok(status) = engine.task_status(*task_id).await {
            steps_total += status.steps.len();
            steps_complete += status
                .steps
                .iter()
                .filter(|s| s.state.as_str() == "complete")
                .count();
        }
    }
    let complete = outcomes
        .iter()
        .filter(|o| o.state.as_str() == "complete")
        .count();
    let failed: Vec<&TaskOutcome> = outcomes
        .iter()
        .filter(|o| o.state.as_str() != "complete")
        .collect();
    let unfinished = task_ids.len() - outcomes.len();
    let dispatched = stats.steps_dispatched - stats_before.steps_dispatched;
    let seconds = elapsed.as_secs_f64();
    let mut out = io::stdout().lock();
    writeln!(out, "tasker demo summary")?;
    writeln!(
        out,
        "  tasks            {} submitted: {complete} complete, {} failed, {unfinished} unfinished",
        task_ids.len(),
        failed.len()
    )?;
    writeln!(
        out,
        "  templates        {}",
        per_template
            .iter()
            .map(|(name, count)| format!("{name} ×{count}"))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    writeln!(
        out,
        "  steps executed   {steps_complete} of {steps_total} complete ({dispatched} attempts dispatched)"
    )?;
    writeln!(out, "  workers          {}", args.workers)?;
    writeln!(out, "  elapsed          {seconds:.2} s")?;
    writeln!(
        out,
        "  throughput       {:.0} steps/s, {:.1} tasks/s",
        steps_complete as f64 / seconds.max(1e-9),
        complete as f64 / seconds.max(1e-9)
    )?;
    let handoff = &stats.handoff_latency;
    match (handoff.p50(), handoff.p99()) {
        (Some(p50), Some(p99)) => writeln!(
            out,
            "  step handoff     p50 {:.2} ms, p99 {:.2} ms ({} samples: parent result received → child dispatched)",
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0,
            handoff.samples_us.len()
        )?,
        _ => writeln!(out, "  step handoff     no samples")?,
    }
    for outcome in failed.iter().take(10) {
        writeln!(
            out,
            "  task {} {}: {}",
            outcome.task_id,
            outcome.state,
            outcome.reason.as_deref().unwrap_or("no reason given")
        )?;
    }
    drop(out);
    if let Some(reason) = stopped_early {
        bail!("stopped before every task finished: {reason}");
    }
    Ok(if complete == task_ids.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A one-line progress bar on stderr, redrawn in place on a terminal; elsewhere one line per
/// tenth of the tasks.
#[derive(Debug)]
struct Progress {
    total: u32,
    complete: u32,
    failed: u32,
    terminal: bool,
    last_tenth: u32,
}

impl Progress {
    fn new(total: u32) -> Self {
        Self {
            total,
            complete: 0,
            failed: 0,
            terminal: io::stderr().is_terminal(),
            last_tenth: 0,
        }
    }

    fn record(&mut self, complete: bool) {
        if complete {
            self.complete += 1;
        } else {
            self.failed += 1;
        }
    }

    fn draw(&mut self, steps_dispatched: u64, elapsed: Duration) {
        let done = self.complete + self.failed;
        let line = render_progress(
            done,
            self.total,
            self.failed,
            steps_dispatched,
            elapsed.as_secs_f64(),
        );
        let mut err = io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r{line}\x1b[K");
            let _ = err.flush();
        } else {
            let tenth = done * 10 / self.total.max(1);
            if tenth > self.last_tenth {
                self.last_tenth = tenth;
                let _ = writeln!(err, "{line}");
            }
        }
    }

    fn finish(&self) {
        if self.terminal {
            let _ = writeln!(io::stderr());
        }
    }
}

/// `[██████░░░░░░░░░░░░░░]  15/50 tasks  0 failed  92 steps  1.3 s`
fn render_progress(done: u32, total: u32, failed: u32, steps: u64, seconds: f64) -> String {
    const WIDTH: u32 = 30;
    let filled = (done * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH)
        .min(WIDTH);
    format!(
        "[{}{}] {done:>width$}/{total} tasks  {failed} failed  {steps} steps  {seconds:.1} s",
        "█".repeat(filled as usize),
        "░".repeat((WIDTH - filled) as usize),
        width = total.to_string().len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> TemplateRegistry {
        let mut templates = TemplateRegistry::new();
        for yaml in EXAMPLE_TEMPLATES {
            templates.add_yaml_str(yaml).expect("valid example");
        }
        templates
    }

    #[test]
    fn every_request_uses_an_example_and_validates() {
        let templates = registry();
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..12 {
            let request = demo_request(n, &templates, 5);
            let template = templates
                .get(
                    &request.namespace,
                    &request.name,
                    request.version.as_deref(),
                )
                .expect("template exists");
            tasker_core::context::ContextValidator::for_template(&template)
                .validate(&request.context)
                .expect("context validates");
            seen.insert(request.name.clone());
            if request.name == "diamond" {
                assert_eq!(
                    request.context["test_behaviour"]["a"],
                    json!({"sleep_ms": 5})
                );
            }
        }
        assert_eq!(seen.len(), 6, "{seen:?}");
    }

    #[test]
    fn the_bar_fills_with_progress() {
        assert_eq!(
            render_progress(15, 30, 1, 92, 1.26),
            format!(
                "[{}{}] 15/30 tasks  1 failed  92 steps  1.3 s",
                "█".repeat(15),
                "░".repeat(15)
            )
        );
        assert!(render_progress(0, 5, 0, 0, 0.0).starts_with(&format!("[{}]", "░".repeat(30))));
    }
}
