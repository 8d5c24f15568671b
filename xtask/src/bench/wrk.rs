//! One measured run: `wrk` against a server, with the server's own CPU time read from
//! `/proc/PID/stat` before and after, so CPU per request is the server's alone.
use std::{path::Path, process::Command};

use serde_json::Value;

use crate::root;

/// Connections wrk keeps open (keep-alive), as Twilio's edge would over many calls.
pub const CONNECTIONS: u32 = 64;

/// What one run measured.
#[derive(Clone, Debug)]
pub struct Run {
    pub requests: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The server's user + system CPU over the run, per request.
    pub cpu_us: f64,
    /// wrk's own user + system CPU over the run, per request: the load generator's share of
    /// the machine, which the servers share with it.
    pub load_us: f64,
    /// Answers with another status than expected, and socket errors.
    pub errors: u64,
    /// Times a wrk thread ran out of pre-signed requests and started over.
    pub wrapped: u64,
}

/// The request a run sends.
pub enum Load<'a> {
    /// Pre-signed webhooks from a `loadgen sign` file (replayed by `bench/signed.lua`).
    Signed(&'a Path),
    /// One GET with a bearer token (admin API reads).
    Get { path: &'a str, token: &'a str },
}

/// User + system CPU seconds `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    let (Some(utime), Some(stime)) = (ticks(11), ticks(12)) else {
        return Err(format!("unexpected /proc/{pid}/stat: {stat}"));
    };
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) / hz)
}

/// User + system CPU seconds of this process's children that have ended and been waited for:
/// around one wrk run (the only child that ends meanwhile), that run's CPU.
pub fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Runs wrk for `seconds` against `base` and reads `server_pid`'s CPU around it. `expect` is
/// the status every answer must have.
pub fn run(base: &str, load: Load<'_>, seconds: u32, server_pid: u32, expect: u16) -> Result<Run, String> {
    let threads = 2;
    let mut cmd = Command::new("wrk");
    cmd.args([
        format!("-t{threads}"),
        format!("-c{CONNECTIONS}"),
        format!("-d{seconds}s"),
        "--timeout".to_owned(),
        "10s".to_owned(),
        "-s".to_owned(),
        root().join("bench/signed.lua").display().to_string(),
    ]);
    let url = match &load {
        Load::Signed(file) => {
            cmd.arg(base).arg("--").arg(file).arg(threads.to_string());
            base.to_owned()
        }
        Load::Get { path, token } => {
            cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
            let url = format!("{base}{path}");
            cmd.arg(&url).arg("--").arg("-").arg(threads.to_string());
            url
        }
    };
    let before = cpu_seconds(server_pid)?;
    let load_before = children_cpu_seconds();
    let out = cmd.output().map_err(|e| format!("running wrk: {e}"))?;
    let load_after = children_cpu_seconds();
    let after = cpu_seconds(server_pid)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk against {url} failed: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let summary: Value = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("no summary from wrk: {stdout}"))?;
    let n = |k: &str| summary[k].as_u64().unwrap_or(0);
    let requests = n("requests");
    if requests == 0 {
        return Err(format!("wrk sent nothing to {url}: {stdout}"));
    }
    let socket_errors = n("connect_errors") + n("read_errors") + n("write_errors") + n("timeouts");
    // wrk counts every status outside 2xx and 3xx; a 403 run expects all of them to be such.
    let wrong_status = if expect < 400 {
        n("status_errors")
    } else {
        requests - n("status_errors").min(requests)
    };
    let ms = |k: &str| n(k) as f64 / 1000.0;
    Ok(Run {
        requests,
        per_second: requests as f64 / (n("duration_us") as f64 / 1e6),
        p50_ms: ms("p50_us"),
        p90_ms: ms("p90_us"),
        p99_ms: ms("p99_us"),
        max_ms: ms("max_us"),
        cpu_us: (after - before) * 1e6 / requests as f64,
        load_us: (load_after - load_before) * 1e6 / requests as f64,
        errors: socket_errors + wrong_status,
        wrapped: n("wrapped"),
    })
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let spent = cpu_seconds(std::process::id()).unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 100 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        // 100 ms of busy loop is several clock ticks of CPU time.
        assert!(cpu_seconds(std::process::id()).unwrap() > spent);
    }

    #[test]
    fn a_child_that_ended_has_its_cpu_counted() {
        let before = children_cpu_seconds();
        // A child that counts to 200,000 (tens of milliseconds of CPU at least), waited for.
        let status = Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i + 1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(children_cpu_seconds() - before > 0.01);
    }
}
