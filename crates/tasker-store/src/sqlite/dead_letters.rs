//! Dead letters: steps or tasks that could not be completed automatically.

use rusqlite::{Connection, Row, params};

use super::errors::FailResult;
use super::rows::{self, json_text, query_all, query_opt};
use super::tasks::paginate;
use crate::error::{ChangeTarget, Refusal, RefusalReason, StoreError, StoreResult};
use crate::params::{DeadLetterInsert, DeadLetterResolve, DeadLettersList, page_size};
use crate::records::{DeadLetterRecord, Page};
use crate::time::{from_ms, from_ms_opt, to_ms};

fn record(row: &Row<'_>) -> StoreResult<DeadLetterRecord> {
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
pub(crate) fn dead_letter_insert(
    conn: &Connection,
    params: &DeadLetterInsert,
) -> FailResult<DeadLetterRecord> {
    let found = query_opt(
        conn,
        "INSERT INTO tasker_dead_letters (task_id, step_id, reason, snapshot, created_at)
         SELECT t.task_id, ?2, ?3, ?4, ?5 FROM tasker_tasks t
         WHERE t.task_id = ?1
           AND (?2 IS NULL OR EXISTS (SELECT 1 FROM tasker_workflow_steps s
                                      WHERE s.step_id = ?2 AND s.task_id = t.task_id))
         RETURNING dead_letter_id, task_id, step_id, reason, snapshot, created_at, resolved_at,
                   resolution, resolved_by",
        params![
            params.task_id,
            params.step_id,
            params.reason,
            json_text(&params.snapshot)?,
            to_ms(params.now),
        ],
        record,
    )?;
    match found {
        Some(found) => Ok(found),
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
pub(crate) fn dead_letters_list(
    conn: &Connection,
    params: &DeadLettersList,
) -> FailResult<Page<DeadLetterRecord>> {
    let limit = page_size(params.limit, 100, 1000);
    let mut items = query_all(
        conn,
        "SELECT dead_letter_id, task_id, step_id, reason, snapshot, created_at, resolved_at,
                resolution, resolved_by
         FROM tasker_dead_letters
         WHERE (?1 IS NULL OR (resolved_at IS NOT NULL) = ?1)
           AND (?2 IS NULL OR task_id = ?2)
           AND (?3 IS NULL OR dead_letter_id < ?3)
         ORDER BY dead_letter_id DESC
         LIMIT ?4",
        params![params.resolved, params.task_id, params.before_id, limit + 1],
        record,
    )?;
    Ok(paginate(&mut items, limit, |d| d.dead_letter_id))
}

/// Resolves a dead letter once.
pub(crate) fn dead_letter_resolve(
    conn: &Connection,
    params: &DeadLetterResolve,
) -> FailResult<DeadLetterRecord> {
    let resolved = query_opt(
        conn,
        "UPDATE tasker_dead_letters SET resolved_at = ?2, resolution = ?3, resolved_by = ?4
         WHERE dead_letter_id = ?1 AND resolved_at IS NULL
         RETURNING dead_letter_id, task_id, step_id, reason, snapshot, created_at, resolved_at,
                   resolution, resolved_by",
        params![
            params.dead_letter_id,
            to_ms(params.now),
            params.resolution,
            params.resolved_by,
        ],
        record,
    )?;
    if let Some(resolved) = resolved {
        return Ok(resolved);
    }
    let exists: Option<i64> = query_opt(
        conn,
        "SELECT dead_letter_id FROM tasker_dead_letters WHERE dead_letter_id = ?1",
        params![params.dead_letter_id],
        |row| rows::column(row, "dead_letter_id"),
    )?;
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
