//! The portal's HTML pages, rendered from the OpenAPI and AsyncAPI documents: plain HTML and
//! one inline style sheet, no script and nothing fetched from elsewhere, so the pages work on a
//! closed network and from a directory as well as from the service.
use std::fmt::Write as _;

use serde_json::Value;

/// The pages: `(file name, title, HTML)`, the getting-started page first.
pub fn render(openapi: &Value, asyncapi: &Value) -> Vec<(&'static str, String)> {
    vec![
        ("index.html", page("Getting started", GETTING_STARTED)),
        ("reference.html", page("API reference", &reference(openapi))),
        ("events.html", page("Events", &events(openapi))),
        ("streaming.html", page("Streaming protocol", &streaming(asyncapi))),
    ]
}

const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1b1f24}\
header{background:#14324a;color:#fff;padding:.6em 1.5em}header a{color:#fff;margin-right:1.2em}\
main{max-width:62em;padding:1em 1.5em}code,pre{font-family:ui-monospace,monospace;font-size:.92em}\
pre{background:#f3f5f7;padding:.7em;overflow-x:auto}table{border-collapse:collapse;margin:.4em 0 1em}\
td,th{border:1px solid #d5dbe1;padding:.25em .6em;text-align:left;vertical-align:top}\
.op{border-left:4px solid #3a7bbf;padding:.1em 1em;margin:1.2em 0}.method{font-weight:bold;text-transform:uppercase}\
.muted{color:#5b6770}h2{border-bottom:1px solid #d5dbe1;margin-top:2em}";

/// A whole page around `body`.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · stateset-voice</title><link rel=\"icon\" href=\"data:,\">\
         <style>{STYLE}</style></head><body><header><strong>stateset-voice</strong> &nbsp; \
         <a href=\"index.html\">Getting started</a><a href=\"reference.html\">API reference</a>\
         <a href=\"events.html\">Events</a><a href=\"streaming.html\">Streaming protocol</a>\
         <a href=\"openapi.yaml\">openapi.yaml</a><a href=\"asyncapi.yaml\">asyncapi.yaml</a>\
         </header><main><h1>{title}</h1>\n{body}</main></body></html>\n",
        title = esc(title),
    )
}

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Prose from the documents: paragraphs at blank lines, `code` spans.
fn prose(text: &str) -> String {
    text.split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| format!("<p>{}</p>", inline(p)))
        .collect()
}

/// One line of prose: escaped, with `code` spans.
fn inline(text: &str) -> String {
    esc(text)
        .split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{part}</code>")
            } else {
                part.to_owned()
            }
        })
        .collect()
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The name a `$ref` points at.
fn ref_name(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or(reference)
}

/// A short rendering of a schema's type, named schemas linked to their section.
fn type_of(schema: &Value) -> String {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = ref_name(r);
        return format!("<a href=\"#schema-{0}\">{0}</a>", esc(name));
    }
    let mut label = if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        parts.first().map(type_of).unwrap_or_default()
    } else if let Some(parts) = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)
    {
        parts.iter().map(type_of).collect::<Vec<_>>().join(" | ")
    } else if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        values
            .iter()
            .map(|v| format!("<code>{}</code>", esc(&v.to_string())))
            .collect::<Vec<_>>()
            .join(" | ")
    } else if let Some(value) = schema.get("const") {
        format!("<code>{}</code>", esc(&value.to_string()))
    } else {
        match schema.get("type") {
            Some(Value::String(t)) if t == "array" => {
                format!(
                    "array of {}",
                    schema.get("items").map(type_of).unwrap_or_default()
                )
            }
            Some(Value::String(t))
                if t == "object" && schema.get("additionalProperties").is_some_and(Value::is_object) =>
            {
                format!("map of {}", type_of(&schema["additionalProperties"]))
            }
            Some(Value::String(t)) => match schema.get("format").and_then(Value::as_str) {
                Some(f) => format!("{} ({})", esc(t), esc(f)),
                None => esc(t),
            },
            Some(Value::Array(types)) => types
                .iter()
                .filter_map(Value::as_str)
                .map(esc)
                .collect::<Vec<_>>()
                .join(" | "),
            _ => "any".to_owned(),
        }
    };
    if schema.get("nullable") == Some(&Value::Bool(true)) {
        label.push_str(" | null");
    }
    label
}

