//! Periodic health checks of the agent runtimes routes name, feeding the circuit breaker that
//! the webhook consults before offering a stream.
use entity::route;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::{media::agent::probe, state::AppState};

/// How long one probe may take.
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Checks every agent every `agent_health_interval`, forever.
pub async fn run(state: AppState) {
    let mut tick = tokio::time::interval(state.config.agent_health_interval);
    loop {
        tick.tick().await;
        if let Err(e) = check_all(&state).await {
            tracing::warn!(error = %e, "agent health check round failed");
        }
    }
}

/// Probes each distinct agent URL of the enabled routes once.
pub async fn check_all(state: &AppState) -> Result<usize, sea_orm::DbErr> {
    let urls: Vec<Option<String>> = route::Entity::find()
        .select_only()
        .column(route::Column::AgentUrl)
        .distinct()
        .filter(route::Column::Enabled.eq(true))
        .filter(route::Column::AgentUrl.is_not_null())
        .into_tuple()
        .all(&state.db)
        .await?;
    let urls: Vec<String> = urls.into_iter().flatten().collect();
    let results = futures::future::join_all(urls.iter().map(|url| probe(url, PROBE_TIMEOUT))).await;
    for (url, result) in urls.iter().zip(results) {
        if let Err(reason) = &result {
            tracing::warn!(agent = %url, %reason, "agent health check failed");
        }
        state.runtime.record_agent_probe(url, result);
    }
    Ok(urls.len())
}
