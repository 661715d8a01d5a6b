//! Where a task as a whole stands, computed from its steps.
//!
//! [`task_execution_status`] answers the finalizer's question after every applied result: is
//! there work to dispatch, something to wait for, or is the task finished (complete, or stuck on
//! permanent failures or cancellations)? [`ExecutionStatus::task_event`] turns the answer into the
//! [`TaskEvent`] to apply, if any. Pure, like [`crate::readiness`], on which it builds.

use crate::readiness::{
    FailureReason, StepReadiness, StepView, children_of, classify_steps, earliest_backoff,
};
use crate::state::TaskEvent;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// A permanently failed step and the steps it keeps from running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedStep {
    /// Index of the permanently failed step.
    pub step: usize,
    /// Why it will not be retried automatically.
    pub reason: FailureReason,
    /// Its descendants that cannot run because of it, ascending: those classified
    /// [`StepReadiness::Blocked`] and reachable from it without passing through a step that is
    /// complete or resolved manually. A step below two failures is listed under both.
    pub blocks: Vec<usize>,
}

/// The state of one task's execution, derived from its steps. Checked in this order: the first
/// that applies wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// Some steps may be dispatched now (other branches may have failed: they keep running).
    HasReadySteps {
        /// Their indices, ascending (as [`crate::readiness::ready_steps`]).
        ready: Vec<usize>,
    },
    /// Nothing is ready, but an attempt is running: wait for its result.
    Processing,
    /// Nothing is ready or running, but a retry is waiting for its backoff.
    WaitingForBackoff {
        /// When the earliest such retry becomes ready (as [`crate::readiness::next_wakeup`]).
        until: DateTime<Utc>,
    },
    /// Every step is complete or resolved manually. (Also for a task without steps.)
    AllComplete,
    /// Nothing can run any more and some steps are permanently failed: the task is in `error`
    /// until an operator retries, resolves or cancels.
    BlockedByFailures {
        /// Every permanently failed step, ascending, with what it blocks.
        blocked: Vec<BlockedStep>,
    },
    /// Nothing can run any more because steps were cancelled (and none failed permanently): the
    /// task can never complete.
    BlockedByCancellation {
        /// The cancelled steps, ascending.
        cancelled: Vec<usize>,
    },
    /// Nothing can run, nothing failed or was cancelled, yet not every step is done. Only possible
    /// when the steps' graph is invalid (a cycle or an out-of-range parent): a bug in the caller,
    /// reported rather than waited on forever.
    Stalled {
        /// The steps that wait for parents that will never finish, ascending.
        waiting: Vec<usize>,
    },
}

impl ExecutionStatus {
    /// The event the finalizer applies to the task, if any: `complete` for
    /// [`AllComplete`](Self::AllComplete), `fail` for
    /// [`BlockedByFailures`](Self::BlockedByFailures), `cancel` for
    /// [`BlockedByCancellation`](Self::BlockedByCancellation); `None` while there is work to do or
    /// to wait for, and for [`Stalled`](Self::Stalled) (log it instead).
    pub fn task_event(&self) -> Option<TaskEvent> {
        match self {
            ExecutionStatus::AllComplete => Some(TaskEvent::Complete),
            ExecutionStatus::BlockedByFailures { .. } => Some(TaskEvent::Fail),
            ExecutionStatus::BlockedByCancellation { .. } => Some(TaskEvent::Cancel),
            ExecutionStatus::HasReadySteps { .. }
            | ExecutionStatus::Processing
            | ExecutionStatus::WaitingForBackoff { .. }
            | ExecutionStatus::Stalled { .. } => None,
        }
    }

    /// Whether nothing will happen without an operator (or ever): complete or blocked.
    pub fn is_final(&self) -> bool {
        self.task_event().is_some() || matches!(self, ExecutionStatus::Stalled { .. })
    }
}

