//! `cargo xtask bench [--postgres] [--quick]`: end-to-end load against the release binary and a
//! reference peer (Twilio's Node helper + express), the concurrent-stream benchmarks (built-in
//! echo agent, then a remote agent over WebSocket), and the criterion micro-benchmarks; results
//! go to `bench/results.md`.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::Value;

use crate::{
    cargo, root, run,
    support::{free_port, wait_for_port, Killed},
};

const ADMIN_TOKEN: &str = "bench-admin-token";
/// The auth token loadgen signs with (see loadgen).
const AUTH_TOKEN: &str = "bench-auth-token-0123456789abcdef";
/// The number routed to the remote agent (the echo route's is loadgen's default).
const AGENT_NUMBER: &str = "+15555551235";

fn loadgen(args: &[&str]) -> Result<Value, String> {
    let out = Command::new(root().join("target/release/loadgen"))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("loadgen: {e}"))?;
    if !out.status.success() {
        return Err(format!("loadgen {args:?} failed"));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text.trim()).map_err(|e| format!("loadgen output: {e}: {text}"))
}

/// Runs `loadgen streams` and fails when any frame went without its echo or the server closed
/// a stream early.
fn stream_scenario(args: &[&str], what: &str) -> Result<Value, String> {
    let r = loadgen(args)?;
    let lost = r["errors"].as_u64().unwrap_or(u64::MAX);
    let cut_short = r["streams_cut_short"].as_u64().unwrap_or(u64::MAX);
    if lost != 0 || cut_short != 0 {
        return Err(format!(
            "{what}: {lost} of {} frames lost (no echo), {cut_short} streams closed early: {r}",
            r["frames_sent"]
        ));
    }
    Ok(r)
}

/// Raises the soft open-file limit (inherited by the server, the agent and loadgen) and fails
/// when it cannot reach `needed`.
fn raise_open_files(needed: libc::rlim_t) -> Result<(), String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Ok(());
        }
        if limit.rlim_cur < needed && limit.rlim_max > limit.rlim_cur {
            limit.rlim_cur = limit.rlim_max.min(65_536);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            }
        }
    }
    if limit.rlim_cur < needed {
        return Err(format!(
            "the open-file limit is {} (hard {}); the stream benchmark needs {needed}: raise `ulimit -n`",
            limit.rlim_cur, limit.rlim_max
        ));
    }
    Ok(())
}

fn start_server(port: u16, database_url: &str) -> Result<Killed, String> {
    let child = Command::new(root().join("target/release/stateset-voice"))
        .arg("serve")
        .env("VOICE_DATABASE_URL", database_url)
        .env("VOICE_BIND", format!("127.0.0.1:{port}"))
        .env("VOICE_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("VOICE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env(
            "VOICE_TOKEN_SECRET",
            "bench-token-secret-0123456789abcdef0123456789",
        )
        .env("VOICE_MAX_STREAMS", "10000")
        .env("VOICE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the server: {e}"))?;
    let child = Killed(child);
    wait_for_port(port, "the server")?;
    Ok(child)
}

/// Installs the reference peer (twilio + express from the npm registry) under target/.
fn prepare_peer() -> Result<PathBuf, String> {
    let dir = root().join("target/bench-peer");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("peer.js"), PEER_JS).map_err(|e| e.to_string())?;
    if !dir.join("node_modules/twilio").exists() || !dir.join("node_modules/express").exists() {
        std::fs::write(
            dir.join("package.json"),
            r#"{"name":"voice-peer","private":true}"#,
        )
        .map_err(|e| e.to_string())?;
        run(
            "npm install twilio express (reference peer)",
            Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "twilio@5",
                    "express@4",
                ])
                .current_dir(&dir),
        )?;
    }
    Ok(dir)
}

/// The webhook a user would write with Twilio's Node helper: validate, answer <Connect><Stream>.
const PEER_JS: &str = r#"
const express = require('express');
const twilio = require('twilio');
const [port, authToken] = process.argv.slice(2);
const app = express();
app.use(express.urlencoded({ extended: false }));
app.post('/api/v1/incoming-call', (req, res) => {
  const url = `http://127.0.0.1:${port}${req.originalUrl}`;
  if (!twilio.validateRequest(authToken, req.header('X-Twilio-Signature') || '', url, req.body)) {
    return res.status(403).type('text/plain').send('invalid signature');
  }
  const response = new twilio.twiml.VoiceResponse();
  const connect = response.connect({ action: `http://127.0.0.1:${port}/api/v1/stream-ended` });
  const stream = connect.stream({ url: `ws://127.0.0.1:${port}/media-stream` });
  stream.parameter({ name: 'CallSid', value: req.body.CallSid });
  res.type('text/xml').send(response.toString());
});
app.listen(Number(port), '127.0.0.1');
"#;

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let version = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    format!(
        "{cores} cores, {cpu}; {}; node {}",
        version("rustc", "--version"),
        version("node", "--version")
    )
}

