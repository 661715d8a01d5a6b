//! The HTTP API over a real listener on 127.0.0.1:0, a real engine and a temporary SQLite store.
//! Every response shape is snapshotted (timestamps, ports and worker ids normalised).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tasker_api::{TaskCreatedView, TaskView};
use tasker_engine::{Engine, EngineHandle, EngineOptions, TemplateRegistry};
use tokio::sync::oneshot;

/// A running engine + API on free ports over a fresh SQLite file.
struct Server {
    base: String,
    engine: EngineHandle,
    client: reqwest::Client,
    stop_http: Option<oneshot::Sender<()>>,
    stop_workers: Vec<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("tasker.db").display());
        let store = tasker_store::connect(&url).await.unwrap();
        let templates_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/templates");
        let templates = TemplateRegistry::from_dir(templates_dir).unwrap();
        let mut options = EngineOptions::with_endpoint("tcp://127.0.0.1:0");
        options.orchestrator_id = "orchestrator-api-test".to_owned();
        let engine = Engine::start(options, store, templates).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop_http, stopped) = oneshot::channel::<()>();
        tokio::spawn(tasker_api::serve(listener, engine.clone(), async move {
            let _ = stopped.await;
        }));
        Self {
            base,
            engine,
            client: reqwest::Client::new(),
            stop_http: Some(stop_http),
            stop_workers: Vec::new(),
            _dir: dir,
        }
    }

    /// Starts an in-process worker with the built-in handlers.
    fn add_worker(&mut self) {
        let worker =
            tasker_worker::Worker::new(tasker_worker::WorkerOptions::new(self.engine.endpoint()))
                .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(worker.run(tasker_worker::builtin::registry(), async move {
            let _ = stopped.await;
        }));
        self.stop_workers.push(stop);
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.post(path, body.to_string()).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// Waits for the task's end with the long poll (bounded: three polls of 10 s).
    async fn wait_finished(&self, task_id: i64) -> TaskView {
        for _ in 0..3 {
            let (status, body) = self
                .get(&format!("/v1/tasks/{task_id}?wait_ms=10000"))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let view: TaskView = serde_json::from_value(body).unwrap();
            if matches!(view.state.as_str(), "complete" | "error") {
                return view;
            }
        }
        panic!("task {task_id} did not finish within 30 s");
    }

    async fn stop(mut self) {
        for stop in self.stop_workers.drain(..) {
            let _ = stop.send(());
        }
        if let Some(stop) = self.stop_http.take() {
            let _ = stop.send(());
        }
        self.engine.shutdown().await;
    }
}

