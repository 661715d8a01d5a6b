//! Frames: peer routing ids, the rules a received message must follow, and the errors when it
//! does not.
//!
//! The protocol puts exactly one frame in every message. A message is accepted when it has one
//! frame that is neither empty nor larger than the configured maximum; anything else is reported
//! as a [`FrameError`] and dropped, and the connection goes on.

use std::fmt;
use std::sync::Arc;

/// A peer's ZeroMQ routing id, as the orchestrator's ROUTER socket sees it.
///
/// By default ZeroMQ gives every new connection a fresh 5-byte id; a worker may instead choose a
/// stable one ([`DealerOptions::routing_id`](crate::DealerOptions::routing_id)). Cheap to clone.
/// Displays as lowercase hex.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(Arc<[u8]>);

impl PeerId {
    /// Wraps raw routing-id bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(Arc::from(bytes))
    }

    /// The raw routing-id bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0.iter() {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

impl From<&[u8]> for PeerId {
    fn from(bytes: &[u8]) -> Self {
        Self::from_bytes(bytes)
    }
}

/// Why a received message was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameErrorKind {
    /// The single frame is larger than the configured maximum.
    TooLarge {
        /// Size of the frame in bytes.
        size: usize,
        /// The configured maximum in bytes.
        max: usize,
    },
    /// The message had more than one frame (the protocol sends exactly one).
    Multipart {
        /// How many payload frames it had (the ROUTER's routing-id frame not counted).
        frames: usize,
    },
    /// The message's only frame was empty.
    Empty,
}

impl fmt::Display for FrameErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { size, max } => {
                write!(
                    f,
                    "frame of {size} bytes exceeds the maximum of {max} bytes"
                )
            }
            Self::Multipart { frames } => {
                write!(f, "message has {frames} frames; exactly one is allowed")
            }
            Self::Empty => f.write_str("empty frame"),
        }
    }
}

/// A message the orchestrator received and rejected, with the peer that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// Who sent it (reply to this peer with a protocol error if wanted).
    pub peer: PeerId,
    /// What was wrong with it.
    pub kind: FrameErrorKind,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rejected message from peer {}: {}", self.peer, self.kind)
    }
}

impl std::error::Error for FrameError {}

/// Checks a received message's shape: `frames` payload frames (routing id not counted), the first
/// of which is `first_len` bytes long. Returns the reason to reject it, if any.
pub(crate) fn check_message(
    frames: usize,
    first_len: usize,
    max_frame_bytes: usize,
) -> Option<FrameErrorKind> {
    if frames > 1 {
        Some(FrameErrorKind::Multipart { frames })
    } else if frames == 0 || first_len == 0 {
        Some(FrameErrorKind::Empty)
    } else if first_len > max_frame_bytes {
        Some(FrameErrorKind::TooLarge {
            size: first_len,
            max: max_frame_bytes,
        })
    } else {
        None
    }
}

/// Checks a frame we are about to send against the same rules peers apply to us.
pub(crate) fn check_outbound(
    len: usize,
    max_frame_bytes: usize,
) -> Result<(), crate::TransportError> {
    if len == 0 {
        Err(crate::TransportError::EmptyFrame)
    } else if len > max_frame_bytes {
        Err(crate::TransportError::FrameTooLarge {
            size: len,
            max: max_frame_bytes,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_displays_as_lowercase_hex() {
        let peer = PeerId::from_bytes(&[0x00, 0x6b, 0x8b, 0x45, 0xff]);
        assert_eq!(peer.to_string(), "006b8b45ff");
        assert_eq!(format!("{peer:?}"), "PeerId(006b8b45ff)");
        assert_eq!(peer.as_bytes(), &[0x00, 0x6b, 0x8b, 0x45, 0xff]);
    }

    #[test]
    fn one_frame_within_the_limit_is_accepted() {
        assert_eq!(check_message(1, 1, 10), None);
        assert_eq!(check_message(1, 10, 10), None);
    }

    #[test]
    fn a_frame_one_byte_over_the_limit_is_too_large() {
        assert_eq!(
            check_message(1, 11, 10),
            Some(FrameErrorKind::TooLarge { size: 11, max: 10 })
        );
    }

    #[test]
    fn more_than_one_frame_is_multipart_whatever_the_sizes() {
        assert_eq!(
            check_message(3, 0, 10),
            Some(FrameErrorKind::Multipart { frames: 3 })
        );
        assert_eq!(
            check_message(2, 100, 10),
            Some(FrameErrorKind::Multipart { frames: 2 })
        );
    }

    #[test]
    fn no_frame_or_an_empty_frame_is_empty() {
        assert_eq!(check_message(0, 0, 10), Some(FrameErrorKind::Empty));
        assert_eq!(check_message(1, 0, 10), Some(FrameErrorKind::Empty));
    }

    #[test]
    fn outbound_frames_follow_the_same_rules() {
        assert!(check_outbound(10, 10).is_ok());
        assert!(matches!(
            check_outbound(0, 10),
            Err(crate::TransportError::EmptyFrame)
        ));
        assert!(matches!(
            check_outbound(11, 10),
            Err(crate::TransportError::FrameTooLarge { size: 11, max: 10 })
        ));
    }

    #[test]
    fn frame_errors_name_the_peer_and_the_cause() {
        let error = FrameError {
            peer: PeerId::from_bytes(&[1, 2]),
            kind: FrameErrorKind::TooLarge { size: 5, max: 4 },
        };
        assert_eq!(
            error.to_string(),
            "rejected message from peer 0102: frame of 5 bytes exceeds the maximum of 4 bytes"
        );
    }
}
