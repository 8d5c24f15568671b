//! The published spec and the behaviour agree: what the document forbids is refused (and
//! nothing stored), what it declares is what the service enforces, and every 405 says which
//! methods the path has.
use entity::{call, diagnostic, route, tenant};
use reqwest::Method;
use serde_json::{json, Value};
use stateset_voice::{backend_test, domain::input, testkit::*, twilio::form::FormParams};

/// The served spec, as JSON.
async fn spec(app: &TestApp) -> Value {
    app.client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn tenant_body(name: &str) -> Value {
    json!({
        "name": name,
        "account_sid": "AC0123456789abcdef0123456789abcdef",
        "auth_token": "a-token",
    })
}

backend_test!(unknown_json_fields_are_refused_and_the_spec_says_so);
async fn unknown_json_fields_are_refused_and_the_spec_says_so(app: TestApp) {
    let (tenant, route) = app.seed().await;
    let (tenants, routes) = (app.count(tenant::Entity).await, app.count(route::Entity).await);
    let mut with_extra = tenant_body("Extra");
    with_extra["colour"] = json!("blue");
    let cases = [
        (Method::POST, "/api/v1/tenants".to_owned(), with_extra),
        (
            Method::PATCH,
            format!("/api/v1/tenants/{}", tenant.id),
            json!({"name": "New", "colour": "blue"}),
        ),
        (
            Method::POST,
            format!("/api/v1/tenants/{}/routes", tenant.id),
            json!({"phone_number": "+15550001111", "colour": "blue"}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/routes/{}", route.id),
            json!({"label": "x", "colour": "blue"}),
        ),
        (
            Method::POST,
            format!("/api/v1/tenants/{}/api-keys", tenant.id),
            json!({"colour": "blue"}),
        ),
        (
            Method::PUT,
            "/api/v1/runtime/drain".to_owned(),
            json!({"draining": true, "colour": 1}),
        ),
    ];
    for (method, path, body) in cases {
        let res = app.admin(method.clone(), &path).json(&body).send().await.unwrap();
        assert_eq!(res.status(), 400, "{method} {path}");
        let problem: Value = res.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains("colour"),
            "{problem}"
        );
    }
    assert_eq!(app.count(tenant::Entity).await, tenants);
    assert_eq!(app.count(route::Entity).await, routes);
    assert!(!app.state.runtime.is_draining());
    let stored = app
        .admin(Method::GET, &format!("/api/v1/tenants/{}", tenant.id))
        .send()
        .await
        .unwrap();
    assert_eq!(
        stored.json::<Value>().await.unwrap()["name"],
        tenant.name.as_str()
    );

    let spec = spec(&app).await;
    for schema in [
        "TenantCreate",
        "TenantPatch",
        "RouteCreate",
        "RoutePatch",
        "ApiKeyCreate",
        "DrainRequest",
    ] {
        assert_eq!(
            spec["components"]["schemas"][schema]["additionalProperties"],
            json!(false),
            "{schema}"
        );
    }
}

backend_test!(an_empty_name_is_422_and_the_spec_declares_the_rule);
async fn an_empty_name_is_422_and_the_spec_declares_the_rule(app: TestApp) {
    let before = app.count(tenant::Entity).await;
    for name in ["", "   "] {
        let res = app
            .admin(Method::POST, "/api/v1/tenants")
            .json(&tenant_body(name))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "{name:?}");
    }
    // A number is not taken for a string.
    let res = app
        .admin(Method::POST, "/api/v1/tenants")
        .json(&json!({"name": 7, "account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(app.count(tenant::Entity).await, before);

    let spec = spec(&app).await;
    let name = &spec["components"]["schemas"]["TenantCreate"]["properties"]["name"];
    assert_eq!(name["minLength"], 1);
    assert_eq!(name["pattern"], input::LABEL.pattern.as_str());
    let sid = &spec["components"]["schemas"]["TenantCreate"]["properties"]["account_sid"];
    assert_eq!(sid["pattern"], input::ACCOUNT_SID.pattern.as_str());
    let phone = &spec["components"]["schemas"]["RouteCreate"]["properties"]["phone_number"];
    assert_eq!(phone["pattern"], input::PHONE.pattern.as_str());
    // What the pattern accepts, the service accepts.
    let res = app
        .admin(Method::POST, "/api/v1/tenants")
        .json(&tenant_body("  Padded  "))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.json::<Value>().await.unwrap()["name"], "Padded");
}

backend_test!(null_for_a_field_that_is_not_nullable_is_refused);
async fn null_for_a_field_that_is_not_nullable_is_refused(app: TestApp) {
    let (_, route) = app.seed().await;
    let path = format!("/api/v1/routes/{}", route.id);
    for body in [
        json!({"phone_number": null}),
        json!({"enabled": null, "label": "changed"}),
        json!({"environment": null}),
    ] {
        let res = app.admin(Method::PATCH, &path).json(&body).send().await.unwrap();
        assert_eq!(res.status(), 400, "{body}");
        let problem: Value = res.json().await.unwrap();
        assert!(problem["detail"].as_str().unwrap().contains("null"), "{problem}");
    }
    let stored = app
        .admin(Method::GET, &path)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(stored["phone_number"], route.phone_number.as_str());
    assert_eq!(stored["label"], json!(route.label));
    // Nullable fields still clear with null.
    let res = app
        .admin(Method::PATCH, &path)
        .json(&json!({"label": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["label"], Value::Null);

    let spec = spec(&app).await;
    let patch = &spec["components"]["schemas"]["RoutePatch"]["properties"];
    assert!(patch["phone_number"].get("nullable").is_none());
    assert_eq!(patch["label"]["nullable"], true);
}

/// A status callback form for `call_sid` to the seeded route's number.
fn status_form(call_sid: &str) -> FormParams {
    let mut form = incoming_form(call_sid);
    form.push("CallDuration", "3");
    FormParams::from_pairs(form.pairs().iter().map(|(k, v)| {
        let v = if k == "CallStatus" {
            "completed"
        } else {
            v.as_str()
        };
        (k.clone(), v.to_owned())
    }))
}

backend_test!(empty_required_webhook_fields_are_400_after_the_signature);
async fn empty_required_webhook_fields_are_400_after_the_signature(app: TestApp) {
    app.seed().await;
    let sid = call_sid();
    assert_eq!(app.incoming(&sid).await.status(), 200);
    let diagnostics = app.count(diagnostic::Entity).await;

    // The known number's key verifies the signature first: forged, an empty CallSid is 403.
    let empty_sid = FormParams::from_pairs(
        status_form(&sid)
            .pairs()
            .iter()
            .map(|(k, v)| (k.clone(), if k == "CallSid" { String::new() } else { v.clone() })),
    );
    let forged = app
        .post_signed("/api/v1/call-status", &empty_sid, "not-the-token")
        .await;
    assert_eq!(forged.status(), 403);
    // Signed, it is 400 with a problem body.
    let signed = app
        .post_signed("/api/v1/call-status", &empty_sid, AUTH_TOKEN)
        .await;
    assert_eq!(signed.status(), 400);
    assert_eq!(signed.headers()["content-type"], "application/problem+json");
    let stored = app.call(&sid).await.unwrap();
    assert_eq!(stored.status.as_str(), "ringing");

    // No route has an empty number, so no key applies: the form itself is malformed.
    for path in [
        "/api/v1/call-status",
        "/api/v1/incoming-call",
        "/api/v1/stream-ended",
    ] {
        let res = app
            .post_raw(
                path,
                b"CallSid=&From=&To=".to_vec(),
                &[("X-Twilio-Signature", "x")],
            )
            .await;
        assert_eq!(res.status(), 400, "{path}");
    }
    // A well-formed form for a number no route has still gets the platform message.
    let unknown = incoming_form_with(&call_sid(), "To", "+15550009999");
    let res = app
        .post_signed("/api/v1/incoming-call", &unknown, AUTH_TOKEN)
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("<Say>"));
    // A status callback must carry CallStatus, known number or not.
    let no_status =
        FormParams::from_pairs(unknown.pairs().iter().filter(|(k, _)| k != "CallStatus").cloned());
    let res = app
        .post_signed("/api/v1/call-status", &no_status, AUTH_TOKEN)
        .await;
    assert_eq!(res.status(), 400);
    app.flush().await;
    // Counted: the forged signature, and the well-formed unknown number once.
    assert_eq!(app.count(diagnostic::Entity).await, diagnostics + 2);
    let unknown = app.diagnostics("unknown_route").await;
    assert_eq!(unknown.len(), 1);
    assert_eq!((unknown[0].key.as_str(), unknown[0].count), ("+15550009999", 1));
    assert_eq!(app.count(call::Entity).await, 1);

    let spec = spec(&app).await;
    let status = &spec["components"]["schemas"]["TwilioStatusCallback"];
    assert_eq!(
        status["properties"]["CallSid"]["pattern"],
        input::CALL_SID.pattern.as_str()
    );
    assert_eq!(status["properties"]["To"]["minLength"], 1);
    let required: Vec<&str> = status["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, ["AccountSid", "CallSid", "To", "CallStatus"]);
}

/// The methods each documented path has, from the served spec, as `Allow` lists them.
fn documented_methods(spec: &Value) -> Vec<(String, String)> {
    let order = ["get", "head", "post", "put", "patch", "delete"];
    spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| {
            let item = item.as_object().unwrap();
            let methods: Vec<String> = order
                .iter()
                .filter(|m| item.contains_key(**m) || (**m == "head" && item.contains_key("get")))
                .map(|m| m.to_uppercase())
                .collect();
            (path.clone(), methods.join(", "))
        })
        .collect()
}

backend_test!(every_405_carries_allow_with_exactly_the_path_s_methods);
async fn every_405_carries_allow_with_exactly_the_path_s_methods(app: TestApp) {
    let spec = spec(&app).await;
    let paths = documented_methods(&spec);
    assert!(paths.len() > 20);
    for (template, expected) in paths {
        let path = template
            .split('/')
            .map(|s| if s.starts_with('{') { "x1" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        for method in [Method::TRACE, Method::OPTIONS] {
            let res = app.admin(method.clone(), &path).send().await.unwrap();
            assert_eq!(res.status(), 405, "{method} {path}");
            assert_eq!(
                res.headers().get("allow").and_then(|v| v.to_str().ok()),
                Some(expected.as_str()),
                "{method} {path}"
            );
        }
    }
    // The routes outside the document too.
    let res = app.admin(Method::POST, "/media-stream").send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET, HEAD");
    let res = app.admin(Method::DELETE, "/api/v1/tenants").send().await.unwrap();
    assert_eq!(res.headers()["allow"], "GET, HEAD, POST");
    // Other answers carry no Allow.
    let res = app.admin(Method::GET, "/api/v1/tenants").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("allow").is_none());
}
