//! Tenant secrets at the database boundary. The four credential columns (`auth_token`,
//! `secondary_auth_token`, `shared_key`, `webhook_secret`) are encrypted under the key ring's
//! current key on the way in ([`seal`]) and decrypted on the way out ([`open`]), each value
//! bound to its row and column (`tenants/<id>/<column>`), so queries hand out plaintext and the
//! database holds ciphertext. Without a current key values are stored as they are.
//!
//! Also the upkeep of stored values: which keys they need ([`scan`]) and moving them to the
//! current key, page by page ([`reseal_page`]).
use std::collections::BTreeMap;

use entity::tenant;
use sea_orm::{
    sea_query::{Expr, IntoCondition},
    ActiveValue, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use crate::secrets::{self, Keyring};

/// The secret columns, by name.
const COLUMNS: [&str; 4] = [
    "auth_token",
    "secondary_auth_token",
    "shared_key",
    "webhook_secret",
];

/// Where a tenant's secret value lives: the additional authenticated data of its ciphertext.
fn place(id: &str, column: &str) -> String {
    format!("tenants/{id}/{column}")
}

/// The database error of a stored value the ring cannot open; names the tenant, the column and
/// the key, never the value.
fn unreadable(id: &str, column: &str, err: secrets::Error) -> DbErr {
    DbErr::Custom(format!("tenant {id}: {column} {err}"))
}

fn open_one(keys: &Keyring, id: &str, column: &str, stored: String) -> Result<String, DbErr> {
    match keys.open(&stored, &place(id, column)) {
        Ok(std::borrow::Cow::Borrowed(_)) => Ok(stored),
        Ok(std::borrow::Cow::Owned(plain)) => Ok(plain),
        Err(e) => Err(unreadable(id, column, e)),
    }
}

/// A tenant as read from the database, with its secrets decrypted.
pub(super) fn open(keys: &Keyring, mut model: tenant::Model) -> Result<tenant::Model, DbErr> {
    let id = model.id.clone();
    let [auth, secondary, shared, webhook] = COLUMNS;
    model.auth_token = open_one(keys, &id, auth, std::mem::take(&mut model.auth_token))?;
    model.secondary_auth_token = model
        .secondary_auth_token
        .take()
        .map(|v| open_one(keys, &id, secondary, v))
        .transpose()?;
    model.shared_key = model
        .shared_key
        .take()
        .map(|v| open_one(keys, &id, shared, v))
        .transpose()?;
    model.webhook_secret = open_one(keys, &id, webhook, std::mem::take(&mut model.webhook_secret))?;
    Ok(model)
}

/// Encrypts the secret fields `model` sets (an insert's, or an update's changes). The row's
/// id must be set or unchanged: values are bound to it.
pub(super) fn seal(keys: &Keyring, model: &mut tenant::ActiveModel) -> Result<(), DbErr> {
    if keys.current_id().is_none() {
        return Ok(());
    }
    let id = match &model.id {
        ActiveValue::Set(id) | ActiveValue::Unchanged(id) => id.clone(),
        ActiveValue::NotSet => {
            return Err(DbErr::Custom(
                "a tenant's secrets are bound to its id, which is not set".to_owned(),
            ))
        }
    };
    let [auth, secondary, shared, webhook] = COLUMNS;
    let sealed = |column: &str, plain: &str| keys.seal(plain, &place(&id, column)).into_owned();
    if let ActiveValue::Set(v) = &model.auth_token {
        model.auth_token = ActiveValue::Set(sealed(auth, v));
    }
    if let ActiveValue::Set(Some(v)) = &model.secondary_auth_token {
        model.secondary_auth_token = ActiveValue::Set(Some(sealed(secondary, v)));
    }
    if let ActiveValue::Set(Some(v)) = &model.shared_key {
        model.shared_key = ActiveValue::Set(Some(sealed(shared, v)));
    }
    if let ActiveValue::Set(v) = &model.webhook_secret {
        model.webhook_secret = ActiveValue::Set(sealed(webhook, v));
    }
    Ok(())
}

/// The stored secrets of one tenant, as they are in the database.
type StoredRow = (String, String, Option<String>, Option<String>, String);

/// A page of stored rows by id after `after`.
async fn stored_page<C: ConnectionTrait>(
    db: &C,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<StoredRow>, DbErr> {
    let mut select = tenant::Entity::find()
        .select_only()
        .columns([
            tenant::Column::Id,
            tenant::Column::AuthToken,
            tenant::Column::SecondaryAuthToken,
            tenant::Column::SharedKey,
            tenant::Column::WebhookSecret,
        ])
        .order_by_asc(tenant::Column::Id);
    if let Some(after) = after {
        select = select.filter(tenant::Column::Id.gt(after));
    }
    select.limit(limit).into_tuple::<StoredRow>().all(db).await
}

/// The values of a stored row, in [`COLUMNS`] order.
fn values(row: &StoredRow) -> [Option<&str>; 4] {
    [
        Some(row.1.as_str()),
        row.2.as_deref(),
        row.3.as_deref(),
        Some(row.4.as_str()),
    ]
}

/// Rows read per page when scanning or re-encrypting.
pub const PAGE: u64 = 200;

/// How the stored tenant secrets are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredSecrets {
    /// Tenants.
    pub rows: u64,
    /// Tenants with at least one value in clear.
    pub rows_in_clear: u64,
    /// Encrypted values per key id.
    pub values_by_key: BTreeMap<String, u64>,
}

/// Reads how every tenant's secrets are stored (no value is decrypted).
pub async fn scan<C: ConnectionTrait>(db: &C) -> Result<StoredSecrets, DbErr> {
    let mut stored = StoredSecrets::default();
    let mut after: Option<String> = None;
    loop {
        let rows = stored_page(db, after.as_deref(), PAGE).await?;
        for row in &rows {
            stored.rows += 1;
            let mut in_clear = false;
            for value in values(row).into_iter().flatten() {
                match secrets::key_id(value) {
                    Some(id) => *stored.values_by_key.entry(id.to_owned()).or_default() += 1,
                    None => in_clear = true,
                }
            }
            stored.rows_in_clear += u64::from(in_clear);
        }
        match rows.last() {
            Some(last) if rows.len() as u64 == PAGE => after = Some(last.0.clone()),
            _ => return Ok(stored),
        }
    }
}

/// Which stored values [`reseal_page`] re-encrypts under the current key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reseal {
    /// Only values in clear (at start).
    InClear,
    /// Every value not under the current key: in clear or under the previous key (a rotation).
    NotCurrent,
}

