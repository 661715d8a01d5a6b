//! The received-results ledger: append-only, deduplicated on (batch id, step id, message kind).

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, params};
use serde_json::Value;

use super::errors::FailResult;
use super::rows::{self, json_text, query_all};
use crate::params::{LedgerEntry, LedgerList, page_size};
use crate::plan::{ledger_dedup_key, ledger_processing_errors};
use crate::records::{LedgerOutcome, LedgerRecord};
use crate::time::from_ms;

/// Appends entries in one statement and reports which were duplicates.
pub(crate) fn append(
    conn: &Connection,
    entries: &[LedgerEntry],
    now: i64,
    refusals: &HashMap<usize, Value>,
) -> FailResult<Vec<LedgerOutcome>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let mut outcomes = vec![LedgerOutcome::Recorded; entries.len()];
    let mut seen = HashSet::new();
    let mut json_rows = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        if let Some(key) = ledger_dedup_key(entry)
            && !seen.insert(key)
        {
            outcomes[i] = LedgerOutcome::Duplicate;
            continue;
        }
        let mut row = serde_json::Map::new();
        row.insert("ord".into(), i.into());
        if let Some(b) = &entry.batch_uuid {
            row.insert("batch_uuid".into(), b.clone().into());
        }
        if let Some(s) = entry.step_id {
            row.insert("step_id".into(), s.into());
        }
        row.insert("message_kind".into(), entry.message_kind.clone().into());
        if let Some(w) = &entry.worker_id {
            row.insert("worker_id".into(), w.clone().into());
        }
        if let Some(s) = entry.sequence {
            row.insert("sequence".into(), s.into());
        }
        if let Some(s) = &entry.status {
            row.insert("status".into(), s.clone().into());
        }
        if let Some(t) = entry.execution_time_ms {
            row.insert("execution_time_ms".into(), t.into());
        }
        row.insert("raw_message".into(), entry.raw_message.clone().into());
        if let Some(errors) =
            ledger_processing_errors(entry.processing_errors.as_ref(), refusals.get(&i))
        {
            row.insert("processing_errors".into(), errors);
        }
        json_rows.push(Value::Object(row));
    }
    let inserted: Vec<(Option<String>, Option<i64>, String)> = query_all(
        conn,
        "INSERT INTO tasker_step_execution_batch_received_results
             (batch_uuid, step_id, message_kind, worker_id, sequence_number, status,
              execution_time_ms, raw_message, processing_errors, received_at)
         SELECT j.value ->> 'batch_uuid', j.value ->> 'step_id', j.value ->> 'message_kind',
                j.value ->> 'worker_id', j.value ->> 'sequence', j.value ->> 'status',
                j.value ->> 'execution_time_ms', j.value ->> 'raw_message',
                j.value -> 'processing_errors', ?2
         FROM json_each(?1) AS j
         WHERE true
         ON CONFLICT DO NOTHING
         RETURNING batch_uuid, step_id, message_kind",
        params![json_text(&json_rows)?, now],
        |row| {
            Ok((
                rows::column(row, "batch_uuid")?,
                rows::column(row, "step_id")?,
                rows::column(row, "message_kind")?,
            ))
        },
    )?;
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
pub(crate) fn ledger_list(conn: &Connection, params: &LedgerList) -> FailResult<Vec<LedgerRecord>> {
    let limit = page_size(params.limit, 100, 10_000);
    query_all(
        conn,
        "SELECT id, batch_uuid, step_id, message_kind, worker_id, sequence_number, status,
                execution_time_ms, raw_message, processing_errors, received_at
         FROM tasker_step_execution_batch_received_results
         WHERE (?1 IS NULL OR batch_uuid = ?1)
           AND (?2 IS NULL OR step_id = ?2)
           AND (?3 IS NULL OR id > ?3)
         ORDER BY id LIMIT ?4",
        params![params.batch_uuid, params.step_id, params.after_id, limit],
        |row| {
            Ok(LedgerRecord {
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
            })
        },
    )
}
