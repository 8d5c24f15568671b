//! `cargo xtask schemathesis`: property-based tests of the served OpenAPI document with
//! Schemathesis (installed from PyPI into `target/schemathesis-venv`), against the debug binary
//! on a fresh SQLite database with the demo tenant and route.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use serde_json::Value;

use crate::{
    cargo, root, run,
    support::{free_port, python_venv, wait_for_service, Killed},
};

/// The Schemathesis release this project is tested with.
const VERSION: &str = "4.32.5";
const ADMIN_TOKEN: &str = "schemathesis-admin-token";
/// Fixed, so a failure reproduces with the same inputs.
const SEED: &str = "20240601";
/// Test cases per operation and phase; keeps the run near half a minute on 2 cores.
const MAX_EXAMPLES: &str = "100";
/// Every check Schemathesis has, in all phases (the stateful one included): the spec declares
/// each constraint the service enforces (`additionalProperties: false` on JSON bodies, lengths
/// and patterns, `Allow` on 405), so schema-valid requests are accepted and invalid ones refused.
const CHECKS: &[&str] = &[
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "missing_required_header",
    "unsupported_method",
    "ignored_auth",
    "positive_data_acceptance",
    "negative_data_rejection",
    "use_after_free",
    "ensure_resource_availability",
    "allow_header_conformance",
    "object_level_authorization",
];

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The pinned Schemathesis in `target/schemathesis-venv`, installed unless it is there.
fn install() -> Result<PathBuf, String> {
    let st = python_venv("schemathesis-venv", &format!("schemathesis=={VERSION}\n"))?.join("schemathesis");
    let installed = Command::new(&st).arg("--version").output().ok().is_some_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .ends_with(&format!(" {VERSION}"))
    });
    if installed {
        Ok(st)
    } else {
        Err(format!(
            "schemathesis {VERSION} is not runnable from {}",
            st.display()
        ))
    }
}

/// Starts `serve --demo` on `port` with a database in `dir` and waits until it is ready.
fn start_server(dir: &Path, port: u16) -> Result<Killed, String> {
    let log = dir.join("server.log");
    let log_file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut cmd = Command::new(root().join("target/debug/stateset-voice"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("VOICE_") {
            cmd.env_remove(name);
        }
    }
    let child = cmd
        .args(["serve", "--demo"])
        .env(
            "VOICE_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.join("voice.db").display()),
        )
        .env("VOICE_BIND", format!("127.0.0.1:{port}"))
        .env("VOICE_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("VOICE_ADMIN_TOKEN", ADMIN_TOKEN)
        // Generated routes and tenants may name agent and webhook hosts: probes and event
        // deliveries wait past the end of the run, so no traffic leaves the machine.
        .env("VOICE_AGENT_HEALTH_INTERVAL", "60m")
        .env("VOICE_OUTBOX_POLL_INTERVAL", "60m")
        .env("VOICE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("starting the server: {e}"))?;
    wait_for_service(Killed(child), port, &log)
}

/// What the report says, in one paragraph that can be quoted.
fn summary(report: &Value) -> String {
    let ops = &report["operations"];
    let cases = &report["test_cases"];
    let kinds: Vec<String> = report["failures"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            format!(
                "{} {} x{}",
                f["code"].as_str().unwrap_or("?"),
                f["title"].as_str().unwrap_or("?"),
                f["count"]
            )
        })
        .collect();
    format!(
        "schemathesis {}: {} of {} operations tested ({} errored); {} test cases generated, {} with \
         failures, {} unique failures{}; {} errors; seed {}; {:.1} s",
        report["schemathesis_version"].as_str().unwrap_or("?"),
        ops["tested"],
        ops["selected"],
        ops["errored"],
        cases["generated"],
        cases["with_failures"],
        cases["unique_failures"],
        if kinds.is_empty() {
            String::new()
        } else {
            format!(" ({})", kinds.join(", "))
        },
        report["errors"].as_array().map_or(0, Vec::len),
        report["seed"],
        report["running_time"].as_f64().unwrap_or(f64::NAN),
    )
}

/// Runs Schemathesis against a fresh server; fails on any failure or error it reports.
pub fn schemathesis() -> Result<(), String> {
    let started = Instant::now();
    let st = install()?;
    run(
        "build the server",
        cargo().args(["build", "--locked", "--bin", "stateset-voice"]),
    )?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "stateset-voice-schemathesis-{}-{nanos}",
        std::process::id()
    )));
    std::fs::create_dir_all(&scratch.0).map_err(|e| format!("{}: {e}", scratch.0.display()))?;
    let report_path = root().join("target/schemathesis-report.json");
    let _ = std::fs::remove_file(&report_path);
    let port = free_port()?;
    let server = start_server(&scratch.0, port)?;

    let spec = format!("http://127.0.0.1:{port}/openapi.json");
    let outcome = run(
        &format!("schemathesis {spec} (seed {SEED}, at most {MAX_EXAMPLES} examples per operation)"),
        Command::new(&st)
            .args(["run", &spec])
            .args(["--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
            .args(["--checks", &CHECKS.join(",")])
            .args(["--phases", "examples,coverage,fuzzing,stateful"])
            .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
            .args(["--workers", "1", "--request-timeout", "10"])
            .args(["--generation-database", "none"])
            // Now and then this release draws an extra form field name outside the declared
            // `propertyNames` (no NUL), which the service rightly refuses; NUL in names and
            // values is covered by tests/api/hostile_input.rs instead.
            .args(["--generation-allow-x00", "false"])
            .args(["--report", "json", "--report-json-path"])
            .arg(&report_path)
            .current_dir(&scratch.0),
    );
    drop(server);

    let report: Option<Value> = std::fs::read_to_string(&report_path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    eprintln!(
        "==> schemathesis step took {:.1} s (install, build, server, run)",
        started.elapsed().as_secs_f64()
    );
    match &report {
        Some(report) => eprintln!("{}", summary(report)),
        None => eprintln!("no report at {}", report_path.display()),
    }
    outcome?;
    let report = report.ok_or("schemathesis wrote no report")?;
    // Anything missing from the report counts as a problem.
    let counts = [
        report["test_cases"]["unique_failures"].as_u64(),
        report["test_cases"]["errored"].as_u64(),
        report["operations"]["errored"].as_u64(),
        report["errors"].as_array().map(|e| e.len() as u64),
    ];
    if report["complete"] != true || counts.iter().any(|c| *c != Some(0)) {
        return Err(format!(
            "schemathesis reported problems (see above and {})",
            report_path.display()
        ));
    }
    Ok(())
}
