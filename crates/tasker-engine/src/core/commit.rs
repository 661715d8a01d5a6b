//! One group commit: everything pending — results and internal changes, the tasks created, the
//! dispatch of the steps the changes make ready, and the batches planned since the last commit —
//! built into one `transitions_apply`, with a [`CommitBook`] of what to do once it answers.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tasker_core::backoff::{next_retry_delay, retry_at};
use tasker_core::state::{BatchEvent, BatchState, StepEvent, StepState, TaskState};
use tasker_protocol::{BatchCompletion, PartialResult, ResultKey, StepStatus, StepSummary};
use tasker_store::{BatchChange, ChangeSet, LedgerEntry, StepChange, TaskChange, TransitionsApply};
use tasker_transport::PeerId;
use uuid::Uuid;

use crate::finalizer::{Finalization, StepFacts, finalize};
use crate::runtime::{BatchEndCause, BatchRuntime, Busy, StepRuntime};
use crate::stats::StatsCounters;

use super::intake::Class;
use super::*;

/// A result in a commit, to acknowledge afterwards.
#[derive(Debug, Clone)]
pub(super) struct BookedResult {
    pub(super) peer: PeerId,
    pub(super) key: ResultKey,
    pub(super) ledger_index: usize,
    pub(super) class: Class,
    /// The change set its application depends on.
    pub(super) set: Option<usize>,
}

/// A step's state as it will be if its change set applies.
#[derive(Debug, Clone)]
pub(super) struct Tentative {
    pub(super) index: usize,
    pub(super) step_id: i64,
    pub(super) batch_id: Uuid,
    pub(super) state: StepState,
    pub(super) results: Option<Value>,
    pub(super) error: Option<Value>,
    pub(super) backoff_until: Option<DateTime<Utc>>,
    pub(super) reported: Option<StepStatus>,
    pub(super) ended: Option<BatchEndCause>,
    pub(super) lost: bool,
    pub(super) received: Option<Instant>,
}

#[derive(Debug, Clone)]
pub(super) struct TaskSet {
    pub(super) set: usize,
    pub(super) task_id: i64,
    pub(super) tentatives: Vec<Tentative>,
    pub(super) finalization: Option<Finalization>,
}

#[derive(Debug, Clone)]
pub(super) struct BatchSet {
    pub(super) set: usize,
    pub(super) batch_id: Uuid,
    pub(super) to: BatchState,
}

/// Everything needed to finish a commit once the store answers.
#[derive(Debug, Default)]
pub(crate) struct CommitBook {
    pub(super) results: Vec<BookedResult>,
    pub(super) task_sets: Vec<TaskSet>,
    pub(super) batch_sets: Vec<BatchSet>,
    pub(super) completions: Vec<BookedCompletion>,
    pub(super) internal: Vec<CommitItem>,
    /// The batches recorded in the same transaction, in order.
    pub(super) batch_ids: Vec<Uuid>,
    /// The tasks created in the same transaction, and the creations (each with its number of
    /// tasks) to answer.
    pub(super) created: Vec<tasker_store::NewTask>,
    pub(super) creations: Vec<(crate::core::Creation, usize)>,
    /// The time the transaction writes on its rows.
    pub(super) now: DateTime<Utc>,
}

/// A batch completion in a commit, noted on the batch once its change set applied.
#[derive(Debug, Clone)]
pub(super) struct BookedCompletion {
    pub(super) batch_id: Uuid,
    pub(super) summaries: Vec<StepSummary>,
    pub(super) set: Option<usize>,
    pub(super) findings: Vec<Value>,
}

#[derive(Debug, Default)]
pub(super) struct TaskGroup {
    pub(super) changes: Vec<StepChange>,
    pub(super) tentatives: Vec<Tentative>,
    pub(super) ledger_first: Option<usize>,
    pub(super) results: Vec<usize>,
}

#[derive(Debug, Default)]
pub(super) struct BatchTouch {
    pub(super) receive_result: bool,
    pub(super) reported: HashMap<i64, StepStatus>,
    pub(super) ended: Vec<(i64, BatchEndCause)>,
    pub(super) completion: Option<(Vec<StepSummary>, usize, usize)>,
    /// Reconciliation findings of that completion (empty: consistent).
    pub(super) findings: Vec<Value>,
    pub(super) close: bool,
}

