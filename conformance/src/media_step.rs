//! The media-stream step of a fixture: after an answer with `<Connect><Stream>`, the runner
//! opens the stream WebSocket as Twilio would (the `<Stream url>`, token where the answer put
//! it), plays frames of the recorded Twilio session and literal frames, and renders what both
//! sides of the call saw: Twilio's side, and the agent (the built-in echo agent, or a scripted
//! agent the runner serves).
use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use stateset_voice::testkit::{recorded_frame, recorded_session, TestApp};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    fixture::PUBLIC_URL,
    frames::{self, CallerFrames},
    redact::TokenNames,
    scripted_agent::{AgentRecord, AgentScript, AgentServer},
};

/// How long Twilio's side waits for what an `await` step asks for.
const AWAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Twilio's side waits for the service to close the stream after its script
/// (longer than the service's hang-up playout).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(20);

/// A media stream opened from the `<Stream>` of the request's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaStream {
    /// The agent the route talks to.
    pub agent: Agent,
    /// What Twilio's side does, in order. After it, the runner reads until the service
    /// closes the stream.
    pub caller: Vec<CallerStep>,
}

/// The agent of a media stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Agent {
    /// The built-in echo agent (the route has no `agent_url`).
    Echo,
    /// A scripted agent served by the runner on loopback (the route's `agent_url`).
    Script(AgentScript),
}

/// One step of Twilio's side of a stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerStep {
    /// Sends the recorded frames on lines `[first, last]` (1-based, inclusive) of the
    /// recording, with its CallSid and token placeholder replaced.
    Play([usize; 2]),
    /// Sends a literal text frame (the recording's CallSid and token placeholder replaced).
    Send(String),
    /// Waits until Twilio's side received at least these totals (or the stream closed).
    Await(Await),
    /// Sends back a `mark` for every mark received and not yet echoed, as Twilio does once
    /// the audio before it has played.
    EchoMarks,
}

