//! Cases: migrations, task creation (idempotent, atomic), reads, listing, restart.

use serde_json::json;
use tasker_core::state::{StepState, TaskState};
use tasker_store::{
    Backend, POSTGRES_SCHEMA_VERSION, SQLITE_SCHEMA_VERSION, StepsList, StoreError, TasksList,
    TransitionsOf,
};

use crate::fixtures::{diamond, run_ok, step, t};
use crate::harness::Harness;

pub async fn migrations_from_empty(h: &mut Harness) {
    let expected = match h.backend() {
        Backend::Sqlite => SQLITE_SCHEMA_VERSION,
        Backend::Postgres => POSTGRES_SCHEMA_VERSION,
    };
    assert_eq!(h.store.schema_version().await.unwrap(), expected);
    let counts = h.store.state_counts().await.unwrap();
    assert!(counts.tasks.iter().all(|(_, n)| *n == 0));
    assert_eq!(counts.tasks.len(), TaskState::ALL.len());
    // Opening an up-to-date database applies nothing and keeps the data.
    h.store.task_create(diamond("ns", "m", t(0))).await.unwrap();
    h.reopen().await;
    assert_eq!(h.store.schema_version().await.unwrap(), expected);
    assert_eq!(
        h.store
            .state_counts()
            .await
            .unwrap()
            .task(TaskState::Pending),
        1
    );
}

pub async fn schema_from_the_future_is_refused(h: &mut Harness) {
    h.store.close().await;
    h.raw(
        "INSERT INTO tasker_schema_migrations (version, description, applied_at)
         VALUES (999, 'from the future', 0)",
    )
    .await;
    let err = tasker_store::connect(&h.url).await.unwrap_err();
    match &err {
        StoreError::SchemaTooNew { found, supported } => {
            assert_eq!(*found, 999);
            assert!(*supported < 999);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert!(err.to_string().contains("999"), "{err}");
    // Leave a usable store behind for cleanup.
    h.raw("DELETE FROM tasker_schema_migrations WHERE version = 999")
        .await;
    h.reopen().await;
}

pub async fn task_create_stores_the_dag(h: &mut Harness) {
    let created = h
        .store
        .task_create(diamond("shop", "order", t(5)))
        .await
        .unwrap();
    assert!(created.created);
    assert_eq!(created.step_ids.len(), 4);
    let dag = h.store.task_load_dag(created.task_id).await.unwrap();
    assert_eq!(dag.task.task_id, created.task_id);
    assert_eq!(dag.task.namespace, "shop");
    assert_eq!(dag.task.name, "order");
    assert_eq!(dag.task.version, "1.0.0");
    assert_eq!(dag.task.state, TaskState::Pending);
    assert_eq!(
        dag.task.context,
        json!({ "order_id": 42, "items": [1, 2, 3] })
    );
    assert_eq!(dag.task.tags, vec!["test", "diamond"]);
    assert_eq!(dag.task.initiator.as_deref(), Some("tester"));
    assert_eq!(dag.task.source_system.as_deref(), Some("conformance"));
    assert_eq!(dag.task.reason.as_deref(), Some("testing"));
    assert_eq!(dag.task.created_at, t(5));
    assert_eq!(dag.task.completed_at, None);
    let names: Vec<_> = dag.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    let ids: Vec<_> = dag.steps.iter().map(|s| s.step_id).collect();
    assert_eq!(ids, created.step_ids);
    let [a, b, c, d] = [ids[0], ids[1], ids[2], ids[3]];
    let mut expected_edges = vec![(a, b), (a, c), (b, d), (c, d)];
    expected_edges.sort_unstable();
    assert_eq!(dag.edges, expected_edges);
    let sd = &dag.steps[3];
    assert_eq!(sd.handler_class, "Handlers::d");
    assert_eq!(sd.handler_config, json!({ "step": "d" }));
    assert!(sd.retryable);
    assert_eq!(sd.retry_limit, 3);
    assert_eq!(sd.timeout_ms, Some(500));
    assert_eq!(sd.backoff.map(|b| b.base_delay_ms), Some(10));
    assert_eq!(dag.steps[0].timeout_ms, None);
    assert_eq!(dag.steps[0].backoff, None);
    for s in &dag.steps {
        assert_eq!(s.state, StepState::Pending);
        assert_eq!(s.attempts, 0);
        assert_eq!(s.in_flight_batch, None);
        assert_eq!(s.results, None);
        let history = h
            .store
            .transitions_list(TransitionsOf::Step(s.step_id))
            .await
            .unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].from_state, None);
        assert_eq!(history[0].to_state, "pending");
        assert_eq!(history[0].sort_key, 1);
        assert!(history[0].most_recent);
    }
    let history = h
        .store
        .transitions_list(TransitionsOf::Task(created.task_id))
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].to_state, "pending");
}

