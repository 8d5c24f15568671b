//! The Media Streams WebSocket: the recorded Twilio session replayed against the echo agent and
//! a test agent server; token refusals; agent failure and health.
use futures::{SinkExt, StreamExt};
use stateset_voice::{
    backend_test, db,
    domain::admin::{NewRoute, NewTenant},
    media::session::{CLOSE_AGENT_FAILED, CLOSE_NORMAL, CLOSE_REFUSED},
    testkit::*,
    worker::agent_health,
};
use tokio::net::TcpListener;
use tokio_tungstenite::{
    connect_async,
    tungstenite::{protocol::frame::coding::CloseCode, Message},
};

pub(super) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Answers an inbound call and returns its CallSid and stream token.
pub(super) async fn answered_call(app: &TestApp) -> (String, String) {
    let sid = call_sid();
    let body = app.incoming(&sid).await.text().await.unwrap();
    let token = stream_token(&body).to_owned();
    (sid, token)
}

pub(super) fn ws_url(app: &TestApp, path: &str) -> String {
    format!("{}{path}", app.base.replacen("http://", "ws://", 1))
}

pub(super) async fn connect(app: &TestApp, path: &str) -> Socket {
    connect_async(ws_url(app, path))
        .await
        .expect("websocket upgrade")
        .0
}

/// What the service sent until it closed the socket.
#[derive(Debug, Default)]
pub(super) struct Received {
    pub media: Vec<serde_json::Value>,
    pub marks: Vec<String>,
    pub clears: usize,
    pub close: Option<(CloseCode, String)>,
}

/// Reads until the service closes the socket.
pub(super) async fn read_all(socket: &mut Socket) -> Received {
    read_until(socket, usize::MAX, Received::default()).await
}

