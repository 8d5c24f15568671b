//! Step 3: store the answer once per (CallSid, webhook kind) and give every retry the same one.
//!
//! [`AnswerStore`] hides three mechanisms: the in-process answer cache (a retry this instance
//! answered costs no transaction), the group-commit writer (a new call, its answer and its
//! event are committed in one batched transaction), and the replay transaction (a retry of an
//! answer another instance stored, or a new kind of webhook for a known call).
use std::sync::Arc;

use chrono::Utc;
use entity::{
    call, call_webhook,
    id::{new_id, CallId, WebhookId},
    states::{CallStatus, FallbackReason, Outcome, WebhookKind},
};
use sea_orm::{DatabaseTransaction, TransactionTrait};

use super::{
    count_fallback, decide, stream_twiml, Authenticated, Decision, Rejection, Situation, VoiceKind,
    VoiceSettings, WebhookContext,
};
use crate::{
    db::{
        self,
        cache::{AnswerCache, CachedAnswer, CachedTwiml},
        calls::RenewedToken,
        spool::Spool,
        writer::{NewCall, Writer},
    },
    domain::{token::MintedToken, Error},
    events::{CallData, Event},
    metrics::Metrics,
    twilio::twiml::{self, Verb},
};

/// Stored answers of the voice webhooks.
pub struct AnswerStore {
    db: db::Pool,
    cache: AnswerCache,
    writer: Arc<Writer>,
    /// Where new calls go while the database cannot be reached.
    spool: Arc<Spool>,
}

/// An answer ready to be stored: its TwiML and the stream token it carries, if any.
struct Fresh {
    twiml: String,
    token: Option<MintedToken>,
}

/// An answer as stored.
struct Stored {
    id: WebhookId,
    twiml: String,
    /// The stream token `twiml` was rendered from, for a stream answer.
    token: Option<String>,
    token_expires_at: Option<chrono::DateTime<Utc>>,
}

impl Stored {
    /// The answer a stored row holds. A stream answer is stored as its token and rendered
    /// with this deployment's stream URLs; any other answer (and a stream answer stored before
    /// tokens were stored alone) is its TwiML.
    fn of(row: &call_webhook::Model, settings: &VoiceSettings) -> Self {
        let (twiml, token) = match &row.stream_token {
            Some(token) if row.twiml.is_empty() => (stream_twiml(settings, token), Some(token.clone())),
            _ => (row.twiml.clone(), None),
        };
        Self {
            id: WebhookId(row.id.clone()),
            twiml,
            token,
            token_expires_at: row.token_expires_at,
        }
    }

    /// The answer `row` is about to store: `fresh`, already rendered.
    fn fresh(row: &call_webhook::Model, fresh: &Fresh) -> Self {
        Self {
            id: WebhookId(row.id.clone()),
            twiml: fresh.twiml.clone(),
            token: fresh.token.as_ref().map(|t| t.token.clone()),
            token_expires_at: row.token_expires_at,
        }
    }

    /// [`Stored::fresh`], taking `fresh` (a new call's answer is not copied).
    fn from_fresh(row: &call_webhook::Model, fresh: Fresh) -> Self {
        Self {
            id: WebhookId(row.id.clone()),
            twiml: fresh.twiml,
            token: fresh.token.map(|t| t.token),
            token_expires_at: row.token_expires_at,
        }
    }

    /// What the answer cache keeps of it.
    fn cached(&self) -> CachedTwiml {
        match &self.token {
            Some(token) => CachedTwiml::Stream { token: token.clone() },
            None => CachedTwiml::Rendered(self.twiml.clone()),
        }
    }
}

/// The TwiML a stored answer row is answered with (a stream answer's rendered from its token).
pub fn stored_twiml(row: &call_webhook::Model, settings: &VoiceSettings) -> String {
    Stored::of(row, settings).twiml
}

