//! Test harness shared by the integration tests and the conformance suite: the real service
//! on port 0 over a fresh SQLite file, PostgreSQL schema or database behind PgBouncer
//! ([`pgbouncer`]), each test run once on SQLite and once on PostgreSQL
//! ([`backend_test!`](crate::backend_test)), typed admin API calls and the recorded media
//! session. Enabled by the `testkit` feature.
use crate::{
    config::{Config, ConfigArgs, SqliteSynchronous},
    db,
    domain::{
        admin::{self, NewRoute, NewTenant},
        fallback::FallbackAction,
    },
    state::AppState,
    twilio::{
        form::FormParams,
        signature::{self, Algorithm},
    },
};
use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use sea_orm::{ConnectionTrait, Database, EntityTrait, PaginatorTrait};
use serde_json::Value;

mod admin_api;
mod backends;
mod db_proxy;
pub mod pgbouncer;
mod recording;
mod stored_secrets;

pub use backends::{run, TestInput};
pub use db_proxy::DbProxy;
pub use pgbouncer::TestDatabase;
pub use recording::{recorded_frame, recorded_session, RECORDED_CALL_SID, RECORDING, TOKEN_PLACEHOLDER};
pub use stored_secrets::{
    key_id, stored_secrets_of, stored_tenant_secrets, StoredTenantSecrets, NEXT_SECRETS_KEY, SECRETS_KEY,
};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const TOKEN_SECRET: &str = "test-stream-token-secret-0123456789abcdef";
pub const AUTH_TOKEN: &str = "0123456789abcdef0123456789abcdef";
pub const ACCOUNT_SID: &str = "AC3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f";
pub const NUMBER: &str = "+15555551234";

/// The database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    /// PostgreSQL through PgBouncer in transaction pooling mode, with `pgbouncer=true`.
    PgBouncer,
}

/// A running service.
pub struct TestApp {
    /// The database it runs on.
    pub backend: Backend,
    pub base: String,
    pub state: AppState,
    pub client: reqwest::Client,
    pub schema: Option<String>,
    /// The proxy in front of PostgreSQL of a [`spawn_cuttable_app`].
    proxy: Option<DbProxy>,
    _dir: Option<tempfile::TempDir>,
    _spool: tempfile::TempDir,
    /// Declared last: the database is dropped after the rest of the app.
    _database: Option<TestDatabase>,
}

