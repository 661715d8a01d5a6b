//! The engine run: [`Engine::start`] on the given store, workers ([`Fleet`]), N tasks of one
//! template, every task awaited through [`EngineHandle::handle`] (no polling of task states),
//! then the check that every task completed and every step ran exactly once.
//!
//! Two arrival patterns:
//!
//! - **All at once** (default): every task is created through
//!   [`EngineHandle::initialize_tasks`] (a few hundred per transaction) or
//!   [`EngineHandle::initialize_task`] ([`CREATE_CONCURRENCY`] requests in flight) *before any
//!   worker exists*, and the engine is left to claim and load them all; only then are the workers
//!   started and the clock started. Creation is timed and reported on its own, outside the run
//!   window. The engine then holds a backlog of N tasks, so the step handoff latency includes the
//!   time a newly ready step waits in the dispatch queue behind the backlog.
//! - **Closed loop** (`concurrency` M): workers connect first; then at most M tasks are active
//!   at once, each finished task making room for the next. Creation happens inside the run
//!   window (each request's latency is reported), and the handoff latency reflects a bounded
//!   queue.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tasker_core::state::{StepState, TaskState};
use tasker_core::template::TaskTemplate;
use tasker_engine::{
    Engine, EngineHandle, EngineOptions, EngineStats, TaskCreated, TaskOutcome, TaskRequest,
    TemplateRegistry,
};
use tasker_store::{StepsList, Store};
use tokio::task::JoinSet;

use super::fleet::{Fleet, WorkerMode};
use super::report::{LatencySummary, micros, per_second};
use super::store_calls::{self, CallTally, CountingStore, OperationFigures};

/// Task creations in flight at once when every task is created up front.
pub(crate) const CREATE_CONCURRENCY: usize = 32;
/// How many problems the verification lists (it counts all of them).
const PROBLEMS_LISTED: usize = 10;

/// What to run.
#[derive(Debug)]
pub(crate) struct WorkloadSettings {
    /// The engine's options (endpoint, batch size, …).
    pub(crate) engine_options: EngineOptions,
    /// The templates the engine loads.
    pub(crate) templates: TemplateRegistry,
    /// The template every task is created from (one of `templates`).
    pub(crate) template: Arc<TaskTemplate>,
    /// Tasks to run.
    pub(crate) tasks: u32,
    /// Workers to start.
    pub(crate) workers: u32,
    /// Steps each worker runs at once.
    pub(crate) capacity: u32,
    /// How the workers run.
    pub(crate) worker_mode: WorkerMode,
    /// `None`: all tasks at once; `Some(M)`: closed loop with M tasks active.
    pub(crate) concurrency: Option<u32>,
    /// All at once: tasks per creation request (1: `initialize_task`; more:
    /// `initialize_tasks`, one transaction per request).
    pub(crate) create_batch: u32,
    /// Give up when the run has not finished after this long.
    pub(crate) timeout: Duration,
    /// Where worker logs and the execution log go.
    pub(crate) dir: PathBuf,
    /// Write progress lines to stderr.
    pub(crate) progress: bool,
}

/// The run's figures.
#[derive(Debug, Serialize)]
pub(crate) struct WorkloadReport {
    /// Task creation.
    pub(crate) creation: CreationReport,
    /// The run window.
    pub(crate) run: RunReport,
    /// Step handoff (parent result received → child dispatched), from the engine's samples.
    pub(crate) handoff_latency: Option<LatencySummary>,
    /// Task latency, measured from [`Self::task_latency_from`] to the task's outcome.
    pub(crate) task_latency: Option<LatencySummary>,
    /// Where task latency starts.
    pub(crate) task_latency_from: &'static str,
    /// The engine's counters over the run window.
    pub(crate) engine: EngineFigures,
    /// Store operations during creation (all at once only: task creation, the engine's claims
    /// and loads), busiest first.
    pub(crate) store_calls_creation: Vec<OperationFigures>,
    /// Store operations during the run window, busiest first.
    pub(crate) store_calls_run: Vec<OperationFigures>,
    /// The final check.
    pub(crate) verification: Verification,
    /// The endpoint the engine bound.
    #[serde(skip)]
    pub(crate) endpoint: String,
    /// Peak RSS of each worker process, in KiB.
    #[serde(skip)]
    pub(crate) worker_processes_peak_rss_kib: Vec<u64>,
}

