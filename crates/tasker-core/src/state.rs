//! States of tasks, steps and step-execution batches, and the transition tables that move them.
//!
//! Everything here is pure: a transition is checked by [`TaskState::transition`],
//! [`StepState::transition`] or [`BatchState::transition`], which return what to record (or that
//! nothing changes) and never touch storage.
//!
//! Each machine has an event enum ([`TaskEvent`], [`StepEvent`], [`BatchEvent`]). Every event
//! leads to exactly one target state ([`StepEvent::target`] and friends), and the allowed
//! transitions are written once, as an exhaustive match per machine. The rules shared by all three:
//!
//! - An allowed event from its source state yields [`Transition::Changed`]: record a transition row.
//! - An **idempotent repeat** — the event applied to the very state it produces (`succeed` on a
//!   `complete` step, `cancel` on a `cancelled` task) — yields [`Transition::Unchanged`]: accepted,
//!   nothing to record. Redelivered messages and retried API calls are therefore harmless.
//! - Anything else is refused with a [`TransitionError`] naming the machine, state and event.
//! - Terminal states ([`StepState::is_terminal`] …) refuse every event except idempotent repeats.
//!
//! The tables are printable ([`allowed_transitions`], [`markdown_table`], [`mermaid_diagram`]);
//! `docs/state-machine.md` embeds them and a test keeps the document in step with the code.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::fmt::Write as _;
use std::str::FromStr;

/// The state of a task (a workflow instance).
///
/// Lifecycle: `pending → in_progress → complete | error`; `error → in_progress` when an operator
/// retries or resolves a step; `cancelled` and `resolved_manually` by an operator from any
/// non-terminal state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Created; no step has been dispatched yet. Moved out by the engine dispatcher when it
    /// dispatches the first ready step (`start`), by the finalizer if every step was resolved
    /// manually before any ran (`complete`), or by an operator (`cancel`, `resolve_manually`).
    Pending,
    /// At least one step has been dispatched and the task is not finished. Moved out by the
    /// finalizer (after result intake applied a result) when every step is complete or resolved
    /// (`complete`), or when some step failed permanently and nothing else can run (`fail`); or
    /// by an operator (`cancel`, `resolve_manually`).
    InProgress,
    /// Every step is complete or resolved manually. Terminal: nothing moves it out.
    Complete,
    /// Some step failed permanently and nothing else can run. Not terminal: an operator who
    /// retries or resolves a step re-opens the task (`reopen` → in_progress), or closes it
    /// (`cancel`, `resolve_manually`).
    Error,
    /// Cancelled by an operator. Terminal: nothing moves it out.
    Cancelled,
    /// Closed by an operator with a manual resolution. Terminal: nothing moves it out.
    ResolvedManually,
}

/// The state of one workflow step.
///
/// Lifecycle: `pending → in_progress → complete | error`; `error → in_progress` again for a retry
/// (whether a retry is due is decided by [`crate::readiness`], not by this machine);
/// `cancelled` and `resolved_manually` by an operator from any non-terminal state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Waiting to run: never dispatched, or put back by an operator retry or a requeue. Moved out
    /// by the engine dispatcher (`dispatch`) once readiness finds every parent complete or
    /// resolved manually, or by an operator (`cancel`, `resolve_manually`).
    Pending,
    /// An attempt was dispatched in a batch and its result is not applied yet. Moved out by
    /// result intake (`succeed`, `fail`), by the timeout reaper or orphan reaper when the attempt's
    /// deadline passes or its worker is lost (`fail`), by the dispatcher when the batch never
    /// reached a worker (`requeue`), or by an operator (`cancel`, `resolve_manually`).
    InProgress,
    /// The handler succeeded; results recorded. Terminal: nothing moves it out.
    Complete,
    /// The last attempt failed (retryable or not). Not terminal: the engine dispatcher dispatches
    /// it again (`dispatch`) when readiness allows a retry (retryable, attempts below the limit,
    /// backoff expired); otherwise it stays here, permanently failed, until an operator retries it
    /// (`retry` → pending), resolves it or cancels it.
    Error,
    /// Cancelled by an operator, alone or with its task. Terminal: nothing moves it out.
    Cancelled,
    /// Resolved by an operator with results of their own; counts as complete for its children.
    /// Terminal: nothing moves it out.
    ResolvedManually,
}

