//! The retention purge: exactly the rows older than the window go, in batches, pending events
//! never; `VOICE_RETENTION_DAYS=0` keeps everything; a purge waits out a database outage; and
//! every batch selects through an index.
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::{
    alert, call, call_webhook, diagnostic, media_session, outbox_event,
    states::{DiagnosticKind, OutboxStatus},
};
use sea_orm::{sea_query::Expr, ColumnTrait, EntityTrait, QueryFilter};
use stateset_voice::{
    backend_test,
    db::{
        self,
        alerts::NewAlert,
        diagnostics::DiagnosticRow,
        retention::{AutoVacuum, Selection},
    },
    domain::retention::{purge, Policy, Purged},
    events::{CallCompletedData, Event},
    state::AppState,
    testkit::*,
    worker,
};
use tokio_util::sync::CancellationToken;

const WINDOW_DAYS: u64 = 90;

/// What the fixture stored: which rows are past the window and which are not.
struct Fixture {
    old_calls: Vec<String>,
    new_calls: Vec<String>,
    /// Events past the window that are finished (delivered, dead, skipped).
    old_finished_events: Vec<String>,
    /// Every other event: pending ones past the window, and recent ones.
    kept_events: Vec<String>,
    old_diagnostic: String,
    new_diagnostic: String,
    old_alert: String,
    new_alert: String,
}

/// A day past the window.
fn past_the_window() -> DateTime<Utc> {
    Utc::now() - chrono::Duration::days(WINDOW_DAYS as i64 + 1)
}

fn policy(batch_size: u64) -> Policy {
    Policy {
        max_age: Duration::from_secs(WINDOW_DAYS * 86_400),
        batch_size,
        pause: Duration::ZERO,
    }
}

/// Five calls past the window and three recent ones, each with its answer and a media
/// session; events, diagnostics and alerts on both sides of the window.
async fn fixture(app: &TestApp) -> Fixture {
    let (tenant, _) = app.seed().await;
    let db = &app.state.db;
    let old_calls: Vec<String> = (0..5).map(|_| call_sid()).collect();
    let new_calls: Vec<String> = (0..3).map(|_| call_sid()).collect();
    for sid in old_calls.iter().chain(&new_calls) {
        assert_eq!(app.incoming(sid).await.status(), 200);
        let call = app.call(sid).await.expect("stored");
        db::media::open(db, &call.id, &uuid::Uuid::new_v4().to_string(), "MZ0")
            .await
            .expect("session")
            .expect("opened");
    }
    call::Entity::update_many()
        .col_expr(call::Column::CreatedAt, Expr::value(past_the_window()))
        .filter(call::Column::CallSid.is_in(old_calls.clone()))
        .exec(db)
        .await
        .expect("backdate calls");

    // Each call stored a pending `call.received` event of its own (recent: kept).
    let mut kept_events: Vec<String> = outbox_event::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    let mut old_finished_events = Vec::new();
    let completed = Event::CallCompleted(CallCompletedData::from(
        &app.call(&new_calls[0]).await.expect("stored"),
    ));
    for (status, old) in [
        (OutboxStatus::Delivered, true),
        (OutboxStatus::Dead, true),
        (OutboxStatus::Skipped, true),
        (OutboxStatus::Pending, true),
        (OutboxStatus::Delivered, false),
        (OutboxStatus::Dead, false),
    ] {
        let event = db::outbox::record(db, &tenant.id, &completed)
            .await
            .expect("event");
        let created_at = if old { past_the_window() } else { Utc::now() };
        outbox_event::Entity::update_many()
            .col_expr(outbox_event::Column::Status, Expr::value(status.as_str()))
            .col_expr(outbox_event::Column::CreatedAt, Expr::value(created_at))
            .filter(outbox_event::Column::Id.eq(&event.id))
            .exec(db)
            .await
            .expect("age the event");
        if old && status != OutboxStatus::Pending {
            old_finished_events.push(event.id);
        } else {
            kept_events.push(event.id);
        }
    }

    let mut diagnostics = Vec::new();
    for key in ["+15550000001", "+15550000002"] {
        let row = DiagnosticRow {
            kind: DiagnosticKind::UnknownRoute,
            key,
            tenant_id: None,
            route_id: None,
            detail: None,
        };
        db::diagnostics::record(db, &row, 1, Duration::from_secs(60))
            .await
            .expect("diagnostic");
        let stored = diagnostic::Entity::find()
            .filter(diagnostic::Column::Key.eq(key))
            .one(db)
            .await
            .unwrap()
            .expect("stored");
        diagnostics.push(stored.id);
    }
    diagnostic::Entity::update_many()
        .col_expr(diagnostic::Column::LastSeen, Expr::value(past_the_window()))
        .filter(diagnostic::Column::Id.eq(&diagnostics[0]))
        .exec(db)
        .await
        .expect("age the diagnostic");

    let mut alerts = Vec::new();
    for _ in 0..2 {
        let alert = db::alerts::insert(
            db,
            NewAlert {
                tenant_id: Some(&tenant.id),
                route_id: None,
                kind: DiagnosticKind::SignatureFailure,
                message: "signature failures".to_owned(),
                failure_count: 5,
                window_start: Utc::now(),
            },
        )
        .await
        .expect("alert");
        alerts.push(alert.id);
    }
    alert::Entity::update_many()
        .col_expr(alert::Column::CreatedAt, Expr::value(past_the_window()))
        .filter(alert::Column::Id.eq(&alerts[0]))
        .exec(db)
        .await
        .expect("age the alert");

    Fixture {
        old_calls,
        new_calls,
        old_finished_events,
        kept_events,
        old_diagnostic: diagnostics[0].clone(),
        new_diagnostic: diagnostics[1].clone(),
        old_alert: alerts[0].clone(),
        new_alert: alerts[1].clone(),
    }
}

