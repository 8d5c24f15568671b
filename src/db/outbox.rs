//! The outbox: events written with the state they describe, delivered later.
use chrono::Utc;
use entity::outbox_event;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel, QueryFilter,
};
use serde_json::{json, Value};

use super::Page;
use entity::{
    id::new_id,
    states::{EventType, OutboxStatus},
};

/// Records an event of `event_type` for a tenant.
pub async fn record<C: ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    event_type: EventType,
    data: Value,
) -> Result<outbox_event::Model, DbErr> {
    event(tenant_id, event_type, data)
        .into_active_model()
        .insert(db)
        .await
}

/// A pending event of `event_type` for a tenant, not yet stored. The delivered body follows
/// the Standard Webhooks shape: `{"type", "timestamp", "data"}`.
pub fn event(tenant_id: &str, event_type: EventType, data: Value) -> outbox_event::Model {
    let now = Utc::now();
    let payload = json!({
        "type": event_type,
        "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    });
    outbox_event::Model {
        id: new_id(),
        tenant_id: tenant_id.to_owned(),
        event_type,
        payload: payload.to_string(),
        status: OutboxStatus::Pending,
        attempts: 0,
        next_attempt_at: now,
        last_error: None,
        created_at: now,
        delivered_at: None,
    }
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
