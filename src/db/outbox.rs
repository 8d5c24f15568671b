//! The outbox: events written with the state they describe, delivered later.
//!
//! Claiming an event leases it: its `next_attempt_at` moves to the end of the lease and its
//! attempt count goes up, in one statement (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several
//! instances share the work). The result of an attempt is recorded only by the holder of the
//! lease (the attempt count it claimed), so a late result cannot overwrite a newer one.
//!
//! An event of a tenant without a `webhook_url` is skipped: at delivery, or for the event of a
//! new call ([`for_tenant`]) when it is stored, so that nothing claims and records it later.
use std::collections::BTreeMap;

use super::{Page, Scope};
use crate::events::Event;
use chrono::{DateTime, Utc};
use entity::{id::new_id, outbox_event, states::OutboxStatus, tenant};
use sea_orm::{
    sea_query::Expr, ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait,
    IntoActiveModel, QueryFilter, Statement,
};

/// Records an event for a tenant.
pub async fn record<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    event: &Event,
) -> Result<outbox_event::Model, DbErr> {
    pending(tenant_id, event).into_active_model().insert(db).await
}

/// A pending event for a tenant, not yet stored. The delivered body follows the Standard
/// Webhooks shape: `{"type", "timestamp", "data"}` ([`Event::body`]).
pub fn pending(tenant_id: &str, event: &Event) -> outbox_event::Model {
    let now = Utc::now();
    let payload = event.body(now);
    outbox_event::Model {
        id: new_id(),
        tenant_id: tenant_id.to_owned(),
        event_type: event.event_type(),
        // Straight into a string: `Value`'s `Display` writes through a `fmt::Formatter`.
        payload: serde_json::to_string(&payload).expect("a JSON value serialises"),
        status: OutboxStatus::Pending,
        attempts: 0,
        next_attempt_at: now,
        last_error: None,
        created_at: now,
        delivered_at: None,
    }
}

/// Why an event of a tenant without a receiver is not delivered (its `last_error`).
pub const NO_WEBHOOK_URL: &str = "tenant has no webhook_url";

/// The event for `tenant`, not yet stored: [`pending`] when it has a `webhook_url`, else
/// already skipped (with [`NO_WEBHOOK_URL`]).
pub fn for_tenant(tenant: &tenant::Model, event: &Event) -> outbox_event::Model {
    let mut model = pending(&tenant.id, event);
    if tenant.webhook_url.is_none() {
        model.status = OutboxStatus::Skipped;
        model.last_error = Some(NO_WEBHOOK_URL.to_owned());
    }
    model
}

/// Inserts an event built earlier (with [`pending`]).
pub async fn insert<C: ConnectionTrait>(db: &C, event: outbox_event::Model) -> Result<(), DbErr> {
    outbox_event::Entity::insert(event.into_active_model())
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Lists the events in `scope`, newest first.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    scope: &Scope,
    cursor: Option<&str>,
    limit: u64,
) -> Result<Page<outbox_event::Model>, DbErr> {
    let select = scope.filter(outbox_event::Entity::find(), outbox_event::Column::TenantId);
    super::page(db, select, outbox_event::Column::Id, cursor, limit, true, |m| {
        &m.id
    })
    .await
}

/// Leases up to `limit` events due at `now` until `lease_until` and counts the attempt.
pub async fn claim<C: ConnectionTrait>(
    db: &C,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<outbox_event::Model>, DbErr> {
    let backend = db.get_database_backend();
    let sql = claim_sql(backend, limit);
    outbox_event::Entity::find()
        .from_raw_sql(Statement::from_sql_and_values(
            backend,
            sql,
            [lease_until.into(), now.into()],
        ))
        .all(db)
        .await
}

/// The statement of [`claim`]: `$1` the end of the lease, `$2` now. Its `'pending'` is a
/// literal, not a bound value, so that both databases find the due events through the partial
/// index `idx_outbox_due_pending`.
pub fn claim_sql(backend: DbBackend, limit: u64) -> String {
    let lock = if backend == DbBackend::Postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    format!(
        "UPDATE outbox_events SET next_attempt_at = $1, attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM outbox_events WHERE status = 'pending' AND next_attempt_at <= $2 \
         ORDER BY next_attempt_at LIMIT {limit}{lock}) RETURNING *"
    )
}

/// The statement of [`backlog`], counting through `idx_outbox_due_pending` as [`claim_sql`].
pub const BACKLOG_SQL: &str = "SELECT COUNT(*) AS n FROM outbox_events WHERE status = 'pending'";

/// How many events wait for delivery.
pub async fn backlog<C: ConnectionTrait>(db: &C) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    let row = db
        .query_one(Statement::from_string(backend, BACKLOG_SQL))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("COUNT(*) returned no row".into()))?;
    let n: i64 = row.try_get("", "n")?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The result of one delivery attempt of a claimed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt<'a> {
    pub event_id: &'a str,
    /// The attempt count of the lease (as claimed).
    pub attempts: i32,
    pub error: Option<String>,
    pub next: Next,
}

/// What becomes of an event after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Still pending, tried again at this time.
    RetryAt(DateTime<Utc>),
    /// Done, with this status.
    Final(OutboxStatus),
}

/// Records the results of a round at `now`. Final results are written per (status, error,
/// attempt) group; a retry is written alone, with its own time. Each statement runs even when
/// another fails; the failures are returned.
pub async fn record_attempts<C: ConnectionTrait>(
    db: &C,
    attempts: Vec<Attempt<'_>>,
    now: DateTime<Utc>,
) -> Vec<DbErr> {
    let mut finals: BTreeMap<(&'static str, Option<String>, i32), Vec<&str>> = BTreeMap::new();
    let mut updates = Vec::new();
    for attempt in attempts {
        match attempt.next {
            Next::RetryAt(at) => updates.push(
                leased(attempt.event_id, attempt.attempts)
                    .col_expr(outbox_event::Column::LastError, Expr::value(attempt.error))
                    .col_expr(outbox_event::Column::NextAttemptAt, Expr::value(at)),
            ),
            Next::Final(status) => finals
                .entry((status.as_str(), attempt.error, attempt.attempts))
                .or_default()
                .push(attempt.event_id),
        }
    }
    for ((status, error, attempts), ids) in finals {
        let mut update = outbox_event::Entity::update_many()
            .col_expr(outbox_event::Column::Status, Expr::value(status))
            .col_expr(outbox_event::Column::LastError, Expr::value(error))
            .filter(outbox_event::Column::Id.is_in(ids))
            .filter(outbox_event::Column::Attempts.eq(attempts));
        if status == OutboxStatus::Delivered.as_str() {
            update = update.col_expr(outbox_event::Column::DeliveredAt, Expr::value(Some(now)));
        }
        updates.push(update);
    }
    let mut failures = Vec::new();
    for update in updates {
        if let Err(e) = update.exec(db).await {
            failures.push(e);
        }
    }
    failures
}

/// An update of one event that only the holder of its lease (its attempt count) can make.
fn leased(id: &str, attempts: i32) -> sea_orm::UpdateMany<outbox_event::Entity> {
    outbox_event::Entity::update_many()
        .filter(outbox_event::Column::Id.eq(id))
        .filter(outbox_event::Column::Attempts.eq(attempts))
}
