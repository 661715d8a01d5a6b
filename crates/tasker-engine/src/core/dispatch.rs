//! Dispatch: ready steps queued (started tasks first), batches planned within workers' credit,
//! recorded in the next group commit, and sent once that commit is durable.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tasker_core::readiness::{next_wakeup, ready_steps};
use tasker_core::state::{StepState, TaskState};
use tasker_protocol::{
    OrchestratorMessage, PROTOCOL_VERSION, StepBatch, StepMetadata, StepRequest,
};
use tasker_store::{BatchRecord, BatchRecorded, StoreError};
use tasker_transport::TransportError;
use uuid::Uuid;

use crate::dispatcher::{Candidate, WorkerCredit, plan_batches};
use crate::finalizer::StepFacts;
use crate::runtime::{BatchRuntime, BatchStep, Busy};
use crate::stats::StatsCounters;

use super::*;

impl EngineCore {
    /// Finds ready steps of changed tasks, queues them, and plans batches for workers with
    /// credit. Also queues the finalization of tasks that have nothing left to do. The batches
    /// planned wait for the next group commit ([`start_commit`](Self::start_commit)), which
    /// records them together with the results and other changes it carries.
    pub(crate) fn dispatch(&mut self, now: DateTime<Utc>) {
        self.plan(now);
    }

    /// Whether batches are planned and waiting for the next group commit.
    pub(crate) fn has_unrecorded_batches(&self) -> bool {
        !self.unrecorded.is_empty()
    }

    /// Takes every batch planned and not yet recorded, for the group commit being built: they
    /// are recorded in its transaction, after its changes.
    pub(crate) fn take_unrecorded(&mut self) -> Vec<BatchRecord> {
        let batches = std::mem::take(&mut self.unrecorded);
        self.recording = batches.iter().map(|b| b.batch_uuid).collect();
        batches
    }

    /// Queues the steps that the change sets of the group being built make ready (children of
    /// steps it completes), for every task of the group, then plans batches once for all of them,
    /// so that they are recorded in the same transaction as the results that made them ready: one
    /// commit per handoff. Each entry's outputs are the tentative results of the steps the group
    /// completes; they are noted on those steps now because the children's requests carry them in
    /// `previous_results` (if the store refuses the parent's change, it refuses the child's
    /// dispatch too, and the task is reloaded).
    pub(crate) fn plan_children(
        &mut self,
        ready: Vec<super::commit::ChildrenReady>,
        now: DateTime<Utc>,
    ) {
        if ready.is_empty()
            || self.shutting_down
            || self.paused_until.is_some_and(|until| until > now)
        {
            return;
        }
        let mut queued = false;
        for (task_id, children, outputs) in ready {
            let Some(task) = self.tasks.get_mut(&task_id) else {
                continue;
            };
            let mut task_queued = false;
            for index in children {
                let step = &mut task.steps[index];
                if step.busy == Busy::Idle && step.in_flight.is_none() {
                    step.busy = Busy::Queued;
                    self.started_queue.push_back((task_id, index));
                    task_queued = true;
                }
            }
            if task_queued {
                for (index, output) in outputs {
                    task.steps[index].results = Some(output);
                }
                queued = true;
            }
        }
        if queued {
            self.plan_dispatch(now);
        }
    }

    fn plan(&mut self, now: DateTime<Utc>) {
        if self.shutting_down {
            return;
        }
        let dirty: Vec<i64> = self.dirty.drain().collect();
        for task_id in dirty {
            let Some(task) = self.tasks.get_mut(&task_id) else {
                continue;
            };
            if !matches!(task.state, TaskState::Pending | TaskState::InProgress) {
                continue;
            }
            let views = task.views();
            let ready = ready_steps(&views, now);
            let started = task
                .steps
                .iter()
                .any(|s| s.attempts > 0 || s.state != StepState::Pending);
            let queue = if started {
                &mut self.started_queue
            } else {
                &mut self.queue
            };
            for &index in &ready {
                if task.steps[index].busy == Busy::Idle {
                    task.steps[index].busy = Busy::Queued;
                    queue.push_back((task_id, index));
                }
            }
            if let Some(at) = next_wakeup(&views, now) {
                self.wakeups.push(Reverse((at, task_id)));
            }
            let queued_or_busy = task
                .steps
                .iter()
                .any(|s| s.busy != Busy::Idle || s.in_flight.is_some());
            if ready.is_empty() && !queued_or_busy && !task.finishing {
                let facts: Vec<StepFacts<'_>> = task
                    .steps
                    .iter()
                    .map(|s| StepFacts {
                        step_id: s.step_id,
                        name: &s.name,
                        last_error: s.last_error.as_ref(),
                    })
                    .collect();
                if crate::finalizer::finalize(task.state, &views, &facts, now).is_some() {
                    task.finishing = true;
                    self.pending_items
                        .push_back(CommitItem::Finalize { task_id });
                }
            }
        }
        if self.paused_until.is_some_and(|until| until > now) {
            return;
        }
        self.plan_dispatch(now);
    }

