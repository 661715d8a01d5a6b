//! Cases: several orchestrators on one database — claims, leases, fencing, concurrent dispatch.

use std::collections::HashSet;
use std::sync::Arc;

use tasker_core::state::{BatchState, StepState, TaskState};
use tasker_store::{
    BatchRecord, BatchStep, ChangeSet, RefusalReason, StepsReady, Store, TaskChange, TasksActive,
    TasksClaim, TasksLease, TransitionsApply,
};
use uuid::Uuid;

use crate::fixtures::{diamond, finish, t};
use crate::harness::Harness;

async fn create_many(store: &dyn Store, n: usize) -> Vec<tasker_store::TaskCreated> {
    store
        .tasks_create_many((0..n).map(|_| diamond("ns", "claim", t(0))).collect())
        .await
        .unwrap()
}

fn claim(who: &str, at: i64, limit: u32) -> TasksClaim {
    TasksClaim {
        orchestrator_id: who.to_owned(),
        now: t(at),
        lease_ms: 10_000,
        limit,
    }
}

pub async fn concurrent_claimers_never_share_a_task(h: &mut Harness) {
    let created = create_many(h.store.as_ref(), 120).await;
    let mut handles = Vec::new();
    for i in 0..6 {
        let store: Arc<dyn Store> = Arc::clone(&h.store);
        handles.push(tokio::spawn(async move {
            let me = format!("orchestrator-{i}");
            let mut mine = Vec::new();
            loop {
                let got = store.tasks_claim(claim(&me, 0, 7)).await.unwrap();
                if got.is_empty() {
                    break;
                }
                assert!(got.len() <= 7);
                mine.extend(got);
                tokio::task::yield_now().await;
            }
            (me, mine)
        }));
    }
    let mut seen = HashSet::new();
    let mut per_orchestrator = Vec::new();
    for handle in handles {
        let (me, mine) = handle.await.unwrap();
        for id in &mine {
            assert!(
                seen.insert(*id),
                "task {id} claimed twice (second time by {me})"
            );
        }
        per_orchestrator.push((me, mine));
    }
    let expected: HashSet<i64> = created.iter().map(|c| c.task_id).collect();
    assert_eq!(seen, expected, "every task claimed exactly once");
    // The store agrees with what each claimer was told.
    for (me, mine) in per_orchestrator {
        let page = h
            .store
            .tasks_active(TasksActive {
                claimed_by: Some(me),
                limit: 0,
                after_task_id: None,
            })
            .await
            .unwrap();
        let mut mine = mine;
        mine.sort_unstable();
        assert_eq!(page.items, mine);
    }
}

