//! A template's semantic version.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::TemplateError;

/// A template version: a [semantic version](https://semver.org) `MAJOR.MINOR.PATCH` with an
/// optional `-pre.release` and `+build` suffix, e.g. `1.0.0` or `2.1.0-rc.1`.
///
/// Ordering follows semver precedence (numeric parts compared as numbers, a pre-release sorts
/// before its release), except that versions differing only in build metadata are ordered by
/// that metadata's text, so the order is total and consistent with equality.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TemplateVersion {
    major: u64,
    minor: u64,
    patch: u64,
    pre_release: Vec<String>,
    build: Option<String>,
    text: String,
}

impl TemplateVersion {
    /// Parses and validates a version string.
    ///
    /// # Errors
    ///
    /// [`TemplateError::InvalidVersion`] naming what is wrong (missing part, leading zero,
    /// empty identifier, character outside `[0-9A-Za-z-]`).
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let invalid = |reason: String| TemplateError::InvalidVersion {
            version: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(invalid("it is empty".to_owned()));
        }
        let (rest, build) = match text.split_once('+') {
            Some((rest, build)) => {
                check_identifiers(build, "build metadata", false).map_err(invalid)?;
                (rest, Some(build.to_owned()))
            }
            None => (text, None),
        };
        let (core, pre_release) = match rest.split_once('-') {
            Some((core, pre)) => {
                check_identifiers(pre, "pre-release", true).map_err(invalid)?;
                (core, pre.split('.').map(str::to_owned).collect())
            }
            None => (rest, Vec::new()),
        };
        let parts: Vec<&str> = core.split('.').collect();
        let [major, minor, patch] = parts.as_slice() else {
            return Err(invalid(format!(
                "it has {} dot-separated number(s) before any suffix, not 3 (MAJOR.MINOR.PATCH)",
                parts.len()
            )));
        };
        let number = |part: &str, name: &str| -> Result<u64, TemplateError> {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(format!("{name} {part:?} is not a number")));
            }
            if part.len() > 1 && part.starts_with('0') {
                return Err(invalid(format!("{name} {part:?} has a leading zero")));
            }
            part.parse()
                .map_err(|_| invalid(format!("{name} {part:?} is too large")))
        };
        Ok(Self {
            major: number(major, "major")?,
            minor: number(minor, "minor")?,
            patch: number(patch, "patch")?,
            pre_release,
            build,
            text: text.to_owned(),
        })
    }

    /// The major version.
    #[must_use]
    pub fn major(&self) -> u64 {
        self.major
    }

    /// The minor version.
    #[must_use]
    pub fn minor(&self) -> u64 {
        self.minor
    }

    /// The patch version.
    #[must_use]
    pub fn patch(&self) -> u64 {
        self.patch
    }

    /// Whether this is a pre-release (`1.0.0-rc.1`).
    #[must_use]
    pub fn is_pre_release(&self) -> bool {
        !self.pre_release.is_empty()
    }

    /// The version exactly as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Checks dot-separated identifiers: non-empty, `[0-9A-Za-z-]`, and (for pre-release) numeric
/// identifiers without leading zeros.
fn check_identifiers(
    text: &str,
    what: &str,
    numeric_leading_zero_rule: bool,
) -> Result<(), String> {
    for identifier in text.split('.') {
        if identifier.is_empty() {
            return Err(format!("{what} {text:?} has an empty identifier"));
        }
        if !identifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "{what} identifier {identifier:?} may only contain ASCII letters, digits and '-'"
            ));
        }
        if numeric_leading_zero_rule
            && identifier.len() > 1
            && identifier.starts_with('0')
            && identifier.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(format!(
                "{what} identifier {identifier:?} has a leading zero"
            ));
        }
    }
    Ok(())
}

fn compare_pre_release(left: &[String], right: &[String]) -> Ordering {
    match (left.is_empty(), right.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        (false, false) => {}
    }
    for (a, b) in left.iter().zip(right) {
        let ordering = match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(a), Ok(b)) => a.cmp(&b),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => a.cmp(b),
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    left.len().cmp(&right.len())
}

impl Ord for TemplateVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| compare_pre_release(&self.pre_release, &other.pre_release))
            .then_with(|| self.build.cmp(&other.build))
            .then_with(|| self.text.cmp(&other.text))
    }
}

impl PartialOrd for TemplateVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for TemplateVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for TemplateVersion {
    type Err = TemplateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl Serialize for TemplateVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for TemplateVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn v(text: &str) -> TemplateVersion {
        TemplateVersion::parse(text).unwrap()
    }

    #[test]
    fn parses_release_pre_release_and_build() {
        let version = v("2.10.3-rc.1+build.7");
        assert_eq!(
            (version.major(), version.minor(), version.patch()),
            (2, 10, 3)
        );
        assert!(version.is_pre_release());
        assert_eq!(version.to_string(), "2.10.3-rc.1+build.7");
        assert!(!v("1.0.0").is_pre_release());
    }

    #[test]
    fn rejects_malformed_versions_with_a_reason() {
        for (text, reason) in [
            ("1.0", "not 3"),
            ("1", "not 3"),
            ("", "empty"),
            ("1.0.0.0", "not 3"),
            ("01.0.0", "leading zero"),
            ("1.x.0", "not a number"),
            ("1.0.0-", "empty identifier"),
            ("1.0.0-rc..1", "empty identifier"),
            ("1.0.0-01", "leading zero"),
            ("1.0.0+bad_char", "may only contain"),
            (" 1.0.0", "not a number"),
            ("99999999999999999999.0.0", "too large"),
        ] {
            let error = TemplateVersion::parse(text).unwrap_err();
            let message = error.to_string();
            assert!(
                matches!(error, TemplateError::InvalidVersion { .. }),
                "{text}: {message}"
            );
            assert!(message.contains(reason), "{text}: {message}");
        }
    }

    #[test]
    fn orders_by_semver_precedence() {
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.2.0",
            "1.10.0",
            "2.0.0",
        ];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let version: TemplateVersion = serde_json::from_str("\"1.2.3\"").unwrap();
        assert_eq!(serde_json::to_string(&version).unwrap(), "\"1.2.3\"");
        assert!(serde_json::from_str::<TemplateVersion>("\"1.2\"").is_err());
    }
}
