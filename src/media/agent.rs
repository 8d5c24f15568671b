//! Agents that talk to the caller: the built-in echo agent, and a bridge to a remote agent
//! runtime over WebSocket that speaks Twilio's Media Streams protocol (spec section 4). Both run
//! as tasks fed through bounded channels, so neither side can make the other buffer without
//! bound.
use std::{sync::Arc, time::Duration};

use futures::{SinkExt, StreamExt};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_tungstenite::tungstenite::{
    client::IntoClientRequest,
    http::{header::AUTHORIZATION, HeaderValue},
    protocol::{frame::coding::CloseCode, CloseFrame, WebSocketConfig},
    Message,
};
use tracing::Instrument as _;

use crate::{
    metrics::Metrics,
    twilio::media::{self as proto, Dropped, Inbound, Mark, Outbound, OutboundMedia},
};

/// Frames queued towards an agent, and from it, before the other side waits.
pub const QUEUE: usize = 64;

/// Time an agent has to accept the WebSocket connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest frame an agent may send; a larger one fails the agent.
pub const MAX_FRAME: usize = 64 * 1024;

/// Time the bridge waits for a connected agent task to say goodbye before it is aborted.
const GOODBYE: Duration = Duration::from_secs(2);

/// A frame from Twilio on its way to an agent: the exact text Twilio sent and, when it is a
/// known message, its parsed form.
#[derive(Debug)]
pub struct Relayed {
    pub text: String,
    pub message: Option<Inbound>,
}

/// What an agent produces.
#[derive(Debug)]
pub enum AgentEvent {
    /// A message for Twilio (its streamSid is filled in by the session).
    Send(Outbound),
    /// The agent closed normally (1000 or 1001): it ended the call.
    HungUp,
    /// The agent failed; the session ends so Twilio runs the fallback.
    Failed(String),
}

/// How to reach a remote agent for one call.
#[derive(Debug)]
pub struct RemoteAgent {
    /// The route's `agent_url`.
    pub url: String,
    /// Sent as `Authorization: Bearer ...` (see [`crate::domain::agent_token`]).
    pub bearer: String,
    /// Twilio's `connected` and the edited `start`, sent first.
    pub opening: [String; 2],
}

/// A running agent. Dropping it aborts the agent's task.
pub struct AgentHandle {
    pub to_agent: mpsc::Sender<Relayed>,
    pub from_agent: mpsc::Receiver<AgentEvent>,
    /// `echo` or the agent URL.
    pub name: String,
    task: Option<JoinHandle<()>>,
}