pub async fn task_create_is_idempotent_per_template(h: &mut Harness) {
    let mut task = diamond("shop", "order", t(0));
    task.idempotency_key = Some("order-42".to_owned());
    let first = h.store.task_create(task.clone()).await.unwrap();
    assert!(first.created);
    let mut again = task.clone();
    again.context = json!({ "different": true });
    let second = h.store.task_create(again).await.unwrap();
    assert!(!second.created);
    assert_eq!(second.task_id, first.task_id);
    assert_eq!(second.step_ids, first.step_ids);
    let stored = h.store.task_get(first.task_id).await.unwrap();
    assert_eq!(
        stored.context, task.context,
        "the existing task is untouched"
    );
    assert_eq!(stored.idempotency_key.as_deref(), Some("order-42"));
    // The same key on another template (or version) is another task.
    let mut other = task.clone();
    other.version = "2.0.0".to_owned();
    let third = h.store.task_create(other).await.unwrap();
    assert!(third.created);
    assert_ne!(third.task_id, first.task_id);
    // No key: always a new task.
    let mut unkeyed = task.clone();
    unkeyed.idempotency_key = None;
    let a = h.store.task_create(unkeyed.clone()).await.unwrap();
    let b = h.store.task_create(unkeyed).await.unwrap();
    assert_ne!(a.task_id, b.task_id);
    assert_eq!(
        h.store
            .state_counts()
            .await
            .unwrap()
            .task(TaskState::Pending),
        4
    );
    // Bulk creation applies the same rule, also within one call.
    let bulk = h
        .store
        .tasks_create_many(vec![task.clone(), task])
        .await
        .unwrap();
    assert!(
        bulk.iter()
            .all(|c| !c.created && c.task_id == first.task_id)
    );
}

pub async fn task_create_rejects_bad_input_writing_nothing(h: &mut Harness) {
    let mut out_of_range = diamond("ns", "bad", t(0));
    out_of_range.edges.push((0, 9));
    let mut duplicate = diamond("ns", "bad", t(0));
    duplicate.steps[1].name = "a".to_owned();
    let mut empty = diamond("ns", "bad", t(0));
    empty.steps.clear();
    empty.edges.clear();
    let mut self_loop = diamond("ns", "bad", t(0));
    self_loop.edges.push((2, 2));
    for (task, needle) in [
        (out_of_range, "points past"),
        (duplicate, "duplicate step name `a`"),
        (empty, "no steps"),
        (self_loop, "depends on itself"),
    ] {
        let err = h.store.task_create(task).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    // A bulk call with one bad task writes none of them.
    let mut bad = diamond("ns", "bad", t(0));
    bad.edges.push((0, 9));
    let err = h
        .store
        .tasks_create_many(vec![diamond("ns", "good", t(0)), bad])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput { .. }));
    let counts = h.store.state_counts().await.unwrap();
    assert_eq!(counts.task(TaskState::Pending), 0);
    assert_eq!(counts.step(StepState::Pending), 0);
}

