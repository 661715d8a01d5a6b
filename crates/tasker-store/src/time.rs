//! Conversions between `DateTime<Utc>` and the stored representation (milliseconds since the Unix
//! epoch, UTC), the same in both backends.

use chrono::{DateTime, Utc};

use crate::error::StoreError;

/// A time as stored.
pub(crate) fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A stored time.
pub(crate) fn from_ms(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| StoreError::Corrupt {
        reason: format!("timestamp {ms} ms is out of range"),
    })
}

/// An optional stored time.
pub(crate) fn from_ms_opt(ms: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    ms.map(from_ms).transpose()
}
