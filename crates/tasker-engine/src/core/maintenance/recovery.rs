//! Recovery: the changes a failed commit left behind are retried once the pause after the
//! failure ends; steps in flight since before a restart that no worker claims are declared lost.

use std::cmp::Reverse;

use chrono::{DateTime, Utc};

use crate::runtime::Busy;

use super::super::*;

impl EngineCore {
    /// Once the pause after a store failure is over: the internal changes it refused go to the
    /// next commit, and every held task is looked at again.
    pub(crate) fn run_store_recovery(&mut self, now: DateTime<Utc>) {
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
            for item in std::mem::take(&mut self.retry_items) {
                self.pending_items.push_back(item);
            }
            let ids: Vec<i64> = self.tasks.keys().copied().collect();
            self.dirty.extend(ids);
        }
    }

    /// Steps in flight since before a restart whose worker never said hello with them within
    /// twice the liveness window: lost, retried.
    pub(crate) fn run_orphan_checks(&mut self, now: DateTime<Utc>) {
        while let Some(Reverse((at, step_id, batch_id))) = self.orphan_checks.peek().copied() {
            if at > now {
                break;
            }
            self.orphan_checks.pop();
            if let Some((task_id, index)) = self.step_index.get(&step_id).copied()
                && let Some(task) = self.tasks.get(&task_id)
            {
                let step = &task.steps[index];
                if step.in_flight == Some(batch_id)
                    && step.worker.is_none()
                    && step.busy == Busy::Idle
                {
                    tracing::warn!(step_id, %batch_id, "no worker claims a step in flight since before the restart; it is lost");
                    self.pending_items.push_back(CommitItem::Lost {
                        batch_id,
                        step_id,
                        cause: LossCause::WorkerLost,
                    });
                }
            }
        }
    }
}
