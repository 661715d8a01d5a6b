//! Tasker's pure domain. No I/O, no async runtime.
//!
//! - [`backoff`]: the retry backoff policy.
//! - [`state`]: task, step and batch states and their transition tables.

pub mod backoff;
pub mod state;
