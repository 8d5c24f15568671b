//! The streaming side as an AsyncAPI 3.0 document: the Twilio Media Streams channel this
//! service serves and the agent runtime channel it connects to. The message payloads are
//! generated from the frame types the service parses and sends ([`crate::twilio::media`]).
use schemars::{generate::SchemaSettings, JsonSchema};
use serde_json::{json, Map, Value};

use crate::twilio::media::{Inbound, Outbound};

/// Messages of one direction: `(event name, payload schema)` per frame type, in declaration
/// order, and the shared schemas they reference.
struct Frames {
    messages: Vec<(String, Value)>,
    schemas: Map<String, Value>,
}

/// The frames of `T` (an enum tagged by `event`), from its generated JSON schema.
fn frames<T: JsonSchema>() -> Frames {
    let generator = SchemaSettings::draft07().into_generator();
    let root = generator.into_root_schema_for::<T>();
    let mut root = relink(root.to_value());
    let schemas = match root.get_mut("definitions").map(Value::take) {
        Some(Value::Object(defs)) => defs,
        _ => Map::new(),
    };
    let variants = root["oneOf"].as_array().cloned().unwrap_or_default();
    let messages = variants
        .into_iter()
        .map(|variant| {
            let event = &variant["properties"]["event"];
            let name = event["const"]
                .as_str()
                .or_else(|| event["enum"][0].as_str())
                .expect("every frame is tagged by its event name")
                .to_owned();
            (name, variant)
        })
        .collect();
    Frames { messages, schemas }
}

/// `#/definitions/X` references as `#/components/schemas/X`.
fn relink(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => (
                        k,
                        Value::String(r.replace("#/definitions/", "#/components/schemas/")),
                    ),
                    (_, v) => (k, relink(v)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(relink).collect()),
        other => other,
    }
}

/// The event names of the frames Twilio sends, in declaration order.
pub fn inbound_events() -> Vec<String> {
    frames::<Inbound>().messages.into_iter().map(|(n, _)| n).collect()
}

