//! `tasker worker`: runs the Rust SDK's built-in handlers as a worker until SIGINT or SIGTERM.
//! Thin: it turns arguments into [`WorkerOptions`], picks handlers from
//! [`tasker_worker::builtin::registry`] and calls [`Worker::run`].

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tasker_worker::{Worker, WorkerOptions, builtin};

/// The endpoint `tasker worker` connects to by default: where `tasker serve` binds by default.
const DEFAULT_CONNECT: &str = "tcp://127.0.0.1:5555";

/// Arguments of `tasker worker`.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// The orchestrator's endpoint (`tcp://HOST:PORT`, `ipc:///PATH`). Without it, the
    /// environment variable `TASKER_WORKER_CONNECT`, then `TASKER_WORKER_ENDPOINT` (the Python
    /// SDK's name), then `tcp://127.0.0.1:5555` (where `tasker serve` binds by default).
    #[arg(long, env = "TASKER_WORKER_CONNECT", value_name = "ENDPOINT")]
    pub(crate) connect: Option<String>,

    /// Most steps run at once (1–10000).
    #[arg(
        long,
        env = "TASKER_WORKER_CAPACITY",
        value_name = "N",
        default_value_t = tasker_worker::options::DEFAULT_CAPACITY,
        value_parser = clap::value_parser!(u32).range(1..=10_000)
    )]
    pub(crate) capacity: u32,

    /// Display name for dashboards and logs [default: `tasker worker` and the process id].
    #[arg(long, env = "TASKER_WORKER_NAME", value_name = "NAME")]
    pub(crate) name: Option<String>,

    /// This process's worker id (1–128 bytes of `A-Z a-z 0-9 . _ : @ -`, unique per process)
    /// [default: HOSTNAME-PID-RANDOM].
    #[arg(long, env = "TASKER_WORKER_ID", value_name = "ID")]
    pub(crate) worker_id: Option<String>,

    /// The built-in handler classes to offer, comma-separated [default: all of them:
    /// `tasker.test` and the four `OrderFulfillment::*` handlers].
    #[arg(
        long,
        env = "TASKER_WORKER_HANDLERS",
        value_name = "CLASS,...",
        value_delimiter = ','
    )]
    pub(crate) handlers: Vec<String>,

    /// The heartbeat interval to ask the orchestrator for, in milliseconds (100–60000)
    /// [default: the orchestrator's].
    #[arg(long, env = "TASKER_WORKER_HEARTBEAT_INTERVAL_MS", value_name = "MS")]
    pub(crate) heartbeat_interval_ms: Option<u64>,

    /// On shutdown, how long running steps may take to finish, in milliseconds.
    #[arg(
        long,
        env = "TASKER_WORKER_SHUTDOWN_GRACE_MS",
        value_name = "MS",
        default_value_t = 30_000
    )]
    pub(crate) shutdown_grace_ms: u64,
}

/// Runs the worker until SIGINT or SIGTERM; exits 0 after a graceful shutdown, 1 when the
/// worker could not start or stopped on an error (for example a protocol version mismatch).
pub(crate) fn run(args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    let mut registry = builtin::registry();
    let wanted: Vec<&str> = args
        .handlers
        .iter()
        .map(|class| class.trim())
        .filter(|class| !class.is_empty())
        .collect();
    if !wanted.is_empty() {
        let available = registry.handler_classes();
        let missing = registry.retain_only(&wanted);
        if !missing.is_empty() {
            bail!(
                "no built-in handler named {}; the built-in handler classes are: {}",
                missing.join(", "),
                available.join(", ")
            );
        }
    }

    let endpoint = args
        .connect
        .clone()
        .or_else(|| std::env::var("TASKER_WORKER_ENDPOINT").ok())
        .filter(|endpoint| !endpoint.is_empty())
        .unwrap_or_else(|| DEFAULT_CONNECT.to_owned());
    let mut options = WorkerOptions::new(&endpoint);
    options.capacity = args.capacity;
    options.shutdown_grace = Duration::from_millis(args.shutdown_grace_ms);
    options.heartbeat_interval = args.heartbeat_interval_ms.map(Duration::from_millis);
    if let Some(worker_id) = &args.worker_id {
        options.worker_id.clone_from(worker_id);
    }
    options.name = match &args.name {
        Some(name) => name.clone(),
        None => format!("tasker worker (pid {})", std::process::id()),
    };
    let worker = Worker::new(options)?;
    writeln!(
        io::stderr(),
        "tasker worker {} connecting to {} with handlers: {}",
        worker.worker_id(),
        endpoint,
        registry.handler_classes().join(", ")
    )?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        worker
            .run(registry, shutdown)
            .await
            .context("the worker stopped")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on the first SIGINT or SIGTERM.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "shutting down");
        let _ = writeln!(
            io::stderr(),
            "tasker worker: {name} received, finishing running steps"
        );
    })
}
