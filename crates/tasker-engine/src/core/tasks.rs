//! Tasks the engine holds: claims and leases, loading, creations in the group commit, waiters,
//! and letting go of finished tasks.

use std::cmp::Reverse;
use std::collections::HashSet;

use chrono::{DateTime, Utc};
use tasker_core::state::TaskState;
use tasker_store::{StoreError, TaskDag};
use tokio::sync::oneshot;

use crate::error::{EngineError, EngineResult};
use crate::runtime::{BatchStep, Busy, TaskRuntime};
use crate::stats::StatsCounters;
use crate::task::TaskOutcome;

use super::*;

impl EngineCore {
    /// A held task as the store holds it, from memory (`None`: not held).
    pub(crate) fn snapshot(&self, task_id: i64) -> Option<TaskDag> {
        self.tasks.get(&task_id).map(TaskRuntime::snapshot)
    }

    /// Asks for a claim round (coalesced with one in flight).
    pub(crate) fn request_claim(&mut self) {
        if self.shutting_down {
            return;
        }
        if self.claim_in_flight {
            self.claim_again = true;
        } else {
            self.claim_in_flight = true;
            let recover = !self.recovered;
            self.push(Action::ClaimTasks { recover });
        }
    }

    /// A claim round ended; `more` when it hit its limit and more tasks may be free.
    pub(crate) fn on_claim_done(&mut self, result: Result<bool, StoreError>) {
        self.claim_in_flight = false;
        match result {
            Ok(more) => {
                self.recovered = true;
                if more {
                    self.claim_again = true;
                }
            }
            Err(error) => {
                tracing::error!(%error, "claiming tasks failed; retrying at the next poll")
            }
        }
        if self.claim_again {
            self.claim_again = false;
            self.request_claim();
        }
        if !self.claim_in_flight {
            let awaited: Vec<i64> = self.checks_after_claim.drain().collect();
            for task_id in awaited {
                if self.waiters.contains_key(&task_id) && !self.tasks.contains_key(&task_id) {
                    self.push(Action::CheckTask(task_id));
                }
            }
        }
    }

    /// Tasks read by a claim round. One the engine holds already (it created it, or an earlier
    /// round took it on) is left as memory has it: the read may predate changes committed since
    /// (a dispatch of its roots), and memory is never older than the store for a held task.
    pub(crate) fn on_tasks_claimed(&mut self, dags: Vec<TaskDag>, now: DateTime<Utc>) {
        let fresh: Vec<TaskDag> = dags
            .into_iter()
            .filter(|dag| !self.tasks.contains_key(&dag.task.task_id))
            .collect();
        if !fresh.is_empty() {
            self.on_tasks_loaded(fresh, now);
        }
    }

    /// Tasks loaded from the store: new to the engine, or read again to resynchronise after the
    /// store refused a change (the store is then the authority).
    pub(crate) fn on_tasks_loaded(&mut self, dags: Vec<TaskDag>, now: DateTime<Utc>) {
        for dag in dags {
            let task_id = dag.task.task_id;
            if !matches!(dag.task.state, TaskState::Pending | TaskState::InProgress) {
                // Finished meanwhile (by us, or by an operator).
                let outcome = outcome_of_dag(&dag, now);
                if self.tasks.contains_key(&task_id) {
                    // Held until now: subscribers learn its end as from a commit of ours.
                    self.push(Action::Publish(crate::events::EngineEvent::TaskFinished {
                        task_id,
                        state: outcome.state,
                    }));
                }
                self.forget_task(task_id);
                self.answer_waiters(task_id, &outcome);
                continue;
            }
            let mut fresh = TaskRuntime::from_dag(dag, self.options.timeout_grace);
            if let Some(old) = self.tasks.remove(&task_id) {
                // Keep what the store cannot know: batches being recorded, queue membership,
                // changes being committed, workers of attempts in flight, handoff timestamps.
                fresh.finishing = old.finishing;
                for (new, old) in fresh.steps.iter_mut().zip(old.steps.iter()) {
                    if matches!(old.busy, Busy::Dispatching | Busy::Queued)
                        && new.in_flight.is_none()
                    {
                        new.busy = old.busy;
                    }
                    if old.busy == Busy::Committing && new.in_flight == old.in_flight {
                        new.busy = Busy::Committing;
                    }
                    if new.in_flight.is_some() && new.in_flight == old.in_flight {
                        new.worker.clone_from(&old.worker);
                        new.deadline = old.deadline.or(new.deadline);
                    }
                    new.ready_since = old.ready_since;
                }
            } else {
                tracing::debug!(task_id, "task taken on");
            }
            // A worker notices a lost orchestrator within its liveness window, reconnects and
            // says hello; give it that window twice before its steps count as orphaned.
            let orphan_window = self
                .options
                .liveness_window(self.options.heartbeat_interval)
                .saturating_mul(2);
            for (index, step) in fresh.steps.iter_mut().enumerate() {
                self.step_index.insert(step.step_id, (task_id, index));
                let Some(batch_id) = step.in_flight else {
                    continue;
                };
                // The batch is in the store, so it was sent: once its attempt ends, a late result
                // for it is fenced (spec §9.4), not rejected as a batch never sent.
                self.remembered_new.push(batch_id);
                if step.worker.is_none() {
                    step.worker = self
                        .batches
                        .get(&batch_id)
                        .and_then(|b| b.worker_id.clone());
                }
                if step.worker.is_none() {
                    // A worker that said hello before this task was loaded may have listed it.
                    step.worker = self
                        .sessions
                        .values()
                        .find(|s| s.outstanding.contains(&(batch_id, step.step_id)))
                        .map(|s| s.worker_id.clone());
                    if let Some(worker_id) = &step.worker {
                        adopt_into_batch(
                            &mut self.batches,
                            batch_id,
                            worker_id,
                            BatchStep {
                                step_id: step.step_id,
                                task_id,
                                attempt: step.attempts,
                            },
                        );
                        tracing::info!(worker_id, %batch_id, step_id = step.step_id, "step in flight adopted from its worker's hello");
                    }
                }
                if let Some(deadline) = step.deadline {
                    self.deadlines
                        .push(Reverse((deadline, step.step_id, batch_id)));
                }
                if step.worker.is_none() {
                    // In flight since before a restart: a worker that still runs it will say
                    // so in its hello; if none does within the window, it is lost.
                    self.orphan_checks.push(Reverse((
                        now + delta(orphan_window),
                        step.step_id,
                        batch_id,
                    )));
                }
            }
            for batch_id in std::mem::take(&mut self.remembered_new) {
                self.remember_batch(batch_id);
            }
            self.tasks.insert(task_id, fresh);
            self.dirty.insert(task_id);
        }
        self.update_task_gauge();
    }

