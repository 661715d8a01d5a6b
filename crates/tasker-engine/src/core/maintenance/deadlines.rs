//! Deadlines: an attempt with no result by its deadline (the step's timeout plus
//! `timeout_grace`, on the engine's clock) is failed as timed out and retried; its worker is told
//! to cancel it.

use std::cmp::Reverse;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tasker_protocol::{CancelReason, CancelSteps, OrchestratorMessage, PROTOCOL_VERSION};
use uuid::Uuid;

use crate::runtime::Busy;
use crate::stats::StatsCounters;

use super::super::*;

impl EngineCore {
    /// Attempts whose deadline passed by `now` fail as timed out (retryable), and their workers
    /// are told to cancel them.
    pub(crate) fn run_deadlines(&mut self, now: DateTime<Utc>) {
        let mut cancels: HashMap<Uuid, Vec<i64>> = HashMap::new();
        while let Some(Reverse((at, step_id, batch_id))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let Some((task_id, index)) = self.step_index.get(&step_id).copied() else {
                continue;
            };
            let Some(task) = self.tasks.get(&task_id) else {
                continue;
            };
            let step = &task.steps[index];
            if step.in_flight != Some(batch_id)
                || step.deadline != Some(at)
                || step.busy != Busy::Idle
            {
                continue;
            }
            tracing::warn!(task_id, step_id, %batch_id, "step attempt timed out");
            StatsCounters::add(&self.stats.steps_timed_out, 1);
            self.pending_items.push_back(CommitItem::Lost {
                batch_id,
                step_id,
                cause: LossCause::Timeout,
            });
            cancels.entry(batch_id).or_default().push(step_id);
        }
        for (batch_id, mut step_ids) in cancels {
            step_ids.sort_unstable();
            let peer = self
                .batches
                .get(&batch_id)
                .and_then(|b| b.worker_id.as_ref())
                .and_then(|w| self.sessions.get(w))
                .map(|s| s.peer.clone());
            if let Some(peer) = peer {
                for chunk in step_ids.chunks(self.options.batch_size.max(1)) {
                    self.push(Action::Send {
                        peer: peer.clone(),
                        message: OrchestratorMessage::CancelSteps(CancelSteps {
                            protocol_version: PROTOCOL_VERSION,
                            batch_id,
                            step_ids: chunk.to_vec(),
                            reason: CancelReason::Timeout,
                        }),
                    });
                }
            }
        }
    }
}
