//! Parameter structs of the [`Store`](crate::Store) operations: one struct per operation, so adding
//! a field changes no call site that uses `..Default::default()`-style construction.
//!
//! Times are `DateTime<Utc>` and passed in by the caller (`now`) wherever a query depends on the
//! clock, so tests control time without sleeping.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tasker_core::backoff::BackoffPolicy;
use tasker_core::state::{BatchState, StepState, TaskState};
use uuid::Uuid;

/// A task to create, with its steps and dependency edges (already validated by the template
/// layer; the store checks only what it needs to store it).
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Template namespace (created on first use).
    pub namespace: String,
    /// Template name.
    pub name: String,
    /// Template version.
    pub version: String,
    /// The template as JSON, stored with the named task the first time this
    /// (namespace, name, version) is seen; later tasks do not overwrite it.
    pub template_json: Option<Value>,
    /// The task's input context.
    pub context: Value,
    /// Who asked for the task.
    pub initiator: Option<String>,
    /// Which system asked for it.
    pub source_system: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Free-form labels.
    pub tags: Vec<String>,
    /// With a key, creating the same template's task again returns the existing task.
    pub idempotency_key: Option<String>,
    /// The steps, in template order. Must not be empty; names must be unique.
    pub steps: Vec<NewStep>,
    /// Dependencies as `(parent, child)` indexes into `steps`.
    pub edges: Vec<(usize, usize)>,
    /// Creation time.
    pub now: DateTime<Utc>,
    /// When set, the task is created already claimed: by this orchestrator, until this time
    /// (an engine creating a task it will drive itself, in the same transaction). A repeated
    /// idempotency key leaves the existing task's claim as it is.
    pub claim: Option<TaskClaim>,
}

/// The claim a task is created with ([`NewTask::claim`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskClaim {
    /// The orchestrator holding it.
    pub orchestrator_id: String,
    /// When its lease ends.
    pub expires_at: DateTime<Utc>,
}

/// One step of a [`NewTask`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewStep {
    /// Step name, unique within the task.
    pub name: String,
    /// The handler a worker runs for it.
    pub handler_class: String,
    /// Handler configuration passed to the worker.
    pub handler_config: Value,
    /// Whether a failed attempt may be retried.
    pub retryable: bool,
    /// Attempts allowed for a retryable step (a step in `error` is ready again only while
    /// `attempts < retry_limit`).
    pub retry_limit: i32,
    /// Per-attempt timeout; `None` uses the batch timeout.
    pub timeout_ms: Option<i64>,
    /// Backoff override for this step; `None` uses the engine's default.
    pub backoff: Option<BackoffPolicy>,
}

/// Filters for [`Store::tasks_list`](crate::Store::tasks_list). Results are newest first
/// (descending task id); pass the returned cursor as `before_task_id` for the next page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TasksList {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks of this namespace.
    pub namespace: Option<String>,
    /// Only tasks of templates with this name.
    pub name: Option<String>,
    /// Only tasks created at or after this time.
    pub created_from: Option<DateTime<Utc>>,
    /// Only tasks created before this time.
    pub created_before: Option<DateTime<Utc>>,
    /// Page cursor: only tasks with a smaller id.
    pub before_task_id: Option<i64>,
    /// Page size (1..=1000; 0 means 100).
    pub limit: u32,
}

/// Filters for [`Store::steps_list`](crate::Store::steps_list). Results are ordered by ascending
/// step id; pass the returned cursor as `after_step_id` for the next page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepsList {
    /// Only steps of this task.
    pub task_id: Option<i64>,
    /// Only steps in this state.
    pub state: Option<StepState>,
    /// Only steps with this name.
    pub name: Option<String>,
    /// Only steps run by this handler.
    pub handler_class: Option<String>,
    /// Page cursor: only steps with a larger id.
    pub after_step_id: Option<i64>,
    /// Page size (1..=1000; 0 means 100).
    pub limit: u32,
}

/// Parameters of [`Store::tasks_active`](crate::Store::tasks_active): unfinished tasks, for
/// recovery after a restart. Ordered by ascending task id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TasksActive {
    /// Page cursor: only tasks with a larger id.
    pub after_task_id: Option<i64>,
    /// Page size (1..=10000; 0 means 1000).
    pub limit: u32,
    /// Only tasks claimed by this orchestrator (when several share a database).
    pub claimed_by: Option<String>,
}

