//! `cargo xtask bench [--postgres] [--quick] [--prefill N] [--rounds N] [--against BINARY]`: the service and a
//! reference peer (Twilio's Node helper + express) side by side on one machine, driven by wrk
//! in interleaved rounds (ours, peer, ours, peer, ...) on fresh CallSids, with each server's
//! own CPU time per request read from `/proc`; then the concurrent-stream benchmarks and the
//! criterion micro-benchmarks. Medians and ratios go to `bench/results.md`.
//!
//! With `--prefill N`, a second instance on a database already holding N calls runs the same
//! new-call and admin-list rounds, interleaved with the first, to show the cost is flat with
//! size. With `--against BINARY`, only this build and another build of the service (another
//! commit's) run, interleaved, to measure one change (see `against`).
mod against;
mod purge;
mod report;
mod store;
mod wrk;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::Value;

use crate::{
    cargo, root, run,
    support::{free_port, wait_for_port, Killed},
};
use report::{Measured, Scenario};
use store::Store;
use wrk::Load;

const ADMIN_TOKEN: &str = "bench-admin-token";
/// The auth token loadgen signs with (see loadgen).
const AUTH_TOKEN: &str = "bench-auth-token-0123456789abcdef";
/// The number routed to the remote agent (the echo route's is loadgen's default).
const AGENT_NUMBER: &str = "+15555551235";
/// New calls signed per second of a run: above what either server answers on these machines,
/// so no run replays a CallSid (a run that does fails with `wrapped`).
const NEW_CALLS_PER_SECOND: u32 = 30_000;
/// Requests signed for the scenarios whose repeats cost the same (retries, forged, unknown).
const REPEATABLE: u32 = 20_000;

/// What `cargo xtask bench` was asked for.
pub struct Options {
    pub postgres: bool,
    pub quick: bool,
    pub prefill: Option<u64>,
    /// Only the purge benchmark, on stores prefilled with this many calls past the window.
    pub purge: Option<u64>,
    /// Only this build against another build of the service, the binary at this path.
    pub against: Option<PathBuf>,
    pub rounds: usize,
}

impl Options {
    /// Parses the arguments after `bench`.
    pub fn parse(args: &[&str]) -> Result<Self, String> {
        let mut options = Options {
            postgres: false,
            quick: false,
            prefill: None,
            purge: None,
            against: None,
            rounds: 3,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut number = |what: &str| {
                args.next()
                    .and_then(|n| n.replace('_', "").parse::<u64>().ok())
                    .ok_or_else(|| format!("{what} takes a number"))
            };
            match *arg {
                "--postgres" => options.postgres = true,
                "--quick" => options.quick = true,
                "--prefill" => options.prefill = Some(number("--prefill")?),
                "--purge" => options.purge = Some(number("--purge")?),
                "--rounds" => options.rounds = number("--rounds")?.max(1) as usize,
                "--against" => {
                    let binary = args
                        .next()
                        .ok_or("--against takes the path of a stateset-voice binary")?;
                    options.against = Some(PathBuf::from(binary));
                }
                other => return Err(format!("bench: unknown argument {other}")),
            }
        }
        Ok(options)
    }

    /// Streams held open through the remote agent.
    fn agent_streams(&self) -> u32 {
        if self.quick {
            50
        } else {
            500
        }
    }

    fn seconds(&self) -> u32 {
        if self.quick {
            2
        } else {
            5
        }
    }
}

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

/// A server under load: its process, where it listens, and its store.
struct Server {
    process: Killed,
    base: String,
    store: Option<Store>,
}

impl Server {
    fn pid(&self) -> u32 {
        self.process.0.id()
    }

    /// The service on `store`, seeded with the benchmark tenant and route.
    fn service(store: Store) -> Result<Self, String> {
        Self::service_with(store, &[])
    }

    /// [`Server::service`] with more `VOICE_*` settings.
    fn service_with(store: Store, settings: &[(&str, &str)]) -> Result<Self, String> {
        Self::service_of(&root().join("target/release/stateset-voice"), store, settings)
    }

    /// [`Server::service_with`] from the service's binary at `binary`.
    fn service_of(binary: &Path, store: Store, settings: &[(&str, &str)]) -> Result<Self, String> {
        let port = free_port()?;
        let child = Command::new(binary)
            .arg("serve")
            .envs(settings.iter().copied())
            .env("VOICE_DATABASE_URL", store.url())
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
        let process = Killed(child);
        wait_for_port(port, "the server")?;
        let base = format!("http://127.0.0.1:{port}");
        loadgen(&["seed", "--target", &base, "--admin-token", ADMIN_TOKEN])?;
        Ok(Self {
            process,
            base,
            store: Some(store),
        })
    }

