//! One media stream from connect to close. Free of HTTP types: frames come in as a stream and
//! replies go out through a channel, which the WebSocket handler connects to the socket.
use futures::{Stream, StreamExt};
use sea_orm::TransactionTrait;
use serde_json::json;
use tokio::sync::mpsc;

use super::agent::{self, AgentEvent, CallContext};
use crate::{
    db::{self, diagnostics::Occurrence, media::Counts},
    domain::{alerts, token::StreamClaims},
    state::AppState,
    twilio::media::{self as proto, Inbound, Outbound},
};

/// A frame from Twilio.
#[derive(Debug)]
pub enum Frame {
    Text(String),
    /// A binary frame (Twilio sends none); counted as malformed.
    Binary,
}

/// What to send to Twilio.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Text(String),
    /// Close the socket with a WebSocket close code and reason.
    Close {
        code: u16,
        reason: String,
    },
}

/// Close code for refused streams (policy violation).
pub const CLOSE_REFUSED: u16 = 1008;
/// Close code when the agent failed (internal error); Twilio then runs the `<Connect action>`.
pub const CLOSE_AGENT_FAILED: u16 = 1011;
/// Close code after a normal `stop`.
pub const CLOSE_NORMAL: u16 = 1000;

/// Why a stream was refused before any frame was bridged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoStart,
    MissingToken,
    InvalidToken,
    ExpiredToken,
    TokenReused,
    CallMismatch,
    UnknownCall,
}

impl Refusal {
    /// Stable name, used as the diagnostic key.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoStart => "no_start",
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::ExpiredToken => "expired_token",
            Self::TokenReused => "token_reused",
            Self::CallMismatch => "call_mismatch",
            Self::UnknownCall => "unknown_call",
        }
    }

    /// The close reason sent to Twilio.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NoStart => "no valid start message in time",
            Self::MissingToken => "missing stream token",
            Self::InvalidToken => "invalid stream token",
            Self::ExpiredToken => "stream token expired",
            Self::TokenReused => "stream token already used",
            Self::CallMismatch => "callSid does not match the stream token",
            Self::UnknownCall => "no call for this stream token",
        }
    }

    /// The refusal for a token that did not verify.
    pub fn from_token_error(err: &crate::domain::token::TokenError) -> Self {
        match err {
            crate::domain::token::TokenError::Expired => Self::ExpiredToken,
            crate::domain::token::TokenError::Invalid(_) => Self::InvalidToken,
        }
    }
}

/// Records a refused stream (aggregated by reason) and logs it.
pub fn record_refusal(state: &AppState, refusal: Refusal) {
    tracing::warn!(reason = refusal.reason(), "media stream refused");
    crate::metrics::Metrics::reason(&state.metrics.streams_refused, refusal.as_str());
    let occurrence = Occurrence {
        kind: alerts::kind::STREAM_REFUSED,
        key: refusal.as_str(),
        tenant_id: None,
        route_id: None,
        detail: Some(refusal.reason().to_owned()),
    };
    alerts::diagnostic(state, occurrence);
}

async fn refuse(state: &AppState, out: &mpsc::Sender<Reply>, refusal: Refusal) {
    record_refusal(state, refusal);
    let _ = out
        .send(Reply::Close {
            code: CLOSE_REFUSED,
            reason: refusal.reason().to_owned(),
        })
        .await;
}