/// The PostgreSQL server tests use.
pub fn postgres_url() -> String {
    std::env::var("VOICE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Whether PostgreSQL tests may be skipped: only when explicitly asked, and never in CI.
pub(crate) fn may_skip_postgres() -> bool {
    std::env::var("VOICE_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1")
        && !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A migrated, empty database.
pub struct FreshDatabase {
    /// The kind of database.
    pub backend: Backend,
    pub db: db::Pool,
    pub url: String,
    /// The PostgreSQL schema holding it.
    pub schema: Option<String>,
    pub dir: Option<tempfile::TempDir>,
    /// The database holding it behind PgBouncer.
    pub database: Option<TestDatabase>,
}

impl FreshDatabase {
    /// The `VOICE_DATABASE_URL` that points another process at this database: the SQLite
    /// file, or the PostgreSQL database with `search_path` set to the schema at connect.
    pub fn process_url(&self) -> String {
        match &self.schema {
            None => self.url.clone(),
            Some(schema) => {
                let separator = if self.url.contains('?') { '&' } else { '?' };
                format!("{}{separator}options%5Bsearch_path%5D={schema}", self.url)
            }
        }
    }

    /// The query plan of `sql` with `values` bound, as text. The tables are empty, so on
    /// PostgreSQL sequential scans are turned off for it: the plan shows whether an index can
    /// serve the query at all.
    pub async fn query_plan(&self, sql: &str, values: Vec<sea_orm::Value>) -> String {
        use sea_orm::{DbBackend, QueryResult, Statement, TransactionTrait};
        let backend = self.db.get_database_backend();
        let (explain, line): (&str, fn(&QueryResult) -> String) = match backend {
            DbBackend::Postgres => ("EXPLAIN", |r| r.try_get_by_index(0).expect("plan line")),
            _ => ("EXPLAIN QUERY PLAN", |r| {
                r.try_get("", "detail").expect("plan line")
            }),
        };
        let txn = self.db.begin().await.expect("begin");
        if backend == DbBackend::Postgres {
            txn.execute_unprepared("SET LOCAL enable_seqscan = off")
                .await
                .expect("enable_seqscan");
        }
        let rows = txn
            .query_all(Statement::from_sql_and_values(
                backend,
                format!("{explain} {sql}"),
                values,
            ))
            .await
            .expect("explain");
        txn.rollback().await.expect("rollback");
        rows.iter().map(line).collect::<Vec<_>>().join("\n")
    }
}

/// Reverts the migrations from the newest back to (and with) the one named `name`; returns
/// how many were reverted. `Migrator::up` applies them again.
pub async fn migrate_down_through(db: &sea_orm::DatabaseConnection, name: &str) -> usize {
    use migration::{Migrator, MigratorTrait};
    let steps = Migrator::migrations()
        .iter()
        .rev()
        .position(|m| m.name() == name)
        .unwrap_or_else(|| panic!("no migration named {name}"))
        + 1;
    let down = u32::try_from(steps).expect("a few migrations");
    Migrator::down(db, Some(down)).await.expect("migrating down");
    steps
}

/// Connects to a fresh database for `backend`; `None` only when PostgreSQL (or PgBouncer) tests
/// were explicitly skipped outside CI.
pub async fn fresh_database(backend: Backend, max_connections: u32) -> Option<FreshDatabase> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("voice.db").display());
            let db = db::connect_url(&url, max_connections, SqliteSynchronous::default(), None)
                .await
                .expect("sqlite connects");
            db::migrate(&db).await.expect("migrations run on SQLite");
            Some(FreshDatabase {
                backend,
                db,
                url,
                schema: None,
                dir: Some(dir),
                database: None,
            })
        }
        Backend::Postgres => {
            let url = postgres_url();
            let admin = match Database::connect(&url).await {
                Ok(db) => db,
                Err(e) if may_skip_postgres() => {
                    eprintln!(
                        "SKIPPED: PostgreSQL unreachable at {url} ({e}) and VOICE_TEST_SKIP_POSTGRES=1"
                    );
                    return None;
                }
                Err(e) => panic!(
                    "PostgreSQL is unreachable at {url}: {e}. Start it, set VOICE_TEST_POSTGRES_URL, \
                     or (outside CI only) set VOICE_TEST_SKIP_POSTGRES=1"
                ),
            };
            let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
            admin
                .execute_unprepared(&format!("CREATE SCHEMA \"{schema}\""))
                .await
                .expect("create schema");
            let db = db::connect_url(&url, max_connections, SqliteSynchronous::default(), Some(&schema))
                .await
                .expect("postgres connects");
            db::migrate(&db).await.expect("migrations run on PostgreSQL");
            Some(FreshDatabase {
                backend,
                db,
                url,
                schema: Some(schema),
                dir: None,
                database: None,
            })
        }
        Backend::PgBouncer => {
            let database = pgbouncer::create_database().await?;
            let url = format!("{}?pgbouncer=true", database.url());
            let db = db::connect_url(&url, max_connections, SqliteSynchronous::default(), None)
                .await
                .expect("connects through PgBouncer");
            db::migrate(&db).await.expect("migrations run through PgBouncer");
            Some(FreshDatabase {
                backend,
                db,
                url,
                schema: None,
                dir: None,
                database: Some(database),
            })
        }
    }
}

/// Spawns the service with default test settings.
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |_| {}).await
}

