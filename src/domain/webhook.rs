//! The voice webhooks: select the signing key, validate the signature, check the account,
//! decide (stream or fallback), and record the answer idempotently before it is returned.
use chrono::Utc;
use entity::{call, call_webhook, route, tenant};
use sea_orm::{DatabaseTransaction, TransactionTrait};
use serde_json::json;

use super::{
    alerts::{self, kind},
    fallback::{self, FallbackAction},
    phone::{new_id, CallSid, E164},
    stream::EndReason,
    token::MintedToken,
    Error,
};
use crate::{
    cache::CachedAnswer,
    config::TokenPlacement,
    db::{self, diagnostics::Occurrence, writer::NewCall},
    metrics::Metrics,
    state::AppState,
    twilio::{
        form::FormParams,
        signature::{self, Algorithm},
        twiml::{self, Verb},
    },
};

/// Which webhook a request is; part of the idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    /// The number's voice URL.
    Incoming,
    /// The number's Fallback URL, called when the voice URL failed.
    Fallback,
    /// The `<Connect action>` URL, called when a stream ends.
    StreamEnded,
    /// The call status callback.
    Status,
}

impl WebhookKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incoming => "incoming",
            Self::Fallback => "fallback",
            Self::StreamEnded => "stream-ended",
            Self::Status => "status",
        }
    }
}

/// A webhook as received, before anything in it is trusted.
#[derive(Debug, Clone)]
pub struct InboundWebhook {
    pub kind: WebhookKind,
    /// The URL Twilio signed, as reconstructed from the public base URL.
    pub url: String,
    pub params: FormParams,
    pub signature: Option<String>,
    /// `X-Twilio-Webhooks-Signature-Settings`, if sent.
    pub signature_settings: Option<String>,
    /// A route id named in the webhook URL (`?route_id=`), which takes precedence over `To`.
    pub route_hint: Option<String>,
}

/// What to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200 with this TwiML.
    TwiML(String),
    /// 403 with a short reason.
    Forbidden(&'static str),
    /// 400 with a reason.
    BadRequest(String),
    /// 409 with a reason.
    Conflict(String),
    /// 204: accepted, nothing to answer (status callbacks).
    NoContent,
    /// 404 with a reason.
    NotFound(String),
}

/// Why a call was answered with a fallback.
pub mod reason {
    pub const ROUTE_DISABLED: &str = "route_disabled";
    pub const DRAINING: &str = "draining";
    pub const CAPACITY: &str = "capacity";
    pub const AGENT_UNHEALTHY: &str = "agent_unhealthy";
    pub const PROVIDER_FALLBACK: &str = "provider_fallback";
    pub const STREAM_FAILED: &str = "stream_failed";
}

/// Handles one voice webhook, in the order the contract fixes.
pub async fn handle(state: &AppState, hook: InboundWebhook) -> Result<Answer, Error> {
    // Select the signing key. Nothing in the request is trusted yet.
    let found = match &hook.route_hint {
        Some(route_id) => state.routes.by_id(&state.db, route_id).await?,
        None => match hook.params.get("To") {
            Some(to) => match E164::parse(to) {
                Ok(number) => state.routes.by_number(&state.db, number.as_str()).await?,
                Err(_) => None,
            },
            None => return Ok(Answer::BadRequest("missing To".to_owned())),
        },
    };
    let Some(found) = found else {
        return Ok(unknown_route(state, &hook));
    };
    let (route, tenant) = (&found.0, &found.1);

    if !signature_valid(&hook, tenant) {
        alerts::signature_failure(state, route, tenant);
        let why = if hook.signature.is_none() {
            "missing X-Twilio-Signature"
        } else {
            "invalid X-Twilio-Signature"
        };
        tracing::warn!(route_id = %route.id, "{why}");
        return Ok(Answer::Forbidden(why));
    }
    if hook.params.get("AccountSid") != Some(tenant.account_sid.as_str()) {
        alerts::diagnostic(
            state,
            Occurrence {
                kind: kind::ACCOUNT_MISMATCH,
                key: &route.id,
                tenant_id: Some(&tenant.id),
                route_id: Some(&route.id),
                detail: Some("AccountSid does not match the route's tenant".to_owned()),
            },
        );
        return Ok(Answer::Forbidden(
            "AccountSid does not match this number's account",
        ));
    }

    // The request is authentic: its fields can be trusted from here on.
    let call_sid = match hook.params.get("CallSid").map(CallSid::parse) {
        Some(Ok(sid)) => sid,
        Some(Err(e)) => return Ok(Answer::BadRequest(e)),
        None => return Ok(Answer::BadRequest("missing CallSid".to_owned())),
    };
    if hook.params.get("To").is_none() {
        return Ok(Answer::BadRequest("missing To".to_owned()));
    }
    let call = CallContext {
        state,
        hook: &hook,
        route,
        tenant,
        call_sid: &call_sid,
    };
    match hook.kind {
        WebhookKind::Incoming | WebhookKind::Fallback => call.answer().await,
        WebhookKind::StreamEnded => call.stream_ended().await,
        WebhookKind::Status => call.status_callback().await,
    }
}

