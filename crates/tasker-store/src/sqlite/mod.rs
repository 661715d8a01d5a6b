//! The SQLite backend: one file, WAL journal, one writer thread, a few read connections.
//!
//! Limits, plainly: one writer means every write waits for the one before it (group commit is
//! what keeps that fast), and one database file serves one orchestrator process. Durability per
//! commit is set by [`SqliteDurability`](crate::SqliteDurability).
//!
//! # Why a dedicated writer thread, and rusqlite
//!
//! SQLite is a synchronous C library: a statement runs on the thread that calls it. An async
//! driver (sqlx) hides that by sending every statement to a worker thread and waking the caller
//! when it is done; on this project's 2-vCPU machine such a round trip between threads costs
//! 36 µs, so sqlx paid 43–63 µs per statement against 1–2 µs for rusqlite called directly
//! (`shared/research/sqlite-drivers.md`, and ADR 0006). A group commit is ~15–25 statements, so
//! that was ~1 ms per commit on top of an fsync of ~0.15 ms. Here the hop is paid once per
//! transaction instead; one handoff's group commit (`group_commit/1` in the store bench) went
//! from a p50 of 1.3 ms to 0.75 ms with `synchronous=full`, and from 2.3 ms to 0.38 ms with
//! `normal`, where the rest is SQLite's own work and the WAL writes:
//!
//! - **Writes** ([`writer`]): one OS thread owns the one read-write connection. Each write method
//!   sends it a job (a closure over its parameters) on a channel and awaits the answer on a
//!   oneshot. The thread runs each job as one `BEGIN IMMEDIATE … COMMIT` transaction, every
//!   statement prepared once and cached (`prepare_cached`); jobs that arrive meanwhile queue and
//!   run in order (the engine keeps at most one group commit in flight anyway). On any failure,
//!   the commit's included (a full disk, a lock held past the busy timeout), the transaction is
//!   rolled back and the connection left with no transaction open, checked after every job; a
//!   connection that cannot be brought back is replaced. A failed write never wedges the next.
//! - **Reads** ([`readers`]): `readers` (default 4) read-only connections, opened on first use
//!   and pooled; a read takes one (waiting on a semaphore when all are busy) and runs on tokio's
//!   blocking pool (`spawn_blocking`), inside one `BEGIN … COMMIT`, so a read of several
//!   statements (`task_load_dag`, `tasks_load_dags`, `batch_get`) sees one snapshot. WAL lets
//!   them read beside the writer. The blocking pool rather than reader threads of our own: reads
//!   are rarer than writes on the engine's path and tokio already keeps idle threads warm.
//! - **Closing** waits for the reads in progress and the writes queued, closes every
//!   connection (the writer's last, which checkpoints the WAL), and makes later calls fail with
//!   [`StoreError::Unavailable`](crate::StoreError::Unavailable).
//!
//! A caller that stops waiting (its future dropped) does not cancel a write already sent: it
//! commits or fails as it would have, only the answer is lost. The engine makes its store calls
//! in spawned tasks, which run to the end.
//!
//! SQL text is the PostgreSQL backend's twin where the dialects allow; bulk statements take
//! their rows as one JSON text parameter read with `json_each`, so a group is a fixed number of
//! statements whatever its size.

pub(crate) mod batches;
pub(crate) mod counts;
pub(crate) mod dead_letters;
pub(crate) mod errors;
pub(crate) mod ledger;
pub(crate) mod migrate;
pub(crate) mod readers;
pub(crate) mod rows;
pub(crate) mod steps;
pub(crate) mod tasks;
pub(crate) mod transitions;
pub(crate) mod workers;
pub(crate) mod writer;

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use self::readers::Readers;
use self::writer::Writer;
use crate::connect::SqliteOptions;
use crate::error::{StoreError, StoreResult};
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
use crate::store::{Backend, Store};
use crate::time::to_ms;

/// A Tasker store in an SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    /// The one writer connection, on its own thread: SQLite allows one writer at a time, so
    /// writes queue here rather than fail with `SQLITE_BUSY`.
    writer: Writer,
    /// Read connections; in WAL mode they read beside the writer.
    readers: Readers,
}

