//! Liveness and readiness.
use poem_openapi::{payload::Json, ApiResponse, Object, OpenApi};

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
}

#[derive(ApiResponse)]
enum Readiness {
    /// The database answers.
    #[oai(status = 200)]
    Ready(Json<Health>),
    /// The database does not answer.
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
        })
    }

    /// Readiness: the database is reachable
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self) -> Readiness {
        let draining = self.state.runtime.is_draining();
        match self.state.db.ping().await {
            Ok(()) => Readiness::Ready(Json(Health {
                status: "ready".to_owned(),
                draining,
            })),
            Err(e) => {
                tracing::warn!(error = %e, "readiness check failed");
                Readiness::Unavailable(Json(Health {
                    status: "unavailable".to_owned(),
                    draining,
                }))
            }
        }
    }
}
