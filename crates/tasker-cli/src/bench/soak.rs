//! `tasker bench --soak`: a long steady run against a real `tasker serve` child process — does
//! the orchestrator's memory stay flat and its speed hold?
//!
//! The orchestrator runs as `tasker serve` (a child of this process, on a fresh SQLite file in a
//! temporary directory, free loopback ports), with `tasker worker` child processes; clients of
//! its HTTP API create tasks and wait for them with the long poll until the run has executed
//! the asked number of steps. At every tenth of the run the orchestrator's resident memory
//! (`VmRSS` of the `serve` process, so none of this process's bookkeeping counts) and the time
//! are sampled. The report compares the memory at the end with the memory at the first tenth,
//! and the steps/s of the last tenth with the first's. Every task must end `complete` and every
//! step must run exactly once (read from the workers' execution log).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tasker_core::template::TaskTemplate;
use tasker_worker::builtin::test_handler::EXECUTION_LOG_ENV;
use tokio::task::JoinSet;

use super::http_load::Client;
use crate::demo_command::WorkerProcesses;

/// What the soak runs.
#[derive(Debug, Clone)]
pub(crate) struct SoakSettings {
    pub(crate) template: Arc<TaskTemplate>,
    /// The template's YAML, written where `serve` loads templates from.
    pub(crate) template_yaml: String,
    /// Steps to execute (rounded up to whole tasks).
    pub(crate) steps: u64,
    pub(crate) clients: u32,
    pub(crate) workers: u32,
    pub(crate) capacity: u32,
    pub(crate) dir: PathBuf,
    pub(crate) timeout: Duration,
}

/// One tenth of the run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SoakSample {
    /// Which tenth (1–10).
    pub(crate) tenth: u32,
    /// Seconds since the run started.
    pub(crate) seconds: f64,
    /// Steps executed by then.
    pub(crate) steps: u64,
    /// Steps/s within this tenth.
    pub(crate) steps_per_s: f64,
    /// The orchestrator's resident memory, KiB.
    pub(crate) rss_kib: u64,
}

/// The figures of `tasker bench --soak`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SoakReport {
    pub(crate) template: String,
    pub(crate) steps_per_task: usize,
    pub(crate) tasks: u64,
    pub(crate) steps: u64,
    pub(crate) clients: u32,
    pub(crate) workers: u32,
    pub(crate) capacity: u32,
    pub(crate) seconds: f64,
    pub(crate) steps_per_s: f64,
    pub(crate) samples: Vec<SoakSample>,
    /// RSS at the end ÷ RSS at the first tenth.
    pub(crate) rss_end_over_first_tenth: f64,
    /// Steps/s of the last tenth ÷ steps/s of the first.
    pub(crate) last_tenth_rate_over_first: f64,
    /// Every task complete, every step executed exactly once.
    pub(crate) verified: bool,
    /// What failed the check, if anything (the first few problems).
    pub(crate) problems: Vec<String>,
}

impl SoakReport {
    /// The report for people.
    pub(crate) fn render_text(&self) -> String {
        let mut out = format!(
            "tasker bench --soak: {} tasks of {} ({} steps each), {} steps in {:.1} s: {:.0} steps/s; {} clients, {} worker processes × {}\n",
            self.tasks,
            self.template,
            self.steps_per_task,
            self.steps,
            self.seconds,
            self.steps_per_s,
            self.clients,
            self.workers,
            self.capacity
        );
        out.push_str("  tenth   seconds      steps   steps/s   serve RSS\n");
        for s in &self.samples {
            out.push_str(&format!(
                "  {:>5} {:>9.1} {:>10} {:>9.0} {:>8} MiB\n",
                s.tenth,
                s.seconds,
                s.steps,
                s.steps_per_s,
                s.rss_kib / 1024
            ));
        }
        out.push_str(&format!(
            "  memory       RSS at the end / at the first tenth: {:.3}\n  speed        steps/s of the last tenth / of the first: {:.3}\n  verified     {}\n",
            self.rss_end_over_first_tenth,
            self.last_tenth_rate_over_first,
            if self.verified {
                "OK: every task complete, every step executed exactly once".to_owned()
            } else {
                format!("FAILED: {}", self.problems.join("; "))
            }
        ));
        out
    }
}