/// Task creation figures.
#[derive(Debug, Serialize)]
pub(crate) struct CreationReport {
    /// Tasks created.
    pub(crate) tasks: u32,
    /// How they were created.
    pub(crate) method: String,
    /// From the first request to the last answer.
    pub(crate) seconds: f64,
    /// `tasks / seconds`.
    pub(crate) tasks_per_s: f64,
    /// Whether creation ran inside the run window (closed loop) or before it (all at once).
    pub(crate) in_run_window: bool,
    /// All at once: seconds from the first request until the engine held every task (claimed
    /// and loaded); 0 in closed loop.
    pub(crate) engine_holding_all_after_s: f64,
    /// Latency of each creation request (`initialize_task`, or `initialize_tasks` for a whole
    /// batch of tasks).
    pub(crate) request_latency: Option<LatencySummary>,
}

/// The run window's figures.
#[derive(Debug, Serialize)]
pub(crate) struct RunReport {
    /// Tasks finished.
    pub(crate) tasks: u32,
    /// Steps they hold.
    pub(crate) steps: u64,
    /// Length of the window: workers started (all at once) or first task requested (closed
    /// loop) until the last task's outcome.
    pub(crate) seconds: f64,
    /// `steps / seconds`.
    pub(crate) steps_per_s: f64,
    /// `tasks / seconds`.
    pub(crate) tasks_per_s: f64,
    /// `steps / (creation + run)` — the same as `steps_per_s` in closed loop.
    pub(crate) steps_per_s_including_creation: f64,
}

/// The engine's counters over the run window.
#[derive(Debug, Serialize)]
pub(crate) struct EngineFigures {
    /// Group commits.
    pub(crate) commits: u64,
    /// Results they carried.
    pub(crate) results_committed: u64,
    /// `results_committed / commits`.
    pub(crate) results_per_commit: f64,
    /// `step_batch` messages sent.
    pub(crate) batches_dispatched: u64,
    /// Steps in them.
    pub(crate) steps_dispatched: u64,
    /// `steps_dispatched / batches_dispatched`.
    pub(crate) steps_per_batch: f64,
    /// Results applied.
    pub(crate) results_applied: u64,
    /// Re-sent results recognised as duplicates.
    pub(crate) results_duplicate: u64,
    /// Results of superseded attempts.
    pub(crate) results_fenced: u64,
    /// Results refused.
    pub(crate) results_rejected: u64,
    /// Batches whose send failed.
    pub(crate) batches_send_failed: u64,
    /// Attempts declared lost by deadline.
    pub(crate) steps_timed_out: u64,
    /// Attempts declared lost with their worker.
    pub(crate) steps_lost: u64,
    /// Workers declared dead.
    pub(crate) workers_lost: u64,
    /// Frames from workers rejected.
    pub(crate) frames_rejected: u64,
}

impl EngineFigures {
    fn between(before: &EngineStats, after: &EngineStats) -> Self {
        let commits = after.commits - before.commits;
        let results_committed = after.results_committed - before.results_committed;
        let batches_dispatched = after.batches_dispatched - before.batches_dispatched;
        let steps_dispatched = after.steps_dispatched - before.steps_dispatched;
        let rejected = |stats: &EngineStats| stats.frames_rejected.values().sum::<u64>();
        Self {
            commits,
            results_committed,
            results_per_commit: per_second(results_committed as f64, commits as f64),
            batches_dispatched,
            steps_dispatched,
            steps_per_batch: per_second(steps_dispatched as f64, batches_dispatched as f64),
            results_applied: after.results_applied - before.results_applied,
            results_duplicate: after.results_duplicate - before.results_duplicate,
            results_fenced: after.results_fenced - before.results_fenced,
            results_rejected: after.results_rejected - before.results_rejected,
            batches_send_failed: after.batches_send_failed - before.batches_send_failed,
            steps_timed_out: after.steps_timed_out - before.steps_timed_out,
            steps_lost: after.steps_lost - before.steps_lost,
            workers_lost: after.workers_lost - before.workers_lost,
            frames_rejected: rejected(after) - rejected(before),
        }
    }
}