/// A task's steps made ready by the group's tentative outcomes, with the outputs (by step index)
/// their requests carry in `previous_results`.
pub(super) type ChildrenReady = (i64, Vec<usize>, Vec<(usize, Value)>);

/// The parts of a group commit being built, item by item.
#[derive(Debug, Default)]
pub(super) struct GroupDraft {
    ledger: Vec<LedgerEntry>,
    book: CommitBook,
    groups: BTreeMap<i64, TaskGroup>,
    touched: BTreeMap<Uuid, BatchTouch>,
    finalize_only: BTreeSet<i64>,
}

impl EngineCore {
    /// Starts a group commit of everything pending — results and internal changes, the dispatch
    /// of the steps they make ready, and the batches planned since the last commit — unless one
    /// is in flight (then everything waits and joins the next group).
    pub(crate) fn start_commit(&mut self, now: DateTime<Utc>) {
        if self.commit_in_flight {
            return;
        }
        if self.paused_until.is_some_and(|until| until > now) {
            // The store just failed: give it a moment instead of hammering it.
            return;
        }
        // Before recovery ends, results may be for tasks still being loaded after a restart:
        // classifying them now would reject them. They wait (unacknowledged) until recovery has
        // loaded the tasks; batches planned for tasks already loaded go ahead.
        let take = if self.recovered {
            self.pending_items
                .len()
                .min(self.options.max_results_per_commit)
        } else {
            0
        };
        if take == 0 && !self.has_unrecorded_batches() && self.creations.is_empty() {
            return;
        }
        let items: Vec<CommitItem> = self.pending_items.drain(..take).collect();
        let mut draft = GroupDraft::default();

        for item in items {
            match item {
                CommitItem::Partial {
                    peer,
                    worker_id,
                    raw,
                    result,
                    received,
                } => self.book_partial(&mut draft, peer, worker_id, raw, result, received, now),
                CommitItem::Completion {
                    peer,
                    worker_id,
                    raw,
                    completion,
                } => self.book_completion(&mut draft, peer, worker_id, raw, completion, now),
                CommitItem::Lost {
                    batch_id,
                    step_id,
                    cause,
                } => self.book_loss(&mut draft, batch_id, step_id, cause, now),
                CommitItem::Requeue {
                    batch_id,
                    step_id,
                    cause,
                } => self.book_requeue(&mut draft, batch_id, step_id, cause),
                CommitItem::Finalize { task_id } => {
                    draft.finalize_only.insert(task_id);
                }
                CommitItem::CloseBatch { batch_id } => {
                    draft.touched.entry(batch_id).or_default().close = true;
                    draft
                        .book
                        .internal
                        .push(CommitItem::CloseBatch { batch_id });
                }
            }
        }

        let GroupDraft {
            ledger,
            mut book,
            mut groups,
            touched,
            finalize_only,
        } = draft;
        let mut changes: Vec<ChangeSet> = Vec::new();
        let mut children_to_plan = Vec::new();
        for task_id in &finalize_only {
            groups.entry(*task_id).or_default();
        }
        self.plan_task_sets(groups, &mut changes, &mut book, &mut children_to_plan, now);
        self.plan_batch_sets(touched, &mut changes, &mut book);
        self.plan_children(children_to_plan, now);
        let batches = self.take_unrecorded();
        let (tasks, creations) = self.take_creations(now);
        if ledger.is_empty() && changes.is_empty() && batches.is_empty() && tasks.is_empty() {
            return;
        }
        book.batch_ids = batches.iter().map(|b| b.batch_uuid).collect();
        book.now = now;
        book.creations = creations;
        book.created.clone_from(&tasks);
        self.commit_in_flight = true;
        let params = TransitionsApply {
            now,
            claimant: Some(self.options.orchestrator_id.clone()),
            ledger,
            changes,
            all_or_nothing: false,
            batches,
            tasks,
        };
        self.push(Action::Commit {
            params,
            book: Box::new(book),
        });
    }

