//! `tasker bench`: the engine's throughput and step handoff latency on this machine, next to the
//! physical limits measured in the same run — raw ZeroMQ round trips over the same transport and
//! raw database commits on the same database. Exits 0 only when every task completed and every
//! step ran exactly once.
//!
//! Defaults, and why:
//! - **tcp on 127.0.0.1** (a free port): the transport of a real deployment (`tasker serve`
//!   binds tcp; workers run on other hosts), so the figure is the one users get; `--endpoint ipc`
//!   measures Unix sockets instead.
//! - **In-process workers** (Rust SDK workers on this process's runtime): they count executions
//!   in memory, so checking "every step exactly once" adds nothing to a no-op step, and no
//!   process start-up falls into the window. `--worker-processes` runs `tasker worker` children
//!   instead (the deployment shape); they count through the `tasker.test` execution log, one
//!   file append per step.
//! - **A fresh SQLite file** in a temporary directory, with SQLite's durable default
//!   (`synchronous=full`). `--database-url postgres://…` measures PostgreSQL.
//! - **All tasks created before the workers start** (creation timed on its own); `--concurrency
//!   M` runs a closed loop of M active tasks instead. See `bench::workload`.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tasker_core::template::TaskTemplate;
use tasker_engine::{EngineOptions, TemplateRegistry};
use tasker_store::{Backend, DatabaseUrl, SqliteDurability};
use tasker_worker::builtin::TEST_HANDLER_CLASS;

use crate::bench::fleet::WorkerMode;
use crate::bench::http_load::{self, HttpLoadSettings};
use crate::bench::report::{Baseline, BenchConfig, BenchReport, Memory, Ratios, ratio};
use crate::bench::soak::{self, SoakSettings};
use crate::bench::transport_baseline::TransportKind;
use crate::bench::workload::WorkloadSettings;
use crate::bench::{report, store_baseline, transport_baseline, workload};
use crate::demo_command::EXAMPLE_TEMPLATES;

/// Rows per transaction in the batched-commit baseline.
const BATCHED_COMMIT_ROWS: u32 = 100;

/// Arguments of `tasker bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Tasks to run.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) tasks: u32,

    /// The template of every task: the name of an example template (diamond, linear, tree,
    /// parallel_merge, mixed_dag) or a YAML file. Every step must use the `tasker.test` handler,
    /// which with `handler_config: {}` does nothing and returns a small output.
    #[arg(long, value_name = "NAME|FILE", default_value = "diamond")]
    pub(crate) template: String,

    /// Workers to run.
    #[arg(long, value_name = "K", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(crate) workers: u32,

    /// Steps each worker runs at once (its credit with the engine).
    #[arg(long, value_name = "C", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) capacity: u32,

    /// The database: `sqlite:PATH` or `postgres://USER@HOST:PORT/DB`. Use an empty, throwaway
    /// database: the run adds rows (the commit baseline's ledger rows among them) [default: a
    /// fresh SQLite file in a temporary directory, deleted afterwards].
    #[arg(long, value_name = "URL")]
    pub(crate) database_url: Option<String>,

    /// The endpoint the engine binds and workers connect to: `tcp` (a free port on
    /// 127.0.0.1), `ipc` (a socket in the temporary directory), `inproc` (in-process workers
    /// only) or a full ZeroMQ endpoint. The ZeroMQ baseline uses the same transport.
    #[arg(long, value_name = "ENDPOINT", default_value = "tcp")]
    pub(crate) endpoint: String,

    /// Run the workers as `tasker worker` child processes of this executable instead of Rust
    /// SDK workers inside this process.
    #[arg(long)]
    pub(crate) worker_processes: bool,

    /// Closed loop: keep at most M tasks active, creating the next one as one finishes
    /// (creation then falls inside the run window). Without it every task is created before
    /// the workers start, and the run window measures execution alone.
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) concurrency: Option<u32>,

    /// When every task is created up front: tasks per creation request — 1 calls
    /// `initialize_task` per task (32 at a time), more calls `initialize_tasks` (one
    /// transaction per call). Ignored with --concurrency, which creates one task at a time.
    #[arg(long, value_name = "N", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) create_batch: u32,

    /// The engine's batch size: most steps in one `step_batch`.
    #[arg(long, value_name = "N", default_value_t = tasker_engine::options::DEFAULT_BATCH_SIZE)]
    pub(crate) batch_size: usize,

    /// Round trips in the ZeroMQ baseline.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) round_trips: u32,

    /// Rows in the database baseline, committed one per transaction and then 100 per
    /// transaction.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) commit_rows: u32,

    /// Give up (and fail) when the run has not finished after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 1800)]
    pub(crate) timeout_secs: u64,

    /// Print the report as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    pub(crate) json: bool,

    /// Measure through the HTTP API instead, as a user of `tasker serve` meets it: clients
    /// create tasks with `POST /v1/tasks` and wait with the long poll. Three phases: one client
    /// creating and waiting in turn (--latency-tasks), --clients clients doing the same for
    /// --tasks tasks, and --clients clients creating --tasks tasks without waiting. The
    /// baselines are not measured in this mode.
    #[arg(long)]
    pub(crate) http: bool,

    /// With --http: concurrent clients of the throughput and creation phases.
    #[arg(long, value_name = "C", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) clients: u32,

    /// With --http: tasks of the sequential (latency) phase, after --warmup more.
    #[arg(long, value_name = "N", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) latency_tasks: u32,

    /// With --http: warm-up tasks before the sequential phase (not measured).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub(crate) warmup: u32,

    /// A soak: `tasker serve` as a child process with `tasker worker` children, --clients HTTP
    /// clients creating and awaiting tasks until --soak-steps steps ran; the orchestrator's
    /// resident memory and the steps/s are sampled at every tenth of the run.
    #[arg(long)]
    pub(crate) soak: bool,

    /// With --soak: steps to run (rounded up to whole tasks).
    #[arg(long, value_name = "N", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub(crate) soak_steps: u64,
}

