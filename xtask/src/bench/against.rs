//! `cargo xtask bench --against BINARY [--postgres] [--quick] [--rounds N]`: what one change
//! did. This build's service and another build of it (`BINARY`, say one built from the commit
//! before the change) run side by side, each on a fresh store of its own, in interleaved rounds
//! of new calls and of forged requests (the order alternating from round to round), with each
//! server's own CPU per request. Medians and ratios go to `target/bench/against.md`.
use std::{fmt::Write as _, path::Path};

use super::{
    machine,
    store::Store,
    wrk::{self, Load, Run},
    Options, Server, REPEATABLE,
};
use crate::root;

/// The runs of one server.
#[derive(Default)]
struct Runs {
    new_calls: Vec<Run>,
    forged: Vec<Run>,
}

/// Runs the comparison.
pub fn bench(options: &Options, baseline: &Path) -> Result<(), String> {
    if !baseline.is_file() {
        return Err(format!("--against: no binary at {}", baseline.display()));
    }
    let work = root().join("target/bench");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let seconds = options.seconds();
    let this = Server::service(Store::create(options.postgres, &work, "this")?)?;
    let that = Server::service_of(baseline, Store::create(options.postgres, &work, "baseline")?, &[])?;
    let forged = |server: &Server, name: &str| -> Result<std::path::PathBuf, String> {
        let file = work.join(format!("forged-{name}.txt"));
        server.sign("forged", REPEATABLE, &file)?;
        Ok(file)
    };
    let servers = [
        ("this build", forged(&this, "this")?, &this),
        ("baseline", forged(&that, "baseline")?, &that),
    ];
    let mut runs = [Runs::default(), Runs::default()];
    for round in 0..options.rounds {
        eprintln!("==> round {} of {}", round + 1, options.rounds);
        // Alternate who goes first, so a drift of the machine over a round favours neither.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (name, forged, server) = &servers[i];
            runs[i]
                .new_calls
                .push(server.new_calls(&format!("{name}: new calls"), &work, seconds)?);
            runs[i].forged.push(server.measure(
                &format!("{name}: forged"),
                Load::Signed(forged),
                seconds,
                403,
            )?);
        }
    }
    drop(servers);
    drop((this, that));

    let md = report(options, baseline, &runs);
    let out = work.join("against.md");
    std::fs::write(&out, &md).map_err(|e| e.to_string())?;
    println!("{md}");
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// Median of one figure over runs.
fn median(runs: &[Run], figure: impl Fn(&Run) -> f64) -> f64 {
    wrk::median(&mut runs.iter().map(figure).collect::<Vec<_>>())
}

fn report(options: &Options, baseline: &Path, runs: &[Runs; 2]) -> String {
    let mut md = String::new();
    let store = if options.postgres { "PostgreSQL" } else { "SQLite" };
    let _ = writeln!(md, "# This build against {}\n", baseline.display());
    let _ = writeln!(
        md,
        "{}; {store}; {} interleaved rounds of {} s, wrk with {} connections; medians.\n",
        machine(),
        runs[0].new_calls.len(),
        options.seconds(),
        wrk::CONNECTIONS
    );
    md.push_str("| | req/s | server CPU per request | p99 |\n|---|---|---|---|\n");
    for (name, runs) in ["this build", "baseline"].iter().zip(runs) {
        for (scenario, runs) in [("new calls", &runs.new_calls), ("forged (403)", &runs.forged)] {
            let _ = writeln!(
                md,
                "| {name}, {scenario} | {:.0} | {:.1} µs | {:.2} ms |",
                median(runs, |r| r.per_second),
                median(runs, |r| r.cpu_us),
                median(runs, |r| r.p99_ms)
            );
        }
    }
    let cpu = |r: &Runs| {
        (
            median(&r.new_calls, |r| r.cpu_us),
            median(&r.forged, |r| r.cpu_us),
        )
    };
    let ((this_new, this_forged), (that_new, that_forged)) = (cpu(&runs[0]), cpu(&runs[1]));
    let _ = writeln!(
        md,
        "\nServer CPU per new call: baseline ÷ this build ×{:.2}; throughput of new calls: this build ÷ \
         baseline ×{:.2}. A new call costs ×{:.2} a forged request in this build, ×{:.2} in the \
         baseline.",
        that_new / this_new,
        median(&runs[0].new_calls, |r| r.per_second) / median(&runs[1].new_calls, |r| r.per_second),
        this_new / this_forged,
        that_new / that_forged
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(per_second: f64, cpu_us: f64) -> Run {
        Run {
            requests: 1000,
            per_second,
            p50_ms: 1.0,
            p90_ms: 2.0,
            p99_ms: 5.0,
            max_ms: 9.0,
            cpu_us,
            load_us: 10.0,
            errors: 0,
            wrapped: 0,
        }
    }

    fn runs(new_calls: &[(f64, f64)], forged_cpu: f64) -> Runs {
        Runs {
            new_calls: new_calls.iter().map(|&(rate, cpu)| run(rate, cpu)).collect(),
            forged: new_calls.iter().map(|_| run(50_000.0, forged_cpu)).collect(),
        }
    }

    #[test]
    fn the_ratios_compare_the_medians_of_the_two_builds() {
        let options = Options::parse(&["--against", "/bin/old", "--rounds", "3"]).unwrap();
        assert_eq!(options.against.as_deref(), Some(Path::new("/bin/old")));
        let this = runs(&[(12_000.0, 80.0), (11_000.0, 90.0), (1_000.0, 400.0)], 20.0);
        let baseline = runs(&[(8_000.0, 120.0), (9_000.0, 100.0), (10_000.0, 110.0)], 22.0);
        let md = report(&options, Path::new("/bin/old"), &[this, baseline]);
        assert!(md.contains("| this build, new calls | 11000 | 90.0 µs |"), "{md}");
        assert!(md.contains("baseline ÷ this build ×1.22"), "{md}");
        assert!(md.contains("this build ÷ baseline ×1.22"), "{md}");
        assert!(
            md.contains("×4.50 a forged request in this build, ×5.00 in the baseline"),
            "{md}"
        );
        assert!(Options::parse(&["--against"]).is_err());
    }
}
