//! Maps SQLite and driver errors to [`StoreError`] kinds.

use crate::error::StoreError;

/// SQLite primary result codes we tell apart (the low byte of the extended code).
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;
const SQLITE_NOTADB: i32 = 26;

/// Converts a driver error, naming the database file in connection-level errors.
pub(crate) fn map_error(err: sqlx::Error, path: &str) -> StoreError {
    match err {
        sqlx::Error::Database(db) => {
            let message = db.message().to_owned();
            let code = db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .map_or(-1, |c| c & 0xff);
            match code {
                SQLITE_BUSY | SQLITE_LOCKED => StoreError::Locked {
                    cause: format!(
                        "{path} is locked by another connection or process and stayed locked past \
                         the busy timeout ({message})"
                    ),
                },
                SQLITE_FULL => StoreError::DiskFull {
                    cause: format!("{path}: {message}"),
                },
                SQLITE_CANTOPEN | SQLITE_READONLY | SQLITE_IOERR => StoreError::Unavailable {
                    target: path.to_owned(),
                    cause: message,
                },
                SQLITE_CORRUPT | SQLITE_NOTADB => StoreError::Corrupt {
                    reason: format!("{path}: {message}"),
                },
                _ => StoreError::Backend { cause: message },
            }
        }
        sqlx::Error::Io(io) => {
            if io.raw_os_error() == Some(28) {
                StoreError::DiskFull {
                    cause: format!("{path}: {io}"),
                }
            } else {
                StoreError::Unavailable {
                    target: path.to_owned(),
                    cause: io.to_string(),
                }
            }
        }
        sqlx::Error::PoolTimedOut => StoreError::Locked {
            cause: format!("timed out waiting for the writer connection to {path}"),
        },
        sqlx::Error::PoolClosed => StoreError::Unavailable {
            target: path.to_owned(),
            cause: "the store was closed".to_owned(),
        },
        sqlx::Error::ColumnDecode { index, source } => StoreError::Corrupt {
            reason: format!("column {index}: {source}"),
        },
        sqlx::Error::Decode(source) => StoreError::Corrupt {
            reason: source.to_string(),
        },
        other => StoreError::Backend {
            cause: other.to_string(),
        },
    }
}
