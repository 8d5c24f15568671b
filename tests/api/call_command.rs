//! `stateset-voice call` against the running service: a whole test call through the echo agent,
//! fallbacks at webhook time and at stream end (a redirect followed to another server), a
//! refused signature, and the binary's exit codes.
use std::{path::Path, process::Command, time::Duration};

use stateset_voice::{
    backend_test,
    call::{self, wav, CallOptions, EndedBy, Report},
    domain::{
        admin::{NewRoute, NewTenant},
        fallback::FallbackAction,
    },
    testkit::*,
    twilio::{
        audio,
        form::FormParams,
        signature::{self, Algorithm},
    },
};
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, ResponseTemplate,
};

/// Frames of caller audio in the tests: 1.2 s, enough for one echo mark (every 50 frames).
const FRAMES: usize = 60;

/// A 440 Hz tone, `frames` × 20 ms of 8 kHz PCM.
fn tone(frames: usize) -> Vec<i16> {
    (0..frames * audio::FRAME_SAMPLES)
        .map(|i| {
            let t = i as f64 / 8000.0;
            (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
        })
        .collect()
}

/// Options for a call to `app` with `frames` of tone as the caller's audio, written in `dir`.
fn options(app: &TestApp, dir: &Path, frames: usize) -> CallOptions {
    let input = dir.join("in.wav");
    wav::write_pcm(&input, &tone(frames)).unwrap();
    let mut options = CallOptions::new(&app.base, AUTH_TOKEN, ACCOUNT_SID, NUMBER);
    options.audio = Some(input);
    options.record = Some(dir.join("out.wav"));
    options.tail = Duration::from_millis(300);
    options
}

fn recorded(dir: &Path) -> Vec<i16> {
    hound::WavReader::open(dir.join("out.wav"))
        .expect("the recording is a WAV file")
        .into_samples::<i16>()
        .map(Result::unwrap)
        .collect()
}

async fn place(options: CallOptions) -> Report {
    call::run(options).await.expect("the call is placed")
}

backend_test!(echo_call_streams_records_and_hangs_up);
async fn echo_call_streams_records_and_hangs_up(app: TestApp) {
    app.seed().await;
    let dir = tempfile::tempdir().unwrap();
    let report = place(options(&app, dir.path(), FRAMES)).await;

    assert!(report.ok, "{report:#?}");
    assert_eq!(report.error, None);
    assert_eq!(report.webhook_status, Some(200));
    let stream = report.stream.as_ref().expect("the TwiML offered a stream");
    assert_eq!(stream.ended_by, EndedBy::Stop);
    assert_eq!(stream.close_code, Some(1000));
    assert_eq!(stream.frames_sent, FRAMES as u64);
    assert_eq!(
        stream.frames_received, FRAMES as u64,
        "the echo agent returns every frame"
    );
    assert_eq!(stream.marks, ["echo-50"]);
    assert_eq!(stream.marks_answered, 1);
    assert_eq!(report.action_status, Some(200));
    assert_eq!(report.final_verbs, ["Hangup"]);
    assert_eq!(report.redirects, 0);
    assert!(report.summary.starts_with("OK call "), "{}", report.summary);
    assert_eq!(report.steps.last(), Some(&report.summary));

    // The echo agent played the caller's own audio back: the recording is the sent audio,
    // through mu-law and back.
    let sent = audio::decode_all(&audio::encode_all(&tone(FRAMES)));
    assert_eq!(recorded(dir.path()), sent);

    // The service saw the same call: streamed, its media session ended by our stop.
    let stored = app.call(&report.call_sid).await.expect("the call is recorded");
    assert_eq!(stored.outcome.as_str(), "streamed");
    let sessions = stateset_voice::db::calls::media_sessions(&app.state.db, &stored.id)
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        sessions[0].stream_sid.as_deref(),
        Some(stream.stream_sid.as_str())
    );
    assert!(sessions[0].received_stop);
}

backend_test!(key_presses_are_cleared_and_acknowledged);
async fn key_presses_are_cleared_and_acknowledged(app: TestApp) {
    app.seed().await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(&app, dir.path(), 30);
    options.dtmf = "7#".to_owned();
    let report = place(options).await;

    assert!(report.ok, "{report:#?}");
    let stream = report.stream.expect("a stream");
    assert_eq!(stream.dtmf_sent, 2);
    assert_eq!(stream.clears, 2, "the echo agent clears at each key press");
    assert_eq!(stream.marks, ["dtmf-7", "dtmf-#"]);
    assert_eq!(stream.marks_answered, 2);
    assert!(report
        .steps
        .iter()
        .any(|s| s.contains("answered mark \"dtmf-7\"")));
}

