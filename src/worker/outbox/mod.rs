//! Delivers outbox events to each tenant's `webhook_url`, signed per Standard Webhooks
//! ([`signing`]).
//!
//! Claiming an event leases it ([`db::outbox::claim`]) for three delivery timeouts. A worker
//! that dies mid-delivery leaves the event to be claimed again when the lease ends, so events
//! survive restarts; a receiver may then see an event twice and can drop the repeat by its
//! `webhook-id`. A delivered event is never sent again.
pub mod signing;

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use chrono::Utc;
use entity::{outbox_event, states::OutboxStatus, tenant};
use sea_orm::DbErr;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::{
    config::Outbox,
    db::{
        self,
        outbox::{Attempt, Next},
    },
    metrics::Metrics,
    net::{
        resolver::{self, GuardedResolver, Lookup},
        ssrf,
    },
    state::AppState,
};
pub use signing::sign;

/// Events claimed per round.
pub const BATCH: u64 = 128;

/// Delivers due events until `stop` is cancelled (between rounds): rounds follow each other
/// while they come back full (a backlog), otherwise the next round waits one poll interval, so
/// a steady trickle of events is delivered in batches rather than one round per event. Without
/// an HTTP client it returns at once (its supervisor restarts it).
pub async fn run(state: AppState, stop: CancellationToken) {
    let client = match DeliveryClient::new(&state.config.outbox) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "event delivery needs an HTTP client");
            return;
        }
    };
    while !stop.is_cancelled() {
        // During a database outage there is nothing to deliver from (and nothing to log).
        let round = if state.outage.circuit_open() {
            Ok(0)
        } else {
            deliver_due(&state, &client).await
        };
        match round {
            Ok(n) if n as u64 >= BATCH => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "outbox round failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(state.config.outbox.poll_interval) => {}
        }
    }
}

/// The HTTP client deliveries use (no redirects: a receiver answers, it does not forward),
/// with the destination policy it enforces.
#[derive(Clone)]
pub struct DeliveryClient {
    http: reqwest::Client,
    deny_private: bool,
}

impl DeliveryClient {
    /// The client for `config`; with `VOICE_WEBHOOK_DENY_PRIVATE`, names are resolved by the
    /// system resolver through the SSRF guard.
    pub fn new(config: &Outbox) -> reqwest::Result<Self> {
        Self::build(config, GuardedResolver::system())
    }

    /// As [`new`](Self::new), names resolved by `lookup` when guarded.
    pub fn with_lookup(config: &Outbox, lookup: Arc<dyn Lookup>) -> reqwest::Result<Self> {
        Self::build(config, GuardedResolver::new(lookup))
    }

    fn build(config: &Outbox, resolver: GuardedResolver) -> reqwest::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("stateset-voice/", env!("CARGO_PKG_VERSION")));
        if config.deny_private {
            // Every connection goes to an address the guard checked: resolved once, by the
            // guard, and never through a proxy (which would resolve the name again itself).
            builder = builder.dns_resolver(Arc::new(resolver)).no_proxy();
        }
        Ok(Self {
            http: builder.build()?,
            deny_private: config.deny_private,
        })
    }
}

/// Claims and delivers one batch of due events; returns how many were claimed. The batch's
/// tenants are loaded in one query and its results recorded in a few statements.
pub async fn deliver_due(state: &AppState, client: &DeliveryClient) -> Result<usize, DbErr> {
    let events = claim(state).await?;
    if events.is_empty() {
        return Ok(0);
    }
    let tenant_ids: BTreeSet<&str> = events.iter().map(|e| e.tenant_id.as_str()).collect();
    let tenants: HashMap<String, tenant::Model> =
        db::tenants::by_ids(&state.db, &state.config.secrets, tenant_ids)
            .await?
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect();
    let spans: Vec<tracing::Span> = events.iter().map(delivery_span).collect();
    let results = futures::future::join_all(
        events
            .iter()
            .zip(&spans)
            .map(|(e, span)| attempt(state, client, tenants.get(&e.tenant_id), e).instrument(span.clone())),
    )
    .await;
    record(state, &events, &spans, results).await;
    Ok(events.len())
}

