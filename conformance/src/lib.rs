//! Conformance runner: each fixture in `fixtures/` is a recorded Twilio exchange (decoded form
//! fields in arrival order, the signature Twilio sent, headers) plus the tenant and route state
//! it expects. The runner boots the real service on a fresh database, seeds that state, replays
//! the requests over HTTP and renders a stable transcript (status, content type, body, then the
//! stored calls, events, diagnostics and alerts) for snapshot testing. Stream tokens are decoded
//! and their claims checked before they are replaced by placeholders.
//!
//! A request may carry a media-stream step ([`media_step::MediaStream`]): the runner then opens
//! the stream of its answer, plays Twilio's side from the recorded session against the echo
//! agent or a scripted agent ([`scripted_agent`]), and renders both sides of the call.
use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf};

use media_step::{Agent, MediaStream, StreamContext};
use scripted_agent::AgentServer;
use sea_orm::{EntityTrait, QueryOrder};
use serde::{Deserialize, Serialize};
use stateset_voice::{
    config::TokenPlacement,
    domain::{
        admin::{self, NewRoute, NewTenant},
        fallback::FallbackAction,
        token::AUDIENCE,
    },
    testkit::{spawn_app_with, Backend, TestApp},
    twilio::{
        form::FormParams,
        signature::{self, Algorithm},
    },
};

mod frames;
pub mod media_step;
pub mod scripted_agent;

/// The public URL every fixture is signed for.
pub const PUBLIC_URL: &str = "https://voice.example.com";
/// The tenant's primary auth token.
pub const AUTH_TOKEN: &str = "conformance-primary-auth-token";
/// The tenant's secondary auth token, when a fixture asks for one.
pub const SECONDARY_AUTH_TOKEN: &str = "conformance-secondary-auth-token";
/// The tenant's HMAC-SHA256 shared key, when a fixture asks for one.
pub const SHARED_KEY: &str = "conformance-shared-key";
/// The tenant's account SID.
pub const ACCOUNT_SID: &str = "AC3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f";
/// The route's number.
pub const NUMBER: &str = "+15555551234";

/// One recorded scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fixture {
    pub description: String,
    #[serde(default)]
    pub setup: Setup,
    pub requests: Vec<Request>,
}

/// The state a fixture expects before its requests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// `production` (default) or `sandbox`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_environment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secondary_auth_token: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared_key: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_default_fallback: Option<FallbackAction>,
    /// `production` (default) or `test`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_fallback: Option<FallbackAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_agent_url: Option<String>,
    /// More numbers routed to the same tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_numbers: Vec<String>,
    /// No tenant or route at all.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_routes: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    /// Media streams already open on the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_streams: Option<usize>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub agent_failing: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trust_forwarded: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub token_in_path: bool,
}

/// One recorded request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Path and raw query, as Twilio requested it.
    pub path: String,
    /// Decoded form fields in arrival order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub form: Vec<(String, String)>,
    /// A raw body (hex) sent instead of the encoded form, for malformed input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_hex: Option<String>,
    /// A body of this many `a` bytes, sent instead of the form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The key Twilio signed with (`primary`, `secondary`, `shared_key`), if it was genuine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_with: Option<String>,
    /// The URL Twilio signed, when not the public URL + path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_url: Option<String>,
    /// The `X-Twilio-Signature` Twilio sent; absent for unsigned requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// How many times the request is delivered (retries).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub times: usize,
    /// Deliver all `times` copies at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub concurrent: bool,
    /// After the answer, open the stream of its `<Stream>` and play it (see `media_step`).
    /// The next request, if any, is Twilio's `<Connect action>` callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_stream: Option<MediaStream>,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

impl Request {
    fn form(&self) -> FormParams {
        FormParams::from_pairs(self.form.clone())
    }

    fn signed_url(&self) -> String {
        self.signed_url
            .clone()
            .unwrap_or_else(|| format!("{PUBLIC_URL}{}", self.path))
    }

