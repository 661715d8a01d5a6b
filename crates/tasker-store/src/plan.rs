//! Backend-neutral evaluation of conditional changes.
//!
//! A backend loads (and, on PostgreSQL, locks) the current rows that a
//! [`TransitionsApply`](crate::params::TransitionsApply) touches, hands them to [`plan_changes`],
//! and writes the resulting [`ChangePlan`] in bulk. Keeping the compare-and-set logic here, once,
//! is what makes both backends refuse exactly the same changes.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::Value;
use tasker_core::state::{
    BatchState, StateMachine, StepEvent, StepState, TaskEvent, TaskState, Transition,
};
use uuid::Uuid;

use crate::error::{ChangeTarget, Refusal, RefusalReason, StoreError};
use crate::params::{BatchStep, ChangeSet, LedgerEntry, StepChange};
use crate::records::{DispatchedStep, RefusedSet};

/// The stored facts about a step that its changes are checked against.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepSnapshot {
    pub step_id: i64,
    pub task_id: i64,
    pub state: StepState,
    pub in_flight: Option<Uuid>,
    pub attempts: i32,
    pub last_sort_key: i32,
    /// Parents not yet `complete` or `resolved_manually`.
    pub unmet_parents: i32,
}

/// The stored facts about a task.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskSnapshot {
    pub task_id: i64,
    pub state: TaskState,
    pub claimed_by: Option<String>,
    pub claim_expires_at: Option<i64>,
    pub last_sort_key: i32,
}

/// The stored facts about a batch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BatchSnapshot {
    pub batch_id: i64,
    pub batch_uuid: Uuid,
    pub state: BatchState,
    pub last_sort_key: i32,
}

/// A transition row to insert. `entity_id` is the step id, task id or batch row id.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TransitionRow {
    pub entity_id: i64,
    pub from_state: Option<&'static str>,
    pub to_state: &'static str,
    pub event: String,
    pub metadata: Option<Value>,
    pub sort_key: i32,
    pub most_recent: bool,
}

/// The final values to write to one step row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepUpdate {
    pub step_id: i64,
    pub state: StepState,
    /// `Some` replaces the stored results.
    pub results: Option<Value>,
    /// `Some` replaces the stored last error.
    pub error: Option<Value>,
    /// Always written (ms since epoch or null).
    pub backoff_until: Option<i64>,
    /// True when the step left `in_progress`: the in-flight batch and deadline are cleared.
    pub clear_in_flight: bool,
    /// Added to `attempts`: -1 for each requeue (`in_progress → pending`: the batch never
    /// reached a worker, so its attempt does not count).
    pub attempts_delta: i32,
}

/// The final state to write to one task row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskUpdate {
    pub task_id: i64,
    pub state: TaskState,
}

/// The final state to write to one batch row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BatchUpdate {
    pub batch_id: i64,
    pub state: BatchState,
}

/// Everything a backend writes for one `transitions_apply`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ChangePlan {
    pub step_updates: Vec<StepUpdate>,
    /// Steps that became `complete` or `resolved_manually`: their children have one unmet parent
    /// less.
    pub newly_satisfied: Vec<i64>,
    pub step_transitions: Vec<TransitionRow>,
    pub task_updates: Vec<TaskUpdate>,
    pub task_transitions: Vec<TransitionRow>,
    pub batch_updates: Vec<BatchUpdate>,
    pub batch_transitions: Vec<TransitionRow>,
    pub applied: Vec<usize>,
    pub refused: Vec<RefusedSet>,
    /// Processing errors to record on ledger entries (by index) whose change set was refused.
    pub ledger_errors: HashMap<usize, Value>,
}

/// The rows the changes touch, as loaded from the database.
#[derive(Debug, Default)]
pub(crate) struct Snapshots {
    pub steps: HashMap<i64, StepSnapshot>,
    pub tasks: HashMap<i64, TaskSnapshot>,
    pub batches: HashMap<Uuid, BatchSnapshot>,
}

