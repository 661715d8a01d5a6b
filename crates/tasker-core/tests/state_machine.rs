//! The three state machines against a table written out by hand, independently of the match in
//! `state.rs`: every allowed transition, every forbidden one refused, every idempotent repeat
//! accepted without change. Also keeps `docs/state-machine.md` in step with the code.

use std::collections::HashSet;
use std::str::FromStr;
use tasker_core::state::{
    BatchEvent, BatchState, Machine, StateMachine, StepEvent, StepState, TaskEvent, TaskState,
    Transition, TransitionError, allowed_transitions, markdown_table, mermaid_diagram,
};

/// The step edges the design calls for.
fn expected_step_edges() -> Vec<(StepState, StepEvent, StepState)> {
    use StepEvent as E;
    use StepState as S;
    vec![
        (S::Pending, E::Dispatch, S::InProgress),
        (S::Pending, E::Cancel, S::Cancelled),
        (S::Pending, E::ResolveManually, S::ResolvedManually),
        (S::InProgress, E::Succeed, S::Complete),
        (S::InProgress, E::Fail, S::Error),
        (S::InProgress, E::Requeue, S::Pending),
        (S::InProgress, E::Cancel, S::Cancelled),
        (S::InProgress, E::ResolveManually, S::ResolvedManually),
        // A retry: the machine allows it; readiness decides whether it is due.
        (S::Error, E::Dispatch, S::InProgress),
        (S::Error, E::Retry, S::Pending),
        (S::Error, E::Cancel, S::Cancelled),
        (S::Error, E::ResolveManually, S::ResolvedManually),
    ]
}

fn expected_task_edges() -> Vec<(TaskState, TaskEvent, TaskState)> {
    use TaskEvent as E;
    use TaskState as S;
    vec![
        (S::Pending, E::Start, S::InProgress),
        (S::Pending, E::Complete, S::Complete),
        (S::Pending, E::Cancel, S::Cancelled),
        (S::Pending, E::ResolveManually, S::ResolvedManually),
        (S::InProgress, E::Complete, S::Complete),
        (S::InProgress, E::Fail, S::Error),
        (S::InProgress, E::Cancel, S::Cancelled),
        (S::InProgress, E::ResolveManually, S::ResolvedManually),
        (S::Error, E::Reopen, S::InProgress),
        (S::Error, E::Cancel, S::Cancelled),
        (S::Error, E::ResolveManually, S::ResolvedManually),
    ]
}

fn expected_batch_edges() -> Vec<(BatchState, BatchEvent, BatchState)> {
    use BatchEvent as E;
    use BatchState as S;
    vec![
        (S::Created, E::Publish, S::Published),
        (S::Created, E::Fail, S::Failed),
        (S::Created, E::Cancel, S::Cancelled),
        (S::Published, E::ReceiveResult, S::Executing),
        (S::Published, E::Complete, S::Completed),
        (S::Published, E::Fail, S::Failed),
        (S::Published, E::TimeOut, S::TimedOut),
        (S::Published, E::Cancel, S::Cancelled),
        (S::Executing, E::Complete, S::Completed),
        (S::Executing, E::Fail, S::Failed),
        (S::Executing, E::TimeOut, S::TimedOut),
        (S::Executing, E::Cancel, S::Cancelled),
    ]
}

/// The idempotent repeats: each event applied to the state it produces.
fn expected_repeats<S: StateMachine>(target: impl Fn(S::Event) -> S) -> HashSet<(S, S::Event)> {
    S::EVENTS.iter().map(|&e| (target(e), e)).collect()
}