/// Replaces what changes from run to run (times, ports, worker ids) with placeholders.
fn normalise(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let volatile = key.ends_with("_at") || key == "backoff_until";
                if volatile && !item.is_null() {
                    *item = json!("[timestamp]");
                } else if key == "worker" && item.is_string() {
                    *item = json!("[worker]");
                } else if key == "endpoint" && item.is_string() {
                    *item = json!("tcp://127.0.0.1:[port]");
                } else {
                    normalise(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

fn order_context() -> Value {
    json!({
        "order_id": 1001,
        "customer": {"email": "ada@example.com", "name": "Ada"},
        "items": [
            {"sku": "BOOK-1", "quantity": 2, "unit_price_cents": 1500},
            {"sku": "PEN-7", "quantity": 1, "unit_price_cents": 250}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_task_is_returned_with_every_step_and_dependency() {
    let server = Server::start().await;
    let (status, created) = server
        .post_json(
            "/v1/tasks",
            &json!({
                "namespace": "examples", "name": "diamond", "context": {"run": 1},
                "initiator": "api-test", "source_system": "tests", "reason": "snapshot",
                "tags": ["snapshot"]
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let view: TaskCreatedView = serde_json::from_value(created.clone()).unwrap();
    assert!(view.created);
    assert_eq!(view.step_count, 4);
    let mut shown_created = created.clone();
    shown_created["task_id"] = json!("[id]");
    shown_created["href"] = json!("/v1/tasks/[id]");
    insta::assert_json_snapshot!("create_task_201", shown_created);

    // No worker is connected: nothing can run, so the steps stay pending.
    let (status, mut task) = server.get(&view.href).await;
    assert_eq!(status, StatusCode::OK, "{task}");
    let parsed: TaskView = serde_json::from_value(task.clone()).unwrap();
    assert_eq!(parsed.task_id, view.task_id);
    let deps: Vec<(&str, Vec<String>)> = parsed
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.depends_on.clone()))
        .collect();
    assert_eq!(
        deps,
        vec![
            ("a", vec![]),
            ("b", vec!["a".to_owned()]),
            ("c", vec!["a".to_owned()]),
            ("d", vec!["b".to_owned(), "c".to_owned()]),
        ]
    );
    task["task_id"] = json!("[id]");
    for step in task["steps"].as_array_mut().unwrap() {
        step["step_id"] = json!("[id]");
    }
    normalise(&mut task);
    insta::assert_json_snapshot!("task_pending_200", task);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_run_by_a_worker_shows_results_per_step() {
    let mut server = Server::start().await;
    server.add_worker();
    let (status, created) = server
        .post_json(
            "/v1/tasks",
            &json!({
                "namespace": "order_fulfillment", "name": "order_fulfillment",
                "version": "1.0.0", "context": order_context()
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let task_id = created["task_id"].as_i64().unwrap();
    let view = server.wait_finished(task_id).await;
    assert_eq!(view.state.as_str(), "complete", "{view:#?}");
    for step in &view.steps {
        assert_eq!(step.state.as_str(), "complete", "{step:?}");
        assert_eq!(step.attempts, 1, "{step:?}");
        assert!(step.results.is_some(), "{step:?}");
        assert!(step.last_error.is_none(), "{step:?}");
    }
    let (_, mut task) = server.get(&format!("/v1/tasks/{task_id}")).await;
    task["task_id"] = json!("[id]");
    for step in task["steps"].as_array_mut().unwrap() {
        step["step_id"] = json!("[id]");
    }
    normalise(&mut task);
    insta::assert_json_snapshot!("task_complete_200", task);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_returns_the_existing_task_with_200() {
    let server = Server::start().await;
    let request = json!({
        "namespace": "examples", "name": "linear", "idempotency_key": "order-42"
    });
    let (first_status, first) = server.post_json("/v1/tasks", &request).await;
    let (second_status, second) = server.post_json("/v1/tasks", &request).await;
    assert_eq!(first_status, StatusCode::CREATED, "{first}");
    assert_eq!(second_status, StatusCode::OK, "{second}");
    assert_eq!(first["task_id"], second["task_id"]);
    assert_eq!(first["created"], json!(true));
    assert_eq!(second["created"], json!(false));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_errors() {
    let server = Server::start().await;
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        (
            "error_unknown_template",
            json!({"namespace": "examples", "name": "nope"}).to_string(),
            StatusCode::NOT_FOUND,
            "unknown_template",
        ),
        (
            "error_unknown_version",
            json!({"namespace": "examples", "name": "diamond", "version": "9.9.9"}).to_string(),
            StatusCode::NOT_FOUND,
            "unknown_template",
        ),
        (
            "error_invalid_context",
            json!({
                "namespace": "order_fulfillment", "name": "order_fulfillment",
                "context": {"order_id": 0, "customer": {}, "items": [{"sku": "", "quantity": 0}]}
            })
            .to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_context",
        ),
        (
            "error_malformed_json",
            "{\n  \"namespace\": \"examples\",\n  \"name\": diamond\n}".to_owned(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "error_missing_field",
            json!({"context": {}}).to_string(),
            StatusCode::BAD_REQUEST,
            "missing_field",
        ),
        (
            "error_invalid_field",
            json!({"namespace": "examples", "name": 7, "tags": "x", "contxt": {}}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
    ];
    for (snapshot, body, status, code) in cases {
        let (got_status, got) = server.post("/v1/tasks", body).await;
        assert_eq!(got_status, status, "{snapshot}: {got}");
        assert_eq!(got["error"]["code"], json!(code), "{snapshot}: {got}");
        insta::assert_json_snapshot!(snapshot, got);
    }

    let (status, got) = server.get("/v1/tasks/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    insta::assert_json_snapshot!("error_task_not_found", got);
    let (status, got) = server.get("/v1/tasks/abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    insta::assert_json_snapshot!("error_invalid_task_id", got);
    let (status, got) = server.get("/v2/things").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    insta::assert_json_snapshot!("error_route_not_found", got);
    let (status, got) = server.post("/health", "{}").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    insta::assert_json_snapshot!("error_method_not_allowed", got);
    let huge = format!(
        "{{\"namespace\":\"examples\",\"name\":\"diamond\",\"context\":{{\"pad\":\"{}\"}}}}",
        "x".repeat(tasker_api::MAX_BODY_BYTES)
    );
    let (status, got) = server.post("/v1/tasks", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    insta::assert_json_snapshot!("error_payload_too_large", got);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_store_and_the_engine() {
    let server = Server::start().await;
    let (status, mut live) = server.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(live["store"]["reachable"], json!(true));
    let (status, ready) = server.get("/health/ready").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    normalise(&mut live);
    live["version"] = json!("[version]");
    insta::assert_json_snapshot!("health_200", live);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_long_poll_answers_at_the_end_of_the_task_or_at_its_timeout() {
    let mut server = Server::start().await;
    let (status, body) = server
        .post_json(
            "/v1/tasks",
            &json!({"namespace": "examples", "name": "diamond", "context": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let task_id = body["task_id"].as_i64().unwrap();
    // No worker: the poll holds for its whole timeout, then answers with the current state.
    let asked = std::time::Instant::now();
    let (status, body) = server
        .get(&format!("/v1/tasks/{task_id}?wait_ms=300"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "held until the timeout"
    );
    assert_eq!(body["state"], "pending");
    // A worker arrives; one poll answers as soon as the task is complete.
    server.add_worker();
    let (status, body) = server
        .get(&format!("/v1/tasks/{task_id}?wait_ms=30000"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "complete", "{body}");
    // A finished task answers at once.
    let (_, body) = server
        .get(&format!("/v1/tasks/{task_id}?wait_ms=60000"))
        .await;
    assert_eq!(body["state"], "complete");
    // Bad parameters are named.
    let (status, body) = server
        .get(&format!("/v1/tasks/{task_id}?wait_ms=60001&x=1"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_query");
    assert_eq!(
        body["error"]["details"].as_array().unwrap().len(),
        2,
        "{body}"
    );
    let (status, body) = server.get("/v1/tasks/999999?wait_ms=10").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_are_created_in_one_request_each_with_its_idempotency_key() {
    let mut server = Server::start().await;
    let task = |key: &str| json!({"namespace": "examples", "name": "diamond", "context": {}, "idempotency_key": key});
    let (status, body) = server
        .post_json(
            "/v1/tasks/bulk",
            &json!({"tasks": [task("a"), task("b"), task("c")]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let views: Vec<TaskCreatedView> = serde_json::from_value(body["tasks"].clone()).unwrap();
    assert_eq!(views.len(), 3);
    assert!(views.iter().all(|v| v.created && v.step_count == 4));
    // The same keys again: the same tasks, nothing created.
    let (status, body) = server
        .post_json("/v1/tasks/bulk", &json!({"tasks": [task("c"), task("a")]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let again: Vec<TaskCreatedView> = serde_json::from_value(body["tasks"].clone()).unwrap();
    assert_eq!(
        again.iter().map(|v| v.task_id).collect::<Vec<_>>(),
        vec![views[2].task_id, views[0].task_id]
    );
    assert!(again.iter().all(|v| !v.created));
    // One bad request among good ones creates nothing and is pointed at.
    let (status, body) = server
        .post_json(
            "/v1/tasks/bulk",
            &json!({"tasks": [task("d"), {"namespace": "examples", "name": "nope"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "unknown_template");
    assert_eq!(body["error"]["details"][0]["pointer"], "/tasks/1/name");
    let (status, body) = server
        .post_json("/v1/tasks/bulk", &json!({"tasks": [task("d")]}))
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "d was not created before: {body}"
    );
    server.add_worker();
    for view in &views {
        let finished = server.wait_finished(view.task_id).await;
        assert_eq!(finished.state.as_str(), "complete");
    }
    server.stop().await;
}