/// Reads until `media_wanted` media frames arrived in all, or the service closed the socket.
pub(super) async fn read_until(socket: &mut Socket, media_wanted: usize, mut got: Received) -> Received {
    while got.media.len() < media_wanted {
        let Some(message) = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
            .await
            .expect("no stall")
        else {
            break;
        };
        match message {
            Ok(Message::Text(text)) => {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                match v["event"].as_str().unwrap() {
                    "media" => got.media.push(v),
                    "mark" => got.marks.push(v["mark"]["name"].as_str().unwrap().to_owned()),
                    "clear" => got.clears += 1,
                    other => panic!("unexpected event {other}"),
                }
            }
            Ok(Message::Close(frame)) => {
                got.close = frame.map(|f| (f.code, f.reason.to_string()));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    got
}

/// Plays frames like Twilio: the audio, then (once the replies arrived) the closing frames.
pub(super) async fn converse(socket: &mut Socket, frames: &[String], replies: usize) -> Received {
    let (audio, closing) = frames.split_at(frames.len() - 2);
    send_all(socket, audio).await;
    let got = read_until(socket, replies, Received::default()).await;
    send_all(socket, closing).await;
    read_until(socket, usize::MAX, got).await
}

pub(super) async fn send_all(socket: &mut Socket, frames: &[String]) {
    for frame in frames {
        socket.send(Message::text(frame.clone())).await.unwrap();
    }
}

backend_test!(recorded_session_echoes_and_is_recorded);
async fn recorded_session_echoes_and_is_recorded(app: TestApp) {
    app.seed().await;
    let (sid, token) = answered_call(&app).await;
    let mut socket = connect(&app, &format!("/media-stream?stream_token={token}")).await;
    let frames = recorded_session(&sid, &token);
    let got = converse(&mut socket, &frames, 319).await;
    assert_eq!(got.media.len(), 319, "every media frame is played back");
    assert!(got
        .media
        .iter()
        .all(|m| m["streamSid"] == "MZb2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"));
    let first_payload =
        serde_json::from_str::<serde_json::Value>(&frames[2]).unwrap()["media"]["payload"].clone();
    assert_eq!(got.media[0]["media"]["payload"], first_payload);
    assert_eq!(
        got.marks.iter().filter(|m| m.starts_with("echo-")).count(),
        6,
        "{:?}",
        got.marks
    );
    assert!(got.marks.iter().any(|m| m.starts_with("dtmf-")));
    assert_eq!(got.clears, 1);
    assert_eq!(
        got.close.as_ref().map(|c| c.0),
        Some(CloseCode::from(CLOSE_NORMAL))
    );

    let call = app.call(&sid).await.unwrap();
    let sessions = db::calls::media_sessions(&app.state.db, &call.id).await.unwrap();
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(
        (
            s.status.as_str(),
            s.end_reason.map(|r| r.as_str()),
            s.received_stop
        ),
        ("ended", Some("stop"), true)
    );
    assert_eq!(
        (s.inbound_frames, s.outbound_frames, s.malformed_frames),
        (319, 319, 0)
    );
    assert_eq!(
        s.stream_sid.as_deref(),
        Some("MZb2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2")
    );
    assert_eq!(app.events("stream.started").await.len(), 1);
    let ended = app.events("stream.ended").await;
    assert_eq!(ended.len(), 1);
    let payload: serde_json::Value = serde_json::from_str(&ended[0].payload).unwrap();
    assert_eq!(payload["data"]["inbound_frames"], 319);
    assert_eq!(
        app.state.runtime.active_streams(),
        0,
        "the stream is no longer counted"
    );

    // Twilio then calls the <Connect action>: a normally ended stream hangs up.
    let res = app
        .post_signed("/api/v1/stream-ended", &incoming_form(&sid), AUTH_TOKEN)
        .await;
    assert!(res.text().await.unwrap().contains("<Hangup/>"));
}

backend_test!(token_in_custom_parameters_or_path_is_accepted);
async fn token_in_custom_parameters_or_path_is_accepted(app: TestApp) {
    app.seed().await;
    for path_token in [false, true] {
        let (sid, token) = answered_call(&app).await;
        let path = if path_token {
            format!("/media-stream/{token}")
        } else {
            "/media-stream".to_owned()
        };
        let mut socket = connect(&app, &path).await;
        let frames = recorded_session(&sid, &token);
        let short: Vec<String> = frames[..12]
            .iter()
            .chain(&frames[frames.len() - 2..])
            .cloned()
            .collect();
        let got = converse(&mut socket, &short, 10).await;
        assert_eq!(got.media.len(), 10, "path_token={path_token}");
        assert_eq!(got.close.map(|c| c.0), Some(CloseCode::from(CLOSE_NORMAL)));
    }
}

backend_test!(refused_streams_close_with_a_reason_and_bridge_nothing, |a| {
    a.stream_start_timeout = std::time::Duration::from_secs(1);
});
async fn refused_streams_close_with_a_reason_and_bridge_nothing(app: TestApp) {
    app.seed().await;

    // Reuse: the first connection consumes the token.
    let (sid, token) = answered_call(&app).await;
    let frames = recorded_session(&sid, &token);
    let mut first = connect(&app, "/media-stream").await;
    send_all(&mut first, &frames[..3]).await;
    let echoed = read_until(&mut first, 1, Received::default()).await;
    let mut second = connect(&app, "/media-stream").await;
    send_all(&mut second, &frames[..5]).await;
    let got = read_all(&mut second).await;
    assert!(got.media.is_empty());
    assert_eq!(
        got.close,
        Some((
            CloseCode::from(CLOSE_REFUSED),
            "stream token already used".to_owned()
        ))
    );
    send_all(&mut first, &frames[frames.len() - 1..]).await;
    assert_eq!(read_until(&mut first, usize::MAX, echoed).await.media.len(), 1);

    // Another call's SID with this call's token.
    let (_, token) = answered_call(&app).await;
    let mut socket = connect(&app, "/media-stream").await;
    send_all(
        &mut socket,
        &recorded_session("CA00000000000000000000000000000000", &token)[..5],
    )
    .await;
    let got = read_all(&mut socket).await;
    assert_eq!(
        got.close,
        Some((
            CloseCode::from(CLOSE_REFUSED),
            "callSid does not match the stream token".to_owned()
        ))
    );
    assert!(got.media.is_empty());

    // No token anywhere.
    let (sid, _) = answered_call(&app).await;
    let mut socket = connect(&app, "/media-stream").await;
    let no_token: Vec<String> = recorded_session(&sid, "x")
        .iter()
        .map(|f| f.replace(",\"customParameters\":{\"stream_token\":\"x\"}", ""))
        .collect();
    assert!(!no_token[1].contains("stream_token"));
    send_all(&mut socket, &no_token[..5]).await;
    assert_eq!(
        read_all(&mut socket).await.close,
        Some((CloseCode::from(CLOSE_REFUSED), "missing stream token".to_owned()))
    );

    // Media before any start is never bridged; the socket is closed after the timeout.
    let (sid, token) = answered_call(&app).await;
    let mut socket = connect(&app, "/media-stream").await;
    let frames = recorded_session(&sid, &token);
    send_all(
        &mut socket,
        &[frames[0].clone(), frames[2].clone(), frames[3].clone()],
    )
    .await;
    let got = read_all(&mut socket).await;
    assert!(got.media.is_empty());
    assert_eq!(
        got.close,
        Some((
            CloseCode::from(CLOSE_REFUSED),
            "no valid start message in time".to_owned()
        ))
    );

    // A forged or expired token in the URL is refused before the upgrade.
    let forged = format!("{token}x");
    let err = connect_async(ws_url(&app, &format!("/media-stream?stream_token={forged}")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, tokio_tungstenite::tungstenite::Error::Http(ref r) if r.status() == 401),
        "{err}"
    );
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": sid, "tid": "t", "rid": "r", "aud": "media-stream", "iat": 0, "exp": 1, "jti": "j"}),
        &jsonwebtoken::EncodingKey::from_secret(TOKEN_SECRET.as_bytes()),
    )
    .unwrap();
    let err = connect_async(ws_url(&app, &format!("/media-stream/{expired}")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, tokio_tungstenite::tungstenite::Error::Http(ref r) if r.status() == 401),
        "{err}"
    );

    let refusals = app.diagnostics("stream_refused").await;
    let mut keys: Vec<&str> = refusals.iter().map(|d| d.key.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "call_mismatch",
            "expired_token",
            "invalid_token",
            "missing_token",
            "no_start",
            "token_reused"
        ]
    );
}

/// The request head deadline of [`quiet_streams_outlive_the_head_deadline`].
const QUIET_HEAD_LIMIT: std::time::Duration = std::time::Duration::from_millis(300);

backend_test!(quiet_streams_outlive_the_head_deadline, |a| {
    a.header_read_timeout = QUIET_HEAD_LIMIT;
});
/// The request head deadline ends with the upgrade: a stream on which the caller keeps sending
/// frames that get no reply (marks), while the service writes nothing for several times that
/// deadline, stays open and is then answered as usual.
async fn quiet_streams_outlive_the_head_deadline(app: TestApp) {
    app.seed().await;
    let (sid, token) = answered_call(&app).await;
    let mut socket = connect(&app, "/media-stream").await;
    let frames = recorded_session(&sid, &token);
    send_all(&mut socket, &frames[..2]).await;
    let mark = frames.iter().find(|f| f.contains("\"event\":\"mark\"")).unwrap();
    let quiet_until = std::time::Instant::now() + QUIET_HEAD_LIMIT * 5;
    while std::time::Instant::now() < quiet_until {
        socket.send(Message::text(mark.clone())).await.unwrap();
        let reply = tokio::time::timeout(std::time::Duration::from_millis(100), socket.next()).await;
        assert!(reply.is_err(), "the service wrote {reply:?}");
    }
    send_all(&mut socket, &frames[2..3]).await;
    let got = read_until(&mut socket, 1, Received::default()).await;
    assert_eq!(got.media.len(), 1, "the stream is still bridged: {got:?}");
    send_all(&mut socket, &frames[frames.len() - 1..]).await;
    let got = read_all(&mut socket).await;
    assert_eq!(got.close.map(|c| c.0), Some(CloseCode::from(CLOSE_NORMAL)));
}

/// A test agent runtime in the style of Twilio's samples: expects `connected` then `start`,
/// takes the streamSid from `start`, answers every media frame with its own audio, and fails
/// (drops its connection without a close frame) after `fail_after` frames when set. Returns
/// the `start` message it saw.
async fn spawn_agent(fail_after: Option<usize>) -> (String, tokio::task::JoinHandle<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/agent", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let mut next = async || -> serde_json::Value {
            match ws.next().await.unwrap().unwrap() {
                Message::Text(t) => serde_json::from_str(&t).unwrap(),
                other => panic!("expected a text frame, got {other:?}"),
            }
        };
        assert_eq!(next().await["event"], "connected");
        let start = next().await;
        assert_eq!(start["event"], "start");
        let stream_sid = start["start"]["streamSid"].as_str().unwrap().to_owned();
        let mut media = 0;
        while let Some(Ok(Message::Text(text))) = ws.next().await {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if v["event"] == "media" {
                media += 1;
                if Some(media) == fail_after {
                    // Gone without a close frame.
                    drop(ws);
                    break;
                }
                let reply = serde_json::json!({"event": "media", "streamSid": stream_sid, "media": {"payload": "f39/fw=="}});
                ws.send(Message::text(reply.to_string())).await.unwrap();
            }
            if v["event"] == "stop" {
                break;
            }
        }
        start
    });
    (url, handle)
}