impl AgentHandle {
    /// Ends the conversation: the agent's input closes, and its task gets a moment to close
    /// its connection cleanly before it is aborted.
    pub fn finish(mut self) {
        let task = self.task.take();
        // Dropping the handle closes the agent's input.
        drop(self);
        if let Some(mut task) = task {
            tokio::spawn(async move {
                if tokio::time::timeout(GOODBYE, &mut task).await.is_err() {
                    task.abort();
                }
            });
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts the route's agent: the remote one, or the built-in echo agent.
pub fn start(remote: Option<RemoteAgent>, metrics: Arc<Metrics>) -> AgentHandle {
    let (to_agent, inbound) = mpsc::channel(QUEUE);
    let (events, from_agent) = mpsc::channel(QUEUE);
    let (name, task) = match remote {
        Some(agent) => (
            agent.url.clone(),
            // In the stream's span: what the agent connection logs is about this call.
            tokio::spawn(bridge(agent, inbound, events, metrics).in_current_span()),
        ),
        None => (
            "echo".to_owned(),
            tokio::spawn(echo(inbound, events).in_current_span()),
        ),
    };
    AgentHandle {
        to_agent,
        from_agent,
        name,
        task: Some(task),
    }
}

/// Marks sent by the echo agent, one per this many echoed frames.
pub const ECHO_MARK_EVERY: u64 = 50;

/// Plays the caller's audio back, with a mark every [`ECHO_MARK_EVERY`] frames; a key press
/// clears queued audio and is acknowledged with a mark.
async fn echo(mut inbound: mpsc::Receiver<Relayed>, events: mpsc::Sender<AgentEvent>) {
    let mut echoed = 0u64;
    while let Some(Relayed { message, .. }) = inbound.recv().await {
        let out = match message {
            Some(Inbound::Media { media, .. }) => {
                echoed += 1;
                let mut out = vec![Outbound::Media {
                    stream_sid: String::new(),
                    media: OutboundMedia {
                        payload: media.payload,
                    },
                }];
                if echoed.is_multiple_of(ECHO_MARK_EVERY) {
                    out.push(Outbound::Mark {
                        stream_sid: String::new(),
                        mark: Mark {
                            name: format!("echo-{echoed}"),
                        },
                    });
                }
                out
            }
            Some(Inbound::Dtmf { dtmf, .. }) => vec![
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
            Some(Inbound::Stop { .. }) => return,
            _ => Vec::new(),
        };
        for message in out {
            if events.send(AgentEvent::Send(message)).await.is_err() {
                return;
            }
        }
    }
}

/// Connects to the agent with its bearer token, within [`CONNECT_TIMEOUT`].
async fn connect(
    agent: &RemoteAgent,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    String,
> {
    let mut request = agent
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("agent URL: {e}"))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", agent.bearer))
        .map_err(|e| format!("agent token: {e}"))?;
    request.headers_mut().insert(AUTHORIZATION, bearer);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(request, Some(config), true),
    )
    .await
    {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(e)) => Err(format!("connecting to the agent: {e}")),
        Err(_) => Err(format!(
            "the agent did not accept the connection within {} s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

/// Relays between the session and a remote agent: Twilio's frames go to the agent as the text
/// Twilio sent; what the agent sends is parsed leniently, and what cannot be used is dropped
/// and counted.
async fn bridge(
    agent: RemoteAgent,
    mut inbound: mpsc::Receiver<Relayed>,
    events: mpsc::Sender<AgentEvent>,
    metrics: Arc<Metrics>,
) {
    let fail = |why: String| {
        let events = events.clone();
        async move {
            let _ = events.send(AgentEvent::Failed(why)).await;
        }
    };
    let socket = match connect(&agent).await {
        Ok(socket) => socket,
        Err(why) => return fail(why).await,
    };
    let (mut sink, mut stream) = socket.split();
    for text in agent.opening {
        if let Err(e) = sink.send(Message::text(text)).await {
            return fail(format!("sending the call to the agent: {e}")).await;
        }
    }
    let dropped = |why: Dropped| Metrics::reason(&metrics.agent_frames_dropped, why.as_str());
    loop {
        tokio::select! {
            relayed = inbound.recv() => match relayed {
                Some(Relayed { text, message }) => {
                    if let Err(e) = sink.send(Message::text(text)).await {
                        return fail(format!("sending to the agent: {e}")).await;
                    }
                    if matches!(message, Some(Inbound::Stop { .. })) {
                        return close(&mut sink, "stream stopped").await;
                    }
                }
                None => return close(&mut sink, "stream ended").await,
            },
            reply = stream.next() => match reply {
                Some(Ok(Message::Text(text))) => match proto::parse_from_agent(&text) {
                    Ok(out) => {
                        // Waits while the caller's side is behind: the session bounds the wait.
                        if events.send(AgentEvent::Send(out)).await.is_err() {
                            return;
                        }
                    }
                    Err(why) => dropped(why),
                },
                Some(Ok(Message::Binary(_))) => dropped(Dropped::Binary),
                Some(Ok(Message::Close(frame))) => {
                    return match frame {
                        Some(CloseFrame { code: CloseCode::Normal | CloseCode::Away, .. }) => {
                            let _ = events.send(AgentEvent::HungUp).await;
                        }
                        Some(frame) => fail(format!("the agent closed with {} {}", u16::from(frame.code), frame.reason).trim().to_owned()).await,
                        None => fail("the agent closed without a close code".to_owned()).await,
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return fail(format!("agent connection failed: {e}")).await,
                None => return fail("the agent connection ended without a close".to_owned()).await,
            },
        }
    }
}

/// Closes the agent connection normally.
async fn close<S>(sink: &mut S, reason: &'static str)
where
    S: futures::Sink<Message> + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: reason.into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}
