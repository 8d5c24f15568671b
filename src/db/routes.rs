//! Phone routes.
use chrono::Utc;
use entity::{route, tenant};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::{tenant_secrets::open, Page, Scope};
use crate::secrets::Keyring;

/// Inserts a route.
pub async fn insert<C: ConnectionTrait>(db: &C, model: route::ActiveModel) -> Result<route::Model, DbErr> {
    model.insert(db).await
}

/// Finds a route by id.
pub async fn get<C: ConnectionTrait>(db: &C, id: &str) -> Result<Option<route::Model>, DbErr> {
    route::Entity::find_by_id(id.to_owned()).one(db).await
}

/// A route and its tenant as read, the tenant's secrets decrypted.
fn opened(
    keys: &Keyring,
    found: Option<(route::Model, Option<tenant::Model>)>,
) -> Result<Option<(route::Model, tenant::Model)>, DbErr> {
    match found {
        Some((r, Some(t))) => Ok(Some((r, open(keys, t)?))),
        _ => Ok(None),
    }
}

/// The route for a normalised called number, with its tenant: the hot-path lookup (on a miss
/// of the route cache).
pub async fn with_tenant_by_number<C: ConnectionTrait>(
    db: &C,
    keys: &Keyring,
    phone_number: &str,
) -> Result<Option<(route::Model, tenant::Model)>, DbErr> {
    let found = route::Entity::find()
        .filter(route::Column::PhoneNumber.eq(phone_number))
        .find_also_related(tenant::Entity)
        .one(db)
        .await?;
    opened(keys, found)
}

/// A route by id, with its tenant.
pub async fn with_tenant_by_id<C: ConnectionTrait>(
    db: &C,
    keys: &Keyring,
    id: &str,
) -> Result<Option<(route::Model, tenant::Model)>, DbErr> {
    let found = route::Entity::find_by_id(id.to_owned())
        .find_also_related(tenant::Entity)
        .one(db)
        .await?;
    opened(keys, found)
}

/// A page of routes with their tenants, by id after `after`, and the cursor of the next page:
/// the last known configuration is read this way.
pub async fn with_tenants_after<C: ConnectionTrait>(
    db: &C,
    keys: &Keyring,
    after: Option<&str>,
    limit: u64,
) -> Result<Page<(route::Model, tenant::Model)>, DbErr> {
    let mut select = route::Entity::find().order_by_asc(route::Column::Id);
    if let Some(after) = after {
        select = select.filter(route::Column::Id.gt(after));
    }
    let rows = select
        .find_also_related(tenant::Entity)
        .limit(limit)
        .all(db)
        .await?;
    let next_cursor = (rows.len() as u64 == limit)
        .then(|| rows.last().map(|(r, _)| r.id.clone()))
        .flatten();
    let items = rows
        .into_iter()
        .filter_map(|(r, t)| Some((r, open(keys, t?))))
        .map(|(r, t)| Ok((r, t?)))
        .collect::<Result<_, DbErr>>()?;
    Ok(Page { items, next_cursor })
}

/// A route in `scope` by id.
pub async fn get_in<C: ConnectionTrait>(
    db: &C,
    scope: &Scope,
    id: &str,
) -> Result<Option<route::Model>, DbErr> {
    let select = route::Entity::find_by_id(id.to_owned());
    scope.filter(select, route::Column::TenantId).one(db).await
}

/// Lists the routes in `scope`, oldest first.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    scope: &Scope,
    cursor: Option<&str>,
    limit: u64,
) -> Result<Page<route::Model>, DbErr> {
    let select = scope.filter(route::Entity::find(), route::Column::TenantId);
    super::page(db, select, route::Column::Id, cursor, limit, false, |m| &m.id).await
}

/// Saves changed fields and bumps `updated_at`.
pub async fn update<C: ConnectionTrait>(
    db: &C,
    mut model: route::ActiveModel,
) -> Result<route::Model, DbErr> {
    model.updated_at = sea_orm::Set(Utc::now());
    model.update(db).await
}

/// Deletes a route in `scope`; false when there was none.
pub async fn delete<C: ConnectionTrait>(db: &C, scope: &Scope, id: &str) -> Result<bool, DbErr> {
    let delete = route::Entity::delete_by_id(id.to_owned());
    Ok(scope
        .filter(delete, route::Column::TenantId)
        .exec(db)
        .await?
        .rows_affected
        > 0)
}
