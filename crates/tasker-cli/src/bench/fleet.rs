//! The workers of a benchmark run and the count of how many times each step ran on them.
//!
//! - In process (the default): Rust SDK [`Worker`]s on this process's tokio runtime, each with
//!   the `tasker.test` handler wrapped in a counter (a map from step id to executions, kept in
//!   memory: nothing is added to a step but one map update).
//! - As processes: `tasker worker` children started from this executable
//!   ([`WorkerProcesses`], shared with `tasker demo`), each appending one line per execution to a
//!   shared execution log (`TASKER_TEST_EXECUTION_LOG`), which is read back afterwards.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tasker_engine::EngineHandle;
use tasker_worker::builtin::test_handler::EXECUTION_LOG_ENV;
use tasker_worker::builtin::{TEST_HANDLER_CLASS, TestHandler};
use tasker_worker::{HandlerRegistry, StepHandler, Worker, WorkerError, WorkerOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::demo_command::{WorkerProcesses, wait_for_workers};

/// How long in-process workers may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// How the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkerMode {
    /// Rust SDK workers on this process's runtime.
    InProcess,
    /// `tasker worker` child processes.
    Processes,
}

impl WorkerMode {
    /// `in_process` or `processes`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::InProcess => "in_process",
            Self::Processes => "processes",
        }
    }
}

/// Executions per step id.
#[derive(Debug, Default)]
pub(crate) struct ExecutionCounter {
    per_step: Mutex<HashMap<i64, u32>>,
}

impl ExecutionCounter {
    fn record(&self, step_id: i64) {
        *self
            .per_step
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(step_id)
            .or_default() += 1;
    }