/// The rows a set of changes touches: what a backend locks and loads before planning.
#[derive(Debug, Default)]
pub(crate) struct TouchedIds {
    pub step_ids: BTreeSet<i64>,
    /// Tasks named by task changes; add the tasks of the loaded steps with [`Self::tasks_of`].
    pub task_ids: BTreeSet<i64>,
    pub batch_uuids: BTreeSet<Uuid>,
}

impl TouchedIds {
    pub(crate) fn of(changes: &[ChangeSet]) -> Self {
        Self {
            step_ids: changes
                .iter()
                .flat_map(|set| set.steps.iter().map(|c| c.step_id))
                .collect(),
            task_ids: changes
                .iter()
                .flat_map(|set| set.tasks.iter().map(|c| c.task_id))
                .collect(),
            batch_uuids: changes
                .iter()
                .flat_map(|set| set.batches.iter().map(|c| c.batch_uuid))
                .collect(),
        }
    }

    /// The tasks to load: those named by task changes and those owning the loaded steps.
    pub(crate) fn tasks_of(&self, steps: &HashMap<i64, StepSnapshot>) -> BTreeSet<i64> {
        let mut ids = self.task_ids.clone();
        ids.extend(steps.values().map(|s| s.task_id));
        ids
    }
}

impl ChangePlan {
    /// With `all_or_nothing`, any refused set refuses everything: the conflict to return.
    pub(crate) fn all_or_nothing_conflict(&mut self, all_or_nothing: bool) -> Option<StoreError> {
        if !all_or_nothing || self.refused.is_empty() {
            return None;
        }
        Some(StoreError::Conflict {
            refused: std::mem::take(&mut self.refused)
                .into_iter()
                .flat_map(|set| set.refusals)
                .collect(),
        })
    }
}

/// Is `state` one a task can be finished in (sets `completed_at`)?
pub(crate) fn task_state_is_final(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Complete | TaskState::Error | TaskState::Cancelled | TaskState::ResolvedManually
    )
}

/// Checks that `task` is held by `claimant` at `now_ms`.
pub(crate) fn claim_refusal(
    task: &TaskSnapshot,
    claimant: Option<&str>,
    now_ms: i64,
) -> Option<RefusalReason> {
    let claimant = claimant?;
    let held = task.claimed_by.as_deref() == Some(claimant)
        && task.claim_expires_at.is_some_and(|t| t > now_ms);
    if held {
        None
    } else {
        Some(RefusalReason::NotClaimed {
            claimed_by: task
                .claimed_by
                .clone()
                .filter(|_| task.claim_expires_at.is_some_and(|t| t > now_ms)),
        })
    }
}

