//! Failures: retries with backoff (the retry never dispatched before its `backoff_until`, read
//! from the store's transition history), a handler's `retry_after`, permanent failures and
//! exhausted retries failing the task with the step named, and timeouts retried — the worker's
//! timeout, and the engine's own deadline for an attempt whose worker says nothing.
//!
//! Backoff and deadlines run on a manual clock: the test moves it to each retry time (or to a
//! deadline) as the engine's events announce them, so every delay is exact and nothing waits in
//! real time.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod support;

use chrono::{DateTime, Utc};
use serde_json::json;
use support::*;
use tasker_core::backoff::BackoffPolicy;
use tasker_core::state::{StepState, TaskState};
use tasker_engine::EngineHandle;
use tasker_store::{StepRecord, TransitionsOf};

fn quick_backoff() -> BackoffPolicy {
    BackoffPolicy {
        base_delay_ms: 300,
        max_delay_ms: 5_000,
        multiplier: 2.0,
        jitter: 0.0,
    }
}

async fn step_named(engine: &EngineHandle, task_id: i64, name: &str) -> StepRecord {
    engine
        .task_status(task_id)
        .await
        .unwrap()
        .steps
        .into_iter()
        .find(|s| s.name == name)
        .unwrap()
}

/// Every `fail` transition of the step with its recorded `backoff_until`, and every dispatch
/// time, in order.
async fn failures_and_dispatches(
    engine: &EngineHandle,
    step_id: i64,
) -> (
    Vec<(DateTime<Utc>, Option<DateTime<Utc>>, String)>,
    Vec<DateTime<Utc>>,
) {
    let history = engine
        .store()
        .transitions_list(TransitionsOf::Step(step_id))
        .await
        .unwrap();
    let mut failures = Vec::new();
    let mut dispatches = Vec::new();
    for row in history {
        if row.to_state == "in_progress" {
            dispatches.push(row.created_at);
        }
        if row.to_state == "error" {
            let metadata = row.metadata.unwrap_or_default();
            let until = metadata["backoff_until"]
                .as_str()
                .map(|t| t.parse::<DateTime<Utc>>().unwrap());
            let class = metadata["error_class"].as_str().unwrap_or("").to_owned();
            failures.push((row.created_at, until, class));
        }
    }
    (failures, dispatches)
}

async fn retries_respect_backoff(db: &TestDb) {
    let mut options = manual_options("tcp://127.0.0.1:0");
    options.default_backoff = quick_backoff();
    let (engine, clock) = start_engine_manual(options, db.store().await).await;
    let mut events = engine.subscribe();
    let worker = manual_worker(&engine);
    let task_id = create_task(
        &engine,
        "examples",
        "diamond",
        json!({ "test_behaviour": {
            "b": { "fail_retryable_attempts": 2 },
            "c": { "fail_retryable_attempts": 1, "retry_after_ms": 700 }
        }}),
    )
    .await;
    let state = run_on_manual_clock(&engine, &mut events, &clock, task_id).await;
    assert_eq!(state, TaskState::Complete);
    assert_previous_results_match_ancestors(&engine, task_id).await;

    let b = step_named(&engine, task_id, "b").await;
    assert_eq!(b.attempts, 3, "two retryable failures, then success");
    assert_eq!(b.results.as_ref().unwrap()["attempt"], json!(3));
    let (failures, dispatches) = failures_and_dispatches(&engine, b.step_id).await;
    assert_eq!(failures.len(), 2);
    assert_eq!(dispatches.len(), 3);
    for (i, (failed_at, until, _)) in failures.iter().enumerate() {
        let until = until.expect("a retryable failure records backoff_until");
        let expected = chrono::TimeDelta::milliseconds(300 * (1 << i));
        assert_eq!(
            until - *failed_at,
            expected,
            "exponential backoff without jitter"
        );
        assert_eq!(
            dispatches[i + 1],
            until,
            "retry {} dispatched the moment its backoff ended, not before",
            i + 1
        );
    }

    let c = step_named(&engine, task_id, "c").await;
    assert_eq!(c.attempts, 2);
    let (failures, dispatches) = failures_and_dispatches(&engine, c.step_id).await;
    let (failed_at, until, _) = failures[0];
    let until = until.unwrap();
    assert_eq!(
        until - failed_at,
        chrono::TimeDelta::milliseconds(700),
        "the handler's retry_after replaces the policy's delay"
    );
    assert_eq!(dispatches[1], until);

    worker.stop().await;
    engine.shutdown().await;
}