/// The final check: every task complete, every step executed exactly once and stored as
/// complete after one attempt.
#[derive(Debug, Serialize)]
pub(crate) struct Verification {
    /// All of the below hold.
    pub(crate) ok: bool,
    /// Tasks created.
    pub(crate) tasks: u32,
    /// Tasks whose outcome was `complete`.
    pub(crate) tasks_complete: u32,
    /// Steps created.
    pub(crate) steps: u64,
    /// Steps the workers executed exactly once.
    pub(crate) steps_executed_once: u64,
    /// Steps never executed.
    pub(crate) steps_never_executed: u64,
    /// Steps executed more than once.
    pub(crate) steps_executed_more_than_once: u64,
    /// Executions of steps this run did not create.
    pub(crate) executions_of_unknown_steps: u64,
    /// Steps stored as `complete` with exactly one attempt.
    pub(crate) store_steps_complete_once: u64,
    /// Steps stored otherwise (or missing).
    pub(crate) store_steps_not_complete_once: u64,
    /// The first problems found.
    pub(crate) problems: Vec<String>,
}

/// One finished task.
#[derive(Debug)]
struct TaskRun {
    created: TaskCreated,
    outcome: TaskOutcome,
    /// `initialize_task` latency (closed loop only).
    request_us: Option<u64>,
    /// When `initialize_task` answered (closed loop only).
    request_answered: Option<Instant>,
    /// Latency from the task's start mark to its outcome.
    latency_us: u64,
}

