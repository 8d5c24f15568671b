//! Supervised tasks: a task that panics is reported by `/readyz` until it is restarted, and
//! its restart is counted in `/metrics`.
use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use serde_json::Value;
use stateset_voice::{
    backend_test,
    testkit::*,
    worker::supervisor::{Backoff, Stage, Supervisor},
};
use tokio::time::Instant;

async fn readyz(app: &TestApp) -> (u16, Value) {
    let res = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// Polls `/readyz` (up to ten seconds) until it answers `status`.
async fn readyz_until(app: &TestApp, status: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (got, body) = readyz(app).await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never answered {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

backend_test!(a_panicking_task_is_restarted_and_readiness_follows);
async fn a_panicking_task_is_restarted_and_readiness_follows(app: TestApp) {
    // The app's own tasks are supervised from the start, each series at zero.
    let text = app.metrics().await;
    for task in ["server", "writer"] {
        assert!(
            text.contains(&format!("voice_worker_restarts_total{{worker=\"{task}\"}} 0")),
            "{text}"
        );
    }

    // A task beside them, reporting to the same readiness and metrics, that panics on its first
    // run when told to and then runs until shutdown. A second-long backoff keeps it visibly down.
    let mut supervisor = Supervisor::for_state(&app.state).with_backoff(Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(1),
        healthy_after: Duration::from_secs(60),
    });
    let runs = Arc::new(AtomicU32::new(0));
    let (fail, failing) = tokio::sync::watch::channel(false);
    supervisor.spawn("flaky", Stage::Workers, {
        let runs = runs.clone();
        move |stop| {
            let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
            let mut failing = failing.clone();
            async move {
                if run == 1 {
                    let _ = failing.wait_for(|fail| *fail).await;
                    panic!("injected failure");
                }
                stop.cancelled().await;
            }
        }
    });
    let body = readyz_until(&app, 200).await;
    assert_eq!(body["status"], "ready");
    assert!(body.get("tasks_down").is_none(), "{body}");
    assert!(app
        .metrics()
        .await
        .contains("voice_worker_restarts_total{worker=\"flaky\"} 0"));

    fail.send_replace(true);
    let body = readyz_until(&app, 503).await;
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["tasks_down"], serde_json::json!(["flaky"]));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "down until the backoff ends");

    let body = readyz_until(&app, 200).await;
    assert!(body.get("tasks_down").is_none(), "{body}");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "restarted once");
    let text = app.metrics().await;
    assert!(
        text.contains("voice_worker_restarts_total{worker=\"flaky\"} 1"),
        "{text}"
    );
    // The app kept answering webhooks meanwhile, through its supervised writer.
    app.seed().await;
    assert_eq!(app.incoming(&call_sid()).await.status(), 200);

    supervisor.shutdown().await;
    assert_eq!(
        readyz(&app).await.0,
        200,
        "a task stopped at shutdown is not down"
    );
}
