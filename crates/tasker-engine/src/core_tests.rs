//! The engine core driven by hand: events in, actions out, with explicit times. No sockets, no
//! database — the store's answers are written by the test.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use tasker_core::backoff::BackoffPolicy;
use tasker_core::state::{StepState, TaskState};
use tasker_protocol::{
    AckOutcome, CancelReason, Hello, Limits, OrchestratorMessage, PROTOCOL_VERSION, PartialResult,
    SdkInfo, StepStatus, WorkerMessage, decode_orchestrator_message, encode,
};
use tasker_store::{
    BatchRecorded, DispatchedStep, LedgerOutcome, StepRecord, TaskDag, TaskRecord,
    TransitionsApplied, TransitionsApply,
};
use tasker_transport::PeerId;
use uuid::Uuid;

use crate::core::CommitBook;
use crate::core::{Action, EngineCore};
use crate::options::EngineOptions;
use crate::stats::StatsCounters;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn options() -> EngineOptions {
    EngineOptions {
        orchestrator_id: "orchestrator-unit".into(),
        heartbeat_interval: Duration::from_millis(1000),
        liveness: 5,
        default_backoff: BackoffPolicy {
            base_delay_ms: 1000,
            max_delay_ms: 60_000,
            multiplier: 2.0,
            jitter: 0.0,
        },
        ..EngineOptions::default()
    }
}

fn step(step_id: i64, task_id: i64, name: &str, position: i32) -> StepRecord {
    StepRecord {
        step_id,
        task_id,
        name: name.into(),
        position,
        handler_class: "tasker.test".into(),
        handler_config: json!({}),
        retryable: true,
        retry_limit: 3,
        timeout_ms: Some(30_000),
        backoff: None,
        state: StepState::Pending,
        attempts: 0,
        last_attempted_at: None,
        backoff_until: None,
        results: None,
        last_error: None,
        in_flight_batch: None,
        in_flight_deadline_at: None,
        created_at: t0(),
        updated_at: t0(),
    }
}

/// Task 1: a → {b, c} → d, step ids 11..=14.
fn diamond() -> TaskDag {
    TaskDag {
        task: TaskRecord {
            task_id: 1,
            namespace: "examples".into(),
            name: "diamond".into(),
            version: "1.0.0".into(),
            state: TaskState::Pending,
            context: json!({ "order": 7 }),
            initiator: None,
            source_system: None,
            reason: None,
            tags: Vec::new(),
            idempotency_key: None,
            claimed_by: Some("orchestrator-unit".into()),
            claim_expires_at: None,
            created_at: t0(),
            updated_at: t0(),
            completed_at: None,
        },
        steps: vec![
            step(11, 1, "a", 0),
            step(12, 1, "b", 1),
            step(13, 1, "c", 2),
            step(14, 1, "d", 3),
        ],
        edges: vec![(11, 12), (11, 13), (12, 14), (13, 14)],
    }
}

fn peer() -> PeerId {
    PeerId::from_bytes(b"peer-1")
}

fn hello(capacity: u32) -> Vec<u8> {
    encode(&WorkerMessage::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        worker_id: "w1".into(),
        name: "unit worker".into(),
        sdk: SdkInfo {
            name: "unit".into(),
            version: "0".into(),
            language: "rust".into(),
        },
        handler_classes: vec!["tasker.test".into()],
        capacity,
        heartbeat_interval_ms: None,
        in_flight: Vec::new(),
    }))
}

fn completed(batch_id: Uuid, step_id: i64, attempt: u32, output: Value) -> Vec<u8> {
    encode(&WorkerMessage::PartialResult(PartialResult {
        protocol_version: PROTOCOL_VERSION,
        batch_id,
        step_id,
        attempt,
        status: StepStatus::Completed,
        output,
        error: None,
        worker_id: "w1".into(),
        sequence: 1,
        timestamp: t0(),
        execution_time_ms: 3,
    }))
}

/// A core with the diamond loaded, recovery done, and worker `w1` registered at `t0`.
fn ready_core(capacity: u32) -> EngineCore {
    let mut core = EngineCore::new(
        options(),
        Arc::new(StatsCounters::default()),
        &crate::clock::Ambient::default(),
        t0(),
    );
    assert!(matches!(
        core.take_actions().as_slice(),
        [Action::ClaimTasks { recover: true }]
    ));
    core.on_tasks_loaded(vec![diamond()], t0());
    core.on_claim_done(Ok(false));
    core.on_frame(peer(), hello(capacity), t0(), Instant::now());
    let actions = core.take_actions();
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Send { message: OrchestratorMessage::Welcome(w), .. } if w.worker_id == "w1"
    )));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::UpsertWorker(u) if u.worker_id == "w1"))
    );
    core
}

