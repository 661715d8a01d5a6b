//! Reading typed fields out of a parsed JSON object, reporting the first violation with the
//! field's path (`steps[0].metadata.attempt`) and the protocol's error code.
//!
//! The checks for one field run in a fixed order: presence, JSON type, size limit, value rules.

use crate::error::ProtocolError;
use crate::limits::{
    MAX_BACKTRACE_ENTRY_BYTES, MAX_CODE_BYTES, MAX_IDENTIFIER_BYTES, MAX_NAME_BYTES, MAX_TEXT_BYTES,
};
use crate::types::{JsonObject, StepRef, WireEnum};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// The kinds of string field, each with its byte limit and content rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Text {
    /// `worker_id`, `orchestrator_id`: 1–128 bytes of `A-Z a-z 0-9 . _ : @ -`.
    Identifier,
    /// Names (`handler_class`, `step_name`, …): 1–255 bytes, any characters.
    Name,
    /// `offending_message_type`: 0–255 bytes, any characters.
    Label,
    /// Free text (`message`, `reason`): 0–16384 bytes.
    Prose,
    /// One backtrace entry: 0–2048 bytes.
    BacktraceEntry,
    /// Error codes: 1–64 bytes of `[a-z][a-z0-9_]*`.
    Code,
}

impl Text {
    const fn max_bytes(self) -> usize {
        match self {
            Text::Identifier => MAX_IDENTIFIER_BYTES,
            Text::Name | Text::Label => MAX_NAME_BYTES,
            Text::Prose => MAX_TEXT_BYTES,
            Text::BacktraceEntry => MAX_BACKTRACE_ENTRY_BYTES,
            Text::Code => MAX_CODE_BYTES,
        }
    }

    /// The content rule, or `None` if `text` satisfies it.
    fn violation(self, text: &str) -> Option<&'static str> {
        match self {
            Text::Identifier if text.is_empty() => Some("must not be empty"),
            Text::Identifier
                if !text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b)) =>
            {
                Some("may contain only the characters A-Z a-z 0-9 . _ : @ -")
            }
            Text::Name if text.is_empty() => Some("must not be empty"),
            Text::Code => {
                let mut bytes = text.bytes();
                let starts_with_letter = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
                let rest_ok =
                    bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                (!(starts_with_letter && rest_ok)).then_some("must match [a-z][a-z0-9_]*")
            }
            _ => None,
        }
    }
}

/// The JSON type of a value as named in error messages. Numbers without fraction or exponent
/// that fit in a signed 64-bit integer are `integer`; other numbers are `number` (or, for
/// unsigned values above `i64::MAX`, said to be beyond the range).
pub(crate) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() => "integer",
        Value::Number(n) if n.is_u64() => "integer beyond the signed 64-bit range",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A JSON object being read, with the path prefix of its fields.
#[derive(Debug)]
pub(crate) struct Fields<'a> {
    map: &'a JsonObject,
    prefix: String,
}

impl<'a> Fields<'a> {
    /// The top-level object of a message.
    pub(crate) fn root(map: &'a JsonObject) -> Self {
        Self {
            map,
            prefix: String::new(),
        }
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// A required field: absent is `missing_field`; `null` fails the type check that follows.
    pub(crate) fn required(&self, name: &str) -> Result<Field<'a>, ProtocolError> {
        let path = self.path(name);
        match self.map.get(name) {
            Some(value) => Ok(Field { value, path }),
            None => Err(ProtocolError::MissingField { field: path }),
        }
    }

    /// An optional field: absent and `null` both mean "not given".
    pub(crate) fn optional(&self, name: &str) -> Option<Field<'a>> {
        match self.map.get(name) {
            None | Some(Value::Null) => None,
            Some(value) => Some(Field {
                value,
                path: self.path(name),
            }),
        }
    }
}

/// One present field value and its path.
#[derive(Debug)]
pub(crate) struct Field<'a> {
    value: &'a Value,
    path: String,
}

