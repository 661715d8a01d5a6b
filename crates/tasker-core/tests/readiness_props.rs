//! Property tests of readiness, task status and backoff over random DAGs.
//!
//! Random DAGs only have edges from a lower to a higher index, so they are acyclic by
//! construction. "Arbitrary" step sets mix every state, attempt count, limit and backoff freely
//! (even combinations the engine would never produce); "consistent" ones respect what the engine
//! guarantees: a step only left `pending` once its parents were done.

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::time::Duration;
use tasker_core::backoff::{BackoffPolicy, next_retry_delay, retry_at};
use tasker_core::readiness::{
    StepReadiness, StepView, classify_steps, descendants, next_wakeup, ready_steps,
};
use tasker_core::state::{StepEvent, StepState, Transition};
use tasker_core::status::{ExecutionStatus, blocked_by_failures, task_execution_status};

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_700_000_000, 0).expect("valid timestamp")
}

#[derive(Debug, Clone)]
struct StepSpec {
    state: StepState,
    attempts: u32,
    retry_limit: u32,
    retryable: bool,
    backoff_offset_s: Option<i64>,
    in_flight: bool,
    parent_picks: Vec<usize>,
}

fn arb_spec() -> impl Strategy<Value = StepSpec> {
    (
        prop::sample::select(StepState::ALL.to_vec()),
        0u32..5,
        0u32..5,
        any::<bool>(),
        prop::option::of(-30i64..30),
        prop::bool::weighted(0.1),
        prop::collection::vec(any::<usize>(), 0..4),
    )
        .prop_map(
            |(
                state,
                attempts,
                retry_limit,
                retryable,
                backoff_offset_s,
                in_flight,
                parent_picks,
            )| {
                StepSpec {
                    state,
                    attempts,
                    retry_limit,
                    retryable,
                    backoff_offset_s,
                    in_flight,
                    parent_picks,
                }
            },
        )
}

/// Parents of step `i` are drawn from `0..i`: acyclic by construction.
fn build(specs: Vec<StepSpec>) -> Vec<StepView> {
    specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            let parents: BTreeSet<usize> = if i == 0 {
                BTreeSet::new()
            } else {
                spec.parent_picks.iter().map(|p| p % i).collect()
            };
            StepView {
                state: spec.state,
                parents: parents.into_iter().collect(),
                attempts: spec.attempts,
                retry_limit: spec.retry_limit,
                retryable: spec.retryable,
                backoff_until: spec.backoff_offset_s.map(|s| now() + TimeDelta::seconds(s)),
                in_flight: spec.in_flight,
            }
        })
        .collect()
}

/// Any mix of states on a random DAG.
fn arbitrary_steps() -> impl Strategy<Value = Vec<StepView>> {
    prop::collection::vec(arb_spec(), 1..16).prop_map(build)
}

/// States the engine can produce: a step whose parents are not all done never left `pending`
/// (unless cancelled). Attempts agree with the state (a never-run step has none).
fn consistent_steps() -> impl Strategy<Value = Vec<StepView>> {
    arbitrary_steps().prop_map(|mut steps| {
        for i in 0..steps.len() {
            let parents_done = steps[i]
                .parents
                .iter()
                .all(|&p| steps[p].state.satisfies_dependents());
            let step = &mut steps[i];
            if !parents_done && step.state != StepState::Cancelled {
                step.state = StepState::Pending;
                step.in_flight = false;
            }
            if step.state == StepState::Pending && !parents_done {
                step.attempts = 0;
            }
            if matches!(step.state, StepState::InProgress | StepState::Error) {
                step.attempts = step.attempts.max(1);
            }
        }
        steps
    })
}

fn all_steps(n: usize) -> impl Iterator<Item = usize> {
    0..n
}

/// The readiness rule of DESIGN §5, written out independently of the implementation.
fn rule_says_ready(steps: &[StepView], i: usize, at: DateTime<Utc>) -> bool {
    let s = &steps[i];
    let own = match s.state {
        StepState::Pending => true,
        StepState::Error => {
            s.retryable && s.attempts < s.retry_limit && s.backoff_until.is_none_or(|t| t <= at)
        }
        _ => false,
    };
    let parents = s.parents.iter().all(|&p| {
        matches!(
            steps[p].state,
            StepState::Complete | StepState::ResolvedManually
        )
    });
    own && parents && !s.in_flight
}

