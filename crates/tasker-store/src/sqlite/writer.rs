//! The writer: one OS thread owning the one read-write connection. Every write is a job sent to
//! it over a channel; the job runs as one `BEGIN IMMEDIATE … COMMIT` transaction and its result
//! comes back on a oneshot. See the module docs of `sqlite` for why.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{oneshot, watch};

use super::errors::{FailResult, closed, map_error, map_fail};
use super::migrate;
use super::rows::execute;
use crate::connect::{SqliteDurability, SqliteOptions};
use crate::error::{StoreError, StoreResult};

/// Prepared statements kept per connection (`prepare_cached`). The store has about 60 distinct
/// statements; the hot ones (a group commit is ~20) must never evict each other.
pub(crate) const STATEMENT_CACHE: usize = 128;

/// Work for the writer thread: runs on its connection, reports on its own channel.
type Job = Box<dyn FnOnce(&Connection) + Send>;

/// The handle async code holds: sends jobs, closes the thread.
pub(crate) struct Writer {
    /// `None` once closed; dropping the sender is what stops the thread (after the queued jobs).
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    /// Becomes `true` (or is dropped) when the thread has closed its connection and ended.
    stopped: watch::Receiver<bool>,
    path: Arc<str>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("path", &self.path)
            .field("stopped", &*self.stopped.borrow())
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer thread: it opens the file (creating it), sets the connection up and
    /// migrates the schema before this returns. Fails, with the thread gone, if any of that fails.
    pub(crate) async fn start(options: SqliteOptions, path: Arc<str>) -> StoreResult<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (started_tx, started) = oneshot::channel::<StoreResult<()>>();
        let (stopped_tx, stopped) = watch::channel(false);
        let thread_path = Arc::clone(&path);
        std::thread::Builder::new()
            .name("tasker-sqlite-writer".to_owned())
            .spawn(move || {
                let now_ms = crate::time::to_ms(chrono::Utc::now());
                let opened = open(&options).and_then(|conn| {
                    in_write_transaction(&conn, |c| migrate::migrate(c, now_ms))
                        .map_err(|fail| map_fail(fail, &thread_path))?;
                    Ok(conn)
                });
                let conn = match opened {
                    Ok(conn) => {
                        let _ = started_tx.send(Ok(()));
                        conn
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                run(conn, &options, &queue);
                // The connection is closed (and the WAL checkpointed) before anyone waiting in
                // `close` is told.
                stopped_tx.send_replace(true);
            })
            .map_err(|e| StoreError::Unavailable {
                target: path.to_string(),
                cause: format!("cannot start the writer thread: {e}"),
            })?;
        match started.await {
            Ok(Ok(())) => Ok(Self {
                jobs: Mutex::new(Some(jobs)),
                stopped,
                path,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Backend {
                cause: format!("the writer thread for {path} ended while opening the database"),
            }),
        }
    }

    /// Runs `work` in one write transaction on the writer thread, after the jobs queued before it.
    /// Committed when `work` returns `Ok`; rolled back otherwise, and when the commit fails.
    ///
    /// If the calling future is dropped after the job was sent, the job still runs (and commits);
    /// only its answer is lost.
    pub(crate) async fn run<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> FailResult<T> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let path = Arc::clone(&self.path);
        let job: Job = Box::new(move |conn| {
            let result = in_write_transaction(conn, work).map_err(|fail| map_fail(fail, &path));
            // The caller may have stopped waiting; the outcome stands either way.
            let _ = answer.send(result);
        });
        {
            let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
            let sender = jobs.as_ref().ok_or_else(|| closed(&self.path))?;
            sender.send(job).map_err(|_| closed(&self.path))?;
        }
        answered.await.map_err(|_| closed(&self.path))?
    }

    /// Stops accepting jobs, lets the thread finish the queued ones, and waits until it has closed
    /// its connection. Later [`run`](Self::run) calls fail with [`StoreError::Unavailable`].
    pub(crate) async fn close(&self) {
        drop(
            self.jobs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let mut stopped = self.stopped.clone();
        // An error means the thread dropped its end without saying so (it panicked): it is gone
        // all the same.
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }
}

/// Opens the read-write connection and sets it up: busy timeout first (the pragmas after it may
/// wait for a lock), WAL, durability, foreign keys, size cap.
fn open(options: &SqliteOptions) -> StoreResult<Connection> {
    let path = options.path.display().to_string();
    let map = |e| map_error(e, &path);
    let conn = Connection::open_with_flags(
        &options.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(map)?;
    conn.busy_timeout(options.busy_timeout).map_err(map)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(map)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(%path, %mode, "SQLite refused WAL mode; readers will wait for the writer");
    }
    let synchronous = match options.durability {
        SqliteDurability::Full => "FULL",
        SqliteDurability::Normal => "NORMAL",
        SqliteDurability::Off => "OFF",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(map)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(map)?;
    // The writer touches rows of every active task on every commit; with SQLite's default 2 MB
    // page cache a database of a few thousand tasks no longer fits and most B-tree steps become
    // reads from the OS cache. 64 MiB (negative: KiB) keeps the hot pages in the process.
    conn.pragma_update(None, "cache_size", -65_536_i64)
        .map_err(map)?;
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(map)?;
    if let Some(pages) = options.max_page_count {
        conn.pragma_update(None, "max_page_count", pages)
            .map_err(map)?;
    }
    Ok(conn)
}

/// The thread's loop: one job at a time, in arrival order, until every sender is gone and the
/// queue is empty. After each job the connection is checked to be outside any transaction; one
/// that cannot be brought back is replaced by a fresh connection, so a failure never wedges
/// later writes.
fn run(conn: Connection, options: &SqliteOptions, queue: &mpsc::Receiver<Job>) {
    let mut conn = Some(conn);
    while let Ok(job) = queue.recv() {
        if conn.is_none() {
            match open(options) {
                Ok(fresh) => conn = Some(fresh),
                Err(e) => tracing::error!(error = %e, "cannot reopen the SQLite writer connection"),
            }
        }
        let Some(current) = conn.as_ref() else {
            // Dropping the job drops its answer channel: the caller gets `Unavailable`.
            drop(job);
            continue;
        };
        job(current);
        if !current.is_autocommit() {
            tracing::error!(
                "the SQLite writer connection is still inside a transaction after a job; \
                 replacing it"
            );
            // Closing a connection rolls back whatever it has open.
            conn = None;
        }
    }
}

/// Runs `work` between `BEGIN IMMEDIATE` and `COMMIT`, rolling back when it fails, panics, or
/// the commit fails, so the connection is left with no transaction open.
pub(crate) fn in_write_transaction<T>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> FailResult<T>,
) -> FailResult<T> {
    execute(conn, "BEGIN IMMEDIATE", [])?;
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| work(conn)))
        .unwrap_or_else(|panic| Err(panicked(&*panic).into()))
        .and_then(|value| {
            execute(conn, "COMMIT", [])?;
            Ok(value)
        });
    if !conn.is_autocommit()
        && let Err(e) = execute(conn, "ROLLBACK", [])
    {
        tracing::error!(error = ?e, "rolling back a failed SQLite transaction failed");
    }
    result
}