/// Runs a stream. `url_claims` are the verified claims of a token found in the URL, if any;
/// otherwise the token must arrive in the `start` message's `customParameters`.
pub async fn run(
    state: AppState,
    url_claims: Option<StreamClaims>,
    mut frames: impl Stream<Item = Frame> + Unpin,
    out: mpsc::Sender<Reply>,
) {
    let _counted = state.runtime.stream_opened();
    let deadline = tokio::time::Instant::now() + state.config.stream_start_timeout;
    let mut counts = Counts::default();

    // Until a valid `start`, nothing is bridged.
    let (stream_sid, start) = loop {
        let frame = match tokio::time::timeout_at(deadline, frames.next()).await {
            Err(_) => return refuse(&state, &out, Refusal::NoStart).await,
            Ok(None) => return,
            Ok(Some(Frame::Binary)) => {
                counts.malformed += 1;
                continue;
            }
            Ok(Some(Frame::Text(text))) => text,
        };
        match proto::parse(&frame) {
            Ok(Inbound::Start { stream_sid, start }) => break (stream_sid, start),
            Ok(Inbound::Connected { .. }) => {}
            Ok(_) => counts.malformed += 1,
            Err(_) => counts.malformed += 1,
        }
    };
    let claims = match url_claims {
        Some(claims) => claims,
        None => match start.custom_parameters.get("stream_token") {
            None => return refuse(&state, &out, Refusal::MissingToken).await,
            Some(token) => match state.tokens.verify(token) {
                Ok(claims) => claims,
                Err(e) => return refuse(&state, &out, Refusal::from_token_error(&e)).await,
            },
        },
    };
    if start.call_sid != claims.sub {
        return refuse(&state, &out, Refusal::CallMismatch).await;
    }
    let opened = match open(&state, &claims, &stream_sid).await {
        Ok(Ok(opened)) => opened,
        Ok(Err(refusal)) => return refuse(&state, &out, refusal).await,
        Err(e) => {
            tracing::error!(error = %e, "opening a media session failed");
            let _ = out
                .send(Reply::Close {
                    code: CLOSE_AGENT_FAILED,
                    reason: "internal error".to_owned(),
                })
                .await;
            return;
        }
    };
    let (call, route, session) = opened;

    let context = CallContext {
        call_sid: call.call_sid.clone(),
        stream_sid: stream_sid.clone(),
        tenant_id: call.tenant_id.clone(),
        route_id: call.route_id.clone(),
        from: call.from_number.clone(),
        to: call.to_number.clone(),
        media_format: start.media_format.clone(),
        custom_parameters: start
            .custom_parameters
            .iter()
            .filter(|(k, _)| *k != "stream_token")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    let mut agent = agent::start(route.agent_url.as_deref(), context);
    let mut received_stop = false;
    let end_reason: String = loop {
        tokio::select! {
            frame = frames.next() => match frame {
                None => break "socket_closed".to_owned(),
                Some(Frame::Binary) => counts.malformed += 1,
                Some(Frame::Text(text)) => match proto::parse(&text) {
                    Ok(message @ (Inbound::Media { .. } | Inbound::Dtmf { .. } | Inbound::Mark { .. })) => {
                        if matches!(message, Inbound::Media { .. }) {
                            counts.inbound += 1;
                        }
                        // Waits when the agent is behind: back-pressure, not unbounded buffering.
                        let _ = agent.to_agent.send(message).await;
                    }
                    Ok(message @ Inbound::Stop { .. }) => {
                        received_stop = true;
                        let _ = agent.to_agent.send(message).await;
                        break "stop".to_owned();
                    }
                    Ok(Inbound::Connected { .. } | Inbound::Start { .. }) | Err(_) => counts.malformed += 1,
                },
            },
            event = agent.from_agent.recv() => match event {
                Some(AgentEvent::Send(message)) => {
                    if matches!(message, Outbound::Media { .. }) {
                        counts.outbound += 1;
                    }
                    if out.send(Reply::Text(message.for_stream(&stream_sid).to_json())).await.is_err() {
                        break "socket_closed".to_owned();
                    }
                }
                Some(AgentEvent::Failed(why)) => {
                    tracing::warn!(call_sid = %call.call_sid, agent = %agent.name, reason = %why, "agent failed mid-call");
                    break "agent_failed".to_owned();
                }
                None => break "agent_failed".to_owned(),
            },
        }
    };
    // Record the end before closing: Twilio calls the <Connect action> as soon as the socket
    // closes, and /api/v1/stream-ended decides hang-up or fallback from this record.
    if let Err(e) = finish(
        &state,
        &call,
        session,
        counts,
        &end_reason,
        received_stop,
        &agent.name,
    )
    .await
    {
        tracing::error!(error = %e, call_sid = %call.call_sid, "recording the end of a media session failed");
    }
    let close = match end_reason.as_str() {
        "stop" => Some((CLOSE_NORMAL, "stream stopped")),
        "agent_failed" => Some((CLOSE_AGENT_FAILED, "agent failed")),
        _ => None,
    };
    if let Some((code, reason)) = close {
        let _ = out
            .send(Reply::Close {
                code,
                reason: reason.to_owned(),
            })
            .await;
    }
}

type Opened = (
    entity::call::Model,
    entity::route::Model,
    entity::media_session::Model,
);

/// Claims the token id and records `stream.started`, in one transaction.
async fn open(
    state: &AppState,
    claims: &StreamClaims,
    stream_sid: &str,
) -> Result<Result<Opened, Refusal>, sea_orm::DbErr> {
    let txn = state.db.begin().await?;
    let Some(call) = db::calls::by_sid(&txn, &claims.sub).await? else {
        return Ok(Err(Refusal::UnknownCall));
    };
    if call.route_id != claims.rid || call.tenant_id != claims.tid {
        return Ok(Err(Refusal::CallMismatch));
    }
    let Some(route) = db::routes::get(&txn, &call.route_id).await? else {
        return Ok(Err(Refusal::UnknownCall));
    };
    let Some(session) = db::media::open(&txn, &call.id, &claims.jti, stream_sid).await? else {
        return Ok(Err(Refusal::TokenReused));
    };
    let data = json!({
        "call_sid": call.call_sid,
        "stream_sid": stream_sid,
        "media_session_id": session.id,
        "route_id": call.route_id,
        "agent": route.agent_url.as_deref().unwrap_or("echo"),
    });
    db::outbox::record(&txn, &call.tenant_id, "stream.started", data).await?;
    txn.commit().await?;
    tracing::info!(call_sid = %call.call_sid, stream_sid, "media stream started");
    Ok(Ok((call, route, session)))
}

async fn finish(
    state: &AppState,
    call: &entity::call::Model,
    session: entity::media_session::Model,
    counts: Counts,
    end_reason: &str,
    received_stop: bool,
    agent: &str,
) -> Result<(), sea_orm::DbErr> {
    let txn = state.db.begin().await?;
    let session = db::media::close(&txn, session, counts, end_reason, received_stop).await?;
    let data = json!({
        "call_sid": call.call_sid,
        "stream_sid": session.stream_sid,
        "media_session_id": session.id,
        "route_id": call.route_id,
        "agent": agent,
        "end_reason": end_reason,
        "received_stop": received_stop,
        "inbound_frames": counts.inbound,
        "outbound_frames": counts.outbound,
        "malformed_frames": counts.malformed,
    });
    db::outbox::record(&txn, &call.tenant_id, "stream.ended", data).await?;
    txn.commit().await?;
    tracing::info!(call_sid = %call.call_sid, end_reason, inbound = counts.inbound, outbound = counts.outbound, "media stream ended");
    Ok(())
}