/// In `error`, no retry allowed, and not being dispatched again.
fn is_permanently_failed(step: &StepView) -> bool {
    step.state == StepState::Error
        && !(step.retryable && step.attempts < step.retry_limit)
        && !step.in_flight
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Ready exactly when the rule says so; in particular never before every parent is complete
    /// or resolved manually.
    #[test]
    fn ready_means_parents_done_and_rule_holds(steps in arbitrary_steps()) {
        let ready = ready_steps(&steps, now());
        for &i in &ready {
            for &p in &steps[i].parents {
                prop_assert!(
                    steps[p].state.satisfies_dependents(),
                    "step {} ready while parent {} is {}", i, p, steps[p].state
                );
            }
        }
        let expected: Vec<usize> =
            all_steps(steps.len()).filter(|&i| rule_says_ready(&steps, i, now())).collect();
        prop_assert_eq!(ready, expected);
    }

    /// The first attempt is always allowed: a pending step with done parents is ready, whatever
    /// `retryable` and `retry_limit` say.
    #[test]
    fn first_attempt_is_always_allowed(mut steps in arbitrary_steps()) {
        for step in &mut steps {
            step.state = StepState::Complete;
        }
        let last = steps.len() - 1;
        steps[last].state = StepState::Pending;
        steps[last].attempts = 0;
        steps[last].in_flight = false;
        prop_assert_eq!(ready_steps(&steps, now()), vec![last]);
    }

    /// A task whose steps are all complete (or resolved) is complete, and only then.
    #[test]
    fn all_done_is_complete(mut steps in arbitrary_steps(), resolved in prop::collection::vec(any::<bool>(), 16)) {
        let status = task_execution_status(&steps, now());
        let all_done = steps.iter().all(|s| s.state.satisfies_dependents());
        prop_assert_eq!(status == ExecutionStatus::AllComplete, all_done);

        for (step, by_hand) in steps.iter_mut().zip(resolved) {
            step.state = if by_hand { StepState::ResolvedManually } else { StepState::Complete };
        }
        prop_assert_eq!(task_execution_status(&steps, now()), ExecutionStatus::AllComplete);
        prop_assert!(ready_steps(&steps, now()).is_empty());
        prop_assert_eq!(next_wakeup(&steps, now()), None);
    }

    /// A permanently failed step blocks exactly its descendants: none of them is ready, running
    /// or waiting, and the report lists every one of them that is not cancelled.
    #[test]
    fn a_permanent_failure_blocks_exactly_its_descendants(steps in consistent_steps()) {
        let classified = classify_steps(&steps, now());
        let report = blocked_by_failures(&steps, now());
        let failed: Vec<usize> =
            all_steps(steps.len()).filter(|&i| is_permanently_failed(&steps[i])).collect();
        prop_assert_eq!(report.iter().map(|b| b.step).collect::<Vec<_>>(), failed.clone());
        for blocked in &report {
            let below = descendants(&steps, blocked.step);
            for &d in &below {
                prop_assert!(
                    matches!(classified[d], StepReadiness::Blocked | StepReadiness::Cancelled),
                    "descendant {} of failed {} is {:?}", d, blocked.step, classified[d]
                );
            }
            let expected: Vec<usize> =
                below.into_iter().filter(|&d| steps[d].state != StepState::Cancelled).collect();
            prop_assert_eq!(&blocked.blocks, &expected);
        }
        // Conversely, whatever is blocked sits below a failed or cancelled step.
        for i in all_steps(steps.len()) {
            if classified[i] == StepReadiness::Blocked {
                let below_dead_end = all_steps(steps.len()).any(|a| {
                    (is_permanently_failed(&steps[a]) || steps[a].state == StepState::Cancelled)
                        && descendants(&steps, a).contains(&i)
                });
                prop_assert!(below_dead_end, "step {} blocked for no reason", i);
            }
        }
    }

    /// Steps that are not descendants of a permanent failure are unaffected by it: their
    /// classification is the same when the failed steps and everything below them are removed.
    #[test]
    fn failures_do_not_affect_other_branches(steps in arbitrary_steps()) {
        let n = steps.len();
        let mut removed = vec![false; n];
        for f in all_steps(n).filter(|&i| is_permanently_failed(&steps[i])) {
            removed[f] = true;
            for d in descendants(&steps, f) {
                removed[d] = true;
            }
        }
        let kept: Vec<usize> = all_steps(n).filter(|&i| !removed[i]).collect();
        let mut new_index = vec![usize::MAX; n];
        for (new, &old) in kept.iter().enumerate() {
            new_index[old] = new;
        }
        let pruned: Vec<StepView> = kept
            .iter()
            .map(|&old| {
                let mut step = steps[old].clone();
                // A kept step's parents are kept too: a removed parent would make it a descendant.
                step.parents = step.parents.iter().map(|&p| new_index[p]).collect();
                step
            })
            .collect();
        let full = classify_steps(&steps, now());
        let alone = classify_steps(&pruned, now());
        for (new, &old) in kept.iter().enumerate() {
            prop_assert_eq!(full[old], alone[new], "step {} changed", old);
        }
    }

    /// `next_wakeup` is the earliest backoff among retries whose parents are done, and at that
    /// instant at least one more step is ready.
    #[test]
    fn next_wakeup_is_when_a_retry_becomes_ready(steps in arbitrary_steps()) {
        let wakeup = next_wakeup(&steps, now());
        let expected = all_steps(steps.len())
            .filter(|&i| {
                let s = &steps[i];
                s.state == StepState::Error
                    && s.retryable
                    && s.attempts < s.retry_limit
                    && !s.in_flight
                    && s.parents.iter().all(|&p| steps[p].state.satisfies_dependents())
            })
            .filter_map(|i| steps[i].backoff_until.filter(|&t| t > now()))
            .min();
        prop_assert_eq!(wakeup, expected);
        if let Some(at) = wakeup {
            prop_assert!(ready_steps(&steps, at).len() > ready_steps(&steps, now()).len());
            let status = task_execution_status(&steps, now());
            let still_waiting = matches!(
                status,
                ExecutionStatus::HasReadySteps { .. }
                    | ExecutionStatus::Processing
                    | ExecutionStatus::WaitingForBackoff { .. }
            );
            prop_assert!(still_waiting, "a pending retry yet {:?}", status);
        }
    }

    /// The status agrees with the step classification and with the design's definition of
    /// `error`: some step permanently failed and nothing ready, running or waiting.
    #[test]
    fn status_follows_the_design(steps in arbitrary_steps()) {
        let status = task_execution_status(&steps, now());
        let ready = ready_steps(&steps, now());
        let in_flight = steps.iter().any(|s| s.is_in_flight() && !s.state.is_terminal());
        match &status {
            ExecutionStatus::HasReadySteps { ready: listed } => prop_assert_eq!(listed, &ready),
            ExecutionStatus::Processing => prop_assert!(ready.is_empty() && in_flight),
            ExecutionStatus::WaitingForBackoff { until } => {
                prop_assert!(ready.is_empty() && !in_flight);
                prop_assert_eq!(next_wakeup(&steps, now()), Some(*until));
            }
            ExecutionStatus::BlockedByFailures { blocked } => {
                prop_assert!(ready.is_empty() && !in_flight);
                prop_assert_eq!(next_wakeup(&steps, now()), None);
                prop_assert!(!blocked.is_empty());
                prop_assert!(blocked.iter().all(|b| is_permanently_failed(&steps[b.step])));
            }
            ExecutionStatus::BlockedByCancellation { cancelled } => {
                prop_assert!(ready.is_empty() && !in_flight);
                prop_assert!(!steps.iter().any(is_permanently_failed));
                prop_assert!(!cancelled.is_empty());
            }
            ExecutionStatus::AllComplete => {
                prop_assert!(steps.iter().all(|s| s.state.satisfies_dependents()));
            }
            ExecutionStatus::Stalled { .. } => prop_assert!(false, "acyclic graphs never stall"),
        }
    }

    /// Backoff never exceeds its cap, stays within the jitter band, and without jitter never
    /// shrinks as failures accumulate.
    #[test]
    fn backoff_is_capped_jittered_and_monotone(
        base in 0u64..10_000_000,
        extra in 0u64..100_000_000,
        multiplier in 1.0f64..16.0,
        jitter in 0.0f64..=1.0,
        failures in 0u32..200,
        sample in 0.0f64..1.0,
    ) {
        let policy = BackoffPolicy { base_delay_ms: base, max_delay_ms: base + extra, multiplier, jitter };
        prop_assert_eq!(policy.validate(), Ok(()));
        let cap = Duration::from_millis(policy.max_delay_ms);
        let full = policy.capped_delay(failures);
        let delay = policy.delay(failures, sample);
        prop_assert!(delay <= cap);
        prop_assert!(delay <= full);
        // At least (1 - jitter) of the un-jittered delay (1 µs of float slack).
        prop_assert!(delay + Duration::from_micros(1) >= full.mul_f64(1.0 - jitter));
        prop_assert!(policy.capped_delay(failures) <= policy.capped_delay(failures + 1));
        prop_assert_eq!(policy.delay(failures, 0.0), full);
        if failures >= 1 {
            prop_assert!(full >= Duration::from_millis(base).min(cap));
        }
    }

    /// Even an invalid policy never panics and never exceeds its cap.
    #[test]
    fn backoff_never_panics(
        base in any::<u64>(),
        max in any::<u64>(),
        multiplier in any::<f64>(),
        jitter in any::<f64>(),
        failures in any::<u32>(),
        sample in any::<f64>(),
    ) {
        let policy = BackoffPolicy { base_delay_ms: base, max_delay_ms: max, multiplier, jitter };
        prop_assert!(policy.delay(failures, sample) <= Duration::from_millis(max));
    }

    /// A handler's `retry_after` replaces the computed delay.
    #[test]
    fn retry_after_wins(after_ms in any::<u64>(), failures in 1u32..50, sample in 0.0f64..1.0) {
        let policy = BackoffPolicy::default();
        let after = Duration::from_millis(after_ms);
        prop_assert_eq!(next_retry_delay(&policy, failures, Some(after), sample), after);
        prop_assert!(retry_at(now(), after) >= now());
    }
}

