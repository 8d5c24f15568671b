//! Operator diagnostics and alerting. Occurrences (signature failures, calls to unknown numbers,
//! refused streams, ...) are counted in memory on the request path and written in one
//! transaction per flush interval, so a flood of forged or misdirected requests costs no
//! database write per request. Signature failures on production routes raise an alert in the
//! flush whose counts cross the threshold within the window: one per window.
use std::{collections::HashMap, sync::Mutex};

use sea_orm::TransactionTrait;
use serde_json::json;

use super::Error;
use crate::{
    db::{self, diagnostics::Occurrence},
    state::AppState,
};

/// Diagnostic kinds.
pub mod kind {
    pub const SIGNATURE_FAILURE: &str = "signature_failure";
    pub const ACCOUNT_MISMATCH: &str = "account_mismatch";
    pub const UNKNOWN_ROUTE: &str = "unknown_route";
    pub const CALL_ROUTE_CONFLICT: &str = "call_route_conflict";
    pub const STREAM_REFUSED: &str = "stream_refused";
}

/// Most distinct keys stored per diagnostic kind (extra keys are counted under one row).
pub const MAX_KEYS_PER_KIND: u64 = 1000;

/// Most distinct keys buffered between flushes.
const MAX_PENDING: usize = 10_000;

/// Occurrences not yet written.
#[derive(Debug, Clone, Default)]
struct Pending {
    count: i64,
    tenant_id: Option<String>,
    route_id: Option<String>,
    detail: Option<String>,
    /// A signature failure on a production route (alerts apply).
    production: bool,
}

impl Pending {
    /// Adds `other`'s counts; its ids and detail win when present (they are the same for a key).
    fn merge(&mut self, other: Pending) {
        self.count += other.count;
        self.production |= other.production;
        self.tenant_id = other.tenant_id.or(self.tenant_id.take());
        self.route_id = other.route_id.or(self.route_id.take());
        self.detail = other.detail.or(self.detail.take());
    }
}

/// The in-memory side of diagnostics.
#[derive(Default)]
pub struct DiagnosticsBuffer {
    pending: Mutex<HashMap<(String, String), Pending>>,
}

impl DiagnosticsBuffer {
    /// Counts one occurrence; `production` marks signature failures on production routes.
    pub fn add(&self, occurrence: Occurrence<'_>, production: bool) {
        let mut pending = self.pending.lock().expect("diagnostics lock");
        let mut key = (occurrence.kind.to_owned(), occurrence.key.to_owned());
        if pending.len() >= MAX_PENDING && !pending.contains_key(&key) {
            key.1 = db::diagnostics::OVERFLOW_KEY.to_owned();
        }
        pending.entry(key).or_default().merge(Pending {
            count: 1,
            tenant_id: occurrence.tenant_id.map(str::to_owned),
            route_id: occurrence.route_id.map(str::to_owned),
            detail: occurrence.detail,
            production,
        });
    }

    fn take(&self) -> HashMap<(String, String), Pending> {
        std::mem::take(&mut *self.pending.lock().expect("diagnostics lock"))
    }
}

/// Writes buffered occurrences and raises the alerts they call for; returns how many distinct
/// keys were written. Failed writes are put back for the next flush.
pub async fn flush(state: &AppState) -> Result<usize, Error> {
    let pending = state.diagnostics.take();
    let n = pending.len();
    let mut entries = pending.into_iter();
    while let Some(((kind, key), p)) = entries.next() {
        if let Err(e) = write(state, &kind, &key, &p).await {
            let mut buffer = state.diagnostics.pending.lock().expect("diagnostics lock");
            for (key, p) in std::iter::once(((kind, key), p)).chain(entries) {
                buffer.entry(key).or_default().merge(p);
            }
            return Err(e);
        }
    }
    Ok(n)
}

async fn write(state: &AppState, kind: &str, key: &str, p: &Pending) -> Result<(), Error> {
    let config = &state.config;
    let occurrence = Occurrence {
        kind,
        key,
        tenant_id: p.tenant_id.as_deref(),
        route_id: p.route_id.as_deref(),
        detail: p.detail.clone(),
    };
    if kind != kind::SIGNATURE_FAILURE {
        db::diagnostics::record_bounded(
            &state.db,
            &occurrence,
            p.count,
            config.alerts.window,
            MAX_KEYS_PER_KIND,
        )
        .await?;
        return Ok(());
    }
    let txn = state.db.begin().await?;
    let counts = db::diagnostics::record(&txn, &occurrence, p.count, config.alerts.window).await?;
    let threshold = i64::from(config.alerts.threshold);
    let crossed = counts.in_window >= threshold && counts.in_window - p.count < threshold;
    if p.production && crossed {
        let message = format!(
            "{} signature failures within {} s on production route {key} ({})",
            counts.in_window,
            config.alerts.window.as_secs(),
            p.detail.as_deref().unwrap_or("-"),
        );
        let alert = db::alerts::insert(
            &txn,
            db::alerts::NewAlert {
                tenant_id: p.tenant_id.as_deref(),
                route_id: Some(key),
                kind,
                message: message.clone(),
                failure_count: counts.in_window,
                window_start: counts.window_start,
            },
        )
        .await?;
        if let Some(tenant_id) = &p.tenant_id {
            let data = json!({
                "alert_id": alert.id,
                "kind": alert.kind,
                "route_id": key,
                "failure_count": counts.in_window,
                "window_seconds": config.alerts.window.as_secs(),
                "message": message,
            });
            db::outbox::record(&txn, tenant_id, "alert.raised", data).await?;
        }
        tracing::error!(alert_id = %alert.id, route_id = %key, "{message}");
        state.metrics.alerts.inc();
    }
    txn.commit().await?;
    Ok(())
}

/// Counts a signature failure on a route.
pub fn signature_failure(state: &AppState, route: &entity::route::Model, tenant: &entity::tenant::Model) {
    state.metrics.signature_failures.inc();
    state.diagnostics.add(
        Occurrence {
            kind: kind::SIGNATURE_FAILURE,
            key: &route.id,
            tenant_id: Some(&tenant.id),
            route_id: Some(&route.id),
            detail: Some(route.phone_number.clone()),
        },
        route.environment == "production",
    );
}

/// Counts any other diagnostic.
pub fn diagnostic(state: &AppState, occurrence: Occurrence<'_>) {
    state.diagnostics.add(occurrence, false);
}
