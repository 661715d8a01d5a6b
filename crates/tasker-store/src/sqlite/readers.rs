//! The readers: a small pool of read-only connections, each read run on tokio's blocking pool
//! (`spawn_blocking`) inside one read transaction, so a multi-statement read sees one snapshot.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::errors::{FailResult, closed, map_error, map_fail};
use super::rows::execute;
use super::writer::{STATEMENT_CACHE, panicked};
use crate::connect::SqliteOptions;
use crate::error::{StoreError, StoreResult};

/// Read-only connections, at most `size` in use at once.
pub(crate) struct Readers {
    /// Connections not in use. Opened on first need, returned after each read.
    idle: Arc<Mutex<Vec<Connection>>>,
    /// One permit per connection; closed by [`close`](Self::close).
    permits: Arc<Semaphore>,
    size: u32,
    options: Arc<SqliteOptions>,
    path: Arc<str>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Readers {
    /// A pool of `options.readers` connections (at least one), opened lazily.
    pub(crate) fn new(options: SqliteOptions, path: Arc<str>) -> Self {
        let size = options.readers.max(1);
        Self {
            idle: Arc::new(Mutex::new(Vec::new())),
            permits: Arc::new(Semaphore::new(size as usize)),
            size,
            options: Arc::new(options),
            path,
        }
    }

    /// Runs `work` in one read transaction on a pooled connection, on the blocking pool.
    ///
    /// The connection goes back to the pool when the read ends, even if the calling future was
    /// dropped meanwhile.
    pub(crate) async fn run<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> FailResult<T> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| closed(&self.path))?;
        let idle = Arc::clone(&self.idle);
        let options = Arc::clone(&self.options);
        let path = Arc::clone(&self.path);
        let read = tokio::task::spawn_blocking(move || {
            let pooled = idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => open(&options)?,
            };
            let result = in_read_transaction(&conn, work).map_err(|fail| map_fail(fail, &path));
            if conn.is_autocommit() {
                idle.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(conn);
            }
            // Else the connection is dropped, which ends its transaction; a fresh one replaces it.
            drop(permit);
            result
        });
        read.await.map_err(|e| StoreError::Backend {
            cause: format!("an SQLite read task failed: {e}"),
        })?
    }

    /// Waits for the reads in progress, then closes every connection. Later
    /// [`run`](Self::run) calls fail with [`StoreError::Unavailable`].
    pub(crate) async fn close(&self) {
        // Every connection is back in `idle` once all permits are held (a read returns its
        // connection before its permit). Fails only if already closed.
        if let Ok(all) = self.permits.acquire_many(self.size).await {
            self.permits.close();
            drop(all);
        }
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// Opens one read-only connection.
fn open(options: &SqliteOptions) -> StoreResult<Connection> {
    let path = options.path.display().to_string();
    let map = |e| map_error(e, &path);
    let conn = Connection::open_with_flags(
        &options.path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(map)?;
    conn.busy_timeout(options.busy_timeout).map_err(map)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Runs `work` between `BEGIN` and `COMMIT` (one snapshot), ending the transaction whatever
/// happens.
fn in_read_transaction<T>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> FailResult<T>,
) -> FailResult<T> {
    execute(conn, "BEGIN", [])?;
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| work(conn)))
        .unwrap_or_else(|panic| Err(panicked(&*panic).into()));
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    match (result, execute(conn, end, [])) {
        (Ok(value), Ok(_)) => Ok(value),
        (Ok(_), Err(e)) => Err(e),
        (Err(e), ended) => {
            if let Err(end_error) = ended {
                tracing::warn!(error = ?end_error, "ending a failed SQLite read failed");
            }
            Err(e)
        }
    }
}