    /// The signature a genuine request carries, computed from the fixture's key.
    pub fn genuine_signature(&self) -> Option<String> {
        let (algorithm, key) = match self.signed_with.as_deref()? {
            "primary" => (Algorithm::HmacSha1, AUTH_TOKEN),
            "secondary" => (Algorithm::HmacSha1, SECONDARY_AUTH_TOKEN),
            "shared_key" => (Algorithm::HmacSha256, SHARED_KEY),
            other => panic!("unknown signing key {other:?}"),
        };
        Some(signature::compute(
            algorithm,
            key.as_bytes(),
            &self.signed_url(),
            &self.form(),
        ))
    }

    fn body(&self) -> Vec<u8> {
        if let Some(hex_body) = &self.body_hex {
            return hex::decode(hex_body).expect("body_hex is hex");
        }
        if let Some(size) = self.body_size {
            return vec![b'a'; size];
        }
        self.form().encode().into_bytes()
    }
}

/// The fixtures directory.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// All fixtures, by name, sorted.
pub fn load_fixtures() -> Vec<(String, Fixture)> {
    let mut out: Vec<(String, Fixture)> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).expect("fixture readable");
            let fixture = serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
            (name, fixture)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Ids the transcript replaces with stable names.
struct Seeded {
    tenant_id: String,
    webhook_secret: String,
    route_ids: BTreeMap<String, String>,
}

impl Fixture {
    /// The media-stream steps of the requests, in order.
    fn media_streams(&self) -> impl Iterator<Item = &MediaStream> {
        self.requests.iter().filter_map(|r| r.media_stream.as_ref())
    }
}

/// The scripted agent the fixture's streams talk to, when they do; its URL becomes the
/// route's `agent_url`. All streams of a fixture use the same kind of agent (the route has
/// one `agent_url`).
async fn spawn_agent(fixture: &Fixture) -> Option<AgentServer> {
    let agents: Vec<&Agent> = fixture.media_streams().map(|m| &m.agent).collect();
    let scripts: Vec<_> = agents
        .iter()
        .filter_map(|a| match a {
            Agent::Script(script) => Some(script.clone()),
            Agent::Echo => None,
        })
        .collect();
    if scripts.is_empty() {
        return None;
    }
    assert_eq!(
        scripts.len(),
        agents.len(),
        "the streams of a fixture all use the echo agent or all a scripted one"
    );
    assert!(
        fixture.setup.route_agent_url.is_none(),
        "a scripted agent sets the route's agent_url; leave setup.route_agent_url out"
    );
    Some(AgentServer::spawn(scripts).await)
}

async fn seed(app: &TestApp, setup: &Setup) -> Option<Seeded> {
    if setup.no_routes {
        return None;
    }
    let db = &app.state.db;
    let tenant = admin::create_tenant(
        db,
        NewTenant {
            name: "Conformance".to_owned(),
            account_sid: ACCOUNT_SID.to_owned(),
            auth_token: AUTH_TOKEN.to_owned(),
            secondary_auth_token: setup
                .secondary_auth_token
                .then(|| SECONDARY_AUTH_TOKEN.to_owned()),
            shared_key: setup.shared_key.then(|| SHARED_KEY.to_owned()),
            environment: setup
                .tenant_environment
                .as_deref()
                .map(|e| entity::states::TenantEnvironment::parse(e).expect("a tenant environment")),
            default_fallback: setup.tenant_default_fallback.clone(),
            ..NewTenant::default()
        },
    )
    .await
    .expect("seed tenant")
    .tenant;
    let webhook_secret = tenant.webhook_secret.clone();
    let route = admin::create_route(
        db,
        &tenant.id,
        NewRoute {
            phone_number: NUMBER.to_owned(),
            label: Some("main".to_owned()),
            environment: setup
                .route_environment
                .as_deref()
                .map(|e| entity::states::RouteEnvironment::parse(e).expect("a route environment")),
            enabled: setup.route_enabled,
            fallback: setup.route_fallback.clone(),
            agent_url: setup.route_agent_url.clone(),
            agent_health_url: None,
        },
    )
    .await
    .expect("seed route");
    let mut route_ids = BTreeMap::from([(route.id.clone(), "[route:main]".to_owned())]);
    for number in &setup.extra_numbers {
        let extra = admin::create_route(
            db,
            &tenant.id,
            NewRoute {
                phone_number: number.clone(),
                ..NewRoute::default()
            },
        )
        .await
        .expect("seed extra route");
        route_ids.insert(extra.id, format!("[route:{number}]"));
    }
    if let (Some(url), true) = (&setup.route_agent_url, setup.agent_failing) {
        app.state
            .runtime
            .set_agent_health(url, Some("health check failed".to_owned()));
    }
    app.state.runtime.set_draining(setup.draining);
    Some(Seeded {
        tenant_id: tenant.id,
        webhook_secret,
        route_ids,
    })
}

