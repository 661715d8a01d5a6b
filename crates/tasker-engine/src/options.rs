//! [`EngineOptions`]: every knob of the engine, with its default, its unit, and what it costs to
//! set it too low or too high.

use std::time::Duration;

use tasker_core::backoff::BackoffPolicy;
use tasker_protocol::limits::{
    DEFAULT_HEARTBEAT_INTERVAL_MS, DEFAULT_LIVENESS, DEFAULT_MAX_FRAME_BYTES,
    MAX_HEARTBEAT_INTERVAL_MS, MAX_IDENTIFIER_BYTES, MAX_LIVENESS, MAX_MAX_FRAME_BYTES,
    MAX_STEPS_PER_BATCH_CEILING, MIN_HEARTBEAT_INTERVAL_MS, MIN_MAX_FRAME_BYTES,
};

use crate::error::EngineError;

/// Default [`EngineOptions::endpoint`].
pub const DEFAULT_ENDPOINT: &str = "tcp://127.0.0.1:5555";
/// Default [`EngineOptions::batch_size`].
pub const DEFAULT_BATCH_SIZE: usize = 10;
/// Default [`EngineOptions::poll_interval`].
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Default [`EngineOptions::lease_duration`].
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(30);
/// Default [`EngineOptions::timeout_grace`].
pub const DEFAULT_TIMEOUT_GRACE: Duration = Duration::from_secs(2);
/// Default [`EngineOptions::default_step_timeout`].
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`EngineOptions::max_results_per_commit`].
pub const DEFAULT_MAX_RESULTS_PER_COMMIT: usize = 1000;

/// How the engine runs. Build with [`EngineOptions::default`] and change what you need.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EngineOptions {
    /// The ROUTER endpoint the engine binds and workers connect to: `tcp://HOST:PORT` (port `0`
    /// picks a free one; read it back from [`EngineHandle::endpoint`](crate::EngineHandle::endpoint)),
    /// `ipc:///path` or `inproc://name` (workers in the same process). Default
    /// `tcp://127.0.0.1:5555` (loopback only: bind `tcp://0.0.0.0:5555` to accept remote
    /// workers, on a trusted network — there is no encryption yet).
    pub endpoint: String,
    /// This orchestrator's identity: the `orchestrator_id` workers see in `welcome` and the name
    /// under which it claims tasks in the store. 1–128 bytes of `A–Z a–z 0–9 . _ : @ -`.
    /// Default `orchestrator-<hostname>`. Keep it **stable across restarts** of the same
    /// orchestrator: a restarted engine immediately takes back the tasks claimed under its id,
    /// while a new id must wait for the old leases to expire ([`Self::lease_duration`]). Give
    /// every orchestrator sharing one PostgreSQL database its own id.
    pub orchestrator_id: String,
    /// Most steps in one `step_batch` (1–1000; also announced as `max_steps_per_batch`). A batch
    /// never exceeds the worker's free credit either. Default 10. Too low: more frames and more
    /// batch rows written per step; too high: a batch waits for the slowest of its
    /// steps before its completion arrives, and one lost worker loses more steps at once.
    pub batch_size: usize,
    /// How often each side sends heartbeats (announced in `welcome`; a worker may ask for
    /// another interval between 100 ms and 60 s). Default 1 s. Too low: heartbeat traffic and
    /// wake-ups; too high: a dead worker is noticed late ([`Self::liveness`] × this).
    pub heartbeat_interval: Duration,
    /// Heartbeat intervals of silence after which a worker is declared dead and its steps are
    /// retried elsewhere (1–100). Default 5. Too low: a worker on a busy host is declared dead
    /// while alive (its steps then run twice); too high: steps of a crashed worker wait long.
    pub liveness: u32,
    /// Largest frame accepted from or sent to a worker, in bytes (64 KiB–64 MiB). Default 1 MiB.
    /// Too low: large contexts, `previous_results` or outputs cannot be carried (the step fails
    /// with `tasker.request_too_large` / `tasker.output_too_large`); too high: one misbehaving
    /// peer can make the engine buffer that much per frame.
    pub max_frame_bytes: usize,
    /// Safety-net interval: how often the engine looks in the store for tasks it does not hold
    /// yet (created by another process, or whose owner's lease expired), renews nothing-else
    /// work, and re-checks every active task. Default 5 s. Results, readiness, backoff expiries
    /// and timeouts never wait for it. Too low: needless queries; too high: tasks created by
    /// another process start late.
    pub poll_interval: Duration,
    /// The retry backoff for steps whose template sets none. Default: 1 s base, ×2, 5 min cap,
    /// 10 % jitter ([`BackoffPolicy::default`]).
    pub default_backoff: BackoffPolicy,
    /// How long a claim on a task lasts without renewal. The engine renews its claims every
    /// third of it. Default 30 s. Too low: a stalled engine (long GC-like pause, overloaded
    /// database) loses its tasks to another orchestrator mid-flight (safe, but work is redone);
    /// too high: tasks of a crashed orchestrator wait that long before another one takes them.
    pub lease_duration: Duration,
    /// Extra time past a step's `timeout_ms` before the engine itself declares the attempt lost
    /// (the worker is expected to stop the handler at `timeout_ms` and report `tasker.timeout`).
    /// Default 2 s. Too low: a worker's own timeout report races the engine's; too high: a step
    /// whose worker went silent is retried later.
    pub timeout_grace: Duration,
    /// Timeout of a step that has none of its own (templates always set one; this covers rows
    /// written by other tools). Default 30 s.
    pub default_step_timeout: Duration,
    /// Most results (and other state changes) in one group-committed transaction. Default 1000.
    /// Too low: more transactions under load; too high: one transaction holds locks longer and a
    /// failure rolls back more (the workers re-send, nothing is lost).
    pub max_results_per_commit: usize,
    /// The template environment whose overrides apply (`TaskTemplate::for_environment`); `None`
    /// uses templates as written. Default `None`.
    pub environment: Option<String>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            orchestrator_id: default_orchestrator_id(),
            batch_size: DEFAULT_BATCH_SIZE,
            heartbeat_interval: Duration::from_millis(DEFAULT_HEARTBEAT_INTERVAL_MS),
            liveness: DEFAULT_LIVENESS,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            poll_interval: DEFAULT_POLL_INTERVAL,
            default_backoff: BackoffPolicy::default(),
            lease_duration: DEFAULT_LEASE_DURATION,
            timeout_grace: DEFAULT_TIMEOUT_GRACE,
            default_step_timeout: DEFAULT_STEP_TIMEOUT,
            max_results_per_commit: DEFAULT_MAX_RESULTS_PER_COMMIT,
            environment: None,
        }
    }
}