/// Checks every (state, event) pair of machine `S` against the expected edges and repeats.
fn check_machine<S: StateMachine>(
    expected: &[(S, S::Event, S)],
    repeats: &HashSet<(S, S::Event)>,
    name: &str,
) -> (usize, usize, usize) {
    let (mut allowed, mut unchanged, mut refused) = (0, 0, 0);
    for &state in S::STATES {
        for &event in S::EVENTS {
            let result = state.transition(event);
            if let Some(&(_, _, to)) = expected.iter().find(|(f, e, _)| *f == state && *e == event)
            {
                assert_eq!(
                    result,
                    Ok(Transition::Changed { from: state, to }),
                    "{name} {state} --{event}-->"
                );
                allowed += 1;
            } else if repeats.contains(&(state, event)) {
                assert_eq!(
                    result,
                    Ok(Transition::Unchanged(state)),
                    "{name} {state} --{event}--> should be an idempotent repeat"
                );
                unchanged += 1;
            } else {
                let error = result.expect_err("this transition must be refused");
                assert_eq!(error.machine, S::MACHINE);
                assert_eq!(
                    error.to_string(),
                    format!("{name} cannot `{event}` from `{state}`")
                );
                refused += 1;
            }
        }
    }
    (allowed, unchanged, refused)
}

#[test]
fn step_machine_allows_exactly_the_designed_edges() {
    let expected = expected_step_edges();
    let repeats = expected_repeats::<StepState>(StepEvent::target);
    let (allowed, unchanged, refused) = check_machine(&expected, &repeats, "step");
    assert_eq!(allowed, expected.len());
    assert_eq!(unchanged, StepEvent::ALL.len());
    assert_eq!(allowed + unchanged + refused, 6 * 7);
}

#[test]
fn task_machine_allows_exactly_the_designed_edges() {
    let expected = expected_task_edges();
    let repeats = expected_repeats::<TaskState>(TaskEvent::target);
    let (allowed, unchanged, refused) = check_machine(&expected, &repeats, "task");
    assert_eq!(allowed, expected.len());
    // `start` and `reopen` both produce `in_progress`: two distinct repeats.
    assert_eq!(unchanged, TaskEvent::ALL.len());
    assert_eq!(allowed + unchanged + refused, 6 * 6);
}

#[test]
fn batch_machine_allows_exactly_the_designed_edges() {
    let expected = expected_batch_edges();
    let repeats = expected_repeats::<BatchState>(BatchEvent::target);
    let (allowed, unchanged, refused) = check_machine(&expected, &repeats, "batch");
    assert_eq!(allowed, expected.len());
    assert_eq!(unchanged, BatchEvent::ALL.len());
    assert_eq!(allowed + unchanged + refused, 7 * 6);
}

#[test]
fn printed_tables_list_the_same_edges() {
    let steps: Vec<_> = allowed_transitions::<StepState>()
        .into_iter()
        .map(|e| (e.from, e.event, e.to))
        .collect();
    assert_eq!(steps, expected_step_edges());
    let tasks: Vec<_> = allowed_transitions::<TaskState>()
        .into_iter()
        .map(|e| (e.from, e.event, e.to))
        .collect();
    assert_eq!(tasks, expected_task_edges());
    let batches: Vec<_> = allowed_transitions::<BatchState>()
        .into_iter()
        .map(|e| (e.from, e.event, e.to))
        .collect();
    assert_eq!(batches, expected_batch_edges());
}

/// Terminal states refuse every event that is not an idempotent repeat.
fn terminal_states_refuse_everything_else<S: StateMachine>() {
    for &state in S::STATES.iter().filter(|s| s.is_terminal()) {
        for &event in S::EVENTS {
            match state.transition(event) {
                Ok(Transition::Unchanged(s)) => assert_eq!(s, state),
                Ok(Transition::Changed { .. }) => panic!("terminal {state} moved by {event}"),
                Err(TransitionError { .. }) => {}
            }
        }
    }
}

#[test]
fn terminal_states_only_accept_idempotent_repeats() {
    terminal_states_refuse_everything_else::<TaskState>();
    terminal_states_refuse_everything_else::<StepState>();
    terminal_states_refuse_everything_else::<BatchState>();
    let terminal_steps: Vec<_> = StepState::ALL.iter().filter(|s| s.is_terminal()).collect();
    assert_eq!(
        terminal_steps,
        [
            &StepState::Complete,
            &StepState::Cancelled,
            &StepState::ResolvedManually
        ]
    );
    assert!(
        !StepState::Error.is_terminal(),
        "an error step can be retried"
    );
    assert!(
        !TaskState::Error.is_terminal(),
        "an error task can be re-opened"
    );
}

