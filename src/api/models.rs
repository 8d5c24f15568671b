//! JSON shapes of the admin API and their conversions from stored records.
use chrono::{DateTime, Utc};
pub use entity::states::{
    CallStatus, DiagnosticKind, EndReason, EventType, FallbackReason, MediaSessionStatus, OutboxStatus,
    Outcome, RouteEnvironment, TenantEnvironment,
};
use entity::{alert, call, diagnostic, media_session, outbox_event, route, tenant};
use poem_openapi::{types::MaybeUndefined, Object, Union};

use crate::domain::fallback::FallbackAction;

/// Say a message (optional), then transfer the call.
#[derive(Debug, Clone, Object)]
pub struct DialFallback {
    /// E.164 number to dial.
    pub number: String,
    /// Said before dialling.
    #[oai(skip_serializing_if_is_none)]
    pub message: Option<String>,
}

/// Say a message, then hang up.
#[derive(Debug, Clone, Object)]
pub struct SayFallback {
    pub message: String,
}

/// Continue with the TwiML at a URL (a callback workflow), fetched with POST.
#[derive(Debug, Clone, Object)]
pub struct RedirectFallback {
    pub url: String,
}

/// What a caller gets when the media stream is unavailable.
#[derive(Debug, Clone, Union)]
#[oai(discriminator_name = "type", one_of)]
pub enum Fallback {
    #[oai(mapping = "dial")]
    Dial(DialFallback),
    #[oai(mapping = "say")]
    Say(SayFallback),
    #[oai(mapping = "redirect")]
    Redirect(RedirectFallback),
}

impl From<Fallback> for FallbackAction {
    fn from(f: Fallback) -> Self {
        match f {
            Fallback::Dial(d) => Self::Dial {
                number: d.number,
                message: d.message,
            },
            Fallback::Say(s) => Self::Say { message: s.message },
            Fallback::Redirect(r) => Self::Redirect { url: r.url },
        }
    }
}

impl From<FallbackAction> for Fallback {
    fn from(a: FallbackAction) -> Self {
        match a {
            FallbackAction::Dial { number, message } => Self::Dial(DialFallback { number, message }),
            FallbackAction::Say { message } => Self::Say(SayFallback { message }),
            FallbackAction::Redirect { url } => Self::Redirect(RedirectFallback { url }),
        }
    }
}

fn stored_fallback(text: Option<&str>) -> Option<Fallback> {
    text.and_then(|t| FallbackAction::from_json(t).ok())
        .map(Into::into)
}

