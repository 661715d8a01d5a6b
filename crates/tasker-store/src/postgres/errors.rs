//! Maps PostgreSQL and driver errors to [`StoreError`] kinds.

use crate::error::StoreError;

/// Converts a driver error, naming the server in connection-level errors.
pub(crate) fn map_error(err: sqlx::Error, target: &str) -> StoreError {
    match err {
        sqlx::Error::Database(db) => {
            let message = db.message().to_owned();
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match code.as_str() {
                // disk_full, insufficient_resources, out_of_memory
                "53100" | "53000" | "53200" => StoreError::DiskFull {
                    cause: format!("{target}: {message} (SQLSTATE {code})"),
                },
                // deadlock_detected, lock_not_available, serialization_failure
                "40P01" | "55P03" | "40001" => StoreError::Locked {
                    cause: format!("{target}: {message} (SQLSTATE {code})"),
                },
                // connection exceptions, shutdown, auth, unknown database, too many connections
                c if c.starts_with("08")
                    || c.starts_with("57P")
                    || c.starts_with("28")
                    || c == "3D000"
                    || c == "53300" =>
                {
                    StoreError::Unavailable {
                        target: target.to_owned(),
                        cause: format!("{message} (SQLSTATE {code})"),
                    }
                }
                _ => StoreError::Backend {
                    cause: format!("{message} (SQLSTATE {code})"),
                },
            }
        }
        sqlx::Error::Io(io) => StoreError::Unavailable {
            target: target.to_owned(),
            cause: io.to_string(),
        },
        sqlx::Error::Tls(e) => StoreError::Unavailable {
            target: target.to_owned(),
            cause: format!("TLS: {e}"),
        },
        sqlx::Error::PoolTimedOut => StoreError::Unavailable {
            target: target.to_owned(),
            cause: "timed out connecting or waiting for a free connection".to_owned(),
        },
        sqlx::Error::PoolClosed => StoreError::Unavailable {
            target: target.to_owned(),
            cause: "the store was closed".to_owned(),
        },
        sqlx::Error::Configuration(e) => StoreError::InvalidUrl {
            url: target.to_owned(),
            reason: e.to_string(),
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