    /// The reference peer: the webhook a user would write with Twilio's Node helper.
    fn peer() -> Result<Self, String> {
        let dir = prepare_peer()?;
        let port = free_port()?;
        let child = Command::new("node")
            .args(["peer.js", &port.to_string(), AUTH_TOKEN])
            .current_dir(&dir)
            .spawn()
            .map_err(|e| format!("starting node: {e}"))?;
        let process = Killed(child);
        wait_for_port(port, "the reference peer")?;
        Ok(Self {
            process,
            base: format!("http://127.0.0.1:{port}"),
            store: None,
        })
    }

    /// Pre-signs `n` requests of `scenario` for this server into `file`.
    fn sign(&self, scenario: &str, n: u32, file: &Path) -> Result<(), String> {
        let n = n.to_string();
        let file_arg = file.display().to_string();
        let prime = file.with_extension("prime");
        let prime_arg = prime.display().to_string();
        let mut args = vec![
            "sign",
            "--public-url",
            &self.base,
            "--scenario",
            scenario,
            "--requests",
            &n,
            "--out",
            &file_arg,
        ];
        if scenario == "retry" {
            args.extend(["--prime", &prime_arg]);
        }
        loadgen(&args)?;
        if scenario == "retry" {
            let r = loadgen(&["send", "--target", &self.base, "--file", &prime_arg])?;
            if r["errors"].as_u64() != Some(0) {
                return Err(format!("answering the calls to retry: {r}"));
            }
        }
        Ok(())
    }

    /// One wrk run of `load`; fails on any unexpected answer.
    fn measure(&self, label: &str, load: Load<'_>, seconds: u32, expect: u16) -> Result<wrk::Run, String> {
        let run = wrk::run(&self.base, load, seconds, self.pid(), expect)?;
        eprintln!(
            "    {label}: {:.0}/s, p99 {:.2} ms, {:.1} µs CPU per request, {} errors",
            run.per_second, run.p99_ms, run.cpu_us, run.errors
        );
        if run.errors > 0 {
            return Err(format!(
                "{label}: {} of {} requests failed",
                run.errors, run.requests
            ));
        }
        Ok(run)
    }

