//! `cargo xtask fuzz [--seconds N]`: the cargo-fuzz targets in `fuzz/`, each run for a bounded time.
//!
//! cargo-fuzz is installed into `target/tools` when missing. The targets are built by the toolchain
//! running xtask without a sanitizer (`--sanitizer none`), which needs no unstable compiler flag, so
//! stable Rust is enough. Each target then runs on a fresh copy of its committed seeds
//! (`fuzz/seeds/<target>`, copied to `fuzz/corpus/<target>`); a panic, a failed property, an input
//! slower than [`INPUT_TIMEOUT_SECONDS`] or memory over libFuzzer's limit fails the run, and
//! libFuzzer writes the input to `fuzz/artifacts/<target>/`.
use std::{
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use crate::{cargo, root, run};

/// The fuzz targets (`fuzz/fuzz_targets/<name>.rs`), in the order they run.
pub(crate) const TARGETS: [&str; 3] = ["form_parser", "signature_validator", "media_frame"];
/// Seconds per target of `cargo xtask fuzz` without `--seconds`.
pub(crate) const DEFAULT_SECONDS: u64 = 300;
/// Seconds per target in `cargo xtask ci`, unless `VOICE_FUZZ_SECONDS` says otherwise.
pub(crate) const CI_SECONDS: u64 = 60;
/// An input that takes longer than this is a finding (libFuzzer's `-timeout`).
const INPUT_TIMEOUT_SECONDS: u64 = 10;
/// The cargo-fuzz release installed into `target/tools`.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// `cargo xtask fuzz [--seconds N]`.
pub(crate) fn main(args: &[&str]) -> Result<(), String> {
    let seconds = match args {
        [] => DEFAULT_SECONDS,
        ["--seconds", n] => parse_seconds(n)?,
        _ => return Err("usage: cargo xtask fuzz [--seconds N]".to_owned()),
    };
    check_lock_file()?;
    fuzz(seconds)
}

/// The fuzz step of `cargo xtask ci`: format and lints of the fuzz crate, then every target for
/// [`CI_SECONDS`] (or `VOICE_FUZZ_SECONDS`).
pub(crate) fn ci() -> Result<(), String> {
    let manifest = fuzz_dir().join("Cargo.toml");
    check_lock_file()?;
    run(
        "fuzz crate format",
        cargo()
            .arg("fmt")
            .arg("--manifest-path")
            .arg(&manifest)
            .args(["--", "--check"]),
    )?;
    run(
        "fuzz crate clippy",
        cargo()
            .args(["clippy", "--locked", "--all-targets", "--manifest-path"])
            .arg(&manifest)
            .args(["--", "-D", "warnings"]),
    )?;
    let seconds = match std::env::var("VOICE_FUZZ_SECONDS") {
        Ok(n) => parse_seconds(&n).map_err(|e| format!("VOICE_FUZZ_SECONDS: {e}"))?,
        Err(_) => CI_SECONDS,
    };
    fuzz(seconds)
}

fn parse_seconds(n: &str) -> Result<u64, String> {
    match n.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a positive number of seconds, got {n:?}")),
    }
}

fn fuzz_dir() -> PathBuf {
    root().join("fuzz")
}

/// Fails when `fuzz/Cargo.lock` no longer matches the dependencies (cargo-fuzz has no `--locked`).
fn check_lock_file() -> Result<(), String> {
    run(
        "check fuzz/Cargo.lock",
        cargo()
            .args(["metadata", "--locked", "--format-version", "1", "--manifest-path"])
            .arg(fuzz_dir().join("Cargo.toml"))
            .stdout(Stdio::null()),
    )
    .map_err(|e| {
        format!(
            "{e}: fuzz/Cargo.lock is stale (the service's dependencies changed); run \
             `cargo update --workspace --manifest-path fuzz/Cargo.toml` and commit fuzz/Cargo.lock"
        )
    })
}

