//! Tenant API keys: created, listed and revoked by the admin; a key reaches only its tenant's
//! records (another tenant's are 404, platform operations 403), revoked or malformed keys are
//! 401 on every instance, and the key is shown once and never logged.
use std::{
    collections::BTreeSet,
    io::Write,
    sync::{Arc, Mutex, OnceLock},
};

use chrono::{Duration, Utc};
use reqwest::{Method, StatusCode};
use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, Set};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use stateset_voice::{
    api::{api_keys::ApiKey, common::List, ops::Event, routes::Route, tenants::Tenant},
    backend_test, db,
    domain::{
        admin::{NewRoute, NewTenant},
        api_keys::{self, NewApiKey},
    },
    testkit::*,
    twilio::form::FormParams,
};

const OTHER_SID: &str = "AC0000000000000000000000000000000b";
const OTHER_NUMBER: &str = "+15555550002";

/// Everything the service logs in this test binary, from the first call on.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,stateset_voice=debug"))
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .try_init()
            .expect("no other subscriber in the API tests");
        buffer
    })
    .clone()
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends a request with `bearer`; the status and the body as JSON (null when empty).
async fn call_with(
    app: &TestApp,
    method: Method,
    path: &str,
    bearer: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app.with_bearer(method, path, bearer);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.expect("request sent");
    let status = res.status();
    let text = res.text().await.expect("a body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("no JSON ({e}): {text}"))
    };
    (status, value)
}

/// Asserts a problem body with `status`.
fn assert_problem(status: StatusCode, body: &Value, expected: u16, what: &str) {
    assert_eq!(status.as_u16(), expected, "{what}: {body}");
    assert_eq!(body["status"], expected, "{what}: a problem body: {body}");
}

/// The incoming-call form for `to`, from `account_sid`.
fn incoming_to(call_sid: &str, to: &str, account_sid: &str) -> FormParams {
    let form = incoming_form(call_sid);
    FormParams::from_pairs(form.pairs().iter().map(|(k, v)| {
        let v = match k.as_str() {
            "To" => to,
            "AccountSid" => account_sid,
            _ => v.as_str(),
        };
        (k.clone(), v.to_owned())
    }))
}

/// Two tenants, each with a route, a call (and its event), a diagnostic and an alert; plus a
/// diagnostic and an alert of no tenant.
struct TwoTenants {
    a: entity::tenant::Model,
    a_route: entity::route::Model,
    a_call: String,
    b: entity::tenant::Model,
    b_route: entity::route::Model,
    b_call: String,
}

async fn two_tenants(app: &TestApp) -> TwoTenants {
    let (a, a_route) = app.seed().await;
    let (b, b_route) = app
        .seed_with(
            NewTenant {
                name: "Other".to_owned(),
                account_sid: OTHER_SID.to_owned(),
                ..Default::default()
            },
            NewRoute {
                phone_number: OTHER_NUMBER.to_owned(),
                ..Default::default()
            },
        )
        .await;
    let (a_call, b_call) = (call_sid(), call_sid());
    assert_eq!(app.incoming(&a_call).await.status(), 200);
    let form = incoming_to(&b_call, OTHER_NUMBER, OTHER_SID);
    let res = app.post_signed("/api/v1/incoming-call", &form, AUTH_TOKEN).await;
    assert_eq!(res.status(), 200);
    let window = std::time::Duration::from_secs(300);
    for (key, tenant, route) in [
        ("a", Some(a.id.as_str()), Some(a_route.id.as_str())),
        ("b", Some(b.id.as_str()), Some(b_route.id.as_str())),
        ("+15550009999", None, None),
    ] {
        let row = db::diagnostics::DiagnosticRow {
            kind: entity::states::DiagnosticKind::SignatureFailure,
            key,
            tenant_id: tenant,
            route_id: route,
            detail: None,
        };
        db::diagnostics::record(&app.state.db, &row, 1, window)
            .await
            .unwrap();
        db::alerts::insert(
            &app.state.db,
            db::alerts::NewAlert {
                tenant_id: tenant,
                route_id: route,
                kind: entity::states::DiagnosticKind::SignatureFailure,
                message: format!("alert {key}"),
                failure_count: 5,
                window_start: Utc::now(),
            },
        )
        .await
        .unwrap();
    }
    TwoTenants {
        a,
        a_route,
        a_call,
        b,
        b_route,
        b_call,
    }
}

