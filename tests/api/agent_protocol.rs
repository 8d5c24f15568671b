//! The agent runtime protocol (spec section 4): agents see exactly what a Twilio Media Streams
//! server would see, are taken leniently, can hang up, and fail safely when hostile.
// The handshake callbacks' error type is tungstenite's, large by its design.
#![allow(clippy::result_large_err)]
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use stateset_voice::{
    backend_test, db,
    domain::{
        admin::{NewRoute, NewTenant},
        agent_token::AgentClaims,
    },
    media::session::{CLOSE_AGENT_FAILED, CLOSE_GOING_AWAY, CLOSE_NORMAL, HANGUP_MARK},
    testkit::*,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_tungstenite::tungstenite::{
    handshake::server::{Request, Response},
    protocol::{frame::coding::CloseCode, CloseFrame},
    Message,
};

use super::media::{answered_call, connect, read_all, read_until, send_all, Received, Socket};

type AgentSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// The recorded stream's streamSid.
const STREAM_SID: &str = "MZb2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
const FALLBACK: &str = "Transferring you to a person.";

/// What a test agent saw: its `Authorization` header and every text frame, as received.
#[derive(Debug, Default)]
struct Seen {
    authorization: Option<String>,
    frames: Vec<String>,
}

/// A one-call agent runtime on a free port running `script` on the accepted connection.
async fn run_agent<F, Fut>(script: F) -> (String, JoinHandle<Seen>)
where
    F: FnOnce(AgentSocket, Seen) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Seen> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/agent", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut authorization = None;
        let ws = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, res: Response| {
            authorization = req
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned());
            Ok(res)
        })
        .await
        .unwrap();
        script(
            ws,
            Seen {
                authorization,
                frames: Vec::new(),
            },
        )
        .await
    });
    (url, handle)
}