    /// A task could not be loaded.
    pub(crate) fn on_task_load_failed(&mut self, task_id: i64, error: &StoreError) {
        tracing::error!(task_id, %error, "loading task failed; retrying at the next poll");
    }

    /// Leases renewed: tasks not renewed are no longer ours.
    pub(crate) fn on_leases_renewed(
        &mut self,
        asked: Vec<i64>,
        result: Result<Vec<i64>, StoreError>,
    ) {
        match result {
            Ok(renewed) => {
                let renewed: HashSet<i64> = renewed.into_iter().collect();
                for task_id in asked {
                    if !renewed.contains(&task_id) && self.tasks.contains_key(&task_id) {
                        tracing::warn!(
                            task_id,
                            "lease on task lost to another orchestrator; letting it go"
                        );
                        self.forget_task(task_id);
                    }
                }
                self.update_task_gauge();
            }
            Err(error) => tracing::error!(%error, "renewing task leases failed"),
        }
    }

    /// Removes a task from memory (finished, or no longer ours).
    pub(crate) fn forget_task(&mut self, task_id: i64) {
        if let Some(task) = self.tasks.remove(&task_id) {
            for step in &task.steps {
                self.step_index.remove(&step.step_id);
            }
        }
        self.dirty.remove(&task_id);
    }

    /// A task reached a final state: answer its waiters and let it go.
    pub(crate) fn finish_task(&mut self, task_id: i64, outcome: TaskOutcome) {
        match outcome.state {
            TaskState::Complete => StatsCounters::add(&self.stats.tasks_completed, 1),
            TaskState::Error => StatsCounters::add(&self.stats.tasks_failed, 1),
            _ => {}
        }
        match outcome.state {
            TaskState::Error => {
                tracing::warn!(
                    task_id,
                    reason = outcome.reason.as_deref().unwrap_or(""),
                    "task failed"
                )
            }
            state => tracing::debug!(task_id, %state, "task finished"),
        }
        if let Some(task) = self.tasks.get(&task_id) {
            tracing::debug!(
                task_id,
                namespace = task.namespace,
                name = task.name,
                "task done"
            );
        }
        self.forget_task(task_id);
        self.to_release.push(task_id);
        self.push(Action::Publish(crate::events::EngineEvent::TaskFinished {
            task_id,
            state: outcome.state,
        }));
        self.answer_waiters(task_id, &outcome);
        self.update_task_gauge();
    }

    fn answer_waiters(&mut self, task_id: i64, outcome: &TaskOutcome) {
        if let Some(waiters) = self.waiters.remove(&task_id) {
            for waiter in waiters {
                let _ = waiter.send(Ok(outcome.clone()));
            }
        }
    }

    fn update_task_gauge(&self) {
        StatsCounters::set(&self.stats.tasks_active, self.tasks.len() as u64);
    }