    /// One round of fresh new calls: signed for this run only, so none is a retry.
    fn new_calls(&self, label: &str, work: &Path, seconds: u32) -> Result<wrk::Run, String> {
        let file = work.join("new.txt");
        self.sign("new", NEW_CALLS_PER_SECOND * seconds, &file)?;
        let run = self.measure(label, Load::Signed(&file), seconds, 200)?;
        let _ = std::fs::remove_file(&file);
        if run.wrapped > 0 {
            return Err(format!(
                "{label}: the run sent more than the {} new calls signed for it; raise NEW_CALLS_PER_SECOND",
                NEW_CALLS_PER_SECOND * seconds
            ));
        }
        Ok(run)
    }
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

/// Installs a command from Debian's packages when it is missing.
fn ensure_tool(command: &str, package: &str) -> Result<(), String> {
    if Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Ok(());
    }
    run(
        &format!("apt-get install {package}"),
        Command::new("apt-get")
            .args(["install", "-y", "-qq", package])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
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

/// Runs the benchmarks.
pub fn bench(options: &Options) -> Result<(), String> {
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
    ensure_tool("wrk", "wrk")?;
    ensure_tool("sqlite3", "sqlite3")?;
    if let Some(calls) = options.purge {
        return purge::bench(options, calls);
    }
    if let Some(binary) = &options.against {
        return against::bench(options, binary);
    }
    let work = root().join("target/bench");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let seconds = options.seconds();
    // The server holds two sockets per agent stream (Twilio's and the agent's).
    raise_open_files(2 * libc::rlim_t::from(options.agent_streams()) + 512)?;

    let ours = Server::service(Store::create(options.postgres, &work, "bench")?)?;
    let peer = Server::peer()?;
    // Beside a PostgreSQL run, the same service on SQLite: the two stores in one run.
    let sqlite = match options.postgres {
        true => Some(Server::service(Store::create(false, &work, "sqlite")?)?),
        false => None,
    };
    let prefilled = match options.prefill {
        Some(calls) => Some(prefilled_server(options.postgres, &work, calls)?),
        None => None,
    };
    let stored_before = ours.store.as_ref().map(Store::size).transpose()?;

    for scenario in ["forged", "unknown"] {
        ours.sign(scenario, REPEATABLE, &work.join(format!("{scenario}.txt")))?;
    }
    let list_path = "/api/v1/calls?limit=50";
    let events_path = "/api/v1/events?limit=50";
    let mut measured = Measured::default();
    for round in 1..=options.rounds {
        eprintln!("==> round {round} of {}", options.rounds);
        let mut record = |scenario: Scenario, run: Result<wrk::Run, String>| -> Result<(), String> {
            measured.push(scenario, run?);
            Ok(())
        };
        record(Scenario::NewCalls, ours.new_calls("new calls", &work, seconds))?;
        record(
            Scenario::PeerNewCalls,
            peer.new_calls("peer, new calls", &work, seconds),
        )?;
        if let Some(server) = &sqlite {
            record(
                Scenario::SqliteNewCalls,
                server.new_calls("new calls, SQLite", &work, seconds),
            )?;
        }
        if let Some((server, _)) = &prefilled {
            record(
                Scenario::PrefilledNewCalls,
                server.new_calls("new calls, prefilled", &work, seconds),
            )?;
        }
        // Retries of calls answered in this round: Twilio retries within seconds, while its
        // stream token (60 s) is still valid, so a round must not retry an older round's calls.
        ours.sign("retry", REPEATABLE, &work.join("retry.txt"))?;
        for (scenario, file, expect) in [
            (Scenario::Retries, "retry.txt", 200),
            (Scenario::Forged, "forged.txt", 403),
            (Scenario::Unknown, "unknown.txt", 200),
        ] {
            let file = work.join(file);
            record(
                scenario,
                ours.measure(scenario.label(), Load::Signed(&file), seconds, expect),
            )?;
        }
        if let Some((server, _)) = &prefilled {
            for (empty, full, path) in [
                (Scenario::ListCalls, Scenario::PrefilledListCalls, list_path),
                (Scenario::ListEvents, Scenario::PrefilledListEvents, events_path),
            ] {
                let load = || Load::Get {
                    path,
                    token: ADMIN_TOKEN,
                };
                record(empty, ours.measure(empty.label(), load(), seconds, 200))?;
                record(full, server.measure(full.label(), load(), seconds, 200))?;
            }
        }
    }
    drop(peer);
    drop(sqlite);
    let stored_after = ours.store.as_ref().map(Store::size).transpose()?;
    let storage = match (&prefilled, stored_before, stored_after) {
        (Some((_, per_call)), _, _) => Some(per_call.clone()),
        (None, Some(before), Some(after)) => Some(before.per_call_until(&after, "the new calls of this run")),
        _ => None,
    };
    drop(prefilled);

    let streams = stream_benchmarks(&ours, options)?;
    drop(ours);

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
    if options.quick {
        criterion.args(["--warm-up-time", "1", "--measurement-time", "2"]);
    }
    run("criterion", &mut criterion)?;

    let md = report::markdown(&report::Inputs {
        machine: machine(),
        options,
        seconds,
        measured: &measured,
        storage,
        streams: &streams,
        criterion: criterion_means(),
        budget: std::fs::read_to_string(root().join("bench/budget.md")).ok(),
    });
    let out = root().join(if options.postgres {
        "bench/results-postgres.md"
    } else {
        "bench/results.md"
    });
    std::fs::write(&out, &md).map_err(|e| e.to_string())?;
    println!("{md}");
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// Has `server` answer one new call, the template a prefill clones.
fn answer_template_call(server: &Server, work: &Path) -> Result<(), String> {
    let template = work.join("template.txt");
    server.sign("new", 1, &template)?;
    let sent = loadgen(&[
        "send",
        "--target",
        &server.base,
        "--file",
        &template.display().to_string(),
    ])?;
    if sent["errors"].as_u64() != Some(0) {
        return Err(format!("answering the template call: {sent}"));
    }
    Ok(())
}

/// A second service on a store that already holds `calls` calls, cloned from one real call
/// it answered; with the bytes each stored call takes.
fn prefilled_server(postgres: bool, work: &Path, calls: u64) -> Result<(Server, store::PerCall), String> {
    let server = Server::service(Store::create(postgres, work, "prefilled")?)?;
    answer_template_call(&server, work)?;
    let store = server.store.as_ref().expect("the service has a store");
    let before = store.size()?;
    eprintln!("==> prefill {calls} calls");
    store.prefill(calls)?;
    let after = store.size()?;
    let per_call = before.per_call_until(&after, "the prefilled calls");
    Ok((server, per_call))
}

/// The concurrent-stream benchmarks on `server`: the built-in echo agent, then a remote one.
fn stream_benchmarks(server: &Server, options: &Options) -> Result<report::Streams, String> {
    eprintln!("==> streams (echo agent)");
    let pid = server.pid().to_string();
    let target = &server.base;
    let (stream_count, seconds) = if options.quick { ("50", "3") } else { ("200", "10") };
    let agent_stream_count = options.agent_streams().to_string();
    let echo = stream_scenario(
        &[
            "streams",
            "--target",
            target,
            "--public-url",
            target,
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
        target,
        "--admin-token",
        ADMIN_TOKEN,
        "--number",
        AGENT_NUMBER,
        "--agent-url",
        &agent_url,
    ])?;
    let agent_pid = agent.0.id().to_string();
    let remote = stream_scenario(
        &[
            "streams",
            "--target",
            target,
            "--public-url",
            target,
            "--to",
            AGENT_NUMBER,
            "--streams",
            &agent_stream_count,
            "--seconds",
            seconds,
            "--server-pid",
            &pid,
            "--agent-pid",
            &agent_pid,
        ],
        "streams through the remote agent",
    )?;
    Ok(report::Streams {
        seconds: seconds.to_owned(),
        echo,
        remote,
    })
}

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
