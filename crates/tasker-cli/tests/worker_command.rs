//! Runs the built `tasker worker` against a scripted orchestrator (a real ROUTER socket) and
//! checks its session from the orchestrator's side, then stops it with SIGTERM.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use serde_json::json;
use tasker_protocol::{
    AckEntry, AckOutcome, Limits, OrchestratorMessage, PROTOCOL_VERSION, ResultAck, ResultKey,
    StepBatch, StepMetadata, StepRequest, StepStatus, Welcome, WorkerMessage,
    decode_worker_message, encode,
};
use tasker_transport::{PeerId, RouterEndpoint, RouterEvent, RouterEvents, RouterOptions};
use uuid::Uuid;

/// Upper bound on any wait; reaching it means the test failed.
const GUARD: Duration = Duration::from_secs(20);

fn tasker_worker(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tasker"));
    command
        .arg("worker")
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("TASKER_WORKER_CONNECT")
        .env_remove("TASKER_WORKER_ENDPOINT")
        .env_remove("TASKER_WORKER_HANDLERS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Waits for `child` to exit (killing it if it takes longer than [`GUARD`]).
async fn wait(child: Child) -> Output {
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(GUARD, waiting).await {
        Ok(output) => output.unwrap().unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("tasker worker did not exit in time");
        }
    }
}

async fn next_message(events: &mut RouterEvents) -> (PeerId, WorkerMessage) {
    loop {
        let event = tokio::time::timeout(GUARD, events.recv())
            .await
            .expect("timed out waiting for the worker")
            .expect("router closed");
        match event {
            RouterEvent::Message(inbound) => {
                let message = decode_worker_message(&inbound.payload, &Limits::default()).unwrap();
                if !matches!(message, WorkerMessage::Heartbeat(_)) {
                    return (inbound.peer, message);
                }
            }
            RouterEvent::Rejected(error) => panic!("bad frame from the worker: {error}"),
        }
    }
}

#[tokio::test]
async fn runs_builtin_handlers_and_leaves_on_sigterm() {
    let (router, mut events) =
        RouterEndpoint::bind("tcp://127.0.0.1:0", RouterOptions::default()).unwrap();
    let child = tasker_worker(&[
        "--worker-id",
        "cli-worker-1",
        "--capacity",
        "3",
        "--handlers",
        "tasker.test",
    ])
    .env("TASKER_WORKER_CONNECT", router.endpoint())
    .spawn()
    .unwrap();
    let pid = child.id();

    let (peer, message) = next_message(&mut events).await;
    let WorkerMessage::Hello(hello) = message else {
        panic!("expected hello, got {message:?}");
    };
    assert_eq!(hello.worker_id, "cli-worker-1");
    assert_eq!(hello.capacity, 3);
    assert_eq!(hello.handler_classes, vec!["tasker.test"]);
    assert_eq!(hello.sdk.name, "tasker-worker-rust");
    let send = |message: OrchestratorMessage| router.send(&peer, encode(&message));
    send(OrchestratorMessage::Welcome(Welcome {
        protocol_version: PROTOCOL_VERSION,
        worker_id: hello.worker_id.clone(),
        orchestrator_id: "cli-test".to_owned(),
        heartbeat_interval_ms: 1000,
        liveness: 100,
        max_frame_bytes: 1024 * 1024,
        max_steps_per_batch: 100,
    }))
    .await
    .unwrap();

    let batch_id = Uuid::now_v7();
    send(OrchestratorMessage::StepBatch(StepBatch {
        protocol_version: PROTOCOL_VERSION,
        batch_id,
        steps: vec![StepRequest {
            step_id: 9,
            task_id: 4,
            step_name: "greet".to_owned(),
            handler_class: "tasker.test".to_owned(),
            handler_config: serde_json::Map::new(),
            task_context: serde_json::Map::new(),
            previous_results: serde_json::Map::new(),
            metadata: StepMetadata {
                attempt: 1,
                retry_limit: 1,
                timeout_ms: Some(10_000),
                idempotency_key: StepMetadata::idempotency_key_for(9, 1),
            },
        }],
    }))
    .await
    .unwrap();
    let (_, message) = next_message(&mut events).await;
    let WorkerMessage::PartialResult(result) = message else {
        panic!("expected partial_result, got {message:?}");
    };
    assert_eq!(result.status, StepStatus::Completed);
    assert_eq!(result.output["step"], json!("greet"));
    assert_eq!(result.output["worker"], json!("cli-worker-1"));
    let (_, message) = next_message(&mut events).await;
    assert!(matches!(message, WorkerMessage::BatchCompletion(_)));
    send(OrchestratorMessage::ResultAck(ResultAck {
        protocol_version: PROTOCOL_VERSION,
        acks: vec![
            AckEntry::new(ResultKey::partial_result(batch_id, 9), AckOutcome::Applied),
            AckEntry::new(ResultKey::batch_completion(batch_id), AckOutcome::Applied),
        ],
    }))
    .await
    .unwrap();

    let killed: ExitStatus = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let (_, message) = next_message(&mut events).await;
    let WorkerMessage::Goodbye(goodbye) = message else {
        panic!("expected goodbye, got {message:?}");
    };
    assert!(goodbye.handed_back.is_empty());

    let output = wait(child).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    assert!(stderr.contains("cli-worker-1"), "{stderr}");
    // The worker closed its socket before the router goes away (see the worker SDK's tests).
    router.shutdown().await;
}

#[tokio::test]
async fn an_unknown_handler_class_is_refused_with_the_available_ones() {
    let child = tasker_worker(&[
        "--connect",
        "tcp://127.0.0.1:1",
        "--handlers",
        "tasker.test,no.such.handler",
    ])
    .spawn()
    .unwrap();
    let output = wait(child).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no.such.handler"), "{stderr}");
    assert!(
        stderr.contains("OrderFulfillment::ShipOrderHandler"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_invalid_worker_id_is_refused() {
    let child = tasker_worker(&["--worker-id", "has spaces"])
        .spawn()
        .unwrap();
    let output = wait(child).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("worker_id"), "{stderr}");
}

#[tokio::test]
async fn the_python_sdks_endpoint_variable_is_honoured_too() {
    let (router, mut events) =
        RouterEndpoint::bind("tcp://127.0.0.1:0", RouterOptions::default()).unwrap();
    let child = tasker_worker(&["--worker-id", "cli-worker-2"])
        .env("TASKER_WORKER_ENDPOINT", router.endpoint())
        .spawn()
        .unwrap();
    let (_, message) = next_message(&mut events).await;
    let WorkerMessage::Hello(hello) = message else {
        panic!("expected hello, got {message:?}");
    };
    assert_eq!(hello.worker_id, "cli-worker-2");
    assert_eq!(hello.handler_classes.len(), 5, "every built-in handler");

    // Never welcomed, nothing to finish: SIGTERM ends it at once, cleanly.
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let output = wait(child).await;
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    router.shutdown().await;
}