/// One delivery of a webhook for a known call.
struct Delivery {
    kind: WebhookKind,
    /// Counted as a delivery of the call's voice webhook (`calls.attempts`).
    counts_attempt: bool,
    /// The answer if this kind is new for the call.
    fresh: Fresh,
    /// Why `fresh` is a fallback, if it is.
    fallback: Option<FallbackReason>,
}

/// A retry's view of an existing call.
enum Known {
    /// The call was answered on this route: here is the answer of this kind.
    Answer(Stored),
    /// The CallSid was answered on another route.
    OtherRoute(String),
}

impl AnswerStore {
    /// A store on `db`, writing new calls through `writer` (to `spool` while the database
    /// cannot be reached) and caching answers for `token_ttl` (while their stream token stays
    /// valid).
    pub fn new(db: db::Pool, writer: Arc<Writer>, spool: Arc<Spool>, token_ttl: std::time::Duration) -> Self {
        Self {
            db,
            cache: AnswerCache::new(token_ttl),
            writer,
            spool,
        }
    }

    /// Forgets cached answers (after a tenant or route was changed or deleted).
    pub fn invalidate(&self) {
        self.cache.invalidate();
    }

    /// A retry of an answer this instance stored (or spooled): counted, and the same TwiML.
    /// Without the database the answer is the same; the attempt is not counted.
    async fn cached_retry(
        &self,
        ctx: WebhookContext<'_>,
        call: &Authenticated,
        kind: WebhookKind,
    ) -> Result<Option<String>, Error> {
        let Some(hit) = self.cache.get(call.form.call_sid.as_str(), kind) else {
            return Ok(None);
        };
        if hit.route_id != call.route().id {
            return Ok(None);
        }
        let twiml = match &hit.twiml {
            CachedTwiml::Stream { token } => stream_twiml(ctx.settings, token),
            CachedTwiml::Rendered(twiml) => twiml.clone(),
        };
        if call.offline || ctx.outage.circuit_open() {
            return Ok(Some(twiml));
        }
        // Tallied, not waited for: the answer is already committed (see `Writer::count_retry`).
        if let Err(e) = self
            .writer
            .count_retry(hit.call_id.clone(), hit.webhook_id.clone())
        {
            tracing::warn!(error = %e, "a retry's count was not queued");
        }
        Ok(Some(twiml))
    }

    fn remember(&self, call: &Authenticated, kind: WebhookKind, call_id: &str, stored: &Stored) {
        self.cache.put(
            call.form.call_sid.as_str(),
            kind,
            CachedAnswer {
                call_id: CallId(call_id.to_owned()),
                route_id: call.route().id.clone(),
                webhook_id: stored.id.clone(),
                twiml: stored.cached(),
                token_expires_at: stored.token_expires_at,
            },
        );
    }

    /// A known call's answer of `delivery.kind`, in one transaction: the stored answer (with a
    /// fresh token if the stored one expired), or, if this kind is new for the
    /// call, `delivery.fresh` stored as its answer (and the call marked as a fallback when the
    /// answer is one).
    async fn known_call(
        &self,
        call: &Authenticated,
        existing: Option<call::Model>,
        delivery: Delivery,
        ctx: WebhookContext<'_>,
    ) -> Result<Known, Error> {
        let txn = self.db.begin().await?;
        let existing = match existing {
            Some(existing) => existing,
            None => db::calls::by_sid(&txn, call.form.call_sid.as_str())
                .await?
                .ok_or_else(|| Error::Conflict("call disappeared while answering".to_owned()))?,
        };
        if existing.route_id != call.route().id {
            txn.rollback().await?;
            return Ok(Known::OtherRoute(existing.route_id));
        }
        if delivery.counts_attempt {
            db::calls::bump_attempts(&txn, &existing.id).await?;
        }
        let call_id = existing.id.clone();
        let stored = self.replay_or_store(&txn, call, existing, &delivery, ctx).await?;
        txn.commit().await?;
        if matches!(delivery.kind, WebhookKind::Incoming | WebhookKind::Fallback) {
            self.remember(call, delivery.kind, &call_id, &stored);
        }
        Ok(Known::Answer(stored))
    }

