//! [`EngineError`], the engine crate's one error type.

use std::path::PathBuf;

use tasker_core::context::ContextError;
use tasker_core::template::TemplateError;
use tasker_store::StoreError;
use tasker_transport::TransportError;

/// Everything the engine's public API can fail with. Each variant names its cause in its message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No loaded template matches the request.
    #[error("unknown task template {namespace}/{name}{}", version_suffix(.version))]
    UnknownTemplate {
        /// The namespace asked for.
        namespace: String,
        /// The name asked for.
        name: String,
        /// The version asked for (`None`: the latest).
        version: Option<String>,
    },
    /// The task's context does not satisfy the template's `context_schema`; every violation is
    /// listed (with its JSON pointer) in `error`.
    #[error("invalid context for task template {namespace}/{name} {version}: {error}")]
    InvalidContext {
        /// The template's namespace.
        namespace: String,
        /// The template's name.
        name: String,
        /// The template's version.
        version: String,
        /// Every violation found.
        error: ContextError,
    },
    /// A template could not be loaded.
    #[error("template {}: {source}", .path.as_ref().map_or_else(|| "(string)".to_owned(), |p| p.display().to_string()))]
    Template {
        /// The file it came from, if any.
        path: Option<PathBuf>,
        /// What is wrong with it.
        source: TemplateError,
    },
    /// Two templates with the same namespace, name and version were loaded.
    #[error("template {namespace}/{name} {version} is defined twice{}", .path.as_ref().map_or_else(String::new, |p| format!(" (again in {})", p.display())))]
    DuplicateTemplate {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Version.
        version: String,
        /// The file defining it the second time, if any.
        path: Option<PathBuf>,
    },
    /// A template directory or file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The task does not exist.
    #[error("task {task_id} not found")]
    TaskNotFound {
        /// The task asked for.
        task_id: i64,
    },
    /// The [`EngineOptions`](crate::EngineOptions) break a rule.
    #[error("invalid engine options: {0}")]
    InvalidOptions(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ZeroMQ endpoint could not be bound.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The engine has been shut down (or its loop stopped); the request was not carried out.
    #[error("the engine has stopped")]
    Stopped,
}

fn version_suffix(version: &Option<String>) -> String {
    match version {
        Some(v) => format!(" version {v}"),
        None => " (any version)".to_owned(),
    }
}

/// Result of the engine's public operations.
pub type EngineResult<T> = Result<T, EngineError>;
