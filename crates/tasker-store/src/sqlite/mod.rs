//! The SQLite backend: one file, WAL journal, one writer connection, several readers.
//!
//! Limits, plainly: one writer means every write waits for the one before it (group commit is
//! what keeps that fast), and one database file serves one orchestrator process. Durability per
//! commit is set by [`SqliteDurability`](crate::SqliteDurability).

pub(crate) mod batches;
pub(crate) mod counts;
pub(crate) mod dead_letters;
pub(crate) mod errors;
pub(crate) mod ledger;
pub(crate) mod migrate;
pub(crate) mod rows;
pub(crate) mod steps;
pub(crate) mod tasks;
pub(crate) mod transitions;
pub(crate) mod workers;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use uuid::Uuid;

use crate::connect::{SqliteDurability, SqliteOptions};
use crate::error::{Fail, StoreError, StoreResult};
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
    /// One connection: SQLite allows one writer at a time, so writes queue here rather than
    /// fail with `SQLITE_BUSY`.
    writer: SqlitePool,
    /// Read connections; in WAL mode they read beside the writer.
    reader: SqlitePool,
    /// The file, for error messages.
    path: String,
}

/// Runs `$body` (an async expression using `$conn: &mut SqliteConnection`) in a write
/// transaction, committing on success.
macro_rules! write_tx {
    ($self:ident, $conn:ident => $body:expr) => {{
        let mut tx = $self.begin_write().await?;
        let result = {
            let $conn = &mut *tx;
            $body.await
        };
        $self.finish(tx, result).await
    }};
}

/// Runs `$body` on one read connection (a single statement, or several in one snapshot when the
/// body begins its own transaction).
macro_rules! read_tx {
    ($self:ident, $conn:ident => $body:expr) => {{
        let mut tx = $self
            .reader
            .begin()
            .await
            .map_err(|e| $self.map(Fail::Db(e)))?;
        let result = {
            let $conn = &mut *tx;
            $body.await
        };
        $self.finish(tx, result).await
    }};
}