backend_test!(remote_agent_gets_twilio_frames_then_audio_both_ways);
async fn remote_agent_gets_twilio_frames_then_audio_both_ways(app: TestApp) {
    let (agent_url, agent) = spawn_agent(None).await;
    let (_, route) = app
        .seed_with(
            NewTenant::default(),
            NewRoute {
                agent_url: Some(agent_url),
                ..Default::default()
            },
        )
        .await;
    let (sid, token) = answered_call(&app).await;
    let mut socket = connect(&app, "/media-stream").await;
    let frames = recorded_session(&sid, &token);
    let short: Vec<String> = frames[..62]
        .iter()
        .chain(&frames[frames.len() - 2..])
        .cloned()
        .collect();
    let got = converse(&mut socket, &short, 60).await;
    assert_eq!(got.media.len(), 60);
    assert!(got.media.iter().all(
        |m| m["media"]["payload"] == "f39/fw==" && m["streamSid"] == "MZb2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"
    ));
    let start = agent.await.unwrap();
    let params = &start["start"]["customParameters"];
    assert_eq!(start["start"]["callSid"], sid.as_str());
    assert_eq!(params["route_id"], route.id.as_str());
    assert_eq!(params["tenant_id"], route.tenant_id.as_str());
    assert_eq!(params["from_number"], "+15555555678");
    assert_eq!(params["to_number"], NUMBER);
    assert!(params.get("stream_token").is_none(), "the token is not passed on");
}

