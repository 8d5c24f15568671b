//! `GET /media-stream` and `GET /media-stream/{token}`: the Twilio Media Streams WebSocket.
//! A token in the URL is verified before the upgrade; otherwise the session waits for it in
//! the `start` message.
use futures::{SinkExt, StreamExt};
use poem::{
    handler,
    http::StatusCode,
    web::{
        websocket::{CloseCode, Message, WebSocket},
        Data, Path, Query,
    },
    IntoResponse, Response,
};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::{
    error::Problem,
    media::session::{self, Frame, Refusal, Reply},
    state::AppState,
};

/// Query of `GET /media-stream`.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    stream_token: Option<String>,
}

/// The stream endpoint with the token in the query, or only in `customParameters`.
#[handler]
pub async fn media_stream(
    ws: WebSocket,
    Query(query): Query<StreamQuery>,
    Data(state): Data<&AppState>,
) -> Response {
    upgrade(ws, query.stream_token, state.clone()).await
}

/// The stream endpoint with the token as the last path segment.
#[handler]
pub async fn media_stream_path(
    ws: WebSocket,
    Path(token): Path<String>,
    Data(state): Data<&AppState>,
) -> Response {
    upgrade(ws, Some(token), state.clone()).await
}

async fn upgrade(ws: WebSocket, token: Option<String>, state: AppState) -> Response {
    let claims = match token.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(token) => match state.tokens.verify(token) {
            Ok(claims) => Some(claims),
            Err(e) => {
                let refusal = Refusal::from_token_error(&e);
                session::record_refusal(&state, refusal);
                return Problem::new(StatusCode::UNAUTHORIZED, refusal.reason()).into_http();
            }
        },
    };
    if let Some(claims) = &claims {
        // The request's own line (the 101) is about this call too.
        let span = tracing::Span::current();
        span.record("call_sid", claims.sub.as_str());
        span.record("tenant_id", claims.tid.as_str());
        span.record("route_id", claims.rid.as_str());
    }
    ws.on_upgrade(move |socket| async move {
        let (mut sink, stream) = socket.split();
        let frames = stream
            .take_while(|m| futures::future::ready(matches!(m, Ok(m) if !m.is_close())))
            .filter_map(|m| {
                futures::future::ready(match m {
                    Ok(Message::Text(text)) => Some(Frame::Text(text)),
                    Ok(Message::Binary(_)) => Some(Frame::Binary),
                    _ => None,
                })
            });
        let (out, mut replies) = mpsc::channel::<Reply>(crate::media::agent::QUEUE);
        let mut writer = tokio::spawn(async move {
            while let Some(reply) = replies.recv().await {
                let message = match reply {
                    Reply::Text(text) => Message::Text(text),
                    Reply::Close { code, reason } => {
                        let _ = sink
                            .send(Message::Close(Some((CloseCode::from(code), reason))))
                            .await;
                        break;
                    }
                };
                if sink.send(message).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        session::run(state, claims, Box::pin(frames), out).await;
        // A peer that does not take its last frames is not waited for forever.
        if tokio::time::timeout(session::STALL_LIMIT, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    })
    .into_response()
}
