//! The SQLite lane: each batch runs on the pool connection's own SQLite handle, on a blocking
//! thread, with single-row prepared statements.
//!
//! sqlx runs every SQLite connection on a thread of its own behind a channel: through sea-orm a
//! batch was five round trips to that thread (begin, three multi-row inserts, commit), each
//! statement's SQL text built and its values converted anew, and the claimed CallSids streamed
//! back row by row. Here a batch is one hand-off to a blocking thread, which takes the
//! connection from the pool, locks its handle (`lock_handle`: sqlx's thread waits while it is
//! held) and steps cached statements on it. This trades some clarity (a second SQLite binding
//! beside sqlx, and an `unsafe` borrow of sqlx's handle) for speed: ×1.24 less server CPU per
//! new call than the sea-orm lane it replaced (148 → 119 µs, `cargo xtask bench --against`,
//! interleaved rounds; see `bench/budget.md`).
//!
//! The rows are the same as sea-orm writes: the columns come from the entities, and values are
//! encoded as sqlx encodes them (a test compares the two).
use std::{borrow::Cow, error::Error as StdError, fmt, sync::LazyLock};

use chrono::{DateTime, SecondsFormat, Utc};
use entity::{call, call_webhook, outbox_event};
use rusqlite::{
    types::{ToSqlOutput, ValueRef},
    Connection, ToSql, Transaction, TransactionBehavior,
};
use sea_orm::{
    sea_query::Value,
    sqlx::{self, error::ErrorKind, SqlitePool},
    ConnAcquireErr, DbErr, EntityName, EntityTrait, Iterable, ModelTrait, RuntimeErr,
};

use super::{Batches, Job, Plan};

/// Writes `jobs` on a blocking thread and answers them. A lane waits for it before it takes the
/// next batch, so requests queue up meanwhile (group commit).
pub(super) async fn execute(pool: &SqlitePool, jobs: Vec<Job>) {
    let (pool, runtime) = (pool.clone(), tokio::runtime::Handle::current());
    let written = tokio::task::spawn_blocking(move || runtime.block_on(on_handle(&pool, jobs))).await;
    if let Err(e) = written {
        // Its requests' answer channels dropped with it: they fail as "writer stopped".
        tracing::error!(error = %e, "the SQLite writer's batch panicked");
    }
}

/// Takes a connection from the pool, locks its handle and writes the batch on it.
async fn on_handle(pool: &SqlitePool, jobs: Vec<Job>) {
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => return fail(jobs, || acquire_err(&e)),
    };
    let mut locked = match conn.lock_handle().await {
        Ok(locked) => locked,
        Err(e) => return fail(jobs, || acquire_err(&e)),
    };
    // SAFETY: `locked` keeps sqlx's thread off the handle until it drops, after `db`; rusqlite's
    // connection made with `from_handle` neither closes the handle nor outlives this scope, and
    // finalizes its statements when it drops; every transaction it begins ends (commit, or
    // rollback when dropped) before that, so sqlx gets the connection back as it lent it.
    let db = match unsafe { Connection::from_handle(locked.as_raw_handle().as_ptr()) } {
        Ok(db) => db,
        Err(e) => return fail(jobs, || DbErr::Conn(RuntimeErr::Internal(e.to_string()))),
    };
    super::execute(&mut Handle(&db), jobs).await;
    drop(db);
}

/// Answers every job with an error: the batch could not start.
fn fail(jobs: Vec<Job>, err: impl Fn() -> DbErr) {
    super::counts_lost(&jobs, &err());
    for job in jobs {
        super::answer(job, Err(err()));
    }
}

/// Writes batches on an SQLite handle.
pub(super) struct Handle<'a>(&'a Connection);

impl Batches for Handle<'_> {
    async fn write(&mut self, jobs: &[Job]) -> Result<Vec<bool>, DbErr> {
        write(self.0, jobs).map_err(db_err)
    }
}

fn write(db: &Connection, jobs: &[Job]) -> rusqlite::Result<Vec<bool>> {
    let plan = Plan::of(jobs);
    // IMMEDIATE: the write lock up front, so a busy database waits here (busy timeout) rather
    // than failing to upgrade a read.
    let txn = Transaction::new_unchecked(db, TransactionBehavior::Immediate)?;
    let mut claimed = vec![false; jobs.len()];
    if !plan.candidates.is_empty() {
        let mut calls = txn.prepare_cached(&INSERT_CALL)?;
        let mut answers = txn.prepare_cached(&INSERT_ANSWER)?;
        let mut events = txn.prepare_cached(&INSERT_EVENT)?;
        for &(i, new_call) in &plan.candidates {
            // Nothing inserted: the CallSid is stored already (the unique index decides).
            if calls.execute(rusqlite::params_from_iter(
                values(&new_call.call).iter().map(Bind),
            ))? == 0
            {
                continue;
            }
            answers.execute(rusqlite::params_from_iter(
                values(&new_call.answer).iter().map(Bind),
            ))?;
            events.execute(rusqlite::params_from_iter(
                values(&new_call.event).iter().map(Bind),
            ))?;
            claimed[i] = true;
        }
    }
    let now = sqlite_time(&Utc::now());
    for (sql, counts) in [
        (&*ADD_CALL_ATTEMPTS, &plan.calls),
        (&*ADD_ANSWER_ATTEMPTS, &plan.answers),
    ] {
        // Each batch prepares its statements anew (the connection is lent per batch), so none
        // is prepared for nothing: a batch of new calls alone has no counts.
        if counts.is_empty() {
            continue;
        }
        let mut add = txn.prepare_cached(sql)?;
        for (by, ids) in counts {
            for id in ids {
                add.execute(rusqlite::params![by, now, id])?;
            }
        }
    }
    txn.commit()?;
    Ok(claimed)
}