/// Reads the next text frame into `seen`; `None` at a close or the end.
async fn next_text(ws: &mut AgentSocket, seen: &mut Seen) -> Option<serde_json::Value> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(text)) => {
                seen.frames.push(text.to_string());
                return Some(serde_json::from_str(&text).unwrap());
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Reads until `start`, returning its streamSid (what agents in the style of Twilio's samples
/// do before they speak).
async fn await_start(ws: &mut AgentSocket, seen: &mut Seen) -> String {
    while let Some(v) = next_text(ws, seen).await {
        if v["event"] == "start" {
            return v["start"]["streamSid"].as_str().unwrap().to_owned();
        }
    }
    panic!("no start");
}

fn media(stream_sid: &str, payload: &str) -> Message {
    Message::text(
        serde_json::json!({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})
            .to_string(),
    )
}

/// A route whose agent is at `agent_url`, with a `say` fallback; returns the tenant's webhook
/// secret and the route.
async fn seed_agent(app: &TestApp, agent_url: String) -> (String, entity::route::Model) {
    let (tenant, route) = app
        .seed_with(
            NewTenant::default(),
            NewRoute {
                agent_url: Some(agent_url),
                fallback: say(FALLBACK),
                ..Default::default()
            },
        )
        .await;
    (tenant.webhook_secret, route)
}

/// The only media session of `call_sid`, once it has ended.
async fn ended_session(app: &TestApp, call_sid: &str) -> entity::media_session::Model {
    let call = app.call(call_sid).await.unwrap();
    for _ in 0..200 {
        let sessions = db::calls::media_sessions(&app.state.db, &call.id).await.unwrap();
        if let [s] = sessions.as_slice() {
            if s.status.as_str() == "ended" {
                return s.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the media session of {call_sid} did not end");
}

/// What Twilio gets from the `<Connect action>` once the stream ended.
async fn stream_ended(app: &TestApp, call_sid: &str) -> String {
    app.post_signed("/api/v1/stream-ended", &incoming_form(call_sid), AUTH_TOKEN)
        .await
        .text()
        .await
        .unwrap()
}

fn dropped(app: &TestApp, reason: &str) -> u64 {
    let text = app.state.metrics.encode();
    let series = format!("voice_agent_frames_dropped_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .unwrap_or_else(|| panic!("no {series} in metrics"))
        .trim()
        .parse()
        .unwrap()
}

backend_test!(agent_sees_exactly_what_twilio_sent);
async fn agent_sees_exactly_what_twilio_sent(app: TestApp) {
    let (agent_url, agent) = run_agent(|mut ws, mut seen| async move {
        let stream_sid = await_start(&mut ws, &mut seen).await;
        while let Some(v) = next_text(&mut ws, &mut seen).await {
            match v["event"].as_str() {
                Some("media") => ws.send(media(&stream_sid, "f39/fw==")).await.unwrap(),
                Some("stop") => break,
                _ => {}
            }
        }
        seen
    })
    .await;
    let (secret, route) = seed_agent(&app, agent_url).await;
    let (sid, token) = answered_call(&app).await;
    let recorded = recorded_session(&sid, &token);
    // Twilio's frames, with one event this service does not know and fields it does not use.
    let mut sent: Vec<String> = recorded[..12].to_vec();
    sent.push(format!(
        r#"{{"event":"future","sequenceNumber":"13","streamSid":"{STREAM_SID}","future":{{"x":[1, 2]}}}}"#
    ));
    sent.extend_from_slice(&recorded[recorded.len() - 3..]);
    let media_sent = sent.iter().filter(|f| f.contains(r#""event":"media""#)).count();
    assert_eq!(media_sent, 11);
    let mut socket = connect(&app, "/media-stream").await;
    send_all(&mut socket, &sent[..sent.len() - 1]).await;
    let got = read_until(&mut socket, media_sent, Received::default()).await;
    send_all(&mut socket, &sent[sent.len() - 1..]).await;
    let got = read_until(&mut socket, usize::MAX, got).await;
    let seen = agent.await.unwrap();

    // Every frame but `start` arrives as the exact text Twilio sent, in order.
    assert_eq!(seen.frames.len(), sent.len(), "{:?}", seen.frames);
    assert_eq!(seen.frames[0], sent[0], "connected");
    assert_eq!(seen.frames[2..], sent[2..]);
    // `start` loses the stream token and gains the call's metadata; nothing else changes.
    let mut expected: serde_json::Value = serde_json::from_str(&sent[1]).unwrap();
    let params = expected["start"]["customParameters"].as_object_mut().unwrap();
    params.remove("stream_token");
    params.insert("tenant_id".into(), route.tenant_id.clone().into());
    params.insert("route_id".into(), route.id.clone().into());
    params.insert("from_number".into(), "+15555555678".into());
    params.insert("to_number".into(), NUMBER.into());
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&seen.frames[1]).unwrap(),
        expected
    );
    assert!(!seen.frames[1].contains(&token));
    assert!(seen.frames[1].contains(r#""sequenceNumber":"#));

    // The bearer token proves the caller is this service, for this call.
    let bearer = seen
        .authorization
        .as_deref()
        .and_then(|h| h.strip_prefix("Bearer "))
        .expect("bearer token");
    let key = jsonwebtoken::DecodingKey::from_base64_secret(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["agent"]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<AgentClaims>(bearer, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(
        (claims.sub.as_str(), claims.tid.as_str(), claims.rid.as_str()),
        (sid.as_str(), route.tenant_id.as_str(), route.id.as_str())
    );
    assert_eq!(claims.exp - claims.iat, 60);

    // The agent's replies reach the caller; the call ends as Twilio ended it.
    assert_eq!(got.media.len(), media_sent);
    assert!(got.media.iter().all(|m| m["streamSid"] == STREAM_SID));
    assert_eq!(got.close.map(|c| c.0), Some(CloseCode::from(CLOSE_NORMAL)));
    let session = ended_session(&app, &sid).await;
    assert_eq!(
        (
            session.end_reason.map(|r| r.as_str()),
            session.received_stop,
            session.malformed_frames
        ),
        (Some("stop"), true, 0)
    );
    assert!(stream_ended(&app, &sid).await.contains("<Hangup/>"));
}

backend_test!(agents_are_taken_leniently_and_garbage_is_counted);
async fn agents_are_taken_leniently_and_garbage_is_counted(app: TestApp) {
    let (agent_url, agent) = run_agent(|mut ws, mut seen| async move {
        await_start(&mut ws, &mut seen).await;
        let frames = [
            // Accepted: streamSid missing, null, wrong; a mark and a clear without one.
            r#"{"event":"media","media":{"payload":"AQ=="}}"#,
            r#"{"event":"media","streamSid":null,"media":{"payload":"Ag=="}}"#,
            r#"{"event":"media","streamSid":"MZwrong","media":{"payload":"Aw==","track":"outbound"}}"#,
            r#"{"event":"mark","streamSid":null,"mark":{"name":"said-hello"}}"#,
            r#"{"event":"clear"}"#,
            // Dropped and counted.
            r#"{"event":"mark","streamSid":"MZ1"}"#,
            r#"{"event":"greeting","text":"hi"}"#,
            "{not json",
            r#"{"event":"media","streamSid":"MZ1"}"#,
        ];
        for frame in frames {
            ws.send(Message::text(frame)).await.unwrap();
        }
        ws.send(Message::binary(vec![0u8; 320])).await.unwrap();
        // The call goes on.
        ws.send(Message::text(r#"{"event":"media","media":{"payload":"BA=="}}"#))
            .await
            .unwrap();
        while let Some(v) = next_text(&mut ws, &mut seen).await {
            if v["event"] == "stop" {
                break;
            }
        }
        seen
    })
    .await;
    seed_agent(&app, agent_url).await;
    let (sid, token) = answered_call(&app).await;
    let frames = recorded_session(&sid, &token);
    let mut socket = connect(&app, "/media-stream").await;
    send_all(&mut socket, &frames[..3]).await;
    let got = read_until(&mut socket, 4, Received::default()).await;
    send_all(&mut socket, &frames[frames.len() - 1..]).await;
    let got = read_until(&mut socket, usize::MAX, got).await;
    agent.await.unwrap();

    let payloads: Vec<&str> = got
        .media
        .iter()
        .map(|m| m["media"]["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["AQ==", "Ag==", "Aw==", "BA=="]);
    assert!(got
        .media
        .iter()
        .all(|m| m["streamSid"] == STREAM_SID && m["media"].get("track").is_none()));
    assert_eq!(got.marks, ["said-hello"]);
    assert_eq!(got.clears, 1);
    assert_eq!(got.close.map(|c| c.0), Some(CloseCode::from(CLOSE_NORMAL)));
    assert_eq!(
        (
            dropped(&app, "nameless_mark"),
            dropped(&app, "unknown_event"),
            dropped(&app, "malformed"),
            dropped(&app, "binary")
        ),
        (1, 1, 2, 1)
    );
    assert_eq!(
        ended_session(&app, &sid).await.end_reason.map(|r| r.as_str()),
        Some("stop")
    );
}

backend_test!(an_agent_that_hangs_up_ends_the_call);
async fn an_agent_that_hangs_up_ends_the_call(app: TestApp) {
    // Says goodbye (five frames), then closes normally.
    let (agent_url, agent) = run_agent(|mut ws, mut seen| async move {
        let stream_sid = await_start(&mut ws, &mut seen).await;
        for _ in 0..5 {
            ws.send(media(&stream_sid, "Z29vZGJ5ZQ==")).await.unwrap();
        }
        hang_up(ws, CloseCode::Normal, "goodbye").await;
        seen
    })
    .await;
    seed_agent(&app, agent_url).await;
    let (sid, token) = answered_call(&app).await;
    let frames = recorded_session(&sid, &token);
    let mut socket = connect(&app, "/media-stream").await;
    send_all(&mut socket, &frames[..3]).await;
    // The goodbye plays to the end: the stream closes once Twilio reports the mark after it.
    let got = read_until(&mut socket, 5, Received::default()).await;
    let mark = read_mark(&mut socket).await;
    assert_eq!(mark, HANGUP_MARK);
    assert_eq!(got.media.len(), 5);
    let echo = serde_json::json!({"event": "mark", "sequenceNumber": "4", "streamSid": STREAM_SID, "mark": {"name": mark}});
    socket.send(Message::text(echo.to_string())).await.unwrap();
    let got = read_all(&mut socket).await;
    assert_eq!(
        got.close,
        Some((CloseCode::from(CLOSE_NORMAL), "agent hung up".to_owned()))
    );
    agent.await.unwrap();
    let session = ended_session(&app, &sid).await;
    assert_eq!(
        (
            session.end_reason.map(|r| r.as_str()),
            session.received_stop,
            session.outbound_frames
        ),
        (Some("agent_hangup"), false, 5)
    );
    assert!(stream_ended(&app, &sid).await.contains("<Hangup/>"));
    let ended = app.events("stream.ended").await;
    let payload: serde_json::Value = serde_json::from_str(&ended[0].payload).unwrap();
    assert_eq!(payload["data"]["end_reason"], "agent_hangup");

    // An agent that closes at once with 1001 (going away) and said nothing: closed at once.
    let (agent_url, _agent) = run_agent(|mut ws, mut seen| async move {
        await_start(&mut ws, &mut seen).await;
        hang_up(ws, CloseCode::Away, "").await;
        seen
    })
    .await;
    let (sid, close) = second_route_call(&app, agent_url, "+15555550199").await;
    assert_eq!(close, CloseCode::from(CLOSE_NORMAL));
    let session = ended_session(&app, &sid).await;
    assert_eq!(session.end_reason.map(|r| r.as_str()), Some("agent_hangup"));
    assert!(stream_ended_on(&app, &sid, "+15555550199")
        .await
        .contains("<Hangup/>"));
}

backend_test!(streams_told_to_close_at_shutdown_close_both_sides_and_get_the_fallback);
async fn streams_told_to_close_at_shutdown_close_both_sides_and_get_the_fallback(app: TestApp) {
    // Echoes media until the service closes the connection; reports the close it got.
    let (closed, agent_close) = tokio::sync::oneshot::channel();
    let (agent_url, _agent) = run_agent(|mut ws, mut seen| async move {
        let stream_sid = await_start(&mut ws, &mut seen).await;
        let close = loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    if v["event"] == "media" {
                        ws.send(media(&stream_sid, "f39/fw==")).await.unwrap();
                    }
                }
                Some(Ok(Message::Close(frame))) => break frame.map(|f| f.code),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break None,
            }
        };
        let _ = closed.send(close);
        seen
    })
    .await;
    seed_agent(&app, agent_url).await;
    let (sid, token) = answered_call(&app).await;
    let frames = recorded_session(&sid, &token);
    let mut socket = connect(&app, "/media-stream").await;
    send_all(&mut socket, &frames[..4]).await;
    let got = read_until(&mut socket, 2, Received::default()).await;
    assert_eq!(got.media.len(), 2, "bridged: {got:?}");

    app.state.runtime.close_streams();
    let got = read_all(&mut socket).await;
    assert_eq!(
        got.close,
        Some((
            CloseCode::from(CLOSE_GOING_AWAY),
            "server shutting down".to_owned()
        ))
    );
    let agent_close = tokio::time::timeout(Duration::from_secs(10), agent_close)
        .await
        .expect("the agent connection is closed in time")
        .unwrap();
    assert_eq!(agent_close, Some(CloseCode::Normal));
    let session = ended_session(&app, &sid).await;
    assert_eq!(
        (session.end_reason.map(|r| r.as_str()), session.received_stop),
        (Some("shutdown"), false)
    );
    let twiml = stream_ended(&app, &sid).await;
    assert!(twiml.contains(FALLBACK), "{twiml}");
    let ended = app.events("stream.ended").await;
    let payload: serde_json::Value = serde_json::from_str(&ended[0].payload).unwrap();
    assert_eq!(payload["data"]["end_reason"], "shutdown");

    // A stream connecting after that is closed at once, before any `start` is taken: no
    // session is opened.
    let (sid, _) = answered_call(&app).await;
    let mut late = connect(&app, "/media-stream").await;
    let got = read_all(&mut late).await;
    assert_eq!(got.close.map(|c| c.0), Some(CloseCode::from(CLOSE_GOING_AWAY)));
    let call = app.call(&sid).await.unwrap();
    assert!(db::calls::media_sessions(&app.state.db, &call.id)
        .await
        .unwrap()
        .is_empty());
    assert!(stream_ended(&app, &sid).await.contains(FALLBACK));
}

/// Closes as a WebSocket peer should: sends the close frame, then reads until the service
/// answers it. (Dropping the socket with frames still unread makes the kernel reset the
/// connection, and the close frame may never be read.)
async fn hang_up(mut ws: AgentSocket, code: CloseCode, reason: &str) {
    ws.close(Some(CloseFrame {
        code,
        reason: reason.to_owned().into(),
    }))
    .await
    .unwrap();
    while let Some(Ok(_)) = ws.next().await {}
}

/// Reads frames until a mark arrives and returns its name.
async fn read_mark(socket: &mut Socket) -> String {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a mark in time")
            .expect("open")
            .unwrap();
        if let Message::Text(text) = message {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if v["event"] == "mark" {
                return v["mark"]["name"].as_str().unwrap().to_owned();
            }
        }
    }
}

/// Answers a call to `number`, a new route of the test tenant whose agent is `agent_url`,
/// and plays the first frames of the recorded session until the service closes the stream;
/// returns the CallSid and the close code.
async fn second_route_call(app: &TestApp, agent_url: String, number: &str) -> (String, CloseCode) {
    let tenant = db::tenants::by_account_sid(&app.state.db, &app.state.config.secrets, ACCOUNT_SID)
        .await
        .unwrap()
        .unwrap();
    stateset_voice::domain::admin::create_route(
        &app.state.db,
        &stateset_voice::db::Scope::Platform,
        &tenant.id,
        NewRoute {
            phone_number: number.to_owned(),
            agent_url: Some(agent_url),
            fallback: say(FALLBACK),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    app.state.admin_changed();
    let sid = call_sid();
    let form = incoming_form_with(&sid, "To", number);
    let body = app
        .post_signed("/api/v1/incoming-call", &form, AUTH_TOKEN)
        .await
        .text()
        .await
        .unwrap();
    let mut socket = connect(app, "/media-stream").await;
    send_all(&mut socket, &recorded_session(&sid, stream_token(&body))[..3]).await;
    let got = read_all(&mut socket).await;
    (sid, got.close.expect("the service closes the stream").0)
}

/// [`stream_ended`] for a call to `number`.
async fn stream_ended_on(app: &TestApp, call_sid: &str, number: &str) -> String {
    app.post_signed(
        "/api/v1/stream-ended",
        &incoming_form_with(call_sid, "To", number),
        AUTH_TOKEN,
    )
    .await
    .text()
    .await
    .unwrap()
}

/// How an agent misbehaves in [`abnormal_agent_ends_are_failures`].
#[derive(Debug, Clone, Copy)]
enum Hostile {
    CloseWithAppCode,
    DropWithoutClose,
    HugeFrame,
    CloseAtOnceWithoutCode,
}

backend_test!(abnormal_agent_ends_are_failures);
async fn abnormal_agent_ends_are_failures(app: TestApp) {
    app.seed_with(NewTenant::default(), NewRoute::default()).await;
    let cases = [
        Hostile::CloseWithAppCode,
        Hostile::DropWithoutClose,
        Hostile::HugeFrame,
        Hostile::CloseAtOnceWithoutCode,
    ];
    for (i, case) in cases.into_iter().enumerate() {
        let (agent_url, _agent) = run_agent(move |mut ws, mut seen| async move {
            let stream_sid = await_start(&mut ws, &mut seen).await;
            match case {
                Hostile::CloseWithAppCode => {
                    ws.send(media(&stream_sid, "AQ==")).await.unwrap();
                    let _ = ws
                        .close(Some(CloseFrame {
                            code: CloseCode::from(4000),
                            reason: "crashed".into(),
                        }))
                        .await;
                }
                Hostile::DropWithoutClose => drop(ws),
                Hostile::HugeFrame => {
                    let payload = "A".repeat(70 * 1024);
                    let _ = ws.send(media(&stream_sid, &payload)).await;
                    // Keep the connection until the service gives up on it.
                    while next_text(&mut ws, &mut seen).await.is_some() {}
                }
                Hostile::CloseAtOnceWithoutCode => {
                    let _ = ws.send(Message::Close(None)).await;
                }
            }
            seen
        })
        .await;
        let number = format!("+1555555020{i}");
        let (sid, close) = second_route_call(&app, agent_url, &number).await;
        assert_eq!(close, CloseCode::from(CLOSE_AGENT_FAILED), "{case:?}");
        let session = ended_session(&app, &sid).await;
        assert_eq!(
            session.end_reason.map(|r| r.as_str()),
            Some("agent_failed"),
            "{case:?}"
        );
        let twiml = stream_ended_on(&app, &sid, &number).await;
        assert!(twiml.contains(FALLBACK), "{case:?}: {twiml}");
    }
}

backend_test!(unreachable_agents_are_failures);
async fn unreachable_agents_are_failures(app: TestApp) {
    app.seed_with(NewTenant::default(), NewRoute::default()).await;
    // Nothing listens.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = format!("ws://{}/agent", closed.local_addr().unwrap());
    drop(closed);
    // Accepts TCP and never answers the handshake.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let never = format!("ws://{}/agent", silent.local_addr().unwrap());
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    // Answers the handshake with an HTTP error, as an agent refusing the bearer token does.
    let forbidding = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let forbidden = format!("ws://{}/agent", forbidding.local_addr().unwrap());
    tokio::spawn(async move {
        let (tcp, _) = forbidding.accept().await.unwrap();
        let _ = tokio_tungstenite::accept_hdr_async(tcp, |_: &Request, _: Response| {
            Err(http::Response::builder().status(403).body(None).unwrap())
        })
        .await;
    });
    for (i, url) in [refused, never, forbidden].into_iter().enumerate() {
        let number = format!("+1555555030{i}");
        let started = std::time::Instant::now();
        let (sid, close) = second_route_call(&app, url.clone(), &number).await;
        assert_eq!(close, CloseCode::from(CLOSE_AGENT_FAILED), "{url}");
        let session = ended_session(&app, &sid).await;
        assert_eq!(
            session.end_reason.map(|r| r.as_str()),
            Some("agent_failed"),
            "{url}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "{url}: gave up in time"
        );
        assert!(stream_ended_on(&app, &sid, &number).await.contains(FALLBACK));
    }
}

backend_test!(flooding_agents_fail_with_bounded_memory);
async fn flooding_agents_fail_with_bounded_memory(app: TestApp) {
    const ATTEMPTED: usize = 4_000;
    // Sends 32 KiB frames as fast as it can: 128 MB if nothing held it back.
    let (agent_url, agent) = run_agent(|mut ws, mut seen| async move {
        let stream_sid = await_start(&mut ws, &mut seen).await;
        let frame = media(&stream_sid, &"A".repeat(32 * 1024));
        let mut sent = 0;
        while sent < ATTEMPTED {
            match tokio::time::timeout(Duration::from_secs(20), ws.send(frame.clone())).await {
                Ok(Ok(())) => sent += 1,
                _ => break,
            }
        }
        seen.frames.push(sent.to_string());
        seen
    })
    .await;
    seed_agent(&app, agent_url).await;
    let (sid, token) = answered_call(&app).await;
    let frames = recorded_session(&sid, &token);
    // A caller's side that takes nothing.
    let mut socket = connect(&app, "/media-stream").await;
    send_all(&mut socket, &frames[..3]).await;
    let session = ended_session(&app, &sid).await;
    assert_eq!(session.end_reason.map(|r| r.as_str()), Some("agent_failed"));
    let seen = agent.await.unwrap();
    let sent: usize = seen.frames.last().unwrap().parse().unwrap();
    assert!(
        sent < ATTEMPTED,
        "the agent was held back and cut off after {sent} frames"
    );
    assert!(stream_ended(&app, &sid).await.contains(FALLBACK));
    drop(socket);
}

backend_test!(agents_that_do_not_read_fail);
async fn agents_that_do_not_read_fail(app: TestApp) {
    let (agent_url, _agent) = run_agent(|ws, seen| async move {
        // Reads nothing, holds the connection.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(ws);
        seen
    })
    .await;
    seed_agent(&app, agent_url).await;
    let (sid, token) = answered_call(&app).await;
    let frames = recorded_session(&sid, &token);
    let mut socket = connect(&app, "/media-stream").await;
    send_all(&mut socket, &frames[..2]).await;
    // Large frames from the caller's side pile up in front of the agent.
    let big = format!(
        r#"{{"event":"media","streamSid":"{STREAM_SID}","media":{{"track":"inbound","chunk":"1","timestamp":"20","payload":"{}"}}}}"#,
        "A".repeat(48 * 1024)
    );
    let (mut tx, _rx) = socket.split();
    let sender = tokio::spawn(async move {
        for _ in 0..2_000 {
            if tokio::time::timeout(Duration::from_secs(5), tx.send(Message::text(big.clone())))
                .await
                .map_or(true, |r| r.is_err())
            {
                break;
            }
        }
    });
    let session = ended_session(&app, &sid).await;
    assert_eq!(session.end_reason.map(|r| r.as_str()), Some("agent_failed"));
    assert!(stream_ended(&app, &sid).await.contains(FALLBACK));
    sender.abort();
}
