//! [`CountingStore`]: the real store with every operation counted and timed, so the benchmark
//! can say where the database time goes (how many transactions of each kind per step). It adds
//! one uncontended mutex per operation and changes nothing else.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;
use tasker_store::{
    Backend, BatchDetail, BatchRecord, BatchRecorded, BatchesOrphaned, DeadLetterInsert,
    DeadLetterRecord, DeadLetterResolve, DeadLettersList, InFlightStep, LedgerAppend, LedgerList,
    LedgerOutcome, LedgerRecord, NewTask, OrphanedBatch, Page, ReadyStep, StateCounts, StepRecord,
    StepsList, StepsReady, StepsTimedOut, Store, StoreResult, TaskCreated, TaskDag, TaskRecord,
    TasksActive, TasksClaim, TasksLease, TasksList, TransitionRecord, TransitionsApplied,
    TransitionsApply, TransitionsOf, WorkerRecord, WorkerUpsert,
};
use uuid::Uuid;

/// Calls and time of one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CallTally {
    /// Calls made.
    pub(crate) calls: u64,
    /// Time spent in them, summed (calls overlap, so this can exceed wall time).
    pub(crate) total: Duration,
}

/// A store that counts and times every call before handing it to the real one.
#[derive(Debug)]
pub(crate) struct CountingStore {
    inner: Arc<dyn Store>,
    tallies: Mutex<BTreeMap<&'static str, CallTally>>,
}

impl CountingStore {
    /// Wraps `inner`.
    pub(crate) fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            tallies: Mutex::new(BTreeMap::new()),
        }
    }

    /// The tallies so far, by operation name.
    pub(crate) fn snapshot(&self) -> BTreeMap<&'static str, CallTally> {
        self.tallies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn record(&self, operation: &'static str, took: Duration) {
        let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        let tally = tallies.entry(operation).or_default();
        tally.calls += 1;
        tally.total += took;
    }
}

/// One operation's share of a window, as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct OperationFigures {
    /// The `Store` method.
    pub(crate) operation: &'static str,
    /// Calls in the window.
    pub(crate) calls: u64,
    /// Calls per step run in the window.
    pub(crate) per_step: f64,
    /// Summed time inside the calls, in milliseconds.
    pub(crate) total_ms: f64,
    /// Mean time per call, in microseconds.
    pub(crate) mean_us: f64,
}

/// The calls made between two snapshots, busiest (most total time) first.
pub(crate) fn between(
    before: &BTreeMap<&'static str, CallTally>,
    after: &BTreeMap<&'static str, CallTally>,
    steps: u64,
) -> Vec<OperationFigures> {
    let mut figures: Vec<OperationFigures> = after
        .iter()
        .filter_map(|(operation, tally)| {
            let earlier = before.get(operation).copied().unwrap_or_default();
            let calls = tally.calls - earlier.calls;
            let total = tally.total.saturating_sub(earlier.total);
            (calls > 0).then(|| OperationFigures {
                operation,
                calls,
                per_step: if steps == 0 {
                    0.0
                } else {
                    calls as f64 / steps as f64
                },
                total_ms: total.as_secs_f64() * 1000.0,
                mean_us: total.as_secs_f64() * 1e6 / calls as f64,
            })
        })
        .collect();
    figures.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
    figures
}

/// Times `$call` (a future) and records it under `$name`.
macro_rules! timed {
    ($self:ident, $name:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self.record($name, started.elapsed());
        result
    }};
}

#[async_trait]
impl Store for CountingStore {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    async fn schema_version(&self) -> StoreResult<i64> {
        timed!(self, "schema_version", self.inner.schema_version())
    }

    async fn close(&self) {
        self.inner.close().await;
    }

    async fn task_create(&self, task: NewTask) -> StoreResult<TaskCreated> {
        timed!(self, "task_create", self.inner.task_create(task))
    }

    async fn tasks_create_many(&self, tasks: Vec<NewTask>) -> StoreResult<Vec<TaskCreated>> {
        timed!(
            self,
            "tasks_create_many",
            self.inner.tasks_create_many(tasks)
        )
    }

    async fn task_get(&self, task_id: i64) -> StoreResult<TaskRecord> {
        timed!(self, "task_get", self.inner.task_get(task_id))
    }

    async fn task_load_dag(&self, task_id: i64) -> StoreResult<TaskDag> {
        timed!(self, "task_load_dag", self.inner.task_load_dag(task_id))
    }

    async fn tasks_load_dags(&self, task_ids: Vec<i64>) -> StoreResult<Vec<TaskDag>> {
        timed!(
            self,
            "tasks_load_dags",
            self.inner.tasks_load_dags(task_ids)
        )
    }

    async fn tasks_list(&self, params: TasksList) -> StoreResult<Page<TaskRecord>> {
        timed!(self, "tasks_list", self.inner.tasks_list(params))
    }

