//! What the [`Store`](crate::Store) operations return.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tasker_core::backoff::BackoffPolicy;
use tasker_core::state::{BatchState, StepState, TaskState};
use uuid::Uuid;

use crate::error::Refusal;

/// A stored task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRecord {
    /// Database-assigned id.
    pub task_id: i64,
    /// Template namespace.
    pub namespace: String,
    /// Template name.
    pub name: String,
    /// Template version.
    pub version: String,
    /// Current state.
    pub state: TaskState,
    /// Input context.
    pub context: Value,
    /// Who asked for it.
    pub initiator: Option<String>,
    /// Which system asked for it.
    pub source_system: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Labels.
    pub tags: Vec<String>,
    /// Idempotency key, unique per template.
    pub idempotency_key: Option<String>,
    /// The orchestrator holding the task's lease, if any.
    pub claimed_by: Option<String>,
    /// When that lease ends.
    pub claim_expires_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it reached a terminal state.
    pub completed_at: Option<DateTime<Utc>>,
}

/// A stored workflow step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    /// Database-assigned id.
    pub step_id: i64,
    /// Its task.
    pub task_id: i64,
    /// Name, unique within the task.
    pub name: String,
    /// Position in template order (0-based).
    pub position: i32,
    /// The handler a worker runs.
    pub handler_class: String,
    /// Handler configuration.
    pub handler_config: Value,
    /// Whether failed attempts may be retried.
    pub retryable: bool,
    /// Attempts allowed.
    pub retry_limit: i32,
    /// Per-attempt timeout.
    pub timeout_ms: Option<i64>,
    /// Backoff override.
    pub backoff: Option<BackoffPolicy>,
    /// Current state.
    pub state: StepState,
    /// Attempts dispatched so far.
    pub attempts: i32,
    /// When the last attempt was dispatched.
    pub last_attempted_at: Option<DateTime<Utc>>,
    /// Earliest time of the next retry.
    pub backoff_until: Option<DateTime<Utc>>,
    /// Results of the successful (or manually resolved) attempt.
    pub results: Option<Value>,
    /// The last error reported.
    pub last_error: Option<Value>,
    /// The batch the step is in flight in (set exactly while `in_progress`).
    pub in_flight_batch: Option<Uuid>,
    /// When the in-flight attempt times out.
    pub in_flight_deadline_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A task with its steps and edges: everything the engine needs to drive it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskDag {
    /// The task.
    pub task: TaskRecord,
    /// Its steps in template order.
    pub steps: Vec<StepRecord>,
    /// Dependencies as `(parent step id, child step id)`, sorted.
    pub edges: Vec<(i64, i64)>,
}

/// Puts tasks, steps (in template order per task) and edges (sorted per task), read for several
/// tasks at once, together into one [`TaskDag`] per task, in the order of `asked`, each once;
/// asked ids without a task row are left out.
pub(crate) fn dags_in_order(
    asked: &[i64],
    tasks: Vec<TaskRecord>,
    steps: Vec<StepRecord>,
    edges: Vec<(i64, i64, i64)>,
) -> Vec<TaskDag> {
    let mut dags: std::collections::HashMap<i64, TaskDag> = tasks
        .into_iter()
        .map(|task| {
            (
                task.task_id,
                TaskDag {
                    task,
                    steps: Vec::new(),
                    edges: Vec::new(),
                },
            )
        })
        .collect();
    for step in steps {
        if let Some(dag) = dags.get_mut(&step.task_id) {
            dag.steps.push(step);
        }
    }
    for (task_id, from, to) in edges {
        if let Some(dag) = dags.get_mut(&task_id) {
            dag.edges.push((from, to));
        }
    }
    asked.iter().filter_map(|id| dags.remove(id)).collect()
}

/// The outcome of [`Store::task_create`](crate::Store::task_create).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskCreated {
    /// The task's id (the existing one for a repeated idempotency key).
    pub task_id: i64,
    /// False when the idempotency key matched an existing task and nothing was written.
    pub created: bool,
    /// The step ids, in the order of the steps given (or of the existing task's steps).
    pub step_ids: Vec<i64>,
}

