//! The protocol version carried by every message, and the compatibility rule between peers.

use serde::{Serialize, Serializer};
use std::fmt;

/// A `major.minor` protocol version, as carried in every message's `protocol_version` field.
///
/// Peers are compatible when their major versions are equal. A minor version only adds optional
/// fields or message kinds that a peer may use once both sides have announced support for it, so
/// a receiver accepts any minor version of its own major version and ignores fields it does not
/// know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtocolVersion {
    /// Incompatible revisions of the protocol. A receiver rejects every other major version.
    pub major: u32,
    /// Compatible additions within one major version.
    pub minor: u32,
}

/// The version of the protocol this crate implements: `"1.0"`.
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion { major: 1, minor: 0 };

impl ProtocolVersion {
    /// Parses the wire form `"<major>.<minor>"`: two decimal numbers without sign or leading
    /// zeros, each fitting in 32 bits. Returns `None` for anything else (`"1"`, `"v1.0"`,
    /// `"01.0"`, `"1.0.0"`).
    pub fn parse(text: &str) -> Option<Self> {
        let (major, minor) = text.split_once('.')?;
        Some(Self {
            major: parse_component(major)?,
            minor: parse_component(minor)?,
        })
    }

    /// Whether a peer speaking `self` can exchange messages with one speaking `other`
    /// (equal major versions).
    pub const fn is_compatible_with(self, other: ProtocolVersion) -> bool {
        self.major == other.major
    }

    /// The version two compatible peers use after the handshake: the lower of the two minor
    /// versions. Neither side may use a field or message kind introduced after it.
    pub fn negotiate(self, other: ProtocolVersion) -> ProtocolVersion {
        if self.minor <= other.minor {
            self
        } else {
            other
        }
    }
}

fn parse_component(text: &str) -> Option<u32> {
    let well_formed = !text.is_empty()
        && text.bytes().all(|byte| byte.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if well_formed { text.parse().ok() } else { None }
}

impl Default for ProtocolVersion {
    fn default() -> Self {
        PROTOCOL_VERSION
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl Serialize for ProtocolVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_well_formed_versions() {
        assert_eq!(ProtocolVersion::parse("1.0"), Some(PROTOCOL_VERSION));
        assert_eq!(
            ProtocolVersion::parse("2.13"),
            Some(ProtocolVersion {
                major: 2,
                minor: 13
            })
        );
        assert_eq!(
            ProtocolVersion::parse("0.0"),
            Some(ProtocolVersion { major: 0, minor: 0 })
        );
    }

    #[test]
    fn rejects_malformed_versions() {
        for text in [
            "",
            "1",
            "1.",
            ".1",
            "v1.0",
            "01.0",
            "1.00",
            "1.0.0",
            "+1.0",
            "-1.0",
            "1.0 ",
            " 1.0",
            "1,0",
            "4294967296.0",
        ] {
            assert_eq!(ProtocolVersion::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn compatibility_is_by_major_version() {
        let v1_7 = ProtocolVersion { major: 1, minor: 7 };
        let v2_0 = ProtocolVersion { major: 2, minor: 0 };
        assert!(PROTOCOL_VERSION.is_compatible_with(v1_7));
        assert!(!PROTOCOL_VERSION.is_compatible_with(v2_0));
        assert_eq!(PROTOCOL_VERSION.negotiate(v1_7), PROTOCOL_VERSION);
        assert_eq!(v1_7.negotiate(PROTOCOL_VERSION), PROTOCOL_VERSION);
    }

    #[test]
    fn displays_and_serializes_as_wire_text() {
        assert_eq!(PROTOCOL_VERSION.to_string(), "1.0");
        assert_eq!(
            serde_json::to_string(&PROTOCOL_VERSION).expect("a version serializes"),
            "\"1.0\""
        );
    }
}
