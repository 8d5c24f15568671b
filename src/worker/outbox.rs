//! Delivers outbox events to each tenant's `webhook_url`, signed per Standard Webhooks.
//!
//! Claiming an event leases it: its `next_attempt_at` moves past the delivery timeout and its
//! attempt count goes up, in one statement (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several
//! instances share the work). A worker that dies mid-delivery leaves the event to be claimed
//! again when the lease ends, so events survive restarts; a receiver may then see an event
//! twice and can drop the repeat by its `webhook-id`. A delivered event is never sent again.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    time::Duration,
};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use chrono::Utc;
use entity::{outbox_event, tenant};
use hmac::{Hmac, Mac};
use sea_orm::{
    sea_query::Expr, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, Statement,
};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::{db, metrics::Metrics, state::AppState};

/// Events claimed per round.
pub const BATCH: u64 = 128;

/// Delivers due events until `stop` is cancelled (between rounds): rounds follow each other
/// while they come back full (a backlog), otherwise the next round waits one poll interval, so
/// a steady trickle of events is delivered in batches rather than one round per event. Without
/// an HTTP client it returns at once (its supervisor restarts it).
pub async fn run(state: AppState, stop: CancellationToken) {
    let client = match http_client() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "event delivery needs an HTTP client");
            return;
        }
    };
    while !stop.is_cancelled() {
        match deliver_due(&state, &client).await {
            Ok(n) if n as u64 >= BATCH => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "outbox round failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(state.config.outbox_poll_interval) => {}
        }
    }
}

/// The HTTP client deliveries use (no redirects: a receiver answers, it does not forward).
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("stateset-voice/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Claims and delivers one batch of due events; returns how many were claimed. The batch's
/// tenants are loaded in one query and its results recorded in a few statements.
pub async fn deliver_due(state: &AppState, client: &reqwest::Client) -> Result<usize, DbErr> {
    let events = claim(state).await?;
    if events.is_empty() {
        return Ok(0);
    }
    let tenant_ids: BTreeSet<&str> = events.iter().map(|e| e.tenant_id.as_str()).collect();
    let tenants: HashMap<String, tenant::Model> = db::tenants::by_ids(&state.db, tenant_ids)
        .await?
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    let results = futures::future::join_all(
        events
            .iter()
            .map(|e| attempt(state, client, tenants.get(&e.tenant_id), e)),
    )
    .await;
    record(state, &events, results).await;
    Ok(events.len())
}

/// Leases up to [`BATCH`] due events to this worker and counts the attempt.
pub async fn claim(state: &AppState) -> Result<Vec<outbox_event::Model>, DbErr> {
    let db = &state.db;
    let backend = db.get_database_backend();
    let now = Utc::now();
    let lease_until = now + chrono::Duration::from_std(state.config.webhook_timeout * 3).unwrap_or_default();
    let lock = if backend == DbBackend::Postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE outbox_events SET next_attempt_at = $1, attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM outbox_events WHERE status = 'pending' AND next_attempt_at <= $2 \
         ORDER BY next_attempt_at LIMIT {BATCH}{lock}) RETURNING *"
    );
    outbox_event::Entity::find()
        .from_raw_sql(Statement::from_sql_and_values(
            backend,
            sql,
            [lease_until.into(), now.into()],
        ))
        .all(db)
        .await
}

/// The `webhook-signature` value for a message: `v1,` + base64 HMAC-SHA256 over
/// `id.timestamp.body`, keyed with the base64 part of the `whsec_` secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = crate::domain::admin::webhook_secret_key(secret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Some(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
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

/// How a delivery attempt ends for the event.
fn outcome(state: &AppState, event: &outbox_event::Model, result: &Result<(), Failure>) -> &'static str {
    match result {
        Ok(()) => "delivered",
        Err(Failure::Skip(_)) => "skipped",
        Err(Failure::Refuse(_)) => "dead",
        Err(Failure::Retry(_)) if event.attempts >= state.config.webhook_max_attempts => "dead",
        Err(Failure::Retry(_)) => "failed",
    }
}