impl<'a> Field<'a> {
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    fn wrong_type(&self, expected: &'static str) -> ProtocolError {
        ProtocolError::InvalidFieldType {
            field: self.path.clone(),
            expected,
            found: json_type_name(self.value),
        }
    }

    /// An invalid-value error for this field.
    pub(crate) fn invalid(&self, reason: impl Into<String>) -> ProtocolError {
        ProtocolError::InvalidFieldValue {
            field: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn over_limit(&self, reason: String) -> ProtocolError {
        ProtocolError::LimitExceeded {
            field: self.path.clone(),
            reason,
        }
    }

    /// A string of the given kind.
    pub(crate) fn text(&self, kind: Text) -> Result<String, ProtocolError> {
        let Value::String(text) = self.value else {
            return Err(self.wrong_type("a string"));
        };
        if text.len() > kind.max_bytes() {
            return Err(self.over_limit(format!(
                "{} bytes of UTF-8, more than the maximum of {}",
                text.len(),
                kind.max_bytes()
            )));
        }
        match kind.violation(text) {
            Some(rule) => Err(self.invalid(rule)),
            None => Ok(text.clone()),
        }
    }

    /// An integer in `min..=max`. Non-integers and integers outside the signed 64-bit range
    /// are type errors; integers outside `min..=max` are value errors.
    fn integer(&self, min: i64, max: i64) -> Result<i64, ProtocolError> {
        let number = match self.value {
            Value::Number(number) => number.as_i64(),
            _ => None,
        };
        let Some(number) = number else {
            return Err(self.wrong_type("an integer in the signed 64-bit range"));
        };
        if number < min || number > max {
            return Err(self.invalid(format!("{number} is outside the range {min}..={max}")));
        }
        Ok(number)
    }

    /// A step or task id: an integer ≥ 1.
    pub(crate) fn id(&self) -> Result<i64, ProtocolError> {
        self.integer(1, i64::MAX)
    }

    /// A 32-bit count or number in `min..=max`.
    pub(crate) fn u32_in(&self, min: u32, max: u32) -> Result<u32, ProtocolError> {
        let number = self.integer(i64::from(min), i64::from(max))?;
        Ok(u32::try_from(number).expect("range-checked against u32 bounds"))
    }

    /// A non-negative 64-bit number in `min..=max` (at most `i64::MAX`, like every protocol
    /// integer).
    pub(crate) fn u64_in(&self, min: u64, max: u64) -> Result<u64, ProtocolError> {
        let clamp = |bound: u64| i64::try_from(bound).unwrap_or(i64::MAX);
        let number = self.integer(clamp(min), clamp(max))?;
        Ok(u64::try_from(number).expect("range-checked to be non-negative"))
    }

    /// A boolean.
    pub(crate) fn boolean(&self) -> Result<bool, ProtocolError> {
        match self.value {
            Value::Bool(flag) => Ok(*flag),
            _ => Err(self.wrong_type("a boolean")),
        }
    }

    /// A UUID in lowercase hyphenated form.
    pub(crate) fn uuid(&self) -> Result<Uuid, ProtocolError> {
        let Value::String(text) = self.value else {
            return Err(self.wrong_type("a string"));
        };
        parse_canonical_uuid(text).ok_or_else(|| {
            self.invalid(format!(
                "\"{}\" is not a UUID in lowercase hyphenated form \
                 (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
                crate::limits::truncate_to_bytes(text, 64)
            ))
        })
    }

    /// An RFC 3339 timestamp with an explicit offset.
    pub(crate) fn timestamp(&self) -> Result<DateTime<Utc>, ProtocolError> {
        let Value::String(text) = self.value else {
            return Err(self.wrong_type("a string"));
        };
        parse_timestamp(text).ok_or_else(|| {
            self.invalid(format!(
                "\"{}\" is not an RFC 3339 timestamp of the form \
                 YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)",
                crate::limits::truncate_to_bytes(text, 64)
            ))
        })
    }

    /// A value of a closed enumeration.
    pub(crate) fn one_of<E: WireEnum>(&self) -> Result<E, ProtocolError> {
        let Value::String(text) = self.value else {
            return Err(self.wrong_type("a string"));
        };
        E::from_wire(text).ok_or_else(|| {
            self.invalid(format!(
                "\"{}\" is not one of {}",
                crate::limits::truncate_to_bytes(text, 64),
                E::allowed()
            ))
        })
    }

    /// A nested protocol object, read field by field.
    pub(crate) fn object(&self) -> Result<Fields<'a>, ProtocolError> {
        match self.value {
            Value::Object(map) => Ok(Fields {
                map,
                prefix: self.path.clone(),
            }),
            _ => Err(self.wrong_type("an object")),
        }
    }

    /// An opaque JSON object (user payload), copied.
    pub(crate) fn json_object(&self) -> Result<JsonObject, ProtocolError> {
        match self.value {
            Value::Object(map) => Ok(map.clone()),
            _ => Err(self.wrong_type("an object")),
        }
    }

    /// Any JSON value (user payload), copied.
    pub(crate) fn any(&self) -> Value {
        self.value.clone()
    }

    /// An array with at most `max_items` entries (`limit_exceeded` beyond), non-empty if
    /// `non_empty` (`invalid_field_value` otherwise). Entries are read by the caller, in order.
    pub(crate) fn array(
        &self,
        max_items: usize,
        non_empty: bool,
    ) -> Result<Vec<Field<'a>>, ProtocolError> {
        let Value::Array(items) = self.value else {
            return Err(self.wrong_type("an array"));
        };
        if items.len() > max_items {
            return Err(self.over_limit(format!(
                "{} entries, more than the maximum of {max_items}",
                items.len()
            )));
        }
        if non_empty && items.is_empty() {
            return Err(self.invalid("must not be empty"));
        }
        Ok(items
            .iter()
            .enumerate()
            .map(|(index, value)| Field {
                value,
                path: format!("{}[{index}]", self.path),
            })
            .collect())
    }