/// Spawns the service after `configure` adjusted its flags.
pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut ConfigArgs)) -> Option<TestApp> {
    spawn(backend, configure, false).await
}

/// Spawns the service on a database the test can make unavailable
/// ([`TestApp::cut_database`]): PostgreSQL through a [`DbProxy`], SQLite by making its one
/// connection read-only.
pub async fn spawn_cuttable_app(
    backend: Backend,
    configure: impl FnOnce(&mut ConfigArgs),
) -> Option<TestApp> {
    spawn(backend, configure, true).await
}

async fn spawn(backend: Backend, configure: impl FnOnce(&mut ConfigArgs), cuttable: bool) -> Option<TestApp> {
    let (acceptor, base, args) = app_args(configure).await;
    let max_connections = args.database_max_connections.unwrap_or(match backend {
        Backend::Sqlite => 1,
        Backend::Postgres => 8,
        // More than PgBouncer's pool, so that clients share its server connections.
        Backend::PgBouncer => 16,
    });
    let mut fresh = fresh_database(backend, max_connections).await?;
    let mut proxy = None;
    if let (true, Backend::Postgres, Some(schema)) = (cuttable, backend, &fresh.schema) {
        let through = DbProxy::start(postgres_addr(&fresh.url)).await;
        let url = postgres_url_via(&fresh.url, through.addr());
        fresh.db = db::connect_url(&url, max_connections, SqliteSynchronous::default(), Some(schema))
            .await
            .expect("postgres connects through the proxy");
        fresh.url = url;
        proxy = Some(through);
    }
    Some(start_app(acceptor, base, args, fresh, proxy))
}

/// Spawns the service on `fresh`, its pool as it is, after `configure` adjusted its flags.
pub async fn spawn_app_on(fresh: FreshDatabase, configure: impl FnOnce(&mut ConfigArgs)) -> TestApp {
    let (acceptor, base, args) = app_args(configure).await;
    start_app(acceptor, base, args, fresh, None)
}

/// A listener, its base URL and the test flags after `configure`.
async fn app_args(configure: impl FnOnce(&mut ConfigArgs)) -> (TcpAcceptor, String, ConfigArgs) {
    let (acceptor, port) = bind_local().await;
    let base = format!("http://127.0.0.1:{port}");
    let mut args = ConfigArgs::defaults();
    args.public_url = base.clone();
    args.admin_token = Some(ADMIN_TOKEN.to_owned());
    args.token_secret = Some(TOKEN_SECRET.to_owned());
    configure(&mut args);
    (acceptor, base, args)
}

fn start_app(
    acceptor: TcpAcceptor,
    base: String,
    mut args: ConfigArgs,
    fresh: FreshDatabase,
    proxy: Option<DbProxy>,
) -> TestApp {
    let spool = tempfile::tempdir().expect("spool dir");
    if args.spool_dir.is_none() {
        args.spool_dir = Some(spool.path().to_owned());
    }
    args.database_url = fresh.url;
    let config = Config::from_args(args).expect("test config is valid");
    let state = AppState::new(fresh.db, config);
    serve_on(acceptor, state.clone());
    TestApp {
        backend: fresh.backend,
        base,
        state,
        client: reqwest::Client::new(),
        schema: fresh.schema,
        proxy,
        _dir: fresh.dir,
        _spool: spool,
        _database: fresh.database,
    }
}

/// The `HOST[:PORT]` of a `postgres://user@HOST:PORT/db...` URL.
fn postgres_authority(url: &str) -> &str {
    url.split_once('@')
        .and_then(|(_, rest)| rest.split('/').next())
        .expect("a postgres://user@host:port/db URL")
}

/// `url` with its server replaced by `addr` (a [`DbProxy`], say).
pub fn postgres_url_via(url: &str, addr: std::net::SocketAddr) -> String {
    let authority = postgres_authority(url);
    let (user, rest) = url.split_once('@').expect("checked above");
    format!("{user}@{addr}{}", &rest[authority.len()..])
}

