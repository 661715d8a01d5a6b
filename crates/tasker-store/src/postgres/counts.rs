//! Counts per state, for metrics.

use sqlx::PgConnection;
use tasker_core::state::{BatchState, StepState, TaskState};

use crate::error::FailResult;
use crate::records::{StateCounts, counts_by_state};

/// Rows per state.
pub(crate) async fn state_counts(conn: &mut PgConnection) -> FailResult<StateCounts> {
    let tasks: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM tasker_tasks GROUP BY state")
            .fetch_all(&mut *conn)
            .await?;
    let steps: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM tasker_workflow_steps GROUP BY state")
            .fetch_all(&mut *conn)
            .await?;
    let batches: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM tasker_step_execution_batches GROUP BY state")
            .fetch_all(&mut *conn)
            .await?;
    let dead_letters_unresolved: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasker_dead_letters WHERE resolved_at IS NULL")
            .fetch_one(&mut *conn)
            .await?;
    Ok(StateCounts {
        tasks: counts_by_state(TaskState::ALL, tasks)?,
        steps: counts_by_state(StepState::ALL, steps)?,
        batches: counts_by_state(BatchState::ALL, batches)?,
        dead_letters_unresolved,
    })
}