fn signature_valid(hook: &InboundWebhook, tenant: &tenant::Model) -> bool {
    let Some(sig) = hook.signature.as_deref() else {
        return false;
    };
    let algorithm = Algorithm::from_settings_header(hook.signature_settings.as_deref());
    let keys: Vec<&[u8]> = match algorithm {
        Algorithm::HmacSha1 => std::iter::once(tenant.auth_token.as_bytes())
            .chain(tenant.secondary_auth_token.as_deref().map(str::as_bytes))
            .collect(),
        Algorithm::HmacSha256 => tenant
            .shared_key
            .as_deref()
            .map(str::as_bytes)
            .into_iter()
            .collect(),
    };
    signature::validate(algorithm, &keys, &hook.url, &hook.params, sig).is_some()
}

/// No route for the called number: the platform message, and a diagnostic per number.
fn unknown_route(state: &AppState, hook: &InboundWebhook) -> Answer {
    let key = match (&hook.route_hint, hook.params.get("To").map(E164::parse)) {
        (Some(_), _) => "(unknown route id)".to_owned(),
        (None, Some(Ok(number))) => number.as_str().to_owned(),
        _ => "(not an E.164 number)".to_owned(),
    };
    tracing::info!(called = %key, "no route for called number");
    state.metrics.unknown_routes.inc();
    alerts::diagnostic(
        state,
        Occurrence {
            kind: kind::UNKNOWN_ROUTE,
            key: &key,
            tenant_id: None,
            route_id: None,
            detail: None,
        },
    );
    Answer::TwiML(twiml::render(&[
        Verb::Say(state.config.messages.unknown_route.clone()),
        Verb::Hangup,
    ]))
}

/// An authenticated webhook for a call on a known route.
struct CallContext<'a> {
    state: &'a AppState,
    hook: &'a InboundWebhook,
    route: &'a route::Model,
    tenant: &'a tenant::Model,
    call_sid: &'a CallSid,
}

/// An answer as stored.
struct StoredAnswer {
    id: String,
    twiml: String,
    token_expires_at: Option<chrono::DateTime<Utc>>,
}

impl StoredAnswer {
    /// The answer a freshly built row stores.
    fn of(row: &call_webhook::Model) -> Self {
        Self {
            id: row.id.clone(),
            twiml: row.twiml.clone(),
            token_expires_at: row.token_expires_at,
        }
    }
}

/// A decision before it is stored.
struct Decision {
    twiml: String,
    token: Option<MintedToken>,
    fallback_reason: Option<&'static str>,
}

