//! Cases: timeouts, orphans, workers, dead letters, counts.

use serde_json::json;
use tasker_core::state::{BatchState, StepState, TaskState};
use tasker_store::{
    BatchRecord, BatchStep, BatchesOrphaned, DeadLetterInsert, DeadLetterResolve, DeadLettersList,
    RefusalReason, StepsTimedOut, StoreError, WorkerUpsert,
};
use uuid::Uuid;

use crate::fixtures::{apply, diamond, dispatch, finish, run_ok, step, t};
use crate::harness::Harness;

pub async fn timed_out_steps_are_found_by_deadline(h: &mut Harness) {
    let s = h.store.as_ref();
    let mut template = diamond("ns", "to", t(0));
    template.steps = vec![step("fast"), step("slow")];
    template.steps[0].timeout_ms = Some(100);
    template.edges.clear();
    let task = s.task_create(template).await.unwrap();
    let [fast, slow] = [task.step_ids[0], task.step_ids[1]];
    let (batch, _) = dispatch(s, &[fast, slow], t(0)).await; // batch timeout 1000
    let at = |ms| StepsTimedOut {
        now: t(ms),
        limit: 0,
    };
    assert!(s.steps_timed_out(at(99)).await.unwrap().is_empty());
    let late = s.steps_timed_out(at(100)).await.unwrap();
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].step_id, fast);
    assert_eq!(late[0].task_id, task.task_id);
    assert_eq!(late[0].batch_uuid, batch);
    assert_eq!(late[0].worker_id.as_deref(), Some("w1"));
    assert_eq!(late[0].attempts, 1);
    assert_eq!(late[0].deadline_at, t(100));
    let both = s.steps_timed_out(at(1_000)).await.unwrap();
    assert_eq!(
        both.iter().map(|x| x.step_id).collect::<Vec<_>>(),
        vec![fast, slow]
    );
    apply(s, vec![finish(fast, batch, StepState::Error)], t(1_001)).await;
    let left = s.steps_timed_out(at(5_000)).await.unwrap();
    assert_eq!(
        left.iter().map(|x| x.step_id).collect::<Vec<_>>(),
        vec![slow]
    );
}