/// Runs a dispatch pass and the group commit that records its batch, answered as the store
/// would when everything applies; returns the one batch recorded: (id, step ids). The
/// `step_batch` sent for it waits among the actions (see [`sent_batch`]).
fn dispatch_one(core: &mut EngineCore, now: DateTime<Utc>) -> (Uuid, Vec<i64>) {
    core.dispatch(now);
    let (params, book) = commit(core, now);
    let mut recorded = recorded_in(&params);
    assert_eq!(recorded.len(), 1, "one batch");
    for batch in &params.batches {
        assert_eq!(batch.worker_id.as_deref(), Some("w1"));
        assert_eq!(batch.claimant.as_deref(), Some("orchestrator-unit"));
    }
    let answer = applied(&params);
    core.on_commit_done(book, Ok(answer), now);
    recorded.remove(0)
}

/// The batches a commit records: (id, step ids), in order.
fn recorded_in(params: &TransitionsApply) -> Vec<(Uuid, Vec<i64>)> {
    params
        .batches
        .iter()
        .map(|b| (b.batch_uuid, b.steps.iter().map(|s| s.step_id).collect()))
        .collect()
}

/// Takes the actions and returns the one `step_batch` sent, which must be `batch_id`.
fn sent_batch(core: &mut EngineCore, batch_id: Uuid) -> tasker_protocol::StepBatch {
    let frames: Vec<Vec<u8>> = core
        .take_actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::SendBatch { frame, .. } => Some(frame),
            _ => None,
        })
        .collect();
    assert_eq!(frames.len(), 1);
    match decode_orchestrator_message(&frames[0], &Limits::default()).unwrap() {
        OrchestratorMessage::StepBatch(batch) => {
            assert_eq!(batch.batch_id, batch_id);
            batch
        }
        other => panic!("expected a step batch, got {other:?}"),
    }
}

/// Starts the pending group commit; returns its parameters and book.
fn commit(core: &mut EngineCore, now: DateTime<Utc>) -> (TransitionsApply, CommitBook) {
    core.start_commit(now);
    let mut commits: Vec<(TransitionsApply, CommitBook)> = core
        .take_actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Commit { params, book } => Some((params, *book)),
            _ => None,
        })
        .collect();
    assert_eq!(commits.len(), 1, "one group commit");
    commits.remove(0)
}

/// Answers a commit as the store would when everything applies.
fn applied(params: &TransitionsApply) -> TransitionsApplied {
    TransitionsApplied {
        ledger: params
            .ledger
            .iter()
            .map(|_| LedgerOutcome::Recorded)
            .collect(),
        applied: (0..params.changes.len()).collect(),
        refused: Vec::new(),
        batches: recorded_in(params).iter().map(included).collect(),
        tasks: Vec::new(),
    }
}

fn acks(actions: &[Action]) -> Vec<(Uuid, Option<i64>, AckOutcome)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                message: OrchestratorMessage::ResultAck(ack),
                ..
            } => Some(ack.acks.clone()),
            _ => None,
        })
        .flatten()
        .map(|a| (a.batch_id, a.step_id, a.outcome))
        .collect()
}

