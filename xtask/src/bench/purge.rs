//! `cargo xtask bench --purge N [--quick] [--rounds R] [--postgres]`: does the retention purge
//! move new-call latency? Two stores are prefilled with N calls (and their answers and
//! delivered events) dated past the retention window. One service keeps everything
//! (`VOICE_RETENTION_DAYS=0`); the other starts with the default window, so its purge starts
//! at once. Both take the same new-call rounds, interleaved; each round on the purging
//! service records how far the purge got, so a round that ran beside it is told from one that
//! did not. Stored bytes per call are measured before the purge and after it; the report
//! goes to `bench/results-purge.md` (`-postgres` on PostgreSQL).
use std::{fmt::Write as _, path::Path, time::Duration};

use super::{machine, store::Store, wrk::Run, Options, Server};
use crate::{root, support::get_body};

/// Days the prefilled calls are dated back: past the default window of 90.
const AGE_DAYS: u32 = 200;
/// How long the purge may take to finish after the rounds.
const FINISH_DEADLINE: Duration = Duration::from_secs(600);

/// One new-call round on the purging service, with the purge's progress around it.
struct PurgeRound {
    run: Run,
    deleted_before: u64,
    deleted_after: u64,
}

/// A store's size: pages in use, bytes on disk, calls.
struct Sizes {
    used: u64,
    on_disk: Option<u64>,
    calls: u64,
}

fn sizes(store: &Store) -> Result<Sizes, String> {
    let size = store.size()?;
    Ok(Sizes {
        used: size.bytes,
        on_disk: store.file_bytes(),
        calls: size.calls,
    })
}

/// The port of `http://127.0.0.1:PORT`.
fn port(server: &Server) -> u16 {
    server
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a base URL with a port")
}

/// The value of a metric series (first line starting with `series `).
fn metric(server: &Server, series: &str) -> Result<f64, String> {
    let body = get_body(port(server), "/metrics").ok_or("reading /metrics failed")?;
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("{series} is not in /metrics"))
}

fn deleted_calls(server: &Server) -> Result<u64, String> {
    metric(server, "voice_retention_deleted_total{table=\"calls\"}").map(|v| v as u64)
}

/// A store holding `calls` calls past the window (cloned from one the service answered),
/// prepared by a service that keeps everything and is stopped afterwards.
fn prepare(postgres: bool, work: &Path, name: &str, calls: u64) -> Result<Store, String> {
    let mut server = Server::service_with(
        Store::create(postgres, work, name)?,
        &[("VOICE_RETENTION_DAYS", "0")],
    )?;
    super::answer_template_call(&server, work)?;
    let store = server.store.take().expect("the service has a store");
    eprintln!("==> prefill {name}: {calls} calls dated {AGE_DAYS} days ago");
    store.prefill_aged(calls, Some(AGE_DAYS))?;
    drop(server);
    Ok(store)
}

