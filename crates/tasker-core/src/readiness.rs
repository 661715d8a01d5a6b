//! Which steps of one task may run now, and when the next one will be allowed to.
//!
//! Pure functions over a slice of [`StepView`]s (one task's DAG, parents given as indices into the
//! same slice) and the current time. The engine keeps these views in memory for every active task,
//! updates them as results arrive, and asks:
//!
//! - [`ready_steps`]: what to dispatch now;
//! - [`next_wakeup`]: when to look again if a retry is waiting for its backoff (set a timer, do
//!   not poll);
//! - [`classify_steps`]: the same decision for every step, with the reason, for the dashboard and
//!   for [`crate::status::task_execution_status`].
//!
//! # The rule (DESIGN §5)
//!
//! A step is **ready** when all of these hold:
//!
//! 1. it is `pending`, or it is `error` with a retry allowed ([`StepView::retry_allowed`]:
//!    retryable and `attempts < retry_limit`) and its backoff has expired (`backoff_until` unset
//!    or `<= now`);
//! 2. every parent is `complete` or `resolved_manually`;
//! 3. it is not in flight (`in_progress`, or [`StepView::in_flight`]).
//!
//! A `pending` step is ready regardless of `retryable` and `attempts`: the first attempt is always
//! allowed, and so is the attempt an operator grants with a manual retry (`error → pending`).
//!
//! # Attempts and limits
//!
//! `attempts` counts attempts **started**: dispatches that were published to a worker (a batch
//! requeued before it was sent does not count). `retry_limit` is the **maximum total number of
//! attempts**, the first included (as in the original Tasker). So with `retry_limit: 3` and
//! `retryable: true` a step runs at most 3 times on its own; with `retryable: false` it runs once.
//! A `retry_limit` of 0 behaves like 1. An operator's manual retry grants one attempt beyond the
//! limit each time.
//!
//! A step in `error` whose retry is not allowed is **permanently failed** ([`FailureReason`]):
//! nothing but an operator moves it, and it blocks exactly its descendants.

use crate::state::StepState;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// What readiness needs to know about one step of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepView {
    /// The step's current state.
    pub state: StepState,
    /// Indices (into the same slice) of the steps this one depends on. Every index must be in
    /// range and the graph acyclic (the template loader guarantees both); an out-of-range parent
    /// is treated as never satisfied, so the step never becomes ready.
    pub parents: Vec<usize>,
    /// Attempts started so far: dispatches published to a worker. 0 for a step that never ran.
    pub attempts: u32,
    /// Maximum total attempts, the first included (0 behaves like 1).
    pub retry_limit: u32,
    /// Whether a failed attempt may be retried automatically. The first attempt runs either way.
    pub retryable: bool,
    /// A failed step is not retried before this instant (the failure time plus the backoff delay,
    /// see [`crate::backoff::retry_at`]). Only consulted for steps in `error`.
    pub backoff_until: Option<DateTime<Utc>>,
    /// The engine has chosen or sent this step and its state change is not visible yet. A step in
    /// `in_progress` counts as in flight whatever this says.
    pub in_flight: bool,
}

impl StepView {
    /// The most attempts the step gets without an operator: `max(retry_limit, 1)` when retryable,
    /// 1 when not.
    pub fn max_attempts(&self) -> u32 {
        if self.retryable {
            self.retry_limit.max(1)
        } else {
            1
        }
    }

    /// Whether a failed attempt may be retried automatically: retryable and
    /// `attempts < retry_limit`. Says nothing about backoff or parents.
    pub fn retry_allowed(&self) -> bool {
        self.retryable && self.attempts < self.retry_limit
    }

    /// Why the step is permanently failed, or `None` when it is not: only a step in `error`,
    /// without an allowed retry and not in flight, is. `NonRetryable` wins when both reasons apply.
    pub fn permanent_failure(&self) -> Option<FailureReason> {
        if self.state != StepState::Error || self.retry_allowed() || self.in_flight {
            None
        } else if !self.retryable {
            Some(FailureReason::NonRetryable)
        } else {
            Some(FailureReason::RetriesExhausted {
                attempts: self.attempts,
                retry_limit: self.retry_limit,
            })
        }
    }

