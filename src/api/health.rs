//! Liveness and readiness.
use poem_openapi::{
    payload::{Json, PlainText},
    ApiResponse, Enum, Object, OpenApi,
};

use super::ApiTags;
use crate::state::AppState;

/// Health endpoints (no authentication).
pub struct HealthApi {
    pub state: AppState,
}

/// What a health report says: `ok` (liveness: the process serves requests), `ready`,
/// `degraded` (the database is unreachable: calls are answered from the last known
/// configuration), `unavailable` (a background task is down) or `stopping` (shutting down
/// after SIGTERM: still answering while open media streams end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Liveness: the process serves requests.
    Ok,
    /// Readiness: the database answers and every background task runs.
    Ready,
    /// Ready without the database: it is unreachable, and calls to known routes are answered
    /// with their fallback from the last known configuration and spooled until it is back.
    Degraded,
    /// Not ready: a background task is down.
    Unavailable,
    /// Not ready: the instance is shutting down. It still answers what reaches it while its
    /// open media streams end (up to `VOICE_STREAM_DRAIN_TIMEOUT`), then exits.
    Stopping,
}

/// A health report.
#[derive(Debug, Object)]
pub struct Health {
    pub status: HealthStatus,
    /// Whether this instance is in drain mode (`PUT /api/v1/runtime/drain`: new calls get
    /// the fallback).
    pub draining: bool,
    /// Readiness while stopping only: the media streams still open on this instance.
    #[oai(skip_serializing_if_is_none)]
    pub open_streams: Option<u64>,
    /// Readiness only: the background tasks that are down (restarting after an exit or a
    /// panic), by name. Absent when none is.
    #[oai(default, skip_serializing_if_is_empty)]
    pub tasks_down: Vec<String>,
}

#[derive(ApiResponse)]
enum Readiness {
    /// Every background task runs (the database answers, or the instance answers without it).
    #[oai(status = 200)]
    Ready(Json<Health>),
    /// A background task is down, or the instance is stopping (`status` says which).
    #[oai(status = 503)]
    Unavailable(Json<Health>),
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness: the process serves requests
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> Json<Health> {
        Json(Health {
            status: HealthStatus::Ok,
            draining: self.state.runtime.is_draining(),
            open_streams: None,
            tasks_down: Vec::new(),
        })
    }

    /// Prometheus metrics
    ///
    /// Calls by outcome, fallbacks by reason, signature failures, unknown routes, alerts,
    /// active and refused streams, outbox backlog and delivery results, request latency.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self) -> PlainText<String> {
        let metrics = &self.state.metrics;
        metrics
            .active_streams
            .set(self.state.runtime.active_streams() as i64);
        metrics.spool_depth.set(self.state.spool.depth() as i64);
        metrics
            .agent_circuits_open
            .set(self.state.runtime.open_agent_circuits() as i64);
        metrics
            .last_known_routes
            .set(self.state.routes.last_known_routes() as i64);
        // During an outage the backlog keeps its last value.
        if !self.state.outage.circuit_open() {
            let backlog = crate::db::outbox::backlog(&self.state.db).await;
            match backlog {
                Ok(n) => {
                    metrics.outbox_backlog.set(n as i64);
                }
                Err(e) => tracing::debug!(error = %e, "counting the outbox backlog failed"),
            }
        }
        PlainText(metrics.encode())
    }

    /// Readiness: every background task runs, and the database is reachable or this instance
    /// answers without it
    ///
    /// While the database is unreachable the instance still answers callers (from the last
    /// known configuration, spooling new calls): it stays ready, with status `degraded`, so a
    /// load balancer does not take every instance out at once. From the moment the process
    /// receives SIGTERM it answers 503 with `status: stopping`, so that the load balancer sends
    /// new traffic elsewhere while open media streams end.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self) -> Readiness {
        let runtime = &self.state.runtime;
        let draining = runtime.is_draining();
        let tasks_down = self.state.tasks.down();
        if runtime.is_stopping() {
            return Readiness::Unavailable(Json(Health {
                status: HealthStatus::Stopping,
                draining,
                open_streams: Some(runtime.active_streams() as u64),
                tasks_down,
            }));
        }
        let outage = &self.state.outage;
        let reachable = !outage.circuit_open()
            && match self.state.db.ping().await {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(error = %e, "readiness: the database does not answer");
                    false
                }
            };
        if tasks_down.is_empty() {
            let status = if reachable && !outage.ongoing() {
                HealthStatus::Ready
            } else {
                HealthStatus::Degraded
            };
            return Readiness::Ready(Json(Health {
                status,
                draining,
                open_streams: None,
                tasks_down,
            }));
        }
        if !tasks_down.is_empty() {
            tracing::warn!(tasks = ?tasks_down, "not ready: background tasks are down");
        }
        Readiness::Unavailable(Json(Health {
            status: HealthStatus::Unavailable,
            draining,
            open_streams: None,
            tasks_down,
        }))
    }
}
