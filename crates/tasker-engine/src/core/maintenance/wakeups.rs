//! Backoff wakeups: a task whose failed step may be retried now is looked at again.

use std::cmp::Reverse;

use chrono::{DateTime, Utc};

use super::super::*;

impl EngineCore {
    /// Tasks whose earliest backoff ended by `now` are marked for readiness.
    pub(crate) fn run_wakeups(&mut self, now: DateTime<Utc>) {
        while let Some(Reverse((at, task_id))) = self.wakeups.peek().copied() {
            if at > now {
                break;
            }
            self.wakeups.pop();
            self.dirty.insert(task_id);
        }
    }
}