pub async fn leases_expire_renew_and_release(h: &mut Harness) {
    let s = h.store.as_ref();
    let created = create_many(s, 3).await;
    let ids: Vec<i64> = created.iter().map(|c| c.task_id).collect();
    assert_eq!(
        s.tasks_claim(claim("a", 0, 2)).await.unwrap(),
        ids[..2].to_vec()
    );
    assert_eq!(
        s.tasks_claim(claim("b", 1, 10)).await.unwrap(),
        vec![ids[2]]
    );
    assert!(
        s.tasks_claim(claim("b", 9_999, 10))
            .await
            .unwrap()
            .is_empty(),
        "leases held"
    );
    let record = s.task_get(ids[0]).await.unwrap();
    assert_eq!(record.claimed_by.as_deref(), Some("a"));
    assert_eq!(record.claim_expires_at, Some(t(10_000)));
    // a renews one of its two; the other expires and b takes it.
    let renewed = s
        .tasks_lease_renew(TasksLease {
            orchestrator_id: "a".into(),
            task_ids: vec![ids[0], ids[2]],
            now: t(5_000),
            lease_ms: 10_000,
        })
        .await
        .unwrap();
    assert_eq!(renewed, vec![ids[0]], "a cannot renew b's task");
    assert_eq!(
        s.tasks_claim(claim("b", 10_000, 10)).await.unwrap(),
        vec![ids[1]]
    );
    let released = s
        .tasks_release(TasksLease {
            orchestrator_id: "a".into(),
            task_ids: ids.clone(),
            now: t(10_001),
            lease_ms: 0,
        })
        .await
        .unwrap();
    assert_eq!(released, vec![ids[0]]);
    assert_eq!(
        s.tasks_claim(claim("c", 10_002, 10)).await.unwrap(),
        vec![ids[0], ids[2]],
        "a released its task; b's lease on the third ended at 10_001"
    );
    // Finished tasks are never claimed.
    s.transitions_apply(TransitionsApply {
        now: t(10_003),
        claimant: Some("c".into()),
        ledger: vec![],
        changes: vec![ChangeSet {
            tasks: vec![TaskChange {
                task_id: ids[0],
                expect_state: TaskState::Pending,
                to_state: TaskState::Cancelled,
                event: tasker_core::state::TaskEvent::Cancel,
                metadata: None,
            }],
            ..ChangeSet::default()
        }],
        all_or_nothing: true,
        batches: Vec::new(),
        tasks: Vec::new(),
    })
    .await
    .unwrap();
    assert!(
        s.tasks_claim(claim("d", 1_000_000, 10))
            .await
            .unwrap()
            .len()
            == 2
    );
    assert!(
        !s.tasks_claim(claim("e", 2_000_000, 10))
            .await
            .unwrap()
            .contains(&ids[0]),
        "the cancelled task stays unclaimed"
    );
}

pub async fn claims_fence_changes_and_dispatch(h: &mut Harness) {
    let s = h.store.as_ref();
    let created = create_many(s, 1).await;
    let task = &created[0];
    let a = task.step_ids[0];
    assert_eq!(
        s.tasks_claim(claim("owner", 0, 1)).await.unwrap(),
        vec![task.task_id]
    );
    let record = |who: &str, at: i64| BatchRecord {
        now: t(at),
        claimant: Some(who.to_owned()),
        batch_uuid: Uuid::new_v4(),
        worker_id: Some("w".into()),
        handler_class: None,
        timeout_ms: 1_000,
        state: BatchState::Published,
        metadata: None,
        steps: vec![BatchStep {
            step_id: a,
            expect_state: StepState::Pending,
        }],
    };
    let intruder = s.batch_record(record("intruder", 1)).await.unwrap();
    assert!(!intruder.recorded);
    assert_eq!(
        intruder.refused[0].reason,
        RefusalReason::NotClaimed {
            claimed_by: Some("owner".into())
        }
    );
    let ready_for = |who: &str, at: i64| StepsReady {
        now: t(at),
        task_ids: None,
        claimed_by: Some(who.to_owned()),
        limit: 0,
    };
    assert_eq!(s.steps_ready(ready_for("owner", 1)).await.unwrap().len(), 1);
    assert!(
        s.steps_ready(ready_for("intruder", 1))
            .await
            .unwrap()
            .is_empty()
    );
    let owned = record("owner", 2);
    let batch = owned.batch_uuid;
    assert!(s.batch_record(owned).await.unwrap().recorded);
    let result = |who: &str, at: i64| TransitionsApply {
        now: t(at),
        claimant: Some(who.to_owned()),
        ledger: vec![],
        changes: vec![ChangeSet {
            steps: vec![finish(a, batch, StepState::Complete)],
            ..ChangeSet::default()
        }],
        all_or_nothing: false,
        batches: Vec::new(),
        tasks: Vec::new(),
    };
    let refused = s.transitions_apply(result("intruder", 3)).await.unwrap();
    assert!(matches!(
        refused.refused[0].refusals[0].reason,
        RefusalReason::NotClaimed { .. }
    ));
    // After the lease ends even the old owner is fenced off.
    let expired = s.transitions_apply(result("owner", 10_000)).await.unwrap();
    assert_eq!(
        expired.refused[0].refusals[0].reason,
        RefusalReason::NotClaimed { claimed_by: None }
    );
    let ok = s.transitions_apply(result("owner", 9_999)).await.unwrap();
    assert_eq!(ok.applied, vec![0]);
}