    /// One change set per task touched by the group: its steps' changes, and its own transition
    /// when they finish it (decided on the tentative states); the children they make ready are
    /// noted for dispatch in the same commit.
    fn plan_task_sets(
        &mut self,
        groups: BTreeMap<i64, TaskGroup>,
        changes: &mut Vec<ChangeSet>,
        book: &mut CommitBook,
        children_to_plan: &mut Vec<ChildrenReady>,
        now: DateTime<Utc>,
    ) {
        for (task_id, group) in groups {
            let Some(task) = self.tasks.get_mut(&task_id) else {
                continue;
            };
            let mut views = task.views();
            let mut errors: Vec<Option<Value>> =
                task.steps.iter().map(|s| s.last_error.clone()).collect();
            for t in &group.tentatives {
                let view = &mut views[t.index];
                view.state = t.state;
                view.in_flight = false;
                view.backoff_until = t.backoff_until;
                if t.error.is_some() {
                    errors[t.index].clone_from(&t.error);
                }
                view.retryable = task.steps[t.index].retryable
                    && crate::engine::last_failure_retryable(errors[t.index].as_ref());
            }
            let changed: HashSet<usize> = group.tentatives.iter().map(|t| t.index).collect();
            let children_ready: Vec<usize> = tasker_core::readiness::ready_steps(&views, now)
                .into_iter()
                .filter(|index| !changed.contains(index))
                .collect();
            let finalization = if matches!(task.state, TaskState::Pending | TaskState::InProgress) {
                let facts: Vec<StepFacts<'_>> = task
                    .steps
                    .iter()
                    .zip(&errors)
                    .map(|(s, e)| StepFacts {
                        step_id: s.step_id,
                        name: &s.name,
                        last_error: e.as_ref(),
                    })
                    .collect();
                finalize(task.state, &views, &facts, now)
            } else {
                None
            };
            if group.changes.is_empty() && finalization.is_none() {
                task.finishing = false;
                continue;
            }
            if !children_ready.is_empty() {
                let outputs = group
                    .tentatives
                    .iter()
                    .filter(|t| t.state == StepState::Complete)
                    .filter_map(|t| t.results.clone().map(|r| (t.index, r)))
                    .collect();
                children_to_plan.push((task_id, children_ready, outputs));
            }
            let tasks_changes = finalization
                .iter()
                .map(|f| TaskChange {
                    task_id,
                    expect_state: task.state,
                    to_state: f.to,
                    event: f.event,
                    metadata: Some(f.metadata()),
                })
                .collect();
            if finalization.is_some() {
                task.finishing = true;
            }
            let set = changes.len();
            changes.push(ChangeSet {
                steps: group.changes,
                tasks: tasks_changes,
                batches: Vec::new(),
                ledger_entry: group.ledger_first,
            });
            for r in group.results {
                book.results[r].set = Some(set);
            }
            book.task_sets.push(TaskSet {
                set,
                task_id,
                tentatives: group.tentatives,
                finalization,
            });
        }
    }

