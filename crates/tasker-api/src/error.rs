//! [`ApiError`]: every error the HTTP API answers with, and the one place where each becomes a
//! status code and a JSON body.
//!
//! Every error response has the same shape:
//!
//! ```json
//! { "error": { "code": "invalid_context",
//!              "message": "invalid context for task template order_fulfillment/order_fulfillment 1.0.0: …",
//!              "details": [ { "pointer": "/context/customer/email", "message": "is required but missing" } ] } }
//! ```
//!
//! `code` is stable (clients branch on it); `message` is for people; `details` lists every
//! individual problem, each with a JSON pointer into the request body when there is one.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tasker_engine::EngineError;
use tasker_store::StoreError;

/// One problem inside an error: where (a JSON pointer into the request body, when it concerns
/// the body) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// JSON pointer into the request body (`/context/customer/email`, `/tags/0`); `None` when
    /// the problem is not about one value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// The JSON Schema keyword that failed, for context violations (`required`, `type`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyword: Option<String>,
    /// 1-based line in the request body, for JSON syntax errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column in the request body, for JSON syntax errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl ErrorDetail {
    /// A problem at `pointer`.
    pub fn at(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pointer: Some(pointer.into()),
            keyword: None,
            line: None,
            column: None,
            message: message.into(),
        }
    }
}

/// The body of every error response: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorPayload,
}

/// What `"error"` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorPayload {
    /// Stable machine-readable code (see [`ApiError::code`]).
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// Every individual problem (may be empty).
    #[serde(default)]
    pub details: Vec<ErrorDetail>,
}