/// Totals an `await` step waits for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Await {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub media: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub marks: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub clears: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Await {
    fn describe(&self) -> String {
        let parts: Vec<String> = [
            (self.media, "media"),
            (self.marks, "marks"),
            (self.clears, "clears"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if parts.is_empty() {
            "nothing".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// What Twilio's side received so far.
#[derive(Debug, Default)]
struct Heard {
    frames: Vec<String>,
    /// How the stream ended, once it did.
    ended: Option<String>,
}

impl Heard {
    fn count(&self, event: &str) -> usize {
        self.frames.iter().filter(|f| frames::event(f) == event).count()
    }

    fn has(&self, want: &Await) -> bool {
        self.count("media") >= want.media
            && self.count("mark") >= want.marks
            && self.count("clear") >= want.clears
    }
}

/// The call a stream belongs to, and how the transcript names its ids.
pub struct StreamContext<'a> {
    pub app: &'a TestApp,
    /// The raw answer carrying the `<Stream>`.
    pub answer: &'a str,
    pub call_sid: &'a str,
    pub tenant_id: &'a str,
    pub webhook_secret: &'a str,
    /// Ids (tenant, routes) and the names the transcript uses for them.
    pub names: BTreeMap<String, String>,
}

impl StreamContext<'_> {
    fn redact(&self, text: &str) -> String {
        self.names
            .iter()
            .fold(text.to_owned(), |out, (id, name)| out.replace(id, name))
    }
}

/// The first value of attribute `attr` on element `element` in `xml`, unescaped.
pub fn attribute(xml: &str, element: &str, attr: &str) -> Option<String> {
    let start = xml.find(&format!("<{element} "))?;
    let rest = &xml[start..];
    let rest = &rest[..rest.find('>')?];
    let needle = format!(" {attr}=\"");
    let value = &rest[rest.find(&needle)? + needle.len()..];
    let value = &value[..value.find('"')?];
    Some(
        value
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// The value of the `<Parameter name="stream_token">` of the answer.
fn stream_token_parameter(answer: &str) -> Option<String> {
    let at = answer.find("<Parameter name=\"stream_token\"")?;
    attribute(&answer[at..], "Parameter", "value")
}

/// Claims of the agent's bearer token, decoded independently of the service.
#[derive(Debug, Deserialize)]
struct AgentClaims {
    sub: String,
    tid: String,
    rid: String,
    aud: String,
    iat: i64,
    exp: i64,
}

/// What the agent's bearer token must say, and the key it must be signed with.
struct AgentClaimsExpected<'a> {
    webhook_secret: &'a str,
    call_sid: &'a str,
    tenant_id: &'a str,
    route_id: &'a str,
}

/// Checks the agent's `Authorization: Bearer` JWT: HS256 keyed with the base64-decoded part
/// of the tenant's webhook secret after `whsec_`, bound to this call, tenant and route, for
/// the agent audience, valid 60 s. Returns the header as the transcript shows it.
fn check_agent_token(header: Option<&str>, expected: &AgentClaimsExpected<'_>) -> String {
    let Some(header) = header else {
        return "(no Authorization header)".to_owned();
    };
    let Some(token) = header.strip_prefix("Bearer ") else {
        return format!("{header} (not a bearer token)");
    };
    let key = STANDARD
        .decode(
            expected
                .webhook_secret
                .strip_prefix("whsec_")
                .expect("the tenant's webhook secret starts with whsec_"),
        )
        .expect("the tenant's webhook secret is base64 after whsec_");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["agent"]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<AgentClaims>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(&key),
        &validation,
    )
    .unwrap_or_else(|e| panic!("the agent's bearer token does not verify: {e}"))
    .claims;
    assert_eq!(
        claims.sub, expected.call_sid,
        "agent token subject is the CallSid"
    );
    assert_eq!(claims.tid, expected.tenant_id, "agent token tenant");
    assert_eq!(
        claims.rid, expected.route_id,
        "agent token route is the call's route"
    );
    assert_eq!(claims.aud, "agent", "agent token audience");
    assert_eq!(claims.exp - claims.iat, 60, "agent token lifetime");
    let now = chrono::Utc::now().timestamp();
    assert!((claims.iat - now).abs() < 60, "agent token issued now");
    "Bearer [agent_token]".to_owned()
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads what the service sends to Twilio's side until it closes the stream.
async fn listen(mut stream: futures::stream::SplitStream<Socket>, heard: watch::Sender<Heard>) {
    let ended = loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => heard.send_modify(|h| h.frames.push(text.to_string())),
            Some(Ok(Message::Binary(bytes))) => {
                heard.send_modify(|h| h.frames.push(format!("[binary frame, {} bytes]", bytes.len())))
            }
            Some(Ok(Message::Close(Some(frame)))) => {
                break format!(
                    "the service closed the stream: {} {:?}",
                    u16::from(frame.code),
                    frame.reason.as_str()
                )
            }
            Some(Ok(Message::Close(None))) => {
                break "the service closed the stream without a code".to_owned()
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => break "the stream ended without a close frame".to_owned(),
        }
    };
    heard.send_modify(|h| h.ended = Some(ended));
    // Completes the closing handshake.
    while let Some(Ok(_)) = stream.next().await {}
}

/// The highest `sequenceNumber` among `frames`.
fn last_sequence_number(frames: &[String]) -> u64 {
    frames
        .iter()
        .filter_map(|f| serde_json::from_str::<serde_json::Value>(f).ok())
        .filter_map(|v| v["sequenceNumber"].as_str().and_then(|n| n.parse().ok()))
        .max()
        .unwrap_or(0)
}

/// Twilio's side of a stream, as played.
struct Caller {
    sink: futures::stream::SplitSink<Socket, Message>,
    heard: watch::Receiver<Heard>,
    sent: Vec<String>,
    /// Marks received so far that were echoed.
    echoed: usize,
    log: Vec<String>,
}

impl Caller {
    fn ended(&self) -> bool {
        self.heard.borrow().ended.is_some()
    }

    /// Sends `frames` until the stream closes; returns how many were sent.
    async fn send(&mut self, frames: Vec<String>) -> usize {
        let mut sent = 0;
        for frame in frames {
            if self.ended() || self.sink.send(Message::text(frame.clone())).await.is_err() {
                break;
            }
            self.sent.push(frame);
            sent += 1;
        }
        sent
    }

    async fn step(
        &mut self,
        step: &CallerStep,
        recorded: &[String],
        token: &str,
        ctx: &StreamContext<'_>,
        tokens: &mut TokenNames,
    ) {
        let first = self.sent.len() + 1;
        match step {
            CallerStep::Play([from, to]) => {
                assert!(
                    (1..=*to).contains(from) && *to <= recorded.len(),
                    "play [{from}, {to}]: the recording has lines 1 to {}",
                    recorded.len()
                );
                let frames = recorded[from - 1..*to].to_vec();
                let what = frames::describe_events(&frames);
                let lines = if from == to {
                    format!("recorded frame {from}")
                } else {
                    format!("recorded frames {from}-{to}")
                };
                let count = frames.len();
                let line = match self.send(frames).await {
                    0 => format!("{lines} ({what}) not sent: the stream had closed"),
                    1 if count == 1 => format!("#{first} {lines}: {what}"),
                    n if n == count => format!("#{first}-#{} {lines}: {what}", first + n - 1),
                    n => format!(
                        "#{first}-#{} {lines}: {what}; only {n} sent: the stream had closed",
                        first + n - 1
                    ),
                };
                self.log.push(line);
            }
            CallerStep::Send(frame) => {
                let frame = recorded_frame(frame, ctx.call_sid, token);
                let shown = frames::abbreviated(&tokens.redact(&frame));
                if self.send(vec![frame]).await == 1 {
                    self.log.push(format!("#{first} {shown}"));
                } else {
                    self.log.push(format!("not sent, the stream had closed: {shown}"));
                }
            }
            CallerStep::Await(want) => {
                let outcome = tokio::time::timeout(
                    AWAIT_TIMEOUT,
                    self.heard.wait_for(|h| h.ended.is_some() || h.has(want)),
                )
                .await;
                let outcome =
                    outcome.map(|heard| heard.expect("the listener runs until the stream ends").has(want));
                let line = match outcome {
                    Err(_) => panic!(
                        "awaiting {} on Twilio's side: only {} arrived in {} s",
                        want.describe(),
                        frames::describe_events(&self.heard.borrow().frames),
                        AWAIT_TIMEOUT.as_secs()
                    ),
                    Ok(true) => format!("awaited {}", want.describe()),
                    Ok(false) => format!("awaited {}: the stream closed first", want.describe()),
                };
                self.log.push(line);
            }
            CallerStep::EchoMarks => {
                let marks: Vec<(String, String)> = {
                    let heard = self.heard.borrow();
                    heard
                        .frames
                        .iter()
                        .filter_map(|f| {
                            let name = frames::mark_name(f)?;
                            let v: serde_json::Value = serde_json::from_str(f).ok()?;
                            Some((name, v["streamSid"].as_str().unwrap_or_default().to_owned()))
                        })
                        .collect()
                };
                let new = marks[self.echoed..].to_vec();
                self.echoed = marks.len();
                if new.is_empty() {
                    self.log.push("echoed no mark: none arrived".to_owned());
                }
                for (name, stream_sid) in new {
                    let sequence = last_sequence_number(&self.sent) + 1;
                    // Members in Twilio's order.
                    let echo = format!(
                        r#"{{"event":"mark","sequenceNumber":"{sequence}","streamSid":{},"mark":{{"name":{}}}}}"#,
                        serde_json::Value::from(stream_sid.as_str()),
                        serde_json::Value::from(name.as_str()),
                    );
                    let number = self.sent.len() + 1;
                    if self.send(vec![echo.clone()]).await == 1 {
                        self.log.push(format!("#{number} echoed mark {name:?}: {echo}"));
                    } else {
                        self.log
                            .push(format!("mark {name:?} not echoed: the stream had closed"));
                    }
                }
            }
        }
    }
}

/// Agent frames the service dropped, by reason, from its metrics.
fn dropped_frames(app: &TestApp) -> BTreeMap<String, u64> {
    const SERIES: &str = "voice_agent_frames_dropped_total{reason=\"";
    app.state
        .metrics
        .encode()
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(SERIES)?;
            let (reason, count) = rest.split_once("\"} ")?;
            Some((reason.to_owned(), count.trim().parse().ok()?))
        })
        .collect()
}

