//! The [`Store`] trait: every operation the engine and the API need, each atomic.

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::StoreResult;
use crate::params::{
    BatchRecord, BatchesOrphaned, DeadLetterInsert, DeadLetterResolve, DeadLettersList,
    LedgerAppend, LedgerList, NewTask, StepsList, StepsReady, StepsTimedOut, TasksActive,
    TasksClaim, TasksLease, TasksList, TransitionsApply, TransitionsOf, WorkerUpsert,
};
use crate::records::{
    BatchDetail, BatchRecorded, DeadLetterRecord, InFlightStep, LedgerOutcome, LedgerRecord,
    OrphanedBatch, Page, ReadyStep, StateCounts, StepRecord, TaskCreated, TaskDag, TaskRecord,
    TransitionRecord, TransitionsApplied, WorkerRecord,
};

/// Ledger message kind of a per-step result; [`Store::batch_get`] reports its status per step.
pub const LEDGER_PARTIAL_RESULT: &str = "partial_result";
/// Ledger message kind of a batch completion; [`Store::batch_get`] reports whether one arrived.
pub const LEDGER_BATCH_COMPLETION: &str = "batch_completion";

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Tasker's persistence. Every method is one transaction: it is applied completely or not at all.
///
/// Both backends implement it identically; the conformance suite in `tests/conformance` is the
/// definition of "identically". Methods are noun-first and take one params struct.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// The schema version the database is at.
    async fn schema_version(&self) -> StoreResult<i64>;

    /// Closes every connection, waiting for running operations. Later calls fail with
    /// [`StoreError::Unavailable`](crate::StoreError::Unavailable).
    async fn close(&self);

    // ---- tasks -------------------------------------------------------------------------------

    /// Creates a task with its steps, edges and initial (`pending`) transitions in one
    /// transaction. A repeated idempotency key for the same template returns the existing task
    /// with `created: false` and writes nothing.
    async fn task_create(&self, task: NewTask) -> StoreResult<TaskCreated>;

    /// Creates many tasks in one transaction (bulk loading, seeding); same rules as
    /// [`Store::task_create`] for each.
    async fn tasks_create_many(&self, tasks: Vec<NewTask>) -> StoreResult<Vec<TaskCreated>>;

    /// One task.
    async fn task_get(&self, task_id: i64) -> StoreResult<TaskRecord>;

    /// A task with its steps (current states) and edges.
    async fn task_load_dag(&self, task_id: i64) -> StoreResult<TaskDag>;

    /// Several tasks with their steps and edges, read in one snapshot with one query per table
    /// (what [`task_load_dag`](Self::task_load_dag) returns for each). In the order asked, each
    /// once; ids of tasks that do not exist are left out.
    async fn tasks_load_dags(&self, task_ids: Vec<i64>) -> StoreResult<Vec<TaskDag>>;

    /// Tasks for the API, filtered, newest first.
    async fn tasks_list(&self, params: TasksList) -> StoreResult<Page<TaskRecord>>;

    /// Ids of unfinished tasks (`pending` or `in_progress`), for recovery after a restart.
    async fn tasks_active(&self, params: TasksActive) -> StoreResult<Page<i64>>;

    /// Claims up to `limit` unfinished tasks that nobody holds (or whose lease expired) for one
    /// orchestrator. Concurrent claimers never get the same task (PostgreSQL:
    /// `FOR UPDATE SKIP LOCKED`; SQLite: its single writer).
    async fn tasks_claim(&self, params: TasksClaim) -> StoreResult<Vec<i64>>;

    /// Extends the leases of the given tasks still held by the orchestrator; returns those renewed.
    async fn tasks_lease_renew(&self, params: TasksLease) -> StoreResult<Vec<i64>>;

    /// Gives up the orchestrator's claims on the given tasks; returns those released.
    async fn tasks_release(&self, params: TasksLease) -> StoreResult<Vec<i64>>;

    // ---- steps -------------------------------------------------------------------------------

    /// Steps for the API, filtered, ascending by id.
    async fn steps_list(&self, params: StepsList) -> StoreResult<Page<StepRecord>>;

    /// Steps that can be dispatched now: `pending`, or `error` and retryable with
    /// `attempts < retry_limit` and backoff expired; every parent `complete` or
    /// `resolved_manually`; not in flight; task `pending` or `in_progress`.
    async fn steps_ready(&self, params: StepsReady) -> StoreResult<Vec<ReadyStep>>;

    /// In-flight steps whose deadline passed.
    async fn steps_timed_out(&self, params: StepsTimedOut) -> StoreResult<Vec<InFlightStep>>;

    // ---- transitions -------------------------------------------------------------------------

    /// Applies change sets of conditional step, task and batch transitions (with results) and
    /// appends ledger entries, all in one transaction. Each set applies completely or is refused
    /// and reported; with `all_or_nothing`, one refusal refuses all and returns
    /// [`StoreError::Conflict`](crate::StoreError::Conflict).
    async fn transitions_apply(&self, params: TransitionsApply) -> StoreResult<TransitionsApplied>;

    /// The transition history of a task, step or batch, in order.
    async fn transitions_list(&self, of: TransitionsOf) -> StoreResult<Vec<TransitionRecord>>;

    // ---- batches -----------------------------------------------------------------------------

    /// Records a dispatch: the batch, its steps (join rows with sequence order), its first
    /// transition, and each step's move to `in_progress` (attempt counted, in-flight batch and
    /// deadline set). Steps not in their expected state, already in flight, of a finished task,
    /// or of a task not claimed by `claimant` are left out and reported. A task still `pending`
    /// moves to `in_progress`.
    async fn batch_record(&self, params: BatchRecord) -> StoreResult<BatchRecorded>;

    /// Records several dispatches in one transaction: each batch exactly as
    /// [`batch_record`](Self::batch_record) would, in order (a later batch sees the earlier
    /// ones, so a step put in flight by one is left out of the next). Returns one outcome per
    /// batch, in order. An error (an invalid or already recorded batch, a failed write) records
    /// none of them.
    async fn batches_record(&self, params: Vec<BatchRecord>) -> StoreResult<Vec<BatchRecorded>>;

    /// One batch with its steps and what the ledger received for them.
    async fn batch_get(&self, batch_uuid: Uuid) -> StoreResult<BatchDetail>;

    /// Unfinished batches whose worker is gone (stale heartbeat or unknown).
    async fn batches_orphaned(&self, params: BatchesOrphaned) -> StoreResult<Vec<OrphanedBatch>>;

    // ---- ledger ------------------------------------------------------------------------------

    /// Appends received messages to the ledger, deduplicated on (batch id, step id, message kind).
    async fn ledger_append(&self, params: LedgerAppend) -> StoreResult<Vec<LedgerOutcome>>;

    /// Ledger entries, ascending.
    async fn ledger_list(&self, params: LedgerList) -> StoreResult<Vec<LedgerRecord>>;

    // ---- workers -----------------------------------------------------------------------------

    /// Records a worker (first sight) or its heartbeat and capabilities.
    async fn worker_upsert(&self, params: WorkerUpsert) -> StoreResult<()>;

    /// Every known worker, by id.
    async fn workers_list(&self) -> StoreResult<Vec<WorkerRecord>>;

    // ---- dead letters ------------------------------------------------------------------------

    /// Records a dead letter.
    async fn dead_letter_insert(&self, params: DeadLetterInsert) -> StoreResult<DeadLetterRecord>;

    /// Dead letters, newest first.
    async fn dead_letters_list(
        &self,
        params: DeadLettersList,
    ) -> StoreResult<Page<DeadLetterRecord>>;

    /// Marks a dead letter resolved; resolving twice is a
    /// [`StoreError::Conflict`](crate::StoreError::Conflict).
    async fn dead_letter_resolve(&self, params: DeadLetterResolve)
    -> StoreResult<DeadLetterRecord>;

    // ---- metrics -----------------------------------------------------------------------------

    /// Row counts per state.
    async fn state_counts(&self) -> StoreResult<StateCounts>;
}
