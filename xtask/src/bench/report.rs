//! `bench/results.md`: medians of the interleaved rounds, the goals as ratios from the same
//! run, every round's raw figures, the per-call budget, streams and micro-benchmarks.
use std::fmt::Write as _;

use serde_json::Value;

use super::{
    store::PerCall,
    wrk::{self, Run},
    Options,
};

/// What a measured run was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    NewCalls,
    PeerNewCalls,
    /// New calls on the other store (SQLite beside a PostgreSQL run).
    SqliteNewCalls,
    PrefilledNewCalls,
    Retries,
    Forged,
    Unknown,
    ListCalls,
    PrefilledListCalls,
    ListEvents,
    PrefilledListEvents,
}

impl Scenario {
    const ALL: [Scenario; 11] = [
        Scenario::NewCalls,
        Scenario::PeerNewCalls,
        Scenario::SqliteNewCalls,
        Scenario::PrefilledNewCalls,
        Scenario::Retries,
        Scenario::Forged,
        Scenario::Unknown,
        Scenario::ListCalls,
        Scenario::PrefilledListCalls,
        Scenario::ListEvents,
        Scenario::PrefilledListEvents,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Scenario::NewCalls => "new calls (validate, route, mint, store, TwiML)",
            Scenario::PeerNewCalls => "reference peer: Twilio Node helper + express, new calls, no storage",
            Scenario::SqliteNewCalls => "new calls, the same service on SQLite",
            Scenario::PrefilledNewCalls => "new calls, prefilled store",
            Scenario::Retries => "provider retries of answered calls",
            Scenario::Forged => "forged signatures (403)",
            Scenario::Unknown => "unknown routes (platform message)",
            Scenario::ListCalls => "admin: list calls (50)",
            Scenario::PrefilledListCalls => "admin: list calls (50), prefilled store",
            Scenario::ListEvents => "admin: list events (50)",
            Scenario::PrefilledListEvents => "admin: list events (50), prefilled store",
        }
    }
}

/// Every run, in the order it ran.
#[derive(Default)]
pub struct Measured(Vec<(Scenario, Run)>);

/// The medians of one scenario's rounds.
pub struct Medians {
    pub rounds: usize,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub cpu_us: f64,
    pub load_us: f64,
}

impl Measured {
    pub fn push(&mut self, scenario: Scenario, run: Run) {
        self.0.push((scenario, run));
    }

    pub fn medians(&self, scenario: Scenario) -> Option<Medians> {
        let runs: Vec<&Run> = self
            .0
            .iter()
            .filter(|(s, _)| *s == scenario)
            .map(|(_, r)| r)
            .collect();
        if runs.is_empty() {
            return None;
        }
        let m = |f: fn(&Run) -> f64| wrk::median(&mut runs.iter().map(|r| f(r)).collect::<Vec<_>>());
        Some(Medians {
            rounds: runs.len(),
            per_second: m(|r| r.per_second),
            p50_ms: m(|r| r.p50_ms),
            p90_ms: m(|r| r.p90_ms),
            p99_ms: m(|r| r.p99_ms),
            cpu_us: m(|r| r.cpu_us),
            load_us: m(|r| r.load_us),
        })
    }
}

/// The stream benchmarks' reports (from `loadgen streams`).
pub struct Streams {
    pub seconds: String,
    pub echo: Value,
    pub remote: Value,
}

/// Everything the report shows.
pub struct Inputs<'a> {
    pub machine: String,
    pub options: &'a Options,
    pub seconds: u32,
    pub measured: &'a Measured,
    pub storage: Option<PerCall>,
    pub streams: &'a Streams,
    pub criterion: Vec<(String, f64)>,
    /// The hand-kept per-call budget (`bench/budget.md`).
    pub budget: Option<String>,
}

/// A goal: a ratio from this run and the bound it must meet.
struct Goal {
    what: String,
    value: f64,
    bound: f64,
    at_least: bool,
}

impl Goal {
    fn met(&self) -> bool {
        if self.at_least {
            self.value >= self.bound
        } else {
            self.value <= self.bound
        }
    }
}