/// Runs the benchmark and prints its report; exits 1 when the final check failed.
pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if args.http {
        return run_http(args);
    }
    if args.soak {
        return run_soak(args);
    }
    let Setup {
        templates,
        template,
        worker_mode,
        dir,
        endpoint,
        database_url,
        durability,
        runtime,
    } = Setup::of(args)?;
    let outcome = runtime.block_on(measure(
        args,
        templates,
        template,
        worker_mode,
        endpoint,
        &database_url,
        durability,
        dir.path(),
    ));
    let report = match outcome {
        Ok(report) => report,
        Err(error) => {
            let kept = dir.keep();
            let _ = writeln!(
                io::stderr(),
                "tasker bench: kept the database and worker logs in {} for inspection",
                kept.display()
            );
            return Err(error);
        }
    };
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).context("writing the report")?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.render_text())?;
    }
    out.flush()?;
    if report.workload.verification.ok {
        Ok(ExitCode::SUCCESS)
    } else {
        let kept = dir.keep();
        let _ = writeln!(
            io::stderr(),
            "tasker bench: the final check FAILED; kept the database and worker logs in {}",
            kept.display()
        );
        Ok(ExitCode::FAILURE)
    }
}

/// `tasker bench --soak`: see [`crate::bench::soak`].
fn run_soak(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let (_, template) = load_template(&args.template)?;
    let template_yaml = serde_json::to_string(&*template).context("cannot write the template")?;
    let dir = tempfile::Builder::new()
        .prefix("tasker-soak-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(soak::run(SoakSettings {
        template,
        template_yaml,
        steps: args.soak_steps,
        clients: args.clients,
        workers: args.workers,
        capacity: args.capacity,
        dir: dir.path().to_path_buf(),
        timeout: Duration::from_secs(args.timeout_secs),
    }));
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            let kept = dir.keep();
            eprintln!(
                "tasker bench --soak: kept the logs in {} for inspection",
                kept.display()
            );
            return Err(error);
        }
    };
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).context("writing the report")?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.render_text())?;
    }
    out.flush()?;
    Ok(if report.verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What every engine-in-process mode starts from: the template, the workers' kind, a temporary
/// directory, the endpoint, the database and a runtime.
struct Setup {
    templates: TemplateRegistry,
    template: Arc<TaskTemplate>,
    worker_mode: WorkerMode,
    dir: tempfile::TempDir,
    endpoint: String,
    database_url: String,
    durability: String,
    runtime: tokio::runtime::Runtime,
}

impl Setup {
    fn of(args: &BenchArgs) -> anyhow::Result<Self> {
        let (templates, template) = load_template(&args.template)?;
        let worker_mode = if args.worker_processes {
            WorkerMode::Processes
        } else {
            WorkerMode::InProcess
        };
        let dir = tempfile::Builder::new()
            .prefix("tasker-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let endpoint = resolve_endpoint(&args.endpoint, dir.path(), worker_mode)?;
        let database_url = args
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}", dir.path().join("bench.db").display()));
        let durability = durability_of(&database_url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok(Self {
            templates,
            template,
            worker_mode,
            dir,
            endpoint,
            database_url,
            durability,
            runtime,
        })
    }
}

/// `tasker bench --http`: see [`crate::bench::http_load`].
fn run_http(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let Setup {
        templates,
        template,
        worker_mode,
        dir,
        endpoint,
        database_url,
        durability,
        runtime,
    } = Setup::of(args)?;
    let report = runtime.block_on(async {
        let store = tasker_store::connect(&database_url)
            .await
            .context("cannot open the database")?;
        let mut engine_options = EngineOptions::with_endpoint(&endpoint);
        engine_options.orchestrator_id = "tasker-bench".to_owned();
        engine_options.batch_size = args.batch_size;
        let database = format!("{} ({durability})", hide_password(&database_url));
        let outcome = http_load::run(
            HttpLoadSettings {
                engine_options,
                templates,
                template,
                latency_tasks: args.latency_tasks,
                warmup: args.warmup,
                tasks: args.tasks,
                clients: args.clients,
                workers: args.workers,
                capacity: args.capacity,
                worker_mode,
                dir: dir.path().to_path_buf(),
                timeout: Duration::from_secs(args.timeout_secs),
            },
            Arc::clone(&store),
            database,
        )
        .await;
        store.close().await;
        outcome
    })?;
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).context("writing the report")?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.render_text())?;
    }
    out.flush()?;
    Ok(if report.all_complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    args: &BenchArgs,
    templates: TemplateRegistry,
    template: Arc<TaskTemplate>,
    worker_mode: WorkerMode,
    endpoint: String,
    database_url: &str,
    durability: String,
    dir: &Path,
) -> anyhow::Result<BenchReport> {
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let kind = TransportKind::of_endpoint(&endpoint)?;
    eprintln!(
        "tasker bench: ZeroMQ baseline ({} round trips over {})",
        args.round_trips,
        kind.as_str()
    );
    let zeromq = transport_baseline::measure(kind, dir, args.round_trips).await?;
    let store = tasker_store::connect(database_url)
        .await
        .context("cannot open the database")?;
    let outcome = async {
        eprintln!(
            "tasker bench: database baseline ({} rows, 1 and {BATCHED_COMMIT_ROWS} per commit)",
            args.commit_rows
        );
        let database =
            store_baseline::measure(&*store, args.commit_rows, BATCHED_COMMIT_ROWS).await?;
        let mut engine_options = EngineOptions::with_endpoint(&endpoint);
        engine_options.orchestrator_id = "tasker-bench".to_owned();
        engine_options.batch_size = args.batch_size;
        eprintln!(
            "tasker bench: {} tasks of {}/{} with {} {} workers × {}",
            args.tasks,
            template.namespace(),
            template.name(),
            args.workers,
            worker_mode.as_str().replace('_', "-"),
            args.capacity
        );
        let workload = workload::run(
            WorkloadSettings {
                engine_options,
                templates,
                template: Arc::clone(&template),
                tasks: args.tasks,
                workers: args.workers,
                capacity: args.capacity,
                worker_mode,
                concurrency: args.concurrency,
                create_batch: args.create_batch,
                timeout: Duration::from_secs(args.timeout_secs),
                dir: dir.to_path_buf(),
                progress: true,
            },
            Arc::clone(&store),
        )
        .await?;
        anyhow::Ok((database, workload))
    }
    .await;
    let backend = store.backend();
    store.close().await;
    let (database, workload) = outcome?;

    let handoff_p50 = workload
        .handoff_latency
        .as_ref()
        .map_or(0.0, |l| l.p50_us as f64);
    let ratios = Ratios {
        handoff_p50_over_raw_zeromq_rtt_p50: ratio(
            handoff_p50,
            zeromq.raw_libzmq.latency.p50_us as f64,
        ),
        handoff_p50_over_transport_rtt_p50: ratio(
            handoff_p50,
            zeromq.tasker_transport.latency.p50_us as f64,
        ),
        steps_per_s_over_batched_commit_rows_per_s: ratio(
            workload.run.steps_per_s,
            database.batched.rows_per_s,
        ),
        steps_per_s_over_single_row_commits_per_s: ratio(
            workload.run.steps_per_s,
            database.single_row.commits_per_s,
        ),
    };
    let memory = Memory {
        peak_rss_kib: report::peak_rss_kib(None),
        worker_processes_peak_rss_kib: workload.worker_processes_peak_rss_kib.clone(),
    };
    Ok(BenchReport {
        format: report::REPORT_FORMAT,
        config: BenchConfig {
            tasks: args.tasks,
            template: format!("{}/{}", template.namespace(), template.name()),
            template_version: template.version().to_string(),
            steps_per_task: template.steps().len(),
            workers: args.workers,
            capacity: args.capacity,
            worker_mode: worker_mode.as_str(),
            arrival: if args.concurrency.is_some() {
                "closed_loop"
            } else {
                "all_at_once"
            },
            concurrency: args.concurrency,
            batch_size: args.batch_size,
            database: match backend {
                Backend::Sqlite => "sqlite",
                Backend::Postgres => "postgres",
            },
            database_url: hide_password(database_url),
            durability,
            endpoint: workload.endpoint.clone(),
            transport: kind.as_str().to_owned(),
            cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            started_at,
        },
        baseline: Baseline { zeromq, database },
        ratios,
        memory,
        workload,
    })
}