/// Plays `step` against the stream of `ctx.answer` and renders it.
pub async fn play(
    step: &MediaStream,
    ctx: &StreamContext<'_>,
    agent: Option<&mut AgentServer>,
    tokens: &mut TokenNames,
) -> String {
    let url = attribute(ctx.answer, "Stream", "url").unwrap_or_else(|| {
        panic!(
            "a media_stream step needs a <Stream> in the answer:\n{}",
            ctx.answer
        )
    });
    let token = stream_token_parameter(ctx.answer).expect("the <Stream> has a stream_token <Parameter>");
    let claims = ctx
        .app
        .state
        .tokens
        .verify(&token)
        .expect("the answer's stream token verifies");
    let public = PUBLIC_URL.replacen("https://", "wss://", 1);
    let path = url
        .strip_prefix(&public)
        .unwrap_or_else(|| panic!("the <Stream url> {url} is not on {public}"));
    let mut out = format!("\n=== media stream: GET {}\n", tokens.redact(path));
    let _ = writeln!(out, "agent: {}", describe_agent(&step.agent));

    let dropped_before = dropped_frames(ctx.app);
    let ws_url = format!("{}{path}", ctx.app.base.replacen("http://", "ws://", 1));
    let socket = match tokio_tungstenite::connect_async(ws_url).await {
        Ok((socket, _)) => socket,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let _ = writeln!(
                out,
                "the upgrade was refused: HTTP {}",
                response.status().as_u16()
            );
            return out;
        }
        Err(e) => panic!("the stream WebSocket does not open: {e}"),
    };
    let (sink, stream) = socket.split();
    let (heard_tx, heard) = watch::channel(Heard::default());
    let listener = tokio::spawn(listen(stream, heard_tx));
    let recorded = recorded_session(ctx.call_sid, &token);
    let mut caller = Caller {
        sink,
        heard,
        sent: Vec::new(),
        echoed: 0,
        log: Vec::new(),
    };
    for caller_step in &step.caller {
        caller.step(caller_step, &recorded, &token, ctx, tokens).await;
    }
    let ended = tokio::time::timeout(CLOSE_TIMEOUT, caller.heard.wait_for(|h| h.ended.is_some()))
        .await
        .is_ok();
    assert!(
        ended,
        "the stream is still open {} s after Twilio's side played its script; end it with \
         a stop, or an agent that ends the call",
        CLOSE_TIMEOUT.as_secs()
    );
    drop(caller.sink);
    let _ = listener.await;

    out.push_str("--- Twilio's side sent (numbered as caller frames):\n");
    for line in &caller.log {
        let _ = writeln!(out, "  {line}");
    }
    let heard = {
        let h = caller.heard.borrow();
        Heard {
            frames: h.frames.clone(),
            ended: h.ended.clone(),
        }
    };
    let sent = CallerFrames::new(&caller.sent);
    out.push_str("--- Twilio's side received:\n");
    for line in sent.render_received(&heard.frames, |f| tokens.redact(&ctx.redact(f))) {
        let _ = writeln!(out, "  {line}");
    }
    let marks: Vec<String> = heard.frames.iter().filter_map(|f| frames::mark_name(f)).collect();
    let _ = writeln!(
        out,
        "  totals: media {}, marks {}{}, clears {}",
        heard.count("media"),
        marks.len(),
        if marks.is_empty() {
            String::new()
        } else {
            format!(" ({})", marks.join(", "))
        },
        heard.count("clear"),
    );
    let _ = writeln!(out, "  {}", heard.ended.as_deref().unwrap_or("-"));
    assert!(
        !heard.frames.iter().any(|f| f.contains(&token)),
        "the stream token was sent back to Twilio's side"
    );

    if let Some(agent) = agent {
        let opened = session_opened(ctx).await;
        match agent.next_record(opened).await {
            None => out.push_str("--- the agent: no connection\n"),
            Some(record) => out.push_str(&render_agent(&record, &sent, ctx, &token, &claims.rid)),
        }
        let dropped_after = dropped_frames(ctx.app);
        let dropped: Vec<String> = dropped_after
            .iter()
            .filter_map(|(reason, after)| {
                let n = after - dropped_before.get(reason).copied().unwrap_or(0);
                (n > 0).then(|| format!("{reason}={n}"))
            })
            .collect();
        let _ = writeln!(
            out,
            "  frames dropped by the service: {}",
            if dropped.is_empty() {
                "none".to_owned()
            } else {
                dropped.join(", ")
            }
        );
    }
    out
}

