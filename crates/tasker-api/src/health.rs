//! `GET /health` (liveness) and `GET /health/ready` (readiness).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use tasker_engine::EngineHandle;
use tasker_store::Backend;

use crate::views::{EngineHealth, HealthView, StoreHealth};

/// How long the store may take to answer the health check's query.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Always `200` while serving; the store's state is inside.
pub(crate) async fn liveness(State(engine): State<EngineHandle>) -> Json<HealthView> {
    Json(check(&engine).await)
}

/// `200` when the store answers, `503` otherwise.
pub(crate) async fn readiness(
    State(engine): State<EngineHandle>,
) -> (StatusCode, Json<HealthView>) {
    let health = check(&engine).await;
    let status = if health.store.reachable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health))
}

async fn check(engine: &EngineHandle) -> HealthView {
    let store = engine.store();
    let backend = match store.backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let (schema_version, error) =
        match tokio::time::timeout(STORE_CHECK_TIMEOUT, store.schema_version()).await {
            Ok(Ok(version)) => (Some(version), None),
            Ok(Err(error)) => (None, Some(error.to_string())),
            Err(_) => (
                None,
                Some(format!(
                    "the store did not answer within {} ms",
                    STORE_CHECK_TIMEOUT.as_millis()
                )),
            ),
        };
    let reachable = error.is_none();
    let stats = engine.stats();
    HealthView {
        status: if reachable { "ok" } else { "degraded" }.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        store: StoreHealth {
            backend: backend.to_owned(),
            reachable,
            schema_version,
            error,
        },
        engine: EngineHealth {
            endpoint: engine.endpoint().to_owned(),
            orchestrator_id: engine.options().orchestrator_id.clone(),
            workers_connected: stats.workers_connected,
            tasks_active: stats.tasks_active,
        },
    }
}
