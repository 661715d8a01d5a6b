//! Worker loss: a worker declared dead, its steps failed as retryable and its open batches
//! closed, all through the next group commit.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::stats::StatsCounters;

use super::*;

impl EngineCore {
    /// Declares a worker dead: forget its session, fail its outstanding steps as retryable.
    pub(crate) fn declare_dead(&mut self, worker_id: &str, why: &str, _now: DateTime<Utc>) {
        let Some(session) = self.sessions.remove(worker_id) else {
            return;
        };
        self.peers.remove(&session.peer);
        StatsCounters::add(&self.stats.workers_lost, 1);
        StatsCounters::set(&self.stats.workers_connected, self.sessions.len() as u64);
        tracing::warn!(
            worker_id,
            outstanding = session.outstanding.len(),
            "worker declared dead: {why}; its steps will be retried"
        );
        let mut lost: Vec<(Uuid, i64)> = session.outstanding.into_iter().collect();
        lost.sort_unstable();
        for (batch_id, step_id) in lost {
            self.pending_items.push_back(CommitItem::Lost {
                batch_id,
                step_id,
                cause: LossCause::WorkerLost,
            });
        }
        // Batches of this worker whose steps all reported but whose completion never came.
        let mut unfinished: Vec<Uuid> = self
            .batches
            .iter()
            .filter(|(_, b)| {
                b.worker_id.as_deref() == Some(worker_id)
                    && b.open.is_empty()
                    && !b.state.is_terminal()
            })
            .map(|(id, _)| *id)
            .collect();
        unfinished.sort_unstable();
        for batch_id in unfinished {
            self.pending_items
                .push_back(CommitItem::CloseBatch { batch_id });
        }
    }
}
