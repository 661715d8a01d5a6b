//! The embedding API's contract: errors of `initialize_task`, idempotency keys, `handle` on
//! unknown and finished tasks, `task_status`, templates registered at run time, shutdown.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod support;

use serde_json::json;
use support::*;
use tasker_core::state::{StepState, TaskState};
use tasker_core::status::ExecutionStatus;
use tasker_engine::{EngineError, TaskRequest};

fn order_request(context: serde_json::Value) -> TaskRequest {
    TaskRequest {
        namespace: "order_fulfillment".into(),
        name: "order_fulfillment".into(),
        context,
        ..TaskRequest::default()
    }
}

async fn initialize_task_reports_clear_errors(db: &TestDb) {
    let engine = start_engine(test_options("tcp://127.0.0.1:0"), db.store().await).await;

    let unknown = engine
        .initialize_task(TaskRequest {
            namespace: "examples".into(),
            name: "nope".into(),
            version: Some("9.9.9".into()),
            ..TaskRequest::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(unknown, EngineError::UnknownTemplate { .. }));
    let text = unknown.to_string();
    assert!(
        text.contains("examples/nope") && text.contains("9.9.9"),
        "{text}"
    );

    let invalid = engine
        .initialize_task(order_request(json!({
            "order_id": 0,
            "customer": {},
            "items": []
        })))
        .await
        .unwrap_err();
    let EngineError::InvalidContext { error, .. } = &invalid else {
        panic!("expected an invalid context, got {invalid}");
    };
    let pointers: Vec<&str> = error
        .violations
        .iter()
        .map(|v| v.pointer.as_str())
        .collect();
    for pointer in ["/order_id", "/customer/email", "/items"] {
        assert!(pointers.contains(&pointer), "{pointer} in {pointers:?}");
    }

    let not_an_object = engine
        .initialize_task(TaskRequest {
            namespace: "examples".into(),
            name: "linear".into(),
            context: json!([1, 2]),
            ..TaskRequest::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(not_an_object, EngineError::InvalidContext { .. }),
        "{not_an_object}"
    );
    engine.shutdown().await;
}

async fn idempotency_keys_status_and_handle(db: &TestDb) {
    let engine = start_engine(test_options("tcp://127.0.0.1:0"), db.store().await).await;
    let request = TaskRequest {
        namespace: "examples".into(),
        name: "diamond".into(),
        idempotency_key: Some("order-42".into()),
        initiator: Some("tests".into()),
        tags: vec!["a".into()],
        ..TaskRequest::default()
    };
    let first = engine.initialize_task(request.clone()).await.unwrap();
    assert!(first.created);
    assert_eq!(first.version, "1.0.0");
    assert_eq!(first.step_ids.len(), 4);
    let again = engine.initialize_task(request).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.task_id, first.task_id);

    // No worker yet: the root is ready and waits for one.
    let status = engine.task_status(first.task_id).await.unwrap();
    assert_eq!(status.task.initiator.as_deref(), Some("tests"));
    assert_eq!(status.steps.len(), 4);
    assert!(matches!(
        status.execution,
        ExecutionStatus::HasReadySteps { ref ready } if ready == &vec![0]
    ));

    let worker = TestWorker::start(engine.endpoint(), 2, registry(None));
    let outcome = guarded("the diamond", engine.handle(first.task_id))
        .await
        .unwrap();
    assert_eq!(outcome.state, TaskState::Complete);
    assert_eq!(outcome.reason, None);
    let status = engine.task_status(first.task_id).await.unwrap();
    assert_eq!(status.execution, ExecutionStatus::AllComplete);
    assert!(status.steps.iter().all(|s| s.state == StepState::Complete));
    // A finished task answers at once.
    let outcome = engine.handle(first.task_id).await.unwrap();
    assert_eq!(outcome.state, TaskState::Complete);

    let missing = engine.handle(987_654).await.unwrap_err();
    assert!(matches!(
        missing,
        EngineError::TaskNotFound { task_id: 987_654 }
    ));
    let missing = engine.task_status(987_654).await.unwrap_err();
    assert!(matches!(missing, EngineError::TaskNotFound { .. }));

    // A template loaded at run time.
    engine
        .register_template(
            "name: single\nnamespace: runtime\nversion: 0.1.0\nsteps:\n  - name: only\n    handler_class: tasker.test\n",
        )
        .unwrap();
    let task_id = create_task(&engine, "runtime", "single", json!({})).await;
    let outcome = guarded("the runtime template", engine.handle(task_id))
        .await
        .unwrap();
    assert_eq!(outcome.state, TaskState::Complete);

    worker.stop().await;
    engine.shutdown().await;
    engine.shutdown().await; // idempotent
    let stopped = engine.handle(first.task_id).await.unwrap_err();
    assert!(matches!(stopped, EngineError::Stopped), "{stopped}");
}

async fn a_bad_endpoint_is_refused(db: &TestDb) {
    let error = tasker_engine::Engine::start(
        test_options("bogus://nowhere"),
        db.store().await,
        example_templates(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, EngineError::Transport(_)), "{error}");
    let mut options = test_options("tcp://127.0.0.1:0");
    options.batch_size = 0;
    let error = tasker_engine::Engine::start(options, db.store().await, example_templates())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("batch_size"), "{error}");
}

on_every_backend! {
    initialize_task_reports_clear_errors => initialize_task_reports_clear_errors,
    idempotency_keys_status_and_handle => idempotency_keys_status_and_handle,
    a_bad_endpoint_is_refused => a_bad_endpoint_is_refused,
}