/// The description of a schema or of the first part of its `allOf`.
fn description_of(schema: &Value) -> &str {
    let own = str_of(schema, "description");
    if !own.is_empty() {
        return own;
    }
    schema
        .get("allOf")
        .and_then(Value::as_array)
        .and_then(|parts| {
            parts
                .iter()
                .map(|p| str_of(p, "description"))
                .find(|d| !d.is_empty())
        })
        .unwrap_or_default()
}

/// A table of an object schema's properties.
fn properties(schema: &Value) -> String {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return String::new();
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = String::from("<table><tr><th>field</th><th>type</th><th>description</th></tr>");
    for (name, prop) in props {
        let _ = write!(
            out,
            "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            if required.contains(&name.as_str()) {
                ""
            } else {
                " <span class=\"muted\">optional</span>"
            },
            type_of(prop),
            inline(description_of(prop)),
        );
    }
    out.push_str("</table>");
    out
}

/// Every named schema of `schemas`, each with an anchor.
fn schema_sections(schemas: &Value, names: &[&String]) -> String {
    let mut out = String::new();
    for name in names {
        let schema = &schemas[name.as_str()];
        let _ = write!(
            out,
            "<h3 id=\"schema-{0}\">{0}</h3>{1}",
            esc(name),
            prose(str_of(schema, "description"))
        );
        if schema.get("properties").is_some() {
            out.push_str(&properties(schema));
        } else {
            let _ = write!(out, "<p>{}</p>", type_of(schema));
        }
    }
    out
}