/// A tenant. Auth tokens, the shared key and the webhook secret are write-only.
#[derive(Debug, Object)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub account_sid: String,
    pub environment: TenantEnvironment,
    #[oai(nullable)]
    pub webhook_url: Option<String>,
    #[oai(nullable)]
    pub default_fallback: Option<Fallback>,
    /// Whether a secondary auth token (rotation) is set.
    pub has_secondary_auth_token: bool,
    /// Whether an HMAC-SHA256 shared key is set.
    pub has_shared_key: bool,
    /// Only in the response that created the tenant, and only when the service generated it.
    #[oai(skip_serializing_if_is_none)]
    pub webhook_secret: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<tenant::Model> for Tenant {
    fn from(t: tenant::Model) -> Self {
        Self {
            default_fallback: stored_fallback(t.default_fallback.as_deref()),
            has_secondary_auth_token: t.secondary_auth_token.is_some(),
            has_shared_key: t.shared_key.is_some(),
            id: t.id,
            name: t.name,
            account_sid: t.account_sid,
            environment: t.environment,
            webhook_url: t.webhook_url,
            webhook_secret: None,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// A new tenant.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct TenantCreate {
    pub name: String,
    /// `AC` + 32 hex digits.
    pub account_sid: String,
    /// Twilio auth token that signs this account's webhooks.
    #[oai(write_only)]
    pub auth_token: String,
    /// A second accepted auth token, for rotation.
    #[oai(write_only)]
    pub secondary_auth_token: Option<String>,
    /// Customer-managed HMAC-SHA256 webhook key.
    #[oai(write_only)]
    pub shared_key: Option<String>,
    /// Default `production`.
    pub environment: Option<TenantEnvironment>,
    /// Where events are delivered (http or https).
    pub webhook_url: Option<String>,
    /// `whsec_` + base64 of at least 24 bytes; generated and returned once when omitted.
    #[oai(write_only)]
    pub webhook_secret: Option<String>,
    pub default_fallback: Option<Fallback>,
}

/// Changes to a tenant; `null` clears an optional field.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct TenantPatch {
    pub name: Option<String>,
    #[oai(write_only)]
    pub auth_token: Option<String>,
    #[oai(write_only, nullable)]
    pub secondary_auth_token: MaybeUndefined<String>,
    #[oai(write_only, nullable)]
    pub shared_key: MaybeUndefined<String>,
    pub environment: Option<TenantEnvironment>,
    #[oai(nullable)]
    pub webhook_url: MaybeUndefined<String>,
    /// Rotates the webhook signing secret.
    #[oai(write_only)]
    pub webhook_secret: Option<String>,
    #[oai(nullable)]
    pub default_fallback: MaybeUndefined<Fallback>,
}

/// A phone route.
#[derive(Debug, Object)]
pub struct Route {
    pub id: String,
    pub tenant_id: String,
    /// E.164.
    pub phone_number: String,
    #[oai(nullable)]
    pub label: Option<String>,
    pub environment: RouteEnvironment,
    pub enabled: bool,
    #[oai(nullable)]
    pub fallback: Option<Fallback>,
    /// WebSocket URL of the agent runtime; the built-in echo agent when absent.
    #[oai(nullable)]
    pub agent_url: Option<String>,
    /// HTTP(S) URL the health check GETs (2xx = healthy); when absent the check only opens a
    /// TCP connection to the agent's host and port.
    #[oai(nullable)]
    pub agent_health_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<route::Model> for Route {
    fn from(r: route::Model) -> Self {
        Self {
            fallback: stored_fallback(r.fallback.as_deref()),
            id: r.id,
            tenant_id: r.tenant_id,
            phone_number: r.phone_number,
            label: r.label,
            environment: r.environment,
            enabled: r.enabled,
            agent_url: r.agent_url,
            agent_health_url: r.agent_health_url,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A new route.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct RouteCreate {
    /// E.164, formatting allowed (`+1 (555) 555-1234`).
    pub phone_number: String,
    pub label: Option<String>,
    /// Default `production`.
    pub environment: Option<RouteEnvironment>,
    /// Default true.
    pub enabled: Option<bool>,
    pub fallback: Option<Fallback>,
    /// ws:// or wss:// URL of the agent runtime.
    pub agent_url: Option<String>,
    /// http:// or https:// URL of the agent's health endpoint (GET, 2xx = healthy).
    pub agent_health_url: Option<String>,
}

/// Changes to a route; `null` clears an optional field.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct RoutePatch {
    pub phone_number: Option<String>,
    #[oai(nullable)]
    pub label: MaybeUndefined<String>,
    pub environment: Option<RouteEnvironment>,
    pub enabled: Option<bool>,
    #[oai(nullable)]
    pub fallback: MaybeUndefined<Fallback>,
    #[oai(nullable)]
    pub agent_url: MaybeUndefined<String>,
    #[oai(nullable)]
    pub agent_health_url: MaybeUndefined<String>,
}

/// A media stream session of a call.
#[derive(Debug, Object)]
pub struct MediaSession {
    pub id: String,
    #[oai(nullable)]
    pub stream_sid: Option<String>,
    pub status: MediaSessionStatus,
    /// Why the stream ended; null while it is open.
    #[oai(nullable)]
    pub end_reason: Option<EndReason>,
    pub received_stop: bool,
    pub inbound_frames: i64,
    pub outbound_frames: i64,
    pub malformed_frames: i64,
    pub started_at: DateTime<Utc>,
    #[oai(nullable)]
    pub ended_at: Option<DateTime<Utc>>,
}

impl From<media_session::Model> for MediaSession {
    fn from(m: media_session::Model) -> Self {
        Self {
            id: m.id,
            stream_sid: m.stream_sid,
            status: m.status,
            end_reason: m.end_reason,
            received_stop: m.received_stop,
            inbound_frames: m.inbound_frames,
            outbound_frames: m.outbound_frames,
            malformed_frames: m.malformed_frames,
            started_at: m.started_at,
            ended_at: m.ended_at,
        }
    }
}

/// A call record.
#[derive(Debug, Object)]
pub struct Call {
    pub id: String,
    pub call_sid: String,
    pub tenant_id: String,
    pub route_id: String,
    pub from: String,
    pub to: String,
    /// Twilio's latest CallStatus.
    pub status: CallStatus,
    pub outcome: Outcome,
    #[oai(nullable)]
    pub fallback_reason: Option<FallbackReason>,
    /// Deliveries of the voice webhook for this call (1 + retries).
    pub attempts: i32,
    #[oai(nullable)]
    pub error_code: Option<String>,
    #[oai(nullable)]
    pub error_url: Option<String>,
    #[oai(nullable)]
    pub duration_secs: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[oai(nullable)]
    pub ended_at: Option<DateTime<Utc>>,
    pub media_sessions: Vec<MediaSession>,
}

impl Call {
    /// A call with its media sessions.
    pub fn new(c: call::Model, sessions: Vec<media_session::Model>) -> Self {
        Self {
            id: c.id,
            call_sid: c.call_sid,
            tenant_id: c.tenant_id,
            route_id: c.route_id,
            from: c.from_number,
            to: c.to_number,
            status: c.status,
            outcome: c.outcome,
            fallback_reason: c.fallback_reason,
            attempts: c.attempts,
            error_code: c.error_code,
            error_url: c.error_url,
            duration_secs: c.duration_secs,
            created_at: c.created_at,
            updated_at: c.updated_at,
            ended_at: c.ended_at,
            media_sessions: sessions.into_iter().map(Into::into).collect(),
        }
    }
}

/// An aggregated operator diagnostic.
#[derive(Debug, Object)]
pub struct Diagnostic {
    pub id: String,
    pub kind: DiagnosticKind,
    /// The called number, route id or CallSid the occurrences share.
    pub key: String,
    #[oai(nullable)]
    pub tenant_id: Option<String>,
    #[oai(nullable)]
    pub route_id: Option<String>,
    #[oai(nullable)]
    pub detail: Option<String>,
    pub count: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

impl From<diagnostic::Model> for Diagnostic {
    fn from(d: diagnostic::Model) -> Self {
        Self {
            id: d.id,
            kind: d.kind,
            key: d.key,
            tenant_id: d.tenant_id,
            route_id: d.route_id,
            detail: d.detail,
            count: d.count,
            first_seen: d.first_seen,
            last_seen: d.last_seen,
        }
    }
}

/// A raised alert.
#[derive(Debug, Object)]
pub struct Alert {
    pub id: String,
    #[oai(nullable)]
    pub tenant_id: Option<String>,
    #[oai(nullable)]
    pub route_id: Option<String>,
    pub kind: DiagnosticKind,
    pub message: String,
    pub failure_count: i64,
    pub window_start: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl From<alert::Model> for Alert {
    fn from(a: alert::Model) -> Self {
        Self {
            id: a.id,
            tenant_id: a.tenant_id,
            route_id: a.route_id,
            kind: a.kind,
            message: a.message,
            failure_count: a.failure_count,
            window_start: a.window_start,
            created_at: a.created_at,
        }
    }
}

/// A downstream webhook event and its delivery state.
#[derive(Debug, Object)]
pub struct Event {
    pub id: String,
    pub tenant_id: String,
    #[oai(rename = "type")]
    pub event_type: EventType,
    /// The body delivered downstream.
    pub payload: serde_json::Value,
    pub status: OutboxStatus,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    #[oai(nullable)]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    #[oai(nullable)]
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<outbox_event::Model> for Event {
    fn from(e: outbox_event::Model) -> Self {
        Self {
            payload: serde_json::from_str(&e.payload).unwrap_or(serde_json::Value::Null),
            id: e.id,
            tenant_id: e.tenant_id,
            event_type: e.event_type,
            status: e.status,
            attempts: e.attempts,
            next_attempt_at: e.next_attempt_at,
            last_error: e.last_error,
            created_at: e.created_at,
            delivered_at: e.delivered_at,
        }
    }
}

/// A page of a list.
#[derive(Debug, Object)]
pub struct List<T: poem_openapi::types::ParseFromJSON + poem_openapi::types::ToJSON> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

impl<T: poem_openapi::types::ParseFromJSON + poem_openapi::types::ToJSON> List<T> {
    /// Converts a page of records.
    pub fn from_page<M>(page: crate::db::Page<M>) -> Self
    where
        T: From<M>,
    {
        Self {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }
    }
}
