//! The PostgreSQL backend: a connection pool, several orchestrators per database.
//!
//! Work is shared through task leases claimed with `FOR NO KEY UPDATE SKIP LOCKED`, and every
//! state change is a compare-and-set on rows locked in id order, so no task or step is driven by
//! two orchestrators at once and concurrent writers cannot deadlock each other.

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
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::connect::PostgresOptions;
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

/// A Tasker store in a PostgreSQL database.
#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    /// `host:port/database`, for error messages (never the password).
    target: String,
}

/// Runs `$body` (an async expression using `$conn: &mut PgConnection`) in a write
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

/// Runs `$body` in a read-only snapshot transaction (several statements see one state).
macro_rules! read_tx {
    ($self:ident, $conn:ident => $body:expr) => {{
        let mut tx = $self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(|e| $self.map(Fail::Db(e)))?;
        let result = {
            let $conn = &mut *tx;
            $body.await
        };
        $self.finish(tx, result).await
    }};
}

impl PostgresStore {
    /// Connects and migrates the database.
    pub(crate) async fn open(options: PostgresOptions) -> StoreResult<Self> {
        let connect: PgConnectOptions =
            options
                .url
                .parse()
                .map_err(|e: sqlx::Error| StoreError::InvalidUrl {
                    url: crate::error::redact_url(&options.url),
                    reason: e.to_string(),
                })?;
        let target = format!(
            "postgres {}:{}/{}",
            connect.get_host(),
            connect.get_port(),
            connect.get_database().unwrap_or("(default database)")
        );
        // One direct connection first, so an unreachable server reports its real cause
        // ("connection refused", "password authentication failed", an unknown database) rather
        // than the pool's generic timeout.
        let probe = tokio::time::timeout(
            options.connect_timeout,
            PgConnection::connect_with(&connect),
        )
        .await
        .map_err(|_| StoreError::Unavailable {
            target: target.clone(),
            cause: format!(
                "no answer within {} ms (connect_timeout_ms)",
                options.connect_timeout.as_millis()
            ),
        })?
        .map_err(|e| errors::map_error(e, &target))?;
        // The probe's only job was to connect; a failure to close it cleanly is harmless.
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.connect_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| errors::map_error(e, &target))?;
        migrate::migrate(&pool, &target, to_ms(chrono::Utc::now())).await?;
        Ok(Self { pool, target })
    }

    fn map(&self, fail: Fail) -> StoreError {
        match fail {
            Fail::Db(e) => errors::map_error(e, &self.target),
            Fail::Store(e) => e,
        }
    }

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(|e| self.map(Fail::Db(e)))
    }

    async fn finish<T>(
        &self,
        tx: Transaction<'static, Postgres>,
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
impl Store for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn schema_version(&self) -> StoreResult<i64> {
        migrate::current_version(&self.pool, &self.target).await
    }

    async fn close(&self) {
        self.pool.close().await;
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
