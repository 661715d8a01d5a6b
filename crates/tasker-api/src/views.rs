//! The JSON bodies of successful responses. They derive `Deserialize` too, so clients (the
//! `tasker task` commands, tests) read exactly what the server writes.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tasker_core::state::{StepState, TaskState};
use tasker_engine::{TaskCreated, TaskStatus};

/// `POST /v1/tasks` → `201 Created` (new task) or `200 OK` (`created: false`: the idempotency
/// key matched an existing task, which is returned instead).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCreatedView {
    /// The task's id.
    pub task_id: i64,
    /// False when an existing task with the same idempotency key was returned.
    pub created: bool,
    /// Template namespace.
    pub namespace: String,
    /// Template name.
    pub name: String,
    /// The template version the task was created from.
    pub version: String,
    /// How many steps the task has.
    pub step_count: usize,
    /// Where to read the task: `/v1/tasks/{task_id}`.
    pub href: String,
}

impl From<TaskCreated> for TaskCreatedView {
    fn from(created: TaskCreated) -> Self {
        Self {
            href: task_href(created.task_id),
            task_id: created.task_id,
            created: created.created,
            namespace: created.namespace,
            name: created.name,
            version: created.version,
            step_count: created.step_ids.len(),
        }
    }
}

/// The path of a task.
pub fn task_href(task_id: i64) -> String {
    format!("/v1/tasks/{task_id}")
}

/// `GET /v1/tasks/{id}`: the task and every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// The task's id.
    pub task_id: i64,
    /// Template namespace.
    pub namespace: String,
    /// Template name.
    pub name: String,
    /// Template version.
    pub version: String,
    /// `pending`, `in_progress`, `complete`, `error`, `cancelled` or `resolved_manually`.
    pub state: TaskState,
    /// What the engine makes of the steps now: `has_ready_steps`, `processing`,
    /// `waiting_for_backoff`, `all_complete`, `blocked_by_failures`, `blocked_by_cancellation`
    /// or `stalled`.
    pub execution: String,
    /// The input context.
    pub context: Value,
    /// Who asked.
    pub initiator: Option<String>,
    /// Which system asked.
    pub source_system: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Labels.
    pub tags: Vec<String>,
    /// The idempotency key it was created with.
    pub idempotency_key: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When the task reached a terminal state.
    pub completed_at: Option<DateTime<Utc>>,
    /// How many steps are in each state (states with no step are left out).
    pub step_counts: BTreeMap<String, usize>,
    /// Every step, in template order.
    pub steps: Vec<StepView>,
}

/// One step of a [`TaskView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    /// The step's id.
    pub step_id: i64,
    /// Its name in the template.
    pub name: String,
    /// The handler a worker runs for it.
    pub handler_class: String,
    /// `pending`, `in_progress`, `complete`, `error`, `cancelled` or `resolved_manually`.
    pub state: StepState,
    /// Attempts dispatched so far.
    pub attempts: i32,
    /// Attempts allowed.
    pub retry_limit: i32,
    /// Whether a failed attempt may be retried.
    pub retryable: bool,
    /// The names of the steps it waits for.
    pub depends_on: Vec<String>,
    /// The output of the successful (or manually resolved) attempt.
    pub results: Option<Value>,
    /// The last error reported for it (`message`, `error_class`, `retryable`, …).
    pub last_error: Option<Value>,
    /// When the last attempt was dispatched.
    pub last_attempted_at: Option<DateTime<Utc>>,
    /// Earliest time of the next retry, while waiting for one.
    pub backoff_until: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl TaskView {
    /// Builds the view of `status`, with dependencies from `edges` (`(parent, child)` step ids).
    pub fn new(status: TaskStatus, edges: &[(i64, i64)]) -> Self {
        let names: HashMap<i64, &str> = status
            .steps
            .iter()
            .map(|s| (s.step_id, s.name.as_str()))
            .collect();
        let mut parents: HashMap<i64, Vec<String>> = HashMap::new();
        for (parent, child) in edges {
            if let Some(name) = names.get(parent) {
                parents.entry(*child).or_default().push((*name).to_owned());
            }
        }
        let mut step_counts = BTreeMap::new();
        for step in &status.steps {
            *step_counts
                .entry(step.state.as_str().to_owned())
                .or_insert(0) += 1;
        }
        let execution = serde_json::to_value(&status.execution)
            .ok()
            .and_then(|v| v.get("kind").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| "unknown".to_owned());
        let steps = status
            .steps
            .iter()
            .map(|step| StepView {
                step_id: step.step_id,
                name: step.name.clone(),
                handler_class: step.handler_class.clone(),
                state: step.state,
                attempts: step.attempts,
                retry_limit: step.retry_limit,
                retryable: step.retryable,
                depends_on: parents.remove(&step.step_id).unwrap_or_default(),
                results: step.results.clone(),
                last_error: step.last_error.clone(),
                last_attempted_at: step.last_attempted_at,
                backoff_until: step.backoff_until,
                created_at: step.created_at,
                updated_at: step.updated_at,
            })
            .collect();
        let task = status.task;
        Self {
            task_id: task.task_id,
            namespace: task.namespace,
            name: task.name,
            version: task.version,
            state: task.state,
            execution,
            context: task.context,
            initiator: task.initiator,
            source_system: task.source_system,
            reason: task.reason,
            tags: task.tags,
            idempotency_key: task.idempotency_key,
            created_at: task.created_at,
            updated_at: task.updated_at,
            completed_at: task.completed_at,
            step_counts,
            steps,
        }
    }
}

/// `GET /health`: always `200` while the process serves requests (liveness); the store's state
/// is reported inside. `GET /health/ready` returns the same body with `503` when the store is
/// not reachable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthView {
    /// `ok` when the store answered, `degraded` otherwise.
    pub status: String,
    /// The Tasker version serving.
    pub version: String,
    /// The store.
    pub store: StoreHealth,
    /// The engine.
    pub engine: EngineHealth,
}

/// The store part of [`HealthView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreHealth {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Whether a query answered within the health check's time limit.
    pub reachable: bool,
    /// The schema version, when reachable.
    pub schema_version: Option<i64>,
    /// Why it is not reachable.
    pub error: Option<String>,
}

/// The engine part of [`HealthView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineHealth {
    /// The ZeroMQ endpoint workers connect to.
    pub endpoint: String,
    /// This orchestrator's id.
    pub orchestrator_id: String,
    /// Workers with a session now.
    pub workers_connected: u64,
    /// Tasks being driven now.
    pub tasks_active: u64,
}