fn row(out: &mut String, name: &str, r: &Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    let _ = writeln!(
        out,
        "| {name} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
        r["requests"],
        r["concurrency"],
        f("per_second"),
        f("p50_ms"),
        f("p90_ms"),
        f("p99_ms"),
        f("max_ms"),
        r["errors"]
    );
}

fn stream_row(out: &mut String, name: &str, seconds: &str, r: &Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let agent_cpu = match r["agent_cpu_per_stream_percent"].as_f64() {
        Some(cpu) => format!("{cpu:.3} %"),
        None => "-".to_owned(),
    };
    let _ = writeln!(
        out,
        "| {name} | {} | {seconds} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} % | {agent_cpu} |",
        r["concurrency"],
        r["frames_sent"],
        r["errors"],
        f("p50_ms"),
        f("p90_ms"),
        f("p99_ms"),
        f("max_ms"),
        f("cpu_per_stream_percent"),
    );
}

fn criterion_means() -> Vec<(String, f64)> {
    let dir = root().join("target/criterion");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let estimates = entry.path().join("new/estimates.json");
        if let Ok(text) = std::fs::read_to_string(&estimates) {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                let ns = v["mean"]["point_estimate"].as_f64().unwrap_or(0.0);
                out.push((entry.file_name().to_string_lossy().into_owned(), ns));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn database(postgres: bool, dir: &Path) -> Result<(String, Option<String>), String> {
    if !postgres {
        let _ = std::fs::remove_file(dir.join("bench.db"));
        return Ok((
            format!("sqlite://{}?mode=rwc", dir.join("bench.db").display()),
            None,
        ));
    }
    let name = format!("voice_bench_{}", std::process::id());
    run(
        "create the benchmark database",
        Command::new("psql").args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-q",
            "-c",
            &format!("create database {name}"),
            "postgres",
        ]),
    )?;
    Ok((format!("postgres://postgres@127.0.0.1:5432/{name}"), Some(name)))
}