/// Records the results of a round. Final results are written per (outcome, error, attempt)
/// group; a failure to retry is written alone, with its own backoff.
async fn record(state: &AppState, events: &[outbox_event::Model], results: Vec<Result<(), Failure>>) {
    let now = Utc::now();
    let mut finals: BTreeMap<(&'static str, Option<String>, i32), Vec<&str>> = BTreeMap::new();
    let mut updates = Vec::new();
    for (event, result) in events.iter().zip(results) {
        let outcome = outcome(state, event, &result);
        Metrics::outcome(&state.metrics.deliveries, outcome);
        let error = match result {
            Ok(()) => None,
            Err(Failure::Skip(e) | Failure::Refuse(e) | Failure::Retry(e)) => Some(e),
        };
        match (outcome, &error) {
            ("skipped", Some(e)) => {
                tracing::debug!(event_id = %event.id, reason = %e, "event not delivered");
            }
            (_, Some(e)) => {
                tracing::warn!(event_id = %event.id, attempts = event.attempts, outcome, error = %e, "event delivery failed");
            }
            _ => {}
        }
        if outcome == "failed" {
            let delay = backoff(state.config.webhook_retry_base, event.attempts);
            let next = now + chrono::Duration::from_std(delay).unwrap_or_default();
            updates.push(
                leased(&event.id, event.attempts)
                    .col_expr(outbox_event::Column::LastError, Expr::value(error))
                    .col_expr(outbox_event::Column::NextAttemptAt, Expr::value(next)),
            );
        } else {
            finals
                .entry((outcome, error, event.attempts))
                .or_default()
                .push(&event.id);
        }
    }
    for ((outcome, error, attempts), ids) in finals {
        let mut update = outbox_event::Entity::update_many()
            .col_expr(outbox_event::Column::Status, Expr::value(outcome))
            .col_expr(outbox_event::Column::LastError, Expr::value(error))
            .filter(outbox_event::Column::Id.is_in(ids))
            .filter(outbox_event::Column::Attempts.eq(attempts));
        if outcome == "delivered" {
            update = update.col_expr(outbox_event::Column::DeliveredAt, Expr::value(Some(now)));
        }
        updates.push(update);
    }
    for update in updates {
        if let Err(e) = update.exec(&state.db).await {
            tracing::error!(error = %e, "recording delivery results failed");
        }
    }
}

/// An update of one event that only the holder of its lease (its attempt count) can make.
fn leased(id: &str, attempts: i32) -> sea_orm::UpdateMany<outbox_event::Entity> {
    outbox_event::Entity::update_many()
        .filter(outbox_event::Column::Id.eq(id))
        .filter(outbox_event::Column::Attempts.eq(attempts))
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
    client: &reqwest::Client,
    tenant: Option<&tenant::Model>,
    event: &outbox_event::Model,
) -> Result<(), Failure> {
    let tenant = tenant.ok_or_else(|| Failure::Skip("tenant deleted".to_owned()))?;
    let url = tenant
        .webhook_url
        .clone()
        .ok_or_else(|| Failure::Skip("tenant has no webhook_url".to_owned()))?;
    if state.config.webhook_deny_private {
        refuse_private(&url).await.map_err(Failure::Refuse)?;
    }
    let timestamp = Utc::now().timestamp();
    let signature = sign(&tenant.webhook_secret, &event.id, timestamp, &event.payload)
        .ok_or_else(|| Failure::Refuse("the tenant's webhook secret is not valid base64".to_owned()))?;
    let response = client
        .post(&url)
        .timeout(state.config.webhook_timeout)
        .header("content-type", "application/json")
        .header("webhook-id", &event.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(event.payload.clone())
        .send()
        .await
        .map_err(|e| {
            Failure::Retry(if e.is_timeout() {
                "timed out".to_owned()
            } else {
                e.to_string()
            })
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

/// The SSRF guard: refuses URLs whose host resolves to a loopback, private, link-local or
/// otherwise internal address.
pub async fn refuse_private(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("webhook_url: {e}"))?;
    let host = parsed
        .host_str()
        .ok_or("webhook_url has no host")?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("resolving {host}: {e}"))?
            .map(|a| a.ip())
            .collect(),
    };
    match addrs.iter().find(|ip| is_internal(ip)) {
        Some(ip) => Err(format!(
            "refused: {host} resolves to internal address {ip} (VOICE_WEBHOOK_DENY_PRIVATE)"
        )),
        None => Ok(()),
    }
}

fn is_internal(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| is_internal(&IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example in the Standard Webhooks specification.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(
            sig.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }

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
    async fn ssrf_guard() {
        for url in [
            "http://127.0.0.1/x",
            "http://10.1.2.3/",
            "http://192.168.0.1",
            "http://[::1]:8080/",
            "http://169.254.169.254/latest",
            "http://100.64.0.1/",
        ] {
            assert!(refuse_private(url).await.is_err(), "{url}");
        }
        assert!(refuse_private("https://93.184.216.34/hook").await.is_ok());
    }
}
