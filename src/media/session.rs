//! One media stream from connect to close. Free of HTTP types: frames come in as a stream and
//! replies go out through a channel, which the WebSocket handler connects to the socket.
use std::time::Duration;

use entity::states::{DiagnosticKind, EndReason};
use futures::{Stream, StreamExt};
use sea_orm::TransactionTrait;
use tokio::sync::mpsc;
use tracing::{field::Empty, Instrument};

use super::agent::{self, AgentEvent, AgentHandle, Relayed, RemoteAgent};
use crate::{
    db::{self, media::Counts},
    domain::{agent_token, alerts::Occurrence, runtime::StreamGuard, token::StreamClaims},
    events::{Event, StreamEndedData, StreamStartedData},
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
/// Close code when the instance shuts down and closes the stream at its drain deadline
/// (going away); Twilio then runs the `<Connect action>`.
pub const CLOSE_GOING_AWAY: u16 = 1001;

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

/// Records a refused stream (aggregated by reason) and logs it, once per reason and flush
/// interval (see `domain::alerts`).
pub fn record_refusal(state: &AppState, refusal: Refusal) {
    crate::metrics::Metrics::reason(&state.metrics.streams_refused, refusal.as_str());
    let occurrence = Occurrence {
        kind: DiagnosticKind::StreamRefused,
        key: refusal.as_str(),
        tenant_id: None,
        route_id: None,
        detail: Some(refusal.reason().to_owned()),
    };
    if state.diagnostics.record(occurrence) {
        tracing::warn!(reason = refusal.reason(), "media stream refused");
    }
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

/// How long the bridge waits on the slower side (an agent not reading the caller's frames, or a
/// caller's socket not taking the agent's frames) before the agent is failed. Memory stays
/// bounded by the queues meanwhile.
pub const STALL_LIMIT: Duration = Duration::from_secs(2);

/// How long the audio an agent sent before hanging up may keep playing before the stream is
/// closed.
pub const HANGUP_PLAYOUT: Duration = Duration::from_secs(10);

/// The mark sent after an agent's last audio when it hangs up: Twilio echoes it once that
/// audio has played, and then the stream closes.
pub const HANGUP_MARK: &str = "stateset-voice:agent-hangup";

/// Runs a stream. `url_claims` are the verified claims of a token found in the URL, if any;
/// otherwise the token must arrive in the `start` message's `customParameters`.
///
/// The stream runs in a `media_stream` span; its `call_sid`, `tenant_id`, `route_id` and
/// `stream_sid` are recorded once the token verified and matched the `start`, so every line
/// about the call's stream and agent carries them.
pub async fn run(
    state: AppState,
    url_claims: Option<StreamClaims>,
    frames: impl Stream<Item = Frame> + Unpin,
    out: mpsc::Sender<Reply>,
) {
    let span = tracing::info_span!(
        "media_stream",
        call_sid = Empty,
        tenant_id = Empty,
        route_id = Empty,
        stream_sid = Empty,
    );
    stream(state, url_claims, frames, out).instrument(span).await;
}

async fn stream(
    state: AppState,
    url_claims: Option<StreamClaims>,
    mut frames: impl Stream<Item = Frame> + Unpin,
    out: mpsc::Sender<Reply>,
) {
    let counted = state.runtime.stream_opened();
    let deadline = tokio::time::Instant::now() + state.config.media.start_timeout;
    let mut counts = Counts::default();
    let mut connected = None;

    // Until a valid `start`, nothing is bridged.
    let (start_text, stream_sid, start) = loop {
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline, frames.next()) => next,
            // Nothing was opened yet: the `<Connect action>` finds no session and plays the
            // fallback.
            () = counted.close_requested() => return close_going_away(&out).await,
        };
        let frame = match next {
            Err(_) => return refuse(&state, &out, Refusal::NoStart).await,
            Ok(None) => return,
            Ok(Some(Frame::Binary)) => {
                counts.malformed += 1;
                continue;
            }
            Ok(Some(Frame::Text(text))) => text,
        };
        match proto::parse(&frame) {
            Ok(Inbound::Start { stream_sid, start }) => break (frame, stream_sid, start),
            Ok(Inbound::Connected { .. }) => connected = Some(frame),
            Ok(_) | Err(_) => counts.malformed += 1,
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
    // The token is verified and names this call: its identity is trusted from here on.
    let span = tracing::Span::current();
    span.record("call_sid", claims.sub.as_str());
    span.record("tenant_id", claims.tid.as_str());
    span.record("route_id", claims.rid.as_str());
    span.record("stream_sid", stream_sid.as_str());
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
    let Opened {
        call,
        route,
        tenant,
        session,
    } = opened;

    let remote = match &route.agent_url {
        None => Ok(None),
        Some(url) => remote_agent(url, &call, &tenant, connected, &start_text).map(Some),
    };
    let (end, failure, agent_name) = match remote {
        Ok(remote) => {
            let mut agent = agent::start(remote, state.metrics.clone());
            let (end, failure) =
                converse(&mut frames, &out, &mut agent, &stream_sid, &mut counts, &counted).await;
            let name = agent.name.clone();
            agent.finish();
            (end, failure, name)
        }
        Err(why) => (
            EndReason::AgentFailed,
            Some(why),
            route.agent_url.clone().unwrap_or_default(),
        ),
    };
    if let Some(why) = &failure {
        tracing::warn!(call_sid = %call.call_sid, agent = %agent_name, reason = %why, "agent failed");
    }
    crate::metrics::Metrics::reason(&state.metrics.streams_ended, end.as_str());
    // Record the end before closing: Twilio calls the <Connect action> as soon as the socket
    // closes, and /api/v1/stream-ended decides hang-up or fallback from this record.
    if let Err(e) = finish(&state, &call, session, counts, end, &agent_name).await {
        tracing::error!(error = %e, call_sid = %call.call_sid, "recording the end of a media session failed");
    }
    let close = match end {
        EndReason::Stop => Some((CLOSE_NORMAL, "stream stopped")),
        EndReason::AgentHangup => Some((CLOSE_NORMAL, "agent hung up")),
        EndReason::AgentFailed => Some((CLOSE_AGENT_FAILED, "agent failed")),
        EndReason::Shutdown => Some((CLOSE_GOING_AWAY, "server shutting down")),
        EndReason::SocketClosed => None,
    };
    if let Some((code, reason)) = close {
        let close = Reply::Close {
            code,
            reason: reason.to_owned(),
        };
        let _ = tokio::time::timeout(STALL_LIMIT, out.send(close)).await;
    }
}

/// The connection to a route's agent for this call: its bearer token, and Twilio's opening
/// frames as the agent sees them.
fn remote_agent(
    url: &str,
    call: &entity::call::Model,
    tenant: &entity::tenant::Model,
    connected: Option<String>,
    start: &str,
) -> Result<RemoteAgent, String> {
    let bearer = agent_token::mint(
        &tenant.webhook_secret,
        &call.call_sid,
        &call.tenant_id,
        &call.route_id,
    )
    .map_err(|e| e.to_string())?;
    let metadata = [
        ("tenant_id", call.tenant_id.as_str()),
        ("route_id", call.route_id.as_str()),
        ("from_number", call.from_number.as_str()),
        ("to_number", call.to_number.as_str()),
    ];
    let start = proto::start_for_agent(start, &metadata).map_err(|e| format!("editing start: {e}"))?;
    Ok(RemoteAgent {
        url: url.to_owned(),
        bearer,
        opening: [connected.unwrap_or_else(|| proto::CONNECTED.to_owned()), start],
    })
}

/// Closes a stream that had not started when the instance told its streams to close.
async fn close_going_away(out: &mpsc::Sender<Reply>) {
    let close = Reply::Close {
        code: CLOSE_GOING_AWAY,
        reason: "server shutting down".to_owned(),
    };
    let _ = tokio::time::timeout(STALL_LIMIT, out.send(close)).await;
}

/// Relays between Twilio and the agent until the stream ends; returns why, and what went
/// wrong when the agent failed.
///
/// Neither direction waits on the other: a frame that finds its queue full is held (reading
/// from that side pauses) while the other direction keeps flowing, and a frame held longer
/// than [`STALL_LIMIT`] fails the agent. When the instance tells its streams to close
/// (`closing`: the shutdown drain's deadline), the stream ends as [`EndReason::Shutdown`].
async fn converse(
    frames: &mut (impl Stream<Item = Frame> + Unpin),
    out: &mpsc::Sender<Reply>,
    agent: &mut AgentHandle,
    stream_sid: &str,
    counts: &mut Counts,
    closing: &StreamGuard,
) -> (EndReason, Option<String>) {
    use tokio::time::Instant;
    let close_requested = closing.close_requested();
    tokio::pin!(close_requested);
    let failed = |why: &str| (EndReason::AgentFailed, Some(why.to_owned()));
    // A caller's frame waiting for room towards the agent, and since when.
    let mut to_agent: Option<(Relayed, Instant)> = None;
    // An agent's frame waiting for room towards the caller, and since when.
    let mut to_caller: Option<(Reply, Instant)> = None;
    // Set once the agent hung up after sending audio: until then its goodbye plays.
    let mut playout: Option<Instant> = None;
    // Whether a `stop` is waiting to be relayed: the stream ends once it is.
    let mut stopping = false;
    loop {
        let stalled_since = [to_agent.as_ref().map(|p| p.1), to_caller.as_ref().map(|p| p.1)]
            .into_iter()
            .flatten()
            .min();
        let deadline = match (stalled_since, playout) {
            (Some(since), Some(end)) => Some((since + STALL_LIMIT).min(end)),
            (Some(since), None) => Some(since + STALL_LIMIT),
            (None, end) => end,
        };
        let timer = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now));
        tokio::select! {
            frame = frames.next(), if to_agent.is_none() && !stopping => {
                let text = match frame {
                    None => return (EndReason::SocketClosed, None),
                    Some(Frame::Binary) => {
                        counts.malformed += 1;
                        continue;
                    }
                    Some(Frame::Text(text)) => text,
                };
                // Twilio's frames are relayed as sent; newer events Twilio may add pass too.
                let message = match proto::parse(&text) {
                    Ok(Inbound::Connected { .. } | Inbound::Start { .. }) => {
                        counts.malformed += 1;
                        continue;
                    }
                    Ok(message) => Some(message),
                    Err(_) if proto::event_name(&text).is_some() => None,
                    Err(_) => {
                        counts.malformed += 1;
                        continue;
                    }
                };
                let stop = matches!(message, Some(Inbound::Stop { .. }));
                match &message {
                    Some(Inbound::Media { .. }) => counts.inbound += 1,
                    Some(Inbound::Mark { mark, .. }) if playout.is_some() && mark.name == HANGUP_MARK => {
                        return (EndReason::AgentHangup, None);
                    }
                    _ => {}
                }
                if playout.is_some() {
                    // The agent is gone; its goodbye is playing.
                    if stop {
                        return (EndReason::Stop, None);
                    }
                    continue;
                }
                match agent.to_agent.try_send(Relayed { text, message }) {
                    Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {
                        // A closed queue means the agent's task ended; its last event says why.
                        if stop {
                            return (EndReason::Stop, None);
                        }
                    }
                    Err(mpsc::error::TrySendError::Full(relayed)) => {
                        to_agent = Some((relayed, Instant::now()));
                        stopping = stop;
                    }
                }
            }
            permit = agent.to_agent.reserve(), if to_agent.is_some() => {
                let (relayed, _) = to_agent.take().expect("a held frame");
                if let Ok(permit) = permit {
                    permit.send(relayed);
                }
                if stopping {
                    return (EndReason::Stop, None);
                }
            }
            event = agent.from_agent.recv(), if to_caller.is_none() && playout.is_none() => match event {
                Some(AgentEvent::Send(message)) => {
                    if matches!(message, Outbound::Media { .. }) {
                        counts.outbound += 1;
                    }
                    let reply = Reply::Text(message.for_stream(stream_sid).to_json());
                    match out.try_send(reply) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => return (EndReason::SocketClosed, None),
                        Err(mpsc::error::TrySendError::Full(reply)) => to_caller = Some((reply, Instant::now())),
                    }
                }
                Some(AgentEvent::HungUp) => {
                    if counts.outbound == 0 {
                        return (EndReason::AgentHangup, None);
                    }
                    // Twilio reports this mark once the audio before it has played.
                    let mark = Outbound::Mark {
                        stream_sid: stream_sid.to_owned(),
                        mark: proto::Mark { name: HANGUP_MARK.to_owned() },
                    };
                    if out.try_send(Reply::Text(mark.to_json())).is_err() {
                        return (EndReason::AgentHangup, None);
                    }
                    playout = Some(Instant::now() + HANGUP_PLAYOUT);
                    to_agent = None;
                }
                Some(AgentEvent::Failed(why)) => return (EndReason::AgentFailed, Some(why)),
                None => return failed("the agent stopped"),
            },
            permit = out.reserve(), if to_caller.is_some() => {
                let (reply, _) = to_caller.take().expect("a held frame");
                match permit {
                    Ok(permit) => permit.send(reply),
                    Err(_) => return (EndReason::SocketClosed, None),
                }
            }
            () = &mut close_requested => {
                // An agent's goodbye still playing ends the call as the agent wanted.
                let end = if playout.is_some() { EndReason::AgentHangup } else { EndReason::Shutdown };
                return (end, None);
            }
            () = timer, if deadline.is_some() => {
                if to_agent.is_some() {
                    return failed("the agent does not read the caller's frames");
                }
                if to_caller.is_some() {
                    return failed("the agent sends faster than the caller's side takes it");
                }
                return (EndReason::AgentHangup, None);
            }
        }
    }
}