    async fn replay_or_store(
        &self,
        txn: &DatabaseTransaction,
        call: &Authenticated,
        existing: call::Model,
        delivery: &Delivery,
        ctx: WebhookContext<'_>,
    ) -> Result<Stored, Error> {
        let row = answer_row(&existing.id, delivery.kind, &delivery.fresh);
        let claimed = Stored::fresh(&row, &delivery.fresh);
        if db::calls::claim_webhook(txn, row.into()).await? {
            // The first answer of this kind; a fallback makes the call a fallback.
            if let Some(reason) = delivery.fallback {
                count_fallback(ctx.metrics, reason);
                let form = &call.form;
                let updated = db::calls::set_fallback(
                    txn,
                    existing,
                    reason,
                    form.error_code.clone(),
                    form.error_url.clone(),
                )
                .await?;
                db::outbox::record(
                    txn,
                    &call.tenant().id,
                    &Event::CallFallback(CallData::from(&updated)),
                )
                .await?;
            }
            return Ok(claimed);
        }
        let stored = db::calls::webhook(txn, &existing.id, delivery.kind)
            .await?
            .ok_or_else(|| Error::Conflict("webhook answer disappeared while answering".to_owned()))?;
        let expired = stored.token_expires_at.is_some_and(|exp| exp <= Utc::now());
        let renewed = expired.then(|| call.mint(ctx.tokens)).map(|token| RenewedToken {
            token: token.token,
            jti: token.jti,
            expires_at: token.expires_at,
        });
        let stored = db::calls::bump_webhook(txn, stored, renewed).await?;
        Ok(Stored::of(&stored, ctx.settings))
    }
}

/// The stored answer row for `fresh`: a stream answer as its token alone (its TwiML holds the
/// token twice and is rendered from it again), any other answer as its TwiML.
fn answer_row(call_id: &str, kind: WebhookKind, fresh: &Fresh) -> call_webhook::Model {
    let now = Utc::now();
    call_webhook::Model {
        id: new_id(),
        call_id: call_id.to_owned(),
        kind,
        attempts: 1,
        twiml: match fresh.token {
            Some(_) => String::new(),
            None => fresh.twiml.clone(),
        },
        stream_token: fresh.token.as_ref().map(|t| t.token.clone()),
        token_jti: fresh.token.as_ref().map(|t| t.jti.clone()),
        token_expires_at: fresh.token.as_ref().map(|t| t.expires_at),
        created_at: now,
        updated_at: now,
    }
}

/// Renders a decision; a stream gets a fresh token.
fn render(ctx: WebhookContext<'_>, call: &Authenticated, decision: &Decision) -> Fresh {
    match decision {
        Decision::Stream => {
            let token = call.mint(ctx.tokens);
            Fresh {
                twiml: stream_twiml(ctx.settings, &token.token),
                token: Some(token),
            }
        }
        Decision::Fallback { verbs, .. } => Fresh {
            twiml: twiml::render(verbs),
            token: None,
        },
        Decision::Hangup => Fresh {
            twiml: twiml::render(&[Verb::Hangup]),
            token: None,
        },
    }
}

