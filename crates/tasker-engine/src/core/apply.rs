//! The answer to a group commit: what the store applied is applied to memory (steps, batches,
//! finished tasks and their dead letters), the batches recorded are sent, and every result is
//! acknowledged — only now, after the commit.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tasker_core::state::{StepState, TaskState};
use tasker_protocol::{
    AckEntry, AckOutcome, OrchestratorMessage, PROTOCOL_VERSION, ResultAck, StepStatus,
};
use tasker_store::{LedgerOutcome, StoreError, TransitionsApplied};
use tasker_transport::PeerId;
use uuid::Uuid;

use crate::runtime::{BatchEndCause, Busy};
use crate::stats::StatsCounters;

use super::commit::TaskSet;
use super::intake::Class;
use super::*;

/// Most acknowledgements in one `result_ack`.
const ACKS_PER_MESSAGE: usize = 500;

impl EngineCore {
    /// The store answered a group commit.
    pub(crate) fn on_commit_done(
        &mut self,
        mut book: CommitBook,
        result: Result<TransitionsApplied, StoreError>,
        now: DateTime<Utc>,
    ) {
        self.commit_in_flight = false;
        StatsCounters::add(&self.stats.commits, 1);
        StatsCounters::add(&self.stats.results_committed, book.results.len() as u64);
        let applied = match result {
            Ok(applied) => applied,
            Err(error) => {
                tracing::error!(%error, results = book.results.len(), "group commit failed; results stay unacknowledged (workers re-send them)");
                self.on_tasks_created(
                    std::mem::take(&mut book.created),
                    std::mem::take(&mut book.creations),
                    Err(error.clone()),
                    now,
                );
                self.on_batches_recorded(book.batch_ids.clone(), Err(error), now);
                for set in &book.task_sets {
                    if let Some(task) = self.tasks.get_mut(&set.task_id) {
                        for t in &set.tentatives {
                            if task.steps[t.index].busy == Busy::Committing {
                                task.steps[t.index].busy = Busy::Idle;
                            }
                        }
                        task.finishing = false;
                    }
                    self.dirty.insert(set.task_id);
                }
                self.retry_items.extend(book.internal);
                self.pause(now);
                return;
            }
        };
        let applied_sets: HashSet<usize> = applied.applied.iter().copied().collect();
        let mut resync = Vec::new();
        for set in book.task_sets {
            if applied_sets.contains(&set.set) {
                self.apply_task_set(set, book.now, now);
            } else {
                let refusals = applied
                    .refused
                    .iter()
                    .find(|r| r.index == set.set)
                    .map(|r| r.refusals.clone())
                    .unwrap_or_default();
                tracing::warn!(
                    task_id = set.task_id,
                    ?refusals,
                    "store refused a change set; resynchronising the task"
                );
                if let Some(task) = self.tasks.get_mut(&set.task_id) {
                    for t in &set.tentatives {
                        if task.steps[t.index].busy == Busy::Committing {
                            task.steps[t.index].busy = Busy::Idle;
                        }
                    }
                    task.finishing = false;
                }
                resync.push(set.task_id);
            }
        }
        if !resync.is_empty() {
            self.push(Action::LoadTasks(resync));
        }
        for set in book.batch_sets {
            if applied_sets.contains(&set.set) {
                if let Some(batch) = self.batches.get_mut(&set.batch_id) {
                    batch.state = set.to;
                }
            } else {
                tracing::debug!(batch_id = %set.batch_id, "store refused a batch transition");
            }
        }
        for completion in book.completions {
            if completion.set.is_none_or(|s| applied_sets.contains(&s))
                && let Some(batch) = self.batches.get_mut(&completion.batch_id)
            {
                batch.completion = Some(completion.summaries);
                batch.findings = completion.findings;
            }
        }
        // The dispatches recorded in the same transaction, after the changes that made their steps
        // ready were applied to memory above: each batch is sent now (before the acks, which are
        // not on the path to the next step).
        self.on_tasks_created(
            std::mem::take(&mut book.created),
            std::mem::take(&mut book.creations),
            Ok(applied.tasks),
            now,
        );
        self.on_batches_recorded(
            std::mem::take(&mut book.batch_ids),
            Ok(applied.batches),
            now,
        );
        let mut closed: Vec<Uuid> = self
            .batches
            .iter()
            .filter(|(_, b)| b.state.is_terminal() && b.open.is_empty())
            .map(|(id, _)| *id)
            .collect();
        closed.sort_unstable();
        for batch_id in closed {
            self.batches.remove(&batch_id);
        }

        let mut acks: BTreeMap<Vec<u8>, (PeerId, Vec<AckEntry>)> = BTreeMap::new();
        for booked in &book.results {
            let duplicate =
                applied.ledger.get(booked.ledger_index) == Some(&LedgerOutcome::Duplicate);
            let outcome = match booked.class {
                Class::Applicable => match booked.set {
                    Some(set) if !applied_sets.contains(&set) => continue,
                    _ => AckOutcome::Applied,
                },
                _ if duplicate => AckOutcome::Duplicate,
                Class::Fenced => AckOutcome::Fenced,
                Class::Rejected => AckOutcome::Rejected,
            };
            let counter = match outcome {
                AckOutcome::Applied => &self.stats.results_applied,
                AckOutcome::Duplicate => &self.stats.results_duplicate,
                AckOutcome::Fenced => &self.stats.results_fenced,
                AckOutcome::Rejected => &self.stats.results_rejected,
            };
            StatsCounters::add(counter, 1);
            if outcome == AckOutcome::Rejected {
                tracing::warn!(batch_id = %booked.key.batch_id, step_id = ?booked.key.step_id, "result rejected: batch never sent to this worker, step not in the batch, or wrong attempt");
            }
            acks.entry(booked.peer.as_bytes().to_vec())
                .or_insert_with(|| (booked.peer.clone(), Vec::new()))
                .1
                .push(AckEntry::new(booked.key, outcome));
        }
        for (_, (peer, entries)) in acks {
            for chunk in entries.chunks(ACKS_PER_MESSAGE) {
                self.push(Action::Send {
                    peer: peer.clone(),
                    message: OrchestratorMessage::ResultAck(ResultAck {
                        protocol_version: PROTOCOL_VERSION,
                        acks: chunk.to_vec(),
                    }),
                });
            }
        }
    }