/// Parameters of [`Store::tasks_claim`](crate::Store::tasks_claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TasksClaim {
    /// The claiming orchestrator's identity.
    pub orchestrator_id: String,
    /// The current time; expired leases are free to take.
    pub now: DateTime<Utc>,
    /// How long the claim lasts unless renewed, in milliseconds.
    pub lease_ms: i64,
    /// At most this many newly claimed tasks.
    pub limit: u32,
}

/// Parameters of [`Store::tasks_lease_renew`](crate::Store::tasks_lease_renew) and
/// [`Store::tasks_release`](crate::Store::tasks_release).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TasksLease {
    /// The orchestrator holding the claims.
    pub orchestrator_id: String,
    /// The tasks.
    pub task_ids: Vec<i64>,
    /// The current time.
    pub now: DateTime<Utc>,
    /// New lease length from `now`, in milliseconds (ignored by release).
    pub lease_ms: i64,
}

/// Parameters of [`Store::steps_ready`](crate::Store::steps_ready).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepsReady {
    /// The current time (for backoff expiry).
    pub now: DateTime<Utc>,
    /// Only steps of these tasks (`None`: every active task).
    pub task_ids: Option<Vec<i64>>,
    /// Only steps of tasks claimed by this orchestrator with an unexpired lease.
    pub claimed_by: Option<String>,
    /// At most this many steps (1..=10000; 0 means 1000).
    pub limit: u32,
}

/// Parameters of [`Store::steps_timed_out`](crate::Store::steps_timed_out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepsTimedOut {
    /// The current time; steps whose in-flight deadline is at or before it are returned.
    pub now: DateTime<Utc>,
    /// At most this many (0 means 1000).
    pub limit: u32,
}

/// Parameters of [`Store::batches_orphaned`](crate::Store::batches_orphaned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchesOrphaned {
    /// Workers whose last heartbeat is before this time count as gone (as do unknown workers);
    /// batches never sent to a worker count as orphaned when created before it.
    pub heartbeat_before: DateTime<Utc>,
    /// At most this many batches (0 means 1000).
    pub limit: u32,
}

/// One entry for the received-results ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    /// The batch id as received (kept as text: a malformed or unknown id is still recorded).
    pub batch_uuid: Option<String>,
    /// The step the message is about (`None` for batch-level messages).
    pub step_id: Option<i64>,
    /// The message kind, e.g. `partial_result`, `batch_completion`.
    pub message_kind: String,
    /// The sending worker.
    pub worker_id: Option<String>,
    /// The worker's sequence number for the message.
    pub sequence: Option<i64>,
    /// The reported status.
    pub status: Option<String>,
    /// The reported execution time.
    pub execution_time_ms: Option<i64>,
    /// The message exactly as received.
    pub raw_message: String,
    /// Problems found while processing it.
    pub processing_errors: Option<Value>,
}

/// Parameters of [`Store::ledger_append`](crate::Store::ledger_append).
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerAppend {
    /// Receipt time.
    pub now: DateTime<Utc>,
    /// The entries, in arrival order.
    pub entries: Vec<LedgerEntry>,
}

/// Filters for [`Store::ledger_list`](crate::Store::ledger_list), ascending by entry id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerList {
    /// Only entries of this batch.
    pub batch_uuid: Option<String>,
    /// Only entries about this step.
    pub step_id: Option<i64>,
    /// Page cursor: only entries with a larger id.
    pub after_id: Option<i64>,
    /// Page size (0 means 100).
    pub limit: u32,
}

/// How a step's in-flight batch must look for a [`StepChange`] to apply.
pub type ExpectedBatch = Option<Uuid>;

/// A conditional state change of one step (compare-and-set on state and in-flight batch).
#[derive(Debug, Clone, PartialEq)]
pub struct StepChange {
    /// The step.
    pub step_id: i64,
    /// The state the step must be in.
    pub expect_state: StepState,
    /// The batch the step must be in flight in (`None`: not in flight).
    pub expect_batch: ExpectedBatch,
    /// The new state. `in_progress` is entered only through
    /// [`Store::batch_record`](crate::Store::batch_record). Leaving `in_progress` clears the
    /// in-flight batch.
    pub to_state: StepState,
    /// Event name recorded on the transition.
    pub event: tasker_core::state::StepEvent,
    /// Metadata recorded on the transition.
    pub metadata: Option<Value>,
    /// New results (`None` keeps the stored ones).
    pub results: Option<Value>,
    /// New last error (`None` keeps the stored one).
    pub error: Option<Value>,
    /// Earliest retry time; set (or cleared with `None`) whenever the change applies.
    pub backoff_until: Option<DateTime<Utc>>,
}

