//! Retry backoff: one configuration, used everywhere.

use serde::{Deserialize, Serialize};

/// How long to wait before retrying a failed step: exponential with a cap and jitter.
///
/// The delay before attempt `n + 1` (after `n` failed attempts, `n >= 1`) is
/// `min(max_delay_ms, base_delay_ms * multiplier^(n-1))`, then reduced by a random fraction of up
/// to `jitter` of itself. A handler's `retry_after` overrides the computed delay.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffPolicy {
    /// Delay after the first failure, in milliseconds. Default 1000.
    pub base_delay_ms: u64,
    /// Upper bound on any computed delay, in milliseconds. Default 300000 (5 minutes).
    pub max_delay_ms: u64,
    /// Growth factor per further failure. Default 2.0. Must be >= 1.
    pub multiplier: f64,
    /// Fraction (0..=1) of the delay that is randomised away, so retries spread out. Default 0.1.
    pub jitter: f64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            base_delay_ms: 1_000,
            max_delay_ms: 300_000,
            multiplier: 2.0,
            jitter: 0.1,
        }
    }
}
