//! Running steps, over real sockets: results and completions, capacity, cancellation, timeouts,
//! failures the worker reports itself, and graceful shutdown.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::{RunningWorker, ScriptedOrchestrator, batch, options, step};
use tasker_protocol::{
    CancelReason, ErrorCode, ResultKey, StepRef, StepStatus, WorkerHealth, reserved_error_class,
};
use tasker_worker::builtin::{TEST_HANDLER_CLASS, TestHandler};
use tasker_worker::{HandlerRegistry, StepContext};
use tokio::sync::{Notify, mpsc};

fn registry_with_test_handler() -> HandlerRegistry {
    let mut registry = HandlerRegistry::new();
    registry.register(TEST_HANDLER_CLASS, Arc::new(TestHandler::new()));
    registry
}

/// Sets a flag when dropped: proves a handler's future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Registers `sleeper`: announces its step id on `started`, then never finishes (until its
/// future is dropped, which sets `dropped`).
fn register_sleeper(
    registry: &mut HandlerRegistry,
    started: mpsc::UnboundedSender<i64>,
    dropped: Arc<AtomicBool>,
) {
    registry.register_fn("sleeper", move |step: StepContext| {
        let started = started.clone();
        let dropped = Arc::clone(&dropped);
        async move {
            let _flag = DropFlag(dropped);
            started.send(step.step_id).unwrap();
            std::future::pending::<()>().await;
            Ok(Value::Null)
        }
    });
}

#[tokio::test]
async fn a_batch_yields_one_result_per_step_then_one_completion() {
    let mut orchestrator = ScriptedOrchestrator::bind();
    let worker = RunningWorker::start(
        options(&orchestrator.endpoint(), "batch-worker", 4),
        registry_with_test_handler(),
    );
    orchestrator.handshake().await;

    let mut with_parents = step(12, "merge", TEST_HANDLER_CLASS, json!({}));
    with_parents.previous_results = support::object(json!({
        "zeta": { "n": 1 },
        "alpha": null,
    }));
    with_parents.metadata.attempt = 2;
    with_parents.metadata.idempotency_key = "12:2".to_owned();
    let sent = batch(vec![
        step(11, "root", TEST_HANDLER_CLASS, json!({})),
        with_parents,
        step(
            13,
            "doomed",
            TEST_HANDLER_CLASS,
            json!({ "fail_permanently": true }),
        ),
    ]);
    let batch_id = sent.batch_id;
    orchestrator.send(sent).await;

    let mut results = Vec::new();
    for _ in 0..3 {
        results.push(orchestrator.expect_partial().await);
    }
    let sequences: Vec<u64> = results.iter().map(|result| result.sequence).collect();
    assert_eq!(sequences, vec![1, 2, 3], "numbered in the order sent");
    results.sort_by_key(|result| result.step_id);
    for result in &results {
        assert_eq!(result.batch_id, batch_id);
        assert_eq!(result.worker_id, "batch-worker");
    }
    let (root, merge, doomed) = (&results[0], &results[1], &results[2]);
    assert_eq!(root.status, StepStatus::Completed);
    assert_eq!(root.attempt, 1);
    assert_eq!(
        root.output,
        json!({ "step": "root", "attempt": 1, "previous_results": [], "worker": "batch-worker" })
    );
    assert_eq!(merge.attempt, 2);
    assert_eq!(
        merge.output,
        json!({
            "step": "merge",
            "attempt": 2,
            "previous_results": ["alpha", "zeta"],
            "worker": "batch-worker",
        })
    );
    assert_eq!(doomed.status, StepStatus::Failed);
    assert_eq!(doomed.output, Value::Null);
    let error = doomed.error.as_ref().expect("a failure has an error");
    assert_eq!(error.error_class, "TestPermanentFailure");
    assert!(!error.retryable);

    let completion = orchestrator.expect_completion().await;
    assert_eq!(completion.batch_id, batch_id);
    assert_eq!(completion.total_steps, 3);
    assert_eq!(completion.completed_steps, 2);
    assert_eq!(completion.failed_steps, 1);
    assert_eq!(completion.worker_id, "batch-worker");
    let summaries: Vec<(i64, StepStatus)> = completion
        .step_summaries
        .iter()
        .map(|summary| (summary.step_id, summary.status))
        .collect();
    assert_eq!(
        summaries,
        vec![
            (11, StepStatus::Completed),
            (12, StepStatus::Completed),
            (13, StepStatus::Failed),
        ],
        "in batch order"
    );

    let stats = worker.handle.stats();
    assert_eq!(stats.steps_started, 3);
    assert_eq!(stats.steps_completed, 2);
    assert_eq!(stats.steps_failed, 1);
    assert_eq!(stats.batches_completed, 1);
    assert_eq!(stats.results_unacknowledged, 4);

    orchestrator
        .ack(&[
            ResultKey::partial_result(batch_id, 11),
            ResultKey::partial_result(batch_id, 12),
            ResultKey::partial_result(batch_id, 13),
            ResultKey::batch_completion(batch_id),
        ])
        .await;
    let request = orchestrator.health_request().await;
    let reply = orchestrator.expect_health_reply().await;
    assert_eq!(reply.request_id, request);
    assert_eq!(worker.handle.stats().results_unacknowledged, 0);
    worker.kill().await;
}