/// Evaluates change sets in order against `snapshots`, each set against the effect of the sets
/// applied before it, and returns what to write.
pub(crate) fn plan_changes(
    mut snapshots: Snapshots,
    changes: &[ChangeSet],
    claimant: Option<&str>,
    now_ms: i64,
) -> ChangePlan {
    let mut plan = ChangePlan::default();
    let mut step_final: HashMap<i64, StepUpdate> = HashMap::new();
    let mut step_order: Vec<i64> = Vec::new();
    let mut task_final: HashMap<i64, TaskState> = HashMap::new();
    let mut task_order: Vec<i64> = Vec::new();
    let mut batch_final: HashMap<i64, BatchState> = HashMap::new();
    let mut batch_order: Vec<i64> = Vec::new();

    for (index, set) in changes.iter().enumerate() {
        // Work on a copy of the touched rows; merge it back only when the whole set passes.
        let mut scratch_steps: HashMap<i64, StepSnapshot> = HashMap::new();
        let mut scratch_tasks: HashMap<i64, TaskSnapshot> = HashMap::new();
        let mut scratch_batches: HashMap<Uuid, BatchSnapshot> = HashMap::new();
        let mut refusals = Vec::new();
        let mut step_rows = Vec::new();
        let mut task_rows = Vec::new();
        let mut batch_rows = Vec::new();

        for change in &set.steps {
            let target = ChangeTarget::Step(change.step_id);
            let current = scratch_steps
                .get(&change.step_id)
                .or_else(|| snapshots.steps.get(&change.step_id))
                .cloned();
            let Some(mut step) = current else {
                refusals.push(Refusal {
                    target,
                    reason: RefusalReason::NotFound,
                });
                continue;
            };
            if let Some(reason) = check_step(change, &step) {
                refusals.push(Refusal { target, reason });
                continue;
            }
            if let Some(reason) = edge_refusal("step", step.state, change.to_state) {
                refusals.push(Refusal { target, reason });
                continue;
            }
            if let Some(task) = scratch_tasks
                .get(&step.task_id)
                .or_else(|| snapshots.tasks.get(&step.task_id))
                && let Some(reason) = claim_refusal(task, claimant, now_ms)
            {
                refusals.push(Refusal {
                    target: ChangeTarget::Task(step.task_id),
                    reason,
                });
                continue;
            }
            let changed = step.state != change.to_state;
            if changed {
                step.last_sort_key += 1;
            }
            step_rows.push((
                change.clone(),
                changed.then(|| TransitionRow {
                    entity_id: step.step_id,
                    from_state: Some(step.state.as_str()),
                    to_state: change.to_state.as_str(),
                    event: change.event.as_str().to_owned(),
                    metadata: change.metadata.clone(),
                    sort_key: step.last_sort_key,
                    most_recent: false,
                }),
            ));
            if change.to_state != StepState::InProgress {
                step.in_flight = None;
            }
            step.state = change.to_state;
            scratch_steps.insert(step.step_id, step);
        }

        for change in &set.tasks {
            let target = ChangeTarget::Task(change.task_id);
            let current = scratch_tasks
                .get(&change.task_id)
                .or_else(|| snapshots.tasks.get(&change.task_id))
                .cloned();
            let Some(mut task) = current else {
                refusals.push(Refusal {
                    target,
                    reason: RefusalReason::NotFound,
                });
                continue;
            };
            if task.state != change.expect_state {
                refusals.push(Refusal {
                    target,
                    reason: RefusalReason::StateMismatch {
                        expected: change.expect_state.as_str().to_owned(),
                        found: task.state.as_str().to_owned(),
                    },
                });
                continue;
            }
            if let Some(reason) = edge_refusal("task", task.state, change.to_state) {
                refusals.push(Refusal { target, reason });
                continue;
            }
            if let Some(reason) = claim_refusal(&task, claimant, now_ms) {
                refusals.push(Refusal { target, reason });
                continue;
            }
            if task.state == change.to_state {
                continue;
            }
            task.last_sort_key += 1;
            task_rows.push(TransitionRow {
                entity_id: task.task_id,
                from_state: Some(task.state.as_str()),
                to_state: change.to_state.as_str(),
                event: change.event.as_str().to_owned(),
                metadata: change.metadata.clone(),
                sort_key: task.last_sort_key,
                most_recent: false,
            });
            task.state = change.to_state;
            scratch_tasks.insert(task.task_id, task);
        }

        for change in &set.batches {
            let target = ChangeTarget::Batch(change.batch_uuid);
            let current = scratch_batches
                .get(&change.batch_uuid)
                .or_else(|| snapshots.batches.get(&change.batch_uuid))
                .cloned();
            let Some(mut batch) = current else {
                refusals.push(Refusal {
                    target,
                    reason: RefusalReason::NotFound,
                });
                continue;
            };
            if batch.state != change.expect_state {
                refusals.push(Refusal {
                    target,
                    reason: RefusalReason::StateMismatch {
                        expected: change.expect_state.as_str().to_owned(),
                        found: batch.state.as_str().to_owned(),
                    },
                });
                continue;
            }
            if let Some(reason) = edge_refusal("batch", batch.state, change.to_state) {
                refusals.push(Refusal { target, reason });
                continue;
            }
            if batch.state == change.to_state {
                continue;
            }
            batch.last_sort_key += 1;
            batch_rows.push(TransitionRow {
                entity_id: batch.batch_id,
                from_state: Some(batch.state.as_str()),
                to_state: change.to_state.as_str(),
                event: change.event.as_str().to_owned(),
                metadata: change.metadata.clone(),
                sort_key: batch.last_sort_key,
                most_recent: false,
            });
            batch.state = change.to_state;
            scratch_batches.insert(batch.batch_uuid, batch);
        }

        if !refusals.is_empty() {
            if let Some(entry) = set.ledger_entry {
                plan.ledger_errors.insert(
                    entry,
                    serde_json::json!({ "refused": refusals.iter().map(|r| {
                        let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
                        if let Value::Object(map) = &mut v {
                            map.insert("message".into(), Value::String(r.to_string()));
                        }
                        v
                    }).collect::<Vec<_>>() }),
                );
            }
            plan.refused.push(RefusedSet { index, refusals });
            continue;
        }

        // The set passes: merge scratch rows and record the writes.
        plan.applied.push(index);
        for (change, row) in step_rows {
            let entry = step_final.entry(change.step_id).or_insert_with(|| {
                step_order.push(change.step_id);
                StepUpdate {
                    step_id: change.step_id,
                    state: change.to_state,
                    results: None,
                    error: None,
                    backoff_until: None,
                    clear_in_flight: false,
                    attempts_delta: 0,
                }
            });
            if let Some(row) = &row
                && row.from_state == Some(StepState::InProgress.as_str())
                && change.to_state == StepState::Pending
            {
                entry.attempts_delta -= 1;
            }
            entry.state = change.to_state;
            if change.results.is_some() {
                entry.results.clone_from(&change.results);
            }
            if change.error.is_some() {
                entry.error.clone_from(&change.error);
            }
            entry.backoff_until = change.backoff_until.map(|t| t.timestamp_millis());
            if change.to_state != StepState::InProgress {
                entry.clear_in_flight = true;
            }
            if let Some(row) = &row
                && satisfies_children(change.to_state)
                && !row
                    .from_state
                    .is_some_and(|from| from.parse::<StepState>().is_ok_and(satisfies_children))
            {
                plan.newly_satisfied.push(change.step_id);
            }
            plan.step_transitions.extend(row);
        }
        for row in task_rows {
            if task_final
                .insert(row.entity_id, state_of_task(&row))
                .is_none()
            {
                task_order.push(row.entity_id);
            }
            plan.task_transitions.push(row);
        }
        for row in batch_rows {
            if batch_final
                .insert(row.entity_id, state_of_batch(&row))
                .is_none()
            {
                batch_order.push(row.entity_id);
            }
            plan.batch_transitions.push(row);
        }
        snapshots.steps.extend(scratch_steps);
        snapshots.tasks.extend(scratch_tasks);
        snapshots.batches.extend(scratch_batches);
    }

    plan.step_updates = step_order
        .iter()
        .filter_map(|id| step_final.remove(id))
        .collect();
    plan.task_updates = task_order
        .iter()
        .filter_map(|id| {
            task_final.get(id).map(|state| TaskUpdate {
                task_id: *id,
                state: *state,
            })
        })
        .collect();
    plan.batch_updates = batch_order
        .iter()
        .filter_map(|id| {
            batch_final.get(id).map(|state| BatchUpdate {
                batch_id: *id,
                state: *state,
            })
        })
        .collect();
    mark_most_recent(&mut plan.step_transitions);
    mark_most_recent(&mut plan.task_transitions);
    mark_most_recent(&mut plan.batch_transitions);
    plan
}

