//! Delivers outbox events to each tenant's `webhook_url`, signed per Standard Webhooks.
//!
//! Claiming an event leases it: its `next_attempt_at` moves past the delivery timeout and its
//! attempt count goes up, in one statement (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several
//! instances share the work). A worker that dies mid-delivery leaves the event to be claimed
//! again when the lease ends, so events survive restarts; a receiver may then see an event
//! twice and can drop the repeat by its `webhook-id`. A delivered event is never sent again.
use std::{net::IpAddr, time::Duration};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use chrono::Utc;
use entity::outbox_event;
use hmac::{Hmac, Mac};
use sea_orm::{
    sea_query::Expr, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, Statement,
};
use sha2::Sha256;

use crate::{db, metrics::Metrics, state::AppState};

/// Events claimed per round.
pub const BATCH: u64 = 32;

/// Delivers due events until the process ends.
pub async fn run(state: AppState) {
    let client = http_client();
    loop {
        match deliver_due(&state, &client).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "outbox round failed"),
        }
        tokio::time::sleep(state.config.outbox_poll_interval).await;
    }
}

/// The HTTP client deliveries use (no redirects: a receiver answers, it does not forward).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("stateset-voice/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("HTTP client builds")
}

/// Claims and delivers one batch of due events; returns how many were claimed.
pub async fn deliver_due(state: &AppState, client: &reqwest::Client) -> Result<usize, DbErr> {
    let events = claim(state).await?;
    let n = events.len();
    futures::future::join_all(events.into_iter().map(|e| deliver(state, client, e))).await;
    Ok(n)
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
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Some(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// Delay before retry `attempt` (1-based): base × 2^(attempt−1), at most an hour, ±20 % jitter.
pub fn backoff(base: Duration, attempt: i32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << (attempt - 1).clamp(0, 20) as u32)
        .min(Duration::from_secs(3600));
    let mut r = [0u8; 2];
    getrandom::fill(&mut r).expect("the OS random source is available");
    let jitter = 0.8 + 0.4 * f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX);
    exp.mul_f64(jitter)
}

async fn deliver(state: &AppState, client: &reqwest::Client, event: outbox_event::Model) {
    let result = attempt(state, client, &event).await;
    let outcome = match result {
        Ok(()) => "delivered",
        Err(Failure::Skip(_)) => "skipped",
        Err(Failure::Refuse(_)) => "dead",
        Err(Failure::Retry(_)) if event.attempts >= state.config.webhook_max_attempts => "dead",
        Err(Failure::Retry(_)) => "failed",
    };
    Metrics::outcome(&state.metrics.deliveries, outcome);
    let error = match &result {
        Ok(()) => None,
        Err(Failure::Skip(e) | Failure::Refuse(e) | Failure::Retry(e)) => Some(e.clone()),
    };
    if let Some(e) = &error {
        tracing::warn!(event_id = %event.id, attempts = event.attempts, outcome, error = %e, "event delivery failed");
    }
    let now = Utc::now();
    let mut update =
        outbox_event::Entity::update_many().col_expr(outbox_event::Column::LastError, Expr::value(error));
    update = match outcome {
        "delivered" => update
            .col_expr(outbox_event::Column::Status, Expr::value("delivered"))
            .col_expr(outbox_event::Column::DeliveredAt, Expr::value(Some(now))),
        "failed" => {
            let delay = backoff(state.config.webhook_retry_base, event.attempts);
            let next = now + chrono::Duration::from_std(delay).unwrap_or_default();
            update.col_expr(outbox_event::Column::NextAttemptAt, Expr::value(next))
        }
        other => update.col_expr(outbox_event::Column::Status, Expr::value(other)),
    };
    // Only the holder of this lease may record its result.
    let recorded = update
        .filter(outbox_event::Column::Id.eq(&event.id))
        .filter(outbox_event::Column::Attempts.eq(event.attempts))
        .exec(&state.db)
        .await;
    if let Err(e) = recorded {
        tracing::error!(event_id = %event.id, error = %e, "recording a delivery result failed");
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
    client: &reqwest::Client,
    event: &outbox_event::Model,
) -> Result<(), Failure> {
    let tenant = db::tenants::get(&state.db, &event.tenant_id)
        .await
        .map_err(|e| Failure::Retry(format!("loading the tenant: {e}")))?
        .ok_or_else(|| Failure::Skip("tenant deleted".to_owned()))?;
    let url = tenant
        .webhook_url
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
