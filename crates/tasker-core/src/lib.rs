//! Tasker's pure domain. No I/O, no async runtime.
//!
//! - [`backoff`]: the retry backoff policy.
//! - [`context`]: checking a task's context against its template's JSON Schema.
//! - [`dag`]: the dependency graph of a template's steps: parents, children, order, cycles.
//! - [`state`]: task, step and batch states and their transition tables.
//! - [`template`]: task templates in YAML, parsed and validated, with per-environment overrides.

pub mod backoff;
pub mod context;
pub mod dag;
pub mod state;
pub mod template;
