//! The PostgreSQL lane: each batch is one statement on a connection the lane holds, every
//! column of a batch's rows bound as one array (`INSERT ... SELECT * FROM UNNEST($1, $2,
//! ...)`).
//!
//! Through sea-orm, a batch's multi-row inserts were built anew for every batch (sea-query
//! writing the SQL text and a placeholder per value, the models cloned into active models, the
//! values converted for sqlx), and each batch size was a statement text of its own for sqlx's
//! statement cache. Here the text of each statement is built once from the entities' columns,
//! so it is prepared once per connection, and a batch only collects its values column by column.
//! This trades sea-orm's query builder for statements executed with sqlx on the connection
//! sea-orm holds, measured in `bench/budget.md` (change 11).
//!
//! A batch's new calls, their answers and their events are one statement of data-modifying
//! `WITH` queries: the answers and events are inserted for the calls the statement inserted
//! (`IN (SELECT "id" FROM c)`), whose CallSids it returns. Outside a transaction, PostgreSQL
//! commits that statement on its own, so a batch of new calls is one round trip. Before, it was
//! a transaction of five (`BEGIN`, three inserts, `COMMIT`), and sqlx added two more, a ping
//! each time it lent the connection out and took it back. The lane now keeps its connection
//! while batches follow one another, and gives it back when none is waiting or after an error.
//! Measured in `bench/budget.md` (change 12).
//!
//! sqlx sends each array's type with the statement, so PostgreSQL reads `UNNEST`'s columns
//! without casts, and assigns them to the table's columns as an `INSERT` of those values would.
use std::{collections::HashSet, sync::LazyLock};

use chrono::{DateTime, Utc};
use entity::{call, call_webhook, outbox_event};
use sea_orm::{
    sea_query::Value,
    sqlx::{
        self, pool::PoolConnection, postgres::PgArguments, Arguments, Connection, PgConnection, Postgres,
    },
    DbErr, EntityName, EntityTrait, Iterable, ModelTrait, RuntimeErr,
};

use super::{Batches, Job, Plan};
use crate::db::{Pool, PoolMode};

/// Writes each batch on a connection of the writer's pool ([`Pool::writer`]), held from batch
/// to batch while batches follow one another ([`Unnest::release`]).
pub(super) struct Unnest<'a> {
    pool: &'a Pool,
    conn: Option<PoolConnection<Postgres>>,
}

impl<'a> Unnest<'a> {
    /// A lane's writer on `pool`; it takes a connection at its first batch.
    pub(super) fn new(pool: &'a Pool) -> Self {
        Self { pool, conn: None }
    }

    /// Gives the connection back to the pool, for when no batch is waiting: then it serves
    /// another writer on the same pool, and the next batch's connection is tested (sqlx pings
    /// a connection when it lends it out and takes it back).
    pub(super) fn release(&mut self) {
        self.conn = None;
    }
}

impl Batches for Unnest<'_> {
    async fn write(&mut self, jobs: &[Job]) -> Result<Vec<bool>, DbErr> {
        let mode = self.pool.mode();
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let pool = self.pool.connection().get_postgres_connection_pool();
                self.conn.insert(pool.acquire().await.map_err(exec)?)
            }
        };
        let written = write(conn, mode, jobs).await;
        if written.is_err() {
            // Back to the pool, which tests it (and closes it if it is broken); the next batch
            // takes a connection anew.
            self.conn = None;
        }
        written.map_err(exec)
    }
}

fn exec(e: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(e))
}

