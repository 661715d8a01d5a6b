//! Numbered schema migrations, shared shape for both backends. Each backend lists its own SQL files
//! (`migrations/sqlite/`, `migrations/postgres/`) and records applied versions in
//! `tasker_schema_migrations`.

use crate::error::StoreError;

/// One migration: applied once, in version order, inside the migrating transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// 1, 2, 3, … without gaps.
    pub version: i64,
    /// What it does.
    pub description: &'static str,
    /// The SQL (several statements).
    pub sql: &'static str,
}

/// The newest version in a list of migrations.
pub(crate) const fn newest(migrations: &[Migration]) -> i64 {
    migrations[migrations.len() - 1].version
}

/// Refuses a database migrated by a newer build.
pub(crate) fn check_not_newer(found: Option<i64>, supported: i64) -> Result<(), StoreError> {
    match found {
        Some(found) if found > supported => Err(StoreError::SchemaTooNew { found, supported }),
        _ => Ok(()),
    }
}

/// The migrations still to apply to a database at `found`.
pub(crate) fn pending(
    migrations: &[Migration],
    found: Option<i64>,
) -> impl Iterator<Item = &Migration> {
    let found = found.unwrap_or(0);
    migrations.iter().filter(move |m| m.version > found)
}
