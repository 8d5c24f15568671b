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
    },
    /// Drive the inbound-call webhook.
    Webhooks {
        /// Base URL requests are sent to.
        #[arg(long)]
        target: String,
        /// Base URL the requests are signed for (the server's public URL).
        #[arg(long)]
        public_url: String,
        #[arg(long, value_enum)]
        scenario: Scenario,
        #[arg(long, default_value = "20000")]
        requests: usize,
        #[arg(long, default_value = "64")]
        concurrency: usize,
    },
    /// Hold media streams open, 20 ms frames each way, and measure echo latency.
    Streams {
        #[arg(long)]
        target: String,
        #[arg(long)]
        public_url: String,
        #[arg(long, default_value = "200")]
        streams: usize,
        #[arg(long, default_value = "10")]
        seconds: u64,
        /// The server's process id, to read its CPU time.
        #[arg(long)]
        server_pid: Option<u32>,
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
}

fn incoming_form(call_sid: &str, to: &str) -> FormParams {
    let examples: serde_json::Value = serde_json::from_str(EXAMPLES).expect("examples parse");
    FormParams::from_pairs(examples["incoming_call"].as_array().unwrap().iter().map(|p| {
        let key = p[0].as_str().unwrap();
        let value = match key {
            "CallSid" => call_sid,
            "To" | "Called" => to,
            _ => p[1].as_str().unwrap(),
        };
        (key.to_owned(), value.to_owned())
    }))
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
    }
}