pub async fn batches_of_gone_workers_are_orphaned(h: &mut Harness) {
    let s = h.store.as_ref();
    let mut template = diamond("ns", "orph", t(0));
    template.steps = (0..4).map(|i| step(&format!("s{i}"))).collect();
    template.edges.clear();
    let task = s.task_create(template).await.unwrap();
    let ids = task.step_ids.clone();
    for (worker, at) in [("alive", 1_000), ("stale", 100)] {
        s.worker_upsert(WorkerUpsert {
            worker_id: worker.into(),
            capabilities: json!({ "handlers": ["*"] }),
            now: t(at),
        })
        .await
        .unwrap();
    }
    let mut batches = Vec::new();
    for (i, worker) in [Some("alive"), Some("stale"), Some("unknown"), None]
        .iter()
        .enumerate()
    {
        let batch = Uuid::new_v4();
        let r = s
            .batch_record(BatchRecord {
                now: t(50),
                claimant: None,
                batch_uuid: batch,
                worker_id: worker.map(str::to_owned),
                handler_class: None,
                timeout_ms: 60_000,
                state: if worker.is_some() {
                    BatchState::Published
                } else {
                    BatchState::Created
                },
                metadata: None,
                steps: vec![BatchStep {
                    step_id: ids[i],
                    expect_state: StepState::Pending,
                }],
            })
            .await
            .unwrap();
        assert!(r.recorded);
        batches.push(batch);
    }
    let orphaned = s
        .batches_orphaned(BatchesOrphaned {
            heartbeat_before: t(500),
            limit: 0,
        })
        .await
        .unwrap();
    let found: Vec<Uuid> = orphaned.iter().map(|o| o.batch_uuid).collect();
    assert_eq!(found, vec![batches[1], batches[2], batches[3]]);
    assert_eq!(orphaned[0].worker_id.as_deref(), Some("stale"));
    assert_eq!(orphaned[0].last_heartbeat_at, Some(t(100)));
    assert_eq!(orphaned[0].state, BatchState::Published);
    assert_eq!(orphaned[0].in_flight_step_ids, vec![ids[1]]);
    assert_eq!(orphaned[1].last_heartbeat_at, None, "unknown worker");
    assert_eq!(orphaned[2].state, BatchState::Created);
    // Never-sent batches count only once older than the cut-off.
    let early = s
        .batches_orphaned(BatchesOrphaned {
            heartbeat_before: t(50),
            limit: 0,
        })
        .await
        .unwrap();
    assert_eq!(
        early.iter().map(|o| o.batch_uuid).collect::<Vec<_>>(),
        vec![batches[2]],
        "at t(50) the stale worker (heartbeat t(100)) still counts as alive"
    );
    // A finished batch is no orphan.
    s.transitions_apply(tasker_store::TransitionsApply {
        now: t(600),
        claimant: None,
        ledger: vec![],
        changes: vec![tasker_store::ChangeSet {
            steps: vec![finish(ids[1], batches[1], StepState::Error)],
            batches: vec![tasker_store::BatchChange {
                batch_uuid: batches[1],
                expect_state: BatchState::Published,
                to_state: BatchState::Failed,
                event: tasker_core::state::BatchEvent::Fail,
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
    let after = s
        .batches_orphaned(BatchesOrphaned {
            heartbeat_before: t(500),
            limit: 0,
        })
        .await
        .unwrap();
    assert_eq!(
        after.iter().map(|o| o.batch_uuid).collect::<Vec<_>>(),
        vec![batches[2], batches[3]]
    );
}

pub async fn worker_heartbeats_only_move_forward(h: &mut Harness) {
    let s = h.store.as_ref();
    let up = |at, caps| WorkerUpsert {
        worker_id: "w".into(),
        capabilities: caps,
        now: t(at),
    };
    s.worker_upsert(up(10, json!({ "v": 1 }))).await.unwrap();
    s.worker_upsert(up(30, json!({ "v": 2 }))).await.unwrap();
    s.worker_upsert(up(20, json!({ "v": 3 }))).await.unwrap();
    s.worker_upsert(WorkerUpsert {
        worker_id: "a".into(),
        capabilities: json!({}),
        now: t(5),
    })
    .await
    .unwrap();
    let workers = s.workers_list().await.unwrap();
    assert_eq!(
        workers
            .iter()
            .map(|w| w.worker_id.as_str())
            .collect::<Vec<_>>(),
        ["a", "w"]
    );
    assert_eq!(workers[1].first_seen_at, t(10));
    assert_eq!(
        workers[1].last_heartbeat_at,
        t(30),
        "a late heartbeat does not go back"
    );
    assert_eq!(workers[1].capabilities, json!({ "v": 3 }));
}

pub async fn dead_letters_insert_list_resolve(h: &mut Harness) {
    let s = h.store.as_ref();
    let task = s.task_create(diamond("ns", "dlq", t(0))).await.unwrap();
    let other = s.task_create(diamond("ns", "dlq", t(0))).await.unwrap();
    let first = s
        .dead_letter_insert(DeadLetterInsert {
            task_id: task.task_id,
            step_id: Some(task.step_ids[0]),
            reason: "retries exhausted".into(),
            snapshot: json!({ "attempts": 3 }),
            now: t(1),
        })
        .await
        .unwrap();
    assert_eq!(first.task_id, task.task_id);
    assert_eq!(first.step_id, Some(task.step_ids[0]));
    assert_eq!(first.reason, "retries exhausted");
    assert_eq!(first.snapshot, json!({ "attempts": 3 }));
    assert_eq!(first.created_at, t(1));
    assert_eq!(first.resolved_at, None);
    let second = s
        .dead_letter_insert(DeadLetterInsert {
            task_id: other.task_id,
            step_id: None,
            reason: "orphaned".into(),
            snapshot: json!(null),
            now: t(2),
        })
        .await
        .unwrap();
    // Bad references are NotFound, not a constraint error.
    for (task_id, step_id) in [(999_999, None), (task.task_id, Some(other.step_ids[0]))] {
        let err = s
            .dead_letter_insert(DeadLetterInsert {
                task_id,
                step_id,
                reason: "x".into(),
                snapshot: json!({}),
                now: t(3),
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    }
    let all = s
        .dead_letters_list(DeadLettersList::default())
        .await
        .unwrap();
    assert_eq!(
        all.items
            .iter()
            .map(|d| d.dead_letter_id)
            .collect::<Vec<_>>(),
        vec![second.dead_letter_id, first.dead_letter_id]
    );
    let resolved = s
        .dead_letter_resolve(DeadLetterResolve {
            dead_letter_id: first.dead_letter_id,
            resolution: "retried by hand".into(),
            resolved_by: Some("ops".into()),
            now: t(9),
        })
        .await
        .unwrap();
    assert_eq!(resolved.resolved_at, Some(t(9)));
    assert_eq!(resolved.resolution.as_deref(), Some("retried by hand"));
    assert_eq!(resolved.resolved_by.as_deref(), Some("ops"));
    let twice = s
        .dead_letter_resolve(DeadLetterResolve {
            dead_letter_id: first.dead_letter_id,
            resolution: "again".into(),
            resolved_by: None,
            now: t(10),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&twice, StoreError::Conflict { refused } if refused[0].reason == RefusalReason::AlreadyResolved),
        "{twice:?}"
    );
    let missing = s
        .dead_letter_resolve(DeadLetterResolve {
            dead_letter_id: 987_654,
            resolution: "x".into(),
            resolved_by: None,
            now: t(10),
        })
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound { .. }));
    let open = s
        .dead_letters_list(DeadLettersList {
            resolved: Some(false),
            ..DeadLettersList::default()
        })
        .await
        .unwrap();
    assert_eq!(open.items.len(), 1);
    assert_eq!(open.items[0].dead_letter_id, second.dead_letter_id);
    let closed = s
        .dead_letters_list(DeadLettersList {
            resolved: Some(true),
            ..DeadLettersList::default()
        })
        .await
        .unwrap();
    assert_eq!(closed.items[0].dead_letter_id, first.dead_letter_id);
    let of_task = s
        .dead_letters_list(DeadLettersList {
            task_id: Some(other.task_id),
            ..DeadLettersList::default()
        })
        .await
        .unwrap();
    assert_eq!(of_task.items.len(), 1);
    let paged = s
        .dead_letters_list(DeadLettersList {
            limit: 1,
            ..DeadLettersList::default()
        })
        .await
        .unwrap();
    assert_eq!(paged.next_cursor, Some(second.dead_letter_id));
    assert_eq!(s.state_counts().await.unwrap().dead_letters_unresolved, 1);
}

pub async fn state_counts_follow_the_data(h: &mut Harness) {
    let s = h.store.as_ref();
    let one = s.task_create(diamond("ns", "c", t(0))).await.unwrap();
    s.task_create(diamond("ns", "c", t(0))).await.unwrap();
    run_ok(s, &one.step_ids[..1], t(1)).await;
    let (_, _) = dispatch(s, &one.step_ids[1..2], t(2)).await;
    let counts = s.state_counts().await.unwrap();
    assert_eq!(counts.task(TaskState::Pending), 1);
    assert_eq!(counts.task(TaskState::InProgress), 1);
    assert_eq!(counts.task(TaskState::Complete), 0);
    assert_eq!(counts.step(StepState::Pending), 6);
    assert_eq!(counts.step(StepState::InProgress), 1);
    assert_eq!(counts.step(StepState::Complete), 1);
    assert_eq!(counts.batch(BatchState::Published), 2);
    assert_eq!(counts.steps.len(), StepState::ALL.len());
    assert_eq!(counts.batches.len(), BatchState::ALL.len());
}