#[test]
fn results_are_committed_in_groups_acked_after_commit_and_children_follow() {
    let mut core = ready_core(10);
    let (batch_a, steps) = dispatch_one(&mut core, t0());
    assert_eq!(steps, vec![11], "only the root is ready");
    let sent = sent_batch(&mut core, batch_a);
    assert_eq!(sent.batch_id, batch_a);
    let request = &sent.steps[0];
    assert_eq!(request.metadata.attempt, 1);
    assert_eq!(request.metadata.idempotency_key, "11:1");
    assert_eq!(request.task_context.get("order"), Some(&json!(7)));
    assert!(request.previous_results.is_empty());

    // The result arrives; nothing is acknowledged before the commit.
    let t1 = t0() + TimeDelta::milliseconds(5);
    core.on_frame(
        peer(),
        completed(batch_a, 11, 1, json!({ "x": 1 })),
        t1,
        Instant::now(),
    );
    assert!(acks(&core.take_actions()).is_empty());
    let (params, book) = commit(&mut core, t1);
    assert_eq!(params.ledger.len(), 1);
    assert_eq!(params.claimant.as_deref(), Some("orchestrator-unit"));
    let step_change = &params.changes[0].steps[0];
    assert_eq!(step_change.step_id, 11);
    assert_eq!(step_change.expect_state, StepState::InProgress);
    assert_eq!(step_change.expect_batch, Some(batch_a), "fenced by batch");
    assert_eq!(step_change.to_state, StepState::Complete);
    assert_eq!(step_change.results, Some(json!({ "x": 1 })));
    assert!(
        params.changes[0].tasks.is_empty(),
        "the task is not finished"
    );
    assert!(
        params.changes.iter().any(|c| c
            .batches
            .iter()
            .any(|b| b.to_state == tasker_core::state::BatchState::Executing)),
        "the batch moves to executing"
    );

    // While the commit is in flight, a re-sent copy waits for the next group.
    core.on_frame(
        peer(),
        completed(batch_a, 11, 1, json!({ "x": 1 })),
        t1,
        Instant::now(),
    );
    core.start_commit(t1);
    assert!(
        !core
            .take_actions()
            .iter()
            .any(|a| matches!(a, Action::Commit { .. })),
        "one commit at a time"
    );
    // Both children become ready with this result: they are dispatched in the same commit, in
    // one batch, to be sent once it commits.
    let children = recorded_in(&params);
    assert_eq!(children.len(), 1, "one batch for both children");
    assert_eq!(children[0].1, vec![12, 13]);
    let answer = applied(&params);
    core.on_commit_done(book, Ok(answer), t1);
    let actions = core.take_actions();
    assert_eq!(
        acks(&actions),
        vec![(batch_a, Some(11), AckOutcome::Applied)]
    );
    assert_eq!(
        sends(&actions),
        vec![children[0].0],
        "sent after the commit"
    );
    let bc = actions
        .iter()
        .find_map(|a| match a {
            Action::SendBatch { frame, .. } => {
                match decode_orchestrator_message(frame, &Limits::default()).unwrap() {
                    OrchestratorMessage::StepBatch(batch) => Some(batch),
                    _ => None,
                }
            }
            _ => None,
        })
        .unwrap();
    for request in &bc.steps {
        assert_eq!(
            request.previous_results.get("a"),
            Some(&json!({ "x": 1 })),
            "with the parent's output"
        );
    }
    assert_eq!(core.stats.snapshot().handoff_latency.count, 2);

    // The copy: the ledger says it is a duplicate; it is acknowledged as such, not applied.
    let (params, book) = commit(&mut core, t1);
    assert!(params.changes.iter().all(|c| c.steps.is_empty()));
    assert!(params.batches.is_empty(), "nothing dispatched twice");
    core.on_commit_done(
        book,
        Ok(TransitionsApplied {
            ledger: vec![LedgerOutcome::Duplicate],
            applied: (0..params.changes.len()).collect(),
            refused: Vec::new(),
            batches: Vec::new(),
            tasks: Vec::new(),
        }),
        t1,
    );
    assert_eq!(
        acks(&core.take_actions()),
        vec![(batch_a, Some(11), AckOutcome::Duplicate)]
    );
    core.dispatch(t1);
    core.start_commit(t1);
    assert!(
        !core
            .take_actions()
            .iter()
            .any(|a| matches!(a, Action::Commit { .. })),
        "the children are in flight already: nothing more to dispatch"
    );
}

#[test]
fn a_child_whose_parents_change_is_refused_is_not_sent() {
    let mut core = ready_core(10);
    let (batch_a, _) = dispatch_one(&mut core, t0());
    sent_batch(&mut core, batch_a);
    core.on_frame(
        peer(),
        completed(batch_a, 11, 1, json!(1)),
        t0(),
        Instant::now(),
    );
    let (params, book) = commit(&mut core, t0());
    let children = recorded_in(&params);
    assert_eq!(children[0].1, vec![12, 13]);
    // The store refuses the parent's change; with it, the children's dispatch (their parent is
    // not done in the store).
    let parents_not_done = |step_id| tasker_store::Refusal {
        target: tasker_store::ChangeTarget::Step(step_id),
        reason: tasker_store::RefusalReason::ParentsNotDone { unmet: 1 },
    };
    let answer = TransitionsApplied {
        ledger: vec![LedgerOutcome::Recorded],
        applied: Vec::new(),
        refused: vec![tasker_store::RefusedSet {
            index: 0,
            refusals: Vec::new(),
        }],
        batches: vec![BatchRecorded {
            recorded: false,
            included: Vec::new(),
            refused: vec![parents_not_done(12), parents_not_done(13)],
        }],
        tasks: Vec::new(),
    };
    core.on_commit_done(book, Ok(answer), t0());
    let actions = core.take_actions();
    assert!(sends(&actions).is_empty(), "nothing sent");
    assert!(acks(&actions).is_empty(), "the result is not acknowledged");
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::LoadTasks(ids) if ids.contains(&1))),
        "the task is reloaded"
    );
    assert_eq!(
        core.sessions["w1"].outstanding.len(),
        0,
        "the children's credit is given back"
    );
}

