//! Decoding SQLite rows into records, and encoding JSON parameters. JSON columns are TEXT (bound
//! as text, never as SQLite numbers or NULL), UUIDs hyphenated TEXT, booleans 0/1.

use std::str::FromStr;

use rusqlite::Row;
use rusqlite::types::FromSql;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::errors::FailResult;
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

/// A value as JSON text, to bind where the SQL reads it with `json_each` or stores it in a JSON
/// column.
pub(crate) fn json_text<T: Serialize + ?Sized>(value: &T) -> FailResult<String> {
    serde_json::to_string(value).map_err(|e| {
        StoreError::InvalidInput {
            reason: format!("cannot encode as JSON: {e}"),
        }
        .into()
    })
}

/// An optional value as JSON text (`None` binds SQL NULL).
pub(crate) fn json_text_opt<T: Serialize>(value: Option<&T>) -> FailResult<Option<String>> {
    value.map(json_text).transpose()
}

/// Any column, decoded.
pub(crate) fn column<T: FromSql>(row: &Row<'_>, name: &str) -> StoreResult<T> {
    row.get(name)
        .map_err(|e| corrupt(format!("column {name}: {e}")))
}

/// A state column.
pub(crate) fn state<S>(row: &Row<'_>, name: &str) -> StoreResult<S>
where
    S: FromStr,
    S::Err: std::fmt::Display,
{
    let text: String = column(row, name)?;
    text.parse().map_err(corrupt)
}

/// A JSON TEXT column.
pub(crate) fn json(row: &Row<'_>, name: &str) -> StoreResult<Value> {
    column(row, name)
}

/// A nullable JSON TEXT column.
pub(crate) fn json_opt(row: &Row<'_>, name: &str) -> StoreResult<Option<Value>> {
    column(row, name)
}

/// A UUID TEXT column.
pub(crate) fn uuid(row: &Row<'_>, name: &str) -> StoreResult<Uuid> {
    let text: String = column(row, name)?;
    Uuid::parse_str(&text).map_err(|e| corrupt(format!("column {name}: {e}")))
}

/// A nullable UUID TEXT column.
pub(crate) fn uuid_opt(row: &Row<'_>, name: &str) -> StoreResult<Option<Uuid>> {
    let text: Option<String> = column(row, name)?;
    text.map(|t| Uuid::parse_str(&t).map_err(|e| corrupt(format!("column {name}: {e}"))))
        .transpose()
}

/// Decodes a row selected with [`task_select!`].
pub(crate) fn task(row: &Row<'_>) -> StoreResult<TaskRecord> {
    let tags: Vec<String> = serde_json::from_value(json(row, "tags")?)
        .map_err(|e| corrupt(format!("column tags: {e}")))?;
    Ok(TaskRecord {
        task_id: column(row, "task_id")?,
        namespace: column(row, "namespace")?,
        name: column(row, "name")?,
        version: column(row, "version")?,
        state: state(row, "state")?,
        context: json(row, "context")?,
        initiator: column(row, "initiator")?,
        source_system: column(row, "source_system")?,
        reason: column(row, "reason")?,
        tags,
        idempotency_key: column(row, "idempotency_key")?,
        claimed_by: column(row, "claimed_by")?,
        claim_expires_at: from_ms_opt(column(row, "claim_expires_at")?)?,
        created_at: from_ms(column(row, "created_at")?)?,
        updated_at: from_ms(column(row, "updated_at")?)?,
        completed_at: from_ms_opt(column(row, "completed_at")?)?,
    })
}

/// Decodes a row selected with [`step_select!`].
pub(crate) fn step(row: &Row<'_>) -> StoreResult<StepRecord> {
    let backoff = match json_opt(row, "backoff")? {
        Some(v) => Some(serde_json::from_value(v).map_err(corrupt)?),
        None => None,
    };
    Ok(StepRecord {
        step_id: column(row, "step_id")?,
        task_id: column(row, "task_id")?,
        name: column(row, "name")?,
        position: column(row, "position")?,
        handler_class: column(row, "handler_class")?,
        handler_config: json(row, "handler_config")?,
        retryable: column(row, "retryable")?,
        retry_limit: column(row, "retry_limit")?,
        timeout_ms: column(row, "timeout_ms")?,
        backoff,
        state: state(row, "state")?,
        attempts: column(row, "attempts")?,
        last_attempted_at: from_ms_opt(column(row, "last_attempted_at")?)?,
        backoff_until: from_ms_opt(column(row, "backoff_until")?)?,
        results: json_opt(row, "results")?,
        last_error: json_opt(row, "last_error")?,
        in_flight_batch: uuid_opt(row, "in_flight_batch")?,
        in_flight_deadline_at: from_ms_opt(column(row, "in_flight_deadline_at")?)?,
        created_at: from_ms(column(row, "created_at")?)?,
        updated_at: from_ms(column(row, "updated_at")?)?,
    })
}

/// Decodes a transition row (`from_state, to_state, event, metadata, sort_key, most_recent,
/// created_at`).
pub(crate) fn transition(row: &Row<'_>) -> StoreResult<TransitionRecord> {
    Ok(TransitionRecord {
        from_state: column(row, "from_state")?,
        to_state: column(row, "to_state")?,
        event: column(row, "event")?,
        metadata: json_opt(row, "metadata")?,
        sort_key: column(row, "sort_key")?,
        most_recent: column(row, "most_recent")?,
        created_at: from_ms(column(row, "created_at")?)?,
    })
}

/// Runs a cached statement and decodes every row with `decode`.
pub(crate) fn query_all<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(&Row<'_>) -> StoreResult<T>,
) -> FailResult<Vec<T>> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// Runs a cached statement and decodes its first row, if any, with `decode`.
pub(crate) fn query_opt<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(&Row<'_>) -> StoreResult<T>,
) -> FailResult<Option<T>> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    let first = match rows.next()? {
        Some(row) => Some(decode(row)?),
        None => None,
    };
    // Step to the end, so a data-changing statement (`… RETURNING`) has run to completion.
    while rows.next()?.is_some() {}
    Ok(first)
}

/// Runs a cached statement that returns no rows; returns how many rows it changed.
pub(crate) fn execute(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> FailResult<usize> {
    Ok(conn.prepare_cached(sql)?.execute(params)?)
}