/// Runs the soak.
pub(crate) async fn run(settings: SoakSettings) -> anyhow::Result<SoakReport> {
    let steps_per_task = settings.template.steps().len().max(1);
    let tasks = settings.steps.div_ceil(steps_per_task as u64);
    let templates = settings.dir.join("templates");
    std::fs::create_dir_all(&templates).context("cannot create the templates directory")?;
    std::fs::write(templates.join("soak.yaml"), &settings.template_yaml)
        .context("cannot write the template")?;
    let http_port = free_port()?;
    let zmq_port = free_port()?;
    let endpoint = format!("tcp://127.0.0.1:{zmq_port}");
    let mut serve = start_serve(&settings.dir, &templates, &endpoint, http_port)?;
    let execution_log = settings.dir.join("executions.log");
    std::fs::File::create(&execution_log).context("cannot create the execution log")?;
    let mut workers = WorkerProcesses::default();
    let outcome = async {
        let client = Client::new(
            &format!("http://127.0.0.1:{http_port}"),
            &settings.template,
            settings.timeout,
        )?;
        client.wait_healthy(Duration::from_secs(30)).await?;
        for n in 1..=settings.workers {
            workers.start_named(
                &format!("soak-worker-{n}"),
                &settings.dir.join(format!("soak-worker-{n}.log")),
                &endpoint,
                settings.capacity,
                &[
                    (EXECUTION_LOG_ENV, execution_log.as_os_str()),
                    (
                        "TASKER_WORKER_HANDLERS",
                        std::ffi::OsStr::new(tasker_worker::builtin::TEST_HANDLER_CLASS),
                    ),
                ],
            )?;
        }
        drive(&settings, &client, serve.id(), tasks, steps_per_task).await
    }
    .await;
    workers.stop().await;
    stop_serve(&mut serve);
    let (samples, seconds, problems) = outcome?;
    let mut problems = problems;
    check_executions(&execution_log, tasks * steps_per_task as u64, &mut problems)?;
    let steps = tasks * steps_per_task as u64;
    let first = samples.first().cloned();
    let last = samples.last().cloned();
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    Ok(SoakReport {
        template: format!(
            "{}/{}",
            settings.template.namespace(),
            settings.template.name()
        ),
        steps_per_task,
        tasks,
        steps,
        clients: settings.clients,
        workers: settings.workers,
        capacity: settings.capacity,
        seconds,
        steps_per_s: ratio(steps as f64, seconds),
        rss_end_over_first_tenth: ratio(
            last.as_ref().map_or(0.0, |s| s.rss_kib as f64),
            first.as_ref().map_or(0.0, |s| s.rss_kib as f64),
        ),
        last_tenth_rate_over_first: ratio(
            last.as_ref().map_or(0.0, |s| s.steps_per_s),
            first.as_ref().map_or(0.0, |s| s.steps_per_s),
        ),
        samples,
        verified: problems.is_empty(),
        problems,
    })
}

/// The clients' loop and the sampler: returns the samples, the run's seconds and problems.
async fn drive(
    settings: &SoakSettings,
    client: &Client,
    serve_pid: u32,
    tasks: u64,
    steps_per_task: usize,
) -> anyhow::Result<(Vec<SoakSample>, f64, Vec<String>)> {
    let next = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + settings.timeout;
    let mut set = JoinSet::new();
    for _ in 0..settings.clients {
        let (client, next, finished, failed) = (
            client.clone(),
            Arc::clone(&next),
            Arc::clone(&finished),
            Arc::clone(&failed),
        );
        set.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < tasks {
                let (_, complete) = client.create_and_wait().await?;
                if !complete {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                finished.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    let mut samples: Vec<SoakSample> = Vec::with_capacity(10);
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut last = (0.0_f64, 0_u64);
    while samples.len() < 10 {
        tokio::select! {
            _ = ticker.tick() => {}
            () = tokio::time::sleep_until(deadline) => {
                bail!("the soak did not finish within {} s", settings.timeout.as_secs());
            }
            Some(joined) = set.join_next() => {
                joined.context("a client task failed")??;
            }
        }
        let done = finished.load(Ordering::Relaxed);
        let tenth = u32::try_from(done * 10 / tasks.max(1)).unwrap_or(10);
        while (samples.len() as u32) < tenth.min(10) {
            let seconds = started.elapsed().as_secs_f64();
            let steps = done * steps_per_task as u64;
            let rss_kib = current_rss_kib(serve_pid)
                .context("cannot read the orchestrator's memory (is `tasker serve` running?)")?;
            samples.push(SoakSample {
                tenth: samples.len() as u32 + 1,
                seconds,
                steps,
                steps_per_s: (steps - last.1) as f64 / (seconds - last.0).max(1e-9),
                rss_kib,
            });
            eprintln!(
                "tasker bench --soak: {}/10, {steps} steps, {:.1} s, serve RSS {} MiB",
                samples.len(),
                seconds,
                rss_kib / 1024
            );
            last = (seconds, steps);
        }
    }
    while let Some(joined) = set.join_next().await {
        joined.context("a client task failed")??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut problems = Vec::new();
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        problems.push(format!("{failed} tasks did not complete"));
    }
    Ok((samples, seconds, problems))
}

/// Every step of the run executed exactly once, by the workers' execution log.
fn check_executions(log: &Path, expected: u64, problems: &mut Vec<String>) -> anyhow::Result<()> {
    let counts = super::fleet::read_execution_log(log)?;
    let twice = counts.values().filter(|&&n| n > 1).count();
    if counts.len() as u64 != expected {
        problems.push(format!(
            "{} distinct steps executed, {expected} expected",
            counts.len()
        ));
    }
    if twice > 0 {
        problems.push(format!("{twice} steps executed more than once"));
    }
    Ok(())
}

/// Current resident memory of a process, KiB (`VmRSS`).
fn current_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

fn start_serve(
    dir: &Path,
    templates: &Path,
    endpoint: &str,
    http_port: u16,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the tasker executable")?;
    let log = std::fs::File::create(dir.join("serve.log")).context("cannot create serve.log")?;
    Command::new(exe)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--endpoint")
        .arg(endpoint)
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{http_port}"))
        .arg("--templates")
        .arg(templates)
        .env_remove("TASKER_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start `tasker serve`")
}

fn stop_serve(serve: &mut Child) {
    if let Ok(pid) = i32::try_from(serve.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = serve.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = serve.kill();
    let _ = serve.wait();
}
