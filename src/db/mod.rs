//! Query functions. Each takes a connection or a transaction; lookups of tenant-owned rows
//! start from the tenant id, and the admin API's queries take a [`Scope`]. Errors are sea-orm's
//! `DbErr`.
pub mod alerts;
pub mod api_keys;
pub mod backup;
pub mod cache;
pub mod calls;
pub mod diagnostics;
pub mod media;
pub mod outbox;
mod pool;
pub mod retention;
pub mod routes;
mod scope;
pub mod spool;
pub mod tenant_secrets;
pub mod tenants;
mod url;
pub mod writer;

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    sea_query::IntoCondition, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, RuntimeErr, Select, SqlErr, TransactionTrait,
};

pub use self::{
    pool::{Pool, PoolMode},
    scope::Scope,
    url::DatabaseUrl,
};
use crate::config::{Config, SqliteSynchronous};

/// How long a query waits for a pooled connection before the database counts as unavailable
/// (and webhooks are answered from the last known configuration): short enough that a caller
/// never waits long, long enough to ride out a burst.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs a database operation of the webhook path under a deadline of [`ACQUIRE_TIMEOUT`]: a
/// database that does not answer at all (packets dropped, not refused) counts as unavailable
/// rather than holding the caller until TCP gives up.
pub async fn within_deadline<T>(
    operation: impl std::future::Future<Output = Result<T, DbErr>>,
) -> Result<T, DbErr> {
    tokio::time::timeout(ACQUIRE_TIMEOUT, operation)
        .await
        .unwrap_or_else(|_| Err(within_deadline_elapsed()))
}

/// The error of an operation that missed its deadline.
pub fn within_deadline_elapsed() -> DbErr {
    DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout)
}

/// WAL pages after which an SQLite commit checkpoints (SQLite's default is 1,000).
pub const WAL_AUTOCHECKPOINT_PAGES: u32 = 4_000;

/// Opens the pool. SQLite runs in WAL mode with a busy timeout, the configured sync and
/// incremental auto-vacuum (on files it creates);
/// PostgreSQL as configured, behind PgBouncer in transaction pooling mode when the URL says
/// `pgbouncer=true` ([`PoolMode::TransactionPooled`]).
pub async fn connect(config: &Config) -> Result<Pool, DbErr> {
    connect_url(
        config.database.url.expose(),
        config.database.max_connections,
        config.database.sqlite_synchronous,
        None,
    )
    .await
}

