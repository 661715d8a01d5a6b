//! Cases: readiness, recording batches (dispatch), batch↔step join across retries.

use tasker_core::state::{BatchState, StepEvent, StepState, TaskEvent, TaskState};
use tasker_store::{
    BatchRecord, BatchStep, ChangeTarget, RefusalReason, StepChange, StepsReady, StoreError,
    TaskChange, TransitionsApply, TransitionsOf,
};
use uuid::Uuid;

use crate::fixtures::{
    apply, diamond, dispatch, dispatch_expecting, finish, ready_ids, run_ok, step, t,
};
use crate::harness::Harness;

pub async fn ready_steps_follow_dependencies(h: &mut Harness) {
    let s = h.store.as_ref();
    let task = s.task_create(diamond("ns", "d", t(0))).await.unwrap();
    let [a, b, c, d] = [
        task.step_ids[0],
        task.step_ids[1],
        task.step_ids[2],
        task.step_ids[3],
    ];
    assert_eq!(ready_ids(s, t(0)).await, vec![a]);
    let (batch_a, _) = dispatch(s, &[a], t(1)).await;
    assert_eq!(
        ready_ids(s, t(1)).await,
        Vec::<i64>::new(),
        "a is in flight"
    );
    apply(s, vec![finish(a, batch_a, StepState::Complete)], t(2)).await;
    assert_eq!(ready_ids(s, t(2)).await, vec![b, c]);
    run_ok(s, &[b], t(3)).await;
    assert_eq!(ready_ids(s, t(3)).await, vec![c], "d waits for c");
    // An operator resolves c by hand: that satisfies d as well as completing it would.
    let resolved = apply(
        s,
        vec![StepChange {
            step_id: c,
            expect_state: StepState::Pending,
            expect_batch: None,
            to_state: StepState::ResolvedManually,
            event: StepEvent::ResolveManually,
            metadata: None,
            results: Some(serde_json::json!({ "by": "ops" })),
            error: None,
            backoff_until: None,
        }],
        t(4),
    )
    .await;
    assert_eq!(resolved.applied, vec![0]);
    assert_eq!(ready_ids(s, t(4)).await, vec![d]);
    let ready = s
        .steps_ready(StepsReady {
            now: t(4),
            task_ids: None,
            claimed_by: None,
            limit: 0,
        })
        .await
        .unwrap();
    assert_eq!(ready[0].task_id, task.task_id);
    assert_eq!(ready[0].name, "d");
    assert_eq!(ready[0].handler_class, "Handlers::d");
    assert_eq!(ready[0].state, StepState::Pending);
    assert_eq!(ready[0].attempts, 0);
}

pub async fn ready_steps_follow_retry_rules(h: &mut Harness) {
    let s = h.store.as_ref();
    let mut template = diamond("ns", "retry", t(0));
    template.steps = vec![step("retryable"), step("once"), step("limited")];
    template.steps[1].retryable = false;
    template.steps[2].retry_limit = 1;
    template.edges.clear();
    let task = s.task_create(template).await.unwrap();
    let [r, once, limited] = [task.step_ids[0], task.step_ids[1], task.step_ids[2]];
    // The first attempt is allowed even for a non-retryable step.
    assert_eq!(ready_ids(s, t(0)).await, vec![r, once, limited]);
    let (batch, _) = dispatch(s, &[r, once, limited], t(1)).await;
    let mut fail_r = finish(r, batch, StepState::Error);
    fail_r.backoff_until = Some(t(1_000));
    apply(
        s,
        vec![
            fail_r,
            finish(once, batch, StepState::Error),
            finish(limited, batch, StepState::Error),
        ],
        t(2),
    )
    .await;
    assert_eq!(
        ready_ids(s, t(999)).await,
        Vec::<i64>::new(),
        "backoff not expired"
    );
    assert_eq!(
        ready_ids(s, t(1_000)).await,
        vec![r],
        "retryable with attempts 1 < 3 after backoff; non-retryable and exhausted never"
    );
    let dag = s.task_load_dag(task.task_id).await.unwrap();
    assert_eq!(dag.steps[0].backoff_until, Some(t(1_000)));
    assert_eq!(
        dag.steps[0].last_error,
        Some(serde_json::json!({ "message": "boom" }))
    );
    // Retry it: error → in_progress, attempt 2; then exhaust it.
    let (batch2, recorded) = dispatch_expecting(s, &[r], StepState::Error, t(1_000)).await;
    assert_eq!(recorded.included[0].attempt, 2);
    assert_eq!(
        s.task_load_dag(task.task_id).await.unwrap().steps[0].backoff_until,
        None
    );
    apply(s, vec![finish(r, batch2, StepState::Error)], t(1_001)).await;
    let (batch3, _) = dispatch_expecting(s, &[r], StepState::Error, t(1_002)).await;
    apply(s, vec![finish(r, batch3, StepState::Error)], t(1_003)).await;
    assert_eq!(
        s.task_load_dag(task.task_id).await.unwrap().steps[0].attempts,
        3
    );
    assert_eq!(
        ready_ids(s, t(100_000)).await,
        Vec::<i64>::new(),
        "3 of 3 attempts used"
    );
}