backend_test!(agent_failure_mid_call_ends_in_fallback);
async fn agent_failure_mid_call_ends_in_fallback(app: TestApp) {
    let (agent_url, _agent) = spawn_agent(Some(10)).await;
    app.seed_with(
        NewTenant::default(),
        NewRoute {
            agent_url: Some(agent_url),
            fallback: say("Transferring you to a person."),
            ..Default::default()
        },
    )
    .await;
    let (sid, token) = answered_call(&app).await;
    let mut socket = connect(&app, "/media-stream").await;
    let frames = recorded_session(&sid, &token);
    send_all(&mut socket, &frames[..40]).await;
    let got = read_all(&mut socket).await;
    assert_eq!(
        got.close.as_ref().map(|c| c.0),
        Some(CloseCode::from(CLOSE_AGENT_FAILED))
    );
    let call = app.call(&sid).await.unwrap();
    let session = &db::calls::media_sessions(&app.state.db, &call.id).await.unwrap()[0];
    assert_eq!(
        (session.end_reason.map(|r| r.as_str()), session.received_stop),
        (Some("agent_failed"), false)
    );
    // Twilio runs the <Connect action>: the caller hears the fallback, not silence.
    let res = app
        .post_signed("/api/v1/stream-ended", &incoming_form(&sid), AUTH_TOKEN)
        .await;
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("<Say>Transferring you to a person.</Say>"));
}

backend_test!(failing_health_checks_open_the_circuit);
async fn failing_health_checks_open_the_circuit(app: TestApp) {
    // Nothing listens on this port.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/agent", closed.local_addr().unwrap());
    drop(closed);
    app.seed_with(
        NewTenant::default(),
        NewRoute {
            agent_url: Some(url.clone()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(agent_health::check_all(&app.state).await.unwrap(), 1);
    assert!(
        app.incoming(&call_sid())
            .await
            .text()
            .await
            .unwrap()
            .contains("<Stream"),
        "one failure is not enough"
    );
    agent_health::check_all(&app.state).await.unwrap();
    let sid = call_sid();
    assert!(!app.incoming(&sid).await.text().await.unwrap().contains("<Stream"));
    assert_eq!(
        app.call(&sid).await.unwrap().fallback_reason.map(|r| r.as_str()),
        Some("agent_unhealthy")
    );
    // The agent comes back: the next successful check closes the circuit.
    app.state.runtime.record_agent_probe(&url, Ok(()));
    assert!(app
        .incoming(&call_sid())
        .await
        .text()
        .await
        .unwrap()
        .contains("<Stream"));
}
