//! What the admin API does: tenant and route administration (validation, normalisation, secret
//! generation) and the lookups behind its list and get operations.
use base64::{engine::general_purpose::STANDARD, Engine as _};
use chrono::Utc;
use entity::{
    alert, call, diagnostic,
    id::new_id,
    media_session, outbox_event, route,
    states::{DiagnosticKind, RouteEnvironment, TenantEnvironment},
    tenant,
};
use sea_orm::{ConnectionTrait, DbErr, IntoActiveModel, Set};

use super::{
    fallback::FallbackAction,
    input,
    phone::{is_sid, E164},
    Error,
};
use crate::{
    db::{self, Page, Scope},
    secrets::{self, Keyring},
};

/// Input of a new tenant.
#[derive(Debug, Default)]
pub struct NewTenant {
    pub name: String,
    pub account_sid: String,
    pub auth_token: String,
    pub secondary_auth_token: Option<String>,
    pub shared_key: Option<String>,
    pub environment: Option<TenantEnvironment>,
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<String>,
    pub default_fallback: Option<FallbackAction>,
}

/// Changes to a tenant; `Some(None)` clears a nullable field.
#[derive(Debug, Default)]
pub struct TenantChanges {
    pub name: Option<String>,
    pub auth_token: Option<String>,
    pub secondary_auth_token: Option<Option<String>>,
    pub shared_key: Option<Option<String>>,
    pub environment: Option<TenantEnvironment>,
    pub webhook_url: Option<Option<String>>,
    pub webhook_secret: Option<String>,
    pub default_fallback: Option<Option<FallbackAction>>,
}

/// A created tenant and, when the service generated it, its webhook secret (shown once).
#[derive(Debug)]
pub struct CreatedTenant {
    pub tenant: tenant::Model,
    pub generated_webhook_secret: Option<String>,
}

/// Input of a new route.
#[derive(Debug, Default)]
pub struct NewRoute {
    pub phone_number: String,
    pub label: Option<String>,
    pub environment: Option<RouteEnvironment>,
    pub enabled: Option<bool>,
    pub fallback: Option<FallbackAction>,
    pub agent_url: Option<String>,
    pub agent_health_url: Option<String>,
}

/// Changes to a route; `Some(None)` clears a nullable field.
#[derive(Debug, Default)]
pub struct RouteChanges {
    pub phone_number: Option<String>,
    pub label: Option<Option<String>>,
    pub environment: Option<RouteEnvironment>,
    pub enabled: Option<bool>,
    pub fallback: Option<Option<FallbackAction>>,
    pub agent_url: Option<Option<String>>,
    pub agent_health_url: Option<Option<String>>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::Invalid(message.into())
}

fn text(field: &str, value: String, max: usize) -> Result<String, Error> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.chars().count() > max || trimmed.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{field} must be 1 to {max} printable characters"
        )));
    }
    Ok(trimmed.to_owned())
}

/// Checks an auth token or shared key ([`input::SECRET`] declares the same).
pub(super) fn secret(field: &str, value: String) -> Result<String, Error> {
    if value.is_empty()
        || value.chars().count() > 256
        || value.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(invalid(format!(
            "{field} must be 1 to 256 characters without spaces"
        )));
    }
    if value.starts_with(secrets::PREFIX) {
        return Err(invalid(format!(
            "{field} must not start with {}, the stored form of encrypted values",
            secrets::PREFIX
        )));
    }
    Ok(value)
}

/// Checks a URL against its [`input`] rule (the shape the API declares), then parses it.
fn url_with_scheme(field: &str, value: String, rule: &input::Rule) -> Result<String, Error> {
    // The parser drops or escapes control characters, but the value is stored as given.
    if value.chars().any(char::is_control) {
        return Err(invalid(format!("{field} must not contain control characters")));
    }
    if !rule.accepts(&value) {
        return Err(invalid(format!(
            "{field} must be an absolute URL of the documented scheme, with a host name or IPv4 \
             address, an optional port and no user info"
        )));
    }
    let parsed = url::Url::parse(&value).map_err(|e| invalid(format!("{field}: {e}")))?;
    if parsed.host_str().is_none() {
        return Err(invalid(format!("{field} must be an absolute URL")));
    }
    Ok(value)
}

