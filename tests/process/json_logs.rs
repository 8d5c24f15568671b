//! `VOICE_LOG_FORMAT=json`: every line the server writes is one JSON object, and every line
//! about a call (its webhooks, its media stream and agent, its status callback, the delivery
//! of its events) carries the call's `call_sid`, `tenant_id` and `route_id`.
use std::time::{Duration, Instant};

use entity::route;
use sea_orm::EntityTrait;
use serde_json::Value;
use stateset_voice::{
    backend_test,
    call::wav,
    testkit::*,
    twilio::{
        audio,
        signature::{self, Algorithm},
    },
};
use wiremock::{matchers::method, Mock, MockServer, ResponseTemplate};

use crate::support::{self, Server};

/// Bound of each wait.
const DEADLINE: Duration = Duration::from_secs(30);

/// The value of `key` in a log line: an event field, or a field of one of its spans.
fn field<'a>(line: &'a Value, key: &str) -> Option<&'a str> {
    let spans = line["spans"].as_array().into_iter().flatten();
    std::iter::once(line)
        .chain(std::iter::once(&line["span"]))
        .chain(spans)
        .find_map(|scope| scope.get(key).and_then(Value::as_str))
}

/// A free port on 127.0.0.1, so the public URL can name it before the server starts.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The id of the one route `support::seed` created.
async fn seeded_route(fresh: &FreshDatabase) -> String {
    route::Entity::find()
        .one(&fresh.db)
        .await
        .unwrap()
        .expect("the seeded route")
        .id
}

