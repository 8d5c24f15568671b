//! The degraded mode: while the database cannot be reached, signed calls to known routes are
//! answered with the route's fallback from the last known configuration, spooled on local
//! disk, and stored exactly once when the database is back.
use std::time::{Duration, Instant};

use entity::states::{FallbackReason, Outcome};
use stateset_voice::{db, domain::admin::NewRoute, testkit::*, worker::database_watch::Watch};

/// `$name::sqlite` and `$name::postgres` on a service whose database the test can cut.
macro_rules! cuttable_test {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(app) = super::spawn_cuttable_app(super::Backend::Sqlite, |_| {}).await {
                    super::$name(app).await
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) = super::spawn_cuttable_app(super::Backend::Postgres, |_| {}).await {
                    super::$name(app).await
                }
            }
        }
    };
}

const ROUTE_SAYS: &str = "Our lines are busy, we will call you back.";

async fn seed_route_with_fallback(app: &TestApp) {
    app.seed_with(
        Default::default(),
        NewRoute {
            fallback: say(ROUTE_SAYS),
            ..Default::default()
        },
    )
    .await;
}

async fn fallback_url(app: &TestApp, sid: &str) -> reqwest::Response {
    let mut form = incoming_form(sid);
    form.push("ErrorCode", "11200");
    form.push("ErrorUrl", "https://voice.example.test/api/v1/incoming-call");
    app.post_signed("/api/v1/incoming-call/fallback", &form, AUTH_TOKEN)
        .await
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// Steps the database watch (as its task would, every tick) until the spool is empty.
async fn replay_until_empty(app: &TestApp, watch: &mut Watch) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        watch.step(&app.state).await;
        if app.state.spool.depth() == 0 && !app.state.outage.ongoing() {
            return;
        }
        assert!(Instant::now() < deadline, "the spool was not replayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

cuttable_test!(calls_during_an_outage_hear_the_fallback_and_are_stored_once_it_ends);
async fn calls_during_an_outage_hear_the_fallback_and_are_stored_once_it_ends(app: TestApp) {
    seed_route_with_fallback(&app).await;
    let mut watch = Watch::new();
    watch.step(&app.state).await;
    let before = call_sid();
    let streamed = app.incoming(&before).await;
    assert_eq!(streamed.status(), 200);
    assert!(streamed.text().await.unwrap().contains("<Stream"));

    app.cut_database().await;
    let (during, provider_fallback) = (call_sid(), call_sid());
    let res = app.incoming(&during).await;
    assert_eq!(res.status(), 200, "a signed call to a known route is answered");
    let answer = res.text().await.unwrap();
    assert!(answer.contains(ROUTE_SAYS), "{answer}");
    assert!(
        !answer.contains("<Stream"),
        "no stream whose token cannot be recorded: {answer}"
    );
    let res = fallback_url(&app, &provider_fallback).await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains(ROUTE_SAYS));
    // Twilio retries the first: the same answer, one call.
    let retry = app.incoming(&during).await;
    assert_eq!(retry.text().await.unwrap(), answer);
    // What the instance cannot verify or does not know is still refused.
    assert_eq!(
        app.post_signed("/api/v1/incoming-call", &incoming_form(&call_sid()), "forged")
            .await
            .status(),
        403
    );
    let unknown = incoming_form_with(&call_sid(), "To", "+15555550000");
    assert_eq!(
        app.post_signed("/api/v1/incoming-call", &unknown, AUTH_TOKEN)
            .await
            .status(),
        503,
        "an unknown number cannot be told from a new one without the database"
    );
    let text = app.metrics().await;
    assert_eq!(metric(&text, "voice_degraded_calls_total"), 2.0);
    assert_eq!(metric(&text, "voice_database_available"), 0.0);
    assert_eq!(metric(&text, "voice_spool_depth"), 2.0);
    assert_eq!(
        metric(&text, "voice_fallbacks_total{reason=\"database_unavailable\"}"),
        2.0
    );
    let ready = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "the instance still answers callers");
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["status"],
        "degraded"
    );
    // While the database is away, the watch probes and changes nothing.
    if app.backend == Backend::Postgres {
        watch.step(&app.state).await;
        assert_eq!(app.state.spool.depth(), 2);
    }

    app.heal_database().await;
    replay_until_empty(&app, &mut watch).await;
    for (sid, kind) in [(&during, "incoming"), (&provider_fallback, "fallback")] {
        let call = app.call(sid).await.expect("the spooled call is stored");
        assert_eq!(call.outcome, Outcome::Fallback, "{kind}");
        assert_eq!(
            call.fallback_reason,
            Some(FallbackReason::DatabaseUnavailable),
            "{kind}"
        );
        let answer = db::calls::webhook(
            &app.state.db,
            &call.id,
            entity::states::WebhookKind::parse(kind).unwrap(),
        )
        .await
        .unwrap()
        .expect("its answer is stored");
        assert!(answer.twiml.contains(ROUTE_SAYS));
    }
    let provider = app.call(&provider_fallback).await.unwrap();
    assert_eq!(provider.error_code.as_deref(), Some("11200"));
    let events = app.events("call.fallback").await;
    for sid in [&during, &provider_fallback] {
        assert_eq!(
            events.iter().filter(|e| e.payload.contains(sid.as_str())).count(),
            1,
            "one event per spooled call"
        );
    }
    assert_eq!(app.count(entity::call::Entity).await, 3);
    let alerts = db::alerts::list(&app.state.db, &db::Scope::Platform, None, 10)
        .await
        .unwrap()
        .items;
    let outage: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == entity::states::DiagnosticKind::DatabaseUnavailable)
        .collect();
    assert_eq!(outage.len(), 1, "one alert for the outage: {alerts:?}");
    assert_eq!(outage[0].failure_count, 2);
    app.flush().await;
    assert_eq!(app.diagnostics("database_unavailable").await.len(), 1);
    let text = app.metrics().await;
    assert_eq!(metric(&text, "voice_database_available"), 1.0);
    assert_eq!(metric(&text, "voice_spool_depth"), 0.0);
    assert_eq!(
        metric(&text, "voice_spool_replayed_total{outcome=\"stored\"}"),
        2.0
    );

    // Calls stream again, and the spooled call's retry still gets its answer, now counted.
    let after = app.incoming(&call_sid()).await;
    assert!(after.text().await.unwrap().contains("<Stream"));
    assert_eq!(app.incoming(&during).await.text().await.unwrap(), answer);
    assert_eq!(app.call(&during).await.unwrap().attempts, 2);
}

