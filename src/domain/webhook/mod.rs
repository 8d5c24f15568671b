//! The voice webhooks as one pipeline:
//!
//! 1. [`authenticate`]: select the signing key from the route, check the signature and the
//!    `AccountSid`, and only then parse the form into typed fields ([`VoiceForm`]);
//! 2. [`decide`]: a pure function of route, tenant, a runtime snapshot and what happened;
//! 3. answer: [`AnswerStore`] stores the answer once per (CallSid, kind) and replays it to
//!    retries, hiding the answer cache, the group-commit writer and the replay transaction.
//!
//! Status callbacks share step 1 and have their own recording step ([`status`]).
mod answer;
mod authenticate;
mod decide;
#[cfg(test)]
pub(crate) mod fixtures;
mod status;

use entity::{
    id::{RouteId, TenantId},
    states::{DiagnosticKind, FallbackReason, WebhookKind},
};
use sea_orm::DbErr;

pub use self::{
    answer::{stored_twiml, AnswerStore},
    authenticate::{authenticate, signature_valid, Authenticated, VoiceForm},
    decide::{decide, Decision, Situation},
    status::StatusReply,
};
use super::{
    alerts::{Diagnostics, Occurrence},
    fallback::{self, FallbackAction},
    outage::Outage,
    runtime::Runtime,
    token::{MintedToken, TokenIssuer},
    Error,
};
use crate::{
    config::TokenPlacement,
    db::{cache::RouteCache, Pool},
    metrics::Metrics,
    twilio::{
        form::FormParams,
        twiml::{self, Verb},
    },
};

/// A webhook as received, before anything in it is trusted.
#[derive(Debug, Clone)]
pub struct InboundWebhook {
    /// The URL Twilio signed, as reconstructed from the public base URL.
    pub url: String,
    pub params: FormParams,
    pub signature: Option<String>,
    /// `X-Twilio-Webhooks-Signature-Settings`, if sent.
    pub signature_settings: Option<String>,
    /// A route id named in the webhook URL (`?route_id=`), which takes precedence over `To`.
    pub route_hint: Option<String>,
}

/// Which voice webhook (one answered with TwiML) a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoiceKind {
    /// The number's voice URL.
    Incoming,
    /// The number's Fallback URL, called when the voice URL failed.
    Fallback,
    /// The `<Connect action>` URL, called when a stream ends.
    StreamEnded,
}

impl VoiceKind {
    /// The stored kind of its answer.
    pub fn stored(self) -> WebhookKind {
        match self {
            Self::Incoming => WebhookKind::Incoming,
            Self::Fallback => WebhookKind::Fallback,
            Self::StreamEnded => WebhookKind::StreamEnded,
        }
    }
}

/// Why a webhook is refused. Each response enum of the API maps it once.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// A malformed body, or a required field missing after a valid signature (400).
    #[error("{0}")]
    BadRequest(String),
    /// A missing or invalid signature, or the wrong account (403).
    #[error("{0}")]
    Forbidden(&'static str),
    /// The CallSid belongs to another route (409).
    #[error("{0}")]
    Conflict(String),
    /// The answer could not be stored (503: Twilio tries the Fallback URL or retries).
    #[error(transparent)]
    Failed(#[from] Error),
}

impl From<DbErr> for Rejection {
    fn from(err: DbErr) -> Self {
        Self::Failed(err.into())
    }
}

/// The settings the voice webhooks read.
#[derive(Debug, Clone)]
pub struct VoiceSettings {
    /// What callers to an unknown number hear.
    pub unknown_route_message: String,
    /// What callers hear when neither route nor tenant configures a fallback.
    pub fallback_message: String,
    /// The media stream WebSocket URL, without a trailing slash.
    pub stream_url: String,
    pub token_placement: TokenPlacement,
    /// The `<Connect action>` URL.
    pub stream_ended_url: String,
    /// Concurrent media streams this instance accepts.
    pub max_streams: usize,
}

/// What the voice webhooks need of the application, and nothing more.
#[derive(Clone, Copy)]
pub struct WebhookContext<'a> {
    pub db: &'a Pool,
    pub routes: &'a RouteCache,
    pub answers: &'a AnswerStore,
    pub tokens: &'a TokenIssuer,
    pub runtime: &'a Runtime,
    pub diagnostics: &'a Diagnostics,
    pub metrics: &'a Metrics,
    pub settings: &'a VoiceSettings,
    pub outage: &'a Outage,
}

