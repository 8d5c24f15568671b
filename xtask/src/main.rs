//! Project automation: `cargo xtask ci | conformance | openapi [--check] | docs | bench |
//! schemathesis | interop | fuzz | pgbouncer | ops`.
mod bench;
mod docs;
mod fuzz;
mod interop;
mod ops;
mod schemathesis;
mod support;

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    cmd.current_dir(root());
    cmd
}

pub(crate) fn run(step: &str, cmd: &mut Command) -> Result<(), String> {
    eprintln!("==> {step}");
    let status = cmd.status().map_err(|e| format!("{step}: cannot start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

/// Generates the OpenAPI document from the code; with `check`, fails when the committed one differs.
fn openapi(check: bool) -> Result<(), String> {
    let out = cargo()
        .args(["run", "--quiet", "--package", "stateset-voice", "--", "openapi"])
        .output()
        .map_err(|e| format!("cannot run the generator: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "generating openapi.yaml failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let path = root().join("openapi.yaml");
    let committed = std::fs::read(&path).unwrap_or_default();
    if committed == out.stdout {
        eprintln!("openapi.yaml is up to date");
        return Ok(());
    }
    if check {
        return Err("openapi.yaml is stale: run `cargo xtask openapi` and commit the result".to_owned());
    }
    std::fs::write(&path, &out.stdout).map_err(|e| format!("writing {}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// Replays the recorded Twilio callbacks and compares the answers with the reviewed snapshots.
/// Snapshots are never written here: a difference fails.
fn conformance() -> Result<(), String> {
    run(
        "conformance (recorded callbacks vs snapshots, SQLite and PostgreSQL)",
        cargo()
            .args(["test", "--package", "conformance", "--locked"])
            .env("INSTA_UPDATE", "no"),
    )
}

/// Starts the PgBouncer the integration tests go through (`.ci/pgbouncer`, on 127.0.0.1:6432),
/// unless one answers there, `VOICE_TEST_PGBOUNCER_URL` names another or the tests through it
/// are skipped (`VOICE_TEST_SKIP_PGBOUNCER=1`).
fn pgbouncer() -> Result<(), String> {
    if std::env::var_os("VOICE_TEST_PGBOUNCER_URL").is_some()
        || std::env::var("VOICE_TEST_SKIP_PGBOUNCER").is_ok_and(|v| v == "1")
    {
        return Ok(());
    }
    if TcpStream::connect(("127.0.0.1", 6432)).is_ok() {
        eprintln!("PgBouncer answers on 127.0.0.1:6432");
        return Ok(());
    }
    run(
        "pgbouncer (.ci/pgbouncer)",
        &mut Command::new(root().join(".ci/pgbouncer")),
    )
}

/// Everything CI checks, in order of cost.
fn ci() -> Result<(), String> {
    run("format", cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    openapi(true)?;
    docs::docs()?;
    ops::ops()?;
    pgbouncer()?;
    run(
        "tests (SQLite, PostgreSQL, and PostgreSQL through PgBouncer)",
        cargo().args(["test", "--workspace", "--exclude", "conformance", "--locked"]),
    )?;
    schemathesis::schemathesis()?;
    conformance()?;
    interop::interop()?;
    fuzz::ci()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["ci"] => ci(),
        ["fuzz", rest @ ..] => fuzz::main(rest),
        ["schemathesis"] => schemathesis::schemathesis(),
        ["interop"] => interop::interop(),
        ["conformance"] => conformance(),
        ["bench", rest @ ..] => bench::Options::parse(rest).and_then(|o| bench::bench(&o)),
        ["openapi"] => openapi(false),
        ["openapi", "--check"] => openapi(true),
        ["docs"] => docs::docs(),
        ["pgbouncer"] => pgbouncer(),
        ["ops"] => ops::ops(),
        _ => Err(
            "usage: cargo xtask ci | conformance | openapi [--check] | docs | bench [--postgres] [--quick] [--prefill N] [--rounds N] [--against BINARY] \
             | schemathesis | interop | fuzz [--seconds N] | pgbouncer | ops"
                .to_owned(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