static INSERT_CALL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} ON CONFLICT (\"call_sid\") DO NOTHING",
        insert::<call::Entity>()
    )
});
static INSERT_ANSWER: LazyLock<String> = LazyLock::new(insert::<call_webhook::Entity>);
static INSERT_EVENT: LazyLock<String> = LazyLock::new(insert::<outbox_event::Entity>);
static ADD_CALL_ATTEMPTS: LazyLock<String> = LazyLock::new(|| add_attempts(call::Entity));
static ADD_ANSWER_ATTEMPTS: LazyLock<String> = LazyLock::new(|| add_attempts(call_webhook::Entity));

/// `INSERT INTO "table" ("column", ...) VALUES (?, ...)` over all of an entity's columns, in
/// the order of [`values`].
fn insert<E: EntityTrait>() -> String {
    super::insert_into::<E>(|columns| format!("VALUES ({})", vec!["?"; columns.len()].join(", ")))
}

/// The atomic `attempts = attempts + ?1` with `updated_at = ?2` on the row whose id is `?3`.
fn add_attempts(entity: impl EntityName) -> String {
    format!(
        "UPDATE \"{}\" SET \"attempts\" = \"attempts\" + ?1, \"updated_at\" = ?2 WHERE \"id\" = ?3",
        entity.table_name()
    )
}

/// A model's values, column by column.
fn values<M: ModelTrait>(model: &M) -> Vec<Value> {
    <M::Entity as EntityTrait>::Column::iter()
        .map(|c| model.get(c))
        .collect()
}

/// A sea-query value bound as sqlx binds it on SQLite.
struct Bind<'a>(&'a Value);

impl ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Value::String(Some(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Int(Some(n)) => ToSqlOutput::from(*n),
            Value::BigInt(Some(n)) => ToSqlOutput::from(*n),
            Value::Bool(Some(b)) => ToSqlOutput::from(*b),
            Value::ChronoDateTimeUtc(Some(t)) => ToSqlOutput::from(sqlite_time(t)),
            Value::String(None)
            | Value::Int(None)
            | Value::BigInt(None)
            | Value::Bool(None)
            | Value::ChronoDateTimeUtc(None) => ToSqlOutput::from(rusqlite::types::Null),
            other => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    format!("no SQLite binding for {other:?}").into(),
                ))
            }
        })
    }
}

/// A time as sqlx stores it on SQLite (RFC 3339 text, as many fraction digits as needed).
fn sqlite_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// An SQLite failure as the rest of the service sees the driver's: a sqlx database error with
/// the (extended) result code, so [`crate::db::is_unavailable`] tells an unwritable or full
/// database from a bad request as it does for sqlx's own.
fn db_err(e: rusqlite::Error) -> DbErr {
    match e {
        rusqlite::Error::SqliteFailure(failure, message) => DbErr::Exec(RuntimeErr::SqlxError(
            sqlx::Error::Database(Box::new(SqliteFailure {
                code: failure.extended_code,
                message: message.unwrap_or_else(|| failure.to_string()),
            })),
        )),
        other => DbErr::Exec(RuntimeErr::Internal(other.to_string())),
    }
}

/// A copy of a pool or connection error, for each request of a batch that could not start.
fn acquire_err(e: &sqlx::Error) -> DbErr {
    match e {
        sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
        sqlx::Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
        sqlx::Error::Database(db) => DbErr::Conn(RuntimeErr::SqlxError(sqlx::Error::Database(Box::new(
            SqliteFailure {
                code: db.code().and_then(|c| c.parse().ok()).unwrap_or(1),
                message: db.message().to_owned(),
            },
        )))),
        sqlx::Error::Io(io) => DbErr::Conn(RuntimeErr::SqlxError(sqlx::Error::Io(std::io::Error::new(
            io.kind(),
            io.to_string(),
        )))),
        sqlx::Error::WorkerCrashed => DbErr::Conn(RuntimeErr::SqlxError(sqlx::Error::WorkerCrashed)),
        other => DbErr::Conn(RuntimeErr::Internal(other.to_string())),
    }
}

/// An SQLite result code and message.
#[derive(Debug)]
struct SqliteFailure {
    code: i32,
    message: String,
}

impl fmt::Display for SqliteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl StdError for SqliteFailure {}

impl sqlx::error::DatabaseError for SqliteFailure {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(self.code.to_string().into())
    }

    fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        use rusqlite::ffi;
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => ErrorKind::UniqueViolation,
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}