    fn plan_dispatch(&mut self, now: DateTime<Utc>) {
        // Stale entries (finished tasks, steps no longer waiting) are dropped lazily: here at
        // the heads, and below within the part of the queues this turn looks at, so a turn costs
        // what it plans rather than the length of the backlog.
        for queue in [&mut self.started_queue, &mut self.queue] {
            while let Some(&(task_id, index)) = queue.front() {
                if is_queued(&self.tasks, task_id, index) {
                    break;
                }
                queue.pop_front();
            }
        }
        if self.started_queue.is_empty() && self.queue.is_empty() {
            return;
        }
        let mut workers: Vec<WorkerCredit> = self
            .sessions
            .values()
            .filter(|s| s.credit() > 0)
            .map(|s| WorkerCredit {
                worker_id: s.worker_id.clone(),
                handler_classes: s.handler_classes.clone(),
                free: s.credit(),
            })
            .collect();
        workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        let total_credit: usize = workers.iter().map(|w| w.free).sum();
        if total_credit == 0 {
            return;
        }
        // Only build requests for as many steps as could be sent now, per handler class.
        let mut class_credit: HashMap<&str, usize> = HashMap::new();
        for worker in &workers {
            for class in &worker.handler_classes {
                *class_credit.entry(class.as_str()).or_default() += worker.free;
            }
        }
        let mut candidates = Vec::new();
        let mut requests: HashMap<(i64, usize), StepRequest> = HashMap::new();
        let mut taken = 0;
        // Entries looked at in each queue; started tasks' steps first, each queue in order.
        let mut scanned = [0, 0];
        let entries = self
            .started_queue
            .iter()
            .map(|&entry| (0, entry))
            .chain(self.queue.iter().map(|&entry| (1, entry)));
        for (which, (task_id, index)) in entries {
            if taken >= total_credit {
                break;
            }
            scanned[which] += 1;
            let Some(task) = self.tasks.get(&task_id) else {
                continue;
            };
            let step = &task.steps[index];
            if step.busy != Busy::Queued || requests.contains_key(&(task_id, index)) {
                // Stale, or queued twice.
                continue;
            }
            let Some(credit) = class_credit.get_mut(step.handler_class.as_str()) else {
                continue;
            };
            if *credit == 0 {
                continue;
            }
            *credit -= 1;
            taken += 1;
            let request = step_request(task, index);
            let bytes = serde_json::to_vec(&request).map_or(usize::MAX, |v| v.len());
            candidates.push(Candidate {
                key: (task_id, index),
                handler_class: step.handler_class.clone(),
                bytes,
            });
            requests.insert((task_id, index), request);
        }
        let plan = plan_batches(
            candidates,
            &workers,
            self.options.batch_size,
            self.options.max_frame_bytes,
        );
        for batch in plan.batches {
            let steps = batch
                .steps
                .into_iter()
                .filter_map(|key| requests.remove(&key).map(|r| (key.0, key.1, r)))
                .collect();
            self.record_batch(Some(batch.worker_id), steps, now);
        }
        for key in plan.oversized {
            if let Some(request) = requests.remove(&key) {
                tracing::error!(
                    task_id = key.0,
                    step_id = request.step_id,
                    max_frame_bytes = self.options.max_frame_bytes,
                    "step request is larger than max_frame_bytes; the step fails"
                );
                self.record_batch(None, vec![(key.0, key.1, request)], now);
            }
        }
        // Only the entries looked at can have been planned; keep those still waiting, in order.
        for (queue, scanned) in [&mut self.started_queue, &mut self.queue]
            .into_iter()
            .zip(scanned)
        {
            let looked_at: Vec<(i64, usize)> = queue.drain(..scanned).collect();
            for &(task_id, index) in looked_at.iter().rev() {
                if is_queued(&self.tasks, task_id, index) {
                    queue.push_front((task_id, index));
                }
            }
        }
    }