/// The rows of a new call answered with `fresh`: the call, its answer and its event. The call
/// and its answer take the ids of `attempted` when given (rows whose write may yet commit).
fn new_call_rows(
    call: &Authenticated,
    kind: WebhookKind,
    fresh: &Fresh,
    reason: Option<FallbackReason>,
    attempted: Option<&NewCall>,
) -> NewCall {
    let (route, tenant, form) = (call.route(), call.tenant(), &call.form);
    let now = Utc::now();
    let new_call = call::Model {
        id: attempted.map_or_else(new_id, |a| a.call.id.clone()),
        call_sid: form.call_sid.as_str().to_owned(),
        tenant_id: tenant.id.clone(),
        route_id: route.id.clone(),
        from_number: form.from.clone().unwrap_or_default(),
        to_number: form.to.clone(),
        status: form.call_status.unwrap_or(CallStatus::Ringing),
        outcome: if reason.is_some() {
            Outcome::Fallback
        } else {
            Outcome::Streamed
        },
        fallback_reason: reason,
        attempts: 1,
        error_code: form.error_code.clone(),
        error_url: form.error_url.clone(),
        duration_secs: None,
        created_at: now,
        updated_at: now,
        ended_at: None,
    };
    let mut answer = answer_row(&new_call.id, kind, fresh);
    if let Some(attempted) = attempted {
        answer.id = attempted.answer.id.clone();
    }
    let data = CallData::from(&new_call);
    let event = if reason.is_some() {
        Event::CallFallback(data)
    } else {
        Event::CallReceived(data)
    };
    let event = db::outbox::for_tenant(tenant, &event);
    NewCall {
        call: new_call,
        answer,
        event,
    }
}

/// Counts and logs a new call answered and stored (or spooled), and caches its answer for
/// retries.
fn answered(
    ctx: WebhookContext<'_>,
    call: &Authenticated,
    kind: WebhookKind,
    rows: &NewCall,
    stored: &Stored,
) {
    Metrics::outcome(&ctx.metrics.calls, rows.call.outcome.as_str());
    if let Some(reason) = rows.call.fallback_reason {
        count_fallback(ctx.metrics, reason);
    }
    ctx.answers.remember(call, kind, &rows.call.id, stored);
}

/// The voice URL or Fallback URL: answer once per call and kind; retries get the stored
/// answer. Without the database, the route's fallback, spooled.
pub(super) async fn new_call(
    ctx: WebhookContext<'_>,
    call: &Authenticated,
    kind: VoiceKind,
) -> Result<String, Rejection> {
    let store = ctx.answers;
    let stored_kind = kind.stored();
    if let Some(twiml) = store.cached_retry(ctx, call, stored_kind).await? {
        return Ok(twiml);
    }
    if call.offline || ctx.outage.circuit_open() {
        return degraded(ctx, call, stored_kind, None).await;
    }
    let situation = match kind {
        VoiceKind::Fallback => Situation::ProviderFallback,
        _ => Situation::NewCall,
    };
    let (route, tenant) = (call.route(), call.tenant());
    let runtime = ctx
        .runtime
        .snapshot(route.agent_url.as_deref(), ctx.settings.max_streams);
    let decision = decide(route, tenant, &runtime, situation, &ctx.settings.fallback_message);
    let reason = match &decision {
        Decision::Fallback { reason, .. } => Some(*reason),
        _ => None,
    };
    let fresh = render(ctx, call, &decision);
    let rows = Arc::new(new_call_rows(call, stored_kind, &fresh, reason, None));
    let claimed = match db::within_deadline(store.writer.claim(rows.clone())).await {
        Ok(claimed) => claimed,
        // The token minted for this answer is never sent. The write may still commit (it timed
        // out, or the connection broke during the commit): the spooled call keeps its ids, so
        // that the replay corrects it to what the caller heard.
        Err(e) if db::is_unavailable(&e) => {
            ctx.outage.failed(&e, ctx.diagnostics);
            return degraded(ctx, call, stored_kind, Some(&rows)).await;
        }
        Err(e) => return Err(Error::from(e).into()),
    };
    ctx.outage.write_succeeded();
    if claimed {
        let stored = Stored::from_fresh(&rows.answer, fresh);
        answered(ctx, call, stored_kind, &rows, &stored);
        tracing::info!(call_sid = %rows.call.call_sid, route_id = %route.id, outcome = %rows.call.outcome, "call answered");
        return Ok(stored.twiml);
    }
    // The CallSid is known: a retry, possibly of a delivery stored a moment ago (the writer
    // answers only after that one is committed).
    let delivery = Delivery {
        kind: stored_kind,
        counts_attempt: true,
        fresh,
        fallback: reason,
    };
    let known = tokio::time::timeout(db::ACQUIRE_TIMEOUT, store.known_call(call, None, delivery, ctx))
        .await
        .unwrap_or_else(|_| Err(db::within_deadline_elapsed().into()));
    let known = match known {
        Ok(known) => known,
        Err(e) if e.is_unavailable() => {
            if let Error::Db(e) = &e {
                ctx.outage.failed(e, ctx.diagnostics);
            }
            return degraded(ctx, call, stored_kind, None).await;
        }
        Err(e) => return Err(e.into()),
    };
    reply(ctx, call, known)
}

