//! Status callbacks: Twilio's latest `CallStatus` (never going back from a final one), the
//! duration and the end time; `call.completed` once at the final status. Each status is
//! processed once per call; repeats are counted and ignored.
use chrono::Utc;
use entity::{call_webhook, id::new_id, states::WebhookKind};
use sea_orm::TransactionTrait;

use super::{Authenticated, Rejection, WebhookContext};
use crate::{
    db,
    events::{CallCompletedData, Event},
};

/// What a status callback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusReply {
    /// Recorded, or a repeat of a status already recorded.
    Recorded,
    /// No call with this CallSid was answered on this route.
    UnknownCall(String),
}

/// Records the status of an authenticated status callback.
pub(super) async fn record(ctx: WebhookContext<'_>, call: &Authenticated) -> Result<StatusReply, Rejection> {
    let form = &call.form;
    let Some(status) = form.call_status else {
        return Err(Rejection::BadRequest("missing CallStatus".to_owned()));
    };
    let sid = form.call_sid.as_str();
    let Some(existing) = db::calls::by_sid(ctx.db, sid).await? else {
        return Ok(StatusReply::UnknownCall(format!("no call {sid} on this route")));
    };
    if existing.route_id != call.route().id {
        return Err(call.route_conflict(ctx.diagnostics, &existing.route_id));
    }
    let kind = WebhookKind::Status(status);
    let now = Utc::now();
    // The idempotency record of this status; a status callback is answered with no TwiML.
    let record = call_webhook::Model {
        id: new_id(),
        call_id: existing.id.clone(),
        kind,
        attempts: 1,
        twiml: String::new(),
        stream_token: None,
        token_jti: None,
        token_expires_at: None,
        created_at: now,
        updated_at: now,
    };
    let txn = ctx.db.begin().await?;
    if !db::calls::claim_webhook(&txn, record.into()).await? {
        if let Some(stored) = db::calls::webhook(&txn, &existing.id, kind).await? {
            db::calls::bump_webhook(&txn, stored, None).await?;
        }
        txn.commit().await?;
        return Ok(StatusReply::Recorded);
    }
    if !existing.status.is_final() {
        let updated =
            db::calls::set_status(&txn, existing, status, form.call_duration, status.is_final()).await?;
        if status.is_final() {
            let event = Event::CallCompleted(CallCompletedData::from(&updated));
            db::outbox::record(&txn, &call.tenant().id, &event).await?;
        }
    }
    txn.commit().await?;
    Ok(StatusReply::Recorded)
}
