//! Runs the retention purge (`domain::retention`) at start and then every hour, off the
//! request path: one info line per run with what it deleted.
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::{
    db::{self, retention::AutoVacuum},
    domain::retention::{self, Policy, Purged},
    state::AppState,
};

/// How long after a failed run the next one starts.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Purges at start and every `VOICE_RETENTION_DAYS` interval until `stop` is cancelled; with
/// retention 0 it only waits for `stop`.
pub async fn run(state: AppState, stop: CancellationToken) {
    let Some(policy) = Policy::from_config(&state.config.retention) else {
        stop.cancelled().await;
        return;
    };
    warn_without_incremental_vacuum(&state).await;
    loop {
        let next = match run_once(&state, &policy, &stop).await {
            Some(_) => state.config.retention.interval,
            None => RETRY_AFTER,
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(next) => {}
        }
    }
}

/// One purge run, logged; `None` when it failed.
pub async fn run_once(state: &AppState, policy: &Policy, stop: &CancellationToken) -> Option<Purged> {
    let started = Instant::now();
    let now = Utc::now();
    let result = retention::purge(&state.db, policy, now, &state.outage, &state.metrics, stop).await;
    match result {
        Ok(purged) => {
            if purged.complete {
                state.metrics.retention_last_run.set(Utc::now().timestamp());
            }
            tracing::info!(
                retention_days = state.config.retention.days,
                cutoff = %policy.cutoff(now).to_rfc3339(),
                calls = purged.calls,
                call_webhooks = purged.call_webhooks,
                media_sessions = purged.media_sessions,
                outbox_events = purged.outbox_events,
                diagnostics = purged.diagnostics,
                alerts = purged.alerts,
                batches = purged.batches,
                complete = purged.complete,
                took_ms = started.elapsed().as_millis() as u64,
                "retention purge finished"
            );
            Some(purged)
        }
        Err(e) => {
            if let crate::domain::Error::Db(db_err) = &e {
                if db::is_unavailable(db_err) {
                    state.outage.failed(db_err, &state.diagnostics);
                }
            }
            tracing::warn!(error = %e, retry_in_secs = RETRY_AFTER.as_secs(), "retention purge failed");
            None
        }
    }
}

/// Warns once when the SQLite file frees space without ever shrinking.
async fn warn_without_incremental_vacuum(state: &AppState) {
    if let Ok(Some(AutoVacuum::None)) = db::retention::sqlite_auto_vacuum(&state.db).await {
        tracing::warn!(
            "this SQLite database was created without incremental auto-vacuum: space the retention \
             purge frees is reused, but the file does not shrink; convert it once with \
             `stateset-voice backup FILE` and a restore of that copy (see README, Backups and restore)"
        );
    }
}
