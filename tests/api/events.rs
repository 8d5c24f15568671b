//! Downstream events (outbox delivery), call status callbacks and metrics.
use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use entity::outbox_event;
use futures::future::BoxFuture;
use sea_orm::EntityTrait;
use stateset_voice::{
    api::{calls::Call, common::List, ops::Event},
    backend_test,
    config::ConfigArgs,
    domain::admin::{NewRoute, NewTenant},
    net::resolver::Lookup,
    testkit::*,
    twilio::form::FormParams,
    worker::outbox,
};
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, ResponseTemplate,
};

async fn receiver(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

/// Quick delivery settings: retries after a millisecond, deliveries time out after 300 ms.
fn quick_delivery(a: &mut ConfigArgs) {
    a.webhook_retry_base = Duration::from_millis(1);
    a.webhook_timeout = Duration::from_millis(300);
}

/// Seeds the standard tenant and route, the tenant's events delivered to `server`.
async fn seed_receiver(app: &TestApp, server: &MockServer) -> entity::tenant::Model {
    let hook = format!("{}/hook", server.uri());
    let (tenant, _) = app
        .seed_with(
            NewTenant {
                webhook_url: Some(hook),
                ..Default::default()
            },
            NewRoute::default(),
        )
        .await;
    tenant
}

async fn all_events(app: &TestApp) -> Vec<outbox_event::Model> {
    outbox_event::Entity::find().all(&app.state.db).await.unwrap()
}

/// Runs delivery rounds until nothing is due or `rounds` ran.
async fn rounds(app: &TestApp, rounds: usize) {
    let client = outbox::DeliveryClient::new(&app.state.config.outbox).unwrap();
    for _ in 0..rounds {
        outbox::deliver_due(&app.state, &client).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

backend_test!(delivery_is_signed_per_standard_webhooks, quick_delivery);
async fn delivery_is_signed_per_standard_webhooks(app: TestApp) {
    let server = receiver(ResponseTemplate::new(204)).await;
    let tenant = seed_receiver(&app, &server).await;
    let sid = call_sid();
    assert_eq!(app.incoming(&sid).await.status(), 200);
    rounds(&app, 3).await;

    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 1, "one event, delivered once");
    let request = &received[0];
    let mut headers = http::HeaderMap::new();
    for (name, value) in request.headers.iter() {
        headers.insert(
            http::HeaderName::from_bytes(name.as_str().as_bytes()).unwrap(),
            http::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
        );
    }
    let verifier = standardwebhooks::Webhook::new(&tenant.webhook_secret).unwrap();
    verifier
        .verify(&request.body, &headers)
        .expect("a Standard Webhooks verifier accepts the delivery");
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["type"], "call.received");
    assert_eq!(body["data"]["call_sid"], sid.as_str());
    let event = &all_events(&app).await[0];
    assert_eq!(headers["webhook-id"], event.id.as_str());
    assert_eq!((event.status.as_str(), event.attempts), ("delivered", 1));
    assert!(event.delivered_at.is_some() && event.last_error.is_none());

    // A tampered body or another secret does not verify.
    let mut tampered = request.body.clone();
    tampered[0] = b' ';
    assert!(verifier.verify(&tampered, &headers).is_err());
    let other = standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert!(other.verify(&request.body, &headers).is_err());
}

backend_test!(retries_after_errors_and_timeouts, quick_delivery);
async fn retries_after_errors_and_timeouts(app: TestApp) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    seed_receiver(&app, &server).await;
    assert_eq!(app.incoming(&call_sid()).await.status(), 200);

    rounds(&app, 2).await;
    let event = &all_events(&app).await[0];
    assert_eq!((event.status.as_str(), event.attempts), ("pending", 2));
    assert_eq!(event.last_error.as_deref(), Some("receiver answered HTTP 500"));
    rounds(&app, 1).await;
    let event = &all_events(&app).await[0];
    assert_eq!(
        (event.status.as_str(), event.last_error.as_deref()),
        ("pending", Some("timed out"))
    );
    rounds(&app, 3).await;
    let event = &all_events(&app).await[0];
    assert_eq!(
        (event.status.as_str(), event.attempts, event.last_error.as_deref()),
        ("delivered", 4, None)
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 4);
}

