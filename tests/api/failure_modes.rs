//! Every row of the contract's failure-mode table, and the processing order.
use entity::{alert, call};
use stateset_voice::{
    api::{common::List, ops::Alert, routes::Route},
    db::{self, diagnostics::DiagnosticRow},
    domain::{
        admin::{NewRoute, NewTenant},
        fallback::FallbackAction,
    },
    twilio::form::FormParams,
};

use stateset_voice::{backend_test, testkit::*};

backend_test!(missing_or_invalid_signature_is_403_and_counted);
async fn missing_or_invalid_signature_is_403_and_counted(app: TestApp) {
    let (_, route) = app.seed().await;
    let form = incoming_form(&call_sid());
    let missing = app
        .post_raw("/api/v1/incoming-call", form.encode().into_bytes(), &[])
        .await;
    assert_eq!(missing.status(), 403);
    assert!(missing.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(!missing.text().await.unwrap().contains("<Response>"));
    let wrong_token = app
        .post_signed("/api/v1/incoming-call", &form, "not-the-token")
        .await;
    assert_eq!(wrong_token.status(), 403);
    // A signature for other parameters (a tampered body) fails too.
    let sig = stateset_voice::twilio::signature::compute(
        stateset_voice::twilio::signature::Algorithm::HmacSha1,
        AUTH_TOKEN.as_bytes(),
        &app.public("/api/v1/incoming-call"),
        &form,
    );
    let mut tampered = form.clone();
    tampered.push("Extra", "1");
    let res = app
        .post_raw(
            "/api/v1/incoming-call",
            tampered.encode().into_bytes(),
            &[("X-Twilio-Signature", &sig)],
        )
        .await;
    assert_eq!(res.status(), 403);
    assert_nothing_stored(&app).await;
    let failures = app.diagnostics("signature_failure").await;
    assert_eq!(failures.len(), 1);
    assert_eq!(
        (failures[0].key.as_str(), failures[0].count),
        (route.id.as_str(), 3)
    );
}

backend_test!(repeated_failures_on_production_route_alert_once_per_window, |a| {
    a.alert_threshold = 3;
});
async fn repeated_failures_on_production_route_alert_once_per_window(app: TestApp) {
    let (tenant, route) = app.seed().await;
    let form = incoming_form(&call_sid());
    for _ in 0..7 {
        assert_eq!(
            app.post_signed("/api/v1/incoming-call", &form, "forged")
                .await
                .status(),
            403
        );
    }
    app.flush().await;
    let alerts = db::alerts::list(&app.state.db, &db::Scope::Platform, None, 10)
        .await
        .unwrap()
        .items;
    assert_eq!(alerts.len(), 1, "one alert per window, not one per failure");
    assert_eq!(alerts[0].route_id.as_deref(), Some(route.id.as_str()));
    assert_eq!(
        alerts[0].failure_count, 7,
        "the window count when the alert was raised"
    );
    let raised = app.events("alert.raised").await;
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0].tenant_id, tenant.id);
    assert_eq!(app.count(call::Entity).await, 0);

    // The admin API shows it.
    let listed: List<Alert> = app.get("/api/v1/alerts").await;
    assert_eq!(listed.items[0].id, alerts[0].id);
}

backend_test!(failures_on_a_test_route_do_not_alert, |a| a.alert_threshold = 2);
async fn failures_on_a_test_route_do_not_alert(app: TestApp) {
    app.seed_with(
        NewTenant::default(),
        NewRoute {
            environment: Some(entity::states::RouteEnvironment::Test),
            ..Default::default()
        },
    )
    .await;
    for _ in 0..4 {
        assert_eq!(
            app.post_signed("/api/v1/incoming-call", &incoming_form(&call_sid()), "forged")
                .await
                .status(),
            403
        );
    }
    assert_eq!(app.count(alert::Entity).await, 0);
    assert_eq!(app.diagnostics("signature_failure").await[0].count, 4);
}

