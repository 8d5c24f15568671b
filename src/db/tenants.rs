//! Tenants. Their secrets are encrypted on the way in and decrypted on the way out with the
//! key ring passed in ([`super::tenant_secrets`]): callers see plaintext, the database holds
//! ciphertext.
use chrono::Utc;
use entity::tenant;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter,
};

use super::{
    tenant_secrets::{open, seal},
    Page, Scope,
};
use crate::secrets::Keyring;

/// Inserts a tenant, its secrets encrypted.
pub async fn insert<C: ConnectionTrait>(
    db: &C,
    keys: &Keyring,
    mut model: tenant::ActiveModel,
) -> Result<tenant::Model, DbErr> {
    seal(keys, &mut model)?;
    open(keys, model.insert(db).await?)
}

/// Finds a tenant by id.
pub async fn get<C: ConnectionTrait>(
    db: &C,
    keys: &Keyring,
    id: &str,
) -> Result<Option<tenant::Model>, DbErr> {
    tenant::Entity::find_by_id(id.to_owned())
        .one(db)
        .await?
        .map(|t| open(keys, t))
        .transpose()
}

/// Whether a tenant with this id exists (nothing decrypted).
pub async fn exists<C: ConnectionTrait>(db: &C, id: &str) -> Result<bool, DbErr> {
    Ok(tenant::Entity::find_by_id(id.to_owned()).count(db).await? > 0)
}

/// The tenants with these ids that exist.
pub async fn by_ids<'a, C: ConnectionTrait>(
    db: &C,
    keys: &Keyring,
    ids: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<tenant::Model>, DbErr> {
    tenant::Entity::find()
        .filter(tenant::Column::Id.is_in(ids))
        .all(db)
        .await?
        .into_iter()
        .map(|t| open(keys, t))
        .collect()
}

/// Finds a tenant by its Twilio account SID.
pub async fn by_account_sid<C: ConnectionTrait>(
    db: &C,
    keys: &Keyring,
    account_sid: &str,
) -> Result<Option<tenant::Model>, DbErr> {
    tenant::Entity::find()
        .filter(tenant::Column::AccountSid.eq(account_sid))
        .one(db)
        .await?
        .map(|t| open(keys, t))
        .transpose()
}

/// Lists tenants, oldest first.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    keys: &Keyring,
    cursor: Option<&str>,
    limit: u64,
) -> Result<Page<tenant::Model>, DbErr> {
    let page = super::page(
        db,
        tenant::Entity::find(),
        tenant::Column::Id,
        cursor,
        limit,
        false,
        |m| &m.id,
    )
    .await?;
    Ok(Page {
        items: page
            .items
            .into_iter()
            .map(|t| open(keys, t))
            .collect::<Result<_, _>>()?,
        next_cursor: page.next_cursor,
    })
}

/// Saves changed fields (secrets encrypted) and bumps `updated_at`.
pub async fn update<C: ConnectionTrait>(
    db: &C,
    keys: &Keyring,
    mut model: tenant::ActiveModel,
) -> Result<tenant::Model, DbErr> {
    model.updated_at = sea_orm::Set(Utc::now());
    seal(keys, &mut model)?;
    open(keys, model.update(db).await?)
}

/// Deletes a tenant with its routes and calls; false when there was none.
pub async fn delete<C: ConnectionTrait>(db: &C, id: &str) -> Result<bool, DbErr> {
    Ok(tenant::Entity::delete_by_id(id.to_owned())
        .exec(db)
        .await?
        .rows_affected
        > 0)
}

/// A tenant in `scope` by id: through [`get`], so it reads the record as `get` does.
pub async fn get_in<C: ConnectionTrait>(
    db: &C,
    keys: &Keyring,
    scope: &Scope,
    id: &str,
) -> Result<Option<tenant::Model>, DbErr> {
    if !scope.includes(id) {
        return Ok(None);
    }
    get(db, keys, id).await
}

/// Lists the tenants in `scope`, oldest first: through [`list`] for the platform, the one
/// tenant through [`get`].
pub async fn list_in<C: ConnectionTrait>(
    db: &C,
    keys: &Keyring,
    scope: &Scope,
    cursor: Option<&str>,
    limit: u64,
) -> Result<Page<tenant::Model>, DbErr> {
    let Some(id) = scope.tenant() else {
        return list(db, keys, cursor, limit).await;
    };
    let items = match cursor {
        Some(after) if after >= id.as_str() => Vec::new(),
        _ => get(db, keys, id.as_str()).await?.into_iter().collect(),
    };
    Ok(Page {
        items,
        next_cursor: None,
    })
}
