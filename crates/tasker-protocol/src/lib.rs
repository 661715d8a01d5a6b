//! Tasker protocol
