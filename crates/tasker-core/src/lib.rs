//! Tasker's pure domain. No I/O, no async runtime.
//!
//! - [`state`]: task, step and batch states and their transition tables.
#![doc = ""]

pub mod state;