pub async fn missing_rows_are_not_found(h: &mut Harness) {
    for err in [
        h.store.task_get(12345).await.unwrap_err(),
        h.store.task_load_dag(12345).await.unwrap_err(),
        h.store.batch_get(uuid::Uuid::new_v4()).await.unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    }
    assert_eq!(
        h.store.task_get(12345).await.unwrap_err().to_string(),
        "task 12345 not found"
    );
}

pub async fn tasks_load_dags_reads_each_as_task_load_dag_does(h: &mut Harness) {
    let s = h.store.as_ref();
    let first = s.task_create(diamond("ns", "dags", t(0))).await.unwrap();
    let mut linear = diamond("ns", "linear", t(1));
    linear.steps.truncate(2);
    linear.edges = vec![(0, 1)];
    let second = s.task_create(linear).await.unwrap();
    let mut lone = diamond("ns", "lone", t(2));
    lone.steps.truncate(1);
    lone.edges = Vec::new();
    let third = s.task_create(lone).await.unwrap();
    // Different states: the first task's root is done, the second's in flight.
    run_ok(s, &first.step_ids[..1], t(3)).await;
    crate::fixtures::dispatch(s, &second.step_ids[..1], t(4)).await;
    let mut expected = Vec::new();
    for id in [third.task_id, first.task_id, second.task_id] {
        expected.push(s.task_load_dag(id).await.unwrap());
    }
    let loaded = s
        .tasks_load_dags(vec![
            third.task_id,
            987_654,
            first.task_id,
            third.task_id,
            second.task_id,
        ])
        .await
        .unwrap();
    assert_eq!(
        loaded, expected,
        "in the order asked, each once, unknown ids left out"
    );
    assert_eq!(loaded[1].steps.len(), 4);
    assert_eq!(loaded[1].edges.len(), 4);
    assert_eq!(loaded[2].steps[0].state, StepState::InProgress);
    assert!(s.tasks_load_dags(Vec::new()).await.unwrap().is_empty());
    assert!(s.tasks_load_dags(vec![987_654]).await.unwrap().is_empty());
}

pub async fn tasks_list_filters_and_paginates(h: &mut Harness) {
    let mut ids = Vec::new();
    for i in 0..7 {
        let ns = if i % 2 == 0 { "even" } else { "odd" };
        let name = if i < 4 { "early" } else { "late" };
        ids.push(
            h.store
                .task_create(diamond(ns, name, t(i * 1000)))
                .await
                .unwrap()
                .task_id,
        );
    }
    // Finish task 0 so states differ.
    let dag = h.store.task_load_dag(ids[0]).await.unwrap();
    let step_ids: Vec<i64> = dag.steps.iter().map(|s| s.step_id).collect();
    run_ok(h.store.as_ref(), &step_ids[..1], t(10)).await;

    let all = h.store.tasks_list(TasksList::default()).await.unwrap();
    let listed: Vec<i64> = all.items.iter().map(|t| t.task_id).collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first);
    assert_eq!(all.next_cursor, None);

    let even = h
        .store
        .tasks_list(TasksList {
            namespace: Some("even".into()),
            ..TasksList::default()
        })
        .await
        .unwrap();
    assert_eq!(even.items.len(), 4);
    assert!(even.items.iter().all(|t| t.namespace == "even"));

    let late_odd = h
        .store
        .tasks_list(TasksList {
            namespace: Some("odd".into()),
            name: Some("late".into()),
            ..TasksList::default()
        })
        .await
        .unwrap();
    assert_eq!(
        late_odd.items.iter().map(|t| t.task_id).collect::<Vec<_>>(),
        vec![ids[5]]
    );

    let in_progress = h
        .store
        .tasks_list(TasksList {
            state: Some(TaskState::InProgress),
            ..TasksList::default()
        })
        .await
        .unwrap();
    assert_eq!(
        in_progress
            .items
            .iter()
            .map(|t| t.task_id)
            .collect::<Vec<_>>(),
        vec![ids[0]]
    );

    let window = h
        .store
        .tasks_list(TasksList {
            created_from: Some(t(2000)),
            created_before: Some(t(5000)),
            ..TasksList::default()
        })
        .await
        .unwrap();
    assert_eq!(
        window.items.iter().map(|t| t.task_id).collect::<Vec<_>>(),
        vec![ids[4], ids[3], ids[2]]
    );

    // Pages of 3 cover everything exactly once.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = h
            .store
            .tasks_list(TasksList {
                before_task_id: cursor,
                limit: 3,
                ..TasksList::default()
            })
            .await
            .unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|t| t.task_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);
}

