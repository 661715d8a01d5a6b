//! Store factories for the conformance suite: a fresh SQLite file, or a fresh PostgreSQL database
//! on the server named by `TASKER_TEST_POSTGRES_URL`.

use std::sync::Arc;

use sqlx::Connection;
use tasker_store::{Backend, Store, connect};

/// One test's store, with what it needs to reopen it and poke at the raw database.
pub struct Harness {
    /// The store under test.
    pub store: Arc<dyn Store>,
    /// The URL it was opened with.
    pub url: String,
    /// The PostgreSQL admin URL and database name to drop afterwards.
    pg_cleanup: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness").field("url", &self.url).finish()
    }
}

/// Replaces the database name in a PostgreSQL URL.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let mut out = format!("{}/{database}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl Harness {
    /// A store on a new SQLite file in a temporary directory.
    pub async fn sqlite() -> Harness {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite:{}", dir.path().join("tasker.db").display());
        let store = connect(&url).await.expect("open SQLite store");
        Harness {
            store,
            url,
            pg_cleanup: None,
            _dir: Some(dir),
        }
    }

    /// A store on a new database of the test PostgreSQL server, or `None` (with a loud message)
    /// when no server is configured. Fails instead when `TASKER_REQUIRE_POSTGRES=1`.
    pub async fn postgres() -> Option<Harness> {
        let Ok(admin_url) = std::env::var("TASKER_TEST_POSTGRES_URL") else {
            if std::env::var("TASKER_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!(
                    "TASKER_REQUIRE_POSTGRES=1 but TASKER_TEST_POSTGRES_URL is not set: \
                     run the tests through scripts/with-postgres.sh"
                );
            }
            eprintln!("SKIPPED: TASKER_TEST_POSTGRES_URL not set (PostgreSQL case not run)");
            return None;
        };
        let database = format!("tasker_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to TASKER_TEST_POSTGRES_URL");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.expect("close admin connection");
        let url = with_database(&admin_url, &database);
        let store = connect(&url).await.expect("open PostgreSQL store");
        Some(Harness {
            store,
            url,
            pg_cleanup: Some((admin_url, database)),
            _dir: None,
        })
    }

    /// Which backend.
    pub fn backend(&self) -> Backend {
        self.store.backend()
    }

    /// Closes the store and opens it again from the same URL (a restart).
    pub async fn reopen(&mut self) {
        self.store.close().await;
        self.store = connect(&self.url).await.expect("reopen store");
    }

    /// Runs raw SQL against the database, outside the store.
    pub async fn raw(&self, sql: &str) {
        match self.backend() {
            Backend::Sqlite => {
                let path = self.url["sqlite:".len()..]
                    .split('?')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let sql = sql.to_owned();
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open(&path).expect("raw SQLite connection");
                    conn.busy_timeout(std::time::Duration::from_secs(5))
                        .expect("busy timeout");
                    conn.execute_batch(&sql).expect("raw SQL");
                    conn.close().expect("close raw connection");
                })
                .await
                .expect("raw SQL task");
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("raw PostgreSQL connection");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(&mut conn)
                    .await
                    .expect("raw SQL");
                conn.close().await.expect("close raw connection");
            }
        }
    }

    /// Closes the store and drops a PostgreSQL test database.
    pub async fn cleanup(self) {
        self.store.close().await;
        if let Some((admin_url, database)) = self.pg_cleanup
            && let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await
        {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await;
            let _ = admin.close().await;
        }
    }
}