/// A conditional state change of one task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskChange {
    /// The task.
    pub task_id: i64,
    /// The state the task must be in.
    pub expect_state: TaskState,
    /// The new state.
    pub to_state: TaskState,
    /// Event name recorded on the transition.
    pub event: tasker_core::state::TaskEvent,
    /// Metadata recorded on the transition.
    pub metadata: Option<Value>,
}

/// A conditional state change of one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchChange {
    /// The batch.
    pub batch_uuid: Uuid,
    /// The state the batch must be in.
    pub expect_state: BatchState,
    /// The new state.
    pub to_state: BatchState,
    /// Event name recorded on the transition.
    pub event: tasker_core::state::BatchEvent,
    /// Metadata recorded on the transition.
    pub metadata: Option<Value>,
}

/// Changes that apply together or not at all (for example: a step completes, its batch moves to
/// `executing`, and its task completes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeSet {
    /// Step changes, applied in order.
    pub steps: Vec<StepChange>,
    /// Task changes, applied in order.
    pub tasks: Vec<TaskChange>,
    /// Batch changes, applied in order.
    pub batches: Vec<BatchChange>,
    /// Index into [`TransitionsApply::ledger`] of the message that caused this set; when the set is
    /// refused the refusal is written to that entry's `processing_errors`.
    pub ledger_entry: Option<usize>,
}

/// Parameters of [`Store::transitions_apply`](crate::Store::transitions_apply): one transaction
/// (group commit) for many results.
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionsApply {
    /// The current time, recorded on every row written.
    pub now: DateTime<Utc>,
    /// When set, every task touched must be claimed by this orchestrator with an unexpired lease
    /// (fencing for several orchestrators on one database).
    pub claimant: Option<String>,
    /// Ledger entries appended (deduplicated) in the same transaction, whatever happens to the
    /// change sets.
    pub ledger: Vec<LedgerEntry>,
    /// The change sets, evaluated in order; a later set sees the effect of earlier applied ones.
    pub changes: Vec<ChangeSet>,
    /// When true, one refused set refuses every set: nothing but the ledger is written and the
    /// call fails with [`StoreError::Conflict`](crate::StoreError::Conflict).
    pub all_or_nothing: bool,
    /// Dispatches recorded in the same transaction, after the change sets, each exactly as
    /// [`Store::batches_record`](crate::Store::batches_record) would: a step whose parents the
    /// change sets just completed can be dispatched in the commit that completes them (one
    /// commit per handoff). A step whose parents are not all `complete` or
    /// `resolved_manually` once the change sets are applied (say, its parent's set was refused)
    /// is left out and reported.
    pub batches: Vec<BatchRecord>,
    /// Tasks created in the same transaction, before the change sets, each exactly as
    /// [`Store::task_create`](crate::Store::task_create) would (so concurrent creations share
    /// one commit with the results in flight). An invalid task fails the whole call: check
    /// tasks with [`NewTask::validate`] before putting them in a group.
    pub tasks: Vec<NewTask>,
}

/// One step of a batch to record: it must be in `expect_state` and not in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStep {
    /// The step.
    pub step_id: i64,
    /// The state it must be in (`pending`, or `error` for a retry).
    pub expect_state: StepState,
}

/// Parameters of [`Store::batch_record`](crate::Store::batch_record): one dispatch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRecord {
    /// The current time.
    pub now: DateTime<Utc>,
    /// When set, every step's task must be claimed by this orchestrator (fencing).
    pub claimant: Option<String>,
    /// The batch's id, sent to the worker.
    pub batch_uuid: Uuid,
    /// The worker it is sent to.
    pub worker_id: Option<String>,
    /// The handler class, when all steps share one.
    pub handler_class: Option<String>,
    /// Batch timeout; also each step's timeout unless the step has its own.
    pub timeout_ms: i64,
    /// The batch's initial state (`created` or `published`).
    pub state: BatchState,
    /// Free-form metadata.
    pub metadata: Option<Value>,
    /// The steps, in sequence order.
    pub steps: Vec<BatchStep>,
}

/// Parameters of [`Store::worker_upsert`](crate::Store::worker_upsert).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerUpsert {
    /// The worker's identity.
    pub worker_id: String,
    /// What it can run (handler classes, languages, capacity).
    pub capabilities: Value,
    /// The heartbeat time.
    pub now: DateTime<Utc>,
}