/// A page of results and the cursor for the next one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// Pass this as the cursor to get the next page; `None` when this page is the last.
    pub next_cursor: Option<i64>,
}

/// A step that can be dispatched now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadyStep {
    /// The step.
    pub step_id: i64,
    /// Its task.
    pub task_id: i64,
    /// Its name.
    pub name: String,
    /// Its handler.
    pub handler_class: String,
    /// `pending` or `error` (a retry).
    pub state: StepState,
    /// Attempts so far.
    pub attempts: i32,
}

/// A step in flight (used for timeouts and orphans).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InFlightStep {
    /// The step.
    pub step_id: i64,
    /// Its task.
    pub task_id: i64,
    /// The batch it is in flight in.
    pub batch_uuid: Uuid,
    /// The worker the batch went to.
    pub worker_id: Option<String>,
    /// Attempts so far (this one included).
    pub attempts: i32,
    /// When the attempt times out.
    pub deadline_at: DateTime<Utc>,
}

/// A batch whose worker is gone, with the steps still in flight in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrphanedBatch {
    /// The batch.
    pub batch_uuid: Uuid,
    /// Its state.
    pub state: BatchState,
    /// The worker it went to.
    pub worker_id: Option<String>,
    /// That worker's last heartbeat (`None`: unknown worker or never sent).
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Steps still in flight in this batch, ascending.
    pub in_flight_step_ids: Vec<i64>,
}

/// The outcome of one ledger entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerOutcome {
    /// Appended.
    Recorded,
    /// An entry with the same (batch id, step id, message kind) exists; nothing was written.
    Duplicate,
}

/// A stored ledger entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerRecord {
    /// Database-assigned id, ascending in arrival order.
    pub id: i64,
    /// The batch id as received.
    pub batch_uuid: Option<String>,
    /// The step it was about.
    pub step_id: Option<i64>,
    /// The message kind.
    pub message_kind: String,
    /// The sending worker.
    pub worker_id: Option<String>,
    /// The worker's sequence number.
    pub sequence: Option<i64>,
    /// The reported status.
    pub status: Option<String>,
    /// The reported execution time.
    pub execution_time_ms: Option<i64>,
    /// The message as received.
    pub raw_message: String,
    /// Processing problems (including refusals of the changes it caused).
    pub processing_errors: Option<Value>,
    /// Receipt time.
    pub received_at: DateTime<Utc>,
}

/// The outcome of [`Store::transitions_apply`](crate::Store::transitions_apply).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransitionsApplied {
    /// One outcome per ledger entry, in order.
    pub ledger: Vec<LedgerOutcome>,
    /// Indexes of the applied change sets.
    pub applied: Vec<usize>,
    /// Refused change sets: index and every reason.
    pub refused: Vec<RefusedSet>,
    /// One outcome per batch of [`TransitionsApply::batches`](crate::TransitionsApply::batches),
    /// in order.
    pub batches: Vec<BatchRecorded>,
    /// One outcome per task of [`TransitionsApply::tasks`](crate::TransitionsApply::tasks), in
    /// order.
    pub tasks: Vec<TaskCreated>,
}

/// A refused change set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedSet {
    /// Index into the `changes` given.
    pub index: usize,
    /// Why (at least one entry).
    pub refusals: Vec<Refusal>,
}

/// A step included in a recorded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DispatchedStep {
    /// The step.
    pub step_id: i64,
    /// Its task.
    pub task_id: i64,
    /// The attempt number this dispatch is (1 for the first).
    pub attempt: i32,
    /// Position within the batch (0-based).
    pub sequence_order: i32,
}

/// The outcome of [`Store::batch_record`](crate::Store::batch_record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchRecorded {
    /// Whether a batch row was written (false when every step was refused).
    pub recorded: bool,
    /// Steps now in flight in the batch, in sequence order.
    pub included: Vec<DispatchedStep>,
    /// Steps left out and why.
    pub refused: Vec<Refusal>,
}

