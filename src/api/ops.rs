//! Diagnostics, alerts, events and runtime controls.
use poem_openapi::{param::Query, payload::Json, Object, OpenApi};

use super::{models::*, tenants::DEFAULT_LIMIT, AdminAuth, ApiTags};
use crate::{
    db,
    error::{AdminBodyError, AdminError},
    state::AppState,
};

/// Operations endpoints.
pub struct OpsApi {
    pub state: AppState,
}

/// Drain mode request.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct DrainRequest {
    /// While true, new calls get the fallback instead of a media stream.
    pub draining: bool,
}

/// This instance's runtime state.
#[derive(Debug, Object)]
pub struct RuntimeStatus {
    pub draining: bool,
    pub active_streams: u64,
    pub max_streams: u64,
}

impl OpsApi {
    fn status(&self) -> RuntimeStatus {
        let runtime = &self.state.runtime;
        RuntimeStatus {
            draining: runtime.is_draining(),
            active_streams: runtime.active_streams() as u64,
            max_streams: self.state.config.media.max_streams as u64,
        }
    }
}

#[OpenApi(tag = "ApiTags::Operations")]
impl OpsApi {
    /// List aggregated diagnostics, most recently created first
    #[oai(
        path = "/api/v1/diagnostics",
        method = "get",
        operation_id = "listDiagnostics"
    )]
    async fn diagnostics(
        &self,
        _auth: AdminAuth,
        kind: Query<Option<DiagnosticKind>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<Option<u64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<List<Diagnostic>>, AdminError> {
        let page = db::diagnostics::list(
            &self.state.db,
            kind.0,
            cursor.0.as_deref(),
            limit.0.unwrap_or(DEFAULT_LIMIT),
        )
        .await?;
        Ok(Json(List::from_page(page)))
    }

    /// List alerts, newest first
    #[oai(path = "/api/v1/alerts", method = "get", operation_id = "listAlerts")]
    async fn alerts(
        &self,
        _auth: AdminAuth,
        tenant_id: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<Option<u64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<List<Alert>>, AdminError> {
        let page = db::alerts::list(
            &self.state.db,
            tenant_id.0.as_deref(),
            cursor.0.as_deref(),
            limit.0.unwrap_or(DEFAULT_LIMIT),
        )
        .await?;
        Ok(Json(List::from_page(page)))
    }

    /// List downstream webhook events, newest first
    #[oai(path = "/api/v1/events", method = "get", operation_id = "listEvents")]
    async fn events(
        &self,
        _auth: AdminAuth,
        tenant_id: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<Option<u64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<List<Event>>, AdminError> {
        let page = db::outbox::list(
            &self.state.db,
            tenant_id.0.as_deref(),
            cursor.0.as_deref(),
            limit.0.unwrap_or(DEFAULT_LIMIT),
        )
        .await?;
        Ok(Json(List::from_page(page)))
    }

    /// This instance's runtime state
    #[oai(path = "/api/v1/runtime", method = "get", operation_id = "getRuntime")]
    async fn runtime(&self, _auth: AdminAuth) -> Result<Json<RuntimeStatus>, AdminError> {
        Ok(Json(self.status()))
    }

    /// Turn drain mode on or off on this instance
    ///
    /// While draining, new calls are answered with their fallback; open streams continue.
    #[oai(path = "/api/v1/runtime/drain", method = "put", operation_id = "setDrain")]
    async fn drain(
        &self,
        _auth: AdminAuth,
        body: Json<DrainRequest>,
    ) -> Result<Json<RuntimeStatus>, AdminBodyError> {
        self.state.runtime.set_draining(body.0.draining);
        tracing::warn!(draining = body.0.draining, "drain mode changed");
        Ok(Json(self.status()))
    }
}