/// Runs the workload on `store`.
pub(crate) async fn run(
    settings: WorkloadSettings,
    store: Arc<dyn Store>,
) -> anyhow::Result<WorkloadReport> {
    let counting = Arc::new(CountingStore::new(Arc::clone(&store)));
    let engine = Engine::start(
        settings.engine_options.clone(),
        Arc::clone(&counting) as Arc<dyn Store>,
        settings.templates.clone(),
    )
    .await
    .with_context(|| {
        format!(
            "cannot start the engine on {}",
            settings.engine_options.endpoint
        )
    })?;
    let mut fleet = None;
    let driven = drive(&settings, &engine, &counting, &mut fleet).await;
    let worker_rss = fleet.as_ref().map(Fleet::peak_rss_kib).unwrap_or_default();
    let executions = match fleet {
        Some(fleet) => fleet.stop().await,
        None => Ok(HashMap::new()),
    };
    engine.shutdown().await;
    let driven = driven?;
    let executions = executions?;
    let verification = verify(&driven.runs, &executions, &*store, settings.tasks).await?;
    let steps: u64 = driven
        .runs
        .iter()
        .map(|run| run.created.step_ids.len() as u64)
        .sum();
    let tasks = u32::try_from(driven.runs.len()).unwrap_or(u32::MAX);
    let run_seconds = driven.run_window.as_secs_f64();
    let creation_in_window = settings.concurrency.is_some();
    let total_seconds = if creation_in_window {
        run_seconds
    } else {
        run_seconds + driven.creation.as_secs_f64()
    };
    let mut request_us: Vec<u64> = driven.runs.iter().filter_map(|r| r.request_us).collect();
    request_us.extend(&driven.request_us);
    Ok(WorkloadReport {
        creation: CreationReport {
            tasks,
            method: match settings.concurrency {
                None if settings.create_batch <= 1 => {
                    format!("initialize_task, {CREATE_CONCURRENCY} requests at a time")
                }
                None => format!(
                    "initialize_tasks, {} tasks per call (one transaction each)",
                    settings.create_batch
                ),
                Some(m) => format!("initialize_task, as tasks finish ({m} active)"),
            },
            seconds: driven.creation.as_secs_f64(),
            tasks_per_s: per_second(f64::from(tasks), driven.creation.as_secs_f64()),
            in_run_window: creation_in_window,
            engine_holding_all_after_s: driven.held_after.as_secs_f64(),
            request_latency: LatencySummary::of_micros(request_us),
        },
        run: RunReport {
            tasks,
            steps,
            seconds: run_seconds,
            steps_per_s: per_second(steps as f64, run_seconds),
            tasks_per_s: per_second(f64::from(tasks), run_seconds),
            steps_per_s_including_creation: per_second(steps as f64, total_seconds),
        },
        handoff_latency: LatencySummary::of_micros(
            driven.stats_after.handoff_latency.samples_us.clone(),
        ),
        task_latency: LatencySummary::of_micros(driven.runs.iter().map(|r| r.latency_us).collect()),
        task_latency_from: if creation_in_window {
            "from the initialize_task call"
        } else {
            "from the start of the run window (every task existed before)"
        },
        engine: EngineFigures::between(&driven.stats_before, &driven.stats_after),
        store_calls_creation: if creation_in_window {
            Vec::new()
        } else {
            store_calls::between(
                &driven.calls_before_creation,
                &driven.calls_before_run,
                steps,
            )
        },
        store_calls_run: store_calls::between(&driven.calls_before_run, &driven.calls_after, steps),
        verification,
        endpoint: engine.endpoint().to_owned(),
        worker_processes_peak_rss_kib: worker_rss,
    })
}

/// What [`drive`] measured.
struct Driven {
    runs: Vec<TaskRun>,
    /// Creation time (all at once: first request → last answer; closed loop: first request →
    /// last answer, inside the window).
    creation: Duration,
    /// All at once: first request → engine holding every task.
    held_after: Duration,
    /// Latencies of `initialize_task` calls made before the window.
    request_us: Vec<u64>,
    run_window: Duration,
    stats_before: EngineStats,
    stats_after: EngineStats,
    calls_before_creation: BTreeMap<&'static str, CallTally>,
    calls_before_run: BTreeMap<&'static str, CallTally>,
    calls_after: BTreeMap<&'static str, CallTally>,
}

