//! Cases: group commit of many results, compare-and-set refusals, history.

use serde_json::json;
use tasker_core::state::{BatchEvent, BatchState, StepEvent, StepState, TaskEvent, TaskState};
use tasker_store::{
    BatchChange, ChangeSet, ChangeTarget, RefusalReason, StepChange, StoreError, TaskChange,
    TransitionsApply, TransitionsOf,
};
use uuid::Uuid;

use crate::fixtures::{diamond, dispatch, finish, step, t};
use crate::harness::Harness;

pub async fn group_commit_applies_many_results(h: &mut Harness) {
    let s = h.store.as_ref();
    let mut template = diamond("ns", "wide", t(0));
    template.steps = (0..10).map(|i| step(&format!("s{i}"))).collect();
    template.edges.clear();
    let one = s.task_create(template.clone()).await.unwrap();
    let two = s.task_create(template).await.unwrap();
    let all: Vec<i64> = one.step_ids.iter().chain(&two.step_ids).copied().collect();
    let (batch, recorded) = dispatch(s, &all, t(1)).await;
    assert_eq!(recorded.included.len(), 20);
    assert_eq!(
        recorded
            .included
            .iter()
            .map(|d| d.sequence_order)
            .collect::<Vec<_>>(),
        (0..20).collect::<Vec<i32>>()
    );
    let applied = s
        .transitions_apply(TransitionsApply {
            now: t(2),
            claimant: None,
            ledger: vec![],
            changes: all
                .iter()
                .map(|&id| ChangeSet {
                    steps: vec![finish(id, batch, StepState::Complete)],
                    ..ChangeSet::default()
                })
                .collect(),
            all_or_nothing: false,
            batches: Vec::new(),
            tasks: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(applied.applied, (0..20).collect::<Vec<usize>>());
    assert!(applied.refused.is_empty());
    for task in [&one, &two] {
        let dag = s.task_load_dag(task.task_id).await.unwrap();
        for st in &dag.steps {
            assert_eq!(st.state, StepState::Complete);
            assert_eq!(st.results, Some(json!({ "done": st.step_id })));
            assert_eq!(
                st.in_flight_batch, None,
                "leaving in_progress clears the batch"
            );
            assert_eq!(st.in_flight_deadline_at, None);
            assert_eq!(st.updated_at, t(2));
            let history = s
                .transitions_list(TransitionsOf::Step(st.step_id))
                .await
                .unwrap();
            assert_eq!(history.len(), 3);
            assert_eq!(history[2].from_state.as_deref(), Some("in_progress"));
            assert_eq!(history[2].to_state, "complete");
            assert_eq!(history[2].event, "succeed");
            assert_eq!(
                history[2].metadata,
                Some(json!({ "batch": batch.to_string() }))
            );
            assert_eq!(history[2].created_at, t(2));
            assert_eq!(
                history.iter().map(|r| r.most_recent).collect::<Vec<_>>(),
                [false, false, true]
            );
        }
    }
}

pub async fn stale_and_conflicting_changes_are_refused_whole(h: &mut Harness) {
    let s = h.store.as_ref();
    let task = s.task_create(diamond("ns", "cas", t(0))).await.unwrap();
    let [a, b, c] = [task.step_ids[0], task.step_ids[1], task.step_ids[2]];
    let (old_batch, _) = dispatch(s, &[a], t(1)).await;
    // The attempt timed out and was retried in a new batch.
    crate::fixtures::apply(s, vec![finish(a, old_batch, StepState::Error)], t(2)).await;
    let (new_batch, _) = crate::fixtures::dispatch_expecting(s, &[a], StepState::Error, t(3)).await;

    let applied = s
        .transitions_apply(TransitionsApply {
            now: t(4),
            claimant: None,
            ledger: vec![],
            changes: vec![
                // 0: a late result from the old batch: fenced off.
                ChangeSet {
                    steps: vec![finish(a, old_batch, StepState::Complete)],
                    ..ChangeSet::default()
                },
                // 1: a wrong expected state.
                ChangeSet {
                    steps: vec![finish(b, new_batch, StepState::Complete)],
                    ..ChangeSet::default()
                },
                // 2: half good, half bad: nothing of it is applied.
                ChangeSet {
                    steps: vec![finish(a, new_batch, StepState::Complete)],
                    tasks: vec![TaskChange {
                        task_id: task.task_id,
                        expect_state: TaskState::Complete,
                        to_state: TaskState::Error,
                        event: TaskEvent::Fail,
                        metadata: None,
                    }],
                    ..ChangeSet::default()
                },
                // 3: an unknown step.
                ChangeSet {
                    steps: vec![finish(424_242, new_batch, StepState::Complete)],
                    ..ChangeSet::default()
                },
                // 4: the real result.
                ChangeSet {
                    steps: vec![StepChange {
                        results: Some(json!({ "winner": true })),
                        ..finish(a, new_batch, StepState::Complete)
                    }],
                    ..ChangeSet::default()
                },
                // 5: the same result again, after 4 applied: refused (state moved on).
                ChangeSet {
                    steps: vec![finish(a, new_batch, StepState::Complete)],
                    ..ChangeSet::default()
                },
                // 6: an unknown batch and task.
                ChangeSet {
                    batches: vec![BatchChange {
                        batch_uuid: Uuid::new_v4(),
                        expect_state: BatchState::Published,
                        to_state: BatchState::Completed,
                        event: BatchEvent::Complete,
                        metadata: None,
                    }],
                    tasks: vec![TaskChange {
                        task_id: 777_777,
                        expect_state: TaskState::Pending,
                        to_state: TaskState::Cancelled,
                        event: TaskEvent::Cancel,
                        metadata: None,
                    }],
                    ..ChangeSet::default()
                },
            ],
            all_or_nothing: false,
            batches: Vec::new(),
            tasks: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(applied.applied, vec![4]);
    let refused: Vec<usize> = applied.refused.iter().map(|r| r.index).collect();
    assert_eq!(refused, vec![0, 1, 2, 3, 5, 6]);
    let reason = |i: usize| applied.refused[i].refusals[0].reason.clone();
    assert_eq!(
        reason(0),
        RefusalReason::BatchMismatch {
            expected: Some(old_batch),
            found: Some(new_batch)
        }
    );
    assert_eq!(
        reason(1),
        RefusalReason::StateMismatch {
            expected: "in_progress".into(),
            found: "pending".into()
        }
    );
    assert_eq!(
        applied.refused[2].refusals.len(),
        1,
        "only the task change was wrong"
    );
    assert_eq!(
        applied.refused[2].refusals[0].target,
        ChangeTarget::Task(task.task_id)
    );
    assert_eq!(reason(3), RefusalReason::NotFound);
    assert!(matches!(reason(4), RefusalReason::StateMismatch { .. }));
    assert_eq!(applied.refused[5].refusals.len(), 2);

    let dag = s.task_load_dag(task.task_id).await.unwrap();
    assert_eq!(dag.steps[0].state, StepState::Complete);
    assert_eq!(
        dag.steps[0].results,
        Some(json!({ "winner": true })),
        "only set 4 wrote"
    );
    assert_eq!(dag.steps[1].state, StepState::Pending);
    assert_eq!(dag.steps[2].state, StepState::Pending);
    assert_eq!(
        dag.task.state,
        TaskState::InProgress,
        "set 2 was not half-applied"
    );
    let history = s.transitions_list(TransitionsOf::Step(a)).await.unwrap();
    assert_eq!(
        history.len(),
        5,
        "pending, in_progress, error, in_progress, complete"
    );
    let _ = c;
}

pub async fn all_or_nothing_writes_nothing_on_conflict(h: &mut Harness) {
    let s = h.store.as_ref();
    let task = s.task_create(diamond("ns", "aon", t(0))).await.unwrap();
    let a = task.step_ids[0];
    let (batch, _) = dispatch(s, &[a], t(1)).await;
    let before = s.task_load_dag(task.task_id).await.unwrap();
    let err = s
        .transitions_apply(TransitionsApply {
            now: t(2),
            claimant: None,
            ledger: vec![crate::ledger::entry(batch, Some(a), "partial_result")],
            changes: vec![
                ChangeSet {
                    steps: vec![finish(a, batch, StepState::Complete)],
                    ..ChangeSet::default()
                },
                ChangeSet {
                    tasks: vec![TaskChange {
                        task_id: task.task_id,
                        expect_state: TaskState::Pending,
                        to_state: TaskState::Cancelled,
                        event: TaskEvent::Cancel,
                        metadata: None,
                    }],
                    ..ChangeSet::default()
                },
            ],
            all_or_nothing: true,
            batches: Vec::new(),
            tasks: Vec::new(),
        })
        .await
        .unwrap_err();
    match &err {
        StoreError::Conflict { refused } => {
            assert_eq!(refused.len(), 1);
            assert_eq!(refused[0].target, ChangeTarget::Task(task.task_id));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("expected state pending, found in_progress"),
        "{err}"
    );
    assert_eq!(s.task_load_dag(task.task_id).await.unwrap(), before);
    let ledger = s
        .ledger_list(tasker_store::LedgerList::default())
        .await
        .unwrap();
    assert!(ledger.is_empty(), "the ledger entry was rolled back too");
}

pub async fn entering_in_progress_needs_a_batch(h: &mut Harness) {
    let s = h.store.as_ref();
    let task = s.task_create(diamond("ns", "ip", t(0))).await.unwrap();
    let applied = crate::fixtures::apply(
        s,
        vec![StepChange {
            step_id: task.step_ids[0],
            expect_state: StepState::Pending,
            expect_batch: None,
            to_state: StepState::InProgress,
            event: StepEvent::Dispatch,
            metadata: None,
            results: None,
            error: None,
            backoff_until: None,
        }],
        t(1),
    )
    .await;
    assert!(matches!(
        applied.refused[0].refusals[0].reason,
        RefusalReason::NotAllowed { .. }
    ));
    // Pending → cancelled (an operator) is the store's to record, not to judge.
    let applied = crate::fixtures::apply(
        s,
        vec![StepChange {
            step_id: task.step_ids[1],
            expect_state: StepState::Pending,
            expect_batch: None,
            to_state: StepState::Cancelled,
            event: StepEvent::Cancel,
            metadata: None,
            results: None,
            error: None,
            backoff_until: None,
        }],
        t(1),
    )
    .await;
    assert_eq!(applied.applied, vec![0]);
}

pub async fn task_and_batch_transitions_keep_history(h: &mut Harness) {
    let s = h.store.as_ref();
    let mut template = diamond("ns", "tb", t(0));
    template.steps = vec![step("only")];
    template.edges.clear();
    let task = s.task_create(template).await.unwrap();
    let only = task.step_ids[0];
    let (batch, _) = dispatch(s, &[only], t(1)).await;
    let applied = s
        .transitions_apply(TransitionsApply {
            now: t(5),
            claimant: None,
            ledger: vec![],
            changes: vec![ChangeSet {
                steps: vec![finish(only, batch, StepState::Complete)],
                tasks: vec![TaskChange {
                    task_id: task.task_id,
                    expect_state: TaskState::InProgress,
                    to_state: TaskState::Complete,
                    event: TaskEvent::Complete,
                    metadata: Some(json!({ "steps": 1 })),
                }],
                batches: vec![
                    BatchChange {
                        batch_uuid: batch,
                        expect_state: BatchState::Published,
                        to_state: BatchState::Executing,
                        event: BatchEvent::ReceiveResult,
                        metadata: None,
                    },
                    BatchChange {
                        batch_uuid: batch,
                        expect_state: BatchState::Executing,
                        to_state: BatchState::Completed,
                        event: BatchEvent::Complete,
                        metadata: None,
                    },
                ],
                ledger_entry: None,
            }],
            all_or_nothing: true,
            batches: Vec::new(),
            tasks: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(applied.applied, vec![0]);
    let record = s.task_get(task.task_id).await.unwrap();
    assert_eq!(record.state, TaskState::Complete);
    assert_eq!(record.completed_at, Some(t(5)));
    let task_history = s
        .transitions_list(TransitionsOf::Task(task.task_id))
        .await
        .unwrap();
    assert_eq!(
        task_history
            .iter()
            .map(|r| (r.to_state.as_str(), r.sort_key, r.most_recent))
            .collect::<Vec<_>>(),
        [
            ("pending", 1, false),
            ("in_progress", 2, false),
            ("complete", 3, true)
        ]
    );
    assert_eq!(task_history[2].metadata, Some(json!({ "steps": 1 })));
    let batch_history = s
        .transitions_list(TransitionsOf::Batch(batch))
        .await
        .unwrap();
    assert_eq!(
        batch_history
            .iter()
            .map(|r| (r.to_state.as_str(), r.sort_key, r.most_recent))
            .collect::<Vec<_>>(),
        [
            ("published", 1, false),
            ("executing", 2, false),
            ("completed", 3, true)
        ]
    );
    assert_eq!(
        s.batch_get(batch).await.unwrap().state,
        BatchState::Completed
    );
}

pub async fn requeue_does_not_count_an_attempt(h: &mut Harness) {
    let s = h.store.as_ref();
    let task = s.task_create(diamond("ns", "rq", t(0))).await.unwrap();
    let a = task.step_ids[0];
    let (batch, recorded) = dispatch(s, &[a], t(1)).await;
    assert_eq!(recorded.included[0].attempt, 1);
    // The send failed: the batch never reached a worker.
    let applied = crate::fixtures::apply(
        s,
        vec![StepChange {
            event: StepEvent::Requeue,
            ..finish(a, batch, StepState::Pending)
        }],
        t(2),
    )
    .await;
    assert_eq!(applied.applied, vec![0]);
    let dag = s.task_load_dag(task.task_id).await.unwrap();
    assert_eq!(dag.steps[0].state, StepState::Pending);
    assert_eq!(
        dag.steps[0].attempts, 0,
        "an attempt never sent does not count"
    );
    assert_eq!(dag.steps[0].in_flight_batch, None);
    assert_eq!(crate::fixtures::ready_ids(s, t(2)).await, vec![a]);
    let (_, again) = dispatch(s, &[a], t(3)).await;
    assert_eq!(again.included[0].attempt, 1);
}

pub async fn transitions_outside_the_state_machine_are_refused(h: &mut Harness) {
    let s = h.store.as_ref();
    let mut template = diamond("ns", "sm", t(0));
    template.steps = vec![step("only")];
    template.edges.clear();
    let task = s.task_create(template).await.unwrap();
    let only = task.step_ids[0];
    let batch = crate::fixtures::run_ok(s, &[only], t(1)).await;
    let applied = s
        .transitions_apply(TransitionsApply {
            now: t(2),
            claimant: None,
            ledger: vec![],
            changes: vec![
                // complete → pending: no event does that.
                ChangeSet {
                    steps: vec![StepChange {
                        step_id: only,
                        expect_state: StepState::Complete,
                        expect_batch: None,
                        to_state: StepState::Pending,
                        event: StepEvent::Requeue,
                        metadata: None,
                        results: None,
                        error: None,
                        backoff_until: None,
                    }],
                    ..ChangeSet::default()
                },
                // in_progress → pending for a task: no event does that either.
                ChangeSet {
                    tasks: vec![TaskChange {
                        task_id: task.task_id,
                        expect_state: TaskState::InProgress,
                        to_state: TaskState::Pending,
                        event: TaskEvent::Reopen,
                        metadata: None,
                    }],
                    ..ChangeSet::default()
                },
                // published → executing is allowed; executing → executing is an idempotent
                // repeat: applied, nothing recorded.
                ChangeSet {
                    batches: vec![
                        BatchChange {
                            batch_uuid: batch,
                            expect_state: BatchState::Published,
                            to_state: BatchState::Executing,
                            event: BatchEvent::ReceiveResult,
                            metadata: None,
                        },
                        BatchChange {
                            batch_uuid: batch,
                            expect_state: BatchState::Executing,
                            to_state: BatchState::Executing,
                            event: BatchEvent::ReceiveResult,
                            metadata: None,
                        },
                    ],
                    ..ChangeSet::default()
                },
            ],
            all_or_nothing: false,
            batches: Vec::new(),
            tasks: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(applied.applied, vec![2]);
    for refused in &applied.refused {
        assert!(
            matches!(&refused.refusals[0].reason, RefusalReason::NotAllowed { detail } if detail.contains("not an allowed transition")),
            "{refused:?}"
        );
    }
    assert_eq!(
        s.task_load_dag(task.task_id).await.unwrap().steps[0].state,
        StepState::Complete
    );
    let history = s
        .transitions_list(TransitionsOf::Batch(batch))
        .await
        .unwrap();
    assert_eq!(
        history
            .iter()
            .map(|r| r.to_state.as_str())
            .collect::<Vec<_>>(),
        ["published", "executing"],
        "the repeat wrote no row"
    );
    // A batch is born created or published, nothing else.
    let err = s
        .batch_record(tasker_store::BatchRecord {
            now: t(3),
            claimant: None,
            batch_uuid: Uuid::new_v4(),
            worker_id: None,
            handler_class: None,
            timeout_ms: 1,
            state: BatchState::Completed,
            metadata: None,
            steps: vec![],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
}