/// Installs cargo-fuzz if needed, builds every target, runs each for `seconds` and reports.
fn fuzz(seconds: u64) -> Result<(), String> {
    let cargo_fuzz = install_cargo_fuzz()?;
    let listed = Command::new(&cargo_fuzz)
        .args(["fuzz", "list", "--fuzz-dir"])
        .arg(fuzz_dir())
        .output()
        .map_err(|e| format!("cargo fuzz list: {e}"))?;
    let mut listed: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    listed.sort();
    let mut known = TARGETS.map(str::to_owned).to_vec();
    known.sort();
    if listed != known {
        return Err(format!(
            "fuzz/Cargo.toml declares the targets {listed:?}, xtask runs {known:?}: update TARGETS"
        ));
    }
    let started = Instant::now();
    run("build fuzz targets", &mut fuzz_command(&cargo_fuzz, "build"))?;
    let build_seconds = started.elapsed().as_secs();
    eprintln!("fuzz targets built in {build_seconds} s");

    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for target in TARGETS {
        match run_target(&cargo_fuzz, target, seconds) {
            Ok(report) => reports.push(report),
            Err(e) => failures.push(e),
        }
    }
    eprintln!("==> fuzzing summary ({seconds} s per target, build {build_seconds} s)");
    for report in &reports {
        eprintln!("{report}");
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// `target/tools/bin/cargo-fuzz`, installed with `cargo install --locked` unless that release is
/// already there.
fn install_cargo_fuzz() -> Result<PathBuf, String> {
    let tools = root().join("target").join("tools");
    let bin = tools
        .join("bin")
        .join(format!("cargo-fuzz{}", std::env::consts::EXE_SUFFIX));
    let installed = Command::new(&bin).arg("--version").output().is_ok_and(|out| {
        String::from_utf8_lossy(&out.stdout).trim() == format!("cargo-fuzz {CARGO_FUZZ_VERSION}")
    });
    if !installed {
        run(
            &format!("install cargo-fuzz {CARGO_FUZZ_VERSION} into {}", tools.display()),
            cargo()
                .args([
                    "install",
                    "cargo-fuzz",
                    "--version",
                    CARGO_FUZZ_VERSION,
                    "--locked",
                    "--root",
                ])
                .arg(&tools),
        )?;
    }
    Ok(bin)
}

/// `cargo fuzz <subcommand>` with the options every invocation shares. cargo-fuzz runs `cargo`
/// from `PATH`; the directory of the cargo running xtask goes first, so the toolchain that runs
/// xtask builds the targets.
fn fuzz_command(cargo_fuzz: &Path, subcommand: &str) -> Command {
    let mut cmd = Command::new(cargo_fuzz);
    cmd.current_dir(root())
        .args(["fuzz", subcommand, "--sanitizer", "none", "--fuzz-dir"])
        .arg(fuzz_dir())
        .arg("--target-dir")
        .arg(fuzz_dir().join("target"));
    if let Some(bin_dir) = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .filter(|cargo| cargo.is_absolute())
        .and_then(|cargo| cargo.parent().map(Path::to_path_buf))
    {
        let rest = std::env::var_os("PATH").unwrap_or_default();
        if let Ok(path) = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(&rest))) {
            cmd.env("PATH", path);
        }
    }
    cmd
}

/// What libFuzzer reported at the end of one run.
#[derive(Default)]
struct Report {
    target: &'static str,
    /// Time spent fuzzing, as libFuzzer reports it.
    fuzz_seconds: Option<u64>,
    /// Wall time of the whole `cargo fuzz run`, a no-op rebuild check included.
    wall_seconds: u64,
    seed: Option<String>,
    executions: Option<u64>,
    per_second: Option<u64>,
    coverage: Option<u64>,
    features: Option<u64>,
    corpus: Option<String>,
    peak_rss_mb: Option<u64>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
        write!(
            f,
            "{}: {} executions in {} s ({}/s; {} s with cargo), cov {} edges, ft {} features, corpus {}, \
             peak RSS {} MB",
            self.target,
            show(&self.executions),
            show(&self.fuzz_seconds),
            show(&self.per_second),
            self.wall_seconds,
            show(&self.coverage),
            show(&self.features),
            self.corpus.as_deref().unwrap_or("?"),
            show(&self.peak_rss_mb),
        )?;
        if let Some(seed) = &self.seed {
            write!(f, ", seed {seed}")?;
        }
        Ok(())
    }
}