#[derive(Debug, Clone)]
struct Simulated {
    steps: Vec<StepView>,
    /// For each attempt in dispatch order: does it succeed?
    outcomes: Vec<bool>,
    /// For each round: how many in-flight steps finish (at least one).
    finishing: Vec<usize>,
    samples: Vec<f64>,
}

fn simulation() -> impl Strategy<Value = Simulated> {
    (
        prop::collection::vec(
            (
                prop::collection::vec(any::<usize>(), 0..4),
                any::<bool>(),
                0u32..4,
            ),
            1..20,
        ),
        prop::collection::vec(prop::bool::weighted(0.7), 0..200),
        prop::collection::vec(1usize..4, 0..200),
        prop::collection::vec(0.0f64..1.0, 1..20),
    )
        .prop_map(|(shape, outcomes, finishing, samples)| {
            let specs = shape
                .into_iter()
                .map(|(parent_picks, retryable, retry_limit)| StepSpec {
                    state: StepState::Pending,
                    attempts: 0,
                    retry_limit,
                    retryable,
                    backoff_offset_s: None,
                    in_flight: false,
                    parent_picks,
                })
                .collect();
            Simulated {
                steps: build(specs),
                outcomes,
                finishing,
                samples,
            }
        })
}

fn apply(step: &mut StepView, event: StepEvent) {
    let transition = step
        .state
        .transition(event)
        .expect("the engine only applies allowed events");
    assert!(matches!(transition, Transition::Changed { .. }));
    step.state = transition.target();
}

