//! The scripted agent runtime: a WebSocket server on loopback, named by the seeded route's
//! `agent_url`, that plays a fixture's agent script on each connection the service opens and
//! records what it received.
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_tungstenite::{
    tungstenite::{
        handshake::server::{Request, Response},
        protocol::{frame::coding::CloseCode, CloseFrame},
        Message,
    },
    WebSocketStream,
};

/// How long the agent waits for the service's next frame before it gives up.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// What a scripted agent does on its connection. In the frames it sends, `{streamSid}` is
/// replaced by the streamSid of the `start` it received and, in `reply_to_media`,
/// `{payload}` by the payload of the media frame it answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentScript {
    /// Text frames sent in order once `start` arrived (need not be valid JSON).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub send_after_start: Vec<String>,
    /// The frame sent in reply to each `media` frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_media: Option<String>,
    /// How the agent ends the conversation.
    #[serde(default, skip_serializing_if = "AgentEnd::is_await_stop")]
    pub end: AgentEnd,
}

/// How a scripted agent ends. `after_media` counts the media frames received (and answered)
/// before the agent ends; 0 ends right after the frames sent after `start`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentEnd {
    /// Reads (and replies) until the service closes the connection, as it does after `stop`.
    #[default]
    AwaitStop,
    /// Closes the connection with this code and reason.
    Close {
        code: u16,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        reason: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        after_media: usize,
    },
    /// Drops the TCP connection without a close frame.
    Drop {
        #[serde(default, skip_serializing_if = "is_zero")]
        after_media: usize,
    },
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl AgentEnd {
    fn is_await_stop(&self) -> bool {
        *self == Self::AwaitStop
    }

    /// After how many media frames the agent ends by itself, if it does.
    fn after_media(&self) -> Option<usize> {
        match self {
            Self::AwaitStop => None,
            Self::Close { after_media, .. } | Self::Drop { after_media } => Some(*after_media),
        }
    }

    /// How the script ends, for the transcript.
    pub fn describe(&self) -> String {
        let when = |n: usize| match n {
            0 => "right after its frames after start".to_owned(),
            n => format!("after {n} media"),
        };
        match self {
            Self::AwaitStop => "reads until the service closes the connection".to_owned(),
            Self::Close {
                code,
                reason,
                after_media,
            } => format!("closes with {code} {reason:?} {}", when(*after_media)),
            Self::Drop { after_media } => format!(
                "drops the connection without a close frame {}",
                when(*after_media)
            ),
        }
    }
}

/// What one agent connection saw and did.
#[derive(Debug, Clone, Default)]
pub struct AgentRecord {
    /// The request path of the WebSocket handshake.
    pub path: String,
    /// The `Authorization` header of the handshake.
    pub authorization: Option<String>,
    /// Every text frame received, as received.
    pub received: Vec<String>,
    /// Every frame the agent sent, as sent.
    pub sent: Vec<String>,
    /// How the connection ended.
    pub ending: String,
}

/// A running scripted agent: the `n`-th connection it accepts plays `scripts[n]`.
pub struct AgentServer {
    /// The `agent_url` to seed on the route.
    pub url: String,
    records: mpsc::UnboundedReceiver<AgentRecord>,
    accepted: Arc<AtomicUsize>,
    taken: usize,
}

impl AgentServer {
    /// Binds a free loopback port and serves `scripts`, one per connection.
    pub async fn spawn(scripts: Vec<AgentScript>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("agent binds");
        let url = format!("ws://{}/agent", listener.local_addr().expect("agent address"));
        let (tx, records) = mpsc::unbounded_channel();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            let mut scripts = scripts.into_iter();
            while let Ok((tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let script = scripts.next();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let record = serve(tcp, script).await;
                    let _ = tx.send(record);
                });
            }
        });
        Self {
            url,
            records,
            accepted,
            taken: 0,
        }
    }

    /// The record of the next connection, once it ended; `None` when the service opened no
    /// further connection. When one is `expected`, a connection still to come is waited for.
    pub async fn next_record(&mut self, expected: bool) -> Option<AgentRecord> {
        let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
        while self.accepted.load(Ordering::SeqCst) <= self.taken {
            if !expected || tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.taken += 1;
        let record = tokio::time::timeout(READ_TIMEOUT * 2, self.records.recv())
            .await
            .expect("the agent connection ends in time")
            .expect("the agent server runs");
        Some(record)
    }
}