impl Report {
    /// Reads the figures from one line of libFuzzer's output, e.g.
    /// `#399785 DONE   cov: 171 ft: 774 corp: 204/38Kb lim: 1457 exec/s: 36344 rss: 104Mb`
    /// and `stat::number_of_executed_units: 399785`.
    fn read(&mut self, line: &str) {
        if let Some(seed) = line.strip_prefix("INFO: Seed: ") {
            self.seed = Some(seed.trim().to_owned());
        } else if let Some(done) = line.strip_prefix("Done ") {
            // `Done 399785 runs in 61 second(s)`
            self.fuzz_seconds = done.split_whitespace().nth(3).and_then(|s| s.parse().ok());
        } else if let Some((name, value)) = line.strip_prefix("stat::").and_then(|s| s.split_once(':')) {
            let value = value.trim().parse().ok();
            match name {
                "number_of_executed_units" => self.executions = value,
                "average_exec_per_sec" => self.per_second = value,
                "peak_rss_mb" => self.peak_rss_mb = value,
                _ => {}
            }
        } else if progress_kind(line) == Some("DONE") {
            let mut words = line[1..].split_whitespace();
            let runs = words.next().and_then(|n| n.parse().ok());
            self.executions = self.executions.or(runs);
            while let Some(word) = words.next() {
                let value = words.clone().next();
                let number = value.and_then(|v| v.parse().ok());
                match word {
                    "cov:" => self.coverage = number,
                    "ft:" => self.features = number,
                    "corp:" => self.corpus = value.map(str::to_owned),
                    _ => {}
                }
            }
        }
    }
}

/// The kind of a libFuzzer status line (`#<runs> <KIND> cov: ...`): `INITED`, `NEW`, `DONE`, ...
fn progress_kind(line: &str) -> Option<&str> {
    let mut words = line.strip_prefix('#')?.split_whitespace();
    words.next()?.parse::<u64>().ok()?;
    words.next()
}

/// Whether a line of libFuzzer's output is left in the log only: per-input progress, and the
/// notices that no sanitizer runtime is linked (expected with `--sanitizer none`).
fn is_quiet(line: &str) -> bool {
    matches!(progress_kind(line), Some("NEW" | "REDUCE" | "pulse" | "RELOAD"))
        || line.trim_start().starts_with("NEW_FUNC[")
        || line.starts_with("WARNING: Failed to find function \"__sanitizer_")
}

/// Runs one target for `seconds` on a fresh copy of its seeds. Its whole output goes to
/// `fuzz/target/logs/<target>.log`; everything but per-input progress is shown too.
fn run_target(cargo_fuzz: &Path, target: &'static str, seconds: u64) -> Result<Report, String> {
    let fuzz = fuzz_dir();
    let seeds = fuzz.join("seeds").join(target);
    let corpus = fuzz.join("corpus").join(target);
    let artifacts = fuzz.join("artifacts").join(target);
    copy_seeds(&seeds, &corpus)?;
    let before: Vec<PathBuf> = list(&artifacts);
    let logs = fuzz.join("target").join("logs");
    fs::create_dir_all(&logs).map_err(|e| format!("creating {}: {e}", logs.display()))?;
    let log_path = logs.join(format!("{target}.log"));
    let mut log = fs::File::create(&log_path).map_err(|e| format!("creating {}: {e}", log_path.display()))?;

    eprintln!("==> fuzz {target} for {seconds} s (corpus {})", corpus.display());
    let started = Instant::now();
    let mut child = fuzz_command(cargo_fuzz, "run")
        .arg(target)
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
        .arg("-print_final_stats=1")
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("fuzz {target}: cannot start cargo-fuzz: {e}"))?;
    let mut report = Report {
        target,
        ..Report::default()
    };
    let mut written = Vec::new();
    let mut reader = BufReader::new(child.stderr.take().expect("stderr is piped"));
    let mut raw = Vec::new();
    let mut in_dictionary = false;
    while reader
        .read_until(b'\n', &mut raw)
        .map_err(|e| format!("fuzz {target}: {e}"))?
        > 0
    {
        let _ = log.write_all(&raw);
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end();
        report.read(line);
        if let Some((_, path)) = line.split_once("Test unit written to ") {
            written.push(path.trim().to_owned());
        }
        // The recommended dictionary lists one line per token: log only.
        if line.starts_with("###### Recommended dictionary") {
            in_dictionary = true;
        }
        if !in_dictionary && !is_quiet(line) {
            eprintln!("{line}");
        }
        if line.starts_with("###### End of recommended dictionary") {
            in_dictionary = false;
        }
        raw.clear();
    }
    let status = child.wait().map_err(|e| format!("fuzz {target}: {e}"))?;
    report.wall_seconds = started.elapsed().as_secs();

    if status.success() {
        if report.executions.is_none() || report.coverage.is_none() {
            return Err(format!(
                "fuzz {target}: libFuzzer printed no final statistics (log: {})",
                log_path.display()
            ));
        }
        eprintln!("{report}");
        return Ok(report);
    }
    for path in list(&artifacts) {
        if !before.contains(&path) {
            let path = path.display().to_string();
            if !written.iter().any(|w| path.ends_with(w.trim_start_matches("./"))) {
                written.push(path);
            }
        }
    }
    let mut message = format!("fuzz {target} failed ({status}); log: {}", log_path.display());
    if written.is_empty() {
        message.push_str("; no input was written");
    }
    for path in &written {
        let _ = write!(
            message,
            "\n  crashing input: {path}\n  reproduce: {} fuzz run --sanitizer none {target} {path}",
            cargo_fuzz.display()
        );
    }
    Err(message)
}