    /// Whether an attempt is running or about to: `in_progress`, or flagged [`Self::in_flight`].
    pub fn is_in_flight(&self) -> bool {
        self.in_flight || self.state == StepState::InProgress
    }
}

/// Why a step in `error` will not be retried automatically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FailureReason {
    /// The step (or its last failure) is not retryable.
    NonRetryable,
    /// Every allowed attempt has been used.
    RetriesExhausted {
        /// Attempts started.
        attempts: u32,
        /// The step's limit on total attempts.
        retry_limit: u32,
    },
}

/// Where one step stands, as decided by [`classify_steps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepReadiness {
    /// `complete` or `resolved_manually`: its children may rely on it.
    Done,
    /// `cancelled`: it will not run, and neither will its descendants.
    Cancelled,
    /// An attempt is running (or being sent).
    InFlight,
    /// May be dispatched now.
    Ready,
    /// A retry is allowed and the parents are done, but the backoff has not expired.
    WaitingForBackoff {
        /// When the retry becomes ready.
        until: DateTime<Utc>,
    },
    /// Some parent is not done yet but may still finish.
    WaitingForParents,
    /// In `error` with no retry allowed: only an operator moves it.
    PermanentlyFailed {
        /// Why no retry is allowed.
        reason: FailureReason,
    },
    /// Would run, but an ancestor is permanently failed or cancelled, so it cannot until an
    /// operator intervenes.
    Blocked,
}

impl StepReadiness {
    /// Whether this step can never finish without an operator, and so blocks its children:
    /// permanently failed, cancelled, or itself blocked.
    pub fn is_dead_end(&self) -> bool {
        matches!(
            self,
            StepReadiness::PermanentlyFailed { .. }
                | StepReadiness::Cancelled
                | StepReadiness::Blocked
        )
    }
}

/// Classifies every step (same order as `steps`). Runs in O(steps + edges).
///
/// Steps on a cycle, or downstream of one, are reported `WaitingForParents` (they can never run;
/// the template loader rejects cycles, so this only happens with a caller bug).
pub fn classify_steps(steps: &[StepView], now: DateTime<Utc>) -> Vec<StepReadiness> {
    let order = topological_order(steps);
    let mut result: Vec<Option<StepReadiness>> = vec![None; steps.len()];
    for index in order {
        let step = &steps[index];
        let readiness = if step.state.satisfies_dependents() {
            StepReadiness::Done
        } else if step.state == StepState::Cancelled {
            StepReadiness::Cancelled
        } else if step.is_in_flight() {
            StepReadiness::InFlight
        } else if let Some(reason) = step.permanent_failure() {
            StepReadiness::PermanentlyFailed { reason }
        } else {
            // Pending, or Error with a retry allowed: the parents decide.
            let mut all_done = true;
            let mut any_dead_end = false;
            for &parent in &step.parents {
                match result.get(parent).copied().flatten() {
                    Some(StepReadiness::Done) => {}
                    Some(other) => {
                        all_done = false;
                        any_dead_end |= other.is_dead_end();
                    }
                    None => all_done = false,
                }
            }
            if any_dead_end {
                StepReadiness::Blocked
            } else if !all_done {
                StepReadiness::WaitingForParents
            } else {
                match (step.state, step.backoff_until) {
                    (StepState::Error, Some(until)) if until > now => {
                        StepReadiness::WaitingForBackoff { until }
                    }
                    _ => StepReadiness::Ready,
                }
            }
        };
        result[index] = Some(readiness);
    }
    result
        .into_iter()
        .map(|r| r.unwrap_or(StepReadiness::WaitingForParents))
        .collect()
}

/// Indices of the steps that may be dispatched now, ascending.
pub fn ready_steps(steps: &[StepView], now: DateTime<Utc>) -> Vec<usize> {
    classify_steps(steps, now)
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, StepReadiness::Ready))
        .map(|(i, _)| i)
        .collect()
}