backend_test!(account_mismatch_is_403_with_diagnostic);
async fn account_mismatch_is_403_with_diagnostic(app: TestApp) {
    app.seed().await;
    let form = incoming_form_with(&call_sid(), "AccountSid", "AC00000000000000000000000000000000");
    let res = app.post_signed("/api/v1/incoming-call", &form, AUTH_TOKEN).await;
    assert_eq!(res.status(), 403);
    assert_nothing_stored(&app).await;
    assert_eq!(app.diagnostics("account_mismatch").await.len(), 1);
}

backend_test!(unknown_route_answers_platform_message, |a| {
    a.unknown_route_message = "Not in service & goodbye.".to_owned();
});
async fn unknown_route_answers_platform_message(app: TestApp) {
    app.seed().await;
    let form = incoming_form_with(&call_sid(), "To", "+1 (555) 999-0000");
    for _ in 0..3 {
        // Unsigned: an unknown number has no key, and the answer must not reveal more.
        let res = app
            .post_raw("/api/v1/incoming-call", form.encode().into_bytes(), &[])
            .await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.text().await.unwrap(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>\n  <Say>Not in service &amp; goodbye.</Say>\n  <Hangup/>\n</Response>\n"
        );
    }
    assert_nothing_stored(&app).await;
    let diags = app.diagnostics("unknown_route").await;
    assert_eq!(
        (diags.len(), diags[0].key.as_str(), diags[0].count),
        (1, "+15559990000", 3)
    );
}

backend_test!(unknown_route_diagnostics_are_bounded);
async fn unknown_route_diagnostics_are_bounded(app: TestApp) {
    let window = std::time::Duration::from_secs(300);
    for n in 0..12 {
        let key = format!("+1555000{n:04}");
        let occurrence = DiagnosticRow {
            kind: entity::states::DiagnosticKind::UnknownRoute,
            key: &key,
            tenant_id: None,
            route_id: None,
            detail: None,
        };
        db::diagnostics::record_bounded(&app.state.db, &occurrence, 1, window, 5)
            .await
            .unwrap();
    }
    let diags = app.diagnostics("unknown_route").await;
    assert_eq!(diags.len(), 6, "five numbers and one overflow row");
    let overflow = diags
        .iter()
        .find(|d| d.key == db::diagnostics::OVERFLOW_KEY)
        .unwrap();
    assert_eq!(overflow.count, 7);
}

backend_test!(disabled_route_answers_route_fallback);
async fn disabled_route_answers_route_fallback(app: TestApp) {
    let dial = FallbackAction::Dial {
        number: "+15550001111".to_owned(),
        message: Some("Connecting you".to_owned()),
    };
    app.seed_with(
        NewTenant::default(),
        NewRoute {
            enabled: Some(false),
            fallback: Some(dial),
            ..Default::default()
        },
    )
    .await;
    let sid = call_sid();
    // The signature is still required.
    assert_eq!(
        app.post_signed("/api/v1/incoming-call", &incoming_form(&sid), "forged")
            .await
            .status(),
        403
    );
    let res = app.incoming(&sid).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.text().await.unwrap(),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>\n  <Say>Connecting you</Say>\n  <Dial>+15550001111</Dial>\n</Response>\n"
    );
    let stored = app.call(&sid).await.unwrap();
    assert_eq!(
        (
            stored.outcome.as_str(),
            stored.fallback_reason.map(|r| r.as_str())
        ),
        ("fallback", Some("route_disabled"))
    );
    assert_eq!(app.events("call.fallback").await.len(), 1);
    assert_eq!(app.events("call.received").await.len(), 0);
}

backend_test!(drain_mode_uses_the_tenant_default);
async fn drain_mode_uses_the_tenant_default(app: TestApp) {
    let redirect = FallbackAction::Redirect {
        url: "https://crm.example.com/callback?a=1&b=2".to_owned(),
    };
    app.seed_with(
        NewTenant {
            default_fallback: Some(redirect),
            ..Default::default()
        },
        NewRoute::default(),
    )
    .await;
    assert!(app.set_draining(true).await.draining);
    let sid = call_sid();
    let body = app.incoming(&sid).await.text().await.unwrap();
    assert!(
        body.contains("<Redirect method=\"POST\">https://crm.example.com/callback?a=1&amp;b=2</Redirect>"),
        "{body}"
    );
    assert_eq!(
        app.call(&sid).await.unwrap().fallback_reason.map(|r| r.as_str()),
        Some("draining")
    );
    app.state.runtime.set_draining(false);
    assert!(app
        .incoming(&call_sid())
        .await
        .text()
        .await
        .unwrap()
        .contains("<Stream"));
}

