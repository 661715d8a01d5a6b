//! SQLite migrations: applied at start-up in one `BEGIN IMMEDIATE` transaction.

use sqlx::SqlitePool;

use super::errors::map_error;
use crate::error::StoreResult;
use crate::migration::{Migration, check_not_newer, newest, pending};

/// Every SQLite migration, in order.
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "initial schema",
    sql: include_str!("../../migrations/sqlite/0001_initial.sql"),
}];

/// The newest version this build knows.
pub(crate) const SUPPORTED_VERSION: i64 = newest(MIGRATIONS);

/// Brings the database up to [`SUPPORTED_VERSION`], refusing one that is newer.
pub(crate) async fn migrate(pool: &SqlitePool, path: &str, now_ms: i64) -> StoreResult<i64> {
    let map = |e| map_error(e, path);
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(map)?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS tasker_schema_migrations (
            version INTEGER PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at INTEGER NOT NULL
        )",
    )
    .execute(&mut *tx)
    .await
    .map_err(map)?;
    let found: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM tasker_schema_migrations")
            .fetch_one(&mut *tx)
            .await
            .map_err(map)?;
    check_not_newer(found, SUPPORTED_VERSION)?;
    for migration in pending(MIGRATIONS, found) {
        tracing::info!(
            version = migration.version,
            description = migration.description,
            "applying SQLite migration"
        );
        sqlx::raw_sql(migration.sql)
            .execute(&mut *tx)
            .await
            .map_err(map)?;
        sqlx::query(
            "INSERT INTO tasker_schema_migrations (version, description, applied_at)
             VALUES ($1, $2, $3)",
        )
        .bind(migration.version)
        .bind(migration.description)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(map)?;
    }
    tx.commit().await.map_err(map)?;
    Ok(SUPPORTED_VERSION)
}

/// The version recorded in the database.
pub(crate) async fn current_version(pool: &SqlitePool, path: &str) -> StoreResult<i64> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM tasker_schema_migrations")
            .fetch_one(pool)
            .await
            .map_err(|e| map_error(e, path))?;
    Ok(found.unwrap_or(0))
}
