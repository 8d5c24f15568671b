//! Calls, their per-kind webhook answers (the idempotency records) and media sessions.
use chrono::{DateTime, Utc};
use entity::{
    call, call_webhook, media_session,
    states::{CallStatus, FallbackReason, Outcome, WebhookKind},
};
use sea_orm::{
    sea_query::{Expr, OnConflict},
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, Set,
    TryInsertResult,
};

use super::{Page, Scope};

/// Inserts `model` unless a row with the same unique key exists; true when inserted. The
/// database's uniqueness decides, so concurrent duplicates cannot both insert.
async fn insert_if_absent<A, C>(db: &C, model: A, conflict: OnConflict) -> Result<bool, DbErr>
where
    A: ActiveModelTrait,
    <A::Entity as EntityTrait>::Model: sea_orm::IntoActiveModel<A>,
    C: ConnectionTrait,
{
    let result = <A::Entity as EntityTrait>::insert(model)
        .on_conflict(conflict)
        .do_nothing()
        .exec_without_returning(db)
        .await?;
    Ok(matches!(result, TryInsertResult::Inserted(n) if n > 0))
}

/// Claims the answer to one kind of webhook for a call.
pub async fn claim_webhook<C: ConnectionTrait>(
    db: &C,
    model: call_webhook::ActiveModel,
) -> Result<bool, DbErr> {
    let conflict = OnConflict::columns([call_webhook::Column::CallId, call_webhook::Column::Kind])
        .do_nothing()
        .to_owned();
    insert_if_absent(db, model, conflict).await
}

/// A call by CallSid.
pub async fn by_sid<C: ConnectionTrait>(db: &C, call_sid: &str) -> Result<Option<call::Model>, DbErr> {
    call::Entity::find()
        .filter(call::Column::CallSid.eq(call_sid))
        .one(db)
        .await
}

/// Counts one more delivery of the call's voice webhook.
pub async fn bump_attempts<C: ConnectionTrait>(db: &C, call_id: &str) -> Result<(), DbErr> {
    add_attempts([call_id], 1, Utc::now()).exec(db).await?;
    Ok(())
}

/// The atomic `attempts = attempts + by` on the calls `ids`.
pub fn add_attempts<'a>(
    ids: impl IntoIterator<Item = &'a str>,
    by: i32,
    now: DateTime<Utc>,
) -> sea_orm::UpdateMany<call::Entity> {
    call::Entity::update_many()
        .col_expr(call::Column::Attempts, Expr::col(call::Column::Attempts).add(by))
        .col_expr(call::Column::UpdatedAt, Expr::value(now))
        .filter(call::Column::Id.is_in(ids))
}

/// The atomic `attempts = attempts + by` on the webhook answers `ids`.
pub fn add_webhook_attempts<'a>(
    ids: impl IntoIterator<Item = &'a str>,
    by: i32,
    now: DateTime<Utc>,
) -> sea_orm::UpdateMany<call_webhook::Entity> {
    call_webhook::Entity::update_many()
        .col_expr(
            call_webhook::Column::Attempts,
            Expr::col(call_webhook::Column::Attempts).add(by),
        )
        .col_expr(call_webhook::Column::UpdatedAt, Expr::value(now))
        .filter(call_webhook::Column::Id.is_in(ids))
}

/// Marks a call as answered with a fallback, keeping Twilio's error code and URL if given.
pub async fn set_fallback<C: ConnectionTrait>(
    db: &C,
    call: call::Model,
    reason: FallbackReason,
    error_code: Option<String>,
    error_url: Option<String>,
) -> Result<call::Model, DbErr> {
    let mut active: call::ActiveModel = call.into();
    active.outcome = Set(Outcome::Fallback);
    active.fallback_reason = Set(Some(reason));
    if error_code.is_some() {
        active.error_code = Set(error_code);
    }
    if error_url.is_some() {
        active.error_url = Set(error_url);
    }
    active.updated_at = Set(Utc::now());
    active.update(db).await
}

/// Records Twilio's latest call status, the duration if known, and the end time when final.
pub async fn set_status<C: ConnectionTrait>(
    db: &C,
    call: call::Model,
    status: CallStatus,
    duration_secs: Option<i32>,
    ended: bool,
) -> Result<call::Model, DbErr> {
    let now = Utc::now();
    let mut active: call::ActiveModel = call.into();
    active.status = Set(status);
    if duration_secs.is_some() {
        active.duration_secs = Set(duration_secs);
    }
    if ended {
        active.ended_at = Set(Some(now));
    }
    active.updated_at = Set(now);
    active.update(db).await
}

