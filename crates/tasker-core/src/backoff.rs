//! Retry backoff: one configuration, used everywhere.
//!
//! [`BackoffPolicy::delay`] is pure: given the number of failed attempts and a jitter sample it
//! always returns the same delay, so tests need no randomness and no clock. The engine draws the
//! sample ([`BackoffPolicy::delay_with_rng`]) and adds the delay to the failure time
//! ([`retry_at`]) to get a step's `backoff_until`. A handler's `retry_after` wins over the
//! computed delay ([`next_retry_delay`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long to wait before retrying a failed step: exponential with a cap and jitter.
///
/// The delay before attempt `n + 1` (after `n` failed attempts, `n >= 1`) is
/// `min(max_delay_ms, base_delay_ms * multiplier^(n-1))`, then reduced by a random fraction of up
/// to `jitter` of itself. A handler's `retry_after` overrides the computed delay.
///
/// With the defaults the un-jittered delays are 1 s, 2 s, 4 s, … 256 s, then 300 s for every
/// later failure; jitter takes up to 10 % off each.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffPolicy {
    /// Delay after the first failure, in milliseconds. Default 1000. Too low hammers a failing
    /// dependency; too high makes every transient failure slow to recover.
    pub base_delay_ms: u64,
    /// Upper bound on any computed delay, in milliseconds. Default 300000 (5 minutes). Must be at
    /// least `base_delay_ms`. Too low turns the exponential into a fixed-rate retry; too high can
    /// park a step for a long time after a few failures.
    pub max_delay_ms: u64,
    /// Growth factor per further failure. Default 2.0. Must be a finite number >= 1 (1 means a
    /// constant delay of `base_delay_ms`).
    pub multiplier: f64,
    /// Fraction (0..=1) of the delay that is randomised away, so retries spread out. Default 0.1.
    /// 0 makes every retry of a failure wave fire at the same instant; 1 allows any delay from
    /// zero to the computed one.
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

/// Why a [`BackoffPolicy`] was rejected by [`BackoffPolicy::validate`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidBackoffPolicy {
    /// `multiplier` is below 1, infinite or not a number.
    #[error("backoff multiplier must be a finite number >= 1, got {multiplier}")]
    Multiplier {
        /// The rejected value.
        multiplier: f64,
    },
    /// `jitter` is outside `0..=1` or not a number.
    #[error("backoff jitter must be between 0 and 1 inclusive, got {jitter}")]
    Jitter {
        /// The rejected value.
        jitter: f64,
    },
    /// `base_delay_ms` is larger than `max_delay_ms`.
    #[error(
        "backoff base_delay_ms ({base_delay_ms}) must not exceed max_delay_ms ({max_delay_ms})"
    )]
    BaseAboveMax {
        /// The configured base delay.
        base_delay_ms: u64,
        /// The configured cap.
        max_delay_ms: u64,
    },
}

