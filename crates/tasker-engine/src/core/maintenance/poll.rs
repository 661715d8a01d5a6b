//! The safety-net poll: tasks created by other processes are claimed, tasks awaited but not
//! held are read again, and finished tasks' claims are released, every `poll_interval`.

use chrono::{DateTime, Utc};

use super::super::*;

impl EngineCore {
    /// The poll, when due.
    pub(crate) fn run_poll(&mut self, now: DateTime<Utc>) {
        if now >= self.next_poll {
            self.next_poll = now + delta(self.options.poll_interval);
            self.request_claim();
            let ids: Vec<i64> = self.tasks.keys().copied().collect();
            self.dirty.extend(ids);
            let unheld: Vec<i64> = self
                .waiters
                .keys()
                .filter(|id| !self.tasks.contains_key(id))
                .copied()
                .collect();
            for task_id in unheld {
                self.push(Action::CheckTask(task_id));
            }
            if !self.to_release.is_empty() {
                let ids = std::mem::take(&mut self.to_release);
                self.push(Action::ReleaseLeases(ids));
            }
        }
    }
}
