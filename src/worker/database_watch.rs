//! Watches the database on behalf of the degraded mode: during an outage it probes the
//! database (closing the circuit when it answers), replays the spool once it takes writes,
//! ends the outage with one log line and an alert, and keeps the last known configuration of
//! routes fresh while the database is up.
use std::time::Duration;

use entity::states::DiagnosticKind;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    db::{self, alerts::NewAlert},
    domain::outage::{self, Ended},
    state::AppState,
};

/// How often the database is probed during an outage (and the spool looked at).
pub const TICK: Duration = Duration::from_millis(250);
/// How often the whole last known configuration is read again.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(30);
/// How often the spool directory is searched for calls spooled by processes that stopped.
const ORPHAN_SCAN_INTERVAL: Duration = Duration::from_secs(10);
/// Most routes kept in the last known configuration.
const MAX_ROUTES: usize = 100_000;
/// Routes read per query of the snapshot.
const SNAPSHOT_PAGE: u64 = 1000;

/// Runs until `stop` is cancelled: a [`Watch::step`] every [`TICK`].
pub async fn run(state: AppState, stop: CancellationToken) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = Watch::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        watch.step(&state).await;
    }
}

/// The watch's own state between steps.
pub struct Watch {
    next_snapshot: Instant,
    next_orphan_scan: Instant,
    spool_failing: bool,
}

impl Default for Watch {
    fn default() -> Self {
        Self::new()
    }
}

impl Watch {
    /// A watch whose first step reads the configuration and looks for spooled calls.
    pub fn new() -> Self {
        Self {
            next_snapshot: Instant::now(),
            next_orphan_scan: Instant::now(),
            spool_failing: false,
        }
    }

    /// One round: probe the database if the circuit is open; replay the spool if it holds
    /// calls (or look for calls of stopped processes now and then); end the outage if a write
    /// got through; refresh the last known configuration when due.
    pub async fn step(&mut self, state: &AppState) {
        let outage = &state.outage;
        if outage.circuit_open() {
            match state.db.ping().await {
                Ok(()) => outage.probe_succeeded(),
                Err(_) => return,
            }
        }
        let now = Instant::now();
        if state.spool.depth() > 0 || now >= self.next_orphan_scan {
            self.next_orphan_scan = now + ORPHAN_SCAN_INTERVAL;
            replay(state, &mut self.spool_failing).await;
        }
        if let Some(ended) = outage.take_ended() {
            ended_outage(state, &ended).await;
        }
        if now >= self.next_snapshot && !outage.circuit_open() {
            self.next_snapshot = now + SNAPSHOT_INTERVAL;
            match snapshot(&state.db, &state.config.secrets).await {
                Ok(entries) => state.routes.replace_last_known(entries),
                Err(e) if db::is_unavailable(&e) => outage.failed(&e, &state.diagnostics),
                Err(e) => tracing::warn!(error = %e, "reading the last known configuration failed"),
            }
        }
    }
}

/// Replays the spool; `failing` keeps a broken spool from logging every tick.
async fn replay(state: &AppState, failing: &mut bool) {
    let replayed = outage::replay(&state.spool, &state.writer, &state.db, &state.metrics).await;
    match replayed {
        Ok(r) => {
            *failing = false;
            if r.stored + r.duplicates + r.rejected > 0 {
                state.outage.write_succeeded();
                tracing::info!(
                    stored = r.stored,
                    duplicates = r.duplicates,
                    rejected = r.rejected,
                    remaining = state.spool.depth(),
                    "spooled calls replayed into the database"
                );
            }
        }
        Err(crate::domain::Error::Db(e)) if db::is_unavailable(&e) => {
            state.outage.failed(&e, &state.diagnostics);
        }
        Err(e) if !*failing => {
            *failing = true;
            tracing::error!(error = %e, spool = %state.spool.dir().display(), "replaying the spool failed; will retry");
        }
        Err(_) => {}
    }
}

/// The end of an outage: one log line, an alert, and the diagnostics buffered meanwhile.
async fn ended_outage(state: &AppState, ended: &Ended) {
    tracing::warn!(
        lasted_secs = ended.lasted.as_secs_f64(),
        answered_from_spool = ended.answered,
        spool_depth = state.spool.depth(),
        "database reachable again: calls stream again"
    );
    let alert = NewAlert {
        tenant_id: None,
        route_id: None,
        kind: DiagnosticKind::DatabaseUnavailable,
        message: ended.message(),
        failure_count: ended.answered as i64,
        window_start: ended.started_at,
    };
    match db::alerts::insert(&state.db, alert).await {
        Ok(_) => {
            state.metrics.alert_raised(DiagnosticKind::DatabaseUnavailable);
        }
        Err(e) => tracing::warn!(error = %e, "recording the outage alert failed"),
    }
}

/// Every route with its tenant, up to [`MAX_ROUTES`].
async fn snapshot(
    db: &db::Pool,
    keys: &crate::secrets::Keyring,
) -> Result<Vec<(entity::route::Model, entity::tenant::Model)>, sea_orm::DbErr> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = db::routes::with_tenants_after(db, keys, cursor.as_deref(), SNAPSHOT_PAGE).await?;
        entries.extend(page.items);
        match page.next_cursor {
            Some(next) if entries.len() < MAX_ROUTES => cursor = Some(next),
            Some(_) => {
                tracing::warn!(
                    kept = entries.len(),
                    "more routes than the last known configuration keeps; the rest are answered 503 during an outage"
                );
                break;
            }
            None => break,
        }
    }
    Ok(entries)
}
