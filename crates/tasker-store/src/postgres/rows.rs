//! Decoding PostgreSQL rows into records. JSON columns are JSONB, UUIDs native.

use std::str::FromStr;

use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use uuid::Uuid;

use crate::error::{StoreError, StoreResult};
use crate::records::{StepRecord, TaskRecord, TransitionRecord};
use crate::time::{from_ms, from_ms_opt};

/// The columns [`task`] reads, with the joins they need.
macro_rules! task_select {
    () => {
        "SELECT t.task_id, ns.name AS namespace, nt.name AS name, nt.version AS version, t.state,
                t.context, t.initiator, t.source_system, t.reason, t.tags, t.idempotency_key,
                t.claimed_by, t.claim_expires_at, t.created_at, t.updated_at, t.completed_at
         FROM tasker_tasks t
         JOIN tasker_named_tasks nt ON nt.named_task_id = t.named_task_id
         JOIN tasker_namespaces ns ON ns.namespace_id = nt.namespace_id "
    };
}
pub(crate) use task_select;

/// The columns [`step`] reads, with the joins they need.
macro_rules! step_select {
    () => {
        "SELECT s.step_id, s.task_id, s.name, s.position, s.handler_class, s.handler_config,
                s.retryable, s.retry_limit, s.timeout_ms, s.backoff, s.state, s.attempts,
                s.last_attempted_at, s.backoff_until, s.results, s.last_error,
                b.batch_uuid AS in_flight_batch, s.in_flight_deadline_at, s.created_at,
                s.updated_at
         FROM tasker_workflow_steps s
         LEFT JOIN tasker_step_execution_batches b ON b.batch_id = s.in_flight_batch_id "
    };
}
pub(crate) use step_select;

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        reason: e.to_string(),
    }
}

fn get<'r, T>(row: &'r PgRow, column: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column)
        .map_err(|e| corrupt(format!("column {column}: {e}")))
}

/// A state column.
pub(crate) fn state<S>(row: &PgRow, column: &str) -> StoreResult<S>
where
    S: FromStr,
    S::Err: std::fmt::Display,
{
    let text: String = get(row, column)?;
    text.parse().map_err(corrupt)
}

/// A JSONB column.
pub(crate) fn json(row: &PgRow, column: &str) -> StoreResult<Value> {
    get(row, column)
}

/// A nullable JSONB column.
pub(crate) fn json_opt(row: &PgRow, column: &str) -> StoreResult<Option<Value>> {
    get(row, column)
}

/// A nullable UUID column.
pub(crate) fn uuid_opt(row: &PgRow, column: &str) -> StoreResult<Option<Uuid>> {
    get(row, column)
}

/// A UUID column.
pub(crate) fn uuid(row: &PgRow, column: &str) -> StoreResult<Uuid> {
    get(row, column)
}

/// Decodes a row selected with [`task_select!`].
pub(crate) fn task(row: &PgRow) -> StoreResult<TaskRecord> {
    let tags: Json<Vec<String>> = get(row, "tags")?;
    Ok(TaskRecord {
        task_id: get(row, "task_id")?,
        namespace: get(row, "namespace")?,
        name: get(row, "name")?,
        version: get(row, "version")?,
        state: state(row, "state")?,
        context: json(row, "context")?,
        initiator: get(row, "initiator")?,
        source_system: get(row, "source_system")?,
        reason: get(row, "reason")?,
        tags: tags.0,
        idempotency_key: get(row, "idempotency_key")?,
        claimed_by: get(row, "claimed_by")?,
        claim_expires_at: from_ms_opt(get(row, "claim_expires_at")?)?,
        created_at: from_ms(get(row, "created_at")?)?,
        updated_at: from_ms(get(row, "updated_at")?)?,
        completed_at: from_ms_opt(get(row, "completed_at")?)?,
    })
}

/// Decodes a row selected with [`step_select!`].
pub(crate) fn step(row: &PgRow) -> StoreResult<StepRecord> {
    let backoff = match json_opt(row, "backoff")? {
        Some(v) => Some(serde_json::from_value(v).map_err(corrupt)?),
        None => None,
    };
    Ok(StepRecord {
        step_id: get(row, "step_id")?,
        task_id: get(row, "task_id")?,
        name: get(row, "name")?,
        position: get(row, "position")?,
        handler_class: get(row, "handler_class")?,
        handler_config: json(row, "handler_config")?,
        retryable: get(row, "retryable")?,
        retry_limit: get(row, "retry_limit")?,
        timeout_ms: get(row, "timeout_ms")?,
        backoff,
        state: state(row, "state")?,
        attempts: get(row, "attempts")?,
        last_attempted_at: from_ms_opt(get(row, "last_attempted_at")?)?,
        backoff_until: from_ms_opt(get(row, "backoff_until")?)?,
        results: json_opt(row, "results")?,
        last_error: json_opt(row, "last_error")?,
        in_flight_batch: uuid_opt(row, "in_flight_batch")?,
        in_flight_deadline_at: from_ms_opt(get(row, "in_flight_deadline_at")?)?,
        created_at: from_ms(get(row, "created_at")?)?,
        updated_at: from_ms(get(row, "updated_at")?)?,
    })
}

/// Decodes a transition row (`from_state, to_state, event, metadata, sort_key, most_recent,
/// created_at`).
pub(crate) fn transition(row: &PgRow) -> StoreResult<TransitionRecord> {
    Ok(TransitionRecord {
        from_state: get(row, "from_state")?,
        to_state: get(row, "to_state")?,
        event: get(row, "event")?,
        metadata: json_opt(row, "metadata")?,
        sort_key: get(row, "sort_key")?,
        most_recent: get(row, "most_recent")?,
        created_at: from_ms(get(row, "created_at")?)?,
    })
}

/// Any column, decoded.
pub(crate) fn column<'r, T>(row: &'r PgRow, name: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    get(row, name)
}
