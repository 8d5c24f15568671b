//! Writes buffered diagnostics (and raises alerts) every `diagnostics_flush_interval`.
use crate::state::AppState;

/// Flushes forever.
pub async fn run(state: AppState) {
    let mut tick = tokio::time::interval(state.config.alerts.diagnostics_flush_interval);
    loop {
        tick.tick().await;
        if let Err(e) = state.diagnostics.flush().await {
            tracing::warn!(error = %e, "writing diagnostics failed; will retry");
        }
    }
}