/// Everything a request can fail with. [`IntoResponse`] turns each into its status code and
/// [`ErrorBody`]; handlers only ever return this type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The body is not JSON (400 `malformed_json`), with serde's line and column.
    #[error("the request body is not valid JSON: {reason} at line {line}, column {column}")]
    MalformedJson {
        /// serde_json's description, without the position.
        reason: String,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
    },
    /// Required fields are absent (400 `missing_field`).
    #[error("the request body lacks {}", list_pointers(.0))]
    MissingField(Vec<ErrorDetail>),
    /// Fields have the wrong type or are unknown (400 `invalid_field`); missing fields, if any,
    /// are listed too.
    #[error("the request body has {} invalid field{}: {}", .0.len(), if .0.len() == 1 { "" } else { "s" }, list_details(.0))]
    InvalidField(Vec<ErrorDetail>),
    /// No loaded template matches (404 `unknown_template`).
    #[error("unknown task template {namespace}/{name}{}", version.as_ref().map_or_else(|| " (any version)".to_owned(), |v| format!(" version {v}")))]
    UnknownTemplate {
        /// The namespace asked for.
        namespace: String,
        /// The name asked for.
        name: String,
        /// The version asked for.
        version: Option<String>,
        /// What is loaded instead (the versions of that template, or that nothing by that name
        /// is loaded).
        hint: Box<ErrorDetail>,
    },
    /// The context breaks the template's `context_schema` (422 `invalid_context`).
    #[error("invalid context for task template {template}: {count} violation{}", if *.count == 1 { "" } else { "s" })]
    InvalidContext {
        /// `namespace/name version`.
        template: String,
        /// How many violations.
        count: usize,
        /// Every violation, with its pointer into the request body (`/context/...`).
        violations: Vec<ErrorDetail>,
    },
    /// A query parameter is unknown or has a value that cannot be used (400 `invalid_query`).
    #[error("invalid query: {}", list_details(.0))]
    InvalidQuery(Vec<ErrorDetail>),
    /// The task id in the path is not a positive integer (400 `invalid_task_id`).
    #[error("task id {0:?} is not a positive integer")]
    InvalidTaskId(String),
    /// No such task (404 `task_not_found`).
    #[error("task {0} not found")]
    TaskNotFound(i64),
    /// The body exceeds the size limit (413 `payload_too_large`).
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body could not be read (400 `unreadable_body`).
    #[error("the request body could not be read: {0}")]
    UnreadableBody(String),
    /// No route matches the path (404 `route_not_found`).
    #[error("no route {method} {path}")]
    RouteNotFound {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
    /// The path exists but not with this method (405 `method_not_allowed`).
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
    /// The store is unreachable, locked or full, or the engine has stopped (503
    /// `unavailable`): retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (500 `internal`): a bug or a failure the client cannot fix.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The same error with every detail's pointer prefixed (`/tasks/3` + `/context/a`): for an
    /// item of a request that holds many.
    #[must_use]
    pub fn with_pointer_prefix(self, prefix: &str) -> Self {
        let prefix_all = |details: Vec<ErrorDetail>| {
            details
                .into_iter()
                .map(|mut detail| {
                    detail.pointer = detail.pointer.map(|p| format!("{prefix}{p}"));
                    detail
                })
                .collect()
        };
        match self {
            Self::MissingField(details) => Self::MissingField(prefix_all(details)),
            Self::InvalidField(details) => Self::InvalidField(prefix_all(details)),
            Self::InvalidContext {
                template,
                count,
                violations,
            } => Self::InvalidContext {
                template,
                count,
                violations: prefix_all(violations),
            },
            Self::UnknownTemplate {
                namespace,
                name,
                version,
                hint,
            } => {
                let mut hint = *hint;
                hint.pointer = hint.pointer.map(|p| format!("{prefix}{p}"));
                Self::UnknownTemplate {
                    namespace,
                    name,
                    version,
                    hint: Box::new(hint),
                }
            }
            other => other,
        }
    }

    /// The stable code of this error, as in the response's `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson { .. } => "malformed_json",
            Self::MissingField(_) => "missing_field",
            Self::InvalidField(_) => "invalid_field",
            Self::UnknownTemplate { .. } => "unknown_template",
            Self::InvalidContext { .. } => "invalid_context",
            Self::InvalidQuery(_) => "invalid_query",
            Self::InvalidTaskId(_) => "invalid_task_id",
            Self::TaskNotFound(_) => "task_not_found",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnreadableBody(_) => "unreadable_body",
            Self::RouteNotFound { .. } => "route_not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson { .. }
            | Self::MissingField(_)
            | Self::InvalidField(_)
            | Self::InvalidQuery(_)
            | Self::InvalidTaskId(_)
            | Self::UnreadableBody(_) => StatusCode::BAD_REQUEST,
            Self::UnknownTemplate { .. } | Self::TaskNotFound(_) | Self::RouteNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            Self::InvalidContext { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The individual problems listed in `error.details`.
    pub fn details(&self) -> Vec<ErrorDetail> {
        match self {
            Self::MalformedJson {
                reason,
                line,
                column,
            } => vec![ErrorDetail {
                pointer: None,
                keyword: None,
                line: Some(*line),
                column: Some(*column),
                message: reason.clone(),
            }],
            Self::MissingField(details)
            | Self::InvalidField(details)
            | Self::InvalidQuery(details) => details.clone(),
            Self::UnknownTemplate { hint, .. } => vec![(**hint).clone()],
            Self::InvalidContext { violations, .. } => violations.clone(),
            _ => Vec::new(),
        }
    }

    /// The response body of this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorPayload {
                code: self.code().to_owned(),
                message: self.to_string(),
                details: self.details(),
            },
        }
    }

    /// Maps an engine error; `templates` describes what is loaded, for unknown-template hints.
    pub(crate) fn from_engine(
        error: EngineError,
        templates: &tasker_engine::TemplateRegistry,
    ) -> Self {
        match error {
            EngineError::UnknownTemplate {
                namespace,
                name,
                version,
            } => {
                let versions: Vec<String> = templates
                    .templates()
                    .iter()
                    .filter(|t| t.namespace() == namespace && t.name() == name)
                    .map(|t| t.version().to_string())
                    .collect();
                let hint = if versions.is_empty() {
                    let loaded: Vec<String> = templates
                        .templates()
                        .iter()
                        .map(|t| format!("{}/{}", t.namespace(), t.name()))
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    ErrorDetail::at(
                        "/name",
                        format!(
                            "no template {namespace}/{name} is loaded; loaded: {}",
                            if loaded.is_empty() {
                                "none".to_owned()
                            } else {
                                loaded.join(", ")
                            }
                        ),
                    )
                } else {
                    ErrorDetail::at(
                        "/version",
                        format!(
                            "{namespace}/{name} is loaded in version{} {}",
                            if versions.len() == 1 { "" } else { "s" },
                            versions.join(", ")
                        ),
                    )
                };
                Self::UnknownTemplate {
                    namespace,
                    name,
                    version,
                    hint: Box::new(hint),
                }
            }
            EngineError::InvalidContext {
                namespace,
                name,
                version,
                error,
            } => {
                let violations: Vec<ErrorDetail> = error
                    .violations
                    .iter()
                    .map(|v| ErrorDetail {
                        pointer: Some(format!("/context{}", v.pointer)),
                        keyword: Some(v.keyword.clone()),
                        line: None,
                        column: None,
                        message: v.message.clone(),
                    })
                    .collect();
                Self::InvalidContext {
                    template: format!("{namespace}/{name} {version}"),
                    count: violations.len(),
                    violations,
                }
            }
            EngineError::TaskNotFound { task_id } => Self::TaskNotFound(task_id),
            EngineError::Stopped => Self::Unavailable("the engine has stopped".to_owned()),
            EngineError::Store(store) => Self::from(store),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable { .. }
            | StoreError::Locked { .. }
            | StoreError::DiskFull { .. } => Self::Unavailable(error.to_string()),
            StoreError::NotFound { .. } => Self::Internal(error.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = self.code(), error = %self, "request failed");
        } else {
            tracing::debug!(code = self.code(), error = %self, "request rejected");
        }
        (status, axum::Json(self.body())).into_response()
    }
}

