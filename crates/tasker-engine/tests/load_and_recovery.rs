//! Two workers sharing 500 tasks with no step run twice; an engine stopped mid-run and started
//! again on the same database finishing every task.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod support;

use std::collections::BTreeSet;

use serde_json::json;
use support::*;
use tasker_core::state::{StepState, TaskState};

/// 500 diamonds over two workers: every step executed exactly once, both workers busy.
async fn two_workers_share_the_load(db: &TestDb) {
    let log = db.dir.path().join("executions.log");
    let engine = start_engine(test_options("tcp://127.0.0.1:0"), db.store().await).await;
    let one = TestWorker::start(engine.endpoint(), 10, registry(Some(&log)));
    let two = TestWorker::start(engine.endpoint(), 10, registry(Some(&log)));
    let mut tasks = Vec::new();
    let started = std::time::Instant::now();
    for _ in 0..500 {
        tasks.push(create_task(&engine, "examples", "diamond", json!({})).await);
    }
    println!("created 500 tasks in {:?}", started.elapsed());
    for &task_id in &tasks {
        let outcome = guarded("a diamond", engine.handle(task_id)).await.unwrap();
        assert_eq!(outcome.state, TaskState::Complete);
    }
    println!("all done after {:?}", started.elapsed());
    let executions = read_execution_log(&log);
    assert_eq!(executions.len(), 500 * 4, "every step ran");
    let mut workers = BTreeSet::new();
    for ((task_id, step), runs) in &executions {
        assert_eq!(runs.len(), 1, "task {task_id} step {step} ran {runs:?}");
        assert_eq!(runs[0].0, 1, "first attempt");
        workers.insert(runs[0].1.clone());
    }
    assert_eq!(
        workers,
        BTreeSet::from([
            one.handle.worker_id().to_owned(),
            two.handle.worker_id().to_owned()
        ]),
        "both workers did work"
    );
    let (a, b) = (one.handle.stats(), two.handle.stats());
    assert_eq!(a.steps_completed + b.steps_completed, 2000);
    let stats = engine.stats();
    assert!(
        stats.results_applied >= 2000,
        "2000 partial results (plus batch completions) applied"
    );
    // A result whose ack is slow under load is re-sent by its worker (after liveness ×
    // heartbeat interval) and acknowledged as a duplicate: never applied twice, never run twice
    // (the execution log above). No attempt was ever given up, so nothing is fenced.
    assert_eq!(stats.results_fenced, 0);
    assert_eq!(stats.steps_timed_out + stats.steps_lost, 0);
    assert!(
        stats.results_committed > stats.commits,
        "results share transactions (group commit): {} results in {} commits",
        stats.results_committed,
        stats.commits
    );
    for task_id in tasks.iter().take(20) {
        assert_previous_results_match_ancestors(&engine, *task_id).await;
    }
    println!(
        "handoff p50 {:?} p99 {:?}; {} results in {} commits",
        stats.handoff_latency.p50(),
        stats.handoff_latency.p99(),
        stats.results_committed,
        stats.commits
    );
    one.stop().await;
    two.stop().await;
    engine.shutdown().await;
}

