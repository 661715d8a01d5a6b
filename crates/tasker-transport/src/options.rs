//! Settings shared by both socket roles, and their conversion to ZeroMQ's units.

use std::time::Duration;

use crate::TransportError;

/// The default largest frame accepted: 4 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// ZeroMQ-level (ZMTP) heartbeats: each side pings the other every `interval` and drops the
/// connection when nothing at all has arrived for `timeout`. They find peers that vanished without
/// closing their connection (a host powered off, a network partition), which TCP alone may not
/// notice for hours. They complement, and do not replace, the protocol's own worker heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// How often to ping. Too low wastes packets; too high delays detection.
    pub interval: Duration,
    /// Silence after which the connection is dropped. Keep it several intervals long.
    pub timeout: Duration,
}

impl Default for Heartbeat {
    /// A ping every 5 s, a connection dropped after 15 s of silence.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
        }
    }
}

/// The limits on frames and queues that both socket roles share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest frame accepted (received frames above it are reported as
    /// [`FrameErrorKind::TooLarge`](crate::FrameErrorKind::TooLarge) and dropped, the connection
    /// stays up) and the largest frame `send` accepts. Default 4 MiB.
    pub max_frame_bytes: usize,
    /// Frames above this are not even read: ZeroMQ (`ZMQ_MAXMSGSIZE`) drops the connection that
    /// sent one, silently. It bounds the memory one frame can take. `None` means four times
    /// `max_frame_bytes`; it must not be below `max_frame_bytes`.
    pub hard_max_frame_bytes: Option<usize>,
    /// Frames queued for sending per peer before sends fail with
    /// [`TransportError::PeerBusy`] (`ZMQ_SNDHWM`, default 1000; 0 means unlimited, never use it).
    pub send_high_water_mark: u32,
    /// Frames ZeroMQ buffers per peer on receipt before it stops reading that peer's connection
    /// (`ZMQ_RCVHWM`, default 1000).
    pub receive_high_water_mark: u32,
    /// How long frames still queued at shutdown keep being delivered in the background
    /// (`ZMQ_LINGER`, default 1 s). The protocol acknowledges everything, so losing them costs a
    /// retry, not correctness.
    pub linger: Duration,
    /// Events the receiver buffers before the socket stops reading (default 1024).
    pub inbound_capacity: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            hard_max_frame_bytes: None,
            send_high_water_mark: 1000,
            receive_high_water_mark: 1000,
            linger: Duration::from_secs(1),
            inbound_capacity: 1024,
        }
    }
}

impl FrameLimits {
    /// The hard limit in force, after checking it against the soft one.
    pub(crate) fn hard_limit(&self) -> Result<usize, TransportError> {
        if self.max_frame_bytes == 0 {
            return Err(TransportError::InvalidOptions(
                "max_frame_bytes must be at least 1".to_owned(),
            ));
        }
        let hard = self
            .hard_max_frame_bytes
            .unwrap_or_else(|| self.max_frame_bytes.saturating_mul(4));
        if hard < self.max_frame_bytes {
            return Err(TransportError::InvalidOptions(format!(
                "hard_max_frame_bytes ({hard}) is below max_frame_bytes ({})",
                self.max_frame_bytes
            )));
        }
        Ok(hard)
    }

    /// Applies the limits common to both roles to a socket.
    pub(crate) fn apply(&self, socket: &zmq::Socket) -> Result<(), TransportError> {
        let option = TransportError::socket("set socket option");
        let hard = i64::try_from(self.hard_limit()?).unwrap_or(i64::MAX);
        socket.set_maxmsgsize(hard).map_err(option)?;
        socket
            .set_sndhwm(clamp_i32(self.send_high_water_mark))
            .map_err(option)?;
        socket
            .set_rcvhwm(clamp_i32(self.receive_high_water_mark))
            .map_err(option)?;
        socket.set_linger(millis(self.linger)).map_err(option)?;
        Ok(())
    }
}

/// Applies ZMTP heartbeats to a socket.
pub(crate) fn apply_heartbeat(
    socket: &zmq::Socket,
    heartbeat: Option<Heartbeat>,
) -> Result<(), TransportError> {
    let option = TransportError::socket("set socket option");
    if let Some(heartbeat) = heartbeat {
        socket
            .set_heartbeat_ivl(millis(heartbeat.interval))
            .map_err(option)?;
        socket
            .set_heartbeat_timeout(millis(heartbeat.timeout))
            .map_err(option)?;
    }
    Ok(())
}

/// A duration in whole milliseconds as ZeroMQ wants it, saturating.
pub(crate) fn millis(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}

fn clamp_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hard_limit_defaults_to_four_times_the_frame_limit() {
        let limits = FrameLimits {
            max_frame_bytes: 100,
            ..FrameLimits::default()
        };
        assert_eq!(limits.hard_limit().expect("valid"), 400);
    }

    #[test]
    fn a_hard_limit_below_the_frame_limit_is_refused() {
        let limits = FrameLimits {
            max_frame_bytes: 100,
            hard_max_frame_bytes: Some(99),
            ..FrameLimits::default()
        };
        let error = limits.hard_limit().expect_err("inconsistent");
        assert!(
            error.to_string().contains("hard_max_frame_bytes (99)"),
            "{error}"
        );
    }

    #[test]
    fn a_zero_frame_limit_is_refused() {
        let limits = FrameLimits {
            max_frame_bytes: 0,
            ..FrameLimits::default()
        };
        assert!(limits.hard_limit().is_err());
    }

    #[test]
    fn durations_saturate_in_milliseconds() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::from_secs(u64::MAX)), i32::MAX);
    }
}
