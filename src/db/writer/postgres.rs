//! The PostgreSQL lane: each batch is a transaction of fixed-text statements on the writer's
//! connection, every column of a batch's rows bound as one array (`INSERT ... SELECT * FROM
//! UNNEST($1, $2, ...)`).
//!
//! Through sea-orm, a batch's multi-row inserts were built anew for every batch (sea-query
//! writing the SQL text and a placeholder per value, the models cloned into active models, the
//! values converted for sqlx), and each batch size was a statement text of its own for sqlx's
//! statement cache. Here the text of each statement is built once from the entities' columns,
//! so it is prepared once per connection, and a batch only collects its values column by column.
//! This trades sea-orm's query builder for statements executed with sqlx on the connection
//! sea-orm holds, measured in `bench/budget.md` (change 11).
//!
//! sqlx sends each array's type with the statement, so PostgreSQL reads `UNNEST`'s columns
//! without casts, and assigns them to the table's columns as an `INSERT` of those values would.
use std::{collections::HashSet, sync::LazyLock};

use chrono::{DateTime, Utc};
use entity::{call, call_webhook, outbox_event};
use sea_orm::{
    sea_query::Value,
    sqlx::{self, postgres::PgArguments, Arguments},
    DbErr, EntityName, EntityTrait, Iterable, ModelTrait, RuntimeErr,
};

use super::{Batches, Job, NewCall, Plan};
use crate::db::{Pool, PoolMode};

/// Writes each batch in a transaction on the writer's connection ([`Pool::writer`]).
pub(super) struct Unnest<'a>(pub &'a Pool);

impl Batches for Unnest<'_> {
    async fn write(&mut self, jobs: &[Job]) -> Result<Vec<bool>, DbErr> {
        let pool = self.0.connection().get_postgres_connection_pool();
        // Behind a proxy in transaction pooling mode, unnamed statements: a name sqlx gives
        // could already be taken on the server connection the transaction gets.
        let named = self.0.mode() == PoolMode::Direct;
        write(pool, named, jobs)
            .await
            .map_err(|e| DbErr::Exec(RuntimeErr::SqlxError(e)))
    }
}

async fn write(pool: &sqlx::PgPool, named: bool, jobs: &[Job]) -> Result<Vec<bool>, sqlx::Error> {
    let plan = Plan::of(jobs);
    let mut txn = pool.begin().await?;
    let mut claimed = vec![false; jobs.len()];
    if !plan.candidates.is_empty() {
        // In CallSid order (`Plan`), so that concurrent batches of two instances take the
        // unique index's locks in the same order: `UNNEST` yields the arrays' rows in order.
        let calls = arrays(plan.candidates.iter().map(|(_, c)| &c.call))?;
        let inserted: HashSet<String> = sqlx::query_scalar_with(&INSERT_CALLS, calls)
            .persistent(named)
            .fetch_all(&mut *txn)
            .await?
            .into_iter()
            .collect();
        let won: Vec<&NewCall> = plan
            .candidates
            .iter()
            .filter(|(_, c)| inserted.contains(&c.call.call_sid))
            .map(|&(i, c)| {
                claimed[i] = true;
                c
            })
            .collect();
        if !won.is_empty() {
            let answers = arrays(won.iter().map(|c| &c.answer))?;
            sqlx::query_with(&INSERT_ANSWERS, answers)
                .persistent(named)
                .execute(&mut *txn)
                .await?;
            let events = arrays(won.iter().map(|c| &c.event))?;
            sqlx::query_with(&INSERT_EVENTS, events)
                .persistent(named)
                .execute(&mut *txn)
                .await?;
        }
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
                .execute(&mut *txn)
                .await?;
        }
    }
    txn.commit().await?;
    Ok(claimed)
}

static INSERT_CALLS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} ON CONFLICT (\"call_sid\") DO NOTHING RETURNING \"call_sid\"",
        insert::<call::Entity>()
    )
});
static INSERT_ANSWERS: LazyLock<String> = LazyLock::new(insert::<call_webhook::Entity>);
static INSERT_EVENTS: LazyLock<String> = LazyLock::new(insert::<outbox_event::Entity>);
static ADD_CALL_ATTEMPTS: LazyLock<String> = LazyLock::new(|| add_attempts(call::Entity));
static ADD_ANSWER_ATTEMPTS: LazyLock<String> = LazyLock::new(|| add_attempts(call_webhook::Entity));

/// `INSERT INTO "table" ("column", ...) SELECT * FROM UNNEST($1, ...)` over all of an entity's
/// columns, one array per column in the order of [`arrays`].
fn insert<E: EntityTrait>() -> String {
    super::insert_into::<E>(|columns| {
        let arrays: Vec<String> = (1..=columns).map(|i| format!("${i}")).collect();
        format!("SELECT * FROM UNNEST({})", arrays.join(", "))
    })
}

/// The atomic `attempts = attempts + $1` with `updated_at = $2` on the rows whose ids are in
/// the array `$3`.
fn add_attempts(entity: impl EntityName) -> String {
    format!(
        "UPDATE \"{}\" SET \"attempts\" = \"attempts\" + $1, \"updated_at\" = $2 WHERE \"id\" = ANY($3)",
        entity.table_name()
    )
}

/// `models` as statement arguments: one array per column of their entity, in column order.
fn arrays<'a, M: ModelTrait + 'a>(
    models: impl ExactSizeIterator<Item = &'a M>,
) -> Result<PgArguments, sqlx::Error> {
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
    let mut args = PgArguments::default();
    for array in columns.into_iter().flatten() {
        array.add_to(&mut args).map_err(sqlx::Error::Encode)?;
    }
    Ok(args)
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
