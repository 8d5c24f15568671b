//! Diagnostics, alerts, events and runtime controls: handlers and their shapes.
use chrono::{DateTime, Utc};
use entity::{
    alert, diagnostic, outbox_event,
    states::{DiagnosticKind, EventType, OutboxStatus},
};
use poem_openapi::{param::Query, payload::Json, Object, OpenApi};

use super::{
    common::{paging, List},
    AdminAuth, AdminOrTenantKey, ApiTags,
};
use crate::{
    domain::admin,
    error::{AdminBodyError, AdminError},
    state::AppState,
};

/// Operations endpoints.
pub struct OpsApi {
    pub state: AppState,
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
    ///
    /// A tenant API key sees its tenant's; those of no tenant (unknown numbers) are the admin's.
    #[oai(
        path = "/api/v1/diagnostics",
        method = "get",
        operation_id = "listDiagnostics"
    )]
    async fn diagnostics(
        &self,
        auth: AdminOrTenantKey,
        kind: Query<Option<DiagnosticKind>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<Option<u64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<List<Diagnostic>>, AdminError> {
        let scope = auth.caller().scope();
        let page = admin::list_diagnostics(&self.state.db, &scope, kind.0, &paging(limit, cursor)).await?;
        Ok(Json(List::from_page(page)))
    }

    /// List alerts, newest first
    #[oai(path = "/api/v1/alerts", method = "get", operation_id = "listAlerts")]
    async fn alerts(
        &self,
        auth: AdminOrTenantKey,
        tenant_id: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<Option<u64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<List<Alert>>, AdminError> {
        let scope = auth.caller().list_scope(tenant_id.0.as_deref())?;
        let page = admin::list_alerts(&self.state.db, &scope, &paging(limit, cursor)).await?;
        Ok(Json(List::from_page(page)))
    }

    /// List downstream webhook events, newest first
    #[oai(path = "/api/v1/events", method = "get", operation_id = "listEvents")]
    async fn events(
        &self,
        auth: AdminOrTenantKey,
        tenant_id: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<Option<u64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<List<Event>>, AdminError> {
        let scope = auth.caller().list_scope(tenant_id.0.as_deref())?;
        let page = admin::list_events(&self.state.db, &scope, &paging(limit, cursor)).await?;
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

/// An aggregated operator diagnostic.
#[derive(Debug, Object)]
pub struct Diagnostic {
    pub id: String,
    pub kind: DiagnosticKind,
    /// The called number, route id or CallSid the occurrences share.
    pub key: String,
    #[oai(nullable)]
    pub tenant_id: Option<String>,
    #[oai(nullable)]
    pub route_id: Option<String>,
    #[oai(nullable)]
    pub detail: Option<String>,
    pub count: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

impl From<diagnostic::Model> for Diagnostic {
    fn from(d: diagnostic::Model) -> Self {
        Self {
            id: d.id,
            kind: d.kind,
            key: d.key,
            tenant_id: d.tenant_id,
            route_id: d.route_id,
            detail: d.detail,
            count: d.count,
            first_seen: d.first_seen,
            last_seen: d.last_seen,
        }
    }
}

/// A raised alert.
#[derive(Debug, Object)]
pub struct Alert {
    pub id: String,
    #[oai(nullable)]
    pub tenant_id: Option<String>,
    #[oai(nullable)]
    pub route_id: Option<String>,
    pub kind: DiagnosticKind,
    pub message: String,
    pub failure_count: i64,
    pub window_start: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl From<alert::Model> for Alert {
    fn from(a: alert::Model) -> Self {
        Self {
            id: a.id,
            tenant_id: a.tenant_id,
            route_id: a.route_id,
            kind: a.kind,
            message: a.message,
            failure_count: a.failure_count,
            window_start: a.window_start,
            created_at: a.created_at,
        }
    }
}

/// A downstream webhook event and its delivery state.
#[derive(Debug, Object)]
pub struct Event {
    pub id: String,
    pub tenant_id: String,
    #[oai(rename = "type")]
    pub event_type: EventType,
    /// The body delivered downstream.
    pub payload: serde_json::Value,
    pub status: OutboxStatus,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    #[oai(nullable)]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    #[oai(nullable)]
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<outbox_event::Model> for Event {
    fn from(e: outbox_event::Model) -> Self {
        Self {
            payload: serde_json::from_str(&e.payload).unwrap_or(serde_json::Value::Null),
            id: e.id,
            tenant_id: e.tenant_id,
            event_type: e.event_type,
            status: e.status,
            attempts: e.attempts,
            next_attempt_at: e.next_attempt_at,
            last_error: e.last_error,
            created_at: e.created_at,
            delivered_at: e.delivered_at,
        }
    }
}
