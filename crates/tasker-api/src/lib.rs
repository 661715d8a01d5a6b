//! Tasker's HTTP API: create tasks, read their state, check the orchestrator's health.
//!
//! | method and path | answer |
//! | --- | --- |
//! | `POST /v1/tasks` | `201` [`TaskCreatedView`] for a new task; `200` with `created: false` when the `idempotency_key` matched an existing task of the same template (that task is returned, nothing is created) |
//! | `POST /v1/tasks/bulk` | `{"tasks": [<create request>, …]}` (1 to 1000), created in one group commit: `201` `{"tasks": [TaskCreatedView, …]}` in the order asked (`200` when every idempotency key matched an existing task); one invalid request creates nothing, its problems pointed at under `/tasks/{index}` |
//! | `GET /v1/tasks/{id}` | `200` [`TaskView`]: the task, its context and timestamps, and every step with its state, attempts, retry limit, results or last error and dependencies |
//! | `GET /v1/tasks/{id}?wait_ms=N` | the same, once the task has finished or `N` ms (at most 60 000) passed, whichever is first: a long poll (`400 invalid_query` for another parameter or value) |
//! | `GET /health` | `200` [`HealthView`] while the process serves (liveness), with the store's reachability inside |
//! | `GET /health/ready` | the same body, `503` when the store does not answer (readiness) |
//!
//! Every error is `{"error": {"code", "message", "details": [{"pointer", "message"}]}}` with a
//! stable `code` (see [`ApiError`], the one place where errors become responses).
//!
//! - [`router`] builds the routes over an [`EngineHandle`]; [`serve`] runs them on a listener
//!   until a shutdown future resolves (tests call it on `127.0.0.1:0`).
//! - Modules: [`error`] ([`ApiError`] and the error body), [`create_request`] (reading a create
//!   request, every problem with its pointer), [`views`] (the response bodies, also
//!   `Deserialize` for clients); `tasks` and `health` hold the handlers.

pub mod create_request;
pub mod error;
mod health;
mod tasks;
pub mod views;

use std::future::Future;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use tasker_engine::EngineHandle;

pub use error::{ApiError, ErrorBody, ErrorDetail, ErrorPayload};
pub use views::{EngineHealth, HealthView, StepView, StoreHealth, TaskCreatedView, TaskView};

/// Largest request body accepted, in bytes (1 MiB, the engine's default frame size: a larger
/// context could not be sent to a worker anyway). Larger bodies get `413 payload_too_large`.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The API's routes over `engine`.
pub fn router(engine: EngineHandle) -> Router {
    Router::new()
        .route("/v1/tasks", post(tasks::create))
        .route("/v1/tasks/bulk", post(tasks::create_many))
        .route("/v1/tasks/{id}", get(tasks::show))
        .route("/health", get(health::liveness))
        .route("/health/ready", get(health::readiness))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(engine)
}

/// Serves [`router`] on `listener` until `shutdown` resolves, then stops accepting and lets
/// requests in progress finish. The engine is the caller's to shut down afterwards.
///
/// # Errors
///
/// When accepting connections fails for good.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: EngineHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "HTTP API listening");
    }
    axum::serve(listener, router(engine))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn route_not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::RouteNotFound {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    tracing::debug!(
        %method,
        %path,
        status = response.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}
