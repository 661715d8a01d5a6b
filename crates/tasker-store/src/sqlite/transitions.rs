//! Conditional transitions (compare-and-set on state and in-flight batch), applied in bulk, and
//! transition history.

use std::collections::{BTreeSet, HashMap};

use rusqlite::{Connection, params};
use serde_json::{Value, json};
use uuid::Uuid;

use super::errors::FailResult;
use super::rows::{self, execute, json_text, query_all};
use super::{batches, ledger, tasks};
use crate::params::{TransitionsApply, TransitionsOf};
use crate::plan::{
    BatchSnapshot, ChangePlan, Snapshots, StepSnapshot, TaskSnapshot, TouchedIds, TransitionRow,
    plan_changes, task_state_is_final,
};
use crate::records::{TransitionRecord, TransitionsApplied};
use crate::time::to_ms;

/// Loads the steps, with their last transition's sort key.
pub(crate) fn load_steps(
    conn: &Connection,
    step_ids: &BTreeSet<i64>,
) -> FailResult<HashMap<i64, StepSnapshot>> {
    if step_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let steps = query_all(
        conn,
        "SELECT s.step_id, s.task_id, s.state, b.batch_uuid, s.attempts, s.unmet_parents,
                coalesce((SELECT max(x.sort_key) FROM tasker_step_transitions x
                          WHERE x.step_id = s.step_id), 0) AS last_sort_key
         FROM tasker_workflow_steps s
         LEFT JOIN tasker_step_execution_batches b ON b.batch_id = s.in_flight_batch_id
         WHERE s.step_id IN (SELECT value FROM json_each(?1))",
        params![json_text(step_ids)?],
        |row| {
            Ok(StepSnapshot {
                step_id: rows::column(row, "step_id")?,
                task_id: rows::column(row, "task_id")?,
                state: rows::state(row, "state")?,
                in_flight: rows::uuid_opt(row, "batch_uuid")?,
                attempts: rows::column(row, "attempts")?,
                unmet_parents: rows::column(row, "unmet_parents")?,
                last_sort_key: rows::column(row, "last_sort_key")?,
            })
        },
    )?;
    Ok(steps.into_iter().map(|s| (s.step_id, s)).collect())
}

/// Loads the tasks, with claims and their last transition's sort key.
pub(crate) fn load_tasks(
    conn: &Connection,
    task_ids: &BTreeSet<i64>,
) -> FailResult<HashMap<i64, TaskSnapshot>> {
    if task_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let tasks = query_all(
        conn,
        "SELECT t.task_id, t.state, t.claimed_by, t.claim_expires_at,
                coalesce((SELECT max(x.sort_key) FROM tasker_task_transitions x
                          WHERE x.task_id = t.task_id), 0) AS last_sort_key
         FROM tasker_tasks t
         WHERE t.task_id IN (SELECT value FROM json_each(?1))",
        params![json_text(task_ids)?],
        |row| {
            Ok(TaskSnapshot {
                task_id: rows::column(row, "task_id")?,
                state: rows::state(row, "state")?,
                claimed_by: rows::column(row, "claimed_by")?,
                claim_expires_at: rows::column(row, "claim_expires_at")?,
                last_sort_key: rows::column(row, "last_sort_key")?,
            })
        },
    )?;
    Ok(tasks.into_iter().map(|t| (t.task_id, t)).collect())
}

fn load_batches(
    conn: &Connection,
    batch_uuids: &BTreeSet<Uuid>,
) -> FailResult<HashMap<Uuid, BatchSnapshot>> {
    if batch_uuids.is_empty() {
        return Ok(HashMap::new());
    }
    // Hyphenated text, as stored (uuid's serde form).
    let batches = query_all(
        conn,
        "SELECT b.batch_id, b.batch_uuid, b.state,
                coalesce((SELECT max(x.sort_key) FROM tasker_step_execution_batch_transitions x
                          WHERE x.batch_id = b.batch_id), 0) AS last_sort_key
         FROM tasker_step_execution_batches b
         WHERE b.batch_uuid IN (SELECT value FROM json_each(?1))",
        params![json_text(batch_uuids)?],
        |row| {
            Ok(BatchSnapshot {
                batch_id: rows::column(row, "batch_id")?,
                batch_uuid: rows::uuid(row, "batch_uuid")?,
                state: rows::state(row, "state")?,
                last_sort_key: rows::column(row, "last_sort_key")?,
            })
        },
    )?;
    Ok(batches.into_iter().map(|b| (b.batch_uuid, b)).collect())
}

