//! The service through a real PgBouncer in transaction pooling mode (`.ci/pgbouncer`), with
//! `pgbouncer=true` in its database URL: each test on a database of its own, with a pool larger
//! than PgBouncer's, so that its client connections share server connections. And the same load
//! without the setting, which fails.
use std::{collections::HashSet, time::Duration};

use entity::{call, call_webhook, outbox_event};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use stateset_voice::{
    config::ConfigArgs,
    db::{self, Pool, PoolMode},
    domain::admin::{NewRoute, NewTenant},
    testkit::{
        pgbouncer::{connect_without_the_setting, create_database, pool_use},
        *,
    },
    worker::outbox,
};
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, ResponseTemplate,
};

/// Concurrent requests of a burst.
const BURST: usize = 50;

/// Declares `async fn $name(app: TestApp)` as the test `$name::pgbouncer`, the service on
/// [`Backend::PgBouncer`], optionally after `$configure` adjusted its flags.
macro_rules! pgbouncer_test {
    ($name:ident) => {
        pgbouncer_test!($name, |_| {});
    };
    ($name:ident, $configure:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pgbouncer() {
                run(Backend::PgBouncer, $configure, super::$name).await
            }
        }
    };
}

/// The database name of an app on [`Backend::PgBouncer`].
fn database_of(app: &TestApp) -> String {
    let url = app.state.config.database.url.expose();
    let path = url.rsplit('/').next().expect("a database in the URL");
    path.split('?').next().unwrap().to_owned()
}

/// One call of [`new_calls_and_retries`]: its first answer and the retry's, each a status and
/// a body.
struct Delivery {
    sid: String,
    first: (u16, String),
    retry: (u16, String),
}

/// The load: `BURST` new calls at once, then a retry of each at once, with nothing cached (as
/// if each reached another instance). The writer's lanes write the new calls in shared
/// transactions; each retry takes a transaction of its own, more at once than PgBouncer has
/// server connections.
async fn new_calls_and_retries(app: &TestApp) -> Vec<Delivery> {
    let deliver = |sid: String| async move {
        let res = app.incoming(&sid).await;
        let status = res.status().as_u16();
        (sid, (status, res.text().await.unwrap()))
    };
    let firsts = futures::future::join_all((0..BURST).map(|_| deliver(call_sid()))).await;
    app.state.answers.invalidate();
    let retries = futures::future::join_all(firsts.iter().map(|(sid, _)| deliver(sid.clone()))).await;
    firsts
        .into_iter()
        .zip(retries)
        .map(|((sid, first), (_, retry))| Delivery { sid, first, retry })
        .collect()
}

/// Runs `n` statements at once, of seven different texts with one argument each, and checks
/// each answer: the errors, and the answers that came from another statement.
async fn statement_burst(db: &Pool, n: i32) -> (Vec<String>, usize) {
    let results = futures::future::join_all((0..n).map(|i| async move {
        let stmt = Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!("SELECT $1::int4 + {} AS v", i % 7),
            [i.into()],
        );
        let row = db.query_one(stmt).await?.expect("one row");
        Ok::<_, sea_orm::DbErr>(row.try_get::<i32>("", "v")? == i + i % 7)
    }))
    .await;
    let errors = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(ToString::to_string)
        .collect();
    let wrong = results.iter().filter(|r| matches!(r, Ok(false))).count();
    (errors, wrong)
}

pgbouncer_test!(a_new_call_is_answered_and_stored);
async fn a_new_call_is_answered_and_stored(app: TestApp) {
    assert_eq!(app.state.db.mode(), PoolMode::TransactionPooled);
    app.seed().await;
    let sid = call_sid();
    let res = app.incoming(&sid).await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(
        body.contains("<Connect action=") && body.contains("<Stream url="),
        "{body}"
    );
    let claims = app
        .state
        .tokens
        .verify(stream_token(&body))
        .expect("token verifies");
    assert_eq!(claims.sub, sid);
    let stored = app.call(&sid).await.expect("call stored");
    assert_eq!((stored.outcome.as_str(), stored.attempts), ("streamed", 1));
    assert_eq!(app.events("call.received").await.len(), 1);
}