fn goals(measured: &Measured) -> Vec<Goal> {
    let get = |s| measured.medians(s);
    let mut goals = Vec::new();
    let mut goal = |what: &str, value: f64, at_least: bool, bound: f64| {
        goals.push(Goal {
            what: what.to_owned(),
            value,
            bound,
            at_least,
        })
    };
    let Some(new) = get(Scenario::NewCalls) else {
        return Vec::new();
    };
    if let Some(peer) = get(Scenario::PeerNewCalls) {
        goal(
            "new calls: ours / peer throughput",
            new.per_second / peer.per_second,
            true,
            5.0,
        );
        goal(
            "new calls: peer / ours server CPU per request",
            peer.cpu_us / new.cpu_us,
            true,
            5.0,
        );
        goal("new calls: ours / peer p99", new.p99_ms / peer.p99_ms, false, 0.5);
    }
    if let Some(forged) = get(Scenario::Forged) {
        goal(
            "server CPU per request: new call / forged",
            new.cpu_us / forged.cpu_us,
            false,
            2.0,
        );
        goal(
            "throughput: forged / new calls",
            forged.per_second / new.per_second,
            true,
            5.0,
        );
    }
    if let Some(retries) = get(Scenario::Retries) {
        goal(
            "throughput: retries / new calls",
            retries.per_second / new.per_second,
            true,
            4.0,
        );
    }
    if let Some(sqlite) = get(Scenario::SqliteNewCalls) {
        goal(
            "new calls: PostgreSQL / SQLite throughput",
            new.per_second / sqlite.per_second,
            true,
            0.5,
        );
    }
    for (empty, full, what) in [
        (Scenario::NewCalls, Scenario::PrefilledNewCalls, "new call"),
        (Scenario::ListCalls, Scenario::PrefilledListCalls, "list calls"),
        (Scenario::ListEvents, Scenario::PrefilledListEvents, "list events"),
    ] {
        if let (Some(empty), Some(full)) = (get(empty), get(full)) {
            goal(
                &format!("{what}: server CPU per request, prefilled / empty"),
                full.cpu_us / empty.cpu_us,
                false,
                1.2,
            );
        }
    }
    goals
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

/// The whole report.
pub fn markdown(inputs: &Inputs<'_>) -> String {
    let o = inputs.options;
    let mut flags = String::new();
    for (on, flag) in [(o.postgres, " --postgres"), (o.quick, " --quick")] {
        if on {
            flags.push_str(flag);
        }
    }
    if let Some(n) = o.prefill {
        let _ = write!(flags, " --prefill {n}");
    }
    if o.rounds != 3 {
        let _ = write!(flags, " --rounds {}", o.rounds);
    }
    let store = if o.postgres {
        "PostgreSQL".to_owned()
    } else {
        format!(
            "SQLite, synchronous={}",
            std::env::var("VOICE_SQLITE_SYNCHRONOUS").unwrap_or_else(|_| "full".to_owned())
        )
    };
    let mut md = String::from("# Benchmark results\n\n");
    let _ = writeln!(
        md,
        "Machine: {}. Store: {store}. Generated by `cargo xtask bench{flags}`; every figure below comes from this one run.\n",
        inputs.machine
    );
    let _ = writeln!(
        md,
        "Webhooks: wrk ({} connections, keep-alive, 2 threads) replays pre-signed Twilio requests (`bench/signed.lua`) for {} s per run, in {} interleaved rounds: each round runs every scenario once, new calls on CallSids signed for that run only. Server CPU is the server process's own user + system time (`/proc/PID/stat`) over the run, divided by the requests answered; wrk's own CPU per request is measured the same way (the load generator's share of the machine). The figures are the medians of the rounds. wrk and the servers share the machine's cores, so a scenario's rate follows the server's and wrk's CPU per request together.\n",
        super::wrk::CONNECTIONS,
        inputs.seconds,
        o.rounds
    );
    if o.postgres {
        md.push_str("On PostgreSQL, server CPU is the service's alone: the database's own processes do the storage work and are not counted.\n\n");
    }
    md.push_str("| scenario | req/s | p50 ms | p90 ms | p99 ms | server CPU µs per request | wrk CPU µs per request | rounds |\n|---|---|---|---|---|---|---|---|\n");
    for scenario in Scenario::ALL {
        if let Some(m) = inputs.measured.medians(scenario) {
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {} |",
                scenario.label(),
                m.per_second,
                m.p50_ms,
                m.p90_ms,
                m.p99_ms,
                m.cpu_us,
                m.load_us,
                m.rounds
            );
        }
    }
    md.push_str(
        "\nGoals, as ratios of the medians above:\n\n| ratio | this run | goal | met |\n|---|---|---|---|\n",
    );
    for g in goals(inputs.measured) {
        let _ = writeln!(
            md,
            "| {} | {:.2} | {} {} | {} |",
            g.what,
            g.value,
            if g.at_least { "≥" } else { "≤" },
            g.bound,
            if g.met() { "yes" } else { "**no**" }
        );
    }
    if let Some(s) = &inputs.storage {
        let _ = writeln!(
            md,
            "\nStored per call: **{:.0} bytes** (rows, indexes and page slack, measured by the database over {} of {}).",
            s.bytes, s.calls, s.over
        );
    }
    md.push_str("\nEvery round (in the order run):\n\n| round | scenario | req/s | p99 ms | max ms | server CPU µs per request | requests |\n|---|---|---|---|---|---|---|\n");
    let mut round = 0;
    let mut first = None;
    for (scenario, run) in &inputs.measured.0 {
        if first.is_none() || first == Some(*scenario) {
            first = Some(*scenario);
            round += 1;
        }
        let _ = writeln!(
            md,
            "| {round} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {} |",
            scenario.label(),
            run.per_second,
            run.p99_ms,
            run.max_ms,
            run.cpu_us,
            run.requests
        );
    }
    if let Some(budget) = &inputs.budget {
        md.push('\n');
        md.push_str(budget.trim_end());
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "\n## Media streams\n\nWith the built-in echo agent and through a remote agent (`loadgen agent`: speaks Twilio Media Streams over a loopback WebSocket and echoes every frame). One 20 ms frame each way per stream, the streams' clocks spread over the frame interval; round trip is from a frame leaving the load generator to its echo arriving back. Server CPU is the service process's user + system time from the first frame to the last echo per second of audio, in % of one core per stream (work a saturated machine defers is still counted); the remote agent's process is measured the same way, separately. A lost frame (no echo within 30 s of the last frame) fails the benchmark.\n"
    );
    md.push_str("| media streams | streams | seconds | frames | frames lost | p50 ms | p90 ms | p99 ms | max ms | server CPU per stream | agent CPU per stream |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    let s = inputs.streams;
    stream_row(&mut md, "built-in echo agent", &s.seconds, &s.echo);
    stream_row(
        &mut md,
        "through a remote agent (`loadgen agent`, WebSocket)",
        &s.seconds,
        &s.remote,
    );
    md.push_str("\n## Micro-benchmarks\n\ncriterion, mean:\n\n| benchmark | mean |\n|---|---|\n");
    for (name, ns) in &inputs.criterion {
        let _ = writeln!(md, "| {name} | {:.2} µs |", ns / 1000.0);
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(per_second: f64, cpu_us: f64, p99_ms: f64) -> Run {
        Run {
            requests: 1000,
            per_second,
            p50_ms: 1.0,
            p90_ms: 2.0,
            p99_ms,
            max_ms: 9.0,
            cpu_us,
            load_us: 10.0,
            errors: 0,
            wrapped: 0,
        }
    }

    #[test]
    fn goals_compare_the_medians_of_the_rounds() {
        let mut m = Measured::default();
        for (ours, peer) in [(10_000.0, 1_000.0), (12_000.0, 2_000.0), (50.0, 3_000.0)] {
            m.push(Scenario::NewCalls, run(ours, 50.0, 10.0));
            m.push(Scenario::PeerNewCalls, run(peer, 600.0, 100.0));
        }
        m.push(Scenario::Forged, run(30_000.0, 20.0, 5.0));
        let medians = m.medians(Scenario::NewCalls).unwrap();
        assert_eq!((medians.rounds, medians.per_second), (3, 10_000.0));
        let goals = goals(&m);
        let throughput = goals
            .iter()
            .find(|g| g.what.contains("ours / peer throughput"))
            .unwrap();
        assert_eq!(throughput.value, 5.0);
        assert!(throughput.met());
        let cost = goals
            .iter()
            .find(|g| g.what.contains("new call / forged"))
            .unwrap();
        assert_eq!(cost.value, 2.5);
        assert!(!cost.met());
        assert!(
            goals.iter().all(|g| !g.what.contains("retries")),
            "no retry rounds, no retry goal"
        );
    }
}