backend_test!(stream_capacity_uses_the_platform_message, |a| {
    a.max_streams = 1;
    a.fallback_message = "All lines are busy.".to_owned();
});
async fn stream_capacity_uses_the_platform_message(app: TestApp) {
    app.seed().await;
    let guard = app.state.runtime.stream_opened();
    let sid = call_sid();
    let body = app.incoming(&sid).await.text().await.unwrap();
    assert!(
        body.contains("<Say>All lines are busy.</Say>\n  <Hangup/>"),
        "{body}"
    );
    assert_eq!(
        app.call(&sid).await.unwrap().fallback_reason.map(|r| r.as_str()),
        Some("capacity")
    );
    drop(guard);
    assert!(app
        .incoming(&call_sid())
        .await
        .text()
        .await
        .unwrap()
        .contains("<Stream"));
}

backend_test!(failing_agent_uses_the_route_fallback);
async fn failing_agent_uses_the_route_fallback(app: TestApp) {
    let agent = "wss://agent.example.com/ws".to_owned();
    app.seed_with(
        NewTenant::default(),
        NewRoute {
            agent_url: Some(agent.clone()),
            fallback: say("One moment"),
            ..Default::default()
        },
    )
    .await;
    app.state
        .runtime
        .set_agent_health(&agent, Some("connect refused".to_owned()));
    let sid = call_sid();
    assert!(app
        .incoming(&sid)
        .await
        .text()
        .await
        .unwrap()
        .contains("<Say>One moment</Say>"));
    assert_eq!(
        app.call(&sid).await.unwrap().fallback_reason.map(|r| r.as_str()),
        Some("agent_unhealthy")
    );
}

backend_test!(malformed_input_is_rejected_and_stores_nothing);
async fn malformed_input_is_rejected_and_stores_nothing(app: TestApp) {
    app.seed().await;
    let good = incoming_form(&call_sid()).encode();
    let sig = [("X-Twilio-Signature", "irrelevant")];
    for (body, what) in [
        (format!("{good}&Bad=%G0").into_bytes(), "invalid percent-escape"),
        ([good.as_bytes(), b"&Bad=%FF"].concat(), "not valid UTF-8"),
        ([good.as_bytes(), b"&Bad=\xff"].concat(), "not valid UTF-8"),
        (format!("{good}&Bad=a%00b").into_bytes(), "NUL"),
    ] {
        let res = app.post_raw("/api/v1/incoming-call", body, &sig).await;
        assert_eq!(res.status(), 400, "{what}");
        assert!(res.headers()["content-type"].to_str().unwrap().contains("json"));
        let problem: serde_json::Value = res.json().await.unwrap();
        assert!(problem["detail"].as_str().unwrap().contains(what), "{problem}");
    }
    let big = vec![b'a'; 64 * 1024 + 1];
    assert_eq!(
        app.post_raw("/api/v1/incoming-call", big, &sig).await.status(),
        413
    );
    let res = app
        .client
        .post(format!("{}/api/v1/incoming-call", app.base))
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    let problem: serde_json::Value = res.json().await.unwrap();
    assert_eq!(problem["status"], 415);
    assert_nothing_stored(&app).await;
}

backend_test!(missing_call_sid_after_valid_signature_is_400);
async fn missing_call_sid_after_valid_signature_is_400(app: TestApp) {
    app.seed().await;
    let form = FormParams::from_pairs(
        incoming_form("x")
            .pairs()
            .iter()
            .filter(|(k, _)| k != "CallSid")
            .cloned()
            .collect::<Vec<_>>(),
    );
    let unsigned = app
        .post_raw("/api/v1/incoming-call", form.encode().into_bytes(), &[])
        .await;
    assert_eq!(
        unsigned.status(),
        403,
        "the signature is checked before any field is trusted"
    );
    let res = app.post_signed("/api/v1/incoming-call", &form, AUTH_TOKEN).await;
    assert_eq!(res.status(), 400);
    let problem: serde_json::Value = res.json().await.unwrap();
    assert_eq!(problem["detail"], "missing CallSid");
    assert_nothing_stored(&app).await;
}

