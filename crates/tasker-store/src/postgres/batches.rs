//! Step-execution batches: recording a dispatch, reading one back for reconciliation, finding
//! orphans.

use std::collections::{BTreeSet, HashMap};

use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::rows;
use super::transitions::{TransitionTable, insert_transitions, load_steps, load_tasks};
use crate::error::{FailResult, StoreError};
use crate::params::{BatchRecord, BatchesOrphaned, page_size};
use crate::plan::{BatchesPlan, Snapshots, TransitionRow, plan_batches};
use crate::records::{BatchDetail, BatchRecorded, BatchStepDetail, OrphanedBatch};
use crate::store::{LEDGER_BATCH_COMPLETION, LEDGER_PARTIAL_RESULT};
use crate::time::{from_ms, from_ms_opt, to_ms};

/// Records several dispatches, in order, in the caller's transaction, with a fixed number of
/// statements whatever their number: the rows are locked and loaded once, planned by
/// [`plan_batches`], and each kind of row is written by one array (`UNNEST`) statement.
pub(crate) async fn batches_record(
    conn: &mut PgConnection,
    params: &[BatchRecord],
) -> FailResult<Vec<BatchRecorded>> {
    if params.is_empty() {
        return Ok(Vec::new());
    }
    let step_ids: BTreeSet<i64> = params
        .iter()
        .flat_map(|b| b.steps.iter().map(|s| s.step_id))
        .collect();
    let steps = load_steps(conn, &step_ids, false).await?;
    let task_ids: BTreeSet<i64> = steps.values().map(|s| s.task_id).collect();
    let tasks = load_tasks(conn, &task_ids).await?;
    let plan = plan_batches(
        Snapshots {
            steps,
            tasks,
            batches: HashMap::new(),
        },
        params,
    )?;
    write_batches(conn, &plan).await?;
    Ok(plan.outcomes)
}

/// Records a dispatch in the caller's transaction.
pub(crate) async fn batch_record(
    conn: &mut PgConnection,
    params: &BatchRecord,
) -> FailResult<BatchRecorded> {
    let mut recorded = batches_record(conn, std::slice::from_ref(params)).await?;
    recorded.pop().ok_or_else(|| {
        StoreError::Corrupt {
            reason: "recording one batch produced no outcome".to_owned(),
        }
        .into()
    })
}

