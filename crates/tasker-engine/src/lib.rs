//! The heart of Tasker: the engine that drives tasks from their templates to completion by
//! dispatching ready steps to workers over ZeroMQ and applying their results.
//!
//! # Embedding API
//!
//! ```no_run
//! use std::sync::Arc;
//! use serde_json::json;
//! use tasker_engine::{Engine, EngineOptions, TaskRequest, TemplateRegistry};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let store = tasker_store::connect("sqlite:tasker.db").await?;
//! let templates = TemplateRegistry::from_dir("examples/templates")?;
//! let engine = Engine::start(EngineOptions::default(), store, templates).await?;
//! println!("workers connect to {}", engine.endpoint());
//!
//! let created = engine
//!     .initialize_task(TaskRequest {
//!         namespace: "examples".into(),
//!         name: "diamond".into(),
//!         context: json!({}),
//!         ..TaskRequest::default()
//!     })
//!     .await?;
//! let outcome = engine.handle(created.task_id).await?; // resolves when the task finished
//! println!("task {} is {}", outcome.task_id, outcome.state);
//! let status = engine.task_status(created.task_id).await?; // steps, states, results
//! let stats = engine.stats(); // counters, handoff latency p50/p99
//! # let _ = (status, stats);
//! engine.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! - [`Engine::start`]`(options, store, templates) -> Result<EngineHandle>` (async; call inside
//!   a tokio runtime) binds the ROUTER endpoint of [`EngineOptions::endpoint`] (tcp, ipc or
//!   inproc) and starts the engine loop; [`EngineHandle::endpoint`] is the endpoint actually
//!   bound.
//! - [`EngineHandle`] (cheap to clone): [`initialize_task`](EngineHandle::initialize_task)
//!   ([`TaskRequest`] → [`TaskCreated`]; errors [`EngineError::UnknownTemplate`],
//!   [`EngineError::InvalidContext`], [`EngineError::Store`]; [`initialize_tasks`](EngineHandle::initialize_tasks)
//!   creates many in one transaction; [`TaskRequest::into_new_task`] builds the stored task for
//!   tools that write to the store directly),
//!   [`handle`](EngineHandle::handle) (task id → [`TaskOutcome`] once the task finished),
//!   [`task_status`](EngineHandle::task_status) (→ [`TaskStatus`]),
//!   [`stats`](EngineHandle::stats) (→ [`EngineStats`]), [`shutdown`](EngineHandle::shutdown),
//!   plus [`templates`](EngineHandle::templates) / [`register_template`](EngineHandle::register_template)
//!   and [`store`](EngineHandle::store).
//! - [`TemplateRegistry`]: templates from a directory of YAML files or from strings, looked up
//!   by namespace + name + optional version (latest when absent).
//!
//! # Modules
//!
//! - [`engine`]: [`Engine`] and [`EngineHandle`].
//! - [`options`]: [`EngineOptions`], each field with its default, unit and trade-offs.
//! - [`templates`](mod@templates): [`TemplateRegistry`].
//! - [`task`]: the request and answer types of the API.
//! - [`stats`]: [`EngineStats`] and latency samples.
//! - [`clock`]: [`Ambient`] — the engine's [`Clock`] ([`SystemClock`], [`ManualClock`]), batch
//!   [`IdSource`] and jitter seed, injected so tests drive it deterministically.
//! - [`events`]: [`EngineEvent`], what the engine committed, for subscribers.
//! - [`error`]: [`EngineError`], the crate's one error type.
//! - `core`: the engine core — every piece of state and every decision, no I/O: event handlers
//!   that accumulate actions (send, commit a group, claim or load tasks). One job per file:
//!   `intake` (what a result is), `commit` (one group's transaction, the children's dispatch
//!   included), `apply` (the outcome applied, children sent, results acknowledged), `dispatch`,
//!   `tasks`, `workers`, and `maintenance` (the periodic services).
//! - `sessions`: frames from workers — decoding, rejected frames, hello/welcome, heartbeats,
//!   goodbye, re-hello reconciliation of `in_flight`.
//! - `dispatcher`: pure batch planning over ready steps and workers' credit.
//! - `finalizer`: pure decision whether a task is complete, failed (naming the steps) or waits.
//! - `runtime`: the in-memory model (tasks with their DAGs, batches, worker sessions).
//! - `driver`: the I/O shell — the one tokio task that owns the core, receives frames, commands,
//!   store completions and timer ticks, and executes the core's actions.
//!
//! # Design
//!
//! One engine loop (a tokio task) owns all state, so every change is sequential. Store writes
//! (batch records, group commits, claims) run as spawned futures whose completion is just another
//! event: while a group commit is in flight the loop keeps receiving, and the results that arrive
//! meanwhile form the next group (group commit without a timer). Dispatch is recorded the same
//! way: one `batches_record` in flight, and the batches planned meanwhile form the next one. Readiness comes from each
//! active task's in-memory DAG: a committed result makes its children ready at once, and ready
//! steps of tasks already started (children, retries) are dispatched before the first steps of
//! tasks not yet started, first-in first-out within each (ADR 0004). Time-based
//! work (backoff expiry, step deadlines, worker liveness, heartbeats) sleeps until the earliest
//! deadline; a slow safety-net poll ([`EngineOptions::poll_interval`]) claims tasks created by
//! other processes. Tasks are claimed with leases under [`EngineOptions::orchestrator_id`], and
//! every write is conditional (state, in-flight batch, claim), so a stale decision is refused by
//! the store instead of applied; the engine then reloads the task.
pub mod clock;
mod core;
#[cfg(test)]
mod core_tests;
mod dispatcher;
mod driver;
pub mod engine;
pub mod error;
pub mod events;
mod finalizer;
pub mod options;
mod runtime;
mod sessions;
pub mod stats;
pub mod task;
pub mod templates;

pub use clock::{Ambient, Clock, IdSource, ManualClock, RandomIds, SequentialIds, SystemClock};
pub use engine::{Engine, EngineHandle};
pub use error::{EngineError, EngineResult};
pub use events::EngineEvent;
pub use options::EngineOptions;
pub use stats::{EngineStats, LatencySamples};
pub use task::{FailedStep, TaskCreated, TaskOutcome, TaskRequest, TaskStatus};
pub use templates::TemplateRegistry;
