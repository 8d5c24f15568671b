//! Database outages over real server processes: PostgreSQL cut for seconds under load (a TCP
//! proxy in the test), an instance killed with calls still in its spool, and SQLite on a full
//! disk. Every call answered 200 is stored exactly once, no request waits long, callers hear
//! the route's fallback throughout, and calls stream again within a second of the database's
//! return.
use std::{
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering::SeqCst},
        Arc,
    },
    time::{Duration, Instant},
};

use stateset_voice::testkit::*;

use crate::support::{self, Server, Stored, Webhook};

/// How long the database is away.
const CUT: Duration = Duration::from_secs(3);
/// The slowest answer a caller may wait for.
const SLOWEST: Duration = Duration::from_secs(5);
/// How soon after the database's return calls stream again.
const RECOVERY: Duration = Duration::from_secs(1);

/// One request and what came back.
struct Sent {
    hook: Webhook,
    sent_at: Instant,
    took: Duration,
    result: Result<(u16, String), String>,
}

impl Sent {
    fn body(&self) -> &str {
        match &self.result {
            Ok((200, body)) => body,
            other => panic!(
                "{} {} was not answered 200: {other:?}",
                self.hook.path, self.hook.call_sid
            ),
        }
    }
}

/// Sends a new webhook made by `make` every `every` until `stop`.
async fn load(base: String, every: Duration, stop: Arc<AtomicBool>, make: fn(&str) -> Webhook) -> Vec<Sent> {
    let client = support::client();
    let mut tick = tokio::time::interval(every);
    let mut in_flight = tokio::task::JoinSet::new();
    while !stop.load(SeqCst) {
        tick.tick().await;
        let (client, base, hook) = (client.clone(), base.clone(), make(&call_sid()));
        in_flight.spawn(async move {
            let sent_at = Instant::now();
            let result = hook.send(&client, &base).await;
            Sent {
                hook,
                sent_at,
                took: sent_at.elapsed(),
                result,
            }
        });
    }
    in_flight.join_all().await
}

/// The value of a series on the server's `/metrics`.
async fn metric(base: &str, series: &str) -> f64 {
    let text = support::client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series}"))
}

/// Waits until the server has replayed its spool and ended the outage.
async fn until_replayed(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&server.base, "voice_spool_depth").await > 0.0
        || metric(&server.base, "voice_database_available").await < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the spool was not replayed:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn is_stream(body: &str) -> bool {
    body.contains("<Connect") && body.contains("<Stream")
}

/// The answer of a route without a fallback of its own, nor its tenant: the platform message.
fn is_audible_fallback(body: &str) -> bool {
    body.contains("<Say>") && !body.contains("<Stream")
}