    /// A `{batch_id, step_id}` reference.
    pub(crate) fn step_ref(&self) -> Result<StepRef, ProtocolError> {
        let fields = self.object()?;
        Ok(StepRef {
            batch_id: fields.required("batch_id")?.uuid()?,
            step_id: fields.required("step_id")?.id()?,
        })
    }
}

/// Reads each entry of `items` with `read`, rejecting an entry equal (by `key`) to an earlier
/// one with `invalid_field_value` at the path `key_path` gives for it.
pub(crate) fn distinct<'a, T, K: PartialEq>(
    items: Vec<Field<'a>>,
    read: impl Fn(&Field<'a>) -> Result<T, ProtocolError>,
    key: impl Fn(&T) -> K,
    duplicate_path: impl Fn(&Field<'a>) -> String,
) -> Result<Vec<T>, ProtocolError> {
    let mut values: Vec<T> = Vec::with_capacity(items.len());
    for item in &items {
        let value = read(item)?;
        let item_key = key(&value);
        if let Some(first) = values.iter().position(|earlier| key(earlier) == item_key) {
            return Err(ProtocolError::InvalidFieldValue {
                field: duplicate_path(item),
                reason: format!("duplicates entry [{first}]"),
            });
        }
        values.push(value);
    }
    Ok(values)
}

/// Parses a UUID only in the canonical lowercase hyphenated form.
pub(crate) fn parse_canonical_uuid(text: &str) -> Option<Uuid> {
    let bytes = text.as_bytes();
    let shape_ok = bytes.len() == 36
        && bytes.iter().enumerate().all(|(index, &byte)| match index {
            8 | 13 | 18 | 23 => byte == b'-',
            _ => byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte),
        });
    if shape_ok {
        Uuid::parse_str(text).ok()
    } else {
        None
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)` with uppercase `T` and `Z`, year ≥ 1 and
/// seconds 00–59 (no leap seconds), and converts it to UTC.
pub(crate) fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    let date_time_ok = digits(0..4)
        && bytes.get(4) == Some(&b'-')
        && digits(5..7)
        && bytes.get(7) == Some(&b'-')
        && digits(8..10)
        && bytes.get(10) == Some(&b'T')
        && digits(11..13)
        && bytes.get(13) == Some(&b':')
        && digits(14..16)
        && bytes.get(16) == Some(&b':')
        && digits(17..19);
    if !date_time_ok || &bytes[0..4] == b"0000" || bytes[17] > b'5' {
        return None;
    }
    let mut rest = &bytes[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let count = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if !(1..=9).contains(&count) {
            return None;
        }
        rest = &fraction[count..];
    }
    let zone_ok = rest == b"Z"
        || (rest.len() == 6
            && (rest[0] == b'+' || rest[0] == b'-')
            && rest[1..3].iter().all(u8::is_ascii_digit)
            && rest[3] == b':'
            && rest[4..6].iter().all(u8::is_ascii_digit));
    if !zone_ok {
        return None;
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|timestamp| timestamp.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_canonical_uuids_only() {
        assert!(parse_canonical_uuid("0195b4ba-8d3a-7f12-9c4e-6a1d2b3c4d5e").is_some());
        for text in [
            "0195B4BA-8D3A-7F12-9C4E-6A1D2B3C4D5E",
            "0195b4ba8d3a7f129c4e6a1d2b3c4d5e",
            "{0195b4ba-8d3a-7f12-9c4e-6a1d2b3c4d5e}",
            "urn:uuid:0195b4ba-8d3a-7f12-9c4e-6a1d2b3c4d5e",
            "0195b4ba-8d3a-7f12-9c4e-6a1d2b3c4d5",
            "0195b4ba-8d3a-7f12-9c4e-6a1d2b3c4d5g",
            "batch_12345_1706039072",
        ] {
            assert!(parse_canonical_uuid(text).is_none(), "{text}");
        }
    }

    #[test]
    fn accepts_strict_rfc3339_timestamps() {
        for text in [
            "2025-01-23T19:57:52Z",
            "2025-01-23T19:57:52.1Z",
            "2025-01-23T19:57:52.123456789Z",
            "2025-01-23T21:57:52.123+02:00",
            "2025-01-23T17:57:52-02:00",
            "0001-01-01T00:00:00Z",
        ] {
            assert!(parse_timestamp(text).is_some(), "{text}");
        }
        assert_eq!(
            parse_timestamp("2025-01-23T21:57:52+02:00"),
            parse_timestamp("2025-01-23T19:57:52Z")
        );
    }

    #[test]
    fn rejects_loose_timestamps() {
        for text in [
            "2025-01-23T19:57:52",
            "2025-01-23 19:57:52Z",
            "2025-01-23t19:57:52z",
            "2025-01-23T19:57:60Z",
            "2025-13-23T19:57:52Z",
            "2025-02-30T19:57:52Z",
            "2025-01-23T24:00:00Z",
            "0000-01-01T00:00:00Z",
            "2025-01-23T19:57:52.Z",
            "2025-01-23T19:57:52.1234567890Z",
            "2025-01-23T19:57:52+0200",
            "2025-01-23T19:57:52+02",
            "1737662272",
            "yesterday",
            "",
        ] {
            assert!(parse_timestamp(text).is_none(), "{text}");
        }
    }

    #[test]
    fn code_rule() {
        assert_eq!(Text::Code.violation("missing_field"), None);
        assert_eq!(Text::Code.violation("e2"), None);
        assert!(Text::Code.violation("").is_some());
        assert!(Text::Code.violation("_x").is_some());
        assert!(Text::Code.violation("Missing").is_some());
        assert!(Text::Code.violation("a-b").is_some());
    }
}