async fn drive(
    settings: &WorkloadSettings,
    engine: &EngineHandle,
    store: &CountingStore,
    fleet: &mut Option<Fleet>,
) -> anyhow::Result<Driven> {
    let calls_before_creation = store.snapshot();
    let request = task_request(&settings.template);
    let deadline = tokio::time::Instant::now() + settings.timeout;
    let endpoint = engine.endpoint().to_owned();
    let start_fleet = || {
        Fleet::start(
            settings.worker_mode,
            settings.workers,
            settings.capacity,
            &endpoint,
            &settings.dir,
        )
    };
    let mut set: JoinSet<anyhow::Result<TaskRun>> = JoinSet::new();
    let mut next = 0;
    let (creation, held_after, request_us, stats_before, calls_before_run, run_started) =
        match settings.concurrency {
            None => {
                let created_at = Instant::now();
                let (created, request_us) = create_all(
                    engine,
                    &request,
                    settings.tasks,
                    settings.create_batch,
                    deadline,
                )
                .await?;
                let creation = created_at.elapsed();
                wait_until_held(engine, settings.tasks, deadline).await?;
                let held_after = created_at.elapsed();
                if settings.progress {
                    eprintln!(
                        "tasker bench: {} tasks created in {:.2} s, held by the engine after {:.2} s; starting {} workers",
                        settings.tasks,
                        creation.as_secs_f64(),
                        held_after.as_secs_f64(),
                        settings.workers
                    );
                }
                let stats_before = engine.stats();
                let calls_before_run = store.snapshot();
                let run_started = Instant::now();
                *fleet = Some(start_fleet().await?);
                for created in created {
                    set.spawn(await_task(engine.clone(), created, run_started));
                }
                next = settings.tasks;
                (
                    creation,
                    held_after,
                    request_us,
                    stats_before,
                    calls_before_run,
                    run_started,
                )
            }
            Some(_) => {
                let mut started = start_fleet().await?;
                let connected = started.wait_connected(engine, settings.workers).await;
                *fleet = Some(started);
                connected?;
                (
                    Duration::ZERO,
                    Duration::ZERO,
                    Vec::new(),
                    engine.stats(),
                    store.snapshot(),
                    Instant::now(),
                )
            }
        };
    let concurrency = settings.concurrency.unwrap_or(settings.tasks).max(1);
    while next < settings.tasks.min(concurrency) {
        set.spawn(request_and_await_task(engine.clone(), request.clone()));
        next += 1;
    }
    let mut runs = Vec::with_capacity(settings.tasks as usize);
    let mut last_tenth = 0;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            joined = set.join_next() => match joined {
                None => break,
                Some(Ok(Ok(run))) => {
                    runs.push(run);
                    if next < settings.tasks {
                        set.spawn(request_and_await_task(engine.clone(), request.clone()));
                        next += 1;
                    }
                    let tenth = runs.len() * 10 / settings.tasks.max(1) as usize;
                    if settings.progress && tenth > last_tenth {
                        last_tenth = tenth;
                        eprintln!(
                            "tasker bench: {}/{} tasks finished, {:.2} s",
                            runs.len(),
                            settings.tasks,
                            run_started.elapsed().as_secs_f64()
                        );
                    }
                }
                Some(Ok(Err(error))) => return Err(error),
                Some(Err(error)) => bail!("a task waiter failed: {error}"),
            },
            _ = ticker.tick() => {
                if let Some(why) = fleet.as_mut().and_then(Fleet::stopped_early) {
                    bail!("workers stopped during the run: {why}");
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                bail!(
                    "only {} of {} tasks finished within {} s (raise --timeout-secs?)",
                    runs.len(),
                    settings.tasks,
                    settings.timeout.as_secs()
                );
            }
        }
    }
    let run_window = run_started.elapsed();
    let stats_after = engine.stats();
    let calls_after = store.snapshot();
    let creation = match settings.concurrency {
        // Closed loop: creation is spread over the window; report its span (the window's start
        // → the last `initialize_task` answer).
        Some(_) => last_request_answered(&runs, run_started).unwrap_or(creation),
        None => creation,
    };
    Ok(Driven {
        runs,
        creation,
        held_after,
        request_us,
        run_window,
        stats_before,
        stats_after,
        calls_before_creation,
        calls_before_run,
        calls_after,
    })
}

/// Closed loop: from the window's start to the moment the last `initialize_task` answered.
fn last_request_answered(runs: &[TaskRun], first: Instant) -> Option<Duration> {
    runs.iter()
        .filter_map(|run| {
            run.request_answered
                .map(|at| at.saturating_duration_since(first))
        })
        .max()
}

/// The request every task is created with: the template, an empty context.
fn task_request(template: &TaskTemplate) -> TaskRequest {
    TaskRequest {
        namespace: template.namespace().to_owned(),
        name: template.name().to_owned(),
        version: Some(template.version().to_string()),
        context: serde_json::Value::Object(serde_json::Map::new()),
        initiator: Some("tasker bench".to_owned()),
        source_system: Some("tasker-cli".to_owned()),
        reason: Some("benchmark".to_owned()),
        tags: vec!["bench".to_owned()],
        ..TaskRequest::default()
    }
}

