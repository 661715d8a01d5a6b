//! Counters and latency samples of a running engine ([`EngineStats`]), for metrics, benchmarks and
//! tests. The engine loop updates them; [`EngineHandle::stats`](crate::EngineHandle::stats) takes
//! a snapshot without going through the loop.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// How many handoff-latency samples are kept (the most recent ones).
pub const HANDOFF_SAMPLES_KEPT: usize = 100_000;

/// A snapshot of the engine's counters since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct EngineStats {
    /// Results (partial results and batch completions) applied to state.
    pub results_applied: u64,
    /// Results already recorded before (a re-sent copy): acknowledged `duplicate`, not applied.
    pub results_duplicate: u64,
    /// Results of an attempt that is no longer current (superseded, timed out, worker lost):
    /// recorded, acknowledged `fenced`, never applied.
    pub results_fenced: u64,
    /// Results for a batch never sent to that worker, a step not in the batch or a wrong
    /// attempt: recorded, acknowledged `rejected`.
    pub results_rejected: u64,
    /// Group commits of results and other state changes, and the results they carried
    /// (`results_committed / commits` is the average group size).
    pub commits: u64,
    /// Results carried by those commits.
    pub results_committed: u64,
    /// Frames from workers that were rejected, by protocol error code (`invalid_json`,
    /// `frame_too_large`, `not_registered`, …).
    pub frames_rejected: BTreeMap<String, u64>,
    /// `step_batch` messages sent.
    pub batches_dispatched: u64,
    /// Steps sent in them.
    pub steps_dispatched: u64,
    /// Batches whose send failed (worker gone or busy); their steps were requeued.
    pub batches_send_failed: u64,
    /// Step attempts the engine declared lost because their deadline passed.
    pub steps_timed_out: u64,
    /// Step attempts the engine declared lost because their worker died or did not list them.
    pub steps_lost: u64,
    /// Workers declared dead (silent for `liveness` heartbeat intervals).
    pub workers_lost: u64,
    /// Workers with a session now.
    pub workers_connected: u64,
    /// Tasks held in memory and driven now.
    pub tasks_active: u64,
    /// Tasks that reached `complete`.
    pub tasks_completed: u64,
    /// Tasks that reached `error`.
    pub tasks_failed: u64,
    /// Batch completions that disagreed with the recorded partial results.
    pub reconciliation_discrepancies: u64,
    /// Step handoff latency: from the receipt of the result that made a step ready (its last
    /// parent's) to the dispatch of that step. The most recent [`HANDOFF_SAMPLES_KEPT`].
    pub handoff_latency: LatencySamples,
}

/// Latency samples, from which percentiles are read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencySamples {
    /// Samples taken since start (including those no longer kept).
    pub count: u64,
    /// The kept samples, in microseconds, oldest first.
    pub samples_us: Vec<u64>,
}

impl LatencySamples {
    /// The `q` quantile (0.0–1.0) of the kept samples (nearest rank), or `None` without samples.
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        if self.samples_us.is_empty() {
            return None;
        }
        let mut sorted = self.samples_us.clone();
        sorted.sort_unstable();
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        Some(Duration::from_micros(sorted[rank - 1]))
    }

    /// The median.
    pub fn p50(&self) -> Option<Duration> {
        self.percentile(0.50)
    }

    /// The 99th percentile.
    pub fn p99(&self) -> Option<Duration> {
        self.percentile(0.99)
    }
}

/// The live counters behind [`EngineStats`].
#[derive(Debug, Default)]
pub(crate) struct StatsCounters {
    pub results_applied: AtomicU64,
    pub results_duplicate: AtomicU64,
    pub results_fenced: AtomicU64,
    pub results_rejected: AtomicU64,
    pub commits: AtomicU64,
    pub results_committed: AtomicU64,
    pub batches_dispatched: AtomicU64,
    pub steps_dispatched: AtomicU64,
    pub batches_send_failed: AtomicU64,
    pub steps_timed_out: AtomicU64,
    pub steps_lost: AtomicU64,
    pub workers_lost: AtomicU64,
    pub workers_connected: AtomicU64,
    pub tasks_active: AtomicU64,
    pub tasks_completed: AtomicU64,
    pub tasks_failed: AtomicU64,
    pub reconciliation_discrepancies: AtomicU64,
    frames_rejected: Mutex<BTreeMap<String, u64>>,
    handoff: Mutex<(u64, VecDeque<u64>)>,
}

impl StatsCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set(counter: &AtomicU64, n: u64) {
        counter.store(n, Ordering::Relaxed);
    }

    pub(crate) fn frame_rejected(&self, code: &str) {
        let mut map = self
            .frames_rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *map.entry(code.to_owned()).or_default() += 1;
    }

    pub(crate) fn handoff(&self, latency: Duration) {
        let mut guard = self.handoff.lock().unwrap_or_else(|e| e.into_inner());
        guard.0 += 1;
        if guard.1.len() == HANDOFF_SAMPLES_KEPT {
            guard.1.pop_front();
        }
        guard
            .1
            .push_back(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    pub(crate) fn snapshot(&self) -> EngineStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let handoff = self.handoff.lock().unwrap_or_else(|e| e.into_inner());
        EngineStats {
            results_applied: get(&self.results_applied),
            results_duplicate: get(&self.results_duplicate),
            results_fenced: get(&self.results_fenced),
            results_rejected: get(&self.results_rejected),
            commits: get(&self.commits),
            results_committed: get(&self.results_committed),
            frames_rejected: self
                .frames_rejected
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            batches_dispatched: get(&self.batches_dispatched),
            steps_dispatched: get(&self.steps_dispatched),
            batches_send_failed: get(&self.batches_send_failed),
            steps_timed_out: get(&self.steps_timed_out),
            steps_lost: get(&self.steps_lost),
            workers_lost: get(&self.workers_lost),
            workers_connected: get(&self.workers_connected),
            tasks_active: get(&self.tasks_active),
            tasks_completed: get(&self.tasks_completed),
            tasks_failed: get(&self.tasks_failed),
            reconciliation_discrepancies: get(&self.reconciliation_discrepancies),
            handoff_latency: LatencySamples {
                count: handoff.0,
                samples_us: handoff.1.iter().copied().collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples = LatencySamples {
            count: 100,
            samples_us: (1..=100).rev().collect(),
        };
        assert_eq!(samples.p50(), Some(Duration::from_micros(50)));
        assert_eq!(samples.p99(), Some(Duration::from_micros(99)));
        assert_eq!(samples.percentile(1.0), Some(Duration::from_micros(100)));
        assert_eq!(samples.percentile(0.0), Some(Duration::from_micros(1)));
        assert_eq!(LatencySamples::default().p50(), None);
    }

    #[test]
    fn counters_snapshot() {
        let counters = StatsCounters::default();
        StatsCounters::add(&counters.results_applied, 3);
        counters.frame_rejected("invalid_json");
        counters.frame_rejected("invalid_json");
        counters.handoff(Duration::from_micros(7));
        let stats = counters.snapshot();
        assert_eq!(stats.results_applied, 3);
        assert_eq!(stats.frames_rejected.get("invalid_json"), Some(&2));
        assert_eq!(stats.handoff_latency.count, 1);
        assert_eq!(stats.handoff_latency.samples_us, vec![7]);
    }
}