/// The example templates plus, for a file argument, that file; and the template chosen.
fn load_template(wanted: &str) -> anyhow::Result<(TemplateRegistry, Arc<TaskTemplate>)> {
    let mut templates = TemplateRegistry::new();
    for yaml in EXAMPLE_TEMPLATES {
        templates
            .add_yaml_str(yaml)
            .context("a built-in example template is invalid")?;
    }
    let path = Path::new(wanted);
    let template = if wanted.ends_with(".yaml") || wanted.ends_with(".yml") || path.is_file() {
        let yaml = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the template {}", path.display()))?;
        templates
            .add_yaml_str(&yaml)
            .with_context(|| format!("the template {} is invalid", path.display()))?
    } else {
        let all = templates.templates();
        match all.iter().find(|t| t.name() == wanted) {
            Some(template) => Arc::clone(template),
            None => bail!(
                "no example template named {wanted:?}; the examples are: {} (or give a YAML file)",
                all.iter()
                    .map(|t| t.name().to_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    };
    let others: Vec<String> = template
        .steps()
        .iter()
        .filter(|step| step.handler_class != TEST_HANDLER_CLASS)
        .map(|step| format!("{} ({})", step.name, step.handler_class))
        .collect();
    if !others.is_empty() {
        bail!(
            "tasker bench runs templates whose steps all use the {TEST_HANDLER_CLASS} handler; \
             {}/{} also has {}",
            template.namespace(),
            template.name(),
            others.join(", ")
        );
    }
    Ok((templates, template))
}

/// `tcp`, `ipc` and `inproc` made into endpoints; full endpoints checked.
fn resolve_endpoint(endpoint: &str, dir: &Path, mode: WorkerMode) -> anyhow::Result<String> {
    let resolved = match endpoint {
        "tcp" => TransportKind::Tcp.fresh_endpoint(dir, "engine"),
        "ipc" => TransportKind::Ipc.fresh_endpoint(dir, "engine"),
        "inproc" => TransportKind::Inproc.fresh_endpoint(dir, "engine"),
        other => other.to_owned(),
    };
    let kind = TransportKind::of_endpoint(&resolved)?;
    if kind == TransportKind::Inproc && mode == WorkerMode::Processes {
        bail!("an inproc endpoint cannot reach worker processes; use tcp or ipc");
    }
    Ok(resolved)
}

/// What a commit promises on this database.
fn durability_of(database_url: &str) -> anyhow::Result<String> {
    Ok(
        match DatabaseUrl::parse(database_url).context("invalid --database-url")? {
            DatabaseUrl::Sqlite(options) => match options.durability {
                SqliteDurability::Full => "synchronous=full",
                SqliteDurability::Normal => "synchronous=normal",
                SqliteDurability::Off => "synchronous=off",
            }
            .to_owned(),
            DatabaseUrl::Postgres(_) => "server settings (fsync, synchronous_commit)".to_owned(),
        },
    )
}

/// The URL with any password replaced by `***`.
fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_templates_are_found_by_name_and_must_use_the_test_handler() {
        let (_, diamond) = load_template("diamond").expect("diamond");
        assert_eq!(diamond.steps().len(), 4);
        let error = load_template("order_fulfillment")
            .expect_err("real handlers")
            .to_string();
        assert!(error.contains("tasker.test"), "{error}");
        let error = load_template("nope").expect_err("unknown").to_string();
        assert!(error.contains("diamond"), "{error}");
    }

    #[test]
    fn endpoint_words_become_endpoints() {
        let dir = Path::new("/tmp/b");
        assert_eq!(
            resolve_endpoint("tcp", dir, WorkerMode::InProcess).expect("tcp"),
            "tcp://127.0.0.1:0"
        );
        assert_eq!(
            resolve_endpoint("ipc", dir, WorkerMode::Processes).expect("ipc"),
            "ipc:///tmp/b/engine.sock"
        );
        assert!(resolve_endpoint("inproc", dir, WorkerMode::Processes).is_err());
        assert!(resolve_endpoint("inproc", dir, WorkerMode::InProcess).is_ok());
        assert!(resolve_endpoint("udp://x", dir, WorkerMode::InProcess).is_err());
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            hide_password("postgres://me:secret@db:5432/tasker"),
            "postgres://me:***@db:5432/tasker"
        );
        assert_eq!(
            hide_password("postgres://me@db/tasker"),
            "postgres://me@db/tasker"
        );
        assert_eq!(hide_password("sqlite:/tmp/x.db"), "sqlite:/tmp/x.db");
        assert_eq!(
            durability_of("sqlite:/tmp/x.db?synchronous=normal").expect("valid"),
            "synchronous=normal"
        );
    }
}
