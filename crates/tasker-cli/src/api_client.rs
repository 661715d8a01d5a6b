//! A small client of the orchestrator's HTTP API (`tasker_api`), for the `tasker task` commands.
//! It reads the same view types the server writes.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tasker_api::{ErrorBody, TaskCreatedView, TaskView};

/// The server `tasker task` talks to by default: where `tasker serve` listens by default.
pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one server.
#[derive(Debug, Clone)]
pub(crate) struct ApiClient {
    base: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the server at `server` (`http://HOST:PORT`).
    ///
    /// # Errors
    ///
    /// When `server` is not an `http://` URL.
    pub(crate) fn new(server: &str) -> anyhow::Result<Self> {
        let base = server.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            bail!("--server must be an http:// URL like {DEFAULT_SERVER}, not {server:?}");
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(Self { base, http })
    }

    /// `POST /v1/tasks` with `body`.
    pub(crate) async fn create_task(
        &self,
        body: &Value,
    ) -> anyhow::Result<(TaskCreatedView, Value)> {
        let url = format!("{}/v1/tasks", self.base);
        let response = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .map_err(|error| self.unreachable(error))?;
        self.read(response, "the server refused the task").await
    }

    /// `GET /v1/tasks/{id}`: the parsed view and the raw JSON.
    pub(crate) async fn task(&self, task_id: i64) -> anyhow::Result<(TaskView, Value)> {
        let url = format!("{}/v1/tasks/{task_id}", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|error| self.unreachable(error))?;
        self.read(response, "cannot read the task").await
    }

    /// `GET /v1/tasks/{id}?wait_ms=N`: the task once it finished, or after `wait` (at most
    /// 60 s) with its current state.
    pub(crate) async fn task_wait(
        &self,
        task_id: i64,
        wait: Duration,
    ) -> anyhow::Result<(TaskView, Value)> {
        let wait_ms = wait.as_millis().min(60_000);
        let url = format!("{}/v1/tasks/{task_id}?wait_ms={wait_ms}", self.base);
        let response = self
            .http
            .get(&url)
            .timeout(wait + REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|error| self.unreachable(error))?;
        self.read(response, "cannot read the task").await
    }

    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        response: reqwest::Response,
        refused: &str,
    ) -> anyhow::Result<(T, Value)> {
        let status = response.status();
        let body: Value = response.json().await.with_context(|| {
            format!("the server at {} answered {status} without JSON", self.base)
        })?;
        if !status.is_success() {
            let Ok(error) = serde_json::from_value::<ErrorBody>(body.clone()) else {
                bail!("{refused}: {status}: {body}");
            };
            let mut message = format!(
                "{refused} ({} {}): {}",
                status.as_u16(),
                error.error.code,
                error.error.message
            );
            for detail in &error.error.details {
                let _ = match (&detail.pointer, detail.line, detail.column) {
                    (Some(pointer), _, _) => {
                        write!(
                            message,
                            "\n  {}: {}",
                            display_pointer(pointer),
                            detail.message
                        )
                    }
                    (None, Some(line), Some(column)) => write!(
                        message,
                        "\n  line {line}, column {column}: {}",
                        detail.message
                    ),
                    _ => write!(message, "\n  {}", detail.message),
                };
            }
            bail!(message);
        }
        let parsed = serde_json::from_value(body.clone())
            .with_context(|| format!("unexpected answer from {}: {body}", self.base))?;
        Ok((parsed, body))
    }

    fn unreachable(&self, error: reqwest::Error) -> anyhow::Error {
        // The innermost cause says what happened ("Connection refused").
        let mut cause: &dyn std::error::Error = &error;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        anyhow::anyhow!(
            "cannot reach the Tasker server at {}: {cause} (is `tasker serve` running? \
             choose the server with --server or TASKER_SERVER)",
            self.base
        )
    }
}

fn display_pointer(pointer: &str) -> &str {
    if pointer.is_empty() {
        "(body)"
    } else {
        pointer
    }
}