/// The state of a step-execution batch (one dispatch of one or more steps to one worker).
///
/// Lifecycle: `created → published → executing → completed | failed | timed_out | cancelled`;
/// `published` may end directly; `created` may only fail or be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchState {
    /// Recorded in the store, not yet sent. Moved out by the engine dispatcher once the batch is
    /// handed to the transport (`publish`) or the send fails (`fail`), by the orphan reaper when it
    /// finds the batch unsent after a restart (`fail`), or by an operator cancelling the task
    /// (`cancel`). The dispatcher must record `publish` before result intake can see a result
    /// for the batch: a result for a `created` batch is refused.
    Created,
    /// Sent to a worker. Moved out by result intake when the first partial result arrives
    /// (`receive_result`) or the batch completion arrives (`complete`), by the orphan reaper when
    /// the worker is lost (`fail`), by the timeout reaper when the deadline passes (`time_out`),
    /// or by an operator (`cancel`).
    Published,
    /// The worker has reported at least one result for it. Moved out by result intake when the
    /// batch completion arrives (`complete`), by the orphan reaper (`fail`), the timeout reaper
    /// (`time_out`) or an operator (`cancel`).
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

/// Something that happens to a task. Each event leads to one target state
/// ([`TaskEvent::target`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskEvent {
    /// The first step was dispatched: `pending → in_progress`. Driven by the engine dispatcher.
    Start,
    /// Every step is complete or resolved manually: `pending | in_progress → complete`. Driven by
    /// the finalizer.
    Complete,
    /// A step failed permanently and nothing else can run: `in_progress → error`. Driven by the
    /// finalizer.
    Fail,
    /// An operator retried or resolved a step of a failed task: `error → in_progress`.
    Reopen,
    /// An operator cancelled the task: any non-terminal state `→ cancelled`.
    Cancel,
    /// An operator closed the task by hand: any non-terminal state `→ resolved_manually`.
    ResolveManually,
}

/// Something that happens to a step. Each event leads to one target state
/// ([`StepEvent::target`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepEvent {
    /// An attempt is sent to a worker in a new batch: `pending | error → in_progress`. Driven by
    /// the engine dispatcher once readiness says the step may run (from `error` this is a retry).
    Dispatch,
    /// The handler reported success: `in_progress → complete`. Driven by result intake.
    Succeed,
    /// The attempt failed: `in_progress → error`. Driven by result intake (handler error), the
    /// timeout reaper (deadline passed) or the orphan reaper (worker lost).
    Fail,
    /// An operator asked for a failed step to run again: `error → pending`. The attempt count is
    /// kept; a pending step is always ready (given its parents), so this grants one more attempt
    /// even when retries were exhausted or the step is not retryable.
    Retry,
    /// The batch never reached a worker: `in_progress → pending`. Driven by the engine dispatcher
    /// when the send fails, or by the orphan reaper when it finds a batch still `created` after a
    /// restart. The attempt does not count (see [`crate::readiness::StepView::attempts`]).
    Requeue,
    /// An operator cancelled the step or its task: any non-terminal state `→ cancelled`.
    Cancel,
    /// An operator resolved the step with results of their own: any non-terminal state
    /// `→ resolved_manually`.
    ResolveManually,
}

/// Something that happens to a batch. Each event leads to one target state
/// ([`BatchEvent::target`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchEvent {
    /// The batch was handed to the transport: `created → published`. Driven by the engine
    /// dispatcher.
    Publish,
    /// A partial (per-step) result arrived: `published → executing`; every later partial result is
    /// an idempotent repeat. Driven by result intake.
    ReceiveResult,
    /// The batch completion arrived: `published | executing → completed`. Driven by result intake.
    Complete,
    /// The batch cannot finish: `created → failed` when the send fails (dispatcher) or the batch
    /// is found unsent after a restart (orphan reaper); `published | executing → failed` when its
    /// worker is lost (orphan reaper).
    Fail,
    /// The batch's deadline passed: `published | executing → timed_out`. Driven by the timeout
    /// reaper.
    TimeOut,
    /// The task or batch was cancelled: any non-terminal state `→ cancelled`. Driven by an
    /// operator.
    Cancel,
}

