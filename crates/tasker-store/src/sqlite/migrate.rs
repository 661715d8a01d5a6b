//! SQLite migrations: applied at start-up by the writer thread, in one `BEGIN IMMEDIATE`
//! transaction.

use rusqlite::{Connection, params};

use super::errors::FailResult;
use super::rows::{self, execute, query_opt};
use crate::migration::{Migration, check_not_newer, newest, pending};

/// Every SQLite migration, in order.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "initial schema",
        sql: include_str!("../../migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "drop indexes nothing in production reads",
        sql: include_str!("../../migrations/sqlite/0002_drop_unread_indexes.sql"),
    },
];

/// The newest version this build knows.
pub(crate) const SUPPORTED_VERSION: i64 = newest(MIGRATIONS);

/// Brings the database up to [`SUPPORTED_VERSION`], refusing one that is newer. Runs in the
/// caller's write transaction.
pub(crate) fn migrate(conn: &Connection, now_ms: i64) -> FailResult<i64> {
    execute(
        conn,
        "CREATE TABLE IF NOT EXISTS tasker_schema_migrations (
            version INTEGER PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at INTEGER NOT NULL
        )",
        [],
    )?;
    let found = recorded_version(conn)?;
    check_not_newer(found, SUPPORTED_VERSION)?;
    for migration in pending(MIGRATIONS, found) {
        tracing::info!(
            version = migration.version,
            description = migration.description,
            "applying SQLite migration"
        );
        conn.execute_batch(migration.sql)?;
        execute(
            conn,
            "INSERT INTO tasker_schema_migrations (version, description, applied_at)
             VALUES (?1, ?2, ?3)",
            params![migration.version, migration.description, now_ms],
        )?;
    }
    Ok(SUPPORTED_VERSION)
}

/// The version recorded in the database (0 when none is).
pub(crate) fn current_version(conn: &Connection) -> FailResult<i64> {
    Ok(recorded_version(conn)?.unwrap_or(0))
}

fn recorded_version(conn: &Connection) -> FailResult<Option<i64>> {
    Ok(query_opt(
        conn,
        "SELECT MAX(version) AS version FROM tasker_schema_migrations",
        [],
        |row| rows::column::<Option<i64>>(row, "version"),
    )?
    .flatten())
}