impl SqliteStore {
    /// Opens (creating when missing) and migrates the database file.
    pub(crate) async fn open(options: SqliteOptions) -> StoreResult<Self> {
        let path: Arc<str> = Arc::from(options.path.display().to_string());
        if let Some(parent) = options.path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Unavailable {
                target: path.to_string(),
                cause: format!("cannot create directory {}: {e}", parent.display()),
            })?;
        }
        let writer = Writer::start(options.clone(), Arc::clone(&path)).await?;
        let readers = Readers::new(options, path);
        Ok(Self { writer, readers })
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn schema_version(&self) -> StoreResult<i64> {
        self.readers.run(migrate::current_version).await
    }

    async fn close(&self) {
        // Readers first: the writer's connection, closed last, checkpoints the WAL into the file.
        self.readers.close().await;
        self.writer.close().await;
    }

    async fn task_create(&self, task: NewTask) -> StoreResult<TaskCreated> {
        self.writer
            .run(move |conn| tasks::task_create(conn, &task))
            .await
    }

    async fn tasks_create_many(&self, tasks: Vec<NewTask>) -> StoreResult<Vec<TaskCreated>> {
        self.writer
            .run(move |conn| {
                tasks
                    .iter()
                    .map(|task| tasks::task_create(conn, task))
                    .collect()
            })
            .await
    }

    async fn task_get(&self, task_id: i64) -> StoreResult<TaskRecord> {
        self.readers
            .run(move |conn| tasks::task_get(conn, task_id))
            .await
    }

    async fn task_load_dag(&self, task_id: i64) -> StoreResult<TaskDag> {
        self.readers
            .run(move |conn| tasks::task_load_dag(conn, task_id))
            .await
    }

    async fn tasks_load_dags(&self, task_ids: Vec<i64>) -> StoreResult<Vec<TaskDag>> {
        if task_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.readers
            .run(move |conn| tasks::tasks_load_dags(conn, &task_ids))
            .await
    }

    async fn tasks_list(&self, params: TasksList) -> StoreResult<Page<TaskRecord>> {
        self.readers
            .run(move |conn| tasks::tasks_list(conn, &params))
            .await
    }

    async fn tasks_active(&self, params: TasksActive) -> StoreResult<Page<i64>> {
        self.readers
            .run(move |conn| tasks::tasks_active(conn, &params))
            .await
    }

    async fn tasks_claim(&self, params: TasksClaim) -> StoreResult<Vec<i64>> {
        self.writer
            .run(move |conn| tasks::tasks_claim(conn, &params))
            .await
    }

    async fn tasks_lease_renew(&self, params: TasksLease) -> StoreResult<Vec<i64>> {
        self.writer
            .run(move |conn| tasks::tasks_lease_renew(conn, &params))
            .await
    }

    async fn tasks_release(&self, params: TasksLease) -> StoreResult<Vec<i64>> {
        self.writer
            .run(move |conn| tasks::tasks_release(conn, &params))
            .await
    }

    async fn steps_list(&self, params: StepsList) -> StoreResult<Page<StepRecord>> {
        self.readers
            .run(move |conn| steps::steps_list(conn, &params))
            .await
    }

    async fn steps_ready(&self, params: StepsReady) -> StoreResult<Vec<ReadyStep>> {
        self.readers
            .run(move |conn| steps::steps_ready(conn, &params))
            .await
    }

    async fn steps_timed_out(&self, params: StepsTimedOut) -> StoreResult<Vec<InFlightStep>> {
        self.readers
            .run(move |conn| steps::steps_timed_out(conn, &params))
            .await
    }

    async fn transitions_apply(&self, params: TransitionsApply) -> StoreResult<TransitionsApplied> {
        self.writer
            .run(move |conn| transitions::transitions_apply(conn, &params))
            .await
    }

    async fn transitions_list(&self, of: TransitionsOf) -> StoreResult<Vec<TransitionRecord>> {
        self.readers
            .run(move |conn| transitions::transitions_list(conn, of))
            .await
    }

    async fn batch_record(&self, params: BatchRecord) -> StoreResult<BatchRecorded> {
        self.writer
            .run(move |conn| batches::batch_record(conn, &params))
            .await
    }

    async fn batches_record(&self, params: Vec<BatchRecord>) -> StoreResult<Vec<BatchRecorded>> {
        self.writer
            .run(move |conn| batches::batches_record(conn, &params))
            .await
    }

    async fn batch_get(&self, batch_uuid: Uuid) -> StoreResult<BatchDetail> {
        self.readers
            .run(move |conn| batches::batch_get(conn, batch_uuid))
            .await
    }

    async fn batches_orphaned(&self, params: BatchesOrphaned) -> StoreResult<Vec<OrphanedBatch>> {
        self.readers
            .run(move |conn| batches::batches_orphaned(conn, &params))
            .await
    }

    async fn ledger_append(&self, params: LedgerAppend) -> StoreResult<Vec<LedgerOutcome>> {
        self.writer
            .run(move |conn| {
                let no_refusals = std::collections::HashMap::new();
                ledger::append(conn, &params.entries, to_ms(params.now), &no_refusals)
            })
            .await
    }

    async fn ledger_list(&self, params: LedgerList) -> StoreResult<Vec<LedgerRecord>> {
        self.readers
            .run(move |conn| ledger::ledger_list(conn, &params))
            .await
    }

    async fn worker_upsert(&self, params: WorkerUpsert) -> StoreResult<()> {
        self.writer
            .run(move |conn| workers::worker_upsert(conn, &params))
            .await
    }

    async fn workers_list(&self) -> StoreResult<Vec<WorkerRecord>> {
        self.readers.run(workers::workers_list).await
    }

    async fn dead_letter_insert(&self, params: DeadLetterInsert) -> StoreResult<DeadLetterRecord> {
        self.writer
            .run(move |conn| dead_letters::dead_letter_insert(conn, &params))
            .await
    }

    async fn dead_letters_list(
        &self,
        params: DeadLettersList,
    ) -> StoreResult<Page<DeadLetterRecord>> {
        self.readers
            .run(move |conn| dead_letters::dead_letters_list(conn, &params))
            .await
    }

    async fn dead_letter_resolve(
        &self,
        params: DeadLetterResolve,
    ) -> StoreResult<DeadLetterRecord> {
        self.writer
            .run(move |conn| dead_letters::dead_letter_resolve(conn, &params))
            .await
    }

    async fn state_counts(&self) -> StoreResult<StateCounts> {
        self.readers.run(counts::state_counts).await
    }
}