/// Replaces `corpus` with a copy of the committed `seeds`.
fn copy_seeds(seeds: &Path, corpus: &Path) -> Result<(), String> {
    if corpus.exists() {
        fs::remove_dir_all(corpus).map_err(|e| format!("removing {}: {e}", corpus.display()))?;
    }
    fs::create_dir_all(corpus).map_err(|e| format!("creating {}: {e}", corpus.display()))?;
    let seed_files = list(seeds);
    if seed_files.is_empty() {
        return Err(format!("no seeds in {}", seeds.display()));
    }
    for seed in seed_files {
        let to = corpus.join(seed.file_name().expect("a file name"));
        fs::copy(&seed, &to).map_err(|e| format!("copying {} to {}: {e}", seed.display(), to.display()))?;
    }
    Ok(())
}

/// The files directly in `dir`, sorted; none when it does not exist.
fn list(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_figures() {
        let mut report = Report::default();
        for line in [
            "INFO: Seed: 3717119588",
            "#13\tINITED cov: 134 ft: 338 corp: 10/2091b exec/s: 0 rss: 104Mb",
            "#4096\tpulse  cov: 150 ft: 400 corp: 50/5Kb lim: 4096 exec/s: 2048 rss: 104Mb",
            "#399785\tDONE   cov: 171 ft: 774 corp: 204/38Kb lim: 1457 exec/s: 36344 rss: 104Mb",
            "Done 399785 runs in 11 second(s)",
            "stat::number_of_executed_units: 399785",
            "stat::average_exec_per_sec:     36344",
            "stat::peak_rss_mb:              104",
        ] {
            report.read(line);
        }
        assert_eq!(report.seed.as_deref(), Some("3717119588"));
        assert_eq!(report.executions, Some(399_785));
        assert_eq!(report.per_second, Some(36_344));
        assert_eq!(report.coverage, Some(171));
        assert_eq!(report.features, Some(774));
        assert_eq!(report.corpus.as_deref(), Some("204/38Kb"));
        assert_eq!(report.peak_rss_mb, Some(104));
        assert_eq!(report.fuzz_seconds, Some(11));
        assert!(is_quiet("#4096\tpulse  cov: 150 ft: 400"));
        assert!(is_quiet("\tNEW_FUNC[1/2]: 0x55adab871ab1"));
        assert!(!is_quiet("#399785\tDONE   cov: 171 ft: 774"));
        assert!(!is_quiet("==1234== ERROR: libFuzzer: deadly signal"));
    }
}