/// Whether the stream opened a media session (then the service connects to the agent).
async fn session_opened(ctx: &StreamContext<'_>) -> bool {
    let db = &ctx.app.state.db;
    match stateset_voice::db::calls::by_sid(db, ctx.call_sid)
        .await
        .expect("calls readable")
    {
        None => false,
        Some(call) => !stateset_voice::db::calls::media_sessions(db, &call.id)
            .await
            .expect("media sessions readable")
            .is_empty(),
    }
}

fn describe_agent(agent: &Agent) -> String {
    match agent {
        Agent::Echo => "echo (built-in, the route has no agent_url)".to_owned(),
        Agent::Script(script) => {
            let mut parts = vec!["scripted, at the route's agent_url".to_owned()];
            if !script.send_after_start.is_empty() {
                parts.push(format!(
                    "sends {} frames after start",
                    script.send_after_start.len()
                ));
            }
            if script.reply_to_media.is_some() {
                parts.push("replies to each media".to_owned());
            }
            parts.push(script.end.describe());
            parts.join("; ")
        }
    }
}

fn render_agent(
    record: &AgentRecord,
    sent: &CallerFrames<'_>,
    ctx: &StreamContext<'_>,
    token: &str,
    route_id: &str,
) -> String {
    let seen = std::iter::once(&record.path)
        .chain(record.authorization.iter())
        .chain(record.received.iter());
    for text in seen {
        assert!(
            !text.contains(token),
            "the stream token reached the agent: {text}"
        );
    }
    let mut out = String::from("--- the agent's connection:\n");
    let _ = writeln!(out, "  GET {}", record.path);
    let _ = writeln!(
        out,
        "  Authorization: {}",
        check_agent_token(
            record.authorization.as_deref(),
            &AgentClaimsExpected {
                webhook_secret: ctx.webhook_secret,
                call_sid: ctx.call_sid,
                tenant_id: ctx.tenant_id,
                route_id,
            }
        )
    );
    out.push_str(
        "  received (= #k byte-identical to caller frame #k, ~ not sent as such by Twilio's side):\n",
    );
    for line in sent.render_relayed(&record.received, |f| ctx.redact(f)) {
        let _ = writeln!(out, "    {line}");
    }
    out.push_str("  sent:\n");
    if record.sent.is_empty() {
        out.push_str("    (nothing)\n");
    }
    for line in sent.render_received(&record.sent, |f| ctx.redact(f)) {
        let _ = writeln!(out, "    {line}");
    }
    let _ = writeln!(out, "  {}", record.ending);
    out
}

