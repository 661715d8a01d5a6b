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
//! The pieces live in sibling modules as further `impl EngineCore` blocks: `sessions` (frames,
//! hello, heartbeats, goodbye), `result_intake` (classification, group commit, acks,
//! reconciliation, finalization), and this file (dispatch, batch recording, timers, task loading,
//! waiters).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tasker_core::readiness::{next_wakeup, ready_steps};
use tasker_core::state::{StepState, TaskState};
use tasker_protocol::{
    CancelReason, CancelSteps, Limits, OrchestratorHeartbeat, OrchestratorMessage,
    PROTOCOL_VERSION, StepBatch, StepMetadata, StepRequest,
};
use tasker_store::{
    BatchRecord, BatchRecorded, DeadLetterInsert, StoreError, TaskDag, TransitionsApply,
    WorkerUpsert,
};
use tasker_transport::{PeerId, TransportError};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::dispatcher::{Candidate, WorkerCredit, plan_batches};
use crate::error::{EngineError, EngineResult};
use crate::finalizer::{StepFacts, explain};
use crate::options::EngineOptions;
use crate::result_intake::{CommitBook, CommitItem, LossCause};
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

    // ---- tasks ------------------------------------------------------------------------------

    /// Asks for a claim round (coalesced with one in flight).
    pub(crate) fn request_claim(&mut self) {
        if self.shutting_down {
            return;
        }
        if self.claim_in_flight {
            self.claim_again = true;
        } else {
            self.claim_in_flight = true;
            let recover = !self.recovered;
            self.push(Action::ClaimTasks { recover });
        }
    }

    /// A claim round ended; `more` when it hit its limit and more tasks may be free.
    pub(crate) fn on_claim_done(&mut self, result: Result<bool, StoreError>) {
        self.claim_in_flight = false;
        match result {
            Ok(more) => {
                self.recovered = true;
                if more {
                    self.claim_again = true;
                }
            }
            Err(error) => {
                tracing::error!(%error, "claiming tasks failed; retrying at the next poll")
            }
        }
        if self.claim_again {
            self.claim_again = false;
            self.request_claim();
        }
        if !self.claim_in_flight {
            let awaited: Vec<i64> = self.checks_after_claim.drain().collect();
            for task_id in awaited {
                if self.waiters.contains_key(&task_id) && !self.tasks.contains_key(&task_id) {
                    self.push(Action::CheckTask(task_id));
                }
            }
        }
    }

    /// Tasks loaded from the store (claimed, recovered or resynchronised).
    pub(crate) fn on_tasks_loaded(&mut self, dags: Vec<TaskDag>, now: DateTime<Utc>) {
        for dag in dags {
            let task_id = dag.task.task_id;
            if !matches!(dag.task.state, TaskState::Pending | TaskState::InProgress) {
                // Finished meanwhile (by us, or by an operator).
                let outcome = outcome_of_dag(&dag, now);
                self.forget_task(task_id);
                self.answer_waiters(task_id, &outcome);
                continue;
            }
            let mut fresh = TaskRuntime::from_dag(dag, self.options.timeout_grace);
            if let Some(old) = self.tasks.remove(&task_id) {
                // Keep what the store cannot know: batches being recorded, queue membership,
                // changes being committed, workers of attempts in flight, handoff timestamps.
                fresh.finishing = old.finishing;
                for (new, old) in fresh.steps.iter_mut().zip(old.steps.iter()) {
                    if matches!(old.busy, Busy::Dispatching | Busy::Queued)
                        && new.in_flight.is_none()
                    {
                        new.busy = old.busy;
                    }
                    if old.busy == Busy::Committing && new.in_flight == old.in_flight {
                        new.busy = Busy::Committing;
                    }
                    if new.in_flight.is_some() && new.in_flight == old.in_flight {
                        new.worker.clone_from(&old.worker);
                        new.deadline = old.deadline.or(new.deadline);
                    }
                    new.ready_since = old.ready_since;
                }
            } else {
                tracing::debug!(task_id, "task taken on");
            }
            // A worker notices a lost orchestrator within its liveness window, reconnects and
            // says hello; give it that window twice before its steps count as orphaned.
            let orphan_window = self
                .options
                .liveness_window(self.options.heartbeat_interval)
                .saturating_mul(2);
            for (index, step) in fresh.steps.iter_mut().enumerate() {
                self.step_index.insert(step.step_id, (task_id, index));
                let Some(batch_id) = step.in_flight else {
                    continue;
                };
                // The batch is in the store, so it was sent: once its attempt ends, a late result
                // for it is fenced (spec §9.4), not rejected as a batch never sent.
                self.remembered_new.push(batch_id);
                if step.worker.is_none() {
                    step.worker = self
                        .batches
                        .get(&batch_id)
                        .and_then(|b| b.worker_id.clone());
                }
                if step.worker.is_none() {
                    // A worker that said hello before this task was loaded may have listed it.
                    step.worker = self
                        .sessions
                        .values()
                        .find(|s| s.outstanding.contains(&(batch_id, step.step_id)))
                        .map(|s| s.worker_id.clone());
                    if let Some(worker_id) = &step.worker {
                        adopt_into_batch(
                            &mut self.batches,
                            batch_id,
                            worker_id,
                            BatchStep {
                                step_id: step.step_id,
                                task_id,
                                attempt: step.attempts,
                            },
                        );
                        tracing::info!(worker_id, %batch_id, step_id = step.step_id, "step in flight adopted from its worker's hello");
                    }
                }
                if let Some(deadline) = step.deadline {
                    self.deadlines
                        .push(Reverse((deadline, step.step_id, batch_id)));
                }
                if step.worker.is_none() {
                    // In flight since before a restart: a worker that still runs it will say
                    // so in its hello; if none does within the window, it is lost.
                    self.orphan_checks.push(Reverse((
                        now + delta(orphan_window),
                        step.step_id,
                        batch_id,
                    )));
                }
            }
            for batch_id in std::mem::take(&mut self.remembered_new) {
                self.remember_batch(batch_id);
            }
            self.tasks.insert(task_id, fresh);
            self.dirty.insert(task_id);
        }
        self.update_task_gauge();
    }

    /// A task could not be loaded.
    pub(crate) fn on_task_load_failed(&mut self, task_id: i64, error: &StoreError) {
        tracing::error!(task_id, %error, "loading task failed; retrying at the next poll");
    }

    /// Leases renewed: tasks not renewed are no longer ours.
    pub(crate) fn on_leases_renewed(
        &mut self,
        asked: Vec<i64>,
        result: Result<Vec<i64>, StoreError>,
    ) {
        match result {
            Ok(renewed) => {
                let renewed: HashSet<i64> = renewed.into_iter().collect();
                for task_id in asked {
                    if !renewed.contains(&task_id) && self.tasks.contains_key(&task_id) {
                        tracing::warn!(
                            task_id,
                            "lease on task lost to another orchestrator; letting it go"
                        );
                        self.forget_task(task_id);
                    }
                }
                self.update_task_gauge();
            }
            Err(error) => tracing::error!(%error, "renewing task leases failed"),
        }
    }

    /// Removes a task from memory (finished, or no longer ours).
    pub(crate) fn forget_task(&mut self, task_id: i64) {
        if let Some(task) = self.tasks.remove(&task_id) {
            for step in &task.steps {
                self.step_index.remove(&step.step_id);
            }
        }
        self.dirty.remove(&task_id);
    }

    /// A task reached a final state: answer its waiters and let it go.
    pub(crate) fn finish_task(&mut self, task_id: i64, outcome: TaskOutcome) {
        match outcome.state {
            TaskState::Complete => StatsCounters::add(&self.stats.tasks_completed, 1),
            TaskState::Error => StatsCounters::add(&self.stats.tasks_failed, 1),
            _ => {}
        }
        match outcome.state {
            TaskState::Error => {
                tracing::warn!(
                    task_id,
                    reason = outcome.reason.as_deref().unwrap_or(""),
                    "task failed"
                )
            }
            state => tracing::debug!(task_id, %state, "task finished"),
        }
        if let Some(task) = self.tasks.get(&task_id) {
            tracing::debug!(
                task_id,
                namespace = task.namespace,
                name = task.name,
                "task done"
            );
        }
        self.forget_task(task_id);
        self.to_release.push(task_id);
        self.push(Action::Publish(crate::events::EngineEvent::TaskFinished {
            task_id,
            state: outcome.state,
        }));
        self.answer_waiters(task_id, &outcome);
        self.update_task_gauge();
    }

    fn answer_waiters(&mut self, task_id: i64, outcome: &TaskOutcome) {
        if let Some(waiters) = self.waiters.remove(&task_id) {
            for waiter in waiters {
                let _ = waiter.send(Ok(outcome.clone()));
            }
        }
    }

    fn update_task_gauge(&self) {
        StatsCounters::set(&self.stats.tasks_active, self.tasks.len() as u64);
    }

    /// Tasks to create: they join the next group commit (see `start_commit`).
    pub(crate) fn on_create(
        &mut self,
        tasks: Vec<tasker_store::NewTask>,
        reply: oneshot::Sender<EngineResult<Vec<tasker_store::TaskCreated>>>,
    ) {
        if self.shutting_down {
            let _ = reply.send(Err(EngineError::Stopped));
            return;
        }
        self.creations.push_back(Creation { tasks, reply });
    }

    /// Takes the creations for the group being built — whole requests, up to
    /// `max_results_per_commit` tasks (at least one request) — each task claimed by this engine.
    pub(crate) fn take_creations(
        &mut self,
        now: DateTime<Utc>,
    ) -> (Vec<tasker_store::NewTask>, Vec<(Creation, usize)>) {
        let expires_at = now + delta(self.options.lease_duration);
        let mut tasks = Vec::new();
        let mut taken = Vec::new();
        while let Some(creation) = self.creations.front() {
            if !taken.is_empty()
                && tasks.len() + creation.tasks.len() > self.options.max_results_per_commit
            {
                break;
            }
            let Some(mut creation) = self.creations.pop_front() else {
                break;
            };
            let count = creation.tasks.len();
            for mut task in std::mem::take(&mut creation.tasks) {
                task.claim = Some(tasker_store::TaskClaim {
                    orchestrator_id: self.options.orchestrator_id.clone(),
                    expires_at,
                });
                tasks.push(task);
            }
            taken.push((creation, count));
        }
        (tasks, taken)
    }

    /// The group commit that created tasks ended: hold the new ones (already claimed; built from
    /// what was asked, not read back) and answer the callers.
    pub(crate) fn on_tasks_created(
        &mut self,
        asked: Vec<tasker_store::NewTask>,
        creations: Vec<(Creation, usize)>,
        result: Result<Vec<tasker_store::TaskCreated>, StoreError>,
        now: DateTime<Utc>,
    ) {
        let created = match result {
            Ok(created) => created,
            Err(error) => {
                for (creation, _) in creations {
                    let _ = creation.reply.send(Err(EngineError::Store(error.clone())));
                }
                return;
            }
        };
        let mut dags = Vec::new();
        let mut existing = false;
        for (task, outcome) in asked.iter().zip(&created) {
            if outcome.created {
                dags.push(crate::task::created_dag(task, outcome));
            } else {
                existing = true;
            }
        }
        if !dags.is_empty() {
            self.on_tasks_loaded(dags, now);
        }
        if existing {
            // A repeated idempotency key: the existing task may be free (say, held by an
            // orchestrator that stopped); claim it if so.
            self.request_claim();
        }
        let mut outcomes = created.into_iter();
        for (creation, count) in creations {
            let answer: Vec<tasker_store::TaskCreated> = outcomes.by_ref().take(count).collect();
            let _ = creation.reply.send(Ok(answer));
        }
    }

    /// Someone waits for a task's end.
    pub(crate) fn on_await(&mut self, task_id: i64, reply: Waiter) {
        if self.shutting_down {
            let _ = reply.send(Err(EngineError::Stopped));
            return;
        }
        let held = self.tasks.contains_key(&task_id);
        let waiters = self.waiters.entry(task_id).or_default();
        // Long polls that timed out dropped their receivers: forget them here rather than keep
        // one sender per poll until the task ends.
        waiters.retain(|waiter| !waiter.is_closed());
        waiters.push(reply);
        if held {
            return;
        }
        if self.claim_in_flight {
            // Most likely a task just created, which that claim round (or the one it asked for)
            // takes on and loads: read it only if the claims end without it.
            self.checks_after_claim.insert(task_id);
        } else {
            self.push(Action::CheckTask(task_id));
        }
    }

    /// A task someone waits for, read from the store.
    pub(crate) fn on_task_checked(
        &mut self,
        task_id: i64,
        result: Result<TaskDag, StoreError>,
        now: DateTime<Utc>,
    ) {
        if self.tasks.contains_key(&task_id) {
            return;
        }
        match result {
            Ok(dag) if matches!(dag.task.state, TaskState::Pending | TaskState::InProgress) => {
                // Unfinished and not ours (yet): claim it if it is free; re-checked every poll.
                self.request_claim();
            }
            Ok(dag) => {
                let outcome = outcome_of_dag(&dag, now);
                self.answer_waiters(task_id, &outcome);
            }
            Err(StoreError::NotFound { .. }) => {
                if let Some(waiters) = self.waiters.remove(&task_id) {
                    for waiter in waiters {
                        let _ = waiter.send(Err(EngineError::TaskNotFound { task_id }));
                    }
                }
            }
            Err(error) => {
                tracing::warn!(task_id, %error, "reading a task for its waiters failed; retrying at the next poll");
            }
        }
    }

    // ---- dispatch ---------------------------------------------------------------------------

    /// Finds ready steps of changed tasks, queues them, and plans batches for workers with
    /// credit. Also queues the finalization of tasks that have nothing left to do. The batches
    /// planned wait for the next group commit ([`start_commit`](Self::start_commit)), which
    /// records them together with the results and other changes it carries.
    pub(crate) fn dispatch(&mut self, now: DateTime<Utc>) {
        self.plan(now);
    }

    /// Whether batches are planned and waiting for the next group commit.
    pub(crate) fn has_unrecorded_batches(&self) -> bool {
        !self.unrecorded.is_empty()
    }

    /// Takes every batch planned and not yet recorded, for the group commit being built: they
    /// are recorded in its transaction, after its changes.
    pub(crate) fn take_unrecorded(&mut self) -> Vec<BatchRecord> {
        let batches = std::mem::take(&mut self.unrecorded);
        self.recording = batches.iter().map(|b| b.batch_uuid).collect();
        batches
    }

    /// Queues steps that the change sets of the group being built make ready (children of steps
    /// it completes) and plans their batches at once, so that they are recorded in the same
    /// transaction as the results that made them ready: one commit per handoff. `results` are the
    /// tentative outputs of the steps the group completes; they are noted on those steps now
    /// because the children's requests carry them in `previous_results` (if the store refuses
    /// the parent's change, it refuses the child's dispatch too, and the task is reloaded).
    pub(crate) fn plan_children(
        &mut self,
        task_id: i64,
        ready: &[usize],
        results: Vec<(usize, serde_json::Value)>,
        now: DateTime<Utc>,
    ) {
        if self.shutting_down || self.paused_until.is_some_and(|until| until > now) {
            return;
        }
        let Some(task) = self.tasks.get_mut(&task_id) else {
            return;
        };
        let mut queued = false;
        for &index in ready {
            let step = &mut task.steps[index];
            if step.busy == Busy::Idle && step.in_flight.is_none() {
                step.busy = Busy::Queued;
                self.started_queue.push_back((task_id, index));
                queued = true;
            }
        }
        if queued {
            for (index, output) in results {
                task.steps[index].results = Some(output);
            }
            self.plan_dispatch(now);
        }
    }

    fn plan(&mut self, now: DateTime<Utc>) {
        if self.shutting_down {
            return;
        }
        let dirty: Vec<i64> = self.dirty.drain().collect();
        for task_id in dirty {
            let Some(task) = self.tasks.get_mut(&task_id) else {
                continue;
            };
            if !matches!(task.state, TaskState::Pending | TaskState::InProgress) {
                continue;
            }
            let views = task.views();
            let ready = ready_steps(&views, now);
            let started = task
                .steps
                .iter()
                .any(|s| s.attempts > 0 || s.state != StepState::Pending);
            let queue = if started {
                &mut self.started_queue
            } else {
                &mut self.queue
            };
            for &index in &ready {
                if task.steps[index].busy == Busy::Idle {
                    task.steps[index].busy = Busy::Queued;
                    queue.push_back((task_id, index));
                }
            }
            if let Some(at) = next_wakeup(&views, now) {
                self.wakeups.push(Reverse((at, task_id)));
            }
            let queued_or_busy = task
                .steps
                .iter()
                .any(|s| s.busy != Busy::Idle || s.in_flight.is_some());
            if ready.is_empty() && !queued_or_busy && !task.finishing {
                let facts: Vec<StepFacts<'_>> = task
                    .steps
                    .iter()
                    .map(|s| StepFacts {
                        step_id: s.step_id,
                        name: &s.name,
                        last_error: s.last_error.as_ref(),
                    })
                    .collect();
                if crate::finalizer::finalize(task.state, &views, &facts, now).is_some() {
                    task.finishing = true;
                    self.pending_items
                        .push_back(CommitItem::Finalize { task_id });
                }
            }
        }
        if self.paused_until.is_some_and(|until| until > now) {
            return;
        }
        self.plan_dispatch(now);
    }

    fn plan_dispatch(&mut self, now: DateTime<Utc>) {
        // Stale entries (finished tasks, steps no longer waiting) are dropped lazily: here at
        // the heads, and below within the part of the queues this turn looks at, so a turn costs
        // what it plans rather than the length of the backlog.
        for queue in [&mut self.started_queue, &mut self.queue] {
            while let Some(&(task_id, index)) = queue.front() {
                if is_queued(&self.tasks, task_id, index) {
                    break;
                }
                queue.pop_front();
            }
        }
        if self.started_queue.is_empty() && self.queue.is_empty() {
            return;
        }
        let mut workers: Vec<WorkerCredit> = self
            .sessions
            .values()
            .filter(|s| s.credit() > 0)
            .map(|s| WorkerCredit {
                worker_id: s.worker_id.clone(),
                handler_classes: s.handler_classes.clone(),
                free: s.credit(),
            })
            .collect();
        workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        let total_credit: usize = workers.iter().map(|w| w.free).sum();
        if total_credit == 0 {
            return;
        }
        // Only build requests for as many steps as could be sent now, per handler class.
        let mut class_credit: HashMap<&str, usize> = HashMap::new();
        for worker in &workers {
            for class in &worker.handler_classes {
                *class_credit.entry(class.as_str()).or_default() += worker.free;
            }
        }
        let mut candidates = Vec::new();
        let mut requests: HashMap<(i64, usize), StepRequest> = HashMap::new();
        let mut taken = 0;
        // Entries looked at in each queue; started tasks' steps first, each queue in order.
        let mut scanned = [0, 0];
        let entries = self
            .started_queue
            .iter()
            .map(|&entry| (0, entry))
            .chain(self.queue.iter().map(|&entry| (1, entry)));
        for (which, (task_id, index)) in entries {
            if taken >= total_credit {
                break;
            }
            scanned[which] += 1;
            let Some(task) = self.tasks.get(&task_id) else {
                continue;
            };
            let step = &task.steps[index];
            if step.busy != Busy::Queued || requests.contains_key(&(task_id, index)) {
                // Stale, or queued twice.
                continue;
            }
            let Some(credit) = class_credit.get_mut(step.handler_class.as_str()) else {
                continue;
            };
            if *credit == 0 {
                continue;
            }
            *credit -= 1;
            taken += 1;
            let request = step_request(task, index);
            let bytes = serde_json::to_vec(&request).map_or(usize::MAX, |v| v.len());
            candidates.push(Candidate {
                key: (task_id, index),
                handler_class: step.handler_class.clone(),
                bytes,
            });
            requests.insert((task_id, index), request);
        }
        let plan = plan_batches(
            candidates,
            &workers,
            self.options.batch_size,
            self.options.max_frame_bytes,
        );
        for batch in plan.batches {
            let steps = batch
                .steps
                .into_iter()
                .filter_map(|key| requests.remove(&key).map(|r| (key.0, key.1, r)))
                .collect();
            self.record_batch(Some(batch.worker_id), steps, now);
        }
        for key in plan.oversized {
            if let Some(request) = requests.remove(&key) {
                tracing::error!(
                    task_id = key.0,
                    step_id = request.step_id,
                    max_frame_bytes = self.options.max_frame_bytes,
                    "step request is larger than max_frame_bytes; the step fails"
                );
                self.record_batch(None, vec![(key.0, key.1, request)], now);
            }
        }
        // Only the entries looked at can have been planned; keep those still waiting, in order.
        for (queue, scanned) in [&mut self.started_queue, &mut self.queue]
            .into_iter()
            .zip(scanned)
        {
            let looked_at: Vec<(i64, usize)> = queue.drain(..scanned).collect();
            for &(task_id, index) in looked_at.iter().rev() {
                if is_queued(&self.tasks, task_id, index) {
                    queue.push_front((task_id, index));
                }
            }
        }
    }

    /// Marks the steps as dispatching, reserves the worker's credit, and puts the batch in line
    /// for the next group commit (see [`take_unrecorded`](Self::take_unrecorded)).
    fn record_batch(
        &mut self,
        worker_id: Option<String>,
        steps: Vec<(i64, usize, StepRequest)>,
        now: DateTime<Utc>,
    ) {
        let batch_id = self.ids.batch_id();
        let mut record_steps = Vec::with_capacity(steps.len());
        let mut timeout_ms: u64 = 0;
        let mut classes: HashSet<&str> = HashSet::new();
        for (task_id, index, _) in &steps {
            if let Some(task) = self.tasks.get_mut(task_id) {
                let step = &mut task.steps[*index];
                step.busy = Busy::Dispatching;
                record_steps.push(tasker_store::BatchStep {
                    step_id: step.step_id,
                    expect_state: step.state,
                });
                timeout_ms = timeout_ms.max(
                    step.timeout_ms
                        .unwrap_or(duration_ms(self.options.default_step_timeout)),
                );
            }
        }
        for (task_id, index, _) in &steps {
            if let Some(task) = self.tasks.get(task_id) {
                classes.insert(task.steps[*index].handler_class.as_str());
            }
        }
        let handler_class = if classes.len() == 1 {
            classes.into_iter().next().map(str::to_owned)
        } else {
            None
        };
        if let Some(worker) = worker_id.as_ref().and_then(|w| self.sessions.get_mut(w)) {
            for (_, _, request) in &steps {
                worker.outstanding.insert((batch_id, request.step_id));
            }
        }
        let params = BatchRecord {
            now,
            claimant: Some(self.options.orchestrator_id.clone()),
            batch_uuid: batch_id,
            worker_id: worker_id.clone(),
            handler_class,
            timeout_ms: i64::try_from(timeout_ms).unwrap_or(i64::MAX),
            state: tasker_core::state::BatchState::Published,
            metadata: None,
            steps: record_steps,
        };
        self.pending_batches
            .insert(batch_id, PendingBatch { worker_id, steps });
        self.unrecorded.push(params);
    }

    /// The store recorded (or refused) a group of batches, in the order asked: each is sent or
    /// undone as [`on_batch_recorded`](Self::on_batch_recorded) says.
    pub(crate) fn on_batches_recorded(
        &mut self,
        batch_ids: Vec<Uuid>,
        result: Result<Vec<BatchRecorded>, StoreError>,
        now: DateTime<Utc>,
    ) {
        match result {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for batch_id in batch_ids {
                    match outcomes.next() {
                        Some(recorded) => self.on_batch_recorded(batch_id, Ok(recorded), now),
                        None => self.batch_not_recorded(
                            batch_id,
                            &"the store returned no outcome for it",
                            now,
                        ),
                    }
                }
            }
            Err(error) => {
                for batch_id in batch_ids {
                    self.batch_not_recorded(batch_id, &error, now);
                }
            }
        }
    }

    /// Recording a batch failed: its steps wait for the next dispatch, after a pause.
    fn batch_not_recorded(
        &mut self,
        batch_id: Uuid,
        error: &dyn std::fmt::Display,
        now: DateTime<Utc>,
    ) {
        self.recording.remove(&batch_id);
        let Some(pending) = self.pending_batches.remove(&batch_id) else {
            return;
        };
        tracing::error!(%batch_id, %error, "recording a batch failed; its steps wait for the next dispatch");
        for (task_id, index, request) in &pending.steps {
            self.release_step(batch_id, request.step_id, pending.worker_id.as_deref());
            if let Some(task) = self.tasks.get_mut(task_id) {
                task.steps[*index].busy = Busy::Idle;
            }
            self.dirty.insert(*task_id);
        }
        self.pause(now);
    }

    /// The store recorded (or refused) a batch: send it, or undo.
    pub(crate) fn on_batch_recorded(
        &mut self,
        batch_id: Uuid,
        result: Result<BatchRecorded, StoreError>,
        now: DateTime<Utc>,
    ) {
        let recorded = match result {
            Ok(recorded) => recorded,
            Err(error) => {
                self.batch_not_recorded(batch_id, &error, now);
                return;
            }
        };
        self.recording.remove(&batch_id);
        let Some(pending) = self.pending_batches.remove(&batch_id) else {
            return;
        };
        let included: HashMap<i64, u32> = recorded
            .included
            .iter()
            .map(|d| (d.step_id, u32::try_from(d.attempt).unwrap_or(1)))
            .collect();
        if !recorded.refused.is_empty() {
            tracing::warn!(%batch_id, refused = ?recorded.refused, "steps left out of a batch; resynchronising their tasks");
        }
        let mut resync = Vec::new();
        let mut sent = Vec::new();
        let mut batch_steps = Vec::new();
        let grace = self.options.timeout_grace;
        let default_timeout = self.options.default_step_timeout;
        for (task_id, index, mut request) in pending.steps {
            let Some(task) = self.tasks.get_mut(&task_id) else {
                self.release_step(batch_id, request.step_id, pending.worker_id.as_deref());
                continue;
            };
            let step = &mut task.steps[index];
            match included.get(&step.step_id) {
                Some(&attempt) => {
                    step.state = StepState::InProgress;
                    step.attempts = attempt;
                    step.in_flight = Some(batch_id);
                    step.worker.clone_from(&pending.worker_id);
                    step.busy = Busy::Idle;
                    step.backoff_until = None;
                    let timeout = step
                        .timeout_ms
                        .map_or(default_timeout, Duration::from_millis);
                    let deadline = now + delta(timeout) + delta(grace);
                    step.deadline = Some(deadline);
                    self.deadlines
                        .push(Reverse((deadline, step.step_id, batch_id)));
                    if task.state == TaskState::Pending {
                        task.state = TaskState::InProgress;
                    }
                    self.actions
                        .push(Action::Publish(crate::events::EngineEvent::StepChanged {
                            task_id,
                            step_id: step.step_id,
                            step_name: step.name.clone(),
                            state: StepState::InProgress,
                            attempts: attempt,
                            backoff_until: None,
                        }));
                    request.metadata.attempt = attempt;
                    request.metadata.idempotency_key =
                        StepMetadata::idempotency_key_for(request.step_id, attempt);
                    batch_steps.push(BatchStep {
                        step_id: request.step_id,
                        task_id,
                        attempt,
                    });
                    sent.push((task_id, index, request));
                }
                None => {
                    step.busy = Busy::Idle;
                    self.release_step(batch_id, request.step_id, pending.worker_id.as_deref());
                    resync.push(task_id);
                }
            }
        }
        if !resync.is_empty() {
            resync.sort_unstable();
            resync.dedup();
            self.push(Action::LoadTasks(resync));
        }
        if !recorded.recorded || sent.is_empty() {
            return;
        }
        self.batches.insert(
            batch_id,
            BatchRuntime {
                worker_id: pending.worker_id.clone(),
                open: batch_steps.iter().map(|s| s.step_id).collect(),
                steps: batch_steps,
                complete_list: true,
                state: tasker_core::state::BatchState::Published,
                reported: HashMap::new(),
                completion: None,
                findings: Vec::new(),
                ended_without_result: None,
            },
        );
        self.remember_batch(batch_id);
        let Some(worker_id) = pending.worker_id else {
            for (_, _, request) in &sent {
                self.pending_items.push_back(CommitItem::Lost {
                    batch_id,
                    step_id: request.step_id,
                    cause: LossCause::RequestTooLarge,
                });
            }
            return;
        };
        let Some(session) = self.sessions.get(&worker_id) else {
            // The worker went away while the batch was being recorded: it was never sent.
            for (_, _, request) in &sent {
                self.pending_items.push_back(CommitItem::Requeue {
                    batch_id,
                    step_id: request.step_id,
                    cause: "worker gone before the batch was sent",
                });
            }
            return;
        };
        let peer = session.peer.clone();
        let send_instant = self.clock.monotonic();
        let mut requests = Vec::with_capacity(sent.len());
        for (task_id, index, request) in sent {
            if let Some(task) = self.tasks.get_mut(&task_id)
                && let Some(since) = task.steps[index].ready_since.take()
            {
                self.stats
                    .handoff(send_instant.saturating_duration_since(since));
            }
            requests.push(request);
        }
        let count = requests.len() as u64;
        let message = OrchestratorMessage::StepBatch(StepBatch {
            protocol_version: PROTOCOL_VERSION,
            batch_id,
            steps: requests,
        });
        let frame = tasker_protocol::encode(&message);
        if frame.len() > self.options.max_frame_bytes {
            tracing::error!(%batch_id, bytes = frame.len(), "encoded batch exceeds max_frame_bytes; requeueing its steps");
            self.requeue_batch(batch_id, "batch frame too large");
            return;
        }
        StatsCounters::add(&self.stats.batches_dispatched, 1);
        StatsCounters::add(&self.stats.steps_dispatched, count);
        tracing::debug!(%batch_id, worker_id = %worker_id, steps = count, "batch dispatched");
        self.push(Action::SendBatch {
            peer,
            batch_id,
            frame,
        });
    }

    /// A batch could not be handed to ZeroMQ: its steps were never sent.
    pub(crate) fn on_send_failed(
        &mut self,
        batch_id: Uuid,
        error: &TransportError,
        now: DateTime<Utc>,
    ) {
        StatsCounters::add(&self.stats.batches_send_failed, 1);
        let worker_id = self
            .batches
            .get(&batch_id)
            .and_then(|b| b.worker_id.clone());
        tracing::warn!(%batch_id, worker_id = worker_id.as_deref().unwrap_or(""), %error, "sending a batch failed; requeueing its steps");
        self.requeue_batch(batch_id, "send failed");
        if matches!(error, TransportError::PeerUnreachable { .. })
            && let Some(worker_id) = worker_id
        {
            // The routing id is not connected any more: the worker is gone (a reconnect gets a
            // new routing id and says hello again).
            self.declare_dead(&worker_id, "its connection is gone", now);
        }
    }

    /// Requeues every open step of a batch that never reached its worker, releasing credit.
    fn requeue_batch(&mut self, batch_id: Uuid, cause: &'static str) {
        let Some(batch) = self.batches.get(&batch_id) else {
            return;
        };
        let worker = batch.worker_id.clone();
        let open: Vec<i64> = batch.open.iter().copied().collect();
        for step_id in open {
            self.release_step(batch_id, step_id, worker.as_deref());
            self.pending_items.push_back(CommitItem::Requeue {
                batch_id,
                step_id,
                cause,
            });
        }
    }

    /// Releases a `(batch, step)` pair from a worker's credit.
    pub(crate) fn release_step(&mut self, batch_id: Uuid, step_id: i64, worker_id: Option<&str>) {
        if let Some(session) = worker_id.and_then(|w| self.sessions.get_mut(w)) {
            session.outstanding.remove(&(batch_id, step_id));
        }
    }

    /// Remembers a batch id after its details are forgotten.
    pub(crate) fn remember_batch(&mut self, batch_id: Uuid) {
        if self.remembered.insert(batch_id) {
            self.remembered_order.push_back(batch_id);
            if self.remembered_order.len() > REMEMBERED_BATCHES
                && let Some(old) = self.remembered_order.pop_front()
            {
                self.remembered.remove(&old);
            }
        }
    }

    /// Whether the engine ever dispatched (or adopted) this batch.
    pub(crate) fn knows_batch(&self, batch_id: &Uuid) -> bool {
        self.batches.contains_key(batch_id) || self.remembered.contains(batch_id)
    }

    /// Stops dispatching and committing internal changes for a moment after a store failure.
    pub(crate) fn pause(&mut self, now: DateTime<Utc>) {
        self.paused_until = Some(now + TimeDelta::seconds(1));
    }

    // ---- workers ----------------------------------------------------------------------------

    /// Declares a worker dead: forget its session, fail its outstanding steps as retryable.
    pub(crate) fn declare_dead(&mut self, worker_id: &str, why: &str, _now: DateTime<Utc>) {
        let Some(session) = self.sessions.remove(worker_id) else {
            return;
        };
        self.peers.remove(&session.peer);
        StatsCounters::add(&self.stats.workers_lost, 1);
        StatsCounters::set(&self.stats.workers_connected, self.sessions.len() as u64);
        tracing::warn!(
            worker_id,
            outstanding = session.outstanding.len(),
            "worker declared dead: {why}; its steps will be retried"
        );
        let mut lost: Vec<(Uuid, i64)> = session.outstanding.into_iter().collect();
        lost.sort_unstable();
        for (batch_id, step_id) in lost {
            self.pending_items.push_back(CommitItem::Lost {
                batch_id,
                step_id,
                cause: LossCause::WorkerLost,
            });
        }
        // Batches of this worker whose steps all reported but whose completion never came.
        let mut unfinished: Vec<Uuid> = self
            .batches
            .iter()
            .filter(|(_, b)| {
                b.worker_id.as_deref() == Some(worker_id)
                    && b.open.is_empty()
                    && !b.state.is_terminal()
            })
            .map(|(id, _)| *id)
            .collect();
        unfinished.sort_unstable();
        for batch_id in unfinished {
            self.pending_items
                .push_back(CommitItem::CloseBatch { batch_id });
        }
    }

    // ---- timers -----------------------------------------------------------------------------

    /// The earliest time something is due.
    pub(crate) fn next_due(&self) -> DateTime<Utc> {
        let mut due = self.next_poll.min(self.next_renew);
        if let Some(Reverse((at, _, _))) = self.deadlines.peek() {
            due = due.min(*at);
        }
        if let Some(Reverse((at, _))) = self.wakeups.peek() {
            due = due.min(*at);
        }
        if let Some(Reverse((at, _, _))) = self.orphan_checks.peek() {
            due = due.min(*at);
        }
        if let Some(until) = self.paused_until {
            due = due.min(until);
        }
        for session in self.sessions.values() {
            due = due.min(session.next_heartbeat).min(
                session.last_seen + delta(self.options.liveness_window(session.heartbeat_interval)),
            );
        }
        due
    }

    /// Whatever is due at `now`: timeouts, backoff expiries, orphan checks, dead workers,
    /// heartbeats, the safety-net poll, lease renewal.
    pub(crate) fn on_tick(&mut self, now: DateTime<Utc>) {
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
            for item in std::mem::take(&mut self.retry_items) {
                self.pending_items.push_back(item);
            }
            let ids: Vec<i64> = self.tasks.keys().copied().collect();
            self.dirty.extend(ids);
        }
        self.reap_timeouts(now);
        while let Some(Reverse((at, task_id))) = self.wakeups.peek().copied() {
            if at > now {
                break;
            }
            self.wakeups.pop();
            self.dirty.insert(task_id);
        }
        while let Some(Reverse((at, step_id, batch_id))) = self.orphan_checks.peek().copied() {
            if at > now {
                break;
            }
            self.orphan_checks.pop();
            if let Some((task_id, index)) = self.step_index.get(&step_id).copied()
                && let Some(task) = self.tasks.get(&task_id)
            {
                let step = &task.steps[index];
                if step.in_flight == Some(batch_id)
                    && step.worker.is_none()
                    && step.busy == Busy::Idle
                {
                    tracing::warn!(step_id, %batch_id, "no worker claims a step in flight since before the restart; it is lost");
                    self.pending_items.push_back(CommitItem::Lost {
                        batch_id,
                        step_id,
                        cause: LossCause::WorkerLost,
                    });
                }
            }
        }
        let expired: Vec<String> = self
            .sessions
            .values()
            .filter(|s| {
                s.last_seen + delta(self.options.liveness_window(s.heartbeat_interval)) <= now
            })
            .map(|s| s.worker_id.clone())
            .collect();
        for worker_id in expired {
            self.declare_dead(&worker_id, "no message within the liveness window", now);
        }
        let mut heartbeats = Vec::new();
        for session in self.sessions.values_mut() {
            if session.next_heartbeat <= now {
                session.next_heartbeat = now + delta(session.heartbeat_interval);
                heartbeats.push(session.peer.clone());
            }
        }
        for peer in heartbeats {
            self.push(Action::Send {
                peer,
                message: OrchestratorMessage::Heartbeat(OrchestratorHeartbeat {
                    protocol_version: PROTOCOL_VERSION,
                    orchestrator_id: self.options.orchestrator_id.clone(),
                    timestamp: now,
                }),
            });
        }
        if now >= self.next_poll {
            self.next_poll = now + delta(self.options.poll_interval);
            self.request_claim();
            let ids: Vec<i64> = self.tasks.keys().copied().collect();
            self.dirty.extend(ids);
            let unheld: Vec<i64> = self
                .waiters
                .keys()
                .filter(|id| !self.tasks.contains_key(id))
                .copied()
                .collect();
            for task_id in unheld {
                self.push(Action::CheckTask(task_id));
            }
            if !self.to_release.is_empty() {
                let ids = std::mem::take(&mut self.to_release);
                self.push(Action::ReleaseLeases(ids));
            }
        }
        if now >= self.next_renew {
            self.next_renew = now + delta(self.options.lease_duration / 3);
            let ids = self.task_ids();
            if !ids.is_empty() {
                self.push(Action::RenewLeases(ids));
            }
        }
    }

    fn reap_timeouts(&mut self, now: DateTime<Utc>) {
        let mut cancels: HashMap<Uuid, Vec<i64>> = HashMap::new();
        while let Some(Reverse((at, step_id, batch_id))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let Some((task_id, index)) = self.step_index.get(&step_id).copied() else {
                continue;
            };
            let Some(task) = self.tasks.get(&task_id) else {
                continue;
            };
            let step = &task.steps[index];
            if step.in_flight != Some(batch_id)
                || step.deadline != Some(at)
                || step.busy != Busy::Idle
            {
                continue;
            }
            tracing::warn!(task_id, step_id, %batch_id, "step attempt timed out");
            StatsCounters::add(&self.stats.steps_timed_out, 1);
            self.pending_items.push_back(CommitItem::Lost {
                batch_id,
                step_id,
                cause: LossCause::Timeout,
            });
            cancels.entry(batch_id).or_default().push(step_id);
        }
        for (batch_id, mut step_ids) in cancels {
            step_ids.sort_unstable();
            let peer = self
                .batches
                .get(&batch_id)
                .and_then(|b| b.worker_id.as_ref())
                .and_then(|w| self.sessions.get(w))
                .map(|s| s.peer.clone());
            if let Some(peer) = peer {
                for chunk in step_ids.chunks(self.options.batch_size.max(1)) {
                    self.push(Action::Send {
                        peer: peer.clone(),
                        message: OrchestratorMessage::CancelSteps(CancelSteps {
                            protocol_version: PROTOCOL_VERSION,
                            batch_id,
                            step_ids: chunk.to_vec(),
                            reason: CancelReason::Timeout,
                        }),
                    });
                }
            }
        }
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
