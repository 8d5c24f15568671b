//! `/api/v1/routes` and `/api/v1/tenants/{tenant_id}/routes`: handlers and the route shapes.
use chrono::{DateTime, Utc};
use entity::{route, states::RouteEnvironment};
use poem_openapi::{
    param::{Path, Query},
    payload::Json,
    types::MaybeUndefined,
    Object, OpenApi,
};

use super::{
    common::{optional, optional_string, paging, Created, Deleted, Fallback, List, Resource},
    input::{Checked, HttpUrl, Label, NonNull, Phone, WsUrl},
    AdminOrTenantKey, ApiTags,
};
use crate::{
    domain::admin::{self, NewRoute, RouteChanges},
    error::{AdminBodyError, AdminError},
    state::AppState,
};

/// Route administration.
pub struct RoutesApi {
    pub state: AppState,
}

#[OpenApi(tag = "ApiTags::Routes")]
impl RoutesApi {
    /// Create a route for a tenant
    ///
    /// 409 when the number already has a route; 422 when it is not a phone number.
    #[oai(
        path = "/api/v1/tenants/:tenant_id/routes",
        method = "post",
        operation_id = "createRoute"
    )]
    async fn create(
        &self,
        auth: AdminOrTenantKey,
        tenant_id: Path<String>,
        body: Json<RouteCreate>,
    ) -> Result<Created<Route>, AdminBodyError> {
        let scope = auth.caller().scope();
        let route = admin::create_route(&self.state.db, &scope, &tenant_id.0, body.0.into()).await?;
        self.state.admin_changed();
        Ok(Created(route.into()))
    }

    /// List routes (a tenant API key's default to its tenant)
    #[oai(path = "/api/v1/routes", method = "get", operation_id = "listRoutes")]
    async fn list(
        &self,
        auth: AdminOrTenantKey,
        tenant_id: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<Option<u64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<List<Route>>, AdminError> {
        let scope = auth.caller().list_scope(tenant_id.0.as_deref())?;
        let page = admin::list_routes(&self.state.db, &scope, &paging(limit, cursor)).await?;
        Ok(Json(List::from_page(page)))
    }

    /// Get a route
    #[oai(path = "/api/v1/routes/:route_id", method = "get", operation_id = "getRoute")]
    async fn get(&self, auth: AdminOrTenantKey, route_id: Path<String>) -> Result<Json<Route>, AdminError> {
        let scope = auth.caller().scope();
        Ok(Json(
            admin::route(&self.state.db, &scope, &route_id.0).await?.into(),
        ))
    }

    /// Update a route
    #[oai(
        path = "/api/v1/routes/:route_id",
        method = "patch",
        operation_id = "updateRoute"
    )]
    async fn update(
        &self,
        auth: AdminOrTenantKey,
        route_id: Path<String>,
        body: Json<RoutePatch>,
    ) -> Result<Json<Route>, AdminBodyError> {
        let scope = auth.caller().scope();
        let updated = admin::update_route(&self.state.db, &scope, &route_id.0, body.0.into()).await?;
        self.state.admin_changed();
        Ok(Json(updated.into()))
    }

    /// Delete a route
    #[oai(
        path = "/api/v1/routes/:route_id",
        method = "delete",
        operation_id = "deleteRoute"
    )]
    async fn delete(
        &self,
        auth: AdminOrTenantKey,
        route_id: Path<String>,
    ) -> Result<Deleted<Route>, AdminError> {
        admin::delete_route(&self.state.db, &auth.caller().scope(), &route_id.0).await?;
        self.state.admin_changed();
        Ok(Deleted::new())
    }
}

/// A phone route.
#[derive(Debug, Object)]
pub struct Route {
    pub id: String,
    pub tenant_id: String,
    /// E.164.
    pub phone_number: String,
    #[oai(nullable)]
    pub label: Option<String>,
    pub environment: RouteEnvironment,
    pub enabled: bool,
    #[oai(nullable)]
    pub fallback: Option<Fallback>,
    /// WebSocket URL of the agent runtime; the built-in echo agent when absent.
    #[oai(nullable)]
    pub agent_url: Option<String>,
    /// HTTP(S) URL the health check GETs (2xx = healthy); when absent the check only opens a
    /// TCP connection to the agent's host and port.
    #[oai(nullable)]
    pub agent_health_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Resource for Route {
    const CREATED: &'static str = "Created; `phone_number` normalised to E.164.";
    const DELETED: &'static str = "Deleted.";
}

impl From<route::Model> for Route {
    fn from(r: route::Model) -> Self {
        Self {
            fallback: Fallback::stored(r.fallback.as_deref()),
            id: r.id,
            tenant_id: r.tenant_id,
            phone_number: r.phone_number,
            label: r.label,
            environment: r.environment,
            enabled: r.enabled,
            agent_url: r.agent_url,
            agent_health_url: r.agent_health_url,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A new route.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct RouteCreate {
    /// E.164, formatting allowed (`+1 (555) 555-1234`).
    pub phone_number: Checked<Phone>,
    /// 1 to 200 printable characters (trimmed).
    pub label: NonNull<Checked<Label>>,
    /// Default `production`.
    pub environment: NonNull<RouteEnvironment>,
    /// Default true.
    pub enabled: NonNull<bool>,
    pub fallback: NonNull<Fallback>,
    /// ws:// or wss:// URL of the agent runtime.
    pub agent_url: NonNull<Checked<WsUrl>>,
    /// http:// or https:// URL of the agent's health endpoint (GET, 2xx = healthy).
    pub agent_health_url: NonNull<Checked<HttpUrl>>,
}

impl From<RouteCreate> for NewRoute {
    fn from(b: RouteCreate) -> Self {
        Self {
            phone_number: b.phone_number.into_inner(),
            label: b.label.into_string(),
            environment: b.environment.into_option(),
            enabled: b.enabled.into_option(),
            fallback: b.fallback.into_option().map(Into::into),
            agent_url: b.agent_url.into_string(),
            agent_health_url: b.agent_health_url.into_string(),
        }
    }
}

/// Changes to a route; `null` clears an optional field, and is refused for the others.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct RoutePatch {
    pub phone_number: NonNull<Checked<Phone>>,
    #[oai(nullable)]
    pub label: MaybeUndefined<Checked<Label>>,
    pub environment: NonNull<RouteEnvironment>,
    pub enabled: NonNull<bool>,
    #[oai(nullable)]
    pub fallback: MaybeUndefined<Fallback>,
    #[oai(nullable)]
    pub agent_url: MaybeUndefined<Checked<WsUrl>>,
    #[oai(nullable)]
    pub agent_health_url: MaybeUndefined<Checked<HttpUrl>>,
}

impl From<RoutePatch> for RouteChanges {
    fn from(b: RoutePatch) -> Self {
        Self {
            phone_number: b.phone_number.into_string(),
            label: optional_string(b.label),
            environment: b.environment.into_option(),
            enabled: b.enabled.into_option(),
            fallback: optional(b.fallback).map(|f| f.map(Into::into)),
            agent_url: optional_string(b.agent_url),
            agent_health_url: optional_string(b.agent_health_url),
        }
    }
}
