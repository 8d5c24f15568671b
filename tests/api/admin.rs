//! The admin API: bearer auth, tenants and routes CRUD, write-only secrets, lists, health.
use reqwest::Method;
use serde_json::{json, Value};

use stateset_voice::{
    api::{calls::Call, common::List, ops::Event, routes::Route, tenants::Tenant},
    backend_test,
    domain::{
        admin::{NewRoute, NewTenant},
        fallback::FallbackAction,
    },
    testkit::*,
};

fn tenant_body(account_sid: &str) -> Value {
    json!({
        "name": "Acme",
        "account_sid": account_sid,
        "auth_token": "super-secret-auth-token",
        "secondary_auth_token": "next-secret-auth-token",
        "shared_key": "shared-secret-key",
        "environment": "production",
        "webhook_url": "https://hooks.example.com/voice",
        "default_fallback": {"type": "say", "message": "Sorry"}
    })
}

fn assert_no_secrets(text: &str) {
    for secret in [
        "super-secret-auth-token",
        "next-secret-auth-token",
        "shared-secret-key",
    ] {
        assert!(!text.contains(secret), "secret leaked: {text}");
    }
}

backend_test!(bearer_token_is_required);
async fn bearer_token_is_required(app: TestApp) {
    let url = format!("{}/api/v1/tenants", app.base);
    let none = app.client.get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let problem: Value = none.json().await.unwrap();
    assert_eq!(problem["status"], 401);
    let wrong = app.client.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let post = app
        .client
        .post(&url)
        .json(&tenant_body(ACCOUNT_SID))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 401);
    assert_eq!(
        app.admin(Method::GET, "/api/v1/tenants")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

backend_test!(no_admin_token_is_accepted_when_none_is_configured, |a| a
    .admin_token =
    None);
async fn no_admin_token_is_accepted_when_none_is_configured(app: TestApp) {
    let res = app.admin(Method::GET, "/api/v1/tenants").send().await.unwrap();
    assert_eq!(res.status(), 401);
    let problem: Value = res.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("VOICE_ADMIN_TOKEN") && detail.contains("not configured"),
        "{detail}"
    );
}

