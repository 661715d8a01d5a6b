//! Step-execution batches: recording a dispatch, reading one back for reconciliation, finding
//! orphans.

use std::collections::{BTreeSet, HashMap};

use rusqlite::{Connection, params};
use serde_json::{Value, json};
use uuid::Uuid;

use super::errors::{Fail, FailResult, is_unique_violation};
use super::rows::{self, execute, json_text, query_all, query_opt};
use super::transitions::{TransitionTable, insert_transitions, load_steps, load_tasks};
use crate::error::StoreError;
use crate::params::{BatchRecord, BatchesOrphaned, page_size};
use crate::plan::{BatchesPlan, Snapshots, TransitionRow, plan_batches};
use crate::records::{BatchDetail, BatchRecorded, BatchStepDetail, OrphanedBatch};
use crate::store::{LEDGER_BATCH_COMPLETION, LEDGER_PARTIAL_RESULT};
use crate::time::{from_ms, from_ms_opt, to_ms};

/// Records several dispatches, in order, in the caller's transaction, with a fixed number of
/// statements whatever their number: the rows are loaded once, planned by [`plan_batches`], and
/// each kind of row is written by one multi-row (`json_each`) statement.
pub(crate) fn batches_record(
    conn: &Connection,
    params: &[BatchRecord],
) -> FailResult<Vec<BatchRecorded>> {
    if params.is_empty() {
        return Ok(Vec::new());
    }
    let step_ids: BTreeSet<i64> = params
        .iter()
        .flat_map(|b| b.steps.iter().map(|s| s.step_id))
        .collect();
    let steps = load_steps(conn, &step_ids)?;
    let task_ids: BTreeSet<i64> = steps.values().map(|s| s.task_id).collect();
    let tasks = load_tasks(conn, &task_ids)?;
    let plan = plan_batches(
        Snapshots {
            steps,
            tasks,
            batches: HashMap::new(),
        },
        params,
    )?;
    write_batches(conn, &plan)?;
    Ok(plan.outcomes)
}

/// Records a dispatch in the caller's transaction.
pub(crate) fn batch_record(conn: &Connection, params: &BatchRecord) -> FailResult<BatchRecorded> {
    let mut recorded = batches_record(conn, std::slice::from_ref(params))?;
    recorded.pop().ok_or_else(|| {
        StoreError::Corrupt {
            reason: "recording one batch produced no outcome".to_owned(),
        }
        .into()
    })
}

