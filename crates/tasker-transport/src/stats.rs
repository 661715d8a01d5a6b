//! Counters of what a socket moved and refused, for metrics.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{FrameErrorKind, TransportError};

/// A snapshot of one socket's counters since it was created. All counts only grow.
///
/// Accepted frames count in `frames_in`/`bytes_in`; rejected ones only in `rejected_*`.
/// A send counts in `frames_out`/`bytes_out` once ZeroMQ has queued it; a refused send counts in
/// exactly one `send_failed_*` counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Frames received and delivered.
    pub frames_in: u64,
    /// Payload bytes received and delivered.
    pub bytes_in: u64,
    /// Frames queued for sending.
    pub frames_out: u64,
    /// Payload bytes queued for sending.
    pub bytes_out: u64,
    /// Received messages rejected as larger than the maximum.
    pub rejected_too_large: u64,
    /// Received messages rejected for having more than one frame.
    pub rejected_multipart: u64,
    /// Received messages rejected for being empty.
    pub rejected_empty: u64,
    /// Sends refused because the peer is not connected.
    pub send_failed_unreachable: u64,
    /// Sends refused because the peer's queue was full.
    pub send_failed_busy: u64,
    /// Sends refused because the frame was empty or too large.
    pub send_failed_invalid_frame: u64,
    /// Sends that failed for any other reason (including a closed socket).
    pub send_failed_other: u64,
}

/// The live counters behind [`TransportStats`], shared by a socket's thread and its handles.
#[derive(Debug, Default)]
pub(crate) struct StatsCounters {
    frames_in: AtomicU64,
    bytes_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_out: AtomicU64,
    rejected_too_large: AtomicU64,
    rejected_multipart: AtomicU64,
    rejected_empty: AtomicU64,
    send_failed_unreachable: AtomicU64,
    send_failed_busy: AtomicU64,
    send_failed_invalid_frame: AtomicU64,
    send_failed_other: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

fn widen(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl StatsCounters {
    pub(crate) fn received(&self, bytes: usize) {
        bump(&self.frames_in, 1);
        bump(&self.bytes_in, widen(bytes));
    }

    pub(crate) fn sent(&self, bytes: usize) {
        bump(&self.frames_out, 1);
        bump(&self.bytes_out, widen(bytes));
    }

    pub(crate) fn rejected(&self, kind: FrameErrorKind) {
        let counter = match kind {
            FrameErrorKind::TooLarge { .. } => &self.rejected_too_large,
            FrameErrorKind::Multipart { .. } => &self.rejected_multipart,
            FrameErrorKind::Empty => &self.rejected_empty,
        };
        bump(counter, 1);
    }

    pub(crate) fn send_failed(&self, error: &TransportError) {
        let counter = match error {
            TransportError::PeerUnreachable { .. } => &self.send_failed_unreachable,
            TransportError::PeerBusy { .. } => &self.send_failed_busy,
            TransportError::FrameTooLarge { .. } | TransportError::EmptyFrame => {
                &self.send_failed_invalid_frame
            }
            _ => &self.send_failed_other,
        };
        bump(counter, 1);
    }

    pub(crate) fn snapshot(&self) -> TransportStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TransportStats {
            frames_in: read(&self.frames_in),
            bytes_in: read(&self.bytes_in),
            frames_out: read(&self.frames_out),
            bytes_out: read(&self.bytes_out),
            rejected_too_large: read(&self.rejected_too_large),
            rejected_multipart: read(&self.rejected_multipart),
            rejected_empty: read(&self.rejected_empty),
            send_failed_unreachable: read(&self.send_failed_unreachable),
            send_failed_busy: read(&self.send_failed_busy),
            send_failed_invalid_frame: read(&self.send_failed_invalid_frame),
            send_failed_other: read(&self.send_failed_other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PeerId;

    #[test]
    fn each_event_lands_in_its_own_counter() {
        let counters = StatsCounters::default();
        counters.received(10);
        counters.received(5);
        counters.sent(7);
        counters.rejected(FrameErrorKind::TooLarge { size: 2, max: 1 });
        counters.rejected(FrameErrorKind::Multipart { frames: 3 });
        counters.rejected(FrameErrorKind::Multipart { frames: 2 });
        counters.rejected(FrameErrorKind::Empty);
        let peer = PeerId::from_bytes(b"p");
        counters.send_failed(&TransportError::PeerUnreachable { peer: peer.clone() });
        counters.send_failed(&TransportError::PeerBusy { peer: Some(peer) });
        counters.send_failed(&TransportError::EmptyFrame);
        counters.send_failed(&TransportError::FrameTooLarge { size: 2, max: 1 });
        counters.send_failed(&TransportError::Closed);
        assert_eq!(
            counters.snapshot(),
            TransportStats {
                frames_in: 2,
                bytes_in: 15,
                frames_out: 1,
                bytes_out: 7,
                rejected_too_large: 1,
                rejected_multipart: 2,
                rejected_empty: 1,
                send_failed_unreachable: 1,
                send_failed_busy: 1,
                send_failed_invalid_frame: 2,
                send_failed_other: 1,
            }
        );
    }
}