fn fallback(action: FallbackAction) -> Result<String, Error> {
    Ok(action
        .validated()
        .map_err(|e| invalid(format!("fallback: {e}")))?
        .to_json())
}

/// Checks a Standard Webhooks secret: `whsec_` + standard base64 of at least 24 bytes.
pub fn check_webhook_secret(value: &str) -> Result<(), Error> {
    let bytes = value
        .strip_prefix("whsec_")
        .and_then(|b64| STANDARD.decode(b64).ok())
        .ok_or_else(|| invalid("webhook_secret must be whsec_ followed by standard base64"))?;
    if bytes.len() < 24 {
        return Err(invalid("webhook_secret must encode at least 24 bytes"));
    }
    Ok(())
}

/// The HMAC key of a webhook secret: the bytes the base64 after `whsec_` encodes.
pub fn webhook_secret_key(secret: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()
}

/// A new random webhook secret (32 bytes).
pub fn generate_webhook_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    format!("whsec_{}", STANDARD.encode(bytes))
}

fn conflict_or(err: DbErr, message: &str) -> Error {
    if db::is_unique_violation(&err) {
        Error::Conflict(message.to_owned())
    } else {
        Error::Db(err)
    }
}

/// Validates and stores a tenant (its secrets encrypted with `keys`).
pub async fn create_tenant<C: ConnectionTrait>(
    db: &C,
    keys: &Keyring,
    new: NewTenant,
) -> Result<CreatedTenant, Error> {
    if !is_sid(&new.account_sid, "AC") {
        return Err(invalid("account_sid must be AC followed by 32 hex digits"));
    }
    let (webhook_secret, generated) = match new.webhook_secret {
        Some(s) => {
            check_webhook_secret(&s)?;
            (s, None)
        }
        None => {
            let s = generate_webhook_secret();
            (s.clone(), Some(s))
        }
    };
    let now = Utc::now();
    let model = tenant::ActiveModel {
        id: Set(new_id()),
        name: Set(text("name", new.name, 200)?),
        account_sid: Set(new.account_sid),
        auth_token: Set(secret("auth_token", new.auth_token)?),
        secondary_auth_token: Set(new
            .secondary_auth_token
            .map(|s| secret("secondary_auth_token", s))
            .transpose()?),
        shared_key: Set(new.shared_key.map(|s| secret("shared_key", s)).transpose()?),
        environment: Set(new.environment.unwrap_or(TenantEnvironment::Production)),
        webhook_url: Set(new
            .webhook_url
            .map(|u| url_with_scheme("webhook_url", u, &input::HTTP_URL))
            .transpose()?),
        webhook_secret: Set(webhook_secret),
        default_fallback: Set(new.default_fallback.map(fallback).transpose()?),
        created_at: Set(now),
        updated_at: Set(now),
    };
    let tenant = db::tenants::insert(db, keys, model)
        .await
        .map_err(|e| conflict_or(e, "a tenant with this account_sid exists"))?;
    Ok(CreatedTenant {
        tenant,
        generated_webhook_secret: generated,
    })
}

/// Applies changes to a tenant (changed secrets encrypted with `keys`).
pub async fn update_tenant<C: ConnectionTrait>(
    db: &C,
    keys: &Keyring,
    id: &str,
    changes: TenantChanges,
) -> Result<tenant::Model, Error> {
    let existing = db::tenants::get(db, keys, id)
        .await?
        .ok_or(Error::NotFound("tenant"))?;
    let mut model = existing.into_active_model();
    if let Some(name) = changes.name {
        model.name = Set(text("name", name, 200)?);
    }
    if let Some(token) = changes.auth_token {
        model.auth_token = Set(secret("auth_token", token)?);
    }
    if let Some(token) = changes.secondary_auth_token {
        model.secondary_auth_token = Set(token.map(|s| secret("secondary_auth_token", s)).transpose()?);
    }
    if let Some(key) = changes.shared_key {
        model.shared_key = Set(key.map(|s| secret("shared_key", s)).transpose()?);
    }
    if let Some(env) = changes.environment {
        model.environment = Set(env);
    }
    if let Some(url) = changes.webhook_url {
        model.webhook_url = Set(url
            .map(|u| url_with_scheme("webhook_url", u, &input::HTTP_URL))
            .transpose()?);
    }
    if let Some(s) = changes.webhook_secret {
        check_webhook_secret(&s)?;
        model.webhook_secret = Set(s);
    }
    if let Some(action) = changes.default_fallback {
        model.default_fallback = Set(action.map(fallback).transpose()?);
    }
    Ok(db::tenants::update(db, keys, model).await?)
}

