//! Agents that talk to the caller: the built-in echo agent, and a bridge to a remote agent
//! runtime over WebSocket. Both run as tasks fed through bounded channels, so a slow agent
//! slows the reading of the caller's frames instead of buffering without bound.
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::twilio::media::{Inbound, Mark, Outbound, OutboundMedia};

/// Frames queued towards an agent before the caller's side waits.
pub const QUEUE: usize = 64;

/// What an agent produces.
#[derive(Debug)]
pub enum AgentEvent {
    /// A message for Twilio (its streamSid is filled in by the session).
    Send(Outbound),
    /// The agent failed; the session ends so Twilio runs the fallback.
    Failed(String),
}

/// What an agent learns about the call before any audio.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallContext {
    pub call_sid: String,
    pub stream_sid: String,
    pub tenant_id: String,
    pub route_id: String,
    pub from: String,
    pub to: String,
    pub media_format: Option<crate::twilio::media::MediaFormat>,
    pub custom_parameters: std::collections::BTreeMap<String, String>,
}

/// A running agent.
pub struct AgentHandle {
    pub to_agent: mpsc::Sender<Inbound>,
    pub from_agent: mpsc::Receiver<AgentEvent>,
    /// `echo` or the agent URL.
    pub name: String,
}

/// Starts the route's agent: the remote one at `agent_url`, or the echo agent.
pub fn start(agent_url: Option<&str>, context: CallContext) -> AgentHandle {
    let (to_agent, inbound) = mpsc::channel(QUEUE);
    let (events, from_agent) = mpsc::channel(QUEUE);
    let name = match agent_url {
        Some(url) => {
            tokio::spawn(remote(url.to_owned(), context, inbound, events));
            url.to_owned()
        }
        None => {
            tokio::spawn(echo(inbound, events));
            "echo".to_owned()
        }
    };
    AgentHandle {
        to_agent,
        from_agent,
        name,
    }
}

/// Marks sent by the echo agent, one per this many echoed frames.
pub const ECHO_MARK_EVERY: u64 = 50;

/// Plays the caller's audio back, with a mark every [`ECHO_MARK_EVERY`] frames; a key press
/// clears queued audio and is acknowledged with a mark.
async fn echo(mut inbound: mpsc::Receiver<Inbound>, events: mpsc::Sender<AgentEvent>) {
    let mut echoed = 0u64;
    while let Some(message) = inbound.recv().await {
        let out = match message {
            Inbound::Media { media, .. } => {
                echoed += 1;
                let mut out = vec![Outbound::Media {
                    stream_sid: String::new(),
                    media: OutboundMedia {
                        payload: media.payload,
                    },
                }];
                if echoed % ECHO_MARK_EVERY == 0 {
                    out.push(Outbound::Mark {
                        stream_sid: String::new(),
                        mark: Mark {
                            name: format!("echo-{echoed}"),
                        },
                    });
                }
                out
            }
            Inbound::Dtmf { dtmf, .. } => vec![
                Outbound::Clear {
                    stream_sid: String::new(),
                },
                Outbound::Mark {
                    stream_sid: String::new(),
                    mark: Mark {
                        name: format!("dtmf-{}", dtmf.digit),
                    },
                },
            ],
            Inbound::Stop { .. } => return,
            _ => Vec::new(),
        };
        for message in out {
            if events.send(AgentEvent::Send(message)).await.is_err() {
                return;
            }
        }
    }
}

/// Bridges to a remote agent: sends `{"event":"call",...}` first, then relays Twilio's frames
/// as they are; the agent answers with Twilio-shaped `media`, `mark` and `clear` messages.
async fn remote(
    url: String,
    context: CallContext,
    mut inbound: mpsc::Receiver<Inbound>,
    events: mpsc::Sender<AgentEvent>,
) {
    let connect = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio_tungstenite::connect_async_with_config(url.as_str(), None, true),
    );
    let mut socket = match connect.await {
        Ok(Ok((socket, _))) => socket,
        Ok(Err(e)) => {
            let _ = events
                .send(AgentEvent::Failed(format!("connecting to the agent: {e}")))
                .await;
            return;
        }
        Err(_) => {
            let _ = events
                .send(AgentEvent::Failed("connecting to the agent timed out".to_owned()))
                .await;
            return;
        }
    };
    let hello = json!({"event": "call", "call": context}).to_string();
    if let Err(e) = socket.send(Message::text(hello)).await {
        let _ = events
            .send(AgentEvent::Failed(format!("agent refused the call context: {e}")))
            .await;
        return;
    }
    let (mut sink, mut stream) = socket.split();
    loop {
        tokio::select! {
            message = inbound.recv() => match message {
                Some(message) => {
                    let stop = matches!(message, Inbound::Stop { .. });
                    let text = serde_json::to_string(&message).expect("inbound messages serialise");
                    if let Err(e) = sink.send(Message::text(text)).await {
                        let _ = events.send(AgentEvent::Failed(format!("sending to the agent: {e}"))).await;
                        return;
                    }
                    if stop {
                        let _ = sink.close().await;
                        return;
                    }
                }
                None => {
                    let _ = sink.close().await;
                    return;
                }
            },
            reply = stream.next() => match reply {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<Outbound>(&text) {
                    Ok(out) => {
                        if events.send(AgentEvent::Send(out)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(agent = %url, error = %e, "ignoring malformed agent message"),
                },
                Some(Ok(Message::Close(frame))) => {
                    let why = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                    let _ = events.send(AgentEvent::Failed(format!("the agent closed the stream {why}").trim().to_owned())).await;
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let _ = events.send(AgentEvent::Failed(format!("agent connection failed: {e}"))).await;
                    return;
                }
                None => {
                    let _ = events.send(AgentEvent::Failed("the agent connection ended".to_owned())).await;
                    return;
                }
            },
        }
    }
}

/// Checks that an agent accepts a WebSocket connection within `timeout`.
pub async fn probe(url: &str, timeout: std::time::Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, tokio_tungstenite::connect_async(url)).await {
        Ok(Ok((mut socket, _))) => {
            let _ = socket.close(None).await;
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}
