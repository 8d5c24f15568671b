//! Answers match the published OpenAPI document: nulls are declared nullable, framework errors
//! are declared problem bodies, and inputs PostgreSQL cannot store are refused, never a 500.
use entity::{route, tenant};
use reqwest::Method;
use serde_json::{json, Value};

use stateset_voice::{backend_test, testkit::*};

fn spec() -> Value {
    serde_yaml::from_str(&stateset_voice::openapi_yaml()).expect("the spec is YAML")
}

fn by_ref<'a>(spec: &'a Value, reference: &str) -> &'a Value {
    let name = reference
        .strip_prefix("#/components/schemas/")
        .unwrap_or_else(|| panic!("unexpected reference {reference}"));
    &spec["components"]["schemas"][name]
}

/// The schema `value` is checked against: references followed and, for a discriminated union,
/// the variant that `value`'s discriminator names.
fn effective<'a>(spec: &'a Value, schema: &'a Value, value: &Value) -> &'a Value {
    if let Some(reference) = schema["$ref"].as_str() {
        return effective(spec, by_ref(spec, reference), value);
    }
    if let Some(tag) = schema["discriminator"]["propertyName"].as_str() {
        let variant = &schema["discriminator"]["mapping"][value[tag].as_str().unwrap_or_default()];
        let variant = variant
            .as_str()
            .unwrap_or_else(|| panic!("no variant for {value}"));
        return effective(spec, by_ref(spec, variant), value);
    }
    schema
}

/// The declaration of property `name`, also through `allOf`.
fn property<'a>(spec: &'a Value, schema: &'a Value, value: &Value, name: &str) -> Option<&'a Value> {
    let schema = effective(spec, schema, value);
    if let Some(declared) = schema["properties"].get(name) {
        return Some(declared);
    }
    schema["allOf"]
        .as_array()?
        .iter()
        .find_map(|member| property(spec, member, value, name))
}

/// Asserts that every `null` in `value` is a property the schema declares nullable.
fn assert_nulls_declared(spec: &Value, schema: &Value, value: &Value, at: &str) {
    match value {
        Value::Object(fields) => {
            let own = effective(spec, schema, value);
            if own["properties"].is_null() && own["allOf"].is_null() {
                return; // free-form, like an event's payload
            }
            for (name, field) in fields {
                let path = format!("{at}.{name}");
                let declared =
                    property(spec, schema, value, name).unwrap_or_else(|| panic!("{path} is not declared"));
                if field.is_null() {
                    assert_eq!(declared["nullable"], true, "{path} is null but not nullable");
                } else {
                    assert_nulls_declared(spec, declared, field, &path);
                }
            }
        }
        Value::Array(items) => {
            let schema = effective(spec, schema, value);
            for (i, item) in items.iter().enumerate() {
                assert_nulls_declared(spec, &schema["items"], item, &format!("{at}[{i}]"));
            }
        }
        _ => {}
    }
}

/// The 200 schema of an operation.
fn ok_schema<'a>(spec: &'a Value, path: &str, method: &str) -> &'a Value {
    let responses = &spec["paths"][path][method]["responses"];
    let ok = if responses["200"].is_null() {
        &responses["201"]
    } else {
        &responses["200"]
    };
    &ok["content"]["application/json; charset=utf-8"]["schema"]
}

#[test]
fn every_admin_operation_declares_the_framework_errors_it_can_return() {
    let spec = spec();
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = &op["responses"];
            let declared = |status: &str| {
                assert_eq!(
                    responses[status]["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{method} {path} declares {status} as a problem body"
                );
            };
            if op["security"].is_array() {
                declared("400");
                declared("401");
                checked += 1;
            }
            if !op["requestBody"]["content"]["application/json; charset=utf-8"].is_null() {
                declared("415");
            }
        }
    }
    assert!(checked >= 17, "{checked} admin operations");
}

backend_test!(absent_values_are_declared_nullable);
async fn absent_values_are_declared_nullable(app: TestApp) {
    app.seed().await;
    let spec = spec();
    let routes = app.get::<Value>("/api/v1/routes").await;
    assert_eq!(routes["next_cursor"], Value::Null);
    assert_eq!(routes["items"][0]["agent_url"], Value::Null);
    assert_nulls_declared(
        &spec,
        ok_schema(&spec, "/api/v1/routes", "get"),
        &routes,
        "routes",
    );
    let tenants = app.get::<Value>("/api/v1/tenants").await;
    assert_nulls_declared(
        &spec,
        ok_schema(&spec, "/api/v1/tenants", "get"),
        &tenants,
        "tenants",
    );
    let route_id = routes["items"][0]["id"].as_str().unwrap();
    let patched: Value = app
        .patch(
            &format!("/api/v1/routes/{route_id}"),
            &json!({"label": null, "fallback": {"type": "dial", "number": "+15550001111"}}),
        )
        .await;
    assert_eq!(patched["label"], Value::Null);
    let schema = ok_schema(&spec, "/api/v1/routes/{route_id}", "patch");
    assert_nulls_declared(&spec, schema, &patched, "route");

    app.incoming(&call_sid()).await;
    let calls = app.get::<Value>("/api/v1/calls").await;
    assert_eq!(calls["items"].as_array().unwrap().len(), 1);
    assert_nulls_declared(&spec, ok_schema(&spec, "/api/v1/calls", "get"), &calls, "calls");
    let events = app.get::<Value>("/api/v1/events").await;
    assert_nulls_declared(
        &spec,
        ok_schema(&spec, "/api/v1/events", "get"),
        &events,
        "events",
    );
    for path in ["/api/v1/diagnostics", "/api/v1/alerts"] {
        let page = app.get::<Value>(path).await;
        assert_nulls_declared(&spec, ok_schema(&spec, path, "get"), &page, path);
    }
}