/// Stop the engine while steps are running, start a new one on the same database and endpoint:
/// the worker reconnects, re-registers listing the steps it still runs, the new engine adopts
/// them (no re-execution) and every task completes.
async fn a_restarted_engine_finishes_every_task(db: &TestDb) {
    let endpoint = db.ipc_endpoint("engine.sock");
    let log = db.dir.path().join("executions.log");
    let first = start_engine(test_options(&endpoint), db.store().await).await;
    let worker = TestWorker::start(first.endpoint(), 4, registry(Some(&log)));
    let slow = json!({ "test_behaviour": {
        "ingest": { "sleep_ms": 30 }, "clean": { "sleep_ms": 30 }, "enrich": { "sleep_ms": 30 },
        "score": { "sleep_ms": 30 }, "audit": { "sleep_ms": 30 }, "index": { "sleep_ms": 30 },
        "report": { "sleep_ms": 30 }, "publish": { "sleep_ms": 30 }
    }});
    let long = create_task(
        &first,
        "examples",
        "linear",
        json!({ "test_behaviour": { "step_1": { "sleep_ms": 1500 } } }),
    )
    .await;
    let mut tasks = vec![long];
    for _ in 0..12 {
        tasks.push(create_task(&first, "examples", "mixed_dag", slow.clone()).await);
    }
    // Stop once the long step is running on the worker (its execution is logged at its start).
    guarded("the long step to start", async {
        while !read_execution_log(&log).contains_key(&(long, "step_1".to_owned())) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    first.shutdown().await;
    let store = db.store().await;
    let unfinished = {
        let mut n = 0;
        for &task_id in &tasks {
            if !store.task_get(task_id).await.unwrap().state.is_terminal() {
                n += 1;
            }
        }
        n
    };
    assert!(unfinished > 0, "the engine stopped mid-run");
    let long_step = store.task_load_dag(long).await.unwrap().steps[0].clone();
    assert_eq!(
        long_step.state,
        StepState::InProgress,
        "in flight at the stop"
    );

    let second = start_engine(test_options(&endpoint), db.store().await).await;
    for &task_id in &tasks {
        let outcome = guarded("a task after the restart", second.handle(task_id))
            .await
            .unwrap();
        assert_eq!(outcome.state, TaskState::Complete, "{outcome:?}");
        assert_previous_results_match_ancestors(&second, task_id).await;
        let status = second.task_status(task_id).await.unwrap();
        assert!(status.steps.iter().all(|s| s.state == StepState::Complete));
    }
    let status = second.task_status(long).await.unwrap();
    assert_eq!(
        status.steps[0].attempts, 1,
        "the step running across the restart was adopted, not run again"
    );
    assert_eq!(
        read_execution_log(&log)[&(long, "step_1".to_owned())].len(),
        1
    );
    let stats = second.stats();
    assert_eq!(
        stats.steps_lost + stats.steps_timed_out,
        0,
        "steps in flight at the restart were adopted from the worker's hello, not lost"
    );
    worker.stop().await;
    second.shutdown().await;
}

/// Tasks created by another process (straight into the store) are found by the safety-net poll.
async fn tasks_created_elsewhere_are_picked_up(db: &TestDb) {
    let engine = start_engine(test_options("tcp://127.0.0.1:0"), db.store().await).await;
    let worker = TestWorker::start(engine.endpoint(), 4, registry(None));
    // Another process writes the task into the database; this engine hears nothing of it.
    let template = example_templates().get("examples", "linear", None).unwrap();
    let new_task = tasker_engine::TaskRequest::default()
        .into_new_task(&template, chrono::Utc::now())
        .unwrap();
    let other_process = db.store().await;
    let task_id = other_process.task_create(new_task).await.unwrap().task_id;
    let outcome = guarded("the task created elsewhere", engine.handle(task_id))
        .await
        .unwrap();
    assert_eq!(outcome.state, TaskState::Complete);
    assert_previous_results_match_ancestors(&engine, task_id).await;
    worker.stop().await;
    engine.shutdown().await;
}

/// Many tasks created in one transaction all run.
async fn tasks_created_in_bulk_run(db: &TestDb) {
    let engine = start_engine(test_options("tcp://127.0.0.1:0"), db.store().await).await;
    let worker = TestWorker::start(engine.endpoint(), 8, registry(None));
    let requests = (0..50)
        .map(|i| tasker_engine::TaskRequest {
            namespace: "examples".into(),
            name: if i % 2 == 0 { "tree" } else { "parallel_merge" }.into(),
            ..Default::default()
        })
        .collect();
    let created = engine.initialize_tasks(requests).await.unwrap();
    assert_eq!(created.len(), 50);
    for task in created {
        let outcome = guarded("a bulk task", engine.handle(task.task_id))
            .await
            .unwrap();
        assert_eq!(outcome.state, TaskState::Complete);
    }
    worker.stop().await;
    engine.shutdown().await;
    let after = engine
        .initialize_task(tasker_engine::TaskRequest {
            namespace: "examples".into(),
            name: "tree".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(after, tasker_engine::EngineError::Stopped),
        "{after}"
    );
}

on_every_backend! {
    two_workers_share_500_tasks_running_every_step_once => two_workers_share_the_load,
    a_restarted_engine_finishes_every_task => a_restarted_engine_finishes_every_task,
    tasks_created_by_another_process_are_picked_up => tasks_created_elsewhere_are_picked_up,
    tasks_created_in_bulk_run => tasks_created_in_bulk_run,
}
