//! The outbox: events written with the state they describe, delivered later.
use chrono::Utc;
use entity::outbox_event;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set};
use serde_json::{json, Value};

use super::Page;
use crate::domain::phone::new_id;

/// Records an event of `event_type` for a tenant. The delivered body follows the Standard
/// Webhooks shape: `{"type", "timestamp", "data"}`.
pub async fn record<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    event_type: &str,
    data: Value,
) -> Result<outbox_event::Model, DbErr> {
    let now = Utc::now();
    let payload = json!({
        "type": event_type,
        "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    });
    outbox_event::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(tenant_id.to_owned()),
        event_type: Set(event_type.to_owned()),
        payload: Set(payload.to_string()),
        status: Set("pending".to_owned()),
        attempts: Set(0),
        next_attempt_at: Set(now),
        last_error: Set(None),
        created_at: Set(now),
        delivered_at: Set(None),
    }
    .insert(db)
    .await
}

/// Lists events, newest first, of one tenant or of all.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    tenant_id: Option<&str>,
    cursor: Option<&str>,
    limit: u64,
) -> Result<Page<outbox_event::Model>, DbErr> {
    let mut select = outbox_event::Entity::find();
    if let Some(tenant_id) = tenant_id {
        select = select.filter(outbox_event::Column::TenantId.eq(tenant_id));
    }
    super::page(db, select, outbox_event::Column::Id, cursor, limit, true, |m| {
        &m.id
    })
    .await
}