#[cfg(test)]
mod tests {
    use stateset_voice::domain::{admin::generate_webhook_secret, agent_token};

    use super::*;

    fn expected(secret: &str) -> AgentClaimsExpected<'_> {
        AgentClaimsExpected {
            webhook_secret: secret,
            call_sid: "CA1",
            tenant_id: "t1",
            route_id: "r1",
        }
    }

    #[test]
    fn the_agent_token_is_checked_then_redacted() {
        let secret = generate_webhook_secret();
        let token = agent_token::mint(&secret, "CA1", "t1", "r1").unwrap();
        let header = format!("Bearer {token}");
        assert_eq!(
            check_agent_token(Some(&header), &expected(&secret)),
            "Bearer [agent_token]"
        );
        assert_eq!(
            check_agent_token(None, &expected(&secret)),
            "(no Authorization header)"
        );
    }

    #[test]
    #[should_panic(expected = "does not verify")]
    fn an_agent_token_of_another_key_fails() {
        let token = agent_token::mint(&generate_webhook_secret(), "CA1", "t1", "r1").unwrap();
        check_agent_token(
            Some(&format!("Bearer {token}")),
            &expected(&generate_webhook_secret()),
        );
    }

    #[test]
    #[should_panic(expected = "agent token route")]
    fn an_agent_token_for_another_route_fails() {
        let secret = generate_webhook_secret();
        let token = agent_token::mint(&secret, "CA1", "t1", "r2").unwrap();
        check_agent_token(Some(&format!("Bearer {token}")), &expected(&secret));
    }

    #[test]
    fn stream_attributes_are_read_from_twiml() {
        let twiml = r#"<Response><Connect action="https://v.example/api/v1/stream-ended"><Stream url="wss://v.example/media-stream?a=1&amp;stream_token=abc"><Parameter name="other" value="x"/><Parameter name="stream_token" value="abc"/></Stream></Connect></Response>"#;
        assert_eq!(
            attribute(twiml, "Stream", "url").as_deref(),
            Some("wss://v.example/media-stream?a=1&stream_token=abc")
        );
        assert_eq!(
            attribute(twiml, "Connect", "action").as_deref(),
            Some("https://v.example/api/v1/stream-ended")
        );
        assert_eq!(stream_token_parameter(twiml).as_deref(), Some("abc"));
        assert_eq!(attribute(twiml, "Say", "voice"), None);
    }

    #[test]
    fn steps_read_as_written_in_fixtures() {
        let step: MediaStream = serde_json::from_str(
            r#"{"agent":{"script":{"send_after_start":["x"],"end":{"close":{"code":4000,"after_media":3}}}},
                "caller":[{"play":[1,12]},{"send":"{}"},{"await":{"media":2}},"echo_marks"]}"#,
        )
        .unwrap();
        let Agent::Script(script) = &step.agent else {
            panic!("a scripted agent")
        };
        assert_eq!(
            script.end,
            crate::scripted_agent::AgentEnd::Close {
                code: 4000,
                reason: String::new(),
                after_media: 3
            }
        );
        assert_eq!(step.caller.len(), 4);
        let echo: MediaStream = serde_json::from_str(r#"{"agent":"echo","caller":[]}"#).unwrap();
        assert_eq!(echo.agent, Agent::Echo);
        for bad in [
            r#"{"agent":"echo","caller":[{"await":{"medias":2}}]}"#,
            r#"{"agent":{"script":{"end":"hang_up"}},"caller":[]}"#,
            r#"{"agent":{"script":{"reply":"x"}},"caller":[]}"#,
        ] {
            assert!(serde_json::from_str::<MediaStream>(bad).is_err(), "{bad}");
        }
    }
}
