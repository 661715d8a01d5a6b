//! Tasker's pure domain. No I/O, no async runtime.
//!
//! - [`backoff`]: the retry backoff policy.
//! - [`context`]: checking a task's context against its template's JSON Schema.
//! - [`dag`]: the dependency graph of a template's steps: parents, children, order, cycles.
//! - [`readiness`]: which steps of a task may run now, and when the next retry is due.
//! - [`state`]: task, step and batch states and their transition tables.
//! - [`status`]: a task's execution status (ready, processing, waiting, complete, blocked).
//! - [`template`]: task templates in YAML, parsed and validated, with per-environment overrides.

pub mod backoff;
pub mod context;
pub mod dag;
pub mod readiness;
pub mod state;
pub mod status;
pub mod template;
