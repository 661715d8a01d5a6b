//! Decoding SQLite rows into records. JSON columns are TEXT, UUIDs hyphenated TEXT, booleans 0/1.

use std::str::FromStr;

use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use sqlx::types::Json;
use uuid::Uuid;
use uuid::fmt::Hyphenated;

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

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column)
        .map_err(|e| corrupt(format!("column {column}: {e}")))
}

/// A state column.
pub(crate) fn state<S>(row: &SqliteRow, column: &str) -> StoreResult<S>
where
    S: FromStr,
    S::Err: std::fmt::Display,
{
    let text: String = get(row, column)?;
    text.parse().map_err(corrupt)
}

/// A JSON TEXT column.
pub(crate) fn json(row: &SqliteRow, column: &str) -> StoreResult<Value> {
    Ok(get::<Json<Value>>(row, column)?.0)
}

/// A nullable JSON TEXT column.
pub(crate) fn json_opt(row: &SqliteRow, column: &str) -> StoreResult<Option<Value>> {
    Ok(get::<Option<Json<Value>>>(row, column)?.map(|j| j.0))
}

/// A nullable UUID TEXT column.
pub(crate) fn uuid_opt(row: &SqliteRow, column: &str) -> StoreResult<Option<Uuid>> {
    Ok(get::<Option<Hyphenated>>(row, column)?.map(Uuid::from))
}

/// A UUID TEXT column.
pub(crate) fn uuid(row: &SqliteRow, column: &str) -> StoreResult<Uuid> {
    Ok(Uuid::from(get::<Hyphenated>(row, column)?))
}

/// Decodes a row selected with [`task_select!`].
pub(crate) fn task(row: &SqliteRow) -> StoreResult<TaskRecord> {
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
pub(crate) fn step(row: &SqliteRow) -> StoreResult<StepRecord> {
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
pub(crate) fn transition(row: &SqliteRow) -> StoreResult<TransitionRecord> {
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
pub(crate) fn column<'r, T>(row: &'r SqliteRow, name: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    get(row, name)
}
