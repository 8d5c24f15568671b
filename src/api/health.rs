//! Liveness and readiness.
use entity::outbox_event;
use poem_openapi::{
    payload::{Json, PlainText},
    ApiResponse, Object, OpenApi,
};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

use super::ApiTags;
use crate::state::AppState;

/// Health endpoints (no authentication).
pub struct HealthApi {
    pub state: AppState,
}

/// A health report.
#[derive(Debug, Object)]
pub struct Health {
    /// `ok`, `ready` or `unavailable`.
    pub status: String,
    /// Whether this instance is draining.
    pub draining: bool,
    /// Readiness only: the background tasks that are down (restarting after an exit or a
    /// panic), by name. Absent when none is.
    #[oai(default, skip_serializing_if_is_empty)]
    pub tasks_down: Vec<String>,
}

#[derive(ApiResponse)]
enum Readiness {
    /// The database answers and every background task runs.
    #[oai(status = 200)]
    Ready(Json<Health>),
    /// The database does not answer or a background task is down.
    #[oai(status = 503)]
    Unavailable(Json<Health>),
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness: the process serves requests
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> Json<Health> {
        Json(Health {
            status: "ok".to_owned(),
            draining: self.state.runtime.is_draining(),
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
        let backlog = outbox_event::Entity::find()
            .filter(outbox_event::Column::Status.eq(entity::states::OutboxStatus::Pending))
            .count(&self.state.db)
            .await;
        match backlog {
            Ok(n) => {
                metrics.outbox_backlog.set(n as i64);
            }
            Err(e) => tracing::warn!(error = %e, "counting the outbox backlog failed"),
        }
        PlainText(metrics.encode())
    }

    /// Readiness: the database is reachable and every background task runs
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self) -> Readiness {
        let draining = self.state.runtime.is_draining();
        let tasks_down = self.state.tasks.down();
        let reachable = match self.state.db.ping().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "readiness check failed");
                false
            }
        };
        if reachable && tasks_down.is_empty() {
            return Readiness::Ready(Json(Health {
                status: "ready".to_owned(),
                draining,
                tasks_down,
            }));
        }
        if !tasks_down.is_empty() {
            tracing::warn!(tasks = ?tasks_down, "not ready: background tasks are down");
        }
        Readiness::Unavailable(Json(Health {
            status: "unavailable".to_owned(),
            draining,
            tasks_down,
        }))
    }
}