/// Replays `fixture` on a fresh service over `backend`; `None` when that backend was
/// explicitly skipped. Panics when a stream token's claims are wrong.
pub async fn replay(backend: Backend, fixture: &Fixture) -> Option<String> {
    let setup = fixture.setup.clone();
    let app = spawn_app_with(backend, |args| {
        args.public_url = PUBLIC_URL.to_owned();
        args.trust_forwarded = setup.trust_forwarded;
        if setup.token_in_path {
            args.stream_token_placement = TokenPlacement::Path;
        }
        if let Some(max) = setup.max_streams {
            args.max_streams = max;
        }
        if let Some(threshold) = setup.alert_threshold {
            args.alert_threshold = threshold;
        }
    })
    .await?;
    let mut agent = spawn_agent(fixture).await;
    let mut setup = fixture.setup.clone();
    if let Some(agent) = &agent {
        setup.route_agent_url = Some(agent.url.clone());
    }
    let seeded = seed(&app, &setup).await;
    let _open_streams: Vec<_> = (0..fixture.setup.open_streams.unwrap_or(0))
        .map(|_| app.state.runtime.stream_opened())
        .collect();

    let mut transcript = format!("# {}\n", fixture.description);
    let mut tokens = TokenNames::default();
    for (index, request) in fixture.requests.iter().enumerate() {
        let exchanges = send(&app, request).await;
        let answer = exchanges.first().map(|e| e.2.clone()).unwrap_or_default();
        let _ = writeln!(
            transcript,
            "\n>>> POST {} ({}{})",
            request.path,
            request
                .signed_with
                .as_deref()
                .map_or_else(|| describe_unsigned(request), |k| format!("signed: {k}")),
            if request.times > 1 {
                format!(
                    ", {} deliveries{}",
                    request.times,
                    if request.concurrent { " at once" } else { "" }
                )
            } else {
                String::new()
            }
        );
        // Identical answers to several deliveries are written once.
        let mut distinct: Vec<(u16, String, String, usize)> = Vec::new();
        for (status, content_type, body) in exchanges {
            if let Some(seeded) = &seeded {
                check_tokens(&app, &body, request, seeded);
            }
            let body = tokens.redact(&body);
            match distinct
                .iter_mut()
                .find(|d| d.0 == status && d.1 == content_type && d.2 == body)
            {
                Some(d) => d.3 += 1,
                None => distinct.push((status, content_type, body, 1)),
            }
        }
        for (status, content_type, body, count) in distinct {
            let times = if count > 1 {
                format!(" (x{count})")
            } else {
                String::new()
            };
            let _ = write!(transcript, "<<< {status} {content_type}{times}\n{body}");
            if !body.ends_with('\n') {
                transcript.push('\n');
            }
        }
        if let Some(step) = &request.media_stream {
            assert_eq!(request.times, 1, "a media_stream step follows a single delivery");
            let seeded = seeded
                .as_ref()
                .expect("a media_stream step needs a seeded tenant");
            if let Some(callback) = fixture.requests.get(index + 1) {
                check_connect_action(&answer, callback);
            }
            let form = request.form();
            let ctx = StreamContext {
                app: &app,
                answer: &answer,
                call_sid: form.get("CallSid").expect("the request has a CallSid"),
                tenant_id: &seeded.tenant_id,
                webhook_secret: &seeded.webhook_secret,
                names: seeded
                    .route_ids
                    .iter()
                    .map(|(id, name)| (id.clone(), name.clone()))
                    .chain([(seeded.tenant_id.clone(), "[tenant]".to_owned())])
                    .collect(),
            };
            let section = media_step::play(step, &ctx, agent.as_mut(), &mut tokens).await;
            transcript.push_str(&section);
        }
    }
    let streams = fixture.media_streams().next().is_some();
    transcript.push_str(&state_summary(&app, seeded.as_ref(), streams).await);
    // The server task outlives the replay; its pool must not (PostgreSQL allows 100 clients).
    let _ = app.state.db.close_by_ref().await;
    Some(transcript)
}