#[test]
fn the_last_result_completes_the_task_in_the_same_commit() {
    let mut core = ready_core(10);
    let mut now = t0();
    let (mut batch_id, mut steps) = dispatch_one(&mut core, now);
    sent_batch(&mut core, batch_id);
    for next in [vec![12, 13], vec![14], vec![]] {
        for &step_id in &steps {
            core.on_frame(
                peer(),
                completed(batch_id, step_id, 1, json!(step_id)),
                now,
                Instant::now(),
            );
        }
        now += TimeDelta::milliseconds(10);
        let (params, book) = commit(&mut core, now);
        let finishes = params.changes.iter().flat_map(|c| &c.tasks).count();
        assert_eq!(
            finishes,
            usize::from(steps == vec![14]),
            "only the last result finishes"
        );
        if steps == vec![14] {
            let change = params.changes.iter().flat_map(|c| &c.tasks).next().unwrap();
            assert_eq!(change.expect_state, TaskState::InProgress);
            assert_eq!(change.to_state, TaskState::Complete);
            let set = params.changes.iter().find(|c| !c.tasks.is_empty()).unwrap();
            assert_eq!(set.steps.len(), 1, "in the same change set as the step");
        }
        let recorded = recorded_in(&params);
        assert_eq!(
            recorded.iter().map(|b| b.1.clone()).collect::<Vec<_>>(),
            if next.is_empty() { vec![] } else { vec![next] },
            "the next steps are dispatched in the commit of the results that made them ready"
        );
        let answer = applied(&params);
        core.on_commit_done(book, Ok(answer), now);
        core.take_actions();
        if let Some((id, ids)) = recorded.into_iter().next() {
            (batch_id, steps) = (id, ids);
        }
    }
    assert!(core.tasks.is_empty(), "a finished task is let go");
    assert_eq!(core.stats.snapshot().tasks_completed, 1);
}

#[test]
fn a_silent_worker_is_declared_dead_exactly_at_its_liveness_deadline() {
    let mut core = ready_core(10);
    let (batch_id, _) = dispatch_one(&mut core, t0());
    sent_batch(&mut core, batch_id);
    let window = TimeDelta::seconds(5); // 1 s heartbeats × liveness 5
    core.on_tick(t0() + window - TimeDelta::milliseconds(1));
    assert!(core.sessions.contains_key("w1"), "still alive");
    assert!(core.pending_items.is_empty());
    let dead_at = t0() + window;
    core.on_tick(dead_at);
    assert!(!core.sessions.contains_key("w1"), "declared dead");
    core.take_actions();
    let (params, _book) = commit(&mut core, dead_at);
    let change = &params.changes[0].steps[0];
    assert_eq!(change.step_id, 11);
    assert_eq!(change.to_state, StepState::Error);
    assert_eq!(change.expect_batch, Some(batch_id));
    let error = change.error.as_ref().unwrap();
    assert_eq!(error["error_class"], json!("tasker.worker_lost"));
    assert_eq!(error["retryable"], json!(true));
    assert_eq!(
        change.backoff_until,
        Some(dead_at + TimeDelta::seconds(1)),
        "retried after the policy's first delay"
    );
    assert_eq!(core.stats.snapshot().workers_lost, 1);
}

