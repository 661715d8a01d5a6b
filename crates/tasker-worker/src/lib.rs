//! The Rust worker SDK for Tasker: write step handlers, register them by `handler_class`, and
//! run a [`Worker`] that connects to the orchestrator over ZeroMQ, receives batches of ready
//! steps, runs them and reports their results (protocol v1, see `docs/protocol/` and the
//! `tasker-protocol` crate).
//!
//! ```no_run
//! use std::time::Duration;
//! use serde_json::json;
//! use tasker_worker::{HandlerRegistry, StepFailure, Worker, WorkerOptions};
//!
//! # async fn example() -> Result<(), tasker_worker::WorkerError> {
//! let mut registry = HandlerRegistry::new();
//! registry.register_fn("billing.charge", |step| async move {
//!     let Some(amount) = step.task_context.get("amount_cents").and_then(|v| v.as_u64()) else {
//!         return Err(StepFailure::permanent("amount_cents is missing"));
//!     };
//!     if amount > 1_000_000 {
//!         return Err(StepFailure::retryable_after("needs review", Duration::from_secs(60)));
//!     }
//!     Ok(json!({ "charged_cents": amount }))
//! });
//! let mut options = WorkerOptions::new("tcp://127.0.0.1:5555");
//! options.capacity = 20;
//! Worker::new(options)?
//!     .run(registry, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```
//!
//! Modules:
//! - [`handler`]: the [`StepHandler`] trait, the [`StepContext`] a handler receives and the
//!   [`StepFailure`] it returns.
//! - [`registry`]: [`HandlerRegistry`], handlers keyed by `handler_class`.
//! - [`options`]: [`WorkerOptions`] and their defaults.
//! - [`worker`]: [`Worker`] (the session with the orchestrator and the loop that runs steps),
//!   [`WorkerHandle`] and [`WorkerStats`].
//! - [`builtin`]: the `tasker.test` handler and the order-fulfillment example handlers.
//! - [`error`]: [`WorkerError`], the crate's one error type.
//!
//! Handlers run as futures on the worker's own loop, beside its heartbeats: a handler that
//! blocks its thread makes the worker look dead. Use `tokio::task::spawn_blocking` for CPU-bound
//! or blocking work.

pub mod builtin;
pub mod error;
mod execution;
pub mod handler;
pub mod options;
mod outbox;
pub mod registry;
pub mod worker;

pub use error::WorkerError;
pub use handler::{StepContext, StepFailure, StepHandler};
pub use options::WorkerOptions;
pub use registry::HandlerRegistry;
pub use worker::{Worker, WorkerHandle, WorkerStats};
