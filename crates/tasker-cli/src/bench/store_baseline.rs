//! The database baseline: raw commits through the `Store`, on the same database the engine then
//! uses. `rows` ledger entries shaped like a worker's result are appended once with one row per
//! transaction (bound by the commit: an fsync on SQLite `synchronous=full` and on PostgreSQL with
//! `fsync=on`), and once more in groups (the most a commit can carry per second). The engine's
//! steps/s is compared with both.
//!
//! The rows stay in the ledger (`message_kind` `bench_baseline`, batch ids
//! `bench-baseline-…`): harmless, but use a throwaway database.

use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use tasker_store::{LedgerAppend, LedgerEntry, Store};

use super::report::per_second;

/// The `message_kind` of the baseline's ledger rows.
pub(crate) const BASELINE_MESSAGE_KIND: &str = "bench_baseline";

/// The database baseline's figures.
#[derive(Debug, Serialize)]
pub(crate) struct StoreBaseline {
    /// Rows written by each of the two runs.
    pub(crate) rows: u32,
    /// One row per commit.
    pub(crate) single_row: CommitRun,
    /// Many rows per commit.
    pub(crate) batched: CommitRun,
}

/// One way of committing the rows.
#[derive(Debug, Serialize)]
pub(crate) struct CommitRun {
    /// Rows per transaction.
    pub(crate) rows_per_commit: u32,
    /// Transactions.
    pub(crate) commits: u32,
    /// Time for all of them.
    pub(crate) seconds: f64,
    /// Transactions per second.
    pub(crate) commits_per_s: f64,
    /// Rows per second.
    pub(crate) rows_per_s: f64,
}

/// Appends `rows` rows one per commit, then `rows` more `group` per commit.
pub(crate) async fn measure(
    store: &dyn Store,
    rows: u32,
    group: u32,
) -> anyhow::Result<StoreBaseline> {
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    );
    // Warm-up: connections opened, statements prepared.
    append(store, &run_id, "warm-up", 0..1).await?;
    let single_row = commit_rows(store, &run_id, "single", rows, 1).await?;
    let batched = commit_rows(store, &run_id, "batched", rows, group.max(1)).await?;
    Ok(StoreBaseline {
        rows,
        single_row,
        batched,
    })
}

async fn commit_rows(
    store: &dyn Store,
    run_id: &str,
    label: &str,
    rows: u32,
    group: u32,
) -> anyhow::Result<CommitRun> {
    let started = Instant::now();
    let mut commits = 0;
    let mut next = 0;
    while next < rows {
        let end = rows.min(next + group);
        append(store, run_id, label, next..end).await?;
        commits += 1;
        next = end;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(CommitRun {
        rows_per_commit: group,
        commits,
        seconds,
        commits_per_s: per_second(f64::from(commits), seconds),
        rows_per_s: per_second(f64::from(rows), seconds),
    })
}

/// One transaction appending rows `range`.
async fn append(
    store: &dyn Store,
    run_id: &str,
    label: &str,
    range: std::ops::Range<u32>,
) -> anyhow::Result<()> {
    let entries = range.map(|i| ledger_row(run_id, label, i)).collect();
    store
        .ledger_append(LedgerAppend {
            now: chrono::Utc::now(),
            entries,
        })
        .await
        .context("appending baseline rows to the ledger")?;
    Ok(())
}

/// A row the size of a `tasker.test` step's partial result.
fn ledger_row(run_id: &str, label: &str, i: u32) -> LedgerEntry {
    let batch = format!("bench-baseline-{run_id}-{label}-{i}");
    LedgerEntry {
        raw_message: format!(
            r#"{{"protocol_version":1,"type":"partial_result","batch_id":"{batch}","step_id":{i},"status":"success","output":{{"step":"b","attempt":1,"previous_results":["a"],"worker":"tasker-bench"}},"execution_time_ms":0,"worker_id":"tasker-bench","sequence":{i}}}"#
        ),
        batch_uuid: Some(batch),
        step_id: None,
        message_kind: BASELINE_MESSAGE_KIND.to_owned(),
        worker_id: Some("tasker-bench".to_owned()),
        sequence: Some(i64::from(i)),
        status: Some("success".to_owned()),
        execution_time_ms: Some(0),
        processing_errors: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasker_store::LedgerList;

    #[tokio::test]
    async fn commits_every_row_once_each_way() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite:{}", dir.path().join("baseline.db").display());
        let store = tasker_store::connect(&url).await.expect("store");
        let baseline = measure(&*store, 25, 10).await.expect("baseline");
        assert_eq!(baseline.single_row.commits, 25);
        assert_eq!(baseline.single_row.rows_per_commit, 1);
        assert_eq!(baseline.batched.commits, 3);
        assert_eq!(baseline.batched.rows_per_commit, 10);
        let rows = store
            .ledger_list(LedgerList {
                limit: 1000,
                ..LedgerList::default()
            })
            .await
            .expect("ledger");
        assert_eq!(rows.len(), 1 + 25 + 25);
        assert!(rows.iter().all(|r| r.message_kind == BASELINE_MESSAGE_KIND));
        store.close().await;
    }
}