macro_rules! stable_names {
    ($ty:ident, $what:literal { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            #[doc = concat!("Every ", $what, ", in declaration order.")]
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

stable_names!(TaskState, "state" {
    Pending => "pending",
    InProgress => "in_progress",
    Complete => "complete",
    Error => "error",
    Cancelled => "cancelled",
    ResolvedManually => "resolved_manually",
});

stable_names!(StepState, "state" {
    Pending => "pending",
    InProgress => "in_progress",
    Complete => "complete",
    Error => "error",
    Cancelled => "cancelled",
    ResolvedManually => "resolved_manually",
});

stable_names!(BatchState, "state" {
    Created => "created",
    Published => "published",
    Executing => "executing",
    Completed => "completed",
    Failed => "failed",
    TimedOut => "timed_out",
    Cancelled => "cancelled",
});

stable_names!(TaskEvent, "event" {
    Start => "start",
    Complete => "complete",
    Fail => "fail",
    Reopen => "reopen",
    Cancel => "cancel",
    ResolveManually => "resolve_manually",
});

stable_names!(StepEvent, "event" {
    Dispatch => "dispatch",
    Succeed => "succeed",
    Fail => "fail",
    Retry => "retry",
    Requeue => "requeue",
    Cancel => "cancel",
    ResolveManually => "resolve_manually",
});

stable_names!(BatchEvent, "event" {
    Publish => "publish",
    ReceiveResult => "receive_result",
    Complete => "complete",
    Fail => "fail",
    TimeOut => "time_out",
    Cancel => "cancel",
});

/// A state or event name that is not one of the known ones (for example read from a newer
/// database).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}`")]
pub struct UnknownState {
    /// Which type was being parsed (`TaskState`, `StepEvent`, …).
    pub kind: &'static str,
    /// The text that did not parse.
    pub value: String,
}

/// Which of the three state machines something belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Machine {
    /// [`TaskState`] / [`TaskEvent`].
    Task,
    /// [`StepState`] / [`StepEvent`].
    Step,
    /// [`BatchState`] / [`BatchEvent`].
    Batch,
}

impl Machine {
    /// `task`, `step` or `batch`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Machine::Task => "task",
            Machine::Step => "step",
            Machine::Batch => "batch",
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of an accepted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition<S> {
    /// The state changes: record a transition row from `from` to `to`.
    Changed {
        /// The state before the event.
        from: S,
        /// The state after the event.
        to: S,
    },
    /// An idempotent repeat: the event was applied to the state it produces. Nothing to record.
    Unchanged(S),
}

impl<S: Copy + PartialEq> Transition<S> {
    /// The state after the event (whether or not it changed).
    pub fn target(&self) -> S {
        match *self {
            Transition::Changed { to, .. } => to,
            Transition::Unchanged(state) => state,
        }
    }

    /// Whether the state changed, i.e. whether a transition row must be recorded.
    pub fn is_changed(&self) -> bool {
        matches!(self, Transition::Changed { .. })
    }
}

/// An event that is not allowed from the current state, e.g. "step cannot `succeed` from
/// `pending`".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{machine} cannot `{event}` from `{state}`")]
pub struct TransitionError {
    /// The machine that refused the event.
    pub machine: Machine,
    /// The current state's stable name ([`StepState::as_str`] …).
    pub state: &'static str,
    /// The refused event's stable name ([`StepEvent::as_str`] …).
    pub event: &'static str,
}

/// What the three state types have in common, so tables and documentation can be produced for
/// any of them.
pub trait StateMachine:
    Copy + Eq + std::hash::Hash + fmt::Debug + fmt::Display + Send + Sync + 'static
{
    /// The machine's events.
    type Event: Copy + Eq + std::hash::Hash + fmt::Debug + fmt::Display + Send + Sync + 'static;

    /// Which machine this is.
    const MACHINE: Machine;
    /// Every state, in declaration order.
    const STATES: &'static [Self];
    /// Every event, in declaration order.
    const EVENTS: &'static [Self::Event];
    /// The state a new instance starts in.
    const INITIAL: Self;

    /// Applies `event` to this state: the target state, whether anything changed, or why not.
    fn transition(self, event: Self::Event) -> Result<Transition<Self>, TransitionError>;

    /// Whether no event can move this state any more (except idempotent repeats).
    fn is_terminal(self) -> bool;

    /// Who drives `event` out of state `from`, in a few words, for documentation.
    fn driven_by(from: Self, event: Self::Event) -> &'static str;
}

/// Shared tail of every `transition`: allowed → changed; event's own target → unchanged; else an
/// error.
fn decide<S: StateMachine>(
    state: S,
    allowed: bool,
    target: S,
    names: (&'static str, &'static str),
) -> Result<Transition<S>, TransitionError> {
    if allowed {
        Ok(Transition::Changed {
            from: state,
            to: target,
        })
    } else if state == target {
        Ok(Transition::Unchanged(state))
    } else {
        Err(TransitionError {
            machine: S::MACHINE,
            state: names.0,
            event: names.1,
        })
    }
}

impl TaskEvent {
    /// The state this event leads to.
    pub const fn target(self) -> TaskState {
        match self {
            TaskEvent::Start | TaskEvent::Reopen => TaskState::InProgress,
            TaskEvent::Complete => TaskState::Complete,
            TaskEvent::Fail => TaskState::Error,
            TaskEvent::Cancel => TaskState::Cancelled,
            TaskEvent::ResolveManually => TaskState::ResolvedManually,
        }
    }
}

impl TaskState {
    /// Applies `event`: see the module documentation for the rules.
    ///
    /// ```
    /// use tasker_core::state::{TaskEvent, TaskState, Transition};
    /// assert_eq!(
    ///     TaskState::Error.transition(TaskEvent::Reopen),
    ///     Ok(Transition::Changed { from: TaskState::Error, to: TaskState::InProgress }),
    /// );
    /// assert!(TaskState::Complete.transition(TaskEvent::Cancel).is_err());
    /// ```
    pub fn transition(self, event: TaskEvent) -> Result<Transition<TaskState>, TransitionError> {
        use TaskEvent as E;
        let allowed = match self {
            TaskState::Pending => match event {
                E::Start | E::Complete | E::Cancel | E::ResolveManually => true,
                E::Fail | E::Reopen => false,
            },
            TaskState::InProgress => match event {
                E::Complete | E::Fail | E::Cancel | E::ResolveManually => true,
                E::Start | E::Reopen => false,
            },
            TaskState::Error => match event {
                E::Reopen | E::Cancel | E::ResolveManually => true,
                E::Start | E::Complete | E::Fail => false,
            },
            TaskState::Complete | TaskState::Cancelled | TaskState::ResolvedManually => false,
        };
        decide(
            self,
            allowed,
            event.target(),
            (self.as_str(), event.as_str()),
        )
    }

    /// Whether the task is finished for good (`complete`, `cancelled`, `resolved_manually`).
    /// `error` is not terminal: an operator can re-open the task.
    pub const fn is_terminal(self) -> bool {
        match self {
            TaskState::Complete | TaskState::Cancelled | TaskState::ResolvedManually => true,
            TaskState::Pending | TaskState::InProgress | TaskState::Error => false,
        }
    }
}

impl StepEvent {
    /// The state this event leads to.
    pub const fn target(self) -> StepState {
        match self {
            StepEvent::Dispatch => StepState::InProgress,
            StepEvent::Succeed => StepState::Complete,
            StepEvent::Fail => StepState::Error,
            StepEvent::Retry | StepEvent::Requeue => StepState::Pending,
            StepEvent::Cancel => StepState::Cancelled,
            StepEvent::ResolveManually => StepState::ResolvedManually,
        }
    }
}

impl StepState {
    /// Applies `event`: see the module documentation for the rules.
    ///
    /// A step in `error` may always be dispatched again; whether it *should* be (retryable,
    /// attempts, backoff) is [`crate::readiness`]'s decision.
    ///
    /// ```
    /// use tasker_core::state::{StepEvent, StepState, Transition};
    /// assert_eq!(
    ///     StepState::Complete.transition(StepEvent::Succeed),
    ///     Ok(Transition::Unchanged(StepState::Complete)),
    /// );
    /// let refused = StepState::Pending.transition(StepEvent::Succeed).unwrap_err();
    /// assert_eq!(refused.to_string(), "step cannot `succeed` from `pending`");
    /// ```
    pub fn transition(self, event: StepEvent) -> Result<Transition<StepState>, TransitionError> {
        use StepEvent as E;
        let allowed = match self {
            StepState::Pending => match event {
                E::Dispatch | E::Cancel | E::ResolveManually => true,
                E::Succeed | E::Fail | E::Retry | E::Requeue => false,
            },
            StepState::InProgress => match event {
                E::Succeed | E::Fail | E::Requeue | E::Cancel | E::ResolveManually => true,
                E::Dispatch | E::Retry => false,
            },
            StepState::Error => match event {
                E::Dispatch | E::Retry | E::Cancel | E::ResolveManually => true,
                E::Succeed | E::Fail | E::Requeue => false,
            },
            StepState::Complete | StepState::Cancelled | StepState::ResolvedManually => false,
        };
        decide(
            self,
            allowed,
            event.target(),
            (self.as_str(), event.as_str()),
        )
    }

    /// Whether the step is finished for good (`complete`, `cancelled`, `resolved_manually`).
    /// `error` is not terminal: it may be retried.
    pub const fn is_terminal(self) -> bool {
        match self {
            StepState::Complete | StepState::Cancelled | StepState::ResolvedManually => true,
            StepState::Pending | StepState::InProgress | StepState::Error => false,
        }
    }

    /// Whether children may rely on this step: `complete` or `resolved_manually`.
    pub const fn satisfies_dependents(self) -> bool {
        matches!(self, StepState::Complete | StepState::ResolvedManually)
    }
}

impl BatchEvent {
    /// The state this event leads to.
    pub const fn target(self) -> BatchState {
        match self {
            BatchEvent::Publish => BatchState::Published,
            BatchEvent::ReceiveResult => BatchState::Executing,
            BatchEvent::Complete => BatchState::Completed,
            BatchEvent::Fail => BatchState::Failed,
            BatchEvent::TimeOut => BatchState::TimedOut,
            BatchEvent::Cancel => BatchState::Cancelled,
        }
    }
}

impl BatchState {
    /// Applies `event`: see the module documentation for the rules.
    ///
    /// A result for a batch that already ended (`failed`, `timed_out`, …) is refused: that is the
    /// fencing of late results from an older attempt.
    ///
    /// ```
    /// use tasker_core::state::{BatchEvent, BatchState, Transition};
    /// assert_eq!(
    ///     BatchState::Executing.transition(BatchEvent::ReceiveResult),
    ///     Ok(Transition::Unchanged(BatchState::Executing)),
    /// );
    /// assert!(BatchState::TimedOut.transition(BatchEvent::ReceiveResult).is_err());
    /// ```
    pub fn transition(self, event: BatchEvent) -> Result<Transition<BatchState>, TransitionError> {
        use BatchEvent as E;
        let allowed = match self {
            BatchState::Created => match event {
                E::Publish | E::Fail | E::Cancel => true,
                E::ReceiveResult | E::Complete | E::TimeOut => false,
            },
            BatchState::Published => match event {
                E::ReceiveResult | E::Complete | E::Fail | E::TimeOut | E::Cancel => true,
                E::Publish => false,
            },
            BatchState::Executing => match event {
                E::Complete | E::Fail | E::TimeOut | E::Cancel => true,
                E::Publish | E::ReceiveResult => false,
            },
            BatchState::Completed
            | BatchState::Failed
            | BatchState::TimedOut
            | BatchState::Cancelled => false,
        };
        decide(
            self,
            allowed,
            event.target(),
            (self.as_str(), event.as_str()),
        )
    }

    /// Whether the batch is finished (`completed`, `failed`, `timed_out`, `cancelled`).
    pub const fn is_terminal(self) -> bool {
        match self {
            BatchState::Completed
            | BatchState::Failed
            | BatchState::TimedOut
            | BatchState::Cancelled => true,
            BatchState::Created | BatchState::Published | BatchState::Executing => false,
        }
    }
}

impl StateMachine for TaskState {
    type Event = TaskEvent;
    const MACHINE: Machine = Machine::Task;
    const STATES: &'static [Self] = TaskState::ALL;
    const EVENTS: &'static [TaskEvent] = TaskEvent::ALL;
    const INITIAL: Self = TaskState::Pending;

    fn transition(self, event: TaskEvent) -> Result<Transition<Self>, TransitionError> {
        TaskState::transition(self, event)
    }

    fn is_terminal(self) -> bool {
        TaskState::is_terminal(self)
    }

    fn driven_by(_from: Self, event: TaskEvent) -> &'static str {
        match event {
            TaskEvent::Start => "engine dispatcher (first dispatch)",
            TaskEvent::Complete | TaskEvent::Fail => "finalizer, after result intake",
            TaskEvent::Reopen => "operator (retry or resolve a step)",
            TaskEvent::Cancel | TaskEvent::ResolveManually => "operator",
        }
    }
}

impl StateMachine for StepState {
    type Event = StepEvent;
    const MACHINE: Machine = Machine::Step;
    const STATES: &'static [Self] = StepState::ALL;
    const EVENTS: &'static [StepEvent] = StepEvent::ALL;
    const INITIAL: Self = StepState::Pending;

    fn transition(self, event: StepEvent) -> Result<Transition<Self>, TransitionError> {
        StepState::transition(self, event)
    }

    fn is_terminal(self) -> bool {
        StepState::is_terminal(self)
    }

    fn driven_by(from: Self, event: StepEvent) -> &'static str {
        match event {
            StepEvent::Dispatch if from == StepState::Error => {
                "engine dispatcher, a retry once readiness allows"
            }
            StepEvent::Dispatch => "engine dispatcher, once readiness allows",
            StepEvent::Succeed => "result intake",
            StepEvent::Fail => "result intake, timeout reaper, orphan reaper",
            StepEvent::Requeue => "engine dispatcher or orphan reaper (batch never sent)",
            StepEvent::Retry | StepEvent::Cancel | StepEvent::ResolveManually => "operator",
        }
    }
}

impl StateMachine for BatchState {
    type Event = BatchEvent;
    const MACHINE: Machine = Machine::Batch;
    const STATES: &'static [Self] = BatchState::ALL;
    const EVENTS: &'static [BatchEvent] = BatchEvent::ALL;
    const INITIAL: Self = BatchState::Created;

    fn transition(self, event: BatchEvent) -> Result<Transition<Self>, TransitionError> {
        BatchState::transition(self, event)
    }

    fn is_terminal(self) -> bool {
        BatchState::is_terminal(self)
    }

    fn driven_by(from: Self, event: BatchEvent) -> &'static str {
        match event {
            BatchEvent::Publish => "engine dispatcher",
            BatchEvent::ReceiveResult | BatchEvent::Complete => "result intake",
            BatchEvent::Fail if from == BatchState::Created => {
                "engine dispatcher (send failed), orphan reaper (never sent, found after restart)"
            }
            BatchEvent::Fail => "orphan reaper (worker lost)",
            BatchEvent::TimeOut => "timeout reaper",
            BatchEvent::Cancel => "operator",
        }
    }
}

