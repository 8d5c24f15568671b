//! The retention purge's queries: each deletes one bounded batch of rows older than a cutoff,
//! through an index (migration `m20261203_000002_retention_indexes`), and returns how many it
//! deleted. The purge itself (batches, pauses) is `domain::retention`.
use chrono::{DateTime, Utc};
use entity::{call, call_webhook, media_session, states::OutboxStatus};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, Statement, TransactionTrait,
};

/// The rows one batch selects, each through an index; `$1` is the cutoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Calls created before the cutoff, oldest first (`idx_calls_created`).
    Calls,
    /// Finished events (delivered, dead, skipped: any status but pending) created before the
    /// cutoff, oldest first (`idx_outbox_finished_created`). Pending events (waiting for a
    /// delivery or a retry) are never deleted, however old.
    FinishedEvents,
    /// Diagnostics last seen before the cutoff (`idx_diagnostics_last_seen`).
    Diagnostics,
    /// Alerts raised before the cutoff (`idx_alerts_created`).
    Alerts,
}

impl Selection {
    /// Every selection, in the order the purge runs them.
    pub const ALL: [Self; 4] = [Self::Calls, Self::FinishedEvents, Self::Diagnostics, Self::Alerts];

    /// The table it selects from.
    pub fn table(self) -> &'static str {
        match self {
            Self::Calls => "calls",
            Self::FinishedEvents => "outbox_events",
            Self::Diagnostics => "diagnostics",
            Self::Alerts => "alerts",
        }
    }

    /// The index it is meant to use.
    pub fn index(self) -> &'static str {
        match self {
            Self::Calls => "idx_calls_created",
            Self::FinishedEvents => "idx_outbox_finished_created",
            Self::Diagnostics => "idx_diagnostics_last_seen",
            Self::Alerts => "idx_alerts_created",
        }
    }

    /// `SELECT id ... LIMIT limit`, as the batch runs it.
    pub fn sql(self, limit: u64) -> String {
        let condition = match self {
            Self::Calls => "created_at < $1 ORDER BY created_at".to_owned(),
            Self::FinishedEvents => format!(
                "status <> '{}' AND created_at < $1 ORDER BY created_at",
                OutboxStatus::Pending.as_str()
            ),
            Self::Diagnostics => "last_seen < $1".to_owned(),
            Self::Alerts => "created_at < $1".to_owned(),
        };
        format!("SELECT id FROM {} WHERE {condition} LIMIT {limit}", self.table())
    }
}

/// What one batch of old calls deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallBatch {
    pub calls: u64,
    pub call_webhooks: u64,
    pub media_sessions: u64,
}

/// Deletes up to `limit` calls created before `cutoff`, oldest first, with their stored
/// answers and media sessions, in one transaction.
pub async fn delete_calls_before<C>(db: &C, cutoff: DateTime<Utc>, limit: u64) -> Result<CallBatch, DbErr>
where
    C: TransactionTrait,
{
    let txn = db.begin().await?;
    let backend = txn.get_database_backend();
    let ids: Vec<String> = txn
        .query_all(Statement::from_sql_and_values(
            backend,
            Selection::Calls.sql(limit),
            [cutoff.into()],
        ))
        .await?
        .iter()
        .map(|row| row.try_get_by_index::<String>(0))
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        txn.rollback().await?;
        return Ok(CallBatch::default());
    }
    let call_webhooks = call_webhook::Entity::delete_many()
        .filter(call_webhook::Column::CallId.is_in(ids.iter().map(String::as_str)))
        .exec(&txn)
        .await?
        .rows_affected;
    let media_sessions = media_session::Entity::delete_many()
        .filter(media_session::Column::CallId.is_in(ids.iter().map(String::as_str)))
        .exec(&txn)
        .await?
        .rows_affected;
    let calls = call::Entity::delete_many()
        .filter(call::Column::Id.is_in(ids))
        .exec(&txn)
        .await?
        .rows_affected;
    txn.commit().await?;
    Ok(CallBatch {
        calls,
        call_webhooks,
        media_sessions,
    })
}

/// Deletes up to `limit` rows of `selection` (not [`Selection::Calls`], which
/// [`delete_calls_before`] deletes with what belongs to them) at `cutoff`, in one statement.
pub async fn delete_before<C: ConnectionTrait>(
    db: &C,
    selection: Selection,
    cutoff: DateTime<Utc>,
    limit: u64,
) -> Result<u64, DbErr> {
    debug_assert_ne!(selection, Selection::Calls, "calls are deleted with their rows");
    let sql = format!(
        "DELETE FROM {table} WHERE id IN ({select})",
        table = selection.table(),
        select = selection.sql(limit)
    );
    let stmt = Statement::from_sql_and_values(db.get_database_backend(), sql, [cutoff.into()]);
    Ok(db.execute(stmt).await?.rows_affected())
}

/// On SQLite with incremental auto-vacuum, gives the pages on the free list back to the file
/// system (the file shrinks); without it, and on PostgreSQL (whose autovacuum reuses space),
/// nothing.
pub async fn release_free_pages<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    if db.get_database_backend() == DbBackend::Sqlite {
        db.execute_unprepared("PRAGMA incremental_vacuum").await?;
    }
    Ok(())
}

/// SQLite's `auto_vacuum` mode of the database: how freed pages are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoVacuum {
    /// Freed pages are reused but the file never shrinks (databases created before the service
    /// set incremental mode).
    None,
    /// Every commit shrinks the file.
    Full,
    /// `PRAGMA incremental_vacuum` shrinks the file (what the service creates).
    Incremental,
}

/// The `auto_vacuum` mode of an SQLite database; `None` on PostgreSQL.
pub async fn sqlite_auto_vacuum<C: ConnectionTrait>(db: &C) -> Result<Option<AutoVacuum>, DbErr> {
    if db.get_database_backend() != DbBackend::Sqlite {
        return Ok(None);
    }
    let row = db
        .query_one(Statement::from_string(DbBackend::Sqlite, "PRAGMA auto_vacuum"))
        .await?
        .ok_or_else(|| DbErr::Custom("PRAGMA auto_vacuum returned no row".to_owned()))?;
    Ok(Some(match row.try_get_by_index::<i64>(0)? {
        1 => AutoVacuum::Full,
        2 => AutoVacuum::Incremental,
        _ => AutoVacuum::None,
    }))
}
