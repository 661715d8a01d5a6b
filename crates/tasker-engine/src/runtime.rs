//! The engine's in-memory model of what it drives: active tasks with their DAGs and step states,
//! batches in flight, and worker sessions with their credit. Owned by the engine loop only.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tasker_core::backoff::BackoffPolicy;
use tasker_core::readiness::StepView;
use tasker_core::state::{BatchState, StepState, TaskState};
use tasker_protocol::{JsonObject, StepStatus, StepSummary};
use tasker_store::TaskDag;
use tasker_transport::PeerId;
use uuid::Uuid;

use crate::engine::last_failure_retryable;

/// What the engine is doing with a step besides what its state says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Busy {
    /// Nothing.
    Idle,
    /// Ready and waiting in the dispatch queue for a worker with credit.
    Queued,
    /// Chosen for a batch whose record is waiting or in flight.
    Dispatching,
    /// A change of its state is in the commit in flight.
    Committing,
}

/// One step of an active task.
#[derive(Debug, Clone)]
pub(crate) struct StepRuntime {
    pub step_id: i64,
    pub name: String,
    pub handler_class: String,
    pub handler_config: JsonObject,
    pub retryable: bool,
    pub retry_limit: u32,
    pub timeout_ms: Option<u64>,
    pub backoff: Option<BackoffPolicy>,
    pub parents: Vec<usize>,
    pub state: StepState,
    /// Attempts started (the store's count).
    pub attempts: u32,
    pub backoff_until: Option<DateTime<Utc>>,
    pub results: Option<Value>,
    pub last_error: Option<Value>,
    /// The batch of the attempt in flight (set exactly while `in_progress`).
    pub in_flight: Option<Uuid>,
    /// When the engine gives up waiting for that attempt's result.
    pub deadline: Option<DateTime<Utc>>,
    /// The worker the attempt in flight went to (`None`: unknown, e.g. after a restart).
    pub worker: Option<String>,
    pub busy: Busy,
    /// When the result that made this step ready was received (for handoff latency).
    pub ready_since: Option<Instant>,
    /// The stored row's times, kept as the store writes them so a read of an active task is
    /// answered from memory: creation, last change, last dispatch, and the deadline stored for
    /// the attempt in flight (without the engine's grace).
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_attempted_at: Option<DateTime<Utc>>,
    pub stored_deadline: Option<DateTime<Utc>>,
}

impl StepRuntime {
    /// Whether the last failure allows an automatic retry (for a step in `error`).
    pub fn failure_retryable(&self) -> bool {
        self.retryable && last_failure_retryable(self.last_error.as_ref())
    }

    /// The readiness view of this step as it stands.
    pub fn view(&self) -> StepView {
        StepView {
            state: self.state,
            parents: self.parents.clone(),
            attempts: self.attempts,
            retry_limit: self.retry_limit,
            retryable: self.failure_retryable(),
            backoff_until: self.backoff_until,
            in_flight: self.in_flight.is_some()
                || matches!(self.busy, Busy::Dispatching | Busy::Committing),
        }
    }
}

/// An active (unfinished) task and its DAG.
#[derive(Debug, Clone)]
pub(crate) struct TaskRuntime {
    pub task_id: i64,
    pub namespace: String,
    pub name: String,
    pub state: TaskState,
    pub context: JsonObject,
    /// Steps in template order.
    pub steps: Vec<StepRuntime>,
    /// Each step's ancestors (indices), whose results form its `previous_results`.
    pub ancestors: Vec<Vec<usize>>,
    /// Each step's children (indices).
    pub children: Vec<Vec<usize>>,
    /// A task transition is in the commit in flight.
    pub finishing: bool,
    /// The stored task row as loaded or created (its `context` left out: it is `context` above;
    /// its `state` is `state` above), with `updated_at` kept as the store writes it.
    pub record: tasker_store::TaskRecord,
}