fn state_of_task(row: &TransitionRow) -> TaskState {
    row.to_state
        .parse()
        .expect("to_state was produced by TaskState::as_str")
}

fn state_of_batch(row: &TransitionRow) -> BatchState {
    row.to_state
        .parse()
        .expect("to_state was produced by BatchState::as_str")
}

/// Whether a parent in `state` lets its children run.
pub(crate) fn satisfies_children(state: StepState) -> bool {
    matches!(state, StepState::Complete | StepState::ResolvedManually)
}

/// Refuses a change between two different states that no event of the core state machine makes.
/// A change to the same state is an idempotent repeat: allowed, and recorded without a
/// transition row.
fn edge_refusal<S: StateMachine>(machine: &str, from: S, to: S) -> Option<RefusalReason> {
    if from == to {
        return None;
    }
    let allowed = S::EVENTS.iter().any(
        |&event| matches!(from.transition(event), Ok(Transition::Changed { to: t, .. }) if t == to),
    );
    (!allowed).then(|| RefusalReason::NotAllowed {
        detail: format!("{machine} {from} → {to} is not an allowed transition"),
    })
}

fn check_step(change: &StepChange, step: &StepSnapshot) -> Option<RefusalReason> {
    if step.state != change.expect_state {
        return Some(RefusalReason::StateMismatch {
            expected: change.expect_state.as_str().to_owned(),
            found: step.state.as_str().to_owned(),
        });
    }
    if step.in_flight != change.expect_batch {
        return Some(RefusalReason::BatchMismatch {
            expected: change.expect_batch,
            found: step.in_flight,
        });
    }
    if change.to_state == StepState::InProgress && step.state != StepState::InProgress {
        return Some(RefusalReason::NotAllowed {
            detail: "a step enters in_progress only by being recorded in a batch".to_owned(),
        });
    }
    None
}

