//! Rolling deploys: a server sent SIGTERM stops being ready at once but keeps answering
//! webhooks and bridging its open media streams; it exits 0 once they ended, or closes them at
//! `VOICE_STREAM_DRAIN_TIMEOUT` (their `<Connect action>` then plays the fallback). A second
//! signal ends it at once.
use std::time::{Duration, Instant};

use entity::states::EndReason;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use stateset_voice::{backend_test, db, media::session::CLOSE_GOING_AWAY, testkit::*};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{protocol::frame::coding::CloseCode, Message},
};

use crate::support::{self, Server, Webhook};

/// Streams kept open through the signal.
const STREAMS: usize = 5;
/// Bound of every wait for the server (an answer, a frame, a state, an exit).
const WAIT: Duration = Duration::from_secs(10);
/// How soon the server exits once its last stream ended, or once a second signal arrived.
const PROMPT_EXIT: Duration = Duration::from_secs(3);
/// The route's fallback in these tests: a transfer, so it cannot be mistaken for a hang-up.
const FALLBACK: &str = r#"{"type":"dial","number":"+15550001111"}"#;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One call's media stream, played like Twilio with the recorded session's frames.
struct Stream {
    call_sid: String,
    socket: Socket,
    frames: Vec<String>,
    /// Media frames sent so far.
    sent: usize,
}

/// Answers a new call on `server` and returns its CallSid and stream token.
async fn new_call(client: &reqwest::Client, server: &Server) -> (String, String) {
    let hook = Webhook::incoming(&call_sid());
    let (status, twiml) = hook.send(client, &server.base).await.expect("answered");
    assert_eq!(status, 200, "{twiml}\n{}", server.log());
    assert!(twiml.contains("<Stream url="), "a stream answer: {twiml}");
    (hook.call_sid, stream_token(&twiml).to_owned())
}

impl Stream {
    /// Connects the stream of `call_sid` to `server` and starts it, as Twilio does.
    async fn open(server: &Server, call_sid: String, token: &str) -> Self {
        let url = format!("{}/media-stream", server.base.replacen("http://", "ws://", 1));
        let mut socket = tokio::time::timeout(WAIT, connect_async(url))
            .await
            .expect("no stall")
            .expect("websocket upgrade")
            .0;
        let frames = recorded_session(&call_sid, token);
        // `connected` and `start`.
        for frame in &frames[..2] {
            socket.send(Message::text(frame.clone())).await.expect("sent");
        }
        Self {
            call_sid,
            socket,
            frames,
            sent: 0,
        }
    }

    /// Answers a new call on `server` and opens its stream there.
    async fn call(client: &reqwest::Client, server: &Server) -> Self {
        let (sid, token) = new_call(client, server).await;
        Self::open(server, sid, &token).await
    }

    /// Sends `n` media frames, each answered by the echo agent with the same audio.
    async fn exchange(&mut self, n: usize) {
        for _ in 0..n {
            let frame = self.frames[2 + self.sent % 300].clone();
            let payload = serde_json::from_str::<Value>(&frame).unwrap()["media"]["payload"].clone();
            self.socket.send(Message::text(frame)).await.expect("media sent");
            self.sent += 1;
            let echoed = self.next_media().await;
            assert_eq!(
                echoed.as_ref().map(|m| &m["media"]["payload"]),
                Ok(&payload),
                "stream of {} echoes frame {}",
                self.call_sid,
                self.sent
            );
        }
    }

    /// The next media frame, skipping marks; `Err` with the close (code) when the socket
    /// closed instead.
    async fn next_media(&mut self) -> Result<Value, Option<CloseCode>> {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("no stall");
            match message {
                Some(Ok(Message::Text(text))) => {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    if v["event"] == "media" {
                        return Ok(v);
                    }
                }
                Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Err(None),
            }
        }
    }

    /// Sends `stop` as Twilio does when the caller hangs up; returns the close code.
    async fn stop(mut self) -> Option<CloseCode> {
        let stop = self.frames.last().unwrap().clone();
        self.socket.send(Message::text(stop)).await.expect("stop sent");
        loop {
            if let Err(close) = self.next_media().await {
                return close;
            }
        }
    }
}

