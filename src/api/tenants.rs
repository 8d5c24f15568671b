//! `/api/v1/tenants`: handlers and the tenant shapes.
use chrono::{DateTime, Utc};
use entity::{states::TenantEnvironment, tenant};
use poem_openapi::{
    param::{Path, Query},
    payload::Json,
    types::MaybeUndefined,
    Object, OpenApi,
};

use super::{
    common::{optional, optional_string, paging, Created, Deleted, Fallback, List, Resource},
    input::{AccountSid, Checked, HttpUrl, Label, NonNull, Secret, WebhookSecret},
    AdminAuth, AdminOrTenantKey, ApiTags,
};
use crate::{
    domain::admin::{self, NewTenant, TenantChanges},
    error::{AdminBodyError, AdminError},
    state::AppState,
};

/// Tenant administration.
pub struct TenantsApi {
    pub state: AppState,
}

#[OpenApi(tag = "ApiTags::Tenants")]
impl TenantsApi {
    /// Create a tenant
    #[oai(path = "/api/v1/tenants", method = "post", operation_id = "createTenant")]
    async fn create(
        &self,
        _auth: AdminAuth,
        body: Json<TenantCreate>,
    ) -> Result<Created<Tenant>, AdminBodyError> {
        let created = admin::create_tenant(&self.state.db, &self.state.config.secrets, body.0.into()).await?;
        self.state.admin_changed();
        let mut tenant = Tenant::from(created.tenant);
        tenant.webhook_secret = created.generated_webhook_secret;
        Ok(Created(tenant))
    }

    /// List tenants (a tenant API key sees its own)
    #[oai(path = "/api/v1/tenants", method = "get", operation_id = "listTenants")]
    async fn list(
        &self,
        auth: AdminOrTenantKey,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<Option<u64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<List<Tenant>>, AdminError> {
        let page = admin::list_tenants(
            &self.state.db,
            &self.state.config.secrets,
            &auth.caller().scope(),
            &paging(limit, cursor),
        )
        .await?;
        Ok(Json(List::from_page(page)))
    }

    /// Get a tenant
    #[oai(
        path = "/api/v1/tenants/:tenant_id",
        method = "get",
        operation_id = "getTenant"
    )]
    async fn get(&self, auth: AdminOrTenantKey, tenant_id: Path<String>) -> Result<Json<Tenant>, AdminError> {
        let scope = auth.caller().scope();
        Ok(Json(
            admin::tenant(&self.state.db, &self.state.config.secrets, &scope, &tenant_id.0)
                .await?
                .into(),
        ))
    }

    /// Update a tenant
    ///
    /// Rotate auth tokens by setting `secondary_auth_token` to the new token, switching Twilio
    /// over, then moving it to `auth_token`.
    #[oai(
        path = "/api/v1/tenants/:tenant_id",
        method = "patch",
        operation_id = "updateTenant"
    )]
    async fn update(
        &self,
        _auth: AdminAuth,
        tenant_id: Path<String>,
        body: Json<TenantPatch>,
    ) -> Result<Json<Tenant>, AdminBodyError> {
        let updated = admin::update_tenant(
            &self.state.db,
            &self.state.config.secrets,
            &tenant_id.0,
            body.0.into(),
        )
        .await?;
        self.state.admin_changed();
        Ok(Json(updated.into()))
    }

    /// Delete a tenant
    #[oai(
        path = "/api/v1/tenants/:tenant_id",
        method = "delete",
        operation_id = "deleteTenant"
    )]
    async fn delete(&self, _auth: AdminAuth, tenant_id: Path<String>) -> Result<Deleted<Tenant>, AdminError> {
        admin::delete_tenant(&self.state.db, &tenant_id.0).await?;
        self.state.admin_changed();
        Ok(Deleted::new())
    }
}