/// Accepts the handshake on `tcp` and plays `script` (an unexpected connection is recorded
/// and closed).
// The handshake callback's error type is tungstenite's, large by its design.
#[allow(clippy::result_large_err)]
async fn serve(tcp: tokio::net::TcpStream, script: Option<AgentScript>) -> AgentRecord {
    let mut record = AgentRecord::default();
    let handshake = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, res: Response| {
        record.path = req.uri().to_string();
        record.authorization = req
            .headers()
            .get("authorization")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        Ok(res)
    })
    .await;
    let mut ws = match handshake {
        Ok(ws) => ws,
        Err(e) => {
            record.ending = format!("the WebSocket handshake failed: {e}");
            return record;
        }
    };
    match script {
        Some(script) => converse(&mut ws, &script, &mut record).await,
        None => {
            record.ending = "an unexpected connection: the fixture has no script for it".to_owned();
            let _ = ws.close(None).await;
        }
    }
    record
}

/// What the agent reads next.
enum Next {
    Text(String),
    /// The connection ended, described.
    End(String),
}

async fn next(ws: &mut WebSocketStream<tokio::net::TcpStream>) -> Next {
    loop {
        let message = match tokio::time::timeout(READ_TIMEOUT, ws.next()).await {
            Err(_) => return Next::End("the agent gave up: nothing from the service in time".to_owned()),
            Ok(None | Some(Err(_))) => {
                return Next::End("the connection ended without a close frame".to_owned())
            }
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(text) => return Next::Text(text.to_string()),
            Message::Binary(bytes) => return Next::Text(format!("[binary frame, {} bytes]", bytes.len())),
            Message::Close(Some(frame)) => {
                return Next::End(format!(
                    "the service closed the connection: {} {:?}",
                    u16::from(frame.code),
                    frame.reason.as_str()
                ))
            }
            Message::Close(None) => {
                return Next::End("the service closed the connection without a code".to_owned())
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

/// The streamSid of a `start` frame.
fn start_stream_sid(frame: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(frame).ok()?;
    if v["event"] != "start" {
        return None;
    }
    v["start"]["streamSid"]
        .as_str()
        .or_else(|| v["streamSid"].as_str())
        .map(str::to_owned)
}

/// The payload of a `media` frame.
fn media_payload(frame: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(frame).ok()?;
    if v["event"] != "media" {
        return None;
    }
    Some(v["media"]["payload"].as_str().unwrap_or_default().to_owned())
}

async fn converse(
    ws: &mut WebSocketStream<tokio::net::TcpStream>,
    script: &AgentScript,
    record: &mut AgentRecord,
) {
    let stream_sid = loop {
        match next(ws).await {
            Next::Text(text) => {
                let sid = start_stream_sid(&text);
                record.received.push(text);
                if let Some(sid) = sid {
                    break sid;
                }
            }
            Next::End(ending) => {
                record.ending = ending;
                return;
            }
        }
    };
    let fill = |template: &str, payload: &str| {
        template
            .replace("{streamSid}", &stream_sid)
            .replace("{payload}", payload)
    };
    for frame in &script.send_after_start {
        if !send(ws, record, fill(frame, "")).await {
            return;
        }
    }
    if script.end.after_media() == Some(0) {
        return end(ws, &script.end, record).await;
    }
    let mut media = 0;
    loop {
        match next(ws).await {
            Next::Text(text) => {
                let payload = media_payload(&text);
                record.received.push(text);
                let Some(payload) = payload else { continue };
                media += 1;
                if let Some(reply) = &script.reply_to_media {
                    if !send(ws, record, fill(reply, &payload)).await {
                        return;
                    }
                }
                if script.end.after_media() == Some(media) {
                    return end(ws, &script.end, record).await;
                }
            }
            Next::End(ending) => {
                record.ending = ending;
                return;
            }
        }
    }
}

/// Sends `frame`; false (and the ending recorded) when the connection is gone.
async fn send(
    ws: &mut WebSocketStream<tokio::net::TcpStream>,
    record: &mut AgentRecord,
    frame: String,
) -> bool {
    match ws.send(Message::text(frame.clone())).await {
        Ok(()) => {
            record.sent.push(frame);
            true
        }
        Err(_) => {
            record.ending = "sending failed: the connection is gone".to_owned();
            false
        }
    }
}

/// Ends the connection as the script says. After its own close the agent reads on (records
/// nothing) until the service completes the closing handshake, so no reset races it.
async fn end(ws: &mut WebSocketStream<tokio::net::TcpStream>, how: &AgentEnd, record: &mut AgentRecord) {
    match how {
        AgentEnd::AwaitStop => unreachable!("await_stop does not end by itself"),
        AgentEnd::Close { code, reason, .. } => {
            record.ending = format!("the agent closed the connection: {code} {reason:?}");
            let frame = CloseFrame {
                code: CloseCode::from(*code),
                reason: reason.as_str().into(),
            };
            let _ = ws.close(Some(frame)).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
        }
        AgentEnd::Drop { .. } => {
            record.ending = "the agent dropped the connection without a close frame".to_owned();
            // The caller drops the socket right after.
        }
    }
}