/// The request after a stream is Twilio's callback to the answer's `<Connect action>`.
fn check_connect_action(answer: &str, callback: &Request) {
    let action = media_step::attribute(answer, "Connect", "action")
        .expect("an answer with a <Stream> has a <Connect action>");
    assert_eq!(
        action,
        callback.signed_url(),
        "the request after a media_stream step is Twilio's <Connect action> callback"
    );
}

fn describe_unsigned(request: &Request) -> String {
    match &request.signature {
        Some(_) => "forged signature".to_owned(),
        None => "no signature".to_owned(),
    }
}

async fn send(app: &TestApp, request: &Request) -> Vec<(u16, String, String)> {
    let one = || async {
        let mut req = app
            .client
            .post(format!("{}{}", app.base, request.path))
            .header(
                "Content-Type",
                request
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "application/x-www-form-urlencoded".to_owned()),
            )
            .body(request.body());
        if let Some(sig) = &request.signature {
            req = req.header("X-Twilio-Signature", sig);
        }
        for (k, v) in &request.headers {
            req = req.header(k, v);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        (status, content_type, res.text().await.expect("body"))
    };
    if request.concurrent {
        futures::future::join_all((0..request.times).map(|_| one())).await
    } else {
        let mut out = Vec::new();
        for _ in 0..request.times {
            out.push(one().await);
        }
        out
    }
}

/// Every stream token in a TwiML body must verify and be bound to the request's call,
/// tenant and route, with the configured lifetime.
fn check_tokens(app: &TestApp, body: &str, request: &Request, seeded: &Seeded) {
    let form = request.form();
    for token in tokens_in(body) {
        let claims = app
            .state
            .tokens
            .verify(token)
            .unwrap_or_else(|e| panic!("token in answer does not verify: {e}"));
        assert_eq!(
            Some(claims.sub.as_str()),
            form.get("CallSid"),
            "token subject is the CallSid"
        );
        assert_eq!(claims.tid, seeded.tenant_id, "token tenant");
        assert!(
            seeded.route_ids.contains_key(&claims.rid),
            "token route is a seeded route"
        );
        assert_eq!(claims.aud, AUDIENCE);
        assert_eq!(
            claims.exp - claims.iat,
            app.state.config.stream_tokens.ttl.as_secs() as i64,
            "token lifetime"
        );
        assert!(!token.contains(AUTH_TOKEN), "no secret in the token");
    }
}

fn tokens_in(body: &str) -> impl Iterator<Item = &str> {
    body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .filter(|piece| piece.starts_with("eyJ") && piece.matches('.').count() == 2)
}

/// Names tokens by order of first appearance, so a snapshot shows whether a retry reused one.
#[derive(Default)]
pub struct TokenNames(Vec<String>);

impl TokenNames {
    /// `body` with every stream token replaced by its name.
    pub fn redact(&mut self, body: &str) -> String {
        let mut out = body.to_owned();
        let found: Vec<String> = tokens_in(body).map(str::to_owned).collect();
        for token in found {
            let index = match self.0.iter().position(|t| *t == token) {
                Some(i) => i,
                None => {
                    self.0.push(token.clone());
                    self.0.len() - 1
                }
            };
            out = out.replace(&token, &format!("[stream_token#{}]", index + 1));
        }
        out
    }
}