/// Creates `count` tasks, `per_call` per request (1: [`EngineHandle::initialize_task`];
/// more: [`EngineHandle::initialize_tasks`], one transaction per call), with
/// [`CREATE_CONCURRENCY`] tasks' worth of requests in flight (at least one request); returns the
/// tasks in creation order and each request's latency.
async fn create_all(
    engine: &EngineHandle,
    request: &TaskRequest,
    count: u32,
    per_call: u32,
    deadline: tokio::time::Instant,
) -> anyhow::Result<(Vec<TaskCreated>, Vec<u64>)> {
    let per_call = per_call.max(1);
    let in_flight = (CREATE_CONCURRENCY as u32 / per_call).max(1);
    let mut set = JoinSet::new();
    let mut created = Vec::with_capacity(count as usize);
    let mut latencies = Vec::new();
    let mut next = 0;
    let create = |engine: EngineHandle, request: TaskRequest, tasks: u32| async move {
        let started = Instant::now();
        let created = if tasks == 1 {
            vec![
                engine
                    .initialize_task(request)
                    .await
                    .context("creating a task")?,
            ]
        } else {
            engine
                .initialize_tasks(vec![request; tasks as usize])
                .await
                .with_context(|| format!("creating {tasks} tasks in one call"))?
        };
        anyhow::Ok((created, micros(started.elapsed())))
    };
    let mut launched = 0;
    while next < count && launched < in_flight {
        let tasks = per_call.min(count - next);
        set.spawn(create(engine.clone(), request.clone(), tasks));
        next += tasks;
        launched += 1;
    }
    loop {
        let joined = tokio::select! {
            joined = set.join_next() => joined,
            () = tokio::time::sleep_until(deadline) => {
                bail!("only {} of {count} tasks were created before the timeout", created.len());
            }
        };
        match joined {
            None => break,
            Some(Ok(Ok((tasks, latency)))) => {
                created.extend(tasks);
                latencies.push(latency);
                if next < count {
                    let tasks = per_call.min(count - next);
                    set.spawn(create(engine.clone(), request.clone(), tasks));
                    next += tasks;
                }
            }
            Some(Ok(Err(error))) => return Err(error),
            Some(Err(error)) => bail!("a task creation failed: {error}"),
        }
    }
    created.sort_by_key(|task| task.task_id);
    Ok((created, latencies))
}

