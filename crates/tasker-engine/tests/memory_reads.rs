//! A running task is read from the engine's memory, and what memory answers is exactly what the
//! store holds: compared row by row at each stage of a diamond (created, root in flight, children
//! in flight, finished), on both backends.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod support;

use serde_json::json;
use support::*;
use tasker_core::state::{StepState, TaskState};
use tasker_engine::{EngineEvent, EngineHandle};

/// The engine's answer for `task_id` equals the store's rows (task, steps, edges).
async fn assert_memory_matches_store(engine: &EngineHandle, task_id: i64, held: bool) {
    let status = engine.task_status(task_id).await.unwrap();
    assert_eq!(status.from_memory, held, "answered from memory: {held}");
    let stored = engine.store().task_load_dag(task_id).await.unwrap();
    let mut task = status.task.clone();
    // The lease's end moves with every renewal; memory keeps the one it was created with.
    task.claim_expires_at = stored.task.claim_expires_at;
    assert_eq!(task, stored.task);
    assert_eq!(status.steps, stored.steps);
    assert_eq!(status.edges, stored.edges);
}

async fn waits_for(
    events: &mut tokio::sync::broadcast::Receiver<EngineEvent>,
    wanted: impl Fn(&EngineEvent) -> bool,
) {
    guarded("an engine event", async {
        loop {
            if wanted(&events.recv().await.unwrap()) {
                return;
            }
        }
    })
    .await;
}

async fn a_running_task_is_read_from_memory_as_stored(db: &TestDb) {
    let engine = start_engine(test_options("tcp://127.0.0.1:0"), db.store().await).await;
    let mut events = engine.subscribe();
    let task_id = create_task(&engine, "examples", "diamond", json!({ "order": 7 })).await;
    assert_memory_matches_store(&engine, task_id, true).await;

    let mut raw = RawWorker::connect(engine.endpoint(), "raw-memory");
    raw.hello(&["tasker.test"], 10, Vec::new()).await;
    let root = raw.batch().await;
    assert_memory_matches_store(&engine, task_id, true).await;
    let status = engine.task_status(task_id).await.unwrap();
    assert_eq!(status.task.state, TaskState::InProgress);
    assert_eq!(status.steps[0].state, StepState::InProgress);

    let done = raw.completed(root.batch_id, root.steps[0].step_id, 1, json!({ "x": 1 }));
    raw.send(done).await;
    let children = raw.batch().await;
    assert_eq!(children.steps.len(), 2);
    waits_for(&mut events, |e| {
        matches!(e, EngineEvent::StepChanged { step_name, state: StepState::InProgress, .. } if step_name == "c")
    })
    .await;
    assert_memory_matches_store(&engine, task_id, true).await;

    for step in &children.steps {
        let done = raw.completed(children.batch_id, step.step_id, 1, json!(step.step_name));
        raw.send(done).await;
    }
    let last = raw.batch().await;
    let done = raw.completed(last.batch_id, last.steps[0].step_id, 1, json!("d"));
    raw.send(done).await;
    let outcome = guarded("the diamond", engine.handle(task_id))
        .await
        .unwrap();
    assert_eq!(outcome.state, TaskState::Complete);
    // Finished: no longer held, read from the store.
    assert_memory_matches_store(&engine, task_id, false).await;
    raw.close().await;
    engine.shutdown().await;
}

on_every_backend! {
    a_running_task_is_read_from_memory_as_stored => a_running_task_is_read_from_memory_as_stored,
}
