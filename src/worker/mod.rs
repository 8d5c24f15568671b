//! Background tasks that run beside the HTTP server.
pub mod agent_health;
pub mod diagnostics;
pub mod outbox;
pub mod probe;

use tokio::task::JoinSet;

use crate::state::AppState;

/// Starts every worker; each logs and restarts nothing on its own, so an exit is reported.
pub fn spawn_all(state: AppState) -> JoinSet<()> {
    let mut set = JoinSet::new();
    set.spawn(agent_health::run(state.clone()));
    set.spawn(outbox::run(state.clone()));
    set.spawn(diagnostics::run(state));
    set
}
