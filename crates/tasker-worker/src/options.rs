//! [`WorkerOptions`]: how a worker connects and behaves, with documented defaults.

use std::time::Duration;

use tasker_protocol::limits::{
    MAX_CAPACITY, MAX_HEARTBEAT_INTERVAL_MS, MAX_IDENTIFIER_BYTES, MAX_MAX_FRAME_BYTES,
    MAX_NAME_BYTES, MIN_HEARTBEAT_INTERVAL_MS,
};
use tasker_transport::{DealerOptions, FrameLimits};
use uuid::Uuid;

use crate::WorkerError;

/// Default [`WorkerOptions::capacity`].
pub const DEFAULT_CAPACITY: u32 = 10;
/// Default [`WorkerOptions::welcome_timeout`] (the spec's "hello timeout", §7.1).
pub const DEFAULT_WELCOME_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`WorkerOptions::shutdown_grace`].
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default [`WorkerOptions::shutdown_ack_timeout`].
pub const DEFAULT_SHUTDOWN_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`WorkerOptions::retry_backoff_max`].
pub const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How a [`Worker`](crate::Worker) connects to the orchestrator and runs steps.
///
/// Build with [`WorkerOptions::new`] and change the fields you need; every field has a default
/// that suits a worker on the orchestrator's host.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerOptions {
    /// The orchestrator's ROUTER endpoint (`tcp://host:port`, `ipc:///path`, `inproc://name`).
    /// The only setting a worker needs. No default.
    pub endpoint: String,
    /// This worker process's id: 1–128 bytes of `A–Z a–z 0–9 . _ : @ -`, unique per process (a
    /// restarted process must use a new one, or the orchestrator would confuse the two). Default:
    /// `<hostname>-<pid>-<8 random hex digits>` (spec §5.2), with characters the protocol does not
    /// allow in the host name replaced by `-`.
    pub worker_id: String,
    /// Display name for dashboards and logs (1–255 bytes). Default: `tasker-worker-rust` plus the
    /// process id.
    pub name: String,
    /// Most steps run at once (1–10000), announced to the orchestrator as this worker's credit.
    /// Default 10. Too low leaves a worker idle while steps wait; too high lets one slow
    /// dependency (a database, an API) be hit by that many requests at once from one process.
    pub capacity: u32,
    /// The heartbeat interval this worker asks for (100 ms–60 s). Default `None`: accept the
    /// orchestrator's. The interval actually used is the one in `welcome`.
    pub heartbeat_interval: Option<Duration>,
    /// How long to wait for `welcome` after sending `hello` before opening a fresh connection and
    /// saying `hello` again (the spec's "hello timeout"; the wait doubles on each retry, up to
    /// [`retry_backoff_max`](Self::retry_backoff_max)). Default 5 s. The worker keeps trying
    /// for as long as it runs: an orchestrator that starts later is found. Also the least time
    /// between two re-registrations prompted by `not_registered` errors (§7.5).
    pub welcome_timeout: Duration,
    /// On shutdown, how long steps already running may take to finish. Default 30 s. Steps still
    /// running after it are stopped and reported as retryable failures
    /// (`tasker.worker_shutdown`); steps that never started are handed back at once, whatever
    /// this is. Too short wastes work that was nearly done; too long delays a deploy.
    pub shutdown_grace: Duration,
    /// On shutdown, after the last step has finished, how long to wait for the orchestrator to
    /// acknowledge the results sent. Default 5 s. Results still unacknowledged then are lost
    /// with this process; the orchestrator re-runs those steps after their timeout.
    pub shutdown_ack_timeout: Duration,
    /// Longest wait between attempts to register when the orchestrator does not answer or says
    /// `not_accepting_workers`. Default 30 s.
    pub retry_backoff_max: Duration,
    /// The DEALER socket's settings. By default frames up to the protocol's largest
    /// `max_frame_bytes` (64 MiB) are read (the session's own, smaller limit is enforced when
    /// decoding) and `linger` is 0 (spec §2.1: held results live in the worker, not in ZeroMQ's
    /// queues). `routing_id` must stay `None`: the protocol forbids workers to choose one.
    pub dealer: DealerOptions,
}