/// Runs the benchmarks.
pub fn bench(postgres: bool, quick: bool) -> Result<(), String> {
    run(
        "build release binaries",
        cargo().args([
            "build",
            "--release",
            "--locked",
            "--package",
            "stateset-voice",
            "--package",
            "loadgen",
        ]),
    )?;
    let work = root().join("target/bench");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let (database_url, pg_name) = database(postgres, &work)?;
    let n = if quick { "3000" } else { "20000" };
    let agent_stream_count = if quick { "50" } else { "500" };
    // The server holds two sockets per agent stream (Twilio's and the agent's).
    raise_open_files(2 * agent_stream_count.parse::<libc::rlim_t>().unwrap_or(0) + 512)?;
    let port = free_port()?;
    let server = start_server(port, &database_url)?;
    let target = format!("http://127.0.0.1:{port}");
    loadgen(&["seed", "--target", &target, "--admin-token", ADMIN_TOKEN])?;
    let mut results = Vec::new();
    for scenario in ["new", "retry", "forged", "unknown"] {
        eprintln!("==> scenario {scenario}");
        let r = loadgen(&[
            "webhooks",
            "--target",
            &target,
            "--public-url",
            &target,
            "--scenario",
            scenario,
            "--requests",
            n,
            "--concurrency",
            "64",
        ])?;
        results.push((scenario, r));
    }
    eprintln!("==> streams (echo agent)");
    let pid = server.0.id().to_string();
    let (stream_count, seconds) = if quick { ("50", "3") } else { ("200", "10") };
    let streams = stream_scenario(
        &[
            "streams",
            "--target",
            &target,
            "--public-url",
            &target,
            "--streams",
            stream_count,
            "--seconds",
            seconds,
            "--server-pid",
            &pid,
        ],
        "streams through the echo agent",
    )?;

    eprintln!("==> streams (remote agent)");
    let agent_port = free_port()?;
    let agent = Command::new(root().join("target/release/loadgen"))
        .args(["agent", "--bind", &format!("127.0.0.1:{agent_port}")])
        .spawn()
        .map_err(|e| format!("starting the agent: {e}"))?;
    let agent = Killed(agent);
    wait_for_port(agent_port, "the agent")?;
    let agent_url = format!("ws://127.0.0.1:{agent_port}/");
    loadgen(&[
        "seed",
        "--target",
        &target,
        "--admin-token",
        ADMIN_TOKEN,
        "--number",
        AGENT_NUMBER,
        "--agent-url",
        &agent_url,
    ])?;
    let agent_pid = agent.0.id().to_string();
    let agent_streams = stream_scenario(
        &[
            "streams",
            "--target",
            &target,
            "--public-url",
            &target,
            "--to",
            AGENT_NUMBER,
            "--streams",
            agent_stream_count,
            "--seconds",
            seconds,
            "--server-pid",
            &pid,
            "--agent-pid",
            &agent_pid,
        ],
        "streams through the remote agent",
    )?;
    drop(agent);
    drop(server);
    if let Some(name) = pg_name {
        let _ = run(
            "drop the benchmark database",
            Command::new("psql").args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-q",
                "-c",
                &format!("drop database {name}"),
                "postgres",
            ]),
        );
    }

    eprintln!("==> reference peer");
    let peer = match prepare_peer() {
        Ok(dir) => {
            let peer_port = free_port()?;
            let child = Command::new("node")
                .args(["peer.js", &peer_port.to_string(), AUTH_TOKEN])
                .current_dir(&dir)
                .spawn()
                .map_err(|e| format!("starting node: {e}"))?;
            let child = Killed(child);
            wait_for_port(peer_port, "the reference peer")?;
            let peer_url = format!("http://127.0.0.1:{peer_port}");
            let r = loadgen(&[
                "webhooks",
                "--target",
                &peer_url,
                "--public-url",
                &peer_url,
                "--scenario",
                "new",
                "--requests",
                n,
                "--concurrency",
                "64",
            ])?;
            drop(child);
            Some(r)
        }
        Err(e) => {
            eprintln!("reference peer unavailable: {e}");
            None
        }
    };

    eprintln!("==> micro-benchmarks");
    let mut criterion = cargo();
    criterion.args([
        "bench",
        "--locked",
        "--package",
        "stateset-voice",
        "--bench",
        "hot_paths",
        "--",
    ]);
    if quick {
        criterion.args(["--warm-up-time", "1", "--measurement-time", "2"]);
    }
    run("criterion", &mut criterion)?;

    let mut md = String::from("# Benchmark results\n\n");
    let _ = writeln!(md, "Machine: {}. Store: {}. Generated by `cargo xtask bench{}{}`; every figure below comes from one run.\n", machine(), if postgres { "PostgreSQL" } else { "SQLite" }, if postgres { " --postgres" } else { "" }, if quick { " --quick" } else { "" });
    md.push_str("Load generator and server share the machine (loopback HTTP, keep-alive connections).\n\n");
    md.push_str("| scenario | requests | concurrency | per second | p50 ms | p90 ms | p99 ms | max ms | errors |\n|---|---|---|---|---|---|---|---|---|\n");
    for (name, r) in &results {
        let label = match *name {
            "new" => "new calls (validate, route, mint, store, TwiML)",
            "retry" => "provider retries of answered calls",
            "forged" => "forged signatures (403)",
            _ => "unknown routes (platform message)",
        };
        row(&mut md, label, r);
    }
    if let Some(p) = &peer {
        row(
            &mut md,
            "reference peer: twilio Node helper + express, new calls, no storage",
            p,
        );
        let ours = results[0].1["per_second"].as_f64().unwrap_or(0.0);
        let theirs = p["per_second"].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            md,
            "\nNew calls, ours / peer throughput: **{:.2}x** (p99 ours {:.2} ms, peer {:.2} ms).",
            ours / theirs,
            results[0].1["p99_ms"].as_f64().unwrap_or(0.0),
            p["p99_ms"].as_f64().unwrap_or(0.0)
        );
    }
    let _ = writeln!(
        md,
        "\nMedia streams, with the built-in echo agent and through a remote agent (`loadgen agent`: speaks Twilio Media Streams over a loopback WebSocket and echoes every frame). One 20 ms frame each way per stream, the streams' clocks spread over the frame interval; round trip is from a frame leaving the load generator to its echo arriving back. Server CPU is the service process's user + system time from the first frame to the last echo per second of audio, in % of one core per stream (work a saturated machine defers is still counted); the remote agent's process is measured the same way, separately. A lost frame (no echo within 30 s of the last frame) fails the benchmark.\n"
    );
    md.push_str("| media streams | streams | seconds | frames | frames lost | p50 ms | p90 ms | p99 ms | max ms | server CPU per stream | agent CPU per stream |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    stream_row(&mut md, "built-in echo agent", seconds, &streams);
    stream_row(
        &mut md,
        "through a remote agent (`loadgen agent`, WebSocket)",
        seconds,
        &agent_streams,
    );
    md.push_str("\nMicro-benchmarks (criterion, mean):\n\n| benchmark | mean |\n|---|---|\n");
    for (name, ns) in criterion_means() {
        let _ = writeln!(md, "| {name} | {:.2} µs |", ns / 1000.0);
    }
    let out = root().join("bench/results.md");
    std::fs::create_dir_all(out.parent().unwrap()).map_err(|e| e.to_string())?;
    std::fs::write(&out, &md).map_err(|e| e.to_string())?;
    println!("{md}");
    eprintln!("wrote {}", out.display());
    Ok(())
}