/// Asserts that exactly the fixture's recent rows (and its old pending event) are left, or,
/// with `purged == false`, that everything is.
async fn assert_left(app: &TestApp, f: &Fixture, purged: bool) {
    let db = &app.state.db;
    let mut sids: Vec<String> = call::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.call_sid)
        .collect();
    sids.sort();
    let mut expected: Vec<String> = if purged {
        f.new_calls.clone()
    } else {
        f.old_calls.iter().chain(&f.new_calls).cloned().collect()
    };
    expected.sort();
    assert_eq!(sids, expected, "calls left");
    let calls = expected.len() as u64;
    assert_eq!(app.count(call_webhook::Entity).await, calls, "answers left");
    assert_eq!(
        app.count(media_session::Entity).await,
        calls,
        "media sessions left"
    );

    let mut events: Vec<String> = outbox_event::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    events.sort();
    let mut expected = f.kept_events.clone();
    if !purged {
        expected.extend(f.old_finished_events.iter().cloned());
    }
    expected.sort();
    assert_eq!(events, expected, "events left");

    let ids = |rows: Vec<String>| {
        let mut rows = rows;
        rows.sort();
        rows
    };
    let diagnostics = ids(diagnostic::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect());
    let alerts = ids(alert::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect());
    if purged {
        assert_eq!(diagnostics, vec![f.new_diagnostic.clone()]);
        assert_eq!(alerts, vec![f.new_alert.clone()]);
    } else {
        assert_eq!(
            diagnostics,
            ids(vec![f.old_diagnostic.clone(), f.new_diagnostic.clone()])
        );
        assert_eq!(alerts, ids(vec![f.old_alert.clone(), f.new_alert.clone()]));
    }
}

/// One purge run now, two rows per batch.
async fn purge_in_pairs(state: &AppState, stop: &CancellationToken) -> Purged {
    purge(
        &state.db,
        &policy(2),
        Utc::now(),
        &state.outage,
        &state.metrics,
        stop,
    )
    .await
    .expect("purge")
}

backend_test!(the_purge_deletes_exactly_the_old_rows_in_batches);
async fn the_purge_deletes_exactly_the_old_rows_in_batches(app: TestApp) {
    let f = fixture(&app).await;
    let stop = CancellationToken::new();
    let state = &app.state;
    let purged = purge_in_pairs(state, &stop).await;
    assert_eq!(
        purged,
        Purged {
            calls: 5,
            call_webhooks: 5,
            media_sessions: 5,
            outbox_events: 3,
            diagnostics: 1,
            alerts: 1,
            // Calls 2 + 2 + 1, events 2 + 1, one diagnostic, one alert.
            batches: 7,
            complete: true,
        }
    );
    assert_left(&app, &f, true).await;
    let metrics = app.metrics().await;
    for (table, n) in [
        ("calls", 5),
        ("call_webhooks", 5),
        ("media_sessions", 5),
        ("outbox_events", 3),
        ("diagnostics", 1),
        ("alerts", 1),
    ] {
        let series = format!("voice_retention_deleted_total{{table=\"{table}\"}} {n}\n");
        assert!(metrics.contains(&series), "{series}in\n{metrics}");
    }

    // Nothing is left to delete; a retry of a recent call is still answered from its record.
    let again = purge(
        &state.db,
        &policy(2),
        Utc::now(),
        &state.outage,
        &state.metrics,
        &stop,
    )
    .await
    .expect("purge");
    assert_eq!((again.total(), again.batches, again.complete), (0, 0, true));
    assert_eq!(app.incoming(&f.new_calls[0]).await.status(), 200);
    assert_eq!(app.call(&f.new_calls[0]).await.expect("kept").attempts, 2);
}