/// The address of the PostgreSQL server in `url` (`postgres://user@HOST:PORT/db`).
pub fn postgres_addr(url: &str) -> std::net::SocketAddr {
    let host_port = postgres_authority(url);
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    std::net::ToSocketAddrs::to_socket_addrs(&host_port)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .expect("the PostgreSQL address resolves")
}

/// A listener on a free loopback port.
async fn bind_local() -> (TcpAcceptor, u16) {
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .expect("bind");
    let port = acceptor.local_addr()[0]
        .as_socket_addr()
        .expect("socket address")
        .port();
    (acceptor, port)
}

/// Serves `state` on `acceptor` as [`crate::server::serve`] does (the server and the batch
/// writer under a supervisor), without the background workers; tests run those themselves.
fn serve_on(acceptor: TcpAcceptor, state: AppState) {
    let mut supervisor = crate::worker::supervisor::Supervisor::for_state(&state);
    crate::server::start(&mut supervisor, acceptor, &state, None);
}

/// Another instance serving beside a [`TestApp`].
pub struct Instance {
    /// Its base URL.
    pub base: String,
    /// Its state: its writer, caches and workers.
    pub state: AppState,
}

/// The inbound-call fields Twilio sends, from the recorded example, for `call_sid`.
pub fn incoming_form(call_sid: &str) -> FormParams {
    let examples: Value =
        serde_json::from_str(include_str!("../tests/fixtures/twilio-callback-examples.json"))
            .expect("fixture parses");
    let pairs = examples["incoming_call"].as_array().expect("incoming_call pairs");
    FormParams::from_pairs(pairs.iter().map(|p| {
        let key = p[0].as_str().unwrap();
        let value = if key == "CallSid" {
            call_sid
        } else {
            p[1].as_str().unwrap()
        };
        (key.to_owned(), value.to_owned())
    }))
}

/// [`incoming_form`] with the value of `field` replaced by `value`.
pub fn incoming_form_with(call_sid: &str, field: &str, value: &str) -> FormParams {
    let form = incoming_form(call_sid);
    assert!(form.get(field).is_some(), "the incoming-call form has no {field}");
    FormParams::from_pairs(form.pairs().iter().map(|(k, v)| {
        let v = if k == field { value } else { v.as_str() };
        (k.clone(), v.to_owned())
    }))
}

/// The stream token in a `<Connect><Stream>` answer (the `<Parameter>` value).
pub fn stream_token(twiml: &str) -> &str {
    twiml
        .split("value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a stream TwiML answer")
}

/// A fresh Twilio-style CallSid.
pub fn call_sid() -> String {
    format!("CA{}", uuid::Uuid::new_v4().simple())
}

impl TestApp {
    /// Makes the database unavailable to the service: on PostgreSQL every connection is cut
    /// and new ones refused; on SQLite the connection turns read-only, so every write fails
    /// as on a file that cannot be written (reads still work). Only for a
    /// [`spawn_cuttable_app`].
    pub async fn cut_database(&self) {
        match &self.proxy {
            Some(proxy) => proxy.cut(),
            None => {
                assert_eq!(
                    self.backend,
                    Backend::Sqlite,
                    "spawn_cuttable_app makes PostgreSQL cuttable"
                );
                self.sqlite_pragma("query_only = 1").await;
            }
        }
    }

    /// Stalls the connection to PostgreSQL: bytes are held in both directions and nothing is
    /// closed, as on a network dropping packets, until [`TestApp::heal_database`].
    pub fn stall_database(&self) {
        self.proxy.as_ref().expect("a cuttable app on PostgreSQL").stall();
    }

    /// Makes the database available again.
    pub async fn heal_database(&self) {
        match &self.proxy {
            Some(proxy) => proxy.heal(),
            None => self.sqlite_pragma("query_only = 0").await,
        }
    }

