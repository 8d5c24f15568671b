//! Load generator: pre-signs realistic Twilio requests and drives a server over loopback HTTP
//! with fixed concurrency, or holds many media streams open and measures echo latency.
//! Prints one JSON object per run on stdout.
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use clap::{Parser, Subcommand, ValueEnum};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use stateset_voice::twilio::{
    form::FormParams,
    signature::{compute, Algorithm},
};
use tokio_tungstenite::tungstenite::Message;

mod agent;
mod open_files;

/// The benchmark tenant.
const ACCOUNT_SID: &str = "AC3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f";
const AUTH_TOKEN: &str = "bench-auth-token-0123456789abcdef";
const NUMBER: &str = "+15555551234";
const EXAMPLES: &str = include_str!("../../tests/fixtures/twilio-callback-examples.json");

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the benchmark tenant and route through the admin API (idempotent).
    Seed {
        #[arg(long)]
        target: String,
        #[arg(long)]
        admin_token: String,
        /// The route's phone number.
        #[arg(long, default_value = NUMBER)]
        number: String,
        /// The route's agent runtime (`ws://...`); without it the route uses the echo agent.
        #[arg(long)]
        agent_url: Option<String>,
    },
    /// Pre-sign inbound-call webhooks for `wrk` (see `bench/signed.lua`): one request per line,
    /// `signature<TAB>body`.
    Sign {
        /// Base URL the requests are signed for (the server's public URL).
        #[arg(long)]
        public_url: String,
        #[arg(long, value_enum)]
        scenario: Scenario,
        #[arg(long)]
        requests: usize,
        /// Where the requests go.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Retries: where the first delivery of each retried call goes (send it before `out`).
        #[arg(long)]
        prime: Option<std::path::PathBuf>,
    },
    /// Send every request of a `sign` file once and report.
    Send {
        /// Base URL requests are sent to.
        #[arg(long)]
        target: String,
        #[arg(long)]
        file: std::path::PathBuf,
        #[arg(long, default_value = "64")]
        concurrency: usize,
        /// The status every answer must have.
        #[arg(long, default_value = "200")]
        expect: u16,
    },
    /// Hold media streams open, 20 ms frames each way, and measure echo latency.
    Streams {
        #[arg(long)]
        target: String,
        #[arg(long)]
        public_url: String,
        /// The number called (its route decides the agent).
        #[arg(long, default_value = NUMBER)]
        to: String,
        #[arg(long, default_value = "200")]
        streams: usize,
        #[arg(long, default_value = "10")]
        seconds: u64,
        /// The server's process id, to read its CPU time.
        #[arg(long)]
        server_pid: Option<u32>,
        /// The agent's process id, to read its CPU time.
        #[arg(long)]
        agent_pid: Option<u32>,
    },
    /// Run a remote agent that echoes media, speaking Twilio Media Streams.
    Agent {
        #[arg(long, default_value = "127.0.0.1:9100")]
        bind: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Scenario {
    /// Distinct new calls: validate, route, mint, store, answer.
    New,
    /// Retries of calls answered beforehand.
    Retry,
    /// Forged signatures on a known number.
    Forged,
    /// Calls to a number with no route.
    Unknown,
}

#[derive(Serialize)]
struct Report {
    scenario: String,
    requests: usize,
    concurrency: usize,
    seconds: f64,
    per_second: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_per_stream_percent: Option<f64>,
    /// Stream scenarios: media frames sent and echoes received (`errors` is the difference).
    #[serde(skip_serializing_if = "Option::is_none")]
    frames_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frames_echoed: Option<u64>,
    /// Stream scenarios: streams the server closed before their last frame was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    streams_cut_short: Option<u64>,
    /// Stream scenarios with `--agent-pid`: the agent process's CPU per stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_cpu_per_stream_percent: Option<f64>,
}

/// Twilio's recorded incoming-call form, parsed once, with the CallSid and number to fill in.
struct IncomingForm(Vec<(String, String)>);

impl IncomingForm {
    fn new() -> Self {
        let examples: serde_json::Value = serde_json::from_str(EXAMPLES).expect("examples parse");
        Self(
            examples["incoming_call"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap().to_owned(),
                        p[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect(),
        )
    }

    fn with(&self, call_sid: &str, to: &str) -> FormParams {
        FormParams::from_pairs(self.0.iter().map(|(key, value)| {
            let value = match key.as_str() {
                "CallSid" => call_sid,
                "To" | "Called" => to,
                _ => value,
            };
            (key.clone(), value.to_owned())
        }))
    }
}

/// A pre-signed request: body and signature.
struct Signed {
    body: String,
    signature: String,
}

fn sign(public_url: &str, form: &FormParams, token: &str) -> Signed {
    let url = format!("{public_url}/api/v1/incoming-call");
    Signed {
        body: form.encode(),
        signature: compute(Algorithm::HmacSha1, token.as_bytes(), &url, form),
    }
}

fn new_call_sid() -> String {
    format!("CA{}", uuid::Uuid::new_v4().simple())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

fn client(concurrency: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .http1_only()
        .build()
        .expect("client")
}

/// Sends every request once with `concurrency` in flight; returns latencies (µs) and errors.
async fn drive(
    target: &str,
    requests: Arc<Vec<Signed>>,
    concurrency: usize,
    expect: u16,
) -> (Vec<u64>, usize, Duration) {
    let http = client(concurrency);
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("{target}/api/v1/incoming-call");
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, next, requests, url) = (http.clone(), next.clone(), requests.clone(), url.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = requests.get(i) else { break };
                    let sent = Instant::now();
                    let result = http
                        .post(&url)
                        .header("Content-Type", "application/x-www-form-urlencoded")
                        .header("X-Twilio-Signature", &request.signature)
                        .body(request.body.clone())
                        .send()
                        .await;
                    match result {
                        Ok(response) => {
                            let ok = response.status().as_u16() == expect;
                            let _ = response.bytes().await;
                            latencies.push(sent.elapsed().as_micros() as u64);
                            if !ok {
                                errors += 1;
                            }
                        }
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(requests.len());
    let mut errors = 0;
    for worker in workers {
        let (latencies, e) = worker.await.expect("worker");
        all.extend(latencies);
        errors += e;
    }
    (all, errors, started.elapsed())
}

fn report(
    scenario: &str,
    mut latencies: Vec<u64>,
    errors: usize,
    elapsed: Duration,
    concurrency: usize,
    cpu: Option<f64>,
) -> Report {
    latencies.sort_unstable();
    let requests = latencies.len();
    Report {
        scenario: scenario.to_owned(),
        requests,
        concurrency,
        seconds: elapsed.as_secs_f64(),
        per_second: requests as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p90_ms: percentile(&latencies, 0.90),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().map_or(0.0, |m| *m as f64 / 1000.0),
        errors,
        cpu_per_stream_percent: cpu,
        frames_sent: None,
        frames_echoed: None,
        streams_cut_short: None,
        agent_cpu_per_stream_percent: None,
    }
}

async fn seed(target: &str, admin_token: &str, number: &str, agent_url: Option<&str>) {
    let http = reqwest::Client::new();
    let tenant = serde_json::json!({"name": "Bench", "account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "environment": "sandbox"});
    let res = http
        .post(format!("{target}/api/v1/tenants"))
        .bearer_auth(admin_token)
        .json(&tenant)
        .send()
        .await
        .expect("seed tenant");
    let tenant_id = match res.status().as_u16() {
        201 => res.json::<serde_json::Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned(),
        409 => {
            let list: serde_json::Value = http
                .get(format!("{target}/api/v1/tenants?limit=100"))
                .bearer_auth(admin_token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["account_sid"] == ACCOUNT_SID)
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
        s => panic!("creating the tenant: HTTP {s}"),
    };
    let mut route = serde_json::json!({"phone_number": number, "environment": "test"});
    if let Some(url) = agent_url {
        route["agent_url"] = url.into();
    }
    let res = http
        .post(format!("{target}/api/v1/tenants/{tenant_id}/routes"))
        .bearer_auth(admin_token)
        .json(&route)
        .send()
        .await
        .expect("seed route");
    assert!(
        matches!(res.status().as_u16(), 201 | 409),
        "creating the route: HTTP {}",
        res.status()
    );
}

/// Retried calls: each is answered once (the prime file), then retried round-robin.
const RETRIED_CALLS: usize = 2000;

/// Writes `requests` signed requests of `scenario` (and, for retries, their first deliveries).
fn sign_file(
    public_url: &str,
    scenario: Scenario,
    n: usize,
    out: &std::path::Path,
    prime: Option<&std::path::Path>,
) -> std::io::Result<()> {
    let template = IncomingForm::new();
    let line = |signed: Signed| format!("{}\t{}\n", signed.signature, signed.body);
    // The number called and the token signed with: only retries reuse CallSids.
    let (to, token) = match scenario {
        Scenario::New | Scenario::Retry => (NUMBER, AUTH_TOKEN),
        Scenario::Forged => (NUMBER, "forged"),
        Scenario::Unknown => ("+15550000000", "unsigned"),
    };
    let signed = |sid: &str| line(sign(public_url, &template.with(sid, to), token));
    let lines: Vec<String> = if scenario == Scenario::Retry {
        let sids: Vec<String> = (0..RETRIED_CALLS.min(n.max(1))).map(|_| new_call_sid()).collect();
        let prime = prime.ok_or_else(|| std::io::Error::other("retries need --prime"))?;
        std::fs::write(prime, sids.iter().map(|s| signed(s)).collect::<String>())?;
        (0..n).map(|i| signed(&sids[i % sids.len()])).collect()
    } else {
        (0..n).map(|_| signed(&new_call_sid())).collect()
    };
    std::fs::write(out, lines.concat())
}

/// Sends every request of a `sign` file once.
async fn send(target: &str, file: &std::path::Path, concurrency: usize, expect: u16) -> Report {
    let text = std::fs::read_to_string(file).expect("reading the requests");
    let requests: Vec<Signed> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(signature, body)| Signed {
            signature: signature.to_owned(),
            body: body.to_owned(),
        })
        .collect();
    let (latencies, errors, elapsed) = drive(target, Arc::new(requests), concurrency, expect).await;
    report("send", latencies, errors, elapsed, concurrency, None)
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A WebSocket to the server's media-stream endpoint.
type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Twilio's frame interval.
const FRAME: Duration = Duration::from_millis(20);
/// How long a stream waits for outstanding echoes after its last frame. Generous, because on
/// a saturated machine echoes queue up for seconds without being lost; a frame still without
/// echo after this is counted lost.
const DRAIN: Duration = Duration::from_secs(30);

/// A Twilio `media` frame whose first 8 audio bytes carry `seq`.
fn media_frame(stream_sid: &str, seq: u64) -> Message {
    let mut audio = [0xffu8; 160];
    audio[..8].copy_from_slice(&seq.to_le_bytes());
    Message::text(format!(
        r#"{{"event":"media","streamSid":"{stream_sid}","media":{{"track":"inbound","chunk":"{seq}","timestamp":"{}","payload":"{}"}}}}"#,
        seq * 20,
        STANDARD.encode(audio)
    ))
}

/// The fields of an outbound message the load generator reads.
#[derive(serde::Deserialize)]
struct Echo<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    media: Option<EchoMedia<'a>>,
}

#[derive(serde::Deserialize)]
struct EchoMedia<'a> {
    #[serde(borrow)]
    payload: std::borrow::Cow<'a, str>,
}

/// The sequence number an echoed `media` frame carries, if it is one.
fn echoed_seq(text: &str) -> Option<u64> {
    let echo: Echo = serde_json::from_str(text).ok()?;
    if echo.event != "media" {
        return None;
    }
    let audio = STANDARD.decode(echo.media?.payload.as_bytes()).ok()?;
    Some(u64::from_le_bytes(audio.get(..8)?.try_into().ok()?))
}

/// Answers a call as Twilio would, opens its stream, and waits for the echo of one warm-up
/// frame, so the bridge to the agent is up before any frame is measured.
async fn open_stream(
    http: &reqwest::Client,
    target: &str,
    public_url: &str,
    to: &str,
) -> (Socket, String, String) {
    let ws_base = target.replacen("http://", "ws://", 1);
    let sid = new_call_sid();
    let signed = sign(public_url, &IncomingForm::new().with(&sid, to), AUTH_TOKEN);
    let twiml = http
        .post(format!("{target}/api/v1/incoming-call"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", signed.signature)
        .body(signed.body)
        .send()
        .await
        .expect("answer")
        .text()
        .await
        .unwrap();
    let token = twiml
        .split("value=\"")
        .nth(1)
        .unwrap_or_else(|| panic!("stream TwiML expected, got {twiml}"))
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(
        format!("{ws_base}/media-stream?stream_token={token}"),
        None,
        true,
    )
    .await
    .expect("upgrade");
    let stream_sid = format!("MZ{}", uuid::Uuid::new_v4().simple());
    let start = serde_json::json!({"event": "start", "streamSid": stream_sid, "start": {"accountSid": ACCOUNT_SID, "callSid": sid, "tracks": ["inbound"], "customParameters": {"stream_token": token}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}});
    socket
        .send(Message::text(
            r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
        ))
        .await
        .unwrap();
    socket.send(Message::text(start.to_string())).await.unwrap();
    socket.send(media_frame(&stream_sid, 0)).await.unwrap();
    let warm_up = async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(text) = &message {
                if echoed_seq(text) == Some(0) {
                    return true;
                }
            }
        }
        false
    };
    let echoed = tokio::time::timeout(Duration::from_secs(10), warm_up).await;
    assert!(
        matches!(echoed, Ok(true)),
        "stream {stream_sid}: no echo of the warm-up frame"
    );
    (socket, stream_sid, sid)
}

/// What one stream measured: round trips (µs), frames sent, frames echoed.
struct Measured {
    latencies: Vec<u64>,
    sent: u64,
    echoed: u64,
}

/// Sends `frames` frames on a 20 ms clock starting at `first_tick`, matching echoes as they
/// come; after the last frame waits up to [`DRAIN`] for the outstanding ones.
async fn run_stream(
    mut socket: Socket,
    stream_sid: &str,
    first_tick: tokio::time::Instant,
    frames: u64,
) -> (Socket, Measured) {
    let mut tick = tokio::time::interval_at(first_tick, FRAME);
    let mut sent_at: Vec<Option<Instant>> = vec![None; frames as usize + 1];
    let mut latencies = Vec::with_capacity(frames as usize);
    let (mut sent, mut echoed) = (0u64, 0u64);
    let mut drain_until: Option<tokio::time::Instant> = None;
    while sent < frames || echoed < frames {
        tokio::select! {
            _ = tick.tick(), if sent < frames => {
                sent += 1;
                sent_at[sent as usize] = Some(Instant::now());
                if socket.send(media_frame(stream_sid, sent)).await.is_err() {
                    break;
                }
                if sent == frames {
                    drain_until = Some(tokio::time::Instant::now() + DRAIN);
                }
            }
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let at = echoed_seq(&text).and_then(|seq| sent_at.get_mut(seq as usize)?.take());
                    if let Some(at) = at {
                        latencies.push(at.elapsed().as_micros() as u64);
                        echoed += 1;
                    }
                }
                Some(Ok(_)) => {}
                // The server closed the stream: whatever is outstanding is lost.
                Some(Err(_)) | None => break,
            },
            _ = tokio::time::sleep_until(drain_until.unwrap_or_else(tokio::time::Instant::now)), if drain_until.is_some() => break,
        }
    }
    let measured = Measured {
        latencies,
        sent,
        echoed,
    };
    (socket, measured)
}

/// Sends Twilio's `stop` and waits briefly for the server to close the stream.
async fn stop_stream(mut socket: Socket, stream_sid: &str, call_sid: &str) {
    let stop = serde_json::json!({"event": "stop", "streamSid": stream_sid, "stop": {"accountSid": ACCOUNT_SID, "callSid": call_sid}});
    let _ = socket.send(Message::text(stop.to_string())).await;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(2), socket.next()).await {
        if message.is_close() {
            break;
        }
    }
}

/// CPU used per stream, in percent of one core: CPU seconds per second of audio streamed.
fn cpu_per_stream(before: Option<f64>, after: Option<f64>, audio: Duration, n: usize) -> Option<f64> {
    Some(100.0 * (after? - before?) / audio.as_secs_f64() / n as f64)
}

#[allow(clippy::too_many_arguments)]
async fn streams(
    target: String,
    public_url: String,
    to: String,
    n: usize,
    seconds: u64,
    server_pid: Option<u32>,
    agent_pid: Option<u32>,
) -> Report {
    open_files::raise();
    let http = client(64);
    // Answer the calls and open every stream first; then start the clocks, staggered evenly
    // over one frame interval as independent calls would be.
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        sockets.push(open_stream(&http, &target, &public_url, &to).await);
    }
    let frames = seconds * 1000 / FRAME.as_millis() as u64;
    let clock_start = tokio::time::Instant::now() + Duration::from_millis(100);
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, (socket, stream_sid, call_sid))| {
            let first_tick = clock_start + FRAME * i as u32 / n as u32;
            tokio::spawn(async move {
                let (socket, measured) = run_stream(socket, &stream_sid, first_tick, frames).await;
                (socket, stream_sid, call_sid, measured)
            })
        })
        .collect();
    // CPU is counted from the first frame to the last echo, so work a saturated machine
    // defers past the sending window is still counted; the stops come after.
    tokio::time::sleep_until(clock_start).await;
    let cpu_before = (server_pid.and_then(cpu_seconds), agent_pid.and_then(cpu_seconds));
    let mut all = Vec::new();
    let mut open = Vec::with_capacity(n);
    let (mut sent, mut echoed, mut cut_short) = (0u64, 0u64, 0u64);
    for task in tasks {
        let (socket, stream_sid, call_sid, measured) = task.await.expect("stream task");
        if measured.sent < frames {
            cut_short += 1;
        }
        sent += measured.sent;
        echoed += measured.echoed;
        all.extend(measured.latencies);
        open.push((socket, stream_sid, call_sid));
    }
    let elapsed = clock_start.elapsed();
    let cpu_after = (server_pid.and_then(cpu_seconds), agent_pid.and_then(cpu_seconds));
    let stops: Vec<_> = open
        .into_iter()
        .map(|(socket, stream_sid, call_sid)| {
            tokio::spawn(async move { stop_stream(socket, &stream_sid, &call_sid).await })
        })
        .collect();
    futures::future::join_all(stops).await;
    let audio = Duration::from_secs(seconds);
    let mut report = report(
        &format!("streams ({n} x 20 ms frames)"),
        all,
        (sent - echoed) as usize,
        elapsed,
        n,
        cpu_per_stream(cpu_before.0, cpu_after.0, audio, n),
    );
    report.frames_sent = Some(sent);
    report.frames_echoed = Some(echoed);
    report.streams_cut_short = Some(cut_short);
    report.agent_cpu_per_stream_percent = cpu_per_stream(cpu_before.1, cpu_after.1, audio, n);
    report
}