impl TaskRuntime {
    /// Builds the runtime of a stored task. `grace` is added to stored step deadlines.
    pub fn from_dag(dag: TaskDag, grace: Duration) -> Self {
        let position: HashMap<i64, usize> = dag
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.step_id, i))
            .collect();
        let n = dag.steps.len();
        let mut parents = vec![Vec::new(); n];
        let mut children = vec![Vec::new(); n];
        for (parent, child) in &dag.edges {
            if let (Some(&p), Some(&c)) = (position.get(parent), position.get(child)) {
                parents[c].push(p);
                children[p].push(c);
            }
        }
        let ancestors = (0..n).map(|i| ancestors_of(i, &parents)).collect();
        let grace = chrono::TimeDelta::from_std(grace).unwrap_or(chrono::TimeDelta::zero());
        let steps = dag
            .steps
            .into_iter()
            .zip(parents)
            .map(|(record, parents)| StepRuntime {
                step_id: record.step_id,
                name: record.name,
                handler_class: record.handler_class,
                handler_config: match record.handler_config {
                    Value::Object(map) => map,
                    _ => JsonObject::new(),
                },
                retryable: record.retryable,
                retry_limit: u32::try_from(record.retry_limit).unwrap_or(0),
                timeout_ms: record.timeout_ms.and_then(|t| u64::try_from(t).ok()),
                backoff: record.backoff,
                parents,
                state: record.state,
                attempts: u32::try_from(record.attempts).unwrap_or(0),
                backoff_until: record.backoff_until,
                results: record.results,
                last_error: record.last_error,
                in_flight: record.in_flight_batch,
                deadline: record.in_flight_deadline_at.map(|d| d + grace),
                worker: None,
                busy: Busy::Idle,
                ready_since: None,
                created_at: record.created_at,
                updated_at: record.updated_at,
                last_attempted_at: record.last_attempted_at,
                stored_deadline: record.in_flight_deadline_at,
            })
            .collect();
        let mut record = dag.task;
        let context = match std::mem::take(&mut record.context) {
            Value::Object(map) => map,
            _ => JsonObject::new(),
        };
        TaskRuntime {
            task_id: record.task_id,
            namespace: record.namespace.clone(),
            name: record.name.clone(),
            state: record.state,
            context,
            steps,
            ancestors,
            children,
            finishing: false,
            record,
        }
    }

    /// The readiness views of every step.
    pub fn views(&self) -> Vec<StepView> {
        self.steps.iter().map(StepRuntime::view).collect()
    }

    /// The task as the store holds it now, from memory: its row, its steps' rows (template order)
    /// and its edges — what `task_load_dag` would read, without reading it.
    pub fn snapshot(&self) -> TaskDag {
        let mut task = self.record.clone();
        task.state = self.state;
        task.context = Value::Object(self.context.clone());
        let steps = self
            .steps
            .iter()
            .enumerate()
            .map(|(position, step)| tasker_store::StepRecord {
                step_id: step.step_id,
                task_id: self.task_id,
                name: step.name.clone(),
                position: i32::try_from(position).unwrap_or(i32::MAX),
                handler_class: step.handler_class.clone(),
                handler_config: Value::Object(step.handler_config.clone()),
                retryable: step.retryable,
                retry_limit: i32::try_from(step.retry_limit).unwrap_or(i32::MAX),
                timeout_ms: step.timeout_ms.and_then(|t| i64::try_from(t).ok()),
                backoff: step.backoff,
                state: step.state,
                attempts: i32::try_from(step.attempts).unwrap_or(i32::MAX),
                last_attempted_at: step.last_attempted_at,
                backoff_until: step.backoff_until,
                results: step.results.clone().filter(|_| {
                    // A result noted early for a child's request (the commit that completes the
                    // step is in flight) is not stored yet.
                    matches!(
                        step.state,
                        StepState::Complete | StepState::ResolvedManually
                    )
                }),
                last_error: step.last_error.clone(),
                in_flight_batch: step.in_flight,
                in_flight_deadline_at: step.stored_deadline,
                created_at: step.created_at,
                updated_at: step.updated_at,
            })
            .collect();
        let mut edges: Vec<(i64, i64)> = self
            .steps
            .iter()
            .flat_map(|child| {
                child
                    .parents
                    .iter()
                    .map(move |&parent| (self.steps[parent].step_id, child.step_id))
            })
            .collect();
        edges.sort_unstable();
        TaskDag { task, steps, edges }
    }

    /// The `previous_results` of step `index`: its ancestors' results by name.
    pub fn previous_results(&self, index: usize) -> JsonObject {
        self.ancestors[index]
            .iter()
            .map(|&a| {
                let step = &self.steps[a];
                (
                    step.name.clone(),
                    step.results.clone().unwrap_or(Value::Null),
                )
            })
            .collect()
    }
}