    /// Sets a pragma on the (single) connection of an SQLite test app.
    async fn sqlite_pragma(&self, pragma: &str) {
        self.state
            .db
            .execute_unprepared(&format!("PRAGMA {pragma}"))
            .await
            .expect("pragma runs");
    }

    /// Another instance on this one's database, sharing its pool but none of its caches or
    /// runtime state (on SQLite, as two processes on one file); returns its base URL.
    pub async fn sibling(&self) -> String {
        let (acceptor, port) = bind_local().await;
        serve_on(
            acceptor,
            AppState::new(self.state.db.clone(), (*self.state.config).clone()),
        );
        format!("http://127.0.0.1:{port}")
    }

    /// A second instance on the same PostgreSQL schema with its own pool and the same
    /// configuration.
    pub async fn second_instance(&self) -> Instance {
        let schema = self
            .schema
            .as_deref()
            .expect("a second instance needs PostgreSQL");
        let db = db::connect_url(
            self.state.config.database.url.expose(),
            8,
            self.state.config.database.sqlite_synchronous,
            Some(schema),
        )
        .await
        .expect("connects");
        let (acceptor, port) = bind_local().await;
        let state = AppState::new(db, (*self.state.config).clone());
        serve_on(acceptor, state.clone());
        Instance {
            base: format!("http://127.0.0.1:{port}"),
            state,
        }
    }

    /// Another service on the same backend, over its own fresh database, after `configure`
    /// adjusted its flags.
    pub async fn another(&self, configure: impl FnOnce(&mut ConfigArgs)) -> TestApp {
        spawn_app_with(self.backend, configure)
            .await
            .expect("the backend of a running test app is reachable")
    }

    /// Creates the standard test tenant (production) and its route for [`NUMBER`].
    pub async fn seed(&self) -> (entity::tenant::Model, entity::route::Model) {
        self.seed_with(NewTenant::default(), NewRoute::default()).await
    }

    /// Creates a tenant and route, filling in the standard values where `tenant`/`route` are empty.
    pub async fn seed_with(
        &self,
        tenant: NewTenant,
        route: NewRoute,
    ) -> (entity::tenant::Model, entity::route::Model) {
        let tenant = self.seed_tenant(tenant).await;
        let route = self.seed_route(&tenant.id, route).await;
        (tenant, route)
    }

    /// Creates a tenant in the database, with the standard values where `tenant` is empty.
    pub async fn seed_tenant(&self, tenant: NewTenant) -> entity::tenant::Model {
        seed_tenant_in(&self.state.db, &self.state.config.secrets, tenant).await
    }

    /// Creates a route of `tenant_id` in the database, for [`NUMBER`] unless `route` names one.
    pub async fn seed_route(&self, tenant_id: &str, route: NewRoute) -> entity::route::Model {
        seed_route_in(&self.state.db, tenant_id, route).await
    }

