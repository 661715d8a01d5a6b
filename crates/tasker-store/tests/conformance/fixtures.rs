//! Building blocks shared by the cases: a fixed clock, a diamond task, dispatch and completion.

use chrono::{DateTime, Utc};
use serde_json::json;
use tasker_core::backoff::BackoffPolicy;
use tasker_core::state::{BatchState, StepEvent, StepState};
use tasker_store::{
    BatchRecord, BatchRecorded, BatchStep, ChangeSet, NewStep, NewTask, StepChange, Store,
    TransitionsApplied, TransitionsApply,
};
use uuid::Uuid;

/// A fixed instant plus `ms` milliseconds: tests never read the real clock.
pub fn t(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_700_000_000_000 + ms).expect("valid test time")
}

/// A step with defaults.
pub fn step(name: &str) -> NewStep {
    NewStep {
        name: name.to_owned(),
        handler_class: format!("Handlers::{name}"),
        handler_config: json!({ "step": name }),
        retryable: true,
        retry_limit: 3,
        timeout_ms: None,
        backoff: None,
    }
}

/// A four-step diamond: a → (b, c) → d.
pub fn diamond(namespace: &str, name: &str, now: DateTime<Utc>) -> NewTask {
    let mut d = step("d");
    d.timeout_ms = Some(500);
    d.backoff = Some(BackoffPolicy {
        base_delay_ms: 10,
        ..BackoffPolicy::default()
    });
    NewTask {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        version: "1.0.0".to_owned(),
        template_json: Some(json!({ "name": name })),
        context: json!({ "order_id": 42, "items": [1, 2, 3] }),
        initiator: Some("tester".to_owned()),
        source_system: Some("conformance".to_owned()),
        reason: Some("testing".to_owned()),
        tags: vec!["test".to_owned(), "diamond".to_owned()],
        idempotency_key: None,
        steps: vec![step("a"), step("b"), step("c"), d],
        edges: vec![(0, 1), (0, 2), (1, 3), (2, 3)],
        now,
        claim: None,
    }
}

/// Records one batch of `steps` (each expected `pending`) to worker `w1`.
pub async fn dispatch(
    store: &dyn Store,
    steps: &[i64],
    now: DateTime<Utc>,
) -> (Uuid, BatchRecorded) {
    dispatch_expecting(store, steps, StepState::Pending, now).await
}

/// Records one batch of `steps`, each expected in `state`.
pub async fn dispatch_expecting(
    store: &dyn Store,
    steps: &[i64],
    state: StepState,
    now: DateTime<Utc>,
) -> (Uuid, BatchRecorded) {
    let batch = Uuid::new_v4();
    let recorded = store
        .batch_record(BatchRecord {
            now,
            claimant: None,
            batch_uuid: batch,
            worker_id: Some("w1".to_owned()),
            handler_class: None,
            timeout_ms: 1_000,
            state: BatchState::Published,
            metadata: None,
            steps: steps
                .iter()
                .map(|&step_id| BatchStep {
                    step_id,
                    expect_state: state,
                })
                .collect(),
        })
        .await
        .expect("batch_record");
    (batch, recorded)
}

/// A step change from in-flight in `batch` to `to`.
pub fn finish(step_id: i64, batch: Uuid, to: StepState) -> StepChange {
    StepChange {
        step_id,
        expect_state: StepState::InProgress,
        expect_batch: Some(batch),
        to_state: to,
        event: match to {
            StepState::Complete => StepEvent::Succeed,
            StepState::Error => StepEvent::Fail,
            StepState::Pending => StepEvent::Requeue,
            StepState::Cancelled => StepEvent::Cancel,
            StepState::ResolvedManually => StepEvent::ResolveManually,
            StepState::InProgress => StepEvent::Dispatch,
        },
        metadata: Some(json!({ "batch": batch.to_string() })),
        results: (to == StepState::Complete).then(|| json!({ "done": step_id })),
        error: (to == StepState::Error).then(|| json!({ "message": "boom" })),
        backoff_until: None,
    }
}

/// Applies one set per change, nothing else.
pub async fn apply(
    store: &dyn Store,
    changes: Vec<StepChange>,
    now: DateTime<Utc>,
) -> TransitionsApplied {
    store
        .transitions_apply(TransitionsApply {
            now,
            claimant: None,
            ledger: Vec::new(),
            changes: changes
                .into_iter()
                .map(|c| ChangeSet {
                    steps: vec![c],
                    ..ChangeSet::default()
                })
                .collect(),
            all_or_nothing: false,
            batches: Vec::new(),
            tasks: Vec::new(),
        })
        .await
        .expect("transitions_apply")
}

/// Dispatches and completes `steps` in one batch.
pub async fn run_ok(store: &dyn Store, steps: &[i64], now: DateTime<Utc>) -> Uuid {
    let (batch, recorded) = dispatch(store, steps, now).await;
    assert_eq!(
        recorded.included.len(),
        steps.len(),
        "all dispatched: {recorded:?}"
    );
    let applied = apply(
        store,
        steps
            .iter()
            .map(|&s| finish(s, batch, StepState::Complete))
            .collect(),
        now,
    )
    .await;
    assert!(applied.refused.is_empty(), "{applied:?}");
    batch
}

/// The ids of the ready steps at `now`.
pub async fn ready_ids(store: &dyn Store, now: DateTime<Utc>) -> Vec<i64> {
    store
        .steps_ready(tasker_store::StepsReady {
            now,
            task_ids: None,
            claimed_by: None,
            limit: 0,
        })
        .await
        .expect("steps_ready")
        .into_iter()
        .map(|s| s.step_id)
        .collect()
}
