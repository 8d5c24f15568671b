//! `/api/v1/tenants`.
use poem_openapi::{
    param::{Path, Query},
    payload::Json,
    types::MaybeUndefined,
    ApiResponse, OpenApi,
};

use super::{models::*, AdminAuth, ApiTags};
use crate::{
    db,
    domain::admin::{self, NewTenant, TenantChanges},
    error::{AdminBodyError, AdminError},
    state::AppState,
};

/// Tenant administration.
pub struct TenantsApi {
    pub state: AppState,
}

/// Default page size of every list.
pub const DEFAULT_LIMIT: u64 = 20;

#[derive(ApiResponse)]
enum Created {
    /// Created. `webhook_secret` is present, once, when the service generated it.
    #[oai(status = 201)]
    Tenant(Json<Tenant>),
}

#[derive(ApiResponse)]
enum Deleted {
    /// Deleted, with its routes and calls.
    #[oai(status = 204)]
    Gone,
}

pub(super) fn optional<T>(value: MaybeUndefined<T>) -> Option<Option<T>> {
    match value {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => Some(Some(v)),
    }
}

#[OpenApi(tag = "ApiTags::Tenants")]
impl TenantsApi {
    /// Create a tenant
    #[oai(path = "/api/v1/tenants", method = "post", operation_id = "createTenant")]
    async fn create(&self, _auth: AdminAuth, body: Json<TenantCreate>) -> Result<Created, AdminBodyError> {
        let b = body.0;
        let created = admin::create_tenant(
            &self.state.db,
            NewTenant {
                name: b.name,
                account_sid: b.account_sid,
                auth_token: b.auth_token,
                secondary_auth_token: b.secondary_auth_token,
                shared_key: b.shared_key,
                environment: b.environment,
                webhook_url: b.webhook_url,
                webhook_secret: b.webhook_secret,
                default_fallback: b.default_fallback.map(Into::into),
            },
        )
        .await?;
        self.state.admin_changed();
        let mut tenant = Tenant::from(created.tenant);
        tenant.webhook_secret = created.generated_webhook_secret;
        Ok(Created::Tenant(Json(tenant)))
    }

    /// List tenants
    #[oai(path = "/api/v1/tenants", method = "get", operation_id = "listTenants")]
    async fn list(
        &self,
        _auth: AdminAuth,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<Option<u64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<List<Tenant>>, AdminError> {
        let page = db::tenants::list(
            &self.state.db,
            cursor.0.as_deref(),
            limit.0.unwrap_or(DEFAULT_LIMIT),
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
    async fn get(&self, _auth: AdminAuth, tenant_id: Path<String>) -> Result<Json<Tenant>, AdminError> {
        let tenant = db::tenants::get(&self.state.db, &tenant_id.0)
            .await?
            .ok_or_else(|| AdminError::not_found("tenant"))?;
        Ok(Json(tenant.into()))
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
        let b = body.0;
        let changes = TenantChanges {
            name: b.name,
            auth_token: b.auth_token,
            secondary_auth_token: optional(b.secondary_auth_token),
            shared_key: optional(b.shared_key),
            environment: b.environment,
            webhook_url: optional(b.webhook_url),
            webhook_secret: b.webhook_secret,
            default_fallback: optional(b.default_fallback).map(|f| f.map(Into::into)),
        };
        let updated = admin::update_tenant(&self.state.db, &tenant_id.0, changes).await?;
        self.state.admin_changed();
        Ok(Json(updated.into()))
    }

    /// Delete a tenant
    #[oai(
        path = "/api/v1/tenants/:tenant_id",
        method = "delete",
        operation_id = "deleteTenant"
    )]
    async fn delete(&self, _auth: AdminAuth, tenant_id: Path<String>) -> Result<Deleted, AdminError> {
        if db::tenants::delete(&self.state.db, &tenant_id.0).await? {
            self.state.admin_changed();
            Ok(Deleted::Gone)
        } else {
            Err(AdminError::not_found("tenant"))
        }
    }
}
