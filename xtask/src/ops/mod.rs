//! `cargo xtask ops`: checks of the operations pack in `deploy/`.
//!
//! 1. `promtool check rules` and `promtool test rules` on the alert rules and their unit tests;
//! 2. `systemd-analyze verify` and `systemd-analyze security` on the unit, through a copy whose
//!    `ExecStart` is the debug binary and whose `EnvironmentFile` is the example env file, and
//!    its stop timeout against the drain timeout;
//! 3. the live check: the debug binary serves `--demo` on a fresh SQLite file, places a call
//!    that falls back (drain mode) and one that streams, and every metric the alert rules and
//!    the dashboard name must be in its `/metrics`.
//!
//! A missing `promtool` or `systemd-analyze` fails the run under `CI=true`; elsewhere its step is
//! skipped with the package to install.
pub mod queries;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::{
    cargo, root, run,
    support::{free_port, get_body, request, wait_for_service, Killed},
};

const RULES: &str = "deploy/prometheus/alerts.yml";
const RULE_TESTS: &str = "alerts_test.yml";
const DASHBOARD: &str = "deploy/grafana/stateset-voice.json";
const UNIT: &str = "deploy/systemd/stateset-voice.service";
const ENV_EXAMPLE: &str = "deploy/systemd/stateset-voice.env.example";
/// Where the unit expects the binary.
const INSTALLED_BINARY: &str = "/usr/local/bin/stateset-voice";
/// Where the unit expects its settings.
const INSTALLED_ENV: &str = "/etc/stateset-voice/stateset-voice.env";
/// The highest `systemd-analyze security` exposure accepted, in tenths (2.0).
const MAX_EXPOSURE: &str = "20";
const ADMIN_TOKEN: &str = "ops-check-admin-token";
/// The demo route's number and account (`serve --demo`).
const DEMO_NUMBER: &str = "+15555551234";
const DEMO_ACCOUNT_SID: &str = "ACde000000000000000000000000000001";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether `command` is on the PATH. Missing: an error under CI, else `Ok(false)` after saying
/// what to install.
fn tool(command: &str, package: &str) -> Result<bool, String> {
    tool_in(command, package, in_ci())
}

fn tool_in(command: &str, package: &str, ci: bool) -> Result<bool, String> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Ok(true);
    }
    if ci {
        return Err(format!(
            "{command} is not installed: it comes in Debian's `{package}` package (.ci/run installs it)"
        ));
    }
    eprintln!(
        "==> SKIPPED the {command} checks: {command} is not installed; install Debian's `{package}` \
         package (`apt-get install {package}`) to run them"
    );
    Ok(false)
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Result<Self, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("stateset-voice-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn promtool() -> Result<(), String> {
    if !tool("promtool", "prometheus")? {
        return Ok(());
    }
    run(
        &format!("promtool check rules {RULES}"),
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(root().join(RULES)),
    )?;
    run(
        &format!("promtool test rules deploy/prometheus/{RULE_TESTS}"),
        Command::new("promtool")
            .args(["test", "rules", RULE_TESTS])
            .current_dir(root().join("deploy/prometheus")),
    )
}

/// The value of `key=` in a unit or env file (the last one wins, as in systemd).
fn setting<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
}