backend_test!(json_log_lines_carry_the_call_they_are_about);
async fn json_log_lines_carry_the_call_they_are_about(fresh: FreshDatabase) {
    let url = fresh.process_url();
    // A receiver that refuses every event: each delivery of the call's events is logged.
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&receiver)
        .await;
    let tenant_id = support::seed(&url, Some(&format!("{}/events", receiver.uri()))).await;
    let route_id = seeded_route(&fresh).await;
    let port = free_port().to_string();
    let base = format!("http://127.0.0.1:{port}");
    let server = Server::start(
        &url,
        &[
            ("VOICE_LOG_FORMAT", "json"),
            ("VOICE_LOG", "info"),
            ("VOICE_BIND", &format!("127.0.0.1:{port}")),
            ("VOICE_PUBLIC_URL", &base),
            ("VOICE_OUTBOX_POLL_INTERVAL", "100ms"),
        ],
    )
    .await;

    // A whole call: webhook, media stream to the echo agent, `<Connect action>`.
    let sid = call_sid();
    let dir = tempfile::tempdir().unwrap();
    let audio_file = dir.path().join("in.wav");
    let silence = vec![0i16; 10 * audio::FRAME_SAMPLES];
    wav::write_pcm(&audio_file, &silence).unwrap();
    let call = support::cli_output(
        &url,
        &[
            "call",
            "--url",
            &base,
            "--token",
            AUTH_TOKEN,
            "--account-sid",
            ACCOUNT_SID,
            "--to",
            NUMBER,
            "--call-sid",
            &sid,
            "--audio",
            audio_file.to_str().unwrap(),
            "--tail",
            "0",
        ],
    )
    .await;
    let printed = String::from_utf8_lossy(&call.stdout);
    assert!(call.status.success(), "{printed}\n{}", server.log());
    assert!(printed.contains("stream ended by our stop"), "{printed}");

    // Its final status callback.
    let status_url = format!("{base}/api/v1/call-status");
    let mut form = incoming_form_with(&sid, "CallStatus", "completed");
    form.push("CallDuration", "3");
    let client = support::client();
    let res = client
        .post(&status_url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header(
            "X-Twilio-Signature",
            signature::compute(Algorithm::HmacSha1, AUTH_TOKEN.as_bytes(), &status_url, &form),
        )
        .body(form.encode())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "{}", res.text().await.unwrap());

    // The failed deliveries of its events are logged.
    let until = Instant::now() + DEADLINE;
    while !server
        .log()
        .lines()
        .any(|l| l.contains("event delivery failed") && l.contains(&sid) && l.contains("call.completed"))
    {
        assert!(
            Instant::now() < until,
            "no failed delivery of the call's events was logged\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.signal("TERM");
    let (stdout, stderr) = server.output_after_exit(DEADLINE).await;

    assert!(!stderr.is_empty(), "the server logs to standard error");
    let mut about_the_call = Vec::new();
    for line in stdout.iter().chain(&stderr) {
        let json: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(json.is_object(), "not a JSON object: {line}");
        assert!(
            json["timestamp"].is_string() && json["level"].is_string(),
            "{line}"
        );
        for secret in [AUTH_TOKEN, TOKEN_SECRET, ADMIN_TOKEN, "stream_token="] {
            assert!(!line.contains(secret), "a secret is logged: {line}");
        }
        if line.contains(&sid) {
            for (key, expected) in [
                ("call_sid", sid.as_str()),
                ("tenant_id", tenant_id.as_str()),
                ("route_id", route_id.as_str()),
            ] {
                assert_eq!(field(&json, key), Some(expected), "{key} of {line}");
            }
            about_the_call.push(json);
        }
    }
    // Each part of the call has its lines among them.
    let has = |message: &str, path: Option<&str>| {
        about_the_call
            .iter()
            .any(|l| l["message"] == message && path.is_none_or(|p| field(l, "path") == Some(p)))
    };
    for (message, path) in [
        ("call answered", None),
        ("response", Some("/api/v1/incoming-call")),
        ("media stream started", None),
        ("media stream ended", None),
        ("response", Some("/api/v1/stream-ended")),
        ("response", Some("/api/v1/call-status")),
        ("event delivery failed", None),
    ] {
        assert!(
            has(message, path),
            "no {message:?} {path:?} line about the call:\n{}",
            stderr.join("\n")
        );
    }
}

#[tokio::test]
async fn an_unknown_log_format_is_refused() {
    let out = support::cli_output_with(
        "sqlite::memory:",
        &["migrate"],
        &[("VOICE_LOG_FORMAT", "xml")],
        DEADLINE,
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value 'xml'") && stderr.contains("[possible values: text, json]"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing ran");
}

backend_test!(a_flood_of_forged_requests_is_logged_as_its_first_line_and_a_count_per_interval);
async fn a_flood_of_forged_requests_is_logged_as_its_first_line_and_a_count_per_interval(
    fresh: FreshDatabase,
) {
    const FORGED: usize = 300;
    const INTERVAL: Duration = Duration::from_millis(100);
    let url = fresh.process_url();
    support::seed(&url, None).await;
    let route_id = seeded_route(&fresh).await;
    let server = Server::start(
        &url,
        &[
            ("VOICE_LOG_FORMAT", "json"),
            ("VOICE_DIAGNOSTICS_FLUSH_INTERVAL", "100ms"),
        ],
    )
    .await;
    let client = support::client();
    let started = Instant::now();
    let statuses = futures::future::join_all((0..FORGED).map(|_| {
        client
            .post(format!("{}/api/v1/incoming-call", server.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("X-Twilio-Signature", "Zm9yZ2Vk")
            .body(incoming_form(&call_sid()).encode())
            .send()
    }))
    .await;
    assert!(statuses.into_iter().all(|r| r.unwrap().status() == 403));
    // Every forged request is accounted for: the first line, then the repeats' counts.
    let logged = |log: &str| -> (usize, u64) {
        let lines: Vec<Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["message"] == "invalid X-Twilio-Signature" || l["kind"] == "signature_failure")
            .collect();
        let counted = lines.iter().map(|l| l["repeats"].as_u64().unwrap_or(1)).sum();
        (lines.len(), counted)
    };
    let until = Instant::now() + DEADLINE;
    while logged(&server.log()).1 < FORGED as u64 {
        assert!(
            Instant::now() < until,
            "not every forged request was logged\n{}",
            server.log()
        );
        tokio::time::sleep(INTERVAL).await;
    }
    let elapsed = started.elapsed();
    server.signal("TERM");
    let (_, stderr) = server.output_after_exit(DEADLINE).await;
    let stderr = stderr.join("\n");
    let (lines, counted) = logged(&stderr);
    assert_eq!(counted, FORGED as u64, "{stderr}");
    // At most two lines per flush interval for the one route, not one per request.
    let intervals = (elapsed.as_millis() / INTERVAL.as_millis()) as usize + 2;
    assert!(
        lines <= 2 * intervals && lines < FORGED,
        "{lines} lines:\n{stderr}"
    );
    let first = stderr
        .lines()
        .find(|l| l.contains("invalid X-Twilio-Signature"))
        .expect("the first forged request is logged as it happens");
    assert!(first.contains(&route_id) && first.contains("WARN"), "{first}");
}
