//! The worker's session with the orchestrator, over real sockets: handshake, heartbeats,
//! rejection, re-registration, result holding and re-sending, bad frames, health.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::time::Duration;

use serde_json::json;
use support::{RunningWorker, ScriptedOrchestrator, batch, options, step};
use tasker_protocol::{
    ErrorCode, PROTOCOL_VERSION, ResultKey, StepRef, StepStatus, WorkerHealth, WorkerMessage,
};
use tasker_worker::builtin::{self, TEST_HANDLER_CLASS};
use tasker_worker::{HandlerRegistry, WorkerError};

fn test_registry() -> HandlerRegistry {
    let mut registry = HandlerRegistry::new();
    registry.register(
        TEST_HANDLER_CLASS,
        std::sync::Arc::new(builtin::TestHandler::new()),
    );
    registry
}

#[tokio::test]
async fn hello_announces_handlers_capacity_and_sdk() {
    let mut orchestrator = ScriptedOrchestrator::bind();
    let mut options = options(&orchestrator.endpoint(), "hello-worker", 3);
    options.heartbeat_interval = Some(Duration::from_millis(250));
    let worker = RunningWorker::start(options, builtin::registry());

    let hello = orchestrator.expect_hello().await;
    assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
    assert_eq!(hello.worker_id, "hello-worker");
    assert_eq!(hello.name, "hello-worker (tests)");
    assert_eq!(hello.sdk.name, "tasker-worker-rust");
    assert_eq!(hello.sdk.language, "rust");
    assert_eq!(hello.sdk.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(hello.handler_classes, builtin::registry().handler_classes());
    assert_eq!(hello.capacity, 3);
    assert_eq!(hello.heartbeat_interval_ms, Some(250));
    assert!(hello.in_flight.is_empty());
    worker.kill().await;
}

#[tokio::test]
async fn heartbeats_follow_welcome_at_the_negotiated_interval() {
    let mut orchestrator = ScriptedOrchestrator::bind();
    let worker = RunningWorker::start(
        options(&orchestrator.endpoint(), "beating-worker", 4),
        test_registry(),
    );
    let hello = orchestrator.expect_hello().await;
    assert!(!worker.handle.is_registered());
    orchestrator.welcome(&hello, 100, 100).await;

    for _ in 0..3 {
        match orchestrator.next_any().await {
            WorkerMessage::Heartbeat(heartbeat) => {
                assert_eq!(heartbeat.worker_id, "beating-worker");
                assert_eq!(heartbeat.in_flight, 0);
                assert_eq!(heartbeat.free_capacity, 4);
            }
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }
    assert!(worker.handle.is_registered());
    assert!(worker.handle.stats().heartbeats_sent >= 3);
    worker.kill().await;
}

#[tokio::test]
async fn a_fatal_hello_rejection_ends_run_with_its_code() {
    let mut orchestrator = ScriptedOrchestrator::bind();
    let worker = RunningWorker::start(
        options(&orchestrator.endpoint(), "old-worker", 1),
        test_registry(),
    );
    orchestrator.expect_hello().await;
    orchestrator
        .reject_hello(
            "unsupported_protocol_version",
            "this peer speaks protocol 2.0 and accepts only major version 2",
        )
        .await;

    let error = worker.join().await.expect_err("rejected for good");
    assert!(
        matches!(&error, WorkerError::HelloRejected { code, .. } if code == "unsupported_protocol_version"),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains("unsupported_protocol_version"), "{text}");
    assert!(text.contains("2.0"), "{text}");
}

#[tokio::test]
async fn an_unknown_hello_rejection_code_is_fatal_too() {
    let mut orchestrator = ScriptedOrchestrator::bind();
    let worker = RunningWorker::start(
        options(&orchestrator.endpoint(), "odd-worker", 1),
        test_registry(),
    );
    orchestrator.expect_hello().await;
    orchestrator.reject_hello("banned_for_style", "no").await;
    let error = worker.join().await.expect_err("unknown codes are fatal");
    assert!(error.to_string().contains("banned_for_style"), "{error}");
}

#[tokio::test]
async fn not_accepting_workers_is_retried_on_a_fresh_connection() {
    let mut orchestrator = ScriptedOrchestrator::bind();
    let mut options = options(&orchestrator.endpoint(), "patient-worker", 1);
    options.welcome_timeout = Duration::from_millis(500);
    let worker = RunningWorker::start(options, test_registry());

    orchestrator.expect_hello().await;
    let first_peer = orchestrator.peer.clone();
    orchestrator
        .reject_hello("not_accepting_workers", "shutting down")
        .await;

    let hello = orchestrator.expect_hello().await;
    assert_ne!(orchestrator.peer, first_peer, "a fresh connection");
    orchestrator.welcome(&hello, 100, 100).await;
    assert!(matches!(
        orchestrator.next_any().await,
        WorkerMessage::Heartbeat(_)
    ));
    assert!(worker.handle.is_registered());
    assert!(!worker.is_finished());
    assert_eq!(worker.handle.stats().hellos_sent, 2);
    worker.kill().await;
}

#[tokio::test]
async fn a_silent_orchestrator_is_declared_dead_and_the_worker_registers_again() {
    let mut orchestrator = ScriptedOrchestrator::bind();
    let worker = RunningWorker::start(
        options(&orchestrator.endpoint(), "watchful-worker", 1),
        test_registry(),
    );
    let hello = orchestrator.expect_hello().await;
    let first_peer = orchestrator.peer.clone();
    // 100 ms × 2: the scripted orchestrator never heartbeats, so the worker gives up on it.
    orchestrator.welcome(&hello, 100, 2).await;

    let again = orchestrator.expect_hello().await;
    assert_ne!(orchestrator.peer, first_peer, "a fresh socket");
    assert!(again.in_flight.is_empty());
    assert!(worker.handle.stats().reconnects >= 1);
    worker.kill().await;
}

#[tokio::test]
async fn held_results_are_resent_after_reconnects_until_acknowledged() {
    let mut orchestrator = ScriptedOrchestrator::bind();
    let endpoint = orchestrator.endpoint();
    let worker = RunningWorker::start(options(&endpoint, "holding-worker", 4), test_registry());
    orchestrator.handshake().await;

    let sent = batch(vec![
        step(1, "first", TEST_HANDLER_CLASS, json!({})),
        step(2, "second", TEST_HANDLER_CLASS, json!({})),
    ]);
    let batch_id = sent.batch_id;
    orchestrator.send(sent).await;
    let mut partials = [
        orchestrator.expect_partial().await,
        orchestrator.expect_partial().await,
    ];
    partials.sort_by_key(|result| result.step_id);
    let completion = orchestrator.expect_completion().await;
    orchestrator
        .ack(&[ResultKey::partial_result(batch_id, 1)])
        .await;

    // The orchestrator restarts: its socket closes and a new one binds the same endpoint.
    orchestrator.stop().await;
    let mut orchestrator = ScriptedOrchestrator::rebind(&endpoint).await;
    let hello = orchestrator.expect_hello().await;
    assert_eq!(
        hello.in_flight,
        vec![StepRef {
            batch_id,
            step_id: 2
        }],
        "the unacknowledged step is still accounted for; the acknowledged one is not"
    );
    orchestrator.welcome(&hello, 1000, 100).await;
    let resent = orchestrator.expect_partial().await;
    assert_eq!(resent, partials[1], "re-sent unchanged, sequence included");
    assert_eq!(orchestrator.expect_completion().await, completion);
    orchestrator
        .ack(&[
            ResultKey::partial_result(batch_id, 2),
            ResultKey::batch_completion(batch_id),
        ])
        .await;

    // Another restart: nothing is held any more, so nothing is listed or re-sent.
    let request = orchestrator.health_request().await;
    assert_eq!(orchestrator.expect_health_reply().await.request_id, request);
    orchestrator.stop().await;
    let mut orchestrator = ScriptedOrchestrator::rebind(&endpoint).await;
    let hello = orchestrator.expect_hello().await;
    assert!(hello.in_flight.is_empty(), "{:?}", hello.in_flight);
    orchestrator.welcome(&hello, 1000, 100).await;
    let request = orchestrator.health_request().await;
    // Results would have been re-sent right after welcome, before this reply.
    let reply = orchestrator.expect_health_reply().await;
    assert_eq!(reply.request_id, request);

    let stats = worker.handle.stats();
    assert_eq!(stats.results_acknowledged, 3);
    assert_eq!(stats.results_unacknowledged, 0);
    assert_eq!(stats.results_resent, 2);
    worker.kill().await;
}

#[tokio::test]
async fn not_registered_makes_the_worker_say_hello_again_and_resend() {
    let mut orchestrator = ScriptedOrchestrator::bind();
    let mut options = options(&orchestrator.endpoint(), "forgotten-worker", 2);
    // `not_registered` is honoured at most once per hello timeout; keep it short.
    options.welcome_timeout = Duration::from_secs(1);
    let worker = RunningWorker::start(options.clone(), test_registry());
    let hello = orchestrator.expect_hello().await;
    let hello_seen = tokio::time::Instant::now();
    orchestrator.welcome(&hello, 100, 100).await;

    let sent = batch(vec![step(7, "only", TEST_HANDLER_CLASS, json!({}))]);
    let batch_id = sent.batch_id;
    orchestrator.send(sent).await;
    let result = orchestrator.expect_partial().await;
    orchestrator.expect_completion().await;

    // Let a hello timeout pass since the worker's hello (it sent it before we saw it), reading
    // its heartbeats meanwhile.
    while hello_seen.elapsed() <= options.welcome_timeout {
        assert!(matches!(
            orchestrator.next_any().await,
            WorkerMessage::Heartbeat(_)
        ));
    }
    orchestrator.send_error("not_registered").await;
    let hello = orchestrator.expect_hello().await;
    assert_eq!(
        hello.in_flight,
        vec![StepRef {
            batch_id,
            step_id: 7
        }]
    );
    orchestrator.welcome(&hello, 1000, 100).await;
    assert_eq!(orchestrator.expect_partial().await, result);
    worker.kill().await;
}

#[tokio::test]
async fn bad_frames_are_answered_counted_and_survived() {
    let mut orchestrator = ScriptedOrchestrator::bind();
    let worker = RunningWorker::start(
        options(&orchestrator.endpoint(), "sturdy-worker", 2),
        test_registry(),
    );
    orchestrator.handshake().await;

    orchestrator.send_raw(b"this is not json".to_vec()).await;
    let report = orchestrator.expect_error().await;
    assert_eq!(report.code, ErrorCode::InvalidJson.as_str());

    orchestrator
        .send_raw(br#"{"protocol_version":"1.0","message_type":"launch_rockets"}"#.to_vec())
        .await;
    let report = orchestrator.expect_error().await;
    assert_eq!(report.code, ErrorCode::UnknownMessageType.as_str());
    assert_eq!(
        report.offending_message_type.as_deref(),
        Some("launch_rockets")
    );

    // A malformed `error` is counted but never answered.
    orchestrator
        .send_raw(br#"{"protocol_version":"1.0","message_type":"error"}"#.to_vec())
        .await;
    let request = orchestrator.health_request().await;
    let reply = orchestrator.expect_health_reply().await;
    assert_eq!(reply.request_id, request);
    assert_eq!(reply.worker_id, "sturdy-worker");
    assert_eq!(reply.status, WorkerHealth::Healthy);
    assert_eq!(reply.in_flight, 0);
    assert_eq!(reply.free_capacity, 2);

    assert_eq!(worker.handle.stats().rejected_frames, 3);

    // And the worker still works.
    orchestrator
        .send(batch(vec![step(3, "after", TEST_HANDLER_CLASS, json!({}))]))
        .await;
    let result = orchestrator.expect_partial().await;
    assert_eq!(result.status, StepStatus::Completed);
    worker.kill().await;
}

#[tokio::test]
async fn an_error_naming_a_held_result_drops_it() {
    let mut orchestrator = ScriptedOrchestrator::bind();
    let endpoint = orchestrator.endpoint();
    let worker = RunningWorker::start(options(&endpoint, "dropping-worker", 2), test_registry());
    orchestrator.handshake().await;
    let sent = batch(vec![step(4, "only", TEST_HANDLER_CLASS, json!({}))]);
    let batch_id = sent.batch_id;
    orchestrator.send(sent).await;
    orchestrator.expect_partial().await;
    orchestrator.expect_completion().await;

    orchestrator
        .send(tasker_protocol::OrchestratorMessage::Error(
            tasker_protocol::ErrorReport {
                protocol_version: PROTOCOL_VERSION,
                code: "worker_id_mismatch".to_owned(),
                message: "scripted".to_owned(),
                offending_message_type: Some("partial_result".to_owned()),
                batch_id: Some(batch_id),
                step_id: Some(4),
            },
        ))
        .await;
    let request = orchestrator.health_request().await;
    let reply = orchestrator.expect_health_reply().await;
    assert_eq!(reply.request_id, request);
    let details = reply.details.expect("details");
    assert_eq!(details["unacknowledged_results"], json!(1), "{details:?}");
    assert_eq!(worker.handle.stats().results_unacknowledged, 1);
    worker.kill().await;
}