/// Parameters of [`Store::dead_letter_insert`](crate::Store::dead_letter_insert).
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterInsert {
    /// The task.
    pub task_id: i64,
    /// The step, when the dead letter is about one step.
    pub step_id: Option<i64>,
    /// Why it was dead-lettered.
    pub reason: String,
    /// A snapshot of the state at that time.
    pub snapshot: Value,
    /// The current time.
    pub now: DateTime<Utc>,
}

/// Filters for [`Store::dead_letters_list`](crate::Store::dead_letters_list), newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLettersList {
    /// `Some(false)`: only unresolved; `Some(true)`: only resolved.
    pub resolved: Option<bool>,
    /// Only dead letters of this task.
    pub task_id: Option<i64>,
    /// Page cursor: only ids smaller than this.
    pub before_id: Option<i64>,
    /// Page size (0 means 100).
    pub limit: u32,
}

/// Parameters of [`Store::dead_letter_resolve`](crate::Store::dead_letter_resolve).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterResolve {
    /// The dead letter.
    pub dead_letter_id: i64,
    /// What was done.
    pub resolution: String,
    /// Who did it.
    pub resolved_by: Option<String>,
    /// The current time.
    pub now: DateTime<Utc>,
}

/// Whose transition history to read with
/// [`Store::transitions_list`](crate::Store::transitions_list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionsOf {
    /// A task's transitions.
    Task(i64),
    /// A step's transitions.
    Step(i64),
    /// A batch's transitions.
    Batch(Uuid),
}

/// Clamps a page size: 0 means `default`, anything above `max` is `max`.
pub(crate) fn page_size(limit: u32, default: u32, max: u32) -> i64 {
    i64::from(if limit == 0 { default } else { limit.min(max) })
}

impl NewTask {
    /// Checks what the store needs to store the task: steps present with unique names, edges
    /// pointing at steps, no self-loops or repeated edges.
    pub fn validate(&self) -> Result<(), crate::error::StoreError> {
        self.check()
    }

    /// [`Self::validate`], under the name the backends use.
    pub(crate) fn check(&self) -> Result<(), crate::error::StoreError> {
        let invalid = |reason: String| crate::error::StoreError::InvalidInput { reason };
        if self.steps.is_empty() {
            return Err(invalid(format!(
                "task {}/{} has no steps",
                self.namespace, self.name
            )));
        }
        let mut names = std::collections::HashSet::new();
        for step in &self.steps {
            if !names.insert(step.name.as_str()) {
                return Err(invalid(format!("duplicate step name `{}`", step.name)));
            }
        }
        let mut edges = std::collections::HashSet::new();
        for &(parent, child) in &self.edges {
            if parent >= self.steps.len() || child >= self.steps.len() {
                return Err(invalid(format!(
                    "edge ({parent}, {child}) points past the {} steps",
                    self.steps.len()
                )));
            }
            if parent == child {
                return Err(invalid(format!(
                    "step `{}` depends on itself",
                    self.steps[parent].name
                )));
            }
            if !edges.insert((parent, child)) {
                return Err(invalid(format!("edge ({parent}, {child}) is repeated")));
            }
        }
        Ok(())
    }

    /// How many parents each step has, by position.
    pub(crate) fn parent_counts(&self) -> Vec<i32> {
        let mut counts = vec![0_i32; self.steps.len()];
        for &(_, child) in &self.edges {
            counts[child] += 1;
        }
        counts
    }

    /// The steps as a JSON array for bulk insertion (absent keys for `None`).
    pub(crate) fn steps_json(&self) -> Value {
        let parents = self.parent_counts();
        Value::Array(
            self.steps
                .iter()
                .enumerate()
                .map(|(position, step)| {
                    let mut row = serde_json::Map::new();
                    row.insert("position".into(), position.into());
                    row.insert("name".into(), step.name.clone().into());
                    row.insert("handler_class".into(), step.handler_class.clone().into());
                    row.insert("handler_config".into(), step.handler_config.clone());
                    row.insert("retryable".into(), step.retryable.into());
                    row.insert("retry_limit".into(), step.retry_limit.into());
                    row.insert("unmet_parents".into(), parents[position].into());
                    if let Some(timeout) = step.timeout_ms {
                        row.insert("timeout_ms".into(), timeout.into());
                    }
                    if let Some(backoff) = &step.backoff {
                        row.insert(
                            "backoff".into(),
                            serde_json::to_value(backoff).unwrap_or(Value::Null),
                        );
                    }
                    Value::Object(row)
                })
                .collect(),
        )
    }
}
