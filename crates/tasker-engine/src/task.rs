//! What callers hand the engine and get back: [`TaskRequest`], [`TaskCreated`], [`TaskOutcome`],
//! [`TaskStatus`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tasker_core::context::{ContextError, ContextValidator, ContextViolation};
use tasker_core::state::TaskState;
use tasker_core::status::ExecutionStatus;
use tasker_core::template::TaskTemplate;
use tasker_store::{NewStep, NewTask, StepRecord, TaskRecord};

use crate::error::EngineError;

/// A request to start a task from a template (the seed's `initialize_task(task_request)`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskRequest {
    /// The template's namespace.
    pub namespace: String,
    /// The template's name.
    pub name: String,
    /// The template's version; `None` takes the latest loaded version.
    pub version: Option<String>,
    /// The task's input, checked against the template's `context_schema`. Must be a JSON object
    /// (`null` means `{}`).
    pub context: Value,
    /// With a key, a repeated request for the same template returns the existing task instead of
    /// creating a second one.
    pub idempotency_key: Option<String>,
    /// Who asks (a user, a service).
    pub initiator: Option<String>,
    /// Which system asks.
    pub source_system: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Free-form labels.
    pub tags: Vec<String>,
}

impl TaskRequest {
    /// The task to store for this request from `template` (which the caller looked up by the
    /// request's namespace, name and version): the context validated against the template's
    /// `context_schema`, the steps and dependency edges in template order. Used by
    /// [`EngineHandle::initialize_task`](crate::EngineHandle::initialize_task); public for tools
    /// that write tasks straight into a store (another process, bulk loaders).
    ///
    /// # Errors
    ///
    /// [`EngineError::InvalidContext`] listing every violation, or when the context is not a
    /// JSON object.
    pub fn into_new_task(
        self,
        template: &TaskTemplate,
        now: DateTime<Utc>,
    ) -> Result<NewTask, EngineError> {
        let context = match self.context {
            Value::Null => Value::Object(serde_json::Map::new()),
            other => other,
        };
        let invalid_context = |error| EngineError::InvalidContext {
            namespace: template.namespace().to_owned(),
            name: template.name().to_owned(),
            version: template.version().to_string(),
            error,
        };
        ContextValidator::for_template(template)
            .validate(&context)
            .map_err(invalid_context)?;
        if !context.is_object() {
            return Err(invalid_context(ContextError {
                violations: vec![ContextViolation {
                    pointer: String::new(),
                    keyword: "type".to_owned(),
                    message: "the task context must be a JSON object".to_owned(),
                }],
            }));
        }
        let steps = template
            .steps()
            .iter()
            .map(|step| NewStep {
                name: step.name.clone(),
                handler_class: step.handler_class.clone(),
                handler_config: Value::Object(step.handler_config.clone()),
                retryable: step.retryable,
                retry_limit: i32::try_from(step.retry_limit).unwrap_or(i32::MAX),
                timeout_ms: Some(i64::try_from(step.timeout_ms).unwrap_or(i64::MAX)),
                backoff: step.backoff,
            })
            .collect();
        let dag = template.dag();
        let edges = (0..dag.len())
            .flat_map(|child| {
                dag.parents(child)
                    .iter()
                    .map(move |&parent| (parent, child))
            })
            .collect();
        Ok(NewTask {
            namespace: template.namespace().to_owned(),
            name: template.name().to_owned(),
            version: template.version().to_string(),
            template_json: serde_json::to_value(template).ok(),
            context,
            initiator: self.initiator,
            source_system: self.source_system,
            reason: self.reason,
            tags: self.tags,
            idempotency_key: self.idempotency_key,
            steps,
            edges,
            now,
            claim: None,
        })
    }
}

/// The answer to [`EngineHandle::initialize_task`](crate::EngineHandle::initialize_task).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskCreated {
    /// The task's id (the existing task's for a repeated idempotency key).
    pub task_id: i64,
    /// False when the idempotency key matched an existing task and nothing was created.
    pub created: bool,
    /// The template's namespace.
    pub namespace: String,
    /// The template's name.
    pub name: String,
    /// The template version the task was created from.
    pub version: String,
    /// The step ids, in template order.
    pub step_ids: Vec<i64>,
}