/// What a backend writes for one `batch_record`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct BatchPlan {
    /// Steps going in flight, in sequence order.
    pub included: Vec<DispatchedStep>,
    /// Steps left out.
    pub refused: Vec<Refusal>,
    /// Each included step's move to `in_progress`.
    pub step_transitions: Vec<TransitionRow>,
    /// Tasks moving from `pending` to `in_progress`.
    pub task_transitions: Vec<TransitionRow>,
}

/// Decides which steps of a batch can be dispatched.
pub(crate) fn plan_batch(
    snapshots: &Snapshots,
    steps: &[BatchStep],
    batch_uuid: Uuid,
    claimant: Option<&str>,
    now_ms: i64,
) -> BatchPlan {
    let mut plan = BatchPlan::default();
    let mut seen = HashSet::new();
    let mut started_tasks = HashSet::new();
    for wanted in steps {
        let target = ChangeTarget::Step(wanted.step_id);
        let refuse = |reason| Refusal {
            target: target.clone(),
            reason,
        };
        if !seen.insert(wanted.step_id) {
            plan.refused.push(refuse(RefusalReason::NotAllowed {
                detail: "step listed twice in one batch".to_owned(),
            }));
            continue;
        }
        let Some(step) = snapshots.steps.get(&wanted.step_id) else {
            plan.refused.push(refuse(RefusalReason::NotFound));
            continue;
        };
        if step.state != wanted.expect_state {
            plan.refused.push(refuse(RefusalReason::StateMismatch {
                expected: wanted.expect_state.as_str().to_owned(),
                found: step.state.as_str().to_owned(),
            }));
            continue;
        }
        if step.in_flight.is_some() {
            plan.refused.push(refuse(RefusalReason::BatchMismatch {
                expected: None,
                found: step.in_flight,
            }));
            continue;
        }
        if matches!(step.state, StepState::InProgress) || step_state_is_final(step.state) {
            plan.refused.push(refuse(RefusalReason::NotAllowed {
                detail: format!("a {} step cannot be dispatched", step.state),
            }));
            continue;
        }
        if step.unmet_parents > 0 {
            plan.refused.push(refuse(RefusalReason::ParentsNotDone {
                unmet: step.unmet_parents,
            }));
            continue;
        }
        let Some(task) = snapshots.tasks.get(&step.task_id) else {
            plan.refused.push(refuse(RefusalReason::NotFound));
            continue;
        };
        if !matches!(task.state, TaskState::Pending | TaskState::InProgress) {
            plan.refused.push(refuse(RefusalReason::TaskNotActive {
                state: task.state.as_str().to_owned(),
            }));
            continue;
        }
        if let Some(reason) = claim_refusal(task, claimant, now_ms) {
            plan.refused.push(Refusal {
                target: ChangeTarget::Task(task.task_id),
                reason,
            });
            continue;
        }
        let attempt = step.attempts + 1;
        let sequence_order = i32::try_from(plan.included.len()).unwrap_or(i32::MAX);
        plan.included.push(DispatchedStep {
            step_id: step.step_id,
            task_id: step.task_id,
            attempt,
            sequence_order,
        });
        plan.step_transitions.push(TransitionRow {
            entity_id: step.step_id,
            from_state: Some(step.state.as_str()),
            to_state: StepState::InProgress.as_str(),
            event: StepEvent::Dispatch.as_str().to_owned(),
            metadata: Some(serde_json::json!({
                "batch_uuid": batch_uuid.to_string(),
                "attempt": attempt,
            })),
            sort_key: step.last_sort_key + 1,
            most_recent: true,
        });
        if task.state == TaskState::Pending && started_tasks.insert(task.task_id) {
            plan.task_transitions.push(TransitionRow {
                entity_id: task.task_id,
                from_state: Some(TaskState::Pending.as_str()),
                to_state: TaskState::InProgress.as_str(),
                event: TaskEvent::Start.as_str().to_owned(),
                metadata: Some(serde_json::json!({ "batch_uuid": batch_uuid.to_string() })),
                sort_key: task.last_sort_key + 1,
                most_recent: true,
            });
        }
    }
    plan
}