#[tokio::test]
async fn never_more_steps_run_at_once_than_capacity() {
    let mut orchestrator = ScriptedOrchestrator::bind();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut registry = HandlerRegistry::new();
    {
        let (running, most) = (Arc::clone(&running), Arc::clone(&most));
        registry.register_fn("probe", move |_step: StepContext| {
            let (running, most) = (Arc::clone(&running), Arc::clone(&most));
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Long enough that steps started together overlap.
                tokio::time::sleep(Duration::from_millis(30)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(Value::Null)
            }
        });
    }
    let worker = RunningWorker::start(
        options(&orchestrator.endpoint(), "bounded-worker", 2),
        registry,
    );
    orchestrator.handshake().await;

    let sent = batch(
        (1..=6)
            .map(|id| step(id, "probe", "probe", json!({})))
            .collect(),
    );
    let batch_id = sent.batch_id;
    orchestrator.send(sent).await;

    // A batch beyond capacity is an orchestrator bug: the worker says so, and runs it anyway.
    let report = orchestrator.expect_error().await;
    assert_eq!(report.code, ErrorCode::CapacityExceeded.as_str());
    assert_eq!(report.batch_id, Some(batch_id));

    let mut finished = Vec::new();
    for _ in 0..6 {
        let result = orchestrator.expect_partial().await;
        assert_eq!(result.status, StepStatus::Completed);
        finished.push(result.step_id);
    }
    finished.sort_unstable();
    assert_eq!(finished, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(orchestrator.expect_completion().await.total_steps, 6);
    assert_eq!(most.load(Ordering::SeqCst), 2, "capacity is 2");
    worker.kill().await;
}

#[tokio::test]
async fn cancel_steps_stops_running_and_queued_steps() {
    let mut orchestrator = ScriptedOrchestrator::bind();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let dropped = Arc::new(AtomicBool::new(false));
    let mut registry = HandlerRegistry::new();
    register_sleeper(&mut registry, started_tx, Arc::clone(&dropped));
    let worker = RunningWorker::start(
        options(&orchestrator.endpoint(), "cancelled-worker", 1),
        registry,
    );
    orchestrator.handshake().await;

    let sent = batch(vec![
        step(1, "running", "sleeper", json!({})),
        step(2, "queued", "sleeper", json!({})),
    ]);
    let batch_id = sent.batch_id;
    orchestrator.send(sent).await;
    let _capacity_report = orchestrator.expect_error().await;
    assert_eq!(
        support::guarded("the first step to start", started.recv()).await,
        Some(1)
    );

    // The queued step is reported at once, without ever starting.
    orchestrator
        .cancel(batch_id, vec![2], CancelReason::StepCancelled)
        .await;
    let queued = orchestrator.expect_partial().await;
    assert_eq!(queued.step_id, 2);
    assert_eq!(queued.status, StepStatus::Failed);
    let error = queued.error.expect("failed");
    assert_eq!(error.error_class, reserved_error_class::CANCELLED);
    assert!(!error.retryable);
    assert!(
        error.message.contains("step_cancelled"),
        "{}",
        error.message
    );

    // The running one is stopped: its future is dropped.
    orchestrator
        .cancel(batch_id, vec![1, 99], CancelReason::TaskCancelled)
        .await;
    let running = orchestrator.expect_partial().await;
    assert_eq!(running.step_id, 1);
    let error = running.error.expect("failed");
    assert_eq!(error.error_class, reserved_error_class::CANCELLED);
    assert!(!error.retryable);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the handler future was dropped"
    );

    let completion = orchestrator.expect_completion().await;
    assert_eq!(completion.failed_steps, 2);
    assert_eq!(worker.handle.stats().steps_started, 1, "step 2 never ran");
    worker.kill().await;
}