impl BackoffPolicy {
    /// Checks the policy: `multiplier` finite and `>= 1`, `jitter` in `0..=1`,
    /// `base_delay_ms <= max_delay_ms`. Reports the first problem found, in that order.
    ///
    /// [`BackoffPolicy::delay`] never panics even on an invalid policy (it still never exceeds
    /// `max_delay_ms`), but the numbers only mean what the documentation says on a valid one, so
    /// loaders call this.
    pub fn validate(&self) -> Result<(), InvalidBackoffPolicy> {
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(InvalidBackoffPolicy::Multiplier {
                multiplier: self.multiplier,
            });
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(InvalidBackoffPolicy::Jitter {
                jitter: self.jitter,
            });
        }
        if self.base_delay_ms > self.max_delay_ms {
            return Err(InvalidBackoffPolicy::BaseAboveMax {
                base_delay_ms: self.base_delay_ms,
                max_delay_ms: self.max_delay_ms,
            });
        }
        Ok(())
    }

    /// The cap on every computed delay.
    pub const fn max_delay(&self) -> Duration {
        Duration::from_millis(self.max_delay_ms)
    }

    /// The delay before the next attempt without jitter: `base * multiplier^(n-1)`, capped at
    /// `max_delay_ms`. Zero when `failed_attempts` is 0 (nothing failed, nothing to wait for).
    /// Monotone non-decreasing in `failed_attempts`.
    pub fn capped_delay(&self, failed_attempts: u32) -> Duration {
        let cap = self.max_delay();
        if failed_attempts == 0 {
            return Duration::ZERO;
        }
        let exponent = i32::try_from(failed_attempts - 1).unwrap_or(i32::MAX);
        let millis = self.base_delay_ms as f64 * self.multiplier.powi(exponent);
        // `as f64` may round a huge cap up, so compare in f64 but return the exact cap.
        if !millis.is_finite() || millis >= self.max_delay_ms as f64 {
            return cap;
        }
        // Whole milliseconds; NaN was excluded above, a negative product only comes from an
        // invalid multiplier, and `as u64` saturates.
        Duration::from_millis(millis.max(0.0).round() as u64).min(cap)
    }

    /// The delay before the next attempt after `failed_attempts` failures, given a jitter sample
    /// in `[0, 1)` (values outside are clamped).
    ///
    /// `capped_delay(n) * (1 - jitter * sample)`: never above `max_delay_ms`, never below
    /// `(1 - jitter)` of the capped delay, and deterministic for a given sample.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tasker_core::backoff::BackoffPolicy;
    /// let policy = BackoffPolicy::default(); // 1 s base, x2, 5 min cap, 10 % jitter
    /// assert_eq!(policy.delay(1, 0.0), Duration::from_secs(1));
    /// assert_eq!(policy.delay(3, 0.0), Duration::from_secs(4));
    /// assert_eq!(policy.delay(3, 0.5), Duration::from_millis(3_800));
    /// assert_eq!(policy.delay(40, 0.0), Duration::from_secs(300));
    /// ```
    pub fn delay(&self, failed_attempts: u32, jitter_sample: f64) -> Duration {
        let capped = self.capped_delay(failed_attempts);
        let sample = if jitter_sample.is_nan() {
            0.0
        } else {
            jitter_sample.clamp(0.0, 1.0)
        };
        let jitter = if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        };
        let factor = (1.0 - jitter * sample).clamp(0.0, 1.0);
        // `mul_f64` goes through f64 seconds and may round up on huge durations: clamp again.
        capped.mul_f64(factor).min(capped)
    }

    /// [`BackoffPolicy::delay`] with the jitter sample drawn from `rng`.
    pub fn delay_with_rng<R: rand::Rng + ?Sized>(
        &self,
        failed_attempts: u32,
        rng: &mut R,
    ) -> Duration {
        self.delay(failed_attempts, rng.random::<f64>())
    }
}

/// The delay before retrying a step that has failed `failed_attempts` times.
///
/// A handler's `retry_after` (for example from an HTTP 429 `Retry-After`) is used **as is**: it
/// is neither jittered nor capped at `max_delay_ms`. The handler knows when the dependency will
/// accept work again; retrying sooner would only burn an attempt. The cap bounds *our* guess, the
/// exponential growth, not an explicit instruction. (A handler that returns an absurd value parks
/// its step for that long; [`retry_at`] saturates instead of overflowing, and an operator can
/// retry the step at any time.) Without `retry_after`, this is
/// `policy.delay(failed_attempts, jitter_sample)`.
pub fn next_retry_delay(
    policy: &BackoffPolicy,
    failed_attempts: u32,
    retry_after: Option<Duration>,
    jitter_sample: f64,
) -> Duration {
    match retry_after {
        Some(explicit) => explicit,
        None => policy.delay(failed_attempts, jitter_sample),
    }
}