backend_test!(tenant_lifecycle_never_returns_secrets);
async fn tenant_lifecycle_never_returns_secrets(app: TestApp) {
    let res = app
        .admin(Method::POST, "/api/v1/tenants")
        .json(&tenant_body(ACCOUNT_SID))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let text = res.text().await.unwrap();
    assert_no_secrets(&text);
    let created: Value = serde_json::from_str(&text).unwrap();
    let id = created["id"].as_str().unwrap();
    let secret = created["webhook_secret"]
        .as_str()
        .expect("generated secret returned once");
    assert!(secret.starts_with("whsec_"));
    assert_eq!(created["has_secondary_auth_token"], true);
    assert_eq!(
        created["default_fallback"],
        json!({"type": "say", "message": "Sorry"})
    );

    let got = app
        .admin(Method::GET, &format!("/api/v1/tenants/{id}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_no_secrets(&got);
    assert!(!got.contains(secret) && !got.contains("webhook_secret"), "{got}");
    let listed = app
        .admin(Method::GET, "/api/v1/tenants")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_no_secrets(&listed);
    assert!(!listed.contains(secret));

    let dup = app
        .admin(Method::POST, "/api/v1/tenants")
        .json(&tenant_body(ACCOUNT_SID))
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), 409);

    let patched: Tenant = app
        .patch(
            &format!("/api/v1/tenants/{id}"),
            &json!({"name": "Acme Corp", "secondary_auth_token": null, "environment": "sandbox"}),
        )
        .await;
    assert_eq!(
        (patched.name.as_str(), patched.environment.as_str()),
        ("Acme Corp", "sandbox")
    );
    assert!(!patched.has_secondary_auth_token);

    app.delete(&format!("/api/v1/tenants/{id}")).await;
    assert_eq!(
        app.admin(Method::GET, &format!("/api/v1/tenants/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

backend_test!(supplied_webhook_secret_is_validated_and_not_echoed);
async fn supplied_webhook_secret_is_validated_and_not_echoed(app: TestApp) {
    let mut body = tenant_body(ACCOUNT_SID);
    body["webhook_secret"] = json!("whsec_dG9vIHNob3J0");
    let res = app
        .admin(Method::POST, "/api/v1/tenants")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    body["webhook_secret"] = json!("whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
    let res = app
        .admin(Method::POST, "/api/v1/tenants")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let text = res.text().await.unwrap();
    assert!(!text.contains("webhook_secret"), "{text}");
}

backend_test!(bad_tenant_input_gets_clear_errors);
async fn bad_tenant_input_gets_clear_errors(app: TestApp) {
    let post = |body: Value| app.admin(Method::POST, "/api/v1/tenants").json(&body).send();
    let mut bad_sid = tenant_body("AC123");
    let res = post(bad_sid.clone()).await.unwrap();
    assert_eq!(res.status(), 422);
    let problem: Value = res.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("account_sid"),
        "{problem}"
    );
    bad_sid["account_sid"] = json!(ACCOUNT_SID);
    bad_sid["environment"] = json!("staging");
    assert_eq!(post(bad_sid.clone()).await.unwrap().status(), 400);
    bad_sid["environment"] = json!("production");
    bad_sid["unexpected"] = json!(1);
    assert_eq!(post(bad_sid).await.unwrap().status(), 400);
    let res = app
        .admin(Method::POST, "/api/v1/tenants")
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], 400);
}

backend_test!(routes_normalise_numbers_and_refuse_duplicates);
async fn routes_normalise_numbers_and_refuse_duplicates(app: TestApp) {
    let tenant = app.create_tenant(NewTenant::default()).await;
    let tid = tenant.id.as_str();
    let path = format!("/api/v1/tenants/{tid}/routes");
    let route = app
        .create_route(
            tid,
            NewRoute {
                phone_number: "+1 (555) 555-1234".to_owned(),
                label: Some("Main".to_owned()),
                fallback: Some(FallbackAction::Dial {
                    number: "+1 555 000 1111".to_owned(),
                    message: None,
                }),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(route.phone_number, "+15555551234");
    assert_eq!(
        route.fallback.map(FallbackAction::from),
        Some(FallbackAction::Dial {
            number: "+15550001111".to_owned(),
            message: None
        })
    );
    assert_eq!((route.enabled, route.environment.as_str()), (true, "production"));

    let dup = app
        .admin(Method::POST, &path)
        .json(&json!({"phone_number": "+15555551234"}))
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), 409);
    for bad in ["555-1234", "+1 555 CALL NOW", "+123"] {
        let res = app
            .admin(Method::POST, &path)
            .json(&json!({"phone_number": bad}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "{bad}");
    }
    let res = app
        .admin(Method::POST, &path)
        .json(&json!({"phone_number": "+15555550001", "fallback": {"type": "redirect", "url": "ftp://x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let missing = app
        .admin(Method::POST, "/api/v1/tenants/nope/routes")
        .json(&json!({"phone_number": "+15555550002"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let rid = route.id.as_str();
    let patched: Route = app
        .patch(
            &format!("/api/v1/routes/{rid}"),
            &json!({"enabled": false, "label": null, "agent_url": "wss://agent.example.com/ws"}),
        )
        .await;
    assert_eq!((patched.enabled, patched.label), (false, None));
    assert_eq!(patched.agent_url.as_deref(), Some("wss://agent.example.com/ws"));
    let listed: List<Route> = app.get(&format!("/api/v1/routes?tenant_id={tid}")).await;
    assert_eq!(listed.items.len(), 1);
    app.delete(&format!("/api/v1/routes/{rid}")).await;
    assert_eq!(
        app.admin(Method::DELETE, &format!("/api/v1/routes/{rid}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

backend_test!(lists_page_with_cursor_and_bounded_limit);
async fn lists_page_with_cursor_and_bounded_limit(app: TestApp) {
    for i in 0..5 {
        app.create_tenant(NewTenant {
            account_sid: format!("AC{i:032}"),
            ..Default::default()
        })
        .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/tenants?limit=2&cursor={c}"),
            None => "/api/v1/tenants?limit=2".to_owned(),
        };
        let page: List<Tenant> = app.get(&path).await;
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|t| t.account_sid));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, (0..5).map(|i| format!("AC{i:032}")).collect::<Vec<_>>());
    for bad in ["0", "101", "x"] {
        let res = app
            .admin(Method::GET, &format!("/api/v1/tenants?limit={bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "limit={bad}");
    }
}

backend_test!(calls_are_listed_newest_first_with_sessions);
async fn calls_are_listed_newest_first_with_sessions(app: TestApp) {
    let (tenant, _) = app.seed().await;
    let sids = [call_sid(), call_sid(), call_sid()];
    for sid in &sids {
        assert_eq!(app.incoming(sid).await.status(), 200);
    }
    assert_eq!(app.incoming(&sids[0]).await.status(), 200);
    let page: List<Call> = app
        .get(&format!("/api/v1/calls?tenant_id={}&limit=2", tenant.id))
        .await;
    assert_eq!(page.items[0].call_sid, sids[2]);
    assert_eq!(page.items[1].call_sid, sids[1]);
    assert!(page.next_cursor.is_some());
    let one: Call = app.get(&format!("/api/v1/calls/{}", sids[0])).await;
    assert_eq!(
        (one.attempts, one.status.as_str(), one.outcome.as_str()),
        (2, "ringing", "streamed")
    );
    assert!(one.media_sessions.is_empty());
    assert_eq!(
        app.admin(Method::GET, "/api/v1/calls/CAnope")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let events: List<Event> = app.get(&format!("/api/v1/events?tenant_id={}", tenant.id)).await;
    assert_eq!(events.items.len(), 3);
    assert_eq!(events.items[0].event_type.as_str(), "call.received");
    assert_eq!(events.items[0].payload["data"]["call_sid"], sids[2].as_str());
}

backend_test!(health_readiness_and_drain);
async fn health_readiness_and_drain(app: TestApp) {
    let health: Value = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let status = app.set_draining(true).await;
    assert!(status.draining);
    assert!(app.state.runtime.is_draining());
    let unknown = app
        .client
        .get(format!("{}/no-such-path", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(unknown.json::<Value>().await.unwrap()["status"], 404);
}

backend_test!(a_stopping_instance_is_not_ready_but_still_answers_calls);
async fn a_stopping_instance_is_not_ready_but_still_answers_calls(app: TestApp) {
    app.seed().await;
    let get = |path: &str| {
        let request = app.client.get(format!("{}{path}", app.base)).send();
        async move {
            let res = request.await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let (status, ready) = get("/readyz").await;
    assert_eq!(status, 200);
    assert!(ready.get("open_streams").is_none(), "{ready}");

    app.state.runtime.begin_stopping();
    let (status, ready) = get("/readyz").await;
    assert_eq!((status, &ready["status"]), (503, &json!("stopping")), "{ready}");
    assert_eq!(ready["open_streams"], 0);
    assert_eq!(ready["draining"], false, "not the admin drain mode");
    let (status, health) = get("/healthz").await;
    assert_eq!((status, &health["status"]), (200, &json!("ok")));
    // New calls still get a stream: another instance can take it.
    let answer = app.incoming(&call_sid()).await.text().await.unwrap();
    assert!(answer.contains("<Stream url="), "{answer}");
}
