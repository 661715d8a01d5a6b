//! Misbehaving peers, played by raw DEALER sockets: duplicate and superseded results, results
//! for unknown batches, garbage frames, a worker that goes silent, a worker that never answers.
//! In every case real workers' tasks still complete in the same run.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod support;

use serde_json::json;
use support::*;
use tasker_core::state::{StepState, TaskState};
use tasker_protocol::{
    AckOutcome, CancelReason, OrchestratorMessage, ResultKey, StepRef, WorkerMessage,
};
use tasker_store::{LedgerList, TransitionsOf};

const PAIR: &str = r#"
name: pair
namespace: tests
version: 1.0.0
steps:
  - name: first
    handler_class: tasker.test
  - name: second
    handler_class: tasker.test
    depends_on: [first]
    timeout_ms: 300
    backoff: { base_delay_ms: 50, max_delay_ms: 1000, multiplier: 2.0, jitter: 0.0 }
"#;

/// A duplicate result is applied once (`duplicate`); a result of a superseded batch is recorded
/// and `fenced`; an unknown batch is `rejected`; a foreign worker id is refused; the step times
/// out (engine deadline) and is re-dispatched as a new batch with the next attempt.
async fn duplicates_and_superseded_results(db: &TestDb) {
    let engine = start_engine(test_options("tcp://127.0.0.1:0"), db.store().await).await;
    engine.register_template(PAIR).unwrap();
    let mut raw = RawWorker::connect(engine.endpoint(), "raw-fencing");
    raw.hello(&["tasker.test"], 2, Vec::new()).await;
    let heartbeats = raw.keep_heartbeating();
    let task_id = create_task(&engine, "tests", "pair", json!({})).await;

    // `first`: applied, then a re-sent copy is a duplicate.
    let b1 = raw.batch().await;
    assert_eq!(b1.steps.len(), 1);
    let first = &b1.steps[0];
    assert_eq!(first.step_name, "first");
    assert_eq!(first.metadata.attempt, 1);
    assert_eq!(
        first.metadata.idempotency_key,
        format!("{}:1", first.step_id)
    );
    let result = raw.completed(b1.batch_id, first.step_id, 1, json!({ "n": 1 }));
    raw.send(result.clone()).await;
    let key = ResultKey::partial_result(b1.batch_id, first.step_id);
    assert_eq!(raw.ack_of(key).await, AckOutcome::Applied);
    raw.send(result).await;
    assert_eq!(raw.ack_of(key).await, AckOutcome::Duplicate);
    let done = raw.batch_done(b1.batch_id, &[first.step_id]);
    raw.send(done).await;
    assert_eq!(
        raw.ack_of(ResultKey::batch_completion(b1.batch_id)).await,
        AckOutcome::Applied
    );

    // `second`: never answered; the engine's deadline (300 ms + grace) ends the attempt, tells
    // the worker, and dispatches attempt 2 in a new batch.
    let b2 = raw.batch().await;
    let second = b2.steps[0].clone();
    assert_eq!(second.step_name, "second");
    assert_eq!(
        second.previous_results.get("first"),
        Some(&json!({ "n": 1 })),
        "the parent's output reaches the child"
    );
    let cancel = raw
        .wait_for("cancel_steps", |m| {
            matches!(m, OrchestratorMessage::CancelSteps(_))
        })
        .await;
    let OrchestratorMessage::CancelSteps(cancel) = cancel else {
        unreachable!()
    };
    assert_eq!(cancel.batch_id, b2.batch_id);
    assert_eq!(cancel.step_ids, vec![second.step_id]);
    assert_eq!(cancel.reason, CancelReason::Timeout);
    let b3 = raw.batch().await;
    assert_ne!(b3.batch_id, b2.batch_id, "every dispatch is a new batch");
    assert_eq!(b3.steps[0].step_id, second.step_id);
    assert_eq!(b3.steps[0].metadata.attempt, 2);

    // The late result of the superseded batch is recorded and fenced, never applied.
    let late = raw.completed(b2.batch_id, second.step_id, 1, json!({ "late": true }));
    raw.send(late).await;
    assert_eq!(
        raw.ack_of(ResultKey::partial_result(b2.batch_id, second.step_id))
            .await,
        AckOutcome::Fenced
    );
    // A result for a batch that never existed is rejected.
    let stranger = uuid::Uuid::now_v7();
    let unknown = raw.completed(stranger, second.step_id, 1, json!(null));
    raw.send(unknown).await;
    assert_eq!(
        raw.ack_of(ResultKey::partial_result(stranger, second.step_id))
            .await,
        AckOutcome::Rejected
    );
    // A result naming another worker is refused outright.
    let mut impostor = raw.completed(b3.batch_id, second.step_id, 2, json!(null));
    if let WorkerMessage::PartialResult(r) = &mut impostor {
        r.worker_id = "someone-else".into();
    }
    raw.send(impostor).await;
    assert_eq!(raw.error_code().await, "worker_id_mismatch");

    // The current attempt's result applies and the task completes with it.
    let current = raw.completed(b3.batch_id, second.step_id, 2, json!({ "current": true }));
    raw.send(current).await;
    assert_eq!(
        raw.ack_of(ResultKey::partial_result(b3.batch_id, second.step_id))
            .await,
        AckOutcome::Applied
    );
    let outcome = guarded("the pair", engine.handle(task_id)).await.unwrap();
    assert_eq!(outcome.state, TaskState::Complete);
    let status = engine.task_status(task_id).await.unwrap();
    let second_record = status.steps.iter().find(|s| s.name == "second").unwrap();
    assert_eq!(second_record.results, Some(json!({ "current": true })));
    assert_eq!(second_record.attempts, 2);

    // The fenced result is in the ledger, with the superseded batch.
    let ledger = engine
        .store()
        .ledger_list(LedgerList {
            batch_uuid: Some(b2.batch_id.to_string()),
            ..LedgerList::default()
        })
        .await
        .unwrap();
    assert_eq!(ledger.len(), 1);
    assert!(ledger[0].raw_message.contains("\"late\":true"));
    let history = engine
        .store()
        .transitions_list(TransitionsOf::Step(second.step_id))
        .await
        .unwrap();
    let timeout_row = history.iter().find(|r| r.to_state == "error").unwrap();
    assert_eq!(
        timeout_row.metadata.as_ref().unwrap()["error_class"],
        json!("tasker.timeout")
    );

    let stats = engine.stats();
    assert_eq!(stats.results_duplicate, 1);
    assert_eq!(stats.results_fenced, 1);
    assert_eq!(stats.results_rejected, 1);
    assert_eq!(stats.steps_timed_out, 1);
    assert_eq!(stats.frames_rejected.get("worker_id_mismatch"), Some(&1));
    heartbeats.abort();
    raw.close().await;
    engine.shutdown().await;
}

