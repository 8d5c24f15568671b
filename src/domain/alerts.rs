//! Signature-failure counting and alerting, and other operator diagnostics.
use entity::{route, tenant};
use sea_orm::{ConnectionTrait, TransactionTrait};
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
}

/// Most distinct called numbers kept for unknown-route diagnostics.
pub const MAX_UNKNOWN_ROUTE_KEYS: u64 = 1000;

/// Counts a signature failure on a route; on a production route, the failure that reaches
/// the threshold within the window raises one alert (row, `alert.raised` event, error log).
/// Returns true when it raised one.
pub async fn signature_failure(
    state: &AppState,
    route: &route::Model,
    tenant: &tenant::Model,
) -> Result<bool, Error> {
    let config = &state.config;
    let txn = state.db.begin().await?;
    let counts = db::diagnostics::record(
        &txn,
        &Occurrence {
            kind: kind::SIGNATURE_FAILURE,
            key: &route.id,
            tenant_id: Some(&tenant.id),
            route_id: Some(&route.id),
            detail: Some(format!(
                "invalid or missing X-Twilio-Signature for {}",
                route.phone_number
            )),
        },
        config.alert_window,
    )
    .await?;
    let raise = route.environment == "production" && counts.in_window == i64::from(config.alert_threshold);
    if raise {
        let message = format!(
            "{} signature failures within {} s on production route {} ({})",
            counts.in_window,
            config.alert_window.as_secs(),
            route.id,
            route.phone_number
        );
        let alert = db::alerts::insert(
            &txn,
            db::alerts::NewAlert {
                tenant_id: Some(&tenant.id),
                route_id: Some(&route.id),
                kind: kind::SIGNATURE_FAILURE,
                message: message.clone(),
                failure_count: counts.in_window,
                window_start: counts.window_start,
            },
        )
        .await?;
        db::outbox::record(
            &txn,
            &tenant.id,
            "alert.raised",
            json!({
                "alert_id": alert.id,
                "kind": alert.kind,
                "route_id": route.id,
                "phone_number": route.phone_number,
                "failure_count": counts.in_window,
                "window_seconds": config.alert_window.as_secs(),
                "message": message,
            }),
        )
        .await?;
        tracing::error!(alert_id = %alert.id, route_id = %route.id, tenant_id = %tenant.id, "{message}");
        state.metrics.alerts.inc();
    }
    txn.commit().await?;
    Ok(raise)
}

/// Counts an operator diagnostic with a bounded key space.
pub async fn diagnostic<C: ConnectionTrait>(
    db: &C,
    occurrence: Occurrence<'_>,
    window: std::time::Duration,
) -> Result<(), Error> {
    db::diagnostics::record_bounded(db, &occurrence, window, MAX_UNKNOWN_ROUTE_KEYS).await?;
    Ok(())
}