cuttable_test!(the_last_known_configuration_answers_numbers_this_instance_never_called);
async fn the_last_known_configuration_answers_numbers_this_instance_never_called(app: TestApp) {
    seed_route_with_fallback(&app).await;
    // The watch reads every route when it starts; no call was made before the outage.
    Watch::new().step(&app.state).await;
    assert_eq!(app.state.routes.last_known_routes(), 1);
    app.cut_database().await;
    // On SQLite reads still work; the first write fails. On PostgreSQL the lookup fails.
    let res = app.incoming(&call_sid()).await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains(ROUTE_SAYS));
    app.heal_database().await;
}

cuttable_test!(a_retry_answered_from_the_database_meanwhile_wins_over_the_spooled_answer);
async fn a_retry_answered_from_the_database_meanwhile_wins_over_the_spooled_answer(app: TestApp) {
    seed_route_with_fallback(&app).await;
    let mut watch = Watch::new();
    watch.step(&app.state).await;
    app.cut_database().await;
    let sid = call_sid();
    assert!(app
        .incoming(&sid)
        .await
        .text()
        .await
        .unwrap()
        .contains(ROUTE_SAYS));
    app.heal_database().await;
    // Another instance answers Twilio's retry from the database before this one replays.
    let other = app.sibling().await;
    let res = app
        .client
        .post(format!("{other}/api/v1/incoming-call"))
        .header(
            "X-Twilio-Signature",
            stateset_voice::twilio::signature::compute(
                stateset_voice::twilio::signature::Algorithm::HmacSha1,
                AUTH_TOKEN.as_bytes(),
                &app.public("/api/v1/incoming-call"),
                &incoming_form(&sid),
            ),
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body(incoming_form(&sid).encode())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let stored_answer = res.text().await.unwrap();
    assert!(stored_answer.contains("<Stream"), "{stored_answer}");
    replay_until_empty(&app, &mut watch).await;
    let call = app.call(&sid).await.unwrap();
    assert_eq!(call.outcome, Outcome::Streamed, "the database's answer wins");
    assert_eq!(call.attempts, 2, "the spooled delivery counts as an attempt");
    assert_eq!(app.count(entity::call::Entity).await, 1);
    let text = app.metrics().await;
    assert_eq!(
        metric(&text, "voice_spool_replayed_total{outcome=\"duplicate\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_stops_answering_costs_a_caller_one_deadline_at_most() {
    let Some(app) = spawn_cuttable_app(Backend::Postgres, |_| {}).await else {
        return;
    };
    seed_route_with_fallback(&app).await;
    let mut watch = Watch::new();
    watch.step(&app.state).await;
    assert!(app
        .incoming(&call_sid())
        .await
        .text()
        .await
        .unwrap()
        .contains("<Stream"));
    app.stall_database();
    let sid = call_sid();
    let started = Instant::now();
    let res = app.incoming(&sid).await;
    let waited = started.elapsed();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains(ROUTE_SAYS));
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    // The circuit is open: the next caller does not wait at all.
    let started = Instant::now();
    assert!(app
        .incoming(&call_sid())
        .await
        .text()
        .await
        .unwrap()
        .contains(ROUTE_SAYS));
    assert!(started.elapsed() < Duration::from_secs(1));
    app.heal_database().await;
    replay_until_empty(&app, &mut watch).await;
    let call = app.call(&sid).await.unwrap();
    assert_eq!(call.fallback_reason, Some(FallbackReason::DatabaseUnavailable));
    assert_eq!(app.count(entity::call::Entity).await, 3);
}

cuttable_test!(a_write_that_committed_after_its_caller_was_answered_is_corrected_to_what_was_heard);
async fn a_write_that_committed_after_its_caller_was_answered_is_corrected_to_what_was_heard(app: TestApp) {
    seed_route_with_fallback(&app).await;
    // The write of a stream answer committed, but too late: the caller was answered with the
    // fallback from the spool, under the same ids.
    let sid = call_sid();
    assert!(app.incoming(&sid).await.text().await.unwrap().contains("<Stream"));
    let stored = app.call(&sid).await.unwrap();
    let answer = db::calls::webhook(&app.state.db, &stored.id, entity::states::WebhookKind::Incoming)
        .await
        .unwrap()
        .unwrap();
    let heard = format!("<Response><Say>{ROUTE_SAYS}</Say><Hangup/></Response>");
    let spooled = db::writer::NewCall {
        call: entity::call::Model {
            outcome: Outcome::Fallback,
            fallback_reason: Some(FallbackReason::DatabaseUnavailable),
            ..stored.clone()
        },
        answer: entity::call_webhook::Model {
            twiml: heard.clone(),
            stream_token: None,
            token_jti: None,
            token_expires_at: None,
            ..answer
        },
        event: db::outbox::pending(
            &stored.tenant_id,
            &stateset_voice::events::Event::CallFallback((&stored).into()),
        ),
    };
    app.state.spool.append(&spooled).await.unwrap();
    replay_until_empty(&app, &mut Watch::new()).await;
    let call = app.call(&sid).await.unwrap();
    assert_eq!(call.outcome, Outcome::Fallback);
    assert_eq!(call.fallback_reason, Some(FallbackReason::DatabaseUnavailable));
    let corrected = db::calls::webhook(&app.state.db, &call.id, entity::states::WebhookKind::Incoming)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (corrected.twiml.as_str(), corrected.stream_token),
        (heard.as_str(), None)
    );
    assert_eq!(
        app.events("call.fallback")
            .await
            .iter()
            .filter(|e| e.payload.contains(sid.as_str()))
            .count(),
        1
    );
    assert_eq!(app.count(entity::call::Entity).await, 1);
    // A second replay of the same record changes nothing.
    app.state.spool.append(&spooled).await.unwrap();
    replay_until_empty(&app, &mut Watch::new()).await;
    assert_eq!(app.events("call.fallback").await.len(), 1);
}
