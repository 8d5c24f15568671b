//! `stateset-voice backup FILE` copies a live SQLite database while the service keeps taking
//! new calls; it never writes over a file, and on PostgreSQL it points to pg_dump.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering::SeqCst},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, Statement};
use stateset_voice::{config::SqliteSynchronous, db, testkit::*};

use crate::support::{self, Server, Webhook};

/// Calls answered before the backup starts.
const ANSWERED_BEFORE: usize = 100;
/// Requests kept in flight during the backup.
const IN_FLIGHT: usize = 8;
/// Bound of each phase.
const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_is_consistent_and_holds_every_answered_call() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("voice.db").display());
    support::seed(&url, None).await;
    let server = Server::start(&url, &[]).await;

    // New calls keep arriving from before the backup until after it.
    let answered: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (answered, stop, base) = (answered.clone(), stop.clone(), server.base.clone());
            tokio::spawn(async move {
                let client = support::client();
                let deadline = Instant::now() + DEADLINE;
                while !stop.load(SeqCst) && Instant::now() < deadline {
                    let hook = Webhook::incoming(&call_sid());
                    let (status, body) = hook.send(&client, &base).await.expect("answered");
                    assert_eq!(status, 200, "{body}");
                    answered.lock().unwrap().push(hook.call_sid);
                }
            })
        })
        .collect();
    let deadline = Instant::now() + DEADLINE;
    while answered.lock().unwrap().len() < ANSWERED_BEFORE {
        assert!(Instant::now() < deadline, "the load did not get going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Every call answered so far was committed before its answer was sent.
    let before: Vec<String> = answered.lock().unwrap().clone();
    let copy = dir.path().join("copy.db");
    let out = support::cli_output(&url, &["backup", copy.to_str().unwrap()]).await;
    let answered_during = answered.lock().unwrap().len() - before.len();
    stop.store(true, SeqCst);
    for task in load {
        task.await.expect("the load ran without failures");
    }
    assert!(
        out.status.success(),
        "backup failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("backup written to "));

    let backup = db::connect_url(
        &format!("sqlite://{}?mode=rw", copy.display()),
        1,
        SqliteSynchronous::Full,
        None,
    )
    .await
    .expect("the copy opens");
    let one = |sql: &'static str| {
        let backup = backup.clone();
        async move {
            backup
                .query_one(Statement::from_string(backup.get_database_backend(), sql))
                .await
                .expect(sql)
                .expect("a row")
        }
    };
    let integrity: String = one("PRAGMA integrity_check").await.try_get_by_index(0).unwrap();
    assert_eq!(integrity, "ok");
    let auto_vacuum: i64 = one("PRAGMA auto_vacuum").await.try_get_by_index(0).unwrap();
    assert_eq!(auto_vacuum, 2, "the copy has incremental auto-vacuum");
    for sid in &before {
        assert!(
            db::calls::by_sid(&backup, sid).await.unwrap().is_some(),
            "{sid} was answered before the backup began but is not in the copy"
        );
    }
    let copied: i64 = one("SELECT count(*) FROM calls")
        .await
        .try_get_by_index(0)
        .unwrap();
    assert!(copied as usize >= before.len());
    eprintln!(
        "copied {copied} calls; {} answered before the backup began, {answered_during} while it ran",
        before.len()
    );

    // A second backup to the same file is refused and leaves the file as it was.
    let bytes = std::fs::read(&copy).unwrap();
    let out = support::cli_output(&url, &["backup", copy.to_str().unwrap()]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already exists; refusing to overwrite it"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        bytes,
        "the existing file is untouched"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn backup_points_postgres_users_to_pg_dump_and_needs_a_database_file() {
    let out = support::cli_output(
        "postgres://postgres@127.0.0.1:5432/test",
        &["backup", "/nonexistent-dir/x.db"],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pg_dump") && stderr.contains("pg_restore"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}?mode=rwc", dir.path().join("missing.db").display());
    let copy = dir.path().join("copy.db");
    let out = support::cli_output(&missing, &["backup", copy.to_str().unwrap()]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(
        !copy.exists() && !dir.path().join("missing.db").exists(),
        "nothing written"
    );
}