/// The execution status of one task (see [`ExecutionStatus`] for the order of the checks).
///
/// A task is complete when every step is complete or resolved manually; in error when some step
/// is permanently failed and nothing else can run (no step ready, in flight or waiting for a
/// backoff); otherwise it waits.
pub fn task_execution_status(steps: &[StepView], now: DateTime<Utc>) -> ExecutionStatus {
    let classified = classify_steps(steps, now);
    let indices_where = |wanted: fn(&StepReadiness) -> bool| -> Vec<usize> {
        classified
            .iter()
            .enumerate()
            .filter(|(_, r)| wanted(r))
            .map(|(i, _)| i)
            .collect()
    };

    let ready = indices_where(|r| matches!(r, StepReadiness::Ready));
    if !ready.is_empty() {
        return ExecutionStatus::HasReadySteps { ready };
    }
    if classified.contains(&StepReadiness::InFlight) {
        return ExecutionStatus::Processing;
    }
    if let Some(until) = earliest_backoff(&classified) {
        return ExecutionStatus::WaitingForBackoff { until };
    }
    if classified.iter().all(|r| *r == StepReadiness::Done) {
        return ExecutionStatus::AllComplete;
    }
    let blocked = blocked_by_failures_classified(steps, &classified);
    if !blocked.is_empty() {
        return ExecutionStatus::BlockedByFailures { blocked };
    }
    let cancelled = indices_where(|r| matches!(r, StepReadiness::Cancelled));
    if !cancelled.is_empty() {
        return ExecutionStatus::BlockedByCancellation { cancelled };
    }
    ExecutionStatus::Stalled {
        waiting: indices_where(|r| matches!(r, StepReadiness::WaitingForParents)),
    }
}

/// Every permanently failed step, ascending, with the descendants it blocks. Empty when no step
/// is permanently failed. Useful at any time, not only once the task is stuck (the dashboard shows
/// which branch a failure has stopped while others keep running).
pub fn blocked_by_failures(steps: &[StepView], now: DateTime<Utc>) -> Vec<BlockedStep> {
    blocked_by_failures_classified(steps, &classify_steps(steps, now))
}

fn blocked_by_failures_classified(
    steps: &[StepView],
    classified: &[StepReadiness],
) -> Vec<BlockedStep> {
    let children = children_of(steps);
    classified
        .iter()
        .enumerate()
        .filter_map(|(step, readiness)| match readiness {
            StepReadiness::PermanentlyFailed { reason } => Some(BlockedStep {
                step,
                reason: *reason,
                blocks: blocked_below(step, &children, classified),
            }),
            _ => None,
        })
        .collect()
}