    fn snapshot(&self) -> HashMap<i64, u32> {
        self.per_step
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A registry offering only `tasker.test`, counting every execution in `counter` before
/// running the real handler.
fn counting_registry(counter: Arc<ExecutionCounter>) -> HandlerRegistry {
    let handler = Arc::new(TestHandler::new());
    let mut registry = HandlerRegistry::new();
    registry.register_fn(TEST_HANDLER_CLASS, move |step| {
        counter.record(step.step_id);
        let handler = Arc::clone(&handler);
        async move { handler.process(step).await }
    });
    registry
}

/// The running workers.
#[derive(Debug)]
pub(crate) enum Fleet {
    /// SDK workers on this runtime.
    InProcess {
        /// Flipped to `true` to stop them.
        stop: watch::Sender<bool>,
        /// Their run loops.
        runs: Vec<JoinHandle<Result<(), WorkerError>>>,
        /// What they executed.
        executions: Arc<ExecutionCounter>,
    },
    /// Child processes.
    Processes {
        /// The children.
        processes: WorkerProcesses,
        /// Their shared execution log.
        execution_log: PathBuf,
    },
}

impl Fleet {
    /// Starts `count` workers of `capacity` connecting to `endpoint`; logs and the execution log
    /// of worker processes go to `dir`.
    pub(crate) async fn start(
        mode: WorkerMode,
        count: u32,
        capacity: u32,
        endpoint: &str,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        match mode {
            WorkerMode::InProcess => {
                let executions = Arc::new(ExecutionCounter::default());
                let (stop, stopped) = watch::channel(false);
                let mut runs = Vec::with_capacity(count as usize);
                for n in 1..=count {
                    let mut options = WorkerOptions::new(endpoint);
                    options.capacity = capacity;
                    options.name = format!("tasker bench worker {n}");
                    options.shutdown_grace = Duration::from_secs(5);
                    let worker = Worker::new(options).context("invalid worker options")?;
                    let registry = counting_registry(Arc::clone(&executions));
                    let mut stopped = stopped.clone();
                    runs.push(tokio::spawn(async move {
                        worker
                            .run(registry, async move {
                                let _ = stopped.wait_for(|stop| *stop).await;
                            })
                            .await
                    }));
                }
                Ok(Self::InProcess {
                    stop,
                    runs,
                    executions,
                })
            }
            WorkerMode::Processes => {
                let execution_log = dir.join("executions.log");
                std::fs::File::create(&execution_log).with_context(|| {
                    format!(
                        "cannot create the execution log {}",
                        execution_log.display()
                    )
                })?;
                let mut processes = WorkerProcesses::default();
                for n in 1..=count {
                    let env: [(&str, &OsStr); 2] = [
                        (EXECUTION_LOG_ENV, execution_log.as_os_str()),
                        ("TASKER_WORKER_HANDLERS", OsStr::new(TEST_HANDLER_CLASS)),
                    ];
                    let started = processes.start_named(
                        &format!("bench-worker-{n}"),
                        &dir.join(format!("bench-worker-{n}.log")),
                        endpoint,
                        capacity,
                        &env,
                    );
                    if let Err(error) = started {
                        processes.stop().await;
                        return Err(error);
                    }
                }
                Ok(Self::Processes {
                    processes,
                    execution_log,
                })
            }
        }
    }

    /// Waits (bounded) until `expected` workers have a session with the engine.
    pub(crate) async fn wait_connected(
        &mut self,
        engine: &EngineHandle,
        expected: u32,
    ) -> anyhow::Result<()> {
        match self {
            Self::Processes { processes, .. } => {
                wait_for_workers(engine, expected, processes).await
            }
            Self::InProcess { runs, .. } => {
                let deadline = Instant::now() + CONNECT_TIMEOUT;
                loop {
                    if engine.stats().workers_connected >= u64::from(expected) {
                        return Ok(());
                    }
                    if runs.iter().any(JoinHandle::is_finished) {
                        bail!("an in-process worker stopped before connecting");
                    }
                    if Instant::now() >= deadline {
                        bail!(
                            "only {} of {expected} workers connected within {} s",
                            engine.stats().workers_connected,
                            CONNECT_TIMEOUT.as_secs()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// A description of workers that stopped on their own, if any did.
    pub(crate) fn stopped_early(&mut self) -> Option<String> {
        match self {
            Self::Processes { processes, .. } => {
                let exited = processes.exited();
                (!exited.is_empty()).then(|| exited.join("; "))
            }
            Self::InProcess { runs, .. } => {
                let finished = runs.iter().filter(|run| run.is_finished()).count();
                (finished > 0).then(|| format!("{finished} in-process worker(s) stopped"))
            }
        }
    }

    /// Peak resident memory of each worker process, in KiB (empty in process).
    pub(crate) fn peak_rss_kib(&self) -> Vec<u64> {
        match self {
            Self::Processes { processes, .. } => processes
                .pids()
                .iter()
                .filter_map(|pid| pid.parse().ok())
                .filter_map(|pid| super::report::peak_rss_kib(Some(pid)))
                .collect(),
            Self::InProcess { .. } => Vec::new(),
        }
    }

    /// Stops every worker (gracefully: they finish what they run) and returns how many times
    /// each step ran.
    pub(crate) async fn stop(self) -> anyhow::Result<HashMap<i64, u32>> {
        match self {
            Self::InProcess {
                stop,
                runs,
                executions,
            } => {
                let _ = stop.send(true);
                for run in runs {
                    match run.await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => tracing::warn!(%error, "an in-process worker failed"),
                        Err(error) => tracing::warn!(%error, "an in-process worker panicked"),
                    }
                }
                Ok(executions.snapshot())
            }
            Self::Processes {
                mut processes,
                execution_log,
            } => {
                processes.stop().await;
                read_execution_log(&execution_log)
            }
        }
    }
}

/// Counts the lines `<task_id> <step_name> <step_id> <attempt> <worker_id>` of the `tasker.test`
/// execution log per step id.
pub(crate) fn read_execution_log(path: &Path) -> anyhow::Result<HashMap<i64, u32>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the execution log {}", path.display()))?;
    let mut per_step = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let step_id: i64 = line
            .split_whitespace()
            .nth(2)
            .and_then(|field| field.parse().ok())
            .with_context(|| {
                format!(
                    "line {} of the execution log {} is not `TASK STEP_NAME STEP_ID ATTEMPT WORKER`: {line:?}",
                    number + 1,
                    path.display()
                )
            })?;
        *per_step.entry(step_id).or_default() += 1;
    }
    Ok(per_step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_execution_log_is_counted_per_step() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("executions.log");
        std::fs::write(&path, "1 a 10 1 w1\n1 b 11 1 w2\n1 b 11 2 w1\n").expect("write");
        let counts = read_execution_log(&path).expect("counts");
        assert_eq!(counts.get(&10), Some(&1));
        assert_eq!(counts.get(&11), Some(&2));
        assert_eq!(counts.len(), 2);
        std::fs::write(&path, "garbage\n").expect("write");
        assert!(read_execution_log(&path).is_err());
    }

    #[tokio::test]
    async fn the_counting_registry_counts_and_runs_the_test_handler() {
        let counter = Arc::new(ExecutionCounter::default());
        let registry = counting_registry(Arc::clone(&counter));
        assert_eq!(registry.handler_classes(), vec![TEST_HANDLER_CLASS]);
        let handler = registry.get(TEST_HANDLER_CLASS).expect("registered");
        let request = tasker_protocol::StepRequest {
            step_id: 42,
            task_id: 7,
            step_name: "a".to_owned(),
            handler_class: TEST_HANDLER_CLASS.to_owned(),
            handler_config: serde_json::Map::new(),
            task_context: serde_json::Map::new(),
            previous_results: serde_json::Map::new(),
            metadata: tasker_protocol::StepMetadata {
                attempt: 1,
                retry_limit: 3,
                timeout_ms: Some(1000),
                idempotency_key: "42:1".to_owned(),
            },
        };
        let step = tasker_worker::StepContext::new(uuid::Uuid::nil(), request, "w");
        let output = handler.process(step).await.expect("no-op succeeds");
        assert_eq!(output["step"], "a");
        assert_eq!(counter.snapshot().get(&42), Some(&1));
    }
}