backend_test!(keys_are_created_shown_once_listed_and_revoked);
async fn keys_are_created_shown_once_listed_and_revoked(app: TestApp) {
    let logs = captured_logs();
    let (tenant, _) = app.seed().await;
    let tid = tenant.id.as_str();
    let created = app.create_api_key(tid, Some("ci deploys")).await;
    let key = created.key.clone();
    assert!(key.starts_with("sk_") && key.len() == 3 + 43, "{key}");
    assert!(key[3..]
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    assert_eq!(created.prefix, key[..11]);
    assert_eq!(created.label.as_deref(), Some("ci deploys"));
    assert_ne!(app.create_api_key(tid, None).await.key, key, "keys are random");

    // Stored: the SHA-256 and the prefix, never the key.
    let stored = entity::api_key::Entity::find_by_id(created.id.clone())
        .one(&app.state.db)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored.key_hash, hex::encode(Sha256::digest(key.as_bytes())));
    assert!(![&stored.id, &stored.prefix, &stored.key_hash].contains(&&key));

    // The key authenticates its tenant's requests.
    let (status, got) = call_with(&app, Method::GET, &format!("/api/v1/tenants/{tid}"), &key, None).await;
    assert_eq!((status, got["id"].as_str()), (StatusCode::OK, Some(tid)));

    // Listed without the key, with when it was used.
    let path = format!("/api/v1/tenants/{tid}/api-keys");
    let (status, listed) = call_with(&app, Method::GET, &path, ADMIN_TOKEN, None).await;
    assert_eq!(status, 200);
    let text = listed.to_string();
    assert!(!text.contains(&key) && !text.contains(&key[11..]), "{text}");
    assert!(!text.contains("\"key\""), "{text}");
    let page: List<ApiKey> = app.get(&path).await;
    assert_eq!(page.items.len(), 2);
    let listed_key = page.items.iter().find(|k| k.id == created.id).expect("listed");
    assert_eq!(listed_key.prefix, created.prefix);
    assert!(listed_key.last_used_at.is_some(), "used once");

    // Nor in any later response: the tenant, its routes.
    for later in [format!("/api/v1/tenants/{tid}"), "/api/v1/routes".to_owned()] {
        let (_, body) = call_with(&app, Method::GET, &later, ADMIN_TOKEN, None).await;
        assert!(!body.to_string().contains(&key[3..]), "{later}: {body}");
    }

    // Revoked: 401 from then on, no longer listed; a second revocation is 404.
    app.delete(&format!("{path}/{}", created.id)).await;
    let (status, body) = call_with(&app, Method::GET, &format!("/api/v1/tenants/{tid}"), &key, None).await;
    assert_problem(status, &body, 401, "a revoked key");
    let page: List<ApiKey> = app.get(&path).await;
    assert!(page.items.iter().all(|k| k.id != created.id));
    let (status, body) = call_with(
        &app,
        Method::DELETE,
        &format!("{path}/{}", created.id),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_problem(status, &body, 404, "revoked twice");

    // Unknown tenants and keys are 404; a key of another tenant is unknown to this one.
    let other = app
        .seed_tenant(NewTenant {
            account_sid: OTHER_SID.to_owned(),
            ..Default::default()
        })
        .await;
    let live = &page.items[0].id;
    for (method, path) in [
        (Method::POST, "/api/v1/tenants/nope/api-keys".to_owned()),
        (Method::GET, "/api/v1/tenants/nope/api-keys".to_owned()),
        (Method::DELETE, format!("/api/v1/tenants/nope/api-keys/{live}")),
        (Method::DELETE, format!("/api/v1/tenants/{tid}/api-keys/nope")),
        (
            Method::DELETE,
            format!("/api/v1/tenants/{}/api-keys/{live}", other.id),
        ),
    ] {
        let body = (method == Method::POST).then(|| json!({}));
        let (status, problem) = call_with(&app, method.clone(), &path, ADMIN_TOKEN, body).await;
        assert_problem(status, &problem, 404, &format!("{method} {path}"));
    }
    let page: List<ApiKey> = app.get(&format!("/api/v1/tenants/{tid}/api-keys")).await;
    assert_eq!(page.items.len(), 1, "the other tenant's revocation missed");

    // The logs name the key by id and prefix, never the key.
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logs.contains("API key created") && logs.contains(&created.id),
        "the capture works"
    );
    assert!(!logs.contains(&key[11..]), "the key was logged");
}

