//! Cases: the received-results ledger.

use serde_json::json;
use tasker_core::state::StepState;
use tasker_store::{
    ChangeSet, LedgerAppend, LedgerEntry, LedgerList, LedgerOutcome, TransitionsApply,
};
use uuid::Uuid;

use crate::fixtures::{diamond, dispatch, finish, t};
use crate::harness::Harness;

/// A ledger entry for a batch and step.
pub fn entry(batch: Uuid, step: Option<i64>, kind: &str) -> LedgerEntry {
    LedgerEntry {
        batch_uuid: Some(batch.to_string()),
        step_id: step,
        message_kind: kind.to_owned(),
        worker_id: Some("w1".to_owned()),
        sequence: Some(1),
        status: Some("completed".to_owned()),
        execution_time_ms: Some(12),
        raw_message: format!(
            r#"{{"batch_id":"{batch}","step_id":{}}}"#,
            step.unwrap_or(0)
        ),
        processing_errors: None,
    }
}

pub async fn ledger_deduplicates_on_batch_step_and_kind(h: &mut Harness) {
    let s = h.store.as_ref();
    let batch = Uuid::new_v4();
    let other = Uuid::new_v4();
    let mut garbage = entry(batch, None, "garbage");
    garbage.batch_uuid = None;
    garbage.raw_message = "{not json".to_owned();
    garbage.processing_errors = Some(json!({ "parse": "expected value" }));
    let outcomes = s
        .ledger_append(LedgerAppend {
            now: t(1),
            entries: vec![
                entry(batch, Some(1), "partial_result"),
                entry(batch, Some(1), "partial_result"),
                entry(batch, Some(2), "partial_result"),
                entry(batch, None, "batch_completion"),
                entry(other, Some(1), "partial_result"),
                garbage.clone(),
                garbage.clone(),
            ],
        })
        .await
        .unwrap();
    use LedgerOutcome::{Duplicate, Recorded};
    assert_eq!(
        outcomes,
        [
            Recorded, Duplicate, Recorded, Recorded, Recorded, Recorded, Recorded
        ],
        "entries without a batch id are kept, every one"
    );
    let outcomes = s
        .ledger_append(LedgerAppend {
            now: t(2),
            entries: vec![
                entry(batch, Some(1), "partial_result"),
                entry(batch, None, "batch_completion"),
                entry(batch, Some(1), "heartbeat_ack"),
            ],
        })
        .await
        .unwrap();
    assert_eq!(outcomes, [Duplicate, Duplicate, Recorded]);

    let all = s.ledger_list(LedgerList::default()).await.unwrap();
    assert_eq!(all.len(), 7);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ascending ids");
    let first = &all[0];
    assert_eq!(
        first.batch_uuid.as_deref(),
        Some(batch.to_string().as_str())
    );
    assert_eq!(first.step_id, Some(1));
    assert_eq!(first.message_kind, "partial_result");
    assert_eq!(first.worker_id.as_deref(), Some("w1"));
    assert_eq!(first.sequence, Some(1));
    assert_eq!(first.status.as_deref(), Some("completed"));
    assert_eq!(first.execution_time_ms, Some(12));
    assert_eq!(first.received_at, t(1));
    let kept_garbage: Vec<_> = all.iter().filter(|e| e.batch_uuid.is_none()).collect();
    assert_eq!(kept_garbage.len(), 2);
    assert_eq!(kept_garbage[0].raw_message, "{not json");
    assert_eq!(
        kept_garbage[0].processing_errors,
        Some(json!({ "parse": "expected value" }))
    );

    let of_batch = s
        .ledger_list(LedgerList {
            batch_uuid: Some(batch.to_string()),
            ..LedgerList::default()
        })
        .await
        .unwrap();
    assert_eq!(of_batch.len(), 4);
    let of_step = s
        .ledger_list(LedgerList {
            step_id: Some(1),
            ..LedgerList::default()
        })
        .await
        .unwrap();
    assert_eq!(of_step.len(), 3);
    let page = s
        .ledger_list(LedgerList {
            after_id: Some(all[4].id),
            limit: 10,
            ..LedgerList::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 2);
}

pub async fn refused_results_are_recorded_with_the_reason(h: &mut Harness) {
    let s = h.store.as_ref();
    let task = s.task_create(diamond("ns", "lr", t(0))).await.unwrap();
    let [a, b] = [task.step_ids[0], task.step_ids[1]];
    let (batch, _) = dispatch(s, &[a], t(1)).await;
    let applied = s
        .transitions_apply(TransitionsApply {
            now: t(2),
            claimant: None,
            ledger: vec![
                entry(batch, Some(a), "partial_result"),
                entry(batch, Some(b), "partial_result"),
            ],
            changes: vec![
                ChangeSet {
                    steps: vec![finish(a, batch, StepState::Complete)],
                    ledger_entry: Some(0),
                    ..ChangeSet::default()
                },
                ChangeSet {
                    steps: vec![finish(b, batch, StepState::Complete)],
                    ledger_entry: Some(1),
                    ..ChangeSet::default()
                },
            ],
            all_or_nothing: false,
            batches: Vec::new(),
            tasks: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(
        applied.ledger,
        [LedgerOutcome::Recorded, LedgerOutcome::Recorded]
    );
    assert_eq!(applied.applied, vec![0]);
    let entries = s.ledger_list(LedgerList::default()).await.unwrap();
    assert_eq!(entries[0].processing_errors, None);
    let errors = entries[1]
        .processing_errors
        .as_ref()
        .expect("refusal recorded");
    assert_eq!(errors["refused"][0]["reason"], "state_mismatch");
    assert_eq!(errors["refused"][0]["target"]["kind"], "step");
    assert!(
        errors["refused"][0]["message"]
            .as_str()
            .unwrap()
            .contains("found pending")
    );
    // The batch detail reconciles the partial results received with the steps.
    let detail = s.batch_get(batch).await.unwrap();
    assert_eq!(
        detail.steps[0].reported_status.as_deref(),
        Some("completed")
    );
    assert!(!detail.completion_received);
    s.ledger_append(LedgerAppend {
        now: t(3),
        entries: vec![entry(batch, None, "batch_completion")],
    })
    .await
    .unwrap();
    assert!(s.batch_get(batch).await.unwrap().completion_received);
    // A re-sent result (same batch, step, kind) is a duplicate and its change is refused.
    let again = s
        .transitions_apply(TransitionsApply {
            now: t(4),
            claimant: None,
            ledger: vec![entry(batch, Some(a), "partial_result")],
            changes: vec![ChangeSet {
                steps: vec![finish(a, batch, StepState::Complete)],
                ledger_entry: Some(0),
                ..ChangeSet::default()
            }],
            all_or_nothing: false,
            batches: Vec::new(),
            tasks: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(again.ledger, [LedgerOutcome::Duplicate]);
    assert!(again.applied.is_empty());
}