/// Re-encrypts the values `which` selects of the page of tenants after `after` under the
/// current key. Each row is written only if it still holds what was read (a concurrent change
/// or another instance doing the same wins, and is not counted). Returns the rows changed and
/// the cursor of the next page (`None` after the last).
pub async fn reseal_page<C: ConnectionTrait>(
    db: &C,
    keys: &Keyring,
    which: Reseal,
    after: Option<&str>,
    limit: u64,
) -> Result<(u64, Option<String>), DbErr> {
    let rows = stored_page(db, after, limit).await?;
    let mut changed = 0;
    for row in &rows {
        let old = values(row);
        let mut new: [Option<String>; 4] = Default::default();
        for (i, value) in old.iter().enumerate() {
            let Some(value) = value else { continue };
            if which == Reseal::InClear && secrets::is_encrypted(value) {
                continue;
            }
            new[i] = keys
                .reseal(value, &place(&row.0, COLUMNS[i]))
                .map_err(|e| unreadable(&row.0, COLUMNS[i], e))?;
        }
        if new.iter().all(Option::is_none) {
            continue;
        }
        let column = |i: usize| match i {
            0 => tenant::Column::AuthToken,
            1 => tenant::Column::SecondaryAuthToken,
            2 => tenant::Column::SharedKey,
            _ => tenant::Column::WebhookSecret,
        };
        let mut update = tenant::Entity::update_many().filter(tenant::Column::Id.eq(row.0.as_str()));
        for (i, value) in old.iter().enumerate() {
            update = update.filter(match value {
                Some(v) => column(i).eq(*v).into_condition(),
                None => column(i).is_null().into_condition(),
            });
            if let Some(sealed) = &new[i] {
                update = update.col_expr(column(i), Expr::value(sealed.clone()));
            }
        }
        changed += update.exec(db).await?.rows_affected;
    }
    let next = (rows.len() as u64 == limit)
        .then(|| rows.last().map(|r| r.0.clone()))
        .flatten();
    Ok((changed, next))
}
