//! Tasker's pure domain. No I/O, no async runtime.
//!
//! - [`backoff`]: the retry backoff policy.
//! - [`dag`]: the dependency graph of a template's steps: parents, children, order, cycles.
//! - [`state`]: task, step and batch states and their transition tables.

pub mod backoff;
pub mod dag;
pub mod state;