backend_test!(bad_input_and_bad_keys_are_refused_and_nothing_is_stored);
async fn bad_input_and_bad_keys_are_refused_and_nothing_is_stored(app: TestApp) {
    let (tenant, _) = app.seed().await;
    let path = format!("/api/v1/tenants/{}/api-keys", tenant.id);
    let long = "x".repeat(201);
    for (body, expected) in [
        (json!({"label": ""}), 422),
        (json!({"label": "   "}), 422),
        (json!({"label": long}), 422),
        (json!({"label": "bell\u{7}"}), 422),
        (json!({"label": "two\nlines"}), 422),
        (json!({"label": ["a"]}), 400),
        (json!({"label": "ok", "key": "sk_mine"}), 400),
    ] {
        let (status, problem) = call_with(&app, Method::POST, &path, ADMIN_TOKEN, Some(body.clone())).await;
        assert_problem(status, &problem, expected, &body.to_string());
    }
    let res = app
        .admin(Method::POST, &path)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(app.count(entity::api_key::Entity).await, 0, "nothing stored");

    // Keys of the wrong shape, or unknown, authenticate nothing.
    let real = app.create_api_key(&tenant.id, None).await.key;
    let mut flipped = real.clone().into_bytes();
    flipped[20] = if flipped[20] == b'A' { b'B' } else { b'A' };
    let unknown = String::from_utf8(flipped).unwrap();
    let malformed = [
        "sk_".to_owned(),
        "sk_short".to_owned(),
        format!("{}=", &real[..real.len() - 1]),
        format!("{}+", &real[..real.len() - 1]),
        format!("{real}x"),
        real[3..].to_owned(),
        format!("SK_{}", &real[3..]),
        unknown,
    ];
    for bad in &malformed {
        let (status, problem) = call_with(&app, Method::GET, "/api/v1/calls", bad, None).await;
        assert_problem(status, &problem, 401, bad);
        let route = json!({"phone_number": "+15555550100"});
        let (status, _) = call_with(
            &app,
            Method::POST,
            &format!("/api/v1/tenants/{}/routes", tenant.id),
            bad,
            Some(route),
        )
        .await;
        assert_eq!(status, 401, "{bad}");
    }
    assert_eq!(app.count(entity::route::Entity).await, 1, "no route stored");
    let (status, _) = call_with(&app, Method::GET, "/api/v1/calls", &real, None).await;
    assert_eq!(status, 200, "the real key still works");
}

/// The value of a path parameter of the operations below.
fn path_value<'a>(name: &str, world: &'a TwoTenants, a_key: &'a str) -> &'a str {
    match name {
        "tenant_id" => &world.a.id,
        "route_id" => &world.a_route.id,
        "call_sid" => &world.a_call,
        "key_id" => a_key,
        other => panic!("no value for the path parameter {other}: add one to this test"),
    }
}

/// A valid request body of an operation, so that the credential alone decides the answer.
fn request_body(operation_id: &str) -> Value {
    match operation_id {
        "createTenant" => json!({
            "name": "Third", "account_sid": "AC00000000000000000000000000000003", "auth_token": "t0ken-3"
        }),
        "updateTenant" => json!({"name": "Renamed"}),
        "createRoute" => json!({"phone_number": "+15555550103"}),
        "updateRoute" => json!({"label": "renamed"}),
        "setDrain" => json!({"draining": true}),
        "createApiKey" => json!({"label": "minted"}),
        other => panic!("no request body for {other}: add one to this test"),
    }
}