/// One batch row to insert, for [`BatchesPlan`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BatchRow {
    pub batch_uuid: Uuid,
    pub worker_id: Option<String>,
    pub handler_class: Option<String>,
    pub orchestrator_id: Option<String>,
    pub batch_size: i32,
    pub timeout_ms: i64,
    pub state: BatchState,
    pub metadata: Option<Value>,
    pub now_ms: i64,
}

/// One step going in flight, for [`BatchesPlan`]: its join row and its step row's new values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MemberRow {
    pub batch_uuid: Uuid,
    pub step_id: i64,
    pub sequence_order: i32,
    pub attempt: i32,
    pub now_ms: i64,
}

/// Everything a backend writes for a `batches_record` of many batches: each kind of row in one
/// statement, whatever the number of batches.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct BatchesPlan {
    /// One outcome per batch asked for, in order.
    pub outcomes: Vec<crate::records::BatchRecorded>,
    /// The batches recorded (those with at least one step included).
    pub batches: Vec<BatchRow>,
    /// The steps going in flight, batch by batch in sequence order.
    pub members: Vec<MemberRow>,
    /// Each included step's move to `in_progress`.
    pub step_transitions: Vec<TransitionRow>,
    /// Tasks moving from `pending` to `in_progress`.
    pub task_transitions: Vec<TransitionRow>,
}