#[test]
fn a_deadline_fails_the_attempt_and_tells_the_worker() {
    let mut core = ready_core(10);
    let (batch_id, _) = dispatch_one(&mut core, t0());
    sent_batch(&mut core, batch_id);
    // Keep the worker alive past the step's deadline (30 s timeout + 2 s grace).
    let deadline = t0() + TimeDelta::seconds(32);
    let mut now = t0();
    while now < deadline - TimeDelta::seconds(1) {
        now += TimeDelta::seconds(1);
        let beat = encode(&WorkerMessage::Heartbeat(
            tasker_protocol::WorkerHeartbeat {
                protocol_version: PROTOCOL_VERSION,
                worker_id: "w1".into(),
                in_flight: 1,
                free_capacity: 9,
                timestamp: now,
            },
        ));
        core.on_frame(peer(), beat, now, Instant::now());
        core.on_tick(now);
        core.take_actions();
    }
    assert!(core.pending_items.is_empty(), "not yet");
    core.on_tick(deadline);
    let actions = core.take_actions();
    let cancel = actions
        .iter()
        .find_map(|a| match a {
            Action::Send {
                message: OrchestratorMessage::CancelSteps(c),
                ..
            } => Some(c.clone()),
            _ => None,
        })
        .expect("cancel_steps sent");
    assert_eq!(cancel.batch_id, batch_id);
    assert_eq!(cancel.step_ids, vec![11]);
    assert_eq!(cancel.reason, CancelReason::Timeout);
    let (params, _book) = commit(&mut core, deadline);
    let error = params.changes[0].steps[0].error.as_ref().unwrap();
    assert_eq!(error["error_class"], json!("tasker.timeout"));
    // The timed-out step still holds its slot until the worker reports it (spec §8.2).
    assert_eq!(core.sessions["w1"].outstanding.len(), 1);
}

#[test]
fn results_wait_for_recovery_and_frames_without_a_session_are_refused() {
    let mut core = EngineCore::new(
        options(),
        Arc::new(StatsCounters::default()),
        &crate::clock::Ambient::default(),
        t0(),
    );
    core.take_actions();
    // A frame from a connection that never said hello.
    core.on_frame(
        peer(),
        completed(Uuid::now_v7(), 11, 1, json!(null)),
        t0(),
        Instant::now(),
    );
    let actions = core.take_actions();
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Send { message: OrchestratorMessage::Error(e), .. } if e.code == "not_registered"
    )));
    // Registered, but the claimed tasks are not loaded yet: the result is held, not rejected.
    core.on_frame(peer(), hello(4), t0(), Instant::now());
    core.take_actions();
    core.on_frame(
        peer(),
        completed(Uuid::now_v7(), 11, 1, json!(null)),
        t0(),
        Instant::now(),
    );
    core.start_commit(t0());
    assert!(
        core.take_actions().is_empty(),
        "nothing is committed before recovery"
    );
    core.on_tasks_loaded(vec![diamond()], t0());
    core.on_claim_done(Ok(false));
    let (params, _book) = commit(&mut core, t0());
    assert_eq!(params.ledger.len(), 1);
    assert_eq!(
        core.stats.snapshot().frames_rejected.get("not_registered"),
        Some(&1)
    );
}

#[test]
fn a_failed_send_requeues_the_steps_and_an_unreachable_worker_is_dropped() {
    let mut core = ready_core(10);
    let (batch_id, _) = dispatch_one(&mut core, t0());
    sent_batch(&mut core, batch_id);
    core.on_send_failed(
        batch_id,
        &tasker_transport::TransportError::PeerUnreachable { peer: peer() },
        t0(),
    );
    assert!(!core.sessions.contains_key("w1"), "its connection is gone");
    let (params, book) = commit(&mut core, t0());
    let change = params
        .changes
        .iter()
        .flat_map(|c| &c.steps)
        .find(|c| c.step_id == 11)
        .unwrap();
    assert_eq!(change.to_state, StepState::Pending);
    assert_eq!(change.event, tasker_core::state::StepEvent::Requeue);
    let failed = params
        .changes
        .iter()
        .flat_map(|c| &c.batches)
        .find(|b| b.to_state == tasker_core::state::BatchState::Failed)
        .expect("the batch fails");
    assert_eq!(
        failed.metadata,
        Some(json!({ "reconciliation": "no_completion" }))
    );
    let answer = applied(&params);
    core.on_commit_done(book, Ok(answer), t0());
    core.take_actions();
    assert_eq!(
        core.tasks[&1].steps[0].attempts, 0,
        "a requeue does not count"
    );

    // The worker reconnects (a new routing id) and gets the step again.
    core.on_frame(
        PeerId::from_bytes(b"peer-2"),
        hello(10),
        t0(),
        Instant::now(),
    );
    core.take_actions();
    let (_, steps) = dispatch_one(&mut core, t0());
    assert_eq!(steps, vec![11]);
}