backend_test!(hostile_fallback_text_cannot_inject_twiml);
async fn hostile_fallback_text_cannot_inject_twiml(app: TestApp) {
    let evil = "Bye</Say><Dial>+19005550000</Dial><Say>";
    app.seed_with(
        NewTenant::default(),
        NewRoute {
            enabled: Some(false),
            fallback: say(evil),
            ..Default::default()
        },
    )
    .await;
    let body = app.incoming(&call_sid()).await.text().await.unwrap();
    assert!(!body.contains("<Dial>"), "{body}");
    assert!(
        body.contains("<Say>Bye&lt;/Say&gt;&lt;Dial&gt;+19005550000&lt;/Dial&gt;&lt;Say&gt;</Say>"),
        "{body}"
    );
}

backend_test!(alerts_fire_once_across_flushes_and_again_in_a_new_window, |a| {
    a.alert_threshold = 3;
    a.alert_window = std::time::Duration::from_secs(1);
});
async fn alerts_fire_once_across_flushes_and_again_in_a_new_window(app: TestApp) {
    app.seed().await;
    let forged = || async {
        app.post_signed("/api/v1/incoming-call", &incoming_form(&call_sid()), "forged")
            .await
            .status()
    };
    // Two failures, a flush, two more: the threshold is crossed in the second flush.
    for _ in 0..2 {
        assert_eq!(forged().await, 403);
    }
    app.flush().await;
    assert_eq!(app.count(alert::Entity).await, 0);
    for _ in 0..2 {
        assert_eq!(forged().await, 403);
    }
    app.flush().await;
    assert_eq!(app.count(alert::Entity).await, 1);
    assert_eq!(forged().await, 403);
    app.flush().await;
    assert_eq!(app.count(alert::Entity).await, 1, "still the same window");
    // A new window starts counting afresh.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for _ in 0..3 {
        assert_eq!(forged().await, 403);
    }
    app.flush().await;
    assert_eq!(app.count(alert::Entity).await, 2);
    assert_eq!(app.events("alert.raised").await.len(), 2);
}

backend_test!(admin_changes_apply_at_once_despite_the_route_cache);
async fn admin_changes_apply_at_once_despite_the_route_cache(app: TestApp) {
    let (_, route) = app.seed().await;
    assert!(app
        .incoming(&call_sid())
        .await
        .text()
        .await
        .unwrap()
        .contains("<Stream"));
    let path = format!("/api/v1/routes/{}", route.id);
    let disabled: Route = app.patch(&path, &serde_json::json!({"enabled": false})).await;
    assert!(!disabled.enabled);
    let sid = call_sid();
    assert!(!app.incoming(&sid).await.text().await.unwrap().contains("<Stream"));
    assert_eq!(
        app.call(&sid).await.unwrap().fallback_reason.map(|r| r.as_str()),
        Some("route_disabled")
    );
    app.delete(&path).await;
    assert!(app
        .incoming(&call_sid())
        .await
        .text()
        .await
        .unwrap()
        .contains("not in service"));
}

backend_test!(slow_and_oversized_inputs_get_clear_errors, |a| {
    a.body_read_timeout = std::time::Duration::from_millis(300);
});
async fn slow_and_oversized_inputs_get_clear_errors(app: TestApp) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    app.seed().await;
    // 10,000 fields fit in 64 KiB but are refused.
    let res = app
        .post_raw("/api/v1/incoming-call", "a=&".repeat(10_000).into_bytes(), &[])
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("too many form fields"));
    // A body that stops arriving (slow-loris) is answered 408 instead of holding the connection.
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = "POST /api/v1/incoming-call HTTP/1.1\r\nHost: voice\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nCallSid=CA";
    tcp.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_nothing_stored(&app).await;
}