    /// One change set per batch touched by the group: received a result, completed (reconciled
    /// with its completion), failed or timed out once all its steps ended.
    fn plan_batch_sets(
        &mut self,
        touched: BTreeMap<Uuid, BatchTouch>,
        changes: &mut Vec<ChangeSet>,
        book: &mut CommitBook,
    ) {
        for (batch_id, touch) in touched {
            let Some(batch) = self.batches.get(&batch_id) else {
                continue;
            };
            let mut batch_changes = Vec::new();
            let mut state = batch.state;
            if batch.complete_list {
                let findings = if touch.completion.is_some() {
                    &touch.findings
                } else {
                    &batch.findings
                };
                let reconciliation = if findings.is_empty() {
                    json!({ "reconciliation": "consistent" })
                } else {
                    json!({ "reconciliation": "discrepancies", "findings": findings })
                };
                let mut step = |event: BatchEvent, state: &mut BatchState| {
                    if let Ok(transition) = state.transition(event)
                        && transition.is_changed()
                    {
                        let metadata = match event {
                            BatchEvent::Complete => Some(reconciliation.clone()),
                            BatchEvent::Fail | BatchEvent::TimeOut => {
                                Some(json!({ "reconciliation": "no_completion" }))
                            }
                            _ => None,
                        };
                        batch_changes.push(BatchChange {
                            batch_uuid: batch_id,
                            expect_state: *state,
                            to_state: transition.target(),
                            event,
                            metadata,
                        });
                        *state = transition.target();
                    }
                };
                if touch.receive_result {
                    step(BatchEvent::ReceiveResult, &mut state);
                }
                let ended: HashSet<i64> = touch.ended.iter().map(|(s, _)| *s).collect();
                let all_done = batch
                    .open
                    .iter()
                    .all(|s| touch.reported.contains_key(s) || ended.contains(s));
                let completion_known = batch.completion.is_some() || touch.completion.is_some();
                let end_cause = batch
                    .ended_without_result
                    .or_else(|| touch.ended.first().map(|(_, c)| *c));
                if all_done && !state.is_terminal() {
                    let event = if completion_known {
                        Some(BatchEvent::Complete)
                    } else {
                        match end_cause {
                            Some(BatchEndCause::TimedOut) => Some(BatchEvent::TimeOut),
                            Some(BatchEndCause::WorkerLost | BatchEndCause::NotRun) => {
                                Some(BatchEvent::Fail)
                            }
                            None if touch.close => Some(BatchEvent::Fail),
                            None => None,
                        }
                    };
                    if let Some(event) = event {
                        step(event, &mut state);
                    }
                }
            }
            let set = if batch_changes.is_empty() {
                None
            } else {
                let set = changes.len();
                changes.push(ChangeSet {
                    steps: Vec::new(),
                    tasks: Vec::new(),
                    batches: batch_changes,
                    ledger_entry: touch.completion.as_ref().map(|(_, _, l)| *l),
                });
                book.batch_sets.push(BatchSet {
                    set,
                    batch_id,
                    to: state,
                });
                Some(set)
            };
            if let Some((summaries, result_index, _)) = touch.completion {
                book.results[result_index].set = set;
                book.completions.push(BookedCompletion {
                    batch_id,
                    summaries,
                    set,
                    findings: touch.findings,
                });
            }
        }
    }

    /// A step's result: its ledger entry, and when it is the current attempt's, its change.
    #[allow(clippy::too_many_arguments)]
    fn book_partial(
        &mut self,
        draft: &mut GroupDraft,
        peer: PeerId,
        worker_id: String,
        raw: String,
        result: PartialResult,
        received: Instant,
        now: DateTime<Utc>,
    ) {
        let ledger_index = draft.ledger.len();
        draft.ledger.push(LedgerEntry {
            batch_uuid: Some(result.batch_id.to_string()),
            step_id: Some(result.step_id),
            message_kind: tasker_store::LEDGER_PARTIAL_RESULT.to_owned(),
            worker_id: Some(worker_id.clone()),
            sequence: i64::try_from(result.sequence).ok(),
            status: Some(result.status.as_str().to_owned()),
            execution_time_ms: i64::try_from(result.execution_time_ms).ok(),
            raw_message: raw,
            processing_errors: None,
        });
        let result_index = draft.book.results.len();
        let class = self.classify_partial(&result, &worker_id);
        draft.book.results.push(BookedResult {
            peer,
            key: result.key(),
            ledger_index,
            class,
            set: None,
        });
        if class != Class::Applicable {
            return;
        }
        let Some((task_id, index)) = self.step_index.get(&result.step_id).copied() else {
            return;
        };
        let Some(task) = self.tasks.get_mut(&task_id) else {
            return;
        };
        let step = &mut task.steps[index];
        step.busy = Busy::Committing;
        let policy = step.backoff.unwrap_or(self.options.default_backoff);
        let backoff = Backoff {
            policy,
            sample: rand::Rng::random::<f64>(&mut self.jitter),
        };
        let (change, tentative) =
            result_change(step, index, &result, &worker_id, received, backoff, now);
        let group = draft.groups.entry(task_id).or_default();
        group.changes.push(change);
        group.tentatives.push(tentative);
        group.ledger_first.get_or_insert(ledger_index);
        group.results.push(result_index);
        let touch = draft.touched.entry(result.batch_id).or_default();
        touch.receive_result = true;
        touch.reported.insert(result.step_id, result.status);
    }

