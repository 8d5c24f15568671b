//! stateset-voice: answers Twilio Voice webhooks for many tenants.
//!
//! [`app`] builds the HTTP endpoint used by the server, the tests and the conformance suite.
pub mod api;
pub mod call;
pub mod cli;
pub mod config;
pub mod db;
pub mod demo;
pub mod domain;
pub mod error;
pub mod head_deadline;
pub mod media;
pub mod metrics;
pub mod state;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod twilio;
pub mod worker;

use poem::{
    http::uri::Scheme,
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
    middleware::Tracing,
    web::{LocalAddr, RemoteAddr},
    Endpoint, EndpointExt, Route, Server,
};

use crate::{config::Config, state::AppState};

/// The whole HTTP surface: the API, its published spec and docs.
pub fn app(state: AppState) -> impl Endpoint {
    let api = api::service(state.clone());
    let spec_json = api.spec_endpoint();
    let spec_yaml = api.spec_endpoint_yaml();
    let docs = api.swagger_ui();
    Route::new()
        .nest("/", api)
        .at("/openapi.json", spec_json)
        .at("/openapi.yaml", spec_yaml)
        .at("/media-stream", poem::get(api::media::media_stream))
        .at("/media-stream/:token", poem::get(api::media::media_stream_path))
        .nest("/docs", docs)
        .data(state.clone())
        .before(api::reject_nul_in_url)
        .catch_all_error(error::problem_for)
        .around(move |endpoint, req| {
            let metrics = state.metrics.clone();
            async move {
                let started = std::time::Instant::now();
                let method = req.method().to_string();
                let path = req.uri().path().to_owned();
                let response = endpoint.call(req).await?;
                metrics.observe_http(&method, &path, response.status().as_u16(), started.elapsed());
                Ok(response)
            }
        })
        .with(Tracing)
}

/// The published OpenAPI document, as committed in `openapi.yaml`.
pub fn openapi_yaml() -> String {
    // The spec depends on code only; a throwaway state with no database is enough.
    let db = sea_orm::DatabaseConnection::Disconnected;
    let config = Config::from_args(config::ConfigArgs::defaults()).expect("default config is valid");
    api::service(AppState::new(db, config)).spec_yaml()
}

/// Connects to the database and applies migrations.
pub async fn prepare(config: Config) -> Result<AppState, sea_orm::DbErr> {
    let db = db::connect(&config).await?;
    db::migrate(&db).await?;
    Ok(AppState::new(db, config))
}

/// Serves `state` on its configured address, with the background workers (event delivery,
/// diagnostics flush, agent health checks), until `shutdown` completes.
pub async fn serve(
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = TcpListener::bind(state.config.http.bind.clone())
        .into_acceptor()
        .await?;
    for addr in acceptor.local_addr() {
        tracing::info!(address = %addr, public_url = %state.config.urls.public, "listening");
    }
    let workers = worker::spawn_all(state.clone());
    let served = serve_on(
        acceptor,
        state.clone(),
        shutdown,
        Some(std::time::Duration::from_secs(10)),
    )
    .await;
    drop(workers);
    // Diagnostics still buffered would otherwise be lost with the process.
    if let Err(e) = state.diagnostics.flush().await {
        tracing::warn!(error = %e, "writing diagnostics at shutdown failed");
    }
    served
}

/// Serves [`app`] on `acceptor` with the connection limits of the configuration (Nagle off,
/// request head deadline, idle timeout) until `shutdown` completes, then gives open connections
/// `grace` to finish.
pub async fn serve_on(
    acceptor: TcpAcceptor,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Option<std::time::Duration>,
) -> std::io::Result<()> {
    let acceptor = head_deadline::HeadDeadline::new(NoDelay(acceptor), state.config.http.header_read_timeout);
    let endpoint = acceptor.watch(app(state.clone()));
    Server::new_with_acceptor(acceptor)
        .idle_timeout(state.config.http.idle_timeout)
        .run_with_graceful_shutdown(endpoint, shutdown, grace)
        .await
}

/// Accepts TCP connections with Nagle's algorithm off, so 20 ms media frames and small answers
/// leave at once instead of waiting for the peer's delayed ACK.
pub struct NoDelay<A>(pub A);

impl<A: Acceptor<Io = tokio::net::TcpStream>> Acceptor for NoDelay<A> {
    type Io = tokio::net::TcpStream;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.0.local_addr()
    }

    async fn accept(&mut self) -> std::io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.0.accept().await?;
        if let Err(e) = io.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        Ok((io, local, remote, scheme))
    }
}