backend_test!(dead_letter_after_the_attempt_limit, |a| {
    quick_delivery(a);
    a.webhook_max_attempts = 3;
});
async fn dead_letter_after_the_attempt_limit(app: TestApp) {
    let server = receiver(ResponseTemplate::new(503)).await;
    seed_receiver(&app, &server).await;
    assert_eq!(app.incoming(&call_sid()).await.status(), 200);
    rounds(&app, 6).await;
    let event = &all_events(&app).await[0];
    assert_eq!((event.status.as_str(), event.attempts), ("dead", 3));
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        3,
        "nothing after the dead letter"
    );
    let listed: List<Event> = app.get("/api/v1/events").await;
    assert_eq!(listed.items[0].status.as_str(), "dead");
    assert_eq!(
        listed.items[0].last_error.as_deref(),
        Some("receiver answered HTTP 503")
    );
}

backend_test!(delivery_resumes_after_a_crash_mid_delivery, |a| {
    quick_delivery(a);
    a.webhook_timeout = Duration::from_millis(100);
});
async fn delivery_resumes_after_a_crash_mid_delivery(app: TestApp) {
    let server = receiver(ResponseTemplate::new(200)).await;
    seed_receiver(&app, &server).await;
    assert_eq!(app.incoming(&call_sid()).await.status(), 200);
    // A worker leases the event and dies before delivering it.
    assert_eq!(outbox::claim(&app.state).await.unwrap().len(), 1);
    rounds(&app, 1).await;
    assert!(
        server.received_requests().await.unwrap().is_empty(),
        "the lease holds"
    );
    // After the lease, a restarted worker (a new process state on the same database) delivers it.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let restarted = stateset_voice::state::AppState::new(app.state.db.clone(), (*app.state.config).clone());
    let worker = tokio::spawn(outbox::run(restarted, Default::default()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while all_events(&app).await[0].status.as_str() != "delivered" {
        assert!(tokio::time::Instant::now() < deadline, "delivered after restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    worker.abort();
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "delivered once"
    );
    assert_eq!(all_events(&app).await[0].attempts, 2);
}

backend_test!(private_destinations_refused_when_guarded, |a| {
    quick_delivery(a);
    a.webhook_deny_private = true;
});
async fn private_destinations_refused_when_guarded(app: TestApp) {
    let server = receiver(ResponseTemplate::new(200)).await;
    seed_receiver(&app, &server).await;
    assert_eq!(app.incoming(&call_sid()).await.status(), 200);
    rounds(&app, 2).await;
    let event = &all_events(&app).await[0];
    assert_eq!(event.status.as_str(), "dead");
    assert!(
        event
            .last_error
            .as_deref()
            .unwrap()
            .contains("internal address 127.0.0.1"),
        "{event:?}"
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

/// A rebinding name server: a public address for the first lookup, then 127.0.0.1 (where the
/// receiver listens) for every lookup after it.
#[derive(Default)]
struct Rebinding {
    lookups: AtomicUsize,
}

impl Lookup for Rebinding {
    fn lookup(&self, _host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        let first = self.lookups.fetch_add(1, Ordering::SeqCst) == 0;
        let ip = if first { [192, 0, 2, 1] } else { [127, 0, 0, 1] };
        Box::pin(async move { Ok(vec![IpAddr::from(ip)]) })
    }
}

backend_test!(a_rebinding_name_never_reaches_the_private_address, |a| {
    quick_delivery(a);
    a.webhook_deny_private = true;
});
async fn a_rebinding_name_never_reaches_the_private_address(app: TestApp) {
    let server = receiver(ResponseTemplate::new(200)).await;
    let port = server.address().port();
    app.seed_with(
        NewTenant {
            webhook_url: Some(format!("http://rebind.test:{port}/hook")),
            ..Default::default()
        },
        NewRoute::default(),
    )
    .await;
    assert_eq!(app.incoming(&call_sid()).await.status(), 200);
    let dns = Arc::new(Rebinding::default());
    let client = outbox::DeliveryClient::with_lookup(&app.state.config.outbox, dns.clone()).unwrap();

    // First attempt: the name is checked once (public) and the connection goes to that
    // address, which does not answer; nothing is resolved a second time.
    assert_eq!(outbox::deliver_due(&app.state, &client).await.unwrap(), 1);
    assert_eq!(dns.lookups.load(Ordering::SeqCst), 1, "one lookup per attempt");
    let event = &all_events(&app).await[0];
    assert_eq!(event.status.as_str(), "pending", "{event:?}");
    let error = event.last_error.as_deref().unwrap();
    assert!(!error.contains("receiver answered"), "{error}");
    assert!(server.received_requests().await.unwrap().is_empty());

    // The retry resolves again, now to loopback: refused, with the reason stored.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(outbox::deliver_due(&app.state, &client).await.unwrap(), 1);
    assert_eq!(dns.lookups.load(Ordering::SeqCst), 2);
    let event = &all_events(&app).await[0];
    assert_eq!(
        (event.status.as_str(), event.last_error.as_deref()),
        (
            "dead",
            Some(
                "refused: rebind.test resolves to internal address 127.0.0.1 \
                 (VOICE_WEBHOOK_DENY_PRIVATE)"
            )
        )
    );
    assert!(
        server.received_requests().await.unwrap().is_empty(),
        "the private address never got a request"
    );
}

backend_test!(ip_literal_webhook_urls_are_checked_without_resolving, |a| {
    quick_delivery(a);
    a.webhook_deny_private = true;
});
async fn ip_literal_webhook_urls_are_checked_without_resolving(app: TestApp) {
    let server = receiver(ResponseTemplate::new(200)).await;
    seed_receiver(&app, &server).await;
    assert_eq!(app.incoming(&call_sid()).await.status(), 200);
    let dns = Arc::new(Rebinding::default());
    let client = outbox::DeliveryClient::with_lookup(&app.state.config.outbox, dns.clone()).unwrap();
    outbox::deliver_due(&app.state, &client).await.unwrap();
    let event = &all_events(&app).await[0];
    assert_eq!(
        (event.status.as_str(), event.last_error.as_deref()),
        (
            "dead",
            Some(
                "refused: 127.0.0.1 resolves to internal address 127.0.0.1 \
                 (VOICE_WEBHOOK_DENY_PRIVATE)"
            )
        )
    );
    assert_eq!(
        dns.lookups.load(Ordering::SeqCst),
        0,
        "a literal is not looked up"
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

backend_test!(tenant_without_webhook_url_is_skipped);
async fn tenant_without_webhook_url_is_skipped(app: TestApp) {
    app.seed().await;
    assert_eq!(app.incoming(&call_sid()).await.status(), 200);
    // The event of a new call is stored skipped: no delivery round claims it.
    let client = outbox::DeliveryClient::new(&app.state.config.outbox).unwrap();
    assert_eq!(outbox::deliver_due(&app.state, &client).await.unwrap(), 0);
    let event = &all_events(&app).await[0];
    assert_eq!(
        (event.status.as_str(), event.last_error.as_deref(), event.attempts),
        ("skipped", Some("tenant has no webhook_url"), 0)
    );
}

backend_test!(one_round_records_mixed_results_per_event, quick_delivery);
async fn one_round_records_mixed_results_per_event(app: TestApp) {
    // Events of a tenant with a receiver and of a tenant without one, claimed together: each
    // gets its own result.
    let server = receiver(ResponseTemplate::new(204)).await;
    let with_url = seed_receiver(&app, &server).await;
    let without_url = app
        .seed_tenant(NewTenant {
            name: "No receiver".to_owned(),
            account_sid: "AC0123456789abcdef0123456789abcdef".to_owned(),
            ..Default::default()
        })
        .await;
    let record = |tenant_id: String, n: usize| {
        let db = app.state.db.clone();
        async move {
            for i in 0..n {
                stateset_voice::db::outbox::record(&db, &tenant_id, &alert_event(i))
                    .await
                    .unwrap();
            }
        }
    };
    record(with_url.id.clone(), 4).await;
    record(without_url.id.clone(), 3).await;

    let client = outbox::DeliveryClient::new(&app.state.config.outbox).unwrap();
    assert_eq!(outbox::deliver_due(&app.state, &client).await.unwrap(), 7);
    let mut results: Vec<(String, String, Option<String>, bool)> = all_events(&app)
        .await
        .into_iter()
        .map(|e| {
            (
                e.tenant_id,
                e.status.to_string(),
                e.last_error,
                e.delivered_at.is_some(),
            )
        })
        .collect();
    results.sort();
    let expected = |tenant: &str, status: &str, error: Option<&str>, delivered: bool| {
        (
            tenant.to_owned(),
            status.to_owned(),
            error.map(str::to_owned),
            delivered,
        )
    };
    let mut wanted = Vec::new();
    wanted.extend(std::iter::repeat_n(
        expected(&with_url.id, "delivered", None, true),
        4,
    ));
    wanted.extend(std::iter::repeat_n(
        expected(
            &without_url.id,
            "skipped",
            Some("tenant has no webhook_url"),
            false,
        ),
        3,
    ));
    wanted.sort();
    assert_eq!(results, wanted);
    assert_eq!(server.received_requests().await.unwrap().len(), 4);
    assert_eq!(
        outbox::deliver_due(&app.state, &client).await.unwrap(),
        0,
        "nothing is left due"
    );
}

fn status_form(sid: &str, status: &str, duration: Option<&str>) -> FormParams {
    let mut form = incoming_form_with(sid, "CallStatus", status);
    if let Some(d) = duration {
        form.push("CallDuration", d);
    }
    form
}

backend_test!(status_callbacks_update_the_call_once);
async fn status_callbacks_update_the_call_once(app: TestApp) {
    app.seed().await;
    let sid = call_sid();
    assert_eq!(app.incoming(&sid).await.status(), 200);
    for (status, duration) in [
        ("in-progress", None),
        ("completed", Some("37")),
        ("completed", Some("37")),
        ("in-progress", None),
    ] {
        let res = app
            .post_signed(
                "/api/v1/call-status",
                &status_form(&sid, status, duration),
                AUTH_TOKEN,
            )
            .await;
        assert_eq!(res.status(), 204, "{status}");
    }
    let call = app.call(&sid).await.unwrap();
    assert_eq!(
        (call.status.as_str(), call.duration_secs),
        ("completed", Some(37)),
        "a final status is kept"
    );
    assert!(call.ended_at.is_some());
    let completed = app.events("call.completed").await;
    assert_eq!(completed.len(), 1);
    let payload: serde_json::Value = serde_json::from_str(&completed[0].payload).unwrap();
    assert_eq!(
        (
            payload["data"]["status"].as_str(),
            payload["data"]["duration_secs"].as_i64()
        ),
        (Some("completed"), Some(37))
    );
    let api: Call = app.get(&format!("/api/v1/calls/{sid}")).await;
    assert_eq!(api.status.as_str(), "completed");

    let forged = app
        .post_signed(
            "/api/v1/call-status",
            &status_form(&sid, "completed", None),
            "forged",
        )
        .await;
    assert_eq!(forged.status(), 403);
    let unknown = app
        .post_signed(
            "/api/v1/call-status",
            &status_form(&call_sid(), "completed", None),
            AUTH_TOKEN,
        )
        .await;
    assert_eq!(unknown.status(), 404);
    let no_status = FormParams::from_pairs(
        incoming_form(&sid)
            .pairs()
            .iter()
            .filter(|(k, _)| k != "CallStatus")
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        app.post_signed("/api/v1/call-status", &no_status, AUTH_TOKEN)
            .await
            .status(),
        400
    );
}

fn metric(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

backend_test!(metrics_scrape_shows_counters_moving);
async fn metrics_scrape_shows_counters_moving(app: TestApp) {
    // A tenant with a receiver, so that its call events wait for delivery (the backlog).
    let tenant = NewTenant {
        webhook_url: Some("https://hooks.example/voice".to_owned()),
        ..Default::default()
    };
    app.seed_with(tenant, NewRoute::default()).await;
    let scrape = || app.metrics();
    let before = scrape().await;
    assert!(before.contains("# TYPE voice_calls counter"), "{before}");
    assert_eq!(app.incoming(&call_sid()).await.status(), 200);
    assert_eq!(
        app.post_signed("/api/v1/incoming-call", &incoming_form(&call_sid()), "forged")
            .await
            .status(),
        403
    );
    let unknown = incoming_form_with(&call_sid(), "To", "+15550009999");
    app.post_raw("/api/v1/incoming-call", unknown.encode().into_bytes(), &[])
        .await;
    app.state.runtime.set_draining(true);
    assert_eq!(app.incoming(&call_sid()).await.status(), 200);
    let _open = app.state.runtime.stream_opened();

    let after = scrape().await;
    assert_eq!(
        metric(&after, "voice_calls_total{outcome=\"streamed\"}")
            - metric(&before, "voice_calls_total{outcome=\"streamed\"}"),
        1.0
    );
    assert_eq!(metric(&after, "voice_calls_total{outcome=\"fallback\"}"), 1.0);
    assert_eq!(metric(&after, "voice_fallbacks_total{reason=\"draining\"}"), 1.0);
    assert_eq!(metric(&after, "voice_signature_failures_total"), 1.0);
    assert_eq!(metric(&after, "voice_unknown_routes_total"), 1.0);
    assert_eq!(metric(&after, "voice_active_streams"), 1.0);
    assert_eq!(
        metric(&after, "voice_outbox_backlog"),
        2.0,
        "two call events pending"
    );
    let webhook_count = "voice_http_request_duration_seconds_count{method=\"POST\",path=\"/api/v1/incoming-call\",status=\"200\"}";
    assert_eq!(metric(&after, webhook_count), 3.0, "{after}");
}

/// An `alert.raised` event numbered `i`, for tests that only need some event.
fn alert_event(i: usize) -> stateset_voice::events::Event {
    stateset_voice::events::Event::AlertRaised(stateset_voice::events::AlertRaisedData {
        alert_id: format!("alert-{i}"),
        kind: entity::states::DiagnosticKind::SignatureFailure,
        route_id: "route".to_owned(),
        failure_count: 5,
        window_seconds: 300,
        message: format!("test alert {i}"),
    })
}

backend_test!(due_events_are_found_through_the_pending_index);
async fn due_events_are_found_through_the_pending_index(fresh: FreshDatabase) {
    use migration::MigratorTrait;
    use sea_orm::ConnectionTrait;
    use stateset_voice::db::outbox::{claim_sql, BACKLOG_SQL};
    let now = chrono::Utc::now();
    let claim = claim_sql(fresh.db.get_database_backend(), 50);
    for (sql, values) in [
        (claim.as_str(), vec![now.into(), now.into()]),
        (BACKLOG_SQL, vec![]),
    ] {
        let plan = fresh.query_plan(sql, values).await;
        assert!(
            plan.contains("idx_outbox_due_pending"),
            "{sql}\nshould use idx_outbox_due_pending:\n{plan}"
        );
    }
    // Down, the index on (status, next_attempt_at) serves the claim again; up, the partial one.
    let db = fresh.db.connection();
    migrate_down_through(db, "m20261206_000001_outbox_due_pending").await;
    let plan = fresh.query_plan(&claim, vec![now.into(), now.into()]).await;
    assert!(
        plan.contains("idx_outbox_due") && !plan.contains("idx_outbox_due_pending"),
        "{plan}"
    );
    migration::Migrator::up(db, None).await.expect("up again");
    let plan = fresh.query_plan(&claim, vec![now.into(), now.into()]).await;
    assert!(plan.contains("idx_outbox_due_pending"), "{plan}");
}
