//! The engine core: all of the engine's state and every decision, with no I/O.
//!
//! The I/O shell (`driver`) feeds it events — frames from workers, commands from handles, store
//! completions, timer ticks — by calling its `on_*` methods, and then executes the [`Action`]s it
//! accumulated ([`EngineCore::take_actions`]): send a frame, record a batch, commit a group of
//! changes, claim or load tasks. Every state change happens here, sequentially, in one task.
//! Store writes run as spawned futures whose completion comes back as another event, so the core
//! keeps receiving results while a group commit is in flight: the results that arrive meanwhile
//! form the next group.
//!
//! The pieces are further `impl EngineCore` blocks, one job per file; the data path reads in
//! order from the file names:
//!
//! - `crate::sessions`: frames from workers — hello, heartbeats, goodbye, results handed to
//!   intake;
//! - [`intake`]: what a result is (applied, duplicate, fenced, rejected) and the items waiting
//!   for the next group commit;
//! - [`commit`]: one group's transaction — ledger, step/task/batch transitions, the tasks
//!   created, the dispatch of the steps those changes make ready;
//! - [`apply`]: the committed outcome applied to memory, children sent, results acknowledged;
//! - [`dispatch`]: ready steps planned into batches within workers' credit;
//! - [`tasks`]: claims, loading, creations, waiters;
//! - [`workers`]: a lost worker's steps;
//! - [`maintenance`]: the periodic services (deadlines, liveness, recovery, leases, the
//!   safety-net poll), each with a `run_*` entry the tick calls and tests can call alone.

mod apply;
mod commit;
mod dispatch;
pub(crate) mod intake;
mod maintenance;
mod tasks;
mod workers;

pub(crate) use commit::CommitBook;
pub(crate) use intake::{CommitItem, LossCause};

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tasker_core::state::TaskState;
use tasker_protocol::{Limits, OrchestratorMessage, StepMetadata, StepRequest};
use tasker_store::{BatchRecord, DeadLetterInsert, TaskDag, TransitionsApply, WorkerUpsert};
use tasker_transport::PeerId;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::error::{EngineError, EngineResult};
use crate::finalizer::{StepFacts, explain};
use crate::options::EngineOptions;
use crate::runtime::{BatchRuntime, BatchStep, Busy, TaskRuntime, WorkerSession};
use crate::stats::StatsCounters;
use crate::task::TaskOutcome;

/// How many batch ids the engine remembers after forgetting a batch's details, to tell a late
/// result of an old batch (fenced) from one of a batch that never existed (rejected).
const REMEMBERED_BATCHES: usize = 100_000;

/// Something the shell must do for the core.
#[derive(Debug)]
pub(crate) enum Action {
    /// Tell subscribers what was committed.
    Publish(crate::events::EngineEvent),
    /// Send one message to a worker (fire and forget).
    Send {
        peer: PeerId,
        message: OrchestratorMessage,
    },
    /// Send an encoded `step_batch`; report a failed send as `on_send_failed`.
    SendBatch {
        peer: PeerId,
        batch_id: Uuid,
        frame: Vec<u8>,
    },
    /// `Store::transitions_apply` of one group (its changes, ledger entries and the dispatch
    /// records planned since the last commit); report as `on_commit_done` with the book.
    Commit {
        params: TransitionsApply,
        book: Box<CommitBook>,
    },
    /// Claim free tasks (and, with `recover`, take back those already claimed by this
    /// orchestrator), load their DAGs; report as `on_tasks_loaded` and `on_claim_done`.
    ClaimTasks { recover: bool },
    /// Load these tasks' DAGs again (resynchronise); report as `on_tasks_loaded`.
    LoadTasks(Vec<i64>),
    /// Renew the leases of these tasks; report as `on_leases_renewed`.
    RenewLeases(Vec<i64>),
    /// Release the claims on these tasks.
    ReleaseLeases(Vec<i64>),
    /// Record a worker's registration or heartbeat.
    UpsertWorker(WorkerUpsert),
    /// Read a task the engine does not hold, for someone waiting on it; report as
    /// `on_task_checked`.
    CheckTask(i64),
    /// Record a dead letter: a step that failed for good and took its task down.
    DeadLetter(DeadLetterInsert),
}

/// A planned batch, until its record is committed (or refused): waiting for the next
/// `batches_record`, or in the one in flight.
#[derive(Debug)]
pub(crate) struct PendingBatch {
    /// The worker it goes to; `None` for a step too large to send.
    worker_id: Option<String>,
    /// `(task, step index, request)`, in batch order.
    steps: Vec<(i64, usize, StepRequest)>,
    /// When it was planned: the time its record writes on its rows.
    planned_at: DateTime<Utc>,
}

/// A waiter for a task's end.
type Waiter = oneshot::Sender<EngineResult<TaskOutcome>>;