fn list_pointers(details: &[ErrorDetail]) -> String {
    details
        .iter()
        .map(|d| d.pointer.clone().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_details(details: &[ErrorDetail]) -> String {
    details
        .iter()
        .map(|d| match &d.pointer {
            Some(pointer) => format!("{pointer}: {}", d.message),
            None => d.message.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_status_and_code() {
        let cases = [
            (
                ApiError::MalformedJson {
                    reason: "expected value".into(),
                    line: 1,
                    column: 2,
                },
                400,
                "malformed_json",
            ),
            (
                ApiError::MissingField(vec![ErrorDetail::at("/name", "is required")]),
                400,
                "missing_field",
            ),
            (ApiError::InvalidTaskId("x".into()), 400, "invalid_task_id"),
            (
                ApiError::InvalidQuery(vec![ErrorDetail::at("wait_ms", "not a number")]),
                400,
                "invalid_query",
            ),
            (ApiError::TaskNotFound(7), 404, "task_not_found"),
            (
                ApiError::PayloadTooLarge { limit: 10 },
                413,
                "payload_too_large",
            ),
            (ApiError::Unavailable("db".into()), 503, "unavailable"),
            (ApiError::Internal("bug".into()), 500, "internal"),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status().as_u16(), status, "{error}");
            assert_eq!(error.code(), code);
            assert_eq!(error.body().error.code, code);
        }
    }

    #[test]
    fn messages_name_the_culprits() {
        let error = ApiError::MissingField(vec![
            ErrorDetail::at("/namespace", "is required but missing"),
            ErrorDetail::at("/name", "is required but missing"),
        ]);
        assert_eq!(
            error.to_string(),
            "the request body lacks /namespace, /name"
        );
        let error = ApiError::InvalidField(vec![ErrorDetail::at("/tags/0", "must be a string")]);
        assert_eq!(
            error.to_string(),
            "the request body has 1 invalid field: /tags/0: must be a string"
        );
    }
}