    /// A batch completion: its ledger entry, reconciled with the partial results.
    #[allow(clippy::too_many_arguments)]
    fn book_completion(
        &mut self,
        draft: &mut GroupDraft,
        peer: PeerId,
        worker_id: String,
        raw: String,
        completion: BatchCompletion,
        _now: DateTime<Utc>,
    ) {
        let ledger_index = draft.ledger.len();
        draft.ledger.push(LedgerEntry {
            batch_uuid: Some(completion.batch_id.to_string()),
            step_id: None,
            message_kind: tasker_store::LEDGER_BATCH_COMPLETION.to_owned(),
            worker_id: Some(worker_id.clone()),
            sequence: None,
            status: Some(
                if completion.failed_steps == 0 {
                    "completed"
                } else {
                    "completed_with_failures"
                }
                .to_owned(),
            ),
            execution_time_ms: None,
            raw_message: raw,
            processing_errors: None,
        });
        let result_index = draft.book.results.len();
        let already = draft
            .touched
            .get(&completion.batch_id)
            .is_some_and(|t| t.completion.is_some());
        let class = if already {
            Class::Fenced
        } else {
            self.classify_completion(&completion, &worker_id)
        };
        draft.book.results.push(BookedResult {
            peer,
            key: completion.key(),
            ledger_index,
            class,
            set: None,
        });
        if class != Class::Applicable {
            return;
        }
        let touch = draft.touched.entry(completion.batch_id).or_default();
        touch.findings.clear();
        if let Some(batch) = self.batches.get(&completion.batch_id) {
            let findings = reconcile(batch, &touch.reported, &completion.step_summaries);
            if !findings.is_empty() {
                StatsCounters::add(&self.stats.reconciliation_discrepancies, 1);
                tracing::warn!(
                    batch_id = %completion.batch_id,
                    worker_id,
                    ?findings,
                    "batch completion disagrees with the partial results; the partial results stand"
                );
                draft.ledger[ledger_index].processing_errors =
                    Some(json!({ "reconciliation": findings }));
            }
            touch.findings = findings;
        }
        touch.completion = Some((completion.step_summaries, result_index, ledger_index));
    }

    /// The step of an attempt still open in `batch_id` and not being changed already, marked as
    /// changing in this group: `(task id, step index)`. `None` when its attempt is over or another
    /// change of it is under way (that change wins; this one is dropped).
    fn take_open_attempt(&mut self, batch_id: Uuid, step_id: i64) -> Option<(i64, usize)> {
        let (task_id, index) = self.step_index.get(&step_id).copied()?;
        let step = &mut self.tasks.get_mut(&task_id)?.steps[index];
        if step.in_flight != Some(batch_id) || step.busy != Busy::Idle {
            return None;
        }
        step.busy = Busy::Committing;
        Some((task_id, index))
    }

    /// An attempt that ended without a result: failed (retryable unless the cause says not).
    fn book_loss(
        &mut self,
        draft: &mut GroupDraft,
        batch_id: Uuid,
        step_id: i64,
        cause: LossCause,
        now: DateTime<Utc>,
    ) {
        let Some((task_id, index)) = self.take_open_attempt(batch_id, step_id) else {
            return;
        };
        let Some(task) = self.tasks.get_mut(&task_id) else {
            return;
        };
        let step = &mut task.steps[index];
        let policy = step.backoff.unwrap_or(self.options.default_backoff);
        let backoff = Backoff {
            policy,
            sample: rand::Rng::random::<f64>(&mut self.jitter),
        };
        let (change, tentative) = loss_change(step, index, batch_id, cause, backoff, now);
        let group = draft.groups.entry(task_id).or_default();
        group.changes.push(change);
        group.tentatives.push(tentative);
        draft
            .touched
            .entry(batch_id)
            .or_default()
            .ended
            .push((step_id, cause.batch_end()));
        draft.book.internal.push(CommitItem::Lost {
            batch_id,
            step_id,
            cause,
        });
    }