    /// What `GET /metrics` serves now.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// The URL the service reconstructs for `path_and_query`.
    pub fn public(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.state.config.urls.public)
    }

    /// POSTs a raw body with headers.
    pub async fn post_raw(
        &self,
        path_and_query: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}{path_and_query}", self.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("request sent")
    }

    /// POSTs `form` signed with `token` for the public URL of `path_and_query`.
    pub async fn post_signed(
        &self,
        path_and_query: &str,
        form: &FormParams,
        token: &str,
    ) -> reqwest::Response {
        let sig = signature::compute(
            Algorithm::HmacSha1,
            token.as_bytes(),
            &self.public(path_and_query),
            form,
        );
        self.post_raw(
            path_and_query,
            form.encode().into_bytes(),
            &[("X-Twilio-Signature", &sig)],
        )
        .await
    }

    /// POSTs an inbound call for `call_sid`, signed with the standard token.
    pub async fn incoming(&self, call_sid: &str) -> reqwest::Response {
        self.post_signed("/api/v1/incoming-call", &incoming_form(call_sid), AUTH_TOKEN)
            .await
    }

    /// An admin API request builder.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// An admin API request builder authenticated with `bearer` (a tenant API key, say).
    pub fn with_bearer(&self, method: reqwest::Method, path: &str, bearer: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(bearer)
    }

    /// Rows in a table.
    pub async fn count<E: EntityTrait>(&self, _entity: E) -> u64
    where
        E::Model: Sync,
    {
        E::find().count(&self.state.db).await.expect("count")
    }

    /// The stored call for a CallSid (the retry counts tallied before it written first).
    pub async fn call(&self, call_sid: &str) -> Option<entity::call::Model> {
        self.state.writer.settle().await;
        db::calls::by_sid(&self.state.db, call_sid).await.expect("query")
    }

    /// Outbox events of a type.
    pub async fn events(&self, event_type: &str) -> Vec<entity::outbox_event::Model> {
        use sea_orm::{ColumnTrait, QueryFilter};
        entity::outbox_event::Entity::find()
            .filter(entity::outbox_event::Column::EventType.eq(event_type))
            .all(&self.state.db)
            .await
            .expect("events")
    }

    /// Writes buffered diagnostics and raises due alerts now, as the flush worker would.
    pub async fn flush(&self) {
        self.state.diagnostics.flush().await.expect("diagnostics flush");
    }

    /// Diagnostics of a kind (buffered ones flushed first).
    pub async fn diagnostics(&self, kind: &str) -> Vec<entity::diagnostic::Model> {
        self.flush().await;
        let kind = entity::states::DiagnosticKind::parse(kind).expect("a diagnostic kind");
        db::diagnostics::list(&self.state.db, &db::Scope::Platform, Some(kind), None, 100)
            .await
            .expect("diagnostics")
            .items
    }
}

/// A `say` fallback.
pub fn say(message: &str) -> Option<FallbackAction> {
    Some(FallbackAction::Say {
        message: message.to_owned(),
    })
}

/// Creates a tenant on `db`, its secrets stored under `keys`, with the standard values where
/// `tenant` is empty.
pub async fn seed_tenant_in<C: sea_orm::ConnectionTrait>(
    db: &C,
    keys: &crate::secrets::Keyring,
    tenant: NewTenant,
) -> entity::tenant::Model {
    admin::create_tenant(db, keys, standard_tenant(tenant))
        .await
        .expect("tenant")
        .tenant
}

/// Creates a route of `tenant_id` on `db`, for [`NUMBER`] unless `route` names one.
pub async fn seed_route_in<C: sea_orm::ConnectionTrait>(
    db: &C,
    tenant_id: &str,
    route: NewRoute,
) -> entity::route::Model {
    admin::create_route(db, &db::Scope::Platform, tenant_id, standard_route(route))
        .await
        .expect("route")
}

/// `tenant` with the standard name, account and auth token where it leaves them empty.
pub fn standard_tenant(mut tenant: NewTenant) -> NewTenant {
    if tenant.name.is_empty() {
        tenant.name = "Acme".to_owned();
    }
    if tenant.account_sid.is_empty() {
        tenant.account_sid = ACCOUNT_SID.to_owned();
    }
    if tenant.auth_token.is_empty() {
        tenant.auth_token = AUTH_TOKEN.to_owned();
    }
    tenant
}

/// `route` for [`NUMBER`] when it names no number.
pub fn standard_route(mut route: NewRoute) -> NewRoute {
    if route.phone_number.is_empty() {
        route.phone_number = NUMBER.to_owned();
    }
    route
}

/// Asserts that no call and no event was stored.
pub async fn assert_nothing_stored(app: &TestApp) {
    assert_eq!(app.count(entity::call::Entity).await, 0, "no call stored");
    assert_eq!(
        app.count(entity::outbox_event::Entity).await,
        0,
        "no event stored"
    );
}
