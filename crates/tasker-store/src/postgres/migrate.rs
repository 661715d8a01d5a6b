//! PostgreSQL migrations: applied at start-up in one transaction, serialised between orchestrators
//! starting at once by an advisory lock.

use sqlx::PgPool;

use super::errors::map_error;
use crate::error::StoreResult;
use crate::migration::{Migration, check_not_newer, newest, pending};

/// Every PostgreSQL migration, in order.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "initial schema",
        sql: include_str!("../../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "drop indexes nothing in production reads",
        sql: include_str!("../../migrations/postgres/0002_drop_unread_indexes.sql"),
    },
];

/// The newest version this build knows.
pub(crate) const SUPPORTED_VERSION: i64 = newest(MIGRATIONS);

/// The advisory lock key held while migrating ("tasker" in ASCII).
const MIGRATION_LOCK: i64 = 0x7461_736b_6572;

/// Brings the database up to [`SUPPORTED_VERSION`], refusing one that is newer.
pub(crate) async fn migrate(pool: &PgPool, target: &str, now_ms: i64) -> StoreResult<i64> {
    let map = |e| map_error(e, target);
    let mut tx = pool.begin().await.map_err(map)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(map)?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS tasker_schema_migrations (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at BIGINT NOT NULL
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
            "applying PostgreSQL migration"
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
pub(crate) async fn current_version(pool: &PgPool, target: &str) -> StoreResult<i64> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM tasker_schema_migrations")
            .fetch_one(pool)
            .await
            .map_err(|e| map_error(e, target))?;
    Ok(found.unwrap_or(0))
}