/// Waits (bounded by `deadline`) until the engine holds at least `count` tasks: every created
/// task claimed and loaded, so the run window measures execution only.
async fn wait_until_held(
    engine: &EngineHandle,
    count: u32,
    deadline: tokio::time::Instant,
) -> anyhow::Result<()> {
    loop {
        let held = engine.stats().tasks_active;
        if held >= u64::from(count) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the engine held only {held} of {count} tasks before the timeout");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits for a task created before the window; latency from the window's start.
async fn await_task(
    engine: EngineHandle,
    created: TaskCreated,
    run_started: Instant,
) -> anyhow::Result<TaskRun> {
    let outcome = engine
        .handle(created.task_id)
        .await
        .with_context(|| format!("waiting for task {}", created.task_id))?;
    Ok(TaskRun {
        created,
        outcome,
        request_us: None,
        request_answered: None,
        latency_us: micros(run_started.elapsed()),
    })
}

/// Creates a task and waits for it; latency from the request.
async fn request_and_await_task(
    engine: EngineHandle,
    request: TaskRequest,
) -> anyhow::Result<TaskRun> {
    let started = Instant::now();
    let created = engine
        .initialize_task(request)
        .await
        .context("creating a task")?;
    let request_answered = Instant::now();
    let outcome = engine
        .handle(created.task_id)
        .await
        .with_context(|| format!("waiting for task {}", created.task_id))?;
    Ok(TaskRun {
        created,
        outcome,
        request_us: Some(micros(request_answered - started)),
        request_answered: Some(request_answered),
        latency_us: micros(started.elapsed()),
    })
}

/// Checks outcomes, executions and the stored steps.
async fn verify(
    runs: &[TaskRun],
    executions: &HashMap<i64, u32>,
    store: &dyn Store,
    tasks: u32,
) -> anyhow::Result<Verification> {
    let mut problems = Vec::new();
    let mut note = |problem: String| {
        if problems.len() < PROBLEMS_LISTED {
            problems.push(problem);
        }
    };
    let tasks_complete = runs
        .iter()
        .filter(|run| run.outcome.state == TaskState::Complete)
        .count();
    for run in runs
        .iter()
        .filter(|run| run.outcome.state != TaskState::Complete)
    {
        note(format!(
            "task {} ended {}: {}",
            run.created.task_id,
            run.outcome.state.as_str(),
            run.outcome.reason.as_deref().unwrap_or("no reason given")
        ));
    }
    if runs.len() != tasks as usize {
        note(format!("{} tasks finished, {tasks} expected", runs.len()));
    }
    let expected: HashSet<i64> = runs
        .iter()
        .flat_map(|run| run.created.step_ids.iter().copied())
        .collect();
    let (mut once, mut never, mut more) = (0_u64, 0_u64, 0_u64);
    for step_id in &expected {
        match executions.get(step_id).copied().unwrap_or(0) {
            0 => {
                never += 1;
                note(format!("step {step_id} was never executed"));
            }
            1 => once += 1,
            n => {
                more += 1;
                note(format!("step {step_id} was executed {n} times"));
            }
        }
    }
    let unknown: u64 = executions
        .iter()
        .filter(|(step_id, _)| !expected.contains(step_id))
        .map(|(_, n)| u64::from(*n))
        .sum();
    if unknown > 0 {
        note(format!(
            "{unknown} executions of steps this run did not create"
        ));
    }
    let (stored_ok, stored_bad) = check_stored_steps(store, &expected, &mut note).await?;
    let ok = tasks_complete == tasks as usize
        && runs.len() == tasks as usize
        && once == expected.len() as u64
        && unknown == 0
        && stored_ok == expected.len() as u64;
    Ok(Verification {
        ok,
        tasks,
        tasks_complete: u32::try_from(tasks_complete).unwrap_or(u32::MAX),
        steps: expected.len() as u64,
        steps_executed_once: once,
        steps_never_executed: never,
        steps_executed_more_than_once: more,
        executions_of_unknown_steps: unknown,
        store_steps_complete_once: stored_ok,
        store_steps_not_complete_once: stored_bad,
        problems,
    })
}

/// Pages through the stored steps in the range of `expected` and counts those `complete` after
/// exactly one attempt; missing steps count as not.
async fn check_stored_steps(
    store: &dyn Store,
    expected: &HashSet<i64>,
    note: &mut impl FnMut(String),
) -> anyhow::Result<(u64, u64)> {
    let (Some(&first), Some(&last)) = (expected.iter().min(), expected.iter().max()) else {
        return Ok((0, 0));
    };
    let (mut ok, mut bad, mut seen) = (0_u64, 0_u64, 0_u64);
    let mut after = Some(first - 1);
    'pages: loop {
        let page = store
            .steps_list(StepsList {
                after_step_id: after,
                limit: 1000,
                ..StepsList::default()
            })
            .await
            .context("reading the steps back")?;
        for step in &page.items {
            if step.step_id > last {
                break 'pages;
            }
            if !expected.contains(&step.step_id) {
                continue;
            }
            seen += 1;
            if step.state == StepState::Complete && step.attempts == 1 {
                ok += 1;
            } else {
                bad += 1;
                note(format!(
                    "step {} ({} of task {}) is stored {} after {} attempts",
                    step.step_id,
                    step.name,
                    step.task_id,
                    step.state.as_str(),
                    step.attempts
                ));
            }
        }
        match page.next_cursor {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    let missing = expected.len() as u64 - seen;
    if missing > 0 {
        note(format!("{missing} steps are missing from the store"));
    }
    Ok((ok, bad + missing))
}