#[test]
fn a_batch_completion_is_reconciled_with_the_partial_results() {
    let mut core = ready_core(10);
    let (batch_id, _) = dispatch_one(&mut core, t0());
    sent_batch(&mut core, batch_id);
    core.on_frame(
        peer(),
        completed(batch_id, 11, 1, json!(1)),
        t0(),
        Instant::now(),
    );
    // The completion disagrees: it says step 11 failed.
    let completion = encode(&WorkerMessage::BatchCompletion(
        tasker_protocol::BatchCompletion {
            protocol_version: PROTOCOL_VERSION,
            batch_id,
            total_steps: 1,
            completed_steps: 0,
            failed_steps: 1,
            step_summaries: vec![tasker_protocol::StepSummary {
                step_id: 11,
                status: StepStatus::Failed,
            }],
            completed_at: t0(),
            worker_id: "w1".into(),
        },
    ));
    core.on_frame(peer(), completion, t0(), Instant::now());
    let (params, book) = commit(&mut core, t0());
    assert_eq!(params.ledger.len(), 2);
    let findings = params.ledger[1].processing_errors.as_ref().unwrap();
    assert_eq!(
        findings["reconciliation"][0]["finding"],
        json!("status_differs")
    );
    let complete = params
        .changes
        .iter()
        .flat_map(|c| &c.batches)
        .find(|b| b.to_state == tasker_core::state::BatchState::Completed)
        .expect("the batch completes");
    assert_eq!(
        complete.metadata.as_ref().unwrap()["reconciliation"],
        json!("discrepancies")
    );
    let step_change = params.changes.iter().flat_map(|c| &c.steps).next().unwrap();
    assert_eq!(
        step_change.to_state,
        StepState::Complete,
        "the partial result stands"
    );
    let answer = applied(&params);
    core.on_commit_done(book, Ok(answer), t0());
    let outcomes: Vec<AckOutcome> = acks(&core.take_actions())
        .into_iter()
        .map(|(_, _, o)| o)
        .collect();
    assert_eq!(outcomes, vec![AckOutcome::Applied, AckOutcome::Applied]);
    assert_eq!(core.stats.snapshot().reconciliation_discrepancies, 1);
    assert!(
        !core.batches.contains_key(&batch_id),
        "a closed batch is let go"
    );
}

#[test]
fn a_result_for_a_step_lost_across_a_restart_is_fenced_not_rejected() {
    // Restarted: the root was in flight on batch `before` when the previous process stopped.
    let before = Uuid::now_v7();
    let mut dag = diamond();
    dag.steps[0].state = StepState::InProgress;
    dag.steps[0].attempts = 1;
    dag.steps[0].in_flight_batch = Some(before);
    dag.steps[0].in_flight_deadline_at = Some(t0() + TimeDelta::seconds(30));
    let mut core = EngineCore::new(
        options(),
        Arc::new(StatsCounters::default()),
        &crate::clock::Ambient::default(),
        t0(),
    );
    core.take_actions();
    core.on_tasks_loaded(vec![dag], t0());
    core.on_claim_done(Ok(false));
    core.take_actions();

    // No worker claims it within twice the liveness window (2 × 5 × 1 s): it is lost.
    let lost_at = t0() + TimeDelta::seconds(10);
    core.on_tick(lost_at);
    core.take_actions();
    let (params, book) = commit(&mut core, lost_at);
    let change = &params.changes[0].steps[0];
    assert_eq!((change.step_id, change.expect_batch), (11, Some(before)));
    assert_eq!(change.to_state, StepState::Error);
    core.on_commit_done(book, Ok(applied(&params)), lost_at);
    core.take_actions();

    // Its worker comes back late and re-sends the result of that attempt.
    core.on_frame(peer(), hello(4), lost_at, Instant::now());
    core.take_actions();
    core.on_frame(
        peer(),
        completed(before, 11, 1, json!({ "late": true })),
        lost_at,
        Instant::now(),
    );
    let (params, book) = commit(&mut core, lost_at);
    assert!(
        params.changes.iter().all(|c| c.steps.is_empty()),
        "a late result is recorded, never applied"
    );
    core.on_commit_done(book, Ok(applied(&params)), lost_at);
    assert_eq!(
        acks(&core.take_actions()),
        vec![(before, Some(11), AckOutcome::Fenced)],
        "the batch was sent before the restart, so its result is fenced (spec §9.4)"
    );
}

/// Another diamond: task `task_id`, step ids `task_id * 10 + 1..=4`.
fn diamond_numbered(task_id: i64) -> TaskDag {
    let mut dag = diamond();
    dag.task.task_id = task_id;
    for step in &mut dag.steps {
        step.task_id = task_id;
        step.step_id += (task_id - 1) * 10;
    }
    for edge in &mut dag.edges {
        edge.0 += (task_id - 1) * 10;
        edge.1 += (task_id - 1) * 10;
    }
    dag
}