    /// An attempt that never reached its worker: back to `pending`, not counted.
    fn book_requeue(
        &mut self,
        draft: &mut GroupDraft,
        batch_id: Uuid,
        step_id: i64,
        cause: &'static str,
    ) {
        let Some((task_id, index)) = self.take_open_attempt(batch_id, step_id) else {
            return;
        };
        let Some(task) = self.tasks.get_mut(&task_id) else {
            return;
        };
        let step = &mut task.steps[index];
        let change = StepChange {
            step_id,
            expect_state: StepState::InProgress,
            expect_batch: Some(batch_id),
            to_state: StepState::Pending,
            event: StepEvent::Requeue,
            metadata: Some(json!({ "batch_id": batch_id, "reason": cause })),
            results: None,
            error: None,
            backoff_until: None,
        };
        let group = draft.groups.entry(task_id).or_default();
        group.changes.push(change);
        group.tentatives.push(Tentative {
            index,
            step_id,
            batch_id,
            state: StepState::Pending,
            results: None,
            error: None,
            backoff_until: None,
            reported: None,
            ended: Some(BatchEndCause::NotRun),
            lost: false,
            received: step.ready_since,
        });
        draft
            .touched
            .entry(batch_id)
            .or_default()
            .ended
            .push((step_id, BatchEndCause::NotRun));
        draft.book.internal.push(CommitItem::Requeue {
            batch_id,
            step_id,
            cause,
        });
    }
}

/// A step's backoff policy and the jitter drawn for this failure.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    pub(super) policy: tasker_core::backoff::BackoffPolicy,
    pub(super) sample: f64,
}

/// The change and tentative state for a worker's result on its current attempt.
pub(super) fn result_change(
    step: &StepRuntime,
    index: usize,
    result: &PartialResult,
    worker_id: &str,
    received: Instant,
    backoff: Backoff,
    now: DateTime<Utc>,
) -> (StepChange, Tentative) {
    let metadata = json!({
        "batch_id": result.batch_id,
        "attempt": result.attempt,
        "worker_id": worker_id,
        "execution_time_ms": result.execution_time_ms,
    });
    match &result.error {
        None if result.status == StepStatus::Completed => (
            StepChange {
                step_id: step.step_id,
                expect_state: StepState::InProgress,
                expect_batch: Some(result.batch_id),
                to_state: StepState::Complete,
                event: StepEvent::Succeed,
                metadata: Some(metadata),
                results: Some(result.output.clone()),
                error: None,
                backoff_until: None,
            },
            Tentative {
                index,
                step_id: step.step_id,
                batch_id: result.batch_id,
                state: StepState::Complete,
                results: Some(result.output.clone()),
                error: None,
                backoff_until: None,
                reported: Some(result.status),
                ended: None,
                lost: false,
                received: Some(received),
            },
        ),
        error => {
            let (message, error_class, retryable, retry_after_ms, backtrace) = match error {
                Some(e) => (
                    e.message.clone(),
                    e.error_class.clone(),
                    e.retryable,
                    e.retry_after_ms,
                    e.backtrace.clone(),
                ),
                None => (
                    "failed without an error".to_owned(),
                    "tasker.unknown".to_owned(),
                    true,
                    None,
                    Vec::new(),
                ),
            };
            let error_json = json!({
                "message": message,
                "error_class": error_class,
                "retryable": retryable,
                "retry_after_ms": retry_after_ms,
                "backtrace": backtrace,
                "batch_id": result.batch_id,
                "attempt": result.attempt,
                "worker_id": worker_id,
            });
            let backoff_until = backoff_for(
                step,
                retryable,
                backoff.policy,
                retry_after_ms.map(Duration::from_millis),
                backoff.sample,
                now,
            );
            let mut metadata = metadata;
            metadata["error_class"] = json!(error_class);
            metadata["retryable"] = json!(retryable);
            metadata["backoff_until"] = json!(backoff_until);
            (
                StepChange {
                    step_id: step.step_id,
                    expect_state: StepState::InProgress,
                    expect_batch: Some(result.batch_id),
                    to_state: StepState::Error,
                    event: StepEvent::Fail,
                    metadata: Some(metadata),
                    results: None,
                    error: Some(error_json.clone()),
                    backoff_until,
                },
                Tentative {
                    index,
                    step_id: step.step_id,
                    batch_id: result.batch_id,
                    state: StepState::Error,
                    results: None,
                    error: Some(error_json),
                    backoff_until,
                    reported: Some(result.status),
                    ended: None,
                    lost: false,
                    received: None,
                },
            )
        }
    }
}