backend_test!(every_admin_operation_refuses_another_tenants_key_and_a_revoked_key);
async fn every_admin_operation_refuses_another_tenants_key_and_a_revoked_key(app: TestApp) {
    let world = two_tenants(&app).await;
    let a_key = app.create_api_key(&world.a.id, Some("a")).await;
    let b_key = app.create_api_key(&world.b.id, Some("b")).await.key;
    let revoked = app.create_api_key(&world.b.id, Some("revoked")).await;
    app.delete(&format!("/api/v1/tenants/{}/api-keys/{}", world.b.id, revoked.id))
        .await;
    let spec: Value = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let (mut forbidden, mut not_found, mut own_only) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for (template, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(security) = op["security"].as_array() else {
                continue;
            };
            let schemes: BTreeSet<&str> = security
                .iter()
                .flat_map(|s| s.as_object().unwrap().keys().map(String::as_str))
                .collect();
            let id = op["operationId"].as_str().unwrap();
            assert!(
                schemes.contains("AdminAuth"),
                "{id}: the admin token reaches everything"
            );
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let mut path = template.clone();
            let mut scoped = false;
            for p in params.iter().filter(|p| p["in"] == "path") {
                let name = p["name"].as_str().unwrap();
                path = path.replace(&format!("{{{name}}}"), path_value(name, &world, &a_key.id));
                scoped = true;
            }
            if params
                .iter()
                .any(|p| p["in"] == "query" && p["name"] == "tenant_id")
            {
                path = format!("{path}?tenant_id={}", world.a.id);
                scoped = true;
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = op.get("requestBody").map(|_| request_body(id));
            let what = format!("{id} ({method} {path})");

            for bad in [revoked.key.as_str(), "sk_malformed"] {
                let (status, problem) = call_with(&app, method.clone(), &path, bad, body.clone()).await;
                assert_problem(status, &problem, 401, &format!("{what} with a bad key"));
            }
            let (status, answer) = call_with(&app, method.clone(), &path, &b_key, body.clone()).await;
            if !schemes.contains("TenantKeyAuth") {
                assert_problem(status, &answer, 403, &what);
                forbidden.insert(id.to_owned());
            } else if scoped {
                assert_problem(status, &answer, 404, &what);
                not_found.insert(id.to_owned());
            } else {
                // A list without a tenant filter: the key's own tenant only.
                assert_eq!(status, 200, "{what}: {answer}");
                let text = answer.to_string();
                assert!(!text.contains(&world.a.id), "{what} shows tenant A: {text}");
                own_only.insert(id.to_owned());
            }
        }
    }
    let expected_forbidden = [
        "createTenant",
        "updateTenant",
        "deleteTenant",
        "createApiKey",
        "listApiKeys",
        "revokeApiKey",
        "getRuntime",
        "setDrain",
    ];
    assert_eq!(forbidden, expected_forbidden.map(String::from).into());
    let expected_not_found = [
        "getTenant",
        "createRoute",
        "listRoutes",
        "getRoute",
        "updateRoute",
        "deleteRoute",
        "listCalls",
        "getCall",
        "listAlerts",
        "listEvents",
    ];
    assert_eq!(not_found, expected_not_found.map(String::from).into());
    assert_eq!(
        own_only,
        ["listDiagnostics", "listTenants"].map(String::from).into()
    );

    // Nothing of tenant A changed; nothing was created or revoked.
    assert!(!app.state.runtime.is_draining());
    let a: Tenant = app.get(&format!("/api/v1/tenants/{}", world.a.id)).await;
    assert_eq!(a.name, "Acme");
    let route: Route = app.get(&format!("/api/v1/routes/{}", world.a_route.id)).await;
    assert_eq!(route.label, None);
    assert_eq!(app.count(entity::tenant::Entity).await, 2);
    assert_eq!(app.count(entity::route::Entity).await, 2);
    let (status, _) = call_with(&app, Method::GET, "/api/v1/calls", &a_key.key, None).await;
    assert_eq!(status, 200, "tenant A's key was not revoked");
    assert_eq!(app.count(entity::api_key::Entity).await, 3);
}