impl EngineOptions {
    /// Options binding `endpoint`, everything else at its default.
    pub fn with_endpoint(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            ..Self::default()
        }
    }

    /// Checks every field; the error names the first one that breaks its rule.
    ///
    /// # Errors
    ///
    /// [`EngineError::InvalidOptions`].
    pub fn validate(&self) -> Result<(), EngineError> {
        let invalid = |reason: String| Err(EngineError::InvalidOptions(reason));
        if self.endpoint.is_empty() {
            return invalid("endpoint must not be empty".to_owned());
        }
        if self.orchestrator_id.is_empty()
            || self.orchestrator_id.len() > MAX_IDENTIFIER_BYTES
            || !self.orchestrator_id.bytes().all(is_identifier_byte)
        {
            return invalid(format!(
                "orchestrator_id {:?} must be 1 to {MAX_IDENTIFIER_BYTES} bytes of A-Z a-z 0-9 . _ : @ -",
                self.orchestrator_id
            ));
        }
        if !(1..=MAX_STEPS_PER_BATCH_CEILING).contains(&self.batch_size) {
            return invalid(format!(
                "batch_size must be between 1 and {MAX_STEPS_PER_BATCH_CEILING}, not {}",
                self.batch_size
            ));
        }
        let heartbeat_ms = self.heartbeat_interval.as_millis();
        if heartbeat_ms < u128::from(MIN_HEARTBEAT_INTERVAL_MS)
            || heartbeat_ms > u128::from(MAX_HEARTBEAT_INTERVAL_MS)
        {
            return invalid(format!(
                "heartbeat_interval must be between {MIN_HEARTBEAT_INTERVAL_MS} ms and \
                 {MAX_HEARTBEAT_INTERVAL_MS} ms, not {heartbeat_ms} ms"
            ));
        }
        if !(1..=MAX_LIVENESS).contains(&self.liveness) {
            return invalid(format!(
                "liveness must be between 1 and {MAX_LIVENESS}, not {}",
                self.liveness
            ));
        }
        if !(MIN_MAX_FRAME_BYTES..=MAX_MAX_FRAME_BYTES).contains(&self.max_frame_bytes) {
            return invalid(format!(
                "max_frame_bytes must be between {MIN_MAX_FRAME_BYTES} and {MAX_MAX_FRAME_BYTES}, not {}",
                self.max_frame_bytes
            ));
        }
        for (name, value) in [
            ("poll_interval", self.poll_interval),
            ("lease_duration", self.lease_duration),
            ("default_step_timeout", self.default_step_timeout),
        ] {
            if value < Duration::from_millis(10) {
                return invalid(format!("{name} must be at least 10 ms, not {value:?}"));
            }
        }
        if let Err(error) = self.default_backoff.validate() {
            return invalid(format!("default_backoff: {error}"));
        }
        if self.max_results_per_commit == 0 {
            return invalid("max_results_per_commit must be at least 1".to_owned());
        }
        Ok(())
    }

    /// How long a worker may stay silent before it is declared dead.
    pub(crate) fn liveness_window(&self, heartbeat_interval: Duration) -> Duration {
        heartbeat_interval.saturating_mul(self.liveness)
    }
}

fn is_identifier_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-')
}

/// `orchestrator-<hostname>`, with characters an identifier may not hold replaced by `-`.
fn default_orchestrator_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let cleaned: String = host
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii() && is_identifier_byte(c as u8) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("orchestrator-{cleaned}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let options = EngineOptions::default();
        options.validate().expect("defaults are valid");
        assert_eq!(options.endpoint, "tcp://127.0.0.1:5555");
        assert_eq!(options.batch_size, 10);
        assert!(options.orchestrator_id.starts_with("orchestrator-"));
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: Vec<(EngineOptions, &str)> = vec![
            (
                EngineOptions {
                    batch_size: 0,
                    ..EngineOptions::default()
                },
                "batch_size",
            ),
            (
                EngineOptions {
                    orchestrator_id: "has space".into(),
                    ..EngineOptions::default()
                },
                "orchestrator_id",
            ),
            (
                EngineOptions {
                    heartbeat_interval: Duration::from_millis(5),
                    ..EngineOptions::default()
                },
                "heartbeat_interval",
            ),
            (
                EngineOptions {
                    max_frame_bytes: 10,
                    ..EngineOptions::default()
                },
                "max_frame_bytes",
            ),
            (
                EngineOptions {
                    liveness: 0,
                    ..EngineOptions::default()
                },
                "liveness",
            ),
        ];
        for (options, field) in cases {
            let error = options.validate().expect_err(field).to_string();
            assert!(error.contains(field), "{error}");
        }
    }
}