backend_test!(retention_zero_keeps_everything, |a| a.retention_days = 0);
async fn retention_zero_keeps_everything(app: TestApp) {
    let f = fixture(&app).await;
    assert_eq!(Policy::from_config(&app.state.config.retention), None);
    // The worker has nothing to do but wait for shutdown.
    let stop = CancellationToken::new();
    stop.cancel();
    tokio::time::timeout(
        Duration::from_secs(10),
        worker::retention::run(app.state.clone(), stop),
    )
    .await
    .expect("the worker stops at once");
    assert_left(&app, &f, false).await;
}

backend_test!(a_worker_run_purges_logs_and_records_its_time);
async fn a_worker_run_purges_logs_and_records_its_time(app: TestApp) {
    let f = fixture(&app).await;
    assert!(app
        .metrics()
        .await
        .contains("voice_retention_last_run_timestamp_seconds 0\n"));
    let before = Utc::now().timestamp();
    let policy = Policy::from_config(&app.state.config.retention).expect("90 days by default");
    let purged = worker::retention::run_once(&app.state, &policy, &CancellationToken::new())
        .await
        .expect("the run succeeds");
    assert_eq!((purged.calls, purged.outbox_events), (5, 3));
    assert_left(&app, &f, true).await;
    let metrics = app.metrics().await;
    let last_run: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("voice_retention_last_run_timestamp_seconds "))
        .expect("the gauge is exported")
        .parse()
        .unwrap();
    assert!(last_run >= before, "{last_run} < {before}");
}

backend_test!(a_purge_waits_while_the_database_circuit_is_open);
async fn a_purge_waits_while_the_database_circuit_is_open(app: TestApp) {
    let f = fixture(&app).await;
    let state = app.state.clone();
    state.outage.failed(
        &sea_orm::DbErr::Custom("injected outage".to_owned()),
        &state.diagnostics,
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let state = state.clone();
        let stop = stop.clone();
        async move {
            purge(
                &state.db,
                &policy(2),
                Utc::now(),
                &state.outage,
                &state.metrics,
                &stop,
            )
            .await
        }
    });
    // However long the circuit stays open, nothing is deleted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!running.is_finished(), "the purge waits for the database");
    assert_left(&app, &f, false).await;
    state.outage.probe_succeeded();
    let purged = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the purge goes on once the circuit closes")
        .expect("join")
        .expect("purge");
    assert_eq!((purged.calls, purged.complete), (5, true));
    assert_left(&app, &f, true).await;
}

backend_test!(a_stopped_purge_ends_between_batches);
async fn a_stopped_purge_ends_between_batches(app: TestApp) {
    let f = fixture(&app).await;
    let state = &app.state;
    let stop = CancellationToken::new();
    stop.cancel();
    let purged = purge_in_pairs(state, &stop).await;
    assert_eq!((purged.total(), purged.complete), (0, false));
    assert_left(&app, &f, false).await;
}

backend_test!(every_batch_selects_through_its_index);
async fn every_batch_selects_through_its_index(fresh: FreshDatabase) {
    let db = &fresh.db;
    let cutoff = Utc::now();
    // The deletes of a batch of calls' rows go through the indexes on call_id too.
    let mut checks: Vec<(String, &str)> = Selection::ALL.iter().map(|s| (s.sql(250), s.index())).collect();
    checks.push((
        "DELETE FROM call_webhooks WHERE call_id IN ($1)".to_owned(),
        "uq_call_webhooks_call_kind",
    ));
    checks.push((
        "DELETE FROM media_sessions WHERE call_id IN ($1)".to_owned(),
        "idx_media_sessions_call",
    ));
    for (sql, index) in checks {
        let value: sea_orm::Value = if sql.starts_with("DELETE") {
            "x".into()
        } else {
            cutoff.into()
        };
        let plan = fresh.query_plan(&sql, vec![value]).await;
        assert!(plan.contains(index), "{sql}\nshould use {index}:\n{plan}");
        assert!(!plan.contains("SCAN calls"), "{sql}\n{plan}");
    }
    if fresh.backend == Backend::Sqlite {
        assert_eq!(
            db::retention::sqlite_auto_vacuum(db).await.unwrap(),
            Some(AutoVacuum::Incremental),
            "a new file gives freed pages back"
        );
    }
}
