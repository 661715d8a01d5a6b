//! Workers: identity, capabilities, heartbeats.

use sqlx::PgConnection;

use super::rows;
use crate::error::FailResult;
use crate::params::WorkerUpsert;
use crate::records::WorkerRecord;
use crate::time::{from_ms, to_ms};

/// Records a worker or its heartbeat (a heartbeat never moves backwards).
pub(crate) async fn worker_upsert(
    conn: &mut PgConnection,
    params: &WorkerUpsert,
) -> FailResult<()> {
    sqlx::query(
        "INSERT INTO tasker_workers (worker_id, capabilities, first_seen_at, last_heartbeat_at)
         VALUES ($1, $2, $3, $3)
         ON CONFLICT (worker_id) DO UPDATE SET
             capabilities = excluded.capabilities,
             last_heartbeat_at = CASE
                 WHEN excluded.last_heartbeat_at > tasker_workers.last_heartbeat_at
                 THEN excluded.last_heartbeat_at ELSE tasker_workers.last_heartbeat_at END",
    )
    .bind(&params.worker_id)
    .bind(&params.capabilities)
    .bind(to_ms(params.now))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Every worker, by id.
pub(crate) async fn workers_list(conn: &mut PgConnection) -> FailResult<Vec<WorkerRecord>> {
    let rows = sqlx::query(
        "SELECT worker_id, capabilities, first_seen_at, last_heartbeat_at
         FROM tasker_workers ORDER BY worker_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(WorkerRecord {
            worker_id: rows::column(row, "worker_id")?,
            capabilities: rows::json(row, "capabilities")?,
            first_seen_at: from_ms(rows::column(row, "first_seen_at")?)?,
            last_heartbeat_at: from_ms(rows::column(row, "last_heartbeat_at")?)?,
        });
    }
    Ok(out)
}
