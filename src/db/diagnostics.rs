//! Aggregated diagnostics: one row per (kind, key) holding counts and a tumbling window.
use chrono::{DateTime, Utc};
use entity::{diagnostic, states::DiagnosticKind};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, Statement, Value,
};

use super::{Page, Scope};
use entity::id::new_id;

/// The key that absorbs new keys of a kind once it holds `max_keys` rows.
pub const OVERFLOW_KEY: &str = "(other)";

/// One (kind, key) row to count occurrences on.
pub struct DiagnosticRow<'a> {
    pub kind: DiagnosticKind,
    pub key: &'a str,
    pub tenant_id: Option<&'a str>,
    pub route_id: Option<&'a str>,
    pub detail: Option<String>,
}

/// Counts after an occurrence was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub total: i64,
    /// Occurrences in the current window, this one included.
    pub in_window: i64,
    pub window_start: DateTime<Utc>,
}

/// Records `n` occurrences atomically (one upsert), restarting the window when the current one
/// began more than `window` ago.
pub async fn record<C: ConnectionTrait>(
    db: &C,
    occurrence: &DiagnosticRow<'_>,
    n: i64,
    window: std::time::Duration,
) -> Result<Counts, DbErr> {
    let now = Utc::now();
    let cutoff = now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let sql = "INSERT INTO diagnostics \
        (id, kind, key, tenant_id, route_id, detail, count, first_seen, last_seen, window_start, window_count) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8, $7) \
        ON CONFLICT (kind, key) DO UPDATE SET \
        count = diagnostics.count + excluded.count, \
        last_seen = excluded.last_seen, \
        detail = COALESCE(excluded.detail, diagnostics.detail), \
        window_count = CASE WHEN diagnostics.window_start <= $9 THEN excluded.count ELSE diagnostics.window_count + excluded.count END, \
        window_start = CASE WHEN diagnostics.window_start <= $9 THEN excluded.window_start ELSE diagnostics.window_start END \
        RETURNING count, window_count, window_start";
    let values: Vec<Value> = vec![
        new_id().into(),
        occurrence.kind.into(),
        occurrence.key.into(),
        occurrence.tenant_id.map(str::to_owned).into(),
        occurrence.route_id.map(str::to_owned).into(),
        occurrence.detail.clone().into(),
        n.into(),
        now.into(),
        cutoff.into(),
    ];
    let row = db
        .query_one(Statement::from_sql_and_values(
            db.get_database_backend(),
            sql,
            values,
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("diagnostic upsert returned no row".to_owned()))?;
    Ok(Counts {
        total: row.try_get("", "count")?,
        in_window: row.try_get("", "window_count")?,
        window_start: row.try_get("", "window_start")?,
    })
}

/// Records `n` occurrences of a kind whose keys come from untrusted input: once the kind holds
/// `max_keys` rows, new keys are counted under [`OVERFLOW_KEY`], so storage stays bounded.
pub async fn record_bounded<C: ConnectionTrait>(
    db: &C,
    occurrence: &DiagnosticRow<'_>,
    n: i64,
    window: std::time::Duration,
    max_keys: u64,
) -> Result<Counts, DbErr> {
    let exists = diagnostic::Entity::find()
        .filter(diagnostic::Column::Kind.eq(occurrence.kind))
        .filter(diagnostic::Column::Key.eq(occurrence.key))
        .count(db)
        .await?
        > 0;
    if !exists {
        let keys = diagnostic::Entity::find()
            .filter(diagnostic::Column::Kind.eq(occurrence.kind))
            .count(db)
            .await?;
        if keys >= max_keys {
            let overflow = DiagnosticRow {
                key: OVERFLOW_KEY,
                detail: None,
                ..*occurrence
            };
            return record(db, &overflow, n, window).await;
        }
    }
    record(db, occurrence, n, window).await
}

/// Lists the diagnostics in `scope` (of no tenant: only the platform's), newest first,
/// optionally of one kind.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    scope: &Scope,
    kind: Option<DiagnosticKind>,
    cursor: Option<&str>,
    limit: u64,
) -> Result<Page<diagnostic::Model>, DbErr> {
    let mut select = scope.filter(diagnostic::Entity::find(), diagnostic::Column::TenantId);
    if let Some(kind) = kind {
        select = select.filter(diagnostic::Column::Kind.eq(kind));
    }
    super::page(db, select, diagnostic::Column::Id, cursor, limit, true, |m| &m.id).await
}
