//! stateset-voice: answers Twilio Voice webhooks for many tenants.
//!
//! [`app`] builds the HTTP endpoint used by the server, the tests and the conformance suite;
//! [`server::serve`] runs it with the background tasks.
pub mod api;
pub mod call;
pub mod cli;
pub mod config;
pub mod db;
pub mod demo;
pub mod domain;
pub mod error;
pub mod events;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod net;
pub mod portal;
pub mod secrets;
pub mod server;
pub mod state;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod twilio;
pub mod worker;

use poem::{http::Method, Endpoint, EndpointExt, Route};

use crate::{config::Config, domain::secrets_at_rest::AtStart, state::AppState};

/// The whole HTTP surface: the API, its published documents and the docs portal.
pub fn app(state: AppState) -> impl Endpoint {
    let api = api::service(state.clone());
    let openapi = portal::openapi::document(&api);
    let allow = api::allow::Methods::from_document(&openapi)
        .with("/media-stream", &[Method::GET])
        .with("/media-stream/:token", &[Method::GET]);
    let portal = std::sync::Arc::new(portal::Portal::from_document(openapi));
    Route::new()
        .nest("/", api)
        .at("/openapi.json", portal.serve_file("openapi.json"))
        .at("/openapi.yaml", portal.serve_file("openapi.yaml"))
        .at("/asyncapi.yaml", portal.serve_file("asyncapi.yaml"))
        .at("/media-stream", poem::get(api::media::media_stream))
        .at("/media-stream/:token", poem::get(api::media::media_stream_path))
        .nest("/docs", portal.endpoint())
        .data(state.clone())
        .before(api::reject_nul_in_url)
        .catch_all_error(error::problem_for)
        .with(api::allow::AllowHeader::new(allow))
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
        .with(api::request_span::RequestSpan)
}

/// The published OpenAPI document, as committed in `openapi.yaml`.
pub fn openapi_yaml() -> String {
    serde_yaml::to_string(&portal::openapi::document(&portal::spec_service()))
        .expect("the OpenAPI document serialises")
}

/// The published AsyncAPI document, as committed in `asyncapi.yaml`.
pub fn asyncapi_yaml() -> String {
    portal::asyncapi::asyncapi_yaml()
}

/// Connects to the database, applies migrations and checks the stored tenant secrets against
/// the configured keys, encrypting those still in clear when there is a key
/// ([`domain::secrets_at_rest::at_start`]).
pub async fn prepare(config: Config) -> Result<(AppState, AtStart), domain::Error> {
    let db = db::connect(&config).await?;
    db::migrate(&db).await?;
    let at_start = domain::secrets_at_rest::at_start(&db, &config.secrets).await?;
    Ok((AppState::new(db, config), at_start))
}