/// Leases up to [`BATCH`] due events to this worker and counts the attempt.
pub async fn claim(state: &AppState) -> Result<Vec<outbox_event::Model>, DbErr> {
    let now = Utc::now();
    let lease_until = now + chrono::Duration::from_std(state.config.outbox.timeout * 3).unwrap_or_default();
    db::outbox::claim(&state.db, now, lease_until, BATCH).await
}

/// Delay before retry `attempt` (1-based): base × 2^(attempt−1), at most an hour, ±20 % jitter.
pub fn backoff(base: Duration, attempt: i32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << (attempt - 1).clamp(0, 20) as u32)
        .min(Duration::from_secs(3600));
    // Without the OS random source, no jitter rather than no delivery.
    let mut r = [0u8; 2];
    let jitter = match getrandom::fill(&mut r) {
        Ok(()) => 0.8 + 0.4 * f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX),
        Err(_) => 1.0,
    };
    exp.mul_f64(jitter)
}

/// How a delivery attempt ends for the event: a final status, or `None` to try again.
fn outcome(
    state: &AppState,
    event: &outbox_event::Model,
    result: &Result<(), Failure>,
) -> Option<OutboxStatus> {
    match result {
        Ok(()) => Some(OutboxStatus::Delivered),
        Err(Failure::Skip(_)) => Some(OutboxStatus::Skipped),
        Err(Failure::Refuse(_)) => Some(OutboxStatus::Dead),
        Err(Failure::Retry(_)) if event.attempts >= state.config.outbox.max_attempts => {
            Some(OutboxStatus::Dead)
        }
        Err(Failure::Retry(_)) => None,
    }
}

/// The span of one event's delivery: the event, its tenant, and for an event about a call the
/// `call_sid` and `route_id` in its data, so the lines about a call's events carry them.
fn delivery_span(event: &outbox_event::Model) -> tracing::Span {
    let payload: Option<serde_json::Value> = serde_json::from_str(&event.payload).ok();
    let data = |key: &str| {
        payload
            .as_ref()
            .and_then(|p| p["data"].get(key))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    tracing::info_span!(
        "event_delivery",
        event_id = %event.id,
        event_type = event.event_type.as_str(),
        tenant_id = %event.tenant_id,
        call_sid = data("call_sid"),
        route_id = data("route_id"),
    )
}

/// The `voice_webhook_deliveries_total` label of an outcome.
fn outcome_label(outcome: Option<OutboxStatus>) -> &'static str {
    outcome.map_or(crate::metrics::DELIVERY_RETRIED, OutboxStatus::as_str)
}

/// Records the results of a round: counts and logs each, and stores them (a failure to
/// retry gets its backoff).
async fn record(
    state: &AppState,
    events: &[outbox_event::Model],
    spans: &[tracing::Span],
    results: Vec<Result<(), Failure>>,
) {
    let now = Utc::now();
    let mut attempts = Vec::with_capacity(events.len());
    for ((event, span), result) in events.iter().zip(spans).zip(results) {
        let _in_span = span.enter();
        let outcome = outcome(state, event, &result);
        Metrics::outcome(&state.metrics.deliveries, outcome_label(outcome));
        let error = match result {
            Ok(()) => None,
            Err(Failure::Skip(e) | Failure::Refuse(e) | Failure::Retry(e)) => Some(e),
        };
        match (outcome, &error) {
            (Some(OutboxStatus::Skipped), Some(e)) => {
                tracing::debug!(event_id = %event.id, reason = %e, "event not delivered");
            }
            (_, Some(e)) => {
                tracing::warn!(event_id = %event.id, attempts = event.attempts, outcome = outcome_label(outcome), error = %e, "event delivery failed");
            }
            _ => {}
        }
        let next = match outcome {
            Some(status) => Next::Final(status),
            None => {
                let delay = backoff(state.config.outbox.retry_base, event.attempts);
                Next::RetryAt(now + chrono::Duration::from_std(delay).unwrap_or_default())
            }
        };
        attempts.push(Attempt {
            event_id: &event.id,
            attempts: event.attempts,
            error,
            next,
        });
    }
    for e in db::outbox::record_attempts(&state.db, attempts, now).await {
        tracing::error!(error = %e, "recording delivery results failed");
    }
}