/// Tasks to create in the next group commit, and who waits for them.
#[derive(Debug)]
pub(crate) struct Creation {
    pub(crate) tasks: Vec<tasker_store::NewTask>,
    pub(crate) reply: oneshot::Sender<EngineResult<Vec<tasker_store::TaskCreated>>>,
}

/// The engine's state and decisions. See the module documentation.
#[derive(Debug)]
pub(crate) struct EngineCore {
    pub(crate) options: EngineOptions,
    pub(crate) limits: Limits,
    pub(crate) stats: Arc<StatsCounters>,
    pub(crate) tasks: HashMap<i64, TaskRuntime>,
    /// step id → (task id, index in the task).
    pub(crate) step_index: HashMap<i64, (i64, usize)>,
    pub(crate) batches: HashMap<Uuid, BatchRuntime>,
    remembered: HashSet<Uuid>,
    remembered_order: VecDeque<Uuid>,
    /// Batches adopted while loading tasks, to remember once the loop over steps ends.
    remembered_new: Vec<Uuid>,
    pending_batches: HashMap<Uuid, PendingBatch>,
    /// Batches planned while a record was in flight: the next `batches_record`.
    unrecorded: Vec<BatchRecord>,
    /// The batches of the `batches_record` in flight that have no outcome yet.
    recording: HashSet<Uuid>,
    pub(crate) sessions: HashMap<String, WorkerSession>,
    pub(crate) peers: HashMap<PeerId, String>,
    /// Ready steps of started tasks (a step has run or been tried): dispatched first.
    started_queue: VecDeque<(i64, usize)>,
    /// Ready steps of tasks not started yet: dispatched with the credit the started ones leave.
    queue: VecDeque<(i64, usize)>,
    pub(crate) dirty: HashSet<i64>,
    deadlines: BinaryHeap<Reverse<(DateTime<Utc>, i64, Uuid)>>,
    pub(crate) wakeups: BinaryHeap<Reverse<(DateTime<Utc>, i64)>>,
    orphan_checks: BinaryHeap<Reverse<(DateTime<Utc>, i64, Uuid)>>,
    pub(crate) pending_items: VecDeque<CommitItem>,
    pub(crate) commit_in_flight: bool,
    /// Internal changes whose commit failed, retried after a pause.
    pub(crate) retry_items: Vec<CommitItem>,
    pub(crate) paused_until: Option<DateTime<Utc>>,
    waiters: HashMap<i64, Vec<Waiter>>,
    /// Creations waiting for the next group commit.
    pub(crate) creations: VecDeque<Creation>,
    claim_in_flight: bool,
    claim_again: bool,
    /// Tasks awaited while a claim round was in flight or asked for, not held: read once the
    /// claims end, unless one of them took the task on.
    checks_after_claim: HashSet<i64>,
    pub(crate) recovered: bool,
    to_release: Vec<i64>,
    next_poll: DateTime<Utc>,
    next_renew: DateTime<Utc>,
    pub(crate) shutting_down: bool,
    actions: Vec<Action>,
    /// Where batch ids come from.
    ids: Arc<dyn crate::clock::IdSource>,
    /// Where handoff instants come from.
    clock: Arc<dyn crate::clock::Clock>,
    /// The dice of backoff jitter.
    pub(crate) jitter: rand::rngs::StdRng,
}

impl EngineCore {
    /// A core with nothing loaded; the first action asks to recover claimed tasks.
    pub(crate) fn new(
        options: EngineOptions,
        stats: Arc<StatsCounters>,
        ambient: &crate::clock::Ambient,
        now: DateTime<Utc>,
    ) -> Self {
        use rand::SeedableRng;
        let jitter = match ambient.jitter_seed {
            Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
            None => rand::rngs::StdRng::from_os_rng(),
        };
        let limits = Limits {
            max_frame_bytes: options.max_frame_bytes,
            max_steps_per_batch: options.batch_size,
        };
        let next_renew = now + delta(options.lease_duration / 3);
        let next_poll = now + delta(options.poll_interval);
        let mut core = Self {
            options,
            limits,
            stats,
            tasks: HashMap::new(),
            step_index: HashMap::new(),
            batches: HashMap::new(),
            remembered: HashSet::new(),
            remembered_order: VecDeque::new(),
            remembered_new: Vec::new(),
            pending_batches: HashMap::new(),
            unrecorded: Vec::new(),
            recording: HashSet::new(),
            sessions: HashMap::new(),
            peers: HashMap::new(),
            started_queue: VecDeque::new(),
            queue: VecDeque::new(),
            dirty: HashSet::new(),
            deadlines: BinaryHeap::new(),
            wakeups: BinaryHeap::new(),
            orphan_checks: BinaryHeap::new(),
            pending_items: VecDeque::new(),
            commit_in_flight: false,
            retry_items: Vec::new(),
            paused_until: None,
            waiters: HashMap::new(),
            creations: VecDeque::new(),
            claim_in_flight: false,
            claim_again: false,
            checks_after_claim: HashSet::new(),
            recovered: false,
            to_release: Vec::new(),
            next_poll,
            next_renew,
            shutting_down: false,
            actions: Vec::new(),
            ids: Arc::clone(&ambient.ids),
            clock: Arc::clone(&ambient.clock),
            jitter,
        };
        core.request_claim();
        core
    }