/// What a stream works with once its `start` is accepted.
struct Opened {
    call: entity::call::Model,
    route: entity::route::Model,
    tenant: entity::tenant::Model,
    session: entity::media_session::Model,
}

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
    let Some((route, tenant)) =
        db::routes::with_tenant_by_id(&txn, &state.config.secrets, &call.route_id).await?
    else {
        return Ok(Err(Refusal::UnknownCall));
    };
    let Some(session) = db::media::open(&txn, &call.id, &claims.jti, stream_sid).await? else {
        return Ok(Err(Refusal::TokenReused));
    };
    let event = Event::StreamStarted(StreamStartedData {
        call_sid: call.call_sid.clone(),
        stream_sid: stream_sid.to_owned(),
        media_session_id: session.id.clone(),
        route_id: call.route_id.clone(),
        agent: route.agent_url.as_deref().unwrap_or("echo").to_owned(),
    });
    db::outbox::record(&txn, &call.tenant_id, &event).await?;
    txn.commit().await?;
    tracing::info!(call_sid = %call.call_sid, stream_sid, "media stream started");
    Ok(Ok(Opened {
        call,
        route,
        tenant,
        session,
    }))
}

async fn finish(
    state: &AppState,
    call: &entity::call::Model,
    session: entity::media_session::Model,
    counts: Counts,
    end: EndReason,
    agent: &str,
) -> Result<(), sea_orm::DbErr> {
    let end_reason = end.as_str();
    let received_stop = end == EndReason::Stop;
    let txn = state.db.begin().await?;
    let session = db::media::close(&txn, session, counts, end, received_stop).await?;
    let event = Event::StreamEnded(StreamEndedData {
        call_sid: call.call_sid.clone(),
        stream_sid: session.stream_sid.clone(),
        media_session_id: session.id.clone(),
        route_id: call.route_id.clone(),
        agent: agent.to_owned(),
        end_reason: end,
        received_stop,
        inbound_frames: counts.inbound,
        outbound_frames: counts.outbound,
        malformed_frames: counts.malformed,
    });
    db::outbox::record(&txn, &call.tenant_id, &event).await?;
    txn.commit().await?;
    tracing::info!(call_sid = %call.call_sid, end_reason, inbound = counts.inbound, outbound = counts.outbound, "media stream ended");
    Ok(())
}