/// Writes the batches, their join rows, the steps' moves to `in_progress`, the tasks started and
/// every transition of a [`BatchesPlan`].
fn write_batches(conn: &Connection, plan: &BatchesPlan) -> FailResult<()> {
    let Some(first) = plan.batches.first() else {
        return Ok(());
    };
    let now = first.now_ms;
    let batch_rows: Vec<Value> = plan
        .batches
        .iter()
        .map(|b| {
            json!({
                "batch_uuid": b.batch_uuid.hyphenated().to_string(),
                "worker_id": b.worker_id,
                "handler_class": b.handler_class,
                "orchestrator_id": b.orchestrator_id,
                "batch_size": b.batch_size,
                "timeout_ms": b.timeout_ms,
                "state": b.state.as_str(),
                "metadata": b.metadata,
                "at": b.now_ms,
            })
        })
        .collect();
    let inserted: Vec<(String, i64)> = query_all(
        conn,
        "INSERT INTO tasker_step_execution_batches
             (batch_uuid, worker_id, handler_class, orchestrator_id, batch_size, timeout_ms, state,
              metadata, created_at, updated_at)
         SELECT j.value ->> 'batch_uuid', j.value ->> 'worker_id', j.value ->> 'handler_class',
                j.value ->> 'orchestrator_id', j.value ->> 'batch_size', j.value ->> 'timeout_ms',
                j.value ->> 'state',
                CASE WHEN j.value ->> 'metadata' IS NULL THEN NULL ELSE j.value -> 'metadata' END,
                j.value ->> 'at', j.value ->> 'at'
         FROM json_each(?1) AS j
         WHERE true
         RETURNING batch_uuid, batch_id",
        params![json_text(&batch_rows)?],
        |row| {
            Ok((
                rows::column(row, "batch_uuid")?,
                rows::column(row, "batch_id")?,
            ))
        },
    )
    .map_err(|fail| match fail {
        Fail::Db(e) if is_unique_violation(&e) => StoreError::InvalidInput {
            reason: format!(
                "a batch among {} was already recorded",
                plan.batches
                    .iter()
                    .map(|b| b.batch_uuid.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
        .into(),
        other => other,
    })?;
    let ids: HashMap<String, i64> = inserted.into_iter().collect();

    let members: Vec<Value> = plan
        .members
        .iter()
        .map(|m| {
            json!({
                "batch_uuid": m.batch_uuid.hyphenated().to_string(),
                "step_id": m.step_id,
                "seq": m.sequence_order,
                "attempt": m.attempt,
                "at": m.now_ms,
            })
        })
        .collect();
    let members = json_text(&members)?;
    execute(
        conn,
        "INSERT INTO tasker_step_execution_batch_steps
             (batch_id, step_id, sequence_order, attempt, expected_handler_class, created_at)
         SELECT b.batch_id, s.step_id, j.value ->> 'seq', j.value ->> 'attempt', s.handler_class,
                j.value ->> 'at'
         FROM json_each(?1) AS j
         JOIN tasker_step_execution_batches b ON b.batch_uuid = j.value ->> 'batch_uuid'
         JOIN tasker_workflow_steps s ON s.step_id = j.value ->> 'step_id'",
        params![members],
    )?;
    execute(
        conn,
        "UPDATE tasker_workflow_steps AS s SET
             state = 'in_progress',
             attempts = j.value ->> 'attempt',
             last_attempted_at = j.value ->> 'at',
             backoff_until = NULL,
             in_flight_batch_id = b.batch_id,
             in_flight_deadline_at = (j.value ->> 'at') + coalesce(s.timeout_ms, b.timeout_ms),
             updated_at = j.value ->> 'at'
         FROM json_each(?1) AS j
         JOIN tasker_step_execution_batches b ON b.batch_uuid = j.value ->> 'batch_uuid'
         WHERE s.step_id = j.value ->> 'step_id'",
        params![members],
    )?;
    insert_transitions(conn, TransitionTable::Step, &plan.step_transitions, now)?;

    if !plan.task_transitions.is_empty() {
        let started: Vec<i64> = plan.task_transitions.iter().map(|t| t.entity_id).collect();
        execute(
            conn,
            "UPDATE tasker_tasks SET state = 'in_progress', updated_at = ?2
             WHERE task_id IN (SELECT value FROM json_each(?1))",
            params![json_text(&started)?, now],
        )?;
        insert_transitions(conn, TransitionTable::Task, &plan.task_transitions, now)?;
    }

    let recorded: Vec<TransitionRow> = plan
        .batches
        .iter()
        .filter_map(|b| {
            Some(TransitionRow {
                entity_id: *ids.get(&b.batch_uuid.hyphenated().to_string())?,
                from_state: None,
                to_state: b.state.as_str(),
                event: match b.state {
                    // Recorded as handed to the transport: the `publish` of the state machine.
                    tasker_core::state::BatchState::Published => {
                        tasker_core::state::BatchEvent::Publish.as_str().to_owned()
                    }
                    // A batch's first row, as for tasks and steps.
                    _ => "created".to_owned(),
                },
                metadata: b.worker_id.as_ref().map(|w| json!({ "worker_id": w })),
                sort_key: 1,
                most_recent: true,
            })
        })
        .collect();
    insert_transitions(conn, TransitionTable::Batch, &recorded, now)?;
    Ok(())
}

/// One batch with its steps and ledger facts, in the caller's snapshot.
pub(crate) fn batch_get(conn: &Connection, batch_uuid: Uuid) -> FailResult<BatchDetail> {
    let uuid_text = batch_uuid.hyphenated().to_string();
    let (batch_id, mut detail) = query_opt(
        conn,
        "SELECT b.batch_id, b.batch_uuid, b.worker_id, b.handler_class, b.batch_size, b.timeout_ms,
                b.state, b.metadata, b.created_at,
                EXISTS (SELECT 1 FROM tasker_step_execution_batch_received_results r
                        WHERE r.batch_uuid = b.batch_uuid AND r.message_kind = ?2)
                    AS completion_received
         FROM tasker_step_execution_batches b WHERE b.batch_uuid = ?1",
        params![uuid_text, LEDGER_BATCH_COMPLETION],
        |row| {
            Ok((
                rows::column::<i64>(row, "batch_id")?,
                BatchDetail {
                    batch_uuid: rows::uuid(row, "batch_uuid")?,
                    worker_id: rows::column(row, "worker_id")?,
                    handler_class: rows::column(row, "handler_class")?,
                    batch_size: rows::column(row, "batch_size")?,
                    timeout_ms: rows::column(row, "timeout_ms")?,
                    state: rows::state(row, "state")?,
                    metadata: rows::json_opt(row, "metadata")?,
                    created_at: from_ms(rows::column(row, "created_at")?)?,
                    completion_received: rows::column(row, "completion_received")?,
                    steps: Vec::new(),
                },
            ))
        },
    )?
    .ok_or_else(|| StoreError::NotFound {
        what: "batch",
        id: batch_uuid.to_string(),
    })?;
    detail.steps = query_all(
        conn,
        "SELECT bs.step_id, bs.sequence_order, bs.attempt, s.state AS step_state,
                coalesce(s.in_flight_batch_id = bs.batch_id, 0) AS in_flight_here,
                r.status AS reported_status
         FROM tasker_step_execution_batch_steps bs
         JOIN tasker_workflow_steps s ON s.step_id = bs.step_id
         LEFT JOIN tasker_step_execution_batch_received_results r
             ON r.batch_uuid = ?2 AND r.step_id = bs.step_id AND r.message_kind = ?3
         WHERE bs.batch_id = ?1
         ORDER BY bs.sequence_order",
        params![batch_id, uuid_text, LEDGER_PARTIAL_RESULT],
        |r| {
            Ok(BatchStepDetail {
                step_id: rows::column(r, "step_id")?,
                sequence_order: rows::column(r, "sequence_order")?,
                attempt: rows::column(r, "attempt")?,
                step_state: rows::state(r, "step_state")?,
                in_flight_here: rows::column(r, "in_flight_here")?,
                reported_status: rows::column(r, "reported_status")?,
            })
        },
    )?;
    Ok(detail)
}

/// Unfinished batches whose worker is gone, with their in-flight steps.
pub(crate) fn batches_orphaned(
    conn: &Connection,
    params: &BatchesOrphaned,
) -> FailResult<Vec<OrphanedBatch>> {
    let limit = page_size(params.limit, 1000, 10_000);
    let found = query_all(
        conn,
        "SELECT b.batch_id, b.batch_uuid, b.state, b.worker_id, w.last_heartbeat_at
         FROM tasker_step_execution_batches b
         LEFT JOIN tasker_workers w ON w.worker_id = b.worker_id
         WHERE b.state IN ('created', 'published', 'executing')
           AND ((b.worker_id IS NULL AND b.created_at < ?1)
                OR (b.worker_id IS NOT NULL
                    AND (w.worker_id IS NULL OR w.last_heartbeat_at < ?1)))
         ORDER BY b.batch_id
         LIMIT ?2",
        params![to_ms(params.heartbeat_before), limit],
        |row| {
            Ok((
                rows::column::<i64>(row, "batch_id")?,
                OrphanedBatch {
                    batch_uuid: rows::uuid(row, "batch_uuid")?,
                    state: rows::state(row, "state")?,
                    worker_id: rows::column(row, "worker_id")?,
                    last_heartbeat_at: from_ms_opt(rows::column(row, "last_heartbeat_at")?)?,
                    in_flight_step_ids: Vec::new(),
                },
            ))
        },
    )?;
    let mut batches = Vec::with_capacity(found.len());
    let mut index = HashMap::new();
    for (batch_id, batch) in found {
        index.insert(batch_id, batches.len());
        batches.push(batch);
    }
    if !batches.is_empty() {
        let ids: Vec<i64> = index.keys().copied().collect();
        let in_flight: Vec<(i64, i64)> = query_all(
            conn,
            "SELECT in_flight_batch_id, step_id FROM tasker_workflow_steps
             WHERE in_flight_batch_id IN (SELECT value FROM json_each(?1))
             ORDER BY step_id",
            params![json_text(&ids)?],
            |row| {
                Ok((
                    rows::column(row, "in_flight_batch_id")?,
                    rows::column(row, "step_id")?,
                ))
            },
        )?;
        for (batch_id, step_id) in in_flight {
            if let Some(&i) = index.get(&batch_id) {
                batches[i].in_flight_step_ids.push(step_id);
            }
        }
    }
    Ok(batches)
}
