//! The inbound-call webhook's success paths and the other voice webhooks.
use entity::{call, call_webhook};
use stateset_voice::{
    config::TokenPlacement,
    domain::{
        admin::{NewRoute, NewTenant},
        token::AUDIENCE,
    },
};

use stateset_voice::{backend_test, testkit::*};

/// Extracts the attribute `name` of the first element that has it.
fn attr<'a>(doc: &'a str, name: &str) -> &'a str {
    let start = doc
        .find(&format!("{name}=\""))
        .unwrap_or_else(|| panic!("no {name} in {doc}"))
        + name.len()
        + 2;
    &doc[start..start + doc[start..].find('"').unwrap()]
}

backend_test!(new_call_gets_stream_twiml_and_is_recorded);
async fn new_call_gets_stream_twiml_and_is_recorded(app: TestApp) {
    let (tenant, route) = app.seed().await;
    let sid = call_sid();

    let res = app.incoming(&sid).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/xml");
    let body = res.text().await.unwrap();

    let token = attr(&body, "value");
    let stream_url = attr(&body, "url");
    assert_eq!(
        stream_url,
        format!(
            "ws://127.0.0.1:{}/media-stream?stream_token={token}",
            app.base.rsplit(':').next().unwrap()
        )
    );
    assert_eq!(attr(&body, "action"), app.public("/api/v1/stream-ended"));
    let expected = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>\n  <Connect action=\"{}\">\n    <Stream url=\"{stream_url}\">\n      <Parameter name=\"stream_token\" value=\"{token}\"/>\n    </Stream>\n  </Connect>\n</Response>\n",
        app.public("/api/v1/stream-ended")
    );
    assert_eq!(body, expected);

    // The token is bound to this call, tenant and route, and lives the configured TTL.
    let claims = app.state.tokens.verify(token).expect("token verifies");
    assert_eq!(claims.sub, sid);
    assert_eq!(claims.tid, tenant.id);
    assert_eq!(claims.rid, route.id);
    assert_eq!(claims.aud, AUDIENCE);
    assert_eq!(claims.exp - claims.iat, 60);
    assert!(!token.contains(AUTH_TOKEN));

    let stored = app.call(&sid).await.expect("call recorded");
    assert_eq!(
        (stored.outcome.as_str(), stored.attempts, stored.status.as_str()),
        ("streamed", 1, "ringing")
    );
    assert_eq!(
        (stored.from_number.as_str(), stored.to_number.as_str()),
        ("+15555555678", NUMBER)
    );
    let received = app.events("call.received").await;
    assert_eq!(received.len(), 1);
    let payload: serde_json::Value = serde_json::from_str(&received[0].payload).unwrap();
    assert_eq!(payload["type"], "call.received");
    assert_eq!(payload["data"]["call_sid"], sid.as_str());
    assert_eq!(payload["data"]["outcome"], "streamed");
    assert_eq!(app.count(call_webhook::Entity).await, 1);
}

backend_test!(path_placement_puts_token_in_the_path, |a| {
    a.stream_token_placement = TokenPlacement::Path;
});
async fn path_placement_puts_token_in_the_path(app: TestApp) {
    app.seed().await;
    let body = app.incoming(&call_sid()).await.text().await.unwrap();
    let token = attr(&body, "value");
    assert!(
        attr(&body, "url").ends_with(&format!("/media-stream/{token}")),
        "{body}"
    );
    assert!(!body.contains("?stream_token="));
}

backend_test!(fallback_url_records_error_and_answers_fallback);
async fn fallback_url_records_error_and_answers_fallback(app: TestApp) {
    app.seed_with(
        NewTenant::default(),
        NewRoute {
            fallback: say("Please hold for an agent."),
            ..Default::default()
        },
    )
    .await;
    let sid = call_sid();
    let mut form = incoming_form(&sid);
    form.push("ErrorCode", "11200");
    form.push("ErrorUrl", "https://voice.example.com/api/v1/incoming-call");

    let res = app
        .post_signed("/api/v1/incoming-call/fallback", &form, AUTH_TOKEN)
        .await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(
        body.contains("<Say>Please hold for an agent.</Say>\n  <Hangup/>"),
        "{body}"
    );
    let stored = app.call(&sid).await.unwrap();
    assert_eq!(stored.outcome.as_str(), "fallback");
    assert_eq!(
        stored.fallback_reason.map(|r| r.as_str()),
        Some("provider_fallback")
    );
    assert_eq!(stored.error_code.as_deref(), Some("11200"));
    assert_eq!(
        stored.error_url.as_deref(),
        Some("https://voice.example.com/api/v1/incoming-call")
    );
    assert_eq!(app.events("call.fallback").await.len(), 1);
}