/// Writes the batches, their join rows, the steps' moves to `in_progress`, the tasks started and
/// every transition of a [`BatchesPlan`].
async fn write_batches(conn: &mut PgConnection, plan: &BatchesPlan) -> FailResult<()> {
    let Some(first) = plan.batches.first() else {
        return Ok(());
    };
    let now = first.now_ms;
    let rows = &plan.batches;
    let uuids: Vec<Uuid> = rows.iter().map(|b| b.batch_uuid).collect();
    let workers: Vec<Option<&str>> = rows.iter().map(|b| b.worker_id.as_deref()).collect();
    let classes: Vec<Option<&str>> = rows.iter().map(|b| b.handler_class.as_deref()).collect();
    let orchestrators: Vec<Option<&str>> =
        rows.iter().map(|b| b.orchestrator_id.as_deref()).collect();
    let sizes: Vec<i32> = rows.iter().map(|b| b.batch_size).collect();
    let timeouts: Vec<i64> = rows.iter().map(|b| b.timeout_ms).collect();
    let states: Vec<&str> = rows.iter().map(|b| b.state.as_str()).collect();
    let metadata: Vec<Option<&serde_json::Value>> =
        rows.iter().map(|b| b.metadata.as_ref()).collect();
    let times: Vec<i64> = rows.iter().map(|b| b.now_ms).collect();
    let inserted: Vec<(Uuid, i64)> = sqlx::query_as(
        "INSERT INTO tasker_step_execution_batches
             (batch_uuid, worker_id, handler_class, orchestrator_id, batch_size, timeout_ms, state,
              metadata, created_at, updated_at)
         SELECT u.batch_uuid, u.worker_id, u.handler_class, u.orchestrator_id, u.batch_size,
                u.timeout_ms, u.state, u.metadata, u.at, u.at
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::int8[],
                     $7::text[], $8::jsonb[], $9::int8[])
              AS u(batch_uuid, worker_id, handler_class, orchestrator_id, batch_size, timeout_ms,
                   state, metadata, at)
         RETURNING batch_uuid, batch_id",
    )
    .bind(&uuids)
    .bind(&workers)
    .bind(&classes)
    .bind(&orchestrators)
    .bind(&sizes)
    .bind(&timeouts)
    .bind(&states)
    .bind(&metadata)
    .bind(&times)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::InvalidInput {
            reason: format!(
                "a batch among {} was already recorded",
                uuids
                    .iter()
                    .map(Uuid::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
        .into(),
        _ => crate::error::Fail::from(e),
    })?;
    let ids: HashMap<Uuid, i64> = inserted.into_iter().collect();

    let members = &plan.members;
    let member_batches: Vec<Uuid> = members.iter().map(|m| m.batch_uuid).collect();
    let member_steps: Vec<i64> = members.iter().map(|m| m.step_id).collect();
    let sequence: Vec<i32> = members.iter().map(|m| m.sequence_order).collect();
    let attempts: Vec<i32> = members.iter().map(|m| m.attempt).collect();
    let member_times: Vec<i64> = members.iter().map(|m| m.now_ms).collect();
    sqlx::query(
        "INSERT INTO tasker_step_execution_batch_steps
             (batch_id, step_id, sequence_order, attempt, expected_handler_class, created_at)
         SELECT b.batch_id, s.step_id, u.seq, u.attempt, s.handler_class, u.at
         FROM UNNEST($1::uuid[], $2::int8[], $3::int4[], $4::int4[], $5::int8[])
              AS u(batch_uuid, step_id, seq, attempt, at)
         JOIN tasker_step_execution_batches b ON b.batch_uuid = u.batch_uuid
         JOIN tasker_workflow_steps s ON s.step_id = u.step_id",
    )
    .bind(&member_batches)
    .bind(&member_steps)
    .bind(&sequence)
    .bind(&attempts)
    .bind(&member_times)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE tasker_workflow_steps AS s SET
             state = 'in_progress',
             attempts = u.attempt,
             last_attempted_at = u.at,
             backoff_until = NULL,
             in_flight_batch_id = b.batch_id,
             in_flight_deadline_at = u.at + coalesce(s.timeout_ms, b.timeout_ms),
             updated_at = u.at
         FROM UNNEST($1::uuid[], $2::int8[], $3::int4[], $4::int8[])
              AS u(batch_uuid, step_id, attempt, at)
         JOIN tasker_step_execution_batches b ON b.batch_uuid = u.batch_uuid
         WHERE s.step_id = u.step_id",
    )
    .bind(&member_batches)
    .bind(&member_steps)
    .bind(&attempts)
    .bind(&member_times)
    .execute(&mut *conn)
    .await?;
    insert_transitions(conn, TransitionTable::Step, &plan.step_transitions, now).await?;

    if !plan.task_transitions.is_empty() {
        let started: Vec<i64> = plan.task_transitions.iter().map(|t| t.entity_id).collect();
        sqlx::query(
            "UPDATE tasker_tasks SET state = 'in_progress', updated_at = $2
             WHERE task_id = ANY($1)",
        )
        .bind(&started)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        insert_transitions(conn, TransitionTable::Task, &plan.task_transitions, now).await?;
    }

    let recorded: Vec<TransitionRow> = rows
        .iter()
        .filter_map(|b| {
            Some(TransitionRow {
                entity_id: *ids.get(&b.batch_uuid)?,
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
    insert_transitions(conn, TransitionTable::Batch, &recorded, now).await?;
    Ok(())
}

/// One batch with its steps and ledger facts, read in one snapshot.
pub(crate) async fn batch_get(
    conn: &mut PgConnection,
    batch_uuid: Uuid,
) -> FailResult<BatchDetail> {
    let row = sqlx::query(
        "SELECT b.batch_id, b.batch_uuid, b.worker_id, b.handler_class, b.batch_size, b.timeout_ms,
                b.state, b.metadata, b.created_at,
                EXISTS (SELECT 1 FROM tasker_step_execution_batch_received_results r
                        WHERE r.batch_uuid = b.batch_uuid::text AND r.message_kind = $2)
                    AS completion_received
         FROM tasker_step_execution_batches b WHERE b.batch_uuid = $1",
    )
    .bind(batch_uuid)
    .bind(LEDGER_BATCH_COMPLETION)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| StoreError::NotFound {
        what: "batch",
        id: batch_uuid.to_string(),
    })?;
    let batch_id: i64 = rows::column(&row, "batch_id")?;
    let step_rows = sqlx::query(
        "SELECT bs.step_id, bs.sequence_order, bs.attempt, s.state AS step_state,
                coalesce(s.in_flight_batch_id = bs.batch_id, false) AS in_flight_here,
                r.status AS reported_status
         FROM tasker_step_execution_batch_steps bs
         JOIN tasker_workflow_steps s ON s.step_id = bs.step_id
         LEFT JOIN tasker_step_execution_batch_received_results r
             ON r.batch_uuid = $2 AND r.step_id = bs.step_id AND r.message_kind = $3
         WHERE bs.batch_id = $1
         ORDER BY bs.sequence_order",
    )
    .bind(batch_id)
    .bind(batch_uuid.to_string())
    .bind(LEDGER_PARTIAL_RESULT)
    .fetch_all(&mut *conn)
    .await?;
    let mut steps = Vec::with_capacity(step_rows.len());
    for r in &step_rows {
        steps.push(BatchStepDetail {
            step_id: rows::column(r, "step_id")?,
            sequence_order: rows::column(r, "sequence_order")?,
            attempt: rows::column(r, "attempt")?,
            step_state: rows::state(r, "step_state")?,
            in_flight_here: rows::column(r, "in_flight_here")?,
            reported_status: rows::column(r, "reported_status")?,
        });
    }
    Ok(BatchDetail {
        batch_uuid: rows::uuid(&row, "batch_uuid")?,
        worker_id: rows::column(&row, "worker_id")?,
        handler_class: rows::column(&row, "handler_class")?,
        batch_size: rows::column(&row, "batch_size")?,
        timeout_ms: rows::column(&row, "timeout_ms")?,
        state: rows::state(&row, "state")?,
        metadata: rows::json_opt(&row, "metadata")?,
        created_at: from_ms(rows::column(&row, "created_at")?)?,
        completion_received: rows::column(&row, "completion_received")?,
        steps,
    })
}

/// Unfinished batches whose worker is gone, with their in-flight steps.
pub(crate) async fn batches_orphaned(
    conn: &mut PgConnection,
    params: &BatchesOrphaned,
) -> FailResult<Vec<OrphanedBatch>> {
    let limit = page_size(params.limit, 1000, 10_000);
    let rows = sqlx::query(
        "SELECT b.batch_id, b.batch_uuid, b.state, b.worker_id, w.last_heartbeat_at
         FROM tasker_step_execution_batches b
         LEFT JOIN tasker_workers w ON w.worker_id = b.worker_id
         WHERE b.state IN ('created', 'published', 'executing')
           AND ((b.worker_id IS NULL AND b.created_at < $1)
                OR (b.worker_id IS NOT NULL
                    AND (w.worker_id IS NULL OR w.last_heartbeat_at < $1)))
         ORDER BY b.batch_id
         LIMIT $2",
    )
    .bind(to_ms(params.heartbeat_before))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut batches = Vec::with_capacity(rows.len());
    let mut index = HashMap::new();
    for row in &rows {
        let batch_id: i64 = rows::column(row, "batch_id")?;
        index.insert(batch_id, batches.len());
        batches.push(OrphanedBatch {
            batch_uuid: rows::uuid(row, "batch_uuid")?,
            state: rows::state(row, "state")?,
            worker_id: rows::column(row, "worker_id")?,
            last_heartbeat_at: from_ms_opt(rows::column(row, "last_heartbeat_at")?)?,
            in_flight_step_ids: Vec::new(),
        });
    }
    if !batches.is_empty() {
        let ids: Vec<i64> = index.keys().copied().collect();
        let in_flight: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT in_flight_batch_id, step_id FROM tasker_workflow_steps
             WHERE in_flight_batch_id = ANY($1)
             ORDER BY step_id",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        for (batch_id, step_id) in in_flight {
            if let Some(&i) = index.get(&batch_id) {
                batches[i].in_flight_step_ids.push(step_id);
            }
        }
    }
    Ok(batches)
}