#[test]
fn repeating_an_accepted_event_changes_nothing() {
    // Apply each allowed edge, then the same event again: the second time is `Unchanged`.
    for edge in allowed_transitions::<StepState>() {
        let after = edge.from.transition(edge.event).expect("allowed").target();
        assert_eq!(
            after.transition(edge.event),
            Ok(Transition::Unchanged(after))
        );
    }
    for edge in allowed_transitions::<TaskState>() {
        let after = edge.from.transition(edge.event).expect("allowed").target();
        assert_eq!(
            after.transition(edge.event),
            Ok(Transition::Unchanged(after))
        );
    }
    for edge in allowed_transitions::<BatchState>() {
        let after = edge.from.transition(edge.event).expect("allowed").target();
        assert_eq!(
            after.transition(edge.event),
            Ok(Transition::Unchanged(after))
        );
    }
}

#[test]
fn error_messages_name_machine_state_and_event() {
    let error = StepState::Pending
        .transition(StepEvent::Succeed)
        .expect_err("pending cannot succeed");
    assert_eq!(error.to_string(), "step cannot `succeed` from `pending`");
    assert_eq!(error.machine, Machine::Step);
    assert_eq!((error.state, error.event), ("pending", "succeed"));

    let error = TaskState::Complete
        .transition(TaskEvent::Reopen)
        .expect_err("a complete task stays complete");
    assert_eq!(error.to_string(), "task cannot `reopen` from `complete`");

    let error = BatchState::TimedOut
        .transition(BatchEvent::ReceiveResult)
        .expect_err("a late result is fenced");
    assert_eq!(
        error.to_string(),
        "batch cannot `receive_result` from `timed_out`"
    );
}

#[test]
fn transition_reports_target_and_change() {
    let changed = StepState::Error
        .transition(StepEvent::Dispatch)
        .expect("a retry dispatch");
    assert!(changed.is_changed());
    assert_eq!(changed.target(), StepState::InProgress);
    let unchanged = StepState::Cancelled
        .transition(StepEvent::Cancel)
        .expect("repeat cancel");
    assert!(!unchanged.is_changed());
    assert_eq!(unchanged.target(), StepState::Cancelled);
}

#[test]
fn names_round_trip_through_text_and_serde() {
    fn round_trip<T>(all: &[T], as_str: fn(T) -> &'static str)
    where
        T: Copy
            + PartialEq
            + std::fmt::Debug
            + FromStr
            + serde::Serialize
            + serde::de::DeserializeOwned,
        <T as FromStr>::Err: std::fmt::Debug,
    {
        for &value in all {
            let name = as_str(value);
            assert_eq!(T::from_str(name).expect("own name parses"), value);
            let json = serde_json::to_string(&value).expect("serializes");
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<T>(&json).expect("parses"), value);
        }
    }
    round_trip(TaskState::ALL, TaskState::as_str);
    round_trip(StepState::ALL, StepState::as_str);
    round_trip(BatchState::ALL, BatchState::as_str);
    round_trip(TaskEvent::ALL, TaskEvent::as_str);
    round_trip(StepEvent::ALL, StepEvent::as_str);
    round_trip(BatchEvent::ALL, BatchEvent::as_str);
    let unknown = StepEvent::from_str("explode").expect_err("not an event");
    assert_eq!(unknown.to_string(), "unknown StepEvent `explode`");
}

/// `docs/state-machine.md` embeds the generated tables and diagrams; regenerate them from
/// `markdown_table`/`mermaid_diagram` when this fails.
#[test]
fn state_machine_document_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/state-machine.md");
    let doc = std::fs::read_to_string(path).expect("docs/state-machine.md exists");
    let generated = [
        ("task table", markdown_table::<TaskState>()),
        ("task diagram", mermaid_diagram::<TaskState>()),
        ("step table", markdown_table::<StepState>()),
        ("step diagram", mermaid_diagram::<StepState>()),
        ("batch table", markdown_table::<BatchState>()),
        ("batch diagram", mermaid_diagram::<BatchState>()),
    ];
    for (what, text) in generated {
        assert!(
            doc.contains(&text),
            "docs/state-machine.md is missing the current {what}:\n{text}"
        );
    }
}
