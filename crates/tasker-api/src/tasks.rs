//! `POST /v1/tasks` and `GET /v1/tasks/{id}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tasker_engine::EngineHandle;

use crate::MAX_BODY_BYTES;
use crate::create_request::parse_create_task;
use crate::error::ApiError;
use crate::views::{TaskCreatedView, TaskView};

/// Creates a task: `201` with `Location`, or `200` for a repeated idempotency key.
pub(crate) async fn create(
    State(engine): State<EngineHandle>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            }
        } else {
            ApiError::UnreadableBody(rejection.body_text())
        }
    })?;
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

/// Reads a task with its steps.
pub(crate) async fn show(
    State(engine): State<EngineHandle>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<TaskView>, ApiError> {
    let Path(id) = id.map_err(|rejection| ApiError::InvalidTaskId(rejection.body_text()))?;
    let task_id = id
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::InvalidTaskId(id.clone()))?;
    let templates = engine.templates();
    let status = engine
        .task_status(task_id)
        .await
        .map_err(|error| ApiError::from_engine(error, &templates))?;
    // The status carries no edges; they never change once the task exists.
    let dag = engine.store().task_load_dag(task_id).await?;
    Ok(Json(TaskView::new(status, &dag.edges)))
}
