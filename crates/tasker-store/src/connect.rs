//! Choosing and opening a backend from a database URL.
//!
//! - `sqlite:PATH` or `sqlite://PATH` (a relative or absolute file path; the file and its
//!   directory are created when missing). Options after `?`: `synchronous=full|normal|off`
//!   (default `full`), `busy_timeout_ms=N` (default 5000), `max_page_count=N` (caps the file size
//!   at N pages of 4 KiB; default unlimited), `readers=N` (read connections, default 4).
//! - `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` or `postgresql://…`, with libpq-style
//!   options (`sslmode`, `application_name`, …) and Tasker's own `max_connections=N` (pool size,
//!   default 10) and `connect_timeout_ms=N` (default 10000).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{StoreError, StoreResult, redact_url};
use crate::store::Store;

/// How much SQLite waits for the disk before a commit returns (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteDurability {
    /// `synchronous=FULL` (default): the WAL is flushed to disk at every commit. A committed
    /// transaction survives a process crash **and** a power loss or OS crash. Costs one fsync per
    /// commit, which group commit amortises over many results.
    #[default]
    Full,
    /// `synchronous=NORMAL`: the WAL is flushed at checkpoints only. A committed transaction
    /// survives a process crash (the OS has the data), but the last transactions before a power
    /// loss or OS crash may be lost (the database stays consistent). Results whose
    /// acknowledgement was sent may then be lost; their steps time out and run again.
    Normal,
    /// `synchronous=OFF`: no flushing at all. Survives a process crash; a power loss may corrupt
    /// the database. For tests and benchmarks only.
    Off,
}

impl SqliteDurability {
    pub(crate) fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "full" => Some(Self::Full),
            "normal" => Some(Self::Normal),
            "off" => Some(Self::Off),
            _ => None,
        }
    }
}

/// SQLite settings parsed from a `sqlite:` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// The database file.
    pub path: PathBuf,
    /// Commit durability.
    pub durability: SqliteDurability,
    /// How long a writer waits for a lock held by another process before failing with
    /// [`StoreError::Locked`]. Too low: spurious failures while a backup or another tool holds
    /// the file; too high: a stuck process blocks Tasker that long.
    pub busy_timeout: Duration,
    /// Upper bound on the file size in pages (4 KiB each); writes past it fail with
    /// [`StoreError::DiskFull`]. `None`: unlimited.
    pub max_page_count: Option<u32>,
    /// Read connections (reads run beside the single writer in WAL mode).
    pub readers: u32,
}

/// PostgreSQL settings parsed from a `postgres://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// The URL handed to the driver (Tasker's own options removed).
    pub url: String,
    /// Pool size. Too low: operations queue for a connection; too high: the server's
    /// `max_connections` is shared by every orchestrator.
    pub max_connections: u32,
    /// How long to wait for the server before failing with [`StoreError::Unavailable`].
    pub connect_timeout: Duration,
}

/// A parsed database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An SQLite file.
    Sqlite(SqliteOptions),
    /// A PostgreSQL server.
    Postgres(PostgresOptions),
}

impl DatabaseUrl {
    /// Parses a database URL, rejecting unknown schemes and options with
    /// [`StoreError::InvalidUrl`].
    pub fn parse(url: &str) -> StoreResult<Self> {
        let invalid = |reason: String| StoreError::InvalidUrl {
            url: redact_url(url),
            reason,
        };
        let (scheme, rest) = url
            .split_once(':')
            .ok_or_else(|| invalid("expected `sqlite:PATH` or `postgres://…`".to_owned()))?;
        match scheme {
            "sqlite" => {
                let rest = rest.strip_prefix("//").unwrap_or(rest);
                let (path, query) = split_query(rest);
                if path.is_empty() {
                    return Err(invalid("the SQLite file path is empty".to_owned()));
                }
                if path == ":memory:" {
                    return Err(invalid(
                        "in-memory SQLite is not supported (it would lose everything at exit); \
                         give a file path"
                            .to_owned(),
                    ));
                }
                let mut options = SqliteOptions {
                    path: PathBuf::from(path),
                    durability: SqliteDurability::Full,
                    busy_timeout: Duration::from_millis(5000),
                    max_page_count: None,
                    readers: 4,
                };
                for (key, value) in query_pairs(query).map_err(&invalid)? {
                    match key {
                        "synchronous" => {
                            options.durability =
                                SqliteDurability::parse(value).ok_or_else(|| {
                                    invalid(format!(
                                        "synchronous must be full, normal or off, not `{value}`"
                                    ))
                                })?;
                        }
                        "busy_timeout_ms" => {
                            options.busy_timeout =
                                Duration::from_millis(parse_number(key, value).map_err(&invalid)?);
                        }
                        "max_page_count" => {
                            options.max_page_count = Some(
                                u32::try_from(parse_number(key, value).map_err(&invalid)?)
                                    .map_err(|_| invalid(format!("{key} is too large")))?,
                            );
                        }
                        "readers" => {
                            let n = parse_number(key, value).map_err(&invalid)?;
                            options.readers = u32::try_from(n.clamp(1, 64)).unwrap_or(4);
                        }
                        other => {
                            return Err(invalid(format!(
                                "unknown SQLite option `{other}` (known: synchronous, \
                                 busy_timeout_ms, max_page_count, readers)"
                            )));
                        }
                    }
                }
                Ok(DatabaseUrl::Sqlite(options))
            }
            "postgres" | "postgresql" => {
                let Some(after) = rest.strip_prefix("//") else {
                    return Err(invalid("expected `postgres://HOST/DATABASE`".to_owned()));
                };
                let (base, query) = split_query(after);
                let authority = base.split('/').next().unwrap_or("");
                let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                if host.is_empty() && !query.contains("host=") {
                    return Err(invalid("no host given".to_owned()));
                }
                if let Some((_, port)) = host.rsplit_once(':')
                    && !host.ends_with(']')
                    && port.parse::<u16>().is_err()
                {
                    return Err(invalid(format!("port `{port}` is not a number")));
                }
                let mut options = PostgresOptions {
                    url: String::new(),
                    max_connections: 10,
                    connect_timeout: Duration::from_millis(10_000),
                };
                let mut passed = Vec::new();
                for (key, value) in query_pairs(query).map_err(&invalid)? {
                    match key {
                        "max_connections" => {
                            let n = parse_number(key, value).map_err(&invalid)?;
                            options.max_connections = u32::try_from(n.clamp(1, 1000)).unwrap_or(10);
                        }
                        "connect_timeout_ms" => {
                            options.connect_timeout =
                                Duration::from_millis(parse_number(key, value).map_err(&invalid)?);
                        }
                        _ => passed.push(format!("{key}={value}")),
                    }
                }
                options.url = if passed.is_empty() {
                    format!("{scheme}://{base}")
                } else {
                    format!("{scheme}://{base}?{}", passed.join("&"))
                };
                Ok(DatabaseUrl::Postgres(options))
            }
            other => Err(invalid(format!(
                "unsupported scheme `{other}`; use `sqlite:PATH` or `postgres://…`"
            ))),
        }
    }
}