impl WorkerOptions {
    /// Options for a worker connecting to `endpoint`, with every other field at its default.
    pub fn new(endpoint: impl Into<String>) -> Self {
        let pid = std::process::id();
        let random = Uuid::new_v4().simple().to_string();
        Self {
            endpoint: endpoint.into(),
            worker_id: format!("{}-{pid}-{}", host_name_for_id(), &random[..8]),
            name: format!("tasker-worker-rust (pid {pid})"),
            capacity: DEFAULT_CAPACITY,
            heartbeat_interval: None,
            welcome_timeout: DEFAULT_WELCOME_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            shutdown_ack_timeout: DEFAULT_SHUTDOWN_ACK_TIMEOUT,
            retry_backoff_max: DEFAULT_RETRY_BACKOFF_MAX,
            dealer: DealerOptions {
                limits: FrameLimits {
                    max_frame_bytes: MAX_MAX_FRAME_BYTES,
                    hard_max_frame_bytes: Some(MAX_MAX_FRAME_BYTES),
                    linger: Duration::ZERO,
                    ..FrameLimits::default()
                },
                ..DealerOptions::default()
            },
        }
    }

    /// Checks every field against the protocol's rules.
    pub(crate) fn validate(&self) -> Result<(), WorkerError> {
        let invalid = |reason: String| Err(WorkerError::InvalidOptions(reason));
        if self.endpoint.is_empty() {
            return invalid("endpoint must not be empty".to_owned());
        }
        if let Err(reason) = check_identifier(&self.worker_id) {
            return invalid(format!("worker_id {:?} {reason}", self.worker_id));
        }
        if self.name.is_empty() || self.name.len() > MAX_NAME_BYTES {
            return invalid(format!("name must be 1 to {MAX_NAME_BYTES} bytes"));
        }
        if !(1..=MAX_CAPACITY).contains(&self.capacity) {
            return invalid(format!(
                "capacity must be between 1 and {MAX_CAPACITY}, not {}",
                self.capacity
            ));
        }
        if let Some(interval) = self.heartbeat_interval {
            let ms = interval.as_millis();
            if ms < u128::from(MIN_HEARTBEAT_INTERVAL_MS)
                || ms > u128::from(MAX_HEARTBEAT_INTERVAL_MS)
            {
                return invalid(format!(
                    "heartbeat_interval must be between {MIN_HEARTBEAT_INTERVAL_MS} ms and \
                     {MAX_HEARTBEAT_INTERVAL_MS} ms, not {ms} ms"
                ));
            }
        }
        if self.dealer.routing_id.is_some() {
            return invalid(
                "dealer.routing_id must not be set: the protocol forbids workers to choose a \
                 ZeroMQ routing id (spec §2.1)"
                    .to_owned(),
            );
        }
        for (name, value) in [
            ("welcome_timeout", self.welcome_timeout),
            ("retry_backoff_max", self.retry_backoff_max),
        ] {
            if value.is_zero() {
                return invalid(format!("{name} must be longer than zero"));
            }
        }
        Ok(())
    }
}

/// This host's name, cut to 64 bytes and with every character an identifier may not contain
/// replaced by `-`; `host` when it cannot be read.
fn host_name_for_id() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    name.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Checks a worker id against the protocol's identifier rule.
fn check_identifier(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_IDENTIFIER_BYTES {
        return Err(format!("must be 1 to {MAX_IDENTIFIER_BYTES} bytes"));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-')))
    {
        Some(bad) => Err(format!(
            "contains {bad:?}; only A-Z a-z 0-9 . _ : @ - are allowed"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ids_unique() {
        let first = WorkerOptions::new("tcp://127.0.0.1:1");
        let second = WorkerOptions::new("tcp://127.0.0.1:1");
        first.validate().expect("defaults are valid");
        assert_ne!(first.worker_id, second.worker_id);
        assert!(
            first.worker_id.ends_with(&format!(
                "-{}-{}",
                std::process::id(),
                &first.worker_id[first.worker_id.len() - 8..]
            )),
            "{}",
            first.worker_id
        );
        assert_eq!(first.capacity, DEFAULT_CAPACITY);
    }

    #[test]
    fn rule_breaking_options_are_named() {
        let mut options = WorkerOptions::new("tcp://127.0.0.1:1");
        options.worker_id = "has space".to_owned();
        let error = options.validate().expect_err("space is not allowed");
        assert!(error.to_string().contains("worker_id"), "{error}");

        let mut options = WorkerOptions::new("tcp://127.0.0.1:1");
        options.capacity = 0;
        let error = options.validate().expect_err("capacity 0");
        assert!(error.to_string().contains("capacity"), "{error}");

        let mut options = WorkerOptions::new("tcp://127.0.0.1:1");
        options.heartbeat_interval = Some(Duration::from_millis(10));
        let error = options.validate().expect_err("too short");
        assert!(error.to_string().contains("heartbeat_interval"), "{error}");

        let mut options = WorkerOptions::new("tcp://127.0.0.1:1");
        options.dealer.routing_id = Some(b"me".to_vec());
        let error = options.validate().expect_err("routing ids are forbidden");
        assert!(error.to_string().contains("routing_id"), "{error}");
    }
}