pub async fn steps_list_filters_and_paginates(h: &mut Harness) {
    let first = h.store.task_create(diamond("ns", "x", t(0))).await.unwrap();
    let second = h.store.task_create(diamond("ns", "x", t(0))).await.unwrap();
    run_ok(h.store.as_ref(), &first.step_ids[..1], t(1)).await;

    let of_first = h
        .store
        .steps_list(StepsList {
            task_id: Some(first.task_id),
            ..StepsList::default()
        })
        .await
        .unwrap();
    assert_eq!(
        of_first.items.iter().map(|s| s.step_id).collect::<Vec<_>>(),
        first.step_ids
    );

    let complete = h
        .store
        .steps_list(StepsList {
            state: Some(StepState::Complete),
            ..StepsList::default()
        })
        .await
        .unwrap();
    assert_eq!(complete.items.len(), 1);
    assert_eq!(complete.items[0].step_id, first.step_ids[0]);
    assert_eq!(
        complete.items[0].results,
        Some(json!({ "done": first.step_ids[0] }))
    );

    let named_d = h
        .store
        .steps_list(StepsList {
            name: Some("d".into()),
            ..StepsList::default()
        })
        .await
        .unwrap();
    assert_eq!(
        named_d.items.iter().map(|s| s.step_id).collect::<Vec<_>>(),
        vec![first.step_ids[3], second.step_ids[3]]
    );
    let by_handler = h
        .store
        .steps_list(StepsList {
            handler_class: Some("Handlers::b".into()),
            ..StepsList::default()
        })
        .await
        .unwrap();
    assert_eq!(by_handler.items.len(), 2);

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = h
            .store
            .steps_list(StepsList {
                after_step_id: cursor,
                limit: 3,
                ..StepsList::default()
            })
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|s| s.step_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut all: Vec<i64> = first
        .step_ids
        .iter()
        .chain(&second.step_ids)
        .copied()
        .collect();
    all.sort_unstable();
    assert_eq!(seen, all);
}

pub async fn restart_loses_nothing_committed(h: &mut Harness) {
    let created = h.store.task_create(diamond("ns", "r", t(0))).await.unwrap();
    let batch = run_ok(h.store.as_ref(), &created.step_ids[..1], t(1)).await;
    let mut only_a = diamond("ns", "r", t(2));
    only_a.steps = vec![step("solo")];
    only_a.edges.clear();
    h.store.task_create(only_a).await.unwrap();
    let dag_before = h.store.task_load_dag(created.task_id).await.unwrap();
    let counts_before = h.store.state_counts().await.unwrap();
    let batch_before = h.store.batch_get(batch).await.unwrap();
    let history_before = h
        .store
        .transitions_list(TransitionsOf::Step(created.step_ids[0]))
        .await
        .unwrap();

    h.reopen().await;

    assert_eq!(
        h.store.task_load_dag(created.task_id).await.unwrap(),
        dag_before
    );
    assert_eq!(h.store.state_counts().await.unwrap(), counts_before);
    assert_eq!(h.store.batch_get(batch).await.unwrap(), batch_before);
    assert_eq!(
        h.store
            .transitions_list(TransitionsOf::Step(created.step_ids[0]))
            .await
            .unwrap(),
        history_before
    );
    let ready = crate::fixtures::ready_ids(h.store.as_ref(), t(3)).await;
    assert_eq!(
        ready.len(),
        3,
        "b, c and solo are ready after the restart: {ready:?}"
    );
}

pub async fn closed_store_reports_unavailable(h: &mut Harness) {
    h.store.close().await;
    let err = h.store.task_get(1).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    h.reopen().await;
}
