//! Writes buffered diagnostics (and raises alerts) every `diagnostics_flush_interval`.
use tokio_util::sync::CancellationToken;

use crate::{domain::alerts, state::AppState};

/// Flushes until `stop` is cancelled (the last flush at shutdown is the server's).
pub async fn run(state: AppState, stop: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.diagnostics_flush_interval);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = alerts::flush(&state).await {
            tracing::warn!(error = %e, "writing diagnostics failed; will retry");
        }
    }
}
