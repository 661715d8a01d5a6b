//! The received-results ledger: append-only, deduplicated on (batch id, step id, message kind).

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use sqlx::PgConnection;

use super::rows;
use crate::error::FailResult;
use crate::params::{LedgerEntry, LedgerList, page_size};
use crate::plan::{ledger_dedup_key, ledger_processing_errors};
use crate::records::{LedgerOutcome, LedgerRecord};
use crate::time::from_ms;

/// Appends entries in one statement and reports which were duplicates.
pub(crate) async fn append(
    conn: &mut PgConnection,
    entries: &[LedgerEntry],
    now: i64,
    refusals: &HashMap<usize, Value>,
) -> FailResult<Vec<LedgerOutcome>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let mut outcomes = vec![LedgerOutcome::Recorded; entries.len()];
    let mut seen = HashSet::new();
    let mut batch_uuids = Vec::new();
    let mut step_ids = Vec::new();
    let mut kinds = Vec::new();
    let mut workers = Vec::new();
    let mut sequences = Vec::new();
    let mut statuses = Vec::new();
    let mut times = Vec::new();
    let mut raws = Vec::new();
    let mut errors = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if let Some(key) = ledger_dedup_key(entry)
            && !seen.insert(key)
        {
            outcomes[i] = LedgerOutcome::Duplicate;
            continue;
        }
        batch_uuids.push(entry.batch_uuid.as_deref());
        step_ids.push(entry.step_id);
        kinds.push(entry.message_kind.as_str());
        workers.push(entry.worker_id.as_deref());
        sequences.push(entry.sequence);
        statuses.push(entry.status.as_deref());
        times.push(entry.execution_time_ms);
        raws.push(entry.raw_message.as_str());
        errors.push(ledger_processing_errors(
            entry.processing_errors.as_ref(),
            refusals.get(&i),
        ));
    }
    let inserted: Vec<(Option<String>, Option<i64>, String)> = sqlx::query_as(
        "INSERT INTO tasker_step_execution_batch_received_results
             (batch_uuid, step_id, message_kind, worker_id, sequence_number, status,
              execution_time_ms, raw_message, processing_errors, received_at)
         SELECT u.*, $10 FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::int8[],
                                     $6::text[], $7::int8[], $8::text[], $9::jsonb[]) AS u
         ON CONFLICT DO NOTHING
         RETURNING batch_uuid, step_id, message_kind",
    )
    .bind(&batch_uuids)
    .bind(&step_ids)
    .bind(&kinds)
    .bind(&workers)
    .bind(&sequences)
    .bind(&statuses)
    .bind(&times)
    .bind(&raws)
    .bind(&errors)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let inserted: HashSet<(String, i64, String)> = inserted
        .into_iter()
        .filter_map(|(b, s, k)| b.map(|b| (b, s.unwrap_or(0), k)))
        .collect();
    for (i, entry) in entries.iter().enumerate() {
        if outcomes[i] == LedgerOutcome::Recorded
            && let Some(key) = ledger_dedup_key(entry)
            && !inserted.contains(&key)
        {
            outcomes[i] = LedgerOutcome::Duplicate;
        }
    }
    Ok(outcomes)
}

/// Ledger entries, ascending by id.
pub(crate) async fn ledger_list(
    conn: &mut PgConnection,
    params: &LedgerList,
) -> FailResult<Vec<LedgerRecord>> {
    let limit = page_size(params.limit, 100, 10_000);
    let rows = sqlx::query(
        "SELECT id, batch_uuid, step_id, message_kind, worker_id, sequence_number, status,
                execution_time_ms, raw_message, processing_errors, received_at
         FROM tasker_step_execution_batch_received_results
         WHERE ($1::text IS NULL OR batch_uuid = $1)
           AND ($2::int8 IS NULL OR step_id = $2)
           AND ($3::int8 IS NULL OR id > $3)
         ORDER BY id LIMIT $4",
    )
    .bind(&params.batch_uuid)
    .bind(params.step_id)
    .bind(params.after_id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(LedgerRecord {
            id: rows::column(row, "id")?,
            batch_uuid: rows::column(row, "batch_uuid")?,
            step_id: rows::column(row, "step_id")?,
            message_kind: rows::column(row, "message_kind")?,
            worker_id: rows::column(row, "worker_id")?,
            sequence: rows::column(row, "sequence_number")?,
            status: rows::column(row, "status")?,
            execution_time_ms: rows::column(row, "execution_time_ms")?,
            raw_message: rows::column(row, "raw_message")?,
            processing_errors: rows::json_opt(row, "processing_errors")?,
            received_at: from_ms(rows::column(row, "received_at")?)?,
        });
    }
    Ok(out)
}