/// Validates and stores a route of a tenant in `scope`.
pub async fn create_route<C: ConnectionTrait>(
    db: &C,
    scope: &Scope,
    tenant_id: &str,
    new: NewRoute,
) -> Result<route::Model, Error> {
    let phone_number = E164::parse(&new.phone_number).map_err(Error::Invalid)?;
    if !scope.includes(tenant_id) || !db::tenants::exists(db, tenant_id).await? {
        return Err(Error::NotFound("tenant"));
    }
    let now = Utc::now();
    let model = route::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(tenant_id.to_owned()),
        phone_number: Set(phone_number.as_str().to_owned()),
        label: Set(new.label.map(|l| text("label", l, 200)).transpose()?),
        environment: Set(new.environment.unwrap_or(RouteEnvironment::Production)),
        enabled: Set(new.enabled.unwrap_or(true)),
        fallback: Set(new.fallback.map(fallback).transpose()?),
        agent_url: Set(new
            .agent_url
            .map(|u| url_with_scheme("agent_url", u, &input::WS_URL))
            .transpose()?),
        agent_health_url: Set(new
            .agent_health_url
            .map(|u| url_with_scheme("agent_health_url", u, &input::HTTP_URL))
            .transpose()?),
        created_at: Set(now),
        updated_at: Set(now),
    };
    db::routes::insert(db, model)
        .await
        .map_err(|e| conflict_or(e, "this phone number already has a route"))
}

/// Applies changes to a route in `scope`.
pub async fn update_route<C: ConnectionTrait>(
    db: &C,
    scope: &Scope,
    id: &str,
    changes: RouteChanges,
) -> Result<route::Model, Error> {
    let existing = db::routes::get_in(db, scope, id)
        .await?
        .ok_or(Error::NotFound("route"))?;
    let mut model = existing.into_active_model();
    if let Some(number) = changes.phone_number {
        model.phone_number = Set(E164::parse(&number).map_err(Error::Invalid)?.as_str().to_owned());
    }
    if let Some(label) = changes.label {
        model.label = Set(label.map(|l| text("label", l, 200)).transpose()?);
    }
    if let Some(env) = changes.environment {
        model.environment = Set(env);
    }
    if let Some(enabled) = changes.enabled {
        model.enabled = Set(enabled);
    }
    if let Some(action) = changes.fallback {
        model.fallback = Set(action.map(fallback).transpose()?);
    }
    if let Some(url) = changes.agent_url {
        model.agent_url = Set(url
            .map(|u| url_with_scheme("agent_url", u, &input::WS_URL))
            .transpose()?);
    }
    if let Some(url) = changes.agent_health_url {
        model.agent_health_url = Set(url
            .map(|u| url_with_scheme("agent_health_url", u, &input::HTTP_URL))
            .transpose()?);
    }
    db::routes::update(db, model)
        .await
        .map_err(|e| conflict_or(e, "this phone number already has a route"))
}

/// Which page of a list to read: after `cursor` (the last id of the previous page), at most
/// `limit` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    pub cursor: Option<String>,
    pub limit: u64,
}

/// A call with its media sessions, oldest first.
#[derive(Debug)]
pub struct CallRecord {
    pub call: call::Model,
    pub media_sessions: Vec<media_session::Model>,
}

/// Lists the tenants in `scope`, oldest first.
pub async fn list_tenants<C: ConnectionTrait>(
    db: &C,
    keys: &Keyring,
    scope: &Scope,
    paging: &Paging,
) -> Result<Page<tenant::Model>, Error> {
    Ok(db::tenants::list_in(db, keys, scope, paging.cursor.as_deref(), paging.limit).await?)
}

/// One tenant in `scope`.
pub async fn tenant<C: ConnectionTrait>(
    db: &C,
    keys: &Keyring,
    scope: &Scope,
    id: &str,
) -> Result<tenant::Model, Error> {
    db::tenants::get_in(db, keys, scope, id)
        .await?
        .ok_or(Error::NotFound("tenant"))
}