#[tokio::test]
async fn a_step_past_its_timeout_is_stopped_and_reported_retryable() {
    let mut orchestrator = ScriptedOrchestrator::bind();
    let worker = RunningWorker::start(
        options(&orchestrator.endpoint(), "timing-worker", 1),
        registry_with_test_handler(),
    );
    orchestrator.handshake().await;

    let mut slow = step(
        5,
        "slow",
        TEST_HANDLER_CLASS,
        json!({ "sleep_ms": 3_600_000 }),
    );
    slow.metadata.timeout_ms = Some(50);
    orchestrator.send(batch(vec![slow])).await;

    let result = orchestrator.expect_partial().await;
    assert_eq!(result.status, StepStatus::Failed);
    let error = result.error.expect("failed");
    assert_eq!(error.error_class, reserved_error_class::TIMEOUT);
    assert!(error.retryable);
    assert!(error.message.contains("50 ms"), "{}", error.message);
    assert!(result.execution_time_ms >= 50);
    worker.kill().await;
}

#[tokio::test]
async fn unknown_classes_panics_and_oversized_outputs_become_failures() {
    let mut orchestrator = ScriptedOrchestrator::bind();
    let mut registry = registry_with_test_handler();
    registry.register_fn("huge", |_step: StepContext| async {
        Ok(json!("x".repeat(70_000)))
    });
    let worker = RunningWorker::start(
        options(&orchestrator.endpoint(), "careful-worker", 4),
        registry,
    );
    let hello = orchestrator.expect_hello().await;
    orchestrator
        .welcome_with_frame_limit(&hello, 1000, 100, 65_536)
        .await;

    orchestrator
        .send(batch(vec![
            step(1, "nobody", "no.such.handler", json!({})),
            step(2, "panicky", TEST_HANDLER_CLASS, json!({ "panic": true })),
            step(3, "huge", "huge", json!({})),
        ]))
        .await;
    let mut results = Vec::new();
    for _ in 0..3 {
        results.push(orchestrator.expect_partial().await);
    }
    results.sort_by_key(|result| result.step_id);
    let errors: Vec<_> = results
        .iter()
        .map(|result| result.error.clone().expect("all failed"))
        .collect();

    assert_eq!(
        errors[0].error_class,
        reserved_error_class::UNKNOWN_HANDLER_CLASS
    );
    assert!(errors[0].retryable, "another worker may have the handler");
    assert!(errors[0].message.contains("no.such.handler"));

    assert_eq!(errors[1].error_class, "panic");
    assert!(!errors[1].retryable);
    assert!(
        errors[1].message.contains("asked to panic"),
        "{}",
        errors[1].message
    );

    assert_eq!(
        errors[2].error_class,
        reserved_error_class::OUTPUT_TOO_LARGE
    );
    assert!(!errors[2].retryable);
    assert!(errors[2].message.contains("65536"), "{}", errors[2].message);
    assert_eq!(results[2].output, Value::Null);

    assert_eq!(orchestrator.expect_completion().await.failed_steps, 3);

    // The worker survived all of it.
    orchestrator
        .send(batch(vec![step(4, "fine", TEST_HANDLER_CLASS, json!({}))]))
        .await;
    assert_eq!(
        orchestrator.expect_partial().await.status,
        StepStatus::Completed
    );
    assert!(!worker.is_finished());
    worker.kill().await;
}

