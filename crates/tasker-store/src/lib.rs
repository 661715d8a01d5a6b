//! Tasker's persistence: the [`Store`] trait and its two backends.
//!
//! - [`store`]: the [`Store`] trait, one atomic operation per method.
//! - [`params`]: one parameter struct per operation.
//! - [`records`]: what the operations return.
//! - [`error`]: [`StoreError`], neutral error kinds for both backends.
//! - [`connect`](mod@connect): parsing a database URL and opening the backend it names
//!   ([`connect()`](fn@connect)).
//! - `sqlite` / `postgres`: the backends, with the same file names in each.
//! - `plan`: the backend-neutral compare-and-set evaluation both backends use.
//!
//! SQLite (`sqlite:PATH`) is the embedded default: one file, WAL, one writer, one orchestrator.
//! PostgreSQL (`postgres://…`) lets several orchestrators share one database: tasks are claimed
//! with leases (`FOR UPDATE SKIP LOCKED`) and every state change is a conditional update, so no
//! task or step is driven by two orchestrators at once. Both pass the same conformance suite
//! (`tests/conformance`).
//!
//! Times are stored as milliseconds since the Unix epoch (UTC) in both backends, so comparisons
//! behave identically; the API uses `chrono::DateTime<Utc>`.

pub mod connect;
pub mod error;
mod migration;
pub mod params;
mod plan;
mod postgres;
pub mod records;
mod sqlite;
pub mod store;
mod time;

pub use connect::{DatabaseUrl, PostgresOptions, SqliteDurability, SqliteOptions, connect};
pub use error::{ChangeTarget, Refusal, RefusalReason, StoreError, StoreResult};
pub use params::*;
pub use records::*;
pub use store::{Backend, LEDGER_BATCH_COMPLETION, LEDGER_PARTIAL_RESULT, Store};

/// The newest schema version this build's SQLite migrations create.
pub const SQLITE_SCHEMA_VERSION: i64 = sqlite::migrate::SUPPORTED_VERSION;
/// The newest schema version this build's PostgreSQL migrations create.
pub const POSTGRES_SCHEMA_VERSION: i64 = postgres::migrate::SUPPORTED_VERSION;