    /// The actions accumulated since the last call.
    pub(crate) fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    pub(crate) fn push(&mut self, action: Action) {
        self.actions.push(action);
    }

    /// Whether anything the shell must wait for before stopping is in flight.
    pub(crate) fn has_writes_in_flight(&self) -> bool {
        self.commit_in_flight || !self.pending_batches.is_empty()
    }

    /// Every task id held.
    pub(crate) fn task_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.tasks.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Stops dispatching and committing internal changes for a moment after a store failure.
    pub(crate) fn pause(&mut self, now: DateTime<Utc>) {
        self.paused_until = Some(now + TimeDelta::seconds(1));
    }

    /// Stops: no more dispatching or claiming; waiters and creations not yet in a commit are
    /// told the engine stopped.
    pub(crate) fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        for creation in self.creations.drain(..) {
            let _ = creation.reply.send(Err(EngineError::Stopped));
        }
        for (_, waiters) in self.waiters.drain() {
            for waiter in waiters {
                let _ = waiter.send(Err(EngineError::Stopped));
            }
        }
    }
}

/// The request for step `index` of `task`, with a placeholder attempt (the real one comes from
/// `batch_record`; the placeholder has the most digits, so size estimates are upper bounds).
pub(crate) fn step_request(task: &TaskRuntime, index: usize) -> StepRequest {
    let step = &task.steps[index];
    StepRequest {
        step_id: step.step_id,
        task_id: task.task_id,
        step_name: step.name.clone(),
        handler_class: step.handler_class.clone(),
        handler_config: step.handler_config.clone(),
        task_context: task.context.clone(),
        previous_results: task.previous_results(index),
        metadata: StepMetadata {
            attempt: u32::MAX,
            retry_limit: step.retry_limit,
            timeout_ms: step.timeout_ms,
            idempotency_key: StepMetadata::idempotency_key_for(step.step_id, u32::MAX),
        },
    }
}

/// The outcome of a finished task read from the store.
pub(crate) fn outcome_of_dag(dag: &TaskDag, now: DateTime<Utc>) -> TaskOutcome {
    let views = crate::engine::step_views_of_records(&dag.steps, &dag.edges);
    let facts: Vec<StepFacts<'_>> = dag
        .steps
        .iter()
        .map(|s| StepFacts {
            step_id: s.step_id,
            name: &s.name,
            last_error: s.last_error.as_ref(),
        })
        .collect();
    let status = tasker_core::status::task_execution_status(&views, now);
    let (reason, failed_steps) = match dag.task.state {
        TaskState::Error | TaskState::Cancelled => explain(&status, &views, &facts),
        _ => (None, Vec::new()),
    };
    TaskOutcome {
        task_id: dag.task.task_id,
        state: dag.task.state,
        reason,
        failed_steps,
    }
}

/// Adds a step to a batch learned from a worker (after a restart), creating the batch.
pub(crate) fn adopt_into_batch(
    batches: &mut HashMap<Uuid, BatchRuntime>,
    batch_id: Uuid,
    worker_id: &str,
    step: BatchStep,
) {
    let batch = batches.entry(batch_id).or_insert_with(|| BatchRuntime {
        worker_id: Some(worker_id.to_owned()),
        steps: Vec::new(),
        complete_list: false,
        state: tasker_core::state::BatchState::Published,
        reported: HashMap::new(),
        open: HashSet::new(),
        completion: None,
        findings: Vec::new(),
        ended_without_result: None,
    });
    if !batch.steps.iter().any(|s| s.step_id == step.step_id) {
        batch.steps.push(step);
        batch.open.insert(step.step_id);
    }
}

/// `time` as the store keeps it: whole milliseconds.
pub(crate) fn stored_time(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(time.timestamp_millis()).unwrap_or(time)
}

/// A std duration as a chrono delta (saturating).
pub(crate) fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

/// Whole milliseconds of a duration (saturating).
pub(crate) fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Whether a dispatch queue entry still stands for a step waiting to be dispatched.
fn is_queued(tasks: &HashMap<i64, TaskRuntime>, task_id: i64, index: usize) -> bool {
    tasks
        .get(&task_id)
        .is_some_and(|t| t.steps[index].busy == Busy::Queued)
}