    /// Applies a committed change set to memory.
    /// `written_at` is the time the commit wrote on the rows; `now` the time it answered.
    pub(super) fn apply_task_set(
        &mut self,
        set: TaskSet,
        written_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        let task_id = set.task_id;
        let mut ended: Vec<(Uuid, i64, Option<StepStatus>, Option<BatchEndCause>)> = Vec::new();
        let mut events = Vec::new();
        let mut lost = 0;
        {
            let Some(task) = self.tasks.get_mut(&task_id) else {
                return;
            };
            for t in set.tentatives {
                let children = task.children[t.index].clone();
                let step = &mut task.steps[t.index];
                if step.state == StepState::InProgress && t.state == StepState::Pending {
                    // A requeue: the attempt never reached a worker and does not count.
                    step.attempts = step.attempts.saturating_sub(1);
                }
                step.state = t.state;
                if t.results.is_some() {
                    step.results = t.results;
                }
                if t.error.is_some() {
                    step.last_error = t.error;
                }
                step.backoff_until = t.backoff_until;
                step.in_flight = None;
                step.deadline = None;
                step.stored_deadline = None;
                step.updated_at = stored_time(written_at);
                step.worker = None;
                step.busy = Busy::Idle;
                if t.state == StepState::Complete {
                    for child in children {
                        task.steps[child].ready_since = t.received;
                    }
                }
                if let Some(until) = t.backoff_until {
                    self.wakeups.push(std::cmp::Reverse((until, task_id)));
                }
                let step = &task.steps[t.index];
                events.push(crate::events::EngineEvent::StepChanged {
                    task_id,
                    step_id: t.step_id,
                    step_name: step.name.clone(),
                    state: t.state,
                    attempts: step.attempts,
                    backoff_until: t.backoff_until,
                });
                if t.lost {
                    lost += 1;
                }
                ended.push((t.batch_id, t.step_id, t.reported, t.ended));
            }
            task.finishing = false;
        }
        for event in events {
            self.push(Action::Publish(event));
        }
        StatsCounters::add(&self.stats.steps_lost, lost);
        for (batch_id, step_id, reported, cause) in ended {
            if let Some(batch) = self.batches.get_mut(&batch_id) {
                batch.open.remove(&step_id);
                if let Some(status) = reported {
                    batch.reported.insert(step_id, status);
                }
                if let Some(cause) = cause {
                    batch.ended_without_result.get_or_insert(cause);
                }
            }
        }
        self.dirty.insert(task_id);
        if let Some(finalization) = set.finalization {
            let mut letters = Vec::new();
            if let Some(task) = self.tasks.get_mut(&task_id) {
                task.state = finalization.to;
                if finalization.to == TaskState::Error {
                    // Every step that failed for good goes to the dead letter queue, with what
                    // an operator needs to decide: retry it, resolve it by hand, or cancel.
                    for failed in &finalization.failed_steps {
                        let reason = format!(
                            "step `{}` of task {task_id} ({}/{}) failed permanently ({}) after {} attempt(s){}",
                            failed.name,
                            task.namespace,
                            task.name,
                            failed.reason,
                            failed.attempts,
                            failed
                                .last_error
                                .as_ref()
                                .and_then(|e| e.get("message"))
                                .and_then(Value::as_str)
                                .map(|m| format!(": {m}"))
                                .unwrap_or_default()
                        );
                        let insert = tasker_store::DeadLetterInsert {
                            task_id,
                            step_id: Some(failed.step_id),
                            reason,
                            snapshot: json!({
                                "namespace": task.namespace,
                                "name": task.name,
                                "step": failed.name,
                                "failure": failed.reason,
                                "attempts": failed.attempts,
                                "last_error": failed.last_error,
                                "task_reason": finalization.reason,
                            }),
                            now,
                        };
                        letters.push(Action::DeadLetter(insert));
                    }
                }
            }
            for letter in letters {
                self.push(letter);
            }
            if matches!(
                finalization.to,
                TaskState::Complete
                    | TaskState::Error
                    | TaskState::Cancelled
                    | TaskState::ResolvedManually
            ) {
                self.finish_task(task_id, finalization.outcome(task_id));
            }
        }
    }
}