impl SqliteStore {
    /// Opens (creating when missing) and migrates the database file.
    pub(crate) async fn open(options: SqliteOptions) -> StoreResult<Self> {
        let path = options.path.display().to_string();
        if let Some(parent) = options.path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Unavailable {
                target: path.clone(),
                cause: format!("cannot create directory {}: {e}", parent.display()),
            })?;
        }
        let base = SqliteConnectOptions::new()
            .filename(&options.path)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true);
        let synchronous = match options.durability {
            SqliteDurability::Full => SqliteSynchronous::Full,
            SqliteDurability::Normal => SqliteSynchronous::Normal,
            SqliteDurability::Off => SqliteSynchronous::Off,
        };
        let mut writer_options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous);
        if let Some(pages) = options.max_page_count {
            writer_options = writer_options.pragma("max_page_count", pages.to_string());
        }
        let map = |e| errors::map_error(e, &path);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(writer_options)
            .await
            .map_err(map)?;
        migrate::migrate(&writer, &path, to_ms(chrono::Utc::now())).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(options.readers)
            .connect_with(base.read_only(true))
            .await
            .map_err(map)?;
        Ok(Self {
            writer,
            reader,
            path,
        })
    }

    fn map(&self, fail: Fail) -> StoreError {
        match fail {
            Fail::Db(e) => errors::map_error(e, &self.path),
            Fail::Store(e) => e,
        }
    }

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.map(Fail::Db(e)))
    }

    async fn finish<T>(
        &self,
        tx: Transaction<'static, Sqlite>,
        result: Result<T, Fail>,
    ) -> StoreResult<T> {
        match result {
            Ok(value) => {
                tx.commit().await.map_err(|e| self.map(Fail::Db(e)))?;
                Ok(value)
            }
            Err(fail) => {
                // Rolling back can fail only if the connection is gone; the error that matters
                // is the original one.
                let _ = tx.rollback().await;
                Err(self.map(fail))
            }
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn schema_version(&self) -> StoreResult<i64> {
        migrate::current_version(&self.reader, &self.path).await
    }

    async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    async fn task_create(&self, task: NewTask) -> StoreResult<TaskCreated> {
        write_tx!(self, conn => tasks::task_create(conn, &task))
    }

    async fn tasks_create_many(&self, tasks: Vec<NewTask>) -> StoreResult<Vec<TaskCreated>> {
        write_tx!(self, conn => async {
            let mut out = Vec::with_capacity(tasks.len());
            for task in &tasks {
                out.push(tasks::task_create(conn, task).await?);
            }
            Ok(out)
        })
    }

    async fn task_get(&self, task_id: i64) -> StoreResult<TaskRecord> {
        read_tx!(self, conn => tasks::task_get(conn, task_id))
    }

    async fn task_load_dag(&self, task_id: i64) -> StoreResult<TaskDag> {
        read_tx!(self, conn => tasks::task_load_dag(conn, task_id))
    }

    async fn tasks_load_dags(&self, task_ids: Vec<i64>) -> StoreResult<Vec<TaskDag>> {
        if task_ids.is_empty() {
            return Ok(Vec::new());
        }
        read_tx!(self, conn => tasks::tasks_load_dags(conn, &task_ids))
    }

    async fn tasks_list(&self, params: TasksList) -> StoreResult<Page<TaskRecord>> {
        read_tx!(self, conn => tasks::tasks_list(conn, &params))
    }

    async fn tasks_active(&self, params: TasksActive) -> StoreResult<Page<i64>> {
        read_tx!(self, conn => tasks::tasks_active(conn, &params))
    }

    async fn tasks_claim(&self, params: TasksClaim) -> StoreResult<Vec<i64>> {
        write_tx!(self, conn => tasks::tasks_claim(conn, &params))
    }

    async fn tasks_lease_renew(&self, params: TasksLease) -> StoreResult<Vec<i64>> {
        write_tx!(self, conn => tasks::tasks_lease_renew(conn, &params))
    }

    async fn tasks_release(&self, params: TasksLease) -> StoreResult<Vec<i64>> {
        write_tx!(self, conn => tasks::tasks_release(conn, &params))
    }

    async fn steps_list(&self, params: StepsList) -> StoreResult<Page<StepRecord>> {
        read_tx!(self, conn => steps::steps_list(conn, &params))
    }

    async fn steps_ready(&self, params: StepsReady) -> StoreResult<Vec<ReadyStep>> {
        read_tx!(self, conn => steps::steps_ready(conn, &params))
    }

    async fn steps_timed_out(&self, params: StepsTimedOut) -> StoreResult<Vec<InFlightStep>> {
        read_tx!(self, conn => steps::steps_timed_out(conn, &params))
    }

    async fn transitions_apply(&self, params: TransitionsApply) -> StoreResult<TransitionsApplied> {
        write_tx!(self, conn => transitions::transitions_apply(conn, &params))
    }

    async fn transitions_list(&self, of: TransitionsOf) -> StoreResult<Vec<TransitionRecord>> {
        read_tx!(self, conn => transitions::transitions_list(conn, of))
    }

    async fn batch_record(&self, params: BatchRecord) -> StoreResult<BatchRecorded> {
        write_tx!(self, conn => batches::batch_record(conn, &params))
    }

    async fn batches_record(&self, params: Vec<BatchRecord>) -> StoreResult<Vec<BatchRecorded>> {
        write_tx!(self, conn => batches::batches_record(conn, &params))
    }

    async fn batch_get(&self, batch_uuid: Uuid) -> StoreResult<BatchDetail> {
        read_tx!(self, conn => batches::batch_get(conn, batch_uuid))
    }

    async fn batches_orphaned(&self, params: BatchesOrphaned) -> StoreResult<Vec<OrphanedBatch>> {
        read_tx!(self, conn => batches::batches_orphaned(conn, &params))
    }

    async fn ledger_append(&self, params: LedgerAppend) -> StoreResult<Vec<LedgerOutcome>> {
        let no_refusals = std::collections::HashMap::new();
        write_tx!(self, conn => ledger::append(conn, &params.entries, to_ms(params.now), &no_refusals))
    }

    async fn ledger_list(&self, params: LedgerList) -> StoreResult<Vec<LedgerRecord>> {
        read_tx!(self, conn => ledger::ledger_list(conn, &params))
    }

    async fn worker_upsert(&self, params: WorkerUpsert) -> StoreResult<()> {
        write_tx!(self, conn => workers::worker_upsert(conn, &params))
    }

    async fn workers_list(&self) -> StoreResult<Vec<WorkerRecord>> {
        read_tx!(self, conn => workers::workers_list(conn))
    }

    async fn dead_letter_insert(&self, params: DeadLetterInsert) -> StoreResult<DeadLetterRecord> {
        write_tx!(self, conn => dead_letters::dead_letter_insert(conn, &params))
    }

    async fn dead_letters_list(
        &self,
        params: DeadLettersList,
    ) -> StoreResult<Page<DeadLetterRecord>> {
        read_tx!(self, conn => dead_letters::dead_letters_list(conn, &params))
    }

    async fn dead_letter_resolve(
        &self,
        params: DeadLetterResolve,
    ) -> StoreResult<DeadLetterRecord> {
        write_tx!(self, conn => dead_letters::dead_letter_resolve(conn, &params))
    }

    async fn state_counts(&self) -> StoreResult<StateCounts> {
        read_tx!(self, conn => counts::state_counts(conn))
    }
}