/// One step of a stored batch, with what the ledger says about it (for reconciliation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchStepDetail {
    /// The step.
    pub step_id: i64,
    /// Position within the batch.
    pub sequence_order: i32,
    /// The attempt this batch was.
    pub attempt: i32,
    /// The step's current state.
    pub step_state: StepState,
    /// Whether the step is still in flight in this batch.
    pub in_flight_here: bool,
    /// The status of the partial result received for it in this batch, if any.
    pub reported_status: Option<String>,
}

/// A stored batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchDetail {
    /// The batch id.
    pub batch_uuid: Uuid,
    /// The worker it went to.
    pub worker_id: Option<String>,
    /// Its handler class, if one.
    pub handler_class: Option<String>,
    /// Steps in it.
    pub batch_size: i32,
    /// Its timeout.
    pub timeout_ms: i64,
    /// Current state.
    pub state: BatchState,
    /// Metadata.
    pub metadata: Option<Value>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Whether a batch-completion message was received for it.
    pub completion_received: bool,
    /// Its steps in sequence order.
    pub steps: Vec<BatchStepDetail>,
}

/// One row of a task's, step's or batch's transition history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransitionRecord {
    /// Previous state (`None` for the first).
    pub from_state: Option<String>,
    /// New state.
    pub to_state: String,
    /// Event name.
    pub event: String,
    /// Metadata.
    pub metadata: Option<Value>,
    /// Position in the history (1, 2, …).
    pub sort_key: i32,
    /// True for exactly the latest row.
    pub most_recent: bool,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A known worker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerRecord {
    /// Its identity.
    pub worker_id: String,
    /// What it can run.
    pub capabilities: Value,
    /// First seen.
    pub first_seen_at: DateTime<Utc>,
    /// Last heartbeat.
    pub last_heartbeat_at: DateTime<Utc>,
}

/// A dead letter: a step or task that could not be completed automatically.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetterRecord {
    /// Database-assigned id.
    pub dead_letter_id: i64,
    /// The task.
    pub task_id: i64,
    /// The step, if it is about one step.
    pub step_id: Option<i64>,
    /// Why.
    pub reason: String,
    /// State snapshot.
    pub snapshot: Value,
    /// When it was dead-lettered.
    pub created_at: DateTime<Utc>,
    /// When it was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// What was done.
    pub resolution: Option<String>,
    /// Who did it.
    pub resolved_by: Option<String>,
}

/// Row counts per state, for metrics. Every state is listed, in declaration order, zeros
/// included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    /// Tasks per state.
    pub tasks: Vec<(TaskState, i64)>,
    /// Steps per state.
    pub steps: Vec<(StepState, i64)>,
    /// Batches per state.
    pub batches: Vec<(BatchState, i64)>,
    /// Unresolved dead letters.
    pub dead_letters_unresolved: i64,
}

impl StateCounts {
    /// The count for one task state.
    pub fn task(&self, state: TaskState) -> i64 {
        self.tasks
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    }

    /// The count for one step state.
    pub fn step(&self, state: StepState) -> i64 {
        self.steps
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    }

    /// The count for one batch state.
    pub fn batch(&self, state: BatchState) -> i64 {
        self.batches
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    }
}

/// Turns `(state name, count)` rows into a count for every state, zeros included.
pub(crate) fn counts_by_state<S>(
    all: &[S],
    rows: Vec<(String, i64)>,
) -> Result<Vec<(S, i64)>, crate::error::StoreError>
where
    S: std::str::FromStr + Copy + PartialEq,
    S::Err: std::fmt::Display,
{
    let mut out: Vec<(S, i64)> = all.iter().map(|s| (*s, 0)).collect();
    for (name, n) in rows {
        let state: S = name
            .parse()
            .map_err(|e: S::Err| crate::error::StoreError::Corrupt {
                reason: e.to_string(),
            })?;
        if let Some(slot) = out.iter_mut().find(|(s, _)| *s == state) {
            slot.1 = n;
        }
    }
    Ok(out)
}
