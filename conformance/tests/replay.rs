//! Replays every recorded fixture on SQLite and on PostgreSQL and compares the transcripts with
//! the reviewed snapshots. Both backends must produce the same transcript.
//! `CONFORMANCE_FIXTURES=name,name` replays only those fixtures (while writing one).
use std::panic::{catch_unwind, AssertUnwindSafe};

use conformance::{assert_matches_snapshot, load_fixtures, replay};
use stateset_voice::testkit::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_replay_to_their_snapshots() {
    let fixtures = load_fixtures();
    assert!(
        fixtures.len() >= 30,
        "expected at least 30 fixtures, found {}",
        fixtures.len()
    );
    let only: Option<Vec<String>> = std::env::var("CONFORMANCE_FIXTURES")
        .ok()
        .map(|names| names.split(',').map(str::to_owned).collect());
    let mut failures = Vec::new();
    let mut replays = 0;
    for (name, fixture) in &fixtures {
        if only.as_ref().is_some_and(|only| !only.contains(name)) {
            continue;
        }
        for request in &fixture.requests {
            if let Some(genuine) = request.genuine_signature() {
                assert_eq!(
                    request.signature.as_deref(),
                    Some(genuine.as_str()),
                    "fixture {name}: stored signature is stale; run `cargo run -p conformance --bin resign`"
                );
            }
        }
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let Some(transcript) = replay(backend, fixture).await else {
                continue;
            };
            replays += 1;
            if catch_unwind(AssertUnwindSafe(|| assert_matches_snapshot(name, &transcript))).is_err() {
                failures.push(format!("{name} on {backend:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "transcripts differ from their snapshots: {failures:#?}"
    );
    println!(
        "conformance: {} fixtures, {replays} replays, all match",
        fixtures.len()
    );
}