/// The unit's stop timeout must cover the drain: `VOICE_STREAM_DRAIN_TIMEOUT` of the example
/// env file plus a minute for the linger and the stages.
fn stop_timeout_covers_drain(unit: &str, env: &str) -> Result<(), String> {
    let seconds = |text: &str, key: &str, file: &str| -> Result<u64, String> {
        setting(text, key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{file}: no {key}= in whole seconds"))
    };
    let stop = seconds(unit, "TimeoutStopSec", UNIT)?;
    let drain = seconds(env, "VOICE_STREAM_DRAIN_TIMEOUT", ENV_EXAMPLE)?;
    if stop < drain + 60 {
        return Err(format!(
            "{UNIT}: TimeoutStopSec={stop} does not cover VOICE_STREAM_DRAIN_TIMEOUT={drain} plus a minute"
        ));
    }
    eprintln!("TimeoutStopSec={stop} covers VOICE_STREAM_DRAIN_TIMEOUT={drain} plus a minute");
    Ok(())
}

fn systemd(binary: &Path) -> Result<(), String> {
    let unit = read(&root().join(UNIT))?;
    let env = read(&root().join(ENV_EXAMPLE))?;
    stop_timeout_covers_drain(&unit, &env)?;
    if !tool("systemd-analyze", "systemd")? {
        return Ok(());
    }
    if !unit.contains(&format!("ExecStart={INSTALLED_BINARY} ")) || !unit.contains(INSTALLED_ENV) {
        return Err(format!(
            "{UNIT}: expected ExecStart={INSTALLED_BINARY} and {INSTALLED_ENV}"
        ));
    }
    // verify checks that ExecStart is executable: point it at the built binary.
    let scratch = Scratch::new("unit")?;
    let copy = scratch.0.join("stateset-voice.service");
    let substituted = unit
        .replace(INSTALLED_BINARY, &binary.display().to_string())
        .replace(INSTALLED_ENV, &root().join(ENV_EXAMPLE).display().to_string());
    std::fs::write(&copy, substituted).map_err(|e| format!("{}: {e}", copy.display()))?;

    eprintln!("==> systemd-analyze verify {UNIT}");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .map_err(|e| format!("systemd-analyze: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Unknown or malformed settings are only warnings ("..., ignoring."): any line about the
    // unit fails the check.
    let about_unit: Vec<&str> = text.lines().filter(|l| l.contains("stateset-voice")).collect();
    if !out.status.success() || !about_unit.is_empty() {
        return Err(format!("systemd-analyze verify {UNIT} ({}):\n{text}", out.status));
    }

    eprintln!("==> systemd-analyze security --offline=yes {UNIT}");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(format!("--threshold={MAX_EXPOSURE}"))
        .arg(&copy)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("systemd-analyze: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let level = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("no exposure level reported");
    eprintln!("{}", level.trim_start_matches(['→', ' ']));
    if !out.status.success() {
        return Err(format!(
            "{UNIT}: exposure above {MAX_EXPOSURE} tenths ({}):\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Half a second of silence, 8 kHz mono 16-bit: the caller's audio of the test calls.
fn silence(path: &Path) -> Result<(), String> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut wav = hound::WavWriter::create(path, spec).map_err(|e| format!("{}: {e}", path.display()))?;
    for _ in 0..4000 {
        wav.write_sample(0i16).map_err(|e| e.to_string())?;
    }
    wav.finalize().map_err(|e| e.to_string())
}

/// The demo tenant's auth token, from the `call` command `serve --demo` prints on stderr.
fn demo_token(log: &str) -> Option<&str> {
    let rest = &log[log.find("--token '")? + "--token '".len()..];
    rest.split('\'').next()
}

/// Serves `--demo`, places a fallback call and a streamed one, and returns `/metrics`.
fn scrape_after_calls(binary: &Path) -> Result<String, String> {
    let scratch = Scratch::new("ops")?;
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let log = scratch.0.join("server.log");
    let log_file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut cmd = Command::new(binary);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("VOICE_") {
            cmd.env_remove(name);
        }
    }
    let child = cmd
        .args(["serve", "--demo"])
        .env(
            "VOICE_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", scratch.0.join("voice.db").display()),
        )
        .env("VOICE_BIND", format!("127.0.0.1:{port}"))
        .env("VOICE_PUBLIC_URL", &base)
        .env("VOICE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("VOICE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("starting the server: {e}"))?;
    let server = wait_for_service(Killed(child), port, &log)?;
    let printed = read(&log)?;
    let token =
        demo_token(&printed).ok_or_else(|| format!("serve --demo printed no call command:\n{printed}"))?;
    let audio = scratch.0.join("silence.wav");
    silence(&audio)?;

    let auth = format!("Bearer {ADMIN_TOKEN}");
    let drain = |on: bool| -> Result<(), String> {
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ];
        match request(
            port,
            "PUT",
            "/api/v1/runtime/drain",
            &headers,
            &format!("{{\"draining\":{on}}}"),
        ) {
            Some((200, _)) => Ok(()),
            other => Err(format!("PUT /api/v1/runtime/drain {on}: {other:?}")),
        }
    };
    let call = |what: &str| {
        run(
            &format!("a {what} call to the demo number"),
            Command::new(binary)
                .args([
                    "call",
                    "--url",
                    &base,
                    "--account-sid",
                    DEMO_ACCOUNT_SID,
                    "--to",
                    DEMO_NUMBER,
                ])
                .arg("--audio")
                .arg(&audio)
                .args(["--tail", "0"])
                .env("VOICE_CALL_AUTH_TOKEN", token)
                .stdout(Stdio::null()),
        )
    };
    drain(true)?;
    call("drained (fallback)")?;
    drain(false)?;
    call("streamed")?;
    let metrics = get_body(port, "/metrics").ok_or("GET /metrics did not answer 200")?;
    drop(server);
    Ok(metrics)
}

/// Every metric the alert rules and the dashboard name must be exported by the running service.
fn metrics_named_are_exported(binary: &Path) -> Result<(), String> {
    let alerts = queries::names_by_place(&queries::alert_expressions(&read(&root().join(RULES))?)?)?;
    let panels = queries::names_by_place(&queries::dashboard_expressions(&read(&root().join(DASHBOARD))?)?)?;
    let exposition = scrape_after_calls(binary)?;
    let exported = queries::exported_names(&exposition);
    let wanted: Vec<_> = alerts.iter().chain(&panels).cloned().collect();
    let missing = queries::missing(&wanted, &exported);
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|(place, name)| format!("  {name} ({place})"))
            .collect();
        return Err(format!(
            "metrics named in {RULES} or {DASHBOARD} that the service does not export:\n{}",
            list.join("\n")
        ));
    }
    let distinct: BTreeSet<&String> = wanted.iter().flat_map(|(_, names)| names).collect();
    eprintln!(
        "{} metrics named by {} alert rules and {} dashboard queries, all exported ({} series names scraped)",
        distinct.len(),
        alerts.len(),
        panels.len(),
        exported.len()
    );
    Ok(())
}

/// Runs every check of the operations pack.
pub fn ops() -> Result<(), String> {
    promtool()?;
    run(
        "build the server",
        cargo().args(["build", "--locked", "--bin", "stateset-voice"]),
    )?;
    let binary = root().join("target/debug/stateset-voice");
    systemd(&binary)?;
    metrics_named_are_exported(&binary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pack_parses_and_names_metrics() {
        let alerts = queries::alert_expressions(&read(&root().join(RULES)).unwrap()).unwrap();
        assert_eq!(alerts.len(), 10);
        let names = queries::names_by_place(&alerts).unwrap();
        assert!(names.iter().any(|(_, n)| n.contains("voice_database_available")));
        let dashboard = read(&root().join(DASHBOARD)).unwrap();
        let panels = queries::names_by_place(&queries::dashboard_expressions(&dashboard).unwrap()).unwrap();
        assert!(panels
            .iter()
            .any(|(p, n)| p == "variable \"job\"" && n.contains("voice_calls_total")));
        assert!(panels
            .iter()
            .any(|(_, n)| n.contains("voice_http_request_duration_seconds_bucket")));
    }

    #[test]
    fn the_unit_stops_after_the_drain() {
        let unit = read(&root().join(UNIT)).unwrap();
        let env = read(&root().join(ENV_EXAMPLE)).unwrap();
        stop_timeout_covers_drain(&unit, &env).unwrap();
        let short = unit.replace("TimeoutStopSec=360", "TimeoutStopSec=300");
        assert!(stop_timeout_covers_drain(&short, &env).is_err());
        assert_eq!(
            setting("A=1\nTimeoutStopSec=5\nTimeoutStopSec=7\n", "TimeoutStopSec"),
            Some("7")
        );
    }

    #[test]
    fn a_missing_tool_fails_under_ci_and_is_skipped_elsewhere() {
        let e = tool_in("stateset-voice-no-such-tool", "some-package", true).unwrap_err();
        assert!(e.contains("`some-package` package"), "{e}");
        assert_eq!(
            tool_in("stateset-voice-no-such-tool", "some-package", false),
            Ok(false)
        );
        assert_eq!(tool_in("sh", "dash", true), Ok(true));
    }

    #[test]
    fn the_demo_token_is_read_from_the_printed_command() {
        let log =
            "...\ncargo run --release -- call --url 'http://x' \\\n  --token 'abc123' --account-sid AC...";
        assert_eq!(demo_token(log), Some("abc123"));
        assert_eq!(demo_token("no command"), None);
    }
}