/// A worker that says hello, takes a batch and goes silent is declared dead after the liveness
/// window; its step is retried on a live worker. When it comes back and lists the step, it is
/// told the step was superseded and its late result is fenced.
async fn silent_worker_steps_move_to_a_live_worker(db: &TestDb) {
    let mut options = test_options("tcp://127.0.0.1:0");
    options.default_backoff.base_delay_ms = 100;
    options.default_backoff.jitter = 0.0;
    let engine = start_engine(options, db.store().await).await;
    let mut raw = RawWorker::connect(engine.endpoint(), "raw-silent");
    raw.hello(&["tasker.test"], 1, Vec::new()).await;
    let task_id = create_task(&engine, "examples", "linear", json!({})).await;
    let batch = raw.batch().await;
    let step = batch.steps[0].clone();
    assert_eq!(step.step_name, "step_1");

    // Silence. A live worker joins; the lost step is retried there.
    let worker = TestWorker::start(engine.endpoint(), 4, registry(None));
    let outcome = guarded("the chain", engine.handle(task_id)).await.unwrap();
    assert_eq!(outcome.state, TaskState::Complete, "{outcome:?}");
    assert_previous_results_match_ancestors(&engine, task_id).await;
    let status = engine.task_status(task_id).await.unwrap();
    let first = &status.steps[0];
    assert_eq!(first.attempts, 2);
    assert_eq!(
        first.results.as_ref().unwrap()["worker"],
        json!(worker.handle.worker_id())
    );
    let history = engine
        .store()
        .transitions_list(TransitionsOf::Step(step.step_id))
        .await
        .unwrap();
    let lost = history.iter().find(|r| r.to_state == "error").unwrap();
    assert_eq!(
        lost.metadata.as_ref().unwrap()["error_class"],
        json!("tasker.worker_lost")
    );
    let stats = engine.stats();
    assert!(stats.workers_lost >= 1);
    assert!(stats.steps_lost >= 1);

    // The silent worker speaks again: it has no session any more.
    raw.heartbeat().await;
    assert_eq!(raw.error_code().await, "not_registered");
    // It re-registers listing the step it still holds: superseded.
    raw.hello(
        &["tasker.test"],
        1,
        vec![StepRef {
            batch_id: batch.batch_id,
            step_id: step.step_id,
        }],
    )
    .await;
    let cancel = raw
        .wait_for("cancel_steps", |m| {
            matches!(m, OrchestratorMessage::CancelSteps(_))
        })
        .await;
    let OrchestratorMessage::CancelSteps(cancel) = cancel else {
        unreachable!()
    };
    assert_eq!(cancel.reason, CancelReason::Superseded);
    assert_eq!(cancel.step_ids, vec![step.step_id]);
    let late = raw.completed(batch.batch_id, step.step_id, 1, json!({ "late": true }));
    raw.send(late).await;
    assert_eq!(
        raw.ack_of(ResultKey::partial_result(batch.batch_id, step.step_id))
            .await,
        AckOutcome::Fenced
    );
    let status = engine.task_status(task_id).await.unwrap();
    assert_ne!(status.steps[0].results, Some(json!({ "late": true })));
    assert_eq!(status.steps[0].state, StepState::Complete);

    raw.close().await;
    worker.stop().await;
    engine.shutdown().await;
}