pgbouncer_test!(new_calls_and_retries_share_pgbouncers_server_connections);
async fn new_calls_and_retries_share_pgbouncers_server_connections(app: TestApp) {
    app.seed().await;
    let deliveries = new_calls_and_retries(&app).await;
    for d in &deliveries {
        assert_eq!(d.first.0, 200, "{}", d.first.1);
        assert!(d.first.1.contains("<Stream url="), "{}", d.first.1);
        assert_eq!(d.retry, d.first, "a retry gets the same answer");
    }

    let sids: HashSet<String> = deliveries.iter().map(|d| d.sid.clone()).collect();
    assert_eq!(app.count(call::Entity).await, BURST as u64);
    for sid in &sids {
        assert_eq!(app.call(sid).await.unwrap().attempts, 2, "{sid}");
    }
    let events: HashSet<String> = app
        .events("call.received")
        .await
        .iter()
        .map(|e| {
            let payload: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
            payload["data"]["call_sid"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(events, sids, "one event per call");

    // Every client connection beyond the first was opened because the others were busy.
    let pooled = pool_use(&database_of(&app)).await;
    assert!(pooled.servers <= pooled.pool_size, "{pooled:?}");
    assert!(
        pooled.clients > pooled.pool_size,
        "the service's connections share PgBouncer's: {pooled:?}"
    );
}

pgbouncer_test!(concurrent_duplicates_make_one_call_and_a_retry_gets_the_same_answer);
async fn concurrent_duplicates_make_one_call_and_a_retry_gets_the_same_answer(app: TestApp) {
    app.seed().await;
    let sid = call_sid();
    let responses = futures::future::join_all((0..BURST).map(|_| async {
        let res = app.incoming(&sid).await;
        (res.status().as_u16(), res.text().await.unwrap())
    }))
    .await;
    let first = &responses[0].1;
    assert!(first.contains("<Stream url="), "{first}");
    for (status, body) in &responses {
        assert_eq!(
            (*status, body),
            (200, first),
            "every duplicate gets the same answer"
        );
    }
    // Like a retry reaching another instance: nothing cached about this call.
    app.state.answers.invalidate();
    let retry = app.incoming(&sid).await;
    assert_eq!(retry.status(), 200);
    assert_eq!(&retry.text().await.unwrap(), first);

    assert_eq!(app.count(call::Entity).await, 1);
    assert_eq!(app.count(call_webhook::Entity).await, 1);
    assert_eq!(app.count(outbox_event::Entity).await, 1);
    assert_eq!(app.call(&sid).await.unwrap().attempts, BURST as i32 + 1);
}

/// Quick delivery settings: retries after a millisecond, deliveries time out after 500 ms.
fn quick_delivery(a: &mut ConfigArgs) {
    a.webhook_retry_base = Duration::from_millis(1);
    a.webhook_timeout = Duration::from_millis(500);
}

pgbouncer_test!(an_event_is_delivered_from_the_outbox, quick_delivery);
async fn an_event_is_delivered_from_the_outbox(app: TestApp) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    app.seed_with(
        NewTenant {
            webhook_url: Some(format!("{}/hook", server.uri())),
            ..Default::default()
        },
        NewRoute::default(),
    )
    .await;
    let sid = call_sid();
    assert_eq!(app.incoming(&sid).await.status(), 200);

    let client = outbox::DeliveryClient::new(&app.state.config.outbox).unwrap();
    assert_eq!(outbox::deliver_due(&app.state, &client).await.unwrap(), 1);
    assert_eq!(
        outbox::deliver_due(&app.state, &client).await.unwrap(),
        0,
        "delivered once"
    );

    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(body["type"], "call.received");
    assert_eq!(body["data"]["call_sid"], sid.as_str());
    let event = &app.events("call.received").await[0];
    assert_eq!((event.status.as_str(), event.attempts), ("delivered", 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_statement_cache_capacity_zero_in_the_url_is_honoured() {
    let Some(database) = create_database().await else {
        return;
    };
    let url = format!("{}?statement-cache-capacity=0", database.url());
    let db = db::connect_url(&url, 16, Default::default(), None).await.unwrap();
    assert_eq!(db.mode(), PoolMode::TransactionPooled);
    let (errors, wrong) = statement_burst(&db, 400).await;
    assert_eq!((errors.len(), wrong), (0, 0), "{errors:?}");
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_setting_the_same_load_fails_on_prepared_statements() {
    let Some(mut fresh) = fresh_database(Backend::PgBouncer, 2).await else {
        return;
    };
    let url = fresh.database.as_ref().unwrap().url();
    // As sqlx connects by default, PgBouncer refuses the connection.
    let refused = db::connect_url(&url, 1, Default::default(), None)
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("unsupported startup parameter: extra_float_digits"),
        "{refused}"
    );
    // Seeded with the setting; then served without it (but without that parameter, so that
    // it connects).
    let tenant = seed_tenant_in(&fresh.db, &Default::default(), NewTenant::default()).await;
    seed_route_in(&fresh.db, &tenant.id, NewRoute::default()).await;
    fresh.db.close().await.unwrap();
    fresh.db = connect_without_the_setting(&url, 16, None).await.unwrap();
    assert_eq!(fresh.db.mode(), PoolMode::Direct);
    let app = spawn_app_on(fresh, |a| a.database_max_connections = Some(16)).await;
    let deliveries = new_calls_and_retries(&app).await;
    let failed = deliveries
        .iter()
        .flat_map(|d| [&d.first, &d.retry])
        .filter(|(status, _)| *status != 200)
        .count();
    assert!(failed > 0, "some of {BURST} calls and their retries fail");
    let (errors, _) = statement_burst(&app.state.db, 400).await;
    assert!(
        errors.iter().any(|e| e.contains("prepared statement")),
        "{errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_cache_of_zero_alone_is_not_enough() {
    let Some(database) = create_database().await else {
        return;
    };
    // sqlx still names the statements without a cache, and runs each in two steps.
    let db = connect_without_the_setting(&database.url(), 16, Some(0))
        .await
        .unwrap();
    let (errors, wrong) = statement_burst(&db, 400).await;
    assert!(
        errors.iter().any(|e| e.contains("prepared statement")) || wrong > 0,
        "{errors:?}"
    );
    db.close().await.unwrap();
}