enum Failure {
    /// Nothing to deliver to.
    Skip(String),
    /// Never deliverable (refused destination).
    Refuse(String),
    /// Worth retrying.
    Retry(String),
}

async fn attempt(
    state: &AppState,
    client: &DeliveryClient,
    tenant: Option<&tenant::Model>,
    event: &outbox_event::Model,
) -> Result<(), Failure> {
    let tenant = tenant.ok_or_else(|| Failure::Skip("tenant deleted".to_owned()))?;
    let url = tenant
        .webhook_url
        .clone()
        .ok_or_else(|| Failure::Skip(db::outbox::NO_WEBHOOK_URL.to_owned()))?;
    if client.deny_private {
        // IP literals are checked here; names where they are resolved (`GuardedResolver`).
        ssrf::check_url(&url).map_err(|refused| Failure::Refuse(refusal(&refused)))?;
    }
    let timestamp = Utc::now().timestamp();
    let signature = sign(&tenant.webhook_secret, &event.id, timestamp, &event.payload)
        .ok_or_else(|| Failure::Refuse("the tenant's webhook secret is not valid base64".to_owned()))?;
    let response = client
        .http
        .post(&url)
        .timeout(state.config.outbox.timeout)
        .header("content-type", "application/json")
        .header("webhook-id", &event.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(event.payload.clone())
        .send()
        .await
        .map_err(|e| match resolver::refusal_in(&e) {
            Some(refused) => Failure::Refuse(refusal(refused)),
            None if e.is_timeout() => Failure::Retry("timed out".to_owned()),
            None => Failure::Retry(e.to_string()),
        })?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(Failure::Retry(format!(
            "receiver answered HTTP {}",
            response.status().as_u16()
        )))
    }
}

/// The stored reason for a `webhook_url` the SSRF guard refused.
fn refusal(refused: &ssrf::Refused) -> String {
    match refused {
        ssrf::Refused::Url(e) => format!("webhook_url: {e}"),
        ssrf::Refused::NoHost => "webhook_url has no host".to_owned(),
        resolve @ ssrf::Refused::Resolve { .. } => resolve.to_string(),
        internal @ ssrf::Refused::Internal { .. } => {
            format!("refused: {internal} (VOICE_WEBHOOK_DENY_PRIVATE)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        let base = Duration::from_secs(2);
        for attempt in 1..6 {
            let d = backoff(base, attempt).as_secs_f64();
            let nominal = 2f64 * 2f64.powi(attempt - 1);
            assert!(
                d >= nominal * 0.8 - 1e-9 && d <= nominal * 1.2 + 1e-9,
                "attempt {attempt}: {d}"
            );
        }
        assert!(backoff(base, 40) <= Duration::from_secs(4320));
    }

    #[tokio::test]
    async fn refusals_keep_their_stored_reasons() {
        let reason = |url: &str| refusal(&ssrf::check_url(url).unwrap_err());
        assert_eq!(
            reason("http://127.0.0.1/x"),
            "refused: 127.0.0.1 resolves to internal address 127.0.0.1 (VOICE_WEBHOOK_DENY_PRIVATE)"
        );
        assert_eq!(reason("unix:/run/socket"), "webhook_url has no host");
        assert_eq!(reason("no url"), "webhook_url: relative URL without a base");
        // A name refused where it is resolved reads the same.
        let resolved = GuardedResolver::system().checked("localhost").await.unwrap_err();
        let reason = refusal(&resolved);
        assert!(
            reason.starts_with("refused: localhost resolves to internal address ")
                && reason.ends_with(" (VOICE_WEBHOOK_DENY_PRIVATE)"),
            "{reason}"
        );
    }
}