/// Garbage frames, unknown kinds, another protocol version, oversized and multipart frames,
/// frames before hello and results for unknown batches are answered, counted, and harm nothing:
/// a real worker's tasks complete in the same run.
async fn bad_frames_are_rejected_and_counted(db: &TestDb) {
    let mut options = test_options("tcp://127.0.0.1:0");
    options.max_frame_bytes = 65_536;
    let engine = start_engine(options, db.store().await).await;
    let worker = TestWorker::start(engine.endpoint(), 4, registry(None));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        tasks.push(create_task(&engine, "examples", "diamond", json!({})).await);
    }

    let mut raw = RawWorker::connect(engine.endpoint(), "raw-garbage");
    raw.send_raw(b"this is not json".to_vec()).await;
    assert_eq!(raw.error_code().await, "invalid_json");
    raw.send_raw(br#"{"message_type":"frobnicate","protocol_version":"1.0"}"#.to_vec())
        .await;
    assert_eq!(raw.error_code().await, "unknown_message_type");
    raw.send_raw(
        br#"{"message_type":"hello","protocol_version":"2.0","worker_id":"w","name":"n"}"#.to_vec(),
    )
    .await;
    assert_eq!(
        raw.error_code().await,
        "hello_rejected:unsupported_protocol_version"
    );
    raw.send_raw(br#"{"message_type":"hello","protocol_version":"1.0"}"#.to_vec())
        .await;
    assert_eq!(raw.error_code().await, "hello_rejected:invalid_hello");
    let mut huge = br#"{"message_type":"heartbeat","protocol_version":"1.0","pad":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 100_000));
    huge.extend(br#""}"#);
    raw.send_raw(huge).await;
    assert_eq!(raw.error_code().await, "frame_too_large");
    raw.heartbeat().await;
    assert_eq!(raw.error_code().await, "not_registered");
    // An `error` is never answered; the next reply is to the heartbeat after it.
    raw.send_raw(
        br#"{"message_type":"error","protocol_version":"1.0","code":"x","message":"m"}"#.to_vec(),
    )
    .await;
    raw.send_raw(b"[1,2,3]".to_vec()).await;
    assert_eq!(raw.error_code().await, "not_an_object");

    // A multipart message, from a plain ZeroMQ DEALER.
    let context = zmq::Context::new();
    let dealer = context.socket(zmq::DEALER).unwrap();
    dealer.set_linger(0).unwrap();
    dealer.set_rcvtimeo(30_000).unwrap();
    dealer.connect(engine.endpoint()).unwrap();
    dealer
        .send_multipart([b"{}".as_slice(), b"{}".as_slice()], 0)
        .unwrap();
    let reply = tokio::task::spawn_blocking(move || dealer.recv_bytes(0).unwrap())
        .await
        .unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["code"], json!("multipart_message"));

    // Registered, then a result for a batch nobody sent.
    raw.hello(&["nothing.runs.this"], 1, Vec::new()).await;
    let stranger = uuid::Uuid::now_v7();
    let unknown = raw.completed(stranger, 1, 1, json!(null));
    raw.send(unknown).await;
    assert_eq!(
        raw.ack_of(ResultKey::partial_result(stranger, 1)).await,
        AckOutcome::Rejected
    );

    for task_id in tasks {
        let outcome = guarded("a diamond", engine.handle(task_id)).await.unwrap();
        assert_eq!(outcome.state, TaskState::Complete);
    }
    let stats = engine.stats();
    for code in [
        "invalid_json",
        "unknown_message_type",
        "unsupported_protocol_version",
        "missing_field",
        "frame_too_large",
        "not_registered",
        "not_an_object",
        "multipart_message",
    ] {
        assert!(
            stats.frames_rejected.get(code).copied().unwrap_or(0) >= 1,
            "{code} counted: {:?}",
            stats.frames_rejected
        );
    }
    assert_eq!(stats.results_rejected, 1);
    raw.close().await;
    worker.stop().await;
    engine.shutdown().await;
}

/// A worker that hands a step back in `goodbye` gets no more work; the step is requeued without
/// counting the attempt and runs elsewhere. A worker that re-registers without listing a step
/// it was sent loses that step: it is failed as retryable and retried.
async fn handed_back_and_unlisted_steps_run_elsewhere(db: &TestDb) {
    let mut options = test_options("tcp://127.0.0.1:0");
    options.default_backoff.base_delay_ms = 50;
    options.default_backoff.jitter = 0.0;
    let engine = start_engine(options, db.store().await).await;

    // Each raw worker (capacity 1) takes one task's first step.
    let mut leaving = RawWorker::connect(engine.endpoint(), "raw-leaving");
    leaving.hello(&["tasker.test"], 1, Vec::new()).await;
    let heartbeats = leaving.keep_heartbeating();
    let handed = create_task(&engine, "examples", "linear", json!({})).await;
    let batch = leaving.batch().await;
    let step = batch.steps[0].clone();
    assert_eq!(step.task_id, handed);
    let mut forgetful = RawWorker::connect(engine.endpoint(), "raw-forgetful");
    forgetful.hello(&["tasker.test"], 1, Vec::new()).await;
    let forgotten = create_task(&engine, "examples", "linear", json!({})).await;
    let forgotten_batch = forgetful.batch().await;
    let forgotten_step = forgotten_batch.steps[0].clone();
    assert_eq!(forgotten_step.task_id, forgotten);

    // One hands its step back; the other re-registers without listing its step.
    leaving
        .send(WorkerMessage::Goodbye(tasker_protocol::Goodbye {
            protocol_version: tasker_protocol::PROTOCOL_VERSION,
            worker_id: leaving.worker_id.clone(),
            reason: "deploy".into(),
            handed_back: vec![StepRef {
                batch_id: batch.batch_id,
                step_id: step.step_id,
            }],
        }))
        .await;
    forgetful.hello(&["nothing.runs.this"], 1, Vec::new()).await;

    let worker = TestWorker::start(engine.endpoint(), 4, registry(None));
    for task_id in [handed, forgotten] {
        let outcome = guarded("the chain", engine.handle(task_id)).await.unwrap();
        assert_eq!(outcome.state, TaskState::Complete, "{outcome:?}");
    }
    let status = engine.task_status(handed).await.unwrap();
    assert_eq!(status.steps[0].step_id, step.step_id);
    assert_eq!(
        status.steps[0].attempts, 1,
        "the handed-back attempt does not count"
    );
    let history = engine
        .store()
        .transitions_list(TransitionsOf::Step(step.step_id))
        .await
        .unwrap();
    assert!(history.iter().any(|r| r.event == "requeue"), "{history:?}");
    let status = engine.task_status(forgotten).await.unwrap();
    assert_eq!(status.steps[0].attempts, 2, "the lost attempt counts");
    let history = engine
        .store()
        .transitions_list(TransitionsOf::Step(forgotten_step.step_id))
        .await
        .unwrap();
    let lost = history.iter().find(|r| r.to_state == "error").unwrap();
    assert_eq!(
        lost.metadata.as_ref().unwrap()["error_class"],
        json!("tasker.worker_lost")
    );
    heartbeats.abort();
    leaving.close().await;
    forgetful.close().await;
    worker.stop().await;
    engine.shutdown().await;
}

on_every_backend! {
    handed_back_and_unlisted_steps_run_elsewhere => handed_back_and_unlisted_steps_run_elsewhere,
    a_duplicate_applies_once_and_a_superseded_result_is_fenced => duplicates_and_superseded_results,
    a_silent_workers_steps_move_to_a_live_worker => silent_worker_steps_move_to_a_live_worker,
    bad_frames_are_rejected_counted_and_harmless => bad_frames_are_rejected_and_counted,
}
