//! The command line, as clap types. Each subcommand's arguments live here; its behaviour lives in
//! its own module.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Tasker: a workflow orchestration engine.
///
/// Describe a workflow once, as a task template in YAML: a versioned DAG of steps, each naming
/// the handler that runs it, what it depends on, and how it is retried. Tasker's orchestrator
/// owns everything about running it (dependency resolution, state, retries with backoff,
/// persistence, recovery) and hands ready steps over ZeroMQ to workers written in any language.
#[derive(Debug, Parser)]
#[command(name = "tasker", version, about, long_about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Work with task templates (the YAML workflow definitions).
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
    /// Run a worker with the built-in handlers (`tasker.test` and the order-fulfillment
    /// example) until SIGINT or SIGTERM, then shut down gracefully.
    Worker(crate::worker_command::WorkerArgs),
    /// Run the orchestrator: the engine, the worker endpoint and the HTTP API, until SIGINT or
    /// SIGTERM. Needs no configuration: SQLite in ./tasker-data, workers on
    /// tcp://127.0.0.1:5555, HTTP on 127.0.0.1:8080, templates from examples/templates (or
    /// ./templates). Every setting comes from its flag, else its TASKER_* variable, else the
    /// --config file, else the default.
    Serve(crate::serve_config::ServeArgs),
    /// Create and inspect tasks through a running `tasker serve`.
    Task {
        #[command(subcommand)]
        command: crate::task_command::TaskCommand,
    },
    /// Run a complete system in one process group (orchestrator, worker processes, a batch of
    /// example tasks), show progress and a summary, and shut down. Exits 0 only when every task
    /// completed.
    Demo(crate::demo_command::DemoArgs),
    /// Measure the engine on this machine: N tasks of a no-op template, steps per second and
    /// step handoff latency, next to raw ZeroMQ round trips and raw database commits measured
    /// in the same run. Exits 0 only when every task completed and every step ran exactly once.
    Bench(crate::bench_command::BenchArgs),
}

/// `tasker template …`
#[derive(Debug, Subcommand)]
pub(crate) enum TemplateCommand {
    /// Check template files and summarise each valid one.
    ///
    /// Prints `ok    FILE: NAMESPACE/NAME vVERSION, N steps (roots: …; leaves: …)` for each valid
    /// file and `error FILE: PROBLEM` (on stderr) for each invalid one. Exits with 0 when every
    /// file is valid, 1 otherwise.
    Validate(ValidateArgs),
}

/// Arguments of `tasker template validate`.
#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// Template files to check.
    #[arg(required = true, value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,

    /// Also apply this environment's overrides (e.g. `production`) and report which steps they
    /// change. Every environment is validated either way.
    #[arg(long, value_name = "NAME")]
    pub(crate) env: Option<String>,
}
