//! Bad input at the edges of the store: malformed URLs, unreachable servers, unusable files, a
//! locked SQLite file, a full disk. Each is a clear error naming its cause, never a panic.
//!
//! (A schema from the future is a conformance case, run on both backends.)

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use serde_json::json;
use tasker_core::state::TaskState;
use tasker_store::{NewStep, NewTask, StoreError, connect};

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

#[tokio::test]
async fn malformed_urls_are_invalid_url_errors() {
    for url in [
        "",
        "tasker.db",
        "mysql://root@localhost/tasker",
        "sqlite:",
        "sqlite::memory:",
        "sqlite:x.db?synchronous=maybe",
        "postgres:/nohost",
        "postgres://user:hunter2@host:99999999/db",
        "postgres://host/db?max_connections=lots",
    ] {
        let err = connect(url).await.unwrap_err();
        eprintln!("{url:?} -> {err}");
        assert!(
            matches!(err, StoreError::InvalidUrl { .. }),
            "{url}: expected InvalidUrl, got {err:?}"
        );
        assert!(
            !err.to_string().contains("hunter2"),
            "password shown: {err}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_naming_it() {
    // Port 1 on loopback: nothing listens there.
    let err = connect("postgres://postgres@127.0.0.1:1/tasker?connect_timeout_ms=3000")
        .await
        .unwrap_err();
    eprintln!("{err}");
    match &err {
        StoreError::Unavailable { target, .. } => assert!(target.contains("127.0.0.1:1"), "{err}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unknown_postgres_database_is_unavailable() {
    let Ok(url) = std::env::var("TASKER_TEST_POSTGRES_URL") else {
        eprintln!("SKIPPED: TASKER_TEST_POSTGRES_URL not set");
        assert_ne!(std::env::var("TASKER_REQUIRE_POSTGRES").as_deref(), Ok("1"));
        return;
    };
    let base = url.split('?').next().unwrap();
    let server = &base[..base.rfind('/').unwrap()];
    let err = connect(&format!("{server}/no_such_database_here"))
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("no_such_database_here"), "{err}");
}

#[tokio::test]
async fn an_sqlite_path_that_cannot_be_created_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let path = file.join("sub").join("tasker.db");
    let err = connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("plain-file"), "{err}");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![0x5a_u8; 8192]).unwrap();
    let err = connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("garbage.db"), "{err}");
}

#[tokio::test]
async fn a_locked_sqlite_file_is_locked_not_hung() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasker.db");
    let url = format!("sqlite:{}?busy_timeout_ms=200", path.display());
    let store = connect(&url).await.unwrap();
    store.task_create(task(10)).await.unwrap();

    // Another process (here: another connection) holds the write lock.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let started = std::time::Instant::now();
    let err = store.task_create(task(10)).await.unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("tasker.db"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "gave up after the busy timeout, not never"
    );
    // Opening a second store on the locked file fails the same way.
    store.close().await;
    let err = connect(&url).await.unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");

    other.execute_batch("ROLLBACK").unwrap();
    other.close().unwrap();
    let store = connect(&url).await.unwrap();
    store.task_create(task(10)).await.unwrap();
    assert_eq!(
        store.state_counts().await.unwrap().task(TaskState::Pending),
        2
    );
    store.close().await;
}

#[tokio::test]
async fn a_full_disk_fails_the_write_and_keeps_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasker.db");
    // The schema takes about 60 pages; leave room for a few tasks only.
    let url = format!("sqlite:{}?max_page_count=120", path.display());
    let store = connect(&url).await.unwrap();
    let mut committed = 0;
    let err = loop {
        match store.task_create(task(40_000)).await {
            Ok(_) => committed += 1,
            Err(e) => break e,
        }
        assert!(committed < 100, "the size cap never took effect");
    };
    eprintln!("{err}");
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err:?}");
    assert!(err.to_string().contains("full"), "{err}");
    assert!(committed > 0, "some tasks fit before the cap");
    // Nothing half-written, everything committed still there, reads still work.
    let counts = store.state_counts().await.unwrap();
    assert_eq!(counts.task(TaskState::Pending), committed);
    assert_eq!(counts.steps.iter().map(|(_, n)| n).sum::<i64>(), committed);
    store.close().await;
}