backend_test!(disabled_route_answers_its_fallback_without_a_stream);
async fn disabled_route_answers_its_fallback_without_a_stream(app: TestApp) {
    app.seed_with(
        NewTenant::default(),
        NewRoute {
            enabled: Some(false),
            fallback: say("We are closed today."),
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let report = place(options(&app, dir.path(), 5)).await;

    assert!(report.ok, "{report:#?}");
    assert_eq!(report.webhook_status, Some(200));
    assert!(report.stream.is_none());
    assert_eq!(report.action_status, None);
    assert_eq!(report.final_verbs, ["Say", "Hangup"]);
    assert!(report
        .steps
        .iter()
        .any(|s| s.contains("<Say> \"We are closed today.\"")));
    assert!(recorded(dir.path()).is_empty());
}

backend_test!(failed_agent_leads_to_a_signed_redirect_that_is_followed);
async fn failed_agent_leads_to_a_signed_redirect_that_is_followed(app: TestApp) {
    let callback = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/callback"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Content-Type", "text/xml")
                .set_body_string(
                    "<?xml version=\"1.0\"?><Response><Say>We will call you back.</Say><Hangup/></Response>",
                ),
        )
        .expect(1)
        .mount(&callback)
        .await;
    // Nothing listens on the agent's port: the agent fails as the stream starts.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_url = format!("ws://{}/agent", closed.local_addr().unwrap());
    drop(closed);
    let redirect = format!("{}/callback", callback.uri());
    app.seed_with(
        NewTenant::default(),
        NewRoute {
            agent_url: Some(agent_url),
            fallback: Some(FallbackAction::Redirect {
                url: redirect.clone(),
            }),
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let report = place(options(&app, dir.path(), 10)).await;

    assert!(!report.ok, "{report:#?}");
    let stream = report.stream.as_ref().expect("a stream");
    assert_eq!(stream.ended_by, EndedBy::Failed);
    assert_eq!(stream.close_code, Some(1011));
    assert!(
        report.error.as_deref().unwrap().contains("1011"),
        "{:?}",
        report.error
    );
    assert_eq!(report.action_status, Some(200));
    assert_eq!(report.redirects, 1);
    assert_eq!(report.final_verbs, ["Say", "Hangup"]);
    assert!(report.summary.starts_with("FAILED call "), "{}", report.summary);

    // The redirect was signed as Twilio signs it: the tenant's token over the URL and fields.
    let requests = callback.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let form = FormParams::parse(&requests[0].body).unwrap();
    assert_eq!(form.get("CallSid"), Some(report.call_sid.as_str()));
    assert_eq!(form.get("CallStatus"), Some("in-progress"));
    let sig = requests[0]
        .headers
        .get("X-Twilio-Signature")
        .expect("signed")
        .to_str()
        .unwrap();
    assert!(signature::validate(
        Algorithm::HmacSha1,
        &[AUTH_TOKEN.as_bytes()],
        &redirect,
        &form,
        sig
    )
    .is_some());
    assert!(signature::validate(Algorithm::HmacSha1, &[b"another token"], &redirect, &form, sig).is_none());
}

backend_test!(token_in_the_stream_path_is_kept_and_never_printed, |args| {
    args.stream_token_placement = stateset_voice::config::TokenPlacement::Path;
});
async fn token_in_the_stream_path_is_kept_and_never_printed(app: TestApp) {
    app.seed().await;
    let dir = tempfile::tempdir().unwrap();
    let report = place(options(&app, dir.path(), 5)).await;

    assert!(report.ok, "{report:#?}");
    assert_eq!(report.stream.unwrap().ended_by, EndedBy::Stop);
    assert!(
        report.steps.iter().any(|s| s.contains("/media-stream/<token>")),
        "{:#?}",
        report.steps
    );
    assert!(
        !report.steps.iter().any(|s| s.contains("eyJ")),
        "a stream token was printed: {:#?}",
        report.steps
    );
}

/// An agent runtime that, after `frames` media frames of the caller, plays one frame with a
/// mark and hangs up (close 1000).
async fn hanging_up_agent(frames: usize) -> String {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{
        protocol::{frame::coding::CloseCode, CloseFrame},
        Message,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/agent", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let mut media = 0;
        while let Some(Ok(Message::Text(text))) = ws.next().await {
            if text.contains("\"event\":\"media\"") {
                media += 1;
                if media == frames {
                    break;
                }
            }
        }
        let goodbye = serde_json::json!({"event": "media", "media": {"payload": "AAAA"}});
        ws.send(Message::text(goodbye.to_string())).await.unwrap();
        let mark = serde_json::json!({"event": "mark", "mark": {"name": "goodbye"}});
        ws.send(Message::text(mark.to_string())).await.unwrap();
        let _ = ws
            .close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
        while ws.next().await.is_some() {}
    });
    url
}

backend_test!(agent_hanging_up_is_a_good_call);
async fn agent_hanging_up_is_a_good_call(app: TestApp) {
    let agent_url = hanging_up_agent(5).await;
    app.seed_with(
        NewTenant::default(),
        NewRoute {
            agent_url: Some(agent_url),
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let report = place(options(&app, dir.path(), FRAMES)).await;

    assert!(report.ok, "{report:#?}");
    let stream = report.stream.as_ref().expect("a stream");
    assert_eq!(stream.ended_by, EndedBy::AgentHangup);
    assert_eq!(stream.close_code, Some(1000));
    assert!(stream.frames_sent < FRAMES as u64, "{}", stream.frames_sent);
    assert_eq!(stream.frames_received, 1);
    // The service marks the end of the agent's audio and closes once that mark is answered,
    // so the caller hears the goodbye: every mark was answered after its audio played.
    assert_eq!(
        stream.marks,
        ["goodbye", stateset_voice::media::session::HANGUP_MARK]
    );
    assert_eq!(stream.marks_answered, 2);
    assert_eq!(report.action_status, Some(200));
    assert_eq!(report.final_verbs, ["Hangup"]);
    // What the agent played: three zero bytes of mu-law, padded by nothing.
    assert_eq!(recorded(dir.path()), vec![audio::decode(0); 3]);
}

backend_test!(wrong_auth_token_is_refused);
async fn wrong_auth_token_is_refused(app: TestApp) {
    app.seed().await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(&app, dir.path(), 5);
    options.auth_token = "not-the-tenant-token".to_owned();
    let report = place(options).await;

    assert!(!report.ok);
    assert_eq!(report.webhook_status, Some(403));
    assert!(report.stream.is_none());
    assert!(report.final_verbs.is_empty());
    assert!(
        report.error.as_deref().unwrap().contains("403"),
        "{:?}",
        report.error
    );
    assert!(app.call(&report.call_sid).await.is_none());
}

/// Runs the binary with `args`; returns (exit code, stdout, stderr).
async fn voice(args: Vec<String>) -> (Option<i32>, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_stateset-voice"))
            .args(&args)
            .output()
            .expect("the binary runs");
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    })
    .await
    .unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

backend_test!(binary_exit_codes_and_summary);
async fn binary_exit_codes_and_summary(app: TestApp) {
    app.seed().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.wav");
    wav::write_pcm(&input, &tone(10)).unwrap();
    let report_path = dir.path().join("report.json");
    let call_args = |token: &str| {
        strings(&[
            "call",
            "--url",
            &app.base,
            "--token",
            token,
            "--account-sid",
            ACCOUNT_SID,
            "--to",
            NUMBER,
            "--audio",
            input.to_str().unwrap(),
            "--tail",
            "0.2",
            "--report",
            report_path.to_str().unwrap(),
        ])
    };

    let (code, stdout, stderr) = voice(call_args(AUTH_TOKEN)).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap();
    assert!(last.starts_with("OK call CA"), "{stdout}");
    assert!(
        last.contains("stream ended by our stop (10 frames sent, 10 received"),
        "{last}"
    );
    assert!(stdout.contains("sent stop\n"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["webhook_status"], 200);
    assert_eq!(json["stream"]["ended_by"], "stop");
    assert_eq!(json["stream"]["frames_sent"], 10);
    assert_eq!(json["final_verbs"], serde_json::json!(["Hangup"]));
    assert_eq!(json["error"], serde_json::Value::Null);
    assert!(!stdout.contains(AUTH_TOKEN), "the auth token is never printed");

    let (code, stdout, _) = voice(call_args("wrong-token")).await;
    assert_eq!(code, Some(1), "{stdout}");
    let last = stdout.lines().last().unwrap();
    assert!(last.starts_with("FAILED call CA"), "{stdout}");
    assert!(last.contains("answered 403"), "{last}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["webhook_status"], 403);

    // Usage errors: an unsupported WAV, a bad key.
    let mut writer = hound::WavWriter::create(
        &input,
        hound::WavSpec {
            channels: 1,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        },
    )
    .unwrap();
    writer.write_sample(0i16).unwrap();
    writer.finalize().unwrap();
    let (code, stdout, stderr) = voice(call_args(AUTH_TOKEN)).await;
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("44100 Hz mono 16-bit PCM"), "{stderr}");
    assert!(stdout.is_empty(), "nothing was called: {stdout}");
    let mut bad_key = call_args(AUTH_TOKEN);
    bad_key.extend(strings(&["--dtmf", "12x"]));
    let (code, _, stderr) = voice(bad_key).await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--dtmf"), "{stderr}");
}

backend_test!(demo_call_command_places_a_good_call);
async fn demo_call_command_places_a_good_call(app: TestApp) {
    let tenant = stateset_voice::demo::seed(&app.state.db, &app.state.config.secrets)
        .await
        .unwrap();
    let command = stateset_voice::demo::call_command(&app.state.config, &tenant);
    let args: Vec<String> = command
        .replace("\\\n", " ")
        .split_whitespace()
        .map(|a| a.trim_matches('\'').to_owned())
        .collect();
    assert_eq!(args[..4], ["cargo", "run", "--release", "--"]);
    assert!(command.ends_with("--record out.wav"), "{command}");
    // As pasted, with the recording in a temporary directory and a short input to keep it quick.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.wav");
    wav::write_pcm(&input, &tone(5)).unwrap();
    let out = dir.path().join("out.wav");
    let mut args: Vec<String> = args[4..]
        .iter()
        .map(|a| {
            if a == "out.wav" {
                out.display().to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    args.extend(strings(&["--audio", input.to_str().unwrap(), "--tail", "0.2"]));
    let (code, stdout, stderr) = voice(args).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.lines().last().unwrap().contains("final TwiML: Hangup"),
        "{stdout}"
    );
    assert_eq!(
        hound::WavReader::open(&out).unwrap().duration(),
        5 * audio::FRAME_SAMPLES as u32
    );
}

/// A stand-in deployment: wiremock answers the webhook with a `<Connect><Stream>` whose URL
/// carries a query string, and a WebSocket server that records what it got and then closes
/// with `close_code` after `frames` media frames.
struct FakeDeployment {
    http: MockServer,
    /// (request URI, the start message) of each stream connection.
    seen: tokio::sync::mpsc::UnboundedReceiver<(String, serde_json::Value)>,
}

// The handshake callback's error type is tungstenite's.
#[allow(clippy::result_large_err)]
async fn fake_deployment(close_code: u16, frames: usize, action_status: u16) -> FakeDeployment {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::{
        handshake::server::{Request, Response},
        protocol::{frame::coding::CloseCode, CloseFrame},
        Message,
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws = format!("ws://{}/media-stream", listener.local_addr().unwrap());
    let (tx, seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut uri = String::new();
                let mut socket = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, res: Response| {
                    uri = req.uri().to_string();
                    Ok(res)
                })
                .await
                .unwrap();
                let mut start = serde_json::Value::Null;
                let mut media = 0;
                while let Some(Ok(Message::Text(text))) = socket.next().await {
                    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                    match value["event"].as_str() {
                        Some("start") => start = value,
                        Some("media") => media += 1,
                        _ => {}
                    }
                    if media == frames {
                        break;
                    }
                }
                tx.send((uri, start)).unwrap();
                let _ = socket
                    .close(Some(CloseFrame {
                        code: CloseCode::from(close_code),
                        reason: "closing".into(),
                    }))
                    .await;
                while socket.next().await.is_some() {}
            });
        }
    });
    let http = MockServer::start().await;
    let twiml = format!(
        "<Response><Connect action=\"/api/v1/stream-ended\"><Stream url=\"{ws}?stream_token=secret&amp;x=1\">\
         <Parameter name=\"stream_token\" value=\"secret\"/><Parameter name=\"greeting\" value=\"a &amp; b\"/>\
         </Stream></Connect></Response>"
    );
    Mock::given(method("POST"))
        .and(path("/api/v1/incoming-call"))
        .respond_with(ResponseTemplate::new(200).set_body_string(twiml))
        .mount(&http)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/stream-ended"))
        .respond_with(ResponseTemplate::new(action_status).set_body_string("<Response><Hangup/></Response>"))
        .mount(&http)
        .await;
    FakeDeployment { http, seen }
}

fn fake_options(deployment: &FakeDeployment, dir: &Path, frames: usize) -> CallOptions {
    let mut options = CallOptions::new(&deployment.http.uri(), AUTH_TOKEN, ACCOUNT_SID, NUMBER);
    let input = dir.join("in.wav");
    wav::write_pcm(&input, &tone(frames)).unwrap();
    options.audio = Some(input);
    options.tail = Duration::from_millis(200);
    options
}

#[tokio::test]
async fn stream_url_loses_its_query_and_parameters_travel_in_start() {
    let mut deployment = fake_deployment(1000, 3, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let report = place(fake_options(&deployment, dir.path(), 20)).await;
    let (uri, start) = deployment.seen.recv().await.unwrap();
    assert_eq!(uri, "/media-stream", "Twilio drops the query string");
    assert_eq!(
        start["start"]["customParameters"],
        serde_json::json!({"stream_token": "secret", "greeting": "a & b"})
    );
    assert_eq!(start["start"]["callSid"], report.call_sid.as_str());
    assert_eq!(start["start"]["accountSid"], ACCOUNT_SID);
    assert_eq!(start["start"]["tracks"], serde_json::json!(["inbound"]));
    assert_eq!(start["sequenceNumber"], "2");

    // The service closed with 1000 before our stop: the agent hung up, which is a good call.
    assert!(report.ok, "{report:#?}");
    let stream = report.stream.as_ref().unwrap();
    assert_eq!(stream.ended_by, EndedBy::AgentHangup);
    assert_eq!(stream.close_code, Some(1000));
    assert!(
        stream.frames_sent < 20,
        "sending stopped at the hang-up: {}",
        stream.frames_sent
    );
    // The relative action URL was resolved against the webhook's and posted with the StreamSid.
    assert_eq!(report.action_status, Some(200));
    assert_eq!(report.final_verbs, ["Hangup"]);
    let requests = deployment.http.received_requests().await.unwrap();
    let action = requests
        .iter()
        .find(|r| r.url.path() == "/api/v1/stream-ended")
        .expect("the action was posted");
    let form = FormParams::parse(&action.body).unwrap();
    assert_eq!(form.get("StreamSid"), Some(stream.stream_sid.as_str()));
    let url = format!("{}/api/v1/stream-ended", deployment.http.uri());
    let sig = action
        .headers
        .get("X-Twilio-Signature")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(signature::validate(Algorithm::HmacSha1, &[AUTH_TOKEN.as_bytes()], &url, &form, sig).is_some());
}

#[tokio::test]
async fn refused_stream_and_failed_action_are_not_ok() {
    let dir = tempfile::tempdir().unwrap();
    let deployment = fake_deployment(1008, 0, 200).await;
    let report = place(fake_options(&deployment, dir.path(), 5)).await;
    assert!(!report.ok);
    let stream = report.stream.as_ref().unwrap();
    assert_eq!(stream.ended_by, EndedBy::Refused);
    assert_eq!(stream.close_code, Some(1008));
    assert_eq!(stream.close_reason.as_deref(), Some("closing"));
    assert_eq!(report.action_status, Some(200), "Twilio still posts the action");

    let deployment = fake_deployment(1000, 2, 500).await;
    let report = place(fake_options(&deployment, dir.path(), 5)).await;
    assert!(!report.ok);
    assert_eq!(report.stream.unwrap().ended_by, EndedBy::AgentHangup);
    assert_eq!(report.action_status, Some(500));
    assert!(report
        .error
        .unwrap()
        .contains("Connect action request was answered 500"));
}
