//! Agent health checks that are never calls: the route's `agent_health_url` (HTTP GET, 2xx =
//! healthy) or a bare TCP connection to the agent's host and port; the circuit they drive; the
//! admin API and migration of `agent_health_url`.
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use reqwest::Method;
use sea_orm::ConnectionTrait;
use serde_json::json;
use stateset_voice::{
    api::routes::Route,
    backend_test,
    domain::admin::{NewRoute, NewTenant},
    domain::runtime::AGENT_FAILURES_TO_OPEN,
    testkit::*,
    worker::{
        agent_health,
        probe::{self, Probe, ProbeError},
    },
};
use tokio::{io::AsyncReadExt, net::TcpListener};
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, ResponseTemplate,
};

/// A health endpoint answering `status` to `GET /health`.
async fn health_endpoint(status: u16) -> MockServer {
    let server = MockServer::start().await;
    answer(&server, status).await;
    server
}

/// Makes `server` answer `status` from now on.
async fn answer(server: &MockServer, status: u16) {
    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/health"))
        .respond_with(ResponseTemplate::new(status))
        .mount(server)
        .await;
}

/// A WebSocket URL on a loopback port nothing listens on.
async fn closed_agent_url() -> String {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/agent", closed.local_addr().unwrap());
    drop(closed);
    url
}

/// Whether a new call is offered a stream; when not, checks the reason is the agent's health.
async fn streams(app: &TestApp) -> bool {
    let sid = call_sid();
    let body = app.incoming(&sid).await.text().await.unwrap();
    if body.contains("<Stream") {
        return true;
    }
    assert_eq!(
        app.call(&sid).await.unwrap().fallback_reason.map(|r| r.as_str()),
        Some("agent_unhealthy"),
        "{body}"
    );
    false
}

/// The value of one `voice_agent_health_checks` series.
fn checks_counted(app: &TestApp, check: &str, outcome: &str) -> u64 {
    let series = format!("voice_agent_health_checks_total{{check=\"{check}\",outcome=\"{outcome}\"}} ");
    let text = app.state.metrics.encode();
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

backend_test!(health_endpoint_opens_and_closes_the_circuit);
async fn health_endpoint_opens_and_closes_the_circuit(app: TestApp) {
    // The agent's own port: with a health endpoint named, checks never connect to it.
    let agent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_url = format!("ws://{}/ws", agent.local_addr().unwrap());
    let server = health_endpoint(200).await;
    app.seed_with(
        NewTenant::default(),
        NewRoute {
            agent_url: Some(agent_url.clone()),
            agent_health_url: Some(format!("{}/health", server.uri())),
            ..Default::default()
        },
    )
    .await;

    assert_eq!(agent_health::check_all(&app.state).await.unwrap(), 1);
    assert_eq!(app.state.runtime.agent_failure(&agent_url), None);
    assert!(streams(&app).await);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        requests
            .iter()
            .map(|r| (r.method.as_str(), r.url.path()))
            .collect::<Vec<_>>(),
        [("GET", "/health")]
    );
    assert_eq!(checks_counted(&app, "http", "healthy"), 1);

    answer(&server, 503).await;
    agent_health::check_all(&app.state).await.unwrap();
    assert!(streams(&app).await, "one failure is not enough");
    for _ in 1..AGENT_FAILURES_TO_OPEN {
        agent_health::check_all(&app.state).await.unwrap();
    }
    let reason = app.state.runtime.agent_failure(&agent_url).expect("circuit open");
    assert!(reason.contains("503"), "{reason}");
    assert!(!streams(&app).await);
    assert_eq!(
        checks_counted(&app, "http", "unhealthy"),
        u64::from(AGENT_FAILURES_TO_OPEN)
    );
    assert!(app.metrics().await.contains("\nvoice_agent_circuits_open 1\n"));

    answer(&server, 200).await;
    agent_health::check_all(&app.state).await.unwrap();
    assert_eq!(app.state.runtime.agent_failure(&agent_url), None);
    assert!(streams(&app).await);
    assert!(app.metrics().await.contains("\nvoice_agent_circuits_open 0\n"));

    // No check (nor anything else in this test) connected to the agent itself.
    let accepted = tokio::time::timeout(Duration::from_millis(200), agent.accept()).await;
    assert!(accepted.is_err(), "a health check connected to agent_url");
}