backend_test!(a_tenant_key_reads_its_own_records_and_its_lists_default_to_its_tenant);
async fn a_tenant_key_reads_its_own_records_and_its_lists_default_to_its_tenant(app: TestApp) {
    let world = two_tenants(&app).await;
    let key = app.create_api_key(&world.a.id, None).await.key;
    let get = |path: String| {
        let (app, key) = (&app, &key);
        async move {
            let (status, body) = call_with(app, Method::GET, &path, key, None).await;
            assert_eq!(status, 200, "{path}: {body}");
            body
        }
    };
    let tenant_ids = |body: &Value, field: &str| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i[field].as_str().unwrap_or("(none)").to_owned())
            .collect()
    };
    let a = world.a.id.clone();
    for path in [
        "/api/v1/calls",
        "/api/v1/routes",
        "/api/v1/events",
        "/api/v1/alerts",
        "/api/v1/diagnostics",
    ] {
        let listed = get(path.to_owned()).await;
        assert_eq!(
            tenant_ids(&listed, "tenant_id"),
            std::slice::from_ref(&a),
            "{path}: {listed}"
        );
        let filtered = get(format!("{path}?tenant_id={a}")).await;
        assert_eq!(
            tenant_ids(&filtered, "tenant_id"),
            std::slice::from_ref(&a),
            "{path} filtered"
        );
    }
    let tenants = get("/api/v1/tenants".to_owned()).await;
    assert_eq!(tenant_ids(&tenants, "id"), std::slice::from_ref(&a));
    let calls = get("/api/v1/calls".to_owned()).await;
    assert_eq!(calls["items"][0]["call_sid"], world.a_call.as_str());
    let one = get(format!("/api/v1/calls/{}", world.a_call)).await;
    assert_eq!(one["call_sid"], world.a_call.as_str());

    // Another tenant's records, and lists filtered to it, are not found.
    for path in [
        format!("/api/v1/calls/{}", world.b_call),
        format!("/api/v1/routes/{}", world.b_route.id),
        format!("/api/v1/tenants/{}", world.b.id),
        format!("/api/v1/calls?tenant_id={}", world.b.id),
        format!("/api/v1/routes?tenant_id={}", world.b.id),
        format!("/api/v1/events?tenant_id={}", world.b.id),
        format!("/api/v1/alerts?tenant_id={}", world.b.id),
        "/api/v1/calls?tenant_id=nope".to_owned(),
    ] {
        let (status, problem) = call_with(&app, Method::GET, &path, &key, None).await;
        assert_problem(status, &problem, 404, &path);
    }

    // The admin still sees both tenants, the platform's diagnostics and alerts too.
    let all: List<Event> = app.get("/api/v1/events").await;
    assert_eq!(all.items.len(), 2);
    let (_, diagnostics) = call_with(&app, Method::GET, "/api/v1/diagnostics", ADMIN_TOKEN, None).await;
    assert_eq!(diagnostics["items"].as_array().unwrap().len(), 3);
    let (_, alerts) = call_with(&app, Method::GET, "/api/v1/alerts", ADMIN_TOKEN, None).await;
    assert_eq!(alerts["items"].as_array().unwrap().len(), 3);
}

