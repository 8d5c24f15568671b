//! Periodic health checks of the agent runtimes routes name, feeding the circuit breaker that
//! the webhook consults before offering a stream. A check is never a call: see [`probe`].
use std::collections::BTreeMap;

use entity::route;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use tokio_util::sync::CancellationToken;

use super::{
    probe::{self, Probe},
    WorkerError,
};
use crate::{metrics::HealthCheckLabels, state::AppState};

/// How long one probe may take.
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Checks every agent every `agent_health_interval` until `stop` is cancelled. Without an
/// HTTP client it returns at once (its supervisor restarts it).
pub async fn run(state: AppState, stop: CancellationToken) {
    let client = match probe::http_client() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "agent health checks need an HTTP client");
            return;
        }
    };
    let mut tick = tokio::time::interval(state.config.media.agent_health_interval);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = check_with(&state, &client).await {
            tracing::warn!(error = %e, "agent health check round failed");
        }
    }
}

/// One round of checks with a fresh HTTP client; see [`check_with`].
pub async fn check_all(state: &AppState) -> Result<usize, WorkerError> {
    Ok(check_with(state, &probe::http_client()?).await?)
}

/// Runs each distinct check of the enabled routes' agents once and records one result per
/// agent URL, the circuit breaker's key: an agent is healthy when every check naming it
/// passed, else it fails with the first failure's reason. Returns how many agents were checked.
pub async fn check_with(state: &AppState, client: &reqwest::Client) -> Result<usize, sea_orm::DbErr> {
    let pairs: Vec<(Option<String>, Option<String>)> = route::Entity::find()
        .select_only()
        .column(route::Column::AgentUrl)
        .column(route::Column::AgentHealthUrl)
        .distinct()
        .filter(route::Column::Enabled.eq(true))
        .filter(route::Column::AgentUrl.is_not_null())
        .into_tuple()
        .all(&state.db)
        .await?;
    let checks: Vec<(String, Probe)> = pairs
        .into_iter()
        .filter_map(|(agent, health)| {
            let agent = agent?;
            let probe = Probe::for_agent(&agent, health.as_deref());
            Some((agent, probe))
        })
        .collect();
    let results =
        futures::future::join_all(checks.iter().map(|(_, probe)| probe.run(client, PROBE_TIMEOUT))).await;

    let mut by_agent: BTreeMap<&str, Result<(), String>> = BTreeMap::new();
    for ((agent, probe), result) in checks.iter().zip(results) {
        state
            .metrics
            .agent_health_checks
            .get_or_create(&HealthCheckLabels::new(probe.kind(), result.is_ok()))
            .inc();
        let entry = by_agent.entry(agent.as_str()).or_insert(Ok(()));
        if let Err(reason) = result {
            tracing::warn!(agent = %agent, check = probe.kind().as_str(), %reason, "agent health check failed");
            if entry.is_ok() {
                *entry = Err(reason.to_string());
            }
        }
    }
    let agents = by_agent.len();
    for (agent, result) in by_agent {
        state.runtime.record_agent_probe(agent, result);
    }
    Ok(agents)
}