backend_test!(tcp_check_connects_and_sends_nothing);
async fn tcp_check_connects_and_sends_nothing(app: TestApp) {
    let agent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_url = format!("ws://{}/ws", agent.local_addr().unwrap());
    app.seed_with(
        NewTenant::default(),
        NewRoute {
            agent_url: Some(agent_url.clone()),
            ..Default::default()
        },
    )
    .await;
    // The circuit starts open, so the check's success is what closes it.
    for _ in 0..AGENT_FAILURES_TO_OPEN {
        app.state
            .runtime
            .record_agent_probe(&agent_url, Err("down earlier".to_owned()));
    }
    assert!(!streams(&app).await);

    let received = tokio::spawn(async move {
        let (mut socket, _) = agent.accept().await.unwrap();
        let mut bytes = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut bytes))
            .await
            .expect("the check closes its connection")
            .unwrap();
        bytes
    });
    assert_eq!(agent_health::check_all(&app.state).await.unwrap(), 1);
    let bytes = received.await.unwrap();
    assert!(
        bytes.is_empty(),
        "the check sent {:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(app.state.runtime.agent_failure(&agent_url), None);
    assert!(streams(&app).await);
    assert_eq!(checks_counted(&app, "tcp", "healthy"), 1);
}

backend_test!(closed_port_fails_the_tcp_check);
async fn closed_port_fails_the_tcp_check(app: TestApp) {
    let agent_url = closed_agent_url().await;
    app.seed_with(
        NewTenant::default(),
        NewRoute {
            agent_url: Some(agent_url.clone()),
            ..Default::default()
        },
    )
    .await;
    for _ in 0..AGENT_FAILURES_TO_OPEN {
        agent_health::check_all(&app.state).await.unwrap();
    }
    let reason = app.state.runtime.agent_failure(&agent_url).expect("circuit open");
    assert!(reason.contains("TCP connection"), "{reason}");
    assert!(!streams(&app).await);
    assert_eq!(
        checks_counted(&app, "tcp", "unhealthy"),
        u64::from(AGENT_FAILURES_TO_OPEN)
    );
}

backend_test!(any_failing_check_of_an_agent_opens_its_circuit);
async fn any_failing_check_of_an_agent_opens_its_circuit(app: TestApp) {
    // Two routes share an agent: one names a failing health endpoint, one relies on TCP,
    // which succeeds. The circuit is keyed by agent_url, so the failure wins.
    let agent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_url = format!("ws://{}/ws", agent.local_addr().unwrap());
    let server = health_endpoint(500).await;
    let (tenant, _) = app
        .seed_with(
            NewTenant::default(),
            NewRoute {
                agent_url: Some(agent_url.clone()),
                agent_health_url: Some(format!("{}/health", server.uri())),
                ..Default::default()
            },
        )
        .await;
    app.create_route(
        &tenant.id,
        NewRoute {
            phone_number: "+15555550123".to_owned(),
            agent_url: Some(agent_url.clone()),
            ..Default::default()
        },
    )
    .await;

    for _ in 0..AGENT_FAILURES_TO_OPEN {
        assert_eq!(agent_health::check_all(&app.state).await.unwrap(), 1);
    }
    let reason = app.state.runtime.agent_failure(&agent_url).expect("circuit open");
    assert!(reason.contains("500"), "{reason}");
    assert_eq!(
        (
            checks_counted(&app, "tcp", "healthy"),
            checks_counted(&app, "http", "unhealthy")
        ),
        (
            u64::from(AGENT_FAILURES_TO_OPEN),
            u64::from(AGENT_FAILURES_TO_OPEN)
        )
    );
    assert!(!streams(&app).await);

    answer(&server, 204).await;
    agent_health::check_all(&app.state).await.unwrap();
    assert!(streams(&app).await);
}