/// Plans several dispatches in order against `snapshots`: each batch exactly as
/// [`plan_batch`] would, a later batch seeing the earlier ones (a step put in flight by one is
/// left out of the next; a task started by one is not started again).
///
/// # Errors
///
/// [`StoreError::InvalidInput`] for a batch not recorded as `created` or `published`, or a batch
/// id given twice.
pub(crate) fn plan_batches(
    mut snapshots: Snapshots,
    batches: &[crate::params::BatchRecord],
) -> Result<BatchesPlan, StoreError> {
    let mut plan = BatchesPlan::default();
    let mut seen = HashSet::new();
    for batch in batches {
        if !matches!(batch.state, BatchState::Created | BatchState::Published) {
            return Err(StoreError::InvalidInput {
                reason: format!(
                    "a batch is recorded as created or published, not {}",
                    batch.state
                ),
            });
        }
        if !seen.insert(batch.batch_uuid) {
            return Err(StoreError::InvalidInput {
                reason: format!("batch {} was already recorded", batch.batch_uuid),
            });
        }
        let now_ms = crate::time::to_ms(batch.now);
        let one = plan_batch(
            &snapshots,
            &batch.steps,
            batch.batch_uuid,
            batch.claimant.as_deref(),
            now_ms,
        );
        if !one.included.is_empty() {
            plan.batches.push(BatchRow {
                batch_uuid: batch.batch_uuid,
                worker_id: batch.worker_id.clone(),
                handler_class: batch.handler_class.clone(),
                orchestrator_id: batch.claimant.clone(),
                batch_size: i32::try_from(one.included.len()).unwrap_or(i32::MAX),
                timeout_ms: batch.timeout_ms,
                state: batch.state,
                metadata: batch.metadata.clone(),
                now_ms,
            });
            for dispatched in &one.included {
                plan.members.push(MemberRow {
                    batch_uuid: batch.batch_uuid,
                    step_id: dispatched.step_id,
                    sequence_order: dispatched.sequence_order,
                    attempt: dispatched.attempt,
                    now_ms,
                });
                if let Some(step) = snapshots.steps.get_mut(&dispatched.step_id) {
                    step.state = StepState::InProgress;
                    step.in_flight = Some(batch.batch_uuid);
                    step.attempts = dispatched.attempt;
                    step.last_sort_key += 1;
                }
            }
            for started in &one.task_transitions {
                if let Some(task) = snapshots.tasks.get_mut(&started.entity_id) {
                    task.state = TaskState::InProgress;
                    task.last_sort_key += 1;
                }
            }
            plan.step_transitions.extend(one.step_transitions);
            plan.task_transitions.extend(one.task_transitions);
        }
        plan.outcomes.push(crate::records::BatchRecorded {
            recorded: !one.included.is_empty(),
            included: one.included,
            refused: one.refused,
        });
    }
    Ok(plan)
}

/// Is `state` terminal for a step (never dispatched again without an operator)?
fn step_state_is_final(state: StepState) -> bool {
    matches!(
        state,
        StepState::Complete | StepState::Cancelled | StepState::ResolvedManually
    )
}

/// The deduplication key of a ledger entry; entries without a batch id are never duplicates.
pub(crate) fn ledger_dedup_key(entry: &LedgerEntry) -> Option<(String, i64, String)> {
    entry.batch_uuid.as_ref().map(|b| {
        (
            b.clone(),
            entry.step_id.unwrap_or(0),
            entry.message_kind.clone(),
        )
    })
}

/// Combines a ledger entry's own processing errors with a refusal of the change it caused.
pub(crate) fn ledger_processing_errors(
    own: Option<&Value>,
    refusal: Option<&Value>,
) -> Option<Value> {
    match (own, refusal) {
        (None, None) => None,
        (Some(own), None) => Some(own.clone()),
        (None, Some(refusal)) => Some(refusal.clone()),
        (Some(own), Some(refusal)) => Some(serde_json::json!({
            "errors": own,
            "refused": refusal["refused"],
        })),
    }
}

