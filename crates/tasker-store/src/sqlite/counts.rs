//! Counts per state, for metrics.

use rusqlite::Connection;
use tasker_core::state::{BatchState, StepState, TaskState};

use super::errors::FailResult;
use super::rows::{self, query_all, query_opt};
use crate::records::{StateCounts, counts_by_state};

/// `(state, count)` rows of a `GROUP BY state` query.
fn by_state(conn: &Connection, sql: &str) -> FailResult<Vec<(String, i64)>> {
    query_all(conn, sql, [], |row| {
        Ok((rows::column(row, "state")?, rows::column(row, "n")?))
    })
}

/// Rows per state, read in the caller's snapshot.
pub(crate) fn state_counts(conn: &Connection) -> FailResult<StateCounts> {
    let tasks = by_state(
        conn,
        "SELECT state, count(*) AS n FROM tasker_tasks GROUP BY state",
    )?;
    let steps = by_state(
        conn,
        "SELECT state, count(*) AS n FROM tasker_workflow_steps GROUP BY state",
    )?;
    let batches = by_state(
        conn,
        "SELECT state, count(*) AS n FROM tasker_step_execution_batches GROUP BY state",
    )?;
    let dead_letters_unresolved = query_opt(
        conn,
        "SELECT count(*) AS n FROM tasker_dead_letters WHERE resolved_at IS NULL",
        [],
        |row| rows::column(row, "n"),
    )?
    .unwrap_or(0);
    Ok(StateCounts {
        tasks: counts_by_state(TaskState::ALL, tasks)?,
        steps: counts_by_state(StepState::ALL, steps)?,
        batches: counts_by_state(BatchState::ALL, batches)?,
        dead_letters_unresolved,
    })
}
