//! Tenant API keys: stored by the hash of the key, listed and revoked per tenant.
use chrono::{DateTime, Utc};
use entity::{
    api_key,
    id::{ApiKeyId, TenantId},
};
use sea_orm::{
    sea_query::Expr, ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait,
    QueryFilter,
};

use super::Page;

/// Inserts a key.
pub async fn insert<C: ConnectionTrait>(
    db: &C,
    model: api_key::ActiveModel,
) -> Result<api_key::Model, DbErr> {
    model.insert(db).await
}

/// The key that is not revoked with this hash.
pub async fn live_by_hash<C: ConnectionTrait>(
    db: &C,
    key_hash: &str,
) -> Result<Option<api_key::Model>, DbErr> {
    api_key::Entity::find()
        .filter(api_key::Column::KeyHash.eq(key_hash))
        .filter(api_key::Column::RevokedAt.is_null())
        .one(db)
        .await
}

/// Lists a tenant's keys that are not revoked, oldest first.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    tenant_id: &TenantId,
    cursor: Option<&str>,
    limit: u64,
) -> Result<Page<api_key::Model>, DbErr> {
    let select = api_key::Entity::find()
        .filter(api_key::Column::TenantId.eq(tenant_id.as_str()))
        .filter(api_key::Column::RevokedAt.is_null());
    super::page(db, select, api_key::Column::Id, cursor, limit, false, |m| &m.id).await
}

/// Revokes a tenant's key at `now`; false when the tenant has no such key, or it was revoked.
pub async fn revoke<C: ConnectionTrait>(
    db: &C,
    tenant_id: &TenantId,
    id: &ApiKeyId,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let result = api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(Some(now)))
        .filter(api_key::Column::Id.eq(id.as_str()))
        .filter(api_key::Column::TenantId.eq(tenant_id.as_str()))
        .filter(api_key::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected > 0)
}

/// Sets a key's `last_used_at` to `now` unless it is already later than `stale_before`, so that
/// instances sharing the database write it at most once per interval.
pub async fn touch<C: ConnectionTrait>(
    db: &C,
    id: &ApiKeyId,
    now: DateTime<Utc>,
    stale_before: DateTime<Utc>,
) -> Result<(), DbErr> {
    api_key::Entity::update_many()
        .col_expr(api_key::Column::LastUsedAt, Expr::value(Some(now)))
        .filter(api_key::Column::Id.eq(id.as_str()))
        .filter(
            Condition::any()
                .add(api_key::Column::LastUsedAt.is_null())
                .add(api_key::Column::LastUsedAt.lt(stale_before)),
        )
        .exec(db)
        .await?;
    Ok(())
}
