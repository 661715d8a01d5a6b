//! Steps: listing, readiness, timeouts.

use rusqlite::{Connection, params};

use super::errors::FailResult;
use super::rows::{self, json_text_opt, query_all, step_select};
use super::tasks::paginate;
use crate::params::{StepsList, StepsReady, StepsTimedOut, page_size};
use crate::records::{InFlightStep, Page, ReadyStep, StepRecord};
use crate::time::{from_ms, to_ms};

/// Steps for the API, ascending by id.
pub(crate) fn steps_list(conn: &Connection, params: &StepsList) -> FailResult<Page<StepRecord>> {
    let limit = page_size(params.limit, 100, 1000);
    let mut items = query_all(
        conn,
        concat!(
            step_select!(),
            "WHERE (?1 IS NULL OR s.task_id = ?1)
               AND (?2 IS NULL OR s.state = ?2)
               AND (?3 IS NULL OR s.name = ?3)
               AND (?4 IS NULL OR s.handler_class = ?4)
               AND (?5 IS NULL OR s.step_id > ?5)
             ORDER BY s.step_id
             LIMIT ?6"
        ),
        params![
            params.task_id,
            params.state.map(|s| s.as_str()),
            params.name,
            params.handler_class,
            params.after_step_id,
            limit + 1,
        ],
        rows::step,
    )?;
    Ok(paginate(&mut items, limit, |s| s.step_id))
}

/// The conditions shared by both readiness queries (see the PostgreSQL backend's twin): the step
/// may run, its parents are satisfied, it is not in flight, its task is unfinished (and claimed
/// by `?3` when given).
macro_rules! ready_conditions {
    () => {
        "s.state IN ('pending', 'error') AND s.in_flight_batch_id IS NULL
           AND s.unmet_parents = 0
           AND (s.state = 'pending'
                OR (s.retryable = 1 AND s.attempts < s.retry_limit
                    AND (s.backoff_until IS NULL OR s.backoff_until <= ?1)))
           AND (SELECT t.state IN ('pending', 'in_progress')
                       AND (?3 IS NULL OR (t.claimed_by = ?3 AND t.claim_expires_at > ?1))
                FROM tasker_tasks t WHERE t.task_id = s.task_id)"
    };
}

/// Steps that can be dispatched now (see [`crate::Store::steps_ready`]).
pub(crate) fn steps_ready(conn: &Connection, params: &StepsReady) -> FailResult<Vec<ReadyStep>> {
    let limit = page_size(params.limit, 1000, 10_000);
    // Without a task filter this scans the steps in id order up to the limit: no index serves it
    // since schema 2 (the engine never calls it; the candidate index cost every step update).
    let sql = match &params.task_ids {
        Some(_) => concat!(
            "SELECT s.step_id, s.task_id, s.name, s.handler_class, s.state, s.attempts
             FROM tasker_workflow_steps s
             WHERE s.task_id IN (SELECT value FROM json_each(?2)) AND ",
            ready_conditions!(),
            " ORDER BY s.step_id LIMIT ?4"
        ),
        None => concat!(
            "SELECT s.step_id, s.task_id, s.name, s.handler_class, s.state, s.attempts
             FROM tasker_workflow_steps s
             WHERE ?2 IS NULL AND ",
            ready_conditions!(),
            " ORDER BY s.step_id LIMIT ?4"
        ),
    };
    query_all(
        conn,
        sql,
        params![
            to_ms(params.now),
            json_text_opt(params.task_ids.as_ref())?,
            params.claimed_by,
            limit,
        ],
        |row| {
            Ok(ReadyStep {
                step_id: rows::column(row, "step_id")?,
                task_id: rows::column(row, "task_id")?,
                name: rows::column(row, "name")?,
                handler_class: rows::column(row, "handler_class")?,
                state: rows::state(row, "state")?,
                attempts: rows::column(row, "attempts")?,
            })
        },
    )
}

/// In-flight steps past their deadline.
pub(crate) fn steps_timed_out(
    conn: &Connection,
    params: &StepsTimedOut,
) -> FailResult<Vec<InFlightStep>> {
    let limit = page_size(params.limit, 1000, 10_000);
    query_all(
        conn,
        "SELECT s.step_id, s.task_id, b.batch_uuid, b.worker_id, s.attempts,
                s.in_flight_deadline_at
         FROM tasker_workflow_steps s
         JOIN tasker_step_execution_batches b ON b.batch_id = s.in_flight_batch_id
         WHERE s.in_flight_batch_id IS NOT NULL AND s.in_flight_deadline_at <= ?1
         ORDER BY s.in_flight_deadline_at, s.step_id
         LIMIT ?2",
        params![to_ms(params.now), limit],
        |row| {
            Ok(InFlightStep {
                step_id: rows::column(row, "step_id")?,
                task_id: rows::column(row, "task_id")?,
                batch_uuid: rows::uuid(row, "batch_uuid")?,
                worker_id: rows::column(row, "worker_id")?,
                attempts: rows::column(row, "attempts")?,
                deadline_at: from_ms(rows::column(row, "in_flight_deadline_at")?)?,
            })
        },
    )
}