/// The change and tentative state for an attempt that ended without a result.
pub(super) fn loss_change(
    step: &StepRuntime,
    index: usize,
    batch_id: Uuid,
    cause: LossCause,
    backoff: Backoff,
    now: DateTime<Utc>,
) -> (StepChange, Tentative) {
    let error_json = json!({
        "message": cause.message(),
        "error_class": cause.error_class(),
        "retryable": cause.retryable(),
        "retry_after_ms": null,
        "backtrace": [],
        "batch_id": batch_id,
        "attempt": step.attempts,
        "worker_id": step.worker,
    });
    let backoff_until = backoff_for(
        step,
        cause.retryable(),
        backoff.policy,
        None,
        backoff.sample,
        now,
    );
    (
        StepChange {
            step_id: step.step_id,
            expect_state: StepState::InProgress,
            expect_batch: Some(batch_id),
            to_state: StepState::Error,
            event: StepEvent::Fail,
            metadata: Some(json!({
                "batch_id": batch_id,
                "attempt": step.attempts,
                "error_class": cause.error_class(),
                "retryable": cause.retryable(),
                "backoff_until": backoff_until,
            })),
            results: None,
            error: Some(error_json.clone()),
            backoff_until,
        },
        Tentative {
            index,
            step_id: step.step_id,
            batch_id,
            state: StepState::Error,
            results: None,
            error: Some(error_json),
            backoff_until,
            reported: None,
            ended: Some(cause.batch_end()),
            lost: matches!(cause, LossCause::WorkerLost | LossCause::NotListed),
            received: None,
        },
    )
}

/// When a failed step may be retried: `None` when no retry is allowed, otherwise the failure
/// time plus the handler's `retry_after` or the policy's delay, jittered by `sample` (a number in
/// `[0, 1)` from the engine's seeded generator).
pub(crate) fn backoff_for(
    step: &StepRuntime,
    failure_retryable: bool,
    policy: tasker_core::backoff::BackoffPolicy,
    retry_after: Option<Duration>,
    sample: f64,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let retry_allowed = step.retryable && failure_retryable && step.attempts < step.retry_limit;
    retry_allowed.then(|| {
        let until = retry_at(
            now,
            next_retry_delay(&policy, step.attempts.max(1), retry_after, sample),
        );
        // The store keeps milliseconds: round up so the stored time is never early.
        let ms = until.timestamp_millis();
        let whole = DateTime::from_timestamp_millis(ms).unwrap_or(until);
        if whole < until {
            DateTime::from_timestamp_millis(ms + 1).unwrap_or(until)
        } else {
            whole
        }
    })
}