backend_test!(nul_in_the_url_is_a_bad_request);
async fn nul_in_the_url_is_a_bad_request(app: TestApp) {
    app.seed().await;
    for (method, path) in [
        (Method::GET, "/api/v1/tenants?cursor=%00"),
        (Method::GET, "/api/v1/tenants/%00"),
        (Method::DELETE, "/api/v1/routes/ab%00cd"),
        (Method::GET, "/api/v1/calls?tenant_id=%00"),
        (Method::GET, "/api/v1/calls/CA%00"),
        (Method::GET, "/api/v1/diagnostics?kind=unknown_route%00"),
        (Method::GET, "/api/v1/events?limit=5&cursor=x%00y"),
    ] {
        let res = app.admin(method.clone(), path).send().await.unwrap();
        assert_eq!(res.status(), 400, "{method} {path}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{method} {path}"
        );
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["status"], 400);
    }
    // An escaped percent sign followed by zeros is no NUL.
    let listed = app
        .admin(Method::GET, "/api/v1/tenants?cursor=%2500")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    assert_eq!(app.count(route::Entity).await, 1);
}

backend_test!(control_characters_in_urls_are_refused);
async fn control_characters_in_urls_are_refused(app: TestApp) {
    let (tenant, route) = app.seed().await;
    let refused = |method: Method, path: String, body: Value| {
        let req = app.admin(method.clone(), &path).json(&body);
        async move {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 422, "{method} {path} {body}");
            let problem: Value = res.json().await.unwrap();
            assert!(
                problem["detail"].as_str().unwrap().contains("control characters"),
                "{problem}"
            );
        }
    };
    refused(
        Method::POST,
        "/api/v1/tenants".to_owned(),
        json!({
            "name": "Other",
            "account_sid": "AC0123456789abcdef0123456789abcdef",
            "auth_token": "other-auth-token",
            "webhook_url": "https://hooks.example.com/a\u{0}b",
        }),
    )
    .await;
    refused(
        Method::PATCH,
        format!("/api/v1/tenants/{}", tenant.id),
        json!({"webhook_url": "https://hooks.example.com/\u{0}"}),
    )
    .await;
    refused(
        Method::PATCH,
        format!("/api/v1/routes/{}", route.id),
        json!({"agent_url": "wss://agent.example.com/\u{0}"}),
    )
    .await;
    refused(
        Method::PATCH,
        format!("/api/v1/routes/{}", route.id),
        json!({"fallback": {"type": "redirect", "url": "https://flow.example.com/\u{7}x"}}),
    )
    .await;
    assert_eq!(app.count(tenant::Entity).await, 1);
    let stored: Value = app.get(&format!("/api/v1/routes/{}", route.id)).await;
    assert_eq!(stored["agent_url"], Value::Null);
    assert_eq!(stored["fallback"], Value::Null);
}

backend_test!(runtime_and_body_errors_are_documented_problems);
async fn runtime_and_body_errors_are_documented_problems(app: TestApp) {
    let spec = spec();
    let cases = [
        (
            "getRuntime",
            app.client.get(format!("{}/api/v1/runtime", app.base)),
            401,
        ),
        (
            "setDrain",
            app.admin(Method::PUT, "/api/v1/runtime/drain")
                .json(&json!({"draining": {}})),
            400,
        ),
        (
            "setDrain",
            app.admin(Method::PUT, "/api/v1/runtime/drain")
                .body(r#"{"draining":true}"#),
            415,
        ),
        (
            "createTenant",
            app.admin(Method::POST, "/api/v1/tenants")
                .header("Content-Type", "text/plain")
                .body("{}"),
            415,
        ),
    ];
    for (operation, req, status) in cases {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), status, "{operation}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let declared = spec["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .find(|op| op["operationId"] == operation)
            .map(|op| !op["responses"][status.to_string()].is_null());
        assert_eq!(declared, Some(true), "{operation} declares {status}");
    }
    assert!(!app.state.runtime.is_draining());
}