#[tokio::main]
async fn main() {
    let report = match Cli::parse().command {
        Command::Seed {
            target,
            admin_token,
            number,
            agent_url,
        } => {
            seed(&target, &admin_token, &number, agent_url.as_deref()).await;
            return;
        }
        Command::Agent { bind } => {
            open_files::raise();
            agent::serve(&bind).await;
            return;
        }
        Command::Sign {
            public_url,
            scenario,
            requests,
            out,
            prime,
        } => {
            sign_file(&public_url, scenario, requests, &out, prime.as_deref()).expect("writing the requests");
            return;
        }
        Command::Send {
            target,
            file,
            concurrency,
            expect,
        } => send(&target, &file, concurrency, expect).await,
        Command::Streams {
            target,
            public_url,
            to,
            streams: n,
            seconds,
            server_pid,
            agent_pid,
        } => streams(target, public_url, to, n, seconds, server_pid, agent_pid).await,
    };
    println!("{}", serde_json::to_string(&report).expect("report serialises"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echoed_frame_gives_back_its_sequence_number() {
        let Message::Text(frame) = media_frame("MZ1", 4242) else {
            panic!("a text frame")
        };
        let sent: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(sent["streamSid"], "MZ1");
        assert_eq!(sent["media"]["chunk"], "4242");
        let echo = serde_json::json!({"event": "media", "streamSid": "MZ1", "media": {"payload": sent["media"]["payload"]}});
        assert_eq!(echoed_seq(&echo.to_string()), Some(4242));
        let mark = serde_json::json!({"event": "mark", "streamSid": "MZ1", "mark": {"name": "m"}});
        assert_eq!(echoed_seq(&mark.to_string()), None);
    }

    #[test]
    fn cpu_per_stream_is_cpu_seconds_per_audio_second_per_stream() {
        let cpu = cpu_per_stream(Some(1.0), Some(3.0), Duration::from_secs(10), 4).unwrap();
        assert!((cpu - 5.0).abs() < 1e-9, "{cpu}");
        assert_eq!(cpu_per_stream(None, Some(3.0), Duration::from_secs(10), 4), None);
    }
}