async fn permanent_failure_fails_the_task(db: &TestDb) {
    let engine = start_engine(test_options("tcp://127.0.0.1:0"), db.store().await).await;
    let worker = TestWorker::start(engine.endpoint(), 4, registry(None));
    let task_id = create_task(
        &engine,
        "examples",
        "diamond",
        json!({ "test_behaviour": { "b": { "fail_permanently": true } } }),
    )
    .await;
    let outcome = guarded("the diamond", engine.handle(task_id))
        .await
        .unwrap();
    assert_eq!(outcome.state, TaskState::Error);
    let reason = outcome.reason.clone().unwrap();
    assert!(reason.contains("`b`"), "{reason}");
    assert!(reason.contains("non-retryable"), "{reason}");
    assert_eq!(outcome.failed_steps.len(), 1);
    assert_eq!(outcome.failed_steps[0].name, "b");
    assert_eq!(outcome.failed_steps[0].reason, "non_retryable");

    let status = engine.task_status(task_id).await.unwrap();
    assert_eq!(status.task.state, TaskState::Error);
    let by_name = |n: &str| status.steps.iter().find(|s| s.name == n).unwrap().clone();
    assert_eq!(by_name("a").state, StepState::Complete);
    assert_eq!(
        by_name("c").state,
        StepState::Complete,
        "the other branch ran"
    );
    assert_eq!(by_name("b").state, StepState::Error);
    assert_eq!(
        by_name("b").attempts,
        1,
        "a permanent failure is not retried"
    );
    assert_eq!(by_name("d").state, StepState::Pending, "d is blocked by b");
    // The failed step is in the dead letter queue, with its reason.
    let letters = guarded("the dead letter", async {
        loop {
            let page = engine
                .store()
                .dead_letters_list(tasker_store::DeadLettersList {
                    task_id: Some(task_id),
                    ..Default::default()
                })
                .await
                .unwrap();
            if !page.items.is_empty() {
                return page.items;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].step_id, Some(by_name("b").step_id));
    assert!(letters[0].reason.contains("`b`"), "{}", letters[0].reason);
    assert_eq!(letters[0].snapshot["failure"], json!("non_retryable"));
    // Waiting again on a finished task answers from the store.
    let again = engine.handle(task_id).await.unwrap();
    assert_eq!(again.state, TaskState::Error);
    assert_eq!(again.failed_steps[0].name, "b");

    worker.stop().await;
    engine.shutdown().await;
}

async fn exhausted_retries_fail_the_task(db: &TestDb) {
    let mut options = manual_options("tcp://127.0.0.1:0");
    options.default_backoff = BackoffPolicy {
        base_delay_ms: 50,
        ..quick_backoff()
    };
    let (engine, clock) = start_engine_manual(options, db.store().await).await;
    let mut events = engine.subscribe();
    let worker = manual_worker(&engine);
    let task_id = create_task(
        &engine,
        "examples",
        "linear",
        json!({ "test_behaviour": { "step_2": { "fail_retryable_attempts": 10 } } }),
    )
    .await;
    assert_eq!(
        run_on_manual_clock(&engine, &mut events, &clock, task_id).await,
        TaskState::Error
    );
    let outcome = guarded("the chain", engine.handle(task_id)).await.unwrap();
    assert_eq!(outcome.state, TaskState::Error, "{outcome:?}");
    assert_eq!(outcome.failed_steps[0].name, "step_2");
    assert_eq!(outcome.failed_steps[0].reason, "retries_exhausted");
    assert_eq!(
        outcome.failed_steps[0].attempts, 3,
        "retry_limit 3 by default"
    );
    assert!(outcome.reason.unwrap().contains("3 of 3 attempts"));
    let step = step_named(&engine, task_id, "step_2").await;
    assert_eq!(step.attempts, 3);
    assert_eq!(step.state, StepState::Error);
    worker.stop().await;
    engine.shutdown().await;
}

const TIMEOUT_TEMPLATE: &str = r#"
name: slow_then_fast
namespace: tests
version: 1.0.0
steps:
  - name: slow
    handler_class: tasker.test
    timeout_ms: 200
    retry_limit: 3
    backoff: { base_delay_ms: 50, max_delay_ms: 1000, multiplier: 2.0, jitter: 0.0 }
  - name: after
    handler_class: tasker.test
    depends_on: [slow]
"#;

async fn a_timed_out_step_is_retried(db: &TestDb) {
    let (engine, clock) =
        start_engine_manual(manual_options("tcp://127.0.0.1:0"), db.store().await).await;
    let mut events = engine.subscribe();
    engine.register_template(TIMEOUT_TEMPLATE).unwrap();
    let worker = manual_worker(&engine);
    // Every attempt sleeps past its 200 ms timeout; the worker stops it and reports
    // `tasker.timeout` (retryable); the engine retries it until the retry limit.
    let task_id = create_task(
        &engine,
        "tests",
        "slow_then_fast",
        json!({ "test_behaviour": { "slow": { "sleep_ms": 5000 } } }),
    )
    .await;
    assert_eq!(
        run_on_manual_clock(&engine, &mut events, &clock, task_id).await,
        TaskState::Error
    );
    let outcome = guarded("the task", engine.handle(task_id)).await.unwrap();
    assert_eq!(outcome.state, TaskState::Error);
    assert_eq!(outcome.failed_steps[0].name, "slow");
    assert_eq!(outcome.failed_steps[0].reason, "retries_exhausted");
    let slow = step_named(&engine, task_id, "slow").await;
    assert_eq!(slow.attempts, 3, "each timeout was retried until the limit");
    let (failures, _) = failures_and_dispatches(&engine, slow.step_id).await;
    assert_eq!(failures.len(), 3);
    assert!(
        failures
            .iter()
            .all(|(_, _, class)| class == "tasker.timeout")
    );
    worker.stop().await;
    engine.shutdown().await;
}

/// A worker for an engine on a manual clock (heartbeats once a minute).
fn manual_worker(engine: &EngineHandle) -> TestWorker {
    TestWorker::start_with_heartbeat(
        engine.endpoint(),
        4,
        registry(None),
        std::time::Duration::from_secs(60),
    )
}

/// A worker that takes a step and never answers: the engine gives up on the attempt exactly at
/// its deadline (timeout + grace, on the engine's clock), tells the worker to cancel it, and
/// retries it after its backoff.
async fn a_silent_attempt_times_out_at_its_deadline(db: &TestDb) {
    let mut options = manual_options("tcp://127.0.0.1:0");
    options.timeout_grace = std::time::Duration::from_millis(500);
    let (engine, clock) = start_engine_manual(options, db.store().await).await;
    let mut events = engine.subscribe();
    engine.register_template(TIMEOUT_TEMPLATE).unwrap();
    let mut raw = RawWorker::connect(engine.endpoint(), "raw-silent-manual");
    raw.hello_every(&["tasker.test"], 1, Vec::new(), 60_000)
        .await;
    create_task(&engine, "tests", "slow_then_fast", json!({})).await;
    let first = raw.batch().await;
    assert_eq!(first.steps[0].metadata.attempt, 1);
    let step_id = first.steps[0].step_id;
    let (_, dispatches) = failures_and_dispatches(&engine, step_id).await;
    let deadline = dispatches[0] + chrono::TimeDelta::milliseconds(200 + 500);

    clock.advance_to(deadline);
    let cancel = raw
        .wait_for("cancel_steps", |m| {
            matches!(m, tasker_protocol::OrchestratorMessage::CancelSteps(_))
        })
        .await;
    let tasker_protocol::OrchestratorMessage::CancelSteps(cancel) = cancel else {
        unreachable!()
    };
    assert_eq!(cancel.batch_id, first.batch_id);
    assert_eq!(cancel.step_ids, vec![step_id]);
    assert_eq!(cancel.reason, tasker_protocol::CancelReason::Timeout);
    let until = guarded("the failed attempt", async {
        loop {
            if let tasker_engine::EngineEvent::StepChanged {
                step_id: id,
                state: StepState::Error,
                backoff_until,
                ..
            } = events.recv().await.unwrap()
                && id == step_id
            {
                return backoff_until.expect("a timeout is retried");
            }
        }
    })
    .await;
    let (failures, _) = failures_and_dispatches(&engine, step_id).await;
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, deadline, "failed exactly at the deadline");
    assert_eq!(failures[0].2, "tasker.timeout");
    assert_eq!(until - deadline, chrono::TimeDelta::milliseconds(50));

    // The worker still holds the step (its slot is not released by a timeout), so the retry
    // waits for a free slot: the worker reports the cancelled step, then gets attempt 2 once
    // the backoff has passed.
    let late = raw.completed(first.batch_id, step_id, 1, json!({ "late": true }));
    raw.send(late).await;
    assert_eq!(
        raw.ack_of(tasker_protocol::ResultKey::partial_result(
            first.batch_id,
            step_id
        ))
        .await,
        tasker_protocol::AckOutcome::Fenced,
        "the timed-out attempt's late result is not applied"
    );
    clock.advance_to(until);
    let second = raw.batch().await;
    assert_eq!(second.steps[0].step_id, step_id);
    assert_eq!(second.steps[0].metadata.attempt, 2);
    let (_, dispatches) = failures_and_dispatches(&engine, step_id).await;
    assert_eq!(
        dispatches[1], until,
        "dispatched the moment its backoff ended"
    );
    raw.close().await;
    engine.shutdown().await;
}

on_every_backend! {
    a_silent_attempt_times_out_at_its_deadline => a_silent_attempt_times_out_at_its_deadline,
    retries_wait_for_their_backoff_then_succeed => retries_respect_backoff,
    a_permanent_failure_fails_the_task_naming_the_step => permanent_failure_fails_the_task,
    exhausted_retries_fail_the_task => exhausted_retries_fail_the_task,
    timed_out_attempts_are_retried => a_timed_out_step_is_retried,
}