/// Deletes a tenant with its routes and calls.
pub async fn delete_tenant<C: ConnectionTrait>(db: &C, id: &str) -> Result<(), Error> {
    found(db::tenants::delete(db, id).await?, "tenant")
}

/// Lists the routes in `scope`, oldest first.
pub async fn list_routes<C: ConnectionTrait>(
    db: &C,
    scope: &Scope,
    paging: &Paging,
) -> Result<Page<route::Model>, Error> {
    Ok(db::routes::list(db, scope, paging.cursor.as_deref(), paging.limit).await?)
}

/// One route in `scope`.
pub async fn route<C: ConnectionTrait>(db: &C, scope: &Scope, id: &str) -> Result<route::Model, Error> {
    db::routes::get_in(db, scope, id)
        .await?
        .ok_or(Error::NotFound("route"))
}

/// Deletes a route in `scope`.
pub async fn delete_route<C: ConnectionTrait>(db: &C, scope: &Scope, id: &str) -> Result<(), Error> {
    found(db::routes::delete(db, scope, id).await?, "route")
}

/// Lists the calls in `scope` with their media sessions, newest first.
pub async fn list_calls<C: ConnectionTrait>(
    db: &C,
    scope: &Scope,
    paging: &Paging,
) -> Result<Page<CallRecord>, Error> {
    let page = db::calls::list(db, scope, paging.cursor.as_deref(), paging.limit).await?;
    let ids: Vec<String> = page.items.iter().map(|c| c.id.clone()).collect();
    let mut sessions = db::calls::media_sessions_of(db, &ids).await?;
    let items = page
        .items
        .into_iter()
        .map(|call| CallRecord {
            media_sessions: sessions.remove(&call.id).unwrap_or_default(),
            call,
        })
        .collect();
    Ok(Page {
        items,
        next_cursor: page.next_cursor,
    })
}

/// One call in `scope`, by CallSid, with its media sessions.
pub async fn call<C: ConnectionTrait>(db: &C, scope: &Scope, call_sid: &str) -> Result<CallRecord, Error> {
    let call = db::calls::by_sid_in(db, scope, call_sid)
        .await?
        .ok_or(Error::NotFound("call"))?;
    let media_sessions = db::calls::media_sessions(db, &call.id).await?;
    Ok(CallRecord { call, media_sessions })
}

/// Lists the aggregated diagnostics in `scope`, most recently created first, optionally of one
/// kind.
pub async fn list_diagnostics<C: ConnectionTrait>(
    db: &C,
    scope: &Scope,
    kind: Option<DiagnosticKind>,
    paging: &Paging,
) -> Result<Page<diagnostic::Model>, Error> {
    Ok(db::diagnostics::list(db, scope, kind, paging.cursor.as_deref(), paging.limit).await?)
}

/// Lists the alerts in `scope`, newest first.
pub async fn list_alerts<C: ConnectionTrait>(
    db: &C,
    scope: &Scope,
    paging: &Paging,
) -> Result<Page<alert::Model>, Error> {
    Ok(db::alerts::list(db, scope, paging.cursor.as_deref(), paging.limit).await?)
}

/// Lists the downstream webhook events in `scope`, newest first.
pub async fn list_events<C: ConnectionTrait>(
    db: &C,
    scope: &Scope,
    paging: &Paging,
) -> Result<Page<outbox_event::Model>, Error> {
    Ok(db::outbox::list(db, scope, paging.cursor.as_deref(), paging.limit).await?)
}

/// `Ok` when a delete found its record.
fn found(deleted: bool, what: &'static str) -> Result<(), Error> {
    if deleted {
        Ok(())
    } else {
        Err(Error::NotFound(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_secret_format() {
        let generated = generate_webhook_secret();
        assert!(check_webhook_secret(&generated).is_ok());
        assert!(check_webhook_secret("whsec_c2hvcnQ=").is_err());
        assert!(check_webhook_secret("whsec_not base64!").is_err());
        assert!(check_webhook_secret(&generated[6..]).is_err());
        assert_ne!(generated, generate_webhook_secret());
    }
}
