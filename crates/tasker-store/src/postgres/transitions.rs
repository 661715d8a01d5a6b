//! Conditional transitions (compare-and-set on state and in-flight batch), applied in bulk, and
//! transition history.
//!
//! Rows are locked first (`FOR NO KEY UPDATE`, in id order so concurrent writers cannot deadlock)
//! and read afterwards in a separate statement: under READ COMMITTED each statement takes a new
//! snapshot, so the read sees everything committed by whoever held the locks before us.

use std::collections::{BTreeSet, HashMap};

use sqlx::PgConnection;
use uuid::Uuid;

use super::{batches, ledger, rows, tasks};
use crate::error::FailResult;
use crate::params::{TransitionsApply, TransitionsOf};
use crate::plan::{
    BatchSnapshot, ChangePlan, Snapshots, StepSnapshot, TaskSnapshot, TouchedIds, TransitionRow,
    plan_changes, task_state_is_final,
};
use crate::records::{TransitionRecord, TransitionsApplied};
use crate::time::to_ms;

/// Locks and loads the steps, with their last transition's sort key. With `with_children`, their
/// children are locked too (in the same id-ordered sweep), because completing a step updates its
/// children's count of unmet parents.
pub(crate) async fn load_steps(
    conn: &mut PgConnection,
    step_ids: &BTreeSet<i64>,
    with_children: bool,
) -> FailResult<HashMap<i64, StepSnapshot>> {
    if step_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<i64> = step_ids.iter().copied().collect();
    let lock = if with_children {
        "SELECT step_id FROM tasker_workflow_steps
         WHERE step_id IN (SELECT unnest($1::int8[])
                           UNION
                           SELECT to_step_id FROM tasker_step_edges WHERE from_step_id = ANY($1))
         ORDER BY step_id FOR NO KEY UPDATE"
    } else {
        "SELECT step_id FROM tasker_workflow_steps WHERE step_id = ANY($1)
         ORDER BY step_id FOR NO KEY UPDATE"
    };
    sqlx::query(lock).bind(&ids).execute(&mut *conn).await?;
    let rows = sqlx::query(
        "SELECT s.step_id, s.task_id, s.state, b.batch_uuid, s.attempts, s.unmet_parents,
                coalesce((SELECT max(x.sort_key) FROM tasker_step_transitions x
                          WHERE x.step_id = s.step_id), 0) AS last_sort_key
         FROM tasker_workflow_steps s
         LEFT JOIN tasker_step_execution_batches b ON b.batch_id = s.in_flight_batch_id
         WHERE s.step_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in &rows {
        let step = StepSnapshot {
            step_id: rows::column(row, "step_id")?,
            task_id: rows::column(row, "task_id")?,
            state: rows::state(row, "state")?,
            in_flight: rows::uuid_opt(row, "batch_uuid")?,
            attempts: rows::column(row, "attempts")?,
            unmet_parents: rows::column(row, "unmet_parents")?,
            last_sort_key: rows::column(row, "last_sort_key")?,
        };
        out.insert(step.step_id, step);
    }
    Ok(out)
}

/// Locks and loads the tasks, with claims and their last transition's sort key.
pub(crate) async fn load_tasks(
    conn: &mut PgConnection,
    task_ids: &BTreeSet<i64>,
) -> FailResult<HashMap<i64, TaskSnapshot>> {
    if task_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<i64> = task_ids.iter().copied().collect();
    sqlx::query(
        "SELECT task_id FROM tasker_tasks WHERE task_id = ANY($1)
         ORDER BY task_id FOR NO KEY UPDATE",
    )
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    let rows = sqlx::query(
        "SELECT t.task_id, t.state, t.claimed_by, t.claim_expires_at,
                coalesce((SELECT max(x.sort_key) FROM tasker_task_transitions x
                          WHERE x.task_id = t.task_id), 0) AS last_sort_key
         FROM tasker_tasks t
         WHERE t.task_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in &rows {
        let task = TaskSnapshot {
            task_id: rows::column(row, "task_id")?,
            state: rows::state(row, "state")?,
            claimed_by: rows::column(row, "claimed_by")?,
            claim_expires_at: rows::column(row, "claim_expires_at")?,
            last_sort_key: rows::column(row, "last_sort_key")?,
        };
        out.insert(task.task_id, task);
    }
    Ok(out)
}

async fn load_batches(
    conn: &mut PgConnection,
    batch_uuids: &BTreeSet<Uuid>,
) -> FailResult<HashMap<Uuid, BatchSnapshot>> {
    if batch_uuids.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<Uuid> = batch_uuids.iter().copied().collect();
    sqlx::query(
        "SELECT batch_id FROM tasker_step_execution_batches WHERE batch_uuid = ANY($1)
         ORDER BY batch_id FOR NO KEY UPDATE",
    )
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    let rows = sqlx::query(
        "SELECT b.batch_id, b.batch_uuid, b.state,
                coalesce((SELECT max(x.sort_key) FROM tasker_step_execution_batch_transitions x
                          WHERE x.batch_id = b.batch_id), 0) AS last_sort_key
         FROM tasker_step_execution_batches b
         WHERE b.batch_uuid = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in &rows {
        let batch = BatchSnapshot {
            batch_id: rows::column(row, "batch_id")?,
            batch_uuid: rows::uuid(row, "batch_uuid")?,
            state: rows::state(row, "state")?,
            last_sort_key: rows::column(row, "last_sort_key")?,
        };
        out.insert(batch.batch_uuid, batch);
    }
    Ok(out)
}

/// Evaluates and applies change sets and appends the ledger, in the caller's transaction.
pub(crate) async fn transitions_apply(
    conn: &mut PgConnection,
    params: &TransitionsApply,
) -> FailResult<TransitionsApplied> {
    let now = to_ms(params.now);
    let mut created = Vec::with_capacity(params.tasks.len());
    for task in &params.tasks {
        created.push(tasks::task_create(conn, task).await?);
    }
    let ids = TouchedIds::of(&params.changes);
    let steps = load_steps(conn, &ids.step_ids, true).await?;
    let tasks = load_tasks(conn, &ids.tasks_of(&steps)).await?;
    let batches = load_batches(conn, &ids.batch_uuids).await?;

    let mut plan = plan_changes(
        Snapshots {
            steps,
            tasks,
            batches,
        },
        &params.changes,
        params.claimant.as_deref(),
        now,
    );
    if let Some(conflict) = plan.all_or_nothing_conflict(params.all_or_nothing) {
        return Err(conflict.into());
    }

    let ledger = ledger::append(conn, &params.ledger, now, &plan.ledger_errors).await?;
    write_plan(conn, &plan, now).await?;
    let batches = batches::batches_record(conn, &params.batches).await?;
    Ok(TransitionsApplied {
        ledger,
        applied: plan.applied,
        refused: plan.refused,
        batches,
        tasks: created,
    })
}

async fn write_plan(conn: &mut PgConnection, plan: &ChangePlan, now: i64) -> FailResult<()> {
    if !plan.step_updates.is_empty() {
        let u = &plan.step_updates;
        let ids: Vec<i64> = u.iter().map(|x| x.step_id).collect();
        let states: Vec<&str> = u.iter().map(|x| x.state.as_str()).collect();
        let set_results: Vec<bool> = u.iter().map(|x| x.results.is_some()).collect();
        let results: Vec<Option<&serde_json::Value>> =
            u.iter().map(|x| x.results.as_ref()).collect();
        let set_errors: Vec<bool> = u.iter().map(|x| x.error.is_some()).collect();
        let errors: Vec<Option<&serde_json::Value>> = u.iter().map(|x| x.error.as_ref()).collect();
        let backoffs: Vec<Option<i64>> = u.iter().map(|x| x.backoff_until).collect();
        let clears: Vec<bool> = u.iter().map(|x| x.clear_in_flight).collect();
        let deltas: Vec<i32> = u.iter().map(|x| x.attempts_delta).collect();
        sqlx::query(
            "UPDATE tasker_workflow_steps AS s SET
                 state = u.state,
                 results = CASE WHEN u.set_results THEN u.results ELSE s.results END,
                 last_error = CASE WHEN u.set_error THEN u.error ELSE s.last_error END,
                 backoff_until = u.backoff_until,
                 attempts = greatest(0, s.attempts + u.attempts_delta),
                 in_flight_batch_id = CASE WHEN u.clear THEN NULL ELSE s.in_flight_batch_id END,
                 in_flight_deadline_at = CASE WHEN u.clear THEN NULL
                                              ELSE s.in_flight_deadline_at END,
                 updated_at = $1
             FROM UNNEST($2::int8[], $3::text[], $4::bool[], $5::jsonb[], $6::bool[],
                         $7::jsonb[], $8::int8[], $9::bool[], $10::int4[])
                  AS u(step_id, state, set_results, results, set_error, error, backoff_until,
                       clear, attempts_delta)
             WHERE s.step_id = u.step_id",
        )
        .bind(now)
        .bind(&ids)
        .bind(&states)
        .bind(&set_results)
        .bind(&results)
        .bind(&set_errors)
        .bind(&errors)
        .bind(&backoffs)
        .bind(&clears)
        .bind(&deltas)
        .execute(&mut *conn)
        .await?;
        insert_transitions(conn, TransitionTable::Step, &plan.step_transitions, now).await?;
    }
    if !plan.newly_satisfied.is_empty() {
        sqlx::query(
            "UPDATE tasker_workflow_steps AS c SET unmet_parents = c.unmet_parents - d.n
             FROM (SELECT to_step_id, count(*) AS n FROM tasker_step_edges
                   WHERE from_step_id = ANY($1)
                   GROUP BY to_step_id) AS d
             WHERE c.step_id = d.to_step_id",
        )
        .bind(&plan.newly_satisfied)
        .execute(&mut *conn)
        .await?;
    }
    if !plan.task_updates.is_empty() {
        let ids: Vec<i64> = plan.task_updates.iter().map(|u| u.task_id).collect();
        let states: Vec<&str> = plan.task_updates.iter().map(|u| u.state.as_str()).collect();
        let finals: Vec<bool> = plan
            .task_updates
            .iter()
            .map(|u| task_state_is_final(u.state))
            .collect();
        sqlx::query(
            "UPDATE tasker_tasks AS t SET
                 state = u.state,
                 updated_at = $1,
                 completed_at = CASE WHEN u.final THEN $1 ELSE NULL END
             FROM UNNEST($2::int8[], $3::text[], $4::bool[]) AS u(task_id, state, final)
             WHERE t.task_id = u.task_id",
        )
        .bind(now)
        .bind(&ids)
        .bind(&states)
        .bind(&finals)
        .execute(&mut *conn)
        .await?;
        insert_transitions(conn, TransitionTable::Task, &plan.task_transitions, now).await?;
    }
    if !plan.batch_updates.is_empty() {
        let ids: Vec<i64> = plan.batch_updates.iter().map(|u| u.batch_id).collect();
        let states: Vec<&str> = plan
            .batch_updates
            .iter()
            .map(|u| u.state.as_str())
            .collect();
        sqlx::query(
            "UPDATE tasker_step_execution_batches AS b SET state = u.state, updated_at = $1
             FROM UNNEST($2::int8[], $3::text[]) AS u(batch_id, state)
             WHERE b.batch_id = u.batch_id",
        )
        .bind(now)
        .bind(&ids)
        .bind(&states)
        .execute(&mut *conn)
        .await?;
        insert_transitions(conn, TransitionTable::Batch, &plan.batch_transitions, now).await?;
    }
    Ok(())
}

/// Which transition table.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TransitionTable {
    Step,
    Task,
    Batch,
}

/// Clears `most_recent` on the entities' previous rows and inserts the new rows.
pub(crate) async fn insert_transitions(
    conn: &mut PgConnection,
    table: TransitionTable,
    rows: &[TransitionRow],
    now: i64,
) -> FailResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let (clear, insert) = match table {
        TransitionTable::Step => (
            "UPDATE tasker_step_transitions SET most_recent = false
             WHERE most_recent AND step_id = ANY($1)",
            "INSERT INTO tasker_step_transitions
                 (step_id, from_state, to_state, event, metadata, sort_key, most_recent, created_at)
             SELECT u.*, $8 FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[],
                                        $5::jsonb[], $6::int4[], $7::bool[]) AS u",
        ),
        TransitionTable::Task => (
            "UPDATE tasker_task_transitions SET most_recent = false
             WHERE most_recent AND task_id = ANY($1)",
            "INSERT INTO tasker_task_transitions
                 (task_id, from_state, to_state, event, metadata, sort_key, most_recent, created_at)
             SELECT u.*, $8 FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[],
                                        $5::jsonb[], $6::int4[], $7::bool[]) AS u",
        ),
        TransitionTable::Batch => (
            "UPDATE tasker_step_execution_batch_transitions SET most_recent = false
             WHERE most_recent AND batch_id = ANY($1)",
            "INSERT INTO tasker_step_execution_batch_transitions
                 (batch_id, from_state, to_state, event, metadata, sort_key, most_recent, created_at)
             SELECT u.*, $8 FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[],
                                        $5::jsonb[], $6::int4[], $7::bool[]) AS u",
        ),
    };
    let ids: Vec<i64> = rows.iter().map(|r| r.entity_id).collect();
    let unique: Vec<i64> = ids
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    sqlx::query(clear).bind(&unique).execute(&mut *conn).await?;
    let from: Vec<Option<&str>> = rows.iter().map(|r| r.from_state).collect();
    let to: Vec<&str> = rows.iter().map(|r| r.to_state).collect();
    let events: Vec<&str> = rows.iter().map(|r| r.event.as_str()).collect();
    let metadata: Vec<Option<&serde_json::Value>> =
        rows.iter().map(|r| r.metadata.as_ref()).collect();
    let sort_keys: Vec<i32> = rows.iter().map(|r| r.sort_key).collect();
    let most_recent: Vec<bool> = rows.iter().map(|r| r.most_recent).collect();
    sqlx::query(insert)
        .bind(&ids)
        .bind(&from)
        .bind(&to)
        .bind(&events)
        .bind(&metadata)
        .bind(&sort_keys)
        .bind(&most_recent)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A history, in order.