/// The earliest instant after `now` at which a step waiting for its backoff becomes ready (its
/// parents done, nothing else in its way), or `None` when no step is waiting for a backoff.
/// The engine sets a timer for it instead of polling.
pub fn next_wakeup(steps: &[StepView], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    earliest_backoff(&classify_steps(steps, now))
}

/// The earliest `WaitingForBackoff` instant among already classified steps.
pub(crate) fn earliest_backoff(classified: &[StepReadiness]) -> Option<DateTime<Utc>> {
    classified
        .iter()
        .filter_map(|r| match r {
            StepReadiness::WaitingForBackoff { until } => Some(*until),
            _ => None,
        })
        .min()
}

/// Every step reachable from `step` by following children (not including `step`), ascending.
/// Out-of-range parents are ignored; an out-of-range `step` has no descendants.
pub fn descendants(steps: &[StepView], step: usize) -> Vec<usize> {
    let children = children_of(steps);
    let mut seen = vec![false; steps.len()];
    let mut queue = VecDeque::from([step]);
    while let Some(current) = queue.pop_front() {
        for &child in children.get(current).map(Vec::as_slice).unwrap_or(&[]) {
            if !seen[child] {
                seen[child] = true;
                queue.push_back(child);
            }
        }
    }
    seen.iter()
        .enumerate()
        .filter(|&(i, &s)| s && i != step)
        .map(|(i, _)| i)
        .collect()
}

/// For every step, the indices of its children (valid parent indices only, duplicates removed).
pub(crate) fn children_of(steps: &[StepView]) -> Vec<Vec<usize>> {
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    for (index, step) in steps.iter().enumerate() {
        for &parent in &step.parents {
            if parent < steps.len() && !children[parent].contains(&index) {
                children[parent].push(index);
            }
        }
    }
    children
}

