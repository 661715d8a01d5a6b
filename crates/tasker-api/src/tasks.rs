//! `POST /v1/tasks` and `GET /v1/tasks/{id}` (with `?wait_ms=N`, a long poll).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tasker_engine::EngineHandle;

use crate::MAX_BODY_BYTES;
use crate::create_request::{parse_create_task, parse_create_tasks};
use crate::error::{ApiError, ErrorDetail};
use crate::views::{TaskCreatedView, TaskView};

/// Creates a task: `201` with `Location`, or `200` for a repeated idempotency key.
pub(crate) async fn create(
    State(engine): State<EngineHandle>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(body)?;
    let request = parse_create_task(&body)?;
    let created = engine
        .initialize_task(request)
        .await
        .map_err(|error| ApiError::from_engine(error, &engine.templates()))?;
    let view = TaskCreatedView::from(created);
    let status = if view.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = view.href.clone();
    Ok((status, [(header::LOCATION, location)], Json(view)).into_response())
}

/// Creates many tasks in one group commit (`POST /v1/tasks/bulk`): `201` when at least one was
/// created, `200` when every idempotency key matched an existing task; the body lists each
/// task in the order asked. Nothing is created when one request is invalid; its problems are
/// reported with pointers under `/tasks/{index}`.
pub(crate) async fn create_many(
    State(engine): State<EngineHandle>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(body)?;
    let requests = parse_create_tasks(&body)?;
    let templates = engine.templates();
    for (index, request) in requests.iter().enumerate() {
        engine.check_request(request).map_err(|error| {
            ApiError::from_engine(error, &templates).with_pointer_prefix(&format!("/tasks/{index}"))
        })?;
    }
    let created = engine
        .initialize_tasks(requests)
        .await
        .map_err(|error| ApiError::from_engine(error, &templates))?;
    let views: Vec<TaskCreatedView> = created.into_iter().map(TaskCreatedView::from).collect();
    let status = if views.iter().any(|v| v.created) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(serde_json::json!({ "tasks": views }))).into_response())
}

/// The request body, or the error its rejection stands for (too large, unreadable).
fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            }
        } else {
            ApiError::UnreadableBody(rejection.body_text())
        }
    })
}

/// Longest `wait_ms` a client may ask for, in milliseconds (one minute: below the idle timeouts
/// of common proxies; a client that wants longer asks again).
pub const MAX_WAIT_MS: u64 = 60_000;

/// Reads a task with its steps. With `?wait_ms=N`, first waits until the task has finished or
/// `N` milliseconds passed (a long poll), whichever comes first; the answer is the same view
/// either way, and its `state` says which happened.
pub(crate) async fn show(
    State(engine): State<EngineHandle>,
    id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<TaskView>, ApiError> {
    let Path(id) = id.map_err(|rejection| ApiError::InvalidTaskId(rejection.body_text()))?;
    let task_id = id
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::InvalidTaskId(id.clone()))?;
    let wait = parse_wait_ms(query.as_deref())?;
    let templates = engine.templates();
    if let Some(wait) = wait {
        engine
            .wait_task(task_id, wait)
            .await
            .map_err(|error| ApiError::from_engine(error, &templates))?;
    }
    let status = engine
        .task_status(task_id)
        .await
        .map_err(|error| ApiError::from_engine(error, &templates))?;
    let edges = status.edges.clone();
    Ok(Json(TaskView::new(status, &edges)))
}

/// Reads the query of `GET /v1/tasks/{id}`: only `wait_ms`, a whole number of milliseconds up to
/// [`MAX_WAIT_MS`]. Every problem is reported, each naming its parameter.
fn parse_wait_ms(query: Option<&str>) -> Result<Option<std::time::Duration>, ApiError> {
    let mut wait = None;
    let mut problems = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "wait_ms" {
            problems.push(ErrorDetail::at(
                key,
                format!("unknown query parameter `{key}`; expected: wait_ms"),
            ));
            continue;
        }
        match value.parse::<u64>() {
            Ok(ms) if ms <= MAX_WAIT_MS => wait = Some(std::time::Duration::from_millis(ms)),
            Ok(ms) => problems.push(ErrorDetail::at(
                "wait_ms",
                format!("wait_ms is {ms}; at most {MAX_WAIT_MS} (ask again to wait longer)"),
            )),
            Err(_) => problems.push(ErrorDetail::at(
                "wait_ms",
                format!("wait_ms must be a whole number of milliseconds, not {value:?}"),
            )),
        }
    }
    if problems.is_empty() {
        Ok(wait)
    } else {
        Err(ApiError::InvalidQuery(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_ms_is_read_and_bounded() {
        assert_eq!(parse_wait_ms(None).expect("no query"), None);
        assert_eq!(
            parse_wait_ms(Some("wait_ms=250")).expect("valid"),
            Some(std::time::Duration::from_millis(250))
        );
        let too_long = parse_wait_ms(Some("wait_ms=60001")).expect_err("above the cap");
        assert_eq!(too_long.code(), "invalid_query");
        let both = parse_wait_ms(Some("wait=1&wait_ms=x")).expect_err("two problems");
        let details = both.details();
        assert_eq!(details.len(), 2, "{details:?}");
        assert_eq!(details[0].pointer.as_deref(), Some("wait"));
        assert!(details[1].message.contains("whole number"), "{details:?}");
    }
}