pub(crate) async fn transitions_list(
    conn: &mut PgConnection,
    of: TransitionsOf,
) -> FailResult<Vec<TransitionRecord>> {
    let rows =
        match of {
            TransitionsOf::Task(id) => sqlx::query(
                "SELECT from_state, to_state, event, metadata, sort_key, most_recent, created_at
                 FROM tasker_task_transitions WHERE task_id = $1 ORDER BY sort_key",
            )
            .bind(id)
            .fetch_all(&mut *conn)
            .await?,
            TransitionsOf::Step(id) => sqlx::query(
                "SELECT from_state, to_state, event, metadata, sort_key, most_recent, created_at
                 FROM tasker_step_transitions WHERE step_id = $1 ORDER BY sort_key",
            )
            .bind(id)
            .fetch_all(&mut *conn)
            .await?,
            TransitionsOf::Batch(uuid) => sqlx::query(
                "SELECT x.from_state, x.to_state, x.event, x.metadata, x.sort_key, x.most_recent,
                        x.created_at
                 FROM tasker_step_execution_batch_transitions x
                 JOIN tasker_step_execution_batches b ON b.batch_id = x.batch_id
                 WHERE b.batch_uuid = $1 ORDER BY x.sort_key",
            )
            .bind(uuid)
            .fetch_all(&mut *conn)
            .await?,
        };
    Ok(rows
        .iter()
        .map(rows::transition)
        .collect::<Result<Vec<_>, _>>()?)
}
