//! The finalizer: after results are applied, decides whether a task is finished (complete, failed
//! naming the steps responsible, cancelled) or keeps waiting, from its steps' readiness views.
//! Pure.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tasker_core::readiness::{FailureReason, StepView};
use tasker_core::state::{TaskEvent, TaskState};
use tasker_core::status::{ExecutionStatus, task_execution_status};

use crate::task::{FailedStep, TaskOutcome};

/// What the finalizer needs to know about a step besides its view.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepFacts<'a> {
    pub step_id: i64,
    pub name: &'a str,
    pub last_error: Option<&'a Value>,
}

/// The task transition to apply, with its reason.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Finalization {
    pub event: TaskEvent,
    pub to: TaskState,
    /// Human-readable reason (for `error` and `cancelled`).
    pub reason: Option<String>,
    pub failed_steps: Vec<FailedStep>,
}

impl Finalization {
    /// The transition metadata recorded in the store.
    pub fn metadata(&self) -> Value {
        json!({
            "reason": self.reason,
            "failed_steps": self.failed_steps.iter().map(|s| json!({
                "step_id": s.step_id,
                "name": s.name,
                "reason": s.reason,
                "attempts": s.attempts,
            })).collect::<Vec<_>>(),
        })
    }

    /// The outcome reported to callers waiting on the task.
    pub fn outcome(&self, task_id: i64) -> TaskOutcome {
        TaskOutcome {
            task_id,
            state: self.to,
            reason: self.reason.clone(),
            failed_steps: self.failed_steps.clone(),
        }
    }
}

