//! What the engine takes from the world besides its inputs — the time, batch ids and the dice
//! of backoff jitter — injected through [`Ambient`] so a test can drive the engine
//! deterministically: [`SystemClock`], [`RandomIds`] and an entropy seed in production;
//! [`ManualClock`], [`SequentialIds`] and a fixed seed in tests.
//!
//! Every decision the engine makes about time (backoff expiry, step deadlines, worker liveness)
//! is a pure function of a `now` it is handed; the clock is only read by the I/O shell. Timers are
//! tokio sleeps for the distance between the clock's `now` and the next deadline; a
//! [`ManualClock`] wakes the engine whenever it is moved, so a test that advances it past a
//! deadline sees the engine act at once, without waiting in real time.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;
use uuid::Uuid;

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// A monotonic instant for measuring durations (handoff latency). The system clock's is
    /// [`Instant::now`]; a manual clock's moves with it.
    fn monotonic(&self) -> Instant {
        Instant::now()
    }

    /// A receiver told every time the clock is moved by hand; `None` for a clock that moves on
    /// its own (the engine then sleeps until its next deadline).
    fn moves(&self) -> Option<watch::Receiver<DateTime<Utc>>> {
        None
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to. Cheap to clone; clones share the time, and an engine
/// running on it is woken whenever it moves.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<DateTime<Utc>>>,
    start: DateTime<Utc>,
    start_instant: Instant,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(watch::Sender::new(start)),
            start,
            start_instant: Instant::now(),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let delta = TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX);
        self.now.send_modify(|now| {
            *now = now
                .checked_add_signed(delta)
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
        });
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: DateTime<Utc>) {
        self.now.send_modify(|now| *now = to);
    }

    /// Moves the clock to `to` unless it is already there or later.
    pub fn advance_to(&self, to: DateTime<Utc>) {
        self.now.send_if_modified(|now| {
            let later = to > *now;
            if later {
                *now = to;
            }
            later
        });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    fn monotonic(&self) -> Instant {
        let elapsed = (self.now() - self.start).to_std().unwrap_or_default();
        self.start_instant + elapsed
    }

    fn moves(&self) -> Option<watch::Receiver<DateTime<Utc>>> {
        Some(self.now.subscribe())
    }
}

/// Where the engine gets the id of each new batch.
pub trait IdSource: Send + Sync + fmt::Debug + 'static {
    /// A batch id never returned before.
    fn batch_id(&self) -> Uuid;
}

/// Time-ordered random ids (UUID v7): unique across processes and restarts.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn batch_id(&self) -> Uuid {
        Uuid::now_v7()
    }
}

/// `00000000-0000-0000-0000-000000000001`, `…02`, …: predictable ids for tests. Unique within
/// one process only; never use it with a database that outlives the test.
#[derive(Debug, Default)]
pub struct SequentialIds {
    next: AtomicU64,
}

impl IdSource for SequentialIds {
    fn batch_id(&self) -> Uuid {
        Uuid::from_u128(u128::from(self.next.fetch_add(1, Ordering::Relaxed) + 1))
    }
}

/// The engine's sources of time, ids and randomness.
#[derive(Debug, Clone)]
pub struct Ambient {
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Batch ids.
    pub ids: Arc<dyn IdSource>,
    /// The seed of the backoff jitter's random numbers; `None` seeds from the operating system.
    pub jitter_seed: Option<u64>,
}

impl Default for Ambient {
    /// The system clock, random ids, an entropy seed.
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
            jitter_seed: None,
        }
    }
}

impl Ambient {
    /// A deterministic ambient for tests: `clock`, sequential ids, a fixed seed.
    pub fn manual(clock: ManualClock) -> Self {
        Self {
            clock: Arc::new(clock),
            ids: Arc::new(SequentialIds::default()),
            jitter_seed: Some(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_says_so() {
        let start = DateTime::from_timestamp(1_700_000_000, 0).expect("valid time");
        let clock = ManualClock::new(start);
        let shared = clock.clone();
        let mut moves = clock.moves().expect("a manual clock tells");
        let instant = clock.monotonic();
        assert_eq!(clock.now(), start);
        assert!(!moves.has_changed().expect("open"));
        shared.advance(Duration::from_millis(1500));
        assert!(moves.has_changed().expect("open"));
        moves.mark_unchanged();
        assert_eq!(clock.now(), start + TimeDelta::milliseconds(1500));
        assert_eq!(clock.monotonic() - instant, Duration::from_millis(1500));
        clock.advance_to(start);
        assert!(!moves.has_changed().expect("open"), "never backwards");
        clock.set(start);
        assert_eq!(shared.now(), start);
    }

    #[test]
    fn sequential_ids_count_from_one() {
        let ids = SequentialIds::default();
        assert_eq!(ids.batch_id(), Uuid::from_u128(1));
        assert_eq!(ids.batch_id(), Uuid::from_u128(2));
        assert_ne!(RandomIds.batch_id(), RandomIds.batch_id());
    }
}