/// `GET path` on `server`: status and JSON body.
async fn get(client: &reqwest::Client, server: &Server, path: &str) -> (u16, Value) {
    let res = client
        .get(format!("{}{path}", server.base))
        .send()
        .await
        .expect("answered");
    let status = res.status().as_u16();
    (status, res.json().await.expect("a JSON body"))
}

/// Polls `/readyz` until it answers 503 `stopping`: the signal was handled.
async fn until_stopping(client: &reqwest::Client, server: &Server) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = get(client, server, "/readyz").await;
        if status == 503 && body["status"] == "stopping" {
            return body;
        }
        assert_eq!(status, 200, "ready until the signal: {body}");
        assert!(
            Instant::now() < deadline,
            "/readyz never said stopping\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The media sessions stored for `call_sid`.
async fn sessions(fresh: &FreshDatabase, call_sid: &str) -> Vec<entity::media_session::Model> {
    let call = db::calls::by_sid(&fresh.db, call_sid)
        .await
        .expect("query")
        .expect("the call is stored");
    db::calls::media_sessions(&fresh.db, &call.id)
        .await
        .expect("query")
}

/// The server's log line that contains `what`, waiting for it to be read from the pipe.
async fn log_line(server: &Server, what: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = server.log();
        if let Some(line) = log.lines().find(|l| l.contains(what)) {
            return line.to_owned();
        }
        assert!(Instant::now() < deadline, "no log line with {what:?}:\n{log}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_live_streams_finish_while_another_instance_takes_new_calls() {
    let Some(fresh) = fresh_database(Backend::Postgres, 2).await else {
        return;
    };
    let url = fresh.process_url();
    support::seed(&url, None).await;
    let settings = [("VOICE_STREAM_TOKEN_TTL", "3600")];
    let (mut a, b) = tokio::join!(Server::start(&url, &settings), Server::start(&url, &settings));
    let client = support::client();

    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let mut stream = Stream::call(&client, &a).await;
        stream.exchange(2).await;
        streams.push(stream);
    }

    a.signal("TERM");
    let ready = until_stopping(&client, &a).await;
    assert_eq!(ready["open_streams"], STREAMS, "{ready}");
    let (status, health) = get(&client, &a, "/healthz").await;
    assert_eq!((status, &health["status"]), (200, &Value::from("ok")), "{health}");
    assert!(
        log_line(&a, "draining")
            .await
            .contains(&format!("open_streams={STREAMS}")),
        "{}",
        a.log()
    );

    // The streams go on through the signal.
    for stream in &mut streams {
        stream.exchange(3).await;
    }
    // New calls are answered: by the other instance, and by this one while traffic still
    // reaches it. The stopping instance's new call streams to the other one (the stream token
    // is valid on every instance), as it would behind the load balancer.
    let mut on_b = Stream::call(&client, &b).await;
    on_b.exchange(2).await;
    let (sid, token) = new_call(&client, &a).await;
    let mut moved = Stream::open(&b, sid, &token).await;
    moved.exchange(2).await;
    for stream in &mut streams {
        stream.exchange(3).await;
    }
    assert!(a.is_running(), "the instance waits for its streams\n{}", a.log());

    let sids: Vec<String> = streams.iter().map(|s| s.call_sid.clone()).collect();
    for stream in streams {
        assert_eq!(stream.stop().await, Some(CloseCode::Normal));
    }
    let stopped = Instant::now();
    let status = a.exited_within(PROMPT_EXIT).await.unwrap_or_else(|| {
        panic!(
            "still running {PROMPT_EXIT:?} after its streams ended\n{}",
            a.log()
        )
    });
    assert!(status.success(), "exit {status}\n{}", a.log());
    let exit_after = stopped.elapsed();
    let finished = log_line(&a, "drain finished").await;
    assert!(
        finished.contains(&format!("ended_on_their_own={STREAMS}"))
            && finished.contains("closed_at_deadline=0"),
        "{finished}"
    );

    for sid in &sids {
        let stored = sessions(&fresh, sid).await;
        assert_eq!(stored.len(), 1, "{sid}");
        assert_eq!(
            (stored[0].end_reason, stored[0].received_stop),
            (Some(EndReason::Stop), true),
            "{sid} ended normally"
        );
    }
    // The other instance was untouched.
    assert_eq!(on_b.stop().await, Some(CloseCode::Normal));
    assert_eq!(moved.stop().await, Some(CloseCode::Normal));
    eprintln!("exited {exit_after:.1?} after its last stream ended");
}

backend_test!(streams_open_at_the_drain_deadline_are_closed_and_get_the_fallback);
async fn streams_open_at_the_drain_deadline_are_closed_and_get_the_fallback(fresh: FreshDatabase) {
    let url = fresh.process_url();
    support::seed_with(&url, None, &["--fallback", FALLBACK]).await;
    let mut a = Server::start(&url, &[("VOICE_STREAM_DRAIN_TIMEOUT", "1")]).await;
    let client = support::client();
    let mut stream = Stream::call(&client, &a).await;
    stream.exchange(2).await;

    let signalled = Instant::now();
    a.signal("TERM");
    until_stopping(&client, &a).await;
    // The stream is bridged until the deadline, then closed by the server.
    let close = loop {
        let frame = stream.frames[2].clone();
        // Once the server closed, the send may fail; the close is read next.
        let _ = stream.socket.send(Message::text(frame)).await;
        if let Err(close) = stream.next_media().await {
            break close;
        }
        assert!(signalled.elapsed() < WAIT, "never closed\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let closed_after = signalled.elapsed();
    assert_eq!(close, Some(CloseCode::from(CLOSE_GOING_AWAY)), "{}", a.log());
    assert!(
        closed_after >= Duration::from_secs(1),
        "closed after {closed_after:?}"
    );

    let stored = sessions(&fresh, &stream.call_sid).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].end_reason, stored[0].received_stop),
        (Some(EndReason::Shutdown), false)
    );
    // Twilio's <Connect action> right after the close is still answered here: the fallback.
    let (status, twiml) = Webhook::stream_ended(&stream.call_sid)
        .send(&client, &a.base)
        .await
        .expect("answered during the linger");
    assert_eq!(status, 200, "{twiml}");
    assert!(twiml.contains("<Dial>+15550001111</Dial>"), "{twiml}");

    let status = a
        .exited_within(WAIT)
        .await
        .unwrap_or_else(|| panic!("never exited\n{}", a.log()));
    assert!(status.success(), "exit {status}\n{}", a.log());
    let finished = log_line(&a, "drain finished").await;
    assert!(
        finished.contains("ended_on_their_own=0") && finished.contains("closed_at_deadline=1"),
        "{finished}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once() {
    let Some(fresh) = fresh_database(Backend::Sqlite, 1).await else {
        return;
    };
    let url = fresh.process_url();
    support::seed(&url, None).await;
    let mut a = Server::start(&url, &[]).await;
    let client = support::client();
    let mut stream = Stream::call(&client, &a).await;
    stream.exchange(2).await;

    a.signal("TERM");
    until_stopping(&client, &a).await;
    stream.exchange(1).await;
    let second = Instant::now();
    a.signal("TERM");
    let status = a
        .exited_within(PROMPT_EXIT)
        .await
        .unwrap_or_else(|| panic!("still running after a second SIGTERM\n{}", a.log()));
    assert_eq!(status.code(), Some(128 + 15), "{}", a.log());
    eprintln!("exited {:.1?} after the second SIGTERM", second.elapsed());
    assert!(
        log_line(&a, "second stop signal")
            .await
            .contains("open_streams=1"),
        "{}",
        a.log()
    );
    // The stream was cut, not closed by the drain.
    assert!(matches!(stream.next_media().await, Err(None)));
}
