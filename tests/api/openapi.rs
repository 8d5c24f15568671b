//! The committed `openapi.yaml` is exactly what the code generates, and the server serves it.
use stateset_voice::testkit::*;

#[test]
fn committed_openapi_yaml_matches_the_code() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).expect("openapi.yaml");
    let generated = stateset_voice::openapi_yaml();
    assert!(
        committed == generated,
        "openapi.yaml is stale: run `cargo xtask openapi` and commit the result"
    );
}

#[test]
fn openapi_yaml_is_a_valid_openapi_3_document_covering_every_endpoint() {
    let spec: openapiv3::OpenAPI =
        serde_yaml::from_str(&stateset_voice::openapi_yaml()).expect("valid OpenAPI 3.0");
    assert!(spec.openapi.starts_with("3.0"));
    let expect = [
        ("/api/v1/incoming-call", "post"),
        ("/api/v1/incoming-call/fallback", "post"),
        ("/api/v1/stream-ended", "post"),
        ("/api/v1/call-status", "post"),
        ("/metrics", "get"),
        ("/api/v1/tenants", "post"),
        ("/api/v1/tenants", "get"),
        ("/api/v1/tenants/{tenant_id}", "get"),
        ("/api/v1/tenants/{tenant_id}", "patch"),
        ("/api/v1/tenants/{tenant_id}", "delete"),
        ("/api/v1/tenants/{tenant_id}/routes", "post"),
        ("/api/v1/tenants/{tenant_id}/api-keys", "post"),
        ("/api/v1/tenants/{tenant_id}/api-keys", "get"),
        ("/api/v1/tenants/{tenant_id}/api-keys/{key_id}", "delete"),
        ("/api/v1/routes", "get"),
        ("/api/v1/routes/{route_id}", "get"),
        ("/api/v1/routes/{route_id}", "patch"),
        ("/api/v1/routes/{route_id}", "delete"),
        ("/api/v1/calls", "get"),
        ("/api/v1/calls/{call_sid}", "get"),
        ("/api/v1/diagnostics", "get"),
        ("/api/v1/alerts", "get"),
        ("/api/v1/events", "get"),
        ("/api/v1/runtime/drain", "put"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ];
    for (path, method) in expect {
        let item = spec
            .paths
            .paths
            .get(path)
            .and_then(|p| p.as_item())
            .unwrap_or_else(|| panic!("{path} documented"));
        let op = match method {
            "get" => &item.get,
            "post" => &item.post,
            "put" => &item.put,
            "patch" => &item.patch,
            _ => &item.delete,
        };
        assert!(op.is_some(), "{method} {path} documented");
    }
    let schemes = spec.components.unwrap().security_schemes;
    assert!(schemes.contains_key("AdminAuth"));
    assert!(schemes.contains_key("TenantKeyAuth"));
}

#[tokio::test]
async fn spec_and_docs_are_served_without_authentication() {
    let app = spawn_app(Backend::Sqlite)
        .await
        .expect("SQLite is always available");
    let yaml = app
        .client
        .get(format!("{}/openapi.yaml", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(yaml.status(), 200);
    assert_eq!(yaml.text().await.unwrap(), stateset_voice::openapi_yaml());
    let json: serde_json::Value = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(json["openapi"].as_str().unwrap().starts_with("3."));
    let webhook = &json["paths"]["/api/v1/incoming-call"]["post"];
    assert!(webhook["requestBody"]["content"]["application/x-www-form-urlencoded"].is_object());
    let params = webhook["parameters"].as_array().unwrap();
    assert!(params
        .iter()
        .any(|p| p["name"] == "X-Twilio-Signature" && p["in"] == "header"));
    for code in ["200", "400", "403", "409", "413", "415"] {
        assert!(
            webhook["responses"][code].is_object(),
            "response {code} documented"
        );
    }
    let docs = app
        .client
        .get(format!("{}/docs/", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("reference.html"));
}
