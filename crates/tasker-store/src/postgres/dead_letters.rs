//! Dead letters: steps or tasks that could not be completed automatically.

use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use super::rows;
use super::tasks::paginate;
use crate::error::{ChangeTarget, FailResult, Refusal, RefusalReason, StoreError};
use crate::params::{DeadLetterInsert, DeadLetterResolve, DeadLettersList, page_size};
use crate::records::{DeadLetterRecord, Page};
use crate::time::{from_ms, from_ms_opt, to_ms};

fn record(row: &PgRow) -> FailResult<DeadLetterRecord> {
    Ok(DeadLetterRecord {
        dead_letter_id: rows::column(row, "dead_letter_id")?,
        task_id: rows::column(row, "task_id")?,
        step_id: rows::column(row, "step_id")?,
        reason: rows::column(row, "reason")?,
        snapshot: rows::json(row, "snapshot")?,
        created_at: from_ms(rows::column(row, "created_at")?)?,
        resolved_at: from_ms_opt(rows::column(row, "resolved_at")?)?,
        resolution: rows::column(row, "resolution")?,
        resolved_by: rows::column(row, "resolved_by")?,
    })
}

/// Records a dead letter; the task (and step, if given, of that task) must exist.
pub(crate) async fn dead_letter_insert(
    conn: &mut PgConnection,
    params: &DeadLetterInsert,
) -> FailResult<DeadLetterRecord> {
    let row = sqlx::query(
        "INSERT INTO tasker_dead_letters (task_id, step_id, reason, snapshot, created_at)
         SELECT t.task_id, $2, $3, $4, $5 FROM tasker_tasks t
         WHERE t.task_id = $1
           AND ($2::int8 IS NULL OR EXISTS (SELECT 1 FROM tasker_workflow_steps s
                                      WHERE s.step_id = $2 AND s.task_id = t.task_id))
         RETURNING dead_letter_id, task_id, step_id, reason, snapshot, created_at, resolved_at,
                   resolution, resolved_by",
    )
    .bind(params.task_id)
    .bind(params.step_id)
    .bind(&params.reason)
    .bind(&params.snapshot)
    .bind(to_ms(params.now))
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => record(&row),
        None => Err(StoreError::NotFound {
            what: if params.step_id.is_some() {
                "task or step"
            } else {
                "task"
            },
            id: match params.step_id {
                Some(step) => format!("{}/{step}", params.task_id),
                None => params.task_id.to_string(),
            },
        }
        .into()),
    }
}

/// Dead letters, newest first.
pub(crate) async fn dead_letters_list(
    conn: &mut PgConnection,
    params: &DeadLettersList,
) -> FailResult<Page<DeadLetterRecord>> {
    let limit = page_size(params.limit, 100, 1000);
    let rows = sqlx::query(
        "SELECT dead_letter_id, task_id, step_id, reason, snapshot, created_at, resolved_at,
                resolution, resolved_by
         FROM tasker_dead_letters
         WHERE ($1::bool IS NULL OR (resolved_at IS NOT NULL) = $1)
           AND ($2::int8 IS NULL OR task_id = $2)
           AND ($3::int8 IS NULL OR dead_letter_id < $3)
         ORDER BY dead_letter_id DESC
         LIMIT $4",
    )
    .bind(params.resolved)
    .bind(params.task_id)
    .bind(params.before_id)
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let mut items = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
    Ok(paginate(&mut items, limit, |d| d.dead_letter_id))
}

/// Resolves a dead letter once.
pub(crate) async fn dead_letter_resolve(
    conn: &mut PgConnection,
    params: &DeadLetterResolve,
) -> FailResult<DeadLetterRecord> {
    let row = sqlx::query(
        "UPDATE tasker_dead_letters SET resolved_at = $2, resolution = $3, resolved_by = $4
         WHERE dead_letter_id = $1 AND resolved_at IS NULL
         RETURNING dead_letter_id, task_id, step_id, reason, snapshot, created_at, resolved_at,
                   resolution, resolved_by",
    )
    .bind(params.dead_letter_id)
    .bind(to_ms(params.now))
    .bind(&params.resolution)
    .bind(&params.resolved_by)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = row {
        return record(&row);
    }
    let exists: Option<i64> = sqlx::query_scalar(
        "SELECT dead_letter_id FROM tasker_dead_letters WHERE dead_letter_id = $1",
    )
    .bind(params.dead_letter_id)
    .fetch_optional(&mut *conn)
    .await?;
    Err(match exists {
        Some(_) => StoreError::Conflict {
            refused: vec![Refusal {
                target: ChangeTarget::DeadLetter(params.dead_letter_id),
                reason: RefusalReason::AlreadyResolved,
            }],
        },
        None => StoreError::NotFound {
            what: "dead letter",
            id: params.dead_letter_id.to_string(),
        },
    }
    .into())
}
