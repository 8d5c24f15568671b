//! Raised alerts.
use chrono::{DateTime, Utc};
use entity::alert;
use sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, EntityTrait, Set};

use super::{Page, Scope};
use entity::{id::new_id, states::DiagnosticKind};

/// What an alert is about.
pub struct NewAlert<'a> {
    pub tenant_id: Option<&'a str>,
    pub route_id: Option<&'a str>,
    pub kind: DiagnosticKind,
    pub message: String,
    pub failure_count: i64,
    pub window_start: DateTime<Utc>,
}

/// Inserts an alert.
pub async fn insert<C: ConnectionTrait>(db: &C, new: NewAlert<'_>) -> Result<alert::Model, DbErr> {
    alert::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(new.tenant_id.map(str::to_owned)),
        route_id: Set(new.route_id.map(str::to_owned)),
        kind: Set(new.kind),
        message: Set(new.message),
        failure_count: Set(new.failure_count),
        window_start: Set(new.window_start),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await
}

/// Lists the alerts in `scope`, newest first (of no tenant: only the platform's).
pub async fn list<C: ConnectionTrait>(
    db: &C,
    scope: &Scope,
    cursor: Option<&str>,
    limit: u64,
) -> Result<Page<alert::Model>, DbErr> {
    let select = scope.filter(alert::Entity::find(), alert::Column::TenantId);
    super::page(db, select, alert::Column::Id, cursor, limit, true, |m| &m.id).await
}
