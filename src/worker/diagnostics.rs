//! Writes buffered diagnostics (and raises alerts) every `diagnostics_flush_interval`, and logs
//! the repeats of logged occurrences.
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Flushes until `stop` is cancelled (the last flush at shutdown is the server's).
pub async fn run(state: AppState, stop: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.alerts.diagnostics_flush_interval);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // During a database outage they stay buffered (bounded) until it is back; their
        // repeats are still logged.
        if state.outage.circuit_open() {
            state.diagnostics.log_repeats();
            continue;
        }
        if let Err(e) = state.diagnostics.flush().await {
            tracing::warn!(error = %e, "writing diagnostics failed; will retry");
        }
    }
}