/// Descendants of `failed` classified `Blocked`, walking down through every step that is not done.
fn blocked_below(
    failed: usize,
    children: &[Vec<usize>],
    classified: &[StepReadiness],
) -> Vec<usize> {
    let mut seen = vec![false; classified.len()];
    let mut queue = VecDeque::from([failed]);
    while let Some(current) = queue.pop_front() {
        for &child in &children[current] {
            if !seen[child] && classified[child] != StepReadiness::Done {
                seen[child] = true;
                queue.push_back(child);
            }
        }
    }
    seen.iter()
        .enumerate()
        .filter(|&(i, &s)| s && classified[i] == StepReadiness::Blocked)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StepState;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + seconds, 0).expect("valid timestamp")
    }

    fn step(state: StepState, parents: &[usize]) -> StepView {
        StepView {
            state,
            parents: parents.to_vec(),
            attempts: u32::from(state != StepState::Pending),
            retry_limit: 2,
            retryable: true,
            backoff_until: None,
            in_flight: false,
        }
    }

    fn exhausted(parents: &[usize]) -> StepView {
        StepView {
            attempts: 2,
            ..step(StepState::Error, parents)
        }
    }

    #[test]
    fn ready_steps_come_first() {
        let steps = vec![
            step(StepState::InProgress, &[]),
            step(StepState::Pending, &[]),
        ];
        assert_eq!(
            task_execution_status(&steps, at(0)),
            ExecutionStatus::HasReadySteps { ready: vec![1] }
        );
    }

    #[test]
    fn running_without_ready_is_processing() {
        let steps = vec![
            step(StepState::InProgress, &[]),
            step(StepState::Pending, &[0]),
        ];
        assert_eq!(
            task_execution_status(&steps, at(0)),
            ExecutionStatus::Processing
        );
    }

    #[test]
    fn a_failure_waits_while_another_branch_runs() {
        let steps = vec![exhausted(&[]), step(StepState::InProgress, &[])];
        let status = task_execution_status(&steps, at(0));
        assert_eq!(status, ExecutionStatus::Processing);
        assert_eq!(status.task_event(), None);
    }

    #[test]
    fn backoff_is_reported_with_its_expiry() {
        let mut waiting = step(StepState::Error, &[]);
        waiting.backoff_until = Some(at(30));
        let steps = vec![waiting, exhausted(&[])];
        assert_eq!(
            task_execution_status(&steps, at(0)),
            ExecutionStatus::WaitingForBackoff { until: at(30) }
        );
    }

    #[test]
    fn all_done_is_complete() {
        let steps = vec![
            step(StepState::Complete, &[]),
            step(StepState::ResolvedManually, &[0]),
        ];
        let status = task_execution_status(&steps, at(0));
        assert_eq!(status, ExecutionStatus::AllComplete);
        assert_eq!(status.task_event(), Some(TaskEvent::Complete));
    }

    #[test]
    fn permanent_failure_with_nothing_left_is_an_error() {
        // 0 → 1 → 2 and 0 → 3; 1 failed for good; 3 done.
        let steps = vec![
            step(StepState::Complete, &[]),
            exhausted(&[0]),
            step(StepState::Pending, &[1]),
            step(StepState::Complete, &[0]),
        ];
        let status = task_execution_status(&steps, at(0));
        assert_eq!(
            status,
            ExecutionStatus::BlockedByFailures {
                blocked: vec![BlockedStep {
                    step: 1,
                    reason: FailureReason::RetriesExhausted {
                        attempts: 2,
                        retry_limit: 2
                    },
                    blocks: vec![2],
                }]
            }
        );
        assert_eq!(status.task_event(), Some(TaskEvent::Fail));
        assert!(status.is_final());
    }

    #[test]
    fn completed_steps_shield_what_is_below_them() {
        // 0 failed; 1 (child of 0) resolved by hand; 2 (child of 1) pending and ready.
        let steps = vec![
            exhausted(&[]),
            step(StepState::ResolvedManually, &[0]),
            step(StepState::Pending, &[1]),
        ];
        assert_eq!(
            blocked_by_failures(&steps, at(0)),
            [BlockedStep {
                step: 0,
                reason: FailureReason::RetriesExhausted {
                    attempts: 2,
                    retry_limit: 2
                },
                blocks: vec![],
            }]
        );
        assert_eq!(
            task_execution_status(&steps, at(0)),
            ExecutionStatus::HasReadySteps { ready: vec![2] }
        );
    }

    #[test]
    fn cancellation_with_nothing_left_cancels() {
        let steps = vec![
            step(StepState::Cancelled, &[]),
            step(StepState::Pending, &[0]),
        ];
        let status = task_execution_status(&steps, at(0));
        assert_eq!(
            status,
            ExecutionStatus::BlockedByCancellation { cancelled: vec![0] }
        );
        assert_eq!(status.task_event(), Some(TaskEvent::Cancel));
    }

    #[test]
    fn failures_take_precedence_over_cancellations() {
        let steps = vec![step(StepState::Cancelled, &[]), exhausted(&[])];
        assert!(matches!(
            task_execution_status(&steps, at(0)),
            ExecutionStatus::BlockedByFailures { .. }
        ));
    }

    #[test]
    fn an_invalid_graph_is_reported_as_stalled() {
        let steps = vec![
            step(StepState::Pending, &[1]),
            step(StepState::Pending, &[0]),
        ];
        let status = task_execution_status(&steps, at(0));
        assert_eq!(
            status,
            ExecutionStatus::Stalled {
                waiting: vec![0, 1]
            }
        );
        assert_eq!(status.task_event(), None);
        assert!(status.is_final());
    }

    #[test]
    fn status_serializes_with_a_kind_tag() {
        let json = serde_json::to_value(ExecutionStatus::HasReadySteps { ready: vec![3] })
            .expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"kind": "has_ready_steps", "ready": [3]})
        );
    }
}