fn split_query(s: &str) -> (&str, &str) {
    s.split_once('?').unwrap_or((s, ""))
}

fn query_pairs(query: &str) -> Result<Vec<(&str, &str)>, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .ok_or_else(|| format!("option `{pair}` has no value (expected key=value)"))
        })
        .collect()
}

fn parse_number(key: &str, value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("{key} must be a whole number, not `{value}`"))
}

/// Opens the store a URL names, creating and migrating the database as needed.
///
/// Fails with [`StoreError::InvalidUrl`], [`StoreError::Unavailable`],
/// [`StoreError::SchemaTooNew`] or [`StoreError::Locked`], each naming the cause.
pub async fn connect(url: &str) -> StoreResult<Arc<dyn Store>> {
    match DatabaseUrl::parse(url)? {
        DatabaseUrl::Sqlite(options) => {
            Ok(Arc::new(crate::sqlite::SqliteStore::open(options).await?))
        }
        DatabaseUrl::Postgres(options) => Ok(Arc::new(
            crate::postgres::PostgresStore::open(options).await?,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sqlite_urls_with_options() {
        let DatabaseUrl::Sqlite(o) =
            DatabaseUrl::parse("sqlite:data/t.db?synchronous=normal&busy_timeout_ms=250")
                .expect("valid")
        else {
            panic!("expected sqlite")
        };
        assert_eq!(o.path, PathBuf::from("data/t.db"));
        assert_eq!(o.durability, SqliteDurability::Normal);
        assert_eq!(o.busy_timeout, Duration::from_millis(250));
        let DatabaseUrl::Sqlite(o) = DatabaseUrl::parse("sqlite:///abs/t.db").expect("valid")
        else {
            panic!("expected sqlite")
        };
        assert_eq!(o.path, PathBuf::from("/abs/t.db"));
        assert_eq!(o.durability, SqliteDurability::Full);
    }

    #[test]
    fn strips_tasker_options_from_postgres_urls() {
        let DatabaseUrl::Postgres(o) = DatabaseUrl::parse(
            "postgres://u:p@h:5433/db?max_connections=3&sslmode=disable&connect_timeout_ms=50",
        )
        .expect("valid") else {
            panic!("expected postgres")
        };
        assert_eq!(o.url, "postgres://u:p@h:5433/db?sslmode=disable");
        assert_eq!(o.max_connections, 3);
        assert_eq!(o.connect_timeout, Duration::from_millis(50));
    }

    #[test]
    fn rejects_malformed_urls_naming_the_problem() {
        for (url, needle) in [
            ("mysql://x/y", "unsupported scheme `mysql`"),
            ("no-scheme", "expected `sqlite:PATH`"),
            ("sqlite:", "path is empty"),
            ("sqlite::memory:", "in-memory"),
            ("sqlite:x.db?synchronous=sometimes", "synchronous must be"),
            ("sqlite:x.db?colour=blue", "unknown SQLite option `colour`"),
            ("postgres:x", "expected `postgres://"),
            ("postgres://u:secret@h:notaport/db", "port `notaport`"),
            ("postgres:///db", "no host"),
            ("postgres://h/db?max_connections=many", "whole number"),
        ] {
            let err = DatabaseUrl::parse(url).expect_err(url);
            let text = err.to_string();
            assert!(
                matches!(err, StoreError::InvalidUrl { .. }),
                "{url}: {text}"
            );
            assert!(text.contains(needle), "{url}: {text}");
            assert!(!text.contains("secret"), "password leaked: {text}");
        }
    }
}