/// Compares a batch completion's summaries with the partial results recorded for the batch
/// (spec §9.6). A step without a recorded partial result is not a discrepancy: its result is
/// still on its way (the worker holds it until acknowledged). Returns the findings.
pub(crate) fn reconcile(
    batch: &BatchRuntime,
    in_this_commit: &HashMap<i64, StepStatus>,
    summaries: &[StepSummary],
) -> Vec<Value> {
    let mut findings = Vec::new();
    for summary in summaries {
        let member = batch.steps.iter().any(|s| s.step_id == summary.step_id);
        if !member && batch.complete_list {
            findings.push(json!({ "step_id": summary.step_id, "finding": "not_in_batch" }));
            continue;
        }
        let recorded = batch
            .reported
            .get(&summary.step_id)
            .or_else(|| in_this_commit.get(&summary.step_id));
        if let Some(status) = recorded
            && *status != summary.status
        {
            findings.push(json!({
                "step_id": summary.step_id,
                "finding": "status_differs",
                "partial_result": status.as_str(),
                "summary": summary.status.as_str(),
            }));
        }
    }
    if batch.complete_list {
        for member in &batch.steps {
            if !summaries.iter().any(|s| s.step_id == member.step_id) {
                findings.push(json!({ "step_id": member.step_id, "finding": "missing_summary" }));
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::BatchStep;

    fn batch(steps: &[i64]) -> BatchRuntime {
        BatchRuntime {
            worker_id: Some("w".into()),
            steps: steps
                .iter()
                .map(|&step_id| BatchStep {
                    step_id,
                    task_id: 1,
                    attempt: 1,
                })
                .collect(),
            complete_list: true,
            state: BatchState::Executing,
            reported: HashMap::new(),
            open: steps.iter().copied().collect(),
            completion: None,
            findings: Vec::new(),
            ended_without_result: None,
        }
    }

    fn summary(step_id: i64, status: StepStatus) -> StepSummary {
        StepSummary { step_id, status }
    }

    #[test]
    fn consistent_completion_has_no_findings() {
        let mut b = batch(&[1, 2]);
        b.reported.insert(1, StepStatus::Completed);
        let mut now = HashMap::new();
        now.insert(2, StepStatus::Failed);
        let findings = reconcile(
            &b,
            &now,
            &[
                summary(1, StepStatus::Completed),
                summary(2, StepStatus::Failed),
            ],
        );
        assert!(findings.is_empty(), "{findings:?}");
    }

    #[test]
    fn disagreements_and_strangers_are_found() {
        let mut b = batch(&[1, 2, 3]);
        b.reported.insert(1, StepStatus::Completed);
        let findings = reconcile(
            &b,
            &HashMap::new(),
            &[
                summary(1, StepStatus::Failed),
                summary(2, StepStatus::Completed),
                summary(9, StepStatus::Completed),
            ],
        );
        let kinds: Vec<&str> = findings
            .iter()
            .map(|f| f["finding"].as_str().expect("finding"))
            .collect();
        assert_eq!(
            kinds,
            vec!["status_differs", "not_in_batch", "missing_summary"]
        );
        assert_eq!(findings[0]["step_id"], 1);
        assert_eq!(findings[2]["step_id"], 3);
    }

    fn step(attempts: u32, retry_limit: u32, retryable: bool) -> StepRuntime {
        StepRuntime {
            step_id: 1,
            name: "s".into(),
            handler_class: "x".into(),
            handler_config: Default::default(),
            retryable,
            retry_limit,
            timeout_ms: None,
            backoff: None,
            parents: Vec::new(),
            state: StepState::InProgress,
            attempts,
            backoff_until: None,
            results: None,
            last_error: None,
            in_flight: None,
            deadline: None,
            worker: None,
            busy: Busy::Idle,
            ready_since: None,
            created_at: DateTime::UNIX_EPOCH,
            updated_at: DateTime::UNIX_EPOCH,
            last_attempted_at: None,
            stored_deadline: None,
        }
    }

    #[test]
    fn backoff_follows_the_policy_and_the_handlers_wish() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let policy = tasker_core::backoff::BackoffPolicy {
            base_delay_ms: 1000,
            max_delay_ms: 60_000,
            multiplier: 2.0,
            jitter: 0.0,
        };
        let second = backoff_for(&step(2, 3, true), true, policy, None, 0.5, now).expect("retry");
        assert_eq!(
            second - now,
            chrono::TimeDelta::seconds(2),
            "base × 2^(2-1)"
        );
        let asked = backoff_for(
            &step(1, 3, true),
            true,
            policy,
            Some(Duration::from_millis(250)),
            0.5,
            now,
        )
        .expect("retry");
        assert_eq!(asked - now, chrono::TimeDelta::milliseconds(250));
        assert_eq!(
            backoff_for(&step(3, 3, true), true, policy, None, 0.5, now),
            None,
            "exhausted"
        );
        assert_eq!(
            backoff_for(&step(1, 3, false), true, policy, None, 0.5, now),
            None,
            "step not retryable"
        );
        assert_eq!(
            backoff_for(&step(1, 3, true), false, policy, None, 0.5, now),
            None,
            "failure not retryable"
        );
    }
}
