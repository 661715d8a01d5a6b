//! [`EngineEvent`]: what the engine committed, as it happens, for whoever subscribes
//! ([`EngineHandle::subscribe`](crate::EngineHandle::subscribe)) — tests waiting on progress
//! instead of polling, live views.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tasker_core::state::{StepState, TaskState};

/// Something the engine committed. Published after the commit, in commit order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EngineEvent {
    /// A step changed state: dispatched (`in_progress`), completed, failed (with the time its
    /// retry may start, when it may), requeued.
    StepChanged {
        /// Its task.
        task_id: i64,
        /// The step.
        step_id: i64,
        /// Its name in the template.
        step_name: String,
        /// Its new state.
        state: StepState,
        /// Attempts started so far.
        attempts: u32,
        /// When a failed step may be retried (`None`: not retried automatically, or not failed).
        backoff_until: Option<DateTime<Utc>>,
    },
    /// A task reached a final state.
    TaskFinished {
        /// The task.
        task_id: i64,
        /// Its final state.
        state: TaskState,
    },
}