/// The batches of the commits among `actions`, one list per commit: (id, step ids).
fn records_asked(actions: &[Action]) -> Vec<Vec<(Uuid, Vec<i64>)>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Commit { params, .. } => Some(recorded_in(params)),
            _ => None,
        })
        .collect()
}

fn sends(actions: &[Action]) -> Vec<Uuid> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendBatch { batch_id, .. } => Some(*batch_id),
            _ => None,
        })
        .collect()
}

/// The store's answer for a batch with every step included at attempt 1 (the tests' step ids
/// are `task_id * 10 + n`).
fn included(batch: &(Uuid, Vec<i64>)) -> BatchRecorded {
    BatchRecorded {
        recorded: true,
        included: batch
            .1
            .iter()
            .enumerate()
            .map(|(i, &step_id)| DispatchedStep {
                step_id,
                task_id: step_id / 10,
                attempt: 1,
                sequence_order: i as i32,
            })
            .collect(),
        refused: Vec::new(),
    }
}

#[test]
fn batches_planned_while_a_commit_is_in_flight_are_recorded_together_and_sent_after_commit() {
    let mut core = ready_core(10);
    core.dispatch(t0());
    let (first, first_book) = commit(&mut core, t0());
    // Two more tasks arrive, in two loop turns, while the first commit is in flight.
    for task_id in [2, 3] {
        core.on_tasks_loaded(vec![diamond_numbered(task_id)], t0());
        core.dispatch(t0());
        core.start_commit(t0());
        assert!(
            records_asked(&core.take_actions()).is_empty(),
            "one commit in flight"
        );
    }
    let answer = applied(&first);
    core.on_commit_done(first_book, Ok(answer), t0());
    assert_eq!(sends(&core.take_actions()).len(), 1, "the first batch");

    // The next commit records both waiting batches; nothing is sent before it commits.
    core.start_commit(t0());
    let actions = core.take_actions();
    let groups = records_asked(&actions);
    assert_eq!(groups.len(), 1, "one write");
    assert_eq!(
        groups[0].iter().map(|b| b.1.clone()).collect::<Vec<_>>(),
        vec![vec![21], vec![31]],
        "in the order planned"
    );
    assert!(sends(&actions).is_empty());
    let book = actions
        .into_iter()
        .find_map(|a| match a {
            Action::Commit { book, .. } => Some(*book),
            _ => None,
        })
        .unwrap();

    // The write fails: neither batch is sent; both steps wait out the pause and are planned
    // again.
    core.on_commit_done(
        book,
        Err(tasker_store::StoreError::Unavailable {
            target: "unit".into(),
            cause: "gone".into(),
        }),
        t0(),
    );
    assert!(sends(&core.take_actions()).is_empty());
    core.dispatch(t0());
    core.start_commit(t0());
    assert!(records_asked(&core.take_actions()).is_empty(), "paused");
    let later = t0() + TimeDelta::seconds(2);
    core.on_tick(later);
    core.dispatch(later);
    let (params, book) = commit(&mut core, later);
    let recorded = recorded_in(&params);
    let mut steps: Vec<i64> = recorded.iter().flat_map(|b| b.1.clone()).collect();
    steps.sort_unstable();
    assert_eq!(steps, vec![21, 31], "both planned again");

    // This time it commits: each batch is sent, once.
    let answer = applied(&params);
    core.on_commit_done(book, Ok(answer), later);
    let sent = sends(&core.take_actions());
    assert_eq!(sent, recorded.iter().map(|b| b.0).collect::<Vec<_>>());
}

fn checks(actions: &[Action]) -> Vec<i64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::CheckTask(task_id) => Some(*task_id),
            _ => None,
        })
        .collect()
}

#[test]
fn a_task_awaited_during_a_claim_is_read_only_if_the_claims_do_not_take_it_on() {
    let mut core = EngineCore::new(
        options(),
        Arc::new(StatsCounters::default()),
        &crate::clock::Ambient::default(),
        t0(),
    );
    core.take_actions();
    // Tasks 1 and 2 are awaited while the first claim round runs; a third is created meanwhile,
    // so another round follows.
    let (reply_1, _wait_1) = tokio::sync::oneshot::channel();
    let (reply_2, _wait_2) = tokio::sync::oneshot::channel();
    core.on_await(1, reply_1);
    core.on_await(2, reply_2);
    core.request_claim();
    assert!(
        checks(&core.take_actions()).is_empty(),
        "the claim may load them"
    );
    core.on_tasks_loaded(vec![diamond()], t0());
    core.on_claim_done(Ok(false));
    let actions = core.take_actions();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::ClaimTasks { .. })),
        "the round asked for meanwhile"
    );
    assert!(checks(&actions).is_empty(), "claims still running");
    core.on_claim_done(Ok(false));
    assert_eq!(
        checks(&core.take_actions()),
        vec![2],
        "task 1 was taken on; task 2 is read"
    );
    // With no claim running, an awaited task that is not held is read at once.
    let (reply_3, _wait_3) = tokio::sync::oneshot::channel();
    core.on_await(3, reply_3);
    assert_eq!(checks(&core.take_actions()), vec![3]);
    let (reply_1, _wait_1) = tokio::sync::oneshot::channel();
    core.on_await(1, reply_1);
    assert!(checks(&core.take_actions()).is_empty(), "held");
}