backend_test!(disabled_routes_are_not_checked);
async fn disabled_routes_are_not_checked(app: TestApp) {
    let server = health_endpoint(200).await;
    app.seed_with(
        NewTenant::default(),
        NewRoute {
            enabled: Some(false),
            agent_url: Some(closed_agent_url().await),
            agent_health_url: Some(format!("{}/health", server.uri())),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(agent_health::check_all(&app.state).await.unwrap(), 0);
    assert_eq!(server.received_requests().await.unwrap().len(), 0);
}

#[tokio::test]
async fn http_probe_needs_a_2xx_answer_in_time() {
    let client = probe::http_client().unwrap();
    let timeout = Duration::from_secs(3);
    let server = MockServer::start().await;
    for (route, status) in [
        ("/ok", 200),
        ("/no-content", 204),
        ("/moved", 302),
        ("/down", 503),
    ] {
        let template = ResponseTemplate::new(status).insert_header("location", "/ok");
        Mock::given(method("GET"))
            .and(path(route))
            .respond_with(template)
            .mount(&server)
            .await;
    }
    let run = |route: &str| {
        let probe = Probe::Http(format!("{}{route}", server.uri()));
        let client = client.clone();
        async move { probe.run(&client, timeout).await }
    };
    assert!(run("/ok").await.is_ok());
    assert!(run("/no-content").await.is_ok());
    // Redirects are not followed: the endpoint itself must answer 2xx.
    assert!(matches!(run("/moved").await, Err(ProbeError::Status(s)) if s == 302));
    assert!(matches!(run("/down").await, Err(ProbeError::Status(s)) if s == 503));

    // An endpoint that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/health", silent.local_addr().unwrap());
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let result = Probe::Http(url).run(&client, Duration::from_millis(200)).await;
    assert!(matches!(result, Err(ProbeError::Timeout(_))), "{result:?}");
}

backend_test!(admin_api_sets_and_clears_agent_health_url);
async fn admin_api_sets_and_clears_agent_health_url(app: TestApp) {
    let (tenant, _) = app.seed().await;
    let tid = tenant.id;
    let route = app
        .create_route(
            &tid,
            NewRoute {
                phone_number: "+15555550111".to_owned(),
                agent_url: Some("wss://agent.example.com/ws".to_owned()),
                agent_health_url: Some("https://agent.example.com/health".to_owned()),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(
        route.agent_health_url.as_deref(),
        Some("https://agent.example.com/health")
    );
    let route_path = format!("/api/v1/routes/{}", route.id);

    let without = app
        .create_route(
            &tid,
            NewRoute {
                phone_number: "+15555550112".to_owned(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(without.agent_health_url, None);

    let patched: Route = app
        .patch(
            &route_path,
            &json!({"agent_health_url": "http://10.0.0.5:8080/healthz"}),
        )
        .await;
    assert_eq!(
        patched.agent_health_url.as_deref(),
        Some("http://10.0.0.5:8080/healthz")
    );
    // A patch without the field keeps it.
    let kept: Route = app.patch(&route_path, &json!({"label": "main"})).await;
    assert_eq!(
        kept.agent_health_url.as_deref(),
        Some("http://10.0.0.5:8080/healthz")
    );
    let stored: Route = app.get(&route_path).await;
    assert_eq!(
        stored.agent_health_url.as_deref(),
        Some("http://10.0.0.5:8080/healthz")
    );

    for bad in [
        "ftp://agent.example.com/health",
        "wss://agent.example.com/health",
        "garbage",
        "/health",
        "http://agent.example.com/\u{0}health",
        "https://agent.example.com/\nhealth",
    ] {
        let res = app
            .admin(Method::PATCH, &route_path)
            .json(&json!({"agent_health_url": bad}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "patch {bad:?}");
        let res = app
            .admin(Method::POST, &format!("/api/v1/tenants/{tid}/routes"))
            .json(&json!({"phone_number": "+15555550113", "agent_health_url": bad}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "create {bad:?}");
    }
    let unchanged: Route = app.get(&route_path).await;
    assert_eq!(
        unchanged.agent_health_url.as_deref(),
        Some("http://10.0.0.5:8080/healthz")
    );

    let cleared: Route = app.patch(&route_path, &json!({"agent_health_url": null})).await;
    assert_eq!(cleared.agent_health_url, None);
    assert_eq!(cleared.agent_url.as_deref(), Some("wss://agent.example.com/ws"));
}

backend_test!(migration_adds_and_drops_the_column);
async fn migration_adds_and_drops_the_column(app: TestApp) {
    let db = app.state.db.connection();
    let reverted = migrate_down_through(db, "m20261201_000001_route_agent_health_url").await;
    assert_eq!(
        Migrator::get_pending_migrations(db).await.unwrap().len(),
        reverted
    );
    let dropped = db.execute_unprepared("SELECT agent_health_url FROM routes").await;
    assert!(dropped.is_err(), "the column is dropped: {dropped:?}");
    Migrator::up(db, None).await.expect("up again");
    let server = health_endpoint(200).await;
    let (_, route) = app
        .seed_with(
            NewTenant::default(),
            NewRoute {
                agent_url: Some(closed_agent_url().await),
                agent_health_url: Some(format!("{}/health", server.uri())),
                ..Default::default()
            },
        )
        .await;
    let stored = stateset_voice::db::routes::get(db, &route.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.agent_health_url, route.agent_health_url);
    assert!(stored.agent_health_url.is_some());
}