    async fn tasks_active(&self, params: TasksActive) -> StoreResult<Page<i64>> {
        timed!(self, "tasks_active", self.inner.tasks_active(params))
    }

    async fn tasks_claim(&self, params: TasksClaim) -> StoreResult<Vec<i64>> {
        timed!(self, "tasks_claim", self.inner.tasks_claim(params))
    }

    async fn tasks_lease_renew(&self, params: TasksLease) -> StoreResult<Vec<i64>> {
        timed!(
            self,
            "tasks_lease_renew",
            self.inner.tasks_lease_renew(params)
        )
    }

    async fn tasks_release(&self, params: TasksLease) -> StoreResult<Vec<i64>> {
        timed!(self, "tasks_release", self.inner.tasks_release(params))
    }

    async fn steps_list(&self, params: StepsList) -> StoreResult<Page<StepRecord>> {
        timed!(self, "steps_list", self.inner.steps_list(params))
    }

    async fn steps_ready(&self, params: StepsReady) -> StoreResult<Vec<ReadyStep>> {
        timed!(self, "steps_ready", self.inner.steps_ready(params))
    }

    async fn steps_timed_out(&self, params: StepsTimedOut) -> StoreResult<Vec<InFlightStep>> {
        timed!(self, "steps_timed_out", self.inner.steps_timed_out(params))
    }

    async fn transitions_apply(&self, params: TransitionsApply) -> StoreResult<TransitionsApplied> {
        timed!(
            self,
            "transitions_apply",
            self.inner.transitions_apply(params)
        )
    }

    async fn transitions_list(&self, of: TransitionsOf) -> StoreResult<Vec<TransitionRecord>> {
        timed!(self, "transitions_list", self.inner.transitions_list(of))
    }

    async fn batch_record(&self, params: BatchRecord) -> StoreResult<BatchRecorded> {
        timed!(self, "batch_record", self.inner.batch_record(params))
    }

    async fn batches_record(&self, params: Vec<BatchRecord>) -> StoreResult<Vec<BatchRecorded>> {
        timed!(self, "batches_record", self.inner.batches_record(params))
    }

    async fn batch_get(&self, batch_uuid: Uuid) -> StoreResult<BatchDetail> {
        timed!(self, "batch_get", self.inner.batch_get(batch_uuid))
    }

    async fn batches_orphaned(&self, params: BatchesOrphaned) -> StoreResult<Vec<OrphanedBatch>> {
        timed!(
            self,
            "batches_orphaned",
            self.inner.batches_orphaned(params)
        )
    }

    async fn ledger_append(&self, params: LedgerAppend) -> StoreResult<Vec<LedgerOutcome>> {
        timed!(self, "ledger_append", self.inner.ledger_append(params))
    }

    async fn ledger_list(&self, params: LedgerList) -> StoreResult<Vec<LedgerRecord>> {
        timed!(self, "ledger_list", self.inner.ledger_list(params))
    }

    async fn worker_upsert(&self, params: WorkerUpsert) -> StoreResult<()> {
        timed!(self, "worker_upsert", self.inner.worker_upsert(params))
    }

    async fn workers_list(&self) -> StoreResult<Vec<WorkerRecord>> {
        timed!(self, "workers_list", self.inner.workers_list())
    }

    async fn dead_letter_insert(&self, params: DeadLetterInsert) -> StoreResult<DeadLetterRecord> {
        timed!(
            self,
            "dead_letter_insert",
            self.inner.dead_letter_insert(params)
        )
    }

    async fn dead_letters_list(
        &self,
        params: DeadLettersList,
    ) -> StoreResult<Page<DeadLetterRecord>> {
        timed!(
            self,
            "dead_letters_list",
            self.inner.dead_letters_list(params)
        )
    }

    async fn dead_letter_resolve(
        &self,
        params: DeadLetterResolve,
    ) -> StoreResult<DeadLetterRecord> {
        timed!(
            self,
            "dead_letter_resolve",
            self.inner.dead_letter_resolve(params)
        )
    }

    async fn state_counts(&self) -> StoreResult<StateCounts> {
        timed!(self, "state_counts", self.inner.state_counts())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_are_counted_and_differenced() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite:{}", dir.path().join("calls.db").display());
        let store = CountingStore::new(tasker_store::connect(&url).await.expect("store"));
        store.workers_list().await.expect("list");
        let before = store.snapshot();
        store.workers_list().await.expect("list");
        store.workers_list().await.expect("list");
        store.state_counts().await.expect("counts");
        let after = store.snapshot();
        assert_eq!(after["workers_list"].calls, 3);
        let figures = between(&before, &after, 4);
        let list = figures
            .iter()
            .find(|f| f.operation == "workers_list")
            .expect("listed");
        assert_eq!(list.calls, 2);
        assert!((list.per_step - 0.5).abs() < 1e-9);
        assert_eq!(
            figures
                .iter()
                .find(|f| f.operation == "state_counts")
                .map(|f| f.calls),
            Some(1)
        );
        store.close().await;
    }
}