backend_test!(a_tenant_key_manages_its_own_routes_and_no_others);
async fn a_tenant_key_manages_its_own_routes_and_no_others(app: TestApp) {
    let world = two_tenants(&app).await;
    let key = app.create_api_key(&world.a.id, None).await.key;
    let own = format!("/api/v1/tenants/{}/routes", world.a.id);
    let (status, created) = call_with(
        &app,
        Method::POST,
        &own,
        &key,
        Some(json!({"phone_number": "+1 555 555 0100"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["tenant_id"], world.a.id.as_str());
    let rid = created["id"].as_str().unwrap();
    let (status, patched) = call_with(
        &app,
        Method::PATCH,
        &format!("/api/v1/routes/{rid}"),
        &key,
        Some(json!({"label": "Sales"})),
    )
    .await;
    assert_eq!((status, &patched["label"]), (StatusCode::OK, &json!("Sales")));
    let (status, _) = call_with(&app, Method::DELETE, &format!("/api/v1/routes/{rid}"), &key, None).await;
    assert_eq!(status, 204);

    // The other tenant's routes cannot be created, changed or deleted: 404, nothing changed.
    let theirs = format!("/api/v1/tenants/{}/routes", world.b.id);
    let (status, problem) = call_with(
        &app,
        Method::POST,
        &theirs,
        &key,
        Some(json!({"phone_number": "+15555550101"})),
    )
    .await;
    assert_problem(status, &problem, 404, "create in another tenant");
    let b_route = format!("/api/v1/routes/{}", world.b_route.id);
    let (status, problem) = call_with(
        &app,
        Method::PATCH,
        &b_route,
        &key,
        Some(json!({"enabled": false})),
    )
    .await;
    assert_problem(status, &problem, 404, "update another tenant's route");
    let (status, problem) = call_with(&app, Method::DELETE, &b_route, &key, None).await;
    assert_problem(status, &problem, 404, "delete another tenant's route");
    let untouched: Route = app.get(&b_route).await;
    assert!(untouched.enabled);
    assert_eq!(app.count(entity::route::Entity).await, 2);
}

backend_test!(a_revoked_key_is_refused_by_another_instance);
async fn a_revoked_key_is_refused_by_another_instance(app: TestApp) {
    let (tenant, _) = app.seed().await;
    let created = app.create_api_key(&tenant.id, None).await;
    let sibling = app.sibling().await;
    let on_sibling = || {
        app.client
            .get(format!("{sibling}/api/v1/tenants/{}", tenant.id))
            .bearer_auth(&created.key)
            .send()
    };
    assert_eq!(on_sibling().await.unwrap().status(), 200);
    app.delete(&format!("/api/v1/tenants/{}/api-keys/{}", tenant.id, created.id))
        .await;
    let res = on_sibling().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], 401);
}

backend_test!(last_use_is_written_at_most_once_a_minute);
async fn last_use_is_written_at_most_once_a_minute(app: TestApp) {
    let (tenant, _) = app.seed().await;
    let created = app.create_api_key(&tenant.id, None).await;
    let db = &app.state.db;
    let id = created.id.as_str();
    let stored = || async move {
        entity::api_key::Entity::find_by_id(id.to_owned())
            .one(db)
            .await
            .unwrap()
            .unwrap()
    };
    let set_last_used = |ago: Duration| async move {
        let mut model = stored().await.into_active_model();
        model.last_used_at = Set(Some(Utc::now() - ago));
        model.update(db).await.unwrap();
        stored().await.last_used_at.unwrap()
    };
    let use_key = || call_with(&app, Method::GET, "/api/v1/routes", &created.key, None);
    assert!(stored().await.last_used_at.is_none());

    let recent = set_last_used(Duration::seconds(10)).await;
    assert_eq!(use_key().await.0, 200);
    assert_eq!(
        stored().await.last_used_at,
        Some(recent),
        "not written again within the minute"
    );

    let stale = set_last_used(Duration::seconds(120)).await;
    assert_eq!(use_key().await.0, 200);
    assert!(
        stored().await.last_used_at.unwrap() > stale,
        "written once it is a minute old"
    );
}

backend_test!(tenant_keys_work_without_an_admin_token, |a| a.admin_token = None);
async fn tenant_keys_work_without_an_admin_token(app: TestApp) {
    let (tenant, _) = app.seed().await;
    let created = api_keys::create(&app.state.db, &tenant.id, NewApiKey::default())
        .await
        .unwrap();
    let (status, body) = call_with(
        &app,
        Method::GET,
        &format!("/api/v1/tenants/{}", tenant.id),
        &created.key,
        None,
    )
    .await;
    assert_eq!(
        (status, body["id"].as_str()),
        (StatusCode::OK, Some(tenant.id.as_str()))
    );
    let (status, problem) = call_with(&app, Method::GET, "/api/v1/runtime", &created.key, None).await;
    assert_problem(status, &problem, 403, "a platform operation");
    let (status, problem) = call_with(&app, Method::GET, "/api/v1/tenants", "anything", None).await;
    assert_problem(status, &problem, 401, "no admin token configured");
    assert!(
        problem["detail"].as_str().unwrap().contains("VOICE_ADMIN_TOKEN"),
        "{problem}"
    );
}
