//! Replaying a fixture: the real service on a fresh database, seeded with the fixture's
//! tenant and routes (through the testkit), its requests sent over HTTP and, for media-stream
//! steps, its streams played; every stream token in an answer is verified before it is
//! redacted.
use std::collections::BTreeMap;

use stateset_voice::{
    config::TokenPlacement,
    domain::{
        admin::{NewRoute, NewTenant},
        token::AUDIENCE,
    },
    testkit::{spawn_app_with, Backend, TestApp},
};

use crate::{
    fixture::{Fixture, Request, Setup, AUTH_TOKEN, PUBLIC_URL, SECONDARY_AUTH_TOKEN, SHARED_KEY},
    media_step::{self, Agent, StreamContext},
    redact::{tokens_in, TokenNames},
    scripted_agent::AgentServer,
    transcript,
};

/// Ids the transcript replaces with stable names.
struct Seeded {
    tenant_id: String,
    webhook_secret: String,
    route_ids: BTreeMap<String, String>,
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
        transcript.push_str(&transcript::request_heading(request));
        let answers = exchanges
            .into_iter()
            .map(|(status, content_type, body)| {
                if let Some(seeded) = &seeded {
                    check_tokens(&app, &body, request, seeded);
                }
                (status, content_type, tokens.redact(&body))
            })
            .collect();
        transcript.push_str(&transcript::answers(answers));
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
    let route_names = seeded.as_ref().map(|s| &s.route_ids);
    transcript.push_str(&transcript::stored_state(&app, route_names, streams).await);
    // The server task outlives the replay; its pool must not (PostgreSQL allows 100 clients).
    let _ = app.state.db.close().await;
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

/// Seeds the tenant and routes `setup` asks for (the testkit's standard account and number)
/// and the runtime state; `None` when the fixture has no routes at all.
async fn seed(app: &TestApp, setup: &Setup) -> Option<Seeded> {
    if setup.no_routes {
        return None;
    }
    let (tenant, route) = app
        .seed_with(
            NewTenant {
                name: "Conformance".to_owned(),
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
            NewRoute {
                label: Some("main".to_owned()),
                environment: setup
                    .route_environment
                    .as_deref()
                    .map(|e| entity::states::RouteEnvironment::parse(e).expect("a route environment")),
                enabled: setup.route_enabled,
                fallback: setup.route_fallback.clone(),
                agent_url: setup.route_agent_url.clone(),
                ..NewRoute::default()
            },
        )
        .await;
    let mut route_ids = BTreeMap::from([(route.id.clone(), "[route:main]".to_owned())]);
    for number in &setup.extra_numbers {
        let extra = app
            .seed_route(
                &tenant.id,
                NewRoute {
                    phone_number: number.clone(),
                    ..NewRoute::default()
                },
            )
            .await;
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
        webhook_secret: tenant.webhook_secret,
        route_ids,
    })
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
