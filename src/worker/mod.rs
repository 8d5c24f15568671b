//! Background tasks that run beside the HTTP server, each under the [`supervisor`]: an exit or
//! a panic is logged with the task's name and the task is restarted with backoff.
pub mod agent_health;
pub mod database_watch;
pub mod diagnostics;
pub mod outbox;
pub mod probe;
pub mod retention;
pub mod supervisor;

use supervisor::{Stage, Supervisor};

use crate::state::AppState;

/// Errors of a worker round.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Db(#[from] sea_orm::DbErr),
    #[error("building the HTTP client failed: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// Starts every background worker under `supervisor`: event delivery (`outbox`), the
/// diagnostics flush (`diagnostics`), agent health checks (`agent-health`) and the database
/// watch of the degraded mode (`database-watch`: probes, spool replay, last known
/// configuration) and the retention purge (`retention`). Each stops between rounds at
/// shutdown.
pub fn start_all(supervisor: &mut Supervisor, state: &AppState) {
    let s = state.clone();
    supervisor.spawn("outbox", Stage::Workers, move |stop| outbox::run(s.clone(), stop));
    let s = state.clone();
    supervisor.spawn("diagnostics", Stage::Workers, move |stop| {
        diagnostics::run(s.clone(), stop)
    });
    let s = state.clone();
    supervisor.spawn("agent-health", Stage::Workers, move |stop| {
        agent_health::run(s.clone(), stop)
    });
    let s = state.clone();
    supervisor.spawn("database-watch", Stage::Workers, move |stop| {
        database_watch::run(s.clone(), stop)
    });
    let s = state.clone();
    supervisor.spawn("retention", Stage::Workers, move |stop| {
        retention::run(s.clone(), stop)
    });
}