backend_test!(fallback_url_after_answered_call_updates_it_once);
async fn fallback_url_after_answered_call_updates_it_once(app: TestApp) {
    app.seed().await;
    let sid = call_sid();
    assert_eq!(app.incoming(&sid).await.status(), 200);
    let mut form = incoming_form(&sid);
    form.push("ErrorCode", "11205");
    for _ in 0..2 {
        let res = app
            .post_signed("/api/v1/incoming-call/fallback", &form, AUTH_TOKEN)
            .await;
        assert_eq!(res.status(), 200);
        assert!(res.text().await.unwrap().contains("<Hangup/>"));
    }
    let stored = app.call(&sid).await.unwrap();
    assert_eq!(
        (stored.outcome.as_str(), stored.error_code.as_deref()),
        ("fallback", Some("11205"))
    );
    assert_eq!(stored.attempts, 3, "one incoming and two fallback deliveries");
    assert_eq!(app.count(call::Entity).await, 1);
    assert_eq!(app.events("call.fallback").await.len(), 1);
    assert_eq!(app.events("call.received").await.len(), 1);
}

backend_test!(stream_ended_without_session_plays_fallback);
async fn stream_ended_without_session_plays_fallback(app: TestApp) {
    app.seed_with(
        NewTenant {
            default_fallback: say("Sorry, our assistant is unavailable."),
            ..Default::default()
        },
        NewRoute::default(),
    )
    .await;
    let sid = call_sid();
    assert_eq!(app.incoming(&sid).await.status(), 200);
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let res = app
            .post_signed("/api/v1/stream-ended", &incoming_form(&sid), AUTH_TOKEN)
            .await;
        assert_eq!(res.status(), 200);
        bodies.push(res.text().await.unwrap());
    }
    assert!(
        bodies[0].contains("<Say>Sorry, our assistant is unavailable.</Say>"),
        "{}",
        bodies[0]
    );
    assert_eq!(bodies[0], bodies[1]);
    let stored = app.call(&sid).await.unwrap();
    assert_eq!(stored.fallback_reason.map(|r| r.as_str()), Some("stream_failed"));
    assert_eq!(
        stored.attempts, 1,
        "stream-ended is not a delivery of the voice webhook"
    );
    assert_eq!(app.events("call.fallback").await.len(), 1);
}

backend_test!(stream_ended_after_stop_hangs_up);
async fn stream_ended_after_stop_hangs_up(app: TestApp) {
    use sea_orm::{ActiveModelTrait, Set};
    app.seed().await;
    let sid = call_sid();
    assert_eq!(app.incoming(&sid).await.status(), 200);
    let stored = app.call(&sid).await.unwrap();
    let now = chrono::Utc::now();
    entity::media_session::ActiveModel {
        id: Set(uuid::Uuid::now_v7().to_string()),
        call_id: Set(stored.id.clone()),
        token_jti: Set("jti-1".to_owned()),
        stream_sid: Set(Some("MZ1".to_owned())),
        status: Set(entity::states::MediaSessionStatus::Ended),
        end_reason: Set(Some(entity::states::EndReason::Stop)),
        received_stop: Set(true),
        inbound_frames: Set(10),
        outbound_frames: Set(10),
        malformed_frames: Set(0),
        started_at: Set(now),
        ended_at: Set(Some(now)),
    }
    .insert(&app.state.db)
    .await
    .unwrap();
    let res = app
        .post_signed("/api/v1/stream-ended", &incoming_form(&sid), AUTH_TOKEN)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.text().await.unwrap(),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>\n  <Hangup/>\n</Response>\n"
    );
    assert_eq!(app.call(&sid).await.unwrap().outcome.as_str(), "streamed");
}

backend_test!(route_named_in_the_url_selects_the_key);
async fn route_named_in_the_url_selects_the_key(app: TestApp) {
    let (_, route) = app.seed().await;
    let sid = call_sid();
    let mut form = incoming_form(&sid);
    form = stateset_voice::twilio::form::FormParams::from_pairs(
        form.pairs()
            .iter()
            .filter(|(k, _)| k != "To")
            .cloned()
            .collect::<Vec<_>>(),
    );
    // Without To and without a configured route there is nothing to route by.
    let res = app.post_signed("/api/v1/incoming-call", &form, AUTH_TOKEN).await;
    assert_eq!(res.status(), 400);
    // With the route in the (signed) URL, the signature is checked, then the missing To is reported.
    let path = format!("/api/v1/incoming-call?route_id={}", route.id);
    let res = app.post_signed(&path, &form, AUTH_TOKEN).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("missing To"));
    let res = app.post_signed(&path, &incoming_form(&sid), AUTH_TOKEN).await;
    assert_eq!(res.status(), 200);
    assert!(app.call(&sid).await.is_some());
}

backend_test!(an_unknown_call_status_is_refused_after_the_signature_and_stores_nothing);
async fn an_unknown_call_status_is_refused_after_the_signature_and_stores_nothing(app: TestApp) {
    app.seed().await;
    let sid = call_sid();
    let form = incoming_form_with(&sid, "CallStatus", "exploded");
    for path in ["/api/v1/incoming-call", "/api/v1/call-status"] {
        let res = app.post_signed(path, &form, AUTH_TOKEN).await;
        assert_eq!(res.status(), 400, "{path}");
        let problem: serde_json::Value = res.json().await.unwrap();
        assert_eq!(problem["detail"], "unknown CallStatus \"exploded\"", "{path}");
    }
    assert!(app.call(&sid).await.is_none());
    // Unsigned, the same request is refused for its signature first.
    let res = app
        .post_raw("/api/v1/incoming-call", form.encode().into_bytes(), &[])
        .await;
    assert_eq!(res.status(), 403);
}