/// Evaluates and applies change sets and appends the ledger, in the caller's transaction.
pub(crate) fn transitions_apply(
    conn: &Connection,
    params: &TransitionsApply,
) -> FailResult<TransitionsApplied> {
    let now = to_ms(params.now);
    let mut created = Vec::with_capacity(params.tasks.len());
    for task in &params.tasks {
        created.push(tasks::task_create(conn, task)?);
    }
    let ids = TouchedIds::of(&params.changes);
    let steps = load_steps(conn, &ids.step_ids)?;
    let tasks = load_tasks(conn, &ids.tasks_of(&steps))?;
    let batches = load_batches(conn, &ids.batch_uuids)?;

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

    let ledger = ledger::append(conn, &params.ledger, now, &plan.ledger_errors)?;
    write_plan(conn, &plan, now)?;
    let batches = batches::batches_record(conn, &params.batches)?;
    Ok(TransitionsApplied {
        ledger,
        applied: plan.applied,
        refused: plan.refused,
        batches,
        tasks: created,
    })
}

fn write_plan(conn: &Connection, plan: &ChangePlan, now: i64) -> FailResult<()> {
    if !plan.step_updates.is_empty() {
        let updates: Vec<Value> = plan
            .step_updates
            .iter()
            .map(|u| {
                let mut row = serde_json::Map::new();
                row.insert("step_id".into(), u.step_id.into());
                row.insert("state".into(), u.state.as_str().into());
                if let Some(results) = &u.results {
                    row.insert("results".into(), results.clone());
                }
                if let Some(error) = &u.error {
                    row.insert("error".into(), error.clone());
                }
                if let Some(t) = u.backoff_until {
                    row.insert("backoff_until".into(), t.into());
                }
                row.insert("clear".into(), u.clear_in_flight.into());
                row.insert("attempts_delta".into(), u.attempts_delta.into());
                Value::Object(row)
            })
            .collect();
        execute(
            conn,
            "UPDATE tasker_workflow_steps AS s SET
                 state = u.value ->> 'state',
                 results = coalesce(u.value -> 'results', s.results),
                 last_error = coalesce(u.value -> 'error', s.last_error),
                 backoff_until = u.value ->> 'backoff_until',
                 attempts = max(0, s.attempts + (u.value ->> 'attempts_delta')),
                 in_flight_batch_id = CASE WHEN u.value ->> 'clear' THEN NULL
                                           ELSE s.in_flight_batch_id END,
                 in_flight_deadline_at = CASE WHEN u.value ->> 'clear' THEN NULL
                                              ELSE s.in_flight_deadline_at END,
                 updated_at = ?2
             FROM json_each(?1) AS u
             WHERE s.step_id = u.value ->> 'step_id'",
            params![json_text(&updates)?, now],
        )?;
        insert_transitions(conn, TransitionTable::Step, &plan.step_transitions, now)?;
    }
    if !plan.newly_satisfied.is_empty() {
        execute(
            conn,
            "UPDATE tasker_workflow_steps AS c SET unmet_parents = c.unmet_parents - d.n
             FROM (SELECT to_step_id, count(*) AS n FROM tasker_step_edges
                   WHERE from_step_id IN (SELECT value FROM json_each(?1))
                   GROUP BY to_step_id) AS d
             WHERE c.step_id = d.to_step_id",
            params![json_text(&plan.newly_satisfied)?],
        )?;
    }
    if !plan.task_updates.is_empty() {
        let updates: Vec<Value> = plan
            .task_updates
            .iter()
            .map(|u| {
                json!({
                    "task_id": u.task_id,
                    "state": u.state.as_str(),
                    "final": task_state_is_final(u.state),
                })
            })
            .collect();
        execute(
            conn,
            "UPDATE tasker_tasks AS t SET
                 state = u.value ->> 'state',
                 updated_at = ?2,
                 completed_at = CASE WHEN u.value ->> 'final' THEN ?2 ELSE NULL END
             FROM json_each(?1) AS u
             WHERE t.task_id = u.value ->> 'task_id'",
            params![json_text(&updates)?, now],
        )?;
        insert_transitions(conn, TransitionTable::Task, &plan.task_transitions, now)?;
    }
    if !plan.batch_updates.is_empty() {
        let updates: Vec<Value> = plan
            .batch_updates
            .iter()
            .map(|u| json!({ "batch_id": u.batch_id, "state": u.state.as_str() }))
            .collect();
        execute(
            conn,
            "UPDATE tasker_step_execution_batches AS b SET
                 state = u.value ->> 'state',
                 updated_at = ?2
             FROM json_each(?1) AS u
             WHERE b.batch_id = u.value ->> 'batch_id'",
            params![json_text(&updates)?, now],
        )?;
        insert_transitions(conn, TransitionTable::Batch, &plan.batch_transitions, now)?;
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
pub(crate) fn insert_transitions(
    conn: &Connection,
    table: TransitionTable,
    rows: &[TransitionRow],
    now: i64,
) -> FailResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let (clear, insert) = match table {
        TransitionTable::Step => (
            "UPDATE tasker_step_transitions SET most_recent = 0
             WHERE most_recent = 1 AND step_id IN (SELECT value FROM json_each(?1))",
            "INSERT INTO tasker_step_transitions
                 (step_id, from_state, to_state, event, metadata, sort_key, most_recent, created_at)
             SELECT j.value ->> 'id', j.value ->> 'from', j.value ->> 'to', j.value ->> 'event',
                    j.value -> 'metadata', j.value ->> 'sort_key', j.value ->> 'most_recent', ?2
             FROM json_each(?1) AS j",
        ),
        TransitionTable::Task => (
            "UPDATE tasker_task_transitions SET most_recent = 0
             WHERE most_recent = 1 AND task_id IN (SELECT value FROM json_each(?1))",
            "INSERT INTO tasker_task_transitions
                 (task_id, from_state, to_state, event, metadata, sort_key, most_recent, created_at)
             SELECT j.value ->> 'id', j.value ->> 'from', j.value ->> 'to', j.value ->> 'event',
                    j.value -> 'metadata', j.value ->> 'sort_key', j.value ->> 'most_recent', ?2
             FROM json_each(?1) AS j",
        ),
        TransitionTable::Batch => (
            "UPDATE tasker_step_execution_batch_transitions SET most_recent = 0
             WHERE most_recent = 1 AND batch_id IN (SELECT value FROM json_each(?1))",
            "INSERT INTO tasker_step_execution_batch_transitions
                 (batch_id, from_state, to_state, event, metadata, sort_key, most_recent, created_at)
             SELECT j.value ->> 'id', j.value ->> 'from', j.value ->> 'to', j.value ->> 'event',
                    j.value -> 'metadata', j.value ->> 'sort_key', j.value ->> 'most_recent', ?2
             FROM json_each(?1) AS j",
        ),
    };
    let ids: BTreeSet<i64> = rows.iter().map(|r| r.entity_id).collect();
    execute(conn, clear, params![json_text(&ids)?])?;
    let json_rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut row = serde_json::Map::new();
            row.insert("id".into(), r.entity_id.into());
            if let Some(from) = r.from_state {
                row.insert("from".into(), from.into());
            }
            row.insert("to".into(), r.to_state.into());
            row.insert("event".into(), r.event.clone().into());
            if let Some(metadata) = &r.metadata {
                row.insert("metadata".into(), metadata.clone());
            }
            row.insert("sort_key".into(), r.sort_key.into());
            row.insert("most_recent".into(), r.most_recent.into());
            Value::Object(row)
        })
        .collect();
    execute(conn, insert, params![json_text(&json_rows)?, now])?;
    Ok(())
}

/// A history, in order.
pub(crate) fn transitions_list(
    conn: &Connection,
    of: TransitionsOf,
) -> FailResult<Vec<TransitionRecord>> {
    match of {
        TransitionsOf::Task(id) => query_all(
            conn,
            "SELECT from_state, to_state, event, metadata, sort_key, most_recent, created_at
             FROM tasker_task_transitions WHERE task_id = ?1 ORDER BY sort_key",
            params![id],
            rows::transition,
        ),
        TransitionsOf::Step(id) => query_all(
            conn,
            "SELECT from_state, to_state, event, metadata, sort_key, most_recent, created_at
             FROM tasker_step_transitions WHERE step_id = ?1 ORDER BY sort_key",
            params![id],
            rows::transition,
        ),
        TransitionsOf::Batch(uuid) => query_all(
            conn,
            "SELECT x.from_state, x.to_state, x.event, x.metadata, x.sort_key, x.most_recent,
                    x.created_at
             FROM tasker_step_execution_batch_transitions x
             JOIN tasker_step_execution_batches b ON b.batch_id = x.batch_id
             WHERE b.batch_uuid = ?1 ORDER BY x.sort_key",
            params![uuid.hyphenated().to_string()],
            rows::transition,
        ),
    }
}