/// Delivers a step's result, commits it, and checks it is acknowledged as applied; returns the
/// batches dispatched in the same commit, each sent.
fn complete_step(
    core: &mut EngineCore,
    batch_id: Uuid,
    step_id: i64,
    now: DateTime<Utc>,
) -> Vec<(Uuid, Vec<i64>)> {
    core.on_frame(
        peer(),
        completed(batch_id, step_id, 1, json!({ "step": step_id })),
        now,
        Instant::now(),
    );
    let (params, book) = commit(core, now);
    let recorded = recorded_in(&params);
    let answer = applied(&params);
    core.on_commit_done(book, Ok(answer), now);
    let actions = core.take_actions();
    assert_eq!(
        acks(&actions),
        vec![(batch_id, Some(step_id), AckOutcome::Applied)]
    );
    assert_eq!(
        sends(&actions),
        recorded.iter().map(|b| b.0).collect::<Vec<_>>()
    );
    recorded
}

#[test]
fn steps_of_started_tasks_are_dispatched_before_the_roots_of_waiting_tasks() {
    let mut core = ready_core(2);
    let (batch_a, steps) = dispatch_one(&mut core, t0());
    assert_eq!(steps, vec![11]);
    sent_batch(&mut core, batch_a);

    // A task not yet started arrives. Nothing of a started task is ready, so its root goes out
    // with the credit left.
    core.on_tasks_loaded(vec![diamond_numbered(2)], t0());
    let batch_2 = dispatch_one(&mut core, t0());
    assert_eq!(batch_2.1, vec![21]);
    assert_eq!(sends(&core.take_actions()), vec![batch_2.0]);

    // A backlog of tasks not yet started queues up while no credit is free.
    for task_id in [3, 4] {
        core.on_tasks_loaded(vec![diamond_numbered(task_id)], t0());
        core.dispatch(t0());
        core.start_commit(t0());
        assert!(records_asked(&core.take_actions()).is_empty(), "no credit");
    }

    // Task 1's root completes: its children were made ready after roots 31 and 41 were
    // queued, yet go first, in the commit of the root's result.
    let t1 = t0() + TimeDelta::milliseconds(5);
    let batch_b = complete_step(&mut core, batch_a, 11, t1);
    assert_eq!(
        batch_b.iter().map(|b| b.1.clone()).collect::<Vec<_>>(),
        vec![vec![12]],
        "a child of a started task before roots 31, 41"
    );

    // Task 2's root completes too; started tasks' steps keep their order: task 1's step c,
    // made ready first, goes before task 2's children.
    let t2 = t1 + TimeDelta::milliseconds(5);
    let batch_c = complete_step(&mut core, batch_2.0, 21, t2);
    assert_eq!(
        batch_c.iter().map(|b| b.1.clone()).collect::<Vec<_>>(),
        vec![vec![13]],
        "first in, first out among started tasks"
    );
}

#[test]
fn a_claim_round_read_older_than_memory_does_not_turn_a_held_task_back() {
    let mut core = ready_core(10);
    // The recovery round read task 1 before its root was dispatched; the read arrives after.
    let stale = diamond();
    let (batch_a, _) = dispatch_one(&mut core, t0());
    sent_batch(&mut core, batch_a);
    core.on_tasks_claimed(vec![stale.clone()], t0());
    let step = &core.tasks[&1].steps[0];
    assert_eq!(
        step.state,
        StepState::InProgress,
        "memory keeps the dispatch"
    );
    assert_eq!(step.in_flight, Some(batch_a));
    // A resynchronisation (after a refusal) takes the store's word.
    core.on_tasks_loaded(vec![stale], t0());
    assert_eq!(core.tasks[&1].steps[0].state, StepState::Pending);
}
