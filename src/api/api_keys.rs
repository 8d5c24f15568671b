//! `/api/v1/tenants/{tenant_id}/api-keys`: tenant API keys (admin token only), their handlers
//! and shapes. The key itself appears once, in the response that created it.
use chrono::{DateTime, Utc};
use entity::api_key;
use poem_openapi::{
    param::{Path, Query},
    payload::Json,
    Object, OpenApi,
};

use super::{
    common::{paging, Created, Deleted, List, Resource},
    input::{Checked, Label, NonNull},
    AdminAuth, ApiTags,
};
use crate::{
    domain::api_keys::{self, NewApiKey},
    error::{AdminBodyError, AdminError},
    state::AppState,
};

/// Tenant API key administration.
pub struct ApiKeysApi {
    pub state: AppState,
}

#[OpenApi(tag = "ApiTags::ApiKeys")]
impl ApiKeysApi {
    /// Create an API key for a tenant
    ///
    /// The key (`sk_...`) is in this response only; the service keeps its hash.
    #[oai(
        path = "/api/v1/tenants/:tenant_id/api-keys",
        method = "post",
        operation_id = "createApiKey"
    )]
    async fn create(
        &self,
        _auth: AdminAuth,
        tenant_id: Path<String>,
        body: Json<ApiKeyCreate>,
    ) -> Result<Created<NewKey>, AdminBodyError> {
        let created = api_keys::create(
            &self.state.db,
            &tenant_id.0,
            NewApiKey {
                label: body.0.label.into_string(),
            },
        )
        .await?;
        tracing::info!(
            tenant_id = %created.record.tenant_id,
            key_id = %created.record.id,
            prefix = %created.record.prefix,
            "API key created"
        );
        Ok(Created(NewKey {
            id: created.record.id,
            key: created.key,
            prefix: created.record.prefix,
            label: created.record.label,
            created_at: created.record.created_at,
        }))
    }

    /// List a tenant's API keys
    ///
    /// Revoked keys are not listed; the keys themselves never are.
    #[oai(
        path = "/api/v1/tenants/:tenant_id/api-keys",
        method = "get",
        operation_id = "listApiKeys"
    )]
    async fn list(
        &self,
        _auth: AdminAuth,
        tenant_id: Path<String>,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<Option<u64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<List<ApiKey>>, AdminError> {
        let page = api_keys::list(&self.state.db, &tenant_id.0, &paging(limit, cursor)).await?;
        Ok(Json(List::from_page(page)))
    }

    /// Revoke an API key
    ///
    /// From the response on, the key is refused (401) by every instance.
    #[oai(
        path = "/api/v1/tenants/:tenant_id/api-keys/:key_id",
        method = "delete",
        operation_id = "revokeApiKey"
    )]
    async fn revoke(
        &self,
        _auth: AdminAuth,
        tenant_id: Path<String>,
        key_id: Path<String>,
    ) -> Result<Deleted<ApiKey>, AdminError> {
        api_keys::revoke(&self.state.db, &tenant_id.0, &key_id.0).await?;
        tracing::info!(tenant_id = %tenant_id.0, key_id = %key_id.0, "API key revoked");
        Ok(Deleted::new())
    }
}

/// A new API key.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct ApiKeyCreate {
    /// What the key is for, 1 to 200 printable characters (trimmed).
    pub label: NonNull<Checked<Label>>,
}

/// A tenant API key as listed: never the key itself.
#[derive(Debug, Object)]
pub struct ApiKey {
    pub id: String,
    /// `sk_` and the key's first 8 characters, to recognise it by.
    pub prefix: String,
    #[oai(nullable)]
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When the key last authenticated a request, to the minute; null if never.
    #[oai(nullable)]
    pub last_used_at: Option<DateTime<Utc>>,
}

impl Resource for ApiKey {
    const CREATED: &'static str = "Created.";
    const DELETED: &'static str = "Revoked: the key authenticates nothing from now on.";
}

impl From<api_key::Model> for ApiKey {
    fn from(k: api_key::Model) -> Self {
        Self {
            id: k.id,
            prefix: k.prefix,
            label: k.label,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
        }
    }
}

/// A created API key, with the key: shown in this response only.
#[derive(Object)]
pub struct NewKey {
    pub id: String,
    /// The bearer credential: `sk_` + base64url of 32 random bytes. Store it now; it cannot be
    /// read again.
    pub key: String,
    /// `sk_` and the key's first 8 characters, as listed.
    pub prefix: String,
    #[oai(nullable)]
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Resource for NewKey {
    const CREATED: &'static str = "Created. `key` is in this response only.";
    const DELETED: &'static str = "Revoked.";
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("id", &self.id)
            .field("key", &"[redacted]")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}