/// The stored answer to one kind of webhook for a call.
pub async fn webhook<C: ConnectionTrait>(
    db: &C,
    call_id: &str,
    kind: WebhookKind,
) -> Result<Option<call_webhook::Model>, DbErr> {
    call_webhook::Entity::find()
        .filter(call_webhook::Column::CallId.eq(call_id))
        .filter(call_webhook::Column::Kind.eq(kind))
        .one(db)
        .await
}

/// A fresh stream token for a stored stream answer: the token, its id and its expiry.
pub struct RenewedToken {
    pub token: String,
    pub jti: String,
    pub expires_at: DateTime<Utc>,
}

/// Replaces a stored answer by `answer`'s TwiML and token (none, for a fallback).
pub async fn replace_answer<C: ConnectionTrait>(db: &C, answer: &call_webhook::Model) -> Result<(), DbErr> {
    call_webhook::Entity::update_many()
        .col_expr(call_webhook::Column::Twiml, Expr::value(answer.twiml.clone()))
        .col_expr(
            call_webhook::Column::StreamToken,
            Expr::value(answer.stream_token.clone()),
        )
        .col_expr(
            call_webhook::Column::TokenJti,
            Expr::value(answer.token_jti.clone()),
        )
        .col_expr(
            call_webhook::Column::TokenExpiresAt,
            Expr::value(answer.token_expires_at),
        )
        .col_expr(call_webhook::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(call_webhook::Column::Id.eq(answer.id.clone()))
        .exec(db)
        .await?;
    Ok(())
}

/// Counts a repeated delivery of a webhook and, when given, replaces its stream token (a
/// fresh one after the stored one expired).
pub async fn bump_webhook<C: ConnectionTrait>(
    db: &C,
    mut webhook: call_webhook::Model,
    renewed: Option<RenewedToken>,
) -> Result<call_webhook::Model, DbErr> {
    let now = Utc::now();
    let mut update = add_webhook_attempts([webhook.id.as_str()], 1, now);
    if let Some(RenewedToken {
        token,
        jti,
        expires_at,
    }) = renewed
    {
        update = update
            .col_expr(call_webhook::Column::Twiml, Expr::value(String::new()))
            .col_expr(
                call_webhook::Column::StreamToken,
                Expr::value(Some(token.clone())),
            )
            .col_expr(call_webhook::Column::TokenJti, Expr::value(Some(jti.clone())))
            .col_expr(
                call_webhook::Column::TokenExpiresAt,
                Expr::value(Some(expires_at)),
            );
        webhook.twiml = String::new();
        webhook.stream_token = Some(token);
        webhook.token_jti = Some(jti);
        webhook.token_expires_at = Some(expires_at);
    }
    update.exec(db).await?;
    webhook.attempts += 1;
    webhook.updated_at = now;
    Ok(webhook)
}

/// A call in `scope` by CallSid.
pub async fn by_sid_in<C: ConnectionTrait>(
    db: &C,
    scope: &Scope,
    call_sid: &str,
) -> Result<Option<call::Model>, DbErr> {
    let select = call::Entity::find().filter(call::Column::CallSid.eq(call_sid));
    scope.filter(select, call::Column::TenantId).one(db).await
}

/// Lists the calls in `scope`, newest first.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    scope: &Scope,
    cursor: Option<&str>,
    limit: u64,
) -> Result<Page<call::Model>, DbErr> {
    let select = scope.filter(call::Entity::find(), call::Column::TenantId);
    super::page(db, select, call::Column::Id, cursor, limit, true, |m| &m.id).await
}

/// A call's media sessions, oldest first.
pub async fn media_sessions<C: ConnectionTrait>(
    db: &C,
    call_id: &str,
) -> Result<Vec<media_session::Model>, DbErr> {
    media_session::Entity::find()
        .filter(media_session::Column::CallId.eq(call_id))
        .order_by_asc(media_session::Column::Id)
        .all(db)
        .await
}

/// Media sessions of several calls, grouped by call id.
pub async fn media_sessions_of<C: ConnectionTrait>(
    db: &C,
    call_ids: &[String],
) -> Result<std::collections::HashMap<String, Vec<media_session::Model>>, DbErr> {
    let mut grouped = std::collections::HashMap::new();
    if call_ids.is_empty() {
        return Ok(grouped);
    }
    let sessions = media_session::Entity::find()
        .filter(media_session::Column::CallId.is_in(call_ids.iter().cloned()))
        .order_by_asc(media_session::Column::Id)
        .all(db)
        .await?;
    for s in sessions {
        grouped.entry(s.call_id.clone()).or_insert_with(Vec::new).push(s);
    }
    Ok(grouped)
}