/// A tenant. Auth tokens, the shared key and the webhook secret are write-only.
#[derive(Debug, Object)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub account_sid: String,
    pub environment: TenantEnvironment,
    #[oai(nullable)]
    pub webhook_url: Option<String>,
    #[oai(nullable)]
    pub default_fallback: Option<Fallback>,
    /// Whether a secondary auth token (rotation) is set.
    pub has_secondary_auth_token: bool,
    /// Whether an HMAC-SHA256 shared key is set.
    pub has_shared_key: bool,
    /// Only in the response that created the tenant, and only when the service generated it.
    #[oai(skip_serializing_if_is_none)]
    pub webhook_secret: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Resource for Tenant {
    const CREATED: &'static str =
        "Created. `webhook_secret` is present, once, when the service generated it.";
    const DELETED: &'static str = "Deleted, with its routes and calls.";
}

impl From<tenant::Model> for Tenant {
    fn from(t: tenant::Model) -> Self {
        Self {
            default_fallback: Fallback::stored(t.default_fallback.as_deref()),
            has_secondary_auth_token: t.secondary_auth_token.is_some(),
            has_shared_key: t.shared_key.is_some(),
            id: t.id,
            name: t.name,
            account_sid: t.account_sid,
            environment: t.environment,
            webhook_url: t.webhook_url,
            webhook_secret: None,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// A new tenant.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct TenantCreate {
    /// 1 to 200 printable characters (trimmed).
    pub name: Checked<Label>,
    /// `AC` + 32 hex digits.
    pub account_sid: Checked<AccountSid>,
    /// Twilio auth token that signs this account's webhooks.
    #[oai(write_only)]
    pub auth_token: Checked<Secret>,
    /// A second accepted auth token, for rotation.
    #[oai(write_only)]
    pub secondary_auth_token: NonNull<Checked<Secret>>,
    /// Customer-managed HMAC-SHA256 webhook key.
    #[oai(write_only)]
    pub shared_key: NonNull<Checked<Secret>>,
    /// Default `production`.
    pub environment: NonNull<TenantEnvironment>,
    /// Where events are delivered (http or https).
    pub webhook_url: NonNull<Checked<HttpUrl>>,
    /// `whsec_` + base64 of at least 24 bytes; generated and returned once when omitted.
    #[oai(write_only)]
    pub webhook_secret: NonNull<Checked<WebhookSecret>>,
    pub default_fallback: NonNull<Fallback>,
}

impl From<TenantCreate> for NewTenant {
    fn from(b: TenantCreate) -> Self {
        Self {
            name: b.name.into_inner(),
            account_sid: b.account_sid.into_inner(),
            auth_token: b.auth_token.into_inner(),
            secondary_auth_token: b.secondary_auth_token.into_string(),
            shared_key: b.shared_key.into_string(),
            environment: b.environment.into_option(),
            webhook_url: b.webhook_url.into_string(),
            webhook_secret: b.webhook_secret.into_string(),
            default_fallback: b.default_fallback.into_option().map(Into::into),
        }
    }
}

/// Changes to a tenant; `null` clears an optional field.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct TenantPatch {
    pub name: NonNull<Checked<Label>>,
    #[oai(write_only)]
    pub auth_token: NonNull<Checked<Secret>>,
    #[oai(write_only, nullable)]
    pub secondary_auth_token: MaybeUndefined<Checked<Secret>>,
    #[oai(write_only, nullable)]
    pub shared_key: MaybeUndefined<Checked<Secret>>,
    pub environment: NonNull<TenantEnvironment>,
    #[oai(nullable)]
    pub webhook_url: MaybeUndefined<Checked<HttpUrl>>,
    /// Rotates the webhook signing secret.
    #[oai(write_only)]
    pub webhook_secret: NonNull<Checked<WebhookSecret>>,
    #[oai(nullable)]
    pub default_fallback: MaybeUndefined<Fallback>,
}

impl From<TenantPatch> for TenantChanges {
    fn from(b: TenantPatch) -> Self {
        Self {
            name: b.name.into_string(),
            auth_token: b.auth_token.into_string(),
            secondary_auth_token: optional_string(b.secondary_auth_token),
            shared_key: optional_string(b.shared_key),
            environment: b.environment.into_option(),
            webhook_url: optional_string(b.webhook_url),
            webhook_secret: b.webhook_secret.into_string(),
            default_fallback: optional(b.default_fallback).map(|f| f.map(Into::into)),
        }
    }
}
