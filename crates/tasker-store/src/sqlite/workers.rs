//! Workers: identity, capabilities, heartbeats.

use rusqlite::{Connection, params};

use super::errors::FailResult;
use super::rows::{self, execute, json_text, query_all};
use crate::params::WorkerUpsert;
use crate::records::WorkerRecord;
use crate::time::{from_ms, to_ms};

/// Records a worker or its heartbeat (a heartbeat never moves backwards).
pub(crate) fn worker_upsert(conn: &Connection, params: &WorkerUpsert) -> FailResult<()> {
    execute(
        conn,
        "INSERT INTO tasker_workers (worker_id, capabilities, first_seen_at, last_heartbeat_at)
         VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT (worker_id) DO UPDATE SET
             capabilities = excluded.capabilities,
             last_heartbeat_at = CASE
                 WHEN excluded.last_heartbeat_at > tasker_workers.last_heartbeat_at
                 THEN excluded.last_heartbeat_at ELSE tasker_workers.last_heartbeat_at END",
        params![
            params.worker_id,
            json_text(&params.capabilities)?,
            to_ms(params.now)
        ],
    )?;
    Ok(())
}

/// Every worker, by id.
pub(crate) fn workers_list(conn: &Connection) -> FailResult<Vec<WorkerRecord>> {
    query_all(
        conn,
        "SELECT worker_id, capabilities, first_seen_at, last_heartbeat_at
         FROM tasker_workers ORDER BY worker_id",
        [],
        |row| {
            Ok(WorkerRecord {
                worker_id: rows::column(row, "worker_id")?,
                capabilities: rows::json(row, "capabilities")?,
                first_seen_at: from_ms(rows::column(row, "first_seen_at")?)?,
                last_heartbeat_at: from_ms(rows::column(row, "last_heartbeat_at")?)?,
            })
        },
    )
}