/// Drives a task the way the engine does: dispatch what is ready, finish some running attempts
/// (success or failure, from the generated outcomes; once they run out everything succeeds),
/// sleep to the next wakeup when only backoffs remain. Returns the order of completions.
fn run(sim: &Simulated) -> (Vec<StepView>, ExecutionStatus, Vec<usize>) {
    let mut steps = sim.steps.clone();
    let policy = BackoffPolicy {
        base_delay_ms: 1_000,
        max_delay_ms: 8_000,
        multiplier: 2.0,
        jitter: 0.5,
    };
    let mut clock = now();
    let mut outcomes = sim.outcomes.iter().copied();
    let mut finishing = sim.finishing.iter().copied().cycle();
    let mut samples = sim.samples.iter().copied().cycle();
    let mut running: Vec<usize> = Vec::new();
    let mut completed = Vec::new();
    for _round in 0..10_000 {
        for i in ready_steps(&steps, clock) {
            assert!(
                steps[i]
                    .parents
                    .iter()
                    .all(|&p| steps[p].state == StepState::Complete),
                "dispatched {i} before its parents completed"
            );
            apply(&mut steps[i], StepEvent::Dispatch);
            steps[i].attempts += 1;
            running.push(i);
        }
        let count = finishing.next().unwrap_or(1).min(running.len());
        for i in running.drain(..count).collect::<Vec<_>>() {
            if outcomes.next().unwrap_or(true) {
                apply(&mut steps[i], StepEvent::Succeed);
                completed.push(i);
            } else {
                apply(&mut steps[i], StepEvent::Fail);
                let delay = policy.delay(steps[i].attempts, samples.next().unwrap_or(0.0));
                steps[i].backoff_until = Some(retry_at(clock, delay));
            }
        }
        let status = task_execution_status(&steps, clock);
        match status {
            ExecutionStatus::HasReadySteps { .. } | ExecutionStatus::Processing => {}
            ExecutionStatus::WaitingForBackoff { until } => {
                assert!(until > clock);
                assert_eq!(next_wakeup(&steps, clock), Some(until));
                clock = until;
            }
            other => return (steps, other, completed),
        }
    }
    panic!("the simulation did not finish");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Repeatedly completing the ready steps completes the task, in topological order, each step
    /// run exactly once.
    #[test]
    fn completing_ready_steps_completes_the_task(mut sim in simulation()) {
        sim.outcomes.clear();
        let (steps, status, completed) = run(&sim);
        prop_assert_eq!(status, ExecutionStatus::AllComplete);
        prop_assert_eq!(completed.len(), steps.len());
        let mut position = vec![usize::MAX; steps.len()];
        for (at, &i) in completed.iter().enumerate() {
            position[i] = at;
        }
        for (i, step) in steps.iter().enumerate() {
            prop_assert_eq!(step.attempts, 1);
            for &p in &step.parents {
                prop_assert!(position[p] < position[i], "{} completed before its parent {}", i, p);
            }
        }
    }

    /// With failures, retries and backoff, the task still ends: complete, or blocked by steps that
    /// used every attempt they had; no step ever runs more often than its limit allows.
    #[test]
    fn failures_and_retries_end_in_a_final_status(sim in simulation()) {
        let (steps, status, completed) = run(&sim);
        for step in &steps {
            prop_assert!(step.attempts <= step.max_attempts());
        }
        match status {
            ExecutionStatus::AllComplete => prop_assert_eq!(completed.len(), steps.len()),
            ExecutionStatus::BlockedByFailures { blocked } => {
                for b in &blocked {
                    prop_assert_eq!(steps[b.step].attempts, steps[b.step].max_attempts());
                    for &d in &b.blocks {
                        prop_assert_eq!(steps[d].state, StepState::Pending);
                        prop_assert_eq!(steps[d].attempts, 0);
                    }
                }
                // Everything not below a failure finished.
                let below: BTreeSet<usize> = blocked.iter().flat_map(|b| b.blocks.clone()).collect();
                for (i, step) in steps.iter().enumerate() {
                    if step.state != StepState::Error {
                        prop_assert!(
                            step.state == StepState::Complete || below.contains(&i),
                            "step {} is {} yet not blocked", i, step.state
                        );
                    }
                }
            }
            other => prop_assert!(false, "unexpected end {:?}", other),
        }
    }
}