/// `failed_at + delay`, saturating at the latest representable time instead of overflowing.
/// This is the step's `backoff_until`.
pub fn retry_at(failed_at: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(delay)
        .ok()
        .and_then(|delta| failed_at.checked_add_signed(delta))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn policy(base: u64, max: u64, multiplier: f64, jitter: f64) -> BackoffPolicy {
        BackoffPolicy {
            base_delay_ms: base,
            max_delay_ms: max,
            multiplier,
            jitter,
        }
    }

    #[test]
    fn default_policy_is_valid() {
        assert_eq!(BackoffPolicy::default().validate(), Ok(()));
    }

    #[test]
    fn grows_exponentially_then_caps() {
        let p = policy(100, 1_000, 3.0, 0.0);
        let delays: Vec<u128> = (0..6).map(|n| p.delay(n, 0.9).as_millis()).collect();
        assert_eq!(delays, [0, 100, 300, 900, 1_000, 1_000]);
        assert_eq!(p.delay(u32::MAX, 0.0), Duration::from_millis(1_000));
    }

    #[test]
    fn jitter_takes_off_up_to_its_fraction() {
        let p = policy(1_000, 60_000, 2.0, 0.5);
        assert_eq!(p.delay(2, 0.0), Duration::from_millis(2_000));
        assert_eq!(p.delay(2, 0.5), Duration::from_millis(1_500));
        // Samples are clamped into [0, 1].
        assert_eq!(p.delay(2, 7.0), Duration::from_millis(1_000));
        assert_eq!(p.delay(2, -1.0), Duration::from_millis(2_000));
        assert_eq!(p.delay(2, f64::NAN), Duration::from_millis(2_000));
    }

    #[test]
    fn full_jitter_can_reach_zero_but_not_below() {
        let p = policy(1_000, 60_000, 2.0, 1.0);
        assert_eq!(p.delay(1, 1.0), Duration::ZERO);
    }

    #[test]
    fn multiplier_one_is_constant() {
        let p = policy(250, 10_000, 1.0, 0.0);
        for n in 1..50 {
            assert_eq!(p.delay(n, 0.0), Duration::from_millis(250));
        }
    }

    #[test]
    fn huge_cap_is_never_exceeded() {
        let p = policy(u64::MAX, u64::MAX, 10.0, 0.0);
        assert_eq!(p.delay(5, 0.0), Duration::from_millis(u64::MAX));
    }

    #[test]
    fn rng_draws_a_sample_within_the_jitter_band() {
        let p = policy(1_000, 60_000, 2.0, 0.2);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let d = p.delay_with_rng(3, &mut rng);
            assert!(d <= Duration::from_millis(4_000), "{d:?}");
            assert!(d >= Duration::from_millis(3_200), "{d:?}");
        }
    }

    #[test]
    fn retry_after_overrides_and_is_not_capped() {
        let p = policy(1_000, 5_000, 2.0, 0.5);
        let hour = Duration::from_secs(3_600);
        assert_eq!(next_retry_delay(&p, 1, Some(hour), 0.9), hour);
        assert_eq!(
            next_retry_delay(&p, 1, Some(Duration::ZERO), 0.9),
            Duration::ZERO
        );
        assert_eq!(next_retry_delay(&p, 2, None, 0.5), p.delay(2, 0.5));
    }

    #[test]
    fn retry_at_saturates() {
        let now = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).expect("valid timestamp");
        assert_eq!(
            retry_at(now, Duration::from_millis(1_500)),
            now + chrono::TimeDelta::milliseconds(1_500)
        );
        assert_eq!(retry_at(now, Duration::MAX), DateTime::<Utc>::MAX_UTC);
    }

    #[test]
    fn validation_names_the_problem() {
        let bad_multiplier = policy(1, 2, 0.5, 0.1).validate();
        assert_eq!(
            bad_multiplier,
            Err(InvalidBackoffPolicy::Multiplier { multiplier: 0.5 })
        );
        assert_eq!(
            bad_multiplier.expect_err("invalid").to_string(),
            "backoff multiplier must be a finite number >= 1, got 0.5"
        );
        assert!(matches!(
            policy(1, 2, f64::NAN, 0.1).validate(),
            Err(InvalidBackoffPolicy::Multiplier { .. })
        ));
        assert!(matches!(
            policy(1, 2, f64::INFINITY, 0.1).validate(),
            Err(InvalidBackoffPolicy::Multiplier { .. })
        ));
        assert_eq!(
            policy(1, 2, 2.0, 1.5).validate(),
            Err(InvalidBackoffPolicy::Jitter { jitter: 1.5 })
        );
        assert!(matches!(
            policy(1, 2, 2.0, f64::NAN).validate(),
            Err(InvalidBackoffPolicy::Jitter { .. })
        ));
        assert_eq!(
            policy(1, 2, 2.0, -0.1).validate(),
            Err(InvalidBackoffPolicy::Jitter { jitter: -0.1 })
        );
        let base_above = policy(10, 5, 2.0, 0.1).validate();
        assert_eq!(
            base_above.clone().expect_err("invalid").to_string(),
            "backoff base_delay_ms (10) must not exceed max_delay_ms (5)"
        );
        assert_eq!(policy(5, 5, 1.0, 0.0).validate(), Ok(()));
        assert_eq!(policy(0, 0, 1.0, 1.0).validate(), Ok(()));
    }

    #[test]
    fn deserializes_with_defaults_and_rejects_unknown_fields() {
        let parsed: BackoffPolicy =
            serde_json::from_str(r#"{"base_delay_ms": 50}"#).expect("partial policy");
        assert_eq!(
            parsed,
            BackoffPolicy {
                base_delay_ms: 50,
                ..BackoffPolicy::default()
            }
        );
        assert!(serde_json::from_str::<BackoffPolicy>(r#"{"base_delay": 50}"#).is_err());
    }
}