/// The stored state after the requests; `streams` adds the media sessions.
async fn state_summary(app: &TestApp, seeded: Option<&Seeded>, streams: bool) -> String {
    app.flush().await;
    let db = &app.state.db;
    let name_route = |id: &str| {
        seeded
            .and_then(|s| s.route_ids.get(id).cloned())
            .unwrap_or_else(|| id.to_owned())
    };
    let mut out = String::from("\n=== stored\ncalls:\n");
    let calls = entity::call::Entity::find()
        .order_by_asc(entity::call::Column::Id)
        .all(db)
        .await
        .expect("calls");
    if calls.is_empty() {
        out.push_str("  (none)\n");
    }
    let call_sids: BTreeMap<String, String> =
        calls.iter().map(|c| (c.id.clone(), c.call_sid.clone())).collect();
    for c in calls {
        let _ = writeln!(
            out,
            "  {} {} -> {} on {}: status={} outcome={} reason={} attempts={} error={}",
            c.call_sid,
            c.from_number,
            c.to_number,
            name_route(&c.route_id),
            c.status,
            c.outcome,
            c.fallback_reason.map_or("-", |r| r.as_str()),
            c.attempts,
            c.error_code.as_deref().unwrap_or("-"),
        );
    }
    if streams {
        out.push_str(&media_sessions(app, &call_sids).await);
    }
    let events = entity::outbox_event::Entity::find()
        .order_by_asc(entity::outbox_event::Column::Id)
        .all(db)
        .await
        .expect("events");
    let types: Vec<String> = events.into_iter().map(|e| e.event_type.to_string()).collect();
    let _ = writeln!(
        out,
        "events: {}",
        if types.is_empty() {
            "(none)".to_owned()
        } else {
            types.join(", ")
        }
    );
    out.push_str("diagnostics:\n");
    let mut diags = entity::diagnostic::Entity::find()
        .all(db)
        .await
        .expect("diagnostics");
    diags.sort_by(|a, b| (a.kind.as_str(), &a.key).cmp(&(b.kind.as_str(), &b.key)));
    if diags.is_empty() {
        out.push_str("  (none)\n");
    }
    for d in diags {
        let _ = writeln!(out, "  {} {}: {}", d.kind, name_route(&d.key), d.count);
    }
    let alerts = entity::alert::Entity::find().all(db).await.expect("alerts");
    let _ = writeln!(out, "alerts: {}", alerts.len());
    for a in alerts {
        let _ = writeln!(
            out,
            "  {} on {}: {} failures",
            a.kind,
            name_route(a.route_id.as_deref().unwrap_or("-")),
            a.failure_count
        );
    }
    out
}

/// The stored media sessions, by call.
async fn media_sessions(app: &TestApp, call_sids: &BTreeMap<String, String>) -> String {
    let mut sessions = entity::media_session::Entity::find()
        .all(&app.state.db)
        .await
        .expect("media sessions");
    let call_sid = |s: &entity::media_session::Model| call_sids.get(&s.call_id).cloned().unwrap_or_default();
    sessions.sort_by_key(|s| (call_sid(s), s.started_at));
    let mut out = String::from("media sessions:\n");
    if sessions.is_empty() {
        out.push_str("  (none)\n");
    }
    for s in sessions {
        let _ = writeln!(
            out,
            "  {} stream {}: status={} end_reason={} received_stop={} inbound={} outbound={} malformed={}",
            call_sid(&s),
            s.stream_sid.as_deref().unwrap_or("-"),
            s.status,
            s.end_reason.map_or("-", |r| r.as_str()),
            s.received_stop,
            s.inbound_frames,
            s.outbound_frames,
            s.malformed_frames,
        );
    }
    out
}

/// Asserts `transcript` matches the stored snapshot `conformance/snapshots/<name>.snap`.
pub fn assert_matches_snapshot(name: &str, transcript: &str) {
    insta::with_settings!({
        snapshot_path => "../snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, transcript);
    });
}