/// Writes one batch: its new calls in one statement ([`CLAIM`]), then its retry counts.
///
/// Behind a proxy in transaction pooling mode, all of it in one transaction of unnamed
/// statements: a statement outside a transaction may run on another server connection than
/// the one sqlx prepared it on, and a name sqlx gives could already be taken there.
async fn write(conn: &mut PgConnection, mode: PoolMode, jobs: &[Job]) -> Result<Vec<bool>, sqlx::Error> {
    let plan = Plan::of(jobs);
    let inserted = match mode {
        PoolMode::Direct => statements(conn, true, &plan).await?,
        PoolMode::TransactionPooled => {
            let mut txn = conn.begin().await?;
            let inserted = statements(&mut txn, false, &plan).await?;
            txn.commit().await?;
            inserted
        }
    };
    let mut claimed = vec![false; jobs.len()];
    for &(i, new_call) in &plan.candidates {
        claimed[i] = inserted.contains(&new_call.call.call_sid);
    }
    Ok(claimed)
}

/// Runs a batch's statements; the CallSids of the calls it inserted.
///
/// The counts are statements of their own, after the calls, calls before answers, each on its
/// rows in the order of their ids (`= ANY`), as every other transaction that updates both
/// takes them: in one statement with the calls, PostgreSQL runs the `WITH` queries in an order
/// of its own, and such a batch deadlocked with a retry answered from the database. Outside a
/// transaction each commits on its own, so a crash between them can lose an answer's count of
/// a retry whose call's count was written, as a retry's count may be lost
/// ([`super::Writer::count_retry`]); never a call or its answer.
async fn statements(
    conn: &mut PgConnection,
    named: bool,
    plan: &Plan<'_>,
) -> Result<HashSet<String>, sqlx::Error> {
    let mut inserted = HashSet::new();
    if !plan.candidates.is_empty() {
        let candidates = || plan.candidates.iter().map(|(_, c)| c);
        let owners: Vec<&str> = candidates().map(|c| c.call.id.as_str()).collect();
        let mut args = PgArguments::default();
        // In CallSid order (`Plan`), so that concurrent batches of two instances take the
        // unique index's locks in the same order: `UNNEST` yields the arrays' rows in order.
        add_arrays(&mut args, candidates().map(|c| &c.call))?;
        add(&mut args, &owners)?;
        add_arrays(&mut args, candidates().map(|c| &c.answer))?;
        add_arrays(&mut args, candidates().map(|c| &c.event))?;
        inserted = sqlx::query_scalar_with(&CLAIM, args)
            .persistent(named)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
    }
    let now = Utc::now();
    for (sql, counts) in [
        (&*ADD_CALL_ATTEMPTS, &plan.calls),
        (&*ADD_ANSWER_ATTEMPTS, &plan.answers),
    ] {
        for (&by, ids) in counts {
            sqlx::query(sql)
                .persistent(named)
                .bind(by)
                .bind(now)
                .bind(ids)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(inserted)
}

/// Binds one more argument.
fn add<'q, T>(args: &mut PgArguments, value: T) -> Result<(), sqlx::Error>
where
    T: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
{
    args.add(value).map_err(sqlx::Error::Encode)
}

/// A batch's new calls: the calls (`c`, inserted unless their CallSid is taken), and the
/// answers and events of those it inserted (`a`, `e`); it returns the CallSids it inserted.
static CLAIM: LazyLock<String> = LazyLock::new(|| {
    let owners = call::Column::iter().count() + 1;
    let answers_at = owners + 1;
    let events_at = answers_at + call_webhook::Column::iter().count();
    format!(
        "WITH c AS ({} ON CONFLICT (\"call_sid\") DO NOTHING RETURNING \"id\", \"call_sid\"), \
         a AS ({}), e AS ({}) SELECT \"call_sid\" FROM c",
        insert::<call::Entity>(1),
        insert_owned::<call_webhook::Entity>(answers_at, owners),
        insert_owned::<outbox_event::Entity>(events_at, owners),
    )
});
static ADD_CALL_ATTEMPTS: LazyLock<String> = LazyLock::new(|| add_attempts(call::Entity));
static ADD_ANSWER_ATTEMPTS: LazyLock<String> = LazyLock::new(|| add_attempts(call_webhook::Entity));

/// `INSERT INTO "table" ("column", ...) SELECT * FROM UNNEST($first, ...)` over all of an
/// entity's columns, one array per column in the order of [`add_arrays`].
fn insert<E: EntityTrait>(first: usize) -> String {
    super::insert_into::<E>(|columns| format!("SELECT * FROM UNNEST({})", params(first, columns.len())))
}

/// [`insert`] of the rows whose call (the array `$owners`, the calls' ids) the statement
/// inserted.
fn insert_owned<E: EntityTrait>(first: usize, owners: usize) -> String {
    super::insert_into::<E>(|columns| {
        format!(
            "SELECT {} FROM UNNEST({}, ${owners}) AS r({}, \"of_call\") WHERE r.\"of_call\" IN (SELECT \"id\" FROM c)",
            columns.join(", "),
            params(first, columns.len()),
            columns.join(", "),
        )
    })
}

/// `$first, ..., $(first + n - 1)`.
fn params(first: usize, n: usize) -> String {
    let params: Vec<String> = (first..first + n).map(|i| format!("${i}")).collect();
    params.join(", ")
}

/// The atomic `attempts = attempts + $1` with `updated_at = $2` on the rows whose ids are in
/// the array `$3`.
fn add_attempts(entity: impl EntityName) -> String {
    format!(
        "UPDATE \"{}\" SET \"attempts\" = \"attempts\" + $1, \"updated_at\" = $2 WHERE \"id\" = ANY($3)",
        entity.table_name()
    )
}

/// Binds `models`: one array per column of their entity, in column order.
fn add_arrays<'a, M: ModelTrait + 'a>(
    args: &mut PgArguments,
    models: impl ExactSizeIterator<Item = &'a M>,
) -> Result<(), sqlx::Error> {
    let rows = models.len();
    let mut columns: Vec<Option<Array>> = <M::Entity as EntityTrait>::Column::iter().map(|_| None).collect();
    for model in models {
        for (column, array) in <M::Entity as EntityTrait>::Column::iter().zip(&mut columns) {
            let value = model.get(column);
            array
                .get_or_insert_with(|| Array::of(&value, rows))
                .push(value)
                .map_err(|value| sqlx::Error::Encode(format!("no PostgreSQL array for {value:?}").into()))?;
        }
    }
    for array in columns.into_iter().flatten() {
        array.add_to(args).map_err(sqlx::Error::Encode)?;
    }
    Ok(())
}

/// One column's values over a batch's rows, typed as sqlx binds them.
enum Array {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i32>>),
    BigInt(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
    Time(Vec<Option<DateTime<Utc>>>),
}

impl Array {
    /// An empty array for values of `value`'s type.
    fn of(value: &Value, rows: usize) -> Self {
        match value {
            Value::Int(_) => Self::Int(Vec::with_capacity(rows)),
            Value::BigInt(_) => Self::BigInt(Vec::with_capacity(rows)),
            Value::Bool(_) => Self::Bool(Vec::with_capacity(rows)),
            Value::ChronoDateTimeUtc(_) => Self::Time(Vec::with_capacity(rows)),
            _ => Self::Text(Vec::with_capacity(rows)),
        }
    }

    /// Appends `value`, or gives it back if it is not of the array's type.
    fn push(&mut self, value: Value) -> Result<(), Value> {
        match (self, value) {
            (Self::Text(v), Value::String(s)) => v.push(s.map(|s| *s)),
            (Self::Int(v), Value::Int(n)) => v.push(n),
            (Self::BigInt(v), Value::BigInt(n)) => v.push(n),
            (Self::Bool(v), Value::Bool(b)) => v.push(b),
            (Self::Time(v), Value::ChronoDateTimeUtc(t)) => v.push(t.map(|t| *t)),
            (_, other) => return Err(other),
        }
        Ok(())
    }

    fn add_to(self, args: &mut PgArguments) -> Result<(), sqlx::error::BoxDynError> {
        match self {
            Self::Text(v) => args.add(v),
            Self::Int(v) => args.add(v),
            Self::BigInt(v) => args.add(v),
            Self::Bool(v) => args.add(v),
            Self::Time(v) => args.add(v),
        }
    }
}
