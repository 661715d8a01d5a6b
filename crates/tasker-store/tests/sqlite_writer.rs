//! The SQLite backend's writer thread and reader pool, on a real file: a failed write never
//! leaves a transaction open, a closed store answers (with `Unavailable`) instead of hanging, and
//! writes from many tasks at once all go through the one writer.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tasker_core::state::TaskState;
use tasker_store::{NewStep, NewTask, StoreError, TasksList, connect};

/// Upper bound on any one call; reaching it means the store hung.
const GUARD: Duration = Duration::from_secs(20);

fn task(context_bytes: usize) -> NewTask {
    NewTask {
        namespace: "ns".into(),
        name: "t".into(),
        version: "1".into(),
        template_json: None,
        context: json!({ "blob": "x".repeat(context_bytes) }),
        initiator: None,
        source_system: None,
        reason: None,
        tags: vec![],
        idempotency_key: None,
        steps: vec![NewStep {
            name: "only".into(),
            handler_class: "H".into(),
            handler_config: json!({}),
            retryable: true,
            retry_limit: 1,
            timeout_ms: None,
            backoff: None,
        }],
        edges: vec![],
        now: chrono::DateTime::from_timestamp_millis(0).unwrap(),
        claim: None,
    }
}

async fn guarded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {GUARD:?}"))
}

/// Whether another connection can take the write lock at once (no transaction of the store's
/// writer holds it).
fn write_lock_is_free(path: &std::path::Path) -> bool {
    let other = rusqlite::Connection::open(path).unwrap();
    other.busy_timeout(Duration::ZERO).unwrap();
    let free = other.execute_batch("BEGIN IMMEDIATE").is_ok();
    if free {
        other.execute_batch("ROLLBACK").unwrap();
    }
    free
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_write_and_the_next_write_that_fits_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasker.db");
    // The schema takes about 60 pages of 4 KiB; 200 pages leave room for small tasks only.
    let store = connect(&format!("sqlite:{}?max_page_count=200", path.display()))
        .await
        .unwrap();
    store.task_create(task(10)).await.unwrap();
    for round in 0..3 {
        // 2 MB of context cannot fit in 800 KiB.
        let err = guarded("a write past the cap", store.task_create(task(2_000_000)))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::DiskFull { .. }), "{err:?}");
        assert!(err.to_string().contains("full"), "{err}");
        // The failed transaction was rolled back: the write lock is free, the writer usable.
        assert!(
            write_lock_is_free(&path),
            "round {round}: the writer still holds a transaction after the failed write"
        );
        guarded("a write that fits", store.task_create(task(10)))
            .await
            .unwrap_or_else(|e| panic!("round {round}: the store is wedged: {e}"));
    }
    let counts = store.state_counts().await.unwrap();
    assert_eq!(
        counts.task(TaskState::Pending),
        4,
        "nothing of the failed writes"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_rolls_back_and_leaves_no_transaction_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasker.db");
    let store = connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    // Refused inside the write transaction by the store's own checks: an edge to a step that
    // does not exist.
    let mut bad = task(10);
    bad.edges = vec![(0, 5)];
    let err = store.task_create(bad).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
    assert!(write_lock_is_free(&path));
    // A batch recorded twice violates a unique constraint mid-transaction.
    let created = store.task_create(task(10)).await.unwrap();
    let record = tasker_store::BatchRecord {
        now: chrono::DateTime::from_timestamp_millis(0).unwrap(),
        claimant: None,
        batch_uuid: uuid::Uuid::new_v4(),
        worker_id: None,
        handler_class: None,
        timeout_ms: 1000,
        state: tasker_core::state::BatchState::Published,
        metadata: None,
        steps: vec![tasker_store::BatchStep {
            step_id: created.step_ids[0],
            expect_state: tasker_core::state::StepState::Pending,
        }],
    };
    store.batch_record(record.clone()).await.unwrap();
    // The same batch id again, for another (dispatchable) step.
    let other = store.task_create(task(10)).await.unwrap();
    let mut again = record;
    again.steps[0].step_id = other.step_ids[0];
    let err = store.batch_record(again).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
    assert!(err.to_string().contains("already recorded"), "{err}");
    assert!(write_lock_is_free(&path));
    store.task_create(task(10)).await.unwrap();
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_store_answers_unavailable_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("tasker.db").display());
    let store = connect(&url).await.unwrap();
    // Writes queued when close starts either finish or fail as unavailable; none hangs.
    let pending: Vec<_> = (0..20)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.task_create(task(100)).await })
        })
        .collect();
    guarded("close", store.close()).await;
    let mut committed = 0_i64;
    for handle in pending {
        match guarded("a write queued at close", handle).await.unwrap() {
            Ok(_) => committed += 1,
            Err(StoreError::Unavailable { .. }) => {}
            Err(other) => panic!("expected success or Unavailable, got {other:?}"),
        }
    }
    let write = guarded("a write after close", store.task_create(task(10))).await;
    assert!(
        matches!(write, Err(StoreError::Unavailable { .. })),
        "{write:?}"
    );
    let read = guarded("a read after close", store.task_get(1)).await;
    assert!(
        matches!(read, Err(StoreError::Unavailable { .. })),
        "{read:?}"
    );
    let list = guarded("a list after close", store.tasks_list(TasksList::default())).await;
    assert!(
        matches!(list, Err(StoreError::Unavailable { .. })),
        "{list:?}"
    );
    // Closing twice is harmless.
    guarded("a second close", store.close()).await;

    // Whatever was acknowledged is in the file.
    let reopened = connect(&url).await.unwrap();
    assert_eq!(
        reopened
            .state_counts()
            .await
            .unwrap()
            .task(TaskState::Pending),
        committed
    );
    reopened.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_many_tasks_at_once_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let store = connect(&format!(
        "sqlite:{}?synchronous=normal",
        dir.path().join("tasker.db").display()
    ))
    .await
    .unwrap();
    const WRITERS: usize = 64;
    const EACH: usize = 5;
    let handles: Vec<_> = (0..WRITERS)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(EACH);
                for _ in 0..EACH {
                    ids.push(store.task_create(task(i)).await.unwrap().task_id);
                    // Reads interleave with the queued writes.
                    store.task_get(ids[ids.len() - 1]).await.unwrap();
                }
                ids
            })
        })
        .collect();
    let mut all = Vec::new();
    for handle in handles {
        all.extend(guarded("a writer task", handle).await.unwrap());
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), WRITERS * EACH, "every write got its own task");
    assert_eq!(
        store.state_counts().await.unwrap().task(TaskState::Pending),
        i64::try_from(WRITERS * EACH).unwrap()
    );
    store.close().await;
}