/// A seeded PostgreSQL schema, the proxy in front of it, the `VOICE_DATABASE_URL` through the
/// proxy, and a spool directory; `None` only when PostgreSQL tests are skipped outside CI.
async fn seeded_behind_a_proxy() -> Option<(FreshDatabase, DbProxy, String, tempfile::TempDir)> {
    let fresh = fresh_database(Backend::Postgres, 2).await?;
    let proxy = DbProxy::start(postgres_addr(&fresh.url)).await;
    let url = postgres_url_via(&fresh.process_url(), proxy.addr());
    support::seed(&url, None).await;
    Some((fresh, proxy, url, tempfile::tempdir().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_cut_under_load_loses_no_call_and_recovers_within_a_second() {
    let Some((fresh, proxy, url, spool)) = seeded_behind_a_proxy().await else {
        return;
    };
    let server = Server::start(&url, &[("VOICE_SPOOL_DIR", spool.path().to_str().unwrap())]).await;
    let (status, body) = Webhook::incoming(&call_sid())
        .send(&support::client(), &server.base)
        .await
        .unwrap();
    assert!(status == 200 && is_stream(&body), "{status} {body}");

    let stop = Arc::new(AtomicBool::new(false));
    let calls = tokio::spawn(load(
        server.base.clone(),
        Duration::from_millis(20),
        stop.clone(),
        Webhook::incoming,
    ));
    let fallbacks = tokio::spawn(load(
        server.base.clone(),
        Duration::from_millis(100),
        stop.clone(),
        Webhook::fallback,
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cut_at = Instant::now();
    proxy.cut();
    tokio::time::sleep(CUT).await;
    proxy.heal();
    let healed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, SeqCst);
    let calls = calls.await.unwrap();
    let fallbacks = fallbacks.await.unwrap();
    until_replayed(&server).await;

    for sent in calls.iter().chain(&fallbacks) {
        assert!(sent.took < SLOWEST, "{} took {:?}", sent.hook.call_sid, sent.took);
        let body = sent.body();
        assert!(is_stream(body) || is_audible_fallback(body), "silence: {body}");
    }
    // During the cut (once the first failure was seen) callers hear the fallback; the
    // Fallback URL answers audibly throughout.
    let during =
        |s: &&Sent| s.sent_at > cut_at + Duration::from_millis(100) && s.sent_at + s.took < healed_at;
    let degraded: Vec<&Sent> = calls.iter().filter(during).collect();
    assert!(
        degraded.len() > 50,
        "only {} calls during the cut",
        degraded.len()
    );
    for sent in &degraded {
        assert!(is_audible_fallback(sent.body()), "{}", sent.body());
    }
    assert!(fallbacks.iter().filter(during).count() > 10);
    for sent in &fallbacks {
        assert!(is_audible_fallback(sent.body()));
    }
    // Within a second of the database's return every new call streams again.
    let late: Vec<&Sent> = calls
        .iter()
        .filter(|s| s.sent_at > healed_at + RECOVERY)
        .collect();
    assert!(late.len() > 20);
    for sent in &late {
        assert!(is_stream(sent.body()), "not recovered: {}", sent.body());
    }

    // Every call answered 200 is stored exactly once, as it was answered.
    let stored = Stored::load(&fresh.db).await;
    for sent in &calls {
        let sid = &sent.hook.call_sid;
        let call = stored.call(sid);
        assert!(
            stored.answered_with(sid, sent.body()),
            "{sid} stored with another answer"
        );
        stored.event(sid);
        if is_audible_fallback(sent.body()) {
            assert_eq!(
                call.fallback_reason,
                Some(entity::states::FallbackReason::DatabaseUnavailable)
            );
        }
    }
    for sent in &fallbacks {
        let call = stored.call(&sent.hook.call_sid);
        assert_eq!(call.error_code.as_deref(), Some("11200"));
        stored.event(&sent.hook.call_sid);
    }
    assert_eq!(stored.calls.len(), calls.len() + fallbacks.len() + 1);
    // One line at the start of the outage and one at its end, not one per request.
    let log = server.log();
    assert_eq!(log.matches("database unreachable").count(), 1, "{log}");
    assert_eq!(log.matches("database reachable again").count(), 1, "{log}");
    assert_eq!(metric(&server.base, "voice_database_outages_total").await, 1.0);
    let degraded_total = metric(&server.base, "voice_degraded_calls_total").await;
    assert!(degraded_total >= (degraded.len() + 10) as f64, "{degraded_total}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spooled_by_an_instance_killed_during_an_outage_are_stored_by_the_next() {
    let Some((fresh, proxy, url, spool)) = seeded_behind_a_proxy().await else {
        return;
    };
    let settings = [("VOICE_SPOOL_DIR", spool.path().to_str().unwrap())];
    let mut first = Server::start(&url, &settings).await;
    let client = support::client();
    let warm = Webhook::incoming(&call_sid())
        .send(&client, &first.base)
        .await
        .unwrap();
    assert_eq!(warm.0, 200);
    proxy.cut();
    let mut answered = Vec::new();
    for _ in 0..5 {
        let hook = Webhook::incoming(&call_sid());
        let (status, body) = hook.send(&client, &first.base).await.unwrap();
        assert!(status == 200 && is_audible_fallback(&body), "{status} {body}");
        answered.push((hook.call_sid, body));
    }
    first.kill();
    proxy.heal();
    assert!(spool_files(spool.path()) > 0, "the calls are on disk");
    let next = Server::start(&url, &settings).await;
    until_replayed(&next).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let stored = loop {
        let stored = Stored::load(&fresh.db).await;
        if answered.iter().all(|(sid, _)| stored.calls.contains_key(sid)) {
            break stored;
        }
        assert!(
            Instant::now() < deadline,
            "spooled calls not stored:\n{}",
            next.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stored.assert_consistent();
    for (sid, body) in &answered {
        assert!(stored.answered_with(sid, body));
        assert_eq!(stored.call(sid).attempts, 1);
    }
    assert_eq!(spool_files(spool.path()), 0, "the replayed file is removed");
}

/// Spool files in `dir`.
fn spool_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("calls-")
        })
        .count()
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// `None` where mounting is not allowed (not root).
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|out| out.status.success());
        mounted.then_some(Self(dir))
    }

    /// Fills the file system; the filler is removed to make room again.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.0.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        // What is left is smaller than a block.
        while file.write_all(&block[..512]).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_on_a_full_disk_answers_from_the_spool_and_catches_up() {
    let Some(disk) = Tmpfs::mount("8m") else {
        eprintln!("SKIPPED: mounting a tmpfs needs root; the full-disk test did not run");
        return;
    };
    let url = format!("sqlite://{}?mode=rwc", disk.0.path().join("voice.db").display());
    support::seed(&url, None).await;
    let spool = tempfile::tempdir().unwrap();
    let server = Server::start(&url, &[("VOICE_SPOOL_DIR", spool.path().to_str().unwrap())]).await;
    let client = support::client();
    let (status, body) = Webhook::incoming(&call_sid())
        .send(&client, &server.base)
        .await
        .unwrap();
    assert!(status == 200 && is_stream(&body), "{status} {body}");

    let filler = disk.fill();
    let mut answered = Vec::new();
    for _ in 0..20 {
        let hook = Webhook::incoming(&call_sid());
        let started = Instant::now();
        let (status, body) = hook.send(&client, &server.base).await.unwrap();
        assert!(started.elapsed() < SLOWEST);
        assert_eq!(status, 200, "{body}\n{}", server.log());
        answered.push((hook.call_sid, body));
    }
    let degraded = answered.iter().filter(|(_, b)| is_audible_fallback(b)).count();
    assert!(degraded > 0, "the full disk was never noticed:\n{}", server.log());
    let (status, body) = Webhook::fallback(&call_sid())
        .send(&client, &server.base)
        .await
        .unwrap();
    assert!(status == 200 && is_audible_fallback(&body));

    std::fs::remove_file(filler).unwrap();
    until_replayed(&server).await;
    let db = stateset_voice::db::connect_url(&url, 1, Default::default(), None)
        .await
        .unwrap();
    let stored = Stored::load(&db).await;
    for (sid, body) in &answered {
        assert!(stored.answered_with(sid, body), "{sid}");
        stored.event(sid);
    }
    let after = Webhook::incoming(&call_sid())
        .send(&client, &server.base)
        .await
        .unwrap();
    assert!(is_stream(&after.1), "streams again: {}", after.1);
    drop(server);
    drop(db);
}