/// Opens a pool for `url` ([`DatabaseUrl`]), optionally pinned to a PostgreSQL schema (with
/// `SET search_path` at connect, so not behind a proxy in transaction pooling mode).
pub async fn connect_url(
    url: &str,
    max_connections: u32,
    synchronous: SqliteSynchronous,
    pg_schema: Option<&str>,
) -> Result<Pool, DbErr> {
    let DatabaseUrl { sqlx: url, mode } = DatabaseUrl::parse(url)?;
    let synchronous = match synchronous {
        SqliteSynchronous::Full => sea_orm::sqlx::sqlite::SqliteSynchronous::Full,
        SqliteSynchronous::Normal => sea_orm::sqlx::sqlite::SqliteSynchronous::Normal,
    };
    let sqlite = url.starts_with("sqlite:");
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(move |opts| {
            // Set before the first table of a new file is created (sqlx sends it before
            // `journal_mode`), so the space the retention purge frees can be given back with
            // `PRAGMA incremental_vacuum`. On an existing file without it, it only takes effect
            // with a VACUUM (`stateset-voice backup` writes a copy that has it).
            opts.auto_vacuum(sea_orm::sqlx::sqlite::SqliteAutoVacuum::Incremental)
                .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(synchronous)
                // SQLite's default page cache (2,000 KiB). A larger one costs more than it
                // saves: a commit after a b-tree page split scans the cache's whole hash table
                // (`pcache1TruncateUnsafe`: the split moves a page through the number of the
                // lock-byte page, and the commit truncates the cache back to the file's size),
                // which on a file under 1 GiB is nearly every commit. With 64 MiB that scan was
                // 8 % of a new call's CPU once the cache had filled; dropping it took ×1.13 off
                // the CPU per new call (`cargo xtask bench --against`, interleaved rounds). On a
                // 2 GB file, where the scan stops, the small cache still wrote for less CPU.
                .pragma("temp_store", "memory")
                // Checkpoint when the WAL holds 4,000 pages (16 MiB with 4 KiB pages) rather
                // than SQLite's 1,000: a page that many commits wrote (the last leaf of each
                // table and index) is copied into the database once per checkpoint, and each
                // checkpoint costs two fsyncs. ×1.10 less server CPU per new call
                // (`bench/budget.md`); a crash replays at most that much WAL at the next open.
                .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    if sqlite {
        // A local file cannot drop the connection: no ping before each use.
        options.test_before_acquire(false);
    }
    if mode == PoolMode::TransactionPooled {
        if pg_schema.is_some() {
            return Err(DbErr::Conn(RuntimeErr::Internal(
                "a search_path set at connect does not survive transaction pooling".to_owned(),
            )));
        }
        // No statement cache, and only startup parameters PgBouncer knows: it refuses
        // `extra_float_digits` (sqlx sends 2 for text output on PostgreSQL before 12; since 12
        // the default prints floats exactly, and sqlx reads them in binary anyway).
        options.map_sqlx_postgres_opts(|opts| opts.statement_cache_capacity(0).extra_float_digits(None));
    }
    if let Some(schema) = pg_schema {
        options.set_schema_search_path(schema.to_owned());
    }
    let pool = Pool::new(Database::connect(options.clone()).await?, mode);
    if sqlite {
        return Ok(pool);
    }
    // The batch writer's connection of its own on PostgreSQL (`Pool::writer`; the gain is
    // measured at `Writer`). Connected at the first batch.
    options.max_connections(1).min_connections(0).connect_lazy(true);
    Ok(pool.with_writer(Database::connect(options).await?))
}

/// Applies pending migrations (on PostgreSQL in one transaction).
pub async fn migrate(db: &Pool) -> Result<(), DbErr> {
    match db.mode() {
        PoolMode::Direct => Migrator::up(db.connection(), None).await,
        PoolMode::TransactionPooled => {
            let txn = db.begin().await?;
            Migrator::up(&txn, None).await?;
            txn.commit().await
        }
    }
}

/// Whether an error means the database cannot be reached or cannot take writes now, rather than
/// that this request was wrong: the connection refused, reset or timed out, the pool exhausted
/// past its deadline, the server shutting down or read-only (a failover), out of disk or
/// resources. Such requests are answered from the last known configuration and spooled.
pub fn is_unavailable(err: &DbErr) -> bool {
    use sea_orm::{sqlx::Error as Sqlx, RuntimeErr};
    let sqlx = match err {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
        _ => return false,
    };
    match sqlx {
        Sqlx::Io(_)
        | Sqlx::Tls(_)
        | Sqlx::Protocol(_)
        | Sqlx::PoolTimedOut
        | Sqlx::PoolClosed
        | Sqlx::WorkerCrashed => true,
        Sqlx::Database(db) => db.code().is_some_and(|code| unavailable_code(&code)),
        _ => false,
    }
}

/// Database error codes of an unavailable database. PostgreSQL SQLSTATEs: class 08
/// (connection), 53 (insufficient resources: disk full, out of memory, too many connections),
/// 57P01-57P03 (shutting down, starting up), 25006 (read-only transaction: a standby after a
/// failover). SQLite result codes (primary code, the low byte of an extended one): BUSY (5,
/// past the busy timeout), READONLY (8), IOERR (10), FULL (13), CANTOPEN (14). A SQLSTATE has
/// five characters; an SQLite code is a number of at most four digits.
fn unavailable_code(code: &str) -> bool {
    if code.len() == 5 {
        return code.starts_with("08")
            || code.starts_with("53")
            || matches!(code, "57P01" | "57P02" | "57P03" | "25006");
    }
    code.parse::<u32>()
        .is_ok_and(|sqlite| matches!(sqlite & 0xff, 5 | 8 | 10 | 13 | 14))
}

/// Whether an error is a unique-constraint violation.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// One page of a list and the cursor of the next page.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Pages `select` by its id column (UUIDv7, so by creation time): oldest first, or newest first.
pub async fn page<E, C>(
    db: &C,
    select: Select<E>,
    id: E::Column,
    cursor: Option<&str>,
    limit: u64,
    newest_first: bool,
    id_of: fn(&E::Model) -> &str,
) -> Result<Page<E::Model>, DbErr>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    let mut select = if newest_first {
        select.order_by_desc(id)
    } else {
        select.order_by_asc(id)
    };
    if let Some(cursor) = cursor {
        let after = if newest_first {
            id.lt(cursor)
        } else {
            id.gt(cursor)
        };
        select = select.filter(after.into_condition());
    }
    let mut items = select.limit(limit + 1).all(db).await?;
    let next_cursor = if items.len() as u64 > limit {
        items.truncate(limit as usize);
        items.last().map(|m| id_of(m).to_owned())
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Statement};

    use super::*;

    /// The value of `PRAGMA name` on a new SQLite file opened with `setting`.
    async fn pragma_of(setting: SqliteSynchronous, name: &str) -> i64 {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
        let db = connect_url(&url, 1, setting, None).await.unwrap();
        let row = db
            .query_one(Statement::from_string(
                db.get_database_backend(),
                format!("PRAGMA {name}"),
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index::<i64>(0).unwrap()
    }

    async fn synchronous_of(setting: SqliteSynchronous) -> i64 {
        pragma_of(setting, "synchronous").await
    }

    #[test]
    fn unavailable_databases_are_told_from_bad_requests() {
        use sea_orm::{sqlx, ConnAcquireErr, RuntimeErr};
        let io = || sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_unavailable(&DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)));
        assert!(is_unavailable(&DbErr::Conn(RuntimeErr::SqlxError(io()))));
        assert!(is_unavailable(&DbErr::Exec(RuntimeErr::SqlxError(io()))));
        assert!(is_unavailable(&DbErr::Query(RuntimeErr::SqlxError(
            sqlx::Error::PoolTimedOut
        ))));
        assert!(!is_unavailable(&DbErr::Custom(
            "the database writer stopped".to_owned()
        )));
        assert!(!is_unavailable(&DbErr::RecordNotFound("call".to_owned())));
        assert!(!is_unavailable(&DbErr::Query(RuntimeErr::SqlxError(
            sqlx::Error::RowNotFound
        ))));
        // SQLite: SQLITE_FULL, SQLITE_READONLY_DBMOVED (extended), SQLITE_IOERR_WRITE; not
        // SQLITE_CONSTRAINT_UNIQUE.
        for code in ["13", "1032", "778", "8", "5"] {
            assert!(unavailable_code(code), "{code}");
        }
        for code in ["2067", "19", "1"] {
            assert!(!unavailable_code(code), "{code}");
        }
        // PostgreSQL: connection failure, disk full, admin shutdown, read-only standby; not a
        // unique violation or a syntax error.
        for code in ["08006", "53100", "57P01", "25006"] {
            assert!(unavailable_code(code), "{code}");
        }
        for code in ["23505", "42601", "40001"] {
            assert!(!unavailable_code(code), "{code}");
        }
    }

    #[tokio::test]
    async fn a_full_or_unwritable_sqlite_database_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
        let db = connect_url(&url, 1, SqliteSynchronous::Full, None).await.unwrap();
        let backend = db.get_database_backend();
        db.execute(Statement::from_string(backend, "CREATE TABLE t (x TEXT)"))
            .await
            .unwrap();
        // The database may not grow past its current size: the next write is SQLITE_FULL.
        let pages = db
            .query_one(Statement::from_string(backend, "PRAGMA page_count"))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<i64>(0)
            .unwrap();
        db.execute(Statement::from_string(
            backend,
            format!("PRAGMA max_page_count = {pages}"),
        ))
        .await
        .unwrap();
        let err = db
            .execute(Statement::from_string(
                backend,
                "INSERT INTO t SELECT hex(randomblob(4000)) FROM (SELECT 1 UNION SELECT 2)",
            ))
            .await
            .unwrap_err();
        assert!(is_unavailable(&err), "{err:?}");
        let err = db
            .execute(Statement::from_string(backend, "SELECT * FROM missing_table"))
            .await
            .unwrap_err();
        assert!(!is_unavailable(&err), "{err:?}");
    }

    #[tokio::test]
    async fn transaction_pooling_refuses_a_search_path_set_at_connect() {
        let url = "postgres://u@127.0.0.1:9/voice?pgbouncer=true";
        let err = connect_url(url, 1, SqliteSynchronous::Full, Some("s"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("search_path"), "{err}");
    }

    #[tokio::test]
    async fn sqlite_commits_sync_as_configured() {
        // SQLite's values: 1 is NORMAL, 2 is FULL.
        assert_eq!(synchronous_of(SqliteSynchronous::Full).await, 2);
        assert_eq!(synchronous_of(SqliteSynchronous::Normal).await, 1);
    }

    #[tokio::test]
    async fn sqlite_checkpoints_after_the_configured_wal_size() {
        let pages = pragma_of(SqliteSynchronous::Full, "wal_autocheckpoint").await;
        assert_eq!(pages, i64::from(WAL_AUTOCHECKPOINT_PAGES));
        assert_ne!(pages, 1_000, "not SQLite's default");
    }
}