    /// Marks the steps as dispatching, reserves the worker's credit, and puts the batch in line
    /// for the next group commit (see [`take_unrecorded`](Self::take_unrecorded)).
    fn record_batch(
        &mut self,
        worker_id: Option<String>,
        steps: Vec<(i64, usize, StepRequest)>,
        now: DateTime<Utc>,
    ) {
        let batch_id = self.ids.batch_id();
        let mut record_steps = Vec::with_capacity(steps.len());
        let mut timeout_ms: u64 = 0;
        let mut classes: HashSet<&str> = HashSet::new();
        for (task_id, index, _) in &steps {
            if let Some(task) = self.tasks.get_mut(task_id) {
                let step = &mut task.steps[*index];
                step.busy = Busy::Dispatching;
                record_steps.push(tasker_store::BatchStep {
                    step_id: step.step_id,
                    expect_state: step.state,
                });
                timeout_ms = timeout_ms.max(
                    step.timeout_ms
                        .unwrap_or(duration_ms(self.options.default_step_timeout)),
                );
            }
        }
        for (task_id, index, _) in &steps {
            if let Some(task) = self.tasks.get(task_id) {
                classes.insert(task.steps[*index].handler_class.as_str());
            }
        }
        let handler_class = if classes.len() == 1 {
            classes.into_iter().next().map(str::to_owned)
        } else {
            None
        };
        if let Some(worker) = worker_id.as_ref().and_then(|w| self.sessions.get_mut(w)) {
            for (_, _, request) in &steps {
                worker.outstanding.insert((batch_id, request.step_id));
            }
        }
        let params = BatchRecord {
            now,
            claimant: Some(self.options.orchestrator_id.clone()),
            batch_uuid: batch_id,
            worker_id: worker_id.clone(),
            handler_class,
            timeout_ms: i64::try_from(timeout_ms).unwrap_or(i64::MAX),
            state: tasker_core::state::BatchState::Published,
            metadata: None,
            steps: record_steps,
        };
        self.pending_batches.insert(
            batch_id,
            PendingBatch {
                worker_id,
                steps,
                planned_at: now,
            },
        );
        self.unrecorded.push(params);
    }

