//! States of tasks, steps and step-execution batches, and the transition tables that move them.
//!
//! Everything here is pure: a transition is checked by [`TaskState::transition`],
//! [`StepState::transition`] or [`BatchState::transition`], which return what to record (or that
//! nothing changes) and never touch storage.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The state of a task (a workflow instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Created; no step has been dispatched yet. Moved out by the engine when it dispatches the
    /// first ready step, or by an operator cancelling the task.
    Pending,
    /// At least one step has been dispatched and the task is not finished.
    InProgress,
    /// Every step is complete or resolved manually. Terminal.
    Complete,
    /// Some step failed permanently and nothing else can run.
    Error,
    /// Cancelled by an operator. Terminal.
    Cancelled,
    /// Closed by an operator with a manual resolution. Terminal.
    ResolvedManually,
}

/// The state of one workflow step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not yet dispatched.
    Pending,
    /// Dispatched to a worker in a batch; the attempt is running.
    InProgress,
    /// The handler succeeded; results recorded. Terminal.
    Complete,
    /// The last attempt failed (retryable or not).
    Error,
    /// Cancelled by an operator or with its task. Terminal.
    Cancelled,
    /// Resolved by an operator with results of their own. Terminal.
    ResolvedManually,
}

/// The state of a step-execution batch (one dispatch of one or more steps to one worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchState {
    /// Recorded in the store, not yet sent.
    Created,
    /// Sent to a worker.
    Published,
    /// The worker has reported at least one result for it.
    Executing,
    /// Every step in it has a result and the batch completion arrived. Terminal.
    Completed,
    /// The batch could not run (worker lost, send failed). Terminal.
    Failed,
    /// The batch's deadline passed. Terminal.
    TimedOut,
    /// Cancelled with its task or by an operator. Terminal.
    Cancelled,
}

macro_rules! state_names {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every state, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The stable snake_case name used in storage, the API and logs.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownState;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    other => Err(UnknownState {
                        kind: stringify!($ty),
                        value: other.to_owned(),
                    }),
                }
            }
        }
    };
}

state_names!(TaskState {
    Pending => "pending",
    InProgress => "in_progress",
    Complete => "complete",
    Error => "error",
    Cancelled => "cancelled",
    ResolvedManually => "resolved_manually",
});

state_names!(StepState {
    Pending => "pending",
    InProgress => "in_progress",
    Complete => "complete",
    Error => "error",
    Cancelled => "cancelled",
    ResolvedManually => "resolved_manually",
});

state_names!(BatchState {
    Created => "created",
    Published => "published",
    Executing => "executing",
    Completed => "completed",
    Failed => "failed",
    TimedOut => "timed_out",
    Cancelled => "cancelled",
});

/// A state name that is not one of the known states (for example read from a newer database).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}`")]
pub struct UnknownState {
    /// Which state type was being parsed.
    pub kind: &'static str,
    /// The text that did not parse.
    pub value: String,
}