/// Answers a voice webhook with TwiML, in the order the contract fixes.
pub async fn voice(
    ctx: WebhookContext<'_>,
    kind: VoiceKind,
    hook: InboundWebhook,
) -> Result<String, Rejection> {
    let Some(call) = authenticate(ctx, &hook, false).await? else {
        return Ok(twiml::render(&[
            Verb::Say(ctx.settings.unknown_route_message.clone()),
            Verb::Hangup,
        ]));
    };
    call.record_in_span();
    match kind {
        VoiceKind::Incoming | VoiceKind::Fallback => answer::new_call(ctx, &call, kind).await,
        // What the stream did is in the database.
        VoiceKind::StreamEnded if call.offline => Err(Rejection::Failed(Error::Unavailable)),
        VoiceKind::StreamEnded => answer::stream_ended(ctx, &call).await,
    }
}

/// Records a status callback.
pub async fn call_status(ctx: WebhookContext<'_>, hook: InboundWebhook) -> Result<StatusReply, Rejection> {
    let call = authenticate(ctx, &hook, true).await?;
    if let Some(call) = &call {
        call.record_in_span();
    }
    match call {
        Some(call) if call.offline => Err(Rejection::Failed(Error::Unavailable)),
        Some(call) => status::record(ctx, &call).await,
        // Counted as a diagnostic; there is no call to update.
        None => Ok(StatusReply::Recorded),
    }
}

/// What a caller hears instead of a stream: the route's, the tenant's or the default fallback.
pub fn fallback_verbs(
    route: &entity::route::Model,
    tenant: &entity::tenant::Model,
    default_message: &str,
) -> Vec<Verb> {
    let parse = |text: &Option<String>| {
        text.as_deref().and_then(|t| match FallbackAction::from_json(t) {
            Ok(action) => Some(action),
            Err(e) => {
                tracing::warn!(error = %e, "stored fallback action is unreadable; skipping it");
                None
            }
        })
    };
    fallback::resolve(
        parse(&route.fallback).as_ref(),
        parse(&tenant.default_fallback).as_ref(),
        default_message,
    )
}

impl Authenticated {
    /// The tenant's id, typed.
    fn tenant_id(&self) -> TenantId {
        TenantId(self.tenant().id.clone())
    }

    /// The route's id, typed.
    fn route_id(&self) -> RouteId {
        RouteId(self.route().id.clone())
    }

    /// Records the call's identity (`call_sid`, `tenant_id`, `route_id`) on the current span,
    /// the request's, which declares those fields: every later line about the call carries
    /// them. Only an authenticated webhook's fields are trusted enough to be recorded.
    pub fn record_in_span(&self) {
        let span = tracing::Span::current();
        span.record("call_sid", self.form.call_sid.as_str());
        span.record("tenant_id", self.tenant().id.as_str());
        span.record("route_id", self.route().id.as_str());
    }

    /// Mints a stream token for this call.
    fn mint(&self, tokens: &TokenIssuer) -> MintedToken {
        tokens.mint(&self.form.call_sid, &self.tenant_id(), &self.route_id())
    }

    /// The CallSid is already answered on another route: a diagnostic and a 409.
    fn route_conflict(&self, diagnostics: &Diagnostics, existing_route: &str) -> Rejection {
        let sid = self.form.call_sid.as_str();
        diagnostics.record(Occurrence {
            kind: DiagnosticKind::CallRouteConflict,
            key: sid,
            tenant_id: Some(&self.tenant().id),
            route_id: Some(&self.route().id),
            detail: Some(format!("CallSid already answered on route {existing_route}")),
        });
        Rejection::Conflict(format!("CallSid {sid} was already answered on another route"))
    }
}

/// The `<Connect><Stream>` answer carrying `token`.
fn stream_twiml(settings: &VoiceSettings, token: &str) -> String {
    let stream_url = match settings.token_placement {
        TokenPlacement::Query => format!("{}?stream_token={token}", settings.stream_url),
        TokenPlacement::Path => format!("{}/{token}", settings.stream_url),
    };
    twiml::render(&[Verb::ConnectStream {
        action: settings.stream_ended_url.clone(),
        stream_url,
        parameters: vec![("stream_token".to_owned(), token.to_owned())],
    }])
}

/// Counts a fallback answer.
fn count_fallback(metrics: &Metrics, reason: FallbackReason) {
    Metrics::reason(&metrics.fallbacks, reason.as_str());
}