    /// The store recorded (or refused) a group of batches, in the order asked: each is sent or
    /// undone as [`on_batch_recorded`](Self::on_batch_recorded) says.
    pub(crate) fn on_batches_recorded(
        &mut self,
        batch_ids: Vec<Uuid>,
        result: Result<Vec<BatchRecorded>, StoreError>,
        now: DateTime<Utc>,
    ) {
        match result {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for batch_id in batch_ids {
                    match outcomes.next() {
                        Some(recorded) => self.on_batch_recorded(batch_id, Ok(recorded), now),
                        None => self.batch_not_recorded(
                            batch_id,
                            &"the store returned no outcome for it",
                            now,
                        ),
                    }
                }
            }
            Err(error) => {
                for batch_id in batch_ids {
                    self.batch_not_recorded(batch_id, &error, now);
                }
            }
        }
    }

    /// Recording a batch failed: its steps wait for the next dispatch, after a pause.
    fn batch_not_recorded(
        &mut self,
        batch_id: Uuid,
        error: &dyn std::fmt::Display,
        now: DateTime<Utc>,
    ) {
        self.recording.remove(&batch_id);
        let Some(pending) = self.pending_batches.remove(&batch_id) else {
            return;
        };
        tracing::error!(%batch_id, %error, "recording a batch failed; its steps wait for the next dispatch");
        for (task_id, index, request) in &pending.steps {
            self.release_step(batch_id, request.step_id, pending.worker_id.as_deref());
            if let Some(task) = self.tasks.get_mut(task_id) {
                task.steps[*index].busy = Busy::Idle;
            }
            self.dirty.insert(*task_id);
        }
        self.pause(now);
    }

    /// The store recorded (or refused) a batch: send it, or undo.
    pub(crate) fn on_batch_recorded(
        &mut self,
        batch_id: Uuid,
        result: Result<BatchRecorded, StoreError>,
        now: DateTime<Utc>,
    ) {
        let recorded = match result {
            Ok(recorded) => recorded,
            Err(error) => {
                self.batch_not_recorded(batch_id, &error, now);
                return;
            }
        };
        self.recording.remove(&batch_id);
        let Some(pending) = self.pending_batches.remove(&batch_id) else {
            return;
        };
        let included: HashMap<i64, u32> = recorded
            .included
            .iter()
            .map(|d| (d.step_id, u32::try_from(d.attempt).unwrap_or(1)))
            .collect();
        if !recorded.refused.is_empty() {
            tracing::warn!(%batch_id, refused = ?recorded.refused, "steps left out of a batch; resynchronising their tasks");
        }
        let mut resync = Vec::new();
        let mut sent = Vec::new();
        let mut batch_steps = Vec::new();
        let grace = self.options.timeout_grace;
        let default_timeout = self.options.default_step_timeout;
        for (task_id, index, mut request) in pending.steps {
            let Some(task) = self.tasks.get_mut(&task_id) else {
                self.release_step(batch_id, request.step_id, pending.worker_id.as_deref());
                continue;
            };
            let step = &mut task.steps[index];
            match included.get(&step.step_id) {
                Some(&attempt) => {
                    step.state = StepState::InProgress;
                    step.attempts = attempt;
                    step.in_flight = Some(batch_id);
                    step.worker.clone_from(&pending.worker_id);
                    step.busy = Busy::Idle;
                    step.backoff_until = None;
                    let timeout = step
                        .timeout_ms
                        .map_or(default_timeout, Duration::from_millis);
                    let deadline = now + delta(timeout) + delta(grace);
                    step.deadline = Some(deadline);
                    let stored_now = stored_time(pending.planned_at);
                    step.last_attempted_at = Some(stored_now);
                    step.updated_at = stored_now;
                    step.stored_deadline = Some(stored_now + delta(timeout));
                    self.deadlines
                        .push(Reverse((deadline, step.step_id, batch_id)));
                    if task.state == TaskState::Pending {
                        task.state = TaskState::InProgress;
                        task.record.updated_at = stored_now;
                    }
                    self.actions
                        .push(Action::Publish(crate::events::EngineEvent::StepChanged {
                            task_id,
                            step_id: step.step_id,
                            step_name: step.name.clone(),
                            state: StepState::InProgress,
                            attempts: attempt,
                            backoff_until: None,
                        }));
                    request.metadata.attempt = attempt;
                    request.metadata.idempotency_key =
                        StepMetadata::idempotency_key_for(request.step_id, attempt);
                    batch_steps.push(BatchStep {
                        step_id: request.step_id,
                        task_id,
                        attempt,
                    });
                    sent.push((task_id, index, request));
                }
                None => {
                    step.busy = Busy::Idle;
                    self.release_step(batch_id, request.step_id, pending.worker_id.as_deref());
                    resync.push(task_id);
                }
            }
        }
        if !resync.is_empty() {
            resync.sort_unstable();
            resync.dedup();
            self.push(Action::LoadTasks(resync));
        }
        if !recorded.recorded || sent.is_empty() {
            return;
        }
        self.batches.insert(
            batch_id,
            BatchRuntime {
                worker_id: pending.worker_id.clone(),
                open: batch_steps.iter().map(|s| s.step_id).collect(),
                steps: batch_steps,
                complete_list: true,
                state: tasker_core::state::BatchState::Published,
                reported: HashMap::new(),
                completion: None,
                findings: Vec::new(),
                ended_without_result: None,
            },
        );
        self.remember_batch(batch_id);
        let Some(worker_id) = pending.worker_id else {
            for (_, _, request) in &sent {
                self.pending_items.push_back(CommitItem::Lost {
                    batch_id,
                    step_id: request.step_id,
                    cause: LossCause::RequestTooLarge,
                });
            }
            return;
        };
        let Some(session) = self.sessions.get(&worker_id) else {
            // The worker went away while the batch was being recorded: it was never sent.
            for (_, _, request) in &sent {
                self.pending_items.push_back(CommitItem::Requeue {
                    batch_id,
                    step_id: request.step_id,
                    cause: "worker gone before the batch was sent",
                });
            }
            return;
        };
        let peer = session.peer.clone();
        let send_instant = self.clock.monotonic();
        let mut requests = Vec::with_capacity(sent.len());
        for (task_id, index, request) in sent {
            if let Some(task) = self.tasks.get_mut(&task_id)
                && let Some(since) = task.steps[index].ready_since.take()
            {
                self.stats
                    .handoff(send_instant.saturating_duration_since(since));
            }
            requests.push(request);
        }
        let count = requests.len() as u64;
        let message = OrchestratorMessage::StepBatch(StepBatch {
            protocol_version: PROTOCOL_VERSION,
            batch_id,
            steps: requests,
        });
        let frame = tasker_protocol::encode(&message);
        if frame.len() > self.options.max_frame_bytes {
            tracing::error!(%batch_id, bytes = frame.len(), "encoded batch exceeds max_frame_bytes; requeueing its steps");
            self.requeue_batch(batch_id, "batch frame too large");
            return;
        }
        StatsCounters::add(&self.stats.batches_dispatched, 1);
        StatsCounters::add(&self.stats.steps_dispatched, count);
        tracing::debug!(%batch_id, worker_id = %worker_id, steps = count, "batch dispatched");
        self.push(Action::SendBatch {
            peer,
            batch_id,
            frame,
        });
    }

    /// A batch could not be handed to ZeroMQ: its steps were never sent.
    pub(crate) fn on_send_failed(
        &mut self,
        batch_id: Uuid,
        error: &TransportError,
        now: DateTime<Utc>,
    ) {
        StatsCounters::add(&self.stats.batches_send_failed, 1);
        let worker_id = self
            .batches
            .get(&batch_id)
            .and_then(|b| b.worker_id.clone());
        tracing::warn!(%batch_id, worker_id = worker_id.as_deref().unwrap_or(""), %error, "sending a batch failed; requeueing its steps");
        self.requeue_batch(batch_id, "send failed");
        if matches!(error, TransportError::PeerUnreachable { .. })
            && let Some(worker_id) = worker_id
        {
            // The routing id is not connected any more: the worker is gone (a reconnect gets a
            // new routing id and says hello again).
            self.declare_dead(&worker_id, "its connection is gone", now);
        }
    }

    /// Requeues every open step of a batch that never reached its worker, releasing credit.
    fn requeue_batch(&mut self, batch_id: Uuid, cause: &'static str) {
        let Some(batch) = self.batches.get(&batch_id) else {
            return;
        };
        let worker = batch.worker_id.clone();
        let open: Vec<i64> = batch.open.iter().copied().collect();
        for step_id in open {
            self.release_step(batch_id, step_id, worker.as_deref());
            self.pending_items.push_back(CommitItem::Requeue {
                batch_id,
                step_id,
                cause,
            });
        }
    }

    /// Releases a `(batch, step)` pair from a worker's credit.
    pub(crate) fn release_step(&mut self, batch_id: Uuid, step_id: i64, worker_id: Option<&str>) {
        if let Some(session) = worker_id.and_then(|w| self.sessions.get_mut(w)) {
            session.outstanding.remove(&(batch_id, step_id));
        }
    }

    /// Remembers a batch id after its details are forgotten.
    pub(crate) fn remember_batch(&mut self, batch_id: Uuid) {
        if self.remembered.insert(batch_id) {
            self.remembered_order.push_back(batch_id);
            if self.remembered_order.len() > REMEMBERED_BATCHES
                && let Some(old) = self.remembered_order.pop_front()
            {
                self.remembered.remove(&old);
            }
        }
    }

    /// Whether the engine ever dispatched (or adopted) this batch.
    pub(crate) fn knows_batch(&self, batch_id: &Uuid) -> bool {
        self.batches.contains_key(batch_id) || self.remembered.contains(batch_id)
    }
}