pub async fn ready_steps_filter_by_task_and_skip_finished_tasks(h: &mut Harness) {
    let s = h.store.as_ref();
    let one = s.task_create(diamond("ns", "f", t(0))).await.unwrap();
    let two = s.task_create(diamond("ns", "f", t(0))).await.unwrap();
    let three = s.task_create(diamond("ns", "f", t(0))).await.unwrap();
    let only_two = s
        .steps_ready(StepsReady {
            now: t(0),
            task_ids: Some(vec![two.task_id]),
            claimed_by: None,
            limit: 0,
        })
        .await
        .unwrap();
    assert_eq!(
        only_two.iter().map(|r| r.step_id).collect::<Vec<_>>(),
        vec![two.step_ids[0]]
    );
    // A cancelled task's steps are never ready.
    let applied = s
        .transitions_apply(TransitionsApply {
            now: t(1),
            claimant: None,
            ledger: vec![],
            changes: vec![tasker_store::ChangeSet {
                tasks: vec![TaskChange {
                    task_id: three.task_id,
                    expect_state: TaskState::Pending,
                    to_state: TaskState::Cancelled,
                    event: TaskEvent::Cancel,
                    metadata: None,
                }],
                ..Default::default()
            }],
            all_or_nothing: true,
            batches: Vec::new(),
            tasks: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(applied.applied, vec![0]);
    assert_eq!(
        ready_ids(s, t(1)).await,
        vec![one.step_ids[0], two.step_ids[0]]
    );
    let limited = s
        .steps_ready(StepsReady {
            now: t(1),
            task_ids: None,
            claimed_by: None,
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
}

pub async fn batch_record_puts_steps_in_flight(h: &mut Harness) {
    let s = h.store.as_ref();
    let task = s.task_create(diamond("ns", "b", t(0))).await.unwrap();
    let [a, b, c, d] = [
        task.step_ids[0],
        task.step_ids[1],
        task.step_ids[2],
        task.step_ids[3],
    ];
    run_ok(s, &[a], t(1)).await;
    run_ok(s, &[b, c], t(2)).await;
    let batch = Uuid::new_v4();
    let recorded = s
        .batch_record(BatchRecord {
            now: t(10),
            claimant: None,
            batch_uuid: batch,
            worker_id: Some("w9".into()),
            handler_class: Some("Handlers::d".into()),
            timeout_ms: 2_000,
            state: BatchState::Created,
            metadata: Some(serde_json::json!({ "note": 1 })),
            steps: vec![BatchStep {
                step_id: d,
                expect_state: StepState::Pending,
            }],
        })
        .await
        .unwrap();
    assert!(recorded.recorded);
    assert!(recorded.refused.is_empty());
    assert_eq!(recorded.included.len(), 1);
    assert_eq!(recorded.included[0].step_id, d);
    assert_eq!(recorded.included[0].task_id, task.task_id);
    assert_eq!(recorded.included[0].attempt, 1);
    assert_eq!(recorded.included[0].sequence_order, 0);
    let dag = s.task_load_dag(task.task_id).await.unwrap();
    let sd = &dag.steps[3];
    assert_eq!(sd.state, StepState::InProgress);
    assert_eq!(sd.attempts, 1);
    assert_eq!(sd.in_flight_batch, Some(batch));
    assert_eq!(sd.last_attempted_at, Some(t(10)));
    assert_eq!(
        sd.in_flight_deadline_at,
        Some(t(10 + 500)),
        "the step's own timeout wins"
    );
    assert_eq!(dag.task.state, TaskState::InProgress);
    let task_history = s
        .transitions_list(TransitionsOf::Task(task.task_id))
        .await
        .unwrap();
    assert_eq!(
        task_history
            .iter()
            .map(|r| r.to_state.as_str())
            .collect::<Vec<_>>(),
        ["pending", "in_progress"],
        "the first dispatch starts the task, once"
    );
    let detail = s.batch_get(batch).await.unwrap();
    assert_eq!(detail.batch_uuid, batch);
    assert_eq!(detail.worker_id.as_deref(), Some("w9"));
    assert_eq!(detail.handler_class.as_deref(), Some("Handlers::d"));
    assert_eq!(detail.batch_size, 1);
    assert_eq!(detail.timeout_ms, 2_000);
    assert_eq!(detail.state, BatchState::Created);
    assert_eq!(detail.metadata, Some(serde_json::json!({ "note": 1 })));
    assert_eq!(detail.created_at, t(10));
    assert!(!detail.completion_received);
    assert_eq!(detail.steps.len(), 1);
    assert!(detail.steps[0].in_flight_here);
    assert_eq!(detail.steps[0].step_state, StepState::InProgress);
    let history = s
        .transitions_list(TransitionsOf::Batch(batch))
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].to_state, "created");
    assert!(history[0].most_recent);
    // Recording the same batch id twice is refused.
    let again = s
        .batch_record(BatchRecord {
            now: t(11),
            claimant: None,
            batch_uuid: batch,
            worker_id: None,
            handler_class: None,
            timeout_ms: 1,
            state: BatchState::Created,
            metadata: None,
            steps: vec![BatchStep {
                step_id: a,
                expect_state: StepState::Complete,
            }],
        })
        .await;
    assert!(
        matches!(again, Ok(ref r) if !r.recorded),
        "a complete step is refused: {again:?}"
    );
}

fn one_batch(batch_uuid: Uuid, now_ms: i64, steps: &[i64]) -> BatchRecord {
    BatchRecord {
        now: t(now_ms),
        claimant: None,
        batch_uuid,
        worker_id: Some("w1".into()),
        handler_class: None,
        timeout_ms: 1_000,
        state: BatchState::Published,
        metadata: None,
        steps: steps
            .iter()
            .map(|&step_id| BatchStep {
                step_id,
                expect_state: StepState::Pending,
            })
            .collect(),
    }
}

pub async fn batches_record_records_each_in_order_in_one_transaction(h: &mut Harness) {
    let s = h.store.as_ref();
    let first_task = s.task_create(diamond("ns", "many", t(0))).await.unwrap();
    let second_task = s.task_create(diamond("ns", "many", t(0))).await.unwrap();
    let a1 = first_task.step_ids[0];
    let a2 = second_task.step_ids[0];
    // Roots of two more tasks, dispatchable, for the failing call below.
    let third_task = s.task_create(diamond("ns", "many", t(0))).await.unwrap();
    let fourth_task = s.task_create(diamond("ns", "many", t(0))).await.unwrap();
    let b1 = third_task.step_ids[0];
    let b2 = fourth_task.step_ids[0];
    let [x, y, z] = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let outcomes = s
        .batches_record(vec![
            one_batch(x, 10, &[a1]),
            // a1 is in flight in x by now: left out, while a2 goes in.
            one_batch(y, 10, &[a1, a2]),
            one_batch(z, 10, &[a1]),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 3, "one outcome per batch");
    assert!(outcomes[0].recorded);
    assert_eq!(outcomes[0].included.len(), 1);
    assert_eq!(outcomes[0].included[0].step_id, a1);
    assert_eq!(outcomes[0].included[0].attempt, 1);
    assert!(outcomes[0].refused.is_empty());
    assert!(outcomes[1].recorded);
    assert_eq!(outcomes[1].included.len(), 1);
    assert_eq!(outcomes[1].included[0].step_id, a2);
    assert_eq!(outcomes[1].included[0].sequence_order, 0);
    assert_eq!(outcomes[1].refused.len(), 1);
    assert_eq!(outcomes[1].refused[0].target, ChangeTarget::Step(a1));
    assert!(!outcomes[2].recorded, "every step of z was taken by x");
    assert!(matches!(
        s.batch_get(z).await,
        Err(StoreError::NotFound { .. })
    ));
    let dag = s.task_load_dag(first_task.task_id).await.unwrap();
    assert_eq!(dag.steps[0].in_flight_batch, Some(x));
    assert_eq!(dag.task.state, TaskState::InProgress);
    let dag = s.task_load_dag(second_task.task_id).await.unwrap();
    assert_eq!(dag.steps[0].in_flight_batch, Some(y));
    assert_eq!(s.batch_get(y).await.unwrap().steps.len(), 1);
    // One bad batch (an id already recorded) records none of the others.
    let fresh = Uuid::new_v4();
    let failed = s
        .batches_record(vec![one_batch(fresh, 20, &[b1]), one_batch(x, 20, &[b2])])
        .await;
    assert!(failed.is_err(), "a batch id recorded twice: {failed:?}");
    assert!(
        matches!(s.batch_get(fresh).await, Err(StoreError::NotFound { .. })),
        "the good batch before the bad one was rolled back"
    );
    let dag = s.task_load_dag(third_task.task_id).await.unwrap();
    assert_eq!(dag.steps[0].in_flight_batch, None);
    assert_eq!(dag.steps[0].attempts, 0);
    assert_eq!(dag.task.state, TaskState::Pending);
    let dag = s.task_load_dag(fourth_task.task_id).await.unwrap();
    assert_eq!(dag.steps[0].in_flight_batch, None);
    // Nothing to record is no error.
    assert!(s.batches_record(Vec::new()).await.unwrap().is_empty());
}

pub async fn batch_record_leaves_out_stale_steps(h: &mut Harness) {
    let s = h.store.as_ref();
    let task = s.task_create(diamond("ns", "stale", t(0))).await.unwrap();
    let other = s.task_create(diamond("ns", "stale", t(0))).await.unwrap();
    let [a, b] = [task.step_ids[0], task.step_ids[1]];
    let (first, _) = dispatch(s, &[a], t(1)).await;
    let batch = Uuid::new_v4();
    let recorded = s
        .batch_record(BatchRecord {
            now: t(2),
            claimant: None,
            batch_uuid: batch,
            worker_id: Some("w1".into()),
            handler_class: None,
            timeout_ms: 1_000,
            state: BatchState::Published,
            metadata: None,
            steps: vec![
                BatchStep {
                    step_id: a,
                    expect_state: StepState::Pending,
                },
                BatchStep {
                    step_id: a,
                    expect_state: StepState::InProgress,
                },
                BatchStep {
                    step_id: b,
                    expect_state: StepState::Error,
                },
                BatchStep {
                    step_id: 999_999,
                    expect_state: StepState::Pending,
                },
                BatchStep {
                    step_id: other.step_ids[0],
                    expect_state: StepState::Pending,
                },
                BatchStep {
                    step_id: other.step_ids[0],
                    expect_state: StepState::Pending,
                },
            ],
        })
        .await
        .unwrap();
    assert!(recorded.recorded);
    assert_eq!(recorded.included.len(), 1);
    assert_eq!(recorded.included[0].step_id, other.step_ids[0]);
    assert_eq!(recorded.included[0].sequence_order, 0);
    let reasons: Vec<&RefusalReason> = recorded.refused.iter().map(|r| &r.reason).collect();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    assert!(matches!(reasons[0], RefusalReason::StateMismatch { .. }));
    assert!(
        matches!(reasons[1], RefusalReason::NotAllowed { .. }),
        "a listed twice"
    );
    assert!(matches!(reasons[2], RefusalReason::StateMismatch { .. }));
    assert!(matches!(reasons[3], RefusalReason::NotFound));
    assert!(
        matches!(reasons[4], RefusalReason::NotAllowed { .. }),
        "listed twice"
    );
    // The step in flight elsewhere is untouched.
    let dag = s.task_load_dag(task.task_id).await.unwrap();
    assert_eq!(dag.steps[0].in_flight_batch, Some(first));
    assert_eq!(dag.steps[0].attempts, 1);
    // All refused: no batch row at all.
    let none = Uuid::new_v4();
    let recorded = s
        .batch_record(BatchRecord {
            now: t(3),
            claimant: None,
            batch_uuid: none,
            worker_id: None,
            handler_class: None,
            timeout_ms: 1_000,
            state: BatchState::Published,
            metadata: None,
            steps: vec![BatchStep {
                step_id: a,
                expect_state: StepState::Pending,
            }],
        })
        .await
        .unwrap();
    assert!(!recorded.recorded);
    assert!(matches!(
        s.batch_get(none).await,
        Err(StoreError::NotFound { .. })
    ));
    // A finished task's steps are not dispatched.
    let done = s.task_create(diamond("ns", "stale", t(0))).await.unwrap();
    s.transitions_apply(TransitionsApply {
        now: t(4),
        claimant: None,
        ledger: vec![],
        changes: vec![tasker_store::ChangeSet {
            tasks: vec![TaskChange {
                task_id: done.task_id,
                expect_state: TaskState::Pending,
                to_state: TaskState::Cancelled,
                event: TaskEvent::Cancel,
                metadata: None,
            }],
            ..Default::default()
        }],
        all_or_nothing: true,
        batches: Vec::new(),
        tasks: Vec::new(),
    })
    .await
    .unwrap();
    let (_, recorded) = dispatch(s, &[done.step_ids[0]], t(5)).await;
    assert!(!recorded.recorded);
    assert!(matches!(
        recorded.refused[0].reason,
        RefusalReason::TaskNotActive { ref state } if state == "cancelled"
    ));
}

pub async fn a_step_appears_in_many_batches_across_retries(h: &mut Harness) {
    let s = h.store.as_ref();
    let task = s.task_create(diamond("ns", "join", t(0))).await.unwrap();
    let a = task.step_ids[0];
    let (first, _) = dispatch(s, &[a], t(1)).await;
    // Timed out: in_progress → error (expecting the first batch).
    apply(
        s,
        vec![StepChange {
            event: StepEvent::Fail,
            ..finish(a, first, StepState::Error)
        }],
        t(2),
    )
    .await;
    let (second, recorded) = dispatch_expecting(s, &[a], StepState::Error, t(3)).await;
    assert_eq!(recorded.included[0].attempt, 2);
    let one = s.batch_get(first).await.unwrap();
    let two = s.batch_get(second).await.unwrap();
    assert_eq!(one.steps[0].step_id, a);
    assert_eq!(one.steps[0].attempt, 1);
    assert!(!one.steps[0].in_flight_here);
    assert_eq!(two.steps[0].step_id, a);
    assert_eq!(two.steps[0].attempt, 2);
    assert!(two.steps[0].in_flight_here);
    let history = s.transitions_list(TransitionsOf::Step(a)).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|r| (r.to_state.as_str(), r.sort_key))
            .collect::<Vec<_>>(),
        [
            ("pending", 1),
            ("in_progress", 2),
            ("error", 3),
            ("in_progress", 4)
        ]
    );
    assert_eq!(history.iter().filter(|r| r.most_recent).count(), 1);
    assert!(history[3].most_recent);
}

/// A record of `steps` (each `pending`) for the `batches` of a `transitions_apply`.
fn child_batch(steps: &[i64], now: chrono::DateTime<chrono::Utc>) -> BatchRecord {
    BatchRecord {
        now,
        claimant: None,
        batch_uuid: Uuid::new_v4(),
        worker_id: Some("w1".to_owned()),
        handler_class: None,
        timeout_ms: 1_000,
        state: BatchState::Published,
        metadata: None,
        steps: steps
            .iter()
            .map(|&step_id| BatchStep {
                step_id,
                expect_state: StepState::Pending,
            })
            .collect(),
    }
}

pub async fn children_are_dispatched_in_the_commit_that_completes_their_parent(h: &mut Harness) {
    let s = h.store.as_ref();
    let task = s.task_create(diamond("ns", "handoff", t(0))).await.unwrap();
    let [a, b, c, d] = [
        task.step_ids[0],
        task.step_ids[1],
        task.step_ids[2],
        task.step_ids[3],
    ];
    let (batch_a, _) = dispatch(s, &[a], t(1)).await;

    // One transaction: a's result, and the dispatch of b and c (ready once a is complete), and
    // of d (not ready: b and c are not done), in that order.
    let children = child_batch(&[b, c], t(2));
    let too_early = child_batch(&[d], t(2));
    let applied = s
        .transitions_apply(TransitionsApply {
            now: t(2),
            claimant: None,
            ledger: Vec::new(),
            changes: vec![tasker_store::ChangeSet {
                steps: vec![crate::fixtures::finish(a, batch_a, StepState::Complete)],
                ..tasker_store::ChangeSet::default()
            }],
            all_or_nothing: false,
            batches: vec![children.clone(), too_early.clone()],
            tasks: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(applied.applied, vec![0]);
    assert_eq!(applied.batches.len(), 2, "one outcome per batch");
    assert!(applied.batches[0].recorded);
    let included: Vec<i64> = applied.batches[0]
        .included
        .iter()
        .map(|s| s.step_id)
        .collect();
    assert_eq!(included, vec![b, c]);
    assert!(applied.batches[0].included.iter().all(|s| s.attempt == 1));
    assert!(!applied.batches[1].recorded, "d waits for b and c");
    assert_eq!(
        applied.batches[1].refused[0].reason,
        RefusalReason::ParentsNotDone { unmet: 2 }
    );
    let dag = s.task_load_dag(task.task_id).await.unwrap();
    let state_of = |id: i64| dag.steps.iter().find(|x| x.step_id == id).unwrap().state;
    assert_eq!(state_of(a), StepState::Complete);
    assert_eq!(state_of(b), StepState::InProgress);
    assert_eq!(state_of(c), StepState::InProgress);
    assert_eq!(state_of(d), StepState::Pending);
    let b_record = dag.steps.iter().find(|x| x.step_id == b).unwrap();
    assert_eq!(b_record.in_flight_batch, Some(children.batch_uuid));

    // When the parent's change is refused (a stale result: wrong batch), its child's dispatch
    // in the same transaction is refused with it, and nothing of it is written.
    let batch_b = children.batch_uuid;
    let stale = Uuid::new_v4();
    let applied = s
        .transitions_apply(TransitionsApply {
            now: t(3),
            claimant: None,
            ledger: Vec::new(),
            changes: vec![
                tasker_store::ChangeSet {
                    steps: vec![crate::fixtures::finish(b, batch_b, StepState::Complete)],
                    ..tasker_store::ChangeSet::default()
                },
                tasker_store::ChangeSet {
                    steps: vec![crate::fixtures::finish(c, stale, StepState::Complete)],
                    ..tasker_store::ChangeSet::default()
                },
            ],
            all_or_nothing: false,
            batches: vec![child_batch(&[d], t(3))],
            tasks: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(applied.applied, vec![0]);
    assert_eq!(applied.refused.len(), 1);
    assert!(!applied.batches[0].recorded);
    assert_eq!(
        applied.batches[0].refused[0].reason,
        RefusalReason::ParentsNotDone { unmet: 1 }
    );
    let history = s.transitions_list(TransitionsOf::Step(d)).await.unwrap();
    assert_eq!(history.len(), 1, "d only has its initial transition");
    assert_eq!(history[0].to_state, StepState::Pending.as_str());
}