    /// Tasks to create: they join the next group commit (see `start_commit`).
    pub(crate) fn on_create(
        &mut self,
        tasks: Vec<tasker_store::NewTask>,
        reply: oneshot::Sender<EngineResult<Vec<tasker_store::TaskCreated>>>,
    ) {
        if self.shutting_down {
            let _ = reply.send(Err(EngineError::Stopped));
            return;
        }
        self.creations.push_back(Creation { tasks, reply });
    }

    /// Takes the creations for the group being built — whole requests, up to
    /// `max_results_per_commit` tasks (at least one request) — each task claimed by this engine.
    pub(crate) fn take_creations(
        &mut self,
        now: DateTime<Utc>,
    ) -> (Vec<tasker_store::NewTask>, Vec<(Creation, usize)>) {
        let expires_at = now + delta(self.options.lease_duration);
        let mut tasks = Vec::new();
        let mut taken = Vec::new();
        while let Some(creation) = self.creations.front() {
            if !taken.is_empty()
                && tasks.len() + creation.tasks.len() > self.options.max_results_per_commit
            {
                break;
            }
            let Some(mut creation) = self.creations.pop_front() else {
                break;
            };
            let count = creation.tasks.len();
            for mut task in std::mem::take(&mut creation.tasks) {
                task.claim = Some(tasker_store::TaskClaim {
                    orchestrator_id: self.options.orchestrator_id.clone(),
                    expires_at,
                });
                tasks.push(task);
            }
            taken.push((creation, count));
        }
        (tasks, taken)
    }

    /// The group commit that created tasks ended: hold the new ones (already claimed; built from
    /// what was asked, not read back) and answer the callers.
    pub(crate) fn on_tasks_created(
        &mut self,
        asked: Vec<tasker_store::NewTask>,
        creations: Vec<(Creation, usize)>,
        result: Result<Vec<tasker_store::TaskCreated>, StoreError>,
        now: DateTime<Utc>,
    ) {
        let created = match result {
            Ok(created) => created,
            Err(error) => {
                for (creation, _) in creations {
                    let _ = creation.reply.send(Err(EngineError::Store(error.clone())));
                }
                return;
            }
        };
        let mut dags = Vec::new();
        let mut existing = false;
        for (task, outcome) in asked.iter().zip(&created) {
            if outcome.created {
                dags.push(crate::task::created_dag(task, outcome));
            } else {
                existing = true;
            }
        }
        if !dags.is_empty() {
            self.on_tasks_loaded(dags, now);
        }
        if existing {
            // A repeated idempotency key: the existing task may be free (say, held by an
            // orchestrator that stopped); claim it if so.
            self.request_claim();
        }
        let mut outcomes = created.into_iter();
        for (creation, count) in creations {
            let answer: Vec<tasker_store::TaskCreated> = outcomes.by_ref().take(count).collect();
            let _ = creation.reply.send(Ok(answer));
        }
    }

    /// Someone waits for a task's end.
    pub(crate) fn on_await(&mut self, task_id: i64, reply: Waiter) {
        if self.shutting_down {
            let _ = reply.send(Err(EngineError::Stopped));
            return;
        }
        let held = self.tasks.contains_key(&task_id);
        let waiters = self.waiters.entry(task_id).or_default();
        // Long polls that timed out dropped their receivers: forget them here rather than keep
        // one sender per poll until the task ends.
        waiters.retain(|waiter| !waiter.is_closed());
        waiters.push(reply);
        if held {
            return;
        }
        if self.claim_in_flight {
            // Most likely a task just created, which that claim round (or the one it asked for)
            // takes on and loads: read it only if the claims end without it.
            self.checks_after_claim.insert(task_id);
        } else {
            self.push(Action::CheckTask(task_id));
        }
    }

    /// A task someone waits for, read from the store.
    pub(crate) fn on_task_checked(
        &mut self,
        task_id: i64,
        result: Result<TaskDag, StoreError>,
        now: DateTime<Utc>,
    ) {
        if self.tasks.contains_key(&task_id) {
            return;
        }
        match result {
            Ok(dag) if matches!(dag.task.state, TaskState::Pending | TaskState::InProgress) => {
                // Unfinished and not ours (yet): claim it if it is free; re-checked every poll.
                self.request_claim();
            }
            Ok(dag) => {
                let outcome = outcome_of_dag(&dag, now);
                self.answer_waiters(task_id, &outcome);
            }
            Err(StoreError::NotFound { .. }) => {
                if let Some(waiters) = self.waiters.remove(&task_id) {
                    for waiter in waiters {
                        let _ = waiter.send(Err(EngineError::TaskNotFound { task_id }));
                    }
                }
            }
            Err(error) => {
                tracing::warn!(task_id, %error, "reading a task for its waiters failed; retrying at the next poll");
            }
        }
    }
}