/// Runs the purge benchmark.
pub fn bench(options: &Options, calls: u64) -> Result<(), String> {
    let work = root().join("target/bench");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let seconds = options.seconds();
    let control_store = prepare(options.postgres, &work, "purge-control", calls)?;
    let purge_store = prepare(options.postgres, &work, "purge", calls)?;
    let before = sizes(&purge_store)?;

    let control = Server::service_with(control_store, &[("VOICE_RETENTION_DAYS", "0")])?;
    // Started last: its purge starts now, beside the rounds.
    let purging = Server::service_with(purge_store, &[("VOICE_RETENTION_DAYS", "90")])?;
    let mut kept = Vec::new();
    let mut purged = Vec::new();
    for round in 1..=options.rounds {
        eprintln!("==> purge round {round} of {}", options.rounds);
        let deleted_before = deleted_calls(&purging)?;
        let run = purging.new_calls("new calls, purge running", &work, seconds)?;
        let deleted_after = deleted_calls(&purging)?;
        eprintln!("    purge: {deleted_before} -> {deleted_after} of {calls} old calls deleted");
        purged.push(PurgeRound {
            run,
            deleted_before,
            deleted_after,
        });
        kept.push(control.new_calls("new calls, no purge", &work, seconds)?);
    }
    let waited = std::time::Instant::now();
    while metric(&purging, "voice_retention_last_run_timestamp_seconds")? == 0.0 {
        if waited.elapsed() > FINISH_DEADLINE {
            return Err(format!("the purge did not finish within {FINISH_DEADLINE:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let purge_secs_after_rounds = waited.elapsed().as_secs_f64();
    let after = sizes(purging.store.as_ref().expect("a store"))?;
    let deleted = deleted_calls(&purging)?;

    let md = markdown(
        options,
        calls,
        seconds,
        &kept,
        &purged,
        &before,
        &after,
        deleted,
        purge_secs_after_rounds,
    );
    let out = root().join(if options.postgres {
        "bench/results-purge-postgres.md"
    } else {
        "bench/results-purge.md"
    });
    std::fs::write(&out, &md).map_err(|e| e.to_string())?;
    println!("{md}");
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    super::wrk::median(&mut values)
}

#[allow(clippy::too_many_arguments)]
fn markdown(
    options: &Options,
    calls: u64,
    seconds: u32,
    kept: &[Run],
    purged: &[PurgeRound],
    before: &Sizes,
    after: &Sizes,
    deleted: u64,
    purge_secs_after_rounds: f64,
) -> String {
    let mut md = String::new();
    let store = if options.postgres { "PostgreSQL" } else { "SQLite" };
    let _ = writeln!(md, "# Retention purge: new calls beside a purge\n");
    let _ = writeln!(md, "Machine: {}\n", machine());
    let _ = writeln!(
        md,
        "`cargo xtask bench --purge {calls}{}{}` on {store}: two stores each prefilled with {calls} calls \
         dated {AGE_DAYS} days ago (with their answers and delivered events); one service keeps \
         everything (`VOICE_RETENTION_DAYS=0`), the other purges from its start (`VOICE_RETENTION_DAYS=90`, \
         batches of 100 calls, each followed by a pause of 50 ms or four times its own time). {} interleaved rounds of {seconds} s of new calls each, \
         64 connections.\n",
        if options.quick { " --quick" } else { "" },
        if options.postgres { " --postgres" } else { "" },
        purged.len(),
    );
    let p99 = |runs: &mut dyn Iterator<Item = &Run>| median(runs.map(|r| r.p99_ms));
    let rate = |runs: &mut dyn Iterator<Item = &Run>| median(runs.map(|r| r.per_second));
    let beside: Vec<&Run> = purged
        .iter()
        .filter(|r| r.deleted_after > r.deleted_before || r.deleted_after < calls)
        .map(|r| &r.run)
        .collect();
    md.push_str("| new calls | rounds | median p99 (ms) | median req/s |\n|---|---:|---:|---:|\n");
    let _ = writeln!(
        md,
        "| no purge | {} | {:.2} | {:.0} |",
        kept.len(),
        p99(&mut kept.iter()),
        rate(&mut kept.iter())
    );
    let _ = writeln!(
        md,
        "| purge running | {} | {:.2} | {:.0} |",
        beside.len(),
        p99(&mut beside.iter().copied()),
        rate(&mut beside.iter().copied())
    );
    md.push_str("\nEvery round:\n\n| round | no purge p99 (ms) | purging p99 (ms) | old calls deleted before → after the round |\n|---:|---:|---:|---|\n");
    for (i, (k, p)) in kept.iter().zip(purged).enumerate() {
        let _ = writeln!(
            md,
            "| {} | {:.2} | {:.2} | {} → {} of {calls} |",
            i + 1,
            k.p99_ms,
            p.run.p99_ms,
            p.deleted_before,
            p.deleted_after
        );
    }
    let _ = writeln!(
        md,
        "\nThe purge deleted {deleted} calls; it finished {purge_secs_after_rounds:.1} s after the last round.\n"
    );
    md.push_str("| store | calls | bytes in use | per call | bytes on disk | per call |\n|---|---:|---:|---:|---:|---:|\n");
    for (what, s) in [("before the purge", before), ("after the purge", after)] {
        let per = |bytes: u64| bytes as f64 / s.calls.max(1) as f64;
        let disk = s
            .on_disk
            .map(|b| format!("{b} | {:.0}", per(b)))
            .unwrap_or_else(|| "n/a | n/a".to_owned());
        let _ = writeln!(
            md,
            "| {what} | {} | {} | {:.0} | {disk} |",
            s.calls,
            s.used,
            per(s.used)
        );
    }
    md.push_str(
        "\nBytes in use are the database's own count (SQLite: pages in use, the write-ahead log \
         included; PostgreSQL: `pg_database_size`). After the purge the store holds only the \
         calls of the rounds; on SQLite, incremental auto-vacuum gives the freed pages back to \
         the file system after each batch.\n",
    );
    md
}