/// Marks the last row of each entity as the most recent one.
pub(crate) fn mark_most_recent(rows: &mut [TransitionRow]) {
    let mut last: HashMap<i64, usize> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        last.insert(row.entity_id, i);
    }
    for (i, row) in rows.iter_mut().enumerate() {
        row.most_recent = last.get(&row.entity_id) == Some(&i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::TaskChange;

    fn step(id: i64, state: StepState, in_flight: Option<Uuid>) -> StepSnapshot {
        StepSnapshot {
            step_id: id,
            task_id: 1,
            state,
            in_flight,
            unmet_parents: 0,
            attempts: 1,
            last_sort_key: 2,
        }
    }

    fn complete(id: i64, batch: Uuid) -> StepChange {
        StepChange {
            step_id: id,
            expect_state: StepState::InProgress,
            expect_batch: Some(batch),
            to_state: StepState::Complete,
            event: StepEvent::Succeed,
            metadata: None,
            results: Some(serde_json::json!({"ok": id})),
            error: None,
            backoff_until: None,
        }
    }

    #[test]
    fn a_set_with_one_refusal_writes_nothing_of_its_own() {
        let batch = Uuid::new_v4();
        let mut snaps = Snapshots::default();
        snaps
            .steps
            .insert(1, step(1, StepState::InProgress, Some(batch)));
        snaps.steps.insert(2, step(2, StepState::Complete, None));
        let sets = vec![
            ChangeSet {
                steps: vec![complete(1, batch), complete(2, batch)],
                ledger_entry: Some(0),
                ..ChangeSet::default()
            },
            ChangeSet {
                steps: vec![complete(1, batch)],
                ..ChangeSet::default()
            },
        ];
        let plan = plan_changes(snaps, &sets, None, 0);
        assert_eq!(plan.refused.len(), 1);
        assert_eq!(plan.refused[0].index, 0);
        assert_eq!(
            plan.refused[0].refusals[0].target,
            ChangeTarget::Step(2),
            "step 2 is complete, not in progress"
        );
        assert!(plan.ledger_errors.contains_key(&0));
        assert_eq!(plan.applied, vec![1]);
        assert_eq!(plan.step_updates.len(), 1);
        assert_eq!(plan.step_transitions.len(), 1);
        assert_eq!(plan.step_transitions[0].sort_key, 3);
        assert!(plan.step_transitions[0].most_recent);
    }

    #[test]
    fn later_sets_see_earlier_ones_and_repeats_are_refused() {
        let batch = Uuid::new_v4();
        let mut snaps = Snapshots::default();
        snaps
            .steps
            .insert(1, step(1, StepState::InProgress, Some(batch)));
        let sets = vec![
            ChangeSet {
                steps: vec![complete(1, batch)],
                ..ChangeSet::default()
            },
            ChangeSet {
                steps: vec![complete(1, batch)],
                ..ChangeSet::default()
            },
        ];
        let plan = plan_changes(snaps, &sets, None, 0);
        assert_eq!(plan.applied, vec![0]);
        assert_eq!(plan.refused[0].index, 1);
        assert!(matches!(
            plan.refused[0].refusals[0].reason,
            RefusalReason::StateMismatch { .. }
        ));
    }

    #[test]
    fn chained_task_changes_get_consecutive_sort_keys_and_one_most_recent() {
        let mut snaps = Snapshots::default();
        snaps.tasks.insert(
            5,
            TaskSnapshot {
                task_id: 5,
                state: TaskState::Pending,
                claimed_by: None,
                claim_expires_at: None,
                last_sort_key: 1,
            },
        );
        let set = ChangeSet {
            tasks: vec![
                TaskChange {
                    task_id: 5,
                    expect_state: TaskState::Pending,
                    to_state: TaskState::InProgress,
                    event: TaskEvent::Start,
                    metadata: None,
                },
                TaskChange {
                    task_id: 5,
                    expect_state: TaskState::InProgress,
                    to_state: TaskState::Complete,
                    event: TaskEvent::Complete,
                    metadata: None,
                },
            ],
            ..ChangeSet::default()
        };
        let plan = plan_changes(snaps, &[set], None, 0);
        let keys: Vec<_> = plan
            .task_transitions
            .iter()
            .map(|r| (r.sort_key, r.most_recent))
            .collect();
        assert_eq!(keys, vec![(2, false), (3, true)]);
        assert_eq!(
            plan.task_updates,
            vec![TaskUpdate {
                task_id: 5,
                state: TaskState::Complete
            }]
        );
    }

    #[test]
    fn claims_fence_changes() {
        let task = TaskSnapshot {
            task_id: 1,
            state: TaskState::InProgress,
            claimed_by: Some("a".into()),
            claim_expires_at: Some(100),
            last_sort_key: 1,
        };
        assert_eq!(claim_refusal(&task, Some("a"), 99), None);
        assert_eq!(
            claim_refusal(&task, Some("b"), 99),
            Some(RefusalReason::NotClaimed {
                claimed_by: Some("a".into())
            })
        );
        assert_eq!(
            claim_refusal(&task, Some("a"), 100),
            Some(RefusalReason::NotClaimed { claimed_by: None }),
            "an expired lease is no claim"
        );
        assert_eq!(claim_refusal(&task, None, 1000), None);
    }
}