/// A store error for a panic caught in a job (a bug; the store stays usable).
pub(crate) fn panicked(panic: &(dyn std::any::Any + Send)) -> StoreError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    StoreError::Backend {
        cause: format!("the SQLite operation panicked: {message}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use std::time::Duration;

    use super::*;
    use crate::sqlite::errors::Fail;

    fn options(dir: &tempfile::TempDir) -> SqliteOptions {
        SqliteOptions {
            path: dir.path().join("w.db"),
            durability: SqliteDurability::Full,
            busy_timeout: Duration::from_millis(100),
            max_page_count: None,
            readers: 1,
        }
    }

    #[test]
    fn a_commit_that_fails_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&options(&dir)).unwrap();
        conn.execute_batch(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE child (parent_id INTEGER NOT NULL REFERENCES parent (id));",
        )
        .unwrap();
        // A deferred foreign-key violation passes every statement and fails the COMMIT, which
        // leaves SQLite's transaction open: the case that must not wedge the writer.
        let result = in_write_transaction(&conn, |c| {
            c.execute_batch("PRAGMA defer_foreign_keys = ON")?;
            execute(c, "INSERT INTO child (parent_id) VALUES (42)", [])?;
            Ok(())
        });
        let Err(Fail::Db(e)) = result else {
            panic!("expected the commit to fail, got {result:?}");
        };
        assert!(e.to_string().contains("FOREIGN KEY"), "{e}");
        assert!(conn.is_autocommit(), "a transaction was left open");
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM child", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0, "the failed transaction was rolled back");
        in_write_transaction(&conn, |c| {
            execute(c, "INSERT INTO parent (id) VALUES (1)", [])?;
            Ok(())
        })
        .unwrap();
    }

    #[tokio::test]
    async fn a_job_that_panics_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Writer::start(options(&dir), Arc::from("w.db"))
            .await
            .unwrap();
        let err = writer
            .run(|c| -> FailResult<()> {
                execute(c, "CREATE TABLE scratch (x INTEGER)", [])?;
                panic!("a bug in a job");
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("a bug in a job"), "{err}");
        // Rolled back (the table is not there) and the writer goes on.
        let tables: i64 = writer
            .run(|c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'scratch'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(tables, 0);
        writer.close().await;
        let err = writer.run(|_| Ok(())).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    }
}