/// Kahn's algorithm over the valid parent edges; steps on or below a cycle are left out.
fn topological_order(steps: &[StepView]) -> Vec<usize> {
    let children = children_of(steps);
    let mut missing_parents: Vec<usize> = vec![0; steps.len()];
    for kids in &children {
        for &child in kids {
            missing_parents[child] += 1;
        }
    }
    let mut queue: VecDeque<usize> = (0..steps.len())
        .filter(|&i| missing_parents[i] == 0)
        .collect();
    let mut order = Vec::with_capacity(steps.len());
    while let Some(current) = queue.pop_front() {
        order.push(current);
        for &child in &children[current] {
            missing_parents[child] -= 1;
            if missing_parents[child] == 0 {
                queue.push_back(child);
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + seconds, 0).expect("valid timestamp")
    }

    fn step(state: StepState, parents: &[usize]) -> StepView {
        StepView {
            state,
            parents: parents.to_vec(),
            attempts: 0,
            retry_limit: 3,
            retryable: true,
            backoff_until: None,
            in_flight: false,
        }
    }

    fn failed(attempts: u32, retry_limit: u32, retryable: bool, parents: &[usize]) -> StepView {
        StepView {
            attempts,
            retry_limit,
            retryable,
            ..step(StepState::Error, parents)
        }
    }

    #[test]
    fn roots_are_ready_children_wait() {
        let steps = vec![
            step(StepState::Pending, &[]),
            step(StepState::Pending, &[0]),
        ];
        assert_eq!(ready_steps(&steps, at(0)), [0]);
        assert_eq!(
            classify_steps(&steps, at(0))[1],
            StepReadiness::WaitingForParents
        );
    }

    #[test]
    fn first_attempt_runs_even_when_not_retryable() {
        let mut only = step(StepState::Pending, &[]);
        only.retryable = false;
        only.retry_limit = 0;
        assert_eq!(ready_steps(&[only], at(0)), [0]);
    }

    #[test]
    fn resolved_manually_satisfies_children() {
        let steps = vec![
            step(StepState::ResolvedManually, &[]),
            step(StepState::Complete, &[]),
            step(StepState::Pending, &[0, 1]),
        ];
        assert_eq!(ready_steps(&steps, at(0)), [2]);
    }

    #[test]
    fn in_flight_steps_are_not_ready() {
        let mut flagged = step(StepState::Pending, &[]);
        flagged.in_flight = true;
        let steps = vec![flagged, step(StepState::InProgress, &[])];
        assert!(ready_steps(&steps, at(0)).is_empty());
        assert_eq!(
            classify_steps(&steps, at(0)),
            [StepReadiness::InFlight, StepReadiness::InFlight]
        );
    }

    #[test]
    fn retry_waits_for_backoff_then_becomes_ready() {
        let mut retry = failed(1, 3, true, &[]);
        retry.backoff_until = Some(at(10));
        let steps = vec![retry];
        assert!(ready_steps(&steps, at(9)).is_empty());
        assert_eq!(next_wakeup(&steps, at(9)), Some(at(10)));
        assert_eq!(ready_steps(&steps, at(10)), [0]);
        assert_eq!(next_wakeup(&steps, at(10)), None);
    }

    #[test]
    fn retry_limit_counts_total_attempts() {
        // retry_limit 3: attempts 1 and 2 may be retried, attempt 3 was the last.
        for attempts in 1..3 {
            assert_eq!(ready_steps(&[failed(attempts, 3, true, &[])], at(0)), [0]);
        }
        let exhausted = failed(3, 3, true, &[]);
        assert_eq!(exhausted.max_attempts(), 3);
        assert!(ready_steps(std::slice::from_ref(&exhausted), at(0)).is_empty());
        assert_eq!(
            exhausted.permanent_failure(),
            Some(FailureReason::RetriesExhausted {
                attempts: 3,
                retry_limit: 3
            })
        );
    }

    #[test]
    fn non_retryable_failure_is_permanent_at_once() {
        let once = failed(1, 5, false, &[]);
        assert_eq!(once.max_attempts(), 1);
        assert_eq!(
            classify_steps(&[once], at(0)),
            [StepReadiness::PermanentlyFailed {
                reason: FailureReason::NonRetryable
            }]
        );
    }

    #[test]
    fn operator_retry_grants_an_attempt_beyond_the_limit() {
        // After `retry` (error → pending) the attempts are kept, yet the step is ready.
        let mut reset = failed(3, 3, true, &[]);
        reset.state = StepState::Pending;
        assert_eq!(ready_steps(&[reset], at(0)), [0]);
    }

    #[test]
    fn failures_and_cancellations_block_descendants_only() {
        // 0 failed → 1 → 2; 3 cancelled → 4; 5 independent.
        let steps = vec![
            failed(1, 1, true, &[]),
            step(StepState::Pending, &[0]),
            step(StepState::Pending, &[1]),
            step(StepState::Cancelled, &[]),
            step(StepState::Pending, &[3]),
            step(StepState::Pending, &[]),
        ];
        let classified = classify_steps(&steps, at(0));
        assert_eq!(classified[1], StepReadiness::Blocked);
        assert_eq!(classified[2], StepReadiness::Blocked);
        assert_eq!(classified[4], StepReadiness::Blocked);
        assert_eq!(ready_steps(&steps, at(0)), [5]);
        assert_eq!(descendants(&steps, 0), [1, 2]);
        assert_eq!(descendants(&steps, 5), Vec::<usize>::new());
    }

    #[test]
    fn next_wakeup_ignores_backoffs_behind_unfinished_parents() {
        let mut behind = failed(1, 3, true, &[1]);
        behind.backoff_until = Some(at(5));
        let mut free = failed(1, 3, true, &[]);
        free.backoff_until = Some(at(20));
        let steps = vec![behind, free];
        assert_eq!(next_wakeup(&steps, at(0)), Some(at(20)));
        assert_eq!(
            next_wakeup(&steps, at(0) + TimeDelta::seconds(30)),
            None,
            "expired backoffs are ready, not waiting"
        );
    }

    #[test]
    fn cycles_and_bad_indices_never_become_ready() {
        let steps = vec![
            step(StepState::Pending, &[1]),
            step(StepState::Pending, &[0]),
            step(StepState::Pending, &[42]),
        ];
        assert!(ready_steps(&steps, at(0)).is_empty());
        assert!(
            classify_steps(&steps, at(0))
                .iter()
                .all(|r| *r == StepReadiness::WaitingForParents)
        );
    }
}
