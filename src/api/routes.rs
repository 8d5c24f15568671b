//! `/api/v1/routes` and `/api/v1/tenants/{tenant_id}/routes`.
use poem_openapi::{
    param::{Path, Query},
    payload::Json,
    ApiResponse, OpenApi,
};

use super::{models::*, tenants::optional, tenants::DEFAULT_LIMIT, AdminAuth, ApiTags};
use crate::{
    db,
    domain::admin::{self, NewRoute, RouteChanges},
    error::{AdminBodyError, AdminError},
    state::AppState,
};

/// Route administration.
pub struct RoutesApi {
    pub state: AppState,
}

#[derive(ApiResponse)]
enum Created {
    /// Created; `phone_number` normalised to E.164.
    #[oai(status = 201)]
    Route(Json<Route>),
}

#[derive(ApiResponse)]
enum Deleted {
    /// Deleted.
    #[oai(status = 204)]
    Gone,
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
        _auth: AdminAuth,
        tenant_id: Path<String>,
        body: Json<RouteCreate>,
    ) -> Result<Created, AdminBodyError> {
        let b = body.0;
        let new = NewRoute {
            phone_number: b.phone_number,
            label: b.label,
            environment: b.environment,
            enabled: b.enabled,
            fallback: b.fallback.map(Into::into),
            agent_url: b.agent_url,
            agent_health_url: b.agent_health_url,
        };
        let route = admin::create_route(&self.state.db, &tenant_id.0, new).await?;
        self.state.admin_changed();
        Ok(Created::Route(Json(route.into())))
    }

    /// List routes
    #[oai(path = "/api/v1/routes", method = "get", operation_id = "listRoutes")]
    async fn list(
        &self,
        _auth: AdminAuth,
        tenant_id: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<Option<u64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<List<Route>>, AdminError> {
        let page = db::routes::list(
            &self.state.db,
            tenant_id.0.as_deref(),
            cursor.0.as_deref(),
            limit.0.unwrap_or(DEFAULT_LIMIT),
        )
        .await?;
        Ok(Json(List::from_page(page)))
    }

    /// Get a route
    #[oai(path = "/api/v1/routes/:route_id", method = "get", operation_id = "getRoute")]
    async fn get(&self, _auth: AdminAuth, route_id: Path<String>) -> Result<Json<Route>, AdminError> {
        let route = db::routes::get(&self.state.db, &route_id.0)
            .await?
            .ok_or_else(|| AdminError::not_found("route"))?;
        Ok(Json(route.into()))
    }

    /// Update a route
    #[oai(
        path = "/api/v1/routes/:route_id",
        method = "patch",
        operation_id = "updateRoute"
    )]
    async fn update(
        &self,
        _auth: AdminAuth,
        route_id: Path<String>,
        body: Json<RoutePatch>,
    ) -> Result<Json<Route>, AdminBodyError> {
        let b = body.0;
        let changes = RouteChanges {
            phone_number: b.phone_number,
            label: optional(b.label),
            environment: b.environment,
            enabled: b.enabled,
            fallback: optional(b.fallback).map(|f| f.map(Into::into)),
            agent_url: optional(b.agent_url),
            agent_health_url: optional(b.agent_health_url),
        };
        let updated = admin::update_route(&self.state.db, &route_id.0, changes).await?;
        self.state.admin_changed();
        Ok(Json(updated.into()))
    }

    /// Delete a route
    #[oai(
        path = "/api/v1/routes/:route_id",
        method = "delete",
        operation_id = "deleteRoute"
    )]
    async fn delete(&self, _auth: AdminAuth, route_id: Path<String>) -> Result<Deleted, AdminError> {
        if db::routes::delete(&self.state.db, &route_id.0).await? {
            self.state.admin_changed();
            Ok(Deleted::Gone)
        } else {
            Err(AdminError::not_found("route"))
        }
    }
}