#[tokio::test]
async fn graceful_shutdown_hands_back_queued_steps_and_finishes_running_ones() {
    let mut orchestrator = ScriptedOrchestrator::bind();
    let gate = Arc::new(Notify::new());
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let mut registry = HandlerRegistry::new();
    {
        let gate = Arc::clone(&gate);
        registry.register_fn("gated", move |step: StepContext| {
            let (gate, started_tx) = (Arc::clone(&gate), started_tx.clone());
            async move {
                started_tx.send(step.step_id).unwrap();
                gate.notified().await;
                Ok(json!({ "done": step.step_id }))
            }
        });
    }
    let mut worker = RunningWorker::start(
        options(&orchestrator.endpoint(), "leaving-worker", 1),
        registry,
    );
    orchestrator.handshake().await;

    let sent = batch(vec![
        step(1, "running", "gated", json!({})),
        step(2, "queued", "gated", json!({})),
    ]);
    let batch_id = sent.batch_id;
    orchestrator.send(sent).await;
    let _capacity_report = orchestrator.expect_error().await;
    assert_eq!(
        support::guarded("the first step to start", started.recv()).await,
        Some(1)
    );

    worker.shutdown();
    let goodbye = orchestrator.expect_goodbye().await;
    assert_eq!(goodbye.worker_id, "leaving-worker");
    assert_eq!(goodbye.reason, "shutdown");
    assert_eq!(
        goodbye.handed_back,
        vec![StepRef {
            batch_id,
            step_id: 2
        }]
    );

    // A batch that crosses the goodbye is handed back too.
    let late = batch(vec![step(3, "late", "gated", json!({}))]);
    let late_id = late.batch_id;
    orchestrator.send(late).await;
    let goodbye = orchestrator.expect_goodbye().await;
    assert_eq!(
        goodbye.handed_back,
        vec![StepRef {
            batch_id: late_id,
            step_id: 3
        }]
    );

    let request = orchestrator.health_request().await;
    let reply = orchestrator.expect_health_reply().await;
    assert_eq!(reply.request_id, request);
    assert_eq!(reply.status, WorkerHealth::Draining);
    assert_eq!(reply.in_flight, 1);

    gate.notify_one();
    let result = orchestrator.expect_partial().await;
    assert_eq!(result.step_id, 1);
    assert_eq!(result.output, json!({ "done": 1 }));

    // No completion for a batch with a handed-back step: the next message answers this request.
    let request = orchestrator.health_request().await;
    assert_eq!(orchestrator.expect_health_reply().await.request_id, request);
    assert!(
        !worker.is_finished(),
        "the worker waits for the acknowledgement of its last result"
    );
    orchestrator
        .ack(&[ResultKey::partial_result(batch_id, 1)])
        .await;
    worker.join().await.expect("a clean shutdown");
}

#[tokio::test]
async fn steps_still_running_after_the_grace_period_are_stopped_and_reported() {
    let mut orchestrator = ScriptedOrchestrator::bind();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let dropped = Arc::new(AtomicBool::new(false));
    let mut registry = HandlerRegistry::new();
    register_sleeper(&mut registry, started_tx, Arc::clone(&dropped));
    let mut options = options(&orchestrator.endpoint(), "impatient-worker", 1);
    options.shutdown_grace = Duration::from_millis(100);
    options.shutdown_ack_timeout = Duration::from_millis(100);
    let mut worker = RunningWorker::start(options, registry);
    orchestrator.handshake().await;

    let sent = batch(vec![step(1, "forever", "sleeper", json!({}))]);
    let batch_id = sent.batch_id;
    orchestrator.send(sent).await;
    support::guarded("the step to start", started.recv()).await;

    worker.shutdown();
    assert!(orchestrator.expect_goodbye().await.handed_back.is_empty());
    let result = orchestrator.expect_partial().await;
    let error = result.error.expect("stopped");
    assert_eq!(error.error_class, "tasker.worker_shutdown");
    assert!(error.retryable);
    assert!(dropped.load(Ordering::SeqCst));
    let completion = orchestrator.expect_completion().await;
    assert_eq!(completion.batch_id, batch_id);
    assert_eq!(completion.failed_steps, 1);

    // Nobody acknowledges: the worker still stops, after its bounded wait.
    worker.join().await.expect("a clean shutdown");
}