/// One allowed edge of a machine: `from --event--> to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Edge<S: StateMachine> {
    /// The source state.
    pub from: S,
    /// The event that moves it.
    pub event: S::Event,
    /// The target state.
    pub to: S,
}

/// Every allowed (state-changing) transition of machine `S`, in state then event declaration
/// order. Idempotent repeats are not listed.
pub fn allowed_transitions<S: StateMachine>() -> Vec<Edge<S>> {
    let mut edges = Vec::new();
    for &from in S::STATES {
        for &event in S::EVENTS {
            if let Ok(Transition::Changed { to, .. }) = from.transition(event) {
                edges.push(Edge { from, event, to });
            }
        }
    }
    edges
}

/// The allowed transitions of `S` as a Markdown table: from, event, to, driven by.
pub fn markdown_table<S: StateMachine>() -> String {
    let mut out = String::from("| from | event | to | driven by |\n|---|---|---|---|\n");
    for edge in allowed_transitions::<S>() {
        let _ = writeln!(
            out,
            "| `{}` | `{}` | `{}` | {} |",
            edge.from,
            edge.event,
            edge.to,
            S::driven_by(edge.from, edge.event)
        );
    }
    out
}

/// The lifecycle of `S` as a Mermaid `stateDiagram-v2` (without the surrounding code fence).
pub fn mermaid_diagram<S: StateMachine>() -> String {
    let mut out = String::from("stateDiagram-v2\n");
    let _ = writeln!(out, "    [*] --> {}", S::INITIAL);
    for edge in allowed_transitions::<S>() {
        let _ = writeln!(out, "    {} --> {}: {}", edge.from, edge.to, edge.event);
    }
    for &state in S::STATES {
        if state.is_terminal() {
            let _ = writeln!(out, "    {state} --> [*]");
        }
    }
    out
}