pub async fn concurrent_dispatch_never_sends_a_step_twice(h: &mut Harness) {
    let created = create_many(h.store.as_ref(), 25).await;
    let firsts: Vec<i64> = created.iter().map(|c| c.step_ids[0]).collect();
    let mut handles = Vec::new();
    for i in 0..6 {
        let store: Arc<dyn Store> = Arc::clone(&h.store);
        let mut steps = firsts.clone();
        steps.rotate_left(i * 4);
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for chunk in steps.chunks(5) {
                let recorded = store
                    .batch_record(BatchRecord {
                        now: t(1),
                        claimant: None,
                        batch_uuid: Uuid::new_v4(),
                        worker_id: Some(format!("w{i}")),
                        handler_class: None,
                        timeout_ms: 1_000,
                        state: BatchState::Published,
                        metadata: None,
                        steps: chunk
                            .iter()
                            .map(|&step_id| BatchStep {
                                step_id,
                                expect_state: StepState::Pending,
                            })
                            .collect(),
                    })
                    .await
                    .unwrap();
                got.extend(recorded.included.iter().map(|d| d.step_id));
            }
            got
        }));
    }
    let mut seen = HashSet::new();
    for handle in handles {
        for id in handle.await.unwrap() {
            assert!(seen.insert(id), "step {id} dispatched twice");
        }
    }
    assert_eq!(seen, firsts.iter().copied().collect::<HashSet<_>>());
    for c in &created {
        let dag = h.store.task_load_dag(c.task_id).await.unwrap();
        assert_eq!(dag.steps[0].attempts, 1, "one attempt per step");
        assert_eq!(dag.task.state, TaskState::InProgress);
        let history = h
            .store
            .transitions_list(tasker_store::TransitionsOf::Task(c.task_id))
            .await
            .unwrap();
        assert_eq!(history.len(), 2, "the task was started once");
    }
}

pub async fn concurrent_results_apply_each_step_once(h: &mut Harness) {
    let mut template = diamond("ns", "wide", t(0));
    template.steps = (0..10)
        .map(|i| crate::fixtures::step(&format!("s{i}")))
        .collect();
    template.edges.clear();
    let created = h.store.tasks_create_many(vec![template; 5]).await.unwrap();
    let all: Vec<i64> = created.iter().flat_map(|c| c.step_ids.clone()).collect();
    let (batch, recorded) = crate::fixtures::dispatch(h.store.as_ref(), &all, t(1)).await;
    assert_eq!(recorded.included.len(), all.len());
    let mut handles = Vec::new();
    for i in 0..6_usize {
        let store: Arc<dyn Store> = Arc::clone(&h.store);
        let mut order = all.clone();
        if i % 2 == 1 {
            order.reverse();
        }
        order.rotate_left(i * 7);
        handles.push(tokio::spawn(async move {
            let mut applied = 0;
            for chunk in order.chunks(10) {
                let outcome = store
                    .transitions_apply(TransitionsApply {
                        now: t(2),
                        claimant: None,
                        ledger: vec![],
                        changes: chunk
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
                applied += outcome.applied.len();
            }
            applied
        }));
    }
    let mut total = 0;
    for handle in handles {
        total += handle.await.unwrap();
    }
    assert_eq!(
        total,
        all.len(),
        "every result applied exactly once across orchestrators"
    );
    for id in &all {
        let history = h
            .store
            .transitions_list(tasker_store::TransitionsOf::Step(*id))
            .await
            .unwrap();
        assert_eq!(history.len(), 3, "pending, in_progress, complete");
    }
}