impl CallContext<'_> {
    fn param(&self, key: &str) -> Option<String> {
        self.hook.params.get(key).map(str::to_owned)
    }

    /// Why the media stream cannot serve a new call now, if it cannot.
    fn unavailable_reason(&self) -> Option<&'static str> {
        let runtime = &self.state.runtime;
        if !self.route.enabled {
            Some(reason::ROUTE_DISABLED)
        } else if runtime.is_draining() {
            Some(reason::DRAINING)
        } else if runtime.active_streams() >= self.state.config.media.max_streams {
            Some(reason::CAPACITY)
        } else if self
            .route
            .agent_url
            .as_deref()
            .is_some_and(|url| runtime.agent_failure(url).is_some())
        {
            Some(reason::AGENT_UNHEALTHY)
        } else {
            None
        }
    }

    fn fallback_twiml(&self) -> String {
        let parse = |text: &Option<String>| {
            text.as_deref().and_then(|t| match FallbackAction::from_json(t) {
                Ok(action) => Some(action),
                Err(e) => {
                    tracing::warn!(error = %e, "stored fallback action is unreadable; skipping it");
                    None
                }
            })
        };
        let verbs = fallback::resolve(
            parse(&self.route.fallback).as_ref(),
            parse(&self.tenant.default_fallback).as_ref(),
            &self.state.config.messages.fallback,
        );
        twiml::render(&verbs)
    }

    fn stream_twiml(&self, token: &str) -> String {
        let config = &self.state.config;
        let stream_url = match config.stream_tokens.placement {
            TokenPlacement::Query => format!("{}?stream_token={token}", config.urls.stream),
            TokenPlacement::Path => format!("{}/{token}", config.urls.stream),
        };
        twiml::render(&[Verb::ConnectStream {
            action: config.urls.stream_ended(),
            stream_url,
            parameters: vec![("stream_token".to_owned(), token.to_owned())],
        }])
    }

    fn mint(&self) -> MintedToken {
        self.state
            .tokens
            .mint(self.call_sid.as_str(), &self.tenant.id, &self.route.id)
    }

    fn decide(&self) -> Decision {
        let fallback_reason = match self.hook.kind {
            WebhookKind::Fallback => Some(reason::PROVIDER_FALLBACK),
            _ => self.unavailable_reason(),
        };
        match fallback_reason {
            Some(_) => Decision {
                twiml: self.fallback_twiml(),
                token: None,
                fallback_reason,
            },
            None => {
                let token = self.mint();
                Decision {
                    twiml: self.stream_twiml(&token.token),
                    token: Some(token),
                    fallback_reason: None,
                }
            }
        }
    }

    fn webhook_row(&self, call_id: &str, kind: &str, decision: &Decision) -> call_webhook::Model {
        let now = Utc::now();
        call_webhook::Model {
            id: new_id(),
            call_id: call_id.to_owned(),
            kind: kind.to_owned(),
            attempts: 1,
            twiml: decision.twiml.clone(),
            token_jti: decision.token.as_ref().map(|t| t.jti.clone()),
            token_expires_at: decision.token.as_ref().map(|t| t.expires_at),
            created_at: now,
            updated_at: now,
        }
    }

    fn event_data(&self, call: &call::Model) -> serde_json::Value {
        json!({
            "call_id": call.id,
            "call_sid": call.call_sid,
            "tenant_id": call.tenant_id,
            "route_id": call.route_id,
            "from": call.from_number,
            "to": call.to_number,
            "status": call.status,
            "outcome": call.outcome,
            "fallback_reason": call.fallback_reason,
            "error_code": call.error_code,
        })
    }

    /// Remembers a stored answer so further retries need no transaction.
    fn remember(&self, call_id: &str, stored: &StoredAnswer) {
        if matches!(self.hook.kind, WebhookKind::Incoming | WebhookKind::Fallback) {
            self.state.answers.put(
                self.call_sid.as_str(),
                self.hook.kind.as_str(),
                CachedAnswer {
                    call_id: call_id.to_owned(),
                    route_id: self.route.id.clone(),
                    webhook_id: stored.id.clone(),
                    twiml: stored.twiml.clone(),
                    token_expires_at: stored.token_expires_at,
                },
            );
        }
    }

    /// The voice URL or Fallback URL: answer once per call and kind; retries get the stored
    /// answer. The call, its answer and its outbox event are stored in one transaction,
    /// batched with concurrent calls (see [`db::writer`]).
    async fn answer(&self) -> Result<Answer, Error> {
        let kind = self.hook.kind.as_str();
        if let Some(hit) = self.state.answers.get(self.call_sid.as_str(), kind) {
            if hit.route_id == self.route.id {
                // A retry of an answer this instance stored: count it, answer the same.
                (self.state.writer)
                    .count_retry(hit.call_id.clone(), hit.webhook_id.clone())
                    .await?;
                return Ok(Answer::TwiML(hit.twiml.clone()));
            }
        }
        let decision = self.decide();
        let now = Utc::now();
        let is_fallback = decision.fallback_reason.is_some();
        let new_call = call::Model {
            id: new_id(),
            call_sid: self.call_sid.as_str().to_owned(),
            tenant_id: self.tenant.id.clone(),
            route_id: self.route.id.clone(),
            from_number: self.param("From").unwrap_or_default(),
            to_number: self.param("To").unwrap_or_default(),
            status: self.param("CallStatus").unwrap_or_else(|| "ringing".to_owned()),
            outcome: if is_fallback { "fallback" } else { "streamed" }.to_owned(),
            fallback_reason: decision.fallback_reason.map(str::to_owned),
            attempts: 1,
            error_code: self.param("ErrorCode"),
            error_url: self.param("ErrorUrl"),
            duration_secs: None,
            created_at: now,
            updated_at: now,
            ended_at: None,
        };
        let answer = self.webhook_row(&new_call.id, kind, &decision);
        let stored = StoredAnswer::of(&answer);
        let event = if is_fallback {
            "call.fallback"
        } else {
            "call.received"
        };
        let event = db::outbox::event(&self.tenant.id, event, self.event_data(&new_call));
        let claimed = (self.state.writer)
            .claim(NewCall {
                call: new_call.clone(),
                answer,
                event,
            })
            .await?;
        if claimed {
            Metrics::outcome(&self.state.metrics.calls, &new_call.outcome);
            if let Some(reason) = decision.fallback_reason {
                Metrics::reason(&self.state.metrics.fallbacks, reason);
            }
            tracing::info!(call_sid = %new_call.call_sid, route_id = %self.route.id, outcome = %new_call.outcome, "call answered");
            self.remember(&new_call.id, &stored);
            return Ok(Answer::TwiML(stored.twiml));
        }
        // The CallSid is known: a retry, possibly of a delivery stored a moment ago (the
        // writer answers only after that one is committed).
        let txn = self.state.db.begin().await?;
        let existing = db::calls::by_sid(&txn, self.call_sid.as_str())
            .await?
            .ok_or_else(|| Error::Conflict("call disappeared while answering".to_owned()))?;
        if existing.route_id != self.route.id {
            txn.rollback().await?;
            return self.route_conflict(&existing).await;
        }
        db::calls::bump_attempts(&txn, &existing.id).await?;
        let call_id = existing.id.clone();
        let stored = self.replay_or_store(&txn, existing, decision).await?;
        txn.commit().await?;
        self.remember(&call_id, &stored);
        Ok(Answer::TwiML(stored.twiml))
    }

    /// For a known call: the stored answer of this kind (with a fresh token if the stored one
    /// expired), or, if this kind is new for the call, `decision` stored as its answer.
    async fn replay_or_store(
        &self,
        txn: &DatabaseTransaction,
        existing: call::Model,
        decision: Decision,
    ) -> Result<StoredAnswer, Error> {
        let row = self.webhook_row(&existing.id, self.hook.kind.as_str(), &decision);
        let fresh_answer = StoredAnswer::of(&row);
        if db::calls::claim_webhook(txn, row.into()).await? {
            if let Some(reason) = decision.fallback_reason {
                Metrics::reason(&self.state.metrics.fallbacks, reason);
                let updated = db::calls::set_fallback(
                    txn,
                    existing,
                    reason,
                    self.param("ErrorCode"),
                    self.param("ErrorUrl"),
                )
                .await?;
                db::outbox::record(txn, &self.tenant.id, "call.fallback", self.event_data(&updated)).await?;
            }
            return Ok(fresh_answer);
        }
        let stored = db::calls::webhook(txn, &existing.id, self.hook.kind.as_str())
            .await?
            .ok_or_else(|| Error::Conflict("webhook answer disappeared while answering".to_owned()))?;
        let expired = stored.token_expires_at.is_some_and(|exp| exp <= Utc::now());
        let fresh = expired.then(|| {
            let token = self.mint();
            (self.stream_twiml(&token.token), token.jti, token.expires_at)
        });
        let stored = db::calls::bump_webhook(txn, stored, fresh).await?;
        Ok(StoredAnswer {
            id: stored.id,
            twiml: stored.twiml,
            token_expires_at: stored.token_expires_at,
        })
    }

    async fn route_conflict(&self, existing: &call::Model) -> Result<Answer, Error> {
        alerts::diagnostic(
            self.state,
            Occurrence {
                kind: kind::CALL_ROUTE_CONFLICT,
                key: self.call_sid.as_str(),
                tenant_id: Some(&self.tenant.id),
                route_id: Some(&self.route.id),
                detail: Some(format!("CallSid already answered on route {}", existing.route_id)),
            },
        );
        Ok(Answer::Conflict(format!(
            "CallSid {} was already answered on another route",
            self.call_sid.as_str()
        )))
    }

    /// The `<Connect action>` callback: hang up after a normally ended stream, otherwise
    /// play the route's fallback so the caller is never left in silence.
    async fn stream_ended(&self) -> Result<Answer, Error> {
        let Some(existing) = db::calls::by_sid(&self.state.db, self.call_sid.as_str()).await? else {
            return Ok(Answer::TwiML(self.fallback_twiml()));
        };
        if existing.route_id != self.route.id {
            return self.route_conflict(&existing).await;
        }
        let sessions = db::calls::media_sessions(&self.state.db, &existing.id).await?;
        let ended_normally = sessions.iter().any(|s| {
            s.received_stop
                || s.end_reason
                    .as_deref()
                    .and_then(EndReason::parse)
                    .is_some_and(EndReason::ends_the_call)
        });
        let decision = if ended_normally {
            Decision {
                twiml: twiml::render(&[Verb::Hangup]),
                token: None,
                fallback_reason: None,
            }
        } else {
            Decision {
                twiml: self.fallback_twiml(),
                token: None,
                fallback_reason: Some(reason::STREAM_FAILED),
            }
        };
        let txn = self.state.db.begin().await?;
        let answer = self.replay_or_store(&txn, existing, decision).await?;
        txn.commit().await?;
        Ok(Answer::TwiML(answer.twiml))
    }
}