/// Every ancestor of `step`, ascending.
fn ancestors_of(step: usize, parents: &[Vec<usize>]) -> Vec<usize> {
    let mut seen = vec![false; parents.len()];
    let mut stack: Vec<usize> = parents[step].clone();
    while let Some(node) = stack.pop() {
        if !seen[node] {
            seen[node] = true;
            stack.extend(parents[node].iter().copied().filter(|&p| !seen[p]));
        }
    }
    (0..parents.len()).filter(|&i| seen[i]).collect()
}

/// One step of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchStep {
    pub step_id: i64,
    pub task_id: i64,
    pub attempt: u32,
}

/// A batch the engine knows about (dispatched by it, or adopted after a restart).
#[derive(Debug, Clone)]
pub(crate) struct BatchRuntime {
    pub worker_id: Option<String>,
    /// Its steps, in batch order (after a restart: only those the engine learned about).
    pub steps: Vec<BatchStep>,
    /// Whether `steps` is the batch's full list (false for batches adopted after a restart).
    pub complete_list: bool,
    pub state: BatchState,
    /// Partial results recorded (committed and applied) for its steps.
    pub reported: HashMap<i64, StepStatus>,
    /// Steps whose attempt in this batch is still open (no result, not ended otherwise).
    pub open: HashSet<i64>,
    /// The batch completion, once applied.
    pub completion: Option<Vec<StepSummary>>,
    /// What reconciling that completion with the partial results found (empty: consistent).
    pub findings: Vec<Value>,
    /// How the open steps that ended without a result ended (decides the batch's end state).
    pub ended_without_result: Option<BatchEndCause>,
}

/// Why steps of a batch ended without a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchEndCause {
    /// The send failed or the worker handed them back.
    NotRun,
    /// Their deadline passed.
    TimedOut,
    /// Their worker was lost.
    WorkerLost,
}

/// A worker with a session.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSession {
    pub worker_id: String,
    pub name: String,
    pub peer: PeerId,
    pub handler_classes: HashSet<String>,
    pub capacity: u32,
    /// `(batch, step)` pairs sent and not yet released (spec §8.2).
    pub outstanding: HashSet<(Uuid, i64)>,
    pub heartbeat_interval: Duration,
    pub last_seen: DateTime<Utc>,
    pub next_heartbeat: DateTime<Utc>,
    pub last_upsert: DateTime<Utc>,
    pub draining: bool,
    /// What it announced (recorded in the store's worker table).
    pub capabilities: Value,
}

impl WorkerSession {
    /// Steps that may still be sent to it.
    pub fn credit(&self) -> usize {
        if self.draining {
            return 0;
        }
        usize::try_from(self.capacity)
            .unwrap_or(usize::MAX)
            .saturating_sub(self.outstanding.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_are_transitive() {
        // a -> b -> d, a -> c -> d, e alone
        let parents = vec![vec![], vec![0], vec![0], vec![1, 2], vec![]];
        assert_eq!(ancestors_of(3, &parents), vec![0, 1, 2]);
        assert_eq!(ancestors_of(1, &parents), vec![0]);
        assert!(ancestors_of(4, &parents).is_empty());
    }
}