/// The event names of the frames sent to Twilio (and taken from agents).
pub fn outbound_events() -> Vec<String> {
    frames::<Outbound>()
        .messages
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

const STREAM_DESCRIPTION: &str = "Twilio's Media Streams WebSocket, opened by the \
`<Connect><Stream>` this service answers a call with. The stream token (a short-lived, \
single-use HS256 JWT bound to the call) is in the query (`?stream_token=`, \
`VOICE_STREAM_TOKEN_PLACEMENT=query`), in the path (`/media-stream/{token}`, `path`), and always \
in the `start` message's `customParameters.stream_token` (Twilio drops the query string; the \
`<Parameter>` carries it). A socket without a valid token by its `start` message, or within \
`VOICE_STREAM_START_TIMEOUT` (5 s), is closed with 1008, and no frame is bridged before: the \
token's signature, audience, expiry and single use are checked, and `start.callSid` must be the \
token's call. The service closes the socket with 1000 after Twilio's `stop` or when the agent \
hangs up, 1001 at shutdown, 1011 when the agent failed.";

const AGENT_DESCRIPTION: &str = "The route's `agent_url`: the service opens this WebSocket \
when a valid `start` arrives and speaks Twilio's Media Streams protocol to it, so agents written \
for Twilio work unchanged. To the agent: Twilio's `connected`, then `start`, then every later \
frame as the raw JSON text Twilio sent (unknown fields kept); only `start` is edited: \
`customParameters.stream_token` is removed and `tenant_id`, `route_id`, `from_number` and \
`to_number` are added (strings). From the agent: `media`, `mark` and `clear` as Twilio takes \
them; `streamSid` may be missing or anything (the session sends the real one); unknown events, \
a `mark` without a name, binary frames and malformed JSON are dropped and counted. A frame over \
64 KiB closes the agent connection as a failure. Ending: an agent closing with 1000 or 1001 has \
hung up: the Twilio stream is closed normally and `/api/v1/stream-ended` answers `<Hangup/>`. \
Any other close code, a connection error, or no connection within 5 s is an agent failure: the \
stream is closed with 1011 and the `<Connect action>` plays the route's fallback. Without an \
`agent_url` the built-in echo agent plays the caller's audio back.";

const JWT_DESCRIPTION: &str = "`Authorization: Bearer <JWT>` on the agent connection: HS256 \
keyed with the tenant's webhook secret (the base64-decoded part of the `whsec_` value after the \
prefix, as Standard Webhooks uses it), claims `sub` = CallSid, `tid` (tenant id), `rid` (route \
id), `aud` = `agent`, `iat`, `exp` (60 s). An agent checks with any JWT library that the \
connection is this service calling for this call.";

/// The AsyncAPI 3.0 document, as YAML.
pub fn asyncapi_yaml() -> String {
    serde_yaml::to_string(&document()).expect("the AsyncAPI document serialises")
}

/// The AsyncAPI 3.0 document.
pub fn document() -> Value {
    let inbound = frames::<Inbound>();
    let outbound = frames::<Outbound>();
    let mut schemas = inbound.schemas.clone();
    schemas.extend(outbound.schemas.clone());
    let mut messages = Map::new();
    let mut from_twilio = Map::new();
    let mut to_twilio = Map::new();
    let message = |name: &str, payload: &Value, direction: &str| {
        json!({
            "name": name,
            "title": format!("{name} ({direction})"),
            "summary": payload.get("description").cloned().unwrap_or(Value::Null),
            "contentType": "application/json",
            "payload": payload,
        })
    };
    for (name, payload) in &inbound.messages {
        let key = format!("from_twilio.{name}");
        messages.insert(
            key.clone(),
            message(name, payload, "Twilio to the service, relayed to the agent"),
        );
        from_twilio.insert(
            key.clone(),
            json!({"$ref": format!("#/components/messages/{key}")}),
        );
    }
    for (name, payload) in &outbound.messages {
        let key = format!("to_twilio.{name}");
        messages.insert(
            key.clone(),
            message(name, payload, "the agent to the service, sent on to Twilio"),
        );
        to_twilio.insert(
            key.clone(),
            json!({"$ref": format!("#/components/messages/{key}")}),
        );
    }
    let mut both = from_twilio.clone();
    both.extend(to_twilio.clone());
    let refs = |channel: &str, keys: &Map<String, Value>| {
        keys.keys()
            .map(|k| json!({"$ref": format!("#/channels/{channel}/messages/{k}")}))
            .collect::<Vec<_>>()
    };
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "stateset-voice media streams",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The streaming side of stateset-voice: the Twilio Media Streams \
                WebSocket it serves for each call it answers with `<Connect><Stream>`, and the \
                agent runtime WebSocket it bridges that stream to. Frames are JSON text; audio \
                is base64 mu-law, 8 kHz mono, 20 ms per `media` frame.",
        },
        "servers": {
            "service": {
                "host": "voice.example.com",
                "protocol": "wss",
                "description": "This service: the host of `VOICE_STREAM_URL` (by default \
                    `VOICE_PUBLIC_URL` with `ws(s)://`). Twilio connects here.",
                "security": [{"$ref": "#/components/securitySchemes/streamToken"}],
            },
            "agent": {
                "host": "agent.example.com",
                "protocol": "wss",
                "description": "An agent runtime: the route's `agent_url`. The service connects there.",
                "security": [{"$ref": "#/components/securitySchemes/agentJwt"}],
            },
        },
        "channels": {
            "mediaStream": {
                "address": "/media-stream",
                "title": "Twilio Media Streams (token in the query or the start message)",
                "description": STREAM_DESCRIPTION,
                "servers": [{"$ref": "#/servers/service"}],
                "messages": both,
                "bindings": {"ws": {
                    "method": "GET",
                    "query": {
                        "type": "object",
                        "properties": {"stream_token": {
                            "type": "string",
                            "description": "The stream token (`VOICE_STREAM_TOKEN_PLACEMENT=query`); \
                                Twilio itself drops it and sends it in `start.customParameters`.",
                        }},
                    },
                }},
            },
            "mediaStreamPath": {
                "address": "/media-stream/{token}",
                "title": "Twilio Media Streams (token in the path)",
                "description": STREAM_DESCRIPTION,
                "servers": [{"$ref": "#/servers/service"}],
                "parameters": {"token": {
                    "description": "The stream token (`VOICE_STREAM_TOKEN_PLACEMENT=path`).",
                }},
                "messages": both,
            },
            "agent": {
                "address": null,
                "title": "Agent runtime (the route's agent_url)",
                "description": AGENT_DESCRIPTION,
                "servers": [{"$ref": "#/servers/agent"}],
                "messages": both,
            },
        },
        "operations": {
            "receiveFromTwilio": {
                "action": "receive",
                "title": "Twilio sends the call's stream",
                "channel": {"$ref": "#/channels/mediaStream"},
                "messages": refs("mediaStream", &from_twilio),
            },
            "sendToTwilio": {
                "action": "send",
                "title": "The service plays the agent's audio, marks and clears",
                "channel": {"$ref": "#/channels/mediaStream"},
                "messages": refs("mediaStream", &to_twilio),
            },
            "receiveFromTwilioByPath": {
                "action": "receive",
                "title": "Twilio sends the call's stream (token in the path)",
                "channel": {"$ref": "#/channels/mediaStreamPath"},
                "messages": refs("mediaStreamPath", &from_twilio),
            },
            "sendToTwilioByPath": {
                "action": "send",
                "title": "The service plays the agent's audio (token in the path)",
                "channel": {"$ref": "#/channels/mediaStreamPath"},
                "messages": refs("mediaStreamPath", &to_twilio),
            },
            "relayToAgent": {
                "action": "send",
                "title": "The service relays Twilio's frames to the agent",
                "channel": {"$ref": "#/channels/agent"},
                "messages": refs("agent", &from_twilio),
            },
            "receiveFromAgent": {
                "action": "receive",
                "title": "The agent answers with audio, marks and clears",
                "channel": {"$ref": "#/channels/agent"},
                "messages": refs("agent", &to_twilio),
            },
        },
        "components": {
            "schemas": schemas,
            "messages": messages,
            "securitySchemes": {
                "streamToken": {
                    "type": "httpApiKey",
                    "name": "stream_token",
                    "in": "query",
                    "description": "The single-use stream token of the call (also accepted in \
                        the path or in `start.customParameters.stream_token`).",
                },
                "agentJwt": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": JWT_DESCRIPTION,
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_type_is_a_message() {
        assert_eq!(
            inbound_events(),
            ["connected", "start", "media", "dtmf", "mark", "stop"]
        );
        assert_eq!(outbound_events(), ["media", "mark", "clear"]);
        let doc = document();
        for name in inbound_events() {
            assert_eq!(
                doc["components"]["messages"][format!("from_twilio.{name}")]["name"],
                name
            );
        }
        let start = &doc["components"]["messages"]["from_twilio.start"]["payload"];
        assert_eq!(start["properties"]["start"]["$ref"], "#/components/schemas/Start");
        assert!(doc["components"]["schemas"]["Start"]["properties"]["callSid"].is_object());
    }
}