/// A new call while the database cannot be reached: the route's fallback (no stream: its
/// single-use token could not be recorded), appended to the local spool and synced before it
/// is answered, and stored from there when the database is back. A failure to spool is a 503.
async fn degraded(
    ctx: WebhookContext<'_>,
    call: &Authenticated,
    kind: WebhookKind,
    attempted: Option<&NewCall>,
) -> Result<String, Rejection> {
    let (route, tenant) = (call.route(), call.tenant());
    let runtime = ctx
        .runtime
        .snapshot(route.agent_url.as_deref(), ctx.settings.max_streams);
    let decision = decide(
        route,
        tenant,
        &runtime,
        Situation::DatabaseUnavailable,
        &ctx.settings.fallback_message,
    );
    let fresh = render(ctx, call, &decision);
    let rows = new_call_rows(
        call,
        kind,
        &fresh,
        Some(FallbackReason::DatabaseUnavailable),
        attempted,
    );
    if let Err(e) = ctx.answers.spool.append(&rows).await {
        tracing::error!(error = %e, call_sid = %rows.call.call_sid, "spooling a call failed; answering 503");
        return Err(Error::from(e).into());
    }
    ctx.outage.answered();
    let stored = Stored::from_fresh(&rows.answer, fresh);
    answered(ctx, call, kind, &rows, &stored);
    tracing::debug!(call_sid = %rows.call.call_sid, route_id = %route.id, "call answered from the last known configuration and spooled");
    Ok(stored.twiml)
}

/// The TwiML of a known call's answer, or 409 when the CallSid belongs to another route.
fn reply(ctx: WebhookContext<'_>, call: &Authenticated, known: Known) -> Result<String, Rejection> {
    match known {
        Known::Answer(stored) => Ok(stored.twiml),
        Known::OtherRoute(other) => Err(call.route_conflict(ctx.diagnostics, &other)),
    }
}