async fn seed(target: &str, admin_token: &str) {
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
    let route = serde_json::json!({"phone_number": NUMBER, "environment": "test"});
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

async fn webhooks(
    target: String,
    public_url: String,
    scenario: Scenario,
    n: usize,
    concurrency: usize,
) -> Report {
    let (requests, expect): (Vec<Signed>, u16) = match scenario {
        Scenario::New => (
            (0..n)
                .map(|_| sign(&public_url, &incoming_form(&new_call_sid(), NUMBER), AUTH_TOKEN))
                .collect(),
            200,
        ),
        Scenario::Retry => return retry(target, public_url, n, concurrency).await,
        Scenario::Forged => (
            (0..n)
                .map(|_| sign(&public_url, &incoming_form(&new_call_sid(), NUMBER), "forged"))
                .collect(),
            403,
        ),
        Scenario::Unknown => (
            (0..n)
                .map(|_| {
                    sign(
                        &public_url,
                        &incoming_form(&new_call_sid(), "+15550000000"),
                        "unsigned",
                    )
                })
                .collect(),
            200,
        ),
    };
    let (latencies, errors, elapsed) = drive(&target, Arc::new(requests), concurrency, expect).await;
    report(
        &format!("{scenario:?}").to_lowercase(),
        latencies,
        errors,
        elapsed,
        concurrency,
        None,
    )
}

async fn retry(target: String, public_url: String, n: usize, concurrency: usize) -> Report {
    let sids: Vec<String> = (0..n.clamp(1, 2000)).map(|_| new_call_sid()).collect();
    let first: Vec<Signed> = sids
        .iter()
        .map(|s| sign(&public_url, &incoming_form(s, NUMBER), AUTH_TOKEN))
        .collect();
    let (_, errors, _) = drive(&target, Arc::new(first), concurrency, 200).await;
    assert_eq!(errors, 0, "answering the calls to retry");
    let retries: Vec<Signed> = (0..n)
        .map(|i| {
            sign(
                &public_url,
                &incoming_form(&sids[i % sids.len()], NUMBER),
                AUTH_TOKEN,
            )
        })
        .collect();
    let (latencies, errors, elapsed) = drive(&target, Arc::new(retries), concurrency, 200).await;
    report("retry", latencies, errors, elapsed, concurrency, None)
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

async fn streams(
    target: String,
    public_url: String,
    n: usize,
    seconds: u64,
    server_pid: Option<u32>,
) -> Report {
    let http = client(64);
    let ws_base = target.replacen("http://", "ws://", 1);
    // Answer the calls first (as Twilio would), then open every stream.
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let sid = new_call_sid();
        let signed = sign(&public_url, &incoming_form(&sid, NUMBER), AUTH_TOKEN);
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
            .expect("stream TwiML")
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
        let start = serde_json::json!({"event": "start", "streamSid": stream_sid, "start": {"accountSid": ACCOUNT_SID, "callSid": sid, "tracks": ["inbound"], "customParameters": {}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}});
        socket
            .send(Message::text(
                r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
            ))
            .await
            .unwrap();
        socket.send(Message::text(start.to_string())).await.unwrap();
        sockets.push((socket, stream_sid, sid));
    }
    let cpu_before = server_pid.and_then(cpu_seconds);
    let started = Instant::now();
    let run_for = Duration::from_secs(seconds);
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|(socket, stream_sid, call_sid)| {
            tokio::spawn(async move {
                // Every 20 ms: send a frame, then read until its echo (matched by the sequence
                // number in its first 8 audio bytes) arrives.
                let mut socket = socket;
                let mut latencies = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                let mut seq = 0u64;
                let begin = Instant::now();
                'frames: while begin.elapsed() < run_for {
                    tick.tick().await;
                    seq += 1;
                    let mut audio = [0xffu8; 160];
                    audio[..8].copy_from_slice(&seq.to_le_bytes());
                    let frame = serde_json::json!({"event": "media", "streamSid": stream_sid, "media": {"track": "inbound", "chunk": seq.to_string(), "timestamp": (seq * 20).to_string(), "payload": STANDARD.encode(audio)}});
                    let sent = Instant::now();
                    if socket.send(Message::text(frame.to_string())).await.is_err() {
                        break;
                    }
                    loop {
                        let message = match tokio::time::timeout(Duration::from_secs(2), socket.next()).await {
                            Ok(Some(Ok(message))) => message,
                            _ => break 'frames,
                        };
                        let Message::Text(text) = message else { continue };
                        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                        let echoed = v["media"]["payload"].as_str().and_then(|p| STANDARD.decode(p).ok()).unwrap_or_default();
                        if echoed.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap())) == Some(seq) {
                            latencies.push(sent.elapsed().as_micros() as u64);
                            break;
                        }
                    }
                }
                let stop = serde_json::json!({"event": "stop", "streamSid": stream_sid, "stop": {"accountSid": ACCOUNT_SID, "callSid": call_sid}});
                let _ = socket.send(Message::text(stop.to_string())).await;
                while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(2), socket.next()).await {
                    if message.is_close() {
                        break;
                    }
                }
                (latencies, seq)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut missing = 0usize;
    for task in tasks {
        let (latencies, sent) = task.await.expect("stream task");
        missing += (sent as usize).saturating_sub(latencies.len());
        all.extend(latencies);
    }
    let elapsed = started.elapsed();
    let cpu = match (cpu_before, server_pid.and_then(cpu_seconds)) {
        (Some(before), Some(after)) => Some(100.0 * (after - before) / elapsed.as_secs_f64() / n as f64),
        _ => None,
    };
    report(
        &format!("streams ({n} x 20 ms frames)"),
        all,
        missing,
        elapsed,
        n,
        cpu,
    )
}

#[tokio::main]
async fn main() {
    let report = match Cli::parse().command {
        Command::Seed { target, admin_token } => {
            seed(&target, &admin_token).await;
            return;
        }
        Command::Webhooks {
            target,
            public_url,
            scenario,
            requests,
            concurrency,
        } => webhooks(target, public_url, scenario, requests, concurrency).await,
        Command::Streams {
            target,
            public_url,
            streams: n,
            seconds,
            server_pid,
        } => streams(target, public_url, n, seconds, server_pid).await,
    };
    println!("{}", serde_json::to_string(&report).expect("report serialises"));
}
