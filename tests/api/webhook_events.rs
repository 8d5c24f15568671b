//! The outbound events in the published spec: every event type the code can emit is a
//! documented webhook, and real stored events (a call, a fallback, a stream, a completed call,
//! an alert) validate against the schema the served `/openapi.yaml` publishes for their type.
use std::{collections::BTreeSet, path::Path, time::Duration};

use entity::states::EventType;
use serde_json::{json, Map, Value};
use stateset_voice::{
    backend_test,
    call::{self, wav, CallOptions},
    testkit::*,
    twilio::audio,
};

/// The spec as a JSON value.
fn spec(yaml: &str) -> Value {
    serde_yaml::from_str(yaml).expect("the spec is YAML")
}

/// The JSON schema of the body of webhook `name`, its references resolvable in `spec`.
fn body_schema(spec: &Value, name: &str) -> Value {
    let content = &spec["webhooks"][name]["post"]["requestBody"]["content"];
    let media = content
        .as_object()
        .and_then(|c| c.iter().find(|(k, _)| k.starts_with("application/json")))
        .unwrap_or_else(|| panic!("webhook {name} has a JSON body"))
        .1;
    let mut schema = json_schema(&media["schema"]);
    schema["components"] = json_schema(&spec["components"]);
    schema
}

/// An OpenAPI 3.0 schema as JSON Schema: `nullable` becomes "or null", and objects that list
/// their properties accept no others (so an undocumented field fails).
fn json_schema(value: &Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(json_schema).collect()),
        Value::Object(map) => {
            let mut out: Map<String, Value> = map.iter().map(|(k, v)| (k.clone(), json_schema(v))).collect();
            let mut nullable = out.remove("nullable") == Some(Value::Bool(true));
            if let Some(Value::Array(parts)) = out.get_mut("allOf") {
                for part in parts {
                    if let Some(part) = part.as_object_mut() {
                        // Already converted: a nullable part is an anyOf with null.
                        if let Some(Value::Array(any)) = part.get("anyOf").cloned() {
                            if any.contains(&json!({"type": "null"})) && part.len() == 1 {
                                *part = any[0].as_object().cloned().unwrap_or_default();
                                nullable = true;
                            }
                        }
                    }
                }
            }
            if out.get("type") == Some(&json!("object")) && out.contains_key("properties") {
                out.entry("additionalProperties").or_insert(Value::Bool(false));
            }
            let schema = Value::Object(out);
            if nullable {
                json!({"anyOf": [schema, {"type": "null"}]})
            } else {
                schema
            }
        }
        other => other.clone(),
    }
}

#[test]
fn every_event_type_is_a_documented_webhook_with_the_signature_headers() {
    let spec = spec(&stateset_voice::openapi_yaml());
    let documented: BTreeSet<&str> = spec["webhooks"]
        .as_object()
        .expect("the spec has webhooks")
        .keys()
        .map(String::as_str)
        .collect();
    let emitted: BTreeSet<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(documented, emitted, "webhooks are exactly the event types");
    for name in emitted {
        let op = &spec["webhooks"][name]["post"];
        let headers: BTreeSet<&str> = op["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has parameters"))
            .iter()
            .filter(|p| p["in"] == "header" && p["required"] == true)
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(
            headers,
            BTreeSet::from(["webhook-id", "webhook-timestamp", "webhook-signature"]),
            "{name}"
        );
        let schema = body_schema(&spec, name);
        let body = schema["$ref"].as_str().expect("the body is a named schema");
        let body = body.rsplit('/').next().unwrap();
        let type_ref = spec["components"]["schemas"][body]["properties"]["type"]["allOf"][0]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: the body's type is a named enum"));
        let type_schema = &spec["components"]["schemas"][type_ref.rsplit('/').next().unwrap()];
        assert_eq!(
            type_schema["enum"],
            json!([name]),
            "{name}: type has exactly its name"
        );
        let validator = jsonschema::validator_for(&schema).expect("a valid JSON schema");
        assert!(
            !validator.is_valid(&json!({"type": name, "timestamp": "2025-01-01T00:00:00Z", "data": {}})),
            "{name}: an empty data object does not validate"
        );
    }
}

/// 5 frames (100 ms) of a tone, as the caller's audio.
fn short_call(app: &TestApp, dir: &Path) -> CallOptions {
    let input = dir.join("in.wav");
    let samples: Vec<i16> = (0..5 * audio::FRAME_SAMPLES)
        .map(|i| ((i as f64 / 8000.0 * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16)
        .collect();
    wav::write_pcm(&input, &samples).unwrap();
    let mut options = CallOptions::new(&app.base, AUTH_TOKEN, ACCOUNT_SID, NUMBER);
    options.audio = Some(input);
    options.tail = Duration::from_millis(100);
    options
}

backend_test!(stored_events_validate_against_their_published_schemas, |a| {
    a.alert_threshold = 1;
});
async fn stored_events_validate_against_their_published_schemas(app: TestApp) {
    app.seed().await;
    // A call streamed to the echo agent: call.received, stream.started, stream.ended.
    let dir = tempfile::tempdir().unwrap();
    let mut options = short_call(&app, dir.path());
    let sid = call_sid();
    options.call_sid = Some(sid.clone());
    let report = call::run(options).await.expect("the call is placed");
    assert!(report.ok, "{report:#?}");
    // Its final status: call.completed.
    let mut status = incoming_form_with(&sid, "CallStatus", "completed");
    status.push("CallDuration", "3");
    let res = app.post_signed("/api/v1/call-status", &status, AUTH_TOKEN).await;
    assert_eq!(res.status(), 204);
    // Twilio calling the Fallback URL for another call: call.fallback.
    let mut fallback = incoming_form(&call_sid());
    fallback.push("ErrorCode", "11200");
    let res = app
        .post_signed("/api/v1/incoming-call/fallback", &fallback, AUTH_TOKEN)
        .await;
    assert_eq!(res.status(), 200);
    // A forged signature on the production route: alert.raised.
    let res = app
        .post_signed("/api/v1/incoming-call", &incoming_form(&call_sid()), "forged")
        .await;
    assert_eq!(res.status(), 403);
    app.flush().await;

    let served = app
        .client
        .get(format!("{}/openapi.yaml", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let spec = spec(&served);
    let mut seen = BTreeSet::new();
    for event_type in EventType::ALL {
        let name = event_type.as_str();
        let schema = body_schema(&spec, name);
        let validator = jsonschema::validator_for(&schema).expect("a valid JSON schema");
        for event in app.events(name).await {
            let body: Value = serde_json::from_str(&event.payload).expect("a JSON payload");
            let errors: Vec<String> = validator.iter_errors(&body).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{name} {body}: {errors:?}");
            assert_eq!(body["type"], name);
            seen.insert(name);
        }
    }
    let all: BTreeSet<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(seen, all, "every event type was produced and checked");
}
