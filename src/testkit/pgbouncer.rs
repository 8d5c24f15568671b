//! PostgreSQL through PgBouncer in transaction pooling mode (`.ci/pgbouncer` starts one on
//! 127.0.0.1:6432). A session's `search_path` does not survive transaction pooling, so each
//! test gets a database of its own: created on the PostgreSQL server, reached through
//! PgBouncer's wildcard entry, dropped when the test ends. PgBouncer's admin console tells how
//! it pooled.
use std::collections::HashMap;

use sea_orm::{
    sqlx::{self, postgres::PgConnectOptions, Column, Connection, Row},
    ConnectOptions, ConnectionTrait, Database, DbErr,
};

use super::{may_skip_postgres, postgres_url};
use crate::db::Pool;

/// The PgBouncer tests use, without a database name: `VOICE_TEST_PGBOUNCER_URL`, by default
/// `postgres://postgres@127.0.0.1:6432`.
pub fn pgbouncer_url() -> String {
    std::env::var("VOICE_TEST_PGBOUNCER_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:6432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// Whether PgBouncer tests may be skipped: only when explicitly asked, and never in CI.
fn may_skip_pgbouncer() -> bool {
    std::env::var("VOICE_TEST_SKIP_PGBOUNCER").is_ok_and(|v| v == "1")
        && !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A database created on the PostgreSQL server for one test, dropped with this value.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
}

impl TestDatabase {
    /// Its name (`t_` and 32 hex digits).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its URL through PgBouncer, without the service's `pgbouncer` parameter.
    pub fn url(&self) -> String {
        format!("{}/{}", pgbouncer_url(), self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Dropped inside the test's runtime, which cannot be blocked on: a thread of its own.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let server = Database::connect(postgres_url())
                    .await
                    .map_err(|e| e.to_string())?;
                // FORCE: PgBouncer still holds server connections to it.
                server
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .map_err(|e| e.to_string())?;
                server.close().await.map_err(|e| e.to_string())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

/// Creates a database for one test; `None` only when PgBouncer or PostgreSQL tests were
/// explicitly skipped outside CI.
pub async fn create_database() -> Option<TestDatabase> {
    if let Err(e) = admin_console().await {
        let url = pgbouncer_url();
        if may_skip_pgbouncer() {
            eprintln!("SKIPPED: PgBouncer unreachable at {url} ({e}) and VOICE_TEST_SKIP_PGBOUNCER=1");
            return None;
        }
        panic!(
            "PgBouncer is unreachable at {url}: {e}. Start it with .ci/pgbouncer, set \
             VOICE_TEST_PGBOUNCER_URL, or (outside CI only) set VOICE_TEST_SKIP_PGBOUNCER=1"
        );
    }
    let url = postgres_url();
    let server = match Database::connect(&url).await {
        Ok(server) => server,
        Err(e) if may_skip_postgres() => {
            eprintln!("SKIPPED: PostgreSQL unreachable at {url} ({e}) and VOICE_TEST_SKIP_POSTGRES=1");
            return None;
        }
        Err(e) => panic!("PostgreSQL is unreachable at {url}: {e}"),
    };
    let database = TestDatabase {
        name: format!("t_{}", uuid::Uuid::new_v4().simple()),
    };
    server
        .execute_unprepared(&format!("CREATE DATABASE \"{}\"", database.name))
        .await
        .expect("create database");
    server.close().await.expect("close");
    Some(database)
}

/// sea-orm's pool on `url` with sqlx's own settings, as without `pgbouncer=true`, except for
/// the `extra_float_digits` startup parameter, which PgBouncer refuses before anything else;
/// optionally with a statement cache of `statement_cache` entries.
pub async fn connect_without_the_setting(
    url: &str,
    max_connections: u32,
    statement_cache: Option<usize>,
) -> Result<Pool, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections)
        .sqlx_logging(false)
        .map_sqlx_postgres_opts(move |opts| {
            let opts = opts.extra_float_digits(None);
            match statement_cache {
                Some(capacity) => opts.statement_cache_capacity(capacity),
                None => opts,
            }
        });
    Ok(Database::connect(options).await?.into())
}

async fn admin_console() -> Result<sqlx::PgConnection, sqlx::Error> {
    let options: PgConnectOptions = format!("{}/pgbouncer", pgbouncer_url()).parse()?;
    sqlx::PgConnection::connect_with(&options.extra_float_digits(None)).await
}

/// The rows of `SHOW <what>` on PgBouncer's admin console, each as column name → text.
pub async fn pgbouncer_show(what: &str) -> Vec<HashMap<String, String>> {
    let mut console = admin_console().await.expect("PgBouncer's admin console");
    // The console speaks only the simple query protocol.
    let rows = sqlx::raw_sql(&format!("SHOW {what}"))
        .fetch_all(&mut console)
        .await
        .expect("SHOW on the admin console");
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    let value: Option<String> = row.try_get_unchecked(i).expect("a text value");
                    (row.column(i).name().to_owned(), value.unwrap_or_default())
                })
                .collect()
        })
        .collect()
}

/// How PgBouncer connects the clients of one database to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    /// Client connections to the database.
    pub clients: usize,
    /// Server connections PgBouncer holds for it.
    pub servers: usize,
    /// The most server connections PgBouncer opens for it (`default_pool_size`).
    pub pool_size: usize,
}

/// How PgBouncer pools `database` now.
pub async fn pool_use(database: &str) -> PoolUse {
    let of_database =
        |rows: Vec<HashMap<String, String>>| rows.iter().filter(|r| r["database"] == database).count();
    let config = pgbouncer_show("CONFIG").await;
    let pool_size = config
        .iter()
        .find(|r| r["key"] == "default_pool_size")
        .and_then(|r| r["value"].parse().ok())
        .expect("default_pool_size in SHOW CONFIG");
    PoolUse {
        clients: of_database(pgbouncer_show("CLIENTS").await),
        servers: of_database(pgbouncer_show("SERVERS").await),
        pool_size,
    }
}