/// How a task ended, as returned by [`EngineHandle::handle`](crate::EngineHandle::handle).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskOutcome {
    /// The task.
    pub task_id: i64,
    /// Its final state: `complete`, `error`, `cancelled` or `resolved_manually`.
    pub state: TaskState,
    /// For `error` (and `cancelled`): why, naming the steps responsible.
    pub reason: Option<String>,
    /// The permanently failed steps, for `error`.
    pub failed_steps: Vec<FailedStep>,
}

/// A step that failed for good and made its task fail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedStep {
    /// The step.
    pub step_id: i64,
    /// Its name in the template.
    pub name: String,
    /// `non_retryable` or `retries_exhausted`.
    pub reason: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error reported for it (`message`, `error_class`, …), if any.
    pub last_error: Option<Value>,
}

/// A task as it stands, as returned by
/// [`EngineHandle::task_status`](crate::EngineHandle::task_status).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskStatus {
    /// The task row.
    pub task: TaskRecord,
    /// Its steps, in template order, with their states, attempts, results and errors.
    pub steps: Vec<StepRecord>,
    /// What the engine makes of them now (ready, processing, waiting for a backoff, complete,
    /// blocked), with step indices into `steps`.
    pub execution: ExecutionStatus,
    /// Dependencies as `(parent step id, child step id)`, sorted.
    pub edges: Vec<(i64, i64)>,
    /// When the status was read.
    pub read_at: DateTime<Utc>,
    /// Whether it was answered from the engine's memory (a task it holds) rather than read from
    /// the store.
    pub from_memory: bool,
}

/// The stored form of a task the engine just created (`created.created` is true), built from
/// what it asked the store to write and the ids the store assigned, so the engine holds the task
/// without reading it back: `pending`, every step `pending` with no attempt, claimed as asked.
pub(crate) fn created_dag(
    task: &NewTask,
    created: &tasker_store::TaskCreated,
) -> tasker_store::TaskDag {
    let now = crate::core::stored_time(task.now);
    let steps = task
        .steps
        .iter()
        .zip(&created.step_ids)
        .enumerate()
        .map(|(position, (step, &step_id))| StepRecord {
            step_id,
            task_id: created.task_id,
            name: step.name.clone(),
            position: i32::try_from(position).unwrap_or(i32::MAX),
            handler_class: step.handler_class.clone(),
            handler_config: step.handler_config.clone(),
            retryable: step.retryable,
            retry_limit: step.retry_limit,
            timeout_ms: step.timeout_ms,
            backoff: step.backoff,
            state: tasker_core::state::StepState::Pending,
            attempts: 0,
            last_attempted_at: None,
            backoff_until: None,
            results: None,
            last_error: None,
            in_flight_batch: None,
            in_flight_deadline_at: None,
            created_at: now,
            updated_at: now,
        })
        .collect();
    let mut edges: Vec<(i64, i64)> = task
        .edges
        .iter()
        .filter_map(|&(parent, child)| {
            Some((
                *created.step_ids.get(parent)?,
                *created.step_ids.get(child)?,
            ))
        })
        .collect();
    edges.sort_unstable();
    tasker_store::TaskDag {
        task: TaskRecord {
            task_id: created.task_id,
            namespace: task.namespace.clone(),
            name: task.name.clone(),
            version: task.version.clone(),
            state: TaskState::Pending,
            context: task.context.clone(),
            initiator: task.initiator.clone(),
            source_system: task.source_system.clone(),
            reason: task.reason.clone(),
            tags: task.tags.clone(),
            idempotency_key: task.idempotency_key.clone(),
            claimed_by: task.claim.as_ref().map(|c| c.orchestrator_id.clone()),
            claim_expires_at: task
                .claim
                .as_ref()
                .map(|c| crate::core::stored_time(c.expires_at)),
            created_at: now,
            updated_at: now,
            completed_at: None,
        },
        steps,
        edges,
    }
}