/// Decides the task's transition, if any, for a task in `state` whose steps look like `views`.
/// `None` while there is work to do or to wait for, and when the task is already where its
/// steps put it.
pub(crate) fn finalize(
    state: TaskState,
    views: &[StepView],
    facts: &[StepFacts<'_>],
    now: DateTime<Utc>,
) -> Option<Finalization> {
    let status = task_execution_status(views, now);
    let event = match status.task_event() {
        Some(event) => event,
        None => {
            if let ExecutionStatus::Stalled { waiting } = &status {
                tracing::error!(
                    ?waiting,
                    "task graph stalled: steps wait for parents that never finish"
                );
            }
            return None;
        }
    };
    let transition = state.transition(event).ok()?;
    if !transition.is_changed() {
        return None;
    }
    let (reason, failed_steps) = explain(&status, views, facts);
    Some(Finalization {
        event,
        to: transition.target(),
        reason,
        failed_steps,
    })
}

/// The reason and failed steps of a finished status.
pub(crate) fn explain(
    status: &ExecutionStatus,
    views: &[StepView],
    facts: &[StepFacts<'_>],
) -> (Option<String>, Vec<FailedStep>) {
    match status {
        ExecutionStatus::BlockedByFailures { blocked } => {
            let failed: Vec<FailedStep> = blocked
                .iter()
                .map(|b| {
                    let fact = facts[b.step];
                    FailedStep {
                        step_id: fact.step_id,
                        name: fact.name.to_owned(),
                        reason: match b.reason {
                            FailureReason::NonRetryable => "non_retryable".to_owned(),
                            FailureReason::RetriesExhausted { .. } => {
                                "retries_exhausted".to_owned()
                            }
                        },
                        attempts: views[b.step].attempts,
                        last_error: fact.last_error.cloned(),
                    }
                })
                .collect();
            let parts: Vec<String> = blocked
                .iter()
                .zip(&failed)
                .map(|(b, f)| {
                    let why = match b.reason {
                        FailureReason::NonRetryable => {
                            "failed with a non-retryable error".to_owned()
                        }
                        FailureReason::RetriesExhausted {
                            attempts,
                            retry_limit,
                        } => format!("failed after {attempts} of {retry_limit} attempts"),
                    };
                    let message = f
                        .last_error
                        .as_ref()
                        .and_then(|e| e.get("message"))
                        .and_then(Value::as_str)
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default();
                    format!("step `{}` (id {}) {why}{message}", f.name, f.step_id)
                })
                .collect();
            (Some(parts.join("; ")), failed)
        }
        ExecutionStatus::BlockedByCancellation { cancelled } => {
            let names: Vec<String> = cancelled
                .iter()
                .map(|&i| format!("`{}`", facts[i].name))
                .collect();
            (
                Some(format!("cancelled steps: {}", names.join(", "))),
                Vec::new(),
            )
        }
        _ => (None, Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasker_core::state::StepState;

    fn view(state: StepState, parents: Vec<usize>, attempts: u32, retryable: bool) -> StepView {
        StepView {
            state,
            parents,
            attempts,
            retry_limit: 3,
            retryable,
            backoff_until: None,
            in_flight: false,
        }
    }

    fn facts<'a>(names: &'a [&'a str], error: &'a Value) -> Vec<StepFacts<'a>> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| StepFacts {
                step_id: i as i64 + 1,
                name,
                last_error: Some(error),
            })
            .collect()
    }

    #[test]
    fn all_complete_completes() {
        let error = json!(null);
        let views = vec![
            view(StepState::Complete, vec![], 1, true),
            view(StepState::Complete, vec![0], 1, true),
        ];
        let done = finalize(
            TaskState::InProgress,
            &views,
            &facts(&["a", "b"], &error),
            Utc::now(),
        )
        .expect("finished");
        assert_eq!(done.to, TaskState::Complete);
        assert_eq!(done.reason, None);
    }

    #[test]
    fn a_permanent_failure_fails_the_task_naming_the_step() {
        let error = json!({"message": "card declined", "retryable": false});
        let views = vec![
            view(StepState::Complete, vec![], 1, true),
            view(StepState::Error, vec![0], 1, false),
            view(StepState::Pending, vec![1], 0, true),
        ];
        let done = finalize(
            TaskState::InProgress,
            &views,
            &facts(&["a", "charge", "ship"], &error),
            Utc::now(),
        )
        .expect("finished");
        assert_eq!(done.to, TaskState::Error);
        let reason = done.reason.expect("reason");
        assert!(reason.contains("`charge`"), "{reason}");
        assert!(reason.contains("card declined"), "{reason}");
        assert_eq!(done.failed_steps.len(), 1);
        assert_eq!(done.failed_steps[0].reason, "non_retryable");
    }

    #[test]
    fn retries_exhausted_is_named() {
        let error = json!({"message": "flaky"});
        let views = vec![view(StepState::Error, vec![], 3, true)];
        let done = finalize(
            TaskState::InProgress,
            &views,
            &facts(&["x"], &error),
            Utc::now(),
        )
        .expect("finished");
        assert_eq!(done.failed_steps[0].reason, "retries_exhausted");
        assert!(done.reason.expect("reason").contains("3 of 3 attempts"));
    }

    #[test]
    fn work_left_means_no_transition() {
        let error = json!(null);
        let mut running = view(StepState::InProgress, vec![], 1, true);
        running.in_flight = true;
        let views = vec![running, view(StepState::Error, vec![], 1, false)];
        assert_eq!(
            finalize(
                TaskState::InProgress,
                &views,
                &facts(&["a", "b"], &error),
                Utc::now()
            ),
            None,
            "a failed branch waits while another still runs"
        );
        let waiting = vec![StepView {
            backoff_until: Some(Utc::now() + chrono::TimeDelta::seconds(60)),
            ..view(StepState::Error, vec![], 1, true)
        }];
        assert_eq!(
            finalize(
                TaskState::InProgress,
                &waiting,
                &facts(&["a"], &error),
                Utc::now()
            ),
            None
        );
    }

    #[test]
    fn an_already_finished_task_is_left_alone() {
        let error = json!(null);
        let views = vec![view(StepState::Complete, vec![], 1, true)];
        assert_eq!(
            finalize(
                TaskState::Complete,
                &views,
                &facts(&["a"], &error),
                Utc::now()
            ),
            None
        );
    }
}
