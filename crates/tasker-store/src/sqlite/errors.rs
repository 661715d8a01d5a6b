//! Maps SQLite (rusqlite) errors to [`StoreError`] kinds.

use rusqlite::ErrorCode;

use crate::error::StoreError;

/// What SQLite backend functions fail with: a rusqlite error, or already a [`StoreError`].
pub(crate) type Fail = crate::error::Fail<rusqlite::Error>;
/// What SQLite backend functions return.
pub(crate) type FailResult<T> = crate::error::FailResult<T, rusqlite::Error>;

/// Converts a [`Fail`], naming the database file in connection-level errors.
pub(crate) fn map_fail(fail: Fail, path: &str) -> StoreError {
    match fail {
        Fail::Db(e) => map_error(e, path),
        Fail::Store(e) => e,
    }
}

/// Converts a driver error, naming the database file in connection-level errors.
pub(crate) fn map_error(err: rusqlite::Error, path: &str) -> StoreError {
    match err {
        rusqlite::Error::SqliteFailure(failure, message) => {
            let message = message.unwrap_or_else(|| failure.to_string());
            match failure.code {
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Locked {
                    cause: format!(
                        "{path} is locked by another connection or process and stayed locked past \
                         the busy timeout ({message})"
                    ),
                },
                ErrorCode::DiskFull => StoreError::DiskFull {
                    cause: format!("{path}: {message}"),
                },
                ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::SystemIoFailure => {
                    StoreError::Unavailable {
                        target: path.to_owned(),
                        cause: message,
                    }
                }
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => StoreError::Corrupt {
                    reason: format!("{path}: {message}"),
                },
                _ => StoreError::Backend { cause: message },
            }
        }
        rusqlite::Error::FromSqlConversionFailure(index, _, source) => StoreError::Corrupt {
            reason: format!("column {index}: {source}"),
        },
        rusqlite::Error::IntegralValueOutOfRange(index, value) => StoreError::Corrupt {
            reason: format!("column {index}: {value} is out of range"),
        },
        rusqlite::Error::InvalidColumnType(index, name, found) => StoreError::Corrupt {
            reason: format!("column {index} ({name}): unexpected {found}"),
        },
        rusqlite::Error::Utf8Error(..) => StoreError::Corrupt {
            reason: err.to_string(),
        },
        other => StoreError::Backend {
            cause: other.to_string(),
        },
    }
}

/// Whether an error is a violated UNIQUE or PRIMARY KEY constraint.
pub(crate) fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// The store was closed (or its writer thread is gone).
pub(crate) fn closed(path: &str) -> StoreError {
    StoreError::Unavailable {
        target: path.to_owned(),
        cause: "the store was closed".to_owned(),
    }
}