/// The `<Connect action>` callback: hang up after a normally ended stream, otherwise play the
/// route's fallback so the caller is never left in silence.
pub(super) async fn stream_ended(ctx: WebhookContext<'_>, call: &Authenticated) -> Result<String, Rejection> {
    let (route, tenant) = (call.route(), call.tenant());
    let Some(existing) = db::calls::by_sid(ctx.db, call.form.call_sid.as_str()).await? else {
        let verbs = super::fallback_verbs(route, tenant, &ctx.settings.fallback_message);
        return Ok(twiml::render(&verbs));
    };
    if existing.route_id != route.id {
        return Err(call.route_conflict(ctx.diagnostics, &existing.route_id));
    }
    let sessions = db::calls::media_sessions(ctx.db, &existing.id).await?;
    let ended_normally = sessions
        .iter()
        .any(|s| s.received_stop || s.end_reason.is_some_and(|r| r.ends_the_call()));
    let runtime = ctx
        .runtime
        .snapshot(route.agent_url.as_deref(), ctx.settings.max_streams);
    let decision = decide(
        route,
        tenant,
        &runtime,
        Situation::StreamEnded { ended_normally },
        &ctx.settings.fallback_message,
    );
    let reason = match &decision {
        Decision::Fallback { reason, .. } => Some(*reason),
        _ => None,
    };
    let delivery = Delivery {
        kind: WebhookKind::StreamEnded,
        counts_attempt: false,
        fresh: render(ctx, call, &decision),
        fallback: reason,
    };
    let known = ctx
        .answers
        .known_call(call, Some(existing), delivery, ctx)
        .await?;
    reply(ctx, call, known)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenPlacement;

    fn settings() -> VoiceSettings {
        VoiceSettings {
            unknown_route_message: "unknown".to_owned(),
            fallback_message: "sorry".to_owned(),
            stream_url: "wss://voice.example/media-stream".to_owned(),
            token_placement: TokenPlacement::Query,
            stream_ended_url: "https://voice.example/api/v1/stream-ended".to_owned(),
            max_streams: 10,
        }
    }

    fn fresh(token: Option<&str>, twiml: &str) -> Fresh {
        Fresh {
            twiml: twiml.to_owned(),
            token: token.map(|t| MintedToken {
                token: t.to_owned(),
                jti: "jti-1".to_owned(),
                expires_at: Utc::now(),
            }),
        }
    }

    #[test]
    fn a_stream_answer_is_stored_as_its_token_and_rendered_from_it() {
        let settings = settings();
        let twiml = stream_twiml(&settings, "tok.en.1");
        let row = answer_row("c1", WebhookKind::Incoming, &fresh(Some("tok.en.1"), &twiml));
        assert_eq!(row.twiml, "");
        assert_eq!(row.stream_token.as_deref(), Some("tok.en.1"));
        assert_eq!(row.token_jti.as_deref(), Some("jti-1"));
        assert_eq!(stored_twiml(&row, &settings), twiml);
        assert_eq!(
            twiml.matches("tok.en.1").count(),
            2,
            "the TwiML holds the token twice"
        );
    }

    #[test]
    fn the_answer_cache_keeps_a_stream_answer_as_its_token_and_others_as_rendered() {
        let settings = settings();
        let twiml = stream_twiml(&settings, "tok.en.1");
        let stream = fresh(Some("tok.en.1"), &twiml);
        let row = answer_row("c1", WebhookKind::Incoming, &stream);
        let token = CachedTwiml::Stream {
            token: "tok.en.1".to_owned(),
        };
        assert_eq!(Stored::of(&row, &settings).cached(), token);
        let stored = Stored::from_fresh(&row, stream);
        assert_eq!((stored.twiml.as_str(), stored.cached()), (twiml.as_str(), token));
        // What a cache hit renders from the token is the answer first sent.
        assert_eq!(stream_twiml(&settings, "tok.en.1"), stored.twiml);

        let hangup = twiml::render(&[Verb::Hangup]);
        let other = fresh(None, &hangup);
        let row = answer_row("c1", WebhookKind::StreamEnded, &other);
        assert_eq!(
            Stored::of(&row, &settings).cached(),
            CachedTwiml::Rendered(hangup.clone())
        );
        assert_eq!(
            Stored::from_fresh(&row, other).cached(),
            CachedTwiml::Rendered(hangup)
        );
    }

    #[test]
    fn other_answers_and_older_stream_rows_are_their_twiml() {
        let settings = settings();
        let hangup = twiml::render(&[Verb::Hangup]);
        let row = answer_row("c1", WebhookKind::StreamEnded, &fresh(None, &hangup));
        assert_eq!(
            (row.twiml.as_str(), row.stream_token.as_deref()),
            (hangup.as_str(), None)
        );
        assert_eq!(stored_twiml(&row, &settings), hangup);
        // A stream answer stored whole, before tokens were stored alone.
        let whole = call_webhook::Model {
            twiml: "<Response><Connect/></Response>".to_owned(),
            stream_token: Some("tok".to_owned()),
            ..row
        };
        assert_eq!(stored_twiml(&whole, &settings), "<Response><Connect/></Response>");
    }
}
