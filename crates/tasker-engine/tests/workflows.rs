//! Every example workflow runs to completion through a real engine, a real store and real
//! workers over real sockets, with each step receiving exactly its ancestors' results.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod support;

use serde_json::json;
use support::*;
use tasker_core::state::{StepState, TaskState};

const SHAPES: &[&str] = &["linear", "diamond", "parallel_merge", "tree", "mixed_dag"];

/// Runs every `tasker.test` example shape plus order fulfillment over `endpoint`.
async fn run_every_shape(db: &TestDb, endpoint: &str) {
    let store = db.store().await;
    let engine = start_engine(test_options(endpoint), store).await;
    let worker = TestWorker::start(engine.endpoint(), 4, registry(None));

    let mut tasks = Vec::new();
    for shape in SHAPES {
        tasks.push((
            *shape,
            create_task(&engine, "examples", shape, json!({})).await,
        ));
    }
    let order = create_task(
        &engine,
        "order_fulfillment",
        "order_fulfillment",
        json!({
            "order_id": 12345,
            "customer": { "email": "ada@example.com", "name": "Ada" },
            "items": [{ "sku": "A-1", "quantity": 2, "unit_price_cents": 1500 }]
        }),
    )
    .await;

    for (shape, task_id) in &tasks {
        let outcome = guarded(shape, engine.handle(*task_id)).await.unwrap();
        assert_eq!(outcome.state, TaskState::Complete, "{shape}: {outcome:?}");
        assert_previous_results_match_ancestors(&engine, *task_id).await;
    }
    let outcome = guarded("order fulfillment", engine.handle(order))
        .await
        .unwrap();
    assert_eq!(outcome.state, TaskState::Complete, "{outcome:?}");
    let status = engine.task_status(order).await.unwrap();
    assert!(status.steps.iter().all(|s| s.state == StepState::Complete));
    assert!(status.steps.iter().all(|s| s.attempts == 1));
    let ship = status
        .steps
        .iter()
        .find(|s| s.name == "ship_order")
        .unwrap();
    assert!(ship.results.is_some(), "ship_order produced output");

    let stats = engine.stats();
    assert_eq!(stats.results_fenced, 0);
    assert_eq!(stats.results_rejected, 0);
    assert!(stats.results_applied > 0);
    assert!(stats.handoff_latency.count > 0, "children were handed off");
    assert_eq!(stats.tasks_completed, SHAPES.len() as u64 + 1);

    worker.stop().await;
    engine.shutdown().await;
}

async fn every_shape_over_tcp(db: &TestDb) {
    run_every_shape(db, "tcp://127.0.0.1:0").await;
}

async fn every_shape_over_ipc(db: &TestDb) {
    let endpoint = db.ipc_endpoint("engine.sock");
    run_every_shape(db, &endpoint).await;
}

async fn every_shape_over_inproc(db: &TestDb) {
    let endpoint = format!("inproc://engine-{}", uuid::Uuid::new_v4().simple());
    run_every_shape(db, &endpoint).await;
}

on_every_backend! {
    every_shape_completes_over_tcp => every_shape_over_tcp,
    every_shape_completes_over_ipc => every_shape_over_ipc,
    every_shape_completes_over_inproc => every_shape_over_inproc,
}