/// The request, parameters and responses of one operation.
fn operation(method: &str, path: &str, op: &Value) -> String {
    let id = str_of(op, "operationId");
    let mut out = format!(
        "<section class=\"op\" id=\"op-{anchor}\"><h3><span class=\"method\">{method}</span> <code>{path}</code></h3>\
         <p><strong>{summary}</strong> <span class=\"muted\">operationId <code>{id}</code></span></p>{description}",
        anchor = esc(id),
        method = esc(method),
        path = esc(path),
        summary = inline(str_of(op, "summary")),
        id = esc(id),
        description = prose(str_of(op, "description")),
    );
    if let Some(security) = op.get("security").and_then(Value::as_array) {
        let schemes: Vec<String> = security
            .iter()
            .filter_map(Value::as_object)
            .flat_map(|s| s.keys().map(|k| format!("<code>{}</code>", esc(k))))
            .collect();
        if !schemes.is_empty() {
            let _ = write!(out, "<p>Authentication: {}</p>", schemes.join(", "));
        }
    }
    if let Some(params) = op.get("parameters").and_then(Value::as_array) {
        out.push_str("<table><tr><th>parameter</th><th>in</th><th>type</th><th>description</th></tr>");
        for p in params {
            let _ = write!(
                out,
                "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(str_of(p, "name")),
                if p["required"] == Value::Bool(true) {
                    ""
                } else {
                    " <span class=\"muted\">optional</span>"
                },
                esc(str_of(p, "in")),
                type_of(&p["schema"]),
                inline(str_of(p, "description")),
            );
        }
        out.push_str("</table>");
    }
    if let Some(content) = op["requestBody"]["content"].as_object() {
        for (media, body) in content {
            let _ = write!(
                out,
                "<p>Body <code>{}</code>: {}</p>",
                esc(media),
                type_of(&body["schema"])
            );
        }
    }
    if let Some(responses) = op["responses"].as_object() {
        out.push_str("<table><tr><th>status</th><th>description</th><th>body</th></tr>");
        for (status, response) in responses {
            let bodies: Vec<String> = response["content"]
                .as_object()
                .map(|c| {
                    c.iter()
                        .map(|(media, body)| {
                            format!("<code>{}</code> {}", esc(media), type_of(&body["schema"]))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(status),
                inline(str_of(response, "description")),
                bodies.join("<br>"),
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</section>\n");
    out
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The API reference: operations by tag, in the spec's tag order, then the schemas.
fn reference(openapi: &Value) -> String {
    let mut out = prose(str_of(&openapi["info"], "description"));
    let _ = write!(
        out,
        "<p>Version {}. The same document as <a href=\"openapi.yaml\">openapi.yaml</a> \
         (also <a href=\"openapi.json\">JSON</a>); the events this service sends are on the \
         <a href=\"events.html\">Events</a> page.</p>",
        esc(str_of(&openapi["info"], "version"))
    );
    let empty = serde_json::Map::new();
    let paths = openapi["paths"].as_object().unwrap_or(&empty);
    let tags: Vec<&Value> = openapi["tags"]
        .as_array()
        .map(|t| t.iter().collect())
        .unwrap_or_default();
    out.push_str("<ul>");
    for tag in &tags {
        let name = str_of(tag, "name");
        let _ = write!(
            out,
            "<li><a href=\"#tag-{0}\">{0}</a>: {1}</li>",
            esc(name),
            inline(str_of(tag, "description"))
        );
    }
    out.push_str("<li><a href=\"#schemas\">Schemas</a></li></ul>");
    for tag in &tags {
        let name = str_of(tag, "name");
        let _ = write!(
            out,
            "<h2 id=\"tag-{0}\">{0}</h2>{1}",
            esc(name),
            prose(str_of(tag, "description"))
        );
        for (path, item) in paths {
            for method in METHODS {
                let Some(op) = item.get(method) else { continue };
                let tagged = op["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == name));
                if tagged {
                    out.push_str(&operation(method, path, op));
                }
            }
        }
    }
    out.push_str("<h2 id=\"schemas\">Schemas</h2>");
    let schemas = &openapi["components"]["schemas"];
    let names: Vec<&String> = schemas
        .as_object()
        .map(|s| s.keys().collect())
        .unwrap_or_default();
    out.push_str(&schema_sections(schemas, &names));
    out
}

const VERIFY: &str = r#"<h2 id="verify">Receiving and verifying events</h2>
<p>Set the tenant's <code>webhook_url</code> (http or https). Each event is a <code>POST</code> of
JSON, <code>{"type", "timestamp", "data"}</code>, signed per
<a href="https://www.standardwebhooks.com/">Standard Webhooks</a> with the tenant's webhook secret
(<code>whsec_</code> + base64, returned once when the tenant is created):</p>
<table><tr><th>header</th><th>value</th></tr>
<tr><td><code>webhook-id</code></td><td>the event's id, the same on every retry: drop an event you already processed</td></tr>
<tr><td><code>webhook-timestamp</code></td><td>Unix seconds of this attempt: refuse one more than 5 minutes from your clock</td></tr>
<tr><td><code>webhook-signature</code></td><td><code>v1,</code> + base64 HMAC-SHA256 of <code>{webhook-id}.{webhook-timestamp}.{raw body}</code>, keyed with the base64-decoded part of the secret after <code>whsec_</code></td></tr></table>
<p>Compute the signature over the raw body bytes (before any JSON parsing) and compare in constant
time. Any Standard Webhooks library does it all, e.g. in Python:</p>
<pre>from standardwebhooks.webhooks import Webhook
event = Webhook("whsec_...").verify(request_body, request_headers)  # raises when invalid</pre>
<p>or by hand:</p>
<pre>import base64, hashlib, hmac
key = base64.b64decode(secret.removeprefix("whsec_"))
signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
valid = any(hmac.compare_digest(expected, s) for s in headers["webhook-signature"].split())</pre>
<p>Answer any 2xx once the event is stored: it is not sent again. Any other answer, a timeout or a
connection error is retried with exponential backoff (<code>VOICE_WEBHOOK_MAX_ATTEMPTS</code>,
<code>VOICE_WEBHOOK_RETRY_BASE</code>); an event may arrive twice after a restart, and events of
one call may arrive out of order: use <code>timestamp</code>. <code>GET /api/v1/events</code> lists
what was recorded and how its delivery went.</p>
"#;

/// The events page: every webhook of the spec with its body, and how to verify them.
fn events(openapi: &Value) -> String {
    let mut out = String::from(
        "<p>The service sends these events to each tenant's <code>webhook_url</code>, written \
         in the same transaction as the state they describe. They are the <code>webhooks</code> \
         of <a href=\"openapi.yaml\">openapi.yaml</a>.</p><ul>",
    );
    let empty = serde_json::Map::new();
    let hooks = openapi["webhooks"].as_object().unwrap_or(&empty);
    for (name, hook) in hooks {
        let _ = write!(
            out,
            "<li><a href=\"#event-{0}\"><code>{0}</code></a>: {1}</li>",
            esc(name),
            inline(str_of(&hook["post"], "summary"))
        );
    }
    out.push_str("<li><a href=\"#verify\">Receiving and verifying events</a></li></ul>");
    let schemas = &openapi["components"]["schemas"];
    for (name, hook) in hooks {
        let op = &hook["post"];
        let _ = write!(
            out,
            "<h2 id=\"event-{0}\"><code>{0}</code></h2><p><strong>{1}</strong></p>{2}",
            esc(name),
            inline(str_of(op, "summary")),
            prose(str_of(op, "description")),
        );
        let body = op["requestBody"]["content"]
            .as_object()
            .and_then(|c| c.values().next())
            .map(|b| &b["schema"]);
        if let Some(body) = body.and_then(|b| b.get("$ref")).and_then(Value::as_str) {
            let body = &schemas[ref_name(body)];
            out.push_str(&properties(body));
            if let Some(data) = body["properties"]["data"].get("$ref").and_then(Value::as_str) {
                let data_name = ref_name(data);
                let _ = write!(out, "<p><code>data</code> ({}):</p>", esc(data_name));
                out.push_str(&properties(&schemas[data_name]));
            }
        }
    }
    out.push_str(VERIFY);
    out.push_str("<h2 id=\"schemas\">Schemas</h2>");
    let names: Vec<&String> = schemas
        .as_object()
        .map(|s| s.keys().collect())
        .unwrap_or_default();
    out.push_str(&schema_sections(schemas, &names));
    out
}

/// The streaming page: the AsyncAPI document's servers, channels, operations and messages.
fn streaming(asyncapi: &Value) -> String {
    let mut out = prose(str_of(&asyncapi["info"], "description"));
    out.push_str("<p>The same document as <a href=\"asyncapi.yaml\">asyncapi.yaml</a> (AsyncAPI 3.0).</p>");
    let empty = serde_json::Map::new();
    out.push_str("<h2>Channels</h2>");
    for (id, channel) in asyncapi["channels"].as_object().unwrap_or(&empty) {
        let address = channel["address"].as_str().unwrap_or("the route's agent_url");
        let _ = write!(
            out,
            "<h3 id=\"channel-{}\">{}</h3><p>Address <code>{}</code></p>{}",
            esc(id),
            esc(str_of(channel, "title")),
            esc(address),
            prose(str_of(channel, "description")),
        );
    }
    out.push_str("<h2>Operations</h2><table><tr><th>operation</th><th>action</th><th>channel</th><th>messages</th></tr>");
    for (id, op) in asyncapi["operations"].as_object().unwrap_or(&empty) {
        let messages: Vec<String> = op["messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|m| m["$ref"].as_str())
                    .map(|r| format!("<a href=\"#message-{0}\">{0}</a>", esc(ref_name(r))))
                    .collect()
            })
            .unwrap_or_default();
        let _ = write!(
            out,
            "<tr><td><code>{}</code><br>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(id),
            esc(str_of(op, "title")),
            esc(str_of(op, "action")),
            esc(ref_name(str_of(&op["channel"], "$ref"))),
            messages.join(", "),
        );
    }
    out.push_str("</table><h2>Messages</h2>");
    for (id, message) in asyncapi["components"]["messages"].as_object().unwrap_or(&empty) {
        let _ = write!(
            out,
            "<h3 id=\"message-{}\"><code>{}</code> <span class=\"muted\">{}</span></h3>{}",
            esc(id),
            esc(str_of(message, "name")),
            esc(str_of(message, "title")),
            prose(str_of(message, "summary")),
        );
        out.push_str(&properties(&message["payload"]));
    }
    out.push_str("<h2>Security</h2>");
    for (id, scheme) in asyncapi["components"]["securitySchemes"]
        .as_object()
        .unwrap_or(&empty)
    {
        let _ = write!(
            out,
            "<h3>{}</h3>{}",
            esc(id),
            prose(str_of(scheme, "description"))
        );
    }
    out.push_str("<h2 id=\"schemas\">Schemas</h2>");
    let schemas = &asyncapi["components"]["schemas"];
    let names: Vec<&String> = schemas
        .as_object()
        .map(|s| s.keys().collect())
        .unwrap_or_default();
    out.push_str(&schema_sections(schemas, &names));
    out
}

const GETTING_STARTED: &str = r#"<p>stateset-voice answers your Twilio number's calls with a
media stream to your voice agent, with a fallback that never leaves a caller in silence, and tells
you what happened through signed events. Four steps take a number from nothing to a test call.</p>
<h2>1. Create the tenant and the route</h2>
<p>With the admin token of the deployment (<code>VOICE_ADMIN_TOKEN</code>), create a tenant with
your Twilio account and where its events go, then a route for the number:</p>
<pre>curl -s -H 'Authorization: Bearer ADMIN_TOKEN' -H 'Content-Type: application/json' \
  -d '{"name":"Acme","account_sid":"AC...","auth_token":"TWILIO_AUTH_TOKEN","webhook_url":"https://acme.example.com/voice-events"}' \
  https://YOUR_HOST/api/v1/tenants
curl -s -H 'Authorization: Bearer ADMIN_TOKEN' -H 'Content-Type: application/json' \
  -d '{"phone_number":"+15550102000","agent_url":"wss://agent.example.com/twilio","fallback":{"type":"dial","number":"+15550001111"}}' \
  https://YOUR_HOST/api/v1/tenants/TENANT_ID/routes</pre>
<p>Keep the <code>webhook_secret</code> of the tenant's 201 answer: it is shown once. It signs your
events and the JWT your agent receives. See the <a href="reference.html#tag-Tenants">Tenants</a>
and <a href="reference.html#tag-Routes">Routes</a> reference.</p>
<h2>2. Point the Twilio number here</h2>
<p>In the Twilio console, set the number's voice webhook (HTTP POST) to
<code>https://YOUR_HOST/api/v1/incoming-call</code> and its Fallback URL to
<code>https://YOUR_HOST/api/v1/incoming-call/fallback</code>. The deployment's
<code>VOICE_PUBLIC_URL</code> must be <code>https://YOUR_HOST</code>: Twilio's signature is checked
against it. Optionally, set the status callback to <code>https://YOUR_HOST/api/v1/call-status</code>
for <code>call.completed</code>. See the <a href="reference.html#tag-Voice">Voice</a> reference.</p>
<h2>3. Verify events</h2>
<p>Your <code>webhook_url</code> receives <code>call.received</code>, <code>call.fallback</code>,
<code>call.completed</code>, <code>stream.started</code>, <code>stream.ended</code> and
<code>alert.raised</code>, each signed with the Standard Webhooks headers. Verify every one before
trusting it: <a href="events.html#verify">how</a>.</p>
<h2>4. Connect an agent</h2>
<p>Your agent is a WebSocket server at the route's <code>agent_url</code> that speaks Twilio's Media
Streams protocol: agents written for Twilio work unchanged. It receives Twilio's frames and answers
with <code>media</code>, <code>mark</code> and <code>clear</code>; the connection carries
<code>Authorization: Bearer &lt;JWT&gt;</code> signed with the tenant's webhook secret. Closing with
1000 or 1001 hangs up; anything else plays the route's fallback. See the
<a href="streaming.html">streaming protocol</a>. Without an <code>agent_url</code>, the built-in
echo agent plays the caller's audio back.</p>
<h2>5. Make a test call</h2>
<p>Without a phone: <code>stateset-voice call</code> plays Twilio's part end to end (signed webhook,
media stream with recorded speech, the <code>&lt;Connect action&gt;</code>), and exits 0 when the
call went as the TwiML said:</p>
<pre>stateset-voice call --url https://YOUR_HOST --token TWILIO_AUTH_TOKEN \
  --account-sid AC... --to +15550102000 --record out.wav</pre>
<p>Listen to <code>out.wav</code> for what your agent said, and check your
<code>webhook_url</code> for the call's events. Then call the number from a phone.</p>
<p>To try it all locally first: <code>stateset-voice serve --demo</code> seeds a demo tenant and
route and prints a signed <code>curl</code> and a <code>call</code> command for them.</p>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_code_spans_kept() {
        assert_eq!(
            inline("a <b> & `c<d>`"),
            "a &lt;b&gt; &amp; <code>c&lt;d&gt;</code>"
        );
    }

    #[test]
    fn types_render_references_nulls_and_enums() {
        let nullable_ref =
            serde_json::json!({"allOf": [{"$ref": "#/components/schemas/X"}], "nullable": true});
        assert_eq!(type_of(&nullable_ref), "<a href=\"#schema-X\">X</a> | null");
        assert_eq!(
            type_of(&serde_json::json!({"enum": ["a"]})),
            "<code>&quot;a&quot;</code>"
        );
        assert_eq!(
            type_of(&serde_json::json!({"type": "array", "items": {"type": "string"}})),
            "array of string"
        );
    }
}