/// Twilio's final call statuses.
pub const TERMINAL_STATUSES: [&str; 5] = ["completed", "busy", "failed", "no-answer", "canceled"];

impl CallContext<'_> {
    /// The status callback: records Twilio's latest `CallStatus` (never going back from a final
    /// one), the duration, the end time, and emits `call.completed` once at the final status.
    /// Each status is processed once per call; repeats are counted and ignored.
    async fn status_callback(&self) -> Result<Answer, Error> {
        let Some(status) = self.param("CallStatus") else {
            return Ok(Answer::BadRequest("missing CallStatus".to_owned()));
        };
        let Some(existing) = db::calls::by_sid(&self.state.db, self.call_sid.as_str()).await? else {
            return Ok(Answer::NotFound(format!(
                "no call {} on this route",
                self.call_sid.as_str()
            )));
        };
        if existing.route_id != self.route.id {
            return self.route_conflict(&existing).await;
        }
        let kind = format!("status:{status}");
        let none = Decision {
            twiml: String::new(),
            token: None,
            fallback_reason: None,
        };
        let txn = self.state.db.begin().await?;
        if !db::calls::claim_webhook(&txn, self.webhook_row(&existing.id, &kind, &none).into()).await? {
            if let Some(stored) = db::calls::webhook(&txn, &existing.id, &kind).await? {
                db::calls::bump_webhook(&txn, stored, None).await?;
            }
            txn.commit().await?;
            return Ok(Answer::NoContent);
        }
        let was_final = TERMINAL_STATUSES.contains(&existing.status.as_str());
        let is_final = TERMINAL_STATUSES.contains(&status.as_str());
        if !was_final {
            let duration = self.param("CallDuration").and_then(|d| d.parse::<i32>().ok());
            let updated = db::calls::set_status(&txn, existing, &status, duration, is_final).await?;
            if is_final {
                let mut data = self.event_data(&updated);
                data["duration_secs"] = json!(updated.duration_secs);
                db::outbox::record(&txn, &self.tenant.id, "call.completed", data).await?;
            }
        }
        txn.commit().await?;
        Ok(Answer::NoContent)
    }
}
